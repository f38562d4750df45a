//! Unit tests and a reference-model property test of the allocator.

use super::*;
use proptest::prelude::*;

fn ext(start: u64, len: u64) -> Extent {
    Extent { start, len }
}

#[test]
fn allocate_prefers_goal_then_best_fit() {
    let mut a = Allocator::new(100);
    let x = a.allocate(10, None).unwrap();
    assert_eq!(x, ext(0, 10));
    let y = a.allocate(5, Some(10)).unwrap();
    assert_eq!(y, ext(10, 5), "goal keeps a growing file contiguous");
    a.free(ext(0, 10)).unwrap();
    // Free: 0..10 and 15..100. Best fit for 8 is the 10-block hole, not the big one.
    assert_eq!(a.allocate(8, None).unwrap(), ext(0, 8));
    assert_eq!(a.free_blocks(), 100 - 8 - 5);
}

#[test]
fn pinned_blocks_become_busy_when_freed_and_free_on_last_unpin() {
    let mut a = Allocator::new(16);
    let x = a.allocate(16, None).unwrap();
    a.pin(ext(4, 4)).unwrap();
    a.pin(ext(6, 4)).unwrap();
    assert_eq!(
        a.free(x).unwrap(),
        vec![ext(0, 4), ext(10, 6)],
        "blocks 4..10 stay busy"
    );
    assert_eq!(
        (a.free_blocks(), a.used_blocks(), a.busy_blocks()),
        (10, 0, 6)
    );
    assert_eq!(
        a.allocate(16, None).unwrap(),
        ext(10, 6),
        "allocation trims around busy blocks"
    );
    assert_eq!(a.allocate(16, None).unwrap(), ext(0, 4));
    assert_eq!(a.allocate(1, None), Err(AllocError::NoSpace { busy: 6 }));
    assert_eq!(a.unpin(ext(4, 4)).unwrap(), vec![ext(4, 2)]);
    assert_eq!(a.busy_blocks(), 4);
    assert_eq!(a.unpin(ext(6, 4)).unwrap(), vec![ext(6, 4)]);
    assert_eq!(a.busy_blocks(), 0);
    assert_eq!(a.allocate(10, None).unwrap(), ext(4, 6));
    a.check().unwrap();
}

#[test]
fn refusals_leave_state_unchanged() {
    let mut a = Allocator::new(8);
    assert!(matches!(a.free(ext(0, 1)), Err(AllocError::NotUsed { .. })));
    assert!(matches!(a.pin(ext(0, 1)), Err(AllocError::NotUsed { .. })));
    assert!(matches!(
        a.unpin(ext(0, 1)),
        Err(AllocError::NotPinned { .. })
    ));
    assert!(matches!(
        a.claim(ext(7, 2)),
        Err(AllocError::OutOfRange { .. })
    ));
    a.claim(ext(2, 2)).unwrap();
    assert!(matches!(
        a.claim(ext(3, 2)),
        Err(AllocError::NotFree { .. })
    ));
    a.pin(ext(2, 1)).unwrap();
    a.free(ext(2, 2)).unwrap();
    assert!(
        matches!(a.pin(ext(2, 1)), Err(AllocError::NotUsed { .. })),
        "busy blocks cannot be pinned again"
    );
    assert!(
        matches!(a.free(ext(2, 1)), Err(AllocError::NotUsed { .. })),
        "busy blocks cannot be freed twice"
    );
    assert_eq!(
        (a.free_blocks(), a.used_blocks(), a.busy_blocks()),
        (7, 0, 1)
    );
}

#[test]
fn from_used_frees_exactly_the_gaps() {
    let a = Allocator::from_used(100, [ext(50, 10), ext(0, 5), ext(55, 10), ext(99, 1)]);
    assert_eq!(
        a.free_extents().collect::<Vec<_>>(),
        vec![ext(5, 45), ext(65, 34)]
    );
    assert_eq!(a.used_blocks(), 5 + 15 + 1);
    a.check().unwrap();
}

