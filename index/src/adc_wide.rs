//! The quantised scan of sparse codes for up to 64 queries at once (AVX-512 and AVX2): the batch
//! kernel.
//!
//! The narrow kernel ([`crate::adc::scan`]) gathers one `u64` per code and position, the `u8`
//! entries of 8 queries: four gathered elements per code and query for 32 set bits, and on AMD
//! Zen 5 the gathers were its whole cost. Here the 64 queries' entries of one table index are one 64-byte row (one cache
//! line), so a code costs one plain vector load per set bit for all 64 queries: an eighth of
//! the loads per code and query, and no gathers. Per code, the even and odd queries' bytes are
//! summed in the 16-bit lanes of two registers (sums stay below 2^16, see
//! [`QuantisedTable::new`]), then the bound is evaluated for the 64 queries with the same `f64`
//! operations as every other kernel (`lane_candidate` in `adc.rs`), so the same codes are
//! re-scored exactly and the results are those of the plain scan.
//!
//! The rows of a group take `64 * (bits + 1)` bytes (262 KiB at 4096 bits: the L2 cache), rebuilt
//! for every search, so the kernel pays only for batches; [`WIDE_MIN_QUERIES`] says from how many
//! queries the flat search uses it.
//!
//! ```
//! use bsa_index::adc::{AdcCodes, QuantisedTable};
//! use bsa_index::adc_wide as wide;
//! use bsa_index::score::{desc_key, table_score, table_sum};
//! use bsa_index::sparse::SparseCodes;
//! use bsa_index::topk::TopK;
//! use bsa_index::KernelFamily;
//!
//! # fn main() -> bsa_index::Result<()> {
//! // Three 8-bit codes: bits {0, 1}, {2}, {0, 3}.
//! let codes = [0b0011u64, 0b0100, 0b1001];
//! let layout = AdcCodes::from_sparse(&SparseCodes::build(&codes, 8)?.view())?;
//! let table = [0.5f32, 0.25, 1.0, -2.0, 0.0, 0.0, 0.0, 0.0];
//! let family = KernelFamily::best();
//! if wide::supported(family, &layout) {
//!     let group = wide::WideGroup::new(vec![QuantisedTable::new(&layout, &table, 0.0, false)?])?;
//!     let mut tops = [TopK::new(2, None)];
//!     let exact = |_q: usize, r: usize| {
//!         desc_key(table_score(0.0, table_sum(&codes[r..r + 1], &table), None))
//!     };
//!     wide::scan(family, &layout, &group, 0..3, &mut tops, exact)?;
//!     let [top] = tops;
//!     let rows: Vec<u32> = top.into_sorted_keys().iter().map(|&k| k as u32).collect();
//!     assert_eq!(rows, vec![1, 0]); // row 1 (1.0), then row 0 (0.75)
//! }
//! # Ok(()) }
//! ```

use std::ops::Range;

use crate::adc::{AdcCodes, Kind, QuantisedTable, ScanStats, check_group_tables};
use crate::error::{Error, Result};
use crate::kernel::KernelFamily;
use crate::topk::TopK;

/// Queries of a [`WideGroup`].
pub const WIDE: usize = 64;

/// Fewest queries of a search for which the flat search scans with wide groups (a group's rows
/// are built per search, and a part-filled group loads whole rows all the same).
pub const WIDE_MIN_QUERIES: usize = 32;

/// The wide kernel's name in search statistics (`table_kernel`), e.g. `"avx512-wide-sparse"`.
///
/// ```
/// use bsa_index::adc_wide::kernel_name;
/// use bsa_index::KernelFamily;
/// assert_eq!(kernel_name(KernelFamily::Avx512), "avx512-wide-sparse");
/// assert_eq!(kernel_name(KernelFamily::Avx2), "avx2-wide-sparse");
/// ```
pub fn kernel_name(family: KernelFamily) -> &'static str {
    match family {
        KernelFamily::Avx512 => "avx512-wide-sparse",
        _ => "avx2-wide-sparse",
    }
}

/// One table index's entries for the 64 queries of a group (query `g` in byte `g`).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Row([u8; WIDE]);

