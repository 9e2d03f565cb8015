//! Training: the BSA objective with its hand-derived backward pass ([`loss_and_grad`]), and the
//! fit loop ([`TrainParams::fit`]): shuffled mini-batches, Adam, a held-out validation slice,
//! divergence checks and per-phase timing.
//!
//! Five products per step (method.md): `H = X We^T`, `Xhat = C Wd^T`, `G_C = G_Xhat Wd`,
//! `dWd = G_Xhat^T C`, `dWe = G_H^T X`. Three are dense GEMMs (OpenBLAS). The two that involve the
//! binary code `C` can instead be computed as gathers and scatters over its set bits
//! ([`DecoderPath::Sparse`]): `B K D` work instead of `2 B N D`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::Serialize;

use crate::convergence::{
    Monitor, ProbeRecall, RecallProbe, Schedule, bit_frequencies, lr_factor, rebalance_bits,
    set_bias_quantiles,
};
use crate::error::{Error, Result};
use crate::loss::neighbour_distillation;
use crate::model::{Autoencoder, Method, ModelConfig, Params, Real, active_bits};
use crate::optim::Adam;
use crate::simd::{self, Family};

/// How the code enters the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeMode {
    /// The real model: binary code (round or k-hot), straight-through in the backward pass.
    Binary,
    /// `C = S`: the code function replaced by the identity, which is what the straight-through
    /// estimator differentiates. Only for finite-difference gradient checks.
    Identity,
}

/// How the two products that involve the binary code are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderPath {
    /// Gathers and scatters over the set bits of each code.
    Sparse,
    /// Dense GEMMs with the 0/1 code matrix.
    #[default]
    Dense,
}

/// Phases of a training step, for the timing report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `H = X We^T + be`, sigmoid.
    Encode,
    /// Rounding or TopK selection of the code, and the alignment targets.
    Code,
    /// `Xhat = C Wd^T + bd`.
    Decode,
    /// Loss values and their gradients with respect to `Xhat` and `S`.
    Loss,
    /// `G_C = G_Xhat Wd`, `dWe = G_H^T X`, bias gradients.
    Backward,
    /// `dWd = G_Xhat^T C`.
    DecoderGrad,
    /// The Adam update.
    Optimizer,
}

impl Phase {
    /// All phases in step order.
    pub const ALL: [Phase; 7] = [
        Phase::Encode,
        Phase::Code,
        Phase::Decode,
        Phase::Loss,
        Phase::Backward,
        Phase::DecoderGrad,
        Phase::Optimizer,
    ];

    /// Snake-case name used in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Encode => "encode",
            Phase::Code => "code",
            Phase::Decode => "decode",
            Phase::Loss => "loss",
            Phase::Backward => "backward",
            Phase::DecoderGrad => "decoder_grad",
            Phase::Optimizer => "optimizer",
        }
    }
}

/// Accumulated wall time per [`Phase`].
#[derive(Debug, Clone, Default)]
pub struct PhaseTimer {
    totals: [Duration; 7],
    last: Option<Instant>,
}

impl PhaseTimer {
    /// Starts timing (or restarts after a pause).
    pub fn start(&mut self) {
        self.last = Some(Instant::now());
    }

    /// Charges the time since the previous mark to `phase`.
    pub fn mark(&mut self, phase: Phase) {
        let now = Instant::now();
        if let Some(last) = self.last {
            self.totals[phase as usize] += now - last;
        }
        self.last = Some(now);
    }

    /// Seconds per phase, by name.
    pub fn seconds(&self) -> Vec<(&'static str, f64)> {
        Phase::ALL
            .iter()
            .map(|&p| (p.name(), self.totals[p as usize].as_secs_f64()))
            .collect()
    }
}

/// Loss values of one batch.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BatchLoss {
    /// `L = L_rec + alpha L_align`.
    pub loss: f64,
    /// Reconstruction term.
    pub rec: f64,
    /// Alignment term (before the alpha weight; BSA's also at alpha 0, where it does not train;
    /// 0 for TopK, whose codes are their target).
    pub align: f64,
    /// Mean number of set bits per code.
    pub active_mean: f64,
    /// Neighbourhood term (before its weight; 0 when the weight is 0).
    pub neighbour: f64,
}

impl BatchLoss {
    /// Adds `l`, the loss of `w` rows, to this running sum.
    fn add_weighted(&mut self, l: &BatchLoss, w: f64) {
        self.loss += l.loss * w;
        self.rec += l.rec * w;
        self.align += l.align * w;
        self.active_mean += l.active_mean * w;
        self.neighbour += l.neighbour * w;
    }

    /// The mean of a running sum over `rows` rows.
    fn mean_over(&self, rows: f64) -> BatchLoss {
        BatchLoss {
            loss: self.loss / rows,
            rec: self.rec / rows,
            align: self.align / rows,
            active_mean: self.active_mean / rows,
            neighbour: self.neighbour / rows,
        }
    }
}

/// The optional in-batch neighbourhood term ([`neighbour_distillation`]): not part of the
/// paper's objective, off (weight 0) by default.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Neighbourhood {
    /// Weight of the term in the loss, `L = L_rec + alpha L_align + weight L_nb`.
    pub weight: f64,
    /// The term is computed on the first `rows` rows of each (shuffled) batch: its cost grows
    /// with the square of the rows, `2 rows^2 N` flops twice.
    pub rows: usize,
}

/// Computes the objective on batch `x` and, when `grads` is given, its gradient with respect to
/// every parameter (straight-through for the code), exactly as method.md derives it.
pub fn loss_and_grad<F: Real>(
    p: &Params<F>,
    x: ArrayView2<F>,
    cfg: &ModelConfig,
    mode: CodeMode,
    path: DecoderPath,
    grads: Option<&mut Params<F>>,
    timer: &mut PhaseTimer,
) -> BatchLoss {
    loss_and_grad_with(
        p,
        x,
        cfg,
        &Neighbourhood::default(),
        mode,
        path,
        grads,
        timer,
    )
}

/// [`loss_and_grad`] with the neighbourhood term `nb` added (when its weight is positive): its
/// gradient with respect to the code, `weight * d L_nb / d C`, joins `G_C` (straight-through,
/// like the reconstruction's).
#[allow(clippy::too_many_arguments)]
pub fn loss_and_grad_with<F: Real>(
    p: &Params<F>,
    x: ArrayView2<F>,
    cfg: &ModelConfig,
    nb: &Neighbourhood,
    mode: CodeMode,
    path: DecoderPath,
    grads: Option<&mut Params<F>>,
    timer: &mut PhaseTimer,
) -> BatchLoss {
    let mut ws = Workspace::default();
    loss_and_grad_in(p, x, cfg, nb, mode, path, grads, timer, &mut ws)
}

