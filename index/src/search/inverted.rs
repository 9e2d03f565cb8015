//! Exact search over posting lists of set bits (`inverted.bin`).
//!
//! For sparse codes, `hamming(q, b) = |q| + |b| - 2 |q and b|`, and the overlaps `|q and b|` of
//! every code sharing a bit with `q` are counted by walking the posting lists of `q`'s set bits
//! ("ScanCount"): `sum of |list j|` over the bits of `q` entries, about `n K^2 / N` for codes
//! with `K` of `N` bits set, instead of the `n N / 64` words a flat scan reads. Codes that share
//! no bit with `q` have distance `|q| + |b|`; they are taken from rows grouped by popcount
//! (smallest first, rows ascending within a group) until the result is full, so they are not
//! scanned either. The result is exactly the flat scan's: same rows, same distances, ties by row.
//!
//! * [`Score::Hamming`] (queries with at most 255 bits set) runs the *blocked* ScanCount of
//!   `blocked.rs`: rows are cut into blocks of 16384 whose `u8` counters stay in the L1 cache,
//!   each list is walked with a cursor, a thread handles a batch of queries block by block, and a
//!   max-score bound (lists visited shortest first) skips the longest lists of a block once the
//!   few rows that can still enter the result are cheaper to verify against their codes.
//! * [`Score::Cosine`] and [`Score::Jaccard`] need the same counts (plain ScanCount over `n`
//!   counters): every code sharing a bit has a positive score and every other code scores 0, so
//!   the rest of the result is the smallest untouched rows.
//! * [`Score::Table`] sums a table entry over **every** set bit of **every** code, whatever the
//!   query's bits: there are no "untouched" codes. The inverted search visits all posting lists in
//!   ascending bit order and accumulates each row's sum in `f64` (the same additions in the same
//!   order as the flat scan, see [`crate::score`]), so it is exact but reads every posting: it
//!   pays only when the postings (`n` x mean popcount) are fewer than the code words (`n N / 64`).
//!   The flat scan of table scores (what `--mode inverted` falls back to) reads the per-code set
//!   bits of `sparse.bin` when the index has them ([`crate::sparse`]): `K` lookups per code.
//!
//! **Bitmaps.** When the index also stores the lists as bitmaps over rows ([`crate::bitmaps`],
//! `bitmaps.bin`), a Hamming query whose bitmap words (`|q| x n / 64`) cost less than its
//! postings reads those instead: a bit-sliced count of 512 rows per instruction, whatever the
//! list's density (measured on 1M real-like codes: a posting costs about
//! [`WORDS_PER_POSTING`] (3) bitmap words, and a bitmap word about [`WORD_COST`] (7) words of the
//! flat scan below).
//! [`InvertedStats::bitmap_queries`] counts them.
//!
//! **Fallback.** Visiting one posting costs about as much as the AVX-512 flat scan spends on
//! `POSTING_COST_WORDS` (10) code words (measured on 1M real-like codes, see
//! `index/RESULTS-inverted.md`); the AVX2 and portable scans spend 3 and 5 times as much per
//! word; a batch scan through slabs (`index/src/slabs.rs`) costs what the query's set bits
//! make it (AVX2 about `(|q| + 64) / 16` words per code, AVX-512 `(|q| + 147) / 42`, whatever
//! the codes' width: `slabs::scan_cost`). A query whose lists hold more than 1/`POSTING_COST_WORDS`
//! (10) of what a flat scan costs (`n` x words per code, times that factor), or whose bitmap
//! words times [`WORD_COST`] (7) exceed it, is therefore
//! answered by the flat scan instead (same results), and counted in
//! [`InvertedStats::flat_queries`]. Table scores count
//! every posting, so they use the posting lists only when all postings are fewer than
//! 1/`POSTING_COST_WORDS` (10) of the code words. [`SearchParams::force_inverted`] disables the
//! fallback.
//!
//! Queries run in parallel on the current rayon pool, in batches of 8.

use rayon::prelude::*;

use crate::bitmaps::{WORD_COST, WORDS_PER_POSTING};
use crate::bits::{U8_COUNTER_MAX_BITS, fits_u8_counters, for_each_set_bit, popcount};
use crate::error::{Error, Result};
use crate::hamming::{Kernel, scan_word_cost};
use crate::postings::{InvertedView, POSTING_COST_WORDS};
use std::borrow::Cow;

use crate::rowset::RowSet;
use crate::score::{Score, desc_key, overlap_key, table_score};
use crate::search::blocked::{
    BLOCKED_QUERY_BATCH, BlockParams, Work, block_min_popcounts, hamming_batch,
};
use crate::search::flat::{KeyLimits, search_keys, search_scored_keys};
use crate::search::{
    CodesView, Cutoffs, Hits, SearchParams, SearchStats, Searcher, Split, search_within_by,
};
use crate::slabs;
use crate::topk::{KeyTopK, TopK, key};

