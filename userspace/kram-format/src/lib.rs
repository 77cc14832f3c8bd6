//! KRAM's on-media format and allocator logic, without `std`.
//!
//! `format.rs` is compiled into the `kram` kernel module as it is (included
//! by path), and tested here on the host, so the logic that decides who owns
//! which physical page is the same code in both places.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod cmdline;
mod format;
pub mod vtd;
pub use format::*;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
