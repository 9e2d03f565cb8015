//! `bsa search`: k nearest codes of each query in an index, as JSON lines.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use bsa_index::{pack, Hits, Index, OpenOptions, Score, SearchParams};
use serde::Serialize;

/// Search an index with float queries (encoded with the index's model) or packed query codes.
///
/// Output: one JSON line per query, {"query": i, "ids": [...], "distances": [...]}, plus
/// "scores": the --score values for cosine, jaccard, adc and soft (best first; "distances" are
/// still Hamming distances), or, after --rescore, the exact cosine of the float vectors.
/// With --labels FILE, the neighbours' lines of FILE instead. The output is the same bytes for
/// every --threads.
///
/// Scores (all exact, ties by smaller row, in every --mode but hnsw, which is Hamming only):
///   hamming  |q xor b| ascending
///   cosine   |q and b| / sqrt(|q| |b|), descending;  jaccard  |q and b| / |q or b|
///   overlap  |q and b|, descending
///   adc      cos(q, xhat_b): the float query against each code as the model decodes it
///            (needs float --queries and an index built with --model)
///   soft     sigmoid(q We^T + be) . b (needs float --queries and the model)
///
/// Examples:
///   bsa search --index idx --queries query.npy --k 10
///   bsa search --index idx --queries query.npy --k 10 --rescore 10 --stats
///   bsa search --index idx --query-codes qcodes.npy --k 10 --mode hnsw --ef 128
///   bsa search --index idx --queries query.npy --k 10 --mode inverted --score adc --rescore 10
///
/// Through a Milvus collection written by `bsa export` (needs a build with `--features milvus`;
/// scores hamming, overlap |q and b| and adc; see README "Scaling out"):
///   bsa search --milvus http://127.0.0.1:19530 --collection wordnet --model m.safetensors \
///     --queries query.npy --k 10 --score adc --rescore 4 --vectors base.npy
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Index directory from `bsa build`.
    #[arg(long, required_unless_present = "milvus", conflicts_with = "milvus")]
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
    #[arg(
        long,
        required_unless_present = "query_codes",
        conflicts_with = "query_codes"
    )]
    pub queries: Option<PathBuf>,
    /// Packed query codes: uint8 .npy, nq x ceil(bits/8), numpy little bit order.
    #[arg(long)]
    pub query_codes: Option<PathBuf>,
    /// Neighbours per query.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// flat (exact scan), inverted (exact, posting lists; needs `bsa build --inverted`) or hnsw
    /// (graph, approximate, Hamming only).
    #[arg(long, default_value = "flat", value_parser = ["flat", "hnsw", "inverted"])]
    pub mode: String,
    /// How codes are ranked: hamming, cosine, jaccard, overlap, adc or soft (see above).
    #[arg(long, default_value = "hamming", value_parser = ["hamming", "cosine", "jaccard", "adc", "soft", "overlap"])]
    pub score: String,
    /// HNSW candidate list size (default: the value stored at build time).
    #[arg(long)]
    pub ef: Option<usize>,
    /// Re-rank the top k x R candidates (by --score) by exact cosine against the stored vectors.
    #[arg(long)]
    pub rescore: Option<usize>,
    /// Only neighbours within this Hamming distance (--score hamming only).
    #[arg(long)]
    pub max_dist: Option<u32>,
    /// Skip the full payload checksums when opening (header checks still run).
    #[arg(long)]
    pub no_verify: bool,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write results here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print {"queries", "threads", "search_seconds", "qps"} as one JSON line on stderr, with the
    /// kernels run; flat table scores (adc, soft) add "table_kernel", "codes_scanned" and
    /// "codes_rescored" (codes the quantised scan's bound left to score exactly).
    #[arg(long)]
    pub stats: bool,
    /// Text file with one line per indexed row (by id): print neighbours' lines, for people.
    #[arg(long)]
    pub labels: Option<PathBuf>,
}

