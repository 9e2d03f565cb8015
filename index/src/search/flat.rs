//! Exact search: every code is compared with every query.
//!
//! The work is cut into tiles of (a block of up to 32 queries) x (a chunk of codes). Inside a tile
//! the codes are visited in ~32 KiB blocks and each block is compared with every query of the
//! tile before the next block is loaded, so memory traffic is one pass over the chunk per query
//! block. Few queries (down to one) get their codes split into several chunks so that every
//! thread of the calling rayon pool scans part of the codes; the per-chunk top-k lists are merged
//! exactly. Many queries get one chunk per query block, unless that leaves fewer than four tasks
//! per thread. The parallelism is that of the rayon pool the call runs in
//! (`pool.install(|| index.search_flat(..))`).
//!
//! A Hamming batch may run on the codes transposed into slabs of 256 or 512 rows
//! (`index/src/slabs.rs`: bit-sliced counting, built at the first batch large enough to repay
//! them and kept by the index; every batch with AVX2, those on codes wider than 256 bits with
//! AVX-512), 128 queries per
//! pass over each slab; other searches read the row-major codes ([`crate::hamming`]).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::adc::{AdcCodes, GROUP, QuantisedTable, QueryGroup, ScanStats};
use crate::adc_wide as wide;
use crate::error::{Error, Result};
use crate::hamming::{Kernel, tile_codes};
use crate::kernel::KernelFamily;
use crate::rowset::RowSet;
use crate::score::{Score, desc_key, overlap_key, table_score, table_sum};
use crate::search::{
    CodesView, Cutoffs, Hits, SearchParams, SearchStats, Searcher, Split, search_within_by,
};
use crate::slabs::{self, SlabCodes, SlabQuery};
use crate::sparse::SparseView;
use crate::topk::{TopK, merge_keys};

/// Largest number of queries scanned together against one block of codes.
const MAX_QUERY_BLOCK: usize = 32;
/// Codes per tile of the table scan over per-code set bits.
const SPARSE_TILE_ROWS: usize = 8192;
/// Queries the slab scan runs together over each slab (one pass over the slabs per block):
/// 128 answered 1.2x the queries per second of 32 on 1M codes (AMD EPYC Zen 5).
const SLAB_QUERY_BLOCK: usize = 128;
/// Tasks per thread the splitting aims at: work stealing may hand one thread one task more
/// than another, so with two tasks per thread one of two threads could work 50% longer.
const TASKS_PER_THREAD: usize = 4;
/// Rows a chunk of codes handed to one task is a multiple of: the tallest slab.
const CHUNK_ALIGN: usize = 512;
/// Smallest chunk of codes handed to one task when codes are split for parallelism.
const MIN_CHUNK: usize = 16 * 1024;
/// Bytes of quantised tables the table scan holds at once (queries are quantised in batches of
/// at most 256 that fit, so memory does not grow with the number of queries).
const ADC_TABLE_BYTES: usize = 64 << 20;

/// The flat search's own parameters.
///
/// The split decides which thread scans what, never the answer:
///
/// ```
/// use bsa_index::search::{CodesView, FlatParams, FlatSearcher, Searcher};
/// use bsa_index::{Score, SearchParams, Split};
/// # fn main() -> bsa_index::Result<()> {
/// let codes: Vec<u64> = (0..1000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
/// let view = CodesView::new(&codes, 64)?;
/// let (q, sp) = ([codes[123] ^ 1], SearchParams::default());
/// let by_codes = FlatSearcher::new(view, FlatParams::default().with_split(Split::Codes));
/// let by_queries = FlatSearcher::new(view, FlatParams::default().with_split(Split::Queries));
/// let (hits, _) = by_codes.search(&q, 5, &Score::Hamming, &sp)?;
/// assert_eq!(hits, by_queries.search(&q, 5, &Score::Hamming, &sp)?.0);
/// assert_eq!((hits[0].rows[0], hits[0].distances[0]), (123, 1));
/// assert_eq!(FlatParams::default().split, Split::Auto);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FlatParams {
    /// How to divide the work between threads.
    pub split: Split,
}

impl FlatParams {
    /// Sets [`split`](Self::split).
    pub fn with_split(mut self, split: Split) -> Self {
        self.split = split;
        self
    }
}

