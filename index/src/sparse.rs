//! Per-code lists of set bits (`sparse.bin`): table scores in `K` lookups per code.
//!
//! A table score ([`Score::Table`], bsa's `--score adc` and `--score soft`) sums one table entry
//! per set bit of each code. From packed codes that means reading all `N / 64` words of every
//! code and extracting its bits; for sparse codes (`K` of `N` bits set, e.g. 32 of 4096) almost
//! all of those words are zero. This layout stores, for each code, its set bits as ascending
//! `u16` bit numbers (so `N <= 65535`), with one `u64` offset per code: the scan reads `2K`
//! bytes and does `K` table lookups per code. The sums are the same `f64` additions in the same
//! ascending bit order as [`crate::score::table_sum`], so the scores are bit-identical.
//!
//! [`IndexBuilder`](crate::IndexBuilder) writes `sparse.bin` when it is no larger than
//! `codes.bin` ([`worth_storing`]), and [`Index::search_flat_scored`](crate::Index::search_flat_scored)
//! uses it automatically for table scores.
//!
//! ```
//! use bsa_index::sparse::SparseCodes;
//! # fn main() -> bsa_index::Result<()> {
//! // Two 70-bit codes: bits {0, 2} and {69}.
//! let codes = [0b101u64, 0, 0, 1 << 5];
//! let sparse = SparseCodes::build(&codes, 70)?;
//! let view = sparse.view();
//! assert_eq!(view.row(0), &[0, 2]);
//! assert_eq!(view.row(1), &[69]);
//! # Ok(()) }
//! ```
//!
//! [`Score::Table`]: crate::Score::Table

use crate::bits::for_each_set_bit;
use crate::error::{Error, Result};
use crate::format::MAX_INVERTED_BITS;
use crate::score::{desc_key, table_score};
use crate::topk::TopK;

/// Bytes of the sub-header at the start of the sparse payload.
pub(crate) const SUB_HEADER_LEN: usize = crate::format::COUNT_SUB_HEADER_LEN;

/// Whether a sparse layout of `n` codes of `bits` bits with `set_bits` set bits in total is worth
/// storing: `bits <= 65535` and the layout (`2` bytes per set bit plus an `8`-byte offset per
/// code) is no larger than the packed codes (`8 x ceil(bits / 64)` bytes per code). Reading it
/// is then never more memory traffic than reading the codes, and a table score costs one lookup
/// per set bit instead of a pass over every word.
///
/// ```
/// use bsa_index::sparse::worth_storing;
/// // 32 of 4096 bits set: 64 bytes of ids + 8 of offset per code, against 512 bytes of code.
/// assert!(worth_storing(1000, 4096, 1000 * 32));
/// // Half of 256 bits set: 256 bytes of ids per code, against 32 bytes of code.
/// assert!(!worth_storing(1000, 256, 1000 * 128));
/// // Bit numbers are stored as u16: wider codes never get the layout.
/// assert!(!worth_storing(1000, 70_000, 1000));
/// ```
pub fn worth_storing(n: usize, bits: usize, set_bits: u64) -> bool {
    let codes_bytes = (n as u128) * 8 * bits.div_ceil(64) as u128;
    let sparse_bytes = 2 * u128::from(set_bits) + 8 * (n as u128 + 1);
    bits > 0 && bits <= MAX_INVERTED_BITS as usize && sparse_bytes <= codes_bytes
}

