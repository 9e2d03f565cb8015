//! `bsa train`: fit a BSA (or TopK) autoencoder, or one of the closed-form baselines (sign, LSH,
//! ITQ; [`bsa::baselines`]), and save it as a safetensors model file.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use bsa::baselines::BaselineParams;
use bsa::model::{Autoencoder, LossKind, Method, Target};
use bsa::pursuit::PursuitParams;
use bsa::train::{DecoderPath, Progress, TrainParams};
use serde_json::json;

use super::io::ZeroRows;

/// Train a model on float embeddings.
///
/// Examples:
///   bsa train --data base.npy --bits 1024 --k 32 --epochs 10 --out model.safetensors
///   bsa train --data base.npy --method itq --bits 256 --out itq.safetensors
///   bsa train --data base.npy --method sign --out sign.safetensors
///
/// The baselines sign, lsh and itq are fitted in closed form (no epochs), pursuit by rounds of
/// encoding and refitting: the gradient flags (--loss, --alpha, --target, --epochs, --batch,
/// --lr, --val-fraction, --decoder-path and the training aids) apply to bsa and topk only
/// (topk has no alignment term: --alpha and --target do not change it), --rounds, --ridge and
/// --init to pursuit, --itq-iterations to itq, --fit-rows to the others;
/// a flag the method does not read is refused. The baselines' decoder is a ridge least-squares
/// fit from the codes, on at most --fit-rows rows.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Float embeddings, n x D (.npy f32/f16/f64, or .fvecs).
    #[arg(long)]
    pub data: PathBuf,
    /// Code length N (bits per code). For sign it is the input dimension D and may be left out;
    /// for itq at most D.
    #[arg(
        long,
        allow_hyphen_values = true,
        required_if_eq_any([
            ("method", "bsa"), ("method", "topk"), ("method", "lsh"), ("method", "itq")
        ])
    )]
    pub bits: Option<usize>,
    /// Target number of active bits K. Required for bsa and topk; the baselines only record it
    /// for `bsa eval`'s Fixed-TopK metric (default bits / 2).
    #[arg(
        long,
        allow_hyphen_values = true,
        required_if_eq_any([("method", "bsa"), ("method", "topk")])
    )]
    pub k: Option<usize>,
    /// bsa (the paper), topk (k-hot codes, no alignment loss), pursuit (binary matching
    /// pursuit, codes made to retrieve: what --preset retrieval runs; see --rounds), or a
    /// baseline: sign (x_j > 0), lsh (signs of Gaussian projections), itq (PCA + learned
    /// rotation).
    #[arg(long, default_value = "bsa")]
    pub method: Method,
    /// Distance in both loss terms: cosine (the paper) or mse.
    #[arg(long, default_value = "cosine")]
    pub loss: LossKind,
    /// Weight of the alignment loss.
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub alpha: f64,
    /// Alignment target: khot (ones at the top K) or masked (activations at the top K).
    #[arg(long, default_value = "khot")]
    pub target: Target,
    /// Passes over the data.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Rows per mini-batch.
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3, allow_hyphen_values = true)]
    pub lr: f64,
    /// Seed for initialisation, validation split and shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction of rows held out to report a validation loss per epoch: from 0 (none) to below
    /// 0.5.
    #[arg(long, default_value_t = 0.05)]
    pub val_fraction: f64,
    /// How the code products are computed: auto (by measured density), sparse or dense.
    #[arg(long, default_value = "auto", value_parser = ["auto", "sparse", "dense"])]
    pub decoder_path: String,
    /// Training aid (not in the paper): learning-rate schedule, constant or cosine (half a
    /// cosine down to --final-lr-fraction x --lr at the last step).
    #[arg(long, default_value = "constant", value_parser = ["constant", "cosine"])]
    pub schedule: String,
    /// Training aid: epochs of linear learning-rate warm-up (fractions allowed).
    #[arg(long, default_value_t = 0.0)]
    pub warmup_epochs: f64,
    /// Training aid: where the cosine schedule ends, as a fraction of --lr.
    #[arg(long, default_value_t = 0.0)]
    pub final_lr_fraction: f64,
    /// Training aid: keep the weights of the epoch that is best by this validation measure:
    /// loss, or recall@10 of a probe on the validation rows (adc or hamming scores; at least 50
    /// validation rows).
    #[arg(long, value_parser = ["loss", "adc", "hamming"])]
    pub monitor: Option<String>,
    /// Training aid: stop after this many epochs without improvement of --monitor (0: never).
    #[arg(long, default_value_t = 0, requires = "monitor")]
    pub patience: usize,
    /// Training aid: only epochs whose validation codes set at most this many times K bits on
    /// average can be picked by --monitor (e.g. 1.25); none qualifying keeps the last epoch.
    #[arg(long, requires = "monitor")]
    pub monitor_max_active: Option<f64>,
    /// Validation rows that query the other validation rows in the --monitor recall probe.
    #[arg(long, default_value_t = 500)]
    pub probe_queries: usize,
    /// Training aid: start each encoder bias where its bit fires for about K of N rows.
    #[arg(long)]
    pub quantile_bias_init: bool,
    /// Training aid: after each epoch, reset the encoder bias of bits that fired for no row of
    /// a training sample or for more than --max-bit-freq of them (the decoder bias absorbs the
    /// change).
    #[arg(long)]
    pub rebalance_bits: bool,
    /// Firing frequency above which --rebalance-bits resets a bit.
    #[arg(long, default_value_t = 0.5)]
    pub max_bit_freq: f64,
    /// Training aid: weight of the in-batch neighbourhood term, which pulls the cosine
    /// similarities of the codes toward those of the inputs (0: off, the paper's objective).
    #[arg(long, default_value_t = 0.0)]
    pub neighbour_weight: f64,
    /// Rows of each batch the neighbourhood term is computed on (cost grows as rows^2).
    #[arg(long, default_value_t = 256)]
    pub neighbour_rows: usize,
    /// Closed-form methods: fit on at most this many rows (a seeded random sample). Default:
    /// 20,000 for the baselines' ITQ and decoder, all rows for pursuit.
    #[arg(long)]
    pub fit_rows: Option<usize>,
    /// Pursuit: encode/refit rounds.
    #[arg(long, default_value_t = 6)]
    pub rounds: usize,
    /// Pursuit: ridge strength of the decoder refit (relative to the codes' mean Gram diagonal).
    #[arg(long, default_value_t = 1e-3)]
    pub ridge: f64,
    /// Pursuit: start from the decoder atoms of this model file (e.g. a trained BSA model with
    /// the same --bits) instead of random directions.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// A named configuration. `retrieval`: the codes that win on the retrieval benchmark,
    /// binary matching pursuit with N = 4096, K = 32 (48 bytes per vector as 32 12-bit ids),
    /// 6 rounds; search them with `--score adc`. --bits, --k and --rounds still override.
    #[arg(long, value_parser = ["retrieval"], conflicts_with = "method")]
    pub preset: Option<String>,
    /// ITQ: rounds of B = sign(V R) and the Procrustes update of R.
    #[arg(long, default_value_t = bsa::baselines::DEFAULT_ITQ_ITERATIONS)]
    pub itq_iterations: usize,
    /// Threads for rayon and OpenBLAS (default: all cores). A trained model depends on it
    /// (BLAS sums in blocks that follow the threads): the same --seed and --threads give the
    /// same file, byte for byte, on the same kind of CPU (OpenBLAS picks its kernels per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print a JSON summary on stdout at the end.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Where to write the model (safetensors).
    #[arg(long)]
    pub out: PathBuf,
}

