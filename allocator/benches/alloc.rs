//! Allocator throughput on a 1 TiB address space (2^28 blocks of 4 KiB) holding 1M live
//! extents with free space fragmented between them.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use pinfs_allocator::{Allocator, Extent};

const TOTAL: u64 = 1 << 28;
const LIVE: u64 = 1 << 20;

/// 1M live 128-block extents, each followed by a 128-block free gap: together they fill
/// the 1 TiB exactly, so free space is 1M fragments.
fn populated() -> (Allocator, Vec<Extent>) {
    let mut a = Allocator::all_used(TOTAL);
    for i in 0..LIVE {
        a.free(Extent {
            start: i * 256 + 128,
            len: 128,
        })
        .expect("used");
    }
    let live = Vec::from_iter((0..LIVE).map(|i| Extent {
        start: i * 256,
        len: 128,
    }));

    (a, live)
}

fn bench(c: &mut Criterion) {
    let (base, live) = populated();
    let mut g = c.benchmark_group("1TiB_1M_extents");
    g.bench_function("allocate_64_then_free", |b| {
        let mut a = base.clone();
        b.iter(|| {
            let e = a.allocate(64, None).expect("space");
            a.free(e).expect("used");
        })
    });
    g.bench_function("pin_then_unpin", |b| {
        let mut a = base.clone();
        let mut i = 0usize;
        b.iter(|| {
            let e = live[i % live.len()];
            i = i.wrapping_add(7919);
            a.pin(e).expect("used");
            a.unpin(e).expect("pinned");
        })
    });
    g.bench_function("pin_free_unpin_busy_cycle", |b| {
        b.iter_batched(
            || {
                let mut a = Allocator::new(1 << 20);
                let e = a.allocate(32, None).expect("space");
                (a, e)
            },
            |(mut a, e)| {
                a.pin(e).expect("used");
                a.free(e).expect("used");
                a.unpin(e).expect("pinned");
                a
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
