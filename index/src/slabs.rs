//! The codes transposed into slabs of 256 or 512 rows: the exact Hamming scan of a batch of
//! queries by bit-sliced counting.
//!
//! AVX2 counts bits with a nibble lookup (`vpshufb`), about ten instructions per code pair at
//! 256 bits ([`crate::hamming`]). Transposed, a slab holds bit `j` of its codes as one *column*
//! (one register: 256 rows for AVX2, 512 for AVX-512), and a query's overlap `|q and b|` with
//! all of them is the bit-sliced sum of the query's `m` columns ([`crate::counters`]): about
//! five logic instructions per column and register with AVX2, two with AVX-512's ternary
//! logic, and no shuffles. The slabs are built once per index (like the table scan's layout,
//! [`crate::adc`]) and hold as many bytes as the codes, plus the few planes below.
//!
//! **Exactness.** `hamming(q, b) = m + |b| - 2 |q and b|`. Write `|b| = 2h + e` (`e` the
//! parity). Each slab stores, beside its columns, `H - h` for every row (`H = 32 w`, half a
//! code's words' bits, so never negative) as planes, and the parities: the counters start at
//! `H - h`, and after the query's columns hold `X = |q and b| + H - h`. A row's distance is below
//! the query's threshold `t` exactly when `X >= floor((m - t + e) / 2) + 1 + H`: two comparisons
//! with constants, one for each parity, pick exactly the rows that can enter the top k at the
//! start of the slab. They are offered with their distance recomputed from the row-major code.
//! Thresholds only fall and rows are offered in ascending order, so the result is the flat
//! scan's: same rows, same distances, ties by row.

use rayon::prelude::*;

use crate::bits::{Line, for_each_set_bit, popcount};
#[cfg(target_arch = "x86_64")]
use crate::counters::x86;
use crate::counters::{Columns, Lanes, add_columns, at_least, planes_for};
use crate::hamming::hamming;
use crate::kernel::KernelFamily;
use crate::topk::TopK;

/// Words per column of `family`'s slabs: 4 (256 rows, one AVX2 register) or 8 (512 rows, one
/// AVX-512 register); `None` for the portable family, which scans the row-major codes.
pub(crate) fn lane_words(family: KernelFamily) -> Option<usize> {
    match family {
        KernelFamily::Avx2 => Some(4),
        KernelFamily::Avx512 => Some(8),
        KernelFamily::Portable => None,
    }
}

/// Rows per tile of a slab scan: a multiple of every slab height.
pub(crate) const TILE_ROWS: usize = 8192;

/// Queries from which a batch is scanned through slabs already built.
const MIN_QUERIES: usize = 8;

/// Queries from which a batch builds the slabs with AVX2: the transposition costs about what
/// the slabs save on 70 queries (1M codes of 256 or 1024 bits, AMD EPYC Zen 5: built in 11 to
/// 55 ms, a query's scan 0.19 to 0.8 ms faster), so a batch of 64 repays most of it by itself.
/// An index keeps them for later batches.
const BUILD_MIN_QUERIES: usize = 64;

/// [`BUILD_MIN_QUERIES`] with AVX-512, whose row-major scan is fast: 1M codes of 1024 bits
/// with 16 or 112 bits set, built in 51 to 60 ms, a query's scan 0.29 or 0.23 ms faster.
const BUILD_MIN_QUERIES_AVX512: usize = 256;

/// Codes transposed into slabs of `64 x lane_words` rows (see the [module docs](self)).
#[derive(Debug, Clone)]
pub(crate) struct SlabCodes {
    bits: usize,
    /// Words per column (4 or 8).
    lane_words: usize,
    /// Planes of `H - h` per row.
    start_planes: usize,
    /// Columns per slab: `bits` columns, `start_planes` planes of `H - h`, one of parities.
    stride: usize,
    /// The slabs, one after the other, `stride x lane_words` words each.
    lines: Vec<Line>,
}

