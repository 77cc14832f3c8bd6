//! `liveup migrate`: adaptive live migration of QEMU VMs, either QEMU's own
//! multifd (with the best compression both QEMUs offer) or a relay that
//! carries the migration stream over N TCP connections, compressing chunks
//! in parallel through [`codec`] (QAT via QATzip, or software).
//! Documentation/migrate.rst has the design and the relay's wire format.

pub mod auth;
pub mod cli;
pub mod codec;
pub mod control;
pub mod facts;
pub mod plan;
pub mod relay;
pub mod session;
pub mod spec;
