//! Quick QPS probe for exact search on random codes (not a criterion bench: one run, printed).
//!
//! `cargo run --release -p bsa-index --example flat_qps -- [n] [bits] [batch_queries] [single_queries]`

use std::time::Instant;

use bsa_index::flat::top_k;
use bsa_index::hamming::kernel_name;
use bsa_index::{SearchParams, Split};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric argument"))
        .collect();
    let n = args.first().copied().unwrap_or(1_000_000);
    let bits = args.get(1).copied().unwrap_or(256);
    let nq_batch = args.get(2).copied().unwrap_or(1000);
    let nq_single = args.get(3).copied().unwrap_or(200);
    let w = bits.div_ceil(64);
    let mut r = Xoshiro256PlusPlus::seed_from_u64(1);
    let codes: Vec<u64> = (0..n * w).map(|_| r.random()).collect();
    let queries: Vec<u64> = (0..nq_batch.max(nq_single) * w)
        .map(|_| r.random())
        .collect();
    println!("n={n} bits={bits} kernel={}", kernel_name(w));
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let p = SearchParams::default();
            let q = &queries[..nq_batch * w];
            let _ = top_k(&codes, w, bits, &queries[..w], 10, &p).unwrap();
            let t = Instant::now();
            let hits = top_k(&codes, w, bits, q, 10, &p).unwrap();
            let s = t.elapsed().as_secs_f64();
            assert_eq!(hits.len(), nq_batch);
            println!(
                "threads={threads} batch: {nq_batch} queries in {s:.3}s = {:.0} QPS",
                nq_batch as f64 / s
            );
            for split in [Split::Auto, Split::Queries] {
                let p = SearchParams::default().with_split(split);
                let t = Instant::now();
                for qi in 0..nq_single {
                    let _ = top_k(&codes, w, bits, &queries[qi * w..(qi + 1) * w], 10, &p).unwrap();
                }
                let s = t.elapsed().as_secs_f64();
                println!(
                    "threads={threads} one at a time ({split:?}): {:.3} ms/query = {:.0} QPS",
                    1e3 * s / nq_single as f64,
                    nq_single as f64 / s
                );
            }
        });
    }
}
