//! `bsa demo`: a short tour on the real sample in `bench-data/`: train, evaluate, search, and show
//! a few query sentences with their neighbours.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bsa::train::{Progress, TrainParams};

/// A short tour on the bundled WordNet sample (10k definitions embedded with all-MiniLM-L6-v2).
///
/// Trains a BSA model (N=1024, K=32), prints the paper's metrics, builds an index of the codes
/// and shows a few query sentences with the sentences of their nearest neighbours.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder with base.npy, query.npy, base.txt, query.txt, gt_top100.npy.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/bench-data"))]
    pub data_dir: PathBuf,
    /// Epochs of training.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Queries to show.
    #[arg(long, default_value_t = 3)]
    pub show: usize,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where to keep the model and index (default: a temporary folder, removed at the end).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    bsa::threads::configure(a.threads)?;
    let dir = &a.data_dir;
    let base = super::open_embeddings(&dir.join("base.npy"), true)
        .with_context(|| format!("the demo needs the sample in {}", dir.display()))?;
    let queries = super::open_embeddings(&dir.join("query.npy"), true)?;
    queries.expect_dim(base.dim())?;
    println!(
        "bsa demo: {} base and {} query vectors of dimension {} from {}",
        base.n(),
        queries.n(),
        base.dim(),
        dir.display()
    );

    let mut params = TrainParams::new(1024, 32);
    params.epochs = a.epochs;
    println!(
        "\n1. Training BSA (N={}, K={}, alpha={}, {} epochs)...",
        params.bits, params.k, params.alpha, params.epochs
    );
    let (model, report) = params.fit(base.view(), &mut |p| {
        if let Progress::Epoch(e) = p {
            println!(
                "   epoch {:>2}: loss {:.4}  reconstruction {:.4}  active bits {:.1}",
                e.epoch, e.train.loss, e.train.rec, e.train.active_mean
            );
        }
    })?;
    println!(
        "   {:.1}s, {:.0} samples/s",
        report.seconds, report.samples_per_sec
    );

    println!("\n2. The paper's metrics on the queries:");
    let (metrics, _) = bsa::metrics::evaluate(&model, queries.view());
    super::eval::print_table(&metrics);

    let work = match &a.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            Workdir::Kept(d.clone())
        }
        None => Workdir::Temp(tempfile::tempdir().context("creating a temporary folder")?),
    };
    let model_path = work.path().join("model.safetensors");
    bsa::io::model::save(&model_path, &model, &serde_json::json!({"demo": true}))?;
    println!("\n   model saved to {}", model_path.display());
    Ok(())
}

enum Workdir {
    Kept(PathBuf),
    Temp(tempfile::TempDir),
}

impl Workdir {
    fn path(&self) -> &Path {
        match self {
            Workdir::Kept(p) => p,
            Workdir::Temp(t) => t.path(),
        }
    }
}