/// A sparse layout built in memory (what `sparse.bin` stores); see [`SparseView`] to read it.
///
/// ```
/// use bsa_index::pack::get_bit;
/// use bsa_index::sparse::SparseCodes;
/// # fn main() -> bsa_index::Result<()> {
/// let codes = [0b1001u64, 1 << 7, /* row 1 */ 0, 0, /* row 2 */ 1 << 63, 1 << 7]; // 72 bits
/// let sparse = SparseCodes::build(&codes, 72)?;
/// let view = sparse.view();
/// assert_eq!((view.len(), view.bits(), view.set_bits()), (3, 72, 5));
/// for (r, code) in codes.chunks_exact(2).enumerate() {
///     let set: Vec<u16> = (0..72).filter(|&j| get_bit(code, j)).map(|j| j as u16).collect();
///     assert_eq!(view.row(r), &set[..]);
/// }
/// assert_eq!(view.row(1), &[] as &[u16]); // an empty code has no set bits
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseCodes {
    bits: usize,
    offsets: Vec<u64>,
    ids: Vec<u16>,
    fixed: usize,
}

/// A borrowed, validated sparse layout (from memory or from the mapped `sparse.bin`).
///
/// An index opened with `sparse.bin` hands its view out with
/// [`Index::sparse`](crate::Index::sparse):
///
/// ```
/// use bsa_index::{Index, IndexBuilder};
/// # fn main() -> bsa_index::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("idx");
/// let codes = [0b0110u64, 1 << 40 | 1, 0b1000];
/// IndexBuilder::new(64, &codes).sparse(Some(true)).build(&path)?;
/// let index = Index::open(&path)?;
/// let view = index.sparse().unwrap();
/// assert_eq!(view.len(), 3);
/// assert_eq!(view.set_bits(), 5);
/// assert_eq!(view.row(0), &[1, 2]);
/// assert_eq!(view.row(1), &[0, 40]); // ascending
/// assert_eq!(view.row(2), &[3]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SparseView<'a> {
    bits: usize,
    offsets: &'a [u64],
    ids: &'a [u16],
    /// `K` when every code has exactly `K > 0` set bits (code `r`'s bits are then
    /// `ids[r K..(r + 1) K]`, found without reading the offsets: one memory access less per
    /// code in a graph walk), else 0.
    fixed: usize,
}

/// `K` if `offsets` are `0, K, 2K, ...` with `K > 0`, else 0.
fn fixed_stride(offsets: &[u64]) -> usize {
    let k = match offsets.get(1) {
        Some(&k) if k > 0 => k,
        _ => return 0,
    };
    let all = offsets
        .iter()
        .enumerate()
        .all(|(r, &o)| Some(o) == (r as u64).checked_mul(k));
    if all { k as usize } else { 0 }
}

/// Byte ranges of the sections of a sparse payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SparseLayout {
    pub(crate) offsets: std::ops::Range<usize>,
    pub(crate) ids: std::ops::Range<usize>,
    pub(crate) total: usize,
    /// Set bits per code when all codes have the same number (see [`SparseView`]), else 0.
    pub(crate) fixed: usize,
}

/// Section layout for `n` codes and `set_bits` ids (`None` on overflow); see FORMAT.md.
pub(crate) fn layout(n: usize, set_bits: usize) -> Option<SparseLayout> {
    let offsets_start = SUB_HEADER_LEN;
    let offsets_end = offsets_start.checked_add(n.checked_add(1)?.checked_mul(8)?)?;
    let ids_start = offsets_end.checked_add(63)? & !63;
    let ids_end = ids_start.checked_add(set_bits.checked_mul(2)?)?;
    let total = ids_end.checked_add(63)? & !63;
    Some(SparseLayout {
        offsets: offsets_start..offsets_end,
        ids: ids_start..ids_end,
        total,
        fixed: 0,
    })
}

