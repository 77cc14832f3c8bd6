// SPDX-License-Identifier: GPL-2.0
//! CRC32C (Castagnoli), the checksum of KRAM's superblock and of the VT-d
//! record. A file of its own because the kernel's VT-d adoption check
//! (`iommu-preserve/builtin/kh_vtd.rs`, built into the kernel) takes it
//! with `vtd.rs` and none of the rest of the format.

const fn crc32c_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}
static CRC32C: [u32; 256] = crc32c_table();

/// CRC32C (Castagnoli) of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC32C[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}
