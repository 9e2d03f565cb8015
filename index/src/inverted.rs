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
//!   The flat scan of table scores reads the per-code bit lists of `sparse.bin` when the index
//!   has them (see [`crate::sparse`]), which is what `--mode inverted` falls back to.
//!
//! **Bitmaps.** When the index also stores the lists as bitmaps over rows ([`crate::bitmaps`],
//! `bitmaps.bin`), a Hamming query whose bitmap words (`|q| x n / 64`) are fewer than its
//! postings reads those instead: a bit-sliced count of 512 rows per instruction, whatever the
//! list's density (measured on 1M real-like codes: a bitmap word costs about what a posting
//! does). [`InvertedStats::bitmap_queries`] counts them.
//!
//! **Fallback.** Visiting one posting costs about as much as the AVX-512 flat scan spends on
//! [`POSTING_COST_WORDS`] code words (measured on 1M real-like codes, see
//! `index/RESULTS-inverted.md`); the AVX2 and portable scans spend 3 and 5 times as much per
//! word. A query whose lists hold more than 1/[`POSTING_COST_WORDS`] of what a flat scan costs
//! (`n` x words per code, times that factor) is therefore answered by the flat scan instead
//! (same results), and counted in [`InvertedStats::flat_queries`]. Table scores count
//! every posting, so they use the posting lists only when all postings are fewer than
//! 1/[`POSTING_COST_WORDS`] of the code words. [`SearchParams::force_inverted`] disables the
//! fallback.
//!
//! Queries run in parallel on the current rayon pool, in batches of 8.

use rayon::prelude::*;

use crate::bitmaps::BitmapView;
use crate::blocked::{block_min_popcounts, hamming_batch, BlockParams, Work, QUERY_BATCH};
use crate::error::{Error, Result};
use crate::flat::{
    check_norms, check_queries, check_scored_params, scored_hits, search_keys_by,
    search_scored_keys, Hits, SearchParams,
};
use crate::format::MAX_INVERTED_BITS;
use crate::hamming::{scan_word_cost, Kernel};
use crate::score::{desc_key, overlap_key, table_score, Score};
use crate::sparse::SparseView;
use crate::topk::{key, KeyTopK, TopK};

/// Estimated cost of visiting one posting, in flat-scan code words (see the module docs).
pub const POSTING_COST_WORDS: u64 = 10;

/// Bytes of the sub-header at the start of the inverted payload.
pub const SUB_HEADER_LEN: usize = crate::format::COUNT_SUB_HEADER_LEN;

/// Whether posting lists pay for `codes` (n packed codes of `bits` bits), and the estimate
/// behind the answer: `(build?, expected postings per query, flat words per query)`.
///
/// A query drawn like the base codes visits on average `sum_j count_j^2 / n` postings (bit j is
/// in the query with probability `count_j / n`, and its list has `count_j` entries), or reads
/// `mean popcount x n / 64` words of bitmap lists ([`crate::bitmaps`]); a flat scan reads
/// `n x words_per_code` words. Lists are worth building when the cheaper of the two is at most
/// 1/[`POSTING_COST_WORDS`] of the words a scan reads (the rule the search applies per query).
///
/// ```
/// // 1000 codes of 1024 bits with 4 bits each, spread evenly: sparse enough.
/// let w = 16;
/// let mut codes = vec![0u64; 1000 * w];
/// for (r, code) in codes.chunks_exact_mut(w).enumerate() {
///     for b in 0..4 {
///         let j = (r * 4 + b * 256) % 1024;
///         code[j / 64] |= 1 << (j % 64);
///     }
/// }
/// let (build, postings, words) = bsa_index::inverted::pays_off(&codes, 1024);
/// assert!(build && postings < 100.0 && words == 16_000);
/// ```
pub fn pays_off(codes: &[u64], bits: usize) -> (bool, f64, u64) {
    let w = bits.div_ceil(64).max(1);
    let n = codes.len() / w;
    let mut count = vec![0u64; bits];
    for row in codes.chunks_exact(w) {
        for (wi, &x) in row.iter().enumerate() {
            let mut x = x;
            while x != 0 {
                count[wi * 64 + x.trailing_zeros() as usize] += 1;
                x &= x - 1;
            }
        }
    }
    let touched = count.iter().map(|&c| (c as f64) * (c as f64)).sum::<f64>() / n.max(1) as f64;
    let mean_popcount = count.iter().sum::<u64>() as f64 / n.max(1) as f64;
    let bitmap_words = mean_popcount * crate::bitmaps::column_words(n) as f64;
    let scan_words = (n as u64) * (w as u64);
    (
        touched.min(bitmap_words) * POSTING_COST_WORDS as f64 <= scan_words as f64,
        touched,
        scan_words,
    )
}

