//! Posting lists as bitmaps over rows (`bitmaps.bin`): exact Hamming search by bit-sliced
//! counting.
//!
//! Column `j` is a bitmap with bit `r` set when code `r` has bit `j` set: the transposed code
//! matrix, the same size as `codes.bin`. A query reads only the columns of its own set bits
//! (`|q|` of `N`), so it touches `|q| x n / 64` words instead of the flat scan's `n x N / 64`.
//! For each chunk of `CHUNK_ROWS` (512) rows the overlaps `|q and b|` of all rows are added up
//! *bit-sliced*: plane `p` holds bit `p` of every row's counter. Sixteen columns at a time go
//! through a Harley-Seal carry-save tree (fifteen adders of two instructions each, 512 rows per
//! AVX-512 instruction) and the rest ripple in. A sorted posting list costs a load and a counter
//! update per entry; a bitmap column costs about one instruction per 512 rows whatever its
//! density, which is why it wins once a query's bits fire for more than a few percent of the
//! codes (the 1024-bit, K = 16 codes of issue 5: `index/RESULTS-inverted.md`).
//!
//! **Exactness.** `hamming(q, b) = |q| + |b| - 2 |q and b|`. Rows are visited in ascending order
//! and offered to a [`TopK`] collector whose threshold `t` only falls. In a chunk whose smallest
//! popcount is `b_min`, a row can enter only if `2 |q and b| > |q| + b_min - t`: a chunk where no
//! count can reach that is skipped unread, and in the others a bit-sliced comparison picks the
//! rows whose count does, which are offered with their exact distance. Nothing that could enter
//! the result is dropped, so the result is the flat scan's: same rows, same distances, ties by
//! row. (Abandoning a chunk part-way, once no row can reach the bound with the columns left,
//! was measured slower: the check costs as much as an add and rarely fires.)
//!
//! ```
//! use bsa_index::{bitmaps::BitmapLists, KernelFamily};
//! # fn main() -> bsa_index::Result<()> {
//! // Three 8-bit codes: {0, 1}, {1, 2}, {5}.
//! let codes = [0b011u64, 0b110, 0b100000];
//! let lists = BitmapLists::build(&codes, 8)?;
//! let keys = lists.view().hamming_keys(&[0b010], 1, 2, None, KernelFamily::best());
//! // Rows 0 and 1 are both at distance 1 from {1}; ties go to the smaller row.
//! let hits: Vec<(u32, u32)> = keys[0].iter().map(|&k| ((k >> 32) as u32, k as u32)).collect();
//! assert_eq!(hits, [(1, 0), (1, 1)]);
//! # Ok(()) }
//! ```

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::counters::x86;
use crate::counters::{Columns, Lanes, add_columns, at_least, planes_for};
use crate::error::{Error, Result};
use crate::kernel::KernelFamily;
use crate::topk::TopK;

/// Words per chunk of a column: 8 words (one 512-bit register) of 64 rows.
pub(crate) const CHUNK_WORDS: usize = 8;

/// Rows per chunk: the unit of the bit-sliced count and of the popcount bound.
pub(crate) const CHUNK_ROWS: usize = CHUNK_WORDS * 64;

/// How far ahead of the chunk being counted each column is prefetched, in words.
const PREFETCH_WORDS: usize = 4 * CHUNK_WORDS;

/// Queries a thread answers together, range by range.
pub(crate) const BITMAP_QUERY_BATCH: usize = 32;

/// Chunks per range: a range's slice of every column (`RANGE_CHUNKS x 64` bytes, 2 KiB) stays
/// in the L2 cache while the queries of a batch use it.
pub(crate) const RANGE_CHUNKS: usize = 32;

/// Bitmap words that cost about what one posting of a query's lists does (the inverted search
/// routes each Hamming query to the cheaper). Measured on 1M TopK codes with 10% bit noise
/// (`index/examples/inverted_vs_flat`, AMD EPYC Zen 5, AVX2 and AVX-512 alike, 2 threads), per
/// word of `|q| x n / 64` against per posting of the query's lists: 0.24 against 1.03 ns at
/// N = 1024, K = 16 (4.3 words); 0.46 against 1.38 ns at N = 4096, K = 32 (3.0 words). The
/// smaller is taken: a query sent to the bitmaps wrongly loses less than one kept from them.
pub const WORDS_PER_POSTING: u64 = 3;