/// What an inverted search did.
///
/// A query whose lists are longer than a scan is answered by the flat scan, with the same
/// results:
///
/// ```
/// use bsa_index::search::{CodesView, InvertedParams, InvertedSearcher};
/// use bsa_index::{InvertedLists, Score, SearchParams};
/// # fn main() -> bsa_index::Result<()> {
/// // 1000 codes: bits 32..64 in every one (long lists), bit r in row r < 32 only.
/// let codes: Vec<u64> = (0..1000).map(|r| 0xffff_ffff << 32 | if r < 32 { 1 << r } else { 0 }).collect();
/// let lists = InvertedLists::build(&codes, 64)?;
/// let view = CodesView::new(&codes, 64)?;
/// let searcher = InvertedSearcher::new(view, lists.view(), InvertedParams::default())?;
/// let queries = [1 << 5, 0xffff_ffff << 32]; // one short list; 32 lists of 1000 rows
/// let sp = SearchParams::default();
/// let (hits, stats) = searcher.search_with_stats(&queries, 3, &Score::Hamming, &sp)?;
/// assert_eq!((stats.inverted_queries, stats.flat_queries), (1, 1));
/// assert_eq!(stats.postings_visited, 1); // row 5's posting, the rest by popcount
/// assert_eq!((hits[0].rows[0], hits[0].distances[0]), (5, 32));
/// assert_eq!(hits[1].rows, vec![32, 33, 34]); // distance 0 to every row from 32 on
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct InvertedStats {
    /// Queries answered from the posting lists.
    pub inverted_queries: usize,
    /// Queries answered by the flat scan because their lists were longer than a scan.
    pub flat_queries: usize,
    /// Posting entries read by the inverted queries (lists skipped by pruning are not counted).
    pub postings_visited: u64,
    /// Codes whose Hamming distance was computed directly (candidates verified after pruning,
    /// and rows sharing no bit with the query when those reach the result).
    pub codes_verified: u64,
    /// Of the inverted queries, those answered from the bitmap lists ([`crate::bitmaps`]).
    pub bitmap_queries: usize,
    /// Whether the flat scan's queries ran on the codes transposed into slabs (the batch
    /// Hamming scan of `index/src/slabs.rs`) rather than on the row-major codes.
    pub flat_on_slabs: bool,
}

/// Per-thread scratch: one counter per row, the touched rows, table sums.
struct Scratch {
    c8: Vec<u8>,
    block: Vec<u8>,
    c16: Vec<u16>,
    touched: Vec<u32>,
    acc: Vec<f64>,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            c8: Vec::new(),
            block: Vec::new(),
            c16: Vec::new(),
            touched: Vec::new(),
            acc: Vec::new(),
        }
    }
}

/// A per-row overlap counter (`u8` or `u16`).
trait Counter: Copy + Default + Eq {
    fn inc(self) -> Self;
    fn get(self) -> u32;
}
impl Counter for u8 {
    #[inline(always)]
    fn inc(self) -> Self {
        self.wrapping_add(1)
    }
    #[inline(always)]
    fn get(self) -> u32 {
        u32::from(self)
    }
}
impl Counter for u16 {
    #[inline(always)]
    fn inc(self) -> Self {
        self.wrapping_add(1)
    }
    #[inline(always)]
    fn get(self) -> u32 {
        u32::from(self)
    }
}

/// Counts `|q and b|` for every row sharing a bit with the query; returns the touched rows
/// (each once) in `touched[..len]`. Counters of touched rows must be reset by the caller.
fn scan_count<C: Counter>(
    inv: &InvertedView<'_>,
    qbits: &[usize],
    counts: &mut [C],
    touched: &mut [u32],
) -> usize {
    let mut len = 0usize;
    for &j in qbits {
        for &r in inv.list(j) {
            let c = counts[r as usize];
            // Branch-free: always write, advance only for a new row. Rows are distinct within a
            // list (validated), so at most n distinct rows and len <= n < touched.len().
            touched[len] = r;
            len += usize::from(c == C::default());
            counts[r as usize] = c.inc();
        }
    }
    len
}

