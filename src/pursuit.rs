//! Binary dictionary learning by greedy binary matching pursuit (`--method pursuit`).
//!
//! A code is a set of exactly K of N dictionary atoms (the rows of `wd_t`), and a vector is
//! rebuilt as `bd + sum of its atoms`, the same decoder as BSA's. No gradient descent:
//!
//! 1. **Encode** each vector by greedy pursuit: starting from the residual `r = x - bd`, pick K
//!    distinct atoms, each the one that most lowers `|r - a_j|^2`, i.e. maximises the gain
//!    `2 r.a_j - |a_j|^2`, then subtract it. The correlations `c_j = r.a_j` start as one GEMM
//!    (`H = X We^T + be` with `We = A`, `be = -A bd`) and are updated through the atoms' Gram
//!    matrix (`c -= G[j]` after picking j), so each step costs O(N), not O(N D).
//! 2. **Refit** the decoder `(Wd, bd)` in closed form: ridge least squares of X on the binary codes
//!    (normal equations on the `(N+1) x (N+1)` Gram matrix of the codes plus a bias column, solved
//!    by Cholesky in f64). Atoms no code uses are re-seeded with the residual of a random vector.
//! 3. Repeat for `rounds` rounds.
//!
//! The model file stores the atoms as both decoder and encoder (`encoder.weight = Wd^T`,
//! `encoder.bias = -Wd^T bd`), so `H` are the initial correlations; encoding then needs only the
//! greedy steps above. Retrieval works best with the decoder-ADC score (method.md).

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use ndarray::{Array1, Array2, ArrayView2, Axis, CowArray, Zip, s};
use ndarray_linalg::{CholeskyInto, Diag, SolveTriangular, UPLO};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use crate::config::check_sizes;
use crate::error::{Error, Result};
use crate::greedy::encode_with;
pub use crate::greedy::{dictionary_params, encode, greedy_codes};
use crate::loss::distance_rows;
use crate::model::{Autoencoder, LossKind, Method, ModelConfig, Params, Target};

/// Settings of [`PursuitParams::fit`].
#[derive(Debug, Clone, Serialize)]
pub struct PursuitParams {
    /// Number of atoms N (code length in bits).
    pub bits: usize,
    /// Atoms per code K.
    pub k: usize,
    /// Encode/refit rounds.
    pub rounds: usize,
    /// Ridge strength, relative to the mean diagonal of the codes' Gram matrix.
    pub ridge: f64,
    /// Seed of the initial dictionary and of dead-atom re-seeding.
    pub seed: u64,
    /// Fit on at most this many rows (a seeded sample); `None`: all rows.
    pub fit_rows: Option<usize>,
}

impl PursuitParams {
    /// Defaults from the prototype: 6 rounds, ridge 1e-3.
    pub fn new(bits: usize, k: usize) -> Self {
        PursuitParams {
            bits,
            k,
            rounds: 6,
            ridge: 1e-3,
            seed: 0,
            fit_rows: None,
        }
    }

    /// The model file form of a dictionary learned with these settings for `dim`-d inputs.
    pub fn model(&self, dim: usize, dictionary: Params<f32>) -> Autoencoder {
        Autoencoder {
            config: ModelConfig {
                dim,
                bits: self.bits,
                k: self.k,
                method: Method::Pursuit,
                loss: LossKind::Mse,
                alpha: 0.0,
                target: Target::Khot,
            },
            params: dictionary,
        }
    }

    /// Learns a dictionary from the rows of `x`, starting from random atoms; `progress` is
    /// called after every round.
    pub fn fit(
        &self,
        x: ArrayView2<f32>,
        progress: &mut dyn FnMut(&RoundStats),
    ) -> Result<(Params<f32>, Vec<RoundStats>)> {
        self.fit_from(x, None, progress)
    }

