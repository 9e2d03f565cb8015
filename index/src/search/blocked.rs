//! Blocked, pruned ScanCount for exact Hamming top-k over posting lists.
//!
//! The plain ScanCount of [`crate::search::inverted`] updates one counter per posting in an array of
//! `n` counters: for a million codes that array does not fit in the L1 cache and every posting
//! is a cache miss. Here the rows are cut into blocks of [`BLOCK_ROWS`] and each block is
//! finished before the next: the query's lists are ascending, so a cursor per list walks the
//! list's segment for the block, and the block's `u8` counters (16 KiB) stay in L1. A thread
//! processes a batch of queries block by block, so the segments of a block that several queries
//! share are read from memory once.
//!
//! **Pruning (max-score).** With `c = |q and b|`, `hamming = m + p - 2c`. Inside a block the
//! collector's threshold `t` (rows are visited in ascending order, so a row enters only if its
//! distance is `< t`) and the block's smallest popcount `p_lo` give the least overlap a row of
//! the block needs, `c_min = floor((m + p_lo - t) / 2) + 1`. The query's lists are visited
//! shortest first; after `s` of them a row counted `c_s` times can still reach at most
//! `c_s + (m - s)`, so only rows with `c_s >= c_min - (m - s)` stay viable. Once that bound is
//! at least 1, rows not yet seen are out, and as soon as verifying the viable rows directly
//! (one Hamming distance against the stored code each) costs less than scanning the remaining,
//! longest lists, those lists are skipped for the block. A block with `c_min > m` is skipped
//! entirely. Rows that share no bit with the query (`c = 0`, distance `m + p`) are never
//! counted; they are taken at the end from the rows grouped by popcount, as in the plain search.
//!
//! Every decision only drops rows whose distance provably cannot enter the result, and the
//! distances that are computed are exact, so the result equals the flat scan's, ties included.

use crate::bits::{for_each_set_bit, prefetch};
use crate::hamming::hamming;
use crate::postings::InvertedView;
use crate::topk::{KeyTopK, TopK, key};

/// Rows per block: the `u8` counters of a block (16 KiB) fit in the L1 data cache.
pub(crate) const BLOCK_ROWS: usize = 1 << 14;
/// Queries a thread processes together, block by block.
pub(crate) const BLOCKED_QUERY_BATCH: usize = 8;

/// Settings of the blocked search (tests use tiny blocks and switch pruning off).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockParams {
    /// Rows per block.
    pub(crate) block_rows: usize,
    /// Skip lists and blocks by the max-score bound (results are identical either way).
    pub(crate) prune: bool,
    /// Cost of verifying one row from its code, in postings; `None`: `64 + 6 x words per code`.
    pub(crate) verify_cost: Option<u64>,
    /// Consider switching to verification only when at least this many postings remain.
    pub(crate) min_rest: u64,
}

impl Default for BlockParams {
    fn default() -> Self {
        BlockParams {
            block_rows: BLOCK_ROWS,
            prune: true,
            verify_cost: None,
            min_rest: 64,
        }
    }
}

/// Work counters of one batch (for [`crate::InvertedStats`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Work {
    /// Postings read by the counting loops.
    pub(crate) postings: u64,
    /// Rows whose distance was computed from the stored code.
    pub(crate) verified: u64,
}

/// One query's state across blocks.
struct QueryState<'a> {
    query: &'a [u64],
    m: u32,
    /// The query's posting lists, shortest first.
    lists: Vec<&'a [u32]>,
    /// Position in each list: at or before the first posting of the current block (lists
    /// skipped by pruning are advanced lazily, when next scanned).
    cursor: Vec<usize>,
    /// `suffix[s]` = postings of lists `s..` (whole lists), to estimate a block's remaining work.
    suffix: Vec<u64>,
    top: TopK,
    /// Candidates of the previous block whose codes were prefetched; verified (in ascending row
    /// order) before the next block of this query, so the loads overlap other queries' work.
    pending: Vec<u32>,
}