/// Whether a Hamming batch of `nq` queries on codes of `bits` bits runs on `family`'s slabs,
/// when they are already built (`built`) or not.
///
/// AVX2 gains on every batch (its row-major scan counts bits by nibble lookups). AVX-512's
/// `vpopcntq` scan is beaten on codes wider than 256 bits, sparse or dense (AMD EPYC Zen 5,
/// 2026-12-05, same bytes out, queries per second on slabs against the row-major kernel: 100k
/// WordNet codes, half the bits set, 10k queries, 1 thread: 384 bits 25,600 against 9,300, 512
/// 18,300 against 11,100, 768 12,900 against 6,200, 1024 9,600 against 6,900; 1M random codes,
/// 1000 queries, 2 threads: 512 bits 3,300-3,800 against 2,000, 1024 1,700-1,900 against 1,300;
/// sparse queries gain more, 4.1x at 1M x 1024 bits with 16 set), but not at 256 bits (0.8x
/// with 16 bits set), where it keeps the row-major scan.
pub(crate) fn used_for(family: KernelFamily, nq: usize, bits: usize, built: bool) -> bool {
    let build_min = match family {
        KernelFamily::Avx2 => BUILD_MIN_QUERIES,
        KernelFamily::Avx512 if bits > 256 => BUILD_MIN_QUERIES_AVX512,
        _ => return false,
    };
    bits <= u16::MAX as usize
        && family.is_supported()
        && nq >= if built { MIN_QUERIES } else { build_min }
}

/// What `family`'s slab scan of `n` codes costs a query with `m` set bits, in the unit of the
/// inverted search's rule ([`crate::hamming::scan_word_cost`]: a word of the AVX-512 row-major
/// scan). Fitted to 1M codes on an AMD EPYC Zen 5 (against the AVX-512 scan of the same codes):
/// with AVX2, `(m + 64) n / 16` (dense 256- and 1024-bit codes cost `m n / 16`; sparse ones a
/// fixed part per slab worth about 64 columns: TopK codes, m = 16, `5 n`); with AVX-512,
/// `(m + 147) n / 42` (m = 16: `3.9 n`, m = 112: `6.2 n`, against `16 n` row-major).
pub(crate) fn scan_cost(family: KernelFamily, n: usize, m: usize) -> u64 {
    let (fixed, per) = match family {
        KernelFamily::Avx512 => (147, 42),
        _ => (64, 16),
    };
    ((m as u64 + fixed) * n as u64) / per
}

/// Name of `family`'s slab scan for `--stats`.
pub(crate) fn kernel_name(family: KernelFamily) -> &'static str {
    match family {
        KernelFamily::Avx512 => "avx512-slabs",
        _ => "avx2-slabs",
    }
}

impl SlabCodes {
    /// Transposes `codes` (rows of `ceil(bits / 64)` words) into slabs with `lane_words` (4 or
    /// 8) words per column; `None` for more than 65,535 bits.
    pub(crate) fn build(codes: &[u64], bits: usize, lane_words: usize) -> Option<SlabCodes> {
        Self::build_with(codes, bits, lane_words, KernelFamily::Avx2.is_supported())
    }