    /// [`fit`](Self::fit) from given initial atoms (`bits x dim`, e.g. the decoder columns
    /// `wd_t` of a trained BSA model: a warm start). Only their directions are used: each atom
    /// is scaled like a random one, so that K of them have about the norm of a centred vector
    /// (a BSA decoder's scale is arbitrary: its loss is a cosine).
    pub fn fit_from(
        &self,
        x: ArrayView2<f32>,
        init: Option<ArrayView2<f32>>,
        progress: &mut dyn FnMut(&RoundStats),
    ) -> Result<(Params<f32>, Vec<RoundStats>)> {
        self.fit_until(x, init, progress, &AtomicBool::new(false))
    }

    /// [`fit_from`](Self::fit_from) that returns [`Error::Stopped`] once `stop` is set (from
    /// another thread: e.g. Python's Ctrl-C), at the next round or the next chunk of rows
    /// being encoded.
    pub fn fit_until(
        &self,
        x: ArrayView2<f32>,
        init: Option<ArrayView2<f32>>,
        progress: &mut dyn FnMut(&RoundStats),
        stop: &AtomicBool,
    ) -> Result<(Params<f32>, Vec<RoundStats>)> {
        let (n, dim) = x.dim();
        if let Some(a) = init {
            if a.dim() != (self.bits, dim) {
                return Err(Error::InvalidArgument(format!(
                    "initial atoms are {} x {}, need --bits x dimension = {} x {dim}",
                    a.nrows(),
                    a.ncols(),
                    self.bits
                )));
            }
            if a.iter().any(|v| !v.is_finite()) {
                return Err(Error::InvalidArgument(
                    "initial atoms have non-finite values".into(),
                ));
            }
        }
        crate::config::check_k_below_bits(self.bits, self.k)?;
        check_sizes(self.bits, self.k)?;
        // The dictionary and encoder (bits x dim f32, twice over a round) and the refit's
        // normal equations and their factor ((bits + 1)^2 f64 each).
        let (b, d) = (self.bits as u128, dim as u128);
        crate::config::check_memory(
            4 * b * d * 4 + 2 * (b + 1) * (b + 1) * 8,
            &format!("the pursuit fit of {} bits on {dim}-d data", self.bits),
        )?;
        if self.rounds == 0 {
            return Err(Error::InvalidArgument("--rounds must be at least 1".into()));
        }
        if !(self.ridge.is_finite() && self.ridge > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "--ridge must be positive, got {}",
                self.ridge
            )));
        }
        if n < 2 || dim == 0 {
            return Err(Error::InvalidArgument(format!(
                "need at least 2 rows to fit, got {n}"
            )));
        }
        if let Some(m @ 0..2) = self.fit_rows {
            // As the baselines' (a zero panicked here: the mean of no rows).
            return Err(Error::InvalidArgument(format!(
                "--fit-rows must be at least 2, got {m}"
            )));
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(self.seed);
        let fit = match self.sample_rows(&mut rng, n) {
            Some(rows) => CowArray::from(x.select(Axis(0), &rows)),
            // The rows themselves (a memory-mapped file's, borrowed: a copy of every row was
            // 1.5 KB a row of 384-d data on the heap).
            None => x.as_standard_layout(),
        };

        // Initial dictionary: random directions, scaled so that K of them have about the norm
        // of a centred vector.
        let bd = fit.mean_axis(Axis(0)).expect("fit has rows");
        let centred_norm = (fit
            .axis_iter(Axis(0))
            .map(|r| (&r - &bd).mapv(|v| v * v).sum() as f64)
            .sum::<f64>()
            / fit.nrows() as f64)
            .sqrt();
        let scale = (centred_norm / (self.k as f64).sqrt()) as f32;
        let mut wd_t = match init {
            Some(a) => a.to_owned(),
            None => Array2::from_shape_simple_fn((self.bits, dim), || {
                rng.sample::<f32, _>(StandardNormal)
            }),
        };
        scale_atoms(&mut wd_t, scale, &mut rng);
        let mut params = dictionary_params(wd_t, bd);

        let mut history = Vec::new();
        for round in 1..=self.rounds {
            let started = Instant::now();
            let codes =
                encode_with(&params, self.k, fit.view(), false, stop).ok_or(Error::Stopped)?;
            let encode_seconds = started.elapsed().as_secs_f64();
            let (wd_t, bd) = refit(fit.view(), &codes, self.bits, self.ridge)?;
            let mut next = dictionary_params(wd_t, bd);
            let rec = decoded_distance(&next, &codes, fit.view());
            let dead = reseed_dead_atoms(&mut next, &codes, fit.view(), &mut rng);
            let stats = RoundStats {
                round,
                reconstruction_loss: rec,
                dead_atoms_reseeded: dead,
                encode_seconds,
                seconds: started.elapsed().as_secs_f64(),
            };
            progress(&stats);
            history.push(stats);
            params = next;
        }
        if !params.all_finite() {
            return Err(Error::Diverged(
                "the dictionary became non-finite; raise --ridge".into(),
            ));
        }
        Ok((params, history))
    }
}

