//! Opt-in aids for training the autoencoder to convergence with healthy bits, none of them part
//! of the paper's method (its BSA is [`crate::train::TrainParams::new`] with these left off):
//!
//! - a learning-rate [`Schedule`] (linear warm-up, cosine decay);
//! - a cheap validation retrieval proxy ([`RecallProbe`]) to pick the best epoch and stop early;
//! - per-bit encoder biases set from quantiles of the pre-activations, so that each bit fires for
//!   about K of N vectors ([`set_bias_quantiles`]), at the start and for bits that died or fire
//!   for more than half of the vectors ([`rebalance_bits`]).

use ndarray::{Array2, ArrayView2, Axis, Zip};
use rayon::prelude::*;
use serde::Serialize;

use crate::model::{Method, Params, active_bits};

/// How the learning rate moves over the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The same rate at every step (the paper's setting).
    #[default]
    Constant,
    /// Half a cosine from the rate down to `final_lr_fraction` times it at the last step.
    Cosine,
}

impl std::str::FromStr for Schedule {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s {
            "constant" => Ok(Schedule::Constant),
            "cosine" => Ok(Schedule::Cosine),
            _ => Err(crate::error::Error::InvalidArgument(format!(
                "unknown schedule {s:?}; expected one of: constant, cosine"
            ))),
        }
    }
}

/// The factor the base learning rate is multiplied by at zero-based `step` of `total` steps:
/// a linear ramp from `1 / warmup` to 1 over the first `warmup` steps, times the decay of
/// `schedule`.
pub fn lr_factor(
    schedule: Schedule,
    step: usize,
    total: usize,
    warmup: usize,
    final_fraction: f64,
) -> f64 {
    let warm = if step < warmup {
        (step + 1) as f64 / warmup as f64
    } else {
        1.0
    };
    let decay = match schedule {
        Schedule::Constant => 1.0,
        Schedule::Cosine => {
            let t = step as f64 / total.saturating_sub(1).max(1) as f64;
            final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
    };
    warm * decay
}

/// What picks the best epoch (whose weights are kept) and drives early stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Monitor {
    /// The validation loss (lower is better).
    Loss,
    /// Validation recall@10 by decoder-ADC score ([`RecallProbe`]; higher is better).
    Adc,
    /// Validation recall@10 by Hamming distance ([`RecallProbe`]; higher is better).
    Hamming,
}

impl std::str::FromStr for Monitor {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s {
            "loss" => Ok(Monitor::Loss),
            "adc" => Ok(Monitor::Adc),
            "hamming" => Ok(Monitor::Hamming),
            _ => Err(crate::error::Error::InvalidArgument(format!(
                "unknown monitor {s:?}; expected one of: loss, adc, hamming"
            ))),
        }
    }
}

/// Neighbours per probe query.
pub const PROBE_K: usize = 10;

/// The fewest validation rows a [`RecallProbe`] measures on: each query's top [`PROBE_K`] is
/// taken among the others, and with a handful of rows every code finds them (11 rows: recall
/// 1.0 every epoch, so the first looked best and `--patience` stopped the training). With 50,
/// a random code's recall is about a fifth.
pub const PROBE_MIN_ROWS: usize = 5 * PROBE_K;

/// Validation recall@10 of the codes, by the two scores searches use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProbeRecall {
    /// Ranking by Hamming distance between codes.
    pub hamming: f64,
    /// Ranking by decoder-ADC, `cos(q, xhat_b)`.
    pub adc: f64,
}

/// A retrieval proxy on the held-out rows: the first `queries` of them search all of them (each
/// query's own row excluded), and recall@10 is measured against the exact cosine top 10, which
/// is computed once. A few hundred queries over a few thousand rows cost well under a second per
/// epoch and rank models like the full benchmark does (method.md, "Retrieval metrics").
#[derive(Debug, Clone)]
pub struct RecallProbe {
    base: Array2<f32>,
    queries: usize,
    truth: Vec<Vec<u32>>,
}

/// Indices of the `k` best of `scores` (higher first, ties by lower index), skipping `skip`.
fn best_k(scores: &[f32], k: usize, skip: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..scores.len() as u32)
        .filter(|&j| j as usize != skip)
        .collect();
    let cmp = |a: &u32, b: &u32| {
        scores[*b as usize]
            .partial_cmp(&scores[*a as usize])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(b))
    };
    let k = k.min(idx.len());
    if k < idx.len() {
        idx.select_nth_unstable_by(k, cmp);
        idx.truncate(k);
    }
    idx
}

fn recall(found: &[Vec<u32>], truth: &[Vec<u32>]) -> f64 {
    let hits: usize = found
        .iter()
        .zip(truth)
        .map(|(f, t)| f.iter().filter(|j| t.contains(j)).count())
        .sum();
    hits as f64 / (truth.len() * PROBE_K).max(1) as f64
}