impl SparseCodes {
    /// The set bits of `n` packed codes of `bits` bits (`codes.len() = n * ceil(bits / 64)`,
    /// `bits <= 65535`, unused high bits zero).
    ///
    /// ```
    /// use bsa_index::sparse::SparseCodes;
    /// // Bit 70 of a 70-bit code is padding: set, it means the code size is wrong.
    /// assert!(SparseCodes::build(&[0, 1 << 6], 70).is_err());
    /// assert!(SparseCodes::build(&[0, 1 << 5], 70).is_ok()); // bit 69
    /// assert!(SparseCodes::build(&[0, 0, 0], 70).is_err()); // not whole rows
    /// assert!(SparseCodes::build(&vec![0; 1025], 65_600).is_err()); // ids are u16
    /// ```
    pub fn build(codes: &[u64], bits: usize) -> Result<Self> {
        if bits == 0 || bits > MAX_INVERTED_BITS as usize {
            return Err(Error::InvalidArgument(format!(
                "a sparse layout needs 1..={MAX_INVERTED_BITS} bits per code, got {bits}"
            )));
        }
        let w = bits.div_ceil(64);
        if !codes.len().is_multiple_of(w) {
            return Err(Error::InvalidArgument("codes are not whole rows".into()));
        }
        crate::pack::check_high_bits_zero(codes, bits)?;
        let n = codes.len() / w;
        let mut offsets = Vec::with_capacity(n + 1);
        let mut ids = Vec::new();
        offsets.push(0u64);
        for row in codes.chunks_exact(w) {
            // j < bits <= 65535.
            for_each_set_bit(row, bits, |j| ids.push(j as u16));
            offsets.push(ids.len() as u64);
        }
        let fixed = fixed_stride(&offsets);
        Ok(SparseCodes {
            bits,
            offsets,
            ids,
            fixed,
        })
    }

    /// A view for searching.
    pub fn view(&self) -> SparseView<'_> {
        SparseView {
            bits: self.bits,
            offsets: &self.offsets,
            ids: &self.ids,
            fixed: self.fixed,
        }
    }

    /// The payload bytes of `sparse.bin` (sub-header and sections, see FORMAT.md), in pieces.
    pub(crate) fn write_payload(&self, mut out: impl FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        let n = self.offsets.len() - 1;
        let l = layout(n, self.ids.len())
            .ok_or_else(|| Error::InvalidArgument("sparse file size overflows".to_string()))?;
        let mut sub = [0u8; SUB_HEADER_LEN];
        sub[..8].copy_from_slice(&(self.ids.len() as u64).to_le_bytes());
        out(&sub)?;
        // Little-endian host (enforced in lib.rs): memory order is the on-disk order.
        for chunk in bytemuck::cast_slice::<u64, u8>(&self.offsets).chunks(1 << 20) {
            out(chunk)?;
        }
        let zeros = [0u8; 64];
        out(&zeros[..l.ids.start - l.offsets.end])?;
        for chunk in bytemuck::cast_slice::<u16, u8>(&self.ids).chunks(1 << 20) {
            out(chunk)?;
        }
        out(&zeros[..l.total - l.ids.end])?;
        Ok(l.total as u64)
    }
}

impl<'a> SparseView<'a> {
    /// A view of a payload already validated by [`from_payload`](Self::from_payload).
    pub(crate) fn from_validated(payload: &'a [u8], bits: usize, l: &SparseLayout) -> Self {
        SparseView {
            bits,
            offsets: bytemuck::cast_slice(&payload[l.offsets.clone()]),
            ids: bytemuck::cast_slice(&payload[l.ids.clone()]),
            fixed: l.fixed,
        }
    }

    /// The section layout of this view's payload.
    pub(crate) fn layout(&self) -> SparseLayout {
        // The view was validated, so the layout exists.
        let mut l = layout(self.len(), self.ids.len()).expect("validated layout");
        l.fixed = self.fixed;
        l
    }