/// Posting lists built in memory (what `inverted.bin` stores); see [`InvertedView`] to search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvertedLists {
    bits: usize,
    n: usize,
    list_offsets: Vec<u64>,
    postings: Vec<u32>,
    popcounts: Vec<u16>,
    by_popcount: Vec<u32>,
    popcount_offsets: Vec<u32>,
}

/// A borrowed, validated view of posting lists (from memory or from the mapped `inverted.bin`).
#[derive(Debug, Clone, Copy)]
pub struct InvertedView<'a> {
    /// The same lists as bitmaps, read by Hamming queries for which they are cheaper.
    bitmaps: Option<BitmapView<'a>>,
    bits: usize,
    n: usize,
    list_offsets: &'a [u64],
    postings: &'a [u32],
    popcounts: &'a [u16],
    by_popcount: &'a [u32],
    popcount_offsets: &'a [u32],
}

/// Byte ranges of the sections of an inverted payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) list_offsets: std::ops::Range<usize>,
    pub(crate) postings: std::ops::Range<usize>,
    pub(crate) popcounts: std::ops::Range<usize>,
    pub(crate) by_popcount: std::ops::Range<usize>,
    pub(crate) popcount_offsets: std::ops::Range<usize>,
    pub(crate) total: usize,
}

fn align64(x: usize) -> Option<usize> {
    x.checked_add(63).map(|v| v & !63)
}

/// Section layout of a payload for `n` rows of `bits` bits and `postings` entries (`None` on
/// overflow). Each section starts at a multiple of 64 bytes; see FORMAT.md.
pub(crate) fn layout(n: usize, bits: usize, postings: usize) -> Option<Layout> {
    let mut at = SUB_HEADER_LEN;
    let mut section = |bytes: usize| -> Option<std::ops::Range<usize>> {
        let start = at;
        let end = start.checked_add(bytes)?;
        at = align64(end)?;
        Some(start..end)
    };
    let list_offsets = section(bits.checked_add(1)?.checked_mul(8)?)?;
    let postings = section(postings.checked_mul(4)?)?;
    let popcounts = section(n.checked_mul(2)?)?;
    let by_popcount = section(n.checked_mul(4)?)?;
    let popcount_offsets = section(bits.checked_add(2)?.checked_mul(4)?)?;
    Some(Layout {
        list_offsets,
        postings,
        popcounts,
        by_popcount,
        popcount_offsets,
        total: at,
    })
}

