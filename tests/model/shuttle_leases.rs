//! Model checking of the lease manager and the allocator's busy blocks with shuttle: holders
//! that pin, release and go away, breakers that detach blocks, fences, and deadlines that
//! pass (the lease manager's clock is virtual under shuttle: a modelled thread moves it, so
//! a deadline passes at whatever point of the interleaving the checker picks), in every
//! interleaving the checker explores, with the invariants checked at the end of each.
//!
//! Built only with the shuttle cfg, which the test command sets:
//! `RUSTFLAGS="--cfg shuttle" CARGO_TARGET_DIR=target/shuttle cargo test --test shuttle_leases`
#![cfg(shuttle)]

use std::sync::Arc;
use std::time::Duration;

use pinfs::lease::{
    Breaker, HolderInfo, LeaseConfig, LeaseError, LeaseState, Leases, PinRequest, Policy, Unpinner,
};
use pinfs_allocator::{Allocator, Extent};
use shuttle::sync::Mutex;
use shuttle::thread;

const INO: u64 = 7;
const FILE_BLOCKS: u64 = 8;

/// The allocator side: a file of 8 blocks at image blocks 100..108 of a 1024-block space.
struct Space {
    alloc: Mutex<Allocator>,
    /// File blocks still mapped (a breaker frees what it detaches).
    mapped: Mutex<Vec<bool>>,
}

impl Space {
    fn new() -> Arc<Space> {
        let mut a = Allocator::new(1024);
        a.claim(Extent {
            start: 100,
            len: FILE_BLOCKS,
        })
        .unwrap();
        Arc::new(Space {
            alloc: Mutex::new(a),
            mapped: Mutex::new(vec![true; FILE_BLOCKS as usize]),
        })
    }

    /// A breaker's layout change: the file lets go of blocks first..end.
    fn detach(&self, first: u64, end: u64) {
        let mut mapped = self.mapped.lock().unwrap();
        let mut a = self.alloc.lock().unwrap();
        for b in first..end.min(FILE_BLOCKS) {
            if mapped[b as usize] {
                mapped[b as usize] = false;
                a.free(Extent {
                    start: 100 + b,
                    len: 1,
                })
                .unwrap();
            }
        }
    }

    fn check(&self) {
        let a = self.alloc.lock().unwrap();
        a.check().unwrap();
        assert_eq!(
            a.free_blocks() + a.used_blocks() + a.busy_blocks(),
            a.total_blocks()
        );
    }

    fn busy(&self) -> u64 {
        self.alloc.lock().unwrap().busy_blocks()
    }
}

/// A lease manager with busy blocks on, with no notification channel.
fn manager(policy: Policy, break_time: Option<Duration>) -> Arc<Leases> {
    Arc::new(Leases::new(
        LeaseConfig {
            break_time,
            policy,
            busy_blocks: true,
            ..LeaseConfig::default()
        },
        None,
    ))
}

impl Unpinner for Space {
    fn unpin(&self, extents: &[(u64, Extent)]) {
        let mut a = self.alloc.lock().unwrap();
        for (_, e) in extents {
            a.unpin(*e).unwrap();
        }
    }
}

fn pin(
    leases: &Leases,
    space: &Space,
    holder: u64,
    first: u64,
    len: u64,
) -> Result<u64, LeaseError> {
    let req = PinRequest {
        holder,
        ino: INO,
        offset: first * 4096,
        len: len * 4096,
        writable: true,
        unbreakable: false,
    };
    let r = leases.grant(&req, || {
        let mapped = space.mapped.lock().unwrap();
        if (first..first + len).any(|b| !mapped[b as usize]) {
            return Err(()); // the range left the file before the pin: nothing to pin
        }
        let mut a = space.alloc.lock().unwrap();
        let e = Extent {
            start: 100 + first,
            len,
        };
        a.pin(e).unwrap();
        Ok(vec![(first, e)])
    })?;
    r.map_err(|()| LeaseError::Again)
}

fn holder(leases: &Leases, pid: u32) -> u64 {
    leases.add_holder(HolderInfo {
        pid,
        comm: format!("h{pid}"),
        uid: 0,
        gid: 0,
    })
}

