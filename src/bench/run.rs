//! Running one cell of the grid: fit (or load from the cache) the model, encode, build an index
//! and measure every search; and the cache of fitted models and finished measurements that lets
//! an interrupted grid resume.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use super::grid::{Cell, Settings, Variant};
use super::result::{
    CellResult, HnswPoint, HnswResult, InvertedResult, OtherScores, Rescored, Throughput,
};
use crate::baselines::BaselineParams;
use crate::error::{Error, Result};
use crate::metrics::{CodeStats, recall_at_k};
use crate::model::{Autoencoder, LossKind};
use crate::pursuit::PursuitParams;
use crate::train::{Progress, TrainParams};
use bsa_index::{Hits, HnswParams, Index, IndexBuilder, Score, SearchParams, pack};

/// Table lookups (queries x set bits of the base) one cell may spend on its ADC measurement;
/// beyond it, fewer queries are used (at least 500). A minute or two on 2 cores.
pub const ADC_LOOKUP_BUDGET: f64 = 1e11;

/// The `ef` values of the HNSW sweep.
pub const HNSW_EFS: [usize; 6] = [10, 20, 40, 80, 160, 320];

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
/// so that old results are measured again (models stay valid). 5: QPS are medians of at least
/// three timed runs after an untimed one; 6: Jaccard, intersection and soft recall.
pub const RESULT_VERSION: u32 = 6;

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
    /// CRC-32 of the model file saved with this record: a model file from another fit (two
    /// benches sharing a cache, or a kill between the two writes) is refitted, not trusted.
    /// Absent in caches written before it, whose models are trusted as before.
    #[serde(default)]
    model_crc32: Option<u32>,
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
/// result.json}`. Entries whose key (data fingerprint, settings, bsa version and source) differs
/// are ignored and overwritten.
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