impl InvertedLists {
    /// Builds posting lists for `n` packed codes of `bits` bits (`codes.len() = n * ceil(bits/64)`).
    pub fn build(codes: &[u64], bits: usize) -> Result<Self> {
        if bits == 0 || bits > MAX_INVERTED_BITS as usize {
            return Err(Error::InvalidArgument(format!(
                "an inverted index needs 1..={MAX_INVERTED_BITS} bits per code, got {bits}"
            )));
        }
        let w = bits.div_ceil(64);
        if !codes.len().is_multiple_of(w) || codes.len() / w > u32::MAX as usize {
            return Err(Error::InvalidArgument(
                "codes are not whole rows or exceed 2^32-1 rows".into(),
            ));
        }
        crate::pack::check_high_bits_zero(codes, bits)?;
        let n = codes.len() / w;
        let mut counts = vec![0u64; bits + 1];
        let mut popcounts = Vec::with_capacity(n);
        for row in codes.chunks_exact(w) {
            let mut p = 0u32;
            for (wi, &word) in row.iter().enumerate() {
                let mut x = word;
                p += x.count_ones();
                while x != 0 {
                    counts[wi * 64 + x.trailing_zeros() as usize + 1] += 1;
                    x &= x - 1;
                }
            }
            // p <= bits <= u16::MAX.
            popcounts.push(p as u16);
        }
        for j in 0..bits {
            counts[j + 1] += counts[j];
        }
        let list_offsets = counts;
        let total = list_offsets[bits] as usize;
        let mut postings = vec![0u32; total];
        let mut next: Vec<u64> = list_offsets[..bits].to_vec();
        for (r, row) in codes.chunks_exact(w).enumerate() {
            for (wi, &word) in row.iter().enumerate() {
                let mut x = word;
                while x != 0 {
                    let j = wi * 64 + x.trailing_zeros() as usize;
                    postings[next[j] as usize] = r as u32;
                    next[j] += 1;
                    x &= x - 1;
                }
            }
        }
        let mut popcount_offsets = vec![0u32; bits + 2];
        for &p in &popcounts {
            popcount_offsets[p as usize + 1] += 1;
        }
        for p in 0..=bits {
            popcount_offsets[p + 1] += popcount_offsets[p];
        }
        let mut fill: Vec<u32> = popcount_offsets[..=bits].to_vec();
        let mut by_popcount = vec![0u32; n];
        for (r, &p) in popcounts.iter().enumerate() {
            by_popcount[fill[p as usize] as usize] = r as u32;
            fill[p as usize] += 1;
        }
        Ok(InvertedLists {
            bits,
            n,
            list_offsets,
            postings,
            popcounts,
            by_popcount,
            popcount_offsets,
        })
    }

    /// A view for searching.
    pub fn view(&self) -> InvertedView<'_> {
        InvertedView {
            bitmaps: None,
            bits: self.bits,
            n: self.n,
            list_offsets: &self.list_offsets,
            postings: &self.postings,
            popcounts: &self.popcounts,
            by_popcount: &self.by_popcount,
            popcount_offsets: &self.popcount_offsets,
        }
    }

    /// Total number of postings (set bits over all codes).
    pub fn postings_len(&self) -> usize {
        self.postings.len()
    }

    /// The payload bytes of `inverted.bin` (sub-header and sections, see FORMAT.md), in pieces.
    pub(crate) fn write_payload(&self, mut out: impl FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        let l = layout(self.n, self.bits, self.postings.len())
            .ok_or_else(|| Error::InvalidArgument("inverted file size overflows".to_string()))?;
        let mut sub = [0u8; SUB_HEADER_LEN];
        sub[..8].copy_from_slice(&(self.postings.len() as u64).to_le_bytes());
        out(&sub)?;
        let mut at = SUB_HEADER_LEN;
        let zeros = [0u8; 64];
        let mut put = |range: &std::ops::Range<usize>, bytes: &[u8]| -> Result<()> {
            out(&zeros[..range.start - at])?;
            for chunk in bytes.chunks(1 << 20) {
                out(chunk)?;
            }
            at = range.end;
            Ok(())
        };
        // Little-endian host (enforced in lib.rs): memory order is the on-disk order.
        put(&l.list_offsets, bytemuck::cast_slice(&self.list_offsets))?;
        put(&l.postings, bytemuck::cast_slice(&self.postings))?;
        put(&l.popcounts, bytemuck::cast_slice(&self.popcounts))?;
        put(&l.by_popcount, bytemuck::cast_slice(&self.by_popcount))?;
        put(
            &l.popcount_offsets,
            bytemuck::cast_slice(&self.popcount_offsets),
        )?;
        out(&zeros[..l.total - at])?;
        Ok(l.total as u64)
    }
}

impl<'a> InvertedView<'a> {
    /// A view of a payload already validated by [`from_payload`](Self::from_payload) (same
    /// `n`, `bits` and layout): no checks beyond the casts.
    pub(crate) fn from_validated(payload: &'a [u8], n: usize, bits: usize, l: &Layout) -> Self {
        // Alignment and sizes were checked by from_payload when the file was opened.
        InvertedView {
            bitmaps: None,
            bits,
            n,
            list_offsets: bytemuck::cast_slice(&payload[l.list_offsets.clone()]),
            postings: bytemuck::cast_slice(&payload[l.postings.clone()]),
            popcounts: bytemuck::cast_slice(&payload[l.popcounts.clone()]),
            by_popcount: bytemuck::cast_slice(&payload[l.by_popcount.clone()]),
            popcount_offsets: bytemuck::cast_slice(&payload[l.popcount_offsets.clone()]),
        }
    }