/// What a bitmap word costs in words of the AVX-512 row-major flat scan, the unit in which the
/// inverted search weighs each query's executors against the flat scan (see
/// [`crate::search::inverted`]). Measured against the slab scan on 1M codes (same runs as
/// [`WORDS_PER_POSTING`]): 4.1 to 5.6 for queries with 16 or 32 bits set, 7.6 (AVX-512) and
/// 12.8 (AVX2) for the paper's BSA codes, 112 bits set, whose bitmaps read more columns per
/// range than the cache keeps. 7 routes each of those six cases to the faster executor (the
/// BSA codes to the slab scan, which the bitmaps priced at 3.3 had taken: 0.55-0.64x the flat
/// scan).
pub const WORD_COST: u64 = 7;

/// Counter planes: queries with up to `2^16 - 1` set bits.
const MAX_PLANES: usize = 16;

/// Bitmap posting lists built in memory (what `bitmaps.bin` stores); see [`BitmapView`].
///
/// Column `j` counts the codes that have bit `j`:
///
/// ```
/// use bsa_index::bitmaps::BitmapLists;
/// # fn main() -> bsa_index::Result<()> {
/// let codes = [0b0101u64, 0b0110, 0b0000, 0b1100];
/// let lists = BitmapLists::build(&codes, 4)?;
/// assert_eq!(lists.set_bits(), 6);
/// let view = lists.view();
/// assert_eq!((view.len(), view.bits()), (4, 4));
/// let counts: Vec<u32> = (0..4).map(|j| view.column_count(j)).collect();
/// assert_eq!(counts, [1, 1, 3, 1]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapLists {
    bits: usize,
    n: usize,
    columns: Vec<u64>,
    column_counts: Vec<u32>,
    popcounts: Vec<u16>,
    chunk_min: Vec<u16>,
}

/// A borrowed bitmap index (from memory or from the mapped `bitmaps.bin`).
///
/// An index built with [`bitmaps`](crate::IndexBuilder::bitmaps) hands its view out with
/// [`Index::bitmaps`](crate::Index::bitmaps), and the inverted search reads it for queries
/// whose bitmap words are fewer than their postings:
///
/// ```
/// use bsa_index::topk::key;
/// use bsa_index::{Index, IndexBuilder, KernelFamily};
/// # fn main() -> bsa_index::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("idx");
/// let codes = [0b0101u64, 0b0110, 0b0000, 0b1100];
/// IndexBuilder::new(64, &codes).inverted(true).bitmaps(Some(true)).build(&path)?;
/// let index = Index::open(&path)?;
/// let view = index.bitmaps()?.unwrap();
/// assert_eq!((view.len(), view.column_count(2)), (4, 3));
/// let keys = view.hamming_keys(&[0b0110], 1, 2, None, KernelFamily::current());
/// assert_eq!(keys[0], [key(0, 1), key(2, 0)]); // row 1 at distance 0, then row 0 at 2
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct BitmapView<'a> {
    bits: usize,
    n: usize,
    /// Words per column: `n` rounded up to whole chunks, divided by 64.
    words: usize,
    columns: &'a [u64],
    column_counts: &'a [u32],
    popcounts: &'a [u16],
    chunk_min: &'a [u16],
}

/// Name of `family`'s bitmap counting loop for `--stats`.
pub(crate) fn kernel_name(family: KernelFamily) -> &'static str {
    match family {
        KernelFamily::Avx512 => "avx512-bitmaps",
        KernelFamily::Avx2 => "avx2-bitmaps",
        _ => "portable-bitmaps",
    }
}

/// Words per column for `n` rows (whole chunks).
pub(crate) fn column_words(n: usize) -> usize {
    n.div_ceil(CHUNK_ROWS) * CHUNK_WORDS
}