impl QueryState<'_> {
    /// Computes the distances of the pending candidates and offers them.
    fn verify_pending(&mut self, codes: &[u64], work: &mut Work) {
        let w = self.query.len();
        for &r in &self.pending {
            let ru = r as usize;
            let d = hamming(self.query, &codes[ru * w..(ru + 1) * w]);
            self.top.offer(d, r);
        }
        work.verified += self.pending.len() as u64;
        self.pending.clear();
    }
}

/// Smallest popcount of each block of `block_rows` rows.
pub(crate) fn block_min_popcounts(popcounts: &[u16], block_rows: usize) -> Vec<u32> {
    popcounts
        .chunks(block_rows)
        .map(|c| u32::from(c.iter().copied().min().unwrap_or(0)))
        .collect()
}

/// First index `>= from` whose posting is `>= bound` (galloping, then binary search).
#[inline]
fn advance(list: &[u32], from: usize, bound: u32) -> usize {
    let rest = &list[from..];
    let mut hi = 1;
    while hi < rest.len() && rest[hi - 1] < bound {
        hi *= 2;
    }
    let lo = hi / 2;
    let hi = hi.min(rest.len());
    from + lo + rest[lo..hi].partition_point(|&r| r < bound)
}

/// Calls `f(i, c)` for every counter `c = counts[i] >= need` (`need >= 1`), in ascending `i`.
#[inline]
fn for_each_at_least(counts: &[u8], need: u8, mut f: impl FnMut(usize, u8)) {
    let mut base = 0;
    let mut chunks = counts.chunks_exact(64);
    for chunk in &mut chunks {
        let mut mask = ge_mask64(chunk, need);
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            f(base + i, chunk[i]);
            mask &= mask - 1;
        }
        base += 64;
    }
    for (i, &c) in chunks.remainder().iter().enumerate() {
        if c >= need {
            f(base + i, c);
        }
    }
}

/// Number of counters `>= need`.
#[inline]
fn count_at_least(counts: &[u8], need: u8) -> usize {
    let mut chunks = counts.chunks_exact(64);
    let mut n = 0usize;
    for chunk in &mut chunks {
        n += ge_mask64(chunk, need).count_ones() as usize;
    }
    n + chunks.remainder().iter().filter(|&&c| c >= need).count()
}

/// Bit `i` set iff `chunk[i] >= need` (`chunk.len() == 64`).
///
/// On x86-64 with SSE2, which every x86-64 CPU has: four 16-byte compares (`max(c, need) == c`)
/// and byte masks, about as fast as one AVX-512 compare here and needing no run-time dispatch.
#[inline(always)]
fn ge_mask64(chunk: &[u8], need: u8) -> u64 {
    assert_eq!(chunk.len(), 64);
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_set1_epi8,
        };
        let mut mask = 0u64;
        // SAFETY: SSE2 is part of the x86-64 baseline; each load reads 16 of the 64 bytes
        // (asserted above), unaligned.
        unsafe {
            let n = _mm_set1_epi8(need as i8);
            for part in 0..4 {
                let v = _mm_loadu_si128(chunk.as_ptr().add(16 * part).cast());
                let ge = _mm_cmpeq_epi8(_mm_max_epu8(v, n), v);
                mask |= u64::from(_mm_movemask_epi8(ge) as u16) << (16 * part);
            }
        }
        mask
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut mask = 0u64;
        for (i, &c) in chunk.iter().enumerate() {
            mask |= u64::from(c >= need) << i;
        }
        mask
    }
}