/// The batch-sized matrices of a step, kept between the steps of a fit: allocating and zeroing
/// them anew every step cost about 5% of it. Every step overwrites what it reads.
struct Workspace<F> {
    /// `H`, then `S` (B x N).
    s: Array2<F>,
    /// `G_C`, then `G_H` (B x N).
    g_s: Array2<F>,
    /// `Xhat` (B x D).
    xhat: Array2<F>,
    /// `G_Xhat` (B x D).
    g_xhat: Array2<F>,
    /// The set bits of each code.
    active: Vec<Vec<u32>>,
}

impl<F: Real> Default for Workspace<F> {
    fn default() -> Self {
        let empty = || Array2::zeros((0, 0));
        Workspace {
            s: empty(),
            g_s: empty(),
            xhat: empty(),
            g_xhat: empty(),
            active: Vec::new(),
        }
    }
}

/// [`loss_and_grad_with`] with its matrices in `ws`.
#[allow(clippy::too_many_arguments)]
fn loss_and_grad_in<F: Real>(
    p: &Params<F>,
    x: ArrayView2<F>,
    cfg: &ModelConfig,
    nb: &Neighbourhood,
    mode: CodeMode,
    path: DecoderPath,
    grads: Option<&mut Params<F>>,
    timer: &mut PhaseTimer,
    ws: &mut Workspace<F>,
) -> BatchLoss {
    // Every elementwise pass below is a row-parallel loop over the batch, compiled for the CPU's
    // vector width (`simd`), and fused so that each B x N matrix is read as few times as possible:
    // bias, code and sigmoid in one pass; the alignment target never stored as a matrix; its
    // gradient, the neighbourhood term and the sigmoid's derivative in one pass.
    let family = Family::current();
    let alpha = F::from(cfg.effective_alpha()).unwrap();
    let b = x.nrows();
    let n = p.bits();
    let dim = p.dim();
    let batch = F::from(b).unwrap();
    let x = x.as_standard_layout();

    // H = X We^T, then per row: + be, the code (from H), S = sigmoid(H) in place.
    let Workspace {
        s,
        g_s,
        xhat,
        g_xhat,
        active,
    } = ws;
    matmul_into(x.view(), p.we.t(), s);
    active.resize(b, Vec::new());
    let mut active = match mode {
        CodeMode::Binary => Some(&mut active[..b]),
        CodeMode::Identity => None,
    };
    {
        let topk = matches!(cfg.method, Method::Topk | Method::Pursuit).then_some(cfg.k);
        let be = p.be.as_slice().expect("be is contiguous");
        let s_rows = s.as_slice_mut().expect("a fresh product is contiguous");
        match active.as_mut() {
            Some(act) => s_rows
                .par_chunks_mut(ROWS_PER_TASK * n)
                .zip(act.par_chunks_mut(ROWS_PER_TASK))
                .for_each(|(h, codes)| {
                    simd::encode_rows(family, h, be, topk, Some(codes), &mut Vec::new())
                }),
            None => s_rows
                .par_chunks_mut(ROWS_PER_TASK * n)
                .for_each(|h| simd::encode_rows(family, h, be, topk, None, &mut Vec::new())),
        }
    }
    let s_rows = s.as_slice().expect("contiguous");
    timer.mark(Phase::Encode);

    // The code: a dense matrix when the dense path or the identity check needs one, and lists
    // of set bits when it is binary.
    let c_dense = match (&active, path) {
        (None, _) => Some(s.clone()),
        (Some(act), DecoderPath::Dense) => Some(dense_code(act, b, n)),
        (Some(_), DecoderPath::Sparse) => None,
    };
    let active_mean = match &active {
        Some(act) => act.iter().map(|a| a.len()).sum::<usize>() as f64 / b.max(1) as f64,
        None => s.sum().to_f64().unwrap() / b.max(1) as f64,
    };
    // The alignment term: each row's TopK indices and its distance to its target.
    let k = cfg.k.min(n);
    // BSA's even at alpha 0, where it does not train: the no-alignment ablation then reports
    // how far the activations drift from their targets. TopK's codes are their target: skipped.
    let align = (alpha > F::zero() || cfg.method == Method::Bsa).then(|| {
        let mut top = vec![0u32; b * k];
        let mut dist = vec![simd::RowDistance::zero(); b];
        s_rows
            .par_chunks(ROWS_PER_TASK * n)
            .zip(top.par_chunks_mut(ROWS_PER_TASK * k))
            .zip(dist.par_chunks_mut(ROWS_PER_TASK))
            .for_each(|((si, ti), di)| {
                simd::align_rows(family, si, n, k, cfg.target, cfg.loss, ti, di)
            });
        (top, dist)
    });
    timer.mark(Phase::Code);

    match (&c_dense, &active) {
        (Some(c), _) => {
            matmul_into(c.view(), p.wd_t.view(), xhat);
            *xhat += &p.bd;
        }
        (None, Some(act)) => decode_sparse(family, p, act, xhat),
        (None, None) => unreachable!("a code is always present"),
    }
    timer.mark(Phase::Decode);

    let want_grad = grads.is_some();
    if want_grad {
        // Overwritten row by row below.
        ensure_dim(g_xhat, (b, dim));
    }
    let mut g_xhat = want_grad.then_some(g_xhat);
    let rec = {
        let mut losses = vec![F::zero(); b];
        let (u, v) = (xhat.as_slice().unwrap(), x.as_slice().unwrap());
        let rows = ROWS_PER_TASK * dim;
        match g_xhat.as_deref_mut() {
            Some(g) => u
                .par_chunks(rows)
                .zip(v.par_chunks(rows))
                .zip(losses.par_chunks_mut(ROWS_PER_TASK))
                .zip(g.as_slice_mut().unwrap().par_chunks_mut(rows))
                .for_each(|(((u, v), l), g)| {
                    simd::distance_rows_chunk(family, cfg.loss, u, v, dim, batch, l, Some(g))
                }),
            None => u
                .par_chunks(rows)
                .zip(v.par_chunks(rows))
                .zip(losses.par_chunks_mut(ROWS_PER_TASK))
                .for_each(|((u, v), l)| {
                    simd::distance_rows_chunk(family, cfg.loss, u, v, dim, batch, l, None)
                }),
        }
        losses.into_iter().sum::<F>() / batch
    };
    let align_loss = match &align {
        Some((_, dist)) => dist.iter().map(|d| d.loss).sum::<F>() / batch,
        None => F::zero(),
    };
    // The neighbourhood term on the first rows of the batch.
    let nb_weight = F::from(nb.weight).unwrap();
    let nb_rows = if nb.weight > 0.0 { nb.rows.min(b) } else { 0 };
    let mut g_nb = (want_grad && nb_rows > 1).then(|| Array2::zeros((nb_rows, n)));
    let neighbour = if nb_rows > 1 {
        let c_sub = match (&c_dense, &active) {
            (Some(c), _) => c.slice(ndarray::s![..nb_rows, ..]).to_owned(),
            (None, Some(act)) => dense_code(&act[..nb_rows], nb_rows, n),
            (None, None) => unreachable!("a code is always present"),
        };
        neighbour_distillation(
            c_sub.view(),
            x.slice(ndarray::s![..nb_rows, ..]),
            g_nb.as_mut(),
        )
    } else {
        F::zero()
    };
    let loss = rec + alpha * align_loss + nb_weight * neighbour;
    timer.mark(Phase::Loss);

    if let (Some(g), Some(g_xhat)) = (grads, g_xhat) {
        let gx = g_xhat.as_slice().unwrap();
        resize(&mut g.bd, dim);
        simd::column_sums(family, gx, dim, g.bd.as_slice_mut().unwrap());
        // Straight-through: dL/dS = dL/dC = G_Xhat Wd (B x D times D x N).
        matmul_into(g_xhat.view(), p.wd_t.t(), g_s);
        // G_H = (G_C + alpha G_align + w G_nb) * S (1 - S), in place.
        {
            let g_rows = g_s.as_slice_mut().unwrap();
            let nb_rows_slice = g_nb.as_ref().map(|m| m.as_slice().unwrap());
            let chunk = ROWS_PER_TASK * n;
            g_rows
                .par_chunks_mut(chunk)
                .zip(s_rows.par_chunks(chunk))
                .enumerate()
                .for_each(|(c, (gi, si))| {
                    let first = c * ROWS_PER_TASK;
                    let rows = gi.len() / n;
                    let al = align.as_ref().filter(|_| alpha > F::zero());
                    let al = al.map(|(top, dist)| simd::AlignGrad {
                        weight: alpha,
                        batch,
                        target: cfg.target,
                        kind: cfg.loss,
                        k,
                        top: &top[first * k..(first + rows) * k],
                        dist: &dist[first..first + rows],
                    });
                    let nbi = nb_rows_slice
                        .filter(|_| first < nb_rows)
                        .map(|m| (nb_weight, &m[first * n..]));
                    simd::backward_rows(family, gi, si, n, al.as_ref(), nbi);
                });
        }
        matmul_into(g_s.t(), x.view(), &mut g.we);
        resize(&mut g.be, n);
        simd::column_sums(
            family,
            g_s.as_slice().unwrap(),
            n,
            g.be.as_slice_mut().unwrap(),
        );
        timer.mark(Phase::Backward);

        match (&c_dense, &active) {
            (Some(c), _) => matmul_into(c.t(), g_xhat.view(), &mut g.wd_t),
            (None, Some(act)) => scatter_rows(family, act, g_xhat, &mut g.wd_t),
            (None, None) => unreachable!("a code is always present"),
        }
        timer.mark(Phase::DecoderGrad);
    }

    BatchLoss {
        loss: loss.to_f64().unwrap(),
        rec: rec.to_f64().unwrap(),
        align: align_loss.to_f64().unwrap(),
        active_mean,
        neighbour: neighbour.to_f64().unwrap(),
    }
}

