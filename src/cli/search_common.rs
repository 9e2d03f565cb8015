//! What the front-end of `bsa search` (`search.rs`) and its two back-ends (`search_local.rs`, a
//! local index; `milvus_search.rs`, a Milvus collection) share: the flags, the score and mode
//! names, the queries as packed codes (for Milvus), and the answer a back-end hands back for printing. A leaf:
//! it imports neither the front-end nor a back-end.

use std::path::PathBuf;

use super::io::{ZeroRows, open_embeddings};

/// Search an index with float queries (encoded with the index's model) or packed query codes.
///
/// Output: one JSON line per query, {"query": i, "ids": [...], "distances": [...]}, plus
/// "scores": the --score values for every score but hamming (best first; "distances" are
/// still Hamming distances), or, after --rescore, the exact cosine of the float vectors.
/// With --labels FILE, the neighbours' lines of FILE instead (with their scores, when they are
/// ranked by one, and Hamming distances). --no-distances leaves the distances out. The output
/// is the same bytes for every --threads.
///
/// Scores (exact, ties by smaller id, in flat and inverted mode; the graph of --mode hnsw ranks
/// by Hamming distance, or by adc and soft when it was built on float vectors: `bsa build
/// --hnsw-on decoded` or `data`):
///   hamming  |q xor b| ascending
///   cosine   |q and b| / sqrt(|q| |b|), descending;  jaccard  |q and b| / |q or b|
///   overlap  |q and b|, descending
///   adc      cos(q, xhat_b): the float query against each code as the model decodes it
///            (needs float --queries and an index built with --model; with --rescore the
///            candidates come from 8-bit integer tables, 2-3x faster to compute, and only their
///            exact cosines are printed)
///   soft     sigmoid(q We^T + be) . b (needs float --queries and the model); a sum over the
///            code's set bits, so codes with more bits score higher: it ranks codes of a fixed
///            number of bits (topk, pursuit), not sign, ITQ or BSA codes (which it ranks by
///            their bit counts: recall@10 0.001-0.002 on the sample)
///
/// Examples:
///   bsa search --index idx --queries query.npy --k 10
///   bsa search --index idx --queries query.npy --k 10 --rescore 10 --stats
///   bsa search --index idx --query-codes qcodes.npy --k 10 --mode hnsw --ef 128
///       (a graph on the codes: bsa build --codes ... --hnsw)
///   bsa search --index idx --queries query.npy --k 10 --mode inverted --score adc --rescore 10
///       (posting lists and vectors: bsa build --model ... --inverted --vectors; ADC and soft
///       scores use the lists only for codes with fewer than N / 640 bits set on average, e.g.
///       K = 4 of 4096, and scan flat otherwise, as --stats's flat_fallback_queries shows)
///
/// Through a Milvus collection written by `bsa export` (needs a build with `--features milvus`;
/// scores hamming, overlap |q and b| and adc; see README "Scaling out"):
///   bsa search --milvus http://127.0.0.1:19530 --collection wordnet --model m.safetensors \
///     --queries query.npy --k 10 --score adc --rescore 4 --vectors base.npy
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
// One of each pair is required: the usage error names both ("<--index <INDEX>|--milvus ...>").
#[command(group(clap::ArgGroup::new("searched").required(true).args(["index", "milvus"])))]
#[command(group(clap::ArgGroup::new("asked").required(true).args(["queries", "query_codes"])))]
pub struct Args {
    /// Index directory from `bsa build`.
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// Search a Milvus collection written by `bsa export` instead of a local index (URL of the
    /// server, e.g. http://127.0.0.1:19530; needs a build with `--features milvus`).
    #[arg(long, requires = "collection")]
    pub milvus: Option<String>,
    /// The Milvus collection (with --milvus).
    #[arg(long, requires = "milvus")]
    pub collection: Option<String>,
    /// Model file that encodes float --queries (with --milvus; a local index carries its own).
    #[arg(long, requires = "milvus")]
    pub model: Option<PathBuf>,
    /// Float vectors, one row per id, for --rescore with --milvus (a local index stores its own).
    #[arg(long, requires = "milvus")]
    pub vectors: Option<PathBuf>,
    /// With --milvus --score adc: keep only the P largest entries of the query's table in the
    /// sparse query Milvus searches with (0 = all positive entries); bsa re-ranks the candidates
    /// with the full table and the code-norm correction.
    #[arg(long, requires = "milvus")]
    pub prune: Option<usize>,
    /// Float queries, nq x D (encoded with the model stored in the index).
    #[arg(long)]
    pub queries: Option<PathBuf>,
    /// Packed query codes: uint8 .npy, nq x ceil(bits/8), numpy little bit order.
    #[arg(long)]
    pub query_codes: Option<PathBuf>,
    /// Neighbours per query (default 10; with --max-distance or --min-score, every neighbour in
    /// range unless --k caps them).
    #[arg(long)]
    pub k: Option<usize>,
    /// flat (exact scan), inverted (exact, posting lists: `bsa build` stores them when they
    /// pay, but not for a pursuit model's codes, or with --inverted) or hnsw (graph,
    /// approximate; needs `bsa build --hnsw`).
    #[arg(long, value_enum, default_value = "flat")]
    pub mode: Mode,
    /// How codes are ranked: hamming, cosine, jaccard, overlap, adc or soft (see above)
    /// [default: hamming; a pursuit model's index (--preset retrieval) is searched well by
    /// adc, which stderr notes when float queries are ranked by the default].
    #[arg(long = "score", value_enum, value_name = "SCORE")]
    pub score_given: Option<ScoreName>,
    /// HNSW candidate list size, at least --k (default: the value stored at build time, raised
    /// to the candidates asked for: k, or k x R with --rescore R). The answer is the best k
    /// (k x R) of every row the walk scored, so with a given --ef a rescored search may walk
    /// with a list shorter than the candidates it rescores.
    #[arg(long)]
    pub ef: Option<usize>,
    /// Re-rank the top k x R candidates (by --score) by exact cosine against the stored vectors
    /// (with --score adc, the candidates are picked with integer ADC tables: see above; with
    /// --min-score, by the exact scores the bound applies to).
    #[arg(long)]
    pub rescore: Option<usize>,
    /// Range search: every neighbour within this Hamming distance (--score hamming only).
    #[arg(long = "max-distance", visible_alias = "max-dist")]
    pub max_dist: Option<u32>,
    /// Range search: every neighbour scoring at least S (scores other than hamming; S is read
    /// as an f32, as scores are computed and printed, so a bound between two f32 values acts as
    /// the nearest). With --rescore, the bound applies to --score's exact value, and the
    /// rescored cosines printed then order those neighbours (they may be below S: another
    /// measure).
    // Hyphen values: `-inf` is a bound (every row), which `allow_negative_numbers` (see
    // `cli::command`) would read as the short flags `-i -n -f`.
    #[arg(long, conflicts_with = "max_dist", allow_hyphen_values = true)]
    pub min_score: Option<f32>,
    /// Only these ids (.npy, 1-D integers) may be returned; exact modes stay exact, the graph
    /// walks past other rows or scans the allowed ones exactly when they are few (--stats says).
    #[arg(long, conflicts_with = "deny_ids")]
    pub allow_ids: Option<PathBuf>,
    /// These ids (.npy, 1-D integers) are never returned.
    #[arg(long)]
    pub deny_ids: Option<PathBuf>,
    /// Skip the full payload checksums (header and structure checks still run). Without it,
    /// every file the search reads is verified before it is read: the stored vectors at the
    /// rescoring, the posting lists and bitmaps at the inverted search, if any.
    #[arg(long)]
    pub no_verify: bool,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write results here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print {"queries", "threads", "search_seconds", "encode_seconds", "qps"} as one JSON line on
    /// stderr ("search_seconds": tables, search and rescoring; "encode_seconds": encoding the
    /// float queries, 0 with --query-codes; neither counts loading), with the kernels run; flat
    /// table scores (adc, soft) add "table_kernel", "codes_scanned" and "codes_rescored" (codes
    /// the quantised scan's bound left to score exactly), the inverted mode how it answered, the
    /// graph "nodes_visited"; a local index "step_seconds": {"tables", "search", "rescore"}, the
    /// seconds of each step (summed over the threads for --mode hnsw, which gives each thread
    /// its own queries, and the graph's loading counted in its search; within search_seconds
    /// otherwise).
    #[arg(long)]
    pub stats: bool,
    /// Text file with one line per indexed row (by id): print neighbours' lines, for people.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Leave the Hamming distances out of the output (scores other than hamming; the ids,
    /// scores and order are the same). A search of a local index by adc or soft with float
    /// queries then does not encode the queries at all, which with a pursuit model
    /// (--preset retrieval) costs about as much as the search.
    #[arg(long)]
    pub no_distances: bool,
}