impl BitmapLists {
    /// Transposes `codes` (`n` packed codes of `bits` bits, `ceil(bits / 64)` words each) into
    /// one bitmap per bit. Fails if `bits` is 0 or above 65535, or `n` does not fit a `u32`.
    ///
    /// ```
    /// use bsa_index::bitmaps::BitmapLists;
    /// assert!(BitmapLists::build(&[1, 2, 3], 128).is_err()); // not whole codes
    /// assert!(BitmapLists::build(&[1 << 9], 8).is_err()); // bit 9 of an 8-bit code
    /// assert!(BitmapLists::build(&[0b1011, 0b0001], 8)?.view().column_count(0) == 2);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn build(codes: &[u64], bits: usize) -> Result<Self> {
        if bits == 0 || bits > u16::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "bitmap lists need 1..=65535 bits per code, got {bits}"
            )));
        }
        let w = bits.div_ceil(64);
        if !codes.len().is_multiple_of(w) {
            return Err(Error::InvalidArgument(format!(
                "{} words are not whole {bits}-bit codes",
                codes.len()
            )));
        }
        let n = codes.len() / w;
        if n > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "{n} codes exceed the 2^32 rows of a bitmap index"
            )));
        }
        let words = column_words(n);
        let mut columns = vec![0u64; bits * words];
        let mut column_counts = vec![0u32; bits];
        let mut popcounts = Vec::with_capacity(n);
        for (r, code) in codes.chunks_exact(w).enumerate() {
            let mut pop = 0u32;
            for (wi, &x) in code.iter().enumerate() {
                let mut x = x;
                while x != 0 {
                    let j = wi * 64 + x.trailing_zeros() as usize;
                    x &= x - 1;
                    if j >= bits {
                        return Err(Error::InvalidArgument(format!(
                            "code {r} has bit {j} set beyond its {bits} bits"
                        )));
                    }
                    columns[j * words + r / 64] |= 1 << (r % 64);
                    column_counts[j] += 1;
                    pop += 1;
                }
            }
            popcounts.push(pop as u16);
        }
        let chunk_min = chunk_minima(&popcounts);
        Ok(BitmapLists {
            bits,
            n,
            columns,
            column_counts,
            popcounts,
            chunk_min,
        })
    }

    /// The view searches run on.
    pub fn view(&self) -> BitmapView<'_> {
        BitmapView {
            bits: self.bits,
            n: self.n,
            words: column_words(self.n),
            columns: &self.columns,
            column_counts: &self.column_counts,
            popcounts: &self.popcounts,
            chunk_min: &self.chunk_min,
        }
    }
}

impl BitmapLists {
    /// Total set bits over all codes.
    pub fn set_bits(&self) -> u64 {
        self.column_counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// The payload bytes of `bitmaps.bin` (sub-header and sections, see FORMAT.md), in pieces.
    pub(crate) fn write_payload(&self, mut out: impl FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        let l = layout(self.n, self.bits)
            .ok_or_else(|| Error::InvalidArgument("bitmap file size overflows".to_string()))?;
        let mut sub = [0u8; SUB_HEADER_LEN];
        sub[..8].copy_from_slice(&self.set_bits().to_le_bytes());
        out(&sub)?;
        let zeros = [0u8; 64];
        let mut at = SUB_HEADER_LEN;
        // Little-endian host (enforced in lib.rs): memory order is the on-disk order.
        let sections: [(&[u8], &std::ops::Range<usize>); 4] = [
            (bytemuck::cast_slice(&self.column_counts), &l.column_counts),
            (bytemuck::cast_slice(&self.popcounts), &l.popcounts),
            (bytemuck::cast_slice(&self.chunk_min), &l.chunk_min),
            (bytemuck::cast_slice(&self.columns), &l.columns),
        ];
        for (bytes, range) in sections {
            out(&zeros[..range.start - at])?;
            for chunk in bytes.chunks(1 << 20) {
                out(chunk)?;
            }
            at = range.end;
        }
        out(&zeros[..l.total - at])?;
        Ok(l.total as u64)
    }
}

impl<'a> BitmapView<'a> {
    /// A view of a payload already validated by [`from_payload`](Self::from_payload).
    pub(crate) fn from_validated(
        payload: &'a [u8],
        n: usize,
        bits: usize,
        l: &BitmapsLayout,
    ) -> Self {
        BitmapView {
            bits,
            n,
            words: column_words(n),
            columns: bytemuck::cast_slice(&payload[l.columns.clone()]),
            column_counts: bytemuck::cast_slice(&payload[l.column_counts.clone()]),
            popcounts: bytemuck::cast_slice(&payload[l.popcounts.clone()]),
            chunk_min: bytemuck::cast_slice(&payload[l.chunk_min.clone()]),
        }
    }