/// Exact search: every code is compared with every query (see the [module docs](self)).
///
/// Any [`Score`]; table scores read the per-code set bits when the view has them.
///
/// Its results are those of a brute-force sort of every `(distance, row)`:
///
/// ```
/// use bsa_index::hamming::hamming;
/// use bsa_index::search::{CodesView, FlatParams, FlatSearcher, Searcher};
/// use bsa_index::{Score, SearchParams};
/// # fn main() -> bsa_index::Result<()> {
/// let mut x = 0x853c_49e6_748f_ea9bu64; // xorshift: 300 codes of 128 bits
/// let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
/// let codes: Vec<u64> = (0..600).map(|_| next()).collect();
/// let queries: Vec<u64> = (0..4).map(|_| next()).collect(); // two queries
/// let flat = FlatSearcher::new(CodesView::new(&codes, 128)?, FlatParams::default());
/// let (hits, _) = flat.search(&queries, 10, &Score::Hamming, &SearchParams::default())?;
/// for (q, h) in queries.chunks_exact(2).zip(&hits) {
///     let mut all: Vec<(u32, u64)> = codes.chunks_exact(2).enumerate()
///         .map(|(r, c)| (hamming(q, c), r as u64)).collect();
///     all.sort();
///     assert_eq!(h.rows, all[..10].iter().map(|p| p.1).collect::<Vec<_>>());
///     assert_eq!(h.distances, all[..10].iter().map(|p| p.0).collect::<Vec<_>>());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FlatSearcher<'a> {
    codes: CodesView<'a>,
    params: FlatParams,
    shared: Option<&'a SharedTables>,
}

impl<'a> FlatSearcher<'a> {
    /// A flat searcher over `codes`.
    pub fn new(codes: CodesView<'a>, params: FlatParams) -> Self {
        FlatSearcher {
            codes,
            params,
            shared: None,
        }
    }

    /// Table scores take their quantised query tables from `shared` (and leave new ones
    /// there), for searches of the same queries over several code sets.
    pub(crate) fn with_shared_tables(mut self, shared: &'a SharedTables) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Name of the distance kernel a Hamming search with `params` runs on this CPU (e.g.
    /// `"avx2-w16"`); fails as the search would on a family the CPU lacks.
    ///
    /// ```
    /// use bsa_index::search::{CodesView, FlatParams, FlatSearcher};
    /// use bsa_index::{KernelFamily, SearchParams};
    /// # fn main() -> bsa_index::Result<()> {
    /// let codes = [0u64; 8]; // two 256-bit codes
    /// let flat = FlatSearcher::new(CodesView::new(&codes, 256)?, FlatParams::default());
    /// let portable = SearchParams::default().with_kernel(Some(KernelFamily::Portable));
    /// assert_eq!(flat.kernel_name(&portable)?, "portable-w4");
    /// for family in KernelFamily::ALL {
    ///     let params = SearchParams::default().with_kernel(Some(family));
    ///     // A family this CPU lacks is refused, as the search would refuse it.
    ///     assert_eq!(flat.kernel_name(&params).is_ok(), family.is_supported());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn kernel_name(&self, params: &SearchParams) -> Result<&'static str> {
        let family = params.resolved()?.family();
        Ok(Kernel::select(family, self.codes.words_per_code()).name())
    }
}

impl Searcher for FlatSearcher<'_> {
    fn mode(&self) -> &'static str {
        "flat"
    }

    fn rows(&self) -> usize {
        self.codes.len()
    }

    fn search(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        params: &SearchParams,
    ) -> Result<(Vec<Hits>, SearchStats)> {
        self.run(queries, k, score, params, None)
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
            |k, limits| self.run(queries, k, score, params, Some(limits)),
        )
    }
}

impl FlatSearcher<'_> {
    /// The search, each query's keys limited to `cutoffs` (inclusive) when given.
    fn run(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        params: &SearchParams,
        cutoffs: Option<&[u32]>,
    ) -> Result<(Vec<Hits>, SearchStats)> {
        let params = &params
            .resolved()?
            .with_split(params.split_over(self.params.split));
        let c = &self.codes;
        let (_, norms) = c.check(queries, score, params)?;
        let w = c.words_per_code();
        let limits = KeyLimits::new(params.max_distance, cutoffs);
        let nq = queries.len() / w;
        // The slab scan of a Hamming batch, when it runs.
        let slabs = match score {
            Score::Hamming => c.slabs_for(params.family(), queries),
            _ => None,
        };
        let (keys, scan) = if score.has_scores() {
            let sparse = c.sparse();
            search_scored_keys(
                c.codes(),
                w,
                c.bits(),
                queries,
                k,
                score,
                norms,
                sparse.as_ref(),
                c.adc_codes(),
                params,
                limits,
                self.shared,
            )
        } else {
            (
                search_keys(c.codes(), w, queries, k, params, limits, slabs.as_deref()),
                ScanStats::default(),
            )
        };
        let mut stats = SearchStats {
            kernel_family: Some(params.family()),
            kernel: match slabs {
                Some(_) => crate::slabs::kernel_name(params.family()),
                None => Kernel::select(params.family(), w).name(),
            },
            table_kernel: None,
            counters: Vec::new(),
        };
        if let Score::Table { .. } = score {
            // The quantised table scan (crate::adc) and the codes its bound left to score exactly.
            stats.table_kernel = c.adc_codes().map(|l| {
                if wide::used_for(params.family(), l, nq) {
                    wide::kernel_name(params.family())
                } else {
                    crate::adc::kernel_name(params.family(), l.is_dense())
                }
            });
            stats.counters = vec![
                ("codes_scanned", scan.scanned),
                ("codes_rescored", scan.rescored),
            ];
        }
        Ok((c.hits(&keys, queries, score.has_scores(), params), stats))
    }
}