impl RecallProbe {
    /// A probe over `base` (the validation rows), with at most `queries` of them as queries.
    /// Returns `None` when there are too few rows to tell codes apart ([`PROBE_MIN_ROWS`]).
    pub fn new(base: ArrayView2<f32>, queries: usize) -> Option<Self> {
        let n = base.nrows();
        let queries = queries.min(n);
        if n < PROBE_MIN_ROWS || queries == 0 {
            return None;
        }
        let mut unit = base.to_owned();
        for mut row in unit.rows_mut() {
            let norm = row.dot(&row).sqrt().max(1e-12);
            row /= norm;
        }
        let sims = unit.slice(ndarray::s![..queries, ..]).dot(&unit.t());
        let truth = (0..queries)
            .into_par_iter()
            .map(|i| best_k(sims.row(i).as_slice().unwrap(), PROBE_K, i))
            .collect();
        Some(RecallProbe {
            base: base.to_owned(),
            queries,
            truth,
        })
    }

    /// Encodes the probe rows with `p` and measures both recalls. Also returns the set bits of
    /// every probe row, for bit statistics.
    pub fn measure(
        &self,
        p: &Params<f32>,
        method: Method,
        k: usize,
    ) -> (ProbeRecall, Vec<Vec<u32>>) {
        let h = p.pre_activations(self.base.view());
        let active = active_bits(&h, method, k);
        let n = active.len();
        let words = p.bits().div_ceil(64);
        let mut packed = vec![0u64; n * words];
        for (row, set) in packed.chunks_mut(words).zip(&active) {
            for &j in set {
                row[j as usize / 64] |= 1 << (j % 64);
            }
        }
        let q = self.base.slice(ndarray::s![..self.queries, ..]);
        let tables = q.dot(&p.wd_t.t());
        let offsets = q.dot(&p.bd);
        let norms = p.decoded_norms(&active);
        let (ham, adc): (Vec<Vec<u32>>, Vec<Vec<u32>>) = (0..self.queries)
            .into_par_iter()
            .map(|i| {
                let qi = &packed[i * words..(i + 1) * words];
                let hd: Vec<f32> = packed
                    .chunks(words)
                    .map(|b| {
                        -(qi.iter()
                            .zip(b)
                            .map(|(x, y)| (x ^ y).count_ones())
                            .sum::<u32>() as f32)
                    })
                    .collect();
                let t = tables.row(i);
                let ad: Vec<f32> = active
                    .iter()
                    .zip(&norms)
                    .map(|(set, &nb)| {
                        let dot = offsets[i] + set.iter().map(|&j| t[j as usize]).sum::<f32>();
                        dot / nb.max(1e-12)
                    })
                    .collect();
                (best_k(&hd, PROBE_K, i), best_k(&ad, PROBE_K, i))
            })
            .unzip();
        (
            ProbeRecall {
                hamming: recall(&ham, &self.truth),
                adc: recall(&adc, &self.truth),
            },
            active,
        )
    }

    /// The probe rows.
    pub fn rows(&self) -> ArrayView2<'_, f32> {
        self.base.view()
    }
}

/// Sets `be[j]` for each bit in `bits` so that bit j fires (`H > 0`) for a fraction `k / N` of
/// the rows of `sample`: `be[j] = -(the (1 - k/N) quantile of sample . We[j])`.
pub fn set_bias_quantiles(p: &mut Params<f32>, sample: ArrayView2<f32>, k: usize, bits: &[usize]) {
    if sample.nrows() == 0 || bits.is_empty() {
        return;
    }
    let n_bits = p.bits();
    let rows = ndarray::Array1::from(bits.to_vec());
    let we = p.we.select(Axis(0), rows.as_slice().unwrap());
    let proj = sample.dot(&we.t()); // rows x |bits|
    let frac = (k as f64 / n_bits as f64).clamp(0.0, 1.0);
    // The row index whose value becomes the threshold: `above` rows lie strictly above it.
    let above = ((sample.nrows() as f64 * frac).round() as usize).min(sample.nrows() - 1);
    let new_bias: Vec<f32> = proj
        .axis_iter(Axis(1))
        .into_par_iter()
        .map(|col| {
            let mut v = col.to_vec();
            let at = v.len() - 1 - above;
            v.select_nth_unstable_by(at, |a, b| {
                a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal)
            });
            -v[at]
        })
        .collect();
    for (&j, b) in bits.iter().zip(new_bias) {
        p.be[j] = b;
    }
}

/// Per-bit firing frequency over a set of codes.
pub fn bit_frequencies(active: &[Vec<u32>], bits: usize) -> Vec<f64> {
    let mut counts = vec![0usize; bits];
    for set in active {
        for &j in set {
            counts[j as usize] += 1;
        }
    }
    let n = active.len().max(1) as f64;
    counts.into_iter().map(|c| c as f64 / n).collect()
}