/// Rows of the batch per parallel task: small enough to share the work of a 1,024-row batch
/// evenly, large enough that a task's overhead is negligible.
const ROWS_PER_TASK: usize = 16;

/// `a b`. While OpenBLAS runs single-threaded (as [`TrainParams::fit`] has it) and rayon has
/// several threads, the rows of the result are split between rayon's threads, one
/// single-threaded GEMM each: no BLAS worker threads spinning beside rayon's between the
/// products. Otherwise one (multi-threaded) GEMM. Each block of rows is computed the same way
/// whatever else runs, so the result depends only on the thread count.
fn matmul_into<F: Real>(a: ArrayView2<F>, b: ArrayView2<F>, out: &mut Array2<F>) {
    ensure_dim(out, (a.nrows(), b.ncols()));
    let parts = rayon::current_num_threads();
    if parts <= 1 || crate::threads::blas_threads() > 1 || a.nrows() < 2 * ROWS_PER_TASK {
        ndarray::linalg::general_mat_mul(F::one(), &a, &b, F::zero(), out);
        return;
    }
    // Whole multiples of 16 rows per part.
    let rows = a.nrows().div_ceil(parts).next_multiple_of(ROWS_PER_TASK);
    out.axis_chunks_iter_mut(Axis(0), rows)
        .into_par_iter()
        .zip(a.axis_chunks_iter(Axis(0), rows))
        .for_each(|(mut o, a)| {
            ndarray::linalg::general_mat_mul(F::one(), &a, &b, F::zero(), &mut o)
        });
}

/// An entry of a training row below this fraction (2^-64) of the row's largest magnitude is
/// read as zero by [`TrainParams::fit`]: see [`zero_negligible`].
const NEGLIGIBLE: f32 = f32::from_bits((127 - 64) << 23);

/// Sets to zero each entry of `x` below [`NEGLIGIBLE`] times the largest magnitude in its row.
///
/// Why: products of such entries with the step's gradients fall below f32's normal range, and
/// x86 CPUs compute subnormal results in microcode, about a hundred times slower. Embedding models
/// leave such entries: every all-MiniLM-L6-v2 vector of the WordNet sample has two near 1e-37, and
/// the encoder's gradient GEMM (`G_H^T X`) took 4x as long as its twin GEMMs on them; a whole fit
/// ran 1.45x slower. (PyTorch runs 1.2-1.4x slower on them too.)
///
/// What it costs: nothing measurable. Such an entry changes its row's dot products by 40 binary
/// orders of magnitude less than f32's rounding unit (2^-24), unless they cancel to that
/// extent; and its weights' gradients are so small that Adam's `eps` keeps them still. On the
/// WordNet sample a fit with and without it gives the same weights, bit for bit.
///
/// The floating-point environment's flush-to-zero mode would do the same, but Rust's compiler
/// assumes the default mode: changing it is undefined behaviour.
fn zero_negligible(x: &mut Array2<f32>) {
    x.axis_chunks_iter_mut(Axis(0), ROWS_PER_TASK)
        .into_par_iter()
        .for_each(|mut rows| {
            for mut row in rows.rows_mut() {
                let floor = row.iter().fold(0.0f32, |m, v| m.max(v.abs())) * NEGLIGIBLE;
                row.mapv_inplace(|v| if v.abs() < floor { 0.0 } else { v });
            }
        });
}