    /// The section layout of this view's payload.
    pub(crate) fn layout(&self) -> Layout {
        // The view was validated, so the layout exists.
        layout(self.n, self.bits, self.postings.len()).expect("validated layout")
    }

    /// Parses and fully validates an inverted payload for `n` codes of `bits` bits: the section
    /// sizes, every list offset, every posting (`< n`, strictly ascending within its list), every
    /// popcount (`<= bits`) and the popcount grouping. O(postings + n); `path` is for messages.
    pub(crate) fn from_payload(
        payload: &'a [u8],
        n: u64,
        bits: u32,
        path: &std::path::Path,
    ) -> Result<Self> {
        let bad = |d: String| Error::corrupt(path, d);
        let n = usize::try_from(n).map_err(|_| bad("too many rows".into()))?;
        let bits = bits as usize;
        let total = crate::format::read_count_sub_header(
            payload,
            path,
            "postings",
            "inverted sub-header: unknown flags or non-zero reserved bytes (compressed lists are not supported by this bsa-index; upgrade bsa)",
        )?;
        let l = layout(n, bits, total)
            .ok_or_else(|| bad(format!("{total} postings overflow the layout")))?;
        if l.total != payload.len() {
            return Err(bad(format!(
                "payload is {} bytes but {n} rows, {bits} bits and {total} postings need {}",
                payload.len(),
                l.total
            )));
        }
        let list_offsets: &[u64] = crate::format::section(payload, l.list_offsets.clone(), path)?;
        let postings: &[u32] = crate::format::section(payload, l.postings.clone(), path)?;
        let popcounts: &[u16] = crate::format::section(payload, l.popcounts.clone(), path)?;
        let by_popcount: &[u32] = crate::format::section(payload, l.by_popcount.clone(), path)?;
        let popcount_offsets: &[u32] =
            crate::format::section(payload, l.popcount_offsets.clone(), path)?;
        if list_offsets[0] != 0
            || list_offsets[bits] != total as u64
            || list_offsets.windows(2).any(|p| p[0] > p[1])
        {
            return Err(bad(
                "posting list offsets are not ascending from 0 to the number of postings".into(),
            ));
        }
        for j in 0..bits {
            // Offsets are ascending and end at postings.len(), so the range is in bounds.
            let list = &postings[list_offsets[j] as usize..list_offsets[j + 1] as usize];
            if list.iter().any(|&r| r as usize >= n) || list.windows(2).any(|p| p[0] >= p[1]) {
                return Err(bad(format!(
                    "posting list of bit {j} has rows out of range or out of order"
                )));
            }
        }
        if popcounts.iter().any(|&p| p as usize > bits)
            || popcounts.iter().map(|&p| u64::from(p)).sum::<u64>() != total as u64
        {
            return Err(bad(
                "popcounts are out of range or disagree with the postings".into(),
            ));
        }
        if popcount_offsets[0] != 0
            || popcount_offsets[bits + 1] as usize != n
            || popcount_offsets.windows(2).any(|p| p[0] > p[1])
        {
            return Err(bad(
                "popcount group offsets are not ascending from 0 to n".into()
            ));
        }
        for p in 0..=bits {
            let group =
                &by_popcount[popcount_offsets[p] as usize..popcount_offsets[p + 1] as usize];
            if group
                .iter()
                .any(|&r| r as usize >= n || popcounts[r as usize] as usize != p)
                || group.windows(2).any(|x| x[0] >= x[1])
            {
                return Err(bad(format!("popcount group {p} is inconsistent")));
            }
        }
        Ok(InvertedView {
            bitmaps: None,
            bits,
            n,
            list_offsets,
            postings,
            popcounts,
            by_popcount,
            popcount_offsets,
        })
    }