/// Refuses flags given on the command line (`given`, by field name) that `method` would ignore
/// ([`Method::reads`]): the model would not be what was asked.
fn refuse_unused(method: Method, label: &str, given: &[String]) {
    if let Some(unread) = method.unread(given, |f| format!("--{}", f.replace('_', "-"))) {
        clap::Error::raw(
            clap::error::ErrorKind::ArgumentConflict,
            format!("{label} does not read {unread}: leave them out\n"),
        )
        .exit()
    }
}

/// Refuses a setting given (`given`, by field name) without the aid it tunes, which then
/// ignores it: `--final-lr-fraction` without `--schedule cosine`, `--max-bit-freq` without
/// `--rebalance-bits`, `--neighbour-rows` without `--neighbour-weight`, `--probe-queries`
/// without `--monitor` (any: each reports the probe's recall per epoch).
fn refuse_orphans(a: &Args, given: &[String]) {
    let orphans = [
        (
            "final_lr_fraction",
            a.schedule == "cosine",
            "--schedule cosine, whose end it sets",
        ),
        (
            "max_bit_freq",
            a.rebalance_bits,
            "--rebalance-bits, whose threshold it is",
        ),
        (
            "neighbour_rows",
            a.neighbour_weight != 0.0,
            "--neighbour-weight above 0, the term it sizes",
        ),
        (
            "probe_queries",
            a.monitor.is_some(),
            "--monitor, whose per-epoch probe it sizes",
        ),
    ];
    for (field, used, needs) in orphans {
        if !used && given.iter().any(|g| g == field) {
            clap::Error::raw(
                clap::error::ErrorKind::MissingRequiredArgument,
                format!(
                    "--{} has no effect without {needs}: give that too, or leave it out\n",
                    field.replace('_', "-")
                ),
            )
            .exit()
        }
    }
}

