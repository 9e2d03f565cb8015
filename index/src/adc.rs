//! Fast exact table scores: a quantised SIMD scan with a bound, then exact `f64` re-scoring.
//!
//! A table score ([`Score::Table`](crate::Score::Table), bsa's `--score adc` and `--score soft`)
//! sums one float per set bit of each code. The exact definition ([`crate::score`]) adds the
//! entries in `f64`, one code at a time: a chain of dependent scalar additions per code. This
//! module finds the same top k far faster:
//!
//! 1. **Layout** ([`AdcCodes`], built once per index): the codes in blocks of [`LANES`] = 16,
//!    transposed so that position `i` of the 16 codes of a block is contiguous. Sparse codes
//!    (`sparse.bin`, e.g. 32 of 4096 bits set) store their set-bit ids (`u16`), each block padded
//!    to its longest code with the id `bits`, which points at a zero entry. Dense codes (sign,
//!    ITQ, LSH bits) store their bytes: position `i` is byte `i` of each code.
//! 2. **Per query** ([`QuantisedTable`]): the table quantised to `u8` levels with a scale and a
//!    zero point (`t ~ step * (q - z)`), and the largest rounding error `e` actually made. Dense
//!    codes get one 256-entry table per code byte (entry = the sum of the byte's bit entries),
//!    so a code of `B` bytes costs `B` lookups whatever its number of set bits.
//! 3. **Scan** ([`candidates`]): [`GROUP`] = 8 queries at once ([`QueryGroup`]: their `u8`
//!    entries interleaved in one `u64` per table index, so one gathered element serves eight
//!    queries). Per block and position, 16 `u64` lookups (`vpgatherdq`: 2 x 8 with AVX-512,
//!    4 x 4 with AVX2, scalar loads in the portable kernel) summed in 16-bit fields, then a
//!    bound per query: with
//!    `L` positions, the code's `f64` sum is within `L e` (plus a margin for `f64` rounding, see
//!    below) of `step * (Q - L z)`, so the upper bound `U` of its final score (divided by its norm
//!    when normalised) is known. A code whose `U` cannot beat the current `k`-th best score cannot
//!    enter the result and is skipped.
//! 4. **Re-score** ([`scan`]): every other code is scored exactly as today ([`table_sum`],
//!    [`table_score`], in `f64`, ascending bit order) and offered to the [`TopK`]. Skipped codes
//!    would not have entered it either, so the ids, scores and tie order are exactly those of the
//!    plain scan; only the work differs.
//!
//! **Why the bound is safe.** Let `S` be the real sum of a code's entries and `S64` the `f64`
//! sum the exact scorer computes. Per position the quantised entry is within `e` of the real
//! entry (pads are exact: `z` stands for `0`), so `S <= step (Q - L z) + L e`. The `f64` sums (of
//! the exact scorer and of the dense byte entries) are within `(8 L)^2 2^-53 A` of the real ones,
//! with `A` the largest entry magnitude; the margin `(|offset| + L A) (L + 16) 2^-44` covers that
//! many times over. The bound itself is evaluated in `f64` with the same operations in every
//! kernel (a multiply, an add, a multiply by `1 / norm`, each rounded once), and inflated by
//! `|U| 2^-48`, more than those roundings can lose. Rounding the exact score to `f32` is monotone,
//! so a code with `U <= s_k` (the `k`-th best score so far) scores at most `s_k`, and a row
//! offered later with a score equal to the threshold never enters a [`TopK`]. Codes with a
//! norm that is not positive score exactly `0` (their `1 / norm` is taken as `0`), and codes
//! whose bound is not finite are always re-scored.
//!
//! ```
//! use bsa_index::adc::{self, AdcCodes, QuantisedTable, QueryGroup};
//! use bsa_index::score::{desc_key, table_score, table_sum};
//! use bsa_index::topk::TopK;
//! use bsa_index::KernelFamily;
//!
//! # fn main() -> bsa_index::Result<()> {
//! // Three 8-bit codes (one word each): bits {0, 1}, {2}, {0, 3}.
//! let codes = [0b0011u64, 0b0100, 0b1001];
//! let layout = AdcCodes::from_packed(&codes, 8)?;
//! let table = [0.5f32, 0.25, 1.0, -2.0, 0.0, 0.0, 0.0, 0.0];
//! let group = QueryGroup::new(vec![QuantisedTable::new(&layout, &table, 0.0, false)?])?;
//! let mut tops = [TopK::new(2, None)];
//! // The exact score of query 0 (the only one) and row r, as crate::score defines it.
//! let exact = |_q: usize, r: usize| {
//!     desc_key(table_score(0.0, table_sum(&codes[r..r + 1], &table), None))
//! };
//! let stats = adc::scan(KernelFamily::best(), &layout, &group, 0..3, &mut tops, exact)?;
//! let [top] = tops;
//! let rows: Vec<u32> = top.into_sorted_keys().iter().map(|&k| k as u32).collect();
//! assert_eq!(rows, vec![1, 0]); // row 1 (1.0), then row 0 (0.75)
//! assert!(stats.rescored >= 2 && stats.scanned == 3);
//! # Ok(()) }
//! ```
//!
//! [`table_sum`]: crate::score::table_sum
//! [`table_score`]: crate::score::table_score

use std::ops::Range;

use crate::error::{Error, Result};
use crate::kernel::KernelFamily;
use crate::score::from_desc_key;
use crate::sparse::SparseView;
use crate::topk::TopK;

/// Codes per block of the transposed layout (one 512-bit register of `u32` sums).
pub const LANES: usize = 16;

/// Blocks scanned between two refreshes of the threshold from the [`TopK`]. Short enough that
/// a better threshold is used soon, long enough that the kernel call is amortised.
const RUN_BLOCKS: usize = 64;

/// Relative inflation of the computed bound (covers its own three `f64` roundings).
pub(crate) const BOUND_REL: f64 = 1.0 / (1u64 << 48) as f64;

/// How the codes are stored in an [`AdcCodes`] layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `u16` set-bit ids per position, padded with the id `bits`.
    Sparse,
    /// One code byte per position.
    Dense,
}

/// The codes of an index, block-transposed for the quantised scan (see the [module docs](self)).
///
/// Built once per index (the [`Index`](crate::Index) caches it at first use) from `sparse.bin`
/// ([`from_sparse`](Self::from_sparse)) or from the packed codes
/// ([`from_packed`](Self::from_packed)); [`with_norms`](Self::with_norms) adds the per-code
/// divisors of normalised scores.
///
/// ```
/// use bsa_index::adc::AdcCodes;
/// use bsa_index::sparse::SparseCodes;
/// # fn main() -> bsa_index::Result<()> {
/// // Two 70-bit codes: bits {0, 2} and {69}.
/// let codes = [0b101u64, 0, 0, 1 << 5];
/// let sparse = SparseCodes::build(&codes, 70)?;
/// let layout = AdcCodes::from_sparse(&sparse.view())?;
/// assert_eq!((layout.len(), layout.bits(), layout.positions(0)), (2, 70, 2));
/// assert!(!layout.is_dense());
/// let dense = AdcCodes::from_packed(&codes, 70)?.with_norms(&[1.0, 2.0])?;
/// assert_eq!(dense.positions(0), 9); // 70 bits = 9 bytes
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AdcCodes {
    pub(crate) n: usize,
    bits: usize,
    pub(crate) kind: Kind,
    /// Sparse: block `b`'s positions are `starts[b]..starts[b + 1]` (in units of `LANES` ids).
    pub(crate) starts: Vec<usize>,
    /// Sparse: `LANES` ids per position.
    pub(crate) ids: Vec<u16>,
    /// Dense: block `b`'s `LANES * bytes` bytes, position-major.
    bytes: Vec<u8>,
    /// Dense: bytes per code.
    stride: usize,
    /// `1 / norm` in `f64` per code (0 for norms that are not positive), padded to whole blocks.
    pub(crate) inv_norms: Option<Vec<f64>>,
    /// The most positions of any block (each table quantises for it: kept, not recounted).
    max_positions: usize,
}