    /// These lists with their bitmaps (built from the same codes, [`crate::bitmaps`]): the
    /// inverted Hamming search reads the bitmaps for each query whose bitmap words are fewer
    /// than its postings. Results are the same either way.
    ///
    /// ```
    /// use bsa_index::{bitmaps::BitmapLists, inverted, InvertedLists, Score, SearchParams};
    /// # fn main() -> bsa_index::Result<()> {
    /// let codes = [0b0111u64, 0b0110, 0b1000];
    /// let lists = InvertedLists::build(&codes, 4)?;
    /// let bitmaps = BitmapLists::build(&codes, 4)?;
    /// let inv = lists.view().with_bitmaps(Some(bitmaps.view()));
    /// let p = SearchParams::default().with_force_inverted(true);
    /// let (hits, stats) = inverted::top_k(&codes, 1, 4, &inv, &[0b0110], 2, &Score::Hamming, None, &p)?;
    /// assert_eq!((hits[0].rows.clone(), hits[0].distances.clone()), (vec![1, 0], vec![0, 1]));
    /// assert_eq!(stats.inverted_queries, 1);
    /// # Ok(()) }
    /// ```
    pub fn with_bitmaps(mut self, bitmaps: Option<BitmapView<'a>>) -> Self {
        self.bitmaps = bitmaps;
        self
    }

    /// Number of codes.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no codes.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bits per code.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// Total number of postings.
    pub fn postings_len(&self) -> usize {
        self.postings.len()
    }

    /// Rows whose code has bit `j` set, ascending.
    ///
    /// # Panics
    /// If `j >= bits()`.
    pub fn list(&self, j: usize) -> &'a [u32] {
        &self.postings[self.list_offsets[j] as usize..self.list_offsets[j + 1] as usize]
    }

    /// Number of set bits of each code.
    pub fn popcounts(&self) -> &'a [u16] {
        self.popcounts
    }

    /// Rows with exactly `p` bits set, ascending (empty for `p > bits()`).
    pub fn rows_with_popcount(&self, p: usize) -> &'a [u32] {
        if p > self.bits {
            return &[];
        }
        &self.by_popcount[self.popcount_offsets[p] as usize..self.popcount_offsets[p + 1] as usize]
    }

    /// Entries an inverted search of `query` visits (for the fallback decision and statistics).
    pub fn touched(&self, query: &[u64], score: &Score<'_>) -> u64 {
        if matches!(score, Score::Table { .. }) {
            return self.postings.len() as u64;
        }
        let mut t = 0;
        for_each_bit(query, self.bits, |j| {
            t += self.list_offsets[j + 1] - self.list_offsets[j];
        });
        t
    }
}

pub(crate) fn for_each_bit(code: &[u64], bits: usize, mut f: impl FnMut(usize)) {
    for (wi, &word) in code.iter().enumerate() {
        let mut x = word;
        while x != 0 {
            let j = wi * 64 + x.trailing_zeros() as usize;
            if j < bits {
                f(j);
            }
            x &= x - 1;
        }
    }
}

/// What an inverted search did.
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

/// Inverted search core: sorted keys per query (the flat scan's keys exactly), and statistics.
/// Inputs must be validated; `inv` must describe `codes`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn search_keys(
    codes: &[u64],
    w: usize,
    bits: usize,
    inv: &InvertedView<'_>,
    queries: &[u64],
    k: usize,
    score: &Score<'_>,
    norms: Option<&[f32]>,
    sparse: Option<&SparseView<'_>>,
    params: &SearchParams,
) -> (Vec<Vec<u64>>, InvertedStats) {
    search_keys_with(
        codes,
        w,
        bits,
        inv,
        queries,
        k,
        score,
        norms,
        sparse,
        params,
        BlockParams::default(),
    )
}