    /// Parses and validates a bitmap payload for `n` codes of `bits` bits: sizes, the total of
    /// set bits against the column counts and the popcounts, popcounts `<= bits`, and each
    /// chunk's smallest popcount (which the search's bound relies on). O(n + bits); the columns
    /// themselves are covered by the checksum (a search never indexes memory with them). `path`
    /// is for messages.
    pub(crate) fn from_payload(
        payload: &'a [u8],
        n: u64,
        bits: u32,
        path: &std::path::Path,
    ) -> Result<(Self, BitmapsLayout)> {
        let bad = |d: String| Error::corrupt(path, d);
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= u32::MAX as usize)
            .ok_or_else(|| bad("too many rows".into()))?;
        let bits = bits as usize;
        let total = crate::format::read_count_sub_header(
            payload,
            path,
            "set bits",
            "bitmap sub-header: non-zero reserved bytes (written by a newer bsa-index?)",
        )? as u64;
        let l = layout(n, bits).ok_or_else(|| bad(format!("{n} rows overflow the layout")))?;
        if l.total != payload.len() {
            return Err(bad(format!(
                "payload is {} bytes but {n} rows of {bits} bits need {}",
                payload.len(),
                l.total
            )));
        }
        let column_counts: &[u32] = crate::format::section(payload, l.column_counts.clone(), path)?;
        let popcounts: &[u16] = crate::format::section(payload, l.popcounts.clone(), path)?;
        let chunk_min: &[u16] = crate::format::section(payload, l.chunk_min.clone(), path)?;
        crate::format::section::<u64>(payload, l.columns.clone(), path)?;
        let by_columns: u64 = column_counts.iter().map(|&c| u64::from(c)).sum();
        let by_rows: u64 = popcounts.iter().map(|&p| u64::from(p)).sum();
        if by_columns != total || by_rows != total {
            return Err(bad(format!(
                "holds {total} set bits but its columns count {by_columns} and its rows {by_rows}"
            )));
        }
        if let Some(r) = popcounts.iter().position(|&p| p as usize > bits) {
            return Err(bad(format!("row {r} has more than {bits} bits set")));
        }
        if chunk_minima(popcounts) != chunk_min {
            return Err(bad(
                "chunk popcount minima do not match the popcounts".into()
            ));
        }
        let view = Self::from_validated(payload, n, bits, &l);
        Ok((view, l))
    }
}

/// The smallest popcount of each chunk of `CHUNK_ROWS` (512) rows.
fn chunk_minima(popcounts: &[u16]) -> Vec<u16> {
    popcounts
        .chunks(CHUNK_ROWS)
        .map(|c| c.iter().copied().min().unwrap_or(0))
        .collect()
}

/// Bytes of the sub-header at the start of the bitmap payload (the total of set bits).
pub(crate) const SUB_HEADER_LEN: usize = crate::format::COUNT_SUB_HEADER_LEN;

/// Byte ranges of the sections of a bitmap payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BitmapsLayout {
    pub(crate) column_counts: std::ops::Range<usize>,
    pub(crate) popcounts: std::ops::Range<usize>,
    pub(crate) chunk_min: std::ops::Range<usize>,
    pub(crate) columns: std::ops::Range<usize>,
    pub(crate) total: usize,
}

/// Section layout for `n` codes of `bits` bits (`None` on overflow); see FORMAT.md. Every
/// section starts on a 64-byte boundary.
pub(crate) fn layout(n: usize, bits: usize) -> Option<BitmapsLayout> {
    let align = |x: usize| x.checked_add(63).map(|v| v & !63);
    let section = |start: usize, bytes: Option<usize>| -> Option<std::ops::Range<usize>> {
        Some(start..start.checked_add(bytes?)?)
    };
    let column_counts = section(SUB_HEADER_LEN, bits.checked_mul(4))?;
    let popcounts = section(align(column_counts.end)?, n.checked_mul(2))?;
    let chunk_min = section(align(popcounts.end)?, n.div_ceil(CHUNK_ROWS).checked_mul(2))?;
    let columns = section(
        align(chunk_min.end)?,
        bits.checked_mul(column_words(n))?.checked_mul(8),
    )?;
    let total = align(columns.end)?;
    Some(BitmapsLayout {
        column_counts,
        popcounts,
        chunk_min,
        columns,
        total,
    })
}