/// Revoke with an expired deadline: holders pin, store nothing, release or go away; a breaker
/// detaches blocks; a fence comes in. Whatever the order: accounting holds, busy blocks only
/// while pinned, none once every holder has gone.
#[test]
fn revoke_detach_fence_and_holder_death() {
    shuttle::check_random(
        || {
            let leases = manager(Policy::Revoke, Some(Duration::ZERO));
            let space = Space::new();
            let h1 = holder(&leases, 11);
            let h2 = holder(&leases, 12);
            let t1 = {
                let (l, s) = (leases.clone(), space.clone());
                thread::spawn(move || {
                    if let Ok(p) = pin(&l, &s, h1, 0, 4) {
                        let _ = l.release(h1, p, &*s);
                    }
                    let _ = pin(&l, &s, h1, 2, 2);
                })
            };
            let t2 = {
                let (l, s) = (leases.clone(), space.clone());
                thread::spawn(move || {
                    let _ = pin(&l, &s, h2, 3, 4);
                    l.fence(h2, &*s).unwrap();
                })
            };
            let t3 = {
                let (l, s) = (leases.clone(), space.clone());
                thread::spawn(move || {
                    let guard = l.break_layout(
                        INO,
                        2,
                        6,
                        Breaker {
                            pid: 99,
                            nonblock: false,
                        },
                        &*s,
                    );
                    assert!(
                        guard.is_ok(),
                        "revoke with an expired deadline never refuses: {:?}",
                        guard.err()
                    );
                    s.detach(2, 6);
                    s.check();
                })
            };
            for t in [t1, t2, t3] {
                t.join().unwrap();
            }
            space.check();
            leases.holder_gone(h1, &*space);
            leases.holder_gone(h2, &*space);
            space.check();
            assert_eq!(
                space.busy(),
                0,
                "busy blocks are freed once every holder has gone"
            );
        },
        3000,
    );
}

/// Wait: the breaker waits until the holder releases; it never proceeds while the lease is
/// live, and no interleaving deadlocks (shuttle reports a deadlock as a failure).
#[test]
fn wait_never_detaches_under_a_live_lease() {
    shuttle::check_random(
        || {
            let leases = manager(Policy::Wait, None);
            let space = Space::new();
            let h = holder(&leases, 21);
            let pinned = pin(&leases, &space, h, 1, 3).unwrap();
            let released = Arc::new(Mutex::new(false));
            let t1 = {
                let (l, s, r) = (leases.clone(), space.clone(), released.clone());
                thread::spawn(move || {
                    thread::yield_now();
                    *r.lock().unwrap() = true;
                    l.release(h, pinned, &*s).unwrap();
                })
            };
            let t2 = {
                let (l, s, r) = (leases.clone(), space.clone(), released.clone());
                thread::spawn(move || {
                    let _g = l
                        .break_layout(
                            INO,
                            0,
                            FILE_BLOCKS,
                            Breaker {
                                pid: 99,
                                nonblock: false,
                            },
                            &*s,
                        )
                        .unwrap();
                    assert!(*r.lock().unwrap(), "the breaker went on before the release");
                    s.detach(0, FILE_BLOCKS);
                })
            };
            t1.join().unwrap();
            t2.join().unwrap();
            space.check();
            assert_eq!(space.busy(), 0, "released before the detach: nothing busy");
        },
        2000,
    );
}

