//! The BSA autoencoder: its configuration, its parameters, and the forward pass that turns float
//! vectors into binary codes and codes back into vectors.
//!
//! Names follow `shared/method.md`: rows are vectors, a batch `X` is `B x D`,
//!
//! ```text
//! H    = X We^T + be      S = sigmoid(H)      C = round(S)      Xhat = C Wd^T + bd
//! ```
//!
//! The decoder is stored transposed (`wd_t = Wd^T`, `N x D`) so that decoding a sparse code is a
//! sum of the contiguous rows of `wd_t` picked by the code's set bits. Model files keep the
//! PyTorch layout (`decoder.weight` is `D x N`); see [`crate::io::model`].

use ndarray::{Array2, ArrayView2, Axis, Zip};

use std::sync::atomic::AtomicBool;

use crate::error::{Error, Result};
use bsa_index::deterministic;

pub use crate::config::{LossKind, MAX_BITS, Method, ModelConfig, Target};
pub use crate::params::Params;
pub use crate::real::{Real, sigmoid, top_k_indices, top_k_into};

/// A trained model: configuration plus weights.
#[derive(Debug, Clone)]
pub struct Autoencoder {
    /// The configuration it was trained with.
    pub config: ModelConfig,
    /// Its weights.
    pub params: Params<f32>,
}

/// Rows of the training data [`Autoencoder::one_code_warning`] encodes.
pub const ONE_CODE_SAMPLE: usize = 2000;

impl Autoencoder {
    /// Set bits of each row's code, ascending. BSA and the sign, LSH and ITQ baselines: bits with
    /// `H > 0` (that is `S > 0.5`); TopK: the K largest `H` (sigmoid is monotone, so the same as
    /// the K largest `S`), ties to the lower index.
    ///
    /// Pursuit: the K atoms greedy binary matching pursuit picks ([`crate::pursuit::encode`]).
    ///
    /// The codes are those of the deterministic pre-activations
    /// ([`Params::pre_activations_fixed`]), so a vector gets the same code on every CPU and for
    /// every thread count, whether it is encoded as a base row or as a query (see
    /// `rule_codes` for how this stays as fast as a BLAS GEMM).
    pub fn encode_active(&self, x: ArrayView2<f32>) -> Vec<Vec<u32>> {
        self.encode_active_until(x, &AtomicBool::new(false))
            .expect("never stopped")
    }