/// Gives `a` the shape `dim` (its values are then to be overwritten), reusing its memory when it
/// has it already.
fn ensure_dim<F: Real>(a: &mut Array2<F>, dim: (usize, usize)) {
    if a.dim() != dim {
        *a = Array2::zeros(dim);
    }
}

/// Sets OpenBLAS's thread count for as long as it lives, then restores the previous one.
///
/// The count is process-wide and [`matmul_into`] picks its path by it, so overlapping fits in
/// one process (threads of a server, parallel tests) share one setting: the first to start saves
/// the count, the last to finish restores it. Restoring at each fit's end let one fit's end
/// switch another's products mid-run, and with them their rounding.
struct BlasThreads;

/// Fits running now, and the thread count the first of them found.
static BLAS_OVERRIDE: std::sync::Mutex<(usize, usize)> = std::sync::Mutex::new((0, 0));

impl BlasThreads {
    fn set(threads: usize) -> Self {
        let mut g = BLAS_OVERRIDE.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 == 0 {
            g.1 = crate::threads::blas_threads();
            crate::threads::set_blas_threads(threads);
        }
        g.0 += 1;
        BlasThreads
    }
}

impl Drop for BlasThreads {
    fn drop(&mut self) {
        let mut g = BLAS_OVERRIDE.lock().unwrap_or_else(|e| e.into_inner());
        g.0 -= 1;
        if g.0 == 0 {
            crate::threads::set_blas_threads(g.1);
        }
    }
}

/// Makes `a` a vector of `len` (reusing its memory when it already has that length).
fn resize<F: Real>(a: &mut ndarray::Array1<F>, len: usize) {
    if a.len() != len {
        *a = ndarray::Array1::zeros(len);
    }
}

/// [`Params::decode_sparse`] with the run-time chosen vector loop: row i is `bd + sum of wd_t[j]`
/// over its set bits, in the same order, so the same values.
fn decode_sparse<F: Real>(family: Family, p: &Params<F>, active: &[Vec<u32>], out: &mut Array2<F>) {
    let dim = p.dim();
    ensure_dim(out, (active.len(), dim));
    let mut offsets = Vec::with_capacity(active.len() + 1);
    offsets.push(0);
    for set in active {
        offsets.push(offsets.last().copied().unwrap_or(0) + set.len());
    }
    let ids = active.concat();
    let g = simd::Gather {
        base: Some(p.bd.as_slice().unwrap()),
        offsets: &offsets,
        ids: &ids,
        table: p.wd_t.as_slice().unwrap(),
        width: dim,
    };
    gather_rows(family, g, out);
}

/// [`simd::gather_sum_rows`] over all rows of `out`, in a few large parallel tasks (each task
/// keeps a column block of the table in cache for all of its rows).
fn gather_rows<F: Real>(family: Family, g: simd::Gather<'_, F>, out: &mut Array2<F>) {
    let (rows, width) = (out.nrows(), g.width);
    let per_task = rows
        .div_ceil(2 * rayon::current_num_threads())
        .max(ROWS_PER_TASK);
    out.as_slice_mut()
        .expect("a fresh matrix is contiguous")
        .par_chunks_mut(per_task * width)
        .enumerate()
        .for_each(|(t, o)| {
            let first = t * per_task;
            let offsets = &g.offsets[first..=first + o.len() / width];
            simd::gather_sum_rows(family, simd::Gather { offsets, ..g }, o)
        });
}

/// The 0/1 matrix of a batch of codes given as set-bit lists.
fn dense_code<F: Real>(active: &[Vec<u32>], b: usize, n: usize) -> Array2<F> {
    let mut c = Array2::zeros((b, n));
    for (i, set) in active.iter().enumerate() {
        for &j in set {
            c[[i, j as usize]] = F::one();
        }
    }
    c
}

/// `C^T G` for a binary `C` given as set-bit lists: row j of the result is the sum of the rows
/// `G[i]` of the codes that have bit j set. Inverting the lists first (one flat array, bit by
/// bit, rows ascending) lets every output row be written by one thread, so the sum order (and
/// the result) does not depend on thread count.
fn scatter_rows<F: Real>(family: Family, active: &[Vec<u32>], g: &Array2<F>, out: &mut Array2<F>) {
    let n = out.nrows();
    let mut start = vec![0usize; n + 1];
    for set in active {
        for &j in set {
            start[j as usize + 1] += 1;
        }
    }
    for j in 0..n {
        start[j + 1] += start[j];
    }
    let mut rows = vec![0u32; start[n]];
    let mut fill = start.clone();
    for (i, set) in active.iter().enumerate() {
        for &j in set {
            rows[fill[j as usize]] = i as u32;
            fill[j as usize] += 1;
        }
    }
    let width = g.ncols();
    ensure_dim(out, (n, width));
    let g = simd::Gather {
        base: None,
        offsets: &start,
        ids: &rows,
        table: g.as_slice().expect("a fresh gradient is contiguous"),
        width,
    };
    gather_rows(family, g, out);
}

/// Training settings. Build with [`TrainParams::new`], adjust the public fields, then
/// [`fit`](TrainParams::fit).
#[derive(Debug, Clone, Serialize)]
pub struct TrainParams {
    /// Code length N.
    pub bits: usize,
    /// Target active bits K.
    pub k: usize,
    /// BSA or TopK.
    pub method: Method,
    /// Loss kind.
    pub loss: crate::model::LossKind,
    /// Alignment weight.
    pub alpha: f64,
    /// Alignment target.
    pub target: crate::model::Target,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Rows per mini-batch.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Seed for initialisation, the validation split and shuffling.
    pub seed: u64,
    /// Fraction of rows held out for validation (0 disables it).
    pub val_fraction: f64,
    /// Sparse gathers or dense GEMMs for the code products; `None` picks by measured density.
    pub decoder_path: Option<DecoderPath>,