/// `--score`: how codes are ranked (the help of [`Args`] defines each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScoreName {
    // Plain comments, not doc comments: clap would print doc comments as a list in `--help`.
    Hamming,
    Cosine,
    Jaccard,
    Adc,
    Soft,
    Overlap,
}

impl ScoreName {
    /// The name on the command line and in the `--stats` line.
    pub fn name(self) -> &'static str {
        match self {
            ScoreName::Hamming => "hamming",
            ScoreName::Cosine => "cosine",
            ScoreName::Jaccard => "jaccard",
            ScoreName::Adc => "adc",
            ScoreName::Soft => "soft",
            ScoreName::Overlap => "overlap",
        }
    }
}

/// Warns on stderr of float queries off unit length when `score` ranks by their codes (or, for
/// `soft`, their activations), which depend on a row's length for `method`: not for `adc`,
/// whose tables (and rescoring) divide by the query's length. The local and the Milvus search
/// alike.
pub(crate) fn warn_if_queries_not_unit(
    queries: &bsa::io::Embeddings,
    method: bsa::model::Method,
    score: ScoreName,
) {
    if score != ScoreName::Adc {
        super::io::warn_if_not_unit(queries, method);
    }
}

/// `--mode`: how a local index is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Flat,
    Hnsw,
    Inverted,
}