    /// [`encode_active`](Self::encode_active) that returns [`Error::Stopped`] once `stop` is
    /// set, checked between chunks of rows (16,384 rows; a pursuit model's own chunks), so
    /// that encoding a million rows can be interrupted. The codes do not depend on the chunks.
    ///
    /// ```
    /// use std::sync::atomic::AtomicBool;
    /// use bsa::model::{Autoencoder, LossKind, Method, ModelConfig, Params, Target};
    /// let (dim, bits, k) = (8, 16, 2);
    /// let (loss, target) = (LossKind::Cosine, Target::Khot);
    /// let config = ModelConfig { dim, bits, k, method: Method::Topk, loss, alpha: 1.0, target };
    /// let model = Autoencoder { params: Params::init(bits, dim, 1), config };
    /// let x = ndarray::Array2::from_elem((3, 8), 0.5f32);
    /// let stop = AtomicBool::new(true);
    /// assert!(matches!(model.encode_active_until(x.view(), &stop), Err(bsa::Error::Stopped)));
    /// ```
    pub fn encode_active_until(
        &self,
        x: ArrayView2<f32>,
        stop: &AtomicBool,
    ) -> Result<Vec<Vec<u32>>> {
        let mut out = Vec::with_capacity(x.nrows());
        self.encode_chunks_until(x, stop, &mut |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`encode_active_until`](Self::encode_active_until) a chunk of rows (16,384) at a time:
    /// `each` gets a chunk's set bits, in row order, before the next chunk is encoded, so that
    /// a caller keeping packed codes never holds every row's list (a sign code's ~190 set bits
    /// are ~790 bytes as a list and 48 packed: 580 MB of heap for 500k rows). Returns `each`'s
    /// first error, or [`Error::Stopped`] once `stop` is set.
    ///
    /// ```
    /// use std::sync::atomic::AtomicBool;
    /// use bsa::model::{Autoencoder, LossKind, Method, ModelConfig, Params, Target};
    /// let (dim, bits, k) = (8, 16, 2);
    /// let (loss, target) = (LossKind::Cosine, Target::Khot);
    /// let config = ModelConfig { dim, bits, k, method: Method::Topk, loss, alpha: 1.0, target };
    /// let model = Autoencoder { params: Params::init(bits, dim, 1), config };
    /// let x = ndarray::Array2::from_shape_fn((40_000, 8), |(i, j)| ((i + 3 * j) % 7) as f32);
    /// let mut rows = 0;
    /// model.encode_chunks_until(x.view(), &AtomicBool::new(false), &mut |chunk| {
    ///     rows += chunk.len();
    ///     Ok(())
    /// })?;
    /// assert_eq!(rows, 40_000);
    /// # Ok::<(), bsa::Error>(())
    /// ```
    pub fn encode_chunks_until(
        &self,
        x: ArrayView2<f32>,
        stop: &AtomicBool,
        each: &mut dyn FnMut(&[Vec<u32>]) -> Result<()>,
    ) -> Result<()> {
        // Chunks also bound the pre-activations held at once (rows x N floats).
        const ROWS: usize = 1 << 14;
        for chunk in x.axis_chunks_iter(Axis(0), ROWS) {
            bsa_index::check_stop(Some(stop))?;
            let codes = if self.config.method == Method::Pursuit {
                crate::greedy::encode_with(&self.params, self.config.k, chunk, true, stop)
                    .ok_or(Error::Stopped)?
            } else {
                rule_codes(&self.params, chunk, self.config.method, self.config.k)
            };
            each(&codes)?;
        }
        Ok(())
    }

    /// A warning when this model gives every row of a sample of `x` (named `what`; its first
    /// [`ONE_CODE_SAMPLE`] rows) one code although the rows differ: a model that tells them
    /// apart not at all, as training on rows far from unit length can leave (every method exits
    /// without error then). `None` otherwise, and for a sample of identical rows.
    ///
    /// ```
    /// use bsa::baselines::BaselineParams;
    /// use bsa::model::Method;
    /// let x = ndarray::array![[1.0f32, 0.5], [0.5, 1.0], [-1.0, -0.5], [-0.5, -1.0]];
    /// let (model, _) = BaselineParams::new(Method::Sign, 2).fit(x.view())?;
    /// assert!(model.one_code_warning(x.view(), "x").is_none()); // two codes
    /// let same_side = ndarray::array![[1.0f32, 0.5], [0.5, 1.0]];
    /// let w = model.one_code_warning(same_side.view(), "q").unwrap();
    /// assert!(w.starts_with("the model gives all 2 rows of q one code"), "{w}");
    /// # Ok::<(), bsa::Error>(())
    /// ```
    pub fn one_code_warning(&self, x: ArrayView2<f32>, what: &str) -> Option<String> {
        let sample = x.slice(ndarray::s![..x.nrows().min(ONE_CODE_SAMPLE), ..]);
        let first = sample.rows().into_iter().next()?;
        if sample.rows().into_iter().all(|r| r == first) {
            return None;
        }
        let codes = self.encode_active(sample);
        if codes.iter().any(|c| c != &codes[0]) {
            return None;
        }
        let rows = match sample.nrows() {
            m if m < x.nrows() => format!("the first {m} rows"),
            m => format!("all {m} rows"),
        };
        Some(format!(
            "the model gives {rows} of {what} one code, though they differ: it tells them apart \
             not at all; rows far from unit length (L2-normalise them: x / np.linalg.norm(x, \
             axis=1, keepdims=True)) or too few to learn from can leave it so"
        ))
    }

    /// Binary codes packed as numpy `packbits(bitorder="little")` rows: `n x ceil(N/8)` bytes,
    /// bit j of a code in byte `j / 8` at bit position `j % 8`.
    pub fn encode_packed(&self, x: ArrayView2<f32>) -> Vec<u8> {
        self.encode_packed_until(x, &AtomicBool::new(false))
            .expect("never stopped")
    }

    /// [`encode_packed`](Self::encode_packed) that returns [`Error::Stopped`] once `stop` is
    /// set, packing chunk by chunk ([`encode_chunks_until`](Self::encode_chunks_until)).
    pub fn encode_packed_until(&self, x: ArrayView2<f32>, stop: &AtomicBool) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(x.nrows() * self.config.bits.div_ceil(8));
        self.encode_chunks_until(x, stop, &mut |chunk| {
            out.extend(pack_active(chunk, self.config.bits));
            Ok(())
        })?;
        Ok(out)
    }

