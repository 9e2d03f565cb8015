//! Criterion benches: Hamming kernels (one query vs a batch of queries per pass) and exact top-k,
//! on 100k seeded random codes at 256 and 1024 bits. The kernel benches run the active family
//! (`BSA_KERNEL`, else the CPU's best); the top-k benches run every family the CPU has, side by
//! side in one run. `index-batch`: a batch of 128 queries against an index that keeps its
//! slabs (`index/src/slabs.rs`, built by a warm-up search), every family, dense and sparse
//! queries. `quantise`: one query's ADC table quantised for a layout (done per query and per
//! segment searched), sparse 4096-bit codes (K = 32) and dense 384-bit codes.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::hint::black_box;
use std::time::Duration;

use bsa_index::adc::{AdcCodes, QuantisedTable};
use bsa_index::hamming::{distances, distances_batch, kernel_name};
use bsa_index::search::flat::top_k;
use bsa_index::sparse::SparseCodes;
use bsa_index::{Index, IndexBuilder, KernelFamily, SearchParams, Split};

const N: usize = 100_000;
const BATCH: usize = 16;

fn codes(seed: u64, n: usize, bits: usize) -> Vec<u64> {
    let mut r = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..n * bits.div_ceil(64)).map(|_| r.random()).collect()
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

fn kernels(c: &mut Criterion) {
    for bits in [256usize, 1024] {
        let w = bits / 64;
        let data = codes(1, N, bits);
        let qs = codes(2, BATCH, bits);
        let mut g = c.benchmark_group(format!(
            "kernel/{bits}bit/{}",
            kernel_name(KernelFamily::active().unwrap(), w)
        ));
        g.throughput(Throughput::Elements(N as u64));
        let mut out = vec![0u32; N];
        g.bench_function(BenchmarkId::new("single", N), |b| {
            b.iter(|| distances(black_box(&qs[..w]), black_box(&data), &mut out))
        });
        g.throughput(Throughput::Elements((N * BATCH) as u64));
        let mut out = vec![0u32; N * BATCH];
        g.bench_function(BenchmarkId::new(format!("batched{BATCH}"), N), |b| {
            b.iter(|| distances_batch(black_box(&qs), black_box(&data), w, &mut out))
        });
        g.finish();
    }
}

fn topk(c: &mut Criterion) {
    let pool1 = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for bits in [256usize, 1024] {
        let w = bits / 64;
        let data = codes(3, N, bits);
        let qs = codes(4, 64, bits);
        let mut g = c.benchmark_group(format!("topk10/{bits}bit"));
        for nq in [1usize, 64] {
            g.throughput(Throughput::Elements((N * nq) as u64));
            let q = &qs[..nq * w];
            for family in KernelFamily::supported() {
                let p = SearchParams::default().with_kernel(Some(family));
                g.bench_function(BenchmarkId::new(format!("{family}/1thread"), nq), |b| {
                    b.iter(|| {
                        pool1.install(|| top_k(&data, w, bits, black_box(q), 10, &p).unwrap())
                    })
                });
                let p = p.with_split(Split::Auto);
                g.bench_function(
                    BenchmarkId::new(format!("{family}/pool-codesplit"), nq),
                    |b| b.iter(|| top_k(&data, w, bits, black_box(q), 10, &p).unwrap()),
                );
            }
        }
        g.finish();
    }
}

/// Codes with about one bit in 2^`ands` set (each bit the AND of `ands + 1` random words).
fn sparse_codes(seed: u64, n: usize, bits: usize, ands: u32) -> Vec<u64> {
    let mut r = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..n * bits.div_ceil(64))
        .map(|_| (0..ands).fold(r.random::<u64>(), |x, _| x & r.random::<u64>()))
        .collect()
}

fn index_batch(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    for bits in [256usize, 1024] {
        // Dense queries (half the bits set) and sparse ones (one in sixteen).
        for (name, ands) in [("dense", 0u32), ("sparse", 3)] {
            let data = sparse_codes(6, N, bits, ands);
            let qs = sparse_codes(7, 128, bits, ands);
            let path = dir.path().join(format!("{bits}-{name}"));
            IndexBuilder::new(bits, &data).build(&path).unwrap();
            let mut g = c.benchmark_group(format!("index-batch/{bits}bit/{name}"));
            g.throughput(Throughput::Elements((N * 128) as u64));
            for family in KernelFamily::supported() {
                // Opened per family: an index keeps the slabs of the first family that built them.
                let index = Index::open(&path).unwrap();
                let p = SearchParams::default().with_kernel(Some(family));
                // A first batch of 256 builds the slabs where the family uses them.
                index.search_flat(&qs.repeat(2), 10, &p).unwrap();
                g.bench_function(BenchmarkId::new(family.to_string(), 128), |b| {
                    b.iter(|| index.search_flat(black_box(&qs), 10, &p).unwrap())
                });
            }
            g.finish();
        }
    }
}

fn quantise(c: &mut Criterion) {
    let mut r = Xoshiro256PlusPlus::seed_from_u64(5);
    let mut g = c.benchmark_group("quantise");
    for (bits, sparse) in [(4096usize, true), (384, false)] {
        let w = bits / 64;
        let n = 10_000;
        let mut data = vec![0u64; n * w];
        for row in data.chunks_exact_mut(w) {
            for _ in 0..32 {
                let j = r.random_range(0..bits);
                row[j / 64] |= 1 << (j % 64);
            }
        }
        let layout = if sparse {
            AdcCodes::from_sparse(&SparseCodes::build(&data, bits).unwrap().view()).unwrap()
        } else {
            AdcCodes::from_packed(&data, bits).unwrap()
        };
        let table: Vec<f32> = (0..bits).map(|_| r.random_range(-1.0f32..1.0)).collect();
        let name = if sparse { "sparse" } else { "dense" };
        g.bench_function(BenchmarkId::new(name, bits), |b| {
            b.iter(|| QuantisedTable::new(&layout, black_box(&table), 0.5, false).unwrap())
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = config(); targets = kernels, topk, index_batch, quantise }
criterion_main!(benches);