/// Up to [`WIDE`] quantised tables of one sparse layout, stored by table index.
///
/// ```
/// use bsa_index::adc::{AdcCodes, QuantisedTable};
/// use bsa_index::adc_wide::{WideGroup, WIDE};
/// use bsa_index::sparse::SparseCodes;
/// # fn main() -> bsa_index::Result<()> {
/// let codes = [0b0011u64, 0b0100, 0b1001];
/// let layout = AdcCodes::from_sparse(&SparseCodes::build(&codes, 8)?.view())?;
/// let table = |g: usize| -> Vec<f32> { (0..8).map(|j| (g * 8 + j) as f32 / 100.0).collect() };
/// let tables: Vec<QuantisedTable> = (0..WIDE)
///     .map(|g| QuantisedTable::new(&layout, &table(g), 0.0, false))
///     .collect::<bsa_index::Result<_>>()?;
/// assert_eq!(WideGroup::new(tables)?.len(), 64);
/// # Ok(()) }
/// ```
pub struct WideGroup {
    rows: Vec<Row>,
    tables: Vec<QuantisedTable>,
}

impl WideGroup {
    /// Groups 1 to [`WIDE`] tables quantised for the same sparse layout, with the same
    /// normalisation.
    ///
    /// ```
    /// use bsa_index::adc::{AdcCodes, QuantisedTable};
    /// use bsa_index::adc_wide::{WideGroup, WIDE};
    /// use bsa_index::sparse::SparseCodes;
    /// # fn main() -> bsa_index::Result<()> {
    /// let codes = [0b0011u64, 0b0100];
    /// let sparse = AdcCodes::from_sparse(&SparseCodes::build(&codes, 4)?.view())?;
    /// let t = QuantisedTable::new(&sparse, &[1.0, 2.0, 3.0, 4.0], 0.0, false)?;
    /// assert!(WideGroup::new(vec![t.clone(); WIDE]).is_ok());
    /// assert!(WideGroup::new(vec![t; WIDE + 1]).is_err());
    /// // Dense layouts have no wide kernel.
    /// let dense = AdcCodes::from_packed(&codes, 4)?;
    /// let t = QuantisedTable::new(&dense, &[1.0, 2.0, 3.0, 4.0], 0.0, false)?;
    /// assert!(WideGroup::new(vec![t]).is_err());
    /// # Ok(()) }
    /// ```
    pub fn new(tables: Vec<QuantisedTable>) -> Result<Self> {
        let first = check_group_tables(&tables, WIDE, "a wide query group")?;
        if first.dense {
            return Err(Error::InvalidArgument(
                "a wide query group holds tables of sparse codes only".into(),
            ));
        }
        let mut rows = vec![Row([0; WIDE]); first.entries.len()];
        let mut tables = tables;
        for (g, t) in tables.iter_mut().enumerate() {
            for (row, &q) in rows.iter_mut().zip(&t.entries) {
                row.0[g] = q;
            }
            // Only the rows are read from now on.
            t.entries = Vec::new();
        }
        Ok(WideGroup { rows, tables })
    }

