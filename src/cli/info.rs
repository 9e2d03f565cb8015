//! `bsa info`: what an index holds and what it costs on disk, without reading its payloads
//! ([`bsa_index::live::Snapshot::summary`], and the model).

use std::path::PathBuf;

use bsa::pipeline::GraphOn;
use bsa_index::OpenOptions;
use bsa_index::live::{Snapshot, Summary};
use bsa_index::manifest::GraphMetric;
use indicatif::{HumanBytes, HumanCount};

/// Describe an index: rows, model, vectors, search structures, bytes on disk.
///
/// Rows live and deleted, per segment too; the model's method, N, K and input dimension; the
/// modes and scores the index serves; its bytes on disk by kind of file.
///
/// Reads the manifests, the model (checked against its recorded checksum, as a search reads
/// it: a damaged one is described as such), the files' headers and the sparse codes' layout
/// (one pass over sparse.bin, a few bytes a row), not the other files' checksums nor the
/// posting lists. A damaged header is an error; a full check is `bsa verify`'s.
///
/// Examples:
///   bsa info --index idx
///   bsa info --index idx --json | jq .bytes
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Index directory from `bsa build`.
    #[arg(long)]
    pub index: PathBuf,
    /// Print one JSON object on stdout instead: the index's summary (`format_version`,
    /// `generation`, `bits`, `rows`, `live_rows`, `next_id`, `vectors`, `norms`, `inverted`,
    /// `graph`, `graph_on`, `model`, `segments`, `bytes` by kind of file, `total_bytes`) and the model's
    /// settings (`model_config`: method, bits, k when the method has one, dim) or why it
    /// cannot be read
    /// (`model_error`).
    #[arg(long)]
    pub json: bool,
}

/// The model's settings, as `--json` prints them.
#[derive(serde::Serialize)]
struct ModelConfig {
    method: String,
    bits: usize,
    /// Only for the methods that set K bits (topk, pursuit) or aim at K (bsa): a baseline's
    /// model file holds a `k` that is no setting of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    k: Option<usize>,
    dim: usize,
}

#[derive(serde::Serialize)]
struct Info<'a> {
    #[serde(flatten)]
    summary: &'a Summary,
    /// What the graph is built on (`--hnsw-on`: decoded, data or codes), if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    graph_on: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_config: Option<ModelConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_error: Option<String>,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    // No checksums, and the posting lists and bitmaps not read at all (lazy): only the
    // manifests, the files' headers and the sparse codes' one structural pass (and the model,
    // read as a search reads it, its checksum checked).
    let options = OpenOptions::verify_checksums(false).lazy(true);
    let index = Snapshot::open_with(&a.index, options)?;
    let summary = index.summary()?;
    // A model that cannot be read or does not fit is described, not fatal: the rest of the
    // index still is what it is (`bsa verify` fails on it).
    let (model_config, model_error) = match bsa::query::index_model(&index) {
        Ok(m) => (
            m.map(|m| ModelConfig {
                method: m.config.method.to_string(),
                bits: m.config.bits,
                k: (!m.config.method.is_baseline()).then_some(m.config.k),
                dim: m.config.dim,
            }),
            None,
        ),
        Err(e) => (None, Some(e.to_string())),
    };
    let graph_on = GraphOn::of_index(index.extra(), index.graph_metric());
    if a.json {
        return super::io::print_json(&Info {
            summary: &summary,
            graph_on: graph_on.map(GraphOn::name),
            model_config,
            model_error,
        });
    }
    print_text(
        a,
        &summary,
        graph_on,
        model_config.as_ref(),
        model_error.as_deref(),
    )?;
    Ok(())
}