/// One query's sorted keys by inverted search (Hamming, Cosine, Jaccard).
fn overlap_query<C: Counter>(
    inv: &InvertedView<'_>,
    qbits: &[usize],
    k: usize,
    score: &Score<'_>,
    limit: u64,
    counts: &mut Vec<C>,
    touched: &mut Vec<u32>,
) -> Vec<u64> {
    let n = inv.n;
    if counts.len() != n {
        *counts = vec![C::default(); n];
    }
    if touched.len() != n + 1 {
        *touched = vec![0; n + 1];
    }
    let len = scan_count(inv, qbits, counts, touched);
    let m = qbits.len() as u32;
    let mut top = KeyTopK::new(k, limit);
    match score {
        Score::Hamming => {
            for &r in &touched[..len] {
                let c = counts[r as usize].get();
                let p = u32::from(inv.popcounts[r as usize]);
                // c <= min(m, p) for valid lists; saturate rather than wrap on bad input.
                top.offer(key((m + p).saturating_sub(2 * c), r));
            }
            // Untouched rows: distance m + p, by popcount then row.
            for p in 0..=inv.bits {
                let group = inv.rows_with_popcount(p);
                if group.is_empty() {
                    continue;
                }
                let d = m + p as u32;
                top.compact();
                if key(d, 0) >= top.threshold() {
                    break;
                }
                for &r in group {
                    if counts[r as usize] != C::default() {
                        continue;
                    }
                    if !top.offer(key(d, r)) {
                        // Later rows of the group have larger keys.
                        break;
                    }
                }
            }
        }
        _ => {
            let jac = matches!(score, Score::Jaccard);
            for &r in &touched[..len] {
                let c = counts[r as usize].get();
                let p = u32::from(inv.popcounts[r as usize]);
                top.offer(key(overlap_key(jac, c, m, p), r));
            }
            // Untouched rows all score 0 (touched rows score > 0): smallest rows first.
            let zero = desc_key(0.0);
            for r in 0..n as u32 {
                if counts[r as usize] != C::default() {
                    continue;
                }
                if !top.offer(key(zero, r)) {
                    break;
                }
            }
        }
    }
    for &r in &touched[..len] {
        counts[r as usize] = C::default();
    }
    top.into_sorted_keys()
}

/// One query's sorted keys for a table score: all lists in ascending bit order.
fn table_query(
    inv: &InvertedView<'_>,
    table: &[f32],
    offset: f32,
    norms: Option<&[f32]>,
    k: usize,
    acc: &mut Vec<f64>,
) -> Vec<u64> {
    let n = inv.n;
    if acc.len() != n {
        *acc = vec![0.0; n];
    }
    for (j, &t) in table.iter().enumerate().take(inv.bits) {
        let t = f64::from(t);
        for &r in inv.list(j) {
            acc[r as usize] += t;
        }
    }
    let mut top = TopK::new(k, None);
    for (r, a) in acc.iter_mut().enumerate() {
        let s = table_score(offset, *a, norms.map(|v| v[r]));
        *a = 0.0;
        top.offer(desc_key(s), r as u32);
    }
    top.into_sorted_keys()
}

/// Which executor answers each query of a batch (see the module docs' **Fallback**).
struct Routes {
    /// Queries answered from the posting lists.
    lists: Vec<usize>,
    /// Hamming queries answered from the bitmaps (cheaper than their postings).
    bitmaps: Vec<usize>,
    /// Queries answered by the flat scan (their lists cost more than a scan).
    flat: Vec<usize>,
    /// Postings each query would visit.
    touched: Vec<u64>,
}

