//! Properties of id allocation: no two live allocations overlap, a name
//! keeps its slice (also across save and load), and no id is handed out
//! outside the ranges.

use paddock::idmap::{Allocations, Cutting, IdRange, Isolation};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Allocate(u8),
    Free(u8),
    Reload,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![(0u8..12).prop_map(Op::Allocate), (0u8..12).prop_map(Op::Free), Just(Op::Reload)],
        1..60,
    )
}

fn ranges() -> impl Strategy<Value = Vec<IdRange>> {
    proptest::collection::vec((100_000u32..4_000_000, 1u32..300_000), 1..4).prop_map(|v| {
        // Disjoint ranges, as a sane subuid file has.
        let mut start = 0u32;
        v.into_iter()
            .map(|(gap, count)| {
                start = start.saturating_add(gap);
                let r = IdRange { start, count };
                start = start.saturating_add(count);
                r
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn allocation_is_disjoint_stable_and_inside_the_ranges(uids in ranges(), gids in ranges(), ops in ops(), size in prop_oneof![Just(65536u32), 1u32..100_000]) {
        let dir = tempfile::tempdir().unwrap();
        let mut table = Allocations::default();
        let mut held = std::collections::BTreeMap::new();
        for op in ops {
            match op {
                Op::Allocate(n) => {
                    let name = format!("w{n}");
                    if let Ok(slice) = table.allocate(&name, Cutting { uids: &uids, gids: &gids, size, isolation: Isolation::PerWorkload }, &|_, _| false) {
                        if let Some(before) = held.insert(name.clone(), slice) {
                            prop_assert_eq!(before, slice, "{} changed slice", name);
                        }
                        let inside = |r: &IdRange, ranges: &[IdRange]| ranges.iter().any(|o| o.start <= r.start && r.end() <= o.end());
                        prop_assert!(inside(&slice.uid, &uids) && inside(&slice.gid, &gids));
                    }
                }
                Op::Free(n) => {
                    let name = format!("w{n}");
                    table.free(&name);
                    held.remove(&name);
                }
                Op::Reload => {
                    table.save(dir.path()).unwrap();
                    table = Allocations::load(dir.path()).unwrap();
                }
            }
            let live: Vec<_> = table.iter().map(|(_, s)| *s).collect();
            for (i, a) in live.iter().enumerate() {
                for b in &live[i + 1..] {
                    prop_assert!(!a.uid.overlaps(&b.uid) && !a.gid.overlaps(&b.gid), "{:?} overlaps {:?}", a, b);
                }
            }
        }
    }
}
