//! The Hamming scan kernels of every family this CPU has, on a cache-resident tile (4096 codes x
//! 32 queries, one thread): the minimum over 30 trials of the time per (query, code) pair. The
//! minimum is what the kernel can do when nothing else disturbs it, so this stays readable on a
//! busy machine where QPS figures swing by 2x.
//!
//! `cargo run --release -p bsa-index --example kernel_probe -- [bits]`

use std::time::Instant;

use bsa_index::hamming::kernel_name;
use bsa_index::search::flat::top_k;
use bsa_index::{KernelFamily, SearchParams, Split};
use rand::{Rng, SeedableRng};

fn main() {
    let bits: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("bits"))
        .unwrap_or(256);
    let w = bits.div_ceil(64);
    let (n, nq) = (4096, 32);
    let mut r = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
    let codes: Vec<u64> = (0..n * w).map(|_| r.random()).collect();
    let queries: Vec<u64> = (0..nq * w).map(|_| r.random()).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for family in KernelFamily::supported() {
        let p = SearchParams::default()
            .with_kernel(Some(family))
            .with_split(Split::Queries);
        let mut best = f64::MAX;
        for _ in 0..30 {
            let t = Instant::now();
            for _ in 0..20 {
                std::hint::black_box(
                    pool.install(|| top_k(&codes, w, bits, &queries, 10, &p).unwrap()),
                );
            }
            best = best.min(t.elapsed().as_secs_f64() / (20 * n * nq) as f64);
        }
        println!(
            "{:<13} {:.3} ns per query-code pair",
            kernel_name(family, w),
            best * 1e9
        );
    }
}
