//! The benchmark behind `bsa bench`: for every cell of a grid (method x N x K) fit the codes,
//! encode base and queries, build an index in a temporary folder and measure the paper's
//! metrics, bytes per vector, recall by Hamming, rescored, cosine-overlap and ADC scoring, and
//! timings. [`write_report`] writes `results.json`, `report.md` and SVG plots.
//!
//! Recall is [`crate::metrics::recall_at_k`] against exact cosine ground truth; Hamming ties are
//! broken by lower row (the index's order), so every figure is deterministic.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::baselines::BaselineParams;
use crate::error::{Error, Result};
use crate::metrics::{recall_at_k, CodeStats, PaperMetrics};
use crate::model::{Autoencoder, LossKind, Method, ModelConfig, Target};
use crate::plot::{chart, histogram, Series};
use crate::pursuit::PursuitParams;
use crate::train::{Progress, TrainParams};
use bsa_index::{pack, Hits, HnswParams, Index, IndexBuilder, Score, SearchParams};

/// A code method of the benchmark: a model method plus, for BSA, the paper's ablations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Variant {
    /// Sign bits of the raw vector (N = D).
    Sign,
    /// SimHash: signs of N Gaussian projections.
    Lsh,
    /// Iterative quantization (N <= D).
    Itq,
    /// TopK autoencoder (exactly K bits).
    Topk,
    /// BSA, the paper (alpha 1, cosine).
    Bsa,
    /// BSA without the alignment loss (alpha 0).
    BsaAlpha0,
    /// BSA with mean squared error in both terms.
    BsaMse,
    /// BSA (alpha 1, cosine) with healthy bits: encoder biases start at the quantile that fires
    /// each bit for about K of N rows, and bits that are dead or fire for more than half of the
    /// rows are reset after each epoch (benches/RESULTS-training.md).
    BsaHealthy,
    /// Binary matching pursuit (exactly K bits).
    Pursuit,
}

impl Variant {
    /// Every variant, in report order.
    pub const ALL: [Variant; 9] = [
        Variant::Sign,
        Variant::Lsh,
        Variant::Itq,
        Variant::Topk,
        Variant::Bsa,
        Variant::BsaAlpha0,
        Variant::BsaMse,
        Variant::BsaHealthy,
        Variant::Pursuit,
    ];

    /// The name used on the command line and in `results.json`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Sign => "sign",
            Variant::Lsh => "lsh",
            Variant::Itq => "itq",
            Variant::Topk => "topk",
            Variant::Bsa => "bsa",
            Variant::BsaAlpha0 => "bsa-alpha0",
            Variant::BsaMse => "bsa-mse",
            Variant::BsaHealthy => "bsa-healthy",
            Variant::Pursuit => "pursuit",
        }
    }

    /// Parses [`name`](Self::name).
    pub fn parse(s: &str) -> Result<Variant> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown bench method {s:?}; known: {}",
                    Variant::ALL.map(Variant::name).join(", ")
                ))
            })
    }

    /// True when the codes use K (trained methods and pursuit); the baselines ignore it.
    pub fn uses_k(self) -> bool {
        !matches!(self, Variant::Sign | Variant::Lsh | Variant::Itq)
    }

    /// True when every code has exactly K bits set, so it can be stored as K ids.
    pub fn exactly_k(self) -> bool {
        matches!(self, Variant::Topk | Variant::Pursuit)
    }
}

/// One cell of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cell {
    /// The method.
    pub variant: Variant,
    /// Code length N.
    pub bits: usize,
    /// Target active bits K (None for sign, LSH and ITQ).
    pub k: Option<usize>,
    /// BSA only: the alignment weight of an alpha-sweep cell (None: the variant's own alpha).
    pub alpha: Option<f64>,
    /// Also build an HNSW graph and measure recall against QPS over `ef`.
    pub hnsw: bool,
}

impl Cell {
    /// `method N=.. K=..`, for progress messages and tables.
    pub fn label(&self) -> String {
        let mut s = format!("{} N={}", self.variant.name(), self.bits);
        if let Some(k) = self.k {
            let _ = write!(s, " K={k}");
        }
        if let Some(a) = self.alpha {
            let _ = write!(s, " alpha={a}");
        }
        s
    }

    /// A file-name-safe form of [`label`](Self::label), naming the cell's cache folder.
    pub fn slug(&self) -> String {
        let mut s = format!("{}-{}", self.variant.name(), self.bits);
        if let Some(k) = self.k {
            let _ = write!(s, "-k{k}");
        }
        if let Some(a) = self.alpha {
            let _ = write!(s, "-a{a}");
        }
        s
    }

    /// The alignment weight BSA variants train with (None for other methods).
    pub fn effective_alpha(&self) -> Option<f64> {
        match self.variant {
            Variant::Bsa | Variant::BsaMse | Variant::BsaHealthy => {
                Some(self.alpha.unwrap_or(TrainParams::new(self.bits, 1).alpha))
            }
            Variant::BsaAlpha0 => Some(0.0),
            _ => None,
        }
    }
}

/// Which cells also get an HNSW graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HnswCells {
    /// The preset's choice: sign and pursuit in the quick grid; in the paper grid one cell per method at the
    /// budget of the paper's headline model (N = 1024, K = 32; sign and ITQ at N = D), and
    /// pursuit at N = 4096, K = 32 (`bsa train --preset retrieval`).
    Preset,
    /// Every cell.
    All,
    /// None.
    None,
}

/// A named grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Minutes on the bench-data sample: sign, lsh (N=256), itq (N=128 or D), topk, bsa and
    /// bsa-healthy (N=512, K=16, 3 epochs), pursuit (N=1024, K=16, 2 rounds).
    Quick,
    /// The paper-scale grid: N in {512, 1024, 2048, 4096} x K in {8, 16, 32, 64}, every method
    /// and ablation, and the alpha sweep (107 cells on 384-d data), 10 epochs, 6 pursuit rounds.
    /// Hours on 2 cores for 100k vectors (not run in CI; `--cache` lets it run in pieces).
    Paper,
}

impl Preset {
    /// Epochs of the trained methods.
    pub fn epochs(self) -> usize {
        match self {
            Preset::Quick => 3,
            Preset::Paper => 10,
        }
    }

    /// Pursuit rounds.
    pub fn rounds(self) -> usize {
        match self {
            Preset::Quick => 2,
            Preset::Paper => 6,
        }
    }

    /// Methods run by default.
    pub fn methods(self) -> Vec<Variant> {
        match self {
            Preset::Quick => vec![
                Variant::Sign,
                Variant::Lsh,
                Variant::Itq,
                Variant::Topk,
                Variant::Bsa,
                Variant::BsaHealthy,
                Variant::Pursuit,
            ],
            Preset::Paper => Variant::ALL.to_vec(),
        }
    }
}

