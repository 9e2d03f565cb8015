//! The measurements of one cell, as `results.json` and the cache store them (field names are
//! stable).

use serde::{Deserialize, Serialize};

use crate::metrics::PaperMetrics;

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

/// Recall@10 (and queries per second) of the other scores method.md lists beside Hamming,
/// ADC and binary cosine, each a flat top-10 search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OtherScores {
    /// Jaccard `|q and b| / |q or b|` of the query codes (every query).
    pub jaccard: f64,
    /// Queries per second of the Jaccard search.
    pub jaccard_qps: f64,
    /// The intersection `|q and b|` (`--score overlap`), on the ADC queries.
    pub overlap: f64,
    /// Queries per second of the intersection search (its tables included).
    pub overlap_qps: f64,
    /// The soft asymmetric score `sigmoid(q We^T + be) . b` (`--score soft`), on the ADC
    /// queries.
    pub soft: f64,
    /// Queries per second of the soft search (its tables included).
    pub soft_qps: f64,
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
    /// One point per `ef` in [`HNSW_EFS`](super::HNSW_EFS).
    pub points: Vec<HnswPoint>,
}

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
    /// Dense storage: ceil(N / 8) bytes per vector (what `bsa encode` writes).
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
    /// unless the codes are dense (see [`ADC_LOOKUP_BUDGET`](super::ADC_LOOKUP_BUDGET)).
    #[serde(default)]
    pub adc_queries: usize,
    /// Jaccard, intersection and soft recall (null in results of bsa before they were
    /// measured).
    #[serde(default)]
    pub other_scores: Option<OtherScores>,
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
