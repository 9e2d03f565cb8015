//! The local back-end of `bsa search`: an index directory from `bsa build` (grown by `bsa add`,
//! searched as one snapshot of its segments), searched by the library's [`bsa::query`] (the
//! search crate's `bsa_index::query`, which the Python package calls too).

use anyhow::{Context, bail};
use bsa::query::{Queries, Request};
use bsa_index::OpenOptions;
use bsa_index::live::{IdFilter, Snapshot};

use super::search_common::{
    Answer, Args, Found, ScoreName, read_query_codes, warn_if_queries_not_unit,
};

/// Searches the index of `--index` as `a` asks, through [`bsa::query::search_filtered`] (the
/// library's search, which makes the checks a search needs and says what is missing); this
/// file adds what belongs to the command line: reading the query files, naming them in errors,
/// and the `--stats` fields.
pub fn search(a: &Args) -> anyhow::Result<Found> {
    let index_dir = a
        .index
        .as_ref()
        .context("give --index DIR or --milvus URL")?;
    let threads = bsa::threads::configure(a.threads)?;
    // The stored vectors (often most of the index's bytes) and the posting lists are checked
    // by the rescoring or inverted search that reads them, if any: a search that reads
    // neither need not read them from disk.
    let options = OpenOptions::verify_checksums(!a.no_verify).lazy(true);
    let index = Snapshot::open_with(index_dir, options)?;
    let bits = index.bits();
    if a.k == Some(0) {
        bail!("--k must be at least 1");
    }

    let float_queries = a.float_queries()?;
    let code_bytes = match (&float_queries, a.query_codes.as_deref()) {
        (Some(_), _) => None,
        (None, Some(p)) => Some(read_query_codes(p, bits, "the index")?),
        (None, None) => bail!("give --queries or --query-codes"),
    };
    // The index's own model encodes float queries (and makes the adc and soft tables).
    let model = match &float_queries {
        Some(q) => {
            let model = bsa::query::index_model(&index)?;
            if let Some(m) = &model {
                q.expect_dim(m.config.dim)?;
                warn_if_queries_not_unit(q, m.config.method, a.score());
            }
            model
        }
        None => None,
    };
    let queries = match (&float_queries, &code_bytes) {
        (Some(q), _) => Queries::Floats(q.view()),
        (None, Some((bytes, rows))) => Queries::Packed {
            bytes,
            rows: *rows,
            cols: bits.div_ceil(8),
        },
        (None, None) => unreachable!("refused above"),
    };
    let request = Request::new(a.k())
        .mode(a.mode.name())?
        .score(a.score().name())?
        .rescore(a.rescore)
        .with_ef(a.ef)
        .max_distance(a.max_dist)
        .min_score(a.min_score)
        .distances(!a.no_distances);
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
    // An allow-list of ids the index does not hold (another index's, or deleted rows) gives
    // empty or short answers that look like a bad search: say so.
    if let (Some(ids), Some(path)) = (&allow, &a.allow_ids) {
        let unknown = ids
            .iter()
            .filter(|&&id| index.find_id(id).is_none())
            .count();
        if unknown > 0 {
            errln!(
                "bsa: warning: {unknown} of the {} ids in {} are not live in {} (never added \
                 or deleted); only the others can be returned",
                ids.len(),
                path.display(),
                index_dir.display()
            );
        }
    }
    let filter = IdFilter::from_lists(allow.as_deref(), deny.as_deref())?;
    // Ctrl-C stops the search between batches of queries, and nothing is written.
    let stop = super::signals::stop_on_signal()?;
    let found = bsa::query::search_until(
        &index,
        model.as_ref(),
        queries,
        &request,
        filter,
        Some(&stop),
    )?;
    // (--max-distance is a Hamming range: asked for by name, in effect.)
    if a.score_given.is_none()
        && a.max_dist.is_none()
        && model
            .as_ref()
            .is_some_and(|m| m.config.method == bsa::model::Method::Pursuit)
    {
        // Such codes rank poorly by Hamming (WordNet recall@10: 0.38, adc 0.80), and the
        // default gave no sign of it. Said once the search ran: a refused one says why alone.
        errln!(
            "bsa: note: ranked by Hamming distance (the default --score); this index's codes \
             are a pursuit model's (--preset retrieval), made to be searched with --score adc \
             (and --rescore R with stored vectors)"
        );
    }
    let (hits, search_stats) = (found.hits, found.stats);

    let mut stats = Vec::new();
    if a.stats {
        stats = vec![
            // The kernel family (BSA_KERNEL or the CPU's best) and its kernel for this width.
            (
                "kernel_family",
                bsa_index::KernelFamily::resolve(None)?.name().into(),
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
        if a.score() == ScoreName::Adc {
            // Which ADC tables ranked the candidates (bsa::query::tables).
            let int8 = request.picks_with_int_tables();
            stats.push(("adc_tables", if int8 { "int8" } else { "f32" }.into()));
            if let (true, Some(m)) = (int8, &model) {
                // The integer kernel (AMX, VNNI, ...: the same sums on every one).
                let kernel = bsa_index::int_tables::kernel_name(m.params.dim());
                stats.push(("adc_tables_kernel", kernel.into()));
            }
        }
        if let Some(t) = search_stats.table_kernel {
            stats.push(("table_kernel", t.into()));
        }
        stats.extend(search_stats.counters.iter().map(|&(k, v)| (k, v.into())));
        // Where the time went (thread time for a graph's groups of queries: see StepSeconds).
        let steps = found.steps;
        stats.push((
            "step_seconds",
            serde_json::json!({"tables": steps.tables, "search": steps.search, "rescore": steps.rescore}),
        ));
    }
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
        seconds: found.seconds,
        encode_seconds: found.encode_seconds,
        mode: a.mode.name(),
        stats,
    })
}