/// The cells for `methods` on data of dimension `dim`. With `bits` and `ks` given, every method
/// runs on every N (and every K < N for the methods that use K); sign always has N = D, ITQ at
/// most D. Without them, the preset's sizes: quick has one size per method, paper the full grid.
/// `alphas` adds an alpha sweep of BSA (when `bsa` is among the methods) at the given sizes, or
/// at N = 1024, K = 32 for the paper preset; the paper preset sweeps
/// [`PAPER_ALPHAS`] unless `alphas` is given.
pub fn cells(
    preset: Preset,
    methods: &[Variant],
    bits: Option<&[usize]>,
    ks: Option<&[usize]>,
    alphas: Option<&[f64]>,
    hnsw: HnswCells,
    dim: usize,
) -> Vec<Cell> {
    let paper_bits = [512, 1024, 2048, 4096];
    let paper_ks = [8, 16, 32, 64];
    let mut out: Vec<Cell> = Vec::new();
    let hnsw_for = |v: Variant, n: usize, k: Option<usize>| match hnsw {
        HnswCells::All => true,
        HnswCells::None => false,
        HnswCells::Preset => match preset {
            // Graphs cost more than the rest of a quick cell: one dense and one sparse code.
            Preset::Quick => matches!(v, Variant::Sign | Variant::Pursuit),
            Preset::Paper => match v {
                Variant::Sign | Variant::Itq => true,
                Variant::Lsh => n == 1024,
                Variant::Pursuit => k == Some(32) && (n == 1024 || n == 4096),
                _ => n == 1024 && k == Some(32),
            },
        },
    };
    let mut push = |v: Variant, n: usize, k: Option<usize>, alpha: Option<f64>| {
        push_unique(
            &mut out,
            Cell {
                variant: v,
                bits: n,
                k,
                alpha,
                hnsw: hnsw == HnswCells::All || (alpha.is_none() && hnsw_for(v, n, k)),
            },
        )
    };
    for &v in methods {
        let kk: Vec<usize> = match (ks, preset) {
            (Some(k), _) => k.to_vec(),
            (None, Preset::Paper) => paper_ks.to_vec(),
            (None, Preset::Quick) => vec![16],
        };
        let ns: Vec<usize> = match (bits, preset) {
            (Some(b), _) => b.to_vec(),
            (None, Preset::Paper) => paper_bits.to_vec(),
            (None, Preset::Quick) => match v {
                Variant::Lsh => vec![256],
                Variant::Itq => vec![128],
                Variant::Pursuit => vec![1024],
                _ => vec![512],
            },
        };
        for &n in &ns {
            let n = match v {
                Variant::Sign => dim,
                Variant::Itq => n.min(dim),
                _ => n,
            };
            if v.uses_k() {
                for &k in kk.iter().filter(|&&k| k > 0 && k < n) {
                    push(v, n, Some(k), None);
                }
            } else {
                push(v, n, None, None);
            }
        }
    }
    let sweep: &[f64] = match (alphas, preset) {
        (Some(a), _) => a,
        (None, Preset::Paper) => &PAPER_ALPHAS,
        (None, Preset::Quick) => &[],
    };
    if methods.contains(&Variant::Bsa) && !sweep.is_empty() {
        let ns = bits.map(<[usize]>::to_vec).unwrap_or_else(|| match preset {
            Preset::Paper => vec![PAPER_HEADLINE.0],
            Preset::Quick => vec![512],
        });
        let kk = ks.map(<[usize]>::to_vec).unwrap_or_else(|| match preset {
            Preset::Paper => vec![PAPER_HEADLINE.1],
            Preset::Quick => vec![16],
        });
        for &n in &ns {
            for &k in kk.iter().filter(|&&k| k > 0 && k < n) {
                for &a in sweep {
                    // The default alpha is the bsa cell itself.
                    let default = TrainParams::new(n, k).alpha;
                    if a != default {
                        push(Variant::Bsa, n, Some(k), Some(a));
                    }
                }
            }
        }
    }
    out
}

/// The paper's headline size `(N, K)`: where the paper preset sweeps alpha, and the BSA cell
/// whose bit histograms the report shows when the grid has it.
pub const PAPER_HEADLINE: (usize, usize) = (1024, 32);

/// The alpha sweep of the paper preset (BSA, N = 1024, K = 32), besides alpha = 0 and 1, which
/// are the `bsa-alpha0` and `bsa` cells.
pub const PAPER_ALPHAS: [f64; 5] = [0.03, 0.1, 0.3, 3.0, 10.0];

fn push_unique(out: &mut Vec<Cell>, c: Cell) {
    if !out.contains(&c) {
        out.push(c);
    }
}

/// Settings shared by every cell.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// The preset the grid came from.
    pub preset: Preset,
    /// Epochs of topk and the BSA variants.
    pub epochs: usize,
    /// Pursuit rounds.
    pub rounds: usize,
    /// Seed of every fit.
    pub seed: u64,
    /// Threads (rayon and OpenBLAS).
    pub threads: usize,
}

/// Recall@10 after re-ranking the top `10 x oversample` Hamming candidates by exact cosine.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Rescored {
    /// Oversampling 2 (top 20).
    pub x2: f64,
    /// Oversampling 4 (top 40).
    pub x4: f64,
    /// Oversampling 10 (top 100).
    pub x10: f64,
}

/// Queries per second of each way of searching the flat index for the top 10 (all queries as
/// one batch on the bench's threads; rescoring includes the candidate search).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Throughput {
    /// Hamming distance.
    pub hamming: f64,
    /// Binary cosine overlap.
    pub cosine: f64,
    /// Decoder ADC (float query; measured on the top-40 search, whose prefix is the top 10).
    pub adc: f64,
    /// Hamming top 40, rescored by exact cosine.
    pub hamming_rescored_x4: f64,
    /// ADC top 40, rescored by exact cosine.
    pub adc_rescored_x4: f64,
    /// Encoding the queries (vectors per second).
    pub encode_queries: f64,
}

/// The inverted search of a cell whose codes are sparse enough for posting lists
/// ([`bsa_index::postings::pays_off`], the rule `bsa build` applies).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct InvertedResult {
    /// Expected postings a query visits (the build rule's estimate).
    pub expected_postings: f64,
    /// Code words a flat scan reads per query.
    pub scan_words: u64,
    /// Queries per second of the exact Hamming top 10 (`--mode inverted`).
    pub hamming_qps: f64,
    /// Fraction of queries the Hamming search answered from the lists (the rest: flat scan).
    pub hamming_inverted_fraction: f64,
    /// Queries per second of ADC top 40 in inverted mode.
    pub adc_qps: f64,
    /// True when both returned exactly the flat search's rows and scores.
    pub identical_to_flat: bool,
}

/// One `ef` of an HNSW sweep.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct HnswPoint {
    /// Candidate list size.
    pub ef: usize,
    /// Recall@10 of the Hamming top 10.
    pub recall_at_10: f64,
    /// Queries per second of that search.
    pub qps: f64,
    /// Recall@10 after rescoring the graph's top 40 by exact cosine.
    pub recall_at_10_rescored_x4: f64,
    /// Queries per second of the top-40 search plus rescoring.
    pub qps_rescored_x4: f64,
}

/// HNSW graph of a cell: build cost and the recall/QPS sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HnswResult {
    /// Neighbours per node (M).
    pub max_connections: usize,
    /// Candidate list size at build time.
    pub ef_construction: usize,
    /// Seconds to build the graph (hnsw_rs) and store it.
    pub build_seconds: f64,
    /// One point per `ef` in [`HNSW_EFS`].
    pub points: Vec<HnswPoint>,
}

/// Table lookups (queries x set bits of the base) one cell may spend on its ADC measurement;
/// beyond it, fewer queries are used (at least 500). A minute or two on 2 cores.
pub const ADC_LOOKUP_BUDGET: f64 = 1e11;

/// The `ef` values of the HNSW sweep.
pub const HNSW_EFS: [usize; 6] = [10, 20, 40, 80, 160, 320];

