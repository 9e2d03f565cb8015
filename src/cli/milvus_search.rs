//! `bsa search --milvus URL --collection NAME`: the Milvus back-end of `bsa search`, a collection
//! written by `bsa export` (cargo feature `milvus`). Same flags and JSON lines as the local
//! back-end (the front-end prints both); the mechanics are in [`bsa::milvus`].

/// The error of a build without the `milvus` feature.
#[cfg(not(feature = "milvus"))]
pub const NOT_BUILT: &str = "this bsa was built without Milvus support; rebuild it with \
    `cargo build --release --features milvus` (see README, \"Scaling out\")";

#[cfg(not(feature = "milvus"))]
pub fn search(_: &super::search_common::Args) -> anyhow::Result<super::search_common::Found> {
    anyhow::bail!("{NOT_BUILT}")
}

#[cfg(feature = "milvus")]
pub use with_milvus::search;

#[cfg(feature = "milvus")]
mod with_milvus {
    use std::time::Instant;

    use anyhow::{Context, Result, bail};
    use bsa::milvus::{Candidate, Client, MAX_LIMIT, adc_bound, adc_query, set_bits};
    use bsa_index::{Vectors, hamming, pack, score, vectors};

    use super::super::search_common::{
        Answer, Args, Found, Mode, ScoreName, packed_queries, warn_if_queries_not_unit,
    };

    /// Queries per Milvus request.
    const BATCH: usize = 32;

