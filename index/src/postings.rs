//! Posting lists of set bits (`inverted.bin`): for each bit, the rows whose code has it.
//!
//! [`InvertedLists`] builds them in memory ([`IndexBuilder`](crate::IndexBuilder) writes them to
//! `inverted.bin`); [`InvertedView`] reads them, from memory or from the mapped file, after one
//! validating pass. The lists also group rows by popcount, so a search can take the rows that
//! share no bit with a query in distance order without scanning them. The search over them is
//! [`crate::search::inverted`]; [`pays_off`] is the rule for when they are worth building.

use crate::bitmaps::BitmapView;
use crate::bits::{for_each_set_bit, popcount};
use crate::error::{Error, Result};
use crate::format::MAX_INVERTED_BITS;
use crate::score::Score;

/// Estimated cost of visiting one posting, in flat-scan code words (see the module docs).
pub(crate) const POSTING_COST_WORDS: u64 = 10;

/// Bytes of the sub-header at the start of the inverted payload.
pub(crate) const SUB_HEADER_LEN: usize = crate::format::COUNT_SUB_HEADER_LEN;

/// Whether posting lists pay for `codes` (n packed codes of `bits` bits), and the estimate
/// behind the answer: `(build?, expected postings per query, flat words per query)`.
///
/// A query drawn like the base codes visits on average `sum_j count_j^2 / n` postings (bit j is
/// in the query with probability `count_j / n`, and its list has `count_j` entries), or reads
/// `mean popcount x n / 64` words of bitmap lists ([`crate::bitmaps`]); a flat scan reads
/// `n x words_per_code` words. Lists are worth building when the cheaper of the two is at most
/// 1/`POSTING_COST_WORDS` (10) of the words a scan reads (the rule the search applies per query).
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
/// let (build, postings, words) = bsa_index::postings::pays_off(&codes, 1024);
/// assert!(build && postings < 100.0 && words == 16_000);
/// ```
pub fn pays_off(codes: &[u64], bits: usize) -> (bool, f64, u64) {
    let w = bits.div_ceil(64).max(1);
    let n = codes.len() / w;
    let mut count = vec![0u64; bits];
    for row in codes.chunks_exact(w) {
        for_each_set_bit(row, bits, |j| count[j] += 1);
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
///
/// Each bit's list holds exactly the rows whose code has that bit:
///
/// ```
/// use bsa_index::pack::get_bit;
/// use bsa_index::InvertedLists;
/// # fn main() -> bsa_index::Result<()> {
/// let codes = [0b0101u64, 0b0110, 0b0000, 0b1100];
/// let lists = InvertedLists::build(&codes, 4)?;
/// assert_eq!(lists.postings_len(), 6); // one posting per set bit
/// let view = lists.view();
/// assert_eq!((view.len(), view.bits()), (4, 4));
/// for j in 0..4 {
///     let rows: Vec<u32> = (0..4u32).filter(|&r| get_bit(&[codes[r as usize]], j)).collect();
///     assert_eq!(view.list(j), &rows[..]);
/// }
/// assert_eq!(view.list(2), &[0, 1, 3]);
/// # Ok(()) }
/// ```
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
///
/// An index built with [`inverted`](crate::IndexBuilder::inverted) hands its view out with
/// [`Index::inverted`](crate::Index::inverted), and the inverted search reads it:
///
/// ```
/// use bsa_index::search::{FlatParams, InvertedParams};
/// use bsa_index::{Index, IndexBuilder, Score, SearchParams, Searcher};
/// # fn main() -> bsa_index::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("idx");
/// let codes = [0b0101u64, 0b0110, 0b0000, 0b1100];
/// IndexBuilder::new(64, &codes).inverted(true).build(&path)?;
/// let index = Index::open(&path)?;
/// let lists = index.inverted()?.unwrap();
/// assert_eq!((lists.len(), lists.postings_len()), (4, 6));
/// assert_eq!(lists.list(0), &[0]);
/// let (q, sp) = ([0b0100u64], SearchParams::default());
/// let inv = index.inverted_searcher(InvertedParams::default().with_force_inverted(true))?;
/// let flat = index.flat_searcher(FlatParams::default());
/// let (by_lists, _) = inv.search(&q, 4, &Score::Hamming, &sp)?;
/// assert_eq!(by_lists, flat.search(&q, 4, &Score::Hamming, &sp)?.0);
/// assert_eq!(by_lists[0].rows, vec![0, 1, 2, 3]); // distances 1, 1, 1, 1: ties by row
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct InvertedView<'a> {
    /// The same lists as bitmaps, read by Hamming queries for which they are cheaper.
    pub(crate) bitmaps: Option<BitmapView<'a>>,
    pub(crate) bits: usize,
    pub(crate) n: usize,
    list_offsets: &'a [u64],
    pub(crate) postings: &'a [u32],
    pub(crate) popcounts: &'a [u16],
    by_popcount: &'a [u32],
    popcount_offsets: &'a [u32],
}

/// Byte ranges of the sections of an inverted payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PostingsLayout {
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
pub(crate) fn layout(n: usize, bits: usize, postings: usize) -> Option<PostingsLayout> {
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
    Some(PostingsLayout {
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
    ///
    /// ```
    /// use bsa_index::InvertedLists;
    /// assert!(InvertedLists::build(&[1, 2, 3], 128).is_err()); // not whole rows
    /// assert!(InvertedLists::build(&[0], 0).is_err());
    /// // Popcounts are stored as u16: at most 65535 bits per code.
    /// assert!(InvertedLists::build(&vec![0; 1025], 65_600).is_err());
    /// let lists = InvertedLists::build(&[u64::MAX, 0, 0, 1 << 3], 128)?; // two 128-bit codes
    /// assert_eq!(lists.postings_len(), 65);
    /// assert_eq!(lists.view().list(67), &[1]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
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
            for_each_set_bit(row, bits, |j| counts[j + 1] += 1);
            // popcount <= bits <= u16::MAX.
            popcounts.push(popcount(row) as u16);
        }
        for j in 0..bits {
            counts[j + 1] += counts[j];
        }
        let list_offsets = counts;
        let total = list_offsets[bits] as usize;
        let mut postings = vec![0u32; total];
        let mut next: Vec<u64> = list_offsets[..bits].to_vec();
        for (r, row) in codes.chunks_exact(w).enumerate() {
            for_each_set_bit(row, bits, |j| {
                postings[next[j] as usize] = r as u32;
                next[j] += 1;
            });
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
    pub(crate) fn from_validated(
        payload: &'a [u8],
        n: usize,
        bits: usize,
        l: &PostingsLayout,
    ) -> Self {
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
    pub(crate) fn layout(&self) -> PostingsLayout {
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
    /// inverted Hamming search reads the bitmaps for each query whose bitmap words cost less
    /// than its postings ([`crate::bitmaps::WORDS_PER_POSTING`]). Results are the same either
    /// way.
    ///
    /// ```
    /// use bsa_index::{bitmaps::BitmapLists, search::inverted, InvertedLists, Score, SearchParams};
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
    ///
    /// ```
    /// let codes = [0b0101u64, 0b0110, 0b0000, 0b1111];
    /// let lists = bsa_index::InvertedLists::build(&codes, 4)?;
    /// assert_eq!(lists.view().popcounts(), &[2, 2, 0, 4]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn popcounts(&self) -> &'a [u16] {
        self.popcounts
    }

    /// Rows with exactly `p` bits set, ascending (empty for `p > bits()`).
    ///
    /// A query that shares no bit with a code is `p` from it, so these groups give such codes in
    /// distance order without reading them:
    ///
    /// ```
    /// let codes = [0b0101u64, 0b0110, 0b0000, 0b1111, 0b1000];
    /// let lists = bsa_index::InvertedLists::build(&codes, 4)?;
    /// let view = lists.view();
    /// assert_eq!(view.rows_with_popcount(0), &[2]);
    /// assert_eq!(view.rows_with_popcount(1), &[4]);
    /// assert_eq!(view.rows_with_popcount(2), &[0, 1]);
    /// assert_eq!(view.rows_with_popcount(3), &[] as &[u32]);
    /// assert_eq!(view.rows_with_popcount(9), &[] as &[u32]); // more than bits()
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn rows_with_popcount(&self, p: usize) -> &'a [u32] {
        if p > self.bits {
            return &[];
        }
        &self.by_popcount[self.popcount_offsets[p] as usize..self.popcount_offsets[p + 1] as usize]
    }

    /// Entries an inverted search of `query` visits (for the fallback decision and statistics).
    ///
    /// For overlap scores, the lengths of the lists of the query's bits; a table score reads
    /// every list.
    ///
    /// ```
    /// use bsa_index::{InvertedLists, Score};
    /// let codes = [0b0101u64, 0b0110, 0b0000, 0b1100];
    /// let lists = InvertedLists::build(&codes, 4)?;
    /// let view = lists.view();
    /// // Bit 0 is in one code, bit 2 in three.
    /// assert_eq!(view.touched(&[0b0101], &Score::Hamming), 1 + 3);
    /// assert_eq!(view.touched(&[0b0000], &Score::Cosine), 0);
    /// let table = Score::Table { tables: &[1.0; 4], offsets: &[0.0], normalise: false };
    /// assert_eq!(view.touched(&[0b0001], &table), 6);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn touched(&self, query: &[u64], score: &Score<'_>) -> u64 {
        if matches!(score, Score::Table { .. }) {
            return self.postings.len() as u64;
        }
        let mut t = 0;
        for_each_set_bit(query, self.bits, |j| {
            t += self.list_offsets[j + 1] - self.list_offsets[j];
        });
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
