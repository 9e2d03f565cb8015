//! The benchmark behind `bsa bench`: for every cell of a grid (method x N x K) fit the codes,
//! encode base and queries, build an index in a temporary folder and measure the paper's
//! metrics, bytes per vector, recall by Hamming, rescored, cosine-overlap and ADC scoring, and
//! timings. [`write_report`] writes `results.json`, `report.md` and SVG plots.
//!
//! Recall is [`crate::metrics::recall_at_k`] against exact cosine ground truth; Hamming ties are
//! broken by lower row (the index's order), so every figure is deterministic.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use ndarray::ArrayView2;
use serde::Serialize;

use crate::baselines::BaselineParams;
use crate::error::{Error, Result};
use crate::metrics::{recall_at_k, CodeStats, PaperMetrics};
use crate::model::{Autoencoder, LossKind, Method, ModelConfig, Target};
use crate::pursuit::PursuitParams;
use crate::train::{Progress, TrainParams};
use bsa_index::{pack, Hits, Index, IndexBuilder, Score, SearchParams};

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
    /// Binary matching pursuit (exactly K bits).
    Pursuit,
}

impl Variant {
    /// Every variant, in report order.
    pub const ALL: [Variant; 8] = [
        Variant::Sign,
        Variant::Lsh,
        Variant::Itq,
        Variant::Topk,
        Variant::Bsa,
        Variant::BsaAlpha0,
        Variant::BsaMse,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cell {
    /// The method.
    pub variant: Variant,
    /// Code length N.
    pub bits: usize,
    /// Target active bits K (None for sign, LSH and ITQ).
    pub k: Option<usize>,
}

impl Cell {
    /// `method N=.. K=..`, for progress messages and tables.
    pub fn label(&self) -> String {
        match self.k {
            Some(k) => format!("{} N={} K={k}", self.variant.name(), self.bits),
            None => format!("{} N={}", self.variant.name(), self.bits),
        }
    }
}

/// A named grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Minutes on the bench-data sample: sign, lsh (N=256), itq (N=128 or D), topk and bsa
    /// (N=512, K=16, 3 epochs), pursuit (N=1024, K=16, 2 rounds).
    Quick,
    /// The paper-scale grid: N in {512, 1024, 2048, 4096} x K in {8, 16, 32, 64}, every method
    /// and ablation (86 cells on 384-d data), 10 epochs, 6 pursuit rounds. Hours on 2 cores for
    /// 100k vectors (an estimate; not run in CI).
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
                Variant::Pursuit,
            ],
            Preset::Paper => Variant::ALL.to_vec(),
        }
    }
}

/// The cells for `methods` on data of dimension `dim`. With `bits` and `ks` given, every method
/// runs on every N (and every K < N for the methods that use K); sign always has N = D, ITQ at
/// most D. Without them, the preset's sizes: quick has one size per method, paper the full grid.
pub fn cells(
    preset: Preset,
    methods: &[Variant],
    bits: Option<&[usize]>,
    ks: Option<&[usize]>,
    dim: usize,
) -> Vec<Cell> {
    let paper_bits = [512, 1024, 2048, 4096];
    let paper_ks = [8, 16, 32, 64];
    let mut out: Vec<Cell> = Vec::new();
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
                    push_unique(
                        &mut out,
                        Cell {
                            variant: v,
                            bits: n,
                            k: Some(k),
                        },
                    );
                }
            } else {
                push_unique(
                    &mut out,
                    Cell {
                        variant: v,
                        bits: n,
                        k: None,
                    },
                );
            }
        }
    }
    out
}

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
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rescored {
    /// Oversampling 2 (top 20).
    pub x2: f64,
    /// Oversampling 4 (top 40).
    pub x4: f64,
    /// Oversampling 10 (top 100).
    pub x10: f64,
}