impl PursuitParams {
    /// The rows of `n` that [`fit`](Self::fit) learns from: `None` for all of them, else the
    /// `fit_rows` it samples (ascending), the same for the same seed. What
    /// [`reconstruction_loss`] should measure a model on to report its training figure.
    ///
    /// ```
    /// let mut p = bsa::pursuit::PursuitParams::new(64, 4);
    /// assert_eq!(p.fit_sample(100), None);
    /// p.fit_rows = Some(10);
    /// let rows = p.fit_sample(100).unwrap();
    /// assert!(rows.len() == 10 && rows.windows(2).all(|w| w[0] < w[1]));
    /// ```
    pub fn fit_sample(&self, n: usize) -> Option<Vec<usize>> {
        self.sample_rows(&mut Xoshiro256PlusPlus::seed_from_u64(self.seed), n)
    }

    /// The training figure of a dictionary this fit learned from `x`: its
    /// [`reconstruction_loss`] on the rows it was fitted on ([`fit_sample`](Self::fit_sample):
    /// every row, or the `fit_rows` sample), as `bsa train` and Python's `train` report it.
    pub fn fit_reconstruction(
        &self,
        dictionary: &Params<f32>,
        x: ArrayView2<f32>,
        stop: &AtomicBool,
    ) -> Result<f64> {
        match self.fit_sample(x.nrows()) {
            Some(rows) => {
                let fit = x.select(Axis(0), &rows);
                reconstruction_loss(dictionary, self.k, fit.view(), stop)
            }
            None => reconstruction_loss(dictionary, self.k, x, stop),
        }
    }

    /// [`fit_sample`](Self::fit_sample) drawn from `rng` (the fit's own, seeded, first draw).
    fn sample_rows(&self, rng: &mut Xoshiro256PlusPlus, n: usize) -> Option<Vec<usize>> {
        let m = self.fit_rows.filter(|&m| m < n)?;
        let mut rows = sample(rng, n, m).into_vec();
        rows.sort_unstable();
        Some(rows)
    }
}