impl InvertedSearcher<'_> {
    /// Sends each query to the cheapest exact executor.
    fn route(&self, queries: &[u64], score: &Score<'_>, params: &SearchParams) -> Routes {
        let inv = &self.lists;
        let (w, bits) = (self.codes.words_per_code(), self.codes.bits());
        let family = params.family();
        let nq = queries.len() / w;
        let query = |qi: usize| &queries[qi * w..(qi + 1) * w];
        let touched: Vec<u64> = (0..nq).map(|qi| inv.touched(query(qi), score)).collect();
        let set_bits: Vec<u64> = (0..nq).map(|qi| u64::from(popcount(query(qi)))).collect();
        // Each query's inverted executor and its cost in flat-scan words: the posting lists, or
        // for Hamming queries the bitmaps when their words cost less than the postings.
        let inverted: Vec<(bool, u64)> = (0..nq)
            .map(|qi| {
                let lists = (false, touched[qi].saturating_mul(POSTING_COST_WORDS));
                match (&inv.bitmaps, score) {
                    (Some(b), Score::Hamming) => {
                        let words = b.words_per_query(set_bits[qi] as usize);
                        if words < touched[qi].saturating_mul(WORDS_PER_POSTING) {
                            (true, words.saturating_mul(WORD_COST))
                        } else {
                            lists
                        }
                    }
                    _ => lists,
                }
            })
            .collect();
        // A Hamming scan's word costs more with narrower kernels; other scores' scans do not
        // use them.
        let scan_words = (inv.n as u64).saturating_mul(w as u64);
        let row_major = match score {
            Score::Hamming => scan_words.saturating_mul(scan_word_cost(family)),
            _ => scan_words,
        };
        let assign = |scan_cost: &dyn Fn(usize) -> u64| {
            let mut r = Routes {
                lists: Vec::new(),
                bitmaps: Vec::new(),
                flat: Vec::new(),
                touched: Vec::new(),
            };
            for (qi, &(bitmaps, cost)) in inverted.iter().enumerate() {
                if !(params.force_inverted || cost <= scan_cost(qi)) {
                    r.flat.push(qi);
                } else if bitmaps {
                    r.bitmaps.push(qi);
                } else {
                    r.lists.push(qi);
                }
            }
            r
        };
        // A Hamming batch may scan through the slabs, whose cost follows each query's set bits;
        // if the queries that go to the flat scan then do not qualify for them (too few), they
        // are weighed again against the row-major scan.
        let built = self.codes.slabs_built(family);
        let qualify = |qs: &[usize]| slabs::used_for(family, qs.len(), bits, built);
        let all: Vec<usize> = (0..nq).collect();
        let mut r = None;
        if matches!(score, Score::Hamming) && qualify(&all) {
            // The slabs' price was fitted to sparse queries and overprices dense ones (AVX-512:
            // 1.3x the row-major price of a 384-bit query with half its bits set, which ran
            // 2.75x faster on slabs); where they are used they beat the row-major scan, so a
            // query is never priced above that.
            let on_slabs =
                assign(&|qi| slabs::scan_cost(family, inv.n, set_bits[qi] as usize).min(row_major));
            if qualify(&on_slabs.flat) {
                r = Some(on_slabs);
            }
        }
        let mut r = r.unwrap_or_else(|| assign(&|_| row_major));
        r.touched = touched;
        r
    }

    /// Sorted keys per query (the flat scan's keys exactly) and statistics; `queries` and
    /// `score` checked, `norms` given for a normalised table score.
    #[allow(clippy::too_many_arguments)]
    fn keys(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        norms: Option<&[f32]>,
        params: &SearchParams,
        bp: BlockParams,
        cutoffs: Option<&[u32]>,
    ) -> (Vec<Vec<u64>>, InvertedStats) {
        let w = self.codes.words_per_code();
        let nq = queries.len() / w;
        let k = k.min(self.lists.n);
        let routes = self.route(queries, score, params);
        let (list_keys, work) = self.list_keys(queries, &routes, k, score, norms, params, bp);
        let bitmap_keys = match &self.lists.bitmaps {
            Some(b) if !routes.bitmaps.is_empty() => {
                let bq = gather_rows(queries, w, &routes.bitmaps);
                b.hamming_keys(&bq, w, k, params.max_distance, params.family())
            }
            _ => Vec::new(),
        };
        let flat_cut = cutoffs.map(|c| gather_rows(c, 1, &routes.flat));
        let flat_limits = KeyLimits::new(params.max_distance, flat_cut.as_deref());
        let (flat_keys, flat_on_slabs) =
            self.flat_keys(queries, &routes.flat, k, score, norms, params, flat_limits);
        let stats = if nq == 0 {
            InvertedStats::default()
        } else {
            InvertedStats {
                inverted_queries: routes.lists.len() + routes.bitmaps.len(),
                flat_queries: routes.flat.len(),
                postings_visited: work.postings,
                codes_verified: work.verified,
                bitmap_queries: routes.bitmaps.len(),
                flat_on_slabs,
            }
        };
        let mut out = vec![Vec::new(); nq];
        for (idx, keys) in [
            (routes.lists, list_keys),
            (routes.bitmaps, bitmap_keys),
            (routes.flat, flat_keys),
        ] {
            for (qi, keys) in idx.into_iter().zip(keys) {
                out[qi] = keys;
            }
        }
        (out, stats)
    }

    /// The queries `routes.lists` answered from the posting lists, in batches per thread.
    #[allow(clippy::too_many_arguments)]
    fn list_keys(
        &self,
        queries: &[u64],
        routes: &Routes,
        k: usize,
        score: &Score<'_>,
        norms: Option<&[f32]>,
        params: &SearchParams,
        bp: BlockParams,
    ) -> (Vec<Vec<u64>>, Work) {
        let inv = &self.lists;
        let codes = self.codes.codes();
        let (w, bits) = (self.codes.words_per_code(), self.codes.bits());
        let query = |qi: usize| &queries[qi * w..(qi + 1) * w];
        let limit = match params.max_distance {
            Some(m) if !score.has_scores() => key(m.saturating_add(1), 0),
            _ => u64::MAX,
        };
        let block_min = if matches!(score, Score::Hamming) && !routes.lists.is_empty() {
            block_min_popcounts(inv.popcounts, bp.block_rows)
        } else {
            Vec::new()
        };
        let batches: Vec<(Vec<Vec<u64>>, Work)> = routes
            .lists
            .par_chunks(BLOCKED_QUERY_BATCH)
            .with_max_len(1)
            .map_init(Scratch::new, |s, batch| {
                let mut work = Work::default();
                let mut out: Vec<Vec<u64>> = vec![Vec::new(); batch.len()];
                if k == 0 {
                    return (out, work);
                }
                if let Score::Hamming = score {
                    // Queries whose counts fit in u8: blocked search.
                    let small: Vec<usize> = (0..batch.len())
                        .filter(|&i| fits_u8_counters(query(batch[i])))
                        .collect();
                    let qs: Vec<&[u64]> = small.iter().map(|&i| query(batch[i])).collect();
                    let keys = hamming_batch(
                        inv,
                        codes,
                        w,
                        &qs,
                        k,
                        params.max_distance,
                        limit,
                        &block_min,
                        bp,
                        &mut s.block,
                        &mut work,
                    );
                    for (&i, kk) in small.iter().zip(keys) {
                        out[i] = kk;
                    }
                }
                for (i, &qi) in batch.iter().enumerate() {
                    let q = query(qi);
                    match score {
                        Score::Table {
                            tables, offsets, ..
                        } => {
                            work.postings += inv.postings.len() as u64;
                            out[i] = table_query(
                                inv,
                                &tables[qi * bits..(qi + 1) * bits],
                                offsets[qi],
                                norms,
                                k,
                                &mut s.acc,
                            );
                        }
                        Score::Hamming if fits_u8_counters(q) => {}
                        _ => {
                            let mut qbits = Vec::new();
                            for_each_set_bit(q, bits, |j| qbits.push(j));
                            work.postings += routes.touched[qi];
                            out[i] = if qbits.len() <= U8_COUNTER_MAX_BITS as usize {
                                overlap_query(
                                    inv,
                                    &qbits,
                                    k,
                                    score,
                                    limit,
                                    &mut s.c8,
                                    &mut s.touched,
                                )
                            } else {
                                overlap_query(
                                    inv,
                                    &qbits,
                                    k,
                                    score,
                                    limit,
                                    &mut s.c16,
                                    &mut s.touched,
                                )
                            };
                        }
                    }
                }
                (out, work)
            })
            .collect();
        let mut keys = Vec::with_capacity(routes.lists.len());
        let mut work = Work::default();
        for (kk, wk) in batches {
            keys.extend(kk);
            work.postings += wk.postings;
            work.verified += wk.verified;
        }
        (keys, work)
    }

    /// The queries `idx` answered by one batched flat scan (same keys as the lists give), and
    /// whether it ran on slabs.
    #[allow(clippy::too_many_arguments)]
    fn flat_keys(
        &self,
        queries: &[u64],
        idx: &[usize],
        k: usize,
        score: &Score<'_>,
        norms: Option<&[f32]>,
        params: &SearchParams,
        limits: KeyLimits<'_>,
    ) -> (Vec<Vec<u64>>, bool) {
        if idx.is_empty() {
            return (Vec::new(), false);
        }
        let codes = self.codes.codes();
        let (w, bits) = (self.codes.words_per_code(), self.codes.bits());
        let sparse = self.codes.sparse();
        let fq = gather_rows(queries, w, idx);
        let keys = match score {
            Score::Hamming => {
                let slabs = self.codes.slabs_for(params.family(), &fq);
                let keys = search_keys(codes, w, &fq, k, params, limits, slabs.as_deref());
                return (keys, slabs.is_some());
            }
            Score::Table {
                tables,
                offsets,
                normalise,
            } => {
                let ft = gather_rows(tables, bits, idx);
                let fo: Vec<f32> = idx.iter().map(|&qi| offsets[qi]).collect();
                let sub = Score::Table {
                    tables: &ft,
                    offsets: &fo,
                    normalise: *normalise,
                };
                search_scored_keys(
                    codes,
                    w,
                    bits,
                    &fq,
                    k,
                    &sub,
                    norms,
                    sparse.as_ref(),
                    self.codes.adc_codes(),
                    params,
                    limits,
                    None,
                )
                .0
            }
            _ => {
                search_scored_keys(
                    codes,
                    w,
                    bits,
                    &fq,
                    k,
                    score,
                    norms,
                    sparse.as_ref(),
                    self.codes.adc_codes(),
                    params,
                    limits,
                    None,
                )
                .0
            }
        };
        (keys, false)
    }
}