/// Adds 1 to `counts[r - r0]` for the postings `r < r0 + counts.len()` of `list` from `start`
/// on, and returns the position of the first posting not counted.
///
/// The caller guarantees `list[start] >= r0` (if it exists) and that `list` is strictly
/// ascending (validated when the lists are opened or built).
#[inline(always)]
fn count_segment(list: &[u32], start: usize, r0: u32, counts: &mut [u8]) -> usize {
    assert!(start >= list.len() || list[start] >= r0);
    let len = counts.len() as u32;
    let base = counts.as_mut_ptr();
    let mut c = start;
    while c < list.len() {
        let i = list[c].wrapping_sub(r0);
        if i >= len {
            break;
        }
        prefetch_posting(list, c + PREFETCH_POSTINGS);
        // SAFETY: i < counts.len() (checked just above), so the offset is inside `counts`.
        unsafe {
            let p = base.add(i as usize);
            *p = (*p).wrapping_add(1);
        }
        c += 1;
    }
    c
}

/// Postings ahead of the counting loop whose cache line is requested.
const PREFETCH_POSTINGS: usize = 64;

/// Asks the CPU to load the cache line of `list[at]`, if there is one (a hint).
#[inline(always)]
fn prefetch_posting(list: &[u32], at: usize) {
    if let Some(p) = list.get(at..at + 1) {
        prefetch(p);
    }
}

/// Processes rows `r0..r1`, one block, for one query; `p_lo` is the fewest set bits of the
/// block's codes, which bounds the overlap a row of it needs to enter.
#[allow(clippy::too_many_arguments)]
fn block_pass(
    st: &mut QueryState<'_>,
    r0: u32,
    r1: u32,
    p_lo: u32,
    n: usize,
    codes: &[u64],
    popcounts: &[u16],
    counts: &mut [u8],
    bp: BlockParams,
    work: &mut Work,
) {
    let w = st.query.len();
    let m = st.m;
    let len = (r1 - r0) as usize;
    st.verify_pending(codes, work);
    let counts = &mut counts[..len];
    // A row of this block enters only if m + p - 2c < t, i.e. c > (m + p - t) / 2 >= (m + p_lo - t) / 2.
    let t = i64::from(st.top.threshold());
    let excess = i64::from(m) + i64::from(p_lo) - t;
    let c_min = if excess < 0 {
        1
    } else {
        (excess / 2 + 1).max(1)
    };
    if bp.prune && c_min > i64::from(m) {
        // No row of the block can enter: skip it (cursors catch up when next used).
        return;
    }
    let ms = st.lists.len();
    // Cost of verifying one row from its code, in postings: a random access to `w` words that
    // usually misses every cache (measured 100-350 ns against 2-4 ns per posting on 1M codes).
    let verify_cost = bp.verify_cost.unwrap_or(64 + 6 * w as u64);
    let mut verified = false;
    for s in 0..ms {
        let need = c_min - (ms - s) as i64;
        if bp.prune && need >= 1 {
            // Estimated postings of the remaining lists inside this block.
            let rest = st.suffix[s] * len as u64 / n as u64;
            if rest >= bp.min_rest {
                let need = need as u8; // need <= c_min <= m <= 255
                let viable = count_at_least(counts, need) as u64;
                if viable * verify_cost <= rest {
                    let pending = &mut st.pending;
                    for_each_at_least(counts, need, |i, _| {
                        let r = r0 + i as u32;
                        let a = r as usize * w;
                        prefetch(&codes[a..a + w]);
                        pending.push(r);
                    });
                    verified = true;
                    break;
                }
            }
        }
        let list = st.lists[s];
        let mut start = st.cursor[s];
        if start < list.len() && list[start] < r0 {
            // The list was skipped in earlier blocks: catch up.
            start = advance(list, start, r0);
        }
        let end = count_segment(list, start, r0, counts);
        st.cursor[s] = end;
        work.postings += (end - start) as u64;
    }
    if !verified {
        // c_min <= m <= 255 here (or pruning is off and c_min may exceed m: then nothing passes).
        let need = c_min.min(255) as u8;
        let top = &mut st.top;
        for_each_at_least(counts, need, |i, c| {
            let r = r0 + i as u32;
            let p = u32::from(popcounts[r as usize]);
            // c <= min(m, p) for valid lists; saturate rather than wrap on bad input.
            top.offer((m + p).saturating_sub(2 * u32::from(c)), r);
        });
    }
    counts.fill(0);
}

