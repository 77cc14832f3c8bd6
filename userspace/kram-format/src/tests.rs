//! Host tests of the shared format code: semantics, persistence, refusal of
//! corrupt and foreign metadata, and a crash injected at every write.

#![allow(clippy::drop_non_drop)] // drops end borrows of the region, for readability

use crate::*;
use core::sync::atomic::{AtomicU32, Ordering};
use std::vec::Vec;

mod areas;
mod crash;
mod layout;
mod model;
mod refusal;

pub(crate) const BASE: u64 = 0x1_0000_0000;

/// A region in host memory: the two superblock pages and the owner map.
pub(crate) struct Region {
    pub(crate) geo: Geometry,
    pub(crate) slots: [Vec<u8>; 2],
    pub(crate) map: Vec<AtomicU32>,
}

impl Region {
    pub(crate) fn new(pages: u64) -> Self {
        let geo = Geometry::new(BASE, pages * PAGE_SIZE as u64).unwrap();
        Region {
            geo,
            slots: [std::vec![0; PAGE_SIZE], std::vec![0; PAGE_SIZE]],
            map: (0..pages).map(|_| AtomicU32::new(0)).collect(),
        }
    }
    pub(crate) fn media(&mut self) -> Media<'_> {
        let [a, b] = &mut self.slots;
        Media {
            slots: [a.as_mut_slice(), b.as_mut_slice()],
            map: &self.map,
        }
    }
    fn snapshot(&self) -> (Vec<u8>, Vec<u8>, Vec<u32>) {
        (
            self.slots[0].clone(),
            self.slots[1].clone(),
            self.map.iter().map(|w| w.load(Ordering::Relaxed)).collect(),
        )
    }
    fn restore(&mut self, s: &(Vec<u8>, Vec<u8>, Vec<u32>)) {
        self.slots[0].copy_from_slice(&s.0);
        self.slots[1].copy_from_slice(&s.1);
        for (w, v) in self.map.iter().zip(&s.2) {
            w.store(*v, Ordering::Relaxed);
        }
    }
    pub(crate) fn formatted(pages: u64) -> Self {
        let mut r = Region::new(pages);
        let geo = r.geo;
        Kram::format(geo, r.media(), Direct).unwrap();
        r
    }
    pub(crate) fn open(&mut self) -> Result<(Kram<'_, Direct>, OpenReport), Error> {
        let geo = self.geo;
        Kram::open(geo, self.media(), Direct)
    }
}

/// Owner of every page, as the format reports it.
fn owners(r: &mut Region) -> Vec<(u16, bool)> {
    let (k, _) = r.open().unwrap();
    (0..k.geometry().pages)
        .map(|p| k.page_owner(p).unwrap())
        .collect()
}
