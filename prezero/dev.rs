// SPDX-License-Identifier: GPL-2.0

//! `/dev/prezero`: open (CAP_SYS_ADMIN) and its one ioctl, ZERO.

use crate::account::{Kind, MAX_COUNT, NODES, SIZES};
use crate::glue::prezero_glue_node_online;
use crate::knobs::ENABLED;
use crate::uapi;
use crate::zero::{zero_pages, Stop};
use core::sync::atomic::Ordering::Relaxed;
use kernel::ffi::c_int;
use kernel::{
    bindings,
    fs::File,
    ioctl::_IOWR,
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    prelude::*,
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
};

// The ioctl ABI is defined once, in userspace/kh-uapi/src/prezero.rs
// (liveup uses the same file; prezero/include/uapi/prezero.h is checked
// against it by kh-uapi's tests).
use uapi::{Req as PrezeroReq, IOC_ZERO as PREZERO_IOC_ZERO, ZERO_POOL as PREZERO_ZERO_POOL};

const _: () = assert!(PREZERO_IOC_ZERO == _IOWR::<PrezeroReq>(uapi::IOC_MAGIC, 1));
const _: () = assert!(uapi::MAX_COUNT == MAX_COUNT);

// SAFETY: plain integers, no padding (8 + 4 + 4 + 3 * 8 bytes, asserted in
// kh-uapi), every bit pattern valid.
unsafe impl FromBytes for PrezeroReq {}
// SAFETY: as above.
unsafe impl AsBytes for PrezeroReq {}


fn index_of_size(size: u64, kind: Kind) -> Option<usize> {
    SIZES
        .iter()
        .position(|&(o, _, k)| k == kind && (bindings::PAGE_SIZE as u64) << o == size)
}

pub(crate) struct PrezeroDev;

#[vtable]
impl MiscDevice for PrezeroDev {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        // SAFETY: `capable` only reads the current task's credentials.
        if !unsafe { bindings::capable(bindings::CAP_SYS_ADMIN as c_int) } {
            return Err(EPERM);
        }
        Ok(KBox::new(PrezeroDev, GFP_KERNEL)?)
    }

    fn ioctl(_me: &PrezeroDev, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        if cmd != PREZERO_IOC_ZERO {
            return Err(ENOTTY);
        }
        let (mut rd, mut wr) =
            UserSlice::new(UserPtr::from_addr(arg), size_of::<PrezeroReq>()).reader_writer();
        let mut req: PrezeroReq = rd.read()?;
        if req.flags & !PREZERO_ZERO_POOL != 0 {
            pr_err!("zero: flags {:#x}: only bit 0 (pool) is defined (EINVAL)\n", req.flags);
            return Err(EINVAL);
        }
        let pool = req.flags & PREZERO_ZERO_POOL != 0;
        let kind = if pool { Kind::Pool } else { Kind::Hugetlb };
        let Some(idx) = index_of_size(req.size, kind) else {
            if pool {
                pr_err!(
                    "zero: pool size {} is not a power of two from 4 KiB to 2 MiB other than 8 KiB (EINVAL)\n",
                    req.size
                );
            } else {
                pr_err!("zero: size {} is not 2 MiB or 1 GiB (EINVAL)\n", req.size);
            }
            return Err(EINVAL);
        };
        // SAFETY: checks a node number.
        if req.node < 0
            || req.node as usize >= NODES
            || !unsafe { prezero_glue_node_online(req.node) }
        {
            pr_err!(
                "zero: node {} is not an online node below {} (EINVAL)\n",
                req.node,
                NODES
            );
            return Err(EINVAL);
        }
        if req.count == 0 || req.count > MAX_COUNT {
            pr_err!(
                "zero: count {} not in 1..={} (EINVAL)\n",
                req.count,
                MAX_COUNT
            );
            return Err(EINVAL);
        }
        if !ENABLED.load(Relaxed) {
            pr_err!("zero: prezero is disabled (ENODEV)\n");
            return Err(ENODEV);
        }
        let (done, ns, why) = zero_pages(idx, req.node, req.count, false)?;
        if done == 0 && why == Stop::Interrupted {
            return Err(EINTR);
        }
        req.done = done;
        req.ns = ns;
        wr.write(&req)?;
        Ok(0)
    }
}