impl AdcCodes {
    /// The layout of sparse codes: their set-bit ids (from `sparse.bin` or
    /// [`SparseCodes`](crate::sparse::SparseCodes)). Each block of 16 codes is padded to its
    /// longest code.
    ///
    /// ```
    /// use bsa_index::adc::{AdcCodes, LANES};
    /// use bsa_index::sparse::SparseCodes;
    /// # fn main() -> bsa_index::Result<()> {
    /// // 20 codes of 64 bits: code r has r % 5 bits set, except code 17, which has 9.
    /// let codes: Vec<u64> = (0..20u64).map(|r| if r == 17 { 0x1ff } else { (1 << (r % 5)) - 1 }).collect();
    /// let layout = AdcCodes::from_sparse(&SparseCodes::build(&codes, 64)?.view())?;
    /// assert_eq!((layout.len(), layout.blocks()), (20, 2)); // blocks of LANES = 16 codes
    /// assert_eq!(LANES, 16);
    /// assert_eq!(layout.positions(0), 4); // rows 0..16: the longest code has 4 bits
    /// assert_eq!(layout.positions(1), 9); // rows 16..20: code 17
    /// assert!(!layout.is_dense() && !layout.has_norms());
    /// # Ok(()) }
    /// ```
    pub fn from_sparse(view: &SparseView<'_>) -> Result<Self> {
        let n = view.len();
        let bits = view.bits();
        // The pad id `bits` must fit a u16 and index the table's extra zero entry.
        if bits == 0 || bits > usize::from(u16::MAX) {
            return Err(Error::InvalidArgument(format!(
                "the ADC layout of sparse codes needs 1..=65535 bits, got {bits}"
            )));
        }
        let blocks = n.div_ceil(LANES);
        let mut starts = Vec::with_capacity(blocks + 1);
        starts.push(0usize);
        let mut ids = Vec::with_capacity(view.set_bits() + view.set_bits() / 4 + LANES);
        for b in 0..blocks {
            let rows = b * LANES..((b + 1) * LANES).min(n);
            let len = rows.clone().map(|r| view.row(r).len()).max().unwrap_or(0);
            for i in 0..len {
                for lane in 0..LANES {
                    let r = b * LANES + lane;
                    let id = if r < n { view.row(r).get(i) } else { None };
                    ids.push(id.copied().unwrap_or(bits as u16));
                }
            }
            starts.push(starts[b] + len);
        }
        // The vector kernels gather table entries at these ids unchecked, so the bound they
        // rely on (`id <= bits < table_len`) is checked here, where the ids are copied, and not
        // only when `sparse.bin` was opened: a mapped file is read again at every use, and one
        // changed in place since (by another program) must not make a gather read outside the
        // table. One comparison per id.
        if let Some(&id) = ids.iter().find(|&&id| usize::from(id) > bits) {
            return Err(Error::InvalidArgument(format!(
                "set bit {id} of a sparse code is beyond its {bits} bits"
            )));
        }
        let max_positions = starts.windows(2).map(|p| p[1] - p[0]).max().unwrap_or(0);
        Ok(AdcCodes {
            n,
            bits,
            kind: Kind::Sparse,
            starts,
            ids,
            bytes: Vec::new(),
            stride: 0,
            inv_norms: None,
            max_positions,
        })
    }

    /// The layout of packed codes (`n * ceil(bits / 64)` words, unused high bits zero): one
    /// position per code byte.
    ///
    /// ```
    /// use bsa_index::adc::AdcCodes;
    /// # fn main() -> bsa_index::Result<()> {
    /// let codes = [u64::MAX, 0b1, /* row 1 */ 0, 0]; // two 72-bit codes
    /// let layout = AdcCodes::from_packed(&codes, 72)?;
    /// assert!(layout.is_dense());
    /// assert_eq!(layout.positions(0), 9); // one lookup per byte, whatever the bits set
    /// assert!(AdcCodes::from_packed(&codes[..3], 72).is_err()); // not whole codes
    /// # Ok(()) }
    /// ```
    pub fn from_packed(codes: &[u64], bits: usize) -> Result<Self> {
        if bits == 0 {
            return Err(Error::InvalidArgument("codes of 0 bits".into()));
        }
        let w = bits.div_ceil(64);
        if !codes.len().is_multiple_of(w) {
            return Err(Error::InvalidArgument(format!(
                "{} words are not whole {bits}-bit codes",
                codes.len()
            )));
        }
        crate::pack::check_high_bits_zero(codes, bits)?;
        let n = codes.len() / w;
        let stride = bits.div_ceil(8);
        // A block's quantised sums must fit 16 bits with at least one level per entry.
        if stride > usize::from(u16::MAX) {
            return Err(Error::InvalidArgument(format!(
                "the ADC layout of packed codes holds at most 65535 bytes per code, got {stride}"
            )));
        }
        let blocks = n.div_ceil(LANES);
        let mut bytes = vec![0u8; blocks * LANES * stride];
        let raw: &[u8] = bytemuck::cast_slice(codes);
        for r in 0..n {
            let (b, lane) = (r / LANES, r % LANES);
            let code = &raw[r * w * 8..r * w * 8 + stride];
            let block = &mut bytes[b * LANES * stride..(b + 1) * LANES * stride];
            for (i, &byte) in code.iter().enumerate() {
                block[i * LANES + lane] = byte;
            }
        }
        Ok(AdcCodes {
            n,
            bits,
            kind: Kind::Dense,
            starts: Vec::new(),
            ids: Vec::new(),
            bytes,
            stride,
            inv_norms: None,
            max_positions: stride,
        })
    }

    /// The layout of `codes` (`bits` bits each) for the table scan: from their set bits when
    /// `sparse` is given and fits, else from the packed codes; with `norms` when given.
    ///
    /// ```
    /// use bsa_index::adc::AdcCodes;
    /// use bsa_index::sparse::SparseCodes;
    /// # fn main() -> bsa_index::Result<()> {
    /// let codes = [0b1011u64, 1 << 40, 0];
    /// let sparse = SparseCodes::build(&codes, 64)?;
    /// let from_ids = AdcCodes::of_codes(&codes, 64, Some(&sparse.view()), Some(&[1.0, 2.0, 0.0]))?;
    /// assert!(!from_ids.is_dense() && from_ids.has_norms());
    /// let from_bytes = AdcCodes::of_codes(&codes, 64, None, None)?;
    /// assert!(from_bytes.is_dense() && !from_bytes.has_norms());
    /// # Ok(()) }
    /// ```
    pub fn of_codes(
        codes: &[u64],
        bits: usize,
        sparse: Option<&SparseView<'_>>,
        norms: Option<&[f32]>,
    ) -> Result<AdcCodes> {
        let layout = match sparse.map(AdcCodes::from_sparse) {
            Some(Ok(l)) => l,
            _ => AdcCodes::from_packed(codes, bits)?,
        };
        match norms {
            Some(n) => layout.with_norms(n),
            None => Ok(layout),
        }
    }

    /// Adds the per-code norms that normalised scores divide by (one per code). A norm that is
    /// not positive gives the score 0, as [`table_score`](crate::score::table_score) does.
    ///
    /// ```
    /// use bsa_index::adc::{AdcCodes, QuantisedTable};
    /// # fn main() -> bsa_index::Result<()> {
    /// let layout = AdcCodes::from_packed(&[0b01u64, 0b11], 8)?;
    /// let table = [1.0f32; 8];
    /// // A normalised table needs norms, one per code.
    /// assert!(QuantisedTable::new(&layout, &table, 0.0, true).is_err());
    /// assert!(layout.clone().with_norms(&[1.0]).is_err());
    /// let layout = layout.with_norms(&[1.0, 0.0])?; // code 1 scores 0
    /// assert!(layout.has_norms());
    /// assert!(QuantisedTable::new(&layout, &table, 0.0, true).is_ok());
    /// # Ok(()) }
    /// ```
    pub fn with_norms(mut self, norms: &[f32]) -> Result<Self> {
        if norms.len() != self.n {
            return Err(Error::DimMismatch {
                what: "norms (one per code)".into(),
                expected: self.n,
                got: norms.len(),
            });
        }
        let mut inv = vec![0.0f64; self.blocks() * LANES];
        for (x, &v) in inv.iter_mut().zip(norms) {
            // NaN and non-positive norms score 0 (a bound of exactly 0 with a zero factor).
            *x = if v > 0.0 { 1.0 / f64::from(v) } else { 0.0 };
        }
        self.inv_norms = Some(inv);
        Ok(self)
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

    /// Whether the layout holds code bytes (dense codes) rather than set-bit ids.
    pub fn is_dense(&self) -> bool {
        self.kind == Kind::Dense
    }

    /// Whether per-code norms were added.
    pub fn has_norms(&self) -> bool {
        self.inv_norms.is_some()
    }

    /// Number of blocks of [`LANES`] codes (the last one may be partial).
    pub fn blocks(&self) -> usize {
        self.n.div_ceil(LANES)
    }

    /// Lookups per code of block `b` (its longest code's set bits, or the bytes per code).
    ///
    /// # Panics
    /// If `b >= blocks()`.
    pub fn positions(&self, b: usize) -> usize {
        match self.kind {
            Kind::Sparse => self.starts[b + 1] - self.starts[b],
            Kind::Dense => {
                assert!(b < self.blocks(), "block {b} out of range");
                self.stride
            }
        }
    }

    /// What a table quantised for this layout depends on besides the table itself (see
    /// [`QuantisedTable::new`]): dense or sparse, bits, entries, and the most positions of any
    /// block. Layouts of the same shape take the same quantised tables.
    pub(crate) fn table_shape(&self) -> (bool, usize, usize, usize) {
        (
            self.kind == Kind::Dense,
            self.bits,
            self.table_len(),
            self.max_positions,
        )
    }

    /// The most positions of any block.
    fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Entries of a quantised table for this layout (with the pad entry of sparse codes).
    pub(crate) fn table_len(&self) -> usize {
        match self.kind {
            Kind::Sparse => self.bits + 1,
            Kind::Dense => self.stride * 256,
        }
    }
}

/// One query's table, quantised for an [`AdcCodes`] layout (see the [module docs](self)).
///
/// Entry `i` stands for the real value `step * (q_i - z)`, within [`max_error`](Self::max_error)
/// of the true entry. Sparse layouts get the `bits` entries of the table plus a pad entry `z`
/// (the value 0); dense layouts one 256-entry table per code byte.
///
/// ```
/// use bsa_index::adc::{AdcCodes, QuantisedTable};
/// # fn main() -> bsa_index::Result<()> {
/// let layout = AdcCodes::from_packed(&[0b11u64], 8)?;
/// let qt = QuantisedTable::new(&layout, &[1.0, -1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0], 0.25, false)?;
/// assert!(qt.max_error() <= qt.step() / 2.0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct QuantisedTable {
    /// Quantised entries, one per table index (dense: 256 per code byte).
    pub(crate) entries: Vec<u8>,
    pub(crate) step: f64,
    /// `e - z * step`: what each position adds to the bound besides `step * q`.
    per_position: f64,
    offset: f64,
    /// Largest entry magnitude plus `|offset|` scale, for the rounding margin.
    max_abs: f64,
    max_error: f64,
    pub(crate) dense: bool,
    pub(crate) normalise: bool,
    /// The layout's [`AdcCodes::table_shape`]: the levels chosen, hence the room each query's
    /// 16-bit sums have in the scan's lanes, follow its longest block, so a table must be
    /// scanned over a layout of this shape (one of the same table length but longer blocks
    /// could carry one query's sum into the next one's field).
    pub(crate) shape: (bool, usize, usize, usize),
}