    /// Per-query tables of the decoder-ADC score (method.md): row i is `u = Wd^T q_i` (one float
    /// per bit), and offset i is `q_i . bd`, so that `q . xhat_b` = offset + sum of `u_j` over the
    /// set bits of `b`. Returns `(nq * N tables, nq offsets)`, row-major.
    ///
    /// Every entry is a [`deterministic::dot`], so the printed scores are the same bytes for any
    /// CPU and thread count ([`bsa_index::model::Weights::adc_tables`], which a query server
    /// calls without this crate).
    pub fn adc_tables(&self, q: ArrayView2<f32>) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok(self.params.weights().adc_tables(q)?)
    }

    /// Per-query ADC tables for picking candidates that are re-ranked by exact cosine
    /// (`--rescore`): as [`Autoencoder::adc_tables`], but each entry of `u` is the exact integer
    /// product of the query rounded to 7 bits and the decoder rounded to 8
    /// ([`bsa_index::int_tables`]), two to three times faster to compute; on WordNet the top 40
    /// they rank are the float tables' in 99.2% of places. The offsets are the float ones. The
    /// same bits on every CPU and thread count
    /// ([`bsa_index::model::Weights::adc_candidate_tables`]).
    pub fn adc_candidate_tables(&self, q: ArrayView2<f32>) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok(self.params.weights().adc_candidate_tables(q)?)
    }

    /// Per-query tables of the soft score: the query's sigmoid activations `sigmoid(q We^T + be)`,
    /// offsets 0. Deterministic like [`Autoencoder::adc_tables`]
    /// ([`bsa_index::model::Weights::soft_tables`]).
    pub fn soft_tables(&self, q: ArrayView2<f32>) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok(self.params.weights().soft_tables(q)?)
    }

    /// The model as the search crate takes it ([`bsa_index::query::search`]): its weights and
    /// the rule its method makes codes by. The search crate encodes queries on the fixed-order
    /// products, whose codes are [`Autoencoder::encode_active`]'s (tested).
    pub fn view(&self) -> bsa_index::model::ModelView<'_> {
        use bsa_index::model::Rule;
        let k = self.config.k;
        let rule = match self.config.method {
            Method::Bsa | Method::Sign | Method::Lsh | Method::Itq => Rule::Positive,
            Method::Topk => Rule::TopK(k),
            Method::Pursuit => Rule::Pursuit(k),
        };
        bsa_index::model::ModelView {
            weights: self.params.weights(),
            rule,
            source: None,
        }
    }

    /// The K largest activations of each row as a k-hot code, whatever the method (the paper's
    /// "Fixed-TopK" code), decided like [`Autoencoder::encode_active`].
    pub fn encode_khot(&self, x: ArrayView2<f32>) -> Vec<Vec<u32>> {
        rule_codes(&self.params, x, Method::Topk, self.config.k)
    }
}