#[test]
fn from_used_ignores_what_lies_past_the_end() {
    // Owners read from a damaged image may name blocks past the end (more than once).
    let a = Allocator::from_used(
        100,
        [
            ext(10, 5),
            ext(120, 3),
            ext(101, 1000),
            ext(u64::MAX - 1, 5),
        ],
    );
    assert_eq!(
        a.free_extents().collect::<Vec<_>>(),
        vec![ext(0, 10), ext(15, 85)]
    );
    a.check().unwrap();
}

#[test]
fn encode_decode_round_trip_and_corruption() {
    let mut a = Allocator::new(1000);
    for _ in 0..10 {
        a.allocate(37, None).unwrap();
    }
    a.free(ext(40, 20)).unwrap();
    let b = Allocator::decode(&a.encode()).unwrap();
    assert_eq!(
        b.free_extents().collect::<Vec<_>>(),
        a.free_extents().collect::<Vec<_>>()
    );
    assert_eq!(b.used_blocks(), a.used_blocks());
    let mut bad = a.encode();
    bad.truncate(bad.len() - 3);
    assert!(matches!(
        Allocator::decode(&bad),
        Err(AllocError::Corrupt(_))
    ));
    let mut bad = a.encode();
    bad[16..24].copy_from_slice(&5000u64.to_le_bytes());
    assert!(matches!(
        Allocator::decode(&bad),
        Err(AllocError::Corrupt(_))
    ));
}

/// The reference model: one state per block, pins counted per block.
#[derive(Clone, Debug)]
struct Model {
    owner: Vec<Option<u32>>, // Some(tag) when used
    pins: Vec<u32>,
    busy: Vec<bool>,
}