/// Rows `idx` of a row-major matrix with rows of `width` elements, concatenated: borrowed when
/// `idx` is every row in order (all queries on one route, the common case), so the per-query
/// tables of a table score are not copied for every search.
fn gather_rows<'a, T: Copy>(matrix: &'a [T], width: usize, idx: &[usize]) -> Cow<'a, [T]> {
    if idx.len() * width == matrix.len() && idx.iter().enumerate().all(|(i, &r)| i == r) {
        return Cow::Borrowed(matrix);
    }
    idx.iter()
        .flat_map(|&i| matrix[i * width..(i + 1) * width].iter().copied())
        .collect()
}

/// The inverted search's own parameters.
///
/// ```
/// use bsa_index::search::{CodesView, InvertedParams, InvertedSearcher};
/// use bsa_index::{InvertedLists, Score, SearchParams};
/// # fn main() -> bsa_index::Result<()> {
/// let codes = [u64::MAX, u64::MAX >> 1, u64::MAX >> 2, 0]; // dense: the lists cost more than a scan
/// let lists = InvertedLists::build(&codes, 64)?;
/// let view = CodesView::new(&codes, 64)?;
/// let (q, sp) = ([u64::MAX], SearchParams::default());
/// let auto = InvertedSearcher::new(view, lists.view(), InvertedParams::default())?;
/// let forced = InvertedParams::default().with_force_inverted(true);
/// let forced = InvertedSearcher::new(view, lists.view(), forced)?;
/// let (hits, stats) = auto.search_with_stats(&q, 2, &Score::Hamming, &sp)?;
/// assert_eq!(stats.flat_queries, 1);
/// let (forced_hits, stats) = forced.search_with_stats(&q, 2, &Score::Hamming, &sp)?;
/// assert_eq!(stats.inverted_queries, 1);
/// assert_eq!(forced_hits, hits); // the same answer either way
/// assert_eq!(hits[0].distances, vec![0, 1]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct InvertedParams {
    /// Answer every query from the posting lists, even those the cost rule would send to the
    /// flat scan (for tests and benchmarks; results are identical either way).
    pub force_inverted: bool,
    /// How the flat scan of the fallback queries divides its work between threads.
    pub split: Split,
}

