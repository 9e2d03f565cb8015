//! The baselines BSA is compared with, fitted without gradient descent and saved as ordinary
//! [`Autoencoder`] model files, so that `bsa encode`, `bsa eval`, `bsa build` and `bsa search` use
//! them unchanged. All three encode exactly like BSA: bit j is set when `H_j > 0`, with
//! `H = X We^T + be` (`shared/method.md`, "Baselines"):
//!
//! - **sign** ([`Method::Sign`]): bit j = `x_j > 0`. `N = D`, `We` = identity, `be` = 0.
//! - **lsh** ([`Method::Lsh`]): bit j = `r_j . x > 0` with `r_j ~ N(0, I)` (SimHash), seeded.
//! - **itq** ([`Method::Itq`]): iterative quantization (Gong and Lazebnik 2011). Centre by the
//!   mean, project onto the top `c = N` principal components (`P`, `D x c`), then learn an
//!   orthogonal rotation `R` (`c x c`) by alternating `B = sign(V R)` and the orthogonal
//!   Procrustes solution for `R` ([`procrustes`]), which never increases the quantization loss
//!   `|B - V R|_F^2`. The encoder is `H = (x - mean) P R`, that is `We = (P R)^T` and
//!   `be = -mean^T P R`. Needs `N <= D`.
//!
//! None of them has a decoder of its own. [`fit_ridge_decoder`] fits one in closed form, the
//! ridge least-squares `Xhat = C Wd^T + bd` from the 0/1 codes (bias not penalised), so that the
//! baselines get meaningful reconstruction metrics in `bsa eval` and a decoder for asymmetric
//! (decoder-ADC) scoring.
//!
//! **Fit sample.** ITQ's PCA and rotation and the ridge decoder are fitted on a seeded random
//! subsample of at most [`BaselineParams::fit_rows`] rows (default [`DEFAULT_FIT_ROWS`] = 20,000),
//! as in the ITQ paper: the decoder's `N x N` Gram matrix costs `2 m N^2` flops on `m` rows (0.2
//! TFLOP for 100k rows and N = 1024), and neither PCA nor a rotation of `N <= D` dimensions gains
//! from more rows. Encoding then uses every row. Sign and LSH encoders do not look at the data.
//!
//! **K.** These methods have no target number of active bits (about half the bits are set). The
//! model file still records a `k`, used only by `bsa eval`'s Fixed-TopK metric: by default
//! `bits / 2` ([`BaselineParams::default_k`]).
//!
//! ```
//! use bsa::baselines::BaselineParams;
//! use bsa::model::Method;
//! let x = ndarray::Array2::from_shape_fn((300, 16), |(i, j)| ((i * 31 + j * 17) % 23) as f32 / 23.0 - 0.5);
//! let (model, report) = BaselineParams::new(Method::Itq, 8).fit(x.view()).unwrap();
//! assert_eq!(model.config.bits, 8);
//! assert_eq!(model.encode_packed(x.view()).len(), 300); // one byte per row
//! assert!(report.quantization_loss.len() == 50);
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ndarray::{Array1, Array2, ArrayView2, Axis, CowArray, Ix2, s};
use ndarray_linalg::{Cholesky, Diag, Eigh, QR, SVD, SolveTriangular, UPLO};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::loss::distance_rows;
use crate::model::{Autoencoder, LossKind, Method, ModelConfig, Params, Target};

/// Default maximum number of rows the data-dependent fits (ITQ, the ridge decoder) look at.
pub const DEFAULT_FIT_ROWS: usize = 20_000;
/// Default number of ITQ rounds (the ITQ paper's 50).
pub const DEFAULT_ITQ_ITERATIONS: usize = 50;
/// The most ITQ rounds a fit accepts: ITQ settles within a few hundred, and a count past any
/// that could finish is a mistyped argument, refused before the fit starts.
pub const MAX_ITQ_ITERATIONS: usize = 100_000;
/// Rows per chunk when accumulating the decoder's normal equations.
const CHUNK: usize = 4096;

/// Settings of a baseline fit. Build with [`BaselineParams::new`], adjust the public fields, then
/// [`fit`](BaselineParams::fit).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineParams {
    /// [`Method::Sign`], [`Method::Lsh`] or [`Method::Itq`].
    pub method: Method,
    /// Code length N (for sign it must equal the input dimension D).
    pub bits: usize,
    /// The `k` recorded in the model file (only used by the Fixed-TopK metric).
    pub k: usize,
    /// Seed of the LSH projections, the ITQ initial rotation and the fit subsample.
    pub seed: u64,
    /// At most this many rows (a seeded random subsample) are used for ITQ and the decoder.
    pub fit_rows: usize,
    /// ITQ rounds (`B = sign(V R)`, then Procrustes for `R`); 0 keeps the random rotation.
    pub itq_iterations: usize,
}