    /// [`build`](Self::build), four words of each row transposed at once with AVX2 if `avx2`
    /// (which the CPU must have; the same slabs either way).
    fn build_with(codes: &[u64], bits: usize, lane_words: usize, avx2: bool) -> Option<SlabCodes> {
        assert!(
            lane_words == 4 || lane_words == 8,
            "slabs of 4 or 8 words per column"
        );
        if bits == 0 || bits > u16::MAX as usize {
            return None;
        }
        let (w, lw) = (bits.div_ceil(64), lane_words);
        let n = codes.len() / w;
        let half = 32 * w;
        let start_planes = planes_for(half);
        let stride = bits + start_planes + 1;
        let slab_words = stride * lw;
        let words = n.div_ceil(64 * lw) * slab_words;
        // The slabs start on a cache line and every column is as aligned as it is wide (32 or 64
        // bytes), so no column load straddles two lines. As many bytes as the codes: where
        // memory cannot hold them (an index mapped larger than memory), no slabs, and the
        // row-major scan answers, rather than an abort.
        let mut lines = Vec::new();
        lines.try_reserve_exact(words.div_ceil(8)).ok()?;
        lines.resize(words.div_ceil(8), Line::ZERO);
        let all: &mut [u64] = bytemuck::cast_slice_mut(&mut lines);
        all[..words]
            .par_chunks_mut(slab_words)
            .enumerate()
            .for_each(|(s, slab)| {
                for l in 0..lw {
                    let r0 = (s * lw + l) * 64;
                    let rows = n.saturating_sub(r0).min(64);
                    if rows == 0 {
                        break;
                    }
                    let lane = &codes[r0 * w..(r0 + rows) * w];
                    // Advanced only by the AVX2 transpose, which exists only on x86-64.
                    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
                    let mut wi = 0;
                    #[cfg(not(target_arch = "x86_64"))]
                    let _ = avx2;
                    #[cfg(target_arch = "x86_64")]
                    while avx2 && wi + 4 <= w {
                        let mut x = [[0u64; 4]; 64];
                        // SAFETY: `avx2` only if the CPU has it (`build`, and the tests).
                        unsafe { avx2::transpose_four(lane, w, wi, &mut x) };
                        for (b, four) in x.iter().enumerate() {
                            for (t, &col) in four.iter().enumerate() {
                                let j = (wi + t) * 64 + b;
                                if j < bits {
                                    slab[j * lw + l] = col;
                                }
                            }
                        }
                        wi += 4;
                    }
                    for wi in wi..w {
                        let mut x = [0u64; 64];
                        for (r, code) in lane.chunks_exact(w).enumerate() {
                            x[r] = code[wi];
                        }
                        transpose64(&mut x);
                        for (b, &col) in x.iter().enumerate().take(bits - wi * 64) {
                            slab[(wi * 64 + b) * lw + l] = col;
                        }
                    }
                    // Each row's counter start H - h, and its parity e above it.
                    let mut x = [0u64; 64];
                    for (r, code) in lane.chunks_exact(w).enumerate() {
                        let pop = popcount(code) as usize;
                        x[r] = (half - pop / 2) as u64 | ((pop & 1) as u64) << start_planes;
                    }
                    transpose64(&mut x);
                    for p in 0..=start_planes {
                        slab[(bits + p) * lw + l] = x[p];
                    }
                }
            });
        Some(SlabCodes {
            bits,
            lane_words,
            start_planes,
            stride,
            lines,
        })
    }

    /// Words per column (4 or 8).
    pub(crate) fn lane_words(&self) -> usize {
        self.lane_words
    }

    /// Rows per slab.
    fn slab_rows(&self) -> usize {
        64 * self.lane_words
    }

    /// Slab `s`'s words, or `None` past the last.
    fn slab(&self, s: usize) -> Option<&[u64]> {
        let words: &[u64] = bytemuck::cast_slice(&self.lines);
        let len = self.stride * self.lane_words;
        words.get(s * len..(s + 1) * len)
    }

