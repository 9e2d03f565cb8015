//! The local back-end of `bsa search`: an index directory from `bsa build` (grown by `bsa add`,
//! searched as one snapshot of its segments). The only file of the CLI's search that calls the
//! index's search functions.

use std::time::Instant;

use anyhow::{bail, Context};
use bsa_index::live::{IdFilter, SearchOptions, Snapshot};
use bsa_index::{Hits, OpenOptions, Score, SearchParams};

use super::search_common::{packed_queries, Answer, Args, Found, Mode, ScoreName};

/// Searches the index of `--index` as `a` asks.
pub fn search(a: &Args) -> anyhow::Result<Found> {
    let index_dir = a
        .index
        .as_ref()
        .context("give --index DIR or --milvus URL")?;
    let threads = bsa::threads::configure(a.threads)?;
    let index = Snapshot::open_with(index_dir, OpenOptions::verify_checksums(!a.no_verify))?;
    let bits = index.bits();

    // Query codes, and float queries when there are any (for rescoring).
    let float_queries = a.float_queries()?;
    let table_score = matches!(a.score, ScoreName::Adc | ScoreName::Soft);
    if table_score && float_queries.is_none() {
        bail!(
            "--score {} needs float --queries (it compares the float query with the codes)",
            a.score.name()
        );
    }
    if a.mode == Mode::Hnsw {
        // A graph answers the score it was built for (an index without one is refused by the
        // search itself, saying how to build one).
        let cosine = index.graph_metric() == Some(bsa_index::manifest::GraphMetric::Cosine);
        if cosine && !table_score {
            bail!(
                "--mode hnsw: this index's graph was built on decoded vectors and ranks by --score \
                 adc or soft; use --mode flat or inverted for --score {}",
                a.score.name()
            );
        }
        if !cosine && a.score != ScoreName::Hamming {
            bail!(
                "--mode hnsw: this index's graph ranks by Hamming distance only; use --mode flat or \
                 inverted for --score {}, or build the graph on decoded vectors (bsa build --model \
                 M --data X --hnsw)",
                a.score.name()
            );
        }
    }
    if a.mode == Mode::Inverted && !index.has_inverted() {
        bail!(
            "{}: the index has no posting lists for --mode inverted; rebuild it with `bsa build --inverted`",
            index_dir.display()
        );
    }
    if a.max_dist.is_some() && a.score != ScoreName::Hamming {
        bail!("--max-distance applies to --score hamming only (give --min-score for the others)");
    }
    if a.min_score.is_some() && a.score == ScoreName::Hamming {
        bail!("--min-score applies to scores other than hamming (give --max-distance for it)");
    }
    if a.k == Some(0) {
        bail!("--k must be at least 1");
    }
    if a.score == ScoreName::Adc && !index.has_norms() {
        bail!(
            "{}: --score adc needs the norms of the decoded codes; rebuild the index with --model",
            index_dir.display()
        );
    }
    let (codes, nq, model, encode_seconds) = packed_queries(
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

    let params = SearchParams::default().with_max_distance(a.max_dist);
    let (allow, deny) = (
        a.allow_ids
            .as_deref()
            .map(bsa::io::read_u64_ids)
            .transpose()?,
        a.deny_ids
            .as_deref()
            .map(bsa::io::read_u64_ids)
            .transpose()?,
    );
    let filter = match (&allow, &deny) {
        (Some(ids), _) => Some(IdFilter::Allow(ids)),
        (None, Some(ids)) => Some(IdFilter::Deny(ids)),
        (None, None) => None,
    };
    let options = SearchOptions::default()
        .with_params(params)
        .with_filter(filter)
        .with_min_score(a.min_score);
    let mode = bsa_index::Mode::parse(a.mode.name())?.with_ef_search(a.ef);
    let fetch = a.fetch();
    // The walk keeps its ef best in its list and answers with the best `fetch` rows it scored,
    // so a rescored search may walk with fewer than it rescores, but not with fewer than --k.
    if let Some((ef, k)) = a.ef.zip(a.k).filter(|&(ef, k)| ef < k) {
        bail!("--ef {ef} is below --k {k}; give --ef {k} or more");
    }
    let started = Instant::now();
    // Per-query tables for the asymmetric scores (the same bits for any --threads or CPU;
    // integer ADC tables when --rescore re-ranks the candidates anyway).
    let (tables, offsets) = bsa::query::tables(
        bsa::query::ScoreName::parse(a.score.name())?,
        model.as_ref(),
        float_queries.as_ref().map(|q| q.view()),
        &codes,
        bits,
        a.rescore.is_some(),
    );
    let score = match a.score {
        ScoreName::Cosine => Score::Cosine,
        ScoreName::Jaccard => Score::Jaccard,
        ScoreName::Adc | ScoreName::Soft | ScoreName::Overlap => Score::Table {
            tables: &tables,
            offsets: &offsets,
            normalise: a.score == ScoreName::Adc,
        },
        ScoreName::Hamming => Score::Hamming,
    };
    let (mut hits, search_stats) = index.search(&codes, fetch, &score, &mode, &options)?;
    if let (Some(_), Some(q)) = (a.rescore, &float_queries) {
        use rayon::prelude::*;
        hits = hits
            .par_iter()
            .enumerate()
            .map(|(i, h)| index.rescore(q.row(i), h, a.k()))
            .collect::<Result<Vec<Hits>, _>>()?;
    }
    let seconds = started.elapsed().as_secs_f64();

    let mut stats = Vec::new();
    if a.stats {
        stats = vec![
            // The kernel family (BSA_KERNEL or the CPU's best) and its kernel for this width.
            (
                "kernel_family",
                bsa_index::KernelFamily::resolve(params.kernel)?
                    .name()
                    .into(),
            ),
            ("kernel", search_stats.kernel.into()),
            // Table scores (adc, soft) read the per-code set bits when the index stores them.
            (
                "table_layout",
                if index
                    .segments()
                    .iter()
                    .all(|s| s.index().sparse().is_some())
                {
                    "sparse"
                } else {
                    "packed"
                }
                .into(),
            ),
        ];
        // The quantised table scan's kernel (flat table scores), then the mode's own counters
        // (how the inverted search answered each query, the codes the table scan re-scored).
        if a.score == ScoreName::Adc {
            // Which ADC tables ranked the candidates (bsa::query::tables).
            let kind = if a.rescore.is_some() { "int8" } else { "f32" };
            stats.push(("adc_tables", kind.into()));
        }
        if let Some(t) = search_stats.table_kernel {
            stats.push(("table_kernel", t.into()));
        }
        stats.extend(search_stats.counters.iter().map(|&(k, v)| (k, v.into())));
    }
    debug_assert_eq!(hits.len(), nq);
    Ok(Found {
        answers: hits
            .into_iter()
            .map(|h| Answer {
                ids: h.ids,
                distances: h.distances,
                scores: h.scores,
            })
            .collect(),
        threads,
        seconds,
        encode_seconds,
        mode: a.mode.name(),
        stats,
    })
}
