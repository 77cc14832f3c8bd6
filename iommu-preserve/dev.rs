// SPDX-License-Identifier: GPL-2.0

//! `/dev/iommu-preserve`: open (CAP_SYS_ADMIN) and the ioctls, one
//! function per command, each run under `OPS`.

use crate::check::{run, Op};
use crate::device::Bdf;
use crate::freeze::{freeze, spans};
use crate::uapi::{self, Dev as IoprDev, Freeze as IoprFreeze, Span as IoprSpan, Status as IoprStatus};
use kernel::ffi::c_int;
use kernel::{
    bindings,
    fs::File,
    ioctl::{_IO, _IOR, _IOW},
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    prelude::*,
    sync::global_lock,
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
};

// The ABI is defined once, in userspace/kh-uapi/src/iommu_preserve.rs
// (liveup uses the same file; include/uapi/iommu_preserve.h is checked
// against it by kh-uapi's tests). The request numbers are checked here
// against the kernel's own encoding.
const _: () = {
    let m = uapi::IOC_MAGIC;
    assert!(uapi::IOC_STATUS == _IOR::<IoprStatus>(m, 0));
    assert!(uapi::IOC_FREEZE == _IOW::<IoprFreeze>(m, 1));
    assert!(uapi::IOC_THAW == _IO(m, 2));
    assert!(uapi::IOC_RELEASE == _IO(m, 3));
    assert!(uapi::IOC_DISCARD == _IO(m, 4));
};

// SAFETY: plain integers, no padding (kh-uapi asserts the sizes), every
// bit pattern valid.
unsafe impl FromBytes for IoprDev {}
// SAFETY: as above.
unsafe impl FromBytes for IoprSpan {}
// SAFETY: as above (a device, a u32 and spans: 136 bytes, no padding).
unsafe impl FromBytes for IoprFreeze {}
// SAFETY: as above.
unsafe impl AsBytes for IoprStatus {}

global_lock! {
    // SAFETY: initialised in `IommuPreserve::init` before the device is
    // registered.
    pub(crate) unsafe(uninit) static OPS: Mutex<()> = ();
}

pub(crate) struct IoprDevice;

#[vtable]
impl MiscDevice for IoprDevice {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        // SAFETY: `capable` only reads the current task's credentials.
        if !unsafe { bindings::capable(bindings::CAP_SYS_ADMIN as c_int) } {
            return Err(EPERM);
        }
        Ok(KBox::new(IoprDevice, GFP_KERNEL)?)
    }

    fn ioctl(_me: &IoprDevice, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let user = |len| UserSlice::new(UserPtr::from_addr(arg), len);
        match cmd {
            uapi::IOC_STATUS => status(user(size_of::<IoprStatus>())),
            uapi::IOC_FREEZE => freeze_dev(user(size_of::<IoprFreeze>())),
            uapi::IOC_THAW => locked(Op::Thaw).map(|_| ()),
            uapi::IOC_RELEASE => locked(Op::Release).map(|_| ()),
            uapi::IOC_DISCARD => locked(Op::Discard).map(|_| ()),
            _ => Err(ENOTTY),
        }?;
        Ok(0)
    }
}

/// One operation on the record under `OPS`: the record page, the tables
/// areas and the IOMMU's root are only changed with it held. (KRAM's API
/// takes its own spinlock inside; `OPS` is a mutex because the operations
/// sleep: allocations, table copies.)
fn locked(op: Op) -> Result<IoprStatus> {
    let _g = OPS.lock();
    run(op, false)
}

/// STATUS: where the record and its device stand.
fn status(user: UserSlice) -> Result {
    let s = locked(Op::Status)?;
    user.writer().write(&s)
}

/// FREEZE: the device's tables into KRAM, the IOMMU onto the copies; every
/// page they map inside the spans given.
fn freeze_dev(user: UserSlice) -> Result {
    let f: IoprFreeze = user.reader().read()?;
    let bdf = Bdf(f.dev.seg, f.dev.bus, f.dev.devfn);
    let spans = spans(&bdf, &f)?;
    let _g = OPS.lock();
    freeze(bdf, &spans)
}