/// Codes by a rule on the pre-activations, decided on [`Params::pre_activations_fixed`] (so the
/// same on every CPU and thread count) at the speed of a BLAS GEMM: `method` Topk or Pursuit
/// takes the `k` largest (ties to the lower index), every other method the bits with `H > 0`.
///
/// The GEMM's `H` and the fixed one are each within `gamma (|x| |We_j| + |be_j|)` of the exact
/// value, whatever order BLAS sums in ([`deterministic::f32_dot_error_bound`], Cauchy-Schwarz),
/// plus underflow, so they differ by at most twice that; the margin `m_j` is twice that again. A
/// bit whose GEMM value is farther than `m_j` from 0 has the same sign in both, so only the few
/// entries within it are recomputed. For the top k, with `M >= m_j` for every j of the row: if `v`
/// is the k-th largest GEMM value, k entries have fixed values `>= v - M`, so the k-th largest
/// fixed value is at least `v - M`, and an entry whose GEMM value is below `v - 2M` has a fixed
/// value strictly below that and cannot be chosen; the others (usually just k) are recomputed and
/// ranked.
fn rule_codes(params: &Params<f32>, x: ArrayView2<f32>, method: Method, k: usize) -> Vec<Vec<u32>> {
    let h = params.pre_activations(x);
    let dim = params.dim();
    let gamma = deterministic::f32_dot_error_bound(dim);
    let underflow = (dim + 1) as f64 * deterministic::F32_UNDERFLOW_PER_TERM;
    let we = params.we.as_standard_layout();
    // The rows' norms are the model's, not the batch's: made once per model (crate::memo; a
    // quarter of a millisecond at 1024 x 384, more than a one-query search itself).
    static W_NORMS: bsa_index::memo::LastFor<Vec<f64>> = bsa_index::memo::LastFor::new();
    let w_norms = W_NORMS.get(params.we.view(), || {
        we.rows().into_iter().map(|r| norm_f64(r.iter())).collect()
    });
    let be: Vec<f32> = params.be.to_vec();
    let w_max = w_norms.iter().copied().fold(0.0, f64::max);
    let be_max = be.iter().map(|b| f64::from(b.abs())).fold(0.0, f64::max);
    let top = matches!(method, Method::Topk | Method::Pursuit);
    let mut out = vec![Vec::new(); h.nrows()];
    Zip::from(h.rows())
        .and(x.rows())
        .and(&mut out)
        .par_for_each(|h, x, bits| {
            let x = x.to_vec();
            let x_norm = norm_f64(x.iter());
            let margin = |w_norm: f64, be_abs: f64| {
                2.0 * 2.0 * (gamma * (x_norm * w_norm + be_abs) + underflow)
            };
            let fixed = |j: usize| {
                deterministic::dot(&x, we.row(j).as_slice().expect("standard layout")) + be[j]
            };
            let owned;
            let h = match h.as_slice() {
                Some(h) => h,
                None => {
                    owned = h.to_vec();
                    &owned
                }
            };
            let row_margin = margin(w_max, be_max);
            // The error bound holds while no partial sum can overflow, which Cauchy-Schwarz
            // guarantees below f32::MAX (halved for the rounding on the way): rows beyond that
            // (entries near 1e38) are computed whole in the fixed order, so that a NaN or an
            // infinity is the fixed rule's, not BLAS's, whose sums overflow per its blocking.
            let bounded = x_norm * w_max + be_max < 0.5 * f64::from(f32::MAX);
            if !bounded {
                let values: Vec<f32> = (0..h.len()).map(fixed).collect();
                *bits = if top {
                    top_k_indices(&values, k)
                } else {
                    (0..h.len() as u32)
                        .filter(|&j| values[j as usize] > 0.0)
                        .collect()
                };
                return;
            }
            *bits = if top {
                top_k_fixed(h, k, row_margin, &fixed)
            } else {
                // The row's largest margin, rounded up to f32, settles almost every entry with
                // one compare; the few below it get their own margin.
                let quick = f32_at_least(row_margin);
                (0..h.len())
                    .filter(|&j| {
                        let v = h[j];
                        if v.abs() > quick
                            || f64::from(v.abs()) > margin(w_norms[j], f64::from(be[j].abs()))
                        {
                            v > 0.0
                        } else {
                            fixed(j) > 0.0
                        }
                    })
                    .map(|j| j as u32)
                    .collect()
            };
        });
    out
}

