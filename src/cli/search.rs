//! `bsa search`: k nearest codes of each query, as JSON lines. The front-end: it picks the back-end
//! (`search_local.rs` for an index directory, `milvus_search.rs` for a Milvus collection), which
//! answers the queries, and prints the answers and the `--stats` line the same way for both.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::search_common::Answer;
pub use super::search_common::Args;
use super::{milvus_search, search_local};

/// One result line of `bsa search`. Field names are stable.
#[derive(Debug, Serialize)]
pub struct ResultLine<'a> {
    /// Zero-based query number.
    pub query: usize,
    /// External ids of the neighbours, best first.
    pub ids: &'a [u64],
    /// Their Hamming distances to the query code (whatever the score); left out with
    /// `--no-distances`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distances: Option<&'a [u32]>,
    /// The `--score` values for non-Hamming scores, or cosine similarities after `--rescore`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scores: Option<&'a [f32]>,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    // Flags that would be ignored are refused, as `bsa build` and `bsa train` refuse theirs
    // (clap's `requires` does not hold --collection to --milvus here; --ef without --mode hnsw
    // is refused by the search, bsa::query::Request::check_ef, or by Milvus's).
    if a.collection.is_some() && a.milvus.is_none() {
        anyhow::bail!(
            "--collection names a Milvus collection: give --milvus URL with it (a local --index \
             needs neither)"
        );
    }
    if a.no_distances && a.score() == super::search_common::ScoreName::Hamming {
        anyhow::bail!(
            "--no-distances: the Hamming distances are what --score hamming ranks by, so they \
             stay; leave the flag out, or rank by another --score"
        );
    }
    if a.rescore == Some(0) {
        anyhow::bail!(
            "--rescore must be at least 1 (candidates fetched per result, then rescored)"
        );
    }
    if let Some(out) = &a.out {
        super::io::refuse_clobbering(
            out,
            true,
            &[
                ("--index", a.index.as_deref()),
                ("--model", a.model.as_deref()),
                ("--vectors", a.vectors.as_deref()),
                ("--queries", a.queries.as_deref()),
                ("--query-codes", a.query_codes.as_deref()),
                ("--allow-ids", a.allow_ids.as_deref()),
                ("--deny-ids", a.deny_ids.as_deref()),
                ("--labels", a.labels.as_deref()),
            ],
        )?;
    }
    // Read before the search, which a bad labels file would otherwise waste.
    let labels = match &a.labels {
        Some(p) => Some(
            String::from_utf8(bsa::io::read_file(p).map_err(|e| anyhow::anyhow!("--labels {e}"))?)
                .map_err(|_| {
                    anyhow::anyhow!(
                        "--labels {}: not UTF-8 text; give a text file with one label per line \
                     (line i names row i)",
                        p.display()
                    )
                })?
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        ),
        None => None,
    };
    let found = if a.milvus.is_some() {
        let found = milvus_search::search(a)?;
        // Ctrl-C while the answers are written leaves nothing (the local search takes it
        // from its start, between batches; a remote one cannot be stopped halfway).
        super::signals::stop_on_signal()?;
        found
    } else {
        search_local::search(a)?
    };
    if let (Some(lines), Some(path)) = (&labels, &a.labels) {
        let unlabelled = found
            .answers
            .iter()
            .flat_map(|h| &h.ids)
            .filter(|&&id| usize::try_from(id).map_or(true, |id| id >= lines.len()))
            .count();
        if unlabelled > 0 {
            errln!(
                "bsa: warning: {} has {} lines, but {unlabelled} neighbours have ids past them \
                 (printed as <no label>): is it the labels file of this index?",
                path.display(),
                lines.len()
            );
        }
    }
    let distances = !a.no_distances;
    write_answers(
        a.out.as_deref(),
        &found.answers,
        labels.as_deref(),
        distances,
    )?;
    if a.stats {
        let nq = found.answers.len();
        let mut st = serde_json::json!({
            "queries": nq,
            "threads": found.threads,
            "search_seconds": found.seconds,
            "encode_seconds": found.encode_seconds,
            "qps": nq as f64 / found.seconds.max(1e-12),
            "mode": found.mode,
            "score": a.score().name(),
        });
        for (key, value) in found.stats {
            st[key] = value;
        }
        errln!("{st}");
    }
    Ok(())
}

/// Writes one [`ResultLine`] per query to `out` (stdout when `None`), or, with `labels`, the
/// neighbours' lines of the labels file, for people; with their Hamming distances when
/// `distances`. A file is written whole or not at all: a temporary file beside it, renamed
/// over it once complete.
fn write_answers(
    out: Option<&Path>,
    answers: &[Answer],
    labels: Option<&[String]>,
    distances: bool,
) -> anyhow::Result<()> {
    let Some(path) = out else {
        let mut w = std::io::BufWriter::new(std::io::stdout().lock());
        write_lines(&mut w, answers, labels, distances).map_err(super::io::on_stdout)?;
        return Ok(w.flush().map_err(super::io::on_stdout)?);
    };
    Ok(bsa::io::write_atomic(path, |w| {
        write_lines(w, answers, labels, distances)
    })?)
}

/// The lines of [`write_answers`], to any writer.
fn write_lines(
    out: &mut impl Write,
    answers: &[Answer],
    labels: Option<&[String]>,
    distances: bool,
) -> std::io::Result<()> {
    for (i, h) in answers.iter().enumerate() {
        match labels {
            Some(lines) => {
                writeln!(out, "query {i}:")?;
                for (rank, (&id, &d)) in h.ids.iter().zip(&h.distances).enumerate() {
                    let text = usize::try_from(id)
                        .ok()
                        .and_then(|id| lines.get(id))
                        .map(String::as_str)
                        .unwrap_or("<no label>");
                    // The score the neighbours are ranked by, when it is not the distance.
                    let score = match h.scores.as_deref().and_then(|s| s.get(rank)) {
                        Some(s) => format!("score={s:.4} "),
                        None => String::new(),
                    };
                    let d = match distances {
                        true => format!("d={d} "),
                        false => String::new(),
                    };
                    writeln!(out, "  {:>3}. [{id}] {score}{d}{text}", rank + 1)?;
                }
            }
            None => {
                serde_json::to_writer(
                    &mut *out,
                    &ResultLine {
                        query: i,
                        ids: &h.ids,
                        distances: distances.then_some(&h.distances[..]),
                        scores: h.scores.as_deref(),
                    },
                )?;
                writeln!(out)?;
            }
        }
    }
    Ok(())
}