/// Refuse with an expired deadline, a non-blocking breaker, and a new pin racing them: the
/// refused breaker changes nothing; new pins on a breaking range are refused with EAGAIN.
#[test]
fn refuse_nonblock_and_new_pins() {
    shuttle::check_random(
        || {
            let leases = manager(Policy::Refuse, Some(Duration::ZERO));
            let space = Space::new();
            let h = holder(&leases, 31);
            let other = holder(&leases, 32);
            pin(&leases, &space, h, 0, 8).unwrap();
            let t1 = {
                let (l, s) = (leases.clone(), space.clone());
                thread::spawn(move || {
                    match l.break_layout(
                        INO,
                        4,
                        8,
                        Breaker {
                            pid: 99,
                            nonblock: false,
                        },
                        &*s,
                    ) {
                        Err(LeaseError::Busy) => {}
                        Ok(_) => panic!("refuse let a breaker through a live lease"),
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                })
            };
            let t2 = {
                let (l, s) = (leases.clone(), space.clone());
                thread::spawn(move || {
                    let r = l.break_layout(
                        INO,
                        0,
                        2,
                        Breaker {
                            pid: 98,
                            nonblock: true,
                        },
                        &*s,
                    );
                    assert!(
                        matches!(r, Err(LeaseError::WouldBlock) | Err(LeaseError::Busy)),
                        "{:?}",
                        r.err()
                    );
                })
            };
            let t3 = {
                let (l, s) = (leases.clone(), space.clone());
                thread::spawn(move || match pin(&l, &s, other, 5, 2) {
                    Ok(_) | Err(LeaseError::Again) => {}
                    Err(e) => panic!("unexpected {e:?}"),
                })
            };
            for t in [t1, t2, t3] {
                t.join().unwrap();
            }
            space.check();
            assert!(
                space.mapped.lock().unwrap().iter().all(|&m| m),
                "a refused break changed nothing"
            );
            leases.holder_gone(h, &*space);
            leases.holder_gone(other, &*space);
            assert_eq!(space.alloc.lock().unwrap().used_blocks(), FILE_BLOCKS);
        },
        3000,
    );
}

/// A modelled clock: moves time past every deadline, again and again, until `done`.
fn clock(leases: Arc<Leases>, space: Arc<Space>, done: Arc<Mutex<bool>>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while !*done.lock().unwrap() {
            leases.advance_clock(Duration::from_secs(2), &*space);
            thread::yield_now();
        }
    })
}

fn breaker(leases: &Leases, space: &Space, first: u64, end: u64) -> Result<(), LeaseError> {
    let guard = leases.break_layout(
        INO,
        first,
        end,
        Breaker {
            pid: 99,
            nonblock: false,
        },
        space,
    )?;
    space.detach(first, end);
    drop(guard);
    Ok(())
}

/// Revoke with a real deadline that passes at any point: one holder never answers, another
/// releases whenever it gets to, a third dies. The breaker always gets through; the silent
/// holder's lease is revoked and its detached blocks stay busy until it goes.
#[test]
fn revoke_when_the_deadline_passes_anywhere() {
    shuttle::check_random(
        || {
            let leases = manager(Policy::Revoke, Some(Duration::from_secs(1)));
            let space = Space::new();
            let (silent, polite, doomed) = (
                holder(&leases, 41),
                holder(&leases, 42),
                holder(&leases, 43),
            );
            let kept = pin(&leases, &space, silent, 0, 4).unwrap();
            let given = pin(&leases, &space, polite, 3, 2).unwrap();
            pin(&leases, &space, doomed, 5, 3).unwrap();
            let done = Arc::new(Mutex::new(false));
            let tick = clock(leases.clone(), space.clone(), done.clone());
            let answer = {
                let (l, s) = (leases.clone(), space.clone());
                thread::spawn(move || match l.release(polite, given, &*s) {
                    // Released in time, or revoked first (then the release still unpins).
                    Ok(()) | Err(LeaseError::NoSuchPin) => {}
                    Err(e) => panic!("unexpected {e:?}"),
                })
            };
            let death = {
                let (l, s) = (leases.clone(), space.clone());
                thread::spawn(move || l.holder_gone(doomed, &*s))
            };
            let b = {
                let (l, s, d) = (leases.clone(), space.clone(), done.clone());
                thread::spawn(move || {
                    let r = breaker(&l, &s, 2, 8);
                    *d.lock().unwrap() = true;
                    assert!(r.is_ok(), "revoke never refuses: {r:?}");
                    s.check();
                })
            };
            for t in [answer, death, b, tick] {
                t.join().unwrap();
            }
            let state = leases
                .snapshot()
                .pins
                .iter()
                .find(|p| p.id == kept)
                .map(|p| p.state);
            assert_eq!(
                state,
                Some(LeaseState::Revoked),
                "the silent holder is revoked"
            );
            assert_eq!(
                space.busy(),
                2,
                "its blocks 2 and 3 left the file and stay busy"
            );
            space.check();
            leases.holder_gone(silent, &*space);
            leases.holder_gone(polite, &*space);
            assert_eq!(space.busy(), 0, "all free once the holders have gone");
            space.check();
        },
        3000,
    );
}