    /// Searches the collection of `--milvus` and `--collection` as `a` asks.
    pub fn search(a: &Args) -> Result<Found> {
        let threads = bsa::threads::configure(a.threads)?;
        let url = a.milvus.as_deref().context("--milvus URL is missing")?;
        let coll = a
            .collection
            .as_deref()
            .context("--milvus needs --collection NAME")?;
        if !matches!(
            a.score(),
            ScoreName::Hamming | ScoreName::Overlap | ScoreName::Adc
        ) {
            bail!(
                "--score {} is not served by Milvus; use hamming, overlap or adc",
                a.score().name()
            );
        }
        if a.mode != Mode::Flat {
            bail!("--mode applies to local indexes; Milvus picks its own index");
        }
        for (set, flag) in [
            (a.max_dist.is_some(), "--max-distance"),
            (a.min_score.is_some(), "--min-score"),
            (a.allow_ids.is_some(), "--allow-ids"),
            (a.deny_ids.is_some(), "--deny-ids"),
            (a.ef.is_some(), "--ef"),
            (a.labels.is_some(), "--labels"),
            (a.no_verify, "--no-verify"),
        ] {
            if set {
                bail!("{flag} applies to local indexes, not to --milvus");
            }
        }
        if a.k() == 0 {
            bail!("--k must be at least 1");
        }
        if a.prune.is_some() && a.score() != ScoreName::Adc {
            bail!("--prune applies to --score adc only");
        }
        if a.prune == Some(0) {
            bail!("--prune must keep at least 1 entry (leave it out for the whole table)");
        }

        let client = Client::connect(url)?;
        let meta = client.meta(coll)?;
        let bits = meta.bits;

        let float_queries = a.float_queries()?;
        if a.score() == ScoreName::Adc && float_queries.is_none() {
            bail!("--score adc needs float --queries (it compares the float query with the codes)");
        }
        let norm_range = match (a.score(), meta.norm_range) {
            (ScoreName::Adc, None) => bail!(
                "{url}: collection {coll:?} has no code norms for --score adc; export an index built with --model"
            ),
            (_, r) => r,
        };
        let (codes, nq, model, encode_seconds) = packed_queries(
            float_queries.as_ref(),
            a.query_codes.as_deref(),
            bits,
            &format!("collection {coll:?}"),
            || {
                a.model.clone().context(
                    "float --queries with --milvus need --model MODEL to encode them (or pass --query-codes)",
                )
            },
        )?;
        if let (Some(q), Some(m)) = (&float_queries, &model) {
            warn_if_queries_not_unit(q, m.config.method, a.score());
        }
        let vectors = match (a.rescore, &a.vectors, &float_queries) {
            (None, Some(_), _) => bail!("--vectors is for --rescore"),
            (None, None, _) => None,
            (Some(_), None, _) => bail!(
                "--rescore with --milvus needs --vectors X.npy (the float vectors, one row per id)"
            ),
            (Some(_), Some(_), None) => {
                bail!("--rescore needs float --queries (codes alone cannot be rescored)")
            }
            (Some(_), Some(p), Some(q)) => {
                let v = super::super::io::open_embeddings(p, super::super::io::ZeroRows::Allowed)?;
                if v.dim() != q.dim() {
                    bail!(
                        "{}: vectors have dimension {}, the queries {}",
                        p.display(),
                        v.dim(),
                        q.dim()
                    );
                }
                Some((p, v))
            }
        };
        let fetch = a.fetch();
        if fetch > MAX_LIMIT {
            bail!("--k x --rescore = {fetch} exceeds Milvus's top-k limit of {MAX_LIMIT}");
        }
        let wpc = pack::words_per_code(bits);
        // The local search's tables (integer ones under --rescore, as
        // `Request::picks_with_int_tables` says; --min-score, its exception, is refused above),
        // so both pick the same candidates.
        let (tables, offsets) = match (&model, &float_queries) {
            (Some(m), Some(q)) if a.score() == ScoreName::Adc => bsa::query::tables(
                bsa::query::ScoreName::Adc,
                Some(m),
                Some(q.view()),
                &[],
                bits,
                a.rescore.is_some(),
            )?,
            _ => (Vec::new(), Vec::new()),
        };

        let started = Instant::now();
        let mut answers: Vec<Answer> = Vec::with_capacity(nq);
        let mut unproven = 0usize;
        let mut candidates_fetched = 0usize;
        for start in (0..nq).step_by(BATCH) {
            let end = (start + BATCH).min(nq);
            let qcode = |i: usize| &codes[i * wpc..(i + 1) * wpc];
            let batch: Vec<Vec<Candidate>> = match a.score() {
                ScoreName::Hamming => {
                    let qs = (start..end)
                        .map(|i| pack::unpack_to_le_bytes(qcode(i), 1, bits))
                        .collect::<Result<Vec<_>, _>>()?;
                    client.search_binary(coll, &meta, &qs, fetch.min(meta.rows.max(1)))?
                }
                ScoreName::Overlap => {
                    let qs: Vec<Vec<(u32, f32)>> = (start..end)
                        .map(|i| set_bits(qcode(i)).map(|j| (j, 1.0)).collect())
                        .collect();
                    client.search_sparse(coll, &meta, &qs, fetch.min(meta.rows.max(1)))?
                }
                // adc, the only other score the checks above let through.
                _ => {
                    let mut out = Vec::with_capacity(end - start);
                    for i in start..end {
                        let table = &tables[i * bits..(i + 1) * bits];
                        let (c, proven) = adc_candidates(
                            &client,
                            coll,
                            &meta,
                            table,
                            offsets[i],
                            a.prune,
                            fetch,
                            norm_range.expect("checked above"),
                        )?;
                        if !proven {
                            unproven += 1;
                        }
                        out.push(c);
                    }
                    out
                }
            };
            for (bi, cands) in batch.into_iter().enumerate() {
                let i = start + bi;
                candidates_fetched += cands.len();
                let q = qcode(i);
                let mut scored: Vec<(u64, u32, f32)> = Vec::with_capacity(cands.len());
                for c in &cands {
                    if c.code.len() != wpc {
                        bail!("{url}: Milvus returned a code of the wrong length");
                    }
                    let d = hamming::hamming(q, &c.code);
                    let s = match a.score() {
                        ScoreName::Hamming => {
                            if c.milvus_score != d as f32 {
                                bail!(
                                    "{url}: Milvus says id {} is at Hamming distance {}, its code is at {d}",
                                    c.id,
                                    c.milvus_score
                                );
                            }
                            0.0
                        }
                        ScoreName::Overlap => {
                            let o: u32 = q
                                .iter()
                                .zip(&c.code)
                                .map(|(x, y)| (x & y).count_ones())
                                .sum();
                            score::table_score(0.0, f64::from(o), None)
                        }
                        // adc, the only other score the checks above let through: the local
                        // search's functions, so the scores are bit-identical.
                        _ => {
                            let table = &tables[i * bits..(i + 1) * bits];
                            score::table_score(offsets[i], score::table_sum(&c.code, table), c.norm)
                        }
                    };
                    scored.push((c.id, d, s));
                }
                // Local order: best first, ties by the smaller id.
                if a.score() == ScoreName::Hamming {
                    scored.sort_by(|x, y| x.1.cmp(&y.1).then(x.0.cmp(&y.0)));
                } else {
                    scored.sort_by(|x, y| y.2.total_cmp(&x.2).then(x.0.cmp(&y.0)));
                }
                scored.truncate(fetch);
                let answer = match (&vectors, &float_queries) {
                    (Some((vp, v)), Some(fq)) => {
                        let ids: Vec<u64> = scored.iter().map(|s| s.0).collect();
                        let top = vectors::cosine_top_k(
                            Vectors::F32(v.as_slice()),
                            v.dim(),
                            fq.row(i),
                            &ids,
                            a.k(),
                        )
                        .with_context(|| {
                            format!(
                                "{}: rescoring the candidates of query {i} (ids are rows of this file)",
                                vp.display()
                            )
                        })?;
                        Answer {
                            ids: top.iter().map(|&(p, _)| scored[p].0).collect(),
                            distances: top.iter().map(|&(p, _)| scored[p].1).collect(),
                            scores: Some(top.iter().map(|&(_, s)| s).collect()),
                        }
                    }
                    _ => {
                        scored.truncate(a.k());
                        Answer {
                            ids: scored.iter().map(|s| s.0).collect(),
                            distances: scored.iter().map(|s| s.1).collect(),
                            scores: (a.score() != ScoreName::Hamming)
                                .then(|| scored.iter().map(|s| s.2).collect()),
                        }
                    }
                };
                answers.push(answer);
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        if unproven > 0 {
            errln!(
                "bsa: warning: for {unproven} of {nq} queries the ADC top-{fetch} is not proven exact \
                 ({MAX_LIMIT} candidates were not enough); use --rescore or a larger --k"
            );
        }

        let mut stats = Vec::new();
        if a.stats {
            stats = vec![
                ("prune", a.prune.into()),
                (
                    "candidates_per_query",
                    (candidates_fetched as f64 / nq.max(1) as f64).into(),
                ),
                ("adc_unproven_queries", unproven.into()),
            ];
        }
        Ok(Found {
            answers,
            threads,
            seconds,
            encode_seconds,
            mode: "milvus",
            stats,
        })
    }

    /// ADC candidates of one query. Milvus ranks by the inner product of the sparse query (the
    /// positive table entries, or the `prune` largest) with the set bits; bsa re-scores exactly.
    /// Unpruned, the top `fetch` is proven exact once the `fetch`-th exact score reaches the
    /// [`adc_bound`] of everything Milvus did not return; otherwise the candidate count grows
    /// 4x up to [`MAX_LIMIT`]. Returns the candidates and whether the proof succeeded (a pruned
    /// query is never proven).
    #[allow(clippy::too_many_arguments)]
    fn adc_candidates(
        client: &Client,
        coll: &str,
        meta: &bsa::milvus::CollectionMeta,
        table: &[f32],
        offset: f32,
        prune: Option<usize>,
        fetch: usize,
        norm_range: (f32, f32),
    ) -> Result<(Vec<Candidate>, bool)> {
        let query = adc_query(table, prune);
        let rows = meta.rows.max(1);
        let mut limit = fetch.max(4 * fetch.min(64)).min(rows).min(MAX_LIMIT);
        // Milvus sums at most `bits` f32 values; allow for its rounding in a different order.
        let slack = 1e-5 * (1.0 + query.iter().map(|&(_, v)| f64::from(v)).sum::<f64>());
        loop {
            let cands = client
                .search_sparse(coll, meta, std::slice::from_ref(&query), limit)?
                .pop()
                .unwrap_or_default();
            if prune.is_some() {
                return Ok((cands, false));
            }
            if cands.len() >= meta.rows {
                return Ok((cands, true));
            }
            // Codes Milvus did not return have an inner product at most the last one returned,
            // or 0 (no positive entry in common) when it returned fewer than asked.
            let ip = if cands.len() < limit {
                0.0
            } else {
                cands.last().map_or(0.0, |c| c.milvus_score)
            };
            let bound = adc_bound(offset, ip, slack, norm_range);
            let mut exact: Vec<f32> = cands
                .iter()
                .map(|c| score::table_score(offset, score::table_sum(&c.code, table), c.norm))
                .collect();
            exact.sort_by(|x, y| y.total_cmp(x));
            if exact.len() >= fetch && f64::from(exact[fetch - 1]) >= bound {
                return Ok((cands, true));
            }
            let next = (limit * 4).min(rows).min(MAX_LIMIT);
            if next == limit || cands.len() < limit {
                return Ok((cands, false));
            }
            limit = next;
        }
    }
}