/// One result line of `bsa search`. Field names are stable.
#[derive(Debug, Serialize)]
pub struct ResultLine<'a> {
    /// Zero-based query number.
    pub query: usize,
    /// External ids of the neighbours, best first.
    pub ids: &'a [u64],
    /// Their Hamming distances to the query code (whatever the score).
    pub distances: &'a [u32],
    /// The `--score` values for non-Hamming scores, or cosine similarities after `--rescore`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scores: Option<&'a [f32]>,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    if a.milvus.is_some() {
        return super::milvus_search::run(a);
    }
    let index_dir = a
        .index
        .as_ref()
        .context("give --index DIR or --milvus URL")?;
    let threads = bsa::threads::configure(a.threads)?;
    let index = Index::open_with(index_dir, OpenOptions::verify_checksums(!a.no_verify))?;
    let bits = index.bits();

    // Query codes, and float queries when there are any (for rescoring).
    let float_queries = match &a.queries {
        Some(p) => Some(super::open_embeddings(p, a.rescore.is_some())?),
        None => None,
    };
    let table_score = matches!(a.score.as_str(), "adc" | "soft");
    if table_score && float_queries.is_none() {
        bail!(
            "--score {} needs float --queries (it compares the float query with the codes)",
            a.score
        );
    }
    if a.mode == "hnsw" && a.score != "hamming" {
        bail!(
            "--mode hnsw ranks by Hamming distance only; use --mode flat or inverted for --score {}",
            a.score
        );
    }
    if a.mode == "inverted" && !index.has_inverted() {
        bail!(
            "{}: the index has no posting lists for --mode inverted; rebuild it with `bsa build --inverted`",
            index_dir.display()
        );
    }
    if a.max_dist.is_some() && a.score != "hamming" {
        bail!("--max-dist applies to --score hamming only");
    }
    if a.score == "adc" && index.norms().is_none() {
        bail!(
            "{}: --score adc needs the norms of the decoded codes; rebuild the index with --model",
            index_dir.display()
        );
    }
    let (codes, nq, model) = packed_queries(
        float_queries.as_ref(),
        a.query_codes.as_deref(),
        bits,
        "the index",
        || {
            index.model_path().with_context(|| {
                format!(
                    "{}: the index has no model to encode float queries; build it with --model, \
                     or pass --query-codes",
                    index_dir.display()
                )
            })
        },
    )?;
    if a.rescore.is_some() {
        if float_queries.is_none() {
            bail!("--rescore needs float --queries (codes alone cannot be rescored)");
        }
        if !index.has_vectors() {
            bail!(
                "{}: the index stores no vectors to rescore with; rebuild it with --vectors",
                index_dir.display()
            );
        }
    }
    let labels = match &a.labels {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading labels {}", p.display()))?
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        ),
        None => None,
    };

    let params = SearchParams::default()
        .with_max_distance(a.max_dist)
        .with_ef_search(a.ef);
    let fetch = a.k.saturating_mul(a.rescore.unwrap_or(1).max(1));
    let started = Instant::now();
    // Per-query tables for the asymmetric scores, each entry a fixed-order sum
    // (`bsa::deterministic`), so the scores printed do not depend on --threads or the CPU.
    let (tables, offsets) = match (table_score, &model, &float_queries) {
        (true, Some(m), Some(q)) if a.score == "adc" => m.adc_tables(q.view()),
        (true, Some(m), Some(q)) => m.soft_tables(q.view()),
        // Overlap |q and b|: a 0/1 table of the query's bits, the sparse inner product Milvus
        // computes for `--milvus --score overlap`.
        _ if a.score == "overlap" => overlap_tables(&codes, bits),
        _ => (Vec::new(), Vec::new()),
    };
    let score = match a.score.as_str() {
        "cosine" => Score::Cosine,
        "jaccard" => Score::Jaccard,
        "adc" | "soft" | "overlap" => Score::Table {
            tables: &tables,
            offsets: &offsets,
            normalise: a.score == "adc",
        },
        _ => Score::Hamming,
    };
    let mut inverted_stats = None;
    let mut scan_stats = None;
    let mut hits = match a.mode.as_str() {
        "hnsw" => index.search_hnsw(&codes, fetch, &params)?,
        "inverted" => {
            let (h, st) = index.search_inverted(&codes, fetch, &score, &params)?;
            inverted_stats = Some(st);
            h
        }
        _ => {
            let (h, st) = index.search_flat_scored_with_stats(&codes, fetch, &score, &params)?;
            scan_stats = Some(st);
            h
        }
    };
    if let (Some(_), Some(q)) = (a.rescore, &float_queries) {
        use rayon::prelude::*;
        hits = hits
            .par_iter()
            .enumerate()
            .map(|(i, h)| index.rescore(q.row(i), h, a.k))
            .collect::<Result<Vec<Hits>, _>>()?;
    }
    let seconds = started.elapsed().as_secs_f64();

    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    for (i, h) in hits.iter().enumerate() {
        match &labels {
            Some(lines) => {
                writeln!(out, "query {i}:")?;
                for (rank, (&id, &d)) in h.ids.iter().zip(&h.distances).enumerate() {
                    let text = usize::try_from(id)
                        .ok()
                        .and_then(|id| lines.get(id))
                        .map(String::as_str)
                        .unwrap_or("<no label>");
                    writeln!(out, "  {:>3}. [{id}] d={d} {text}", rank + 1)?;
                }
            }
            None => {
                serde_json::to_writer(
                    &mut out,
                    &ResultLine {
                        query: i,
                        ids: &h.ids,
                        distances: &h.distances,
                        scores: h.scores.as_deref(),
                    },
                )?;
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    if a.stats {
        let mut st = serde_json::json!({
            "queries": nq,
            "threads": threads,
            "search_seconds": seconds,
            "qps": nq as f64 / seconds.max(1e-12),
            "mode": a.mode,
            "score": a.score,
            // The kernel family (BSA_KERNEL or the CPU's best) and its kernel for this width.
            "kernel_family": bsa_index::KernelFamily::resolve(params.kernel)?.name(),
            "kernel": index.kernel_name(&params)?,
            // Table scores (adc, soft) read the per-code set bits when the index stores them.
            "table_layout": if index.sparse().is_some() { "sparse" } else { "packed" },
        });
        if let (Some(s), Score::Table { .. }) = (scan_stats, &score) {
            // The quantised table scan (bsa_index::adc) and the codes it re-scored exactly.
            st["table_kernel"] = index.table_kernel_name(&params)?.into();
            st["codes_scanned"] = s.scanned.into();
            st["codes_rescored"] = s.rescored.into();
        }
        if let Some(s) = inverted_stats {
            // Queries whose posting lists were longer than a flat scan were answered by the scan.
            st["inverted_queries"] = s.inverted_queries.into();
            st["flat_fallback_queries"] = s.flat_queries.into();
            st["postings_visited"] = s.postings_visited.into();
            st["codes_verified"] = s.codes_verified.into();
            st["bitmap_queries"] = s.bitmap_queries.into();
        }
        eprintln!("{st}");
    }
    Ok(())
}

/// Per-query 0/1 tables of the overlap score: 1.0 at each set bit of the query code, offsets 0.
/// The queries as packed `bits`-bit codes and their number: float queries encoded by the model
/// at `model_path()` (asked for only then; the model is returned for ADC tables), or the packed
/// codes of the `.npy` at `codes_path`. `holder` names what holds the codes, for the errors.
/// Shared by the local and the Milvus search.
pub(crate) fn packed_queries(
    float: Option<&bsa::io::Embeddings>,
    codes_path: Option<&std::path::Path>,
    bits: usize,
    holder: &str,
    model_path: impl FnOnce() -> anyhow::Result<PathBuf>,
) -> anyhow::Result<(Vec<u64>, usize, Option<bsa::model::Autoencoder>)> {
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
            let packed = pack::pack_set_bits(&m.encode_active(q.view()), bits)?;
            Ok((packed, q.n(), Some(m)))
        }
        (None, Some(p)) => {
            let (nq, cols, bytes) = bsa::io::read_u8(p)?;
            if cols != bits.div_ceil(8) {
                bail!(
                    "{}: query codes have {cols} bytes, {holder} holds {bits}-bit codes ({} bytes)",
                    p.display(),
                    bits.div_ceil(8)
                );
            }
            Ok((pack::pack_le_bytes(&bytes, nq, cols, bits)?, nq, None))
        }
        (None, None) => bail!("give --queries or --query-codes"),
    }
}

fn overlap_tables(codes: &[u64], bits: usize) -> (Vec<f32>, Vec<f32>) {
    let wpc = pack::words_per_code(bits);
    let nq = codes.len() / wpc.max(1);
    let mut t = vec![0.0f32; nq * bits];
    for (i, code) in codes.chunks_exact(wpc).enumerate() {
        for j in (0..bits).filter(|&j| pack::get_bit(code, j)) {
            t[i * bits + j] = 1.0;
        }
    }
    (t, vec![0.0; nq])
}
