//! Quick HNSW probe on clustered random codes: build time, then recall@10 (tie-aware) and QPS per ef.
//!
//! `cargo run --release -p bsa-index --example hnsw_qps -- [n] [bits] [M] [ef_construction]`

use std::time::Instant;

use bsa_index::{HnswParams, Index, IndexBuilder, SearchParams};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric argument"))
        .collect();
    let n = args.first().copied().unwrap_or(50_000);
    let bits = args.get(1).copied().unwrap_or(256);
    let m = args.get(2).copied().unwrap_or(16);
    let efc = args.get(3).copied().unwrap_or(100);
    let w = bits.div_ceil(64);
    let mut r = Xoshiro256PlusPlus::seed_from_u64(1);
    let centers: Vec<u64> = (0..(n / 100).max(1) * w).map(|_| r.random()).collect();
    let mut noisy = |c: usize| -> Vec<u64> {
        (0..w)
            .map(|j| {
                let mut x = centers[c * w + j];
                for b in 0..64 {
                    if r.random_bool(0.1) {
                        x ^= 1 << b;
                    }
                }
                x
            })
            .collect()
    };
    let nc = centers.len() / w;
    let codes: Vec<u64> = (0..n).flat_map(|i| noisy(i % nc)).collect();
    let queries: Vec<u64> = (0..1000).flat_map(|i| noisy((i * 7) % nc)).collect();
    let dir = std::env::temp_dir().join(format!("bsa-hnsw-probe-{}", std::process::id()));
    let t = Instant::now();
    IndexBuilder::new(bits, &codes)
        .hnsw(HnswParams {
            max_connections: m,
            ef_construction: efc,
            ef_search: 64,
        })
        .overwrite(true)
        .build(&dir)
        .unwrap();
    println!(
        "n={n} bits={bits} M={m} efc={efc}: build {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let index = Index::open(&dir).unwrap();
    let t = Instant::now();
    index.load_hnsw().unwrap();
    println!("load {:.2}s", t.elapsed().as_secs_f64());
    let exact = index
        .search_flat(&queries, 10, &SearchParams::default())
        .unwrap();
    for ef in [16usize, 32, 64, 128, 256] {
        let p = SearchParams::default().with_ef_search(Some(ef));
        let t = Instant::now();
        let approx = index.search_hnsw(&queries, 10, &p).unwrap();
        let s = t.elapsed().as_secs_f64();
        let mut hit = 0;
        for (e, a) in exact.iter().zip(&approx) {
            let tenth = *e.distances.last().unwrap();
            hit += a.distances.iter().filter(|&&d| d <= tenth).count().min(10);
        }
        println!(
            "ef={ef}: recall@10 {:.3}, {:.0} QPS",
            hit as f64 / (10.0 * 1000.0),
            1000.0 / s
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