/// One cell's measurements: one object of `results.json`. Field names are stable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellResult {
    /// Method name (`sign`, `lsh`, `itq`, `topk`, `bsa`, `bsa-alpha0`, `bsa-mse`, `bsa-healthy`,
    /// `pursuit`).
    pub method: String,
    /// Code length N.
    pub bits: usize,
    /// Target K (null for sign, lsh, itq).
    pub k: Option<usize>,
    /// Alignment weight of the BSA variants, else null.
    #[serde(default)]
    pub alpha: Option<f64>,
    /// True for the cells of the alpha sweep.
    #[serde(default)]
    pub alpha_sweep: bool,
    /// Epochs trained (topk and BSA variants), else null.
    pub epochs: Option<usize>,
    /// Pursuit rounds, else null.
    pub rounds: Option<usize>,
    /// The paper's metrics on the queries (`bsa eval`'s keys).
    pub metrics: PaperMetrics,
    /// Dense storage: N / 8 bytes per vector.
    pub bytes_dense: f64,
    /// Sparse storage, for codes with exactly K bits (topk, pursuit): `K ceil(log2 N) / 8`.
    pub bytes_sparse: Option<f64>,
    /// Recall@1 by Hamming distance (ties by lower row).
    pub recall_at_1: f64,
    /// Recall@10 by Hamming distance.
    pub recall_at_10: f64,
    /// Recall@100 by Hamming distance (null when the ground truth has fewer than 100 columns).
    pub recall_at_100: Option<f64>,
    /// Recall@10 after rescoring the Hamming top 10 x {2, 4, 10} by exact cosine.
    pub recall_at_10_rescored: Rescored,
    /// Recall@10 ranking by binary cosine `|q and b| / sqrt(|q| |b|)`.
    pub recall_at_10_cosine: f64,
    /// Recall@10 ranking by decoder ADC `cos(q, xhat_b)` (float query).
    pub recall_at_10_adc: f64,
    /// Recall@10 after rescoring the ADC top 40 by exact cosine.
    pub recall_at_10_adc_rescored_x4: f64,
    /// Queries the two ADC figures (and ADC QPS) were measured on: the first ones, all of them
    /// unless the codes are dense (see [`ADC_LOOKUP_BUDGET`]).
    #[serde(default)]
    pub adc_queries: usize,
    /// Seconds to fit the model (measured when it was fitted; a cached model keeps its time).
    pub train_seconds: f64,
    /// Seconds to encode the base and build the index (codes, vectors, norms).
    pub build_seconds: f64,
    /// Queries per second of the flat Hamming search for the top 10.
    pub search_qps: f64,
    /// Queries per second of every flat search mode.
    pub qps: Throughput,
    /// Base vectors encoded per second.
    pub encode_per_second: f64,
    /// The inverted search, for the cells whose codes are sparse enough for posting lists.
    #[serde(default)]
    pub inverted: Option<InvertedResult>,
    /// The HNSW sweep, for the cells that have one.
    pub hnsw: Option<HnswResult>,
}

/// Base, queries and ground truth of a benchmark, with the fingerprints that key the cache.
pub struct Data<'a> {
    /// Base vectors, n x D.
    pub base: ArrayView2<'a, f32>,
    /// Query vectors, nq x D.
    pub queries: ArrayView2<'a, f32>,
    /// True neighbours of each query, best first (ids = base rows).
    pub truth: &'a [Vec<u64>],
    base_fingerprint: String,
    eval_fingerprint: String,
}

impl<'a> Data<'a> {
    /// Bundles the inputs and fingerprints them (CRC-32 of the values; a second or so for 100k
    /// x 384), so that cached models and results are reused only for the same data.
    pub fn new(
        base: ArrayView2<'a, f32>,
        queries: ArrayView2<'a, f32>,
        truth: &'a [Vec<u64>],
    ) -> Self {
        fn crc(x: ArrayView2<f32>) -> String {
            let mut h = crc32fast::Hasher::new();
            for row in x.rows() {
                for v in row {
                    h.update(&v.to_le_bytes());
                }
            }
            format!("{}x{}:{:08x}", x.nrows(), x.ncols(), h.finalize())
        }
        let mut t = crc32fast::Hasher::new();
        for row in truth {
            for id in row {
                t.update(&id.to_le_bytes());
            }
        }
        Data {
            base,
            queries,
            truth,
            base_fingerprint: crc(base),
            eval_fingerprint: format!("{} gt:{:08x}", crc(queries), t.finalize()),
        }
    }
}

/// Version of the cached results; bump when a measurement changes meaning or a field is added,
/// so that old results are measured again (models stay valid).
pub const RESULT_VERSION: u32 = 3;