/// `given`: the flags given on the command line, by field name (defaults are not refused).
pub fn run(a: &Args, given: &[String]) -> anyhow::Result<()> {
    match &a.preset {
        Some(p) => refuse_unused(Method::Pursuit, &format!("--preset {p}"), given),
        None => refuse_unused(a.method, &format!("--method {}", a.method), given),
    }
    refuse_orphans(a, given);
    super::io::refuse_clobbering(
        &a.out,
        true,
        &[("--data", Some(&a.data)), ("--init", a.init.as_deref())],
    )?;
    if a.json && super::io::is_stdout(&a.out) {
        // Both would go down one stream, and neither could be read from it.
        anyhow::bail!(
            "--json prints its summary on stdout, where --out {} writes the model: write the \
             model to a file, or leave out --json",
            a.out.display()
        );
    }
    // Ctrl-C stops the fit at its next step (or round), and no model is written.
    let stop = super::signals::stop_on_signal()?;
    if a.preset.is_some() || a.method == Method::Pursuit {
        return run_pursuit(a, &stop);
    }
    if a.method.is_baseline() {
        return run_baseline(a, &stop);
    }
    // clap requires both when --method bsa or topk is given, but not for the default method: a
    // usage error of the same form (exit code 2, `error: ...` on stderr) then.
    let missing = |flag: &str| {
        clap::Error::raw(
            clap::error::ErrorKind::MissingRequiredArgument,
            format!("{flag} is required for --method {}\n", a.method),
        )
        .exit()
    };
    let bits = a.bits.unwrap_or_else(|| missing("--bits"));
    let k = a.k.unwrap_or_else(|| missing("--k"));
    let threads = bsa::threads::configure(a.threads)?;
    let zero_rows = match a.loss {
        LossKind::Cosine => ZeroRows::Refused,
        LossKind::Mse => ZeroRows::Allowed,
    };
    let data = open_data(a, zero_rows)?;
    let mut params = TrainParams::new(bits, k);
    params.method = a.method;
    params.loss = a.loss;
    params.alpha = a.alpha;
    params.target = a.target;
    params.epochs = a.epochs;
    params.batch = a.batch;
    params.lr = a.lr;
    params.seed = a.seed;
    params.val_fraction = a.val_fraction;
    params.decoder_path = match a.decoder_path.as_str() {
        "sparse" => Some(DecoderPath::Sparse),
        "dense" => Some(DecoderPath::Dense),
        _ => None,
    };
    params.schedule = a.schedule.parse()?;
    params.warmup_epochs = a.warmup_epochs;
    params.final_lr_fraction = a.final_lr_fraction;
    params.monitor = a.monitor.as_deref().map(str::parse).transpose()?;
    params.patience = a.patience;
    params.monitor_max_active = a.monitor_max_active;
    params.probe_queries = a.probe_queries;
    params.quantile_bias_init = a.quantile_bias_init;
    params.rebalance_bits = a.rebalance_bits;
    params.max_bit_freq = a.max_bit_freq;
    params.neighbourhood.weight = a.neighbour_weight;
    params.neighbourhood.rows = a.neighbour_rows;
    params.validate(data.n(), data.dim())?;

    let steps = (data.n().div_ceil(a.batch) as u64).saturating_mul(a.epochs as u64);
    let pb = super::io::bar(
        steps,
        a.quiet,
        "{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}",
    );
    let mut on_progress = |p: &Progress| match p {
        Progress::Step { epoch, loss, .. } => {
            pb.inc(1);
            pb.set_message(format!(
                "epoch {} loss {:.4} active {:.1}",
                epoch + 1,
                loss.loss,
                loss.active_mean
            ));
        }
        Progress::Epoch(e) => {
            let val = e
                .validation
                .map(|v| {
                    format!(
                        ", validation loss {:.4} rec {:.4} active {:.1}",
                        v.loss, v.rec, v.active_mean
                    )
                })
                .unwrap_or_default();
            let probe = e
                .validation_recall
                .map(|r| {
                    format!(
                        ", probe recall@10 hamming {:.3} adc {:.3}, dead bits {}, max bit \
                         frequency {:.3}",
                        r.hamming,
                        r.adc,
                        e.dead_bits.unwrap_or(0),
                        e.max_bit_freq.unwrap_or(0.0)
                    )
                })
                .unwrap_or_default();
            let reset = if e.bits_reset > 0 {
                format!(", {} bits reset", e.bits_reset)
            } else {
                String::new()
            };
            pb.println(format!(
                "epoch {:>3}: loss {:.4} rec {:.4} align {:.4} active {:.1}{val}{probe}{reset}",
                e.epoch, e.train.loss, e.train.rec, e.train.align, e.train.active_mean
            ));
        }
    };
    let (model, report) = params.fit_until(data.view(), &mut on_progress, &stop)?;
    pb.finish_and_clear();
    for w in &report.warnings {
        errln!("bsa: warning: {w}");
    }
    warn_if_one_code(&model, &data, a);

    // The losses of the weights that were kept: the best epoch's with --monitor.
    let last = match report.best_epoch {
        Some(e) => report.epochs.get(e - 1),
        None => report.epochs.last(),
    }
    .context("no epoch ran")?;
    let phases: serde_json::Map<String, serde_json::Value> = report
        .phase_seconds
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let training = json!({
        "data": a.data.display().to_string(),
        "rows": data.n(),
        "settings": params.as_trained(),
        "threads": threads,
        "epochs_run": report.epochs.len(),
        "train_loss": last.train.loss,
        "validation_loss": last.validation.map(|v| v.loss),
        // No timings here: the same data, settings and seed must give a byte-identical file.
    });
    bsa::io::model::save(&a.out, &model, &training)?;

    let summary = json!({
        "type": "summary",
        "model": a.out.display().to_string(),
        "n": data.n(),
        "dim": data.dim(),
        "bits": bits,
        "k": k,
        "method": a.method.to_string(),
        "loss": a.loss.to_string(),
        // As the model records them (TopK's are its own: alpha 0, k-hot).
        "alpha": model.config.alpha,
        "target": model.config.target.to_string(),
        "epochs": a.epochs,
        "epochs_run": report.epochs.len(),
        "batch": a.batch,
        "lr": a.lr,
        "seed": a.seed,
        "threads": threads,
        // What ran the step: the trainer's vector loops and OpenBLAS's GEMM kernels.
        "kernel": bsa::simd::Family::current().name(),
        "blas_core": bsa::threads::blas_core_name(),
        "train_loss": last.train.loss,
        "train_reconstruction": last.train.rec,
        "train_alignment": last.train.align,
        "train_active_mean": last.train.active_mean,
        "validation_loss": last.validation.map(|v| v.loss),
        "validation_reconstruction": last.validation.map(|v| v.rec),
        "validation_active_mean": last.validation.map(|v| v.active_mean),
        "seconds": report.seconds,
        "samples_per_sec": report.samples_per_sec,
        "decoder_path": report.decoder_path,
        "best_epoch": report.best_epoch,
        "stopped_early": report.stopped_early,
        "warnings": report.warnings,
        "phase_seconds": phases,
        "history": report.epochs,
    });
    finish(
        a,
        &summary,
        format!(
            "trained {} epochs on {} rows in {:.1}s ({:.0} samples/s); wrote {}",
            report.epochs.len(),
            report.train_rows,
            report.seconds,
            report.samples_per_sec,
            a.out.display()
        ),
    )
}