impl InvertedParams {
    /// Sets [`force_inverted`](Self::force_inverted).
    pub fn with_force_inverted(mut self, yes: bool) -> Self {
        self.force_inverted = yes;
        self
    }
}

/// Exact search over posting lists (see the [module docs](self)): the flat scan's results
/// (rows, distances, scores, ties by row), usually much faster on sparse codes.
///
/// ```
/// use bsa_index::search::{CodesView, FlatParams, FlatSearcher, InvertedParams, InvertedSearcher};
/// use bsa_index::{InvertedLists, Score, SearchParams, Searcher};
/// # fn main() -> bsa_index::Result<()> {
/// let mut x = 0x9e37_79b9_7f4a_7c15u64; // xorshift: 500 sparse 256-bit codes
/// let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
/// let codes: Vec<u64> = (0..500 * 4).map(|_| next() & next() & next() & next()).collect();
/// let queries: Vec<u64> = (0..3 * 4).map(|_| next() & next() & next()).collect();
/// let lists = InvertedLists::build(&codes, 256)?;
/// let view = CodesView::new(&codes, 256)?;
/// let forced = InvertedParams::default().with_force_inverted(true);
/// let inverted = InvertedSearcher::new(view, lists.view(), forced)?;
/// let flat = FlatSearcher::new(view, FlatParams::default());
/// let sp = SearchParams::default();
/// for score in [Score::Hamming, Score::Jaccard, Score::Cosine] {
///     let (hits, _) = inverted.search(&queries, 10, &score, &sp)?;
///     assert_eq!(hits, flat.search(&queries, 10, &score, &sp)?.0);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct InvertedSearcher<'a> {
    codes: CodesView<'a>,
    lists: InvertedView<'a>,
    params: InvertedParams,
}

impl<'a> InvertedSearcher<'a> {
    /// An inverted searcher over `codes` with their posting lists `lists` (and the lists'
    /// bitmaps, if `lists` has them); fails if the lists describe other codes.
    ///
    /// ```
    /// use bsa_index::search::{CodesView, InvertedParams, InvertedSearcher};
    /// use bsa_index::InvertedLists;
    /// # fn main() -> bsa_index::Result<()> {
    /// let codes = [0b0101u64, 0b0110, 0b0000];
    /// let lists = InvertedLists::build(&codes, 64)?;
    /// let p = InvertedParams::default();
    /// assert!(InvertedSearcher::new(CodesView::new(&codes, 64)?, lists.view(), p).is_ok());
    /// // Lists of three codes do not describe two, nor three codes of another width.
    /// assert!(InvertedSearcher::new(CodesView::new(&codes[..2], 64)?, lists.view(), p).is_err());
    /// assert!(InvertedSearcher::new(CodesView::new(&codes, 60)?, lists.view(), p).is_err());
    /// # Ok(()) }
    /// ```
    pub fn new(
        codes: CodesView<'a>,
        lists: InvertedView<'a>,
        params: InvertedParams,
    ) -> Result<Self> {
        let (n, bits) = (codes.len(), codes.bits());
        if lists.bits != bits || lists.n != n {
            return Err(Error::InvalidArgument(format!(
                "posting lists of {} codes of {} bits do not describe {n} codes of {bits} bits",
                lists.n, lists.bits
            )));
        }
        if let Some(b) = &lists.bitmaps
            && (b.len() != n || b.bits() != bits)
        {
            return Err(Error::InvalidArgument(format!(
                "bitmap lists of {} codes of {} bits do not describe {n} codes of {bits} bits",
                b.len(),
                b.bits()
            )));
        }
        Ok(InvertedSearcher {
            codes,
            lists,
            params,
        })
    }
}