/// The `k` largest fixed values of a row (ascending indices, ties to the lower index), given the
/// row's GEMM values `h`, each within `max_margin` of its fixed value `fixed(j)`.
fn top_k_fixed(h: &[f32], k: usize, max_margin: f64, fixed: &dyn Fn(usize) -> f32) -> Vec<u32> {
    let n = h.len();
    let k = k.min(n);
    if k == 0 {
        return Vec::new();
    }
    if k == n {
        return (0..n as u32).collect();
    }
    let mut sorted = h.to_vec();
    sorted.select_nth_unstable_by(k - 1, |a, b| {
        b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal)
    });
    let floor = f64::from(sorted[k - 1]) - 2.0 * max_margin;
    let cand: Vec<u32> = (0..n as u32)
        .filter(|&j| f64::from(h[j as usize]) >= floor)
        .collect();
    if cand.len() <= k {
        // Exactly the k at or above the k-th value (fewer only with NaN): no choice to make.
        return cand;
    }
    let values: Vec<f32> = cand.iter().map(|&j| fixed(j as usize)).collect();
    top_k_indices(&values, k)
        .into_iter()
        .map(|p| cand[p as usize])
        .collect()
}

/// The smallest `f32` not below `x`.
fn f32_at_least(x: f64) -> f32 {
    let f = x as f32;
    if f64::from(f) < x { f.next_up() } else { f }
}

/// Euclidean norm in `f64`.
fn norm_f64<'a>(v: impl Iterator<Item = &'a f32>) -> f64 {
    v.map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt()
}

/// Set bits of each row of pre-activations `h` under `method`.
pub fn active_bits<F: Real>(h: &Array2<F>, method: Method, k: usize) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new(); h.nrows()];
    Zip::from(h.axis_iter(Axis(0)))
        .and(&mut out)
        .par_for_each(|row, bits| {
            let owned;
            let row = match row.as_slice() {
                Some(r) => r,
                None => {
                    owned = row.to_vec();
                    &owned
                }
            };
            *bits = match method {
                Method::Bsa | Method::Sign | Method::Lsh | Method::Itq => (0..row.len() as u32)
                    .filter(|&j| row[j as usize] > F::zero())
                    .collect(),
                // Pursuit codes need the greedy steps (Autoencoder::encode_active); as a rule on
                // H alone, its K largest correlations are the closest one.
                Method::Topk | Method::Pursuit => top_k_indices(row, k),
            };
        });
    out
}