/// Resets the bits that fire for no row of `sample` or for more than `max_freq` of them
/// (`freq` measured on `sample`): their encoder bias is set so they fire for about K of N rows
/// ([`set_bias_quantiles`]), and the decoder bias takes over the mean contribution they lose,
/// `bd += Wd[:, j] (f_old - K/N)`, so the reconstruction of an average vector does not jump.
/// Returns the bits reset.
pub fn rebalance_bits(
    p: &mut Params<f32>,
    sample: ArrayView2<f32>,
    freq: &[f64],
    k: usize,
    max_freq: f64,
) -> Vec<usize> {
    let bad: Vec<usize> = (0..freq.len())
        .filter(|&j| freq[j] == 0.0 || freq[j] > max_freq)
        .collect();
    set_bias_quantiles(p, sample, k, &bad);
    let target = k as f32 / p.bits() as f32;
    for &j in &bad {
        let shift = freq[j] as f32 - target;
        let row = p.wd_t.row(j).to_owned();
        Zip::from(&mut p.bd)
            .and(&row)
            .for_each(|b, &w| *b += w * shift);
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn warmup_then_cosine_reaches_the_floor() {
        let f = |s| lr_factor(Schedule::Cosine, s, 101, 10, 0.1);
        assert!((f(0) - 0.1 * (0.1 + 0.9 * 0.5 * (1.0 + 0f64.cos()))).abs() < 1e-12);
        assert!((f(9) - lr_factor(Schedule::Cosine, 9, 101, 0, 0.1)).abs() < 1e-12);
        assert!((f(100) - 0.1).abs() < 1e-12);
        assert!((f(50) - 0.55).abs() < 1e-12);
        assert_eq!(lr_factor(Schedule::Constant, 5, 10, 0, 0.0), 1.0);
    }

    #[test]
    fn quantile_bias_fires_k_of_n() {
        let x = Array2::from_shape_fn((1000, 8), |(i, j)| {
            ((i * 31 + j * 17) % 97) as f32 / 97.0 - 0.5
        });
        let mut p = Params::<f32>::init(64, 8, 3);
        let all: Vec<usize> = (0..64).collect();
        set_bias_quantiles(&mut p, x.view(), 4, &all);
        let h = p.pre_activations(x.view());
        let active = active_bits(&h, Method::Bsa, 4);
        let mean = active.iter().map(|a| a.len()).sum::<usize>() as f64 / 1000.0;
        // Each bit fires for 1000 * 4/64 = 62.5 rows, up to ties; about 4 per row.
        assert!((3.5..4.5).contains(&mean), "{mean}");
        let freq = bit_frequencies(&active, 64);
        assert!(freq.iter().all(|&f| f > 0.0 && f < 0.2), "{freq:?}");
    }

    #[test]
    fn rebalance_resets_dead_and_saturated_bits_only() {
        let x = Array2::from_shape_fn((500, 6), |(i, j)| {
            ((i * 13 + j * 7) % 53) as f32 / 53.0 - 0.5
        });
        let mut p = Params::<f32>::init(16, 6, 5);
        let all: Vec<usize> = (0..16).collect();
        set_bias_quantiles(&mut p, x.view(), 2, &all);
        p.be[3] = -100.0; // dead
        p.be[7] = 100.0; // fires always
        let before = p.clone();
        let freq = bit_frequencies(
            &active_bits(&p.pre_activations(x.view()), Method::Bsa, 2),
            16,
        );
        assert_eq!(freq[3], 0.0);
        assert_eq!(freq[7], 1.0);
        let reset = rebalance_bits(&mut p, x.view(), &freq, 2, 0.5);
        assert_eq!(reset, vec![3, 7]);
        let after = bit_frequencies(
            &active_bits(&p.pre_activations(x.view()), Method::Bsa, 2),
            16,
        );
        assert!(after[3] > 0.05 && after[3] < 0.2 && after[7] > 0.05 && after[7] < 0.2);
        for j in (0..16).filter(|j| ![3, 7].contains(j)) {
            assert_eq!(p.be[j], before.be[j]);
        }
        assert_ne!(p.bd, before.bd);
    }

    #[test]
    fn probe_ranks_a_code_that_keeps_clusters_above_one_that_does_not() {
        use rand::{Rng, SeedableRng};
        // 20 tight clusters of 10 rows in 16-d: each row's top 10 holds its 9 cluster mates.
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        let centres = Array2::from_shape_simple_fn((20, 16), || {
            rng.sample::<f32, _>(rand_distr::StandardNormal)
        });
        let x = Array2::from_shape_fn((200, 16), |(i, j)| {
            centres[[i % 20, j]] + 0.01 * rng.sample::<f32, _>(rand_distr::StandardNormal)
        });
        let probe = RecallProbe::new(x.view(), 50).unwrap();
        // Sign bits of the input, decoded by the identity: nearby rows get equal codes.
        let mut good = Params::<f32>::zeros(16, 16);
        for i in 0..16 {
            good.we[[i, i]] = 1.0;
            good.wd_t[[i, i]] = 1.0;
        }
        let (r, active) = probe.measure(&good, Method::Bsa, 8);
        assert_eq!(active.len(), 200);
        assert!(r.hamming > 0.8 && r.adc > 0.8, "{r:?}");
        // Every code empty: all ties, broken by row index, so recall is about chance.
        let mut bad = good.clone();
        bad.be.fill(-100.0);
        let (r, _) = probe.measure(&bad, Method::Bsa, 8);
        assert!(r.hamming < 0.2 && r.adc < 0.2, "{r:?}");
    }
}