impl Mode {
    /// The name on the command line and in the `--stats` line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Flat => "flat",
            Mode::Hnsw => "hnsw",
            Mode::Inverted => "inverted",
        }
    }
}

impl Args {
    /// `--score`, hamming when not given.
    pub fn score(&self) -> ScoreName {
        self.score_given.unwrap_or(ScoreName::Hamming)
    }

    /// Candidates each query fetches: `k`, times `R` with `--rescore R` (the Milvus back-end's
    /// request; the local one's is `bsa::query`'s).
    #[cfg(feature = "milvus")]
    pub fn fetch(&self) -> usize {
        self.k().saturating_mul(self.rescore.unwrap_or(1).max(1))
    }

    /// Neighbours per query: `--k`, else every one in range for a range search, else 10.
    pub fn k(&self) -> usize {
        match self.k {
            Some(k) => k,
            None if self.max_dist.is_some() || self.min_score.is_some() => usize::MAX,
            None => 10,
        }
    }

    /// The float `--queries`, if given, checked for values that are not finite and, where they
    /// are scored as directions (adc, soft, --rescore), for zero rows (every score 0).
    pub fn float_queries(&self) -> anyhow::Result<Option<bsa::io::Embeddings>> {
        let directions =
            matches!(self.score(), ScoreName::Adc | ScoreName::Soft) || self.rescore.is_some();
        let zero_rows = match directions {
            true => ZeroRows::Refused,
            false => ZeroRows::Allowed,
        };
        self.queries
            .as_deref()
            .map(|p| open_embeddings(p, zero_rows))
            .transpose()
    }
}

/// One query's neighbours, best first, as a back-end hands them to the front-end.
pub struct Answer {
    /// External ids.
    pub ids: Vec<u64>,
    /// Hamming distances to the query code (whatever the score).
    pub distances: Vec<u32>,
    /// The `--score` values for non-Hamming scores, or cosine similarities after `--rescore`.
    pub scores: Option<Vec<f32>>,
}