/// Packs lists of set bits into numpy little-bit-order bytes, `ceil(bits/8)` per row.
pub fn pack_active(active: &[Vec<u32>], bits: usize) -> Vec<u8> {
    let bytes = bits.div_ceil(8);
    let mut out = vec![0u8; active.len() * bytes];
    for (row, set) in out.chunks_mut(bytes.max(1)).zip(active) {
        for &j in set {
            row[j as usize / 8] |= 1 << (j % 8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array1;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn top_k_breaks_ties_by_index() {
        let row = [1.0f32, 3.0, 3.0, 2.0, 3.0];
        assert_eq!(top_k_indices(&row, 2), vec![1, 2]);
        assert_eq!(top_k_indices(&row, 4), vec![1, 2, 3, 4]);
        assert_eq!(top_k_indices(&row, 9), vec![0, 1, 2, 3, 4]);
        assert_eq!(top_k_indices(&[0.0f32, -0.0, 0.0], 2), vec![0, 1]);
    }

    /// The sampled threshold of `top_k_into` against a plain sort, on rows long enough to use
    /// it: random values, many ties, saturated values, and rows whose sample misleads it.
    #[test]
    fn top_k_matches_a_sort() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let (mut keys, mut out) = (Vec::new(), Vec::new());
        for case in 0..400 {
            let n = [256, 300, 1024, 4096][case % 4];
            let k = [1, 8, 32, 33, n / 8][case / 4 % 5];
            let row: Vec<f32> = (0..n)
                .map(|j| match case / 20 % 4 {
                    0 => rng.random::<f32>(),
                    1 => (rng.random_range(0..4) as f32) / 4.0,
                    2 => 1.0f32.min(rng.random::<f32>() * 1.2),
                    // Large values only where the stride-n/64 sample does not look.
                    _ => f32::from(u8::from(j % (n / 64) == 1)) + rng.random::<f32>() * 1e-3,
                })
                .collect();
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.sort_by(|&a, &b| {
                row[b as usize]
                    .partial_cmp(&row[a as usize])
                    .unwrap()
                    .then(a.cmp(&b))
            });
            let mut want = order[..k].to_vec();
            want.sort_unstable();
            top_k_into(&row, k, &mut keys, &mut out);
            assert_eq!(out, want, "case {case}: n {n} k {k}");
        }
    }

    #[test]
    fn sparse_and_dense_decode_agree() {
        let p = Params::<f64>::init(12, 5, 7);
        let active = vec![vec![0u32, 3, 11], vec![], vec![5]];
        let mut c = Array2::<f64>::zeros((3, 12));
        for (i, set) in active.iter().enumerate() {
            for &j in set {
                c[[i, j as usize]] = 1.0;
            }
        }
        let a = p.decode_sparse(&active);
        let b = p.decode_dense(c.view());
        assert!((&a - &b).iter().all(|d| d.abs() < 1e-12));
    }

    #[test]
    fn pack_matches_numpy_little_bit_order() {
        // Bits 0, 9 and 10 of a 12-bit code: byte 0 = 0b1, byte 1 = 0b110.
        assert_eq!(
            pack_active(&[vec![0, 9, 10]], 12),
            vec![0b0000_0001, 0b0000_0110]
        );
    }

    fn model(params: Params<f32>, method: Method, k: usize) -> Autoencoder {
        Autoencoder {
            config: ModelConfig {
                dim: params.dim(),
                bits: params.bits(),
                k,
                method,
                loss: LossKind::Cosine,
                alpha: 1.0,
                target: Target::Khot,
            },
            params,
        }
    }

    use crate::threads::with_threads;

    fn gaussian(n: usize, d: usize, seed: u64) -> Array2<f32> {
        use rand_distr::StandardNormal;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        Array2::from_shape_simple_fn((n, d), || rng.sample::<f32, _>(StandardNormal))
    }

    /// The encoding rule applied to fixed pre-activations `h` (one row per vector): the `k`
    /// largest for TopK (ties to the lower index), else the bits with `h > 0`.
    fn rule_on(h: &Array2<f32>, method: Method, k: usize) -> Vec<Vec<u32>> {
        h.rows()
            .into_iter()
            .map(|row| match method {
                Method::Topk => top_k_indices(row.as_slice().unwrap(), k),
                _ => (0..row.len() as u32)
                    .filter(|&j| row[j as usize] > 0.0)
                    .collect(),
            })
            .collect()
    }

    #[test]
    fn codes_do_not_depend_on_the_encoding_chunks() {
        // 20,000 rows span two of encode_active_until's chunks of 16,384.
        let x = gaussian(20_000, 16, 3);
        for method in [Method::Topk, Method::Bsa] {
            let m = model(Params::<f32>::init(64, 16, 4), method, 5);
            let whole = m.encode_active(x.view());
            let mut parts = m.encode_active(x.slice(ndarray::s![..10_000, ..]));
            parts.extend(m.encode_active(x.slice(ndarray::s![10_000.., ..])));
            assert_eq!(whole, parts, "{method:?}");
        }
    }

    #[test]
    fn codes_are_the_rule_on_the_fixed_pre_activations_for_any_thread_count() {
        // 400 x 200 x 300 is well above OpenBLAS's threshold for splitting a GEMM.
        let (n, dim, bits) = (400, 200, 300);
        let x = gaussian(n, dim, 1);
        let mut p = Params::<f32>::init(bits, dim, 2);
        // Encoder rows 150.. repeat rows ..150: every pre-activation comes twice, an exact tie
        // (k = 21 below is odd, so the k-th largest is always half of a tied pair).
        for j in 150..bits {
            let row = p.we.row(j - 150).to_owned();
            p.we.row_mut(j).assign(&row);
            p.be[j] = p.be[j - 150];
        }
        // Bits 0..150 of rows 0..150 exactly on the threshold: be_j = -dot(x_j, We_j), so the
        // fixed H is exactly 0 and the bit is off, while a GEMM summing in another order lands a
        // few ulp to either side. (Bits 150.. keep their own biases, so are not affected.)
        for j in 0..150 {
            p.be[j] = -deterministic::dot(
                x.row(j).as_slice().unwrap(),
                p.we.row(j).as_slice().unwrap(),
            );
        }
        let h = p.pre_activations_fixed(x.view());
        assert!((0..150).all(|j| h[[j, j]] == 0.0));
        for (method, k) in [(Method::Bsa, 21), (Method::Topk, 21), (Method::Topk, 1)] {
            let want = rule_on(&h, method, k);
            let m = model(p.clone(), method, k);
            for threads in [1, 2, 4] {
                let got = with_threads(threads, || m.encode_active(x.view()));
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g, w, "{method} k={k}, {threads} threads, row {i}");
                }
            }
        }
    }

    /// Rows whose pre-activations overflow f32 (entries near 1e38) get the fixed rule's code,
    /// NaN and infinities included, whatever rows are encoded with them: BLAS's overflowing
    /// sums depend on its blocking, hence on the batch (a review found such rows all zeros
    /// alone and ~100 bits set in a batch of 40, and the query encoder disagreeing).
    #[test]
    fn rows_near_f32_max_get_the_fixed_rule_in_any_batch() {
        let (dim, bits) = (384, 200);
        let mut x = gaussian(40, dim, 5);
        for i in 0..3 {
            let row = x.row(i).mapv(|v| v.signum() * 3e38);
            x.row_mut(i).assign(&row);
        }
        let p = Params {
            we: gaussian(bits, dim, 6),
            be: Array1::zeros(bits),
            wd_t: gaussian(bits, dim, 7),
            bd: Array1::zeros(dim),
        };
        let h = p.pre_activations_fixed(x.view());
        assert!(h.row(0).iter().any(|v| !v.is_finite()));
        for (method, k) in [(Method::Lsh, 0), (Method::Topk, 16)] {
            let want = rule_on(&h, method, k);
            let m = model(p.clone(), method, k);
            assert_eq!(m.encode_active(x.view()), want, "{method}");
            for n in [1, 3, 8] {
                let got = m.encode_active(x.slice(ndarray::s![..n, ..]));
                assert_eq!(got, want[..n], "{method}, {n} rows");
            }
        }
    }

    #[test]
    fn tables_and_pursuit_codes_do_not_depend_on_the_thread_count() {
        let x = gaussian(300, 64, 3);
        let dict = crate::greedy::dictionary_params(gaussian(256, 64, 4) * 0.3, Array1::zeros(64));
        let m = model(dict, Method::Pursuit, 8);
        let run = |threads| {
            with_threads(threads, || {
                (
                    m.adc_tables(x.view()).unwrap(),
                    m.soft_tables(x.view()).unwrap(),
                    m.encode_active(x.view()),
                )
            })
        };
        let one = run(1);
        // Entries are fixed-order sums: each equals the scalar reference bit for bit.
        let u = &one.0.0;
        for (i, row) in x.rows().into_iter().enumerate() {
            let q = row.as_slice().unwrap();
            for j in 0..256 {
                let want = deterministic::dot(q, m.params.wd_t.row(j).as_slice().unwrap());
                assert_eq!(
                    u[i * 256 + j].to_bits(),
                    want.to_bits(),
                    "table {i}, bit {j}"
                );
            }
        }
        for threads in [2, 4] {
            let other = run(threads);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&other.0.0),
                bits(&one.0.0),
                "adc tables, {threads} threads"
            );
            assert_eq!(
                bits(&other.0.1),
                bits(&one.0.1),
                "adc offsets, {threads} threads"
            );
            assert_eq!(
                bits(&other.1.0),
                bits(&one.1.0),
                "soft tables, {threads} threads"
            );
            assert_eq!(other.2, one.2, "pursuit codes, {threads} threads");
        }
    }

    #[test]
    fn enum_names_round_trip() {
        for m in Method::ALL {
            assert_eq!(m.to_string().parse::<Method>().unwrap(), m);
        }
        assert!("bogus".parse::<LossKind>().is_err());
    }
}