    // Opt-in training aids, not part of the paper's method ([`crate::convergence`]). The
    // defaults leave training exactly as above.
    /// Learning-rate decay over the run (default constant).
    pub schedule: Schedule,
    /// Epochs of linear learning-rate warm-up (fractions allowed; default 0).
    pub warmup_epochs: f64,
    /// The cosine schedule ends at this fraction of `lr` (default 0).
    pub final_lr_fraction: f64,
    /// Keep the weights of the best epoch by this validation measure (default none: keep the
    /// last). Needs validation rows.
    pub monitor: Option<Monitor>,
    /// Stop after this many epochs without improvement of `monitor` (0: run every epoch).
    pub patience: usize,
    /// Only epochs whose validation codes set at most this many times K bits on average may
    /// be picked as best (default none: any epoch). Without it the recall monitors favour
    /// early epochs, whose codes are dense (more bits set retrieve better by Hamming).
    pub monitor_max_active: Option<f64>,
    /// Validation rows that act as queries of the recall probe ([`RecallProbe`]), which runs
    /// after every epoch when `monitor` is set.
    pub probe_queries: usize,
    /// Start every encoder bias at the quantile that makes its bit fire for about K of N
    /// training rows, instead of PyTorch's uniform initialisation (default false).
    pub quantile_bias_init: bool,
    /// After every epoch but the last, reset the bits that fired for no row of a training
    /// sample or for more than `max_bit_freq` of them ([`rebalance_bits`]; default false).
    pub rebalance_bits: bool,
    /// Firing frequency above which `rebalance_bits` resets a bit (default 0.5).
    pub max_bit_freq: f64,
    /// The in-batch neighbourhood term (default weight 0: off).
    pub neighbourhood: Neighbourhood,
}

/// Training rows whose pre-activations set the quantile biases and measure bit frequencies for
/// [`TrainParams::rebalance_bits`]: 64 rows above the threshold of each bit at K/N = 1/32.
const BIT_SAMPLE_ROWS: usize = 2048;

impl TrainParams {
    /// The paper's defaults: BSA, cosine, alpha 1, k-hot target, 10 epochs, batch 1024, lr 1e-3.
    pub fn new(bits: usize, k: usize) -> Self {
        TrainParams {
            bits,
            k,
            method: Method::Bsa,
            loss: crate::model::LossKind::Cosine,
            alpha: 1.0,
            target: crate::model::Target::Khot,
            epochs: 10,
            batch: 1024,
            lr: 1e-3,
            seed: 0,
            val_fraction: 0.05,
            decoder_path: None,
            schedule: Schedule::Constant,
            warmup_epochs: 0.0,
            final_lr_fraction: 0.0,
            monitor: None,
            patience: 0,
            monitor_max_active: None,
            probe_queries: 500,
            quantile_bias_init: false,
            rebalance_bits: false,
            max_bit_freq: 0.5,
            neighbourhood: Neighbourhood {
                weight: 0.0,
                rows: 256,
            },
        }
    }

    fn config(&self, dim: usize) -> ModelConfig {
        ModelConfig {
            dim,
            bits: self.bits,
            k: self.k,
            method: self.method,
            loss: self.loss,
            alpha: self.alpha,
            target: self.target,
        }
        .as_trained()
    }

    /// These settings as the model records them ([`ModelConfig::as_trained`]): a TopK model's
    /// alpha and target are recorded as 0 and k-hot, what made it.
    ///
    /// ```
    /// use bsa::model::{Method, Target};
    /// let mut p = bsa::train::TrainParams::new(64, 8);
    /// (p.method, p.alpha, p.target) = (Method::Topk, 5.0, Target::Masked);
    /// let t = p.as_trained();
    /// assert_eq!((t.alpha, t.target), (0.0, Target::Khot));
    /// ```
    pub fn as_trained(&self) -> TrainParams {
        // The dimension plays no part in what is recorded.
        let c = self.config(0);
        TrainParams {
            alpha: c.alpha,
            target: c.target,
            ..self.clone()
        }
    }