/// Fits the model of `cell`; `progress(done, total)` follows training steps or rounds. Returns
/// [`Error::Stopped`] at the next step or round once `stop` is set (Ctrl-C).
pub fn fit(
    cell: &Cell,
    base: ArrayView2<f32>,
    settings: &Settings,
    progress: &mut dyn FnMut(u64, u64),
    stop: &AtomicBool,
) -> Result<Autoencoder> {
    let (n, dim) = base.dim();
    let k = cell
        .k
        .unwrap_or_else(|| BaselineParams::default_k(cell.bits));
    match cell.variant {
        Variant::Sign | Variant::Lsh | Variant::Itq => {
            let mut p = BaselineParams::new(cell.variant.method(), cell.bits);
            p.seed = settings.seed;
            p.validate(dim)?;
            Ok(p.fit_until(base, stop)?.0)
        }
        Variant::Pursuit => {
            let mut p = PursuitParams::new(cell.bits, k);
            p.rounds = settings.rounds;
            p.seed = settings.seed;
            let total = p.rounds as u64;
            let (params, _) =
                p.fit_until(base, None, &mut |r| progress(r.round as u64, total), stop)?;
            Ok(p.model(dim, params))
        }
        v => {
            let mut p = TrainParams::new(cell.bits, k);
            p.epochs = settings.epochs;
            p.seed = settings.seed;
            p.batch = p.batch.min(n.max(1));
            p.method = v.method();
            match v {
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
            let total = (n.div_ceil(p.batch) as u64).saturating_mul(p.epochs as u64);
            let mut done = 0;
            let (model, _) = p.fit_until(
                base,
                &mut |e| {
                    if let Progress::Step { .. } = e {
                        done += 1;
                        progress(done, total);
                    }
                },
                stop,
            )?;
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
        // The source too: a trainer changed under the same version fits anew.
        bsa_version: concat!(env!("CARGO_PKG_VERSION"), "+", env!("BSA_SOURCE_ID")).to_string(),
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

    /// Whether the cache holds finished measurements of `cell` and the model they came from
    /// (see `bsa bench --cached-only`, which must not fit a model whose file is gone).
    pub fn has_finished(&self, cell: &Cell, data: &Data<'_>, settings: &Settings) -> bool {
        let key = fit_key(cell, data, settings);
        self.finished(cell, data, settings).is_some()
            && cached_model(&self.dir.join(cell.slug()), &key).is_some()
    }
}

/// The model an identical fit (`key`) stored in the cell's cache folder `dir`, and its fit
/// seconds: `None` when there is none, or its file is not the one recorded.
fn cached_model(dir: &Path, key: &FitKey) -> Option<(Autoencoder, f64)> {
    let rec: FitRecord = Cache::read(&dir.join("fit.json"))?;
    if rec.key != *key {
        return None;
    }
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).ok()?;
    if rec
        .model_crc32
        .is_some_and(|c| c != crc32fast::hash(&bytes))
    {
        return None;
    }
    let model = crate::io::model::from_bytes(&bytes, &path).ok()?;
    Some((model, rec.train_seconds))
}

/// Fits `cell`, or loads its model from `cache` when an identical fit is stored there. Returns
/// the model and its fit seconds.
fn fit_or_load(
    cell: &Cell,
    data: &Data<'_>,
    settings: &Settings,
    cache: Option<&Cache>,
    progress: &mut dyn FnMut(u64, u64),
    stop: &AtomicBool,
) -> Result<(Autoencoder, f64, FitKey)> {
    let key = fit_key(cell, data, settings);
    let dir = cache.map(|c| c.dir.join(cell.slug()));
    if let Some((model, train_seconds)) = dir.as_deref().and_then(|d| cached_model(d, &key)) {
        return Ok((model, train_seconds, key));
    }
    let started = Instant::now();
    let model = fit(cell, data.base, settings, progress, stop)?;
    let train_seconds = started.elapsed().as_secs_f64();
    if let Some(dir) = &dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let info = serde_json::json!({ "bench_cell": cell.label() });
        // The model first, then the record naming its CRC: if either write is abandoned
        // (Ctrl-C, io::abandon_writes_on) or the process killed between them, an old record
        // never vouches for a new model, nor a new record for an old one.
        let path = dir.join("model.safetensors");
        crate::io::model::save(&path, &model, &info)?;
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        Cache::write(
            &dir.join("fit.json"),
            &FitRecord {
                key: key.clone(),
                train_seconds,
                model_crc32: Some(crc32fast::hash(&bytes)),
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

/// A search is timed again until its runs add up to this many seconds (or [`TIMING_RUNS`]).
pub const TIMING_SECONDS: f64 = 0.3;
/// At least this many timed runs of a search, after its untimed first run.
pub const TIMING_MIN_RUNS: usize = 3;
/// At most this many timed runs of a search; the median run is reported.
pub const TIMING_RUNS: usize = 15;

/// Runs the search `f` once untimed (its value is returned; it pays for what the first search
/// of an index builds and keeps, and for cold pages), then timed until there are
/// [`TIMING_MIN_RUNS`] runs adding up to [`TIMING_SECONDS`], or [`TIMING_RUNS`] of them, and
/// returns the median run's seconds. Runs of a few milliseconds on a shared machine varied
/// 2-4x between identical benchmarks, and a search longer than the budget was one run, its
/// first, before.
///
/// Ctrl-C (`stop`) ends it with [`Error::Stopped`] before any run: a slow search (ADC over dense
/// codes) repeated for its median took half a minute to stop.
fn timed_median<T>(stop: &AtomicBool, mut f: impl FnMut() -> Result<T>) -> Result<(T, f64)> {
    let check = || bsa_index::check_stop(Some(stop)).map_err(Error::from);
    check()?;
    let value = f()?;
    let mut runs = Vec::new();
    while runs.len() < TIMING_MIN_RUNS
        || (runs.len() < TIMING_RUNS && runs.iter().sum::<f64>() < TIMING_SECONDS)
    {
        check()?;
        runs.push(timed(&mut f)?.1);
    }
    runs.sort_by(f64::total_cmp);
    Ok((value, runs[runs.len() / 2]))
}

/// Runs one cell: fit (or load from `cache`), evaluate, encode, build an index under `work`,
/// search and measure. Returns the result and the code statistics of the queries (for the
/// histograms). Returns [`Error::Stopped`] once `stop` is set (Ctrl-C), at the next step of
/// the fit, of an index build, or between the searches; what it wrote under `work` stays for
/// the caller to remove (the CLI's temporary folder).
pub fn run_cell(
    cell: &Cell,
    data: &Data<'_>,
    settings: &Settings,
    work: &Path,
    cache: Option<&Cache>,
    progress: &mut dyn FnMut(u64, u64),
    stop: &AtomicBool,
) -> Result<(CellResult, CodeStats)> {
    let check = || bsa_index::check_stop(Some(stop)).map_err(Error::from);
    let (model, train_seconds, key) = fit_or_load(cell, data, settings, cache, progress, stop)?;
    check()?;
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
    // The rows themselves when in C order (a memory-mapped .npy's are): a copy per cell was
    // 1.5 KB a row of 384-d data.
    let base_flat = data.base.as_standard_layout();
    let base_flat = base_flat.as_slice().expect("standard layout");
    let dim = data.base.ncols();
    let dir = work.join(format!("index-{}", cell.slug()));
    let (lists, expected_postings, scan_words) = bsa_index::postings::pays_off(&codes, bits);
    IndexBuilder::new(bits, &codes)
        .vectors(base_flat, dim)
        .norms(&norms)
        .inverted(lists)
        .overwrite(true)
        .stop_when(stop)
        .build(&dir)?;
    let index = Index::open(&dir)?;
    let build_seconds = encode_seconds + started.elapsed().as_secs_f64();

    let q_flat = data.queries.as_standard_layout();
    let q_flat = q_flat.as_slice().expect("standard layout");
    let nq = data.queries.nrows();
    // Encoded as `bsa search` encodes queries (the search crate's fixed-order path), so that
    // the figure is a search's.
    let (q_active, q_encode_seconds) =
        timed_median(stop, || Ok(model.view().codes(data.queries)?))?;
    let q_codes = pack::pack_set_bits(&q_active, bits)?;
    drop(q_active);
    let params = SearchParams::default();
    let qps = |seconds: f64| nq as f64 / seconds;
    // The top 100 first: it also warms the mapped codes up before the timed top-10 search.
    let top100 = index.search_flat(&q_codes, 100, &params)?;
    let (top10, t_hamming) = timed_median(stop, || Ok(index.search_flat(&q_codes, 10, &params)?))?;
    let truth = data.truth;
    let truth_cols = truth.iter().map(Vec::len).min().unwrap_or(0);
    let rescored = |o: usize| -> Result<f64> {
        let r = index.rescore_hits(q_flat, &prefix(&top100, 10 * o), 10)?;
        Ok(recall_at_k(&ids(&r), truth, 10))
    };
    check()?;
    let (_, t_rescored) = timed_median(stop, || {
        let c = index.search_flat(&q_codes, 40, &params)?;
        Ok(index.rescore_hits(q_flat, &c, 10)?)
    })?;
    let (cosine, t_cosine) = timed_median(stop, || {
        Ok(index.search_flat_scored(&q_codes, 10, &Score::Cosine, &params)?)
    })?;
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
    let (adc40, t_adc) = timed_median(stop, || {
        let (tables, offsets) = model.adc_tables(adc_queries)?;
        let score = Score::Table {
            tables: &tables,
            offsets: &offsets,
            normalise: true,
        };
        Ok(index.search_flat_scored(adc_codes, 40, &score, &params)?)
    })?;
    check()?;
    // The other scores method.md lists beside Hamming: Jaccard on the query codes, and the
    // table scores on the ADC queries (they read every set bit, as ADC does): the plain
    // intersection `|q and b|` (`--score overlap`) and the soft asymmetric score, the query's
    // sigmoid activations against the bits (`--score soft`).
    let (jaccard, t_jaccard) = timed_median(stop, || {
        Ok(index.search_flat_scored(&q_codes, 10, &Score::Jaccard, &params)?)
    })?;
    let table_search = |tables: &[f32], offsets: &[f32]| {
        let score = Score::Table {
            tables,
            offsets,
            normalise: false,
        };
        index.search_flat_scored(adc_codes, 10, &score, &params)
    };
    let (overlap, t_overlap) = timed_median(stop, || {
        let (tables, offsets) = bsa_index::query::overlap_tables(adc_codes, bits);
        Ok(table_search(&tables, &offsets)?)
    })?;
    let (soft, t_soft) = timed_median(stop, || {
        let (tables, offsets) = model.soft_tables(adc_queries)?;
        Ok(table_search(&tables, &offsets)?)
    })?;
    let other_scores = OtherScores {
        jaccard: recall_at_k(&ids(&jaccard), truth, 10),
        jaccard_qps: qps(t_jaccard),
        overlap: recall_at_k(&ids(&overlap), adc_truth, 10),
        overlap_qps: adc_qps(t_overlap),
        soft: recall_at_k(&ids(&soft), adc_truth, 10),
        soft_qps: adc_qps(t_soft),
    };
    drop((jaccard, overlap, soft));
    let adc10 = prefix(&adc40, 10);
    let (adc_rescored, t_rescore) = timed_median(stop, || {
        Ok(index.rescore_hits(&q_flat[..adc_nq * dim], &adc40, 10)?)
    })?;
    let t_adc_rescored = t_adc + t_rescore;
    let inverted = if lists {
        let ((hits, stats), t_h) = timed_median(stop, || {
            Ok(index.search_inverted(&q_codes, 10, &Score::Hamming, &params)?)
        })?;
        let ((adc_inv, _), t_a) = timed_median(stop, || {
            let (tables, offsets) = model.adc_tables(adc_queries)?;
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
            (base_flat, dim),
            (&q_codes, q_flat),
            truth,
            stop,
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
        bytes_dense: bits.div_ceil(8) as f64,
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
        other_scores: Some(other_scores),
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
    (q_codes, q_flat): (&[u64], &[f32]),
    truth: &[Vec<u64>],
    stop: &AtomicBool,
) -> Result<HnswResult> {
    let hp = HnswParams::default();
    let started = Instant::now();
    IndexBuilder::new(bits, codes)
        .vectors(vectors, dim)
        .hnsw(hp)
        .overwrite(true)
        .stop_when(stop)
        .build(dir)?;
    let build_seconds = started.elapsed().as_secs_f64();
    let index = Index::open(dir)?;
    let nq = truth.len() as f64;
    let mut points = Vec::with_capacity(HNSW_EFS.len());
    // One untimed pass loads the graph.
    index.search_hnsw(q_codes, 10, &SearchParams::default())?;
    for ef in HNSW_EFS {
        bsa_index::check_stop(Some(stop))?;
        let p = SearchParams::default().with_ef_search(Some(ef));
        let (hits, t) = timed_median(stop, || Ok(index.search_hnsw(q_codes, 10, &p)?))?;
        let (rescored, t_r) = timed_median(stop, || {
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

/// Queries of a given ground truth compared with the exact one by [`check_ground_truth`].
pub const GT_SAMPLE: usize = 32;
/// How far a listed neighbour's cosine may be from the exact one at its rank in
/// [`check_ground_truth`]: ground truth from other tools (float32 FAISS or numpy) rounds
/// differently, and ties may come in either order.
pub const GT_TOLERANCE: f64 = 1e-4;

/// Checks a ground truth read from `path` (`truth[q]`: the ids of query `q`'s neighbours, best
/// first, all in range) before a benchmark scores recall against it: no row lists an id twice
/// (one retrieved id would match every copy, inflating recall), and for [`GT_SAMPLE`] queries
/// spread over the file the listed neighbours' cosines are the exact top cosines rank by rank,
/// within [`GT_TOLERANCE`]. That catches a ground truth of another base, of queries in another
/// order, or not sorted best first, which would otherwise give a report of wrong recalls.
///
/// ```
/// use ndarray::array;
/// let base = array![[1.0f32, 0.0], [0.0, 1.0], [0.6, 0.8]];
/// let queries = array![[1.0f32, 0.1]];
/// let path = std::path::Path::new("gt.npy");
/// let ok = bsa::bench::check_ground_truth(base.view(), queries.view(), &[vec![0, 2]], path);
/// assert!(ok.is_ok());
/// let worst_first = vec![vec![1, 2]];
/// let err = bsa::bench::check_ground_truth(base.view(), queries.view(), &worst_first, path);
/// assert!(err.unwrap_err().to_string().contains("gt.npy: row 0: neighbour 0 (id 1)"));
/// let repeated = vec![vec![0, 0]];
/// let err = bsa::bench::check_ground_truth(base.view(), queries.view(), &repeated, path);
/// assert!(err.unwrap_err().to_string().contains("lists id 0 more than once"));
/// ```
pub fn check_ground_truth(
    base: ArrayView2<f32>,
    queries: ArrayView2<f32>,
    truth: &[Vec<u64>],
    path: &Path,
) -> Result<()> {
    for (q, row) in truth.iter().enumerate() {
        let mut sorted = row.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::format(
                path,
                format!(
                    "row {q} lists id {} more than once; a ground truth lists distinct \
                     neighbours",
                    w[0]
                ),
            ));
        }
    }
    let cols = truth.iter().map(Vec::len).min().unwrap_or(0);
    let nq = truth.len().min(queries.nrows());
    if cols == 0 || nq == 0 {
        return Ok(());
    }
    let picks = GT_SAMPLE.min(nq);
    let sample: Vec<usize> = (0..picks).map(|s| s * nq / picks).collect();
    let exact = crate::groundtruth::exact_top_k(
        base,
        queries.select(ndarray::Axis(0), &sample).view(),
        cols,
    )?;
    let cosine = |q: usize, id: u64| -> f64 {
        let (a, b) = (queries.row(q), base.row(id as usize));
        let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (f64::from(x), f64::from(y));
            (ab, aa, bb) = (ab + x * y, aa + x * x, bb + y * y);
        }
        ab / (aa * bb).sqrt()
    };
    for (s, &q) in sample.iter().enumerate() {
        for (j, (&id, &best)) in truth[q].iter().zip(&exact[s]).enumerate() {
            let (listed, exact) = (cosine(q, id), cosine(q, u64::from(best)));
            if (listed - exact).abs() > GT_TOLERANCE {
                return Err(Error::format(
                    path,
                    format!(
                        "row {q}: neighbour {j} (id {id}) has cosine {listed:.6} with query \
                         {q}, but the exact neighbour {j} has {exact:.6}: this is not the \
                         exact cosine top {cols} of these queries over this base (another \
                         base, the queries in another order, or not sorted best first); make \
                         it with `bsa groundtruth`, or leave --gt out"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Exact top-`min(100, n)` ground truth by cosine ([`crate::groundtruth::exact_top_k_blocked`]:
/// [`Error::Stopped`] once `stop` is set).
pub fn ground_truth(
    base: ArrayView2<f32>,
    queries: ArrayView2<f32>,
    stop: &AtomicBool,
) -> Result<Vec<Vec<u64>>> {
    let k = 100.min(base.nrows());
    Ok(crate::groundtruth::exact_top_k_blocked(
        base,
        queries,
        k,
        crate::groundtruth::Blocks::default(),
        &mut |_, _| {},
        stop,
    )?
    .into_iter()
    .map(|r| r.into_iter().map(u64::from).collect())
    .collect())
}