/// Mean cosine distance of the rows of `x` to their reconstructions by a pursuit model's
/// `params` with `k` atoms, the rows encoded afresh as the finished model encodes them: what
/// `bsa eval` reports for the model on `x` (up to the last bits: the products here are BLAS's).
/// A round's [`RoundStats::reconstruction_loss`] is not that figure: it decodes the codes the
/// round refitted its dictionary to, and the refitted dictionary encodes the rows differently
/// (on the bench-data sample, the retrieval preset's last round said 0.049 and the model
/// reconstructs its training rows at 0.067). [`Error::Stopped`] once `stop` is set.
///
/// ```
/// use bsa::pursuit::{PursuitParams, reconstruction_loss};
/// use std::sync::atomic::AtomicBool;
/// let x = ndarray::Array2::from_shape_fn((200, 8), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
/// let params = PursuitParams::new(32, 3);
/// let (dictionary, _) = params.fit(x.view(), &mut |_| {}).unwrap();
/// let loss = reconstruction_loss(&dictionary, 3, x.view(), &AtomicBool::new(false)).unwrap();
/// assert!((0.0..1.0).contains(&loss));
/// ```
pub fn reconstruction_loss(
    params: &Params<f32>,
    k: usize,
    x: ArrayView2<f32>,
    stop: &AtomicBool,
) -> Result<f64> {
    let mut sum = 0.0;
    for chunk in x.axis_chunks_iter(Axis(0), DECODE_CHUNK) {
        let codes = encode_with(params, k, chunk, false, stop).ok_or(Error::Stopped)?;
        sum += decoded_distance(params, &codes, chunk) * chunk.nrows() as f64;
    }
    Ok(crate::loss::not_below_zero(sum / x.nrows().max(1) as f64))
}

/// Rows decoded at once by [`decoded_distance`] and [`reconstruction_loss`]: bounds the
/// decoded vectors held (a whole fit's were n x dim f32 more, 460 MB at 300k 384-d rows).
const DECODE_CHUNK: usize = 1 << 14;

/// Mean cosine distance of the rows of `x` to their `codes` decoded by `params`, chunk by chunk.
fn decoded_distance(params: &Params<f32>, codes: &[Vec<u32>], x: ArrayView2<f32>) -> f64 {
    let mut sum = 0.0;
    for (rows, codes) in x
        .axis_chunks_iter(Axis(0), DECODE_CHUNK)
        .zip(codes.chunks(DECODE_CHUNK))
    {
        let xhat = params.decode_sparse(codes);
        sum +=
            distance_rows(LossKind::Cosine, xhat.view(), rows, None) as f64 * rows.nrows() as f64;
    }
    crate::loss::not_below_zero(sum / x.nrows().max(1) as f64)
}

/// Progress of one round of [`PursuitParams::fit`].
#[derive(Debug, Clone, Serialize)]
pub struct RoundStats {
    /// One-based round number.
    pub round: usize,
    /// Mean cosine distance of the fit rows to their reconstructions after the refit: the
    /// round's codes decoded by the refitted dictionary (the finished model's own figure is
    /// [`reconstruction_loss`]'s).
    pub reconstruction_loss: f64,
    /// Atoms no code used, re-seeded for the next round.
    pub dead_atoms_reseeded: usize,
    /// Time spent encoding.
    pub encode_seconds: f64,
    /// Time of the whole round.
    pub seconds: f64,
}