/// What a baseline fit did, for the training summary.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    /// Rows of the data.
    pub rows: usize,
    /// Rows of the subsample the data-dependent fits used.
    pub fit_rows: usize,
    /// Seconds spent on the encoder (PCA and rotation for ITQ).
    pub encoder_seconds: f64,
    /// Seconds spent on the ridge decoder.
    pub decoder_seconds: f64,
    /// Wall-clock seconds of the whole fit.
    pub seconds: f64,
    /// `rows / seconds`.
    pub samples_per_sec: f64,
    /// Mean cosine distance between the fit rows and their reconstructions.
    pub reconstruction: f64,
    /// Mean squared error of the same reconstructions (mean over rows and dimensions).
    pub reconstruction_mse: f64,
    /// Mean number of set bits per code on the fit rows.
    pub active_mean: f64,
    /// ITQ only: the quantization loss `|B - V R|_F^2 / rows` after each round (non-increasing).
    pub quantization_loss: Vec<f64>,
}

impl BaselineParams {
    /// `method` with `bits` bits, `k` = [`BaselineParams::default_k`], seed 0, the default fit
    /// sample and ITQ rounds.
    pub fn new(method: Method, bits: usize) -> Self {
        BaselineParams {
            method,
            bits,
            k: Self::default_k(bits),
            seed: 0,
            fit_rows: DEFAULT_FIT_ROWS,
            itq_iterations: DEFAULT_ITQ_ITERATIONS,
        }
    }

    /// The `k` stored when none is given: `bits / 2` (at least 1), about the number of bits a
    /// sign-of-projection code sets.
    pub fn default_k(bits: usize) -> usize {
        (bits / 2).max(1)
    }

    fn config(&self, dim: usize) -> ModelConfig {
        ModelConfig {
            dim,
            bits: self.bits,
            k: self.k,
            method: self.method,
            loss: LossKind::Cosine,
            alpha: 0.0,
            target: Target::Khot,
        }
    }

    /// Checks the settings against data of dimension `dim`.
    pub fn validate(&self, dim: usize) -> Result<()> {
        if !self.method.is_baseline() {
            return Err(Error::InvalidArgument(format!(
                "method {} is trained by gradient descent, not fitted as a baseline; use \
                 bsa::train::TrainParams",
                self.method
            )));
        }
        self.config(dim).validate()?;
        match self.method {
            Method::Sign if self.bits != dim => {
                return Err(Error::InvalidArgument(format!(
                    "--method sign makes one bit per input dimension, so --bits must be {dim} \
                     (or left out), got {}",
                    self.bits
                )));
            }
            Method::Itq if self.bits > dim => {
                return Err(Error::InvalidArgument(format!(
                    "--method itq projects onto the top --bits principal components, so --bits \
                     must be at most the input dimension {dim}, got {}; use --method lsh for \
                     longer codes",
                    self.bits
                )));
            }
            _ => {}
        }
        if self.method == Method::Itq && self.itq_iterations > MAX_ITQ_ITERATIONS {
            return Err(Error::InvalidArgument(format!(
                "--itq-iterations must be at most {MAX_ITQ_ITERATIONS} (ITQ settles within a few \
                 hundred rounds), got {}",
                self.itq_iterations
            )));
        }
        if self.fit_rows < 2 {
            // As the data: a fit on one row has no spread to fit.
            return Err(Error::InvalidArgument(format!(
                "--fit-rows must be at least 2, got {}",
                self.fit_rows
            )));
        }
        // Encoder and decoder (bits x dim f32 each), the decoder's Gram matrix ((bits + 1)^2
        // f64), and ITQ's covariance and eigenvectors (dim x dim f64 each).
        let (b, d) = (self.bits as u128, dim as u128);
        let itq = if self.method == Method::Itq {
            2 * d * d * 8
        } else {
            0
        };
        crate::config::check_memory(
            2 * b * d * 4 + (b + 1) * (b + 1) * 8 + itq,
            &format!(
                "the {} fit of {} bits on {dim}-d data",
                self.method, self.bits
            ),
        )?;
        Ok(())
    }