#[derive(Clone, Debug)]
enum Op {
    Allocate(u64),
    Free(usize, u64, u64),
    Pin(usize, u64, u64),
    Unpin(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u64..20).prop_map(Op::Allocate),
        (0usize..64, 0u64..20, 1u64..20).prop_map(|(i, o, l)| Op::Free(i, o, l)),
        (0usize..64, 0u64..20, 1u64..20).prop_map(|(i, o, l)| Op::Pin(i, o, l)),
        (0usize..64).prop_map(Op::Unpin),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn matches_reference_model(ops in proptest::collection::vec(op(), 1..200)) {
        const TOTAL: u64 = 128;
        let mut a = Allocator::new(TOTAL);
        let mut m = Model { owner: vec![None; TOTAL as usize], pins: vec![0; TOTAL as usize], busy: vec![false; TOTAL as usize] };
        let mut owned: Vec<Extent> = Vec::new();
        let mut pinned: Vec<Extent> = Vec::new();
        for op in ops {
            match op {
                Op::Allocate(n) => match a.allocate(n, None) {
                    Ok(e) => {
                        for b in e.start..e.end() {
                            prop_assert!(m.owner[b as usize].is_none() && !m.busy[b as usize], "handed out a block that was not free");
                            m.owner[b as usize] = Some(1);
                        }
                        owned.push(e);
                    }
                    Err(AllocError::NoSpace { .. }) => {
                        prop_assert!((0..TOTAL as usize).all(|b| m.owner[b].is_some() || m.busy[b]), "NoSpace with a free block left");
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                },
                Op::Free(i, off, len) => {
                    if owned.is_empty() { continue; }
                    let e = owned.remove(i % owned.len());
                    let off = off % e.len;
                    let part = ext(e.start + off, len.min(e.len - off));
                    a.free(part).unwrap();
                    for b in part.start..part.end() {
                        m.owner[b as usize] = None;
                        if m.pins[b as usize] > 0 { m.busy[b as usize] = true; }
                    }
                    if off > 0 { owned.push(ext(e.start, off)); }
                    if part.end() < e.end() { owned.push(ext(part.end(), e.end() - part.end())); }
                }
                Op::Pin(i, off, len) => {
                    if owned.is_empty() { continue; }
                    let e = owned[i % owned.len()];
                    let off = off % e.len;
                    let part = ext(e.start + off, len.min(e.len - off));
                    a.pin(part).unwrap();
                    for b in part.start..part.end() { m.pins[b as usize] += 1; }
                    pinned.push(part);
                }
                Op::Unpin(i) => {
                    if pinned.is_empty() { continue; }
                    let p = pinned.remove(i % pinned.len());
                    a.unpin(p).unwrap();
                    for b in p.start..p.end() {
                        m.pins[b as usize] -= 1;
                        if m.pins[b as usize] == 0 { m.busy[b as usize] = false; }
                    }
                }
            }
            a.check().map_err(TestCaseError::fail)?;
            let free = (0..TOTAL as usize).filter(|&b| m.owner[b].is_none() && !m.busy[b]).count() as u64;
            let busy = m.busy.iter().filter(|&&x| x).count() as u64;
            prop_assert_eq!(a.free_blocks(), free);
            prop_assert_eq!(a.busy_blocks(), busy);
            prop_assert_eq!(a.free_blocks() + a.used_blocks() + a.busy_blocks(), TOTAL);
            for b in 0..TOTAL {
                prop_assert_eq!(a.is_free(ext(b, 1)), m.owner[b as usize].is_none() && !m.busy[b as usize]);
            }
        }
    }
}

/// Data allocations leave the reserve alone: they take single-block fragments rather than
/// cut into the extents the reserve needs, and fail once only the reserve is left, while a
/// metadata allocation still gets the whole reserve in at most `extents` pieces.
#[test]
fn data_allocations_leave_the_reserve_in_few_extents() {
    let mut a = Allocator::new(100);
    a.allocate(100, None).unwrap();
    // Free: ten single blocks 0, 2, .., 18, and one run 50..80.
    for b in (0..20).step_by(2) {
        a.free(ext(b, 1)).unwrap();
    }
    a.free(ext(50, 30)).unwrap();
    a.set_reserve(Reserve {
        blocks: 25,
        extents: 1,
    });
    assert_eq!(a.available_blocks(), 10 + 5);
    // A goal at the start of the run would cut into the reserve: a fragment is taken.
    assert_eq!(a.allocate_data(8, Some(50)).unwrap().len, 1);
    let mut data = 1;
    while let Ok(e) = a.allocate_data(8, None) {
        data += e.len;
        assert!(a.reserve_holds());
    }
    assert_eq!(data, 10 + 5, "every fragment, and the run's spare 5 blocks");
    assert_eq!(a.available_blocks(), 0);
    assert!(matches!(
        a.allocate_data(1, None),
        Err(AllocError::NoSpace { .. })
    ));
    // The metadata allocation gets the reserve in one piece.
    assert_eq!(a.allocate(25, None).unwrap().len, 25);
    a.check().unwrap();
}

#[derive(Clone, Debug)]
enum DataOp {
    Allocate(u64, bool),
    Free(usize, u64, u64),
}

fn data_op() -> impl Strategy<Value = DataOp> {
    prop_oneof![
        (1u64..24, any::<bool>()).prop_map(|(n, g)| DataOp::Allocate(n, g)),
        (0usize..64, 0u64..24, 1u64..24).prop_map(|(i, o, l)| DataOp::Free(i, o, l)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Whatever data allocates and frees: a reserve that holds keeps holding, data gets
    /// exactly the available blocks (`NoSpace` only when none is), and a metadata
    /// allocation of the reserve's size then fits in the reserve's number of extents.
    #[test]
    fn data_allocations_keep_the_reserve(
        reserve in 0u64..80,
        extents in 1usize..5,
        ops in proptest::collection::vec(data_op(), 1..200),
    ) {
        const TOTAL: u64 = 256;
        let mut a = Allocator::new(TOTAL);
        let r = Reserve { blocks: reserve, extents };
        a.set_reserve(r);
        let mut owned: Vec<Extent> = Vec::new();
        for op in ops {
            match op {
                DataOp::Allocate(n, with_goal) => {
                    let before = a.available_blocks();
                    let goal = with_goal.then(|| owned.last().map_or(0, |e| e.end()));
                    match a.allocate_data(n, goal) {
                        Ok(e) => {
                            prop_assert!(e.len >= 1 && e.len <= n.min(before));
                            prop_assert_eq!(a.available_blocks(), before - e.len);
                            owned.push(e);
                        }
                        Err(AllocError::NoSpace { .. }) => prop_assert_eq!(before, 0),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
                DataOp::Free(i, off, len) => {
                    if owned.is_empty() { continue; }
                    let e = owned.remove(i % owned.len());
                    let off = off % e.len;
                    let part = ext(e.start + off, len.min(e.len - off));
                    a.free(part).unwrap();
                    if off > 0 { owned.push(ext(e.start, off)); }
                    if part.end() < e.end() { owned.push(ext(part.end(), e.end() - part.end())); }
                }
            }
            a.check().map_err(TestCaseError::fail)?;
            prop_assert!(a.reserve_holds(), "data took the reserve");
        }
        // The metadata allocation the reserve is for: largest extents first.
        let mut want = reserve;
        let mut pieces = 0;
        while want > 0 {
            want -= a.allocate(want, None).unwrap().len;
            pieces += 1;
        }
        prop_assert!(pieces <= extents, "{} pieces for a reserve of {} extents", pieces, extents);
    }
}

#[test]
fn pending_frees_are_not_reused_until_settled() {
    let mut a = Allocator::new(16);
    let x = a.allocate(16, None).unwrap();
    a.free_pending(ext(0, 8), 5).unwrap();
    assert_eq!(a.free_blocks(), 0, "pending blocks are not allocatable");
    assert_eq!(a.pending_blocks(), 8);
    assert_eq!(
        a.busy_blocks(),
        0,
        "a pending free is not a holder's busy block"
    );
    assert!(a.busy_extents().is_empty());
    assert_eq!(a.used_blocks(), 8);
    assert!(matches!(
        a.allocate(1, None),
        Err(AllocError::NoSpace { .. })
    ));
    assert!(
        a.free(ext(0, 8)).is_err(),
        "a pending block cannot be freed again"
    );
    assert!(a.settle(5).is_empty(), "record 5 is not durable below 5");
    assert_eq!(a.settle(6), vec![ext(0, 8)]);
    assert!(!a.has_pending());
    assert_eq!(a.free_blocks(), 8);
    a.free(ext(8, 8)).unwrap();
    assert_eq!(a.free_blocks(), x.len);
    a.check().unwrap();
}

#[test]
fn a_pinned_pending_block_is_busy_and_stays_busy_after_settling() {
    let mut a = Allocator::new(16);
    a.allocate(16, None).unwrap();
    a.pin(ext(2, 2)).unwrap();
    a.free_pending(ext(0, 8), 1).unwrap();
    a.free_pending(ext(8, 4), 2).unwrap();
    assert_eq!(a.pending_blocks(), 10, "blocks 2 and 3 are the holder's");
    assert_eq!(a.busy_blocks(), 2);
    assert_eq!(
        a.busy_extents(),
        vec![BusyExtent {
            extent: ext(2, 2),
            pins: 1
        }]
    );
    assert_eq!(a.settle(2), vec![ext(0, 2), ext(4, 4)]);
    assert_eq!(a.busy_blocks(), 2);
    assert_eq!(a.pending_blocks(), 4);
    assert_eq!(a.unpin(ext(2, 2)).unwrap(), vec![ext(2, 2)]);
    assert_eq!(a.settle(u64::MAX), vec![ext(8, 4)]);
    assert_eq!(a.free_blocks(), 12);
    a.check().unwrap();
}

#[test]
fn a_holder_letting_go_of_a_pending_block_leaves_it_pending() {
    let mut a = Allocator::new(8);
    a.allocate(8, None).unwrap();
    a.pin(ext(0, 8)).unwrap();
    a.free_pending(ext(0, 8), 3).unwrap();
    assert_eq!((a.busy_blocks(), a.pending_blocks()), (8, 0));
    assert!(a.unpin(ext(0, 8)).unwrap().is_empty(), "still pending");
    assert_eq!((a.busy_blocks(), a.pending_blocks()), (0, 8));
    assert_eq!(a.free_blocks(), 0);
    assert_eq!(a.settle(4), vec![ext(0, 8)]);
    a.check().unwrap();
}