impl QuantisedTable {
    /// Quantises `table` (one finite float per bit of the layout's codes) and `offset` (finite)
    /// for `codes`; `normalise`: the score is divided by the codes' norms (which `codes` must
    /// have, see [`AdcCodes::with_norms`]).
    ///
    /// ```
    /// use bsa_index::adc::{AdcCodes, QuantisedTable};
    /// # fn main() -> bsa_index::Result<()> {
    /// let layout = AdcCodes::from_packed(&[0b0110u64], 4)?;
    /// let qt = QuantisedTable::new(&layout, &[0.1, -0.3, 0.7, 0.2], 1.0, false)?;
    /// assert!(qt.step() > 0.0 && qt.max_error() <= qt.step() / 2.0);
    /// assert!(QuantisedTable::new(&layout, &[0.1, 0.2, 0.3], 1.0, false).is_err()); // 3 of 4 entries
    /// assert!(QuantisedTable::new(&layout, &[0.1, f32::NAN, 0.3, 0.0], 1.0, false).is_err());
    /// assert!(QuantisedTable::new(&layout, &[0.0; 4], f32::INFINITY, false).is_err());
    /// # Ok(()) }
    /// ```
    pub fn new(codes: &AdcCodes, table: &[f32], offset: f32, normalise: bool) -> Result<Self> {
        if normalise && !codes.has_norms() {
            return Err(Error::InvalidArgument(
                "a normalised table score needs the codes' norms (AdcCodes::with_norms)".into(),
            ));
        }
        if table.len() != codes.bits {
            return Err(Error::DimMismatch {
                what: format!("table entries ({}-bit codes)", codes.bits),
                expected: codes.bits,
                got: table.len(),
            });
        }
        // A branch-free pass first (it vectorises); the position only for the error.
        if !table.iter().fold(true, |ok, x| ok & x.is_finite()) {
            let i = table.iter().position(|x| !x.is_finite()).unwrap_or(0);
            return Err(Error::InvalidArgument(format!(
                "table entry {i} is not finite"
            )));
        }
        if !offset.is_finite() {
            return Err(Error::InvalidArgument("table offset is not finite".into()));
        }
        let mut values = vec![0.0f64; codes.table_len()];
        match codes.kind {
            // The pad entry (index `bits`) stays 0.
            Kind::Sparse => {
                for (v, &t) in values.iter_mut().zip(table) {
                    *v = f64::from(t);
                }
            }
            Kind::Dense => {
                for (pos, sub) in values.chunks_exact_mut(256).enumerate() {
                    for x in 1..256usize {
                        // Adding the highest bit last: the byte's entries in ascending order.
                        let hi = 7 - (x as u8).leading_zeros() as usize;
                        let j = pos * 8 + hi;
                        let t = table.get(j).map_or(0.0, |&t| f64::from(t));
                        sub[x] = sub[x & !(1 << hi)] + t;
                    }
                }
            }
        }
        let positions = codes.max_positions().max(1);
        // u8 levels, and a block's sums stay below 2^16 (each query sums in a 16-bit field of
        // the scan's u64 lanes). Measured on WordNet, 255 levels re-score 9% more codes than
        // 65535 (most re-scored codes are those that truly enter the top k as it fills), and
        // halve the gathers against u16 entries.
        let levels = (u64::from(u16::MAX) / positions as u64).clamp(1, 255) as f64;
        // Lanes of plain comparisons (the values are finite): they vectorise, a fold of
        // `f64::min` does not (one table per query per segment searched).
        const L: usize = 8;
        let (mut lo_l, mut hi_l) = ([0.0f64; L], [0.0f64; L]);
        let mut chunks = values.chunks_exact(L);
        for c in &mut chunks {
            for i in 0..L {
                lo_l[i] = if c[i] < lo_l[i] { c[i] } else { lo_l[i] };
                hi_l[i] = if c[i] > hi_l[i] { c[i] } else { hi_l[i] };
            }
        }
        for (i, &v) in chunks.remainder().iter().enumerate() {
            lo_l[i] = if v < lo_l[i] { v } else { lo_l[i] };
            hi_l[i] = if v > hi_l[i] { v } else { hi_l[i] };
        }
        let lo = lo_l.iter().fold(0.0f64, |m, &v| if v < m { v } else { m });
        let hi = hi_l.iter().fold(0.0f64, |m, &v| if v > m { v } else { m });
        let max_abs = hi.max(-lo);
        // Leave a level of room at both ends for rounding; a zero range (all entries 0) keeps
        // every entry at 0.
        let step = if hi > lo {
            (hi - lo) / (levels - 2.0).max(1.0)
        } else {
            1.0
        };
        let z = (-lo / step).round().clamp(0.0, levels);
        // A multiply instead of a divide per entry: any rounding is measured just below.
        let inv_step = 1.0 / step;
        let mut entries = vec![0u8; values.len()];
        // The error actually made (not assumed), so neither clamping nor rounding can break
        // the bound; kept per lane so that the loop vectorises.
        let mut errors = [0.0f64; L];
        let quantise = |v: f64| {
            // floor(x + 0.5): the nearest level (either one at a tie; the error is measured).
            let q = (v * inv_step + z + 0.5).floor();
            let q = if q < 0.0 {
                0.0
            } else if q > levels {
                levels
            } else {
                q
            };
            // SAFETY: q is finite (v, inv_step and z are) and within 0..=255 (clamped above).
            let e = unsafe { q.to_int_unchecked::<i32>() } as u8;
            (e, (v - step * (q - z)).abs())
        };
        let mut e_chunks = entries.chunks_exact_mut(L);
        let mut v_chunks = values.chunks_exact(L);
        for (e, v) in (&mut e_chunks).zip(&mut v_chunks) {
            for i in 0..L {
                let (q, err) = quantise(v[i]);
                errors[i] = if err > errors[i] { err } else { errors[i] };
                e[i] = q;
            }
        }
        let rest = e_chunks
            .into_remainder()
            .iter_mut()
            .zip(v_chunks.remainder());
        for (i, (e, &v)) in rest.enumerate() {
            let (q, err) = quantise(v);
            errors[i] = if err > errors[i] { err } else { errors[i] };
            *e = q;
        }
        let max_error = errors
            .iter()
            .fold(0.0f64, |m, &e| if e > m { e } else { m });
        Ok(QuantisedTable {
            entries,
            step,
            per_position: max_error - z * step,
            offset: f64::from(offset),
            max_abs,
            max_error,
            dense: codes.kind == Kind::Dense,
            normalise,
            shape: codes.table_shape(),
        })
    }

    /// The value of one quantisation level.
    pub fn step(&self) -> f64 {
        self.step
    }

    /// The largest difference between an entry and its quantised value.
    pub fn max_error(&self) -> f64 {
        self.max_error
    }

