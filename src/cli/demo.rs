//! `bsa demo`: a short tour on the real sample in `bench-data/`: train, evaluate, search, and show
//! a few query sentences with their neighbours.

use std::path::{Path, PathBuf};

use anyhow::Context;
use std::time::Instant;

use bsa::metrics::recall_at_k;
use bsa::pursuit::PursuitParams;
use bsa::train::{Progress, TrainParams};
use bsa_index::{Index, IndexBuilder, Score, SearchParams, pack};

/// A short tour on the bundled WordNet sample (10k definitions embedded with all-MiniLM-L6-v2).
///
/// Trains a BSA model (N=1024, K=32), prints the paper's metrics, builds an index of the codes
/// and shows a few query sentences with the sentences of their nearest neighbours.
///
/// Examples:
///   bsa demo                                  # from a checkout: its bench-data/
///   bsa demo --epochs 3 --show 5 --work-dir demo-out
///   bsa demo --data-dir ~/bsa/bench-data      # a binary installed elsewhere
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Folder with base.npy, query.npy, base.txt, query.txt, gt_top100.npy (default:
    /// ./bench-data when it holds base.npy, else the bench-data folder of the source tree the
    /// binary was built from).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
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

/// `./bench-data` when it holds the sample (the README's command, run in a checkout), else the
/// source tree's, where `cargo build` put the binary.
fn default_data_dir() -> PathBuf {
    let here = PathBuf::from("bench-data");
    if here.join("base.npy").is_file() {
        here
    } else {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/bench-data"))
    }
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    bsa::threads::configure(a.threads)?;
    let dir = &a.data_dir.clone().unwrap_or_else(default_data_dir);
    let base = super::io::open_embeddings(&dir.join("base.npy"), super::io::ZeroRows::Refused)
        .with_context(|| {
            format!(
                "the demo needs the sample in {} (give its folder with --data-dir)",
                dir.display()
            )
        })?;
    let queries = super::io::open_embeddings(&dir.join("query.npy"), super::io::ZeroRows::Refused)?;
    queries.expect_dim(base.dim())?;
    // Everything that can be refused is, before the first line of the tour.
    let mut params = TrainParams::new(1024, 32);
    params.epochs = a.epochs;
    params.validate(base.n(), base.dim())?;
    let truth = super::io::read_ground_truth(&dir.join("gt_top100.npy"), queries.n(), base.n())?;
    let work = Workdir::prepare(a.work_dir.as_deref())?;
    outln!(
        "bsa demo: {} base and {} query vectors of dimension {} from {}",
        base.n(),
        queries.n(),
        base.dim(),
        dir.display()
    )?;

    outln!(
        "\n1. Training BSA (N={}, K={}, alpha={}, {} epochs)...",
        params.bits,
        params.k,
        params.alpha,
        params.epochs
    )?;
    let (model, report) = params.fit(base.view(), &mut |p| {
        if let Progress::Epoch(e) = p {
            // A closed stdout fails the next line written after the fit.
            let _ = outln!(
                "   epoch {:>2}: loss {:.4}  reconstruction {:.4}  active bits {:.1}",
                e.epoch,
                e.train.loss,
                e.train.rec,
                e.train.active_mean
            );
        }
    })?;
    outln!(
        "   {:.1}s, {:.0} samples/s",
        report.seconds,
        report.samples_per_sec
    )?;

    outln!("\n2. The paper's metrics on the queries:")?;
    let (metrics, _) = bsa::metrics::evaluate(&model, queries.view());
    super::eval::print_table(&metrics)?;

    let model_path = work.path().join("model.safetensors");
    bsa::io::model::save(&model_path, &model, &serde_json::json!({"demo": true}))?;

    outln!("\n3. Building an index of the base codes (with vectors for rescoring)...")?;
    let index_dir = work.path().join("index");
    let active = model.encode_active(base.view());
    let codes = pack::pack_set_bits(&active, model.config.bits)?;
    IndexBuilder::new(model.config.bits, &codes)
        .vectors(base.as_slice(), base.dim())
        .model_file(&model_path)
        .overwrite(true)
        .build(&index_dir)?;
    let index = Index::open(&index_dir)?;
    outln!(
        "   {} codes of {} bits ({} bytes each) in {}",
        index.len(),
        index.bits(),
        index.words_per_code() * 8,
        index_dir.display()
    )?;

    outln!("\n4. Searching the {} queries (k = 10):", queries.n())?;
    let q_codes = pack::pack_set_bits(&model.encode_active(queries.view()), model.config.bits)?;
    let params = SearchParams::default();
    let started = Instant::now();
    let hamming = index.search_flat(&q_codes, 10, &params)?;
    let flat_secs = started.elapsed().as_secs_f64();
    let oversample = 10;
    let started = Instant::now();
    let candidates = index.search_flat(&q_codes, 10 * oversample, &params)?;
    let rescored = index.rescore_hits(queries.as_slice(), &candidates, 10)?;
    let rescore_secs = started.elapsed().as_secs_f64();

    let ids = |hits: &[bsa_index::Hits]| hits.iter().map(|h| h.ids.clone()).collect::<Vec<_>>();
    outln!(
        "   Hamming:                     recall@10 {:.3}  ({:.0} queries/s)",
        recall_at_k(&ids(&hamming), &truth, 10),
        queries.n() as f64 / flat_secs
    )?;
    outln!(
        "   top {} by Hamming, rescored: recall@10 {:.3}  ({:.0} queries/s)",
        10 * oversample,
        recall_at_k(&ids(&rescored), &truth, 10),
        queries.n() as f64 / rescore_secs
    )?;

    // The honest reference: sign bits of the raw vectors (D bits, no training at all).
    let sign = |e: &bsa::io::Embeddings| -> anyhow::Result<Vec<u64>> {
        let bools: Vec<bool> = e.as_slice().iter().map(|&v| v > 0.0).collect();
        Ok(pack::pack_bools(&bools, e.n(), e.dim())?)
    };
    let sign_index_dir = work.path().join("sign-index");
    IndexBuilder::new(base.dim(), &sign(&base)?)
        .vectors(base.as_slice(), base.dim())
        .overwrite(true)
        .build(&sign_index_dir)?;
    let sign_index = Index::open(&sign_index_dir)?;
    let sign_q = sign(&queries)?;
    let sign_hits = sign_index.search_flat(&sign_q, 10, &params)?;
    let sign_cands = sign_index.search_flat(&sign_q, 10 * oversample, &params)?;
    let sign_rescored = sign_index.rescore_hits(queries.as_slice(), &sign_cands, 10)?;
    outln!(
        "   for comparison, sign bits of the raw vectors ({} bits, no training): \
         recall@10 {:.3}, rescored {:.3}",
        base.dim(),
        recall_at_k(&ids(&sign_hits), &truth, 10),
        recall_at_k(&ids(&sign_rescored), &truth, 10)
    )?;
    outln!("   (codes trained only to reconstruct retrieve worse than plain sign bits)")?;

    outln!(
        "\n5. Codes that retrieve: binary matching pursuit (--method pursuit, N=1024, K=16,\n   \
         4 rounds; 20 bytes per vector as ids), ranked by decoder ADC (--score adc)..."
    )?;
    let mut pursuit = PursuitParams::new(1024, 16);
    pursuit.rounds = 4;
    let started = Instant::now();
    let (dictionary, _) = pursuit.fit(base.view(), &mut |_| {})?;
    let pmodel = pursuit.model(base.dim(), dictionary);
    let p_active = pmodel.encode_active(base.view());
    let p_dir = work.path().join("pursuit-index");
    IndexBuilder::new(1024, &pack::pack_set_bits(&p_active, 1024)?)
        .vectors(base.as_slice(), base.dim())
        .norms(&pmodel.params.decoded_norms(&p_active))
        .overwrite(true)
        .build(&p_dir)?;
    let p_index = Index::open(&p_dir)?;
    let p_q = pack::pack_set_bits(&pmodel.encode_active(queries.view()), 1024)?;
    let (tables, offsets) = pmodel.adc_tables(queries.view())?;
    let adc = Score::Table {
        tables: &tables,
        offsets: &offsets,
        normalise: true,
    };
    let p_hits = p_index.search_flat_scored(&p_q, 40, &adc, &params)?;
    let p_rescored = p_index.rescore_hits(queries.as_slice(), &p_hits, 10)?;
    outln!(
        "   ADC recall@10 {:.3}, top 40 rescored {:.3}  ({:.1}s to learn, encode and build)",
        recall_at_k(&ids(&p_hits), &truth, 10),
        recall_at_k(&ids(&p_rescored), &truth, 10),
        started.elapsed().as_secs_f64()
    )?;

    let base_text = read_lines(&dir.join("base.txt"))?;
    let query_text = read_lines(&dir.join("query.txt"))?;
    for (qi, hits) in rescored.iter().enumerate().take(a.show) {
        outln!(
            "\n   query {qi}: {}",
            query_text.get(qi).map(String::as_str).unwrap_or("?")
        )?;
        for (rank, (&id, score)) in hits
            .ids
            .iter()
            .zip(hits.scores.as_deref().unwrap_or(&[]))
            .take(5)
            .enumerate()
        {
            let text = base_text
                .get(id as usize)
                .map(String::as_str)
                .unwrap_or("?");
            outln!("     {}. ({score:.3}) {text}", rank + 1)?;
        }
    }
    if let Workdir::Kept(d) = &work {
        outln!("\nModel and index kept in {}.", d.display())?;
    }
    Ok(())
}

fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .lines()
        .map(str::to_owned)
        .collect())
}