/// Opens `--data` ([`super::io::open_embeddings`]) with at least the two rows every method
/// needs, or says which file has too few.
fn open_data(a: &Args, zero_rows: ZeroRows) -> anyhow::Result<bsa::io::Embeddings> {
    let data = super::io::open_embeddings(&a.data, zero_rows)?;
    if data.n() < 2 {
        anyhow::bail!(
            "{}: {} row; training needs at least 2",
            a.data.display(),
            data.n()
        );
    }
    // `--preset` runs pursuit whatever `--method` says.
    let method = if a.preset.is_some() {
        Method::Pursuit
    } else {
        a.method
    };
    bsa::io::check_float32_norms(&a.data.display().to_string(), data.view())?;
    super::io::warn_if_not_unit(&data, method);
    Ok(data)
}

/// Says on stderr when the model gives every row one code ([`Autoencoder::one_code_warning`]).
fn warn_if_one_code(model: &Autoencoder, data: &bsa::io::Embeddings, a: &Args) {
    if let Some(w) = model.one_code_warning(data.view(), &a.data.display().to_string()) {
        errln!("bsa: warning: {w}");
    }
}

/// `bsa train --method sign|lsh|itq`: a closed-form fit, saved like a trained model.
fn run_baseline(a: &Args, stop: &AtomicBool) -> anyhow::Result<()> {
    let threads = bsa::threads::configure(a.threads)?;
    let data = open_data(a, ZeroRows::Refused)?;
    let bits = match (a.method, a.bits) {
        (_, Some(bits)) => bits,
        (Method::Sign, None) => data.dim(),
        (m, None) => anyhow::bail!("--bits is required for --method {m}"),
    };
    let mut params = BaselineParams::new(a.method, bits);
    if let Some(k) = a.k {
        params.k = k;
    }
    params.seed = a.seed;
    params.fit_rows = a.fit_rows.unwrap_or(bsa::baselines::DEFAULT_FIT_ROWS);
    params.itq_iterations = a.itq_iterations;
    params.validate(data.dim())?;

    let pb = super::io::bar(0, a.quiet, "{elapsed_precise} {spinner} {msg}");
    pb.set_message(format!(
        "fitting {} ({} bits) on {} rows",
        a.method,
        bits,
        data.n().min(params.fit_rows)
    ));
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    let (model, report) = params.fit_until(data.view(), stop)?;
    pb.finish_and_clear();
    warn_if_one_code(&model, &data, a);

    let training = json!({
        "data": a.data.display().to_string(),
        "rows": data.n(),
        "settings": params,
        "threads": threads,
        "epochs_run": 0,
        "fit_rows": report.fit_rows,
        "train_reconstruction": report.reconstruction,
        "quantization_loss": report.quantization_loss.last(),
        // No timings here: the same data, settings and seed must give a byte-identical file.
    });
    bsa::io::model::save(&a.out, &model, &training)?;

    let c = &model.config;
    let summary = json!({
        "type": "summary",
        "model": a.out.display().to_string(),
        "n": data.n(),
        "dim": data.dim(),
        "bits": c.bits,
        "k": c.k,
        "method": c.method.to_string(),
        "loss": c.loss.to_string(),
        "alpha": c.alpha,
        "target": c.target.to_string(),
        "epochs": 0,
        "seed": a.seed,
        "threads": threads,
        "fit_rows": report.fit_rows,
        "itq_iterations": (c.method == Method::Itq).then_some(a.itq_iterations),
        // The baselines' only loss is the decoder's reconstruction (alpha 0), on the fit rows.
        "train_loss": report.reconstruction,
        "train_reconstruction": report.reconstruction,
        "train_reconstruction_mse": report.reconstruction_mse,
        "train_alignment": 0.0,
        "train_active_mean": report.active_mean,
        "validation_loss": null,
        "validation_reconstruction": null,
        "validation_active_mean": null,
        "quantization_loss": report.quantization_loss,
        "seconds": report.seconds,
        "samples_per_sec": report.samples_per_sec,
        "phase_seconds": {"encoder": report.encoder_seconds, "decoder": report.decoder_seconds},
        "history": [],
    });
    finish(
        a,
        &summary,
        format!(
            "fitted {} ({} bits) on {} rows in {:.1}s; wrote {}",
            c.method,
            c.bits,
            report.fit_rows,
            report.seconds,
            a.out.display()
        ),
    )
}

