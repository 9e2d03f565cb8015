//! The per-query ADC tables (`u = Wd^T q` for every query) computed by the fixed-order product
//! `bsa::deterministic::matmul_nt`, beside OpenBLAS's GEMM on the same operands (the peer: same
//! flops, free to sum in any order), and the integer candidate tables of `bsa::int_tables` (with
//! and without rounding the decoder, which a search does once per model). Shape: 1000 queries x 4096 atoms x 384 dimensions, the
//! `--preset retrieval` model's tables for a batch of queries.
//!
//! Run: `cargo bench --bench tables` (set `BSA_KERNEL=avx2` and `OPENBLAS_CORETYPE=Haswell` for
//! the AVX2 kernels on an AVX-512 machine).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;

const M: usize = 1000;
const N: usize = 4096;
const D: usize = 384;

fn random(rows: usize, seed: u64) -> Array2<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    Array2::from_shape_simple_fn((rows, D), || rng.sample::<f32, _>(StandardNormal))
}

fn tables(c: &mut Criterion) {
    // SAFETY: criterion runs this before any BLAS product, on its one thread.
    unsafe { bsa::threads::fix_blas_core(bsa::simd::Family::current()) };
    bsa::threads::configure(None).unwrap();
    let q = random(M, 1);
    let wd_t = random(N, 2);
    let mut group = c.benchmark_group("adc_tables");
    group.throughput(Throughput::Elements(M as u64));
    group.sample_size(10);
    let family = bsa_index::KernelFamily::current().name();
    group.bench_function(format!("deterministic_{family}"), |b| {
        b.iter(|| bsa::deterministic::matmul_nt(q.view(), wd_t.view()))
    });
    group.bench_function("openblas_sgemm", |b| b.iter(|| q.dot(&wd_t.t())));
    let int = bsa::int_tables::IntDecoder::new(wd_t.view());
    group.bench_function(format!("int8_{family}"), |b| {
        b.iter(|| int.tables(q.view()))
    });
    group.bench_function("int8_with_decoder_rounding", |b| {
        b.iter(|| bsa::int_tables::IntDecoder::new(wd_t.view()).tables(q.view()))
    });
    group.finish();
}

criterion_group!(benches, tables);
criterion_main!(benches);