/// A model that can no longer change (no `&mut` access to it exists), so what the process
/// derives from its dictionaries (see [`Autoencoder::adc_candidate_tables`]) is reused without
/// comparing them again: for long-lived callers that search a few queries at a time, such as
/// the Python package. Reads go through `Deref`.
///
/// ```
/// use bsa::model::{FrozenModel, Params};
/// use bsa::pursuit::PursuitParams;
/// let model = FrozenModel::new(PursuitParams::new(64, 4).model(16, Params::init(64, 16, 7)));
/// let q = ndarray::Array2::<f32>::ones((1, 16));
/// let (tables, offsets) = model.adc_candidate_tables(q.view())?;
/// assert_eq!((tables.len(), offsets.len()), (64, 1));
/// # Ok::<(), bsa::Error>(())
/// ```
#[derive(Debug)]
pub struct FrozenModel {
    model: Autoencoder,
    /// Its encoder's and decoder's listings as unchanging ([`bsa_index::memo::freeze`]).
    ids: [u64; 2],
    /// What searches derive from its matrices, kept with it ([`FrozenModel::view`]).
    derived: bsa_index::model::Derived,
}

impl FrozenModel {
    /// Takes `model` and lists its encoder and decoder matrices as unchanging.
    pub fn new(model: Autoencoder) -> FrozenModel {
        let ids = [
            bsa_index::memo::freeze(model.params.we.view()),
            bsa_index::memo::freeze(model.params.wd_t.view()),
        ];
        let derived = Default::default();
        FrozenModel {
            model,
            ids,
            derived,
        }
    }

    /// [`Autoencoder::view`] with the model's own derived matrices
    /// ([`bsa_index::model::Derived`]): a process searching with several models (the Python
    /// package with several indexes open) makes each model's once, rather than again at every
    /// switch of model.
    pub fn view(&self) -> bsa_index::model::ModelView<'_> {
        let mut view = self.model.view();
        view.weights.derived = Some(&self.derived);
        view
    }
}

impl std::ops::Deref for FrozenModel {
    type Target = Autoencoder;
    fn deref(&self) -> &Autoencoder {
        &self.model
    }
}

impl Drop for FrozenModel {
    fn drop(&mut self) {
        bsa_index::memo::unfreeze(&self.ids);
    }
}