/// Each query's limit on the keys that may enter its top k (inclusive): a maximum distance for
/// every query, a cutoff per query ([`Cutoffs`]), both or neither.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KeyLimits<'a> {
    all: Option<u32>,
    per_query: Option<&'a [u32]>,
}

impl<'a> KeyLimits<'a> {
    /// `all` for every query, and `per_query[q]` for query `q`.
    pub(crate) fn new(all: Option<u32>, per_query: Option<&'a [u32]>) -> Self {
        KeyLimits { all, per_query }
    }

    /// Query `q`'s limit.
    #[inline]
    fn get(&self, q: usize) -> Option<u32> {
        match (self.all, self.per_query.map(|p| p[q])) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The limits of the queries from `q0` on.
    fn from(self, q0: usize) -> Self {
        KeyLimits {
            all: self.all,
            per_query: self.per_query.map(|p| &p[q0..]),
        }
    }
}

/// A view of bare codes for the slice functions: checks `words_per_code` against `bits`.
fn bare_view(codes: &[u64], words_per_code: usize, bits: usize) -> Result<CodesView<'_>> {
    if words_per_code == 0 || bits == 0 || words_per_code != bits.div_ceil(64) {
        return Err(Error::InvalidArgument(format!(
            "{words_per_code} words per code cannot hold {bits}-bit codes"
        )));
    }
    CodesView::new(codes, bits)
}

/// Exact top-k over a bare slice of codes (`n * words_per_code` words); hits' ids are rows.
///
/// This is what [`Index::search_flat`](crate::Index::search_flat) runs on the mapped codes.
/// `queries` holds `nq * words_per_code` words; unused high bits of codes and queries must be
/// zero. `k > n` returns all `n` rows.
///
/// ```
/// use bsa_index::search::flat::top_k;
/// use bsa_index::SearchParams;
/// # fn main() -> bsa_index::Result<()> {
/// let codes = [0b0111u64, 0b0110, 0b1111, 0b0000]; // four 4-bit codes
/// let hits = top_k(&codes, 1, 4, &[0b0110, 0b0000], 2, &SearchParams::default())?;
/// assert_eq!((hits[0].rows.clone(), hits[0].distances.clone()), (vec![1, 0], vec![0, 1]));
/// assert_eq!((hits[1].rows.clone(), hits[1].distances.clone()), (vec![3, 1], vec![0, 2]));
/// assert_eq!(hits[1].ids, hits[1].rows); // a bare slice has no ids
/// assert_eq!(top_k(&codes, 1, 4, &[0], 10, &SearchParams::default())?[0].len(), 4); // k > n
/// assert!(top_k(&codes, 2, 4, &[0, 0], 1, &SearchParams::default()).is_err()); // 2 words, 4 bits
/// # Ok(()) }
/// ```
pub fn top_k(
    codes: &[u64],
    words_per_code: usize,
    bits: usize,
    queries: &[u64],
    k: usize,
    params: &SearchParams,
) -> Result<Vec<Hits>> {
    top_k_scored(
        codes,
        words_per_code,
        bits,
        queries,
        k,
        &Score::Hamming,
        None,
        params,
    )
}

/// Core of the exact search: sorted `(distance, row)` keys per query, through `slabs` (the
/// codes transposed, [`crate::slabs`]) when given. Inputs must be validated.
pub(crate) fn search_keys(
    codes: &[u64],
    w: usize,
    queries: &[u64],
    k: usize,
    params: &SearchParams,
    limits: KeyLimits<'_>,
    slabs: Option<&SlabCodes>,
) -> Vec<Vec<u64>> {
    let kernel = Kernel::select(params.family(), w);
    let nq = queries.len() / w;
    let query = |qi: usize| &queries[qi * w..(qi + 1) * w];
    if let Some(slabs) = slabs {
        let prepared: Vec<SlabQuery<'_>> =
            (0..nq).map(|qi| SlabQuery::new(query(qi), slabs)).collect();
        return search_keys_by_tile(
            codes,
            w,
            nq,
            k,
            params.split,
            limits,
            slabs::TILE_ROWS,
            SLAB_QUERY_BLOCK,
            |q0, block, first, tops| {
                let family = params.family();
                let queries = &prepared[q0..q0 + tops.len()];
                slabs.scan(family, queries, block, first as usize, tops);
            },
        );
    }
    search_keys_by(
        codes,
        w,
        nq,
        k,
        params.split,
        limits,
        |qi, block, first, top| kernel.scan(query(qi), block, first, top),
    )
}

