//! The e1000e (82574) registers this driver touches: offsets in BAR0 and
//! the bits it sets (Intel 82574 datasheet, chapter 10).

pub const CTRL: u32 = 0x0000;
pub const STATUS: u32 = 0x0008;
pub const IMC: u32 = 0x00d8;
pub const RCTL: u32 = 0x0100;
pub const RDBAL: u32 = 0x2800;
pub const RDBAH: u32 = 0x2804;
pub const RDLEN: u32 = 0x2808;
pub const RDH: u32 = 0x2810;
pub const RDT: u32 = 0x2818;
/// Missed packets (no free descriptor), clear on read.
pub const MPC: u32 = 0x4010;
/// Good packets received, clear on read.
pub const GPRC: u32 = 0x4074;
pub const RFCTL: u32 = 0x5008;

pub const CTRL_ASDE: u32 = 1 << 5;
pub const CTRL_SLU: u32 = 1 << 6;
pub const CTRL_RST: u32 = 1 << 26;

pub const STATUS_LU: u32 = 1 << 1;

pub const RCTL_EN: u32 = 1 << 1;
pub const RCTL_UPE: u32 = 1 << 3;
pub const RCTL_MPE: u32 = 1 << 4;
pub const RCTL_BAM: u32 = 1 << 15;
pub const RCTL_BSIZE_SHIFT: u32 = 16;
pub const RCTL_BSEX: u32 = 1 << 25;
pub const RCTL_SECRC: u32 = 1 << 26;

/// Extended RX descriptors (instead of legacy ones).
pub const RFCTL_EXSTEN: u32 = 1 << 15;

/// PCI config space: the command register and its bits.
pub const PCI_COMMAND: u64 = 0x04;
pub const PCI_COMMAND_MEMORY: u16 = 1 << 1;
pub const PCI_COMMAND_MASTER: u16 = 1 << 2;

pub const VENDOR_INTEL: u16 = 0x8086;
pub const DEVICE_82574L: u16 = 0x10d3;

/// RCTL.BSIZE for a receive buffer size (BSEX clear: 2048, 1024, 512 or
/// 256 bytes); `None` for any other size.
pub fn rctl_bsize(buf_size: u32) -> Option<u32> {
    let code = match buf_size {
        2048 => 0,
        1024 => 1,
        512 => 2,
        256 => 3,
        _ => return None,
    };
    Some(code << RCTL_BSIZE_SHIFT)
}

/// RCTL for receiving everything: enabled, unicast and multicast
/// promiscuous, broadcasts accepted, the CRC stripped.
pub fn rctl_rx_all(buf_size: u32) -> Option<u32> {
    let bsize = rctl_bsize(buf_size)?;
    Some(RCTL_EN | RCTL_UPE | RCTL_MPE | RCTL_BAM | RCTL_SECRC | bsize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rctl_encodes_buffer_size_and_filters() {
        assert_eq!(rctl_bsize(2048), Some(0));
        assert_eq!(rctl_bsize(256), Some(3 << 16));
        assert_eq!(rctl_bsize(4096), None, "needs BSEX, not supported");
        let r = rctl_rx_all(1024).unwrap();
        assert_eq!(r & RCTL_EN, RCTL_EN);
        assert_eq!(r & RCTL_BAM, RCTL_BAM);
        assert_eq!(r & RCTL_BSEX, 0);
        assert_eq!((r >> RCTL_BSIZE_SHIFT) & 3, 1);
        assert_eq!(r, 0x0401_801a);
    }
}
