//! Training: the BSA objective with its hand-derived backward pass ([`loss_and_grad`]), and the
//! fit loop ([`TrainParams::fit`]): shuffled mini-batches, Adam, a held-out validation slice,
//! divergence checks and per-phase timing.
//!
//! Five products per step (method.md): `H = X We^T`, `Xhat = C Wd^T`, `G_C = G_Xhat Wd`,
//! `dWd = G_Xhat^T C`, `dWe = G_H^T X`. Three are dense GEMMs (OpenBLAS). The two that involve the
//! binary code `C` can instead be computed as gathers and scatters over its set bits
//! ([`DecoderPath::Sparse`]): `B K D` work instead of `2 B N D`.

use std::time::{Duration, Instant};

use ndarray::{Array2, ArrayView2, Axis, Zip};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::loss::{distance_rows, topk_target};
use crate::model::{active_bits, sigmoid, Autoencoder, Method, ModelConfig, Params, Real};
use crate::optim::Adam;

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
    /// Alignment term (before the alpha weight).
    pub align: f64,
    /// Mean number of set bits per code.
    pub active_mean: f64,
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
    let alpha = F::from(cfg.effective_alpha()).unwrap();
    let b = x.nrows();
    let n = p.bits();

    let h = p.pre_activations(x);
    let s = h.mapv(sigmoid);
    timer.mark(Phase::Encode);

    // The code: a dense matrix when the dense path or the identity check needs one, and lists
    // of set bits when it is binary.
    let active = match mode {
        CodeMode::Binary => Some(active_bits(&h, cfg.method, cfg.k)),
        CodeMode::Identity => None,
    };
    let c_dense = match (&active, path) {
        (None, _) => Some(s.clone()),
        (Some(act), DecoderPath::Dense) => Some(dense_code(act, b, n)),
        (Some(_), DecoderPath::Sparse) => None,
    };
    let active_mean = match &active {
        Some(act) => act.iter().map(|a| a.len()).sum::<usize>() as f64 / b.max(1) as f64,
        None => s.sum().to_f64().unwrap() / b.max(1) as f64,
    };
    let t = (alpha > F::zero()).then(|| topk_target(s.view(), cfg.k, cfg.target));
    timer.mark(Phase::Code);

    let xhat = match (&c_dense, &active) {
        (Some(c), _) => p.decode_dense(c.view()),
        (None, Some(act)) => p.decode_sparse(act),
        (None, None) => unreachable!("a code is always present"),
    };
    timer.mark(Phase::Decode);

    let want_grad = grads.is_some();
    let mut g_xhat = want_grad.then(|| Array2::zeros(xhat.dim()));
    let rec = distance_rows(cfg.loss, xhat.view(), x, g_xhat.as_mut());
    let mut g_align = (want_grad && t.is_some()).then(|| Array2::zeros(s.dim()));
    let align = match &t {
        Some(t) => distance_rows(cfg.loss, s.view(), t.view(), g_align.as_mut()),
        None => F::zero(),
    };
    let loss = rec + alpha * align;
    timer.mark(Phase::Loss);

    if let (Some(g), Some(g_xhat)) = (grads, g_xhat) {
        g.bd = g_xhat.sum_axis(Axis(0));
        // Straight-through: dL/dS = dL/dC = G_Xhat Wd (B x D times D x N).
        let mut g_s = g_xhat.dot(&p.wd_t.t());
        if let Some(g_al) = &g_align {
            g_s.scaled_add(alpha, g_al);
        }
        // G_H = G_S * S (1 - S), in place.
        Zip::from(&mut g_s)
            .and(&s)
            .par_for_each(|g, &sv| *g = *g * sv * (F::one() - sv));
        g.we = g_s.t().dot(&x);
        g.be = g_s.sum_axis(Axis(0));
        timer.mark(Phase::Backward);

        g.wd_t = match (&c_dense, &active) {
            (Some(c), _) => c.t().dot(&g_xhat),
            (None, Some(act)) => scatter_rows(act, &g_xhat, n),
            (None, None) => unreachable!("a code is always present"),
        };
        timer.mark(Phase::DecoderGrad);
    }

    BatchLoss {
        loss: loss.to_f64().unwrap(),
        rec: rec.to_f64().unwrap(),
        align: align.to_f64().unwrap(),
        active_mean,
    }
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
/// `G[i]` of the codes that have bit j set. Inverting the lists first lets every output row be
/// written by one thread, so the sum order (and the result) does not depend on thread count.
fn scatter_rows<F: Real>(active: &[Vec<u32>], g: &Array2<F>, n: usize) -> Array2<F> {
    let mut rows_of_bit: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (i, set) in active.iter().enumerate() {
        for &j in set {
            rows_of_bit[j as usize].push(i as u32);
        }
    }
    let mut out = Array2::zeros((n, g.ncols()));
    Zip::from(out.axis_iter_mut(Axis(0)))
        .and(&rows_of_bit)
        .par_for_each(|mut row, rows| {
            for &i in rows {
                row += &g.row(i as usize);
            }
        });
    out
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
}

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
        self.config(dim).validate()?;
        if self.epochs == 0 {
            return Err(Error::InvalidArgument("--epochs must be at least 1".into()));
        }
        if self.batch == 0 {
            return Err(Error::InvalidArgument("--batch must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "--lr must be a positive number, got {}",
                self.lr
            )));
        }
        if !(0.0..0.5).contains(&self.val_fraction) {
            return Err(Error::InvalidArgument(format!(
                "validation fraction must be in [0, 0.5), got {}",
                self.val_fraction
            )));
        }
        if n < 2 {
            return Err(Error::InvalidArgument(format!(
                "need at least 2 training rows, got {n}"
            )));
        }
        Ok(())
    }

    /// Trains a model on the rows of `data`, calling `progress` after every step and epoch.
    /// Deterministic for a given seed and thread count.
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
        let (n, dim) = data.dim();
        self.validate(n, dim)?;
        let config = self.config(dim);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(self.seed);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let n_val = ((n as f64 * self.val_fraction).round() as usize).min(n - 1);
        let (train_rows, val_rows) = order.split_at(n - n_val);
        let mut train_rows = train_rows.to_vec();
        let val = data.select(Axis(0), val_rows);

        let mut params = Params::<f32>::init(self.bits, dim, self.seed ^ 0x5eed_b5a0);
        let mut grads = Params::<f32>::zeros(self.bits, dim);
        let mut adam = Adam::new(self.lr as f32, &params);
        let mut timer = PhaseTimer::default();
        let steps_per_epoch = train_rows.len().div_ceil(self.batch);
        let mut path = self.decoder_path.unwrap_or(DecoderPath::Dense);
        let mut report = TrainReport::default();
        let started = Instant::now();

        for epoch in 0..self.epochs {
            train_rows.shuffle(&mut rng);
            let mut sum = BatchLoss::default();
            for (step, rows) in train_rows.chunks(self.batch).enumerate() {
                let x = data.select(Axis(0), rows);
                timer.start();
                let l = loss_and_grad(
                    &params,
                    x.view(),
                    &config,
                    CodeMode::Binary,
                    path,
                    Some(&mut grads),
                    &mut timer,
                );
                if !l.loss.is_finite() {
                    return Err(Error::Diverged(format!(
                        "the loss became {} at epoch {}, step {}; lower --lr (now {}) or check \
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
                let w = rows.len() as f64;
                sum.loss += l.loss * w;
                sum.rec += l.rec * w;
                sum.align += l.align * w;
                sum.active_mean += l.active_mean * w;
                progress(&Progress::Step {
                    epoch,
                    step,
                    steps_per_epoch,
                    loss: l,
                });
            }
            if !params.all_finite() {
                return Err(Error::Diverged(format!(
                    "a weight became non-finite in epoch {}; lower --lr (now {})",
                    epoch + 1,
                    self.lr
                )));
            }
            let m = train_rows.len() as f64;
            let train = BatchLoss {
                loss: sum.loss / m,
                rec: sum.rec / m,
                align: sum.align / m,
                active_mean: sum.active_mean / m,
            };
            let validation = (val.nrows() > 0)
                .then(|| evaluate_loss(&params, val.view(), &config, self.batch, path));
            let stats = EpochStats {
                epoch: epoch + 1,
                train,
                validation,
                seconds: started.elapsed().as_secs_f64(),
            };
            progress(&Progress::Epoch(stats.clone()));
            report.epochs.push(stats);
        }
        let seconds = started.elapsed().as_secs_f64();
        report.train_rows = train_rows.len();
        report.validation_rows = n_val;
        report.seconds = seconds;
        report.samples_per_sec = (train_rows.len() * self.epochs) as f64 / seconds;
        report.phase_seconds = timer.seconds();
        report.decoder_path = path;
        Ok((Autoencoder { config, params }, report))
    }
}

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
    let mut sum = BatchLoss::default();
    let mut timer = PhaseTimer::default();
    for chunk in x.axis_chunks_iter(Axis(0), batch.max(1)) {
        let l = loss_and_grad(p, chunk, cfg, CodeMode::Binary, path, None, &mut timer);
        let w = chunk.nrows() as f64;
        sum.loss += l.loss * w;
        sum.rec += l.rec * w;
        sum.align += l.align * w;
        sum.active_mean += l.active_mean * w;
    }
    let m = x.nrows().max(1) as f64;
    BatchLoss {
        loss: sum.loss / m,
        rec: sum.rec / m,
        align: sum.align / m,
        active_mean: sum.active_mean / m,
    }
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
#[derive(Debug, Clone, Serialize)]
pub struct EpochStats {
    /// One-based epoch number.
    pub epoch: usize,
    /// Mean training losses over the epoch's steps.
    pub train: BatchLoss,
    /// Losses on the held-out rows with the weights at the end of the epoch.
    pub validation: Option<BatchLoss>,
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
}