    /// Offers to `tops[i]` every row of `codes` (rows `first..`, `first` a multiple of the slab
    /// height) whose distance to `queries[i]` is below its threshold, with that distance, in
    /// ascending row order: what [`crate::hamming`]'s scan does, computed through the slabs.
    /// A family the CPU lacks, or whose registers are not the slabs' width, runs the portable
    /// loop.
    pub(crate) fn scan(
        &self,
        family: KernelFamily,
        queries: &[SlabQuery<'_>],
        codes: &[u64],
        first: usize,
        tops: &mut [TopK],
    ) {
        // Once per tile: the unchecked column loads rely on these.
        assert!(
            queries
                .iter()
                .all(|q| (q.bits, q.lane_words) == (self.bits, self.lane_words))
                && queries.len() == tops.len(),
            "slab queries prepared for these slabs, one top-k each"
        );
        assert!(
            first.is_multiple_of(self.slab_rows()),
            "tiles start on a slab"
        );
        #[cfg(target_arch = "x86_64")]
        let fits = lane_words(family) == Some(self.lane_words) && family.is_supported();
        // SAFETY (each arm): the vector arms only for a family the CPU has whose registers are
        // the slabs' width (`fits`); the portable lanes need no CPU feature and are as wide as
        // the slabs.
        unsafe {
            match (family, self.lane_words) {
                #[cfg(target_arch = "x86_64")]
                (KernelFamily::Avx2, _) if fits => self.scan_avx2(queries, codes, first, tops),
                #[cfg(target_arch = "x86_64")]
                (KernelFamily::Avx512, _) if fits => self.scan_avx512(queries, codes, first, tops),
                (_, 4) => self.scan_any::<[u64; 4]>(queries, codes, first, tops),
                _ => self.scan_any::<[u64; 8]>(queries, codes, first, tops),
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn scan_avx2(
        &self,
        queries: &[SlabQuery<'_>],
        codes: &[u64],
        first: usize,
        tops: &mut [TopK],
    ) {
        // SAFETY: this function runs only on CPUs with AVX2 (its target feature).
        unsafe { self.scan_any::<x86::Ymm>(queries, codes, first, tops) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn scan_avx512(
        &self,
        queries: &[SlabQuery<'_>],
        codes: &[u64],
        first: usize,
        tops: &mut [TopK],
    ) {
        // SAFETY: this function runs only on CPUs with AVX-512F (its target features).
        unsafe { self.scan_any::<x86::Zmm>(queries, codes, first, tops) }
    }

    /// The scan on lanes `T` (inlined into each compiled copy).
    ///
    /// # Safety
    /// The CPU has `T`'s instructions, and `T::WORDS` is the slabs' `lane_words`.
    #[inline(always)]
    unsafe fn scan_any<T: Lanes>(
        &self,
        queries: &[SlabQuery<'_>],
        codes: &[u64],
        first: usize,
        tops: &mut [TopK],
    ) {
        unsafe {
            debug_assert_eq!(T::WORDS, self.lane_words);
            let w = self.bits.div_ceil(64);
            let end = first + codes.len() / w;
            let height = self.slab_rows();
            for s in first / height..end.div_ceil(height) {
                let slab = self.slab(s).expect("rows within the slabs");
                // The queries read the slab's columns in no order the hardware prefetcher follows:
                // ask for the next slab while this one is counted.
                if let Some(next) = self.slab(s + 1) {
                    crate::bits::prefetch(next);
                }
                let rows = SlabRows {
                    first,
                    row0: s * height,
                    end,
                    codes,
                    w,
                };
                for (q, top) in queries.iter().zip(tops.iter_mut()) {
                    // The counters live in registers only if their number is a constant.
                    match q.planes {
                        // At least planes_for(32) = 6 (a counter may reach H = 32 w).
                        0..=6 => self.scan_slab::<T, 6>(slab, q, &rows, top),
                        7 => self.scan_slab::<T, 7>(slab, q, &rows, top),
                        8 => self.scan_slab::<T, 8>(slab, q, &rows, top),
                        9 => self.scan_slab::<T, 9>(slab, q, &rows, top),
                        10..=12 => self.scan_slab::<T, 12>(slab, q, &rows, top),
                        _ => self.scan_slab::<T, MAX_PLANES>(slab, q, &rows, top),
                    }
                }
            }
        }
    }

    /// One query against one slab with `P` counter planes (`q.planes <= P`).
    ///
    /// # Safety
    /// As [`scan_any`](Self::scan_any).
    #[inline(always)]
    unsafe fn scan_slab<T: Lanes, const P: usize>(
        &self,
        slab: &[u64],
        q: &SlabQuery<'_>,
        rows: &SlabRows<'_>,
        top: &mut TopK,
    ) {
        let half = (32 * rows.w) as i64;
        let (m, t) = (i64::from(q.m), i64::from(top.threshold()));
        // X = |q and b| + H - h >= floor((m - t + e) / 2) + 1 + H for rows of parity e.
        let need = |e: i64| ((m - t + e).div_euclid(2) + 1 + half).max(0) as u64;
        let (need_even, need_odd) = (need(0), need(1));
        if need_even as i64 > m + half {
            return; // not even a row with h = 0 and every query bit could enter
        }
        let lw = self.lane_words;
        let column = |j: usize| &slab[j * lw..(j + 1) * lw];
        // SAFETY (here and in the counting below): the caller's contract.
        let mut planes = [unsafe { T::zero() }; P];
        for (p, plane) in planes.iter_mut().enumerate().take(self.start_planes) {
            // SAFETY: a column holds T::WORDS = lw words; the CPU has T (the caller's contract).
            *plane = unsafe { T::load(column(self.bits + p).as_ptr()) };
        }
        let cols = SlabColumns {
            slab,
            cols: &q.cols,
            lanes: std::marker::PhantomData,
        };
        let (even, odd) = unsafe {
            add_columns(&mut planes, &cols);
            (at_least(&planes, need_even), at_least(&planes, need_odd))
        };
        // SAFETY: as above.
        let parity = unsafe { T::load(column(self.bits + self.start_planes).as_ptr()) };
        let mut masks = [0u64; 8];
        even.and_not(parity).or(odd.and(parity)).store(&mut masks);
        for (l, &mask) in masks[..lw].iter().enumerate() {
            let mut mask = mask;
            while mask != 0 {
                let r = rows.row0 + l * 64 + mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if r >= rows.end {
                    return;
                }
                let code = &rows.codes[(r - rows.first) * rows.w..(r - rows.first + 1) * rows.w];
                // r < n <= u32::MAX (checked by the callers).
                top.offer(hamming(q.words, code), r as u32);
            }
        }
    }
}

/// Counter planes for the largest codes (65,535 bits: `X < 1.5 x 2^16`).
const MAX_PLANES: usize = 17;

/// A slab's rows and where their row-major codes are.
struct SlabRows<'c> {
    /// Row of `codes[0]`.
    first: usize,
    /// The slab's first row.
    row0: usize,
    /// One past the last row of `codes`.
    end: usize,
    codes: &'c [u64],
    w: usize,
}

/// A query prepared for the slab scan: its set bits (the columns it adds, as byte offsets into
/// a slab: no scaling in the hot loop) and their number.
#[derive(Debug, Clone)]
pub(crate) struct SlabQuery<'q> {
    words: &'q [u64],
    /// The slabs' bits: every column number is below it.
    bits: usize,
    /// The slabs' words per column: the offsets are in columns of that many words.
    lane_words: usize,
    cols: Vec<u32>,
    m: u32,
    /// Counter planes: `X <= m + H`.
    planes: usize,
}

impl<'q> SlabQuery<'q> {
    /// `query` (`ceil(bits / 64)` words, bits at and beyond `bits` clear) for `slabs`.
    pub(crate) fn new(query: &'q [u64], slabs: &SlabCodes) -> Self {
        let mut cols = Vec::new();
        // j < bits <= 65,535: the offsets fit a u32.
        let column_bytes = 8 * slabs.lane_words;
        for_each_set_bit(query, slabs.bits, |j| cols.push((j * column_bytes) as u32));
        let m = cols.len() as u32;
        SlabQuery {
            words: query,
            bits: slabs.bits,
            lane_words: slabs.lane_words,
            planes: planes_for(m as usize + 32 * slabs.bits.div_ceil(64)),
            cols,
            m,
        }
    }
}

/// A query's columns in one slab, loaded as `T` (built only where the CPU has `T`'s
/// instructions: inside [`SlabCodes::scan_slab`]).
struct SlabColumns<'s, T> {
    slab: &'s [u64],
    cols: &'s [u32],
    lanes: std::marker::PhantomData<T>,
}

impl<T: Lanes> Columns<T> for SlabColumns<'_, T> {
    fn len(&self) -> usize {
        self.cols.len()
    }

    #[inline(always)]
    unsafe fn column(&self, i: usize) -> T {
        debug_assert!(i < self.cols.len());
        debug_assert!((self.cols[i] as usize) + 8 * T::WORDS <= std::mem::size_of_val(self.slab));
        // SAFETY: i < cols.len() (the caller's contract); every offset is that of a column
        // below the slabs' `bits` (`SlabQuery::new` reads only bits below it, and `scan` checks
        // that the query was prepared for these slabs), and a slab holds `bits` columns and
        // more, of T::WORDS words each. The CPU has T's instructions (where this is built).
        unsafe {
            let offset = *self.cols.get_unchecked(i) as usize;
            T::load(self.slab.as_ptr().cast::<u8>().add(offset).cast::<u64>())
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The AVX2 transposition of the slab build.

    use std::arch::x86_64::*;

    /// Words `wi..wi + 4` of each row of `lane` (up to 64 rows of `w` words; missing rows are
    /// zero) as four 64 x 64 bit matrices, transposed at once: afterwards bit `r` of
    /// `out[b][t]` is bit `b` of word `wi + t` of row `r` (what `transpose64` does for one word).
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose_four(
        lane: &[u64],
        w: usize,
        wi: usize,
        out: &mut [[u64; 4]; 64],
    ) {
        let mut x = [_mm256_setzero_si256(); 64];
        for (r, code) in lane.chunks_exact(w).take(64).enumerate() {
            // SAFETY: wi + 4 <= w words of the row (the caller's loop bound).
            x[r] = unsafe { crate::bits::load_ymm(code[wi..wi + 4].as_ptr()) };
        }
        // SAFETY: AVX2 (this function's target feature).
        unsafe {
            round::<32>(&mut x, 0x0000_0000_FFFF_FFFF);
            round::<16>(&mut x, 0x0000_FFFF_0000_FFFF);
            round::<8>(&mut x, 0x00FF_00FF_00FF_00FF);
            round::<4>(&mut x, 0x0F0F_0F0F_0F0F_0F0F);
            round::<2>(&mut x, 0x3333_3333_3333_3333);
            round::<1>(&mut x, 0x5555_5555_5555_5555);
        }
        for (o, v) in out.iter_mut().zip(x) {
            // SAFETY: `o` is 32 writable bytes.
            unsafe { _mm256_storeu_si256(o.as_mut_ptr().cast(), v) };
        }
    }

    /// One round of the block swap of `transpose64` on four matrices at once.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[inline(always)]
    unsafe fn round<const J: i32>(x: &mut [__m256i; 64], mask: u64) {
        // SAFETY: the caller's contract.
        unsafe {
            let mask = _mm256_set1_epi64x(mask as i64);
            let j = J as usize;
            let mut k = 0;
            while k < 64 {
                let t = _mm256_and_si256(
                    _mm256_xor_si256(_mm256_srli_epi64::<J>(x[k]), x[k + j]),
                    mask,
                );
                x[k] = _mm256_xor_si256(x[k], _mm256_slli_epi64::<J>(t));
                x[k + j] = _mm256_xor_si256(x[k + j], t);
                k = (k + j + 1) & !j;
            }
        }
    }
}

/// Transposes a 64 x 64 bit matrix in place: afterwards bit `r` of `x[b]` is what bit `b` of
/// `x[r]` was (Hacker's Delight's recursive block swap, six rounds).
fn transpose64(x: &mut [u64; 64]) {
    let mut j = 32;
    let mut mask: u64 = 0x0000_0000_FFFF_FFFF;
    while j != 0 {
        let mut k = 0;
        while k < 64 {
            // Swap the high j bits of x[k] with the low j bits of x[k + j].
            let t = ((x[k] >> j) ^ x[k + j]) & mask;
            x[k] ^= t << j;
            x[k + j] ^= t;
            k = (k + j + 1) & !j;
        }
        j >>= 1;
        mask ^= mask << j;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn transposes_bit_matrices() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let x: [u64; 64] = std::array::from_fn(|_| rng.random());
        let mut y = x;
        transpose64(&mut y);
        for (r, row) in x.iter().enumerate() {
            for (b, col) in y.iter().enumerate() {
                assert_eq!((col >> r) & 1, (row >> b) & 1, "row {r}, bit {b}");
            }
        }
    }

    /// Codes with a density per code from 0 to 1, so that popcounts and distances spread widely,
    /// and copies of earlier rows (ties).
    fn codes(rng: &mut Xoshiro256PlusPlus, n: usize, bits: usize) -> Vec<u64> {
        let w = bits.div_ceil(64);
        let mut out = vec![0u64; n * w];
        for r in 0..n {
            if r > 0 && rng.random_bool(0.1) {
                let src = rng.random_range(0..r);
                out.copy_within(src * w..(src + 1) * w, r * w);
                continue;
            }
            let density = rng.random::<f64>();
            for j in 0..bits {
                if rng.random_bool(density) {
                    out[r * w + j / 64] |= 1 << (j % 64);
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The slab scan, in tiles as the flat search hands them out, returns exactly the
        /// brute-force top k (rows, distances, ties by row) on every family the CPU has.
        #[test]
        fn slab_scan_equals_brute_force(
            n in 0usize..1500,
            bits in prop_oneof![Just(1usize), Just(8), Just(64), Just(100), Just(256), Just(384), Just(1024)],
            k in prop_oneof![Just(1usize), Just(10), Just(200), Just(2000)],
            max_d in prop_oneof![Just(None), Just(Some(0u32)), Just(Some(20u32))],
            tile_slabs in 1usize..4,
            seed in any::<u64>(),
        ) {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let w = bits.div_ceil(64);
            let base = codes(&mut rng, n, bits);
            let mut queries = codes(&mut rng, 6, bits);
            if n > 0 {
                // A query equal to a code: distance 0 and its copies tie.
                let r = rng.random_range(0..n);
                queries.extend_from_slice(&base[r * w..(r + 1) * w]);
            }
            let want: Vec<Vec<u64>> = queries
                .chunks_exact(w)
                .map(|q| {
                    let mut all: Vec<u64> = base
                        .chunks_exact(w)
                        .enumerate()
                        .map(|(r, b)| crate::topk::key(hamming(q, b), r as u32))
                        .filter(|&key| max_d.is_none_or(|m| key >> 32 <= u64::from(m)))
                        .collect();
                    all.sort_unstable();
                    all.truncate(k);
                    all
                })
                .collect();
            // Both slab widths, each scanned by every family (the ones of another width, and
            // the portable family, run the portable loop).
            for lane_words in [4, 8] {
                let slabs = SlabCodes::build(&base, bits, lane_words).unwrap();
                let prepared: Vec<SlabQuery> =
                    queries.chunks_exact(w).map(|q| SlabQuery::new(q, &slabs)).collect();
                let tile = tile_slabs * 512;
                for family in KernelFamily::supported() {
                    let mut tops: Vec<TopK> =
                        prepared.iter().map(|_| TopK::new(k, max_d)).collect();
                    for first in (0..n).step_by(tile) {
                        let end = (first + tile).min(n);
                        let block = &base[first * w..end * w];
                        slabs.scan(family, &prepared, block, first, &mut tops);
                    }
                    let got: Vec<Vec<u64>> =
                        tops.into_iter().map(TopK::into_sorted_keys).collect();
                    prop_assert_eq!(&got, &want, "{} on slabs of {} words", family, lane_words);
                }
            }
        }
    }

    /// [`slab_scan_equals_brute_force`] on a few small fixed cases, quick enough for Miri: a
    /// partial slab, a slab and a partial one, a tile that starts on the second slab, widths
    /// of one bit, a word, a partial second word and four words, both slab widths, every family.
    #[test]
    fn small_slab_scans_equal_brute_force() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        for (n, bits) in [(1usize, 1usize), (70, 64), (300, 100), (600, 256)] {
            let w = bits.div_ceil(64);
            let base = codes(&mut rng, n, bits);
            let mut queries = codes(&mut rng, 2, bits);
            queries.extend_from_slice(&base[(n - 1) * w..n * w]);
            for lane_words in [4, 8] {
                let slabs = SlabCodes::build(&base, bits, lane_words).unwrap();
                let prepared: Vec<SlabQuery> = queries
                    .chunks_exact(w)
                    .map(|q| SlabQuery::new(q, &slabs))
                    .collect();
                // Rows from the second slab on, as a tile after the first hands them out.
                let first = if n > 64 * lane_words {
                    64 * lane_words
                } else {
                    0
                };
                let want: Vec<Vec<u64>> = queries
                    .chunks_exact(w)
                    .map(|q| {
                        let mut t = TopK::new(3, None);
                        for (r, b) in base.chunks_exact(w).enumerate().skip(first) {
                            t.offer(hamming(q, b), r as u32);
                        }
                        t.into_sorted_keys()
                    })
                    .collect();
                for family in KernelFamily::supported() {
                    let mut tops: Vec<TopK> = prepared.iter().map(|_| TopK::new(3, None)).collect();
                    slabs.scan(family, &prepared, &base[first * w..], first, &mut tops);
                    let got: Vec<Vec<u64>> = tops.into_iter().map(TopK::into_sorted_keys).collect();
                    assert_eq!(
                        got, want,
                        "{family}: n {n}, bits {bits}, {lane_words} words"
                    );
                }
            }
        }
    }

    /// The AVX2 transposition (four words of each row at once) builds the slabs the portable one
    /// does, for widths with and without words left over.
    #[test]
    fn both_transpositions_build_the_same_slabs() {
        if !KernelFamily::Avx2.is_supported() {
            return;
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        for (n, bits) in [(1, 256), (300, 256), (700, 320), (600, 1000), (100, 64)] {
            let base = codes(&mut rng, n, bits);
            for lane_words in [4, 8] {
                let a = SlabCodes::build_with(&base, bits, lane_words, true).unwrap();
                let b = SlabCodes::build_with(&base, bits, lane_words, false).unwrap();
                assert_eq!(a.lines, b.lines, "n {n}, bits {bits}, {lane_words} words");
            }
        }
    }

    #[test]
    fn refuses_codes_it_cannot_count() {
        assert!(SlabCodes::build(&[], 0, 4).is_none());
        assert!(SlabCodes::build(&[], 1 << 16, 8).is_none());
        let slabs = SlabCodes::build(&[], 256, 8).unwrap();
        assert!(slabs.lines.is_empty() && slabs.slab(0).is_none());
    }
}