    /// The constant part of the bound of a block with `len` positions (see the module docs).
    #[inline]
    pub(crate) fn base(&self, len: usize) -> f64 {
        let l = len as f64;
        let margin =
            (self.offset.abs() + l * self.max_abs) * (l + 16.0) * (1.0 / (1u64 << 44) as f64);
        self.offset + l * self.per_position + margin
    }
}

/// Queries scanned together. Their `u8` entries share one `u64` per table index, so one
/// gathered element serves eight queries: the gathers' loads are the bottleneck of the scan
/// (AVX2 and AVX-512 gather at the same speed per element), so this divides their number by 8.
pub const GROUP: usize = 8;

/// Up to [`GROUP`] quantised tables of one layout, interleaved for the scan: entry `j` holds
/// query `g`'s entry `j` in bits `8 g..8 g + 8`.
///
/// ```
/// use bsa_index::adc::{AdcCodes, QuantisedTable, QueryGroup};
/// # fn main() -> bsa_index::Result<()> {
/// let layout = AdcCodes::from_packed(&[0b11u64, 0b10], 8)?;
/// let t = |x: f32| QuantisedTable::new(&layout, &[x, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 0.0, false);
/// let group = QueryGroup::new(vec![t(1.0)?, t(-1.0)?])?;
/// assert_eq!(group.len(), 2);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct QueryGroup {
    entries: Vec<u64>,
    tables: Vec<QuantisedTable>,
}

impl QueryGroup {
    /// Interleaves 1 to [`GROUP`] tables quantised for the same layout, with the same
    /// normalisation.
    ///
    /// ```
    /// use bsa_index::adc::{AdcCodes, QuantisedTable, QueryGroup, GROUP};
    /// # fn main() -> bsa_index::Result<()> {
    /// let layout = AdcCodes::from_packed(&[0b11u64, 0b10], 2)?.with_norms(&[1.0, 2.0])?;
    /// let t = |x: f32, normalise| QuantisedTable::new(&layout, &[x, 1.0], 0.0, normalise);
    /// assert_eq!(QueryGroup::new(vec![t(0.5, false)?; GROUP])?.len(), GROUP);
    /// assert!(QueryGroup::new(vec![t(0.5, false)?; GROUP + 1]).is_err());
    /// assert!(QueryGroup::new(vec![]).is_err());
    /// assert!(QueryGroup::new(vec![t(0.5, false)?, t(0.5, true)?]).is_err()); // one normalisation
    /// // Tables of another layout cannot join.
    /// let other = AdcCodes::from_packed(&[0b1u64], 1)?;
    /// let foreign = QuantisedTable::new(&other, &[1.0], 0.0, false)?;
    /// assert!(QueryGroup::new(vec![t(0.5, false)?, foreign]).is_err());
    /// # Ok(()) }
    /// ```
    pub fn new(tables: Vec<QuantisedTable>) -> Result<Self> {
        let first = check_group_tables(&tables, GROUP, "a query group")?;
        let mut entries = vec![0u64; first.entries.len()];
        let mut tables = tables;
        let one = tables.len() == 1;
        for (g, t) in tables.iter_mut().enumerate() {
            for (e, &q) in entries.iter_mut().zip(&t.entries) {
                *e |= u64::from(q) << (8 * g);
            }
            // Only the interleaved copy is read from now on, but by a group of one, whose
            // kernel reads the bytes ([`one_query_masks`]).
            if !one {
                t.entries = Vec::new();
            }
        }
        Ok(QueryGroup { entries, tables })
    }

    /// Number of queries in the group.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// Whether the group is empty (never: groups hold at least one query).
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    fn normalise(&self) -> bool {
        self.tables[0].normalise
    }
}

/// The first of `tables` once they can form one group (`what`, for the message): 1 to `max`
/// tables quantised for one layout, with one normalisation.
pub(crate) fn check_group_tables<'t>(
    tables: &'t [QuantisedTable],
    max: usize,
    what: &str,
) -> Result<&'t QuantisedTable> {
    match tables.first() {
        Some(first)
            if tables.len() <= max
                && tables
                    .iter()
                    .all(|t| t.shape == first.shape && t.normalise == first.normalise) =>
        {
            Ok(first)
        }
        _ => Err(Error::InvalidArgument(format!(
            "{what} holds 1 to {max} tables of one layout and normalisation, got {}",
            tables.len()
        ))),
    }
}

/// What a [`scan`] did.
///
/// The bound lets the scan skip most codes once the top `k` has filled:
///
/// ```
/// use bsa_index::adc::{self, AdcCodes, QuantisedTable, QueryGroup};
/// use bsa_index::score::{desc_key, table_score, table_sum};
/// use bsa_index::topk::TopK;
/// use bsa_index::KernelFamily;
/// # fn main() -> bsa_index::Result<()> {
/// let codes: Vec<u64> = (0..1024u64).collect(); // 10-bit codes: code r is the number r
/// let layout = AdcCodes::from_packed(&codes, 10)?;
/// let table: Vec<f32> = (0..10).map(|j| -((1u32 << j) as f32)).collect(); // code r scores -r
/// let group = QueryGroup::new(vec![QuantisedTable::new(&layout, &table, 0.0, false)?])?;
/// let exact = |_, r: usize| desc_key(table_score(0.0, table_sum(&codes[r..r + 1], &table), None));
/// let mut tops = [TopK::new(3, None)];
/// let stats = adc::scan(KernelFamily::current(), &layout, &group, 0..1024, &mut tops, exact)?;
/// assert_eq!(stats.scanned, 1024);
/// // Rows 0, 1, 2 fill the top 3 at once; the bound rules out almost every later row.
/// assert!(stats.rescored >= 3 && stats.rescored < 100, "{stats:?}");
/// let [top] = tops;
/// let rows: Vec<u32> = top.into_sorted_keys().iter().map(|&k| k as u32).collect();
/// assert_eq!(rows, [0, 1, 2]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ScanStats {
    /// Codes scanned by the quantised kernel (one per code and query).
    pub scanned: u64,
    /// Codes whose bound could reach the threshold, re-scored exactly (one per code and query).
    pub rescored: u64,
}

impl std::ops::AddAssign for ScanStats {
    fn add_assign(&mut self, o: ScanStats) {
        self.scanned += o.scanned;
        self.rescored += o.rescored;
    }
}

/// Name of the quantised kernel a family runs on a layout, for statistics
/// (e.g. `"avx512-gather-sparse"`). A group of one query runs its own variant (on AVX2, the
/// portable byte loads), under the same name.
///
/// ```
/// use bsa_index::adc::{kernel_name, AdcCodes};
/// use bsa_index::KernelFamily;
/// # fn main() -> bsa_index::Result<()> {
/// let layout = AdcCodes::from_packed(&[0b11u64], 8)?;
/// assert_eq!(kernel_name(KernelFamily::Avx2, layout.is_dense()), "avx2-gather-dense");
/// assert_eq!(kernel_name(KernelFamily::Portable, false), "portable-sparse");
/// # Ok(()) }
/// ```
pub fn kernel_name(family: KernelFamily, dense: bool) -> &'static str {
    match (family, dense) {
        (KernelFamily::Portable, false) => "portable-sparse",
        (KernelFamily::Portable, true) => "portable-dense",
        (KernelFamily::Avx2, false) => "avx2-gather-sparse",
        (KernelFamily::Avx2, true) => "avx2-gather-dense",
        (KernelFamily::Avx512, false) => "avx512-gather-sparse",
        (KernelFamily::Avx512, true) => "avx512-gather-dense",
    }
}

/// The candidate masks of blocks `blocks` for the queries of `group`, against their threshold
/// scores `thresholds` (one per query): bit `l` of `out[i][g]` is set when code
/// `LANES * (blocks.start + i) + l` may score above `thresholds[g]` for query `g` (every code is
/// a candidate when the threshold is NaN). Lanes past the last code may be set; ignore them.
///
/// ```
/// use bsa_index::adc::{candidates, AdcCodes, QuantisedTable, QueryGroup};
/// use bsa_index::KernelFamily;
/// # fn main() -> bsa_index::Result<()> {
/// let codes: Vec<u64> = (0..32u64).collect(); // 32 codes of 8 bits: code r is the number r
/// let layout = AdcCodes::from_packed(&codes, 8)?;
/// let table = [1.0f32, 2.0, 4.0, 8.0, 16.0, 0.0, 0.0, 0.0]; // score of code r = r
/// let group = QueryGroup::new(vec![QuantisedTable::new(&layout, &table, 0.0, false)?])?;
/// let mut out = [[0u16; 8]; 2];
/// for family in KernelFamily::supported() {
///     candidates(family, &layout, &group, &[29.5], 0..2, &mut out)?;
///     assert_eq!(out[1][0], 0b1100_0000_0000_0000); // codes 30 and 31 only
///     assert_eq!(out[0][0], 0);
/// }
/// # Ok(()) }
/// ```
pub fn candidates(
    family: KernelFamily,
    codes: &AdcCodes,
    group: &QueryGroup,
    thresholds: &[f32],
    blocks: Range<usize>,
    out: &mut [[u16; GROUP]],
) -> Result<()> {
    let family = family.check()?;
    check_group(codes, group)?;
    if thresholds.len() != group.len() {
        return Err(Error::DimMismatch {
            what: "thresholds (one per query of the group)".into(),
            expected: group.len(),
            got: thresholds.len(),
        });
    }
    if blocks.start > blocks.end || blocks.end > codes.blocks() || out.len() < blocks.len() {
        return Err(Error::InvalidArgument(format!(
            "blocks {blocks:?} of {} or {} masks out of range",
            codes.blocks(),
            out.len()
        )));
    }
    let mut thr = [f64::NAN; GROUP];
    for (t, &x) in thr.iter_mut().zip(thresholds) {
        *t = f64::from(x);
    }
    masks(family, codes, group, &thr, blocks, out);
    Ok(())
}