/// The tiled, parallel exact scan with any per-block scorer: `scan(query, block, first_row,
/// top)` offers every code of `block` (rows `first_row..`) to `top`, as a `u32` key that is
/// smaller for better rows; each query's top starts with its key limit. Returns sorted
/// `(key, row)` keys per query.
pub(crate) fn search_keys_by<F>(
    codes: &[u64],
    w: usize,
    nq: usize,
    k: usize,
    split: Split,
    limits: KeyLimits<'_>,
    scan: F,
) -> Vec<Vec<u64>>
where
    F: Fn(usize, &[u64], u32, &mut TopK) + Sync,
{
    search_keys_by_tile(
        codes,
        w,
        nq,
        k,
        split,
        limits,
        tile_codes(w),
        1,
        |qi, block, first, tops| scan(qi, block, first, &mut tops[0]),
    )
}

/// [`search_keys_by`] with an explicit tile (rows handed to `scan` per call; every call's first
/// row is a multiple of [`CHUNK_ALIGN`] when `tile` is), and queries handed to `scan` in groups of `group` (`scan(first_query, block, first_row, tops)`, one
/// [`TopK`] per query; groups start at multiples of `group`, the last may be shorter).
#[allow(clippy::too_many_arguments)]
pub(crate) fn search_keys_by_tile<F>(
    codes: &[u64],
    w: usize,
    nq: usize,
    k: usize,
    split: Split,
    limits: KeyLimits<'_>,
    tile: usize,
    group: usize,
    scan: F,
) -> Vec<Vec<u64>>
where
    F: Fn(usize, &[u64], u32, &mut [TopK]) + Sync,
{
    let n = codes.len() / w;
    let k = k.min(n);
    if nq == 0 {
        return Vec::new();
    }
    if k == 0 {
        return vec![Vec::new(); nq];
    }
    let threads = rayon::current_num_threads().max(1);
    // Query blocks of a multiple of `group` queries, at most MAX_QUERY_BLOCK or `group`.
    let qb = nq
        .div_ceil(nq.div_ceil(MAX_QUERY_BLOCK))
        .next_multiple_of(group)
        .min(MAX_QUERY_BLOCK.max(group));
    let qblocks = nq.div_ceil(qb);
    let max_chunks = n.div_ceil(MIN_CHUNK).max(1);
    let chunks = match split {
        Split::Queries => 1,
        Split::Codes => (2 * threads).min(max_chunks),
        // At least TASKS_PER_THREAD tasks per thread, splitting codes too if the query blocks are
        // fewer: work stealing may hand one thread a task more than the other.
        Split::Auto => (TASKS_PER_THREAD * threads)
            .div_ceil(qblocks)
            .min(max_chunks),
    }
    .max(1);
    // Chunks start on a slab (the slab scan's tiles must), whatever the scan.
    let chunk_len = n.div_ceil(chunks).next_multiple_of(CHUNK_ALIGN);
    let shared = SharedKth::new(if chunks > 1 { nq } else { 0 });

    let run = |task: usize| -> Vec<Vec<u64>> {
        let (qbi, ci) = (task / chunks, task % chunks);
        let q0 = qbi * qb;
        let q1 = (q0 + qb).min(nq);
        let r0 = (ci * chunk_len).min(n);
        let r1 = (r0 + chunk_len).min(n);
        let mut tops: Vec<TopK> = (q0..q1).map(|q| TopK::new(k, limits.get(q))).collect();
        let mut start = r0;
        while start < r1 {
            let end = (start + tile).min(r1);
            let block = &codes[start * w..end * w];
            for (g, tops) in tops.chunks_mut(group).enumerate() {
                let first = q0 + g * group;
                shared.pull(first, tops);
                // start < n <= u32::MAX, checked by the callers.
                scan(first, block, start as u32, tops);
                shared.publish(first, tops);
            }
            start = end;
        }
        tops.into_iter().map(TopK::into_sorted_keys).collect()
    };

    let tasks = qblocks * chunks;
    let parts: Vec<Vec<Vec<u64>>> = if tasks == 1 {
        vec![run(0)]
    } else {
        (0..tasks)
            .into_par_iter()
            .with_max_len(1)
            .map(run)
            .collect()
    };
    if chunks == 1 {
        return parts.into_iter().flatten().collect();
    }
    let mut out = Vec::with_capacity(nq);
    for qbi in 0..qblocks {
        let q_in_block = (nq - qbi * qb).min(qb);
        let block_parts = &parts[qbi * chunks..(qbi + 1) * chunks];
        for j in 0..q_in_block {
            let mut all = Vec::with_capacity(k * chunks);
            for part in block_parts {
                all.extend_from_slice(&part[j]);
            }
            out.push(merge_keys(all, k));
        }
    }
    out
}