/// Whether bitmap lists should be stored beside the posting lists: a query drawn like the base
/// codes would read at most twice as many bitmap words (`mean popcount x n / 64`) as postings
/// (`sum_j count_j^2 / n`, see [`crate::postings::pays_off`]). The search picks per query, and
/// queries vary (frequent bits make long lists), so near that point a good share of them
/// already read fewer bitmap words: on 1M real-like codes at N = 4096, K = 32 (500 k words
/// against 469 k postings) 115 of 300 queries chose the bitmaps and the search ran 13-15x faster
/// than a flat scan, against 8-11x with the lists alone (index/RESULTS-inverted.md). Bitmaps
/// cost as many bytes as the codes.
///
/// ```
/// use bsa_index::bitmaps::worth_storing;
/// // 1M codes with 16 bits set: 250 k bitmap words per query.
/// assert!(worth_storing(1_000_000, 16_000_000, 411_000.0));
/// assert!(worth_storing(1_000_000, 16_000_000, 160_000.0));
/// assert!(!worth_storing(1_000_000, 16_000_000, 100_000.0));
/// ```
pub fn worth_storing(n: usize, set_bits: u64, expected_postings: f64) -> bool {
    let mean_popcount = set_bits as f64 / n.max(1) as f64;
    n > 0 && mean_popcount * (column_words(n) as f64) <= 2.0 * expected_postings
}

impl<'a> BitmapView<'a> {
    /// Number of rows (codes).
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bits per code (columns).
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// How many codes have bit `j` set.
    pub fn column_count(&self, j: usize) -> u32 {
        self.column_counts[j]
    }

    /// Words of the bitmaps a query with `m` set bits reads at most.
    ///
    /// Columns are padded to whole chunks of 512 rows (8 words), so the cost of a query grows
    /// with its set bits, not with how often they fire:
    ///
    /// ```
    /// use bsa_index::bitmaps::BitmapLists;
    /// let codes = vec![0u64; 1000]; // 1000 rows: two chunks, 16 words per column
    /// let lists = BitmapLists::build(&codes, 64)?;
    /// assert_eq!(lists.view().words_per_query(3), 3 * 16);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn words_per_query(&self, m: usize) -> u64 {
        (m as u64) * (self.words as u64)
    }

    /// Exact Hamming top-k of each query (`w = ceil(bits / 64)` words each) as sorted keys
    /// `distance << 32 | row` ([`crate::topk::key`]), equal to the flat scan's. Batches of
    /// 32 (`BITMAP_QUERY_BATCH`) queries run in parallel on the current rayon pool; a batch walks the rows
    /// in ranges of 32 chunks (`RANGE_CHUNKS`), every query of the batch in turn, so a column that
    /// several queries share is read from memory once per range and from the cache after.
    /// Query bits at or beyond `bits` must be clear.
    /// `family` picks the instruction set of the counting loop (the fastest the CPU has if it
    /// lacks `family`); results are the same with every family.
    ///
    /// The keys are the flat scan's, whatever the family; here checked against a brute-force
    /// reference over 2000 rows (four chunks):
    ///
    /// ```
    /// use bsa_index::bitmaps::BitmapLists;
    /// use bsa_index::hamming::hamming;
    /// use bsa_index::topk::key;
    /// use bsa_index::KernelFamily;
    /// # fn main() -> bsa_index::Result<()> {
    /// let mut x = 0x2545_f491_4f6c_dd1du64; // xorshift: sparse 128-bit codes
    /// let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
    /// let codes: Vec<u64> = (0..2000 * 2).map(|_| next() & next() & next()).collect();
    /// let queries: Vec<u64> = (0..3 * 2).map(|_| next() & next()).collect();
    /// let view_owner = BitmapLists::build(&codes, 128)?;
    /// let view = view_owner.view();
    /// let reference = |q: &[u64], k: usize, max: u32| {
    ///     let mut all: Vec<u64> = codes.chunks_exact(2).enumerate()
    ///         .map(|(r, c)| key(hamming(q, c), r as u32))
    ///         .filter(|&key| key >> 32 <= u64::from(max)).collect();
    ///     all.sort();
    ///     all.truncate(k);
    ///     all
    /// };
    /// for family in KernelFamily::supported() {
    ///     let keys = view.hamming_keys(&queries, 2, 10, None, family);
    ///     for (qi, q) in queries.chunks_exact(2).enumerate() {
    ///         assert_eq!(keys[qi], reference(q, 10, u32::MAX));
    ///     }
    ///     // A distance bound keeps only the keys within it.
    ///     let near = view.hamming_keys(&queries[..2], 2, 10, Some(20), family);
    ///     assert_eq!(near[0], reference(&queries[..2], 10, 20));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn hamming_keys(
        &self,
        queries: &[u64],
        w: usize,
        k: usize,
        max_distance: Option<u32>,
        family: KernelFamily,
    ) -> Vec<Vec<u64>> {
        let family = if family.is_supported() {
            family
        } else {
            KernelFamily::best()
        };
        let k = k.min(self.n);
        let batches: Vec<Vec<Vec<u64>>> = queries
            .par_chunks(w * BITMAP_QUERY_BATCH)
            .with_max_len(1)
            .map(|batch| {
                let mut states: Vec<QueryState<'_>> = batch
                    .chunks_exact(w)
                    .map(|q| QueryState::new(self, q, k, max_distance))
                    .collect();
                if k > 0 {
                    let chunks = self.chunk_min.len();
                    for c0 in (0..chunks).step_by(RANGE_CHUNKS) {
                        let c1 = (c0 + RANGE_CHUNKS).min(chunks);
                        for st in &mut states {
                            st.count_chunks(self, c0..c1, family);
                        }
                    }
                }
                states
                    .into_iter()
                    .map(|st| st.top.into_sorted_keys())
                    .collect()
            })
            .collect();
        batches.into_iter().flatten().collect()
    }
}

