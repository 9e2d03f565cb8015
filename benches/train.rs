//! One training step (forward, backward; no optimiser) at B=1024, D=384, N=1024, comparing the
//! sparse decoder path (gathers/scatters over set bits) against dense GEMMs, for codes with K=32
//! set bits (TopK) and for BSA at initialisation (about half the bits set).
//!
//! Run: `cargo bench --bench train`.

use bsa::model::{LossKind, Method, ModelConfig, Params, Target};
use bsa::train::{CodeMode, DecoderPath, PhaseTimer, loss_and_grad};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;

const B: usize = 1024;
const D: usize = 384;
const N: usize = 1024;

fn data() -> Array2<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let mut x = Array2::from_shape_simple_fn((B, D), || rng.sample::<f32, _>(StandardNormal));
    for mut row in x.rows_mut() {
        let n = row.dot(&row).sqrt();
        row /= n;
    }
    x
}

fn step(c: &mut Criterion) {
    // SAFETY: criterion runs this before any BLAS product, on its one thread.
    unsafe { bsa::threads::fix_blas_core(bsa::simd::Family::current()) };
    bsa::threads::configure(None).unwrap();
    let x = data();
    let p = Params::<f32>::init(N, D, 2);
    let mut g = Params::<f32>::zeros(N, D);
    let mut group = c.benchmark_group("train_step");
    group.throughput(Throughput::Elements(B as u64));
    group.sample_size(20);
    for (label, method) in [("topk_k32", Method::Topk), ("bsa_init", Method::Bsa)] {
        let cfg = ModelConfig {
            dim: D,
            bits: N,
            k: 32,
            method,
            loss: LossKind::Cosine,
            alpha: 1.0,
            target: Target::Khot,
        };
        for path in [DecoderPath::Sparse, DecoderPath::Dense] {
            let id = BenchmarkId::new(format!("{label}/{path:?}").to_lowercase(), B);
            group.bench_function(id, |bench| {
                bench.iter(|| {
                    let mut t = PhaseTimer::default();
                    loss_and_grad(
                        &p,
                        x.view(),
                        &cfg,
                        CodeMode::Binary,
                        path,
                        Some(&mut g),
                        &mut t,
                    )
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, step);
criterion_main!(benches);