    /// Fits the baseline on the rows of `x` (`n x D`): the encoder, then the ridge decoder on
    /// the codes of the fit subsample.
    pub fn fit(&self, x: ArrayView2<f32>) -> Result<(Autoencoder, BaselineReport)> {
        self.fit_until(x, &AtomicBool::new(false))
    }

    /// [`fit`](Self::fit) that returns [`Error::Stopped`] once `stop` is set (from another
    /// thread: e.g. Python's Ctrl-C), at ITQ's next round (the other steps are single solves).
    pub fn fit_until(
        &self,
        x: ArrayView2<f32>,
        stop: &AtomicBool,
    ) -> Result<(Autoencoder, BaselineReport)> {
        let (n, dim) = x.dim();
        self.validate(dim)?;
        if n < 2 {
            // As training refuses them: one row fits a decoder that maps every code to it.
            return Err(Error::InvalidArgument(format!(
                "need at least 2 training rows, got {n}"
            )));
        }
        let start = Instant::now();
        let sample = subsample(x, self.fit_rows, self.seed);
        let mut quantization_loss = Vec::new();
        let (we, be) = match self.method {
            Method::Sign => (Array2::eye(dim), Array1::zeros(dim)),
            Method::Lsh => (
                lsh_weights(self.bits, dim, self.seed),
                Array1::zeros(self.bits),
            ),
            Method::Itq => {
                let itq = Itq::fit_until(
                    sample.view(),
                    self.bits,
                    self.itq_iterations,
                    self.seed,
                    stop,
                )?;
                quantization_loss.clone_from(&itq.quantization_loss);
                itq.encoder()
            }
            Method::Bsa | Method::Topk | Method::Pursuit => unreachable!("checked by validate"),
        };
        let encoder_seconds = start.elapsed().as_secs_f64();
        let mut model = Autoencoder {
            config: self.config(dim),
            params: Params {
                we,
                be,
                wd_t: Array2::zeros((self.bits, dim)),
                bd: Array1::zeros(dim),
            },
        };
        let active = model.encode_active(sample.view());
        let (wd_t, bd) = fit_ridge_decoder(sample.view(), &active, self.bits)?;
        model.params.wd_t = wd_t;
        model.params.bd = bd;
        let decoder_seconds = start.elapsed().as_secs_f64() - encoder_seconds;

        let (mut rec, mut mse) = (0.0, 0.0);
        for (rows, codes) in sample
            .axis_chunks_iter(Axis(0), CHUNK)
            .zip(active.chunks(CHUNK))
        {
            let xhat = model
                .params
                .decode_dense(dense_codes(codes, self.bits).view());
            let w = rows.nrows() as f64;
            rec += w * distance_rows(LossKind::Cosine, xhat.view(), rows, None) as f64;
            mse += w * distance_rows(LossKind::Mse, xhat.view(), rows, None) as f64;
        }
        let m = sample.nrows() as f64;
        let active_mean = active.iter().map(|a| a.len() as f64).sum::<f64>() / m;
        let seconds = start.elapsed().as_secs_f64();
        let report = BaselineReport {
            rows: n,
            fit_rows: sample.nrows(),
            encoder_seconds,
            decoder_seconds,
            seconds,
            samples_per_sec: n as f64 / seconds.max(1e-9),
            reconstruction: rec / m,
            reconstruction_mse: mse / m,
            active_mean,
            quantization_loss,
        };
        Ok((model, report))
    }
}

/// At most `max_rows` rows of `x`: all of them, or a seeded random subset in ascending order.
fn subsample(x: ArrayView2<'_, f32>, max_rows: usize, seed: u64) -> CowArray<'_, f32, Ix2> {
    let n = x.nrows();
    if n <= max_rows {
        return CowArray::from(x);
    }
    // A stream of its own, so the subsample does not shift the LSH or ITQ random numbers.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5eed_5a3b_1e00_0001);
    let mut idx = rand::seq::index::sample(&mut rng, n, max_rows).into_vec();
    idx.sort_unstable();
    CowArray::from(x.select(Axis(0), &idx))
}

/// LSH (SimHash) projections: `bits x dim` independent standard normal entries from `seed`.
pub fn lsh_weights(bits: usize, dim: usize, seed: u64) -> Array2<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    Array2::from_shape_simple_fn((bits, dim), || rng.sample::<f32, _>(StandardNormal))
}

