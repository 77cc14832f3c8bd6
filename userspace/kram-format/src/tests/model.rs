//! Random operations checked against a model of the region.

use crate::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::vec::Vec;

use super::{owners, Region};

#[derive(Debug, Clone)]
enum Op {
    Create(u8, u8),
    Delete(u8),
    Alloc(u8),
    Free(u8, u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6, 0u8..12).prop_map(|(n, p)| Op::Create(n, p)),
        (0u8..6).prop_map(Op::Delete),
        (0u8..6).prop_map(Op::Alloc),
        (0u8..6, any::<u8>()).prop_map(|(n, i)| Op::Free(n, i)),
        Just(Op::Reopen),
    ]
}

proptest! {
    /// Random operations against a model: the region always agrees with it,
    /// a page never has two owners, and reopening changes nothing.
    #[test]
    fn random_operations_match_a_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut r = Region::formatted(128);
        // name -> (fixed run, allocated pages)
        let mut model: BTreeMap<u8, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
        for op in ops {
            let (mut k, _) = r.open().unwrap();
            let name = |n: u8| std::format!("area{n}").into_bytes();
            match op {
                Op::Create(n, p) => match k.create_area(&name(n), p as u64) {
                    Ok(id) => {
                        prop_assert!(!model.contains_key(&n));
                        let run = (0..p as u64).map(|i| k.fixed_page(id, i).unwrap()).collect();
                        model.insert(n, (run, Vec::new()));
                    }
                    Err(Error::Exists) => prop_assert!(model.contains_key(&n)),
                    Err(Error::NoSpace) => {}
                    Err(e) => prop_assert!(false, "create: {:?}", e),
                },
                Op::Delete(n) => match k.lookup(&name(n)) {
                    Ok(id) => { k.delete_area(id).unwrap(); model.remove(&n); }
                    Err(_) => prop_assert!(!model.contains_key(&n)),
                },
                Op::Alloc(n) => if let Ok(id) = k.lookup(&name(n)) {
                    match k.alloc_page(id) {
                        Ok(p) => model.get_mut(&n).unwrap().1.push(p),
                        Err(Error::NoSpace) => prop_assert_eq!(k.stats().free, 0),
                        Err(e) => prop_assert!(false, "alloc: {:?}", e),
                    }
                },
                Op::Free(n, i) => if let Ok(id) = k.lookup(&name(n)) {
                    let pages = &mut model.get_mut(&n).unwrap().1;
                    if !pages.is_empty() {
                        let p = pages.remove(i as usize % pages.len());
                        k.free_page(id, p).unwrap();
                    }
                },
                Op::Reopen => {}
            }
            drop(k);
            // The region agrees with the model, page by page.
            let own = owners(&mut r);
            let mut expect = std::vec![None; own.len()];
            let (k, _) = r.open().unwrap();
            for (n, (run, alloc)) in &model {
                let id = k.lookup(&name(*n)).unwrap();
                for &p in run { prop_assert!(expect[p as usize].replace((id, true)).is_none()); }
                for &p in alloc { prop_assert!(expect[p as usize].replace((id, false)).is_none()); }
            }
            let data_first = k.geometry().data_first() as usize;
            for (p, o) in own.iter().enumerate() {
                let want = if p < data_first { (OWNER_META, false) } else { expect[p].unwrap_or((OWNER_FREE, false)) };
                prop_assert_eq!(*o, want, "page {}", p);
            }
        }
    }
}