/// Each query's best k-th distance found so far by any chunk of the codes, so that a chunk
/// starts from its neighbours' threshold instead of filling its own top k from nothing (one
/// ADC query over 100k codes in 7 chunks re-scored 2,270 codes before). Only what a chunk has
/// kept is published, and a chunk skips only rows beyond it (ties may go its way), so the
/// merged result does not depend on the chunks' timing.
struct SharedKth(Vec<AtomicU32>);

impl SharedKth {
    fn new(queries: usize) -> Self {
        SharedKth((0..queries).map(|_| AtomicU32::new(u32::MAX)).collect())
    }

    /// Lowers the thresholds of queries `first..` to what the other chunks have found.
    fn pull(&self, first: usize, tops: &mut [TopK]) {
        for (kth, top) in self.0.iter().skip(first).zip(tops) {
            top.limit(kth.load(Ordering::Relaxed).saturating_add(1));
        }
    }

    /// Shares the k-th distances of queries `first..` (a locked update only when lower).
    fn publish(&self, first: usize, tops: &[TopK]) {
        for (kth, top) in self.0.iter().skip(first).zip(tops) {
            if let Some(d) = top.known_kth().filter(|&d| d < kth.load(Ordering::Relaxed)) {
                kth.fetch_min(d, Ordering::Relaxed);
            }
        }
    }
}

/// Exact top-k keys for a non-Hamming score (`score` validated, `norms` given when needed,
/// `params` resolved): sorted `(desc_key(score), row)` keys per query, and what the quantised
/// table scan did. Table scores run the quantised scan of [`crate::adc`] on `adc` (the layout of
/// these codes with these norms, e.g. the index's cached one), or on one built here.
#[allow(clippy::too_many_arguments)]
pub(crate) fn search_scored_keys(
    codes: &[u64],
    w: usize,
    bits: usize,
    queries: &[u64],
    k: usize,
    score: &Score<'_>,
    norms: Option<&[f32]>,
    sparse: Option<&SparseView<'_>>,
    adc: Option<&AdcCodes>,
    params: &SearchParams,
    limits: KeyLimits<'_>,
    shared: Option<&SharedTables>,
) -> (Vec<Vec<u64>>, ScanStats) {
    let nq = queries.len() / w;
    let split = params.split;
    // Table scores try the quantised scan first; the table arms of the match below run only
    // when no layout can be built (codes with bits set past `bits`).
    if let Score::Table {
        tables,
        offsets,
        normalise,
    } = *score
    {
        let built;
        let layout = match adc {
            Some(l) => Some(l),
            None => {
                built = AdcCodes::of_codes(codes, bits, sparse, norms).ok();
                built.as_ref()
            }
        };
        // Without a layout (only for codes with bits set past `bits`) the plain scans below run.
        if let Some(layout) = layout {
            let table = TableQueries {
                tables,
                offsets,
                normalise,
                bits,
            };
            return table_keys(
                codes, w, k, &table, norms, sparse, layout, params, limits, shared,
            );
        }
    }
    let keys = match *score {
        Score::Hamming => search_keys(codes, w, queries, k, params, limits, None),
        Score::Cosine | Score::Jaccard => {
            let jac = matches!(score, Score::Jaccard);
            search_keys_by(codes, w, nq, k, split, limits, |qi, block, first, top| {
                let q = &queries[qi * w..(qi + 1) * w];
                let m: u32 = q.iter().map(|x| x.count_ones()).sum();
                let mut thr = top.threshold();
                for (i, b) in block.chunks_exact(w).enumerate() {
                    let mut c = 0;
                    let mut p = 0;
                    for (x, y) in q.iter().zip(b) {
                        c += (x & y).count_ones();
                        p += y.count_ones();
                    }
                    let key = overlap_key(jac, c, m, p);
                    if key < thr {
                        top.push(key, first + i as u32);
                        thr = top.threshold();
                    }
                }
            })
        }
        Score::Table {
            tables, offsets, ..
        } if sparse.is_some() => {
            // The set bits of each code: one lookup per set bit instead of a pass over the words.
            let sv = sparse.expect("checked by the guard");
            // Long tiles: the query's table (4 bytes per bit) stays in L1 while the set bits of
            // many codes stream past it; the packed tiles (32 KiB of codes) would switch tables
            // every 64 codes at 4096 bits.
            let tile = SPARSE_TILE_ROWS;
            search_keys_by_tile(
                codes,
                w,
                nq,
                k,
                split,
                limits,
                tile,
                1,
                |qi, block, first, tops| {
                    let top = &mut tops[0];
                    sv.table_scan(
                        &tables[qi * bits..(qi + 1) * bits],
                        offsets[qi],
                        norms,
                        first as usize,
                        block.len() / w,
                        top,
                    );
                },
            )
        }
        Score::Table {
            tables, offsets, ..
        } => search_keys_by(codes, w, nq, k, split, limits, |qi, block, first, top| {
            let table = &tables[qi * bits..(qi + 1) * bits];
            let offset = offsets[qi];
            let mut thr = top.threshold();
            for (i, b) in block.chunks_exact(w).enumerate() {
                let row = first as usize + i;
                let s = table_score(offset, table_sum(b, table), norms.map(|n| n[row]));
                let key = desc_key(s);
                if key < thr {
                    top.push(key, row as u32);
                    thr = top.threshold();
                }
            }
        }),
    };
    (keys, ScanStats::default())
}