    /// Checks the settings against data with `n` rows of dimension `dim`.
    pub fn validate(&self, n: usize, dim: usize) -> Result<()> {
        if !matches!(self.method, Method::Bsa | Method::Topk) {
            return Err(Error::InvalidArgument(format!(
                "method {} is not trained by gradient descent: use bsa::baselines (sign, lsh, \
                 itq) or bsa::pursuit",
                self.method
            )));
        }
        crate::config::check_k_below_bits(self.bits, self.k)?;
        self.config(dim).validate()?;
        if self.epochs == 0 {
            return Err(Error::InvalidArgument("--epochs must be at least 1".into()));
        }
        if self.batch == 0 {
            return Err(Error::InvalidArgument("--batch must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "--lr must be a positive number, got {:?}",
                self.lr
            )));
        }
        if !(0.0..0.5).contains(&self.val_fraction) {
            return Err(Error::InvalidArgument(format!(
                "--val-fraction must be in [0, 0.5), got {}",
                self.val_fraction
            )));
        }
        if n < 2 {
            return Err(Error::InvalidArgument(format!(
                "need at least 2 training rows, got {n}"
            )));
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "--warmup-epochs must be a number >= 0, got {}",
                self.warmup_epochs
            )));
        }
        if self.warmup_epochs > 0.0 && self.warmup_epochs >= self.epochs as f64 {
            // The rate would still be rising when training ends: never the --lr asked for.
            return Err(Error::InvalidArgument(format!(
                "--warmup-epochs {} must be below --epochs {} (the learning rate would never \
                 reach --lr)",
                self.warmup_epochs, self.epochs
            )));
        }
        if !(0.0..=1.0).contains(&self.final_lr_fraction) {
            return Err(Error::InvalidArgument(format!(
                "--final-lr-fraction must be in [0, 1], got {}",
                self.final_lr_fraction
            )));
        }
        if (self.monitor.is_some() || self.patience > 0) && self.val_fraction == 0.0 {
            return Err(Error::InvalidArgument(
                "--monitor and --patience need validation rows: set --val-fraction above 0".into(),
            ));
        }
        if let Some(r) = self.monitor_max_active
            && (!(r.is_finite() && r > 0.0) || self.monitor.is_none())
        {
            return Err(Error::InvalidArgument(format!(
                "--monitor-max-active must be a positive ratio to K and needs --monitor, got {r}"
            )));
        }
        if self.patience > 0 && self.monitor.is_none() {
            return Err(Error::InvalidArgument(
                "--patience needs --monitor (loss, adc or hamming)".into(),
            ));
        }
        if matches!(self.monitor, Some(Monitor::Adc | Monitor::Hamming)) && self.probe_queries == 0
        {
            return Err(Error::InvalidArgument(
                "--monitor adc or hamming needs --probe-queries above 0".into(),
            ));
        }
        // Weights, gradients and Adam's two moments: 8 matrices of bits x dim f32.
        crate::config::check_memory(
            8 * self.bits as u128 * dim as u128 * 4,
            &format!(
                "the weights and optimiser state of {} bits on {dim}-d data",
                self.bits
            ),
        )?;
        if !(self.max_bit_freq > 0.0 && self.max_bit_freq <= 1.0) {
            return Err(Error::InvalidArgument(format!(
                "--max-bit-freq must be in (0, 1], got {}",
                self.max_bit_freq
            )));
        }
        let w = self.neighbourhood.weight;
        // As --alpha: the loss is summed in f32, and a weight past its range made it infinite
        // at the first step, reported as a divergence to mend with a lower --lr.
        if !(w.is_finite() && w >= 0.0 && (w as f32).is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "--neighbour-weight must be a number >= 0 within float32's range (3.4e38), \
                 got {w:?}"
            )));
        }
        if w > 0.0 && self.neighbourhood.rows < 2 {
            return Err(Error::InvalidArgument(format!(
                "--neighbour-rows must be at least 2, got {}",
                self.neighbourhood.rows
            )));
        }
        Ok(())
    }

    /// Trains a model on the rows of `data`, calling `progress` after every step and epoch.
    /// Deterministic for a given seed and thread count. Entries below 2^-64 of their row's
    /// largest magnitude are read as zero, which changes no weight in practice and keeps the
    /// CPU off subnormal arithmetic (see `zero_negligible` in this module's source).
    ///
    /// ```
    /// use bsa::train::TrainParams;
    /// let data = ndarray::Array2::from_shape_fn((64, 8), |(i, j)| ((i * 7 + j * 3) % 5) as f32 - 2.0);
    /// let mut params = TrainParams::new(16, 4);
    /// params.epochs = 2;
    /// params.batch = 16;
    /// let (model, report) = params.fit(data.view(), &mut |_| {}).unwrap();
    /// assert_eq!(model.config.bits, 16);
    /// assert_eq!(report.epochs.len(), 2);
    /// ```
    pub fn fit(
        &self,
        data: ArrayView2<f32>,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(Autoencoder, TrainReport)> {
        self.fit_until(data, progress, &AtomicBool::new(false))
    }

    /// [`fit`](Self::fit) that returns [`Error::Stopped`] at the next step once `stop` is set
    /// (from another thread: e.g. Python's Ctrl-C).
    pub fn fit_until(
        &self,
        data: ArrayView2<f32>,
        progress: &mut dyn FnMut(&Progress),
        stop: &AtomicBool,
    ) -> Result<(Autoencoder, TrainReport)> {
        let (n, dim) = data.dim();
        self.validate(n, dim)?;
        // A bad BSA_KERNEL is an error here, not a silent fallback inside the steps.
        Family::active()?;
        let config = self.config(dim);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(self.seed);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let n_val = ((n as f64 * self.val_fraction).round() as usize).min(n - 1);
        let (train_rows, val_rows) = order.split_at(n - n_val);
        let mut train_rows = train_rows.to_vec();
        let mut val = data.select(Axis(0), val_rows);
        zero_negligible(&mut val);

        let mut params = Params::<f32>::init(self.bits, dim, self.seed ^ 0x5eed_b5a0);
        // A fixed sample of training rows for bias quantiles and bit frequencies; taken from
        // the shuffled order, so it is random and costs no extra draws from `rng` (which keeps
        // the paper's runs identical to before these options existed).
        let bit_sample = (self.quantile_bias_init || self.rebalance_bits).then(|| {
            let m = BIT_SAMPLE_ROWS.min(train_rows.len());
            let mut sample = data.select(Axis(0), &train_rows[..m]);
            zero_negligible(&mut sample);
            sample
        });
        if self.quantile_bias_init
            && let Some(sample) = &bit_sample
        {
            let all: Vec<usize> = (0..self.bits).collect();
            set_bias_quantiles(&mut params, sample.view(), self.k, &all);
        }
        let probe = match self.monitor {
            Some(m @ (Monitor::Adc | Monitor::Hamming)) => {
                // Refused, not left off without a word: the monitor would pick no epoch.
                let probe = RecallProbe::new(val.view(), self.probe_queries);
                let name = if m == Monitor::Adc { "adc" } else { "hamming" };
                Some(probe.ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "--monitor {} measures recall@10 among the validation rows, and {} are \
                         too few to tell codes apart (it needs {}): raise --val-fraction, or \
                         use --monitor loss",
                        name,
                        val.nrows(),
                        crate::convergence::PROBE_MIN_ROWS
                    ))
                })?)
            }
            Some(Monitor::Loss) => RecallProbe::new(val.view(), self.probe_queries),
            None => None,
        };
        // The trainer splits its GEMMs between rayon's threads itself ([`matmul`]).
        let _blas = BlasThreads::set(1);
        let mut workspace = Workspace::default();
        let mut grads = Params::<f32>::zeros(self.bits, dim);
        let mut adam = Adam::new(self.lr as f32, &params);
        let mut timer = PhaseTimer::default();
        let steps_per_epoch = train_rows.len().div_ceil(self.batch);
        // Saturating: --epochs has no upper bound (a run that long is stopped by Ctrl-C).
        let total_steps = steps_per_epoch.saturating_mul(self.epochs);
        let warmup_steps = (self.warmup_epochs * steps_per_epoch as f64).round() as usize;
        let mut path = self.decoder_path.unwrap_or(DecoderPath::Dense);
        let mut report = TrainReport::default();
        let mut best: Option<(f64, usize, Params<f32>)> = None;
        let started = Instant::now();
        let mut global_step = 0;

        for epoch in 0..self.epochs {
            train_rows.shuffle(&mut rng);
            let mut sum = BatchLoss::default();
            let mut lr = self.lr;
            for (step, rows) in train_rows.chunks(self.batch).enumerate() {
                if stop.load(Ordering::Relaxed) {
                    return Err(Error::Stopped);
                }
                let mut x = data.select(Axis(0), rows);
                zero_negligible(&mut x);
                lr = self.lr
                    * lr_factor(
                        self.schedule,
                        global_step,
                        total_steps,
                        warmup_steps,
                        self.final_lr_fraction,
                    );
                adam.lr = lr as f32;
                global_step += 1;
                timer.start();
                let l = loss_and_grad_in(
                    &params,
                    x.view(),
                    &config,
                    &self.neighbourhood,
                    CodeMode::Binary,
                    path,
                    Some(&mut grads),
                    &mut timer,
                    &mut workspace,
                );
                if !l.loss.is_finite() {
                    return Err(Error::Diverged(format!(
                        "the loss became {} at epoch {}, step {}; lower --lr (now {:?}) or check \
                         the input for extreme values",
                        l.loss,
                        epoch + 1,
                        step + 1,
                        self.lr
                    )));
                }
                adam.step(&mut params, &grads);
                timer.mark(Phase::Optimizer);
                if self.decoder_path.is_none() {
                    path = auto_path(l.active_mean, self.bits);
                }
                sum.add_weighted(&l, rows.len() as f64);
                progress(&Progress::Step {
                    epoch,
                    step,
                    steps_per_epoch,
                    loss: l,
                });
            }
            if !params.all_finite() {
                return Err(Error::Diverged(format!(
                    "a weight became non-finite in epoch {}; lower --lr (now {:?})",
                    epoch + 1,
                    self.lr
                )));
            }
            let train = sum.mean_over(train_rows.len() as f64);
            let validation = (val.nrows() > 0).then(|| {
                evaluate_loss_with(
                    &params,
                    val.view(),
                    &config,
                    &self.neighbourhood,
                    self.batch,
                    path,
                )
            });
            let mut stats = EpochStats {
                epoch: epoch + 1,
                train,
                validation,
                lr,
                validation_recall: None,
                dead_bits: None,
                max_bit_freq: None,
                bits_reset: 0,
                seconds: 0.0,
            };
            if let Some(probe) = &probe {
                let (r, active) = probe.measure(&params, self.method, self.k);
                let freq = bit_frequencies(&active, self.bits);
                stats.validation_recall = Some(r);
                stats.dead_bits = Some(freq.iter().filter(|&&f| f == 0.0).count());
                stats.max_bit_freq = Some(freq.iter().copied().fold(0.0, f64::max));
            }
            // Model selection: the monitored value, higher is better.
            let mut stale = 0;
            if let Some(monitor) = self.monitor {
                let score = match (monitor, stats.validation, stats.validation_recall) {
                    (Monitor::Loss, Some(v), _) => Some(-v.loss),
                    (Monitor::Adc, _, Some(r)) => Some(r.adc),
                    (Monitor::Hamming, _, Some(r)) => Some(r.hamming),
                    _ => None,
                };
                let sparse_enough = match (self.monitor_max_active, stats.validation) {
                    (Some(ratio), Some(v)) => v.active_mean <= ratio * self.k as f64,
                    _ => true,
                };
                let score = score.filter(|_| sparse_enough);
                if let Some(score) = score
                    && best.as_ref().is_none_or(|b| score > b.0)
                {
                    best = Some((score, epoch + 1, params.clone()));
                }
                stale = best.as_ref().map_or(0, |b| epoch + 1 - b.1);
            }
            let patience_ran_out = self.patience > 0 && stale >= self.patience;
            // Bits are rebalanced for a next epoch only.
            if let Some(sample) = &bit_sample
                && self.rebalance_bits
                && !patience_ran_out
                && epoch + 1 < self.epochs
            {
                let h = params.pre_activations(sample.view());
                let freq = bit_frequencies(&active_bits(&h, self.method, self.k), self.bits);
                stats.bits_reset =
                    rebalance_bits(&mut params, sample.view(), &freq, self.k, self.max_bit_freq)
                        .len();
            }
            stats.seconds = started.elapsed().as_secs_f64();
            progress(&Progress::Epoch(stats.clone()));
            report.epochs.push(stats);
            if patience_ran_out {
                report.stopped_early = true;
                break;
            }
        }
        if let Some((_, epoch, weights)) = best {
            params = weights;
            report.best_epoch = Some(epoch);
        }
        let seconds = started.elapsed().as_secs_f64();
        report.train_rows = train_rows.len();
        report.validation_rows = n_val;
        report.seconds = seconds;
        report.samples_per_sec = (train_rows.len() * report.epochs.len()) as f64 / seconds;
        report.phase_seconds = timer.seconds();
        report.decoder_path = path;
        report.warnings = self.warnings(&report.epochs);
        Ok((Autoencoder { config, params }, report))
    }

    /// What makes a fit of these settings that ran `epochs` likely poor, although nothing
    /// diverged (a weight that became non-finite is an error): a learning rate far above the
    /// weights' scale (Adam moves each weight by about `lr` a step, so one above
    /// [`MAX_USUAL_LR`] throws the weights around instead of settling them: the cosine loss is
    /// blind to their scale, and `--lr 1e30` trained to finite weights near 1e30 and a
    /// validation loss of 1.58 where 1e-1 reached 0.73), or a training loss that did not fall
    /// from the first epoch to the last (by [`MIN_LOSS_FALL`] of it: `--lr 1e-30` trains
    /// nothing and said nothing).
    ///
    /// ```
    /// use bsa::train::{EpochStats, TrainParams};
    /// let mut p = TrainParams::new(64, 4);
    /// assert!(p.warnings(&[]).is_empty());
    /// p.lr = 1e30;
    /// assert!(p.warnings(&[])[0].starts_with("--lr 1e30 is above 1"));
    /// let epoch = |loss: f64| {
    ///     let mut e = EpochStats::default();
    ///     e.train.loss = loss;
    ///     e
    /// };
    /// p.lr = 1e-30;
    /// let w = p.warnings(&[epoch(1.7404), epoch(1.7404)]);
    /// assert!(w[0].starts_with("the training loss did not fall"), "{w:?}");
    /// assert!(p.warnings(&[epoch(1.2), epoch(0.8)]).is_empty());
    /// ```
    pub fn warnings(&self, epochs: &[EpochStats]) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.lr > MAX_USUAL_LR {
            warnings.push(format!(
                "--lr {:e} is above {MAX_USUAL_LR}: Adam moves every weight by about --lr a \
                 step, far beyond the weights' scale, so they do not settle and the model is \
                 likely poor (the default is 1e-3)",
                self.lr
            ));
        }
        if let [first, .., last] = epochs {
            let (a, b) = (first.train.loss, last.train.loss);
            if a - b <= MIN_LOSS_FALL * a.abs() {
                warnings.push(format!(
                    "the training loss did not fall over {} epochs ({a:.4} in the first, {b:.4} \
                     in the last): the model learned little; check --lr (now {:e})",
                    epochs.len(),
                    self.lr
                ));
            }
        }
        warnings
    }
}

