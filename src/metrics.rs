//! The paper's metrics (reconstruction and sparsity of the codes) and retrieval recall.
//! Definitions: `shared/method.md`, "The paper's metrics" and "Retrieval metrics".

use std::sync::atomic::AtomicBool;

use ndarray::{ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::loss::distance_rows;
use crate::model::{Autoencoder, LossKind};

/// Rows per chunk when evaluating, to bound memory on large sets.
const CHUNK: usize = 8192;

/// Quantiles of the per-bit firing frequency `f_j` (fraction of vectors with bit j set).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrequencyQuantiles {
    /// Smallest `f_j`.
    pub min: f64,
    /// 1st percentile.
    pub p01: f64,
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest `f_j`.
    pub max: f64,
}

/// What `bsa eval` reports: the paper's metrics on a set of vectors. The field names are the
/// JSON keys and are stable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaperMetrics {
    /// Number of vectors evaluated.
    pub n: usize,
    /// Code length N.
    pub bits: usize,
    /// Target active bits K.
    pub k: usize,
    /// `mean_i d(dec(code_i), x_i)`, cosine distance, with the model's own code.
    pub reconstruction_loss: f64,
    /// The same reconstruction measured by mean squared error (mean over rows and dimensions).
    pub reconstruction_mse: f64,
    /// `mean_i d(dec(khot_K(s_i)), x_i)`: the decoder fed exactly the K largest activations.
    pub fixed_topk_reconstruction_loss: f64,
    /// Mean number of set bits per code.
    pub active_mean: f64,
    /// Population standard deviation of the number of set bits per code.
    pub active_std: f64,
    /// Bits set in no code at all.
    pub dead_features: usize,
    /// Quantiles of per-bit firing frequency.
    pub feature_frequency_quantiles: FrequencyQuantiles,
}

/// Per-code and per-bit statistics behind [`PaperMetrics`], kept for histograms.
#[derive(Debug, Clone)]
pub struct CodeStats {
    /// Set bits of each code.
    pub active_counts: Vec<u32>,
    /// Fraction of codes with bit j set, for each bit j.
    pub bit_frequency: Vec<f64>,
}

/// Evaluates `model` on the rows of `x` (which must have the model's input dimension).
pub fn evaluate(model: &Autoencoder, x: ArrayView2<f32>) -> (PaperMetrics, CodeStats) {
    evaluate_until(model, x, &AtomicBool::new(false)).expect("never stopped")
}

/// [`evaluate`] that returns [`Error::Stopped`](crate::Error::Stopped) once `stop` is set
/// (checked before each chunk of 8192 rows, and within a pursuit model's encoding), so that a
/// long evaluation can be interrupted (Python's `Model.eval` on Ctrl-C).
///
/// ```
/// use std::sync::atomic::AtomicBool;
/// let x = ndarray::Array2::from_shape_fn((50, 8), |(i, j)| ((i * 7 + j * 3) % 5) as f32 - 2.0);
/// let params = bsa::baselines::BaselineParams::new(bsa::model::Method::Lsh, 16);
/// let (model, _) = params.fit(x.view()).unwrap();
/// let stop = AtomicBool::new(true);
/// let stopped = bsa::metrics::evaluate_until(&model, x.view(), &stop);
/// assert!(matches!(stopped, Err(bsa::Error::Stopped)));
/// ```
pub fn evaluate_until(
    model: &Autoencoder,
    x: ArrayView2<f32>,
    stop: &AtomicBool,
) -> crate::Result<(PaperMetrics, CodeStats)> {
    let n = x.nrows();
    let bits = model.config.bits;
    let mut rec = 0.0;
    let mut mse = 0.0;
    let mut fixed = 0.0;
    let mut active_counts = Vec::with_capacity(n);
    let mut bit_count = vec![0u64; bits];
    for chunk in x.axis_chunks_iter(Axis(0), CHUNK) {
        let w = chunk.nrows() as f64;
        // The distances in f64: a decoder whose outputs are large (a training that ran away
        // without a non-finite loss) overflowed f32's squares, printing MSE inf and cosine
        // distance 1 whatever the directions.
        let x64 = chunk.mapv(f64::from);
        let distance = |kind, xhat: &ndarray::Array2<f64>| {
            w * distance_rows(kind, xhat.view(), x64.view(), None)
        };
        bsa_index::check_stop(Some(stop))?;
        let active = model.encode_active_until(chunk, stop)?;
        // Decoded in f64 too: an f32 sum of such weights can overflow (NaN metrics).
        let xhat = model.params.decode_sparse_f64(&active);
        rec += distance(LossKind::Cosine, &xhat);
        mse += distance(LossKind::Mse, &xhat);
        let khot = model.encode_khot(chunk);
        fixed += distance(LossKind::Cosine, &model.params.decode_sparse_f64(&khot));
        for set in &active {
            active_counts.push(set.len() as u32);
            for &j in set {
                bit_count[j as usize] += 1;
            }
        }
    }
    let nf = n.max(1) as f64;
    let active_mean = active_counts.iter().map(|&c| c as f64).sum::<f64>() / nf;
    let active_var = active_counts
        .iter()
        .map(|&c| (c as f64 - active_mean).powi(2))
        .sum::<f64>()
        / nf;
    let bit_frequency: Vec<f64> = bit_count.iter().map(|&c| c as f64 / nf).collect();
    let mut sorted = bit_frequency.clone();
    sorted.sort_by(f64::total_cmp);
    let q = |p: f64| quantile(&sorted, p);
    let metrics = PaperMetrics {
        n,
        bits,
        k: model.config.k,
        reconstruction_loss: crate::loss::not_below_zero(rec / nf),
        reconstruction_mse: mse / nf,
        fixed_topk_reconstruction_loss: crate::loss::not_below_zero(fixed / nf),
        active_mean,
        active_std: active_var.sqrt(),
        dead_features: bit_count.iter().filter(|&&c| c == 0).count(),
        feature_frequency_quantiles: FrequencyQuantiles {
            min: q(0.0),
            p01: q(0.01),
            p10: q(0.10),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            max: q(1.0),
        },
    };
    Ok((
        metrics,
        CodeStats {
            active_counts,
            bit_frequency,
        },
    ))
}

