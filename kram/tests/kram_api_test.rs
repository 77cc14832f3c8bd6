// SPDX-License-Identifier: GPL-2.0

//! A client of the KRAM kernel API (`kram/include/kram.h`), used by
//! `selftests/kram/api.sh`: another module calling the exported symbols the
//! way iommu-preserve does. Its checks run at load time and print one line
//! each, `kram_api_test: ok - ...` or `kram_api_test: not ok - ...`.
//!
//! `phase=0` creates area `api-test` (4 fixed pages), checks fixed pages,
//! allocation, freeing and errors, and leaves a pattern in the fixed pages
//! and in one allocated page. `phase=1` (after a kexec) checks that both
//! kept their contents and, with `fixed_phys=`/`alloc_phys=`, their
//! physical addresses, then frees everything. `phase=2` times the calls
//! (`bench/kram.sh`).

use kernel::ffi::{c_char, c_int, c_void};
use kernel::{bindings, c_str, prelude::*};

module! {
    type: KramApiTest,
    name: "kram_api_test",
    authors: ["kvmhost developers"],
    description: "Test client of the KRAM kernel API",
    license: "GPL",
    params: {
        phase: u32 {
            default: 0,
            description: "0: set up and check; 1: check what phase 0 left (after kexec); 2: time the API",
        },
        fixed_phys: u64 {
            default: 0,
            description: "phase 1: physical address of fixed page 0 in phase 0",
        },
        alloc_phys: u64 {
            default: 0,
            description: "phase 1: physical address of the page allocated in phase 0",
        },
    },
}

include!("../include/kram_api.rs");

const NAME: &CStr = c_str!("api-test");
const FIXED: u64 = 4;
const ALLOCS: usize = 64;
const PAGE: usize = 4096;

fn pattern(page: u64, word: usize) -> u64 {
    0x6b72_616d_0000_0000 ^ (page << 20) ^ word as u64
}

/// Fill (or check) one page through its KRAM virtual address.
///
/// # Safety
///
/// `virt` must be a page returned by the KRAM API, valid while kram is loaded.
unsafe fn page_words(virt: *mut c_void, tag: u64, write: bool) -> bool {
    let p = virt.cast::<u64>();
    let mut ok = true;
    for w in 0..PAGE / 8 {
        // SAFETY: the caller guarantees a whole mapped page at `virt`.
        unsafe {
            if write {
                p.add(w).write_volatile(pattern(tag, w));
            } else {
                ok &= p.add(w).read_volatile() == pattern(tag, w);
            }
        }
    }
    ok
}

struct Report {
    failed: u32,
}

impl Report {
    fn check(&mut self, name: &str, ok: bool) {
        if ok {
            pr_info!("ok - {}\n", name);
        } else {
            self.failed += 1;
            pr_err!("not ok - {}\n", name);
        }
    }
}

fn fixed(area: c_int, index: u64) -> (c_int, u64, *mut c_void) {
    let (mut phys, mut virt) = (0u64, core::ptr::null_mut());
    // SAFETY: out-pointers are valid locals.
    let r = unsafe { kram_get_fixed_page(area, index, &mut phys, &mut virt) };
    (r, phys, virt)
}

fn phase0(t: &mut Report) {
    // SAFETY: NUL-terminated name.
    let old = unsafe { kram_area_lookup(NAME.as_char_ptr()) };
    if old > 0 {
        // SAFETY: plain call with an area id.
        unsafe { kram_area_delete(old) };
    }
    // SAFETY: NUL-terminated name.
    let area = unsafe { kram_area_create(NAME.as_char_ptr(), FIXED) };
    t.check("kram_area_create returns an area id", area > 0);
    if area <= 0 {
        return;
    }
    // SAFETY: NUL-terminated name.
    t.check("kram_area_lookup finds it", unsafe { kram_area_lookup(NAME.as_char_ptr()) } == area);
    // SAFETY: NUL-terminated name.
    t.check("creating it again fails with EEXIST", unsafe { kram_area_create(NAME.as_char_ptr(), 1) } == EEXIST.to_errno());
    let (r0, base, _) = fixed(area, 0);
    let mut ok = r0 == 0 && base != 0 && base % PAGE as u64 == 0;
    for i in 0..FIXED {
        let (r, phys, virt) = fixed(area, i);
        ok &= r == 0 && phys == base + i * PAGE as u64 && !virt.is_null();
        // SAFETY: a fixed page of our area.
        ok &= r == 0 && !virt.is_null() && unsafe { page_words(virt, i, true) };
    }
    t.check("fixed pages: contiguous, page aligned, writable", ok);
    let (again, phys_again, _) = fixed(area, 0);
    t.check("fixed page 0 has the same address when asked again", again == 0 && phys_again == base);
    t.check("fixed page past the run is refused", fixed(area, FIXED).0 < 0);
    t.check("fixed page of a missing area is refused", fixed(31, 0).0 < 0 && fixed(-1, 0).0 < 0);

    let mut pages = [0u64; ALLOCS];
    let mut ok = true;
    for (n, slot) in pages.iter_mut().enumerate() {
        let mut virt = core::ptr::null_mut();
        // SAFETY: out-pointers are valid.
        ok &= unsafe { kram_alloc_page(area, slot, &mut virt) } == 0 && !virt.is_null();
        ok &= *slot < base || *slot >= base + FIXED * PAGE as u64;
        // SAFETY: a page just allocated to our area.
        ok &= !virt.is_null() && unsafe { page_words(virt, 100 + n as u64, true) };
    }
    t.check("kram_alloc_page: 64 pages outside the fixed run, writable", ok);
    let mut distinct = true;
    for i in 0..ALLOCS {
        for j in i + 1..ALLOCS {
            distinct &= pages[i] != pages[j];
        }
    }
    t.check("no page handed out twice", distinct);
    let mut ok = true;
    for p in &pages[1..] {
        // SAFETY: plain call.
        ok &= unsafe { kram_free_page(area, *p) } == 0;
    }
    t.check("kram_free_page frees them", ok);
    // SAFETY: plain calls.
    t.check("double free is refused with EPERM", unsafe { kram_free_page(area, pages[1]) } == EPERM.to_errno());
    // SAFETY: plain call.
    t.check("free outside the region is refused with EINVAL", unsafe { kram_free_page(area, 0x1000) } == EINVAL.to_errno());
    // SAFETY: plain call.
    t.check("free by another area is refused", unsafe { kram_free_page(area + 1, pages[0]) } < 0);
    pr_info!("kept fixed_phys={:#x} alloc_phys={:#x}\n", base, pages[0]);
}