fn check_group(codes: &AdcCodes, group: &QueryGroup) -> Result<()> {
    if group.tables[0].shape != codes.table_shape() || group.entries.len() != codes.table_len() {
        return Err(Error::InvalidArgument(
            "the quantised tables were made for another layout".into(),
        ));
    }
    if group.normalise() && !codes.has_norms() {
        return Err(Error::InvalidArgument(
            "normalised tables need the codes' norms (AdcCodes::with_norms)".into(),
        ));
    }
    Ok(())
}

/// [`candidates`] on checked arguments.
fn masks(
    family: KernelFamily,
    codes: &AdcCodes,
    group: &QueryGroup,
    thresholds: &[f64; GROUP],
    blocks: Range<usize>,
    out: &mut [[u16; GROUP]],
) {
    match family {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `family` was checked against the CPU (`KernelFamily::check`), and the
        // arguments against each other (the tables were made for this layout, blocks in range).
        KernelFamily::Avx512 if group.len() == 1 => unsafe {
            avx512::masks_one(codes, group, thresholds[0], blocks, out)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        KernelFamily::Avx512 => unsafe { avx512::masks(codes, group, thresholds, blocks, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        KernelFamily::Avx2 if group.len() > 1 => unsafe {
            avx2::masks(codes, group, thresholds, blocks, out)
        },
        _ if group.len() == 1 => one_query_masks(codes, group, thresholds[0], blocks, out),
        _ => portable_masks(codes, group, thresholds, blocks, out),
    }
}

/// Offers to `tops[g]` every code of `rows` whose score for query `g` of `group` may enter it,
/// scored by `exact(g, row)` (the exact score's [`desc_key`](crate::score::desc_key)); rows
/// ascending, as a [`TopK`] needs. The result is what offering every row's exact key would give
/// (see the [module docs](self)), provided `exact` computes the table scores that `group`
/// quantises.
///
/// Eight queries at once over 600 sparse codes, against a brute-force reference, on every
/// family this CPU runs:
///
/// ```
/// use bsa_index::adc::{self, AdcCodes, QuantisedTable, QueryGroup, GROUP};
/// use bsa_index::score::{desc_key, table_score, table_sum};
/// use bsa_index::sparse::SparseCodes;
/// use bsa_index::topk::{key, TopK};
/// use bsa_index::KernelFamily;
/// # fn main() -> bsa_index::Result<()> {
/// let mut x = 0x2545_f491_4f6c_dd1du64; // xorshift
/// let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
/// let (n, bits, w) = (600, 256, 4);
/// let codes: Vec<u64> = (0..n * w).map(|_| next() & next() & next()).collect();
/// let tables: Vec<Vec<f32>> = (0..GROUP)
///     .map(|_| (0..bits).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect())
///     .collect();
/// let offsets: Vec<f32> = (0..GROUP).map(|g| g as f32 * 0.1).collect();
/// let exact = |g: usize, r: usize| {
///     let sum = table_sum(&codes[r * w..(r + 1) * w], &tables[g]);
///     desc_key(table_score(offsets[g], sum, None))
/// };
/// let layout = AdcCodes::from_sparse(&SparseCodes::build(&codes, bits)?.view())?;
/// let quantised: Vec<QuantisedTable> = (0..GROUP)
///     .map(|g| QuantisedTable::new(&layout, &tables[g], offsets[g], false))
///     .collect::<bsa_index::Result<_>>()?;
/// let group = QueryGroup::new(quantised)?;
/// for family in KernelFamily::supported() {
///     let mut tops: Vec<TopK> = (0..GROUP).map(|_| TopK::new(10, None)).collect();
///     let stats = adc::scan(family, &layout, &group, 0..n, &mut tops, exact)?;
///     assert_eq!(stats.scanned, (n * GROUP) as u64);
///     for (g, top) in tops.into_iter().enumerate() {
///         let mut all: Vec<u64> = (0..n).map(|r| key(exact(g, r), r as u32)).collect();
///         all.sort();
///         assert_eq!(top.into_sorted_keys(), all[..10]);
///     }
/// }
/// # Ok(()) }
/// ```
pub fn scan(
    family: KernelFamily,
    codes: &AdcCodes,
    group: &QueryGroup,
    rows: Range<usize>,
    tops: &mut [TopK],
    mut exact: impl FnMut(usize, usize) -> u32,
) -> Result<ScanStats> {
    family.check()?;
    check_group(codes, group)?;
    if rows.start > rows.end || rows.end > codes.n || tops.len() != group.len() {
        return Err(Error::InvalidArgument(format!(
            "rows {rows:?} out of range for {} codes, or {} top-k lists for {} queries",
            codes.n,
            tops.len(),
            group.len()
        )));
    }
    Ok(scan_checked(family, codes, group, rows, tops, &mut exact))
}

/// [`scan`] on checked arguments.
pub(crate) fn scan_checked(
    family: KernelFamily,
    codes: &AdcCodes,
    group: &QueryGroup,
    rows: Range<usize>,
    tops: &mut [TopK],
    exact: &mut impl FnMut(usize, usize) -> u32,
) -> ScanStats {
    let mut stats = ScanStats {
        scanned: (rows.len() * tops.len()) as u64,
        rescored: 0,
    };
    let mut out = [[0u16; GROUP]; RUN_BLOCKS];
    let (mut b, end) = (rows.start / LANES, rows.end.div_ceil(LANES));
    while b < end {
        let mut thr = [f64::NAN; GROUP];
        let mut filling = false;
        for (t, top) in thr.iter_mut().zip(tops.iter()) {
            // Until a TopK holds k rows its threshold is u32::MAX, NaN here: every code is a
            // candidate, so scan one block at a time to pick up a real threshold early.
            filling |= top.threshold() == u32::MAX;
            *t = f64::from(threshold_score(top.threshold()));
        }
        let e = (b + if filling { 1 } else { RUN_BLOCKS }).min(end);
        masks(family, codes, group, &thr, b..e, &mut out);
        for (i, m) in out[..e - b].iter().enumerate() {
            for (g, top) in tops.iter_mut().enumerate() {
                let mut m = u32::from(m[g]);
                while m != 0 {
                    let r = (b + i) * LANES + m.trailing_zeros() as usize;
                    m &= m - 1;
                    if r < rows.start || r >= rows.end {
                        continue;
                    }
                    stats.rescored += 1;
                    let k = exact(g, r);
                    if k < top.threshold() {
                        // Rows ascending: r is above every row offered before.
                        top.push(k, r as u32);
                    }
                }
            }
        }
        b = e;
    }
    stats
}

/// The largest score a [`TopK`] with threshold key `t` rejects (codes bounded by it cannot
/// enter). Keys of scores are never those of `-0.0` ([`desc_key`](crate::score::desc_key) adds
/// `+0.0`), but a threshold can be: one past the key of `0.0`, from a cutoff of `0.0`
/// ([`crate::search::Cutoffs`]). It rejects `-0.0` alone, which compares equal to `0.0`, so the
/// largest rejected score is the one below, the smallest negative subnormal.
pub(crate) fn threshold_score(t: u32) -> f32 {
    match from_desc_key(t) {
        z if z == 0.0 && z.is_sign_negative() => -f32::from_bits(1),
        s => s,
    }
}

/// Whether a code with quantised sum `q` may score above `threshold`: `!(U <= threshold)`,
/// with the same `f64` operations in every kernel (so every family re-scores the same codes for
/// the same thresholds; a parallel scan's thresholds, shared between its chunks as they are
/// found, and so its count of re-scored codes, vary from run to run, its results do not).
#[inline(always)]
fn lane_candidate(q: u32, base: f64, step: f64, inv: Option<f64>, threshold: f64) -> bool {
    let n = f64::from(q) * step + base;
    let u = match inv {
        Some(i) => n * i,
        None => n,
    };
    let u = u + u.abs() * BOUND_REL;
    // NaN (no threshold yet, or a bound that is not finite) keeps the code: only a bound
    // known to be at most the threshold rejects it.
    use std::cmp::Ordering::{Equal, Less};
    !matches!(u.partial_cmp(&threshold), Some(Less | Equal))
}

/// The `u64` lanes hold query `g`'s sum in bits `16 (g / 2)..16 (g / 2) + 16`: even queries
/// accumulate in `a`, odd ones in `b` (the entry shifted down by 8), each in its own 16-bit
/// field (sums stay below 2^16, see [`QuantisedTable::new`]) so that no carry crosses from one
/// query to another.
const HALVES: u64 = 0x00ff_00ff_00ff_00ff;

/// Query `g`'s 16 sums from the accumulators of a block.
#[inline(always)]
fn query_sums(a: &[u64; LANES], b: &[u64; LANES], g: usize) -> [u32; LANES] {
    let (src, shift) = (if g.is_multiple_of(2) { a } else { b }, 16 * (g / 2));
    let mut s = [0u32; LANES];
    for (x, &v) in s.iter_mut().zip(src) {
        *x = (v >> shift) as u32 & 0xffff;
    }
    s
}

/// Walks block `b` of `codes` for the portable kernels: `add(lane, t[entry])` for every
/// position of its 16 codes, in order (sparse: the entry of each set bit; dense: of each byte,
/// in its position's sub-table). Returns the positions (the `len` of [`QuantisedTable::base`]).
#[inline(always)]
fn block_entries<T: Copy>(
    codes: &AdcCodes,
    b: usize,
    t: &[T],
    mut add: impl FnMut(usize, T),
) -> usize {
    match codes.kind {
        Kind::Sparse => {
            let ids = &codes.ids[codes.starts[b] * LANES..codes.starts[b + 1] * LANES];
            for pos in ids.chunks_exact(LANES) {
                for (lane, &id) in pos.iter().enumerate() {
                    add(lane, t[usize::from(id)]);
                }
            }
            ids.len() / LANES
        }
        Kind::Dense => {
            let s = codes.stride;
            let bytes = &codes.bytes[b * LANES * s..(b + 1) * LANES * s];
            for (i, pos) in bytes.chunks_exact(LANES).enumerate() {
                let sub = &t[i * 256..i * 256 + 256];
                for (lane, &x) in pos.iter().enumerate() {
                    add(lane, sub[usize::from(x)]);
                }
            }
            s
        }
    }
}

/// The candidate mask of block `b`'s 16 quantised sums of `table` over `len` positions
/// ([`lane_candidate`] for each), `inv` the layout's inverse norms when the score is
/// normalised.
#[inline(always)]
fn block_mask(
    sums: &[u32; LANES],
    table: &QuantisedTable,
    len: usize,
    inv: Option<&[f64]>,
    b: usize,
    threshold: f64,
) -> u16 {
    let base = table.base(len);
    let mut m = 0u16;
    for (l, &q) in sums.iter().enumerate() {
        let i = inv.map(|v| v[b * LANES + l]);
        if lane_candidate(q, base, table.step, i, threshold) {
            m |= 1 << l;
        }
    }
    m
}

/// The masks of a group of one query with the portable and AVX2 families: its `u8` entries (a
/// few KiB, kept by [`QueryGroup::new`]) read with plain loads and summed in `u32`, the same
/// sums as the 8-query kernels' 16-bit fields, so the same masks. Those kernels gather 8-byte
/// entries of which a lone query uses one byte. AMD EPYC Zen 5, one thread, one query, 100k
/// codes (`examples/adc_qps.rs`, scan and re-scoring), queries per second: 4096 bits with 32
/// set, portable 280 -> 657, AVX2 632 -> 650; dense 384 bits, portable 167-182 -> 416, AVX2
/// 383 -> 427. AVX-512 has its own (`avx512::masks_one`: 680 -> 780 and 397 -> 417-426; these
/// loads gave 654 and 427).
fn one_query_masks(
    codes: &AdcCodes,
    group: &QueryGroup,
    threshold: f64,
    blocks: Range<usize>,
    out: &mut [[u16; GROUP]],
) {
    let table = &group.tables[0];
    let t = &table.entries[..];
    let inv = codes.inv_norms.as_deref().filter(|_| group.normalise());
    for (b, o) in blocks.zip(out.iter_mut()) {
        let mut sums = [0u32; LANES];
        let len = block_entries(codes, b, t, |lane, e| sums[lane] += u32::from(e));
        *o = [0; GROUP];
        o[0] = block_mask(&sums, table, len, inv, b, threshold);
    }
}

fn portable_masks(
    codes: &AdcCodes,
    group: &QueryGroup,
    thresholds: &[f64; GROUP],
    blocks: Range<usize>,
    out: &mut [[u16; GROUP]],
) {
    let t = &group.entries;
    let inv = codes.inv_norms.as_deref().filter(|_| group.normalise());
    for (b, o) in blocks.zip(out.iter_mut()) {
        let (mut a, mut c) = ([0u64; LANES], [0u64; LANES]);
        let add = |lane: usize, e: u64| {
            a[lane] += e & HALVES;
            c[lane] += (e >> 8) & HALVES;
        };
        let len = block_entries(codes, b, t, add);
        *o = [0; GROUP];
        for (g, table) in group.tables.iter().enumerate() {
            o[g] = block_mask(&query_sums(&a, &c, g), table, len, inv, b, thresholds[g]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! AVX-512F kernels: per position two `vpgatherqq`-style gathers (`vpgatherdq`) of 8 `u64`
    //! entries (4 queries each), the bound in two registers of 8 `f64` per query.
    //!
    //! Safety: every function here requires `avx512f` (implied by the `Avx512` family, which
    //! also needs BW and VPOPCNTDQ). Gathers read the 8-byte entry at `entries + 8 * index` with
    //! `index < table_len`; loads stay inside the layout and the inverse norms (padded to whole
    //! blocks).

    use super::{AdcCodes, BOUND_REL, GROUP, HALVES, Kind, LANES, QueryGroup};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// The candidate mask of 16 sums (see `lane_candidate`, same operations in the same order).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn mask(acc: __m512i, base: f64, step: f64, inv: Option<&[f64; 16]>, threshold: f64) -> u16 {
        let step = _mm512_set1_pd(step);
        let base = _mm512_set1_pd(base);
        let rel = _mm512_set1_pd(BOUND_REL);
        let thr = _mm512_set1_pd(threshold);
        let halves = [
            _mm512_castsi512_si256(acc),
            _mm512_extracti64x4_epi64::<1>(acc),
        ];
        let mut m = 0u16;
        for (h, &q) in halves.iter().enumerate() {
            let n = _mm512_add_pd(_mm512_mul_pd(_mm512_cvtepu32_pd(q), step), base);
            let u = match inv {
                // SAFETY: `p` holds 16 values; this reads 8 from 8 h.
                Some(p) => _mm512_mul_pd(n, unsafe { _mm512_loadu_pd(p[8 * h..].as_ptr()) }),
                None => n,
            };
            let u = _mm512_add_pd(u, _mm512_mul_pd(_mm512_abs_pd(u), rel));
            // Not-less-or-equal, unordered: NaN keeps the code.
            let keep = _mm512_cmp_pd_mask::<_CMP_NLE_UQ>(u, thr);
            m |= u16::from(keep) << (8 * h);
        }
        m
    }

    /// Query `g`'s 16 sums: the 16-bit fields `field` of `x` (codes 0..8) and `y` (8..16).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn sums(x: __m512i, y: __m512i, field: usize) -> __m512i {
        let shift = _mm_cvtsi32_si128(16 * field as i32);
        let m = _mm512_set1_epi64(0xffff);
        let x = _mm512_and_si512(_mm512_srl_epi64(x, shift), m);
        let y = _mm512_and_si512(_mm512_srl_epi64(y, shift), m);
        let lo = _mm512_cvtepi64_epi32(x);
        let hi = _mm512_cvtepi64_epi32(y);
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn masks(
        codes: &AdcCodes,
        group: &QueryGroup,
        thresholds: &[f64; GROUP],
        blocks: Range<usize>,
        out: &mut [[u16; GROUP]],
    ) {
        let t = group.entries.as_ptr();
        let inv = codes.inv_norms.as_deref().filter(|_| group.normalise());
        let m = _mm512_set1_epi64(HALVES as i64);
        for (b, o) in blocks.zip(out.iter_mut()) {
            let z = _mm512_setzero_si512();
            let (mut a0, mut a1, mut c0, mut c1) = (z, z, z, z);
            let mut add = |g0: __m512i, g1: __m512i| {
                a0 = _mm512_add_epi64(a0, _mm512_and_si512(g0, m));
                c0 = _mm512_add_epi64(c0, _mm512_and_si512(_mm512_srli_epi64::<8>(g0), m));
                a1 = _mm512_add_epi64(a1, _mm512_and_si512(g1, m));
                c1 = _mm512_add_epi64(c1, _mm512_and_si512(_mm512_srli_epi64::<8>(g1), m));
            };
            let len = match codes.kind {
                Kind::Sparse => {
                    let (s, e) = (codes.starts[b], codes.starts[b + 1]);
                    let ids = codes.ids[s * LANES..e * LANES].as_ptr();
                    for i in 0..e - s {
                        // SAFETY: position i of this block holds 16 ids (32 bytes).
                        let v = unsafe { crate::bits::load_ymm(ids.add(i * LANES)) };
                        let i0 = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(v));
                        let i1 = _mm256_cvtepu16_epi32(_mm256_extracti128_si256::<1>(v));
                        // SAFETY: ids <= bits < table_len entries.
                        let (g0, g1) = unsafe {
                            (
                                _mm512_i32gather_epi64::<8>(i0, t.cast()),
                                _mm512_i32gather_epi64::<8>(i1, t.cast()),
                            )
                        };
                        add(g0, g1);
                    }
                    e - s
                }
                Kind::Dense => {
                    let s = codes.stride;
                    let bytes = codes.bytes[b * LANES * s..(b + 1) * LANES * s].as_ptr();
                    for i in 0..s {
                        // SAFETY: position i of this block holds 16 bytes.
                        let v = unsafe { _mm_loadu_si128(bytes.add(i * LANES).cast()) };
                        let i0 = _mm256_cvtepu8_epi32(v);
                        let i1 = _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(v));
                        // SAFETY: sub-table i has 256 entries; indices are bytes.
                        let (g0, g1) = unsafe {
                            let sub = t.add(i * 256).cast();
                            (
                                _mm512_i32gather_epi64::<8>(i0, sub),
                                _mm512_i32gather_epi64::<8>(i1, sub),
                            )
                        };
                        add(g0, g1);
                    }
                    s
                }
            };
            // Inverse norms are padded to whole blocks (`with_norms`).
            let p = inv.map(|v| -> &[f64; LANES] {
                v[b * LANES..(b + 1) * LANES].try_into().expect("16 values")
            });
            *o = [0; GROUP];
            for (g, table) in group.tables.iter().enumerate() {
                let (x, y) = if g.is_multiple_of(2) {
                    (a0, a1)
                } else {
                    (c0, c1)
                };
                let acc = sums(x, y, g / 2);
                o[g] = mask(acc, table.base(len), table.step, p, thresholds[g]);
            }
        }
    }

    /// [`masks`] for a group of one query: its entries' low bytes (the other queries' bytes
    /// are 0) gathered as 16 `u32` at once from the 8-byte entries (scale 8), summed in 32-bit
    /// lanes, where the 8-query kernel gathers twice as wide and splits 16-bit fields. The
    /// same sums, so the same masks (tested against the portable kernel).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn masks_one(
        codes: &AdcCodes,
        group: &QueryGroup,
        threshold: f64,
        blocks: Range<usize>,
        out: &mut [[u16; GROUP]],
    ) {
        debug_assert_eq!(group.len(), 1);
        let t = group.entries.as_ptr();
        let table = &group.tables[0];
        let inv = codes.inv_norms.as_deref().filter(|_| group.normalise());
        for (b, o) in blocks.zip(out.iter_mut()) {
            let mut acc = _mm512_setzero_si512();
            let len = match codes.kind {
                Kind::Sparse => {
                    let (s, e) = (codes.starts[b], codes.starts[b + 1]);
                    let ids = codes.ids[s * LANES..e * LANES].as_ptr();
                    for i in 0..e - s {
                        // SAFETY: position i of this block holds 16 ids (32 bytes).
                        let v = unsafe { crate::bits::load_ymm(ids.add(i * LANES)) };
                        // SAFETY: ids <= bits < table_len entries of 8 bytes; 4 are read.
                        let g = unsafe {
                            _mm512_i32gather_epi32::<8>(_mm512_cvtepu16_epi32(v), t.cast())
                        };
                        acc = _mm512_add_epi32(acc, g);
                    }
                    e - s
                }
                Kind::Dense => {
                    let s = codes.stride;
                    let bytes = codes.bytes[b * LANES * s..(b + 1) * LANES * s].as_ptr();
                    for i in 0..s {
                        // SAFETY: position i of this block holds 16 bytes; sub-table i has 256
                        // entries of 8 bytes, of which 4 are read.
                        let g = unsafe {
                            let v = _mm_loadu_si128(bytes.add(i * LANES).cast());
                            _mm512_i32gather_epi32::<8>(
                                _mm512_cvtepu8_epi32(v),
                                t.add(i * 256).cast(),
                            )
                        };
                        acc = _mm512_add_epi32(acc, g);
                    }
                    s
                }
            };
            let p = inv.map(|v| -> &[f64; LANES] {
                v[b * LANES..(b + 1) * LANES].try_into().expect("16 values")
            });
            *o = [0; GROUP];
            o[0] = mask(acc, table.base(len), table.step, p, threshold);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! AVX2 kernels: per position four `vpgatherdq` of 4 `u64` entries (4 queries each), the
    //! bound in registers of 4 `f64`.
    //!
    //! Safety: every function here requires `avx2`. Gathers read the 8-byte entry at
    //! `entries + 8 * index` with `index < table_len`; loads stay inside the layout and the
    //! inverse norms (padded to whole blocks).

    use super::{AdcCodes, BOUND_REL, GROUP, HALVES, Kind, LANES, QueryGroup, query_sums};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// The candidate mask of 8 sums (see `lane_candidate`, same operations in the same order).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn mask8(sums: &[u32], base: f64, step: f64, inv: Option<&[f64]>, threshold: f64) -> u16 {
        let step = _mm256_set1_pd(step);
        let base = _mm256_set1_pd(base);
        let rel = _mm256_set1_pd(BOUND_REL);
        let thr = _mm256_set1_pd(threshold);
        let sign = _mm256_set1_pd(-0.0);
        let mut m = 0u16;
        for h in 0..2 {
            // Sums are below 2^31, so the signed conversion is exact.
            // SAFETY: `sums` holds 8 values.
            let q = unsafe { _mm_loadu_si128(sums[4 * h..4 * h + 4].as_ptr().cast()) };
            let n = _mm256_add_pd(_mm256_mul_pd(_mm256_cvtepi32_pd(q), step), base);
            let u = match inv {
                // SAFETY: 4 values from 4 h, after the check that `p` holds 8.
                Some(p) => _mm256_mul_pd(n, unsafe { _mm256_loadu_pd(p[4 * h..8].as_ptr()) }),
                None => n,
            };
            let u = _mm256_add_pd(u, _mm256_mul_pd(_mm256_andnot_pd(sign, u), rel));
            let keep = _mm256_cmp_pd::<_CMP_NLE_UQ>(u, thr);
            m |= (_mm256_movemask_pd(keep) as u16) << (4 * h);
        }
        m
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn masks(
        codes: &AdcCodes,
        group: &QueryGroup,
        thresholds: &[f64; GROUP],
        blocks: Range<usize>,
        out: &mut [[u16; GROUP]],
    ) {
        let t = group.entries.as_ptr().cast::<i64>();
        let inv = codes.inv_norms.as_deref().filter(|_| group.normalise());
        let m = _mm256_set1_epi64x(HALVES as i64);
        for (b, o) in blocks.zip(out.iter_mut()) {
            let z = _mm256_setzero_si256();
            let (mut a, mut c) = ([z; 4], [z; 4]);
            let mut add = |j: usize, g: __m256i| {
                a[j] = _mm256_add_epi64(a[j], _mm256_and_si256(g, m));
                c[j] = _mm256_add_epi64(c[j], _mm256_and_si256(_mm256_srli_epi64::<8>(g), m));
            };
            let len = match codes.kind {
                Kind::Sparse => {
                    let (s, e) = (codes.starts[b], codes.starts[b + 1]);
                    let ids = codes.ids[s * LANES..e * LANES].as_ptr();
                    for i in 0..e - s {
                        // SAFETY: position i of this block holds 16 ids (32 bytes).
                        let v = unsafe { crate::bits::load_ymm(ids.add(i * LANES)) };
                        let lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(v));
                        let hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256::<1>(v));
                        let idx = [
                            _mm256_castsi256_si128(lo),
                            _mm256_extracti128_si256::<1>(lo),
                            _mm256_castsi256_si128(hi),
                            _mm256_extracti128_si256::<1>(hi),
                        ];
                        for (j, &x) in idx.iter().enumerate() {
                            // SAFETY: ids <= bits < table_len entries.
                            add(j, unsafe { _mm256_i32gather_epi64::<8>(t, x) });
                        }
                    }
                    e - s
                }
                Kind::Dense => {
                    let s = codes.stride;
                    let bytes = codes.bytes[b * LANES * s..(b + 1) * LANES * s].as_ptr();
                    for i in 0..s {
                        // SAFETY: position i of this block holds 16 bytes.
                        let v = unsafe { _mm_loadu_si128(bytes.add(i * LANES).cast()) };
                        let idx = [
                            _mm_cvtepu8_epi32(v),
                            _mm_cvtepu8_epi32(_mm_srli_si128::<4>(v)),
                            _mm_cvtepu8_epi32(_mm_srli_si128::<8>(v)),
                            _mm_cvtepu8_epi32(_mm_srli_si128::<12>(v)),
                        ];
                        // SAFETY: sub-table i has 256 entries; indices are bytes.
                        let sub = unsafe { t.add(i * 256) };
                        for (j, &x) in idx.iter().enumerate() {
                            // SAFETY: as above.
                            add(j, unsafe { _mm256_i32gather_epi64::<8>(sub, x) });
                        }
                    }
                    s
                }
            };
            let (mut av, mut cv) = ([0u64; LANES], [0u64; LANES]);
            for j in 0..4 {
                // SAFETY: each array holds 16 u64, stored 4 at a time.
                unsafe {
                    _mm256_storeu_si256(av[4 * j..].as_mut_ptr().cast(), a[j]);
                    _mm256_storeu_si256(cv[4 * j..].as_mut_ptr().cast(), c[j]);
                }
            }
            let p = inv.map(|v| &v[b * LANES..(b + 1) * LANES]);
            *o = [0; GROUP];
            for (g, table) in group.tables.iter().enumerate() {
                let (base, s) = (table.base(len), query_sums(&av, &cv, g));
                o[g] = mask8(&s[..8], base, table.step, p, thresholds[g])
                    | (mask8(&s[8..], base, table.step, p.map(|p| &p[8..]), thresholds[g]) << 8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::{desc_key, table_score, table_sum};

    #[test]
    fn families_give_the_same_masks_and_the_bound_holds() {
        let n = 53;
        families_case(n, &(0..n).collect::<Vec<_>>());
    }

    /// The same on 21 codes (a block and a partial one) and three thresholds: quick enough
    /// for Miri, which runs each family's gathers and loads against the layout's bounds.
    #[test]
    fn families_give_the_same_masks_small() {
        families_case(21, &[0, 9, 20]);
    }

    /// Every family's candidate masks agree and keep every code above the threshold of row
    /// `r0`'s score, for each of `r0s`; every family's scan of rows `3..n` is the exact top 5.
    fn families_case(n: usize, r0s: &[usize]) {
        let bits = 130;
        let w = 3;
        let mut x = 99u64;
        let mut codes = vec![0u64; n * w];
        for c in codes.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *c = x & (x >> 5);
        }
        for row in codes.chunks_exact_mut(w) {
            row[2] &= 3;
        }
        // Eight queries of different scales and signs; whole and partial groups.
        let tables: Vec<Vec<f32>> = (0..8)
            .map(|q| {
                (0..bits)
                    .map(|j| (j as f32 * 0.71 + q as f32).sin() * [1.0, -3.0, 1e-3, 50.0][q % 4])
                    .collect()
            })
            .collect();
        let offsets = [0.3f32, -1.0, 0.0, 7.0, 1.0, 0.0, -0.5, 2.0];
        let norms: Vec<f32> = (0..n).map(|r| (r % 4) as f32 * 0.5).collect();
        let sparse = crate::sparse::SparseCodes::build(&codes, bits).unwrap();
        for layout in [
            AdcCodes::from_sparse(&sparse.view()).unwrap(),
            AdcCodes::from_packed(&codes, bits).unwrap(),
        ] {
            for (norm, nq) in [(false, 8), (true, 8), (false, 3), (true, 1)] {
                let layout = if norm {
                    layout.clone().with_norms(&norms).unwrap()
                } else {
                    layout.clone()
                };
                let qts = (0..nq)
                    .map(|q| QuantisedTable::new(&layout, &tables[q], offsets[q], norm).unwrap())
                    .collect();
                let group = QueryGroup::new(qts).unwrap();
                let exact: Vec<Vec<f32>> = (0..nq)
                    .map(|q| {
                        (0..n)
                            .map(|r| {
                                let s = table_sum(&codes[r * w..(r + 1) * w], &tables[q]);
                                table_score(offsets[q], s, norm.then(|| norms[r]))
                            })
                            .collect()
                    })
                    .collect();
                for &r0 in r0s {
                    let thr: Vec<f32> = (0..nq).map(|q| exact[q][r0]).collect();
                    let mut want = None;
                    for f in KernelFamily::supported() {
                        let mut out = vec![[0u16; GROUP]; layout.blocks()];
                        candidates(f, &layout, &group, &thr, 0..layout.blocks(), &mut out).unwrap();
                        // Every code scoring above the threshold is a candidate.
                        for (q, ex) in exact.iter().enumerate() {
                            for (r, &s) in ex.iter().enumerate() {
                                if s > thr[q] {
                                    assert!(out[r / LANES][q] >> (r % LANES) & 1 == 1, "{f} {r}");
                                }
                            }
                        }
                        match &want {
                            None => want = Some(out),
                            Some(w) => assert_eq!(w, &out, "{f}"),
                        }
                    }
                }
                for f in KernelFamily::supported() {
                    let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(5, None)).collect();
                    let st = scan(f, &layout, &group, 3..n, &mut tops, |q, r| {
                        desc_key(exact[q][r])
                    })
                    .unwrap();
                    for (q, top) in tops.into_iter().enumerate() {
                        let mut all = TopK::new(5, None);
                        for (r, &s) in exact[q].iter().enumerate().skip(3) {
                            all.offer(desc_key(s), r as u32);
                        }
                        assert_eq!(top.into_sorted_keys(), all.into_sorted_keys());
                    }
                    assert_eq!(st.scanned, ((n - 3) * nq) as u64);
                }
            }
        }
    }

    /// Ids beyond the bits (a `sparse.bin` changed on disk after it was checked at open) are
    /// refused where the layout copies them, never gathered from outside a table.
    #[test]
    fn from_sparse_refuses_ids_beyond_the_bits() {
        // Rows: {0, 2}, {}, {2, 69}, {0}.
        let codes = vec![0b101u64, 0, 0, 0, 0b100, 1 << 5, 1, 0];
        let sc = crate::sparse::SparseCodes::build(&codes, 70).unwrap();
        let mut bytes = Vec::new();
        sc.write_payload(|b| {
            bytes.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        let words: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let payload: &[u8] = bytemuck::cast_slice(&words);
        let l = sc.view().layout();
        let as_70 = SparseView::from_validated(payload, 70, &l);
        assert_eq!(AdcCodes::from_sparse(&as_70).unwrap().positions(0), 2);
        // The same ids read as 64-bit codes: id 69 is out of range.
        let as_64 = SparseView::from_validated(payload, 64, &l);
        assert!(AdcCodes::from_sparse(&as_64).is_err());
    }

    #[test]
    fn bad_arguments_are_errors() {
        let layout = AdcCodes::from_packed(&[1u64, 2], 8).unwrap();
        assert!(QuantisedTable::new(&layout, &[0.0; 7], 0.0, false).is_err());
        assert!(QuantisedTable::new(&layout, &[f32::NAN; 8], 0.0, false).is_err());
        assert!(QuantisedTable::new(&layout, &[0.0; 8], f32::INFINITY, false).is_err());
        assert!(QuantisedTable::new(&layout, &[0.0; 8], 0.0, true).is_err());
        let qt = QuantisedTable::new(&layout, &[1.0; 8], 0.0, false).unwrap();
        assert!(QueryGroup::new(Vec::new()).is_err());
        assert!(QueryGroup::new(vec![qt.clone(); GROUP + 1]).is_err());
        let normed = layout.clone().with_norms(&[1.0, 1.0]).unwrap();
        let qn = QuantisedTable::new(&normed, &[1.0; 8], 0.0, true).unwrap();
        assert!(QueryGroup::new(vec![qt.clone(), qn]).is_err());
        let group = QueryGroup::new(vec![qt]).unwrap();
        let f = KernelFamily::Portable;
        let mut out = [[0u16; GROUP]; 2];
        assert!(candidates(f, &layout, &group, &[0.0], 0..2, &mut out).is_err());
        assert!(candidates(f, &layout, &group, &[0.0], 0..1, &mut []).is_err());
        assert!(candidates(f, &layout, &group, &[0.0, 1.0], 0..1, &mut out).is_err());
        let mut tops = [TopK::new(1, None)];
        assert!(scan(f, &layout, &group, 0..3, &mut tops, |_, _| 0).is_err());
        assert!(scan(f, &layout, &group, 0..2, &mut [], |_, _| 0).is_err());
        let other = AdcCodes::from_packed(&[1u64], 16).unwrap();
        assert!(candidates(f, &other, &group, &[0.0], 0..1, &mut out).is_err());
        assert!(layout.clone().with_norms(&[1.0]).is_err());
        assert!(AdcCodes::from_packed(&[1u64 << 9], 8).is_err());
    }
}
