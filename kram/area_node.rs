// SPDX-License-Identifier: GPL-2.0

//! `/dev/kram-area/ID` and `/dev/kram-pages-area/ID`: one node per area id
//! (1..=`MAX_AREAS`), whose files reach that one area. liveup gives QEMU
//! its VM's node as `mem-path` (offset 0 is the area's first page), so a
//! QEMU holds no descriptor that could map another VM's RAM, the IOMMU
//! tables or liveup's saved state, as any `/dev/kram` descriptor can.
//!
//! The id is fixed when the node is opened: an area that does not exist
//! is ENOENT, and while a file of the node is open the area is neither
//! deleted nor formatted away (`Region::opens`), so the file never comes to
//! reach a later area under the same id. `-pages-` nodes map ordinary
//! pages (get_user_pages can pin them: VFIO, O_DIRECT), the others a PFN
//! range, as `/dev/kram-pages` and `/dev/kram` do. Unlike those two, no
//! CAP_SYS_ADMIN check: the node's mode and owner decide who opens it
//! (root only, 0600, unless the operator changes them), so a manager may
//! hand one VM's node to an unprivileged QEMU. No ioctls (ENOTTY).
//!
//! Locking: the open count is changed under `STATE` (crate root).

use crate::format::MAX_AREAS;
use crate::mmap::map_area;
use crate::region::with_region;
use kernel::{
    c_str,
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    mm::virt::VmaNew,
    prelude::*,
    str::CStr,
};

macro_rules! node_names {
    ($($n:literal)*) => {
        [
            $(c_str!(concat!("kram-area/", stringify!($n))),)*
            $(c_str!(concat!("kram-pages-area/", stringify!($n))),)*
        ]
    };
}

/// How many nodes: a PFN node and a pages node per area id.
pub(crate) const NODES: usize = 2 * MAX_AREAS;

/// The nodes' names, by registration index: ids 1..=`MAX_AREAS` mapping a
/// PFN range, then the same ids mapping ordinary pages. (The array's type
/// fails to compile if the list and `MAX_AREAS` disagree.)
pub(crate) static NAMES: [&CStr; NODES] = node_names!(
    1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16
    17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32
);

/// An open file of one area's node.
pub(crate) struct AreaNode {
    id: u16,
    pages: bool,
}

impl AreaNode {
    /// The area id and kind of the node `misc` was registered as.
    fn of(misc: &MiscDeviceRegistration<Self>) -> Result<(u16, bool)> {
        // SAFETY: `misc` is registered (open runs inside misc_open, which
        // keeps it so); its name was set from `NAMES` at registration and
        // is never changed.
        let name = unsafe { (*misc.as_raw()).name };
        let i = NAMES
            .iter()
            .position(|n| n.as_char_ptr() == name)
            .ok_or(ENODEV)?;
        let id = u16::try_from(i % MAX_AREAS + 1).map_err(|_| EINVAL)?;
        Ok((id, i >= MAX_AREAS))
    }
}

#[vtable]
impl MiscDevice for AreaNode {
    type Ptr = KBox<Self>;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        let (id, pages) = Self::of(misc)?;
        // Allocate before taking the spinlock: GFP_KERNEL may sleep.
        let slot = KBox::<AreaNode>::new_uninit(GFP_KERNEL)?;
        with_region(|r| {
            r.ready()?.area(id).map_err(|_| ENOENT)?;
            let n = r.opens.get_mut(usize::from(id)).ok_or(EINVAL)?;
            *n = n.checked_add(1).ok_or(EBUSY)?;
            Ok(())
        })?;
        // From here the file's `AreaNode` owns the count (dropped at release).
        Ok(KBox::write(slot, AreaNode { id, pages }))
    }

    /// Map pages of this area: the mmap offset is the offset in the area.
    fn mmap(me: &AreaNode, _file: &File, vma: &VmaNew) -> Result {
        map_area(vma, me.pages, Some(me.id))
    }
}

impl Drop for AreaNode {
    fn drop(&mut self) {
        let _ = with_region(|r| {
            if let Some(n) = r.opens.get_mut(usize::from(self.id)) {
                *n = n.saturating_sub(1);
            }
            Ok(())
        });
    }
}