/// One query's columns and its collector, carried from range to range.
struct QueryState<'a> {
    cols: Vec<&'a [u64]>,
    top: TopK,
}

impl<'a> QueryState<'a> {
    fn new(v: &BitmapView<'a>, q: &[u64], k: usize, max_distance: Option<u32>) -> Self {
        let mut qbits: Vec<usize> = Vec::new();
        crate::bits::for_each_set_bit(q, v.bits, |j| qbits.push(j));
        debug_assert!(qbits.len() < 1 << MAX_PLANES);
        QueryState {
            cols: qbits
                .iter()
                .map(|&j| &v.columns[j * v.words..(j + 1) * v.words])
                .collect(),
            top: TopK::new(k, max_distance),
        }
    }

    /// Counts the chunks `range` (in ascending order) and offers the rows that can enter, with
    /// the counting loop compiled for `family` (which the CPU has: checked by the caller).
    fn count_chunks(
        &mut self,
        v: &BitmapView<'_>,
        range: std::ops::Range<usize>,
        family: KernelFamily,
    ) {
        // The same loop compiled three times, on the lanes of each instruction set: two 256-bit
        // registers (AVX2), one 512-bit register with ternary logic (AVX-512), or words.
        match family {
            // SAFETY: `hamming_keys` passes only families this CPU supports.
            #[cfg(target_arch = "x86_64")]
            KernelFamily::Avx512 => unsafe { self.count_chunks_avx512(v, range) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            KernelFamily::Avx2 => unsafe { self.count_chunks_avx2(v, range) },
            // SAFETY: the portable lanes need no CPU feature.
            _ => unsafe { self.count_chunks_any::<[u64; CHUNK_WORDS]>(v, range) },
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn count_chunks_avx512(&mut self, v: &BitmapView<'_>, range: std::ops::Range<usize>) {
        // SAFETY: AVX-512F (this function's target features).
        unsafe { self.count_chunks_any::<x86::Zmm>(v, range) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn count_chunks_avx2(&mut self, v: &BitmapView<'_>, range: std::ops::Range<usize>) {
        // SAFETY: AVX2 (this function's target feature).
        unsafe { self.count_chunks_any::<x86::Ymm2>(v, range) }
    }

    /// The counting loop on lanes `T` (inlined into each compiled copy).
    ///
    /// # Safety
    /// The CPU has `T`'s instructions.
    #[inline(always)]
    unsafe fn count_chunks_any<T: Lanes>(
        &mut self,
        v: &BitmapView<'_>,
        range: std::ops::Range<usize>,
    ) {
        // The counters live in registers only if their number is a constant.
        // SAFETY (each call): the caller's contract.
        unsafe {
            match planes_for(self.cols.len()) {
                0..=5 => self.count_chunks_p::<T, 5>(v, range),
                6 => self.count_chunks_p::<T, 6>(v, range),
                7 => self.count_chunks_p::<T, 7>(v, range),
                8 => self.count_chunks_p::<T, 8>(v, range),
                _ => self.count_chunks_p::<T, MAX_PLANES>(v, range),
            }
        }
    }

    /// [`count_chunks`](Self::count_chunks) with `P >= 5` counter planes (counts below `2^P`).
    ///
    /// # Safety
    /// The CPU has `T`'s instructions.
    #[inline(always)]
    unsafe fn count_chunks_p<T: Lanes, const P: usize>(
        &mut self,
        v: &BitmapView<'_>,
        range: std::ops::Range<usize>,
    ) {
        let m = self.cols.len();
        debug_assert!(m < 1 << P && P >= 5);
        for c in range {
            // A row enters only if m + |b| - 2 count < t, i.e. 2 count > m + |b| - t.
            let t = i64::from(self.top.threshold());
            let need = m as i64 + i64::from(v.chunk_min[c]) - t;
            let cmin = if need < 0 { 0 } else { (need / 2 + 1) as usize };
            if cmin > m {
                continue;
            }
            let w0 = c * CHUNK_WORDS;
            // SAFETY (here and in the counting below): the caller's contract.
            let mut planes = [unsafe { T::zero() }; P];
            let cols = ChunkColumns {
                cols: &self.cols,
                w0,
                lanes: std::marker::PhantomData,
            };
            let mut mask = [0u64; CHUNK_WORDS];
            unsafe {
                add_columns(&mut planes, &cols);
                at_least(&planes, cmin as u64).store(&mut mask);
            }
            if mask == [0; CHUNK_WORDS] {
                continue;
            }
            let mut counts = [[0u64; CHUNK_WORDS]; P];
            for (plane, words) in planes.iter().zip(counts.iter_mut()) {
                plane.store(words);
            }
            for (l, &bitsl) in mask.iter().enumerate() {
                let mut x = bitsl;
                while x != 0 {
                    let b = x.trailing_zeros() as usize;
                    x &= x - 1;
                    let r = (w0 + l) * 64 + b;
                    if r >= v.n {
                        break;
                    }
                    let mut count = 0u32;
                    for (p, plane) in counts.iter().enumerate() {
                        count |= (((plane[l] >> b) & 1) as u32) << p;
                    }
                    // Saturating: a damaged file read without checksums gives wrong rows, not a panic.
                    let d = (m as u32 + u32::from(v.popcounts[r])).saturating_sub(2 * count);
                    self.top.offer(d, r as u32);
                }
            }
        }
    }
}

/// One chunk of a query's columns as lanes `T` (built only where the CPU has `T`'s
/// instructions), each prefetched a few chunks ahead: the columns are separate streams read one
/// chunk at a time, too many and too slow for the hardware prefetcher.
struct ChunkColumns<'c, 'a, T> {
    cols: &'c [&'a [u64]],
    w0: usize,
    lanes: std::marker::PhantomData<T>,
}

impl<T: Lanes> Columns<T> for ChunkColumns<'_, '_, T> {
    // Columns come from sixteen streams, each chunk's column two AVX2 registers (`x86::Ymm2`):
    // loaded where they are added, the bitmaps of 1M TopK codes counted 1.3-1.45x faster with
    // AVX2 and 1.2x with AVX-512 than loaded sixteen at a time.
    const LOAD_AHEAD: bool = false;

    fn len(&self) -> usize {
        self.cols.len()
    }

    #[inline(always)]
    unsafe fn column(&self, i: usize) -> T {
        debug_assert!(i < self.cols.len() && T::WORDS == CHUNK_WORDS);
        // SAFETY: i < cols.len() (the caller's contract).
        let col = unsafe { *self.cols.get_unchecked(i) };
        let w0 = self.w0;
        if let Some(ahead) = col.get(w0 + PREFETCH_WORDS..w0 + PREFETCH_WORDS + CHUNK_WORDS) {
            crate::bits::prefetch(ahead);
        }
        let chunk = &col[w0..w0 + CHUNK_WORDS];
        // SAFETY: `chunk` holds CHUNK_WORDS = T::WORDS words; the CPU has T's instructions
        // (where this is built).
        unsafe { T::load(chunk.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn codes(n: usize, bits: usize, density: f64, seed: u64) -> Vec<u64> {
        let w = bits.div_ceil(64);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut out = vec![0u64; n * w];
        for r in 0..n {
            for j in 0..bits {
                // Skew: low bits fire more often.
                let p = density * 2.0 * (1.0 - j as f64 / bits as f64);
                if rng.random_bool(p.min(1.0)) {
                    out[r * w + j / 64] |= 1 << (j % 64);
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn bitmap_search_equals_flat(
            n in 0usize..2000,
            bits in prop_oneof![Just(8usize), Just(64), Just(100), Just(256)],
            density in prop_oneof![Just(0.02f64), Just(0.08), Just(0.3)],
            k in prop_oneof![Just(1usize), Just(10), Just(100), Just(3000)],
            max_d in prop_oneof![Just(None), Just(Some(3u32)), Just(Some(12u32))],
            seed in 0u64..1000,
        ) {
            let w = bits.div_ceil(64);
            let base = codes(n, bits, density, seed);
            let queries = codes(12, bits, density, seed + 1);
            let lists = BitmapLists::build(&base, bits).unwrap();
            // The reference: every (distance, row) sorted, cut at max_d and k.
            let want: Vec<Vec<(u32, u32)>> = queries
                .chunks_exact(w)
                .map(|q| {
                    let mut all: Vec<(u32, u32)> = base
                        .chunks_exact(w)
                        .enumerate()
                        .map(|(r, b)| (crate::hamming::hamming(q, b), r as u32))
                        .filter(|&(d, _)| max_d.is_none_or(|m| d <= m))
                        .collect();
                    all.sort_unstable();
                    all.truncate(k);
                    all
                })
                .collect();
            for family in KernelFamily::supported() {
                let got = lists.view().hamming_keys(&queries, w, k, max_d, family);
                let got: Vec<Vec<(u32, u32)>> = got
                    .iter()
                    .map(|g| g.iter().map(|&x| ((x >> 32) as u32, x as u32)).collect())
                    .collect();
                prop_assert_eq!(&got, &want, "{}", family);
            }
        }
    }

    /// [`bitmap_search_equals_flat`] on a few small fixed cases, quick enough for Miri: one row,
    /// a chunk and a partial one, widths of a partial word and of two words, query bit counts
    /// that pick different numbers of counter planes, every family.
    #[test]
    fn small_bitmap_searches_equal_flat() {
        for (n, bits, density) in [(1usize, 8usize, 0.3f64), (600, 100, 0.08), (530, 64, 0.6)] {
            let w = bits.div_ceil(64);
            let base = codes(n, bits, density, 7);
            let queries = codes(3, bits, density, 8);
            let lists = BitmapLists::build(&base, bits).unwrap();
            for max_d in [None, Some(20)] {
                let want: Vec<Vec<u64>> = queries
                    .chunks_exact(w)
                    .map(|q| {
                        let mut t = TopK::new(5, max_d);
                        for (r, b) in base.chunks_exact(w).enumerate() {
                            t.offer(crate::hamming::hamming(q, b), r as u32);
                        }
                        t.into_sorted_keys()
                    })
                    .collect();
                for family in KernelFamily::supported() {
                    let got = lists.view().hamming_keys(&queries, w, 5, max_d, family);
                    assert_eq!(got, want, "{family}: n {n}, bits {bits}, max {max_d:?}");
                }
            }
        }
    }

    #[test]
    fn rejects_bits_beyond_the_code() {
        let err = BitmapLists::build(&[1 << 9], 8).unwrap_err().to_string();
        assert!(err.contains("bit 9"), "{err}");
    }
}