enum Workdir {
    Kept(PathBuf),
    Temp(tempfile::TempDir),
}

/// The file that marks a folder the demo made: it may write there again.
const DEMO_MARK: &str = ".bsa-demo";

impl Workdir {
    /// `dir` (created if missing), or a temporary folder. A folder that holds anything but an
    /// earlier demo's files (it has [`DEMO_MARK`]) is refused before the demo starts: the demo
    /// replaces `model.safetensors` and `index/` in it.
    fn prepare(dir: Option<&Path>) -> anyhow::Result<Workdir> {
        let Some(d) = dir else {
            return Ok(Workdir::Temp(super::io::temp_work_dir("bsa-demo-")?));
        };
        if d.exists() {
            let entries = std::fs::read_dir(d)
                .with_context(|| format!("--work-dir {}: not a readable folder", d.display()))?;
            if entries.count() > 0 && !d.join(DEMO_MARK).is_file() {
                anyhow::bail!(
                    "--work-dir {}: the folder holds files the demo did not make, and the demo \
                     replaces model.safetensors and index/ in it: give a new or empty folder",
                    d.display()
                );
            }
        }
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        std::fs::write(
            d.join(DEMO_MARK),
            "made by bsa demo: it may replace what is here\n",
        )
        .with_context(|| format!("writing {}", d.join(DEMO_MARK).display()))?;
        Ok(Workdir::Kept(d.to_path_buf()))
    }

    fn path(&self) -> &Path {
        match self {
            Workdir::Kept(p) => p,
            Workdir::Temp(t) => t.path(),
        }
    }
}