/// [`search_keys`] with explicit block settings (tests use tiny blocks and no pruning).
#[allow(clippy::too_many_arguments)]
pub(crate) fn search_keys_with(
    codes: &[u64],
    w: usize,
    bits: usize,
    inv: &InvertedView<'_>,
    queries: &[u64],
    k: usize,
    score: &Score<'_>,
    norms: Option<&[f32]>,
    sparse: Option<&SparseView<'_>>,
    params: &SearchParams,
    bp: BlockParams,
) -> (Vec<Vec<u64>>, InvertedStats) {
    let bitmaps = inv.bitmaps.as_ref();
    let nq = queries.len() / w;
    let n = inv.n;
    let k = k.min(n);
    let scan_words = (n as u64).saturating_mul(w as u64);
    let query = |qi: usize| &queries[qi * w..(qi + 1) * w];
    let touched: Vec<u64> = (0..nq).map(|qi| inv.touched(query(qi), score)).collect();
    // Hamming queries read the bitmaps instead when their words are fewer than the postings
    // (one bitmap word costs about one posting, measured: index/RESULTS-inverted.md).
    let bitmap_words: Vec<Option<u64>> = (0..nq)
        .map(|qi| match (bitmaps, score) {
            (Some(b), Score::Hamming) => {
                let m = query(qi).iter().map(|x| x.count_ones() as usize).sum();
                Some(b.words_per_query(m)).filter(|&words| words < touched[qi])
            }
            _ => None,
        })
        .collect();
    // A Hamming scan's word costs more with narrower kernels; other scores' scans do not use them.
    let scan_cost = match score {
        Score::Hamming => scan_words.saturating_mul(scan_word_cost(params.family())),
        _ => scan_words,
    };
    let use_inv: Vec<bool> = (0..nq)
        .map(|qi| {
            let cost = bitmap_words[qi].unwrap_or(touched[qi]);
            params.force_inverted || cost.saturating_mul(POSTING_COST_WORDS) <= scan_cost
        })
        .collect();
    let bm_idx: Vec<usize> = (0..nq)
        .filter(|&qi| use_inv[qi] && bitmap_words[qi].is_some())
        .collect();
    let mut stats = InvertedStats {
        inverted_queries: use_inv.iter().filter(|&&u| u).count(),
        flat_queries: use_inv.iter().filter(|&&u| !u).count(),
        postings_visited: 0,
        codes_verified: 0,
        bitmap_queries: bm_idx.len(),
    };
    let limit = match params.max_distance {
        Some(m) if !score.has_scores() => key(m.saturating_add(1), 0),
        _ => u64::MAX,
    };
    let inv_idx: Vec<usize> = (0..nq)
        .filter(|&q| use_inv[q] && bitmap_words[q].is_none())
        .collect();
    let block_min = if matches!(score, Score::Hamming) && !inv_idx.is_empty() {
        block_min_popcounts(inv.popcounts, bp.block_rows)
    } else {
        Vec::new()
    };
    let batches: Vec<(Vec<Vec<u64>>, Work)> = inv_idx
        .par_chunks(QUERY_BATCH)
        .with_max_len(1)
        .map_init(Scratch::new, |s, batch| {
            let mut work = Work::default();
            let query = |qi: usize| &queries[qi * w..(qi + 1) * w];
            if k == 0 {
                return (vec![Vec::new(); batch.len()], work);
            }
            let mut out: Vec<Vec<u64>> = vec![Vec::new(); batch.len()];
            if let Score::Hamming = score {
                // Queries with at most 255 bits set: blocked search with u8 counters.
                let (small, _): (Vec<usize>, Vec<usize>) = (0..batch.len()).partition(|&i| {
                    query(batch[i]).iter().map(|x| x.count_ones()).sum::<u32>() <= 255
                });
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
                    Score::Hamming if q.iter().map(|x| x.count_ones()).sum::<u32>() <= 255 => {}
                    _ => {
                        let mut qbits = Vec::new();
                        for_each_bit(q, bits, |j| qbits.push(j));
                        work.postings += touched[qi];
                        out[i] = if qbits.len() <= u8::MAX as usize {
                            overlap_query(inv, &qbits, k, score, limit, &mut s.c8, &mut s.touched)
                        } else {
                            overlap_query(inv, &qbits, k, score, limit, &mut s.c16, &mut s.touched)
                        };
                    }
                }
            }
            (out, work)
        })
        .collect();
    let mut inv_keys: Vec<Vec<u64>> = Vec::with_capacity(inv_idx.len());
    for (keys, work) in batches {
        inv_keys.extend(keys);
        stats.postings_visited += work.postings;
        stats.codes_verified += work.verified;
    }
    // Fallback queries: one batched flat scan.
    let flat_idx: Vec<usize> = (0..nq).filter(|&q| !use_inv[q]).collect();
    let flat_keys = if flat_idx.is_empty() {
        Vec::new()
    } else {
        let fq: Vec<u64> = flat_idx
            .iter()
            .flat_map(|&qi| queries[qi * w..(qi + 1) * w].iter().copied())
            .collect();
        match score {
            Score::Hamming => {
                let kernel = Kernel::select(params.family(), w);
                search_keys_by(
                    codes,
                    w,
                    flat_idx.len(),
                    k,
                    params.split,
                    params.max_distance,
                    |qi, block, first, top| {
                        kernel.scan(&fq[qi * w..(qi + 1) * w], block, first, top)
                    },
                )
            }
            Score::Table {
                tables,
                offsets,
                normalise,
            } => {
                let ft: Vec<f32> = flat_idx
                    .iter()
                    .flat_map(|&qi| tables[qi * bits..(qi + 1) * bits].iter().copied())
                    .collect();
                let fo: Vec<f32> = flat_idx.iter().map(|&qi| offsets[qi]).collect();
                let sub = Score::Table {
                    tables: &ft,
                    offsets: &fo,
                    normalise: *normalise,
                };
                search_scored_keys(codes, w, bits, &fq, k, &sub, norms, sparse, None, params).0
            }
            _ => search_scored_keys(codes, w, bits, &fq, k, score, norms, sparse, None, params).0,
        }
    };
    let bm_keys = match bitmaps {
        Some(b) if !bm_idx.is_empty() => {
            let bq: Vec<u64> = bm_idx
                .iter()
                .flat_map(|&qi| query(qi).iter().copied())
                .collect();
            b.hamming_keys(&bq, w, k, params.max_distance, params.family())
        }
        _ => Vec::new(),
    };
    let mut out = vec![Vec::new(); nq];
    for (qi, keys) in inv_idx.into_iter().zip(inv_keys) {
        out[qi] = keys;
    }
    for (qi, keys) in bm_idx.into_iter().zip(bm_keys) {
        out[qi] = keys;
    }
    for (qi, keys) in flat_idx.into_iter().zip(flat_keys) {
        out[qi] = keys;
    }
    if nq == 0 {
        stats = InvertedStats::default();
    }
    (out, stats)
}