    /// Number of queries in the group.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// Whether the group is empty (never: groups hold at least one query).
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

/// Whether the flat search scans `nq` queries of `codes` with the wide kernel of `family`.
///
/// ```
/// use bsa_index::adc::AdcCodes;
/// use bsa_index::adc_wide::{supported, used_for, WIDE_MIN_QUERIES};
/// use bsa_index::sparse::SparseCodes;
/// use bsa_index::KernelFamily;
/// # fn main() -> bsa_index::Result<()> {
/// let codes = [0b0011u64, 0b0100];
/// let layout = AdcCodes::from_sparse(&SparseCodes::build(&codes, 8)?.view())?;
/// let family = KernelFamily::current();
/// assert!(!used_for(family, &layout, WIDE_MIN_QUERIES - 1)); // too few queries
/// assert_eq!(used_for(family, &layout, WIDE_MIN_QUERIES), supported(family, &layout));
/// # Ok(()) }
/// ```
pub fn used_for(family: KernelFamily, codes: &AdcCodes, nq: usize) -> bool {
    nq >= WIDE_MIN_QUERIES && supported(family, codes)
}

/// Whether `family` has a wide kernel for `codes` (AVX-512 and AVX2, sparse layouts).
///
/// ```
/// use bsa_index::adc::AdcCodes;
/// use bsa_index::adc_wide::supported;
/// use bsa_index::sparse::SparseCodes;
/// use bsa_index::KernelFamily;
/// # fn main() -> bsa_index::Result<()> {
/// let codes = [0b0011u64, 0b0100];
/// let sparse = AdcCodes::from_sparse(&SparseCodes::build(&codes, 8)?.view())?;
/// let dense = AdcCodes::from_packed(&codes, 8)?;
/// assert!(!supported(KernelFamily::Portable, &sparse));
/// for family in KernelFamily::ALL {
///     assert!(!supported(family, &dense));
///     assert!(!supported(family, &sparse) || family.is_supported());
/// }
/// # Ok(()) }
/// ```
pub fn supported(family: KernelFamily, codes: &AdcCodes) -> bool {
    cfg!(target_arch = "x86_64")
        && family != KernelFamily::Portable
        && family.is_supported()
        && codes.kind == Kind::Sparse
}

/// [`crate::adc::scan`] for a wide group: offers to `tops[g]` every code of `rows` whose score for
/// query `g` may enter it, scored by `exact(g, row)`, rows ascending; the same top k as the
/// plain scan.
///
/// # Errors
/// If the family has no wide kernel for this layout ([`supported`]), or the group, rows and
/// top-k lists do not fit the layout.
///
/// 64 queries over 500 sparse codes give the plain scan's top k, on each family this CPU has a
/// wide kernel for; the portable family has none and is refused:
///
/// ```
/// use bsa_index::adc::{self, AdcCodes, QuantisedTable, QueryGroup, GROUP};
/// use bsa_index::adc_wide::{self as wide, WideGroup, WIDE};
/// use bsa_index::score::{desc_key, table_score, table_sum};
/// use bsa_index::sparse::SparseCodes;
/// use bsa_index::topk::TopK;
/// use bsa_index::KernelFamily;
/// # fn main() -> bsa_index::Result<()> {
/// let mut x = 0x853c_49e6_748f_ea9bu64; // xorshift
/// let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
/// let (n, bits, w) = (500, 128, 2);
/// let codes: Vec<u64> = (0..n * w).map(|_| next() & next() & next()).collect();
/// let tables: Vec<Vec<f32>> = (0..WIDE)
///     .map(|_| (0..bits).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect())
///     .collect();
/// let exact = |g: usize, r: usize| {
///     desc_key(table_score(0.0, table_sum(&codes[r * w..(r + 1) * w], &tables[g]), None))
/// };
/// let layout = AdcCodes::from_sparse(&SparseCodes::build(&codes, bits)?.view())?;
/// let quantise = |g: usize| QuantisedTable::new(&layout, &tables[g], 0.0, false);
/// let group = WideGroup::new((0..WIDE).map(quantise).collect::<bsa_index::Result<_>>()?)?;
/// // The reference: the plain scan, eight queries at a time.
/// let mut expected = Vec::new();
/// for first in (0..WIDE).step_by(GROUP) {
///     let narrow = QueryGroup::new((first..first + GROUP).map(quantise).collect::<bsa_index::Result<_>>()?)?;
///     let mut tops: Vec<TopK> = (0..GROUP).map(|_| TopK::new(5, None)).collect();
///     let family = KernelFamily::current();
///     adc::scan(family, &layout, &narrow, 0..n, &mut tops, |g, r| exact(first + g, r))?;
///     expected.extend(tops.into_iter().map(|t| t.into_sorted_keys()));
/// }
/// for family in KernelFamily::supported() {
///     let mut tops: Vec<TopK> = (0..WIDE).map(|_| TopK::new(5, None)).collect();
///     let result = wide::scan(family, &layout, &group, 0..n, &mut tops, exact);
///     if !wide::supported(family, &layout) {
///         assert!(result.is_err());
///         continue;
///     }
///     result?;
///     let got: Vec<Vec<u64>> = tops.into_iter().map(|t| t.into_sorted_keys()).collect();
///     assert_eq!(got, expected);
/// }
/// # Ok(()) }
/// ```
pub fn scan(
    family: KernelFamily,
    codes: &AdcCodes,
    group: &WideGroup,
    rows: Range<usize>,
    tops: &mut [TopK],
    mut exact: impl FnMut(usize, usize) -> u32,
) -> Result<ScanStats> {
    family.check()?;
    if !supported(family, codes)
        || group.rows.len() != codes.table_len()
        || group.tables[0].shape != codes.table_shape()
        || (group.tables[0].normalise && !codes.has_norms())
        || rows.start > rows.end
        || rows.end > codes.n
        || tops.len() != group.len()
    {
        return Err(Error::InvalidArgument(format!(
            "a wide scan needs AVX-512 or AVX2, a sparse layout, tables made for it, rows in 0..{} \
             and one top-k list per query",
            codes.n
        )));
    }
    Ok(scan_checked(family, codes, group, rows, tops, &mut exact))
}

/// [`scan`] on checked arguments (`supported(family, codes)` held).
pub(crate) fn scan_checked(
    family: KernelFamily,
    codes: &AdcCodes,
    group: &WideGroup,
    rows: Range<usize>,
    tops: &mut [TopK],
    exact: &mut impl FnMut(usize, usize) -> u32,
) -> ScanStats {
    #[cfg(target_arch = "x86_64")]
    {
        let scanned = (rows.len() * tops.len()) as u64;
        // SAFETY: the callers checked the family against the CPU (`KernelFamily::Avx512` has
        // AVX-512 F and BW), the layout (sparse, its ids below the table length) and the group
        // (tables made for it).
        let rescored = unsafe {
            match family {
                KernelFamily::Avx512 => x86::scan_avx512(codes, group, rows, tops, exact),
                _ => x86::scan_avx2(codes, group, rows, tops, exact),
            }
        };
        ScanStats { scanned, rescored }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (family, codes, group, rows, tops, exact);
        unreachable!("wide::supported is false off x86-64")
    }
}

/// Query of bit `bit` of a code's candidate mask: the bound is evaluated in eight vectors of
/// eight queries, the first four the even queries' sums (query `2 j` in 16-bit lane `j`), the
/// last four the odd ones'.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn query_of(bit: usize) -> usize {
    let (v, i) = (bit / 8, bit % 8);
    if v < 4 {
        2 * (8 * v + i)
    } else {
        2 * (8 * (v - 4) + i) + 1
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Safety: `scan_avx512` requires `avx512f` and `avx512bw`, `scan_avx2` requires `avx2`;
    //! their loads stay inside the layout's ids, the group's rows (ids are at most `bits`, below
    //! the table length) and the inverse norms.

    use super::{WIDE, WideGroup, query_of};
    use crate::adc::{AdcCodes, BOUND_REL, LANES, threshold_score};
    use crate::topk::TopK;
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// The threshold of `top` as the bound compares it (NaN while it fills: keep every code).
    fn threshold(top: &TopK) -> f64 {
        f64::from(threshold_score(top.threshold()))
    }

    /// Per-query bound parameters, in the order of the mask's bits (see `query_of`). Aligned
    /// so that every four of them load as one aligned 256-bit vector (an unaligned one the
    /// x86-64-v2 baseline's tuning would split in two, see [`crate::bits::load_ymm`]).
    #[repr(C, align(64))]
    struct Bounds {
        step: [f64; WIDE],
        base: [f64; WIDE],
        thr: [f64; WIDE],
    }

    /// One family's half of the scan: a code's candidate mask.
    trait Mask {
        /// Bit `b` set when the code whose ids are `ids[i * LANES + lane]` (`i < len`) may
        /// score above `bounds.thr[b]` for query `query_of(b)`; `inv`: its `1 / norm`.
        ///
        /// # Safety
        /// The family's features; ids below the number of `rows`.
        unsafe fn mask(
            rows: *const u8,
            ids: &[u16],
            lane: usize,
            len: usize,
            bounds: &Bounds,
            inv: Option<f64>,
        ) -> u64;
    }

    /// The scan loop, shared by the families (inlined into each one's `target_feature`
    /// function, so `M::mask` inlines too).
    #[inline(always)]
    unsafe fn scan_with<M: Mask>(
        codes: &AdcCodes,
        group: &WideGroup,
        rows: Range<usize>,
        tops: &mut [TopK],
        exact: &mut impl FnMut(usize, usize) -> u32,
    ) -> u64 {
        let nq = group.tables.len();
        let inv = codes
            .inv_norms
            .as_deref()
            .filter(|_| group.tables[0].normalise);
        // Queries past the group's end get threshold +inf, which no bound exceeds.
        let mut b = Bounds {
            step: [0.0; WIDE],
            base: [0.0; WIDE],
            thr: [f64::INFINITY; WIDE],
        };
        for bit in 0..WIDE {
            let g = query_of(bit);
            if g < nq {
                b.step[bit] = group.tables[g].step;
                b.thr[bit] = threshold(&tops[g]);
            }
        }
        let rows_ptr = group.rows.as_ptr().cast::<u8>();
        let mut rescored = 0u64;
        let mut base_len = None;
        for blk in rows.start / LANES..rows.end.div_ceil(LANES) {
            let (s, e) = (codes.starts[blk], codes.starts[blk + 1]);
            let len = e - s;
            // The bases depend on the block's length alone (the same in every block of
            // K-sparse codes).
            if base_len != Some(len) {
                base_len = Some(len);
                for bit in 0..WIDE {
                    let g = query_of(bit);
                    if g < nq {
                        b.base[bit] = group.tables[g].base(len);
                    }
                }
            }
            let ids = &codes.ids[s * LANES..e * LANES];
            for r in (blk * LANES).max(rows.start)..((blk + 1) * LANES).min(rows.end) {
                // SAFETY: the family's features (the caller's); ids are at most `bits`.
                let mut mask =
                    unsafe { M::mask(rows_ptr, ids, r - blk * LANES, len, &b, inv.map(|v| v[r])) };
                while mask != 0 {
                    let bit = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    let g = query_of(bit);
                    rescored += 1;
                    let k = exact(g, r);
                    let top = &mut tops[g];
                    if k < top.threshold() {
                        // Rows ascending: r is above every row offered before.
                        top.push(k, r as u32);
                        b.thr[bit] = threshold(top);
                    }
                }
            }
        }
        rescored
    }

    /// AVX-512: a row is one register; the 64 sums are two registers of 32 `u16`.
    struct Avx512;

    impl Mask for Avx512 {
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw")]
        unsafe fn mask(
            rows: *const u8,
            ids: &[u16],
            lane: usize,
            len: usize,
            b: &Bounds,
            inv: Option<f64>,
        ) -> u64 {
            let low_bytes = _mm512_set1_epi16(0xff);
            let row = |i: usize| {
                // SAFETY: ids are below the number of rows; rows are 64-byte aligned.
                unsafe { _mm512_load_si512(rows.add(ids[i * LANES + lane] as usize * WIDE).cast()) }
            };
            // Two accumulators per parity: half the dependent additions in a row.
            let z = _mm512_setzero_si512();
            let (mut e0, mut e1, mut o0, mut o1) = (z, z, z, z);
            let mut i = 0;
            while i + 1 < len {
                let (va, vc) = (row(i), row(i + 1));
                e0 = _mm512_add_epi16(e0, _mm512_and_si512(va, low_bytes));
                o0 = _mm512_add_epi16(o0, _mm512_srli_epi16::<8>(va));
                e1 = _mm512_add_epi16(e1, _mm512_and_si512(vc, low_bytes));
                o1 = _mm512_add_epi16(o1, _mm512_srli_epi16::<8>(vc));
                i += 2;
            }
            if i < len {
                let va = row(i);
                e0 = _mm512_add_epi16(e0, _mm512_and_si512(va, low_bytes));
                o0 = _mm512_add_epi16(o0, _mm512_srli_epi16::<8>(va));
            }
            let sums = [_mm512_add_epi16(e0, e1), _mm512_add_epi16(o0, o1)];
            let rel = _mm512_set1_pd(BOUND_REL);
            let mut mask = 0u64;
            for (p, &acc) in sums.iter().enumerate() {
                let halves = [
                    _mm512_castsi512_si256(acc),
                    _mm512_extracti64x4_epi64::<1>(acc),
                ];
                for (h, &half) in halves.iter().enumerate() {
                    let wide = _mm512_cvtepu16_epi32(half);
                    let quads = [
                        _mm512_castsi512_si256(wide),
                        _mm512_extracti64x4_epi64::<1>(wide),
                    ];
                    for (qd, &q) in quads.iter().enumerate() {
                        let v = 4 * p + 2 * h + qd;
                        // SAFETY: v < 8, so 8 v + 8 <= WIDE.
                        let (st, ba, th) = unsafe {
                            (
                                _mm512_loadu_pd(b.step.as_ptr().add(8 * v)),
                                _mm512_loadu_pd(b.base.as_ptr().add(8 * v)),
                                _mm512_loadu_pd(b.thr.as_ptr().add(8 * v)),
                            )
                        };
                        // lane_candidate's operations, in its order.
                        let n = _mm512_add_pd(_mm512_mul_pd(_mm512_cvtepu32_pd(q), st), ba);
                        let u = match inv {
                            Some(iv) => _mm512_mul_pd(n, _mm512_set1_pd(iv)),
                            None => n,
                        };
                        let u = _mm512_add_pd(u, _mm512_mul_pd(_mm512_abs_pd(u), rel));
                        let keep = _mm512_cmp_pd_mask::<_CMP_NLE_UQ>(u, th);
                        mask |= u64::from(keep) << (8 * v);
                    }
                }
            }
            mask
        }
    }

    /// AVX2: a row is two registers (queries 0..32 and 32..64); the sums four registers of 16
    /// `u16`, in the order of the AVX-512 kernel's mask bits.
    struct Avx2;

    impl Mask for Avx2 {
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn mask(
            rows: *const u8,
            ids: &[u16],
            lane: usize,
            len: usize,
            b: &Bounds,
            inv: Option<f64>,
        ) -> u64 {
            let low_bytes = _mm256_set1_epi16(0xff);
            let z = _mm256_setzero_si256();
            // [even 0..32, even 32..64, odd 0..32, odd 32..64]: mask vectors 0-1, 2-3, 4-5, 6-7.
            let mut acc = [z; 4];
            for i in 0..len {
                // SAFETY: ids are below the number of rows; rows are 64-byte aligned.
                let (lo, hi) = unsafe {
                    let p = rows.add(ids[i * LANES + lane] as usize * WIDE);
                    (
                        _mm256_load_si256(p.cast()),
                        _mm256_load_si256(p.add(32).cast()),
                    )
                };
                acc[0] = _mm256_add_epi16(acc[0], _mm256_and_si256(lo, low_bytes));
                acc[1] = _mm256_add_epi16(acc[1], _mm256_and_si256(hi, low_bytes));
                acc[2] = _mm256_add_epi16(acc[2], _mm256_srli_epi16::<8>(lo));
                acc[3] = _mm256_add_epi16(acc[3], _mm256_srli_epi16::<8>(hi));
            }
            let rel = _mm256_set1_pd(BOUND_REL);
            let sign = _mm256_set1_pd(-0.0);
            let mut mask = 0u64;
            for (a, &x) in acc.iter().enumerate() {
                let halves = [_mm256_castsi256_si128(x), _mm256_extracti128_si256::<1>(x)];
                for (h, &half) in halves.iter().enumerate() {
                    let wide = _mm256_cvtepu16_epi32(half);
                    let quads = [
                        _mm256_castsi256_si128(wide),
                        _mm256_extracti128_si256::<1>(wide),
                    ];
                    for (qd, &q) in quads.iter().enumerate() {
                        // Bits 8 v + 4 qd .. + 4: queries query_of(8 v + 4 qd ..).
                        let at = 8 * (2 * a + h) + 4 * qd;
                        // SAFETY: at + 4 <= WIDE; `at` is a multiple of 4 and the arrays
                        // start on 64 bytes (`Bounds` is aligned, each array 8 x WIDE bytes).
                        let (st, ba, th) = unsafe {
                            (
                                _mm256_load_pd(b.step.as_ptr().add(at)),
                                _mm256_load_pd(b.base.as_ptr().add(at)),
                                _mm256_load_pd(b.thr.as_ptr().add(at)),
                            )
                        };
                        // lane_candidate's operations, in its order (u32 sums below 2^16
                        // convert exactly as signed).
                        let n = _mm256_add_pd(_mm256_mul_pd(_mm256_cvtepi32_pd(q), st), ba);
                        let u = match inv {
                            Some(iv) => _mm256_mul_pd(n, _mm256_set1_pd(iv)),
                            None => n,
                        };
                        let u = _mm256_add_pd(u, _mm256_mul_pd(_mm256_andnot_pd(sign, u), rel));
                        let keep = _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_NLE_UQ>(u, th));
                        mask |= (keep as u64) << at;
                    }
                }
            }
            mask
        }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn scan_avx512(
        codes: &AdcCodes,
        group: &WideGroup,
        rows: Range<usize>,
        tops: &mut [TopK],
        exact: &mut impl FnMut(usize, usize) -> u32,
    ) -> u64 {
        // SAFETY: this function's features are Avx512's.
        unsafe { scan_with::<Avx512>(codes, group, rows, tops, exact) }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scan_avx2(
        codes: &AdcCodes,
        group: &WideGroup,
        rows: Range<usize>,
        tops: &mut [TopK],
        exact: &mut impl FnMut(usize, usize) -> u32,
    ) -> u64 {
        // SAFETY: this function's features are Avx2's.
        unsafe { scan_with::<Avx2>(codes, group, rows, tops, exact) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::{desc_key, table_score, table_sum};
    use crate::sparse::SparseCodes;

    /// The wide kernels of every family this CPU has against a brute-force top k: a partial
    /// last block (37 rows), an empty code, row ranges that start and end inside blocks, one
    /// query and a full group of 64, with and without norms (zero and negative ones too).
    #[test]
    fn wide_scan_equals_brute_force() {
        let (n, bits, w) = (37usize, 70usize, 2usize);
        let mut x = 0x853c_49e6_748f_ea9bu64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut codes: Vec<u64> = (0..n * w).map(|_| next() & next() & next()).collect();
        for row in codes.chunks_exact_mut(w) {
            row[1] &= (1 << (bits - 64)) - 1;
        }
        codes[4 * w..5 * w].fill(0); // an empty code: only the pad id
        let tables: Vec<Vec<f32>> = (0..WIDE)
            .map(|_| {
                (0..bits)
                    .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                    .collect()
            })
            .collect();
        let norms: Vec<f32> = (0..n).map(|r| (r % 5) as f32 * 0.5 - 0.5).collect();
        let sparse = SparseCodes::build(&codes, bits).unwrap();
        let plain = AdcCodes::from_sparse(&sparse.view()).unwrap();
        for normalise in [false, true] {
            let layout = if normalise {
                plain.clone().with_norms(&norms).unwrap()
            } else {
                plain.clone()
            };
            let exact = |g: usize, r: usize| {
                let sum = table_sum(&codes[r * w..(r + 1) * w], &tables[g]);
                desc_key(table_score(0.25, sum, normalise.then(|| norms[r])))
            };
            for nq in [1, 3, WIDE] {
                let group = WideGroup::new(
                    (0..nq)
                        .map(|g| QuantisedTable::new(&layout, &tables[g], 0.25, normalise))
                        .collect::<Result<_>>()
                        .unwrap(),
                )
                .unwrap();
                for rows in [0..n, 5..n, 3..20, 17..17] {
                    for family in KernelFamily::supported() {
                        let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(4, None)).collect();
                        let result = scan(family, &layout, &group, rows.clone(), &mut tops, exact);
                        if !supported(family, &layout) {
                            assert!(result.is_err(), "{family}");
                            continue;
                        }
                        let st = result.unwrap();
                        assert_eq!(st.scanned, (rows.len() * nq) as u64);
                        for (g, top) in tops.into_iter().enumerate() {
                            let mut want = TopK::new(4, None);
                            for r in rows.clone() {
                                want.offer(exact(g, r), r as u32);
                            }
                            assert_eq!(
                                top.into_sorted_keys(),
                                want.into_sorted_keys(),
                                "{family} nq {nq} query {g} rows {rows:?} normalise {normalise}"
                            );
                        }
                    }
                }
            }
        }
    }
}