impl InvertedSearcher<'_> {
    /// [`Searcher::search`] with the inverted search's statistics as a struct.
    ///
    /// ```
    /// use bsa_index::search::{CodesView, InvertedParams, InvertedSearcher};
    /// use bsa_index::{InvertedLists, Score, SearchParams};
    /// # fn main() -> bsa_index::Result<()> {
    /// let codes = [0b0101u64, 0b0110, 0b0000, 0b1100];
    /// let lists = InvertedLists::build(&codes, 4)?;
    /// let forced = InvertedParams::default().with_force_inverted(true);
    /// let searcher = InvertedSearcher::new(CodesView::new(&codes, 4)?, lists.view(), forced)?;
    /// let sp = SearchParams::default();
    /// let (hits, stats) = searcher.search_with_stats(&[0b0001], 2, &Score::Hamming, &sp)?;
    /// assert_eq!((hits[0].rows.clone(), hits[0].distances.clone()), (vec![0, 2], vec![1, 1]));
    /// assert_eq!((stats.inverted_queries, stats.flat_queries), (1, 0));
    /// # Ok(()) }
    /// ```
    pub fn search_with_stats(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        params: &SearchParams,
    ) -> Result<(Vec<Hits>, InvertedStats)> {
        self.run(queries, k, score, params, None)
    }

    /// The search; queries answered by the flat scan start their top-k at `cutoffs` (per-query
    /// key limits, see [`Searcher::search_within`]) when given.
    fn run(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        params: &SearchParams,
        cutoffs: Option<&[u32]>,
    ) -> Result<(Vec<Hits>, InvertedStats)> {
        // The query's options where it sets them, else the searcher's.
        let params = &params
            .resolved()?
            .with_split(params.split_over(self.params.split))
            .with_force_inverted(params.force_inverted || self.params.force_inverted);
        let c = &self.codes;
        let (_, norms) = c.check(queries, score, params)?;
        let bp = BlockParams::default();
        let (keys, stats) = self.keys(queries, k, score, norms, params, bp, cutoffs);
        Ok((c.hits(&keys, queries, score.has_scores(), params), stats))
    }
}

impl Searcher for InvertedSearcher<'_> {
    fn mode(&self) -> &'static str {
        "inverted"
    }

    fn rows(&self) -> usize {
        self.codes.len()
    }

    fn search_within(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        params: &SearchParams,
        allowed: Option<&RowSet>,
        cutoffs: Cutoffs<'_>,
    ) -> Result<(Vec<Hits>, SearchStats)> {
        search_within_by(
            &self.codes,
            queries,
            k,
            score,
            allowed,
            cutoffs,
            |k, limits| {
                let (hits, s) = self.run(queries, k, score, params, Some(limits))?;
                Ok((hits, self.stats(params, &s)?))
            },
        )
    }

    fn search(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        params: &SearchParams,
    ) -> Result<(Vec<Hits>, SearchStats)> {
        let (hits, s) = self.search_with_stats(queries, k, score, params)?;
        Ok((hits, self.stats(params, &s)?))
    }
}

impl InvertedSearcher<'_> {
    /// What a search did, as [`SearchStats`].
    fn stats(&self, params: &SearchParams, s: &InvertedStats) -> Result<SearchStats> {
        let family = params.resolved()?.family();
        Ok(SearchStats {
            kernel_family: Some(family),
            // Queries whose lists were longer than a flat scan were answered by the scan; the
            // bitmaps' counting loop is named when it answered every query (the Hamming kernel
            // otherwise: it verifies the posting lists' candidates).
            kernel: if s.flat_on_slabs {
                slabs::kernel_name(family)
            } else if s.bitmap_queries > 0
                && s.bitmap_queries == s.inverted_queries + s.flat_queries
            {
                crate::bitmaps::kernel_name(family)
            } else {
                Kernel::select(family, self.codes.words_per_code()).name()
            },
            table_kernel: None,
            counters: vec![
                ("inverted_queries", s.inverted_queries as u64),
                ("flat_fallback_queries", s.flat_queries as u64),
                ("postings_visited", s.postings_visited),
                ("codes_verified", s.codes_verified),
                ("bitmap_queries", s.bitmap_queries as u64),
            ],
        })
    }
}