fn phase1(t: &mut Report) {
    // SAFETY: NUL-terminated name.
    let area = unsafe { kram_area_lookup(NAME.as_char_ptr()) };
    t.check("area api-test is there after kexec", area > 0);
    if area <= 0 {
        return;
    }
    let (r0, base, _) = fixed(area, 0);
    t.check("fixed page 0 at the same physical address", r0 == 0 && base == module_parameters::fixed_phys.value());
    let mut ok = true;
    for i in 0..FIXED {
        let (r, _, virt) = fixed(area, i);
        // SAFETY: a fixed page of our area.
        ok &= r == 0 && !virt.is_null() && unsafe { page_words(virt, i, false) };
    }
    t.check("fixed pages kept their contents", ok);
    let a = module_parameters::alloc_phys.value();
    // The allocated page: still ours (freeing it succeeds exactly once).
    // SAFETY: plain calls.
    t.check("allocated page still owned by the area", unsafe { kram_free_page(area, a) } == 0);
    // SAFETY: plain call.
    t.check("area deleted", unsafe { kram_area_delete(area) } == 0);
}

/// Nanoseconds per call of kram_get_fixed_page and of a kram_alloc_page +
/// kram_free_page pair, over `N` calls each, printed as `bench ...` lines.
fn bench(t: &mut Report) {
    const N: u64 = 20000;
    // SAFETY: NUL-terminated name.
    let old = unsafe { kram_area_lookup(NAME.as_char_ptr()) };
    if old > 0 {
        // SAFETY: plain call with an area id.
        unsafe { kram_area_delete(old) };
    }
    // SAFETY: NUL-terminated name.
    let area = unsafe { kram_area_create(NAME.as_char_ptr(), FIXED) };
    t.check("bench area created", area > 0);
    if area <= 0 {
        return;
    }
    // SAFETY: reads the monotonic clock.
    let now = || unsafe { bindings::ktime_get() } as u64;
    let t0 = now();
    let mut ok = true;
    for i in 0..N {
        ok &= fixed(area, i % FIXED).0 == 0;
    }
    let t1 = now();
    for _ in 0..N {
        let mut phys = 0u64;
        // SAFETY: out-pointer is a valid local; virt not wanted.
        ok &= unsafe { kram_alloc_page(area, &mut phys, core::ptr::null_mut()) } == 0;
        // SAFETY: plain call.
        ok &= unsafe { kram_free_page(area, phys) } == 0;
    }
    let t2 = now();
    t.check("bench calls all succeeded", ok);
    pr_info!("bench get_fixed_page {} ns/call\n", (t1 - t0) / N);
    pr_info!("bench alloc+free {} ns/pair\n", (t2 - t1) / N);
    // SAFETY: plain call.
    unsafe { kram_area_delete(area) };
}

struct KramApiTest;

impl kernel::Module for KramApiTest {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let mut t = Report { failed: 0 };
        match module_parameters::phase.value() {
            0 => phase0(&mut t),
            1 => phase1(&mut t),
            2 => bench(&mut t),
            p => {
                pr_err!("phase={} is not 0 or 1 (EINVAL)\n", p);
                return Err(EINVAL);
            }
        }
        pr_info!("{} failed\n", t.failed);
        Ok(KramApiTest)
    }
}