/// What a fitted model depends on: a cached model is reused only when all of it matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FitKey {
    cell: String,
    alpha: Option<f64>,
    epochs: Option<usize>,
    rounds: Option<usize>,
    seed: u64,
    // Training is deterministic for a seed and a thread count.
    threads: usize,
    base: String,
    bsa_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FitRecord {
    key: FitKey,
    train_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ResultRecord {
    key: FitKey,
    version: u32,
    eval: String,
    hnsw: bool,
    result: CellResult,
}

/// Where `bsa bench` keeps each cell's fitted model and measurements, so that an interrupted or
/// extended grid resumes without refitting: `DIR/<cell slug>/{model.safetensors, fit.json,
/// result.json}`. Entries whose key (data fingerprint, settings, bsa version) differs are
/// ignored and overwritten.
#[derive(Debug, Clone)]
pub struct Cache {
    /// The cache folder.
    pub dir: std::path::PathBuf,
    /// Reuse finished measurements too (else only the models: the searches run again).
    pub reuse_results: bool,
}

impl Cache {
    fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
        let bytes = std::fs::read(path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn write<T: Serialize>(path: &Path, value: &T) -> Result<()> {
        let json =
            serde_json::to_vec_pretty(value).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        crate::io::write_atomic(path, |w| w.write_all(&json))
    }
}

fn epochs_of(cell: &Cell, settings: &Settings) -> Option<usize> {
    matches!(
        cell.variant,
        Variant::Topk | Variant::Bsa | Variant::BsaAlpha0 | Variant::BsaMse | Variant::BsaHealthy
    )
    .then_some(settings.epochs)
}

fn rounds_of(cell: &Cell, settings: &Settings) -> Option<usize> {
    (cell.variant == Variant::Pursuit).then_some(settings.rounds)
}

/// Fits the model of `cell`; `progress(done, total)` follows training steps or rounds.
pub fn fit(
    cell: &Cell,
    base: ArrayView2<f32>,
    settings: &Settings,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Autoencoder> {
    let (n, dim) = base.dim();
    let k = cell
        .k
        .unwrap_or_else(|| BaselineParams::default_k(cell.bits));
    match cell.variant {
        Variant::Sign | Variant::Lsh | Variant::Itq => {
            let method = match cell.variant {
                Variant::Sign => Method::Sign,
                Variant::Lsh => Method::Lsh,
                _ => Method::Itq,
            };
            let mut p = BaselineParams::new(method, cell.bits);
            p.seed = settings.seed;
            p.validate(dim)?;
            Ok(p.fit(base)?.0)
        }
        Variant::Pursuit => {
            let mut p = PursuitParams::new(cell.bits, k);
            p.rounds = settings.rounds;
            p.seed = settings.seed;
            let total = p.rounds as u64;
            let (params, _) = p.fit(base, &mut |r| progress(r.round as u64, total))?;
            Ok(Autoencoder {
                config: ModelConfig {
                    dim,
                    bits: cell.bits,
                    k,
                    method: Method::Pursuit,
                    loss: LossKind::Mse,
                    alpha: 0.0,
                    target: Target::Khot,
                },
                params,
            })
        }
        v => {
            let mut p = TrainParams::new(cell.bits, k);
            p.epochs = settings.epochs;
            p.seed = settings.seed;
            p.batch = p.batch.min(n.max(1));
            match v {
                Variant::Topk => p.method = Method::Topk,
                Variant::BsaAlpha0 => p.alpha = 0.0,
                Variant::BsaMse => p.loss = LossKind::Mse,
                Variant::BsaHealthy => {
                    p.quantile_bias_init = true;
                    p.rebalance_bits = true;
                }
                _ => {}
            }
            if let Some(a) = cell.alpha {
                p.alpha = a;
            }
            let total = n.div_ceil(p.batch) as u64 * p.epochs as u64;
            let mut done = 0;
            let (model, _) = p.fit(base, &mut |e| {
                if let Progress::Step { .. } = e {
                    done += 1;
                    progress(done, total);
                }
            })?;
            Ok(model)
        }
    }
}

fn ids(hits: &[Hits]) -> Vec<Vec<u64>> {
    hits.iter().map(|h| h.ids.clone()).collect()
}

fn prefix(hits: &[Hits], k: usize) -> Vec<Hits> {
    hits.iter()
        .map(|h| {
            let m = k.min(h.len());
            let mut h = h.clone();
            h.rows.truncate(m);
            h.ids.truncate(m);
            h.distances.truncate(m);
            if let Some(s) = h.scores.as_mut() {
                s.truncate(m);
            }
            h
        })
        .collect()
}

/// What a fitted model of `cell` depends on: the cache key of its model and measurements.
fn fit_key(cell: &Cell, data: &Data<'_>, settings: &Settings) -> FitKey {
    FitKey {
        cell: cell.label(),
        alpha: cell.effective_alpha(),
        epochs: epochs_of(cell, settings),
        rounds: rounds_of(cell, settings),
        seed: settings.seed,
        threads: settings.threads,
        base: data.base_fingerprint.clone(),
        bsa_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

impl Cache {
    /// The finished measurements of `cell` for this data and these settings, if the cache
    /// holds them (what [`run_cell`] reuses when [`reuse_results`](Self::reuse_results) is on).
    fn finished(&self, cell: &Cell, data: &Data<'_>, settings: &Settings) -> Option<CellResult> {
        let key = fit_key(cell, data, settings);
        let rec: ResultRecord = Cache::read(&self.dir.join(cell.slug()).join("result.json"))?;
        (rec.key == key
            && rec.version == RESULT_VERSION
            && rec.eval == data.eval_fingerprint
            && rec.hnsw == cell.hnsw)
            .then_some(rec.result)
    }

    /// Whether the cache holds finished measurements of `cell` (see `bsa bench --cached-only`).
    pub fn has_finished(&self, cell: &Cell, data: &Data<'_>, settings: &Settings) -> bool {
        self.finished(cell, data, settings).is_some()
    }
}

/// Fits `cell`, or loads its model from `cache` when an identical fit is stored there. Returns
/// the model and its fit seconds.
fn fit_or_load(
    cell: &Cell,
    data: &Data<'_>,
    settings: &Settings,
    cache: Option<&Cache>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Autoencoder, f64, FitKey)> {
    let key = fit_key(cell, data, settings);
    let dir = cache.map(|c| c.dir.join(cell.slug()));
    if let Some(dir) = &dir {
        let rec: Option<FitRecord> = Cache::read(&dir.join("fit.json"));
        if let Some(rec) = rec.filter(|r| r.key == key) {
            if let Ok(model) = crate::io::model::load(dir.join("model.safetensors")) {
                return Ok((model, rec.train_seconds, key));
            }
        }
    }
    let started = Instant::now();
    let model = fit(cell, data.base, settings, progress)?;
    let train_seconds = started.elapsed().as_secs_f64();
    if let Some(dir) = &dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let info = serde_json::json!({ "bench_cell": cell.label() });
        crate::io::model::save(dir.join("model.safetensors"), &model, &info)?;
        Cache::write(
            &dir.join("fit.json"),
            &FitRecord {
                key: key.clone(),
                train_seconds,
            },
        )?;
    }
    Ok((model, train_seconds, key))
}

/// Runs `f` and returns its value and seconds.
fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let started = Instant::now();
    let v = f()?;
    Ok((v, started.elapsed().as_secs_f64().max(1e-9)))
}

/// Runs one cell: fit (or load from `cache`), evaluate, encode, build an index under `work`,
/// search and measure. Returns the result and the code statistics of the queries (for the
/// histograms).
pub fn run_cell(
    cell: &Cell,
    data: &Data<'_>,
    settings: &Settings,
    work: &Path,
    cache: Option<&Cache>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(CellResult, CodeStats)> {
    let (model, train_seconds, key) = fit_or_load(cell, data, settings, cache, progress)?;
    let (metrics, stats) = crate::metrics::evaluate(&model, data.queries);
    let result_path = cache.map(|c| c.dir.join(cell.slug()).join("result.json"));
    if let Some(result) = cache
        .filter(|c| c.reuse_results)
        .and_then(|c| c.finished(cell, data, settings))
    {
        return Ok((result, stats));
    }
    let bits = model.config.bits;
    let n = data.base.nrows();

    let (active, encode_seconds) = timed(|| Ok(model.encode_active(data.base)))?;
    let started = Instant::now();
    let codes = pack::pack_set_bits(&active, bits)?;
    let norms = model.params.decoded_norms(&active);
    drop(active);
    let base_flat: Vec<f32> = data.base.iter().copied().collect();
    let dim = data.base.ncols();
    let dir = work.join(format!("index-{}", cell.slug()));
    let (lists, expected_postings, scan_words) = bsa_index::postings::pays_off(&codes, bits);
    IndexBuilder::new(bits, &codes)
        .vectors(&base_flat, dim)
        .norms(&norms)
        .inverted(lists)
        .overwrite(true)
        .build(&dir)?;
    let index = Index::open(&dir)?;
    let build_seconds = encode_seconds + started.elapsed().as_secs_f64();

    let q_flat: Vec<f32> = data.queries.iter().copied().collect();
    let nq = data.queries.nrows();
    let (q_active, q_encode_seconds) = timed(|| Ok(model.encode_active(data.queries)))?;
    let q_codes = pack::pack_set_bits(&q_active, bits)?;
    drop(q_active);
    let params = SearchParams::default();
    let qps = |seconds: f64| nq as f64 / seconds;
    // The top 100 first: it also warms the mapped codes up before the timed top-10 search.
    let top100 = index.search_flat(&q_codes, 100, &params)?;
    let (top10, t_hamming) = timed(|| Ok(index.search_flat(&q_codes, 10, &params)?))?;
    let truth = data.truth;
    let truth_cols = truth.iter().map(Vec::len).min().unwrap_or(0);
    let rescored = |o: usize| -> Result<f64> {
        let r = index.rescore_hits(&q_flat, &prefix(&top100, 10 * o), 10)?;
        Ok(recall_at_k(&ids(&r), truth, 10))
    };
    let (_, t_rescored) = timed(|| {
        let c = index.search_flat(&q_codes, 40, &params)?;
        Ok(index.rescore_hits(&q_flat, &c, 10)?)
    })?;
    let (cosine, t_cosine) =
        timed(|| Ok(index.search_flat_scored(&q_codes, 10, &Score::Cosine, &params)?))?;
    // One ADC search for the top 40 gives both the top 10 (its prefix: the order is total) and
    // the candidates to rescore; a flat scan costs the same for 10 or 40. The tables are part of
    // its cost. ADC reads every set bit of every code, so over dense codes (sign, LSH) it is by
    // far the slowest search: it runs on the first `adc_nq` queries, as many as
    // ADC_LOOKUP_BUDGET table lookups allow (at least 500), and the result says how many.
    let set_bits: u64 = codes.iter().map(|w| u64::from(w.count_ones())).sum();
    let lookups_per_query = set_bits.max(1) as f64;
    let adc_nq = ((ADC_LOOKUP_BUDGET / lookups_per_query) as usize).clamp(nq.min(500), nq);
    let adc_queries = data.queries.slice(ndarray::s![..adc_nq, ..]);
    let adc_codes = &q_codes[..adc_nq * index.words_per_code()];
    let adc_truth = &truth[..adc_nq];
    let adc_qps = |seconds: f64| adc_nq as f64 / seconds;
    let (adc40, t_adc) = timed(|| {
        let (tables, offsets) = model.adc_tables(adc_queries);
        let score = Score::Table {
            tables: &tables,
            offsets: &offsets,
            normalise: true,
        };
        Ok(index.search_flat_scored(adc_codes, 40, &score, &params)?)
    })?;
    let adc10 = prefix(&adc40, 10);
    let (adc_rescored, t_rescore) =
        timed(|| Ok(index.rescore_hits(&q_flat[..adc_nq * dim], &adc40, 10)?))?;
    let t_adc_rescored = t_adc + t_rescore;
    let inverted = if lists {
        let ((hits, stats), t_h) =
            timed(|| Ok(index.search_inverted(&q_codes, 10, &Score::Hamming, &params)?))?;
        let ((adc_inv, _), t_a) = timed(|| {
            let (tables, offsets) = model.adc_tables(adc_queries);
            let score = Score::Table {
                tables: &tables,
                offsets: &offsets,
                normalise: true,
            };
            Ok(index.search_inverted(adc_codes, 40, &score, &params)?)
        })?;
        Some(InvertedResult {
            expected_postings,
            scan_words,
            hamming_qps: qps(t_h),
            hamming_inverted_fraction: stats.inverted_queries as f64 / nq.max(1) as f64,
            adc_qps: adc_qps(t_a),
            identical_to_flat: hits == top10 && adc_inv == adc40,
        })
    } else {
        None
    };
    drop(adc40);
    let recall_at_10_rescored = Rescored {
        x2: rescored(2)?,
        x4: rescored(4)?,
        x10: rescored(10)?,
    };

    drop(index);
    let _ = std::fs::remove_dir_all(&dir);
    let hnsw = if cell.hnsw {
        let g = work.join(format!("hnsw-{}", cell.slug()));
        let h = hnsw_sweep(
            &g,
            bits,
            &codes,
            (&base_flat, dim),
            &q_codes,
            &q_flat,
            truth,
        )?;
        let _ = std::fs::remove_dir_all(&g);
        Some(h)
    } else {
        None
    };

    let result = CellResult {
        method: cell.variant.name().to_string(),
        bits,
        k: cell.k,
        alpha: cell.effective_alpha(),
        alpha_sweep: cell.alpha.is_some(),
        epochs: epochs_of(cell, settings),
        rounds: rounds_of(cell, settings),
        metrics,
        bytes_dense: bits as f64 / 8.0,
        bytes_sparse: match (cell.variant.exactly_k(), cell.k) {
            (true, Some(k)) => Some((k as f64 * (bits as f64).log2().ceil()) / 8.0),
            _ => None,
        },
        recall_at_1: recall_at_k(&ids(&top10), truth, 1),
        recall_at_10: recall_at_k(&ids(&top10), truth, 10),
        recall_at_100: (truth_cols >= 100 && n >= 100)
            .then(|| recall_at_k(&ids(&top100), truth, 100)),
        recall_at_10_rescored,
        recall_at_10_cosine: recall_at_k(&ids(&cosine), truth, 10),
        recall_at_10_adc: recall_at_k(&ids(&adc10), adc_truth, 10),
        recall_at_10_adc_rescored_x4: recall_at_k(&ids(&adc_rescored), adc_truth, 10),
        adc_queries: adc_nq,
        train_seconds,
        build_seconds,
        search_qps: qps(t_hamming),
        qps: Throughput {
            hamming: qps(t_hamming),
            cosine: qps(t_cosine),
            adc: adc_qps(t_adc),
            hamming_rescored_x4: qps(t_rescored),
            adc_rescored_x4: adc_qps(t_adc_rescored),
            encode_queries: qps(q_encode_seconds),
        },
        encode_per_second: n as f64 / encode_seconds,
        inverted,
        hnsw,
    };
    if let Some(p) = &result_path {
        Cache::write(
            p,
            &ResultRecord {
                key,
                version: RESULT_VERSION,
                eval: data.eval_fingerprint.clone(),
                hnsw: cell.hnsw,
                result: result.clone(),
            },
        )?;
    }
    Ok((result, stats))
}

/// Builds an index with an HNSW graph over `codes` (default parameters) at `dir` and sweeps
/// [`HNSW_EFS`]: recall@10 and QPS of the Hamming top 10, and of the top 40 rescored.
fn hnsw_sweep(
    dir: &Path,
    bits: usize,
    codes: &[u64],
    (vectors, dim): (&[f32], usize),
    q_codes: &[u64],
    q_flat: &[f32],
    truth: &[Vec<u64>],
) -> Result<HnswResult> {
    let hp = HnswParams::default();
    let started = Instant::now();
    IndexBuilder::new(bits, codes)
        .vectors(vectors, dim)
        .hnsw(hp)
        .overwrite(true)
        .build(dir)?;
    let build_seconds = started.elapsed().as_secs_f64();
    let index = Index::open(dir)?;
    let nq = truth.len() as f64;
    let mut points = Vec::with_capacity(HNSW_EFS.len());
    // One untimed pass loads the graph.
    index.search_hnsw(q_codes, 10, &SearchParams::default())?;
    for ef in HNSW_EFS {
        let p = SearchParams::default().with_ef_search(Some(ef));
        let (hits, t) = timed(|| Ok(index.search_hnsw(q_codes, 10, &p)?))?;
        let (rescored, t_r) = timed(|| {
            let c = index.search_hnsw(q_codes, 40, &p)?;
            Ok(index.rescore_hits(q_flat, &c, 10)?)
        })?;
        points.push(HnswPoint {
            ef,
            recall_at_10: recall_at_k(&ids(&hits), truth, 10),
            qps: nq / t,
            recall_at_10_rescored_x4: recall_at_k(&ids(&rescored), truth, 10),
            qps_rescored_x4: nq / t_r,
        });
    }
    Ok(HnswResult {
        max_connections: hp.max_connections,
        ef_construction: hp.ef_construction,
        build_seconds,
        points,
    })
}

/// Exact top-`min(100, n)` ground truth by cosine ([`crate::groundtruth::exact_top_k`]).
pub fn ground_truth(base: ArrayView2<f32>, queries: ArrayView2<f32>) -> Result<Vec<Vec<u64>>> {
    let k = 100.min(base.nrows());
    Ok(crate::groundtruth::exact_top_k(base, queries, k)?
        .into_iter()
        .map(|r| r.into_iter().map(u64::from).collect())
        .collect())
}

/// What `report.md` says about the run besides the results.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// Settings of every cell.
    pub settings: Settings,
    /// Base rows, query rows, dimension.
    pub base_rows: usize,
    /// Query rows.
    pub query_rows: usize,
    /// Dimension D.
    pub dim: usize,
    /// Where the ground truth came from (a file, or "computed").
    pub ground_truth: String,
    /// Input files.
    pub inputs: String,
    /// UTC date and time of the run.
    pub date: String,
    /// CPU model and core count.
    pub machine: String,
    /// Wall-clock seconds of the whole grid.
    pub total_seconds: f64,
    /// Cells of the grid left out because they had not run yet (`--cached-only`).
    pub not_run: Vec<String>,
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// CPU model (from /proc/cpuinfo where there is one), cores and OS.
pub fn machine_info() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!(
        "{cpu}, {cores} cores, {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// The method column: the alpha of a sweep cell is part of its name.
fn method_name(r: &CellResult) -> String {
    match (r.alpha_sweep, r.alpha) {
        (true, Some(a)) => format!("{} alpha={a}", r.method),
        _ => r.method.clone(),
    }
}

fn label(r: &CellResult) -> String {
    match r.k {
        Some(k) => format!("{} | {} | {k}", method_name(r), r.bits),
        None => format!("{} | {} | -", method_name(r), r.bits),
    }
}

/// The markdown report: settings, machine, and one table per metric group.
pub fn report_markdown(info: &RunInfo, results: &[CellResult], plots: &[(&str, &str)]) -> String {
    let mut s = String::new();
    let st = &info.settings;
    let _ = writeln!(s, "# bsa bench report\n");
    let _ = writeln!(s, "- date: {}", info.date);
    let _ = writeln!(s, "- machine: {}", info.machine);
    let _ = writeln!(s, "- bsa {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(s, "- data: {}", info.inputs);
    let _ = writeln!(
        s,
        "- {} base vectors, {} queries, dimension {}; ground truth: {}",
        info.base_rows, info.query_rows, info.dim, info.ground_truth
    );
    let _ = writeln!(
        s,
        "- preset {}, epochs {}, pursuit rounds {}, seed {}, threads {}",
        match st.preset {
            Preset::Quick => "quick",
            Preset::Paper => "paper",
        },
        st.epochs,
        st.rounds,
        st.seed,
        st.threads
    );
    let _ = writeln!(
        s,
        "- total time {:.1} s (cells reused from a cache keep their own train, build and search \
         times)\n",
        info.total_seconds
    );
    if !info.not_run.is_empty() {
        let _ = writeln!(
            s,
            "**Not run yet** ({} cells of the grid, assembled with `--cached-only`): {}.\n",
            info.not_run.len(),
            info.not_run.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "Recall is k-NN recall against exact cosine neighbours, averaged over the queries; Hamming \
         ties go to the lower row. The paper's metrics are measured on the queries.\n"
    );

    let _ = writeln!(s, "## Retrieval (recall@10 unless noted)\n");
    let _ = writeln!(
        s,
        "| method | N | K | bytes dense | bytes sparse | R@1 | R@10 | R@100 | rescored x2 | x4 | x10 | cosine | ADC | ADC rescored x4 |"
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {:.1} | {} | {:.3} | {:.3} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            label(r),
            r.bytes_dense,
            opt(r.bytes_sparse, 1),
            r.recall_at_1,
            r.recall_at_10,
            opt(r.recall_at_100, 3),
            r.recall_at_10_rescored.x2,
            r.recall_at_10_rescored.x4,
            r.recall_at_10_rescored.x10,
            r.recall_at_10_cosine,
            r.recall_at_10_adc,
            r.recall_at_10_adc_rescored_x4
        );
    }
    let _ = writeln!(s, "\n## The paper's metrics (on the queries)\n");
    let _ = writeln!(
        s,
        "| method | N | K | reconstruction (cos) | reconstruction (mse) | fixed-TopK | active mean | active std | dead bits | max bit freq |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let m = &r.metrics;
        let _ = writeln!(
            s,
            "| {} | {:.4} | {:.6} | {:.4} | {:.1} | {:.1} | {} | {:.3} |",
            label(r),
            m.reconstruction_loss,
            m.reconstruction_mse,
            m.fixed_topk_reconstruction_loss,
            m.active_mean,
            m.active_std,
            m.dead_features,
            m.feature_frequency_quantiles.max
        );
    }
    let _ = writeln!(
        s,
        "\n## Search modes: recall@10 and queries per second (flat index)\n"
    );
    let _ = writeln!(
        s,
        "All queries as one batch on {} threads; ADC includes building the per-query tables and \
         runs on the first `ADC queries` queries (fewer than all for dense codes, whose ADC reads \
         every set bit); rescoring re-ranks the top 40 by exact cosine over the stored float \
         vectors. Posting lists are built when `bsa build` would build them; the inverted search \
         returns exactly the flat results (checked per cell) and answers a query from the lists \
         only when they cost less than the scan.\n",
        st.threads
    );
    let _ = writeln!(
        s,
        "| method | N | K | Hamming | QPS | cosine overlap | QPS | ADC | QPS | Hamming + rescore | QPS | ADC + rescore | QPS | ADC queries | inverted Hamming QPS (answered from lists) | inverted ADC QPS |"
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results {
        let q = &r.qps;
        let _ = writeln!(
            s,
            "| {} | {:.3} | {:.0} | {:.3} | {:.0} | {:.3} | {:.0} | {:.3} | {:.0} | {:.3} | {:.0} | {} | {} | {} |",
            label(r),
            r.recall_at_10,
            q.hamming,
            r.recall_at_10_cosine,
            q.cosine,
            r.recall_at_10_adc,
            q.adc,
            r.recall_at_10_rescored.x4,
            q.hamming_rescored_x4,
            r.recall_at_10_adc_rescored_x4,
            q.adc_rescored_x4,
            r.adc_queries,
            r.inverted
                .map(|i| format!(
                    "{:.0} ({:.0}%){}",
                    i.hamming_qps,
                    100.0 * i.hamming_inverted_fraction,
                    if i.identical_to_flat { "" } else { " NOT EQUAL TO FLAT" }
                ))
                .unwrap_or_else(|| "no lists".into()),
            r.inverted
                .map(|i| format!("{:.0}", i.adc_qps))
                .unwrap_or_else(|| "-".into())
        );
    }
    let graphs: Vec<&CellResult> = results.iter().filter(|r| r.hnsw.is_some()).collect();
    if !graphs.is_empty() {
        let _ = writeln!(s, "\n## HNSW graphs: recall@10 and QPS against ef\n");
        let _ = writeln!(
            s,
            "Each cell: the graph's build seconds (hnsw_rs, M and ef_construction as given), then per \
             ef the Hamming top 10 and the top 40 rescored by exact cosine, as recall / QPS.\n"
        );
        let mut head = String::from("| method | N | K | M | ef_c | build s |");
        let mut rule = String::from("|---|---:|---:|---:|---:|---:|");
        for ef in HNSW_EFS {
            let _ = write!(head, " ef {ef} | rescored |");
            rule.push_str("---:|---:|");
        }
        let _ = writeln!(s, "{head}\n{rule}");
        for r in graphs {
            let h = r.hnsw.as_ref().expect("filtered");
            let mut row = format!(
                "| {} | {} | {} | {:.1} |",
                label(r),
                h.max_connections,
                h.ef_construction,
                h.build_seconds
            );
            for p in &h.points {
                let _ = write!(
                    row,
                    " {:.3} / {:.0} | {:.3} / {:.0} |",
                    p.recall_at_10, p.qps, p.recall_at_10_rescored_x4, p.qps_rescored_x4
                );
            }
            let _ = writeln!(s, "{row}");
        }
    }
    let _ = writeln!(s, "\n## Timings\n");
    let _ = writeln!(
        s,
        "| method | N | K | fit s | encode + build s | base vectors encoded / s | queries encoded / s |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {:.2} | {:.0} | {:.0} |",
            label(r),
            r.train_seconds,
            r.build_seconds,
            r.encode_per_second,
            r.qps.encode_queries
        );
    }
    if !plots.is_empty() {
        let _ = writeln!(s, "\n## Plots\n");
        for (file, title) in plots {
            let _ = writeln!(s, "![{title}]({file})\n");
        }
    }
    s
}

/// Writes `results.json`, the plots (SVG, and PNG when a font is installed) and `report.md`
/// into `out`. `stats` is the cell whose code statistics the two histograms show (its label
/// and statistics), if any.
pub fn write_report(
    out: &Path,
    info: &RunInfo,
    results: &[CellResult],
    stats: Option<(&str, &CodeStats)>,
) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let json =
        serde_json::to_string_pretty(results).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let p = out.join("results.json");
    std::fs::write(&p, json + "\n").map_err(|e| Error::io(&p, e))?;

    let mut plots: Vec<(&str, &str)> = Vec::new();
    // The alpha sweep has its own plot; the others show the grid.
    let grid: Vec<&CellResult> = results.iter().filter(|r| !r.alpha_sweep).collect();
    let methods: Vec<&str> = {
        let mut m: Vec<&str> = grid.iter().map(|r| r.method.as_str()).collect();
        m.dedup();
        m
    };
    // Recall@10 against bytes per vector (the smallest storage of each code).
    let mut series: Vec<Series> = Vec::new();
    for (mi, m) in methods.iter().enumerate() {
        let rs: Vec<&CellResult> = grid.iter().copied().filter(|r| r.method == *m).collect();
        let bytes = |r: &CellResult| r.bytes_sparse.unwrap_or(r.bytes_dense).min(r.bytes_dense);
        series.push(Series::new(
            format!("{m} Hamming"),
            rs.iter()
                .map(|r| (bytes(r).log2(), r.recall_at_10))
                .collect(),
            mi,
        ));
        series.push(Series {
            filled: false,
            ..Series::new(
                format!("{m} best of cosine / ADC (hollow)"),
                rs.iter()
                    .map(|r| {
                        (
                            bytes(r).log2(),
                            r.recall_at_10_cosine.max(r.recall_at_10_adc),
                        )
                    })
                    .collect(),
                mi,
            )
        });
    }
    chart(
        &out.join("recall_vs_bytes.svg"),
        "recall@10 against bytes per vector",
        "bytes per vector (log scale; sparse ids where smaller)",
        "recall@10",
        &series,
        false,
        true,
        Some((0.0, 1.0)),
    )?;
    plots.push(("recall_vs_bytes.svg", "recall@10 against bytes per vector"));

    // Per method and N, against K.
    let has_sweep = grid.iter().any(|a| {
        grid.iter()
            .any(|b| a.method == b.method && a.bits == b.bits && a.k.is_some() && b.k > a.k)
    });
    let mut by_k: Vec<Series> = Vec::new();
    let mut losses: Vec<Series> = Vec::new();
    let mut color = 0;
    for m in &methods {
        let mut ns: Vec<usize> = grid
            .iter()
            .filter(|r| r.method == *m && r.k.is_some())
            .map(|r| r.bits)
            .collect();
        ns.sort_unstable();
        ns.dedup();
        for n in ns {
            let mut rs: Vec<&CellResult> = grid
                .iter()
                .copied()
                .filter(|r| r.method == *m && r.bits == n && r.k.is_some())
                .collect();
            // A line against K needs two K: when some method has a K sweep, single cells are
            // left to the recall-against-bytes plot (with 16 or more series the colours would
            // repeat for nothing).
            if rs.len() < 2 && has_sweep {
                continue;
            }
            rs.sort_by_key(|r| r.k);
            let kx = |r: &CellResult| r.k.unwrap_or(0) as f64;
            by_k.push(Series::new(
                format!("{m} N={n}"),
                rs.iter().map(|r| (kx(r), r.recall_at_10)).collect(),
                color,
            ));
            losses.push(Series::new(
                format!("{m} N={n} reconstruction"),
                rs.iter()
                    .map(|r| (kx(r), r.metrics.reconstruction_loss))
                    .collect(),
                color,
            ));
            losses.push(Series {
                filled: false,
                ..Series::new(
                    format!("{m} N={n} fixed-TopK (hollow)"),
                    rs.iter()
                        .map(|r| (kx(r), r.metrics.fixed_topk_reconstruction_loss))
                        .collect(),
                    color,
                )
            });
            color += 1;
        }
    }
    chart(
        &out.join("recall_vs_k.svg"),
        "recall@10 (Hamming) against K, per method and N",
        "K (target active bits)",
        "recall@10",
        &by_k,
        true,
        false,
        Some((0.0, 1.0)),
    )?;
    plots.push(("recall_vs_k.svg", "recall@10 against K"));
    chart(
        &out.join("loss_vs_k.svg"),
        "reconstruction and fixed-TopK loss against K (queries)",
        "K (target active bits)",
        "cosine distance",
        &losses,
        true,
        false,
        None,
    )?;
    plots.push((
        "loss_vs_k.svg",
        "reconstruction and fixed-TopK loss against K",
    ));

    // Recall against QPS: the HNSW sweeps (Hamming and rescored) and the flat modes.
    let graphs: Vec<&CellResult> = grid.iter().copied().filter(|r| r.hnsw.is_some()).collect();
    if !graphs.is_empty() {
        let mut series = Vec::new();
        for (i, r) in graphs.iter().enumerate() {
            let h = r.hnsw.as_ref().expect("filtered");
            let name = match r.k {
                Some(k) => format!("{} {}/{k}", method_name(r), r.bits),
                None => format!("{} {}", method_name(r), r.bits),
            };
            // One legend row per code: its colour; the marker says which search.
            series.push(Series::new(
                name,
                h.points
                    .iter()
                    .map(|p| (p.qps.log2(), p.recall_at_10))
                    .collect(),
                i,
            ));
            series.push(
                Series::new(
                    String::new(),
                    h.points
                        .iter()
                        .map(|p| (p.qps_rescored_x4.log2(), p.recall_at_10_rescored_x4))
                        .collect(),
                    i,
                )
                .hollow(),
            );
            let q = &r.qps;
            series.push(
                Series::new(
                    String::new(),
                    vec![
                        (q.hamming.log2(), r.recall_at_10),
                        (q.hamming_rescored_x4.log2(), r.recall_at_10_rescored.x4),
                        (q.adc.log2(), r.recall_at_10_adc),
                        (q.adc_rescored_x4.log2(), r.recall_at_10_adc_rescored_x4),
                    ],
                    i,
                )
                .joined(false)
                .crosses(),
            );
        }
        chart(
            &out.join("recall_vs_qps.svg"),
            "recall@10 against QPS: HNSW, ef 10..320 (filled: Hamming, hollow: rescored); flat (crosses)",
            "queries per second (log scale)",
            "recall@10",
            &series,
            true,
            true,
            Some((0.0, 1.0)),
        )?;
        plots.push((
            "recall_vs_qps.svg",
            "recall@10 against QPS; HNSW over ef 10..320 (filled: Hamming top 10, hollow: top 40 rescored), flat scans as crosses (Hamming, Hamming rescored, ADC, ADC rescored)",
        ));
    }

    // The alpha sweep: recall and sparsity against alpha, with the grid's alpha 0 and 1 cells.
    let sweep: Vec<&CellResult> = {
        let swept: Vec<(usize, Option<usize>)> = results
            .iter()
            .filter(|r| r.alpha_sweep)
            .map(|r| (r.bits, r.k))
            .collect();
        let mut v: Vec<&CellResult> = results
            .iter()
            .filter(|r| {
                matches!(r.method.as_str(), "bsa" | "bsa-alpha0") && swept.contains(&(r.bits, r.k))
            })
            .collect();
        v.sort_by(|a, b| {
            (a.bits, a.k)
                .cmp(&(b.bits, b.k))
                .then(a.alpha.unwrap_or(0.0).total_cmp(&b.alpha.unwrap_or(0.0)))
        });
        v
    };
    if !sweep.is_empty() {
        let mut sizes: Vec<(usize, Option<usize>)> = sweep.iter().map(|r| (r.bits, r.k)).collect();
        sizes.dedup();
        // log10(alpha) with alpha 0 drawn one decade left of the smallest positive alpha.
        let positive = sweep
            .iter()
            .filter_map(|r| r.alpha.filter(|&a| a > 0.0))
            .fold(f64::INFINITY, f64::min);
        let ax = |a: f64| {
            if a > 0.0 {
                a.log10()
            } else if positive.is_finite() {
                positive.log10() - 1.0
            } else {
                0.0
            }
        };
        let mut recall = Vec::new();
        let mut sparsity = Vec::new();
        for (i, &(n, k)) in sizes.iter().enumerate() {
            let rs: Vec<&&CellResult> = sweep.iter().filter(|r| (r.bits, r.k) == (n, k)).collect();
            let kk = k.unwrap_or(1) as f64;
            let name = format!("N={n} K={}", k.unwrap_or(0));
            let pts = |f: &dyn Fn(&CellResult) -> f64| -> Vec<(f64, f64)> {
                rs.iter()
                    .map(|r| (ax(r.alpha.unwrap_or(0.0)), f(r)))
                    .collect()
            };
            recall.push(Series::new(
                format!("{name} Hamming"),
                pts(&|r| r.recall_at_10),
                3 * i,
            ));
            recall.push(Series::new(
                format!("{name} ADC"),
                pts(&|r| r.recall_at_10_adc),
                3 * i + 1,
            ));
            recall.push(Series::new(
                format!("{name} ADC + rescore x4"),
                pts(&|r| r.recall_at_10_adc_rescored_x4),
                3 * i + 2,
            ));
            sparsity.push(Series::new(
                format!("{name} active mean / K"),
                pts(&|r| r.metrics.active_mean / kk),
                3 * i,
            ));
            sparsity.push(Series::new(
                format!("{name} active std / K"),
                pts(&|r| r.metrics.active_std / kk),
                3 * i + 1,
            ));
            sparsity.push(Series::new(
                format!("{name} dead bits / 100"),
                pts(&|r| r.metrics.dead_features as f64 / 100.0),
                3 * i + 2,
            ));
        }
        chart(
            &out.join("alpha_recall.svg"),
            "BSA alpha sweep: recall@10 against alpha (leftmost point: alpha = 0)",
            "alpha (log10)",
            "recall@10",
            &recall,
            true,
            false,
            Some((0.0, 1.0)),
        )?;
        plots.push(("alpha_recall.svg", "alpha sweep: recall@10 against alpha"));
        chart(
            &out.join("alpha_sparsity.svg"),
            "BSA alpha sweep: active bits and dead bits against alpha (leftmost point: alpha = 0)",
            "alpha (log10)",
            "ratio",
            &sparsity,
            true,
            false,
            None,
        )?;
        plots.push(("alpha_sparsity.svg", "alpha sweep: sparsity against alpha"));
    }

    if let Some((name, st)) = stats {
        let max = st.active_counts.iter().copied().max().unwrap_or(0) as usize;
        let mut hist = vec![0.0; max + 1];
        for &c in &st.active_counts {
            hist[c as usize] += 1.0;
        }
        let bars: Vec<(f64, f64)> = hist
            .iter()
            .enumerate()
            .map(|(i, &c)| (i as f64, c))
            .collect();
        histogram(
            &out.join("active_bits_hist.svg"),
            &format!("active bits per vector, {name} (queries)"),
            "set bits per code",
            "vectors",
            &bars,
        )?;
        plots.push((
            "active_bits_hist.svg",
            "histogram of active bits per vector",
        ));
        let mut f = st.bit_frequency.clone();
        f.sort_by(|a, b| b.total_cmp(a));
        let dead = f.iter().filter(|&&v| v == 0.0).count();
        chart(
            &out.join("bit_frequency.svg"),
            &format!("per-bit firing frequency, sorted, {name} ({dead} dead bits)"),
            "bit rank (most to least frequent)",
            "fraction of vectors with the bit set",
            &[Series::new(
                name.to_string(),
                f.iter().enumerate().map(|(i, &v)| (i as f64, v)).collect(),
                0,
            )],
            true,
            false,
            Some((0.0, 1.0)),
        )?;
        plots.push(("bit_frequency.svg", "per-bit firing frequency distribution"));
    }

    // PNG copies of every plot, when a font for their text exists.
    let mut png = true;
    for (file, _) in &plots {
        png &= crate::plot::to_png(&out.join(file))?.is_some();
    }
    if !png {
        eprintln!(
            "bsa: no system font found, so the plots are SVG only (Debian: apt-get install \
             fonts-dejavu-core)"
        );
    }
    let mut md = report_markdown(info, results, &plots);
    if png && !plots.is_empty() {
        md.push_str("Every plot is also a PNG beside its SVG (same name, `.png`).\n");
    }
    let p = out.join("report.md");
    std::fs::write(&p, md).map_err(|e| Error::io(&p, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_grid_has_one_cell_per_method() {
        let c = cells(
            Preset::Quick,
            &Preset::Quick.methods(),
            None,
            None,
            None,
            HnswCells::Preset,
            384,
        );
        assert!(c.iter().all(|c| c.alpha.is_none()));
        let hnsw: Vec<String> = c.iter().filter(|c| c.hnsw).map(Cell::label).collect();
        assert_eq!(hnsw, ["sign N=384", "pursuit N=1024 K=16"]);
        let labels: Vec<String> = c.iter().map(Cell::label).collect();
        assert_eq!(
            labels,
            [
                "sign N=384",
                "lsh N=256",
                "itq N=128",
                "topk N=512 K=16",
                "bsa N=512 K=16",
                "bsa-healthy N=512 K=16",
                "pursuit N=1024 K=16"
            ]
        );
        let p = cells(
            Preset::Paper,
            &Preset::Paper.methods(),
            None,
            None,
            None,
            HnswCells::Preset,
            384,
        );
        // sign 1, lsh 4, itq 1 (all clamp to D), 6 K-methods x 16, 5 sweep alphas.
        assert_eq!(p.len(), 1 + 4 + 1 + 6 * 16 + 5);
        let sweep: Vec<String> = p
            .iter()
            .filter(|c| c.alpha.is_some())
            .map(Cell::label)
            .collect();
        assert_eq!(sweep[0], "bsa N=1024 K=32 alpha=0.03");
        assert_eq!(
            p.iter().find(|c| c.alpha.is_some()).unwrap().slug(),
            "bsa-1024-k32-a0.03"
        );
        // One HNSW cell per method at the headline budget, plus pursuit at 4096.
        let hnsw: Vec<String> = p.iter().filter(|c| c.hnsw).map(Cell::label).collect();
        assert_eq!(
            hnsw,
            [
                "sign N=384",
                "lsh N=1024",
                "itq N=384",
                "topk N=1024 K=32",
                "bsa N=1024 K=32",
                "bsa-alpha0 N=1024 K=32",
                "bsa-mse N=1024 K=32",
                "bsa-healthy N=1024 K=32",
                "pursuit N=1024 K=32",
                "pursuit N=4096 K=32"
            ]
        );
        assert_eq!(
            Cell {
                variant: Variant::BsaAlpha0,
                bits: 64,
                k: Some(4),
                alpha: None,
                hnsw: false
            }
            .effective_alpha(),
            Some(0.0)
        );
    }

    #[test]
    fn explicit_sizes_override_the_preset() {
        let c = cells(
            Preset::Quick,
            &[Variant::Sign, Variant::Bsa],
            Some(&[32, 64]),
            Some(&[4, 40]),
            Some(&[0.5]),
            HnswCells::None,
            16,
        );
        let labels: Vec<String> = c.iter().map(Cell::label).collect();
        assert_eq!(
            labels,
            [
                "sign N=16",
                "bsa N=32 K=4",
                "bsa N=64 K=4",
                "bsa N=64 K=40",
                "bsa N=32 K=4 alpha=0.5",
                "bsa N=64 K=4 alpha=0.5",
                "bsa N=64 K=40 alpha=0.5"
            ]
        );
        assert!(c.iter().all(|c| !c.hnsw));
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(utc_now().len(), "2026-11-28 15:38:45 UTC".len());
    }
}