/// The per-query tables of a [`Score::Table`] (validated) and the bits they cover.
struct TableQueries<'a> {
    tables: &'a [f32],
    offsets: &'a [f32],
    normalise: bool,
    bits: usize,
}

/// Quantised query tables kept for the searches of the same queries over several code sets of
/// one shape (the segments of a live index, [`crate::live::Snapshot`]): a quantised table
/// depends on its query's table and on the layout's shape ([`AdcCodes::table_shape`]), never on
/// the codes, so each segment after the first reuses the groups built for the first instead of
/// quantising every query's table again (4096 entries take about as long as scanning 10k
/// codes). Create one per batch of queries and score.
#[derive(Default)]
pub(crate) struct SharedTables {
    built: Mutex<Vec<(GroupsKey, Arc<Groups>)>>,
}

impl std::fmt::Debug for SharedTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.built.lock().map_or(0, |b| b.len());
        write!(f, "SharedTables({n} batches)")
    }
}

/// What one batch's groups were built from: the tables (by address, so that a cache handed
/// another score by mistake builds new groups rather than returning wrong ones), the queries of
/// the batch, the layout's shape and the kernel's group size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GroupsKey {
    tables: (usize, usize),
    offsets: (usize, usize),
    normalise: bool,
    queries: (usize, usize),
    shape: (bool, usize, usize, usize),
    wide: bool,
}

impl SharedTables {
    /// The groups built for `key`, building them with `make` the first time.
    fn get_or_build(&self, key: GroupsKey, make: impl FnOnce() -> Groups) -> Arc<Groups> {
        let found = (self.built.lock())
            .ok()
            .and_then(|b| b.iter().find(|(k, _)| *k == key).map(|(_, g)| g.clone()));
        found.unwrap_or_else(|| {
            let groups = Arc::new(make());
            if let Ok(mut b) = self.built.lock() {
                b.push((key, groups.clone()));
            }
            groups
        })
    }
}

/// A batch's queries in groups for one of the quantised scan's kernels.
enum Groups {
    Narrow(Vec<QueryGroup>),
    Wide(Vec<wide::WideGroup>),
}

impl Groups {
    /// Scans `rows` of `codes` with group `g` on its kernel (see the kernels' `scan_checked`).
    fn scan_checked(
        &self,
        g: usize,
        family: KernelFamily,
        codes: &AdcCodes,
        rows: std::ops::Range<usize>,
        tops: &mut [TopK],
        exact: &mut impl FnMut(usize, usize) -> u32,
    ) -> ScanStats {
        match self {
            Groups::Wide(groups) => {
                wide::scan_checked(family, codes, &groups[g], rows, tops, exact)
            }
            Groups::Narrow(groups) => {
                crate::adc::scan_checked(family, codes, &groups[g], rows, tops, exact)
            }
        }
    }
}