/// What a back-end found, and what the front-end's `--stats` line reports about it.
pub struct Found {
    /// One answer per query.
    pub answers: Vec<Answer>,
    /// Threads the search ran on.
    pub threads: usize,
    /// Seconds of the search.
    pub seconds: f64,
    /// Seconds spent encoding the float queries (0 for `--query-codes`).
    pub encode_seconds: f64,
    /// The `mode` of the `--stats` line.
    pub mode: &'static str,
    /// The back-end's own `--stats` fields, in order (empty without `--stats`).
    pub stats: Vec<(&'static str, serde_json::Value)>,
}

/// The queries as packed `bits`-bit codes, their number, the model and the seconds spent encoding:
/// float queries encoded by the model at `model_path()` (asked for only then; the model is returned
/// for ADC tables; loading it is not in the seconds), or the packed codes of the `.npy` at
/// `codes_path` (0 seconds). `holder` names what holds the codes, for the errors.
/// The Milvus back-end's (the local one goes through `bsa::query`).
#[cfg(feature = "milvus")]
pub(crate) fn packed_queries(
    float: Option<&bsa::io::Embeddings>,
    codes_path: Option<&std::path::Path>,
    bits: usize,
    holder: &str,
    model_path: impl FnOnce() -> anyhow::Result<PathBuf>,
) -> anyhow::Result<(Vec<u64>, usize, Option<bsa::model::Autoencoder>, f64)> {
    use anyhow::bail;
    use bsa_index::pack;
    match (float, codes_path) {
        (Some(q), _) => {
            let path = model_path()?;
            let m = bsa::io::model::load(&path)?;
            if m.config.bits != bits {
                bail!(
                    "{}: model makes {}-bit codes but {holder} holds {bits}-bit codes",
                    path.display(),
                    m.config.bits
                );
            }
            q.expect_dim(m.config.dim)?;
            let started = std::time::Instant::now();
            let packed = pack::pack_set_bits(&m.encode_active(q.view()), bits)?;
            let seconds = started.elapsed().as_secs_f64();
            Ok((packed, q.n(), Some(m), seconds))
        }
        (None, Some(p)) => {
            let (bytes, nq) = read_query_codes(p, bits, holder)?;
            let cols = bits.div_ceil(8);
            Ok((pack::pack_le_bytes(&bytes, nq, cols, bits)?, nq, None, 0.0))
        }
        (None, None) => bail!("give --queries or --query-codes"),
    }
}

/// The packed query codes of the `.npy` at `path` (`rows x ceil(bits / 8)` bytes) and their
/// number, checked against the `bits`-bit codes `holder` holds (an error names the file).
pub(crate) fn read_query_codes(
    path: &std::path::Path,
    bits: usize,
    holder: &str,
) -> anyhow::Result<(Vec<u8>, usize)> {
    let (rows, cols, bytes) = match bsa::io::read_u8(path) {
        Ok(read) => read,
        // Float embeddings given as codes: say where they go.
        Err(_) if bsa::io::Embeddings::open(path).is_ok() => anyhow::bail!(
            "{}: float embeddings, not packed codes: give them with --queries (--query-codes \
             takes uint8 codes from `bsa encode`)",
            path.display()
        ),
        Err(e) => return Err(e.into()),
    };
    if rows == 0 {
        // As --queries says it of an empty embedding file.
        anyhow::bail!(
            "{}: no rows: a query-codes file needs at least one code",
            path.display()
        );
    }
    super::io::warn_if_unpacked(path, rows, cols, &bytes);
    if cols != bits.div_ceil(8) {
        anyhow::bail!(
            "{}: query codes have {cols} bytes, {holder} holds {bits}-bit codes ({} bytes)",
            path.display(),
            bits.div_ceil(8)
        );
    }
    // Padding bits set past `bits` (codes of another width): refused here, naming the file.
    bsa_index::pack::pack_le_bytes(&bytes, rows, cols, bits)
        .map_err(|e| anyhow::anyhow!("--query-codes {}: {e}", path.display()))?;
    Ok((bytes, rows))
}