/// Exact Hamming top-k keys of each query in `queries` (every query has at most 255 bits set)
/// by blocked, pruned ScanCount; `limit` is the key bound of `max_distance` (`u64::MAX` if none).
#[allow(clippy::too_many_arguments)]
pub(crate) fn hamming_batch(
    inv: &InvertedView<'_>,
    codes: &[u64],
    w: usize,
    queries: &[&[u64]],
    k: usize,
    max_distance: Option<u32>,
    limit: u64,
    block_min: &[u32],
    bp: BlockParams,
    counts: &mut Vec<u8>,
    work: &mut Work,
) -> Vec<Vec<u64>> {
    let n = inv.len();
    let bits = inv.bits();
    if counts.len() < bp.block_rows {
        *counts = vec![0; bp.block_rows];
    }
    let mut states: Vec<QueryState<'_>> = queries
        .iter()
        .map(|&q| {
            let mut lists = Vec::new();
            for_each_set_bit(q, bits, |j| lists.push(inv.list(j)));
            lists.sort_by_key(|l| l.len());
            let mut suffix = vec![0u64; lists.len() + 1];
            for s in (0..lists.len()).rev() {
                suffix[s] = suffix[s + 1] + lists[s].len() as u64;
            }
            QueryState {
                query: q,
                m: lists.len() as u32,
                cursor: vec![0; lists.len()],
                lists,
                suffix,
                top: TopK::new(k, max_distance),
                pending: Vec::new(),
            }
        })
        .collect();
    if k > 0 {
        for (b, &p_lo) in block_min.iter().enumerate() {
            let r0 = (b * bp.block_rows) as u32;
            let r1 = ((b + 1) * bp.block_rows).min(n) as u32;
            for st in states.iter_mut() {
                block_pass(
                    st,
                    r0,
                    r1,
                    p_lo,
                    n,
                    codes,
                    inv.popcounts(),
                    counts,
                    bp,
                    work,
                );
            }
        }
    }
    states
        .into_iter()
        .map(|mut st| {
            st.verify_pending(codes, work);
            // Rows sharing no bit with the query (distance m + p): by popcount, then row.
            let mut top = KeyTopK::new(k, limit);
            for kk in st.top.into_sorted_keys() {
                top.offer(kk);
            }
            for p in 0..=bits {
                let group = inv.rows_with_popcount(p);
                if group.is_empty() {
                    continue;
                }
                let d = st.m + p as u32;
                top.compact();
                if key(d, 0) >= top.threshold() {
                    break;
                }
                for &r in group {
                    let ru = r as usize;
                    work.verified += 1;
                    // Rows with a shared bit were counted in their block; only c = 0 is new here.
                    if hamming(st.query, &codes[ru * w..(ru + 1) * w]) != d {
                        continue;
                    }
                    if !top.offer(key(d, r)) {
                        // Later rows of the group have larger keys.
                        break;
                    }
                }
            }
            top.into_sorted_keys()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ge_mask_and_counts_equal_the_plain_loop() {
        // Every byte value against thresholds at the edges (0x80 and up are where a signed
        // compare would go wrong).
        let counts: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).chain(0..7).collect();
        for need in [1u8, 2, 7, 127, 128, 129, 200, 255] {
            let mut want = Vec::new();
            for (i, &c) in counts.iter().enumerate() {
                if c >= need {
                    want.push((i, c));
                }
            }
            let mut got = Vec::new();
            for_each_at_least(&counts, need, |i, c| got.push((i, c)));
            assert_eq!(got, want, "need {need}");
            assert_eq!(count_at_least(&counts, need), want.len(), "need {need}");
        }
    }
}