/// Table scores by the quantised scan: each query's table is quantised once (in batches, in
/// parallel), then every tile of codes is scanned with it and the codes that may enter the top k
/// are re-scored exactly, as [`crate::score`] defines the score.
#[allow(clippy::too_many_arguments)]
fn table_keys(
    codes: &[u64],
    w: usize,
    k: usize,
    q: &TableQueries<'_>,
    norms: Option<&[f32]>,
    sparse: Option<&SparseView<'_>>,
    layout: &AdcCodes,
    params: &SearchParams,
    limits: KeyLimits<'_>,
    shared: Option<&SharedTables>,
) -> (Vec<Vec<u64>>, ScanStats) {
    let (nq, bits, family) = (q.offsets.len(), q.bits, params.family());
    let table_bytes = 2
        * (if layout.is_dense() {
            256 * bits.div_ceil(8)
        } else {
            bits + 2
        });
    // Batches of 32 or more queries of sparse codes are scanned 64 queries at a time on AVX-512
    // and AVX2 (adc_wide: plain loads per set bit for all 64, where the narrow kernel gathers
    // per 8 queries). Batches are even, so none is left too small for the kernel chosen.
    let wide = wide::used_for(family, layout, nq);
    let group_size = if wide { wide::WIDE } else { GROUP };
    let max_batch = (ADC_TABLE_BYTES / table_bytes).clamp(group_size, 256);
    let batch = nq
        .div_ceil(nq.div_ceil(max_batch).max(1))
        .next_multiple_of(group_size)
        .max(group_size);
    let rescored = AtomicU64::new(0);
    let mut keys = Vec::with_capacity(nq);
    for q0 in (0..nq).step_by(batch) {
        let q1 = (q0 + batch).min(nq);
        let table = |qi: usize| &q.tables[qi * bits..(qi + 1) * bits];
        let quantised = |qi: usize| {
            QuantisedTable::new(layout, table(qi), q.offsets[qi], q.normalise)
                .expect("tables validated by Score::validate, norms by check_norms")
        };
        // The exact score of query `qi` and row `r`, as the plain scans compute it (the same
        // f64 additions).
        let exact = |qi: usize, r: usize| {
            let t = table(qi);
            let sum = match sparse {
                Some(sv) => sv.table_sum(r, t),
                None => table_sum(&codes[r * w..(r + 1) * w], t),
            };
            desc_key(table_score(q.offsets[qi], sum, norms.map(|v| v[r])))
        };
        // Each query's table is quantised once, then interleaved with its group's.
        let starts: Vec<usize> = (q0..q1).step_by(group_size).collect();
        // The quantised tables of the group of queries starting at `g0`.
        let quantise_group = |g0: usize| {
            (g0..(g0 + group_size).min(q1))
                .map(quantised)
                .collect::<Vec<_>>()
        };
        let build_groups = || {
            if wide {
                Groups::Wide(
                    (starts.into_par_iter())
                        .map(|g0| {
                            wide::WideGroup::new(quantise_group(g0))
                                .expect("1 to WIDE sparse tables")
                        })
                        .collect(),
                )
            } else {
                Groups::Narrow(
                    (starts.into_par_iter())
                        .map(|g0| {
                            QueryGroup::new(quantise_group(g0))
                                .expect("1 to GROUP tables of one layout")
                        })
                        .collect(),
                )
            }
        };
        let groups = match shared {
            Some(s) => s.get_or_build(
                GroupsKey {
                    tables: (q.tables.as_ptr() as usize, q.tables.len()),
                    offsets: (q.offsets.as_ptr() as usize, q.offsets.len()),
                    normalise: q.normalise,
                    queries: (q0, q1),
                    shape: layout.table_shape(),
                    wide,
                },
                build_groups,
            ),
            None => Arc::new(build_groups()),
        };
        let part = search_keys_by_tile(
            codes,
            w,
            q1 - q0,
            k,
            params.split,
            limits.from(q0),
            SPARSE_TILE_ROWS,
            group_size,
            |i, block, first, tops| {
                let (g0, first) = (q0 + i, first as usize);
                let mut exact = |g: usize, r: usize| exact(g0 + g, r);
                let rows = first..first + block.len() / w;
                let st =
                    groups.scan_checked(i / group_size, family, layout, rows, tops, &mut exact);
                rescored.fetch_add(st.rescored, Ordering::Relaxed);
            },
        );
        keys.extend(part);
    }
    let stats = ScanStats {
        scanned: (nq * layout.len()) as u64,
        rescored: rescored.into_inner(),
    };
    (keys, stats)
}