/// A fitted ITQ encoder: `H = (x - mean) P R`.
#[derive(Debug, Clone)]
pub struct Itq {
    /// Mean of the fit rows, length D.
    pub mean: Array1<f64>,
    /// PCA projection `P`, `D x c`: the top `c` eigenvectors of the covariance, by decreasing
    /// eigenvalue, as columns.
    pub projection: Array2<f64>,
    /// The learned orthogonal rotation `R`, `c x c`.
    pub rotation: Array2<f64>,
    /// Quantization loss `|B - V R|_F^2 / rows` after each round.
    pub quantization_loss: Vec<f64>,
}

impl Itq {
    /// Fits ITQ with `bits = c <= D` dimensions on the rows of `x`, with `iterations` rounds from
    /// a random rotation drawn from `seed`. Computed in `f64`.
    pub fn fit(x: ArrayView2<f32>, bits: usize, iterations: usize, seed: u64) -> Result<Itq> {
        Itq::fit_until(x, bits, iterations, seed, &AtomicBool::new(false))
    }

    /// [`fit`](Self::fit) that returns [`Error::Stopped`] at the next round once `stop` is set
    /// (from another thread: e.g. Python's Ctrl-C).
    pub fn fit_until(
        x: ArrayView2<f32>,
        bits: usize,
        iterations: usize,
        seed: u64,
        stop: &AtomicBool,
    ) -> Result<Itq> {
        let (m, dim) = x.dim();
        if bits == 0 || bits > dim || m == 0 {
            return Err(Error::InvalidArgument(format!(
                "ITQ needs 1 <= bits <= dim and some rows; got bits {bits}, dim {dim}, {m} rows"
            )));
        }
        let mut xc = x.mapv(f64::from);
        let mean = xc.mean_axis(Axis(0)).expect("at least one row");
        xc -= &mean;
        let cov = xc.t().dot(&xc) / m as f64;
        let (_eigenvalues, vectors) = cov.eigh(UPLO::Lower).map_err(linalg("PCA (eigh)"))?;
        // LAPACK returns eigenvalues in ascending order: the last `bits` columns, reversed.
        let projection = vectors
            .slice(s![.., ..;-1])
            .slice(s![.., ..bits])
            .to_owned();
        let v = xc.dot(&projection);
        drop(xc);
        let v_norm2: f64 = v.iter().map(|e| e * e).sum();

        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut rotation = random_rotation(bits, &mut rng)?;
        // Not sized by `iterations`: the loop may be stopped long before it ends.
        let mut quantization_loss = Vec::new();
        for _ in 0..iterations {
            if stop.load(Ordering::Relaxed) {
                return Err(Error::Stopped);
            }
            let b = v.dot(&rotation).mapv(|h| if h > 0.0 { 1.0 } else { -1.0 });
            let cross = v.t().dot(&b);
            rotation = procrustes_from_cross(cross.view())?;
            quantization_loss.push(loss_from_cross(cross.view(), rotation.view(), v_norm2, m));
        }
        Ok(Itq {
            mean,
            projection,
            rotation,
            quantization_loss,
        })
    }

    /// The encoder as model weights: `We = (P R)^T` (`c x D`) and `be = -mean^T P R`.
    pub fn encoder(&self) -> (Array2<f32>, Array1<f32>) {
        let pr = self.projection.dot(&self.rotation);
        let be = -self.mean.dot(&pr);
        (pr.t().mapv(|v| v as f32), be.mapv(|v| v as f32))
    }
}

/// `|B - V R|_F^2 / rows` for `B` of +-1 entries and orthogonal `R`, from `V^T B` (`c x c`):
/// `|B|^2 + |V R|^2 - 2 tr(B^T V R) = rows c + |V|^2 - 2 sum((V^T B) * R)`. Saves ITQ a third
/// product of the size of `V` per round.
fn loss_from_cross(cross: ArrayView2<f64>, r: ArrayView2<f64>, v_norm2: f64, rows: usize) -> f64 {
    let c = cross.nrows();
    let tr: f64 = cross.iter().zip(r.iter()).map(|(a, b)| a * b).sum();
    ((rows * c) as f64 + v_norm2 - 2.0 * tr) / rows.max(1) as f64
}

/// The orthogonal Procrustes solution: the orthogonal `R` (`c x c`) minimising `|B - V R|_F`
/// for `V` and `B` of shape `rows x c`. With the SVD `V^T B = U S W^T`, `R = U W^T` (it
/// maximises `tr(B^T V R)`; equivalently, with `B^T V = W S U^T`, `R = U W^T`).
pub fn procrustes(v: ArrayView2<f64>, b: ArrayView2<f64>) -> Result<Array2<f64>> {
    procrustes_from_cross(v.t().dot(&b).view())
}