/// Ridge least squares `min |X - C Wd^T - 1 bd^T|^2 + lambda |Wd|^2` for binary `C` given as
/// set-bit lists. Normal equations on `[C 1]`, accumulated sparsely (K^2 entries per row) in
/// f64 and solved by Cholesky. The bias is not penalised.
pub fn refit(
    x: ArrayView2<f32>,
    codes: &[Vec<u32>],
    bits: usize,
    ridge: f64,
) -> Result<(Array2<f32>, Array1<f32>)> {
    let (n, dim) = x.dim();
    let m = bits + 1; // the bias column
    let mut gram = Array2::<f64>::zeros((m, m));
    for code in codes {
        for (a, &i) in code.iter().enumerate() {
            let i = i as usize;
            for &j in &code[a..] {
                gram[[i, j as usize]] += 1.0;
            }
            gram[[i, bits]] += 1.0;
        }
    }
    gram[[bits, bits]] = n as f64;
    // Mirror the upper triangle (pairs were added with i <= j since codes are ascending).
    for i in 0..m {
        for j in 0..i {
            gram[[i, j]] = gram[[j, i]];
        }
    }
    let mean_diag = (0..bits).map(|j| gram[[j, j]]).sum::<f64>() / bits as f64;
    let lambda = ridge * mean_diag.max(1.0);
    for j in 0..bits {
        gram[[j, j]] += lambda;
    }

    // Right-hand side [C 1]^T X: row j sums the rows of X whose code has bit j.
    let mut rows_of_bit: Vec<Vec<u32>> = vec![Vec::new(); bits];
    for (i, code) in codes.iter().enumerate() {
        for &j in code {
            rows_of_bit[j as usize].push(i as u32);
        }
    }
    let mut rhs = Array2::<f64>::zeros((m, dim));
    Zip::from(rhs.slice_mut(s![..bits, ..]).axis_iter_mut(Axis(0)))
        .and(&rows_of_bit)
        .par_for_each(|mut out, rows| {
            for &i in rows {
                Zip::from(&mut out)
                    .and(x.row(i as usize))
                    .for_each(|o, &v| *o += v as f64);
            }
        });
    // Row after row from zero: the order of ndarray's sum_axis over rows, which this replaced
    // (it summed an n x dim f64 copy of the rows, 879 MB at 300k 384-d rows).
    let mut col_sums = Array1::<f64>::zeros(dim);
    for row in x.rows() {
        Zip::from(&mut col_sums)
            .and(&row)
            .for_each(|c, &v| *c += f64::from(v));
    }
    rhs.row_mut(bits).assign(&col_sums);

    // In place: the Gram matrix is (N + 1)^2 f64, 134 MB at N = 4096, and is not needed again.
    let l = gram.cholesky_into(UPLO::Lower).map_err(|e| {
        Error::Diverged(format!(
            "decoder refit: Cholesky failed ({e}); raise --ridge"
        ))
    })?;
    let y = l
        .solve_triangular(UPLO::Lower, Diag::NonUnit, &rhs)
        .map_err(|e| Error::Diverged(format!("decoder refit: solve failed ({e})")))?;
    // L^T as a view of L's memory, which it reads column-major: `to_owned` kept that order in
    // its copy (it keeps a contiguous view's), so LAPACK gets the same call without 134 MB.
    let w = l
        .t()
        .solve_triangular(UPLO::Upper, Diag::NonUnit, &y)
        .map_err(|e| Error::Diverged(format!("decoder refit: solve failed ({e})")))?;
    let wd_t = w.slice(s![..bits, ..]).mapv(|v| v as f32);
    let bd = w.row(bits).mapv(|v| v as f32);
    Ok((wd_t, bd))
}

/// Gives every atom no code uses the residual `x_i - xhat_i` of a random row (each a different
/// row), so the next round can use it. Returns how many atoms were re-seeded.
fn reseed_dead_atoms(
    params: &mut Params<f32>,
    codes: &[Vec<u32>],
    x: ArrayView2<f32>,
    rng: &mut Xoshiro256PlusPlus,
) -> usize {
    let mut used = vec![false; params.bits()];
    for code in codes {
        for &j in code {
            used[j as usize] = true;
        }
    }
    let dead: Vec<usize> = (0..used.len()).filter(|&j| !used[j]).collect();
    if dead.is_empty() {
        return 0;
    }
    let picks = sample(rng, x.nrows(), dead.len().min(x.nrows())).into_vec();
    for (&j, &i) in dead.iter().zip(&picks) {
        // Row i decoded alone: its atoms are all used ones, which this loop does not change.
        let xhat = params.decode_sparse(std::slice::from_ref(&codes[i]));
        let residual = &x.row(i) - &xhat.row(0);
        params.wd_t.row_mut(j).assign(&residual);
    }
    let fresh = dictionary_params(params.wd_t.clone(), params.bd.clone());
    *params = fresh;
    dead.len()
}