/// Exact top-k over a bare slice of codes for any [`Score`]; hits' ids are rows.
///
/// `norms` (one per code) is needed by a normalised [`Score::Table`]. `max_distance` in `params`
/// applies to [`Score::Hamming`] only (other scores refuse it). For non-Hamming scores the hits
/// carry `scores` (best first, ties by row) and `distances` still hold Hamming distances.
///
/// ```
/// use bsa_index::search::flat::top_k_scored;
/// use bsa_index::{Score, SearchParams};
/// # fn main() -> bsa_index::Result<()> {
/// let codes = [0b0011u64, 0b0101, 0b1000]; // three 4-bit codes
/// let tables = [1.0f32, 2.0, 4.0, 8.0]; // one entry per bit
/// let score = Score::Table { tables: &tables, offsets: &[0.5], normalise: false };
/// let hits = top_k_scored(&codes, 1, 4, &[0b0001], 3, &score, None, &SearchParams::default())?;
/// assert_eq!(hits[0].rows, vec![2, 1, 0]); // 8.5, 5.5, 3.5
/// assert_eq!(hits[0].scores, Some(vec![8.5, 5.5, 3.5]));
/// assert_eq!(hits[0].distances, vec![2, 1, 1]); // still the Hamming distances to the query
/// // A normalised score needs the norms.
/// let normalised = Score::Table { tables: &tables, offsets: &[0.5], normalise: true };
/// let p = SearchParams::default();
/// assert!(top_k_scored(&codes, 1, 4, &[0b0001], 3, &normalised, None, &p).is_err());
/// let hits = top_k_scored(&codes, 1, 4, &[0b0001], 1, &normalised, Some(&[1.0, 1.0, 17.0]), &p)?;
/// assert_eq!(hits[0].scores, Some(vec![5.5]));
/// # Ok(()) }
/// ```
#[allow(clippy::too_many_arguments)]
pub fn top_k_scored(
    codes: &[u64],
    words_per_code: usize,
    bits: usize,
    queries: &[u64],
    k: usize,
    score: &Score<'_>,
    norms: Option<&[f32]>,
    params: &SearchParams,
) -> Result<Vec<Hits>> {
    params.resolved()?;
    let view = bare_view(codes, words_per_code, bits)?.with_norms(norms)?;
    let flat = FlatSearcher::new(view, FlatParams::default().with_split(params.split));
    Ok(flat.search(queries, k, score, params)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::Layouts;
    use crate::sparse::SparseCodes;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// A chunk that runs after a later chunk has published its k-th distance still takes rows
    /// at that distance (they come first in ties) and skips only rows beyond it.
    #[test]
    fn a_shared_kth_keeps_ties_for_earlier_rows() {
        use crate::topk::key;
        let shared = SharedKth::new(1);
        // The later chunk (rows 100..200) keeps 2 rows at distance 5 and publishes it.
        let mut later = TopK::new(2, None);
        for row in 100..200 {
            later.offer(5, row);
        }
        assert_eq!(later.known_kth(), Some(5));
        shared.publish(0, std::slice::from_ref(&later));
        // The earlier chunk (rows 0..100) pulls before its scan.
        let mut earlier = [TopK::new(2, None)];
        shared.pull(0, &mut earlier);
        assert_eq!(earlier[0].threshold(), 6);
        earlier[0].offer(6, 10); // beyond the later chunk's k-th: skipped
        earlier[0].offer(5, 20); // a tie: kept, it comes before the later chunk's rows
        let [earlier] = earlier;
        let all = [earlier.into_sorted_keys(), later.into_sorted_keys()].concat();
        assert_eq!(merge_keys(all, 2), vec![key(5, 20), key(5, 100)]);
    }

    /// One set of shared tables serves code sets of different layouts (sparse, packed, another
    /// most-bits-per-block) and the same layout twice: every search equals the same search
    /// without sharing, on every kernel family, and a layout seen before reuses its groups.
    #[test]
    fn shared_tables_give_the_answers_of_unshared_ones() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(14);
        let bits: usize = 100;
        let w = bits.div_ceil(64);
        let codes = |rng: &mut Xoshiro256PlusPlus, n: usize, density: f64| -> Vec<u64> {
            let mut out = vec![0u64; n * w];
            for r in 0..n {
                for j in 0..bits {
                    if rng.random_bool(density) {
                        out[r * w + j / 64] |= 1 << (j % 64);
                    }
                }
            }
            out
        };
        let a = codes(&mut rng, 700, 0.05);
        let b = codes(&mut rng, 300, 0.05);
        let c = codes(&mut rng, 500, 0.3);
        let (sa, sc) = (
            SparseCodes::build(&a, bits).unwrap(),
            SparseCodes::build(&c, bits).unwrap(),
        );
        let nq = 70;
        let queries = codes(&mut rng, nq, 0.05);
        // Coarse entries: many equal scores, so ties are checked too.
        let tables: Vec<f32> = (0..nq * bits)
            .map(|_| rng.random_range(-8i32..9) as f32 / 4.0)
            .collect();
        let offsets: Vec<f32> = (0..nq).map(|_| rng.random_range(-2i32..3) as f32).collect();
        let score = Score::Table {
            tables: &tables,
            offsets: &offsets,
            normalise: false,
        };
        let (la, lb, lc) = (Layouts::default(), Layouts::default(), Layouts::default());
        let ids: Vec<u64> = (0..700).collect();
        let views = [
            CodesView::from_validated(&a, bits, &ids[..700], None, Some(sa.view()), &la),
            CodesView::from_validated(&b, bits, &ids[..300], None, None, &lb),
            CodesView::from_validated(&c, bits, &ids[..500], None, Some(sc.view()), &lc),
        ];
        for family in KernelFamily::supported() {
            let params = SearchParams::default().with_kernel(Some(family));
            let shared = SharedTables::default();
            let mut built = Vec::new();
            for v in [0, 1, 2, 0, 1] {
                let flat = FlatSearcher::new(views[v], FlatParams::default());
                let want = flat.search(&queries, 10, &score, &params).unwrap().0;
                let flat = flat.with_shared_tables(&shared);
                let got = flat.search(&queries, 10, &score, &params).unwrap().0;
                assert_eq!(got, want, "{family}, code set {v}");
                built.push(shared.built.lock().unwrap().len());
            }
            // Three layouts, then the first two again: nothing new built for those.
            assert!(built[0] < built[1] && built[1] < built[2], "{built:?}");
            assert_eq!((built[3], built[4]), (built[2], built[2]), "{family}");
        }
    }
}