/// Exact top-k over bare slices with posting lists `inv` built from `codes`
/// ([`InvertedLists::build`]); hits' ids are rows. Same results as [`crate::flat::top_k_scored`].
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
    let params = &params.resolved()?;
    let w = words_per_code;
    crate::flat::top_k(codes, w, bits, &[], 0, params)?;
    if inv.bits != bits || inv.n != codes.len() / w {
        return Err(Error::InvalidArgument(format!(
            "posting lists of {} codes of {} bits do not describe {} codes of {bits} bits",
            inv.n,
            inv.bits,
            codes.len() / w
        )));
    }
    if let Some(b) = &inv.bitmaps {
        if b.len() != inv.n || b.bits() != inv.bits {
            return Err(Error::InvalidArgument(format!(
                "bitmap lists of {} codes of {} bits do not describe {} codes of {bits} bits",
                b.len(),
                b.bits(),
                inv.n
            )));
        }
    }
    let nq = check_queries(queries, w, bits)?;
    check_scored_params(score, params, nq, bits)?;
    let norms = check_norms(score, norms, inv.n)?;
    let (keys, stats) = search_keys(codes, w, bits, inv, queries, k, score, norms, None, params);
    let scored = score.has_scores();
    Ok((
        keys.iter()
            .enumerate()
            .map(|(qi, keys)| {
                scored_hits(keys, None, codes, &queries[qi * w..(qi + 1) * w], scored)
            })
            .collect(),
        stats,
    ))
}

impl crate::Index {
    /// Whether the index has posting lists (`inverted.bin`).
    pub fn has_inverted(&self) -> bool {
        self.inverted.is_some()
    }