/// The largest learning rate [`TrainParams::warnings`] does not warn of: Adam's steps are
/// about `lr` per weight, and the weights of a model of L2-normalised inputs are well below 1.
pub const MAX_USUAL_LR: f64 = 1.0;

/// The least fall of the training loss, from the first epoch to the last, as a fraction of
/// the first epoch's, that [`TrainParams::warnings`] does not warn of: a fit whose loss moved
/// less learned next to nothing (at `--lr 1e-7` the loss moved 0.01% in four epochs; at the
/// default `--lr` a few percent an epoch).
pub const MIN_LOSS_FALL: f64 = 1e-3;

/// Sparse gathers beat a GEMM when the codes are sparse enough. Measured with
/// `cargo bench --bench train` (B = 1024, D = 384, N = 1024, 2 threads): a whole step takes
/// 50 ms sparse vs 78 ms dense with 32 set bits, and 97 ms vs 83 ms with about 512; the lines
/// cross near N / 3 set bits. Switch at N / 4 to stay on the safe side of the noise.
fn auto_path(active_mean: f64, bits: usize) -> DecoderPath {
    if active_mean * 4.0 <= bits as f64 {
        DecoderPath::Sparse
    } else {
        DecoderPath::Dense
    }
}

/// Mean loss over `x` (in batches, no gradient).
pub fn evaluate_loss(
    p: &Params<f32>,
    x: ArrayView2<f32>,
    cfg: &ModelConfig,
    batch: usize,
    path: DecoderPath,
) -> BatchLoss {
    evaluate_loss_with(p, x, cfg, &Neighbourhood::default(), batch, path)
}