/// `bsa train --method pursuit` (and `--preset retrieval`): binary dictionary learning.
fn run_pursuit(a: &Args, stop: &AtomicBool) -> anyhow::Result<()> {
    let threads = bsa::threads::configure(a.threads)?;
    let data = open_data(a, ZeroRows::Refused)?;
    let retrieval = a.preset.as_deref() == Some("retrieval");
    let (bits, k) = match (a.bits, a.k, retrieval) {
        (b, k, true) => (b.unwrap_or(4096), k.unwrap_or(32)),
        (Some(b), Some(k), false) => (b, k),
        _ => anyhow::bail!("--method pursuit needs --bits and --k (or use --preset retrieval)"),
    };
    let mut params = PursuitParams::new(bits, k);
    params.rounds = a.rounds;
    params.ridge = a.ridge;
    params.seed = a.seed;
    params.fit_rows = a.fit_rows;

    let pb = super::io::bar(
        a.rounds as u64,
        a.quiet,
        "{elapsed_precise} [{bar:30}] round {pos}/{len} {msg}",
    );
    let init = match &a.init {
        Some(path) => {
            let m = bsa::io::model::load(path)?;
            if m.config.bits != bits || m.config.dim != data.dim() {
                // The remedy depends on what differs: the length is a flag, the dimension data.
                let remedy = if m.config.dim != data.dim() {
                    format!(
                        "continue it on {}-d data, or start from a model of {}-d data",
                        m.config.dim,
                        data.dim()
                    )
                } else {
                    format!("pass --bits {}", m.config.bits)
                };
                anyhow::bail!(
                    "{}: a model of {} bits for {}-d data cannot start a pursuit of {bits} bits \
                     on {}-d data ({remedy})",
                    path.display(),
                    m.config.bits,
                    m.config.dim,
                    data.dim(),
                );
            }
            Some(m.params.wd_t)
        }
        None => None,
    };
    let started = std::time::Instant::now();
    let (dictionary, history) = params.fit_until(
        data.view(),
        init.as_ref().map(|w| w.view()),
        &mut |r| {
            pb.inc(1);
            pb.println(format!(
                "round {:>2}: reconstruction {:.4}, {} dead atoms re-seeded, {:.1}s",
                r.round, r.reconstruction_loss, r.dead_atoms_reseeded, r.seconds
            ));
        },
        stop,
    )?;
    pb.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let last = history.last().context("no round ran")?;
    // The model's own figure (what `bsa eval` says on these rows): a round's decodes the codes
    // its dictionary was refitted to, which the finished model would encode differently.
    // On the rows it was fitted on (a --fit-rows sample), as the rounds' figures are.
    let reconstruction = params.fit_reconstruction(&dictionary, data.view(), stop)?;
    let model = params.model(data.dim(), dictionary);
    warn_if_one_code(&model, &data, a);
    let training = json!({
        "data": a.data.display().to_string(),
        "rows": data.n(),
        "preset": a.preset,
        "settings": params,
        "init": a.init.as_ref().map(|p| p.display().to_string()),
        "threads": threads,
        "reconstruction_loss": reconstruction,
        // No timings here: the same data, settings and seed must give a byte-identical file.
    });
    bsa::io::model::save(&a.out, &model, &training)?;
    let fit_rows = a.fit_rows.unwrap_or(data.n()).min(data.n());
    let summary = json!({
        "type": "summary",
        "model": a.out.display().to_string(),
        "n": data.n(),
        "dim": data.dim(),
        "bits": bits,
        "k": k,
        "method": "pursuit",
        "preset": a.preset,
        "rounds": a.rounds,
        "ridge": a.ridge,
        "seed": a.seed,
        "threads": threads,
        "fit_rows": fit_rows,
        "train_loss": reconstruction,
        "train_reconstruction": reconstruction,
        "last_round_reconstruction": last.reconstruction_loss,
        "train_active_mean": k,
        "validation_loss": null,
        "seconds": seconds,
        "samples_per_sec": (fit_rows * a.rounds) as f64 / seconds,
        "history": history,
    });
    finish(
        a,
        &summary,
        format!(
            "learned a {bits}-atom dictionary (K = {k}) in {} rounds on {fit_rows} rows in \
             {seconds:.1}s; it reconstructs them at {reconstruction:.4} (mean cosine \
             distance); wrote {}",
            a.rounds,
            a.out.display()
        ),
    )
}

/// Prints the JSON summary on stdout with `--json`, else a one-line message on stderr.
fn finish(a: &Args, summary: &serde_json::Value, message: String) -> anyhow::Result<()> {
    if a.json {
        super::io::print_json(summary)
    } else {
        errln!("bsa: {message}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// Every flag of `bsa train` is a setting `Method::readers` knows: one it did not would be
    /// taken as read by every method, and never refused.
    #[test]
    fn every_flag_is_a_known_setting() {
        let cmd = <super::Args as clap::Args>::augment_args(clap::Command::new("train"));
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            assert!(
                bsa::model::Method::knows(id),
                "--{id} is not in Method::readers"
            );
        }
    }
}