    /// The posting lists, if stored (with their bitmaps, if stored too).
    pub fn inverted(&self) -> Option<InvertedView<'_>> {
        self.inverted.as_ref().map(|(s, l)| {
            InvertedView::from_validated(s.payload(), self.len(), self.bits(), l)
                .with_bitmaps(self.bitmaps())
        })
    }

    /// Exact k best codes for each query by inverted search: identical to
    /// [`search_flat_scored`](Self::search_flat_scored) (rows, distances, scores, ties by row),
    /// with statistics on how each query was answered (see the [module docs](crate::inverted)).
    pub fn search_inverted(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        params: &SearchParams,
    ) -> Result<(Vec<Hits>, InvertedStats)> {
        let params = &params.resolved()?;
        let inv = self.inverted().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: the index has no posting lists; rebuild it with `bsa build --inverted`",
                self.dir.display()
            ))
        })?;
        let w = self.words_per_code();
        let bits = self.bits();
        let nq = check_queries(queries, w, bits)?;
        check_scored_params(score, params, nq, bits)?;
        let norms = check_norms(score, self.norms(), self.len())?;
        let codes = self.codes();
        let sparse = self.sparse();
        let (keys, stats) = search_keys(
            codes,
            w,
            bits,
            &inv,
            queries,
            k,
            score,
            norms,
            sparse.as_ref(),
            params,
        );
        let ids = self.ids();
        let scored = score.has_scores();
        Ok((
            keys.iter()
                .enumerate()
                .map(|(qi, keys)| {
                    scored_hits(
                        keys,
                        Some(ids),
                        codes,
                        &queries[qi * w..(qi + 1) * w],
                        scored,
                    )
                })
                .collect(),
            stats,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::blocked::BlockParams;
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
            let (got, stats) = search_keys_with(
                &base, w, bits, &inv, &queries, k, &Score::Hamming, None, None, &params, bp,
            );
            let want = crate::flat::search_keys(&base, w, &queries, k, &params);
            prop_assert_eq!(got, want);
            prop_assert_eq!(stats.inverted_queries, 4);
            if !with_bitmaps {
                prop_assert_eq!(stats.bitmap_queries, 0);
            }
        }
    }

    #[test]
    fn layout_is_aligned_and_sized() {
        let l = layout(3, 70, 5).unwrap();
        for r in [
            &l.list_offsets,
            &l.postings,
            &l.popcounts,
            &l.by_popcount,
            &l.popcount_offsets,
        ] {
            assert_eq!(r.start % 64, 0);
        }
        assert_eq!(l.list_offsets, 64..64 + 71 * 8);
        assert_eq!(l.total % 64, 0);
        assert!(layout(usize::MAX / 2, 10, 1).is_none());
    }

    #[test]
    fn build_round_trips_through_payload() {
        // Rows: {0, 2}, {}, {2, 69}, {0}.
        let codes = vec![0b101, 0, 0, 0, 0b100, 1 << 5, 1, 0];
        let inv = InvertedLists::build(&codes, 70).unwrap();
        let v = inv.view();
        assert_eq!(v.list(0), &[0, 3]);
        assert_eq!(v.list(2), &[0, 2]);
        assert_eq!(v.list(69), &[2]);
        assert_eq!(v.popcounts(), &[2, 0, 2, 1]);
        assert_eq!(v.rows_with_popcount(2), &[0, 2]);
        assert_eq!(v.rows_with_popcount(0), &[1]);
        let mut bytes = Vec::new();
        let len = inv
            .write_payload(|b| {
                bytes.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
        assert_eq!(len as usize, bytes.len());
        // Copy into u64-aligned memory, as the map provides.
        let words: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let aligned: &[u8] = bytemuck::cast_slice(&words);
        let p = std::path::Path::new("x/inverted.bin");
        let back = InvertedView::from_payload(aligned, 4, 70, p).unwrap();
        assert_eq!(back.list(0), &[0, 3]);
        assert_eq!(back.popcounts(), v.popcounts());
        // Any change of a byte inside the sections is caught by the structural checks or
        // leaves a consistent structure; a posting out of range is caught.
        let mut broken = words.clone();
        let at = layout(4, 70, 5).unwrap().postings.start / 8;
        broken[at] = u64::MAX;
        assert!(InvertedView::from_payload(bytemuck::cast_slice(&broken), 4, 70, p).is_err());
        assert!(InvertedView::from_payload(&aligned[..64], 4, 70, p).is_err());
        assert!(InvertedView::from_payload(aligned, 5, 70, p).is_err());
    }
}