/// Scales every atom (row of `wd_t`) to norm `scale`, keeping its direction; a zero atom (a
/// dead bit of a warm start) gets a random direction. An atom whose `f32` squares overflow or
/// vanish (a warm start's weights near `f32::MAX`, or all below about 1e-22) is measured in
/// `f64`: its `f32` norm, infinite or zero, made it zero or random before, losing the
/// direction without a word.
fn scale_atoms(wd_t: &mut Array2<f32>, scale: f32, rng: &mut Xoshiro256PlusPlus) {
    let dim = wd_t.ncols();
    for mut atom in wd_t.rows_mut() {
        let norm = atom.dot(&atom).sqrt();
        let wide = || {
            atom.iter()
                .map(|&v| f64::from(v).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        if norm.is_normal() {
            atom *= scale / norm;
        } else if let Some(wide) = Some(wide()).filter(|&w| w > 0.0) {
            let by = f64::from(scale) / wide;
            atom.mapv_inplace(|v| (f64::from(v) * by) as f32);
        } else {
            atom.assign(&Array1::from_shape_simple_fn(dim, || {
                rng.sample::<f32, _>(StandardNormal)
            }));
            let norm = atom.dot(&atom).sqrt().max(f32::MIN_POSITIVE);
            atom *= scale / norm;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_and_tiny_warm_start_atoms_keep_their_direction() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut w = ndarray::array![
            [3e38f32, -3e38, 0.0],
            [3.0, 4.0, 0.0],
            [0.0, 0.0, 0.0],
            [0.0, 1e-30, -1e-30]
        ];
        scale_atoms(&mut w, 2.0, &mut rng);
        let r = 2f32.sqrt();
        let (huge, tiny) = (w.row(0), w.row(3));
        for (got, want) in huge.iter().chain(tiny).zip([r, -r, 0.0, 0.0, r, -r]) {
            assert!((got - want).abs() < 1e-6, "{w}");
        }
        assert_eq!(w.row(1).to_vec(), [1.2, 1.6, 0.0]);
        assert!((w.row(2).dot(&w.row(2)).sqrt() - 2.0).abs() < 1e-5, "{w}");
    }
    use ndarray::ArrayView1;

    fn gaussian(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        Array2::from_shape_simple_fn((rows, cols), || rng.sample(StandardNormal))
    }

    /// The slow, obvious greedy pursuit: recompute |r - a_j|^2 for every candidate.
    fn brute_greedy(x: ArrayView1<f32>, p: &Params<f32>, k: usize) -> Vec<u32> {
        let mut r = &x - &p.bd;
        let mut chosen = Vec::new();
        for _ in 0..k {
            let mut best = (f32::INFINITY, 0usize);
            for j in 0..p.bits() {
                if chosen.contains(&(j as u32)) {
                    continue;
                }
                let d = &r - &p.wd_t.row(j);
                let e = d.dot(&d);
                if e < best.0 {
                    best = (e, j);
                }
            }
            chosen.push(best.1 as u32);
            r = &r - &p.wd_t.row(best.1);
        }
        chosen.sort_unstable();
        chosen
    }

    #[test]
    fn gram_updates_pick_the_same_atoms_as_recomputing_the_residual() {
        let x = gaussian(20, 8, 1);
        let p = dictionary_params(
            gaussian(30, 8, 2) * 0.5,
            gaussian(1, 8, 3).row(0).to_owned(),
        );
        let fast = encode(&p, 5, x.view());
        for (i, code) in fast.iter().enumerate() {
            assert_eq!(code, &brute_greedy(x.row(i), &p, 5), "row {i}");
        }
    }

    #[test]
    fn refit_is_the_least_squares_solution() {
        // Codes with a known exact decoder: x = bd + sum of atoms, no noise.
        let truth = gaussian(6, 4, 5);
        let bd = Array1::from(vec![0.5f32, -1.0, 0.25, 2.0]);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        let codes: Vec<Vec<u32>> = (0..200)
            .map(|_| {
                let mut c = sample(&mut rng, 6, 2).into_vec();
                c.sort_unstable();
                c.into_iter().map(|j| j as u32).collect()
            })
            .collect();
        let p_true = dictionary_params(truth.clone(), bd.clone());
        let x = p_true.decode_sparse(&codes);
        let (wd_t, bd_fit) = refit(x.view(), &codes, 6, 1e-9).unwrap();
        // With exactly K atoms per code, adding d to every atom and -K d to the bias changes
        // nothing, so only the reconstruction is identifiable: it must be exact.
        let xhat = dictionary_params(wd_t, bd_fit).decode_sparse(&codes);
        assert!((&xhat - &x).iter().all(|d| d.abs() < 1e-3));
    }

    /// Rows a dictionary reconstructs exactly are at distance 0, not at the -1e-8 of
    /// rounding that `bsa train` printed as "-0.0000".
    #[test]
    fn an_exact_reconstruction_is_at_distance_zero() {
        let p = dictionary_params(gaussian(6, 64, 5), Array1::zeros(64));
        let codes: Vec<Vec<u32>> = (0..6u32).map(|j| vec![j]).collect();
        let x = p.decode_sparse(&codes);
        let stop = AtomicBool::new(false);
        let loss = reconstruction_loss(&p, 1, x.view(), &stop).unwrap();
        assert!((0.0..1e-6).contains(&loss), "{loss}");
    }

    #[test]
    fn rounds_lower_the_error_and_leave_no_dead_atom() {
        let x = gaussian(600, 16, 7);
        let mut p = PursuitParams::new(48, 4);
        p.rounds = 4;
        let mut losses = Vec::new();
        let (params, history) = p
            .fit(x.view(), &mut |s| losses.push(s.reconstruction_loss))
            .unwrap();
        assert_eq!(history.len(), 4);
        assert!(losses[3] < losses[0], "{losses:?}");
        let codes = encode(&params, 4, x.view());
        assert!(codes.iter().all(|c| c.len() == 4));
        let mut used = [false; 48];
        codes
            .iter()
            .flatten()
            .for_each(|&j| used[j as usize] = true);
        assert!(
            used.iter().filter(|&&u| !u).count() <= 2,
            "too many dead atoms"
        );
    }

    /// A stop asked for during a round ends the fit there, with `Error::Stopped` (the
    /// gradient trainer's is tested in tests/train.rs).
    #[test]
    fn a_set_stop_flag_ends_the_fit() {
        let x = gaussian(600, 16, 7);
        let mut p = PursuitParams::new(48, 4);
        p.rounds = 5;
        let stop = AtomicBool::new(false);
        let mut rounds = 0;
        let result = p.fit_until(
            x.view(),
            None,
            &mut |_| {
                rounds += 1;
                if rounds == 2 {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            },
            &stop,
        );
        assert!(matches!(result, Err(Error::Stopped)), "{result:?}");
        assert_eq!(rounds, 2);
    }

    /// Atoms re-seeded after a round are the encoder's too: a dictionary's encoder is
    /// `We = Wd^T`, `be = -Wd^T bd` ([`dictionary_params`]), and the next round's pursuit (and
    /// the fitted model) reads `We` and `be`. A re-seed that changed `Wd` alone would score the
    /// new atoms by the dead ones' directions.
    #[test]
    fn reseeded_atoms_are_the_encoders_too() {
        // 12 rows of one atom each over 48 atoms: most atoms are dead after every round.
        let x = gaussian(12, 16, 3);
        let mut p = PursuitParams::new(48, 1);
        p.rounds = 2;
        let (params, history) = p.fit(x.view(), &mut |_| {}).unwrap();
        assert!(history.iter().all(|s| s.dead_atoms_reseeded > 0));
        let want = dictionary_params(params.wd_t.clone(), params.bd.clone());
        assert_eq!(params.we, want.we);
        assert_eq!(params.be, want.be);
    }
}