/// Refuse with a real deadline that passes at any point: the breaker gets through only if
/// the holder released first, and fails with `ETXTBSY` (Busy) only once the deadline has
/// passed; a refused break changes nothing.
#[test]
fn refuse_when_the_deadline_passes_anywhere() {
    shuttle::check_random(
        || {
            let leases = manager(Policy::Refuse, Some(Duration::from_secs(1)));
            let space = Space::new();
            let h = holder(&leases, 51);
            let p = pin(&leases, &space, h, 0, 4).unwrap();
            let released = Arc::new(Mutex::new(false));
            let done = Arc::new(Mutex::new(false));
            let tick = clock(leases.clone(), space.clone(), done.clone());
            let answer = {
                let (l, s, r) = (leases.clone(), space.clone(), released.clone());
                thread::spawn(move || {
                    thread::yield_now();
                    *r.lock().unwrap() = true;
                    l.release(h, p, &*s).unwrap();
                })
            };
            let b = {
                let (l, s, d, r) = (
                    leases.clone(),
                    space.clone(),
                    done.clone(),
                    released.clone(),
                );
                thread::spawn(move || {
                    let result = breaker(&l, &s, 2, 6);
                    *d.lock().unwrap() = true;
                    match result {
                        Ok(()) => assert!(*r.lock().unwrap(), "through a live lease"),
                        Err(LeaseError::Busy) => {
                            let c = l.snapshot().counters;
                            assert_eq!(
                                (c.timeouts, c.refusals),
                                (1, 1),
                                "refused before the deadline"
                            );
                        }
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                    result
                })
            };
            answer.join().unwrap();
            let result = b.join().unwrap();
            tick.join().unwrap();
            let mapped = space.mapped.lock().unwrap().clone();
            if result.is_err() {
                assert!(mapped.iter().all(|&m| m), "a refused break changed nothing");
            }
            space.check();
            assert_eq!(space.busy(), 0, "nothing revoked: nothing busy");
        },
        3000,
    );
}

/// A request thread's breaker (`try_break_layout`) racing a pin and a release: it either
/// completes inline (the pin then gets EAGAIN until the guard goes) or says it must wait
/// having changed nothing (the lease still granted, no break counted); it never waits. A
/// waiting breaker that `close` reaches ends with `Closed`, or with its guard if the release
/// came first.
#[test]
fn the_inline_breaker_never_waits_and_close_ends_waits() {
    shuttle::check_random(
        || {
            let leases = manager(Policy::Wait, None);
            let space = Space::new();
            let h = holder(&leases, 41);
            let pinner = {
                let (l, s) = (leases.clone(), space.clone());
                thread::spawn(move || pin(&l, &s, h, 0, 4))
            };
            let inline = {
                let l = leases.clone();
                thread::spawn(move || {
                    let nobody = Breaker {
                        pid: 99,
                        nonblock: false,
                    };
                    match l.try_break_layout(INO, 0, 4, nobody) {
                        Ok(guard) => {
                            drop(guard);
                            true
                        }
                        Err(LeaseError::MustWait) => false,
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                })
            };
            let done_inline = inline.join().unwrap();
            let pinned = pinner.join().unwrap();
            let snap = leases.snapshot();
            if !done_inline {
                // It found the pin, and left it alone.
                let id = pinned.expect("a must-wait breaker saw a granted pin");
                assert_eq!(snap.counters.breaks, 0);
                assert!(snap
                    .pins
                    .iter()
                    .all(|p| p.id != id || p.state == LeaseState::Granted));
            } else if let Err(e) = pinned {
                assert_eq!(e, LeaseError::Again, "only the guard refuses the pin");
            }
            // Now a breaker that waits, a close, and a release in any order.
            let id = match pinned {
                Ok(id) => id,
                Err(_) => pin(&leases, &space, h, 0, 4).unwrap(),
            };
            let waiter = {
                let (l, s) = (leases.clone(), space.clone());
                thread::spawn(move || {
                    let b = Breaker {
                        pid: 98,
                        nonblock: false,
                    };
                    l.break_layout(INO, 0, 4, b, &*s).map(drop)
                })
            };
            let closer = {
                let l = leases.clone();
                thread::spawn(move || l.close())
            };
            let releaser = {
                let (l, s) = (leases.clone(), space.clone());
                thread::spawn(move || l.release(h, id, &*s))
            };
            let r = waiter.join().unwrap();
            assert!(
                matches!(r, Ok(()) | Err(LeaseError::Closed)),
                "a wait ends by the release or the close: {r:?}"
            );
            closer.join().unwrap();
            releaser.join().unwrap().unwrap();
            assert!(leases.is_closed());
            space.check();
        },
        2000,
    );
}