/// Exact top-k over bare slices with posting lists `inv` built from `codes`
/// ([`InvertedLists::build`](crate::InvertedLists::build)); hits' ids are rows. Same results as
/// [`crate::search::flat::top_k_scored`].
///
/// ```
/// use bsa_index::search::{flat, inverted};
/// use bsa_index::{InvertedLists, Score, SearchParams};
/// # fn main() -> bsa_index::Result<()> {
/// let codes = [0b0101u64, 0b0110, 0b0000, 0b1100, 0b1111];
/// let lists = InvertedLists::build(&codes, 4)?;
/// let (queries, sp) = ([0b0100u64, 0b1000], SearchParams::default().with_force_inverted(true));
/// let (hits, stats) =
///     inverted::top_k(&codes, 1, 4, &lists.view(), &queries, 3, &Score::Jaccard, None, &sp)?;
/// assert_eq!(stats.inverted_queries, 2);
/// assert_eq!(hits, flat::top_k_scored(&codes, 1, 4, &queries, 3, &Score::Jaccard, None, &sp)?);
/// assert_eq!(hits[1].rows, vec![3, 4, 0]); // 1/2, 1/4, then 0 for every other code: by row
/// # Ok(()) }
/// ```
#[allow(clippy::too_many_arguments)]
pub fn top_k(
    codes: &[u64],
    words_per_code: usize,
    bits: usize,
    inv: &InvertedView<'_>,
    queries: &[u64],
    k: usize,
    score: &Score<'_>,
    norms: Option<&[f32]>,
    params: &SearchParams,
) -> Result<(Vec<Hits>, InvertedStats)> {
    params.resolved()?;
    if words_per_code != bits.div_ceil(64) {
        return Err(Error::InvalidArgument(format!(
            "{words_per_code} words per code cannot hold {bits}-bit codes"
        )));
    }
    let view = CodesView::new(codes, bits)?.with_norms(norms)?;
    let p = InvertedParams {
        force_inverted: params.force_inverted,
        split: params.split,
    };
    InvertedSearcher::new(view, *inv, p)?.search_with_stats(queries, k, score, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::postings::InvertedLists;
    use crate::search::blocked::BlockParams;
    use proptest::prelude::*;

    /// `n` random codes of `bits` bits, bit j set with probability `density` (skewed towards
    /// low bits if `skew`), from a xorshift seeded with `seed`.
    fn codes(n: usize, bits: usize, density: f64, skew: bool, seed: u64) -> Vec<u64> {
        let w = bits.div_ceil(64);
        let mut x = seed | 1;
        let mut out = vec![0u64; n * w];
        for row in out.chunks_exact_mut(w) {
            for j in 0..bits {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                let p = if skew {
                    density * 4.0 / (1.0 + 8.0 * j as f64 / bits as f64)
                } else {
                    density
                };
                if u < p {
                    row[j / 64] |= 1 << (j % 64);
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// The blocked search equals the flat scan for any block size, with pruning off, on
        /// (default costs) and on with verification forced as soon as the bound allows it.
        #[test]
        fn blocked_search_equals_flat(
            n in 1usize..700,
            bits in prop::sample::select(vec![16usize, 64, 130, 256]),
            density in prop::sample::select(vec![0.02f64, 0.06, 0.25]),
            skew in any::<bool>(),
            k in prop::sample::select(vec![1usize, 2, 5, 10, 40, 1000]),
            block_rows in prop::sample::select(vec![1usize, 7, 64, 100, 1 << 14]),
            mode in 0u8..3,
            max_d in prop::option::of(0u32..12),
            with_bitmaps in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let w = bits.div_ceil(64);
            let base = codes(n, bits, density, skew, seed);
            let mut queries = codes(4, bits, density, skew, seed ^ 0x9e37);
            // One query copies a base row; one is a base row with a bit flipped.
            let r = (seed as usize) % n;
            queries[..w].copy_from_slice(&base[r * w..(r + 1) * w]);
            queries[w..2 * w].copy_from_slice(&base[r * w..(r + 1) * w]);
            queries[w] ^= 1;
            let lists = InvertedLists::build(&base, bits).unwrap();
            let inv = lists.view();
            let params = SearchParams::default()
                .with_force_inverted(true)
                .with_max_distance(max_d);
            let bp = BlockParams {
                block_rows,
                prune: mode != 0,
                verify_cost: if mode == 2 { Some(0) } else { None },
                min_rest: if mode == 2 { 0 } else { 64 },
            };
            // With bitmaps, the queries whose bitmap words are fewer than their postings read
            // those instead.
            let bm = crate::bitmaps::BitmapLists::build(&base, bits).unwrap();
            let inv = inv.with_bitmaps(with_bitmaps.then(|| bm.view()));
            let view = CodesView::new(&base, bits).unwrap();
            let searcher = InvertedSearcher::new(view, inv, InvertedParams::default()).unwrap();
            let (got, stats) = searcher.keys(&queries, k, &Score::Hamming, None, &params, bp, None);
            let want = crate::search::flat::search_keys(
                &base,
                w,
                &queries,
                k,
                &params,
                KeyLimits::new(params.max_distance, None),
                None,
            );
            prop_assert_eq!(got, want);
            prop_assert_eq!(stats.inverted_queries, 4);
            if !with_bitmaps {
                prop_assert_eq!(stats.bitmap_queries, 0);
            }
        }
    }
}