    /// Parses and fully validates a sparse payload for `n` codes of `bits` bits: sizes, offsets
    /// ascending from 0 to the number of ids, ids `< bits` and strictly ascending within each
    /// code. O(n + set bits); `path` is for messages.
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
            "set bits",
            "sparse sub-header: non-zero reserved bytes (written by a newer bsa-index?)",
        )?;
        let l = layout(n, total).ok_or_else(|| bad(format!("{total} ids overflow the layout")))?;
        if l.total != payload.len() {
            return Err(bad(format!(
                "payload is {} bytes but {n} rows and {total} ids need {}",
                payload.len(),
                l.total
            )));
        }
        let offsets: &[u64] = crate::format::section(payload, l.offsets.clone(), path)?;
        let ids: &[u16] = crate::format::section(payload, l.ids.clone(), path)?;
        if offsets[0] != 0 || offsets[n] != total as u64 || offsets.windows(2).any(|p| p[0] > p[1])
        {
            return Err(bad(
                "code offsets are not ascending from 0 to the number of ids".into(),
            ));
        }
        for r in 0..n {
            let row = &ids[offsets[r] as usize..offsets[r + 1] as usize];
            if row.iter().any(|&j| j as usize >= bits) || row.windows(2).any(|p| p[0] >= p[1]) {
                return Err(bad(format!(
                    "set bits of code {r} are out of range or out of order"
                )));
            }
        }
        Ok(SparseView {
            bits,
            offsets,
            ids,
            fixed: fixed_stride(offsets),
        })
    }

    /// Number of codes.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether there are no codes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bits per code.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// Total number of set bits.
    pub fn set_bits(&self) -> usize {
        self.ids.len()
    }

    /// The set bits of code `row`, ascending.
    ///
    /// # Panics
    /// If `row >= len()`.
    #[inline]
    pub fn row(&self, row: usize) -> &'a [u16] {
        if self.fixed > 0 {
            return &self.ids[row * self.fixed..(row + 1) * self.fixed];
        }
        &self.ids[self.offsets[row] as usize..self.offsets[row + 1] as usize]
    }

    /// The `f64` sum of `table[j]` over the set bits `j` of code `row`, in ascending bit order:
    /// exactly [`table_sum`](crate::score::table_sum) of the packed code.
    #[inline]
    pub(crate) fn table_sum(&self, row: usize, table: &[f32]) -> f64 {
        add_entries(0.0, self.row(row), table)
    }

    /// Offers the table scores of rows `first..first + count` to `top` (rows ascending), exactly
    /// as the packed scan computes them. `table` has `bits()` entries.
    pub(crate) fn table_scan(
        &self,
        table: &[f32],
        offset: f32,
        norms: Option<&[f32]>,
        first: usize,
        count: usize,
        top: &mut TopK,
    ) {
        let table = &table[..self.bits];
        let offer = |r: usize, sum: f64, top: &mut TopK| {
            let key = desc_key(table_score(offset, sum, norms.map(|v| v[r])));
            if key < top.threshold() {
                // r < n <= u32::MAX (validated by the callers).
                top.push(key, r as u32);
            }
        };
        let end = first + count;
        let mut r = first;
        // Four codes at a time: four independent chains of f64 additions (each code's own sum
        // still adds its bits in ascending order, so the result is unchanged).
        while r + 4 <= end {
            let (b0, b1, b2, b3) = (
                self.row(r),
                self.row(r + 1),
                self.row(r + 2),
                self.row(r + 3),
            );
            let common = b0.len().min(b1.len()).min(b2.len()).min(b3.len());
            // Plain locals (not an array) so the four sums stay in registers.
            let (mut a0, mut a1, mut a2, mut a3) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
            for (((&j0, &j1), &j2), &j3) in b0[..common]
                .iter()
                .zip(&b1[..common])
                .zip(&b2[..common])
                .zip(&b3[..common])
            {
                a0 += f64::from(table[j0 as usize]);
                a1 += f64::from(table[j1 as usize]);
                a2 += f64::from(table[j2 as usize]);
                a3 += f64::from(table[j3 as usize]);
            }
            // By value, not through references, so the sums are never spilled to memory.
            offer(r, add_entries(a0, &b0[common..], table), top);
            offer(r + 1, add_entries(a1, &b1[common..], table), top);
            offer(r + 2, add_entries(a2, &b2[common..], table), top);
            offer(r + 3, add_entries(a3, &b3[common..], table), top);
            r += 4;
        }
        while r < end {
            offer(r, add_entries(0.0, self.row(r), table), top);
            r += 1;
        }
    }
}