/// [`procrustes`] given `V^T B`.
fn procrustes_from_cross(cross: ArrayView2<f64>) -> Result<Array2<f64>> {
    let (u, _s, vt) = cross.svd(true, true).map_err(linalg("Procrustes (SVD)"))?;
    let (u, vt) = (u.expect("asked for U"), vt.expect("asked for V^T"));
    Ok(u.dot(&vt))
}

/// A random `c x c` rotation, uniformly (Haar) distributed: the `Q` of the QR decomposition of a
/// Gaussian matrix, with column signs fixed so that `R`'s diagonal is positive.
pub fn random_rotation(c: usize, rng: &mut impl Rng) -> Result<Array2<f64>> {
    let g = Array2::from_shape_simple_fn((c, c), || rng.sample::<f64, _>(StandardNormal));
    let (mut q, r) = g.qr().map_err(linalg("random rotation (QR)"))?;
    for (j, mut col) in q.axis_iter_mut(Axis(1)).enumerate() {
        if r[[j, j]] < 0.0 {
            col.mapv_inplace(|v| -v);
        }
    }
    Ok(q)
}

/// Dense `rows x bits` 0/1 matrix of codes given as lists of set bits.
fn dense_codes(active: &[Vec<u32>], bits: usize) -> Array2<f32> {
    let mut c = Array2::zeros((active.len(), bits));
    for (mut row, set) in c.rows_mut().into_iter().zip(active) {
        for &j in set {
            row[j as usize] = 1.0;
        }
    }
    c
}

/// Fits a decoder to binary codes in closed form: ridge least squares `Xhat = C Wd^T + bd` over
/// the rows of `x` and their codes `active` (lists of set bits out of `bits`), with the bias not
/// penalised. Returns `(Wd^T, bd)` (`bits x D`, `D`), as [`Params`] stores them.
///
/// With `Cc`, `Xc` the centred codes and data, `Wd^T = (Cc^T Cc + lambda I)^-1 Cc^T Xc` and
/// `bd = mean(x) - mean(c) Wd^T`, where `lambda = 1e-3 trace(Cc^T Cc) / bits` (1 if every bit is
/// constant): a small ridge that keeps bits that never (or always) fire, or duplicate bits,
/// solvable; such bits get a zero decoder row. Normal equations accumulated in chunks
/// (`C^T C` of 0/1 codes is exact in `f32`), solved in `f64` by Cholesky. Costs about
/// `2 rows bits^2` flops.
pub fn fit_ridge_decoder(
    x: ArrayView2<f32>,
    active: &[Vec<u32>],
    bits: usize,
) -> Result<(Array2<f32>, Array1<f32>)> {
    let (m, dim) = x.dim();
    if active.len() != m {
        return Err(Error::DimMismatch {
            what: "codes for the decoder fit".into(),
            expected: m,
            got: active.len(),
        });
    }
    if m == 0 {
        return Err(Error::InvalidArgument("no rows to fit a decoder on".into()));
    }
    let mut gram = Array2::<f64>::zeros((bits, bits));
    let mut cross = Array2::<f64>::zeros((bits, dim));
    let mut c_sum = Array1::<f64>::zeros(bits);
    let mut x_sum = Array1::<f64>::zeros(dim);
    for (rows, codes) in x.axis_chunks_iter(Axis(0), CHUNK).zip(active.chunks(CHUNK)) {
        let c = dense_codes(codes, bits);
        gram += &c.t().dot(&c).mapv(f64::from);
        cross += &c.t().dot(&rows).mapv(f64::from);
        c_sum += &c.sum_axis(Axis(0)).mapv(f64::from);
        x_sum += &rows.mapv(f64::from).sum_axis(Axis(0));
    }
    let mf = m as f64;
    let c_mean = c_sum / mf;
    let x_mean = x_sum / mf;
    // Centre: Cc^T Cc = C^T C - m mc mc^T, Cc^T Xc = C^T X - m mc mx^T.
    let outer = |a: &Array1<f64>, b: &Array1<f64>| {
        a.view()
            .insert_axis(Axis(1))
            .dot(&b.view().insert_axis(Axis(0)))
    };
    gram -= &(outer(&c_mean, &c_mean) * mf);
    cross -= &(outer(&c_mean, &x_mean) * mf);
    let trace: f64 = gram.diag().sum();
    let lambda = if trace > 0.0 {
        1e-3 * trace / bits as f64
    } else {
        1.0
    };
    gram.diag_mut().mapv_inplace(|v| v + lambda);
    let l = gram
        .cholesky(UPLO::Lower)
        .map_err(linalg("decoder fit (Cholesky)"))?;
    let y = l
        .solve_triangular(UPLO::Lower, Diag::NonUnit, &cross)
        .map_err(linalg("decoder fit (triangular solve)"))?;
    let w = l
        .t()
        .solve_triangular(UPLO::Upper, Diag::NonUnit, &y)
        .map_err(linalg("decoder fit (triangular solve)"))?;
    let bd = &x_mean - &c_mean.dot(&w);
    if !(w.iter().all(|v| v.is_finite()) && bd.iter().all(|v| v.is_finite())) {
        return Err(Error::Linalg(
            "decoder fit gave non-finite weights".to_string(),
        ));
    }
    Ok((w.mapv(|v| v as f32), bd.mapv(|v| v as f32)))
}

