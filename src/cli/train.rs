//! `bsa train`: fit a BSA (or TopK) autoencoder and save it as a safetensors model file.

use std::path::PathBuf;

use anyhow::Context;
use bsa::model::{LossKind, Method, Target};
use bsa::train::{DecoderPath, Progress, TrainParams};
use serde_json::json;

/// Train a model on float embeddings.
///
/// Example:
///   bsa train --data base.npy --bits 1024 --k 32 --epochs 10 --out model.safetensors
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Float embeddings, n x D (.npy f32/f16/f64, or .fvecs).
    #[arg(long)]
    pub data: PathBuf,
    /// Code length N (bits per code).
    #[arg(long)]
    pub bits: usize,
    /// Target number of active bits K.
    #[arg(long)]
    pub k: usize,
    /// bsa (the paper) or topk (k-hot codes, no alignment loss).
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
    /// Fraction of rows held out to report a validation loss per epoch.
    #[arg(long, default_value_t = 0.05)]
    pub val_fraction: f64,
    /// How the code products are computed: auto (by measured density), sparse or dense.
    #[arg(long, default_value = "auto", value_parser = ["auto", "sparse", "dense"])]
    pub decoder_path: String,
    /// Threads for rayon and OpenBLAS (default: all cores).
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

pub fn run(a: &Args) -> anyhow::Result<()> {
    let threads = bsa::threads::configure(a.threads)?;
    let data = super::open_embeddings(&a.data, a.loss == LossKind::Cosine)?;
    let mut params = TrainParams::new(a.bits, a.k);
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
    params.validate(data.n(), data.dim())?;

    let steps = data.n().div_ceil(a.batch) as u64 * a.epochs as u64;
    let pb = super::bar(
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
            pb.println(format!(
                "epoch {:>3}: loss {:.4} rec {:.4} align {:.4} active {:.1}{val}",
                e.epoch, e.train.loss, e.train.rec, e.train.align, e.train.active_mean
            ));
        }
    };
    let (model, report) = params.fit(data.view(), &mut on_progress)?;
    pb.finish_and_clear();

    let last = report.epochs.last().context("no epoch ran")?;
    let phases: serde_json::Map<String, serde_json::Value> = report
        .phase_seconds
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let training = json!({
        "data": a.data.display().to_string(),
        "rows": data.n(),
        "settings": params,
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
        "bits": a.bits,
        "k": a.k,
        "method": a.method.to_string(),
        "loss": a.loss.to_string(),
        "alpha": a.alpha,
        "target": a.target.to_string(),
        "epochs": a.epochs,
        "batch": a.batch,
        "lr": a.lr,
        "seed": a.seed,
        "threads": threads,
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
        "phase_seconds": phases,
        "history": report.epochs,
    });
    if a.json {
        super::print_json(&summary)?;
    } else {
        eprintln!(
            "bsa: trained {} epochs on {} rows in {:.1}s ({:.0} samples/s); wrote {}",
            report.epochs.len(),
            report.train_rows,
            report.seconds,
            report.samples_per_sec,
            a.out.display()
        );
    }
    Ok(())
}