/// [`evaluate_loss`] with the neighbourhood term `nb`.
pub fn evaluate_loss_with(
    p: &Params<f32>,
    x: ArrayView2<f32>,
    cfg: &ModelConfig,
    nb: &Neighbourhood,
    batch: usize,
    path: DecoderPath,
) -> BatchLoss {
    let mut sum = BatchLoss::default();
    let mut timer = PhaseTimer::default();
    let mut ws = Workspace::default();
    for chunk in x.axis_chunks_iter(Axis(0), batch.max(1)) {
        let l = loss_and_grad_in(
            p,
            chunk,
            cfg,
            nb,
            CodeMode::Binary,
            path,
            None,
            &mut timer,
            &mut ws,
        );
        sum.add_weighted(&l, chunk.nrows() as f64);
    }
    sum.mean_over(x.nrows().max(1) as f64)
}

/// What [`TrainParams::fit`] reports as it goes.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A mini-batch step finished.
    Step {
        /// Zero-based epoch.
        epoch: usize,
        /// Zero-based step within the epoch.
        step: usize,
        /// Steps in each epoch.
        steps_per_epoch: usize,
        /// The batch's losses.
        loss: BatchLoss,
    },
    /// An epoch finished.
    Epoch(EpochStats),
}

/// Losses after one epoch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EpochStats {
    /// One-based epoch number.
    pub epoch: usize,
    /// Mean training losses over the epoch's steps.
    pub train: BatchLoss,
    /// Losses on the held-out rows with the weights at the end of the epoch.
    pub validation: Option<BatchLoss>,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Recall@10 of the validation probe ([`RecallProbe`]), when a monitor is set.
    pub validation_recall: Option<ProbeRecall>,
    /// Bits set for no validation row (with the probe).
    pub dead_bits: Option<usize>,
    /// Largest fraction of validation rows any bit is set for (with the probe).
    pub max_bit_freq: Option<f64>,
    /// Bits reset by [`TrainParams::rebalance_bits`] after this epoch.
    pub bits_reset: usize,
    /// Wall time since training started.
    pub seconds: f64,
}

/// Summary of a training run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrainReport {
    /// Rows trained on.
    pub train_rows: usize,
    /// Rows held out.
    pub validation_rows: usize,
    /// Per-epoch losses.
    pub epochs: Vec<EpochStats>,
    /// Wall time of the whole fit.
    pub seconds: f64,
    /// Training rows processed per second (epochs x rows / seconds).
    pub samples_per_sec: f64,
    /// Time per phase of the step.
    pub phase_seconds: Vec<(&'static str, f64)>,
    /// The decoder path used at the end.
    pub decoder_path: DecoderPath,
    /// The epoch whose weights were kept, when a monitor picked one.
    pub best_epoch: Option<usize>,
    /// True when patience ran out before the last epoch.
    pub stopped_early: bool,
    /// What makes the model likely poor although the fit finished ([`TrainParams::warnings`]):
    /// `bsa train` prints each as a warning, Python raises a `UserWarning`.
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negligible_entries_are_zeroed_relative_to_their_row() {
        assert_eq!(NEGLIGIBLE, 2f32.powi(-64));
        let floor = 2.0 * NEGLIGIBLE;
        // Row kinds: the largest is -2, so entries below 2^-63 go; an all-zero row; a row whose
        // entries are all tiny keeps them (the floor is relative, not absolute).
        let rows = [
            [-2.0, floor, floor * 0.75, -1e-37, 1e-12],
            [0.0; 5],
            [1e-30, -1e-31, 1e-36, 0.0, 1e-30],
        ];
        let want = [
            [-2.0, floor, 0.0, 0.0, 1e-12],
            [0.0; 5],
            [1e-30, -1e-31, 1e-36, 0.0, 1e-30],
        ];
        // More rows than one parallel task takes, so that every task's rows are checked.
        let n = 3 * ROWS_PER_TASK + 1;
        let mut x = Array2::from_shape_fn((n, 5), |(i, j)| rows[i % 3][j]);
        zero_negligible(&mut x);
        for (i, row) in x.rows().into_iter().enumerate() {
            assert_eq!(row.to_vec(), want[i % 3], "row {i}");
        }
    }
}