/// The `p`-quantile of sorted values with linear interpolation between closest ranks (numpy's
/// default, `method="linear"`). NaN for an empty slice.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = p.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// k-NN recall (ann-benchmarks' definition): `|retrieved top-k ∩ true top-k| / k`, averaged over
/// queries. `truth` rows hold at least `k` true neighbours, best first; `retrieved` rows may be
/// shorter than `k` (missing results count as misses).
///
/// ```
/// let truth = vec![vec![1, 2, 3], vec![4, 5, 6]];
/// let got = vec![vec![2, 1, 9], vec![6, 7, 8]];
/// assert_eq!(bsa::metrics::recall_at_k(&got, &truth, 2), 0.5); // 2/2 and 0/2
/// ```
pub fn recall_at_k(retrieved: &[Vec<u64>], truth: &[Vec<u64>], k: usize) -> f64 {
    assert_eq!(retrieved.len(), truth.len(), "one result list per query");
    if retrieved.is_empty() || k == 0 {
        return 0.0;
    }
    let hits: usize = retrieved
        .iter()
        .zip(truth)
        .map(|(got, want)| {
            let want = &want[..k.min(want.len())];
            // Each true neighbour counts once, however often a result list repeats it.
            want.iter()
                .filter(|id| got.iter().take(k).any(|g| g == *id))
                .count()
        })
        .sum();
    hits as f64 / (k * retrieved.len()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_counts_a_repeated_id_once() {
        let truth = vec![vec![1, 2]];
        assert_eq!(recall_at_k(&[vec![1, 1]], &truth, 2), 0.5);
        assert_eq!(recall_at_k(&[vec![2, 1]], &truth, 2), 1.0);
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.0);
        assert_eq!(quantile(&v, 0.1), 0.4);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }

    /// A decoder with huge weights (a training that ran away with a finite loss): the metrics
    /// are computed in f64, so the MSE is a number (its f32 squares overflowed: `inf`, printed
    /// as `null`) and the cosine distance measures the directions (it said 1).
    #[test]
    fn a_huge_decoder_gets_finite_metrics() {
        use crate::config::{LossKind, Method, ModelConfig, Target};
        use ndarray::{Array2, array};
        let eye = Array2::<f32>::eye(2);
        let model = Autoencoder {
            config: ModelConfig {
                dim: 2,
                bits: 2,
                k: 1,
                method: Method::Topk,
                loss: LossKind::Cosine,
                alpha: 0.0,
                target: Target::Khot,
            },
            params: crate::params::Params {
                we: eye.clone(),
                be: array![0.0, 0.0],
                wd_t: eye * 1e20,
                bd: array![0.0, 0.0],
            },
        };
        let x = array![[1.0f32, 0.0], [0.0, 1.0]];
        let (m, _) = evaluate(&model, x.view());
        assert!(m.reconstruction_loss.abs() < 1e-12, "{m:?}");
        let want = (1e20f64 - 1.0).powi(2) / 2.0;
        assert!((m.reconstruction_mse / want - 1.0).abs() < 1e-6, "{m:?}");
        // Weights near f32's limit whose sum overflows f32 (the decode was f32: NaN metrics,
        // printed as null): decoded in f64, x_hat = (6e38, 0) and (3e38, 3e38).
        let mut big = model;
        big.params.wd_t = Array2::<f32>::eye(2) * 3e38;
        big.params.bd = array![3e38, 0.0];
        let (m, _) = evaluate(&big, x.view());
        let cos2 = 1.0 - 1.0 / 2f64.sqrt(); // the second row's x_hat is at 45 degrees
        assert!((m.reconstruction_loss - cos2 / 2.0).abs() < 1e-12, "{m:?}");
        assert!(m.reconstruction_mse.is_finite(), "{m:?}");
        assert!(m.fixed_topk_reconstruction_loss.is_finite(), "{m:?}");
    }

    /// Results past the k-th are not hits, however good: recall@k reads the first k alone
    /// (callers pass longer lists, e.g. a search for k plus a rescore's candidates).
    #[test]
    fn recall_reads_only_the_first_k_results() {
        let truth = vec![vec![1, 2, 3]];
        assert_eq!(recall_at_k(&[vec![1, 9, 2]], &truth, 2), 0.5);
        assert_eq!(recall_at_k(&[vec![9, 8, 1, 2]], &truth, 2), 0.0);
    }

    #[test]
    fn recall_counts_misses_in_short_lists() {
        let truth = vec![vec![1, 2]];
        assert_eq!(recall_at_k(&[vec![2]], &truth, 2), 0.5);
        assert_eq!(recall_at_k(&[vec![3, 4]], &truth, 2), 0.0);
    }
}
