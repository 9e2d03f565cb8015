//! Quick QPS probe for exact search on random codes, every kernel family this CPU has side by
//! side (not a criterion bench: printed medians). The families run in turn within each
//! repetition, so a noisy machine slows them alike; quote the ratios.
//!
//! `cargo run --release -p bsa-index --example flat_qps -- [n] [bits] [batch_queries] [single_queries] [reps]`

use std::time::Instant;

use bsa_index::hamming::kernel_name;
use bsa_index::search::flat::top_k;
use bsa_index::{KernelFamily, SearchParams, Split};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric argument"))
        .collect();
    let n = args.first().copied().unwrap_or(1_000_000);
    let bits = args.get(1).copied().unwrap_or(256);
    let nq_batch = args.get(2).copied().unwrap_or(1000);
    let nq_single = args.get(3).copied().unwrap_or(200);
    let reps = args.get(4).copied().unwrap_or(3).max(1);
    let w = bits.div_ceil(64);
    let mut r = Xoshiro256PlusPlus::seed_from_u64(1);
    let codes: Vec<u64> = (0..n * w).map(|_| r.random()).collect();
    let queries: Vec<u64> = (0..nq_batch.max(nq_single) * w)
        .map(|_| r.random())
        .collect();
    let families = match KernelFamily::from_env().expect("BSA_KERNEL") {
        Some(f) => vec![f],
        None => KernelFamily::supported(),
    };
    println!("n={n} bits={bits} batch={nq_batch} single={nq_single} reps={reps}");
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        // (batch QPS, single-query ms) per family and repetition.
        let mut batch = vec![Vec::new(); families.len()];
        let mut single = vec![Vec::new(); families.len()];
        let mut reference = None;
        for _ in 0..reps {
            for (fi, &family) in families.iter().enumerate() {
                pool.install(|| {
                    let p = SearchParams::default().with_kernel(Some(family));
                    let t = Instant::now();
                    let hits = top_k(&codes, w, bits, &queries[..nq_batch * w], 10, &p).unwrap();
                    batch[fi].push(nq_batch as f64 / t.elapsed().as_secs_f64());
                    // Every family must give the same hits.
                    match &reference {
                        None => reference = Some(hits),
                        Some(h) => assert_eq!(h, &hits, "{family} differs"),
                    }
                    let p = p.with_split(Split::Auto);
                    let t = Instant::now();
                    for qi in 0..nq_single {
                        let q = &queries[qi * w..(qi + 1) * w];
                        std::hint::black_box(top_k(&codes, w, bits, q, 10, &p).unwrap());
                    }
                    single[fi].push(1e3 * t.elapsed().as_secs_f64() / nq_single as f64);
                });
            }
        }
        for (fi, &family) in families.iter().enumerate() {
            let (b, s) = (median(batch[fi].clone()), median(single[fi].clone()));
            let (b0, s0) = (median(batch[0].clone()), median(single[0].clone()));
            println!(
                "threads={threads} {:<13} batch {b:>8.0} QPS ({:.2}x {})  single {s:.3} ms ({:.2}x)",
                kernel_name(family, w),
                b / b0,
                families[0],
                s0 / s
            );
        }
    }
}