/// `sum` plus the table entries of `ids`, added in order.
#[inline(always)]
fn add_entries(mut sum: f64, ids: &[u16], table: &[f32]) -> f64 {
    for &j in ids {
        sum += f64::from(table[j as usize]);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_round_trips_through_payload() {
        // Rows: {0, 2}, {}, {2, 69}, {0}.
        let codes = vec![0b101, 0, 0, 0, 0b100, 1 << 5, 1, 0];
        let sc = SparseCodes::build(&codes, 70).unwrap();
        let v = sc.view();
        assert_eq!((v.len(), v.set_bits()), (4, 5));
        assert_eq!(v.row(2), &[2, 69]);
        assert!(v.row(1).is_empty());
        let mut bytes = Vec::new();
        let len = sc
            .write_payload(|b| {
                bytes.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
        assert_eq!(len as usize, bytes.len());
        assert_eq!(len % 64, 0);
        let words: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let aligned: &[u8] = bytemuck::cast_slice(&words);
        let p = std::path::Path::new("x/sparse.bin");
        let back = SparseView::from_payload(aligned, 4, 70, p).unwrap();
        for r in 0..4 {
            assert_eq!(back.row(r), v.row(r));
        }
        // An id out of range, ids out of order, wrong n, truncation: all refused.
        let l = layout(4, 5).unwrap();
        let mut broken = bytes.clone();
        broken[l.ids.start..l.ids.start + 2].copy_from_slice(&70u16.to_le_bytes());
        let bw: Vec<u64> = broken
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert!(SparseView::from_payload(bytemuck::cast_slice(&bw), 4, 70, p).is_err());
        let mut swapped = bytes.clone();
        // Row 2 is ids 2..4 = [2, 69]; make it [69, 2].
        swapped[l.ids.start + 4..l.ids.start + 6].copy_from_slice(&69u16.to_le_bytes());
        swapped[l.ids.start + 6..l.ids.start + 8].copy_from_slice(&2u16.to_le_bytes());
        let sw: Vec<u64> = swapped
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert!(SparseView::from_payload(bytemuck::cast_slice(&sw), 4, 70, p).is_err());
        assert!(SparseView::from_payload(aligned, 5, 70, p).is_err());
        assert!(SparseView::from_payload(&aligned[..64], 4, 70, p).is_err());
    }

    #[test]
    fn storing_rule() {
        // 1024-bit codes (128 bytes): 16 bits set cost 32 + 8 bytes.
        assert!(worth_storing(1000, 1024, 16_000));
        // 64-bit codes with 4 bits set: 8 + 8 bytes > 8 bytes.
        assert!(!worth_storing(1000, 64, 4000));
        assert!(!worth_storing(10, 70_000, 10));
    }

    #[test]
    fn table_scan_equals_table_sum() {
        let bits = 130;
        let w = 3;
        let mut codes = vec![0u64; 11 * w];
        let mut x = 12345u64;
        for c in codes.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *c = x & (x >> 3) & (x >> 5);
        }
        for row in codes.chunks_exact_mut(w) {
            row[2] &= (1 << 2) - 1;
        }
        let table: Vec<f32> = (0..bits).map(|j| (j as f32 * 0.37).sin()).collect();
        let norms: Vec<f32> = (0..11).map(|r| (r % 3) as f32).collect();
        let sc = SparseCodes::build(&codes, bits).unwrap();
        let mut a = TopK::new(11, None);
        sc.view()
            .table_scan(&table, 0.5, Some(&norms), 0, 11, &mut a);
        let mut b = TopK::new(11, None);
        for (r, row) in codes.chunks_exact(w).enumerate() {
            let s = table_score(0.5, crate::score::table_sum(row, &table), Some(norms[r]));
            b.offer(desc_key(s), r as u32);
        }
        assert_eq!(a.into_sorted_keys(), b.into_sorted_keys());
    }
}