fn print_text(
    a: &Args,
    s: &Summary,
    graph_on: Option<GraphOn>,
    model: Option<&ModelConfig>,
    model_error: Option<&str>,
) -> std::io::Result<()> {
    let count = |n: usize| HumanCount(n as u64).to_string();
    let deleted = s.rows - s.live_rows;
    outln!(
        "{}: bsa index, format {}{}, {}-bit codes ({} bytes each)",
        a.index.display(),
        s.format_version,
        if s.format_version >= 2 {
            format!(", generation {}", s.generation)
        } else {
            String::new()
        },
        s.bits,
        s.bits.div_ceil(8),
    )?;
    outln!(
        "rows:     {} live{} in {} segment{}; {}",
        count(s.live_rows),
        match deleted {
            0 => String::new(),
            d => format!(" ({} deleted, dropped by `bsa compact`)", count(d)),
        },
        s.segments.len(),
        if s.segments.len() == 1 { "" } else { "s" },
        // Ids are int64 (`bsa::pipeline::check_ids_fit_int64`): an add then needs its own.
        match i64::try_from(s.next_id) {
            Ok(next) => format!("the next id added is {next}"),
            Err(_) => "no default id is left below 2^63: an add must give its ids".to_string(),
        },
    )?;
    match (&s.model, model, model_error) {
        (None, ..) => outln!("model:    none (search with --query-codes)")?,
        (Some(file), Some(m), _) => outln!(
            "model:    {file}: {}, {} bits{}, from {}-d rows",
            m.method,
            m.bits,
            m.k.map(|k| format!(", K = {k}")).unwrap_or_default(),
            m.dim
        )?,
        (Some(file), None, e) => outln!(
            "model:    {file}: cannot be used: {}",
            e.unwrap_or("not read")
        )?,
    }
    match s.vectors {
        None => outln!("vectors:  none (no --rescore)")?,
        Some(v) => outln!("vectors:  {}-d {} (for --rescore)", v.dim, v.dtype)?,
    }
    let of_segments = |n: usize| match (n, s.segments.len()) {
        (n, all) if n == all => String::new(),
        (n, all) => format!(" in {n} of {all} segments"),
    };
    let mut modes = vec!["flat".to_string()];
    if s.inverted {
        let bitmaps = s.segments.iter().filter(|g| g.bitmaps).count();
        modes.push(match bitmaps {
            0 => "inverted (posting lists)".to_string(),
            n => format!("inverted (posting lists, bitmaps{})", of_segments(n)),
        });
    }
    if let Some(g) = &s.graph {
        let on = match (g.metric, g.dim, graph_on) {
            (GraphMetric::Hamming, ..) => "on codes, Hamming".to_string(),
            (_, Some(d), Some(GraphOn::Data)) => format!("on the data, {d}-d, for ADC and soft"),
            (_, Some(d), _) => format!("on the decoded codes, {d}-d, for ADC and soft"),
            (_, None, _) => "on vectors".to_string(),
        };
        let bridged = s
            .segments
            .iter()
            .filter(|g| g.bridged_from.is_some())
            .count();
        modes.push(format!(
            "hnsw ({on}; M {}, ef_construction {}, default ef {}{})",
            g.max_connections,
            g.ef_construction,
            g.ef_search,
            match bridged {
                0 => String::new(),
                1 => "; 1 segment bridged".to_string(),
                n => format!("; {n} segments bridged"),
            }
        ));
    }
    outln!("modes:    {}", modes.join("; "))?;
    let sparse = s.segments.iter().filter(|g| g.sparse).count();
    outln!(
        "scores:   hamming, cosine, jaccard, overlap{}",
        match (model.is_some(), sparse) {
            (false, _) => String::new(),
            (true, 0) => "; adc, soft (the model's decoder)".to_string(),
            (true, n) => format!(
                "; adc, soft (the model's decoder, over set-bit ids{})",
                of_segments(n)
            ),
        }
    )?;
    let mut by_size: Vec<(&String, &u64)> = s.bytes.iter().collect();
    by_size.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    outln!(
        "disk:     {}{}: {}",
        HumanBytes(s.total_bytes),
        if s.live_rows > 0 {
            format!(
                ", {} per live row",
                HumanBytes(s.total_bytes / s.live_rows as u64)
            )
        } else {
            String::new()
        },
        by_size
            .iter()
            .map(|(name, n)| format!("{name} {}", HumanBytes(**n)))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    if s.format_version >= 2 && !s.segments.is_empty() {
        outln!(
            "{:<12} {:>11} {:>11} {:>12}",
            "segment",
            "rows",
            "live",
            "bytes"
        )?;
        for g in &s.segments {
            outln!(
                "{:<12} {:>11} {:>11} {:>12}",
                g.name,
                count(g.rows),
                count(g.live_rows),
                HumanBytes(g.bytes).to_string()
            )?;
        }
    }
    Ok(())
}