fn linalg(what: &'static str) -> impl Fn(ndarray_linalg::error::LinalgError) -> Error {
    move |e| Error::Linalg(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Method;

    /// Fits whose arrays cannot be allocated (data a million times too wide) are refused by
    /// their validation, with the memory they would need, instead of aborting the process at
    /// the allocation; usual sizes pass.
    #[test]
    fn absurd_sizes_are_refused_before_allocating() {
        use crate::train::TrainParams;
        // 2^40 columns: hundreds of terabytes of weights on any machine.
        let huge = 1usize << 40;
        let e = TrainParams::new(1024, 32).validate(10, huge).unwrap_err();
        assert!(e.to_string().contains("GB of memory"), "{e}");
        TrainParams::new(1024, 32).validate(10, 384).unwrap();
        for m in [Method::Lsh, Method::Itq] {
            let e = BaselineParams::new(m, 64).validate(huge).unwrap_err();
            assert!(e.to_string().contains("GB of memory"), "{m}: {e}");
            BaselineParams::new(m, 64).validate(384).unwrap();
        }
    }

    /// `n x dim` standard normal rows (not normalised), with per-column scales `1 / (1 + j)` so
    /// that PCA has distinct eigenvalues, shifted by `offset`.
    fn gaussian(n: usize, dim: usize, seed: u64, offset: f32) -> Array2<f32> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        Array2::from_shape_fn((n, dim), |(_, j)| {
            rng.sample::<f32, _>(StandardNormal) / (1.0 + j as f32) + offset
        })
    }

    fn set_bits(x: ArrayView2<f32>, rule: impl Fn(usize, usize) -> bool) -> Vec<Vec<u32>> {
        (0..x.nrows())
            .map(|i| {
                (0..x.ncols() as u32)
                    .filter(|&j| rule(i, j as usize))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn sign_codes_are_exactly_x_positive() {
        let mut x = gaussian(500, 24, 1, 0.0);
        // Edge cases: exact zeros (both signs), tiny and huge magnitudes.
        x[[0, 0]] = 0.0;
        x[[0, 1]] = -0.0;
        x[[0, 2]] = f32::MIN_POSITIVE;
        x[[0, 3]] = -f32::MIN_POSITIVE;
        x[[0, 4]] = 1e-45;
        x[[0, 5]] = 3e38;
        x[[0, 6]] = -3e38;
        let (model, _) = BaselineParams::new(Method::Sign, 24).fit(x.view()).unwrap();
        assert_eq!(model.config.method, Method::Sign);
        assert_eq!(model.config.effective_alpha(), 0.0);
        let want = set_bits(x.view(), |i, j| x[[i, j]] > 0.0);
        assert_eq!(model.encode_active(x.view()), want);
    }

    #[test]
    fn sign_needs_bits_equal_to_dim() {
        let x = gaussian(10, 8, 1, 0.0);
        let e = BaselineParams::new(Method::Sign, 16)
            .fit(x.view())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--bits must be 8"), "{e}");
    }

    #[test]
    fn lsh_is_seeded_and_deterministic() {
        let x = gaussian(300, 16, 2, 0.0);
        let fit = |seed| {
            let mut p = BaselineParams::new(Method::Lsh, 40);
            p.seed = seed;
            p.fit(x.view()).unwrap().0
        };
        let (a, b, c) = (fit(7), fit(7), fit(8));
        assert_eq!(a.params, b.params);
        assert_ne!(a.params.we, c.params.we);
        assert!(a.params.be.iter().all(|&v| v == 0.0));
        // Standard normal entries.
        let we = &a.params.we;
        let mean = we.mean().unwrap();
        let var = we.mapv(|v| (v - mean).powi(2)).mean().unwrap();
        assert!(mean.abs() < 0.1 && (var - 1.0).abs() < 0.15, "{mean} {var}");
        assert_eq!(a.encode_active(x.view()), b.encode_active(x.view()));
    }

    #[test]
    fn random_rotation_is_orthogonal() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let r = random_rotation(17, &mut rng).unwrap();
        let err = (r.dot(&r.t()) - Array2::<f64>::eye(17))
            .iter()
            .fold(0.0f64, |a, &v| a.max(v.abs()));
        assert!(err < 1e-10, "{err}");
    }

    #[test]
    fn procrustes_finds_a_known_rotation() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
        let truth = random_rotation(6, &mut rng).unwrap();
        let v = Array2::from_shape_simple_fn((50, 6), || rng.sample::<f64, _>(StandardNormal));
        let b = v.dot(&truth);
        let r = procrustes(v.view(), b.view()).unwrap();
        let err = (&r - &truth).iter().fold(0.0f64, |a, &v| a.max(v.abs()));
        assert!(err < 1e-10, "{err}");
    }

    #[test]
    fn loss_from_cross_equals_the_direct_loss() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(12);
        let v = Array2::from_shape_simple_fn((40, 5), || rng.sample::<f64, _>(StandardNormal));
        let b =
            Array2::from_shape_simple_fn((40, 5), || if rng.random_bool(0.5) { 1.0 } else { -1.0 });
        let r = random_rotation(5, &mut rng).unwrap();
        let d = &b - &v.dot(&r);
        let direct = d.iter().map(|e| e * e).sum::<f64>() / 40.0;
        let v_norm2 = v.iter().map(|e| e * e).sum::<f64>();
        let fast = loss_from_cross(v.t().dot(&b).view(), r.view(), v_norm2, 40);
        assert!((direct - fast).abs() < 1e-10 * direct, "{direct} {fast}");
    }

    #[test]
    fn itq_rotation_is_orthogonal_and_loss_never_increases() {
        let x = gaussian(2000, 32, 5, 0.3);
        let itq = Itq::fit(x.view(), 16, 50, 9).unwrap();
        let r = &itq.rotation;
        assert_eq!(r.dim(), (16, 16));
        let err = (r.dot(&r.t()) - Array2::<f64>::eye(16))
            .iter()
            .fold(0.0f64, |a, &v| a.max(v.abs()));
        assert!(err < 1e-4, "R R^T differs from I by {err}");
        let p = &itq.projection;
        let err = (p.t().dot(p) - Array2::<f64>::eye(16))
            .iter()
            .fold(0.0f64, |a, &v| a.max(v.abs()));
        assert!(err < 1e-8, "P^T P differs from I by {err}");
        let loss = &itq.quantization_loss;
        assert_eq!(loss.len(), 50);
        for w in loss.windows(2) {
            assert!(w[1] <= w[0] * (1.0 + 1e-12), "loss increased: {loss:?}");
        }
        // It learns something: clearly below the loss of the first round.
        assert!(loss[49] < loss[0] * 0.99, "{loss:?}");
    }

    #[test]
    fn itq_projection_takes_the_top_components() {
        // Column j has standard deviation 1 / (1 + j): PCA's top components are the first axes.
        let x = gaussian(5000, 8, 6, 0.0);
        let itq = Itq::fit(x.view(), 3, 0, 0).unwrap();
        for (c, col) in itq.projection.axis_iter(Axis(1)).enumerate() {
            assert!(col[c].abs() > 0.95, "component {c}: {col}");
        }
        assert!(itq.quantization_loss.is_empty());
    }

    #[test]
    fn itq_encoder_matches_its_definition_and_codes_are_balanced() {
        let x = gaussian(4000, 32, 7, 0.5);
        let mut p = BaselineParams::new(Method::Itq, 16);
        p.seed = 11;
        let (model, report) = p.fit(x.view()).unwrap();
        assert_eq!(report.quantization_loss.len(), DEFAULT_ITQ_ITERATIONS);
        assert_eq!(model.config.k, 8);
        let itq = Itq::fit(x.view(), 16, DEFAULT_ITQ_ITERATIONS, 11).unwrap();
        // H = (x - mean) P R, computed in f64, agrees with the f32 model's pre-activations.
        let h64 = (x.mapv(f64::from) - &itq.mean)
            .dot(&itq.projection)
            .dot(&itq.rotation);
        let h32 = model.params.pre_activations(x.view());
        let err = (&h64 - &h32.mapv(f64::from))
            .iter()
            .fold(0.0f64, |a, &v| a.max(v.abs()));
        assert!(err < 1e-4, "{err}");
        // Balanced-ish: on centred Gaussian data every bit fires for 30%..70% of the rows.
        let active = model.encode_active(x.view());
        let mut count = [0usize; 16];
        for set in &active {
            for &j in set {
                count[j as usize] += 1;
            }
        }
        for (j, &c) in count.iter().enumerate() {
            let f = c as f64 / x.nrows() as f64;
            assert!((0.3..0.7).contains(&f), "bit {j} fires for {f} of the rows");
        }
    }

    #[test]
    fn itq_refuses_more_rounds_than_could_finish() {
        let x = gaussian(10, 8, 1, 0.0);
        for iterations in [MAX_ITQ_ITERATIONS + 1, usize::MAX] {
            let mut p = BaselineParams::new(Method::Itq, 4);
            p.itq_iterations = iterations;
            let e = p.fit(x.view()).unwrap_err().to_string();
            assert!(e.contains("--itq-iterations must be at most 100000"), "{e}");
        }
    }

    #[test]
    fn itq_needs_bits_at_most_dim() {
        let x = gaussian(10, 8, 1, 0.0);
        let e = BaselineParams::new(Method::Itq, 9)
            .fit(x.view())
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most the input dimension 8"), "{e}");
    }

    #[test]
    fn ridge_decoder_beats_the_mean_vector() {
        let x = gaussian(3000, 16, 8, 0.2);
        for method in [Method::Sign, Method::Lsh, Method::Itq] {
            let bits = if method == Method::Lsh { 64 } else { 16 };
            let (model, report) = BaselineParams::new(method, bits).fit(x.view()).unwrap();
            let active = model.encode_active(x.view());
            let xhat = model.params.decode_sparse(&active);
            let sq = |a: &Array2<f32>| a.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>();
            let err = sq(&(&xhat - &x));
            let mean = x.mean_axis(Axis(0)).unwrap();
            let err_mean = sq(&(&x - &mean));
            assert!(
                err < 0.7 * err_mean,
                "{method}: decoder error {err}, mean-vector error {err_mean}"
            );
            let mse = err / x.len() as f64;
            assert!(
                (report.reconstruction_mse - mse).abs() < 1e-4 * mse,
                "{report:?} {mse}"
            );
        }
    }

    #[test]
    fn ridge_decoder_solves_least_squares_and_survives_constant_bits() {
        // Codes from a known decoder plus constant bits (always on, never on) and a duplicate.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(10);
        let (m, bits, dim) = (400, 8, 5);
        let wd = Array2::from_shape_simple_fn((bits, dim), || rng.sample::<f64, _>(StandardNormal));
        let active: Vec<Vec<u32>> = (0..m)
            .map(|_| {
                let mut set: Vec<u32> = (0..5).filter(|_| rng.random_bool(0.5)).collect();
                set.push(5); // bit 5 always on, bit 6 never on
                if set.contains(&0) {
                    set.push(7); // bit 7 duplicates bit 0
                }
                set
            })
            .collect();
        let c = dense_codes(&active, bits).mapv(f64::from);
        let x = (c.dot(&wd) + 0.25).mapv(|v| v as f32);
        let (wd_t, bd) = fit_ridge_decoder(x.view(), &active, bits).unwrap();
        // Never on: exactly zero. Always on: zero up to f32 rounding in C^T X (harmless, as `bd`
        // absorbs whatever it adds).
        assert!(wd_t.row(6).iter().all(|&v| v == 0.0), "{wd_t}");
        assert!(wd_t.row(5).iter().all(|v| v.abs() < 1e-2), "{wd_t}");
        let xhat = dense_codes(&active, bits).dot(&wd_t) + &bd;
        let err = (&xhat - &x).iter().fold(0.0f32, |a, &v| a.max(v.abs()));
        // Exact up to the small ridge.
        assert!(err < 0.05, "{err}");
    }

    #[test]
    fn subsample_is_seeded_sorted_and_bounded() {
        let x = Array2::from_shape_fn((100, 2), |(i, j)| (i * 2 + j) as f32);
        let a = subsample(x.view(), 10, 3);
        assert_eq!(a.dim(), (10, 2));
        let ids: Vec<f32> = a.column(0).to_vec();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, subsample(x.view(), 10, 3));
        assert_eq!(subsample(x.view(), 1000, 3), x);
    }
}