/// One cell's measurements: one object of `results.json`. Field names are stable.
#[derive(Debug, Clone, Serialize)]
pub struct CellResult {
    /// Method name (`sign`, `lsh`, `itq`, `topk`, `bsa`, `bsa-alpha0`, `bsa-mse`, `pursuit`).
    pub method: String,
    /// Code length N.
    pub bits: usize,
    /// Target K (null for sign, lsh, itq).
    pub k: Option<usize>,
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
    /// Seconds to fit the model.
    pub train_seconds: f64,
    /// Seconds to encode the base and build the index (codes, vectors, norms).
    pub build_seconds: f64,
    /// Queries per second of the flat Hamming search for the top 10.
    pub search_qps: f64,
}

/// Base, queries and ground truth of a benchmark.
pub struct Data<'a> {
    /// Base vectors, n x D.
    pub base: ArrayView2<'a, f32>,
    /// Query vectors, nq x D.
    pub queries: ArrayView2<'a, f32>,
    /// True neighbours of each query, best first (ids = base rows).
    pub truth: &'a [Vec<u64>],
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
                _ => {}
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

/// Runs one cell: fit, evaluate, encode, build an index under `work`, search and measure.
/// Returns the result and the code statistics of the queries (for the histograms).
pub fn run_cell(
    cell: &Cell,
    data: &Data<'_>,
    settings: &Settings,
    work: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(CellResult, CodeStats)> {
    let started = Instant::now();
    let model = fit(cell, data.base, settings, progress)?;
    let train_seconds = started.elapsed().as_secs_f64();
    let (metrics, stats) = crate::metrics::evaluate(&model, data.queries);
    let bits = model.config.bits;

    let started = Instant::now();
    let active = model.encode_active(data.base);
    let codes = pack::pack_set_bits(&active, bits)?;
    let norms = model.params.decoded_norms(&active);
    let base_flat: Vec<f32> = data.base.iter().copied().collect();
    let dim = data.base.ncols();
    let dir = work.join(format!(
        "index-{}-{}-{}",
        cell.variant.name(),
        bits,
        cell.k.unwrap_or(0)
    ));
    IndexBuilder::new(bits, &codes)
        .vectors(&base_flat, dim)
        .norms(&norms)
        .overwrite(true)
        .build(&dir)?;
    let index = Index::open(&dir)?;
    let build_seconds = started.elapsed().as_secs_f64();

    let q_flat: Vec<f32> = data.queries.iter().copied().collect();
    let q_codes = pack::pack_set_bits(&model.encode_active(data.queries), bits)?;
    let nq = data.queries.nrows();
    let params = SearchParams::default();
    // The top 100 first: it also warms the mapped codes up before the timed top-10 search.
    let top100 = index.search_flat(&q_codes, 100, &params)?;
    let started = Instant::now();
    let top10 = index.search_flat(&q_codes, 10, &params)?;
    let search_seconds = started.elapsed().as_secs_f64();
    let truth = data.truth;
    let truth_cols = truth.iter().map(Vec::len).min().unwrap_or(0);
    let rescored = |o: usize| -> Result<f64> {
        let r = index.rescore_hits(&q_flat, &prefix(&top100, 10 * o), 10)?;
        Ok(recall_at_k(&ids(&r), truth, 10))
    };
    let cosine = index.search_flat_scored(&q_codes, 10, &Score::Cosine, &params)?;
    let (tables, offsets) = model.adc_tables(data.queries);
    let adc_score = Score::Table {
        tables: &tables,
        offsets: &offsets,
        normalise: true,
    };
    let adc = index.search_flat_scored(&q_codes, 40, &adc_score, &params)?;
    let adc_rescored = index.rescore_hits(&q_flat, &adc, 10)?;

    let result = CellResult {
        method: cell.variant.name().to_string(),
        bits,
        k: cell.k,
        epochs: matches!(
            cell.variant,
            Variant::Topk | Variant::Bsa | Variant::BsaAlpha0 | Variant::BsaMse
        )
        .then_some(settings.epochs),
        rounds: (cell.variant == Variant::Pursuit).then_some(settings.rounds),
        metrics,
        bytes_dense: bits as f64 / 8.0,
        bytes_sparse: match (cell.variant.exactly_k(), cell.k) {
            (true, Some(k)) => Some((k as f64 * (bits as f64).log2().ceil()) / 8.0),
            _ => None,
        },
        recall_at_1: recall_at_k(&ids(&top10), truth, 1),
        recall_at_10: recall_at_k(&ids(&top10), truth, 10),
        recall_at_100: (truth_cols >= 100 && index.len() >= 100)
            .then(|| recall_at_k(&ids(&top100), truth, 100)),
        recall_at_10_rescored: Rescored {
            x2: rescored(2)?,
            x4: rescored(4)?,
            x10: rescored(10)?,
        },
        recall_at_10_cosine: recall_at_k(&ids(&cosine), truth, 10),
        recall_at_10_adc: recall_at_k(&ids(&prefix(&adc, 10)), truth, 10),
        recall_at_10_adc_rescored_x4: recall_at_k(&ids(&adc_rescored), truth, 10),
        train_seconds,
        build_seconds,
        search_qps: nq as f64 / search_seconds.max(1e-12),
    };
    drop(index);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((result, stats))
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

fn label(r: &CellResult) -> String {
    match r.k {
        Some(k) => format!("{} | {} | {k}", r.method, r.bits),
        None => format!("{} | {} | -", r.method, r.bits),
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
    let _ = writeln!(s, "- total time {:.1} s\n", info.total_seconds);
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
    let _ = writeln!(s, "\n## Timings\n");
    let _ = writeln!(
        s,
        "| method | N | K | train s | encode + build s | Hamming QPS (flat, top 10) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {:.2} | {:.0} |",
            label(r),
            r.train_seconds,
            r.build_seconds,
            r.search_qps
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

/// One series of a [`chart`].
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// The points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Palette index (series of one method share it).
    pub color: usize,
    /// Filled markers (else hollow).
    pub filled: bool,
}

impl Series {
    /// A filled series with its own colour `color`.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>, color: usize) -> Self {
        Series {
            label: label.into(),
            points,
            color,
            filled: true,
        }
    }
}

/// Draws `series` as an SVG chart with labelled axes, a title and a legend (to the right of the
/// plot, so that it never hides points). `lines`: joined points (else markers only); `log2_x`:
/// x values are log2 of the labelled quantity.
#[allow(clippy::too_many_arguments)]
pub fn chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    lines: bool,
    log2_x: bool,
    y_range: Option<(f64, f64)>,
) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: String| Error::io(path, std::io::Error::other(e));
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in series.iter().flat_map(|s| s.points.iter()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if let Some((a, b)) = y_range {
        (y0, y1) = (a, b);
    }
    // 5% margins; a single value gets a range around it.
    let pad = |a: f64, b: f64| {
        let w = if b - a > 1e-9 {
            (b - a) * 0.05
        } else {
            (a.abs() * 0.25).max(1.0)
        };
        (a - w, b + w)
    };
    let (x0, x1) = pad(x0, x1);
    let (y0, y1) = pad(y0, y1);
    let root = SVGBackend::new(path, (1200, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let (plot, legend) = root.split_horizontally(860);
    let mut c = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| err(e.to_string()))?;
    let digits = if x1 - x0 > 10.0 { 0 } else { 1 };
    let fmt_x = |x: &f64| {
        if log2_x {
            format!("{:.digits$}", 2f64.powf(*x))
        } else {
            format!("{x:.digits$}")
        }
    };
    c.configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&fmt_x)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let style = |s: &Series| {
        let color = Palette99::pick(s.color).to_rgba();
        if s.filled {
            color.filled()
        } else {
            color.stroke_width(2)
        }
    };
    for s in series {
        let st = style(s);
        if lines {
            c.draw_series(LineSeries::new(
                s.points.iter().copied(),
                st.color.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?;
        }
        // Markers only where they stay readable.
        if !lines || s.points.len() <= 64 {
            c.draw_series(s.points.iter().map(|&xy| Circle::new(xy, 4, st)))
                .map_err(|e| err(e.to_string()))?;
        }
    }
    for (i, s) in series.iter().enumerate() {
        let y = 60 + 22 * i as i32;
        legend
            .draw(&Circle::new((12, y), 5, style(s)))
            .map_err(|e| err(e.to_string()))?;
        legend
            .draw(&Text::new(s.label.clone(), (24, y - 7), ("sans-serif", 14)))
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// A histogram (bars) of `(x, count)` pairs as SVG.
pub fn histogram(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    bars: &[(f64, f64)],
) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: String| Error::io(path, std::io::Error::other(e));
    let x0 = bars.iter().map(|b| b.0).fold(f64::INFINITY, f64::min);
    let x1 = bars.iter().map(|b| b.0).fold(f64::NEG_INFINITY, f64::max);
    let y1 = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    let (x0, x1) = if x0.is_finite() {
        (x0 - 1.0, x1 + 1.0)
    } else {
        (0.0, 1.0)
    };
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x0..x1, 0.0..(y1 * 1.05).max(1.0))
        .map_err(|e| err(e.to_string()))?;
    c.configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let color = Palette99::pick(0).to_rgba();
    c.draw_series(
        bars.iter()
            .map(|&(x, y)| Rectangle::new([(x - 0.4, 0.0), (x + 0.4, y)], color.filled())),
    )
    .map_err(|e| err(e.to_string()))?
    .label(y_label)
    .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 10, y + 4)], color.filled()));
    c.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// Writes `results.json`, the SVG plots and `report.md` into `out`. `stats` is the cell whose
/// code statistics the two histograms show (its label and statistics), if any.
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
    let methods: Vec<&str> = {
        let mut m: Vec<&str> = results.iter().map(|r| r.method.as_str()).collect();
        m.dedup();
        m
    };
    // Recall@10 against bytes per vector (the smallest storage of each code).
    let mut series: Vec<Series> = Vec::new();
    for (mi, m) in methods.iter().enumerate() {
        let rs: Vec<&CellResult> = results.iter().filter(|r| r.method == *m).collect();
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
    let mut by_k: Vec<Series> = Vec::new();
    let mut losses: Vec<Series> = Vec::new();
    let mut color = 0;
    for m in &methods {
        let mut ns: Vec<usize> = results
            .iter()
            .filter(|r| r.method == *m && r.k.is_some())
            .map(|r| r.bits)
            .collect();
        ns.sort_unstable();
        ns.dedup();
        for n in ns {
            let mut rs: Vec<&CellResult> = results
                .iter()
                .filter(|r| r.method == *m && r.bits == n && r.k.is_some())
                .collect();
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

    let md = report_markdown(info, results, &plots);
    let p = out.join("report.md");
    std::fs::write(&p, md).map_err(|e| Error::io(&p, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_grid_has_one_cell_per_method() {
        let c = cells(Preset::Quick, &Preset::Quick.methods(), None, None, 384);
        let labels: Vec<String> = c.iter().map(Cell::label).collect();
        assert_eq!(
            labels,
            [
                "sign N=384",
                "lsh N=256",
                "itq N=128",
                "topk N=512 K=16",
                "bsa N=512 K=16",
                "pursuit N=1024 K=16"
            ]
        );
        let p = cells(Preset::Paper, &Preset::Paper.methods(), None, None, 384);
        // sign 1, lsh 4, itq 1 (all clamp to D), 5 K-methods x 16.
        assert_eq!(p.len(), 1 + 4 + 1 + 5 * 16);
    }

    #[test]
    fn explicit_sizes_override_the_preset() {
        let c = cells(
            Preset::Quick,
            &[Variant::Sign, Variant::Bsa],
            Some(&[32, 64]),
            Some(&[4, 40]),
            16,
        );
        let labels: Vec<String> = c.iter().map(Cell::label).collect();
        assert_eq!(
            labels,
            ["sign N=16", "bsa N=32 K=4", "bsa N=64 K=4", "bsa N=64 K=40"]
        );
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(utc_now().len(), "2026-11-28 15:38:45 UTC".len());
    }
}
