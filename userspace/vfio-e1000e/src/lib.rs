//! A userspace DMA test driver for the e1000e (Intel 82574L, as QEMU
//! emulates it) through VFIO: the receive ring and buffers live in memory
//! the caller chooses (anonymous, a shared file mapping, a KRAM area), and
//! a header in that memory records the layout, so that a later process, or
//! a kernel after a kexec, can take over a NIC that never stopped receiving.
//! The CLI is `src/bin/e1000e-dma.rs`.

pub mod desc;
pub mod iommufd;
pub mod layout;
pub mod mem;
pub mod nic;
pub mod regs;
pub mod seq;
pub mod vfio;
