//! Hamming distance kernels: XOR + popcount over packed `u64` words.
//!
//! * [`hamming`] and [`hamming_fixed`]: one pair of codes (generic and fixed-width).
//! * [`distances`]: one query against a block of codes; [`distances_batch`]: a block of queries
//!   against a block of codes, visiting the codes in cache-sized tiles so each tile is loaded once
//!   for all queries.
//! * The exact search uses fused *scan* kernels (distance + top-k threshold test, no distance
//!   array) chosen once per search by [`KernelFamily`] and code width.
//!
//! The portable family has specialised kernels for 1, 2, 3, 4, 6, 8, 12 and 16 words per code
//! (64..1024 bits; 384 and 768 are the sign bits of 384- and 768-d embeddings), the AVX2 family
//! for 1, 2, 4, 8, 12, 16, 24, 32, 48 and 64, the AVX-512 family for those and 6; other widths
//! use the portable loop. [`KernelFamily::Avx512`] computes eight
//! distances per step with `VPOPCNTDQ`; [`KernelFamily::Avx2`] does the same with Mula's nibble
//! lookup (`vpshufb`) and `vpsadbw`; every other case uses a portable loop over
//! `u64::count_ones`. All of them give identical results (tested against the naive loop, for
//! every family the CPU runs). Nothing here allocates.

use crate::kernel::KernelFamily;
use crate::topk::TopK;

/// Hamming distance between two codes of the same length in words.
///
/// ```
/// use bsa_index::hamming::hamming;
/// // Two 128-bit codes (two words each): bits 0 and 1 differ in word 0, bit 63 in word 1.
/// let a = [0b0011u64, 0];
/// let b = [0b0000u64, 1 << 63];
/// assert_eq!(hamming(&a, &b), 3);
/// assert_eq!(hamming(&a, &a), 0);
/// ```
///
/// # Panics
/// If the lengths differ.
#[inline]
pub fn hamming(a: &[u64], b: &[u64]) -> u32 {
    assert_eq!(a.len(), b.len(), "codes of different lengths");
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Hamming distance between two `W`-word codes (unrolled by the compiler).
///
/// Gives the same distance as [`hamming`] on the same words.
///
/// ```
/// use bsa_index::hamming::{hamming, hamming_fixed};
/// let a = [u64::MAX, 0b1010, 7];
/// let b = [0u64, 0b0110, 7];
/// assert_eq!(hamming_fixed(&a, &b), 64 + 2);
/// assert_eq!(hamming_fixed(&a, &b), hamming(&a, &b));
/// ```
#[inline(always)]
pub fn hamming_fixed<const W: usize>(a: &[u64; W], b: &[u64; W]) -> u32 {
    let mut d = 0;
    for w in 0..W {
        d += (a[w] ^ b[w]).count_ones();
    }
    d
}

/// Distances from `query` (`w = query.len()` words) to each of the `codes.len() / w` codes in
/// `codes`, written to `out` (one per code).
///
/// ```
/// use bsa_index::hamming::{distances, hamming};
/// let query = [0b1111u64, 0];
/// let codes = [0b1111u64, 0, /* row 1 */ 0b0001, 0, /* row 2 */ 0b1111, u64::MAX];
/// let mut out = [0u32; 3];
/// distances(&query, &codes, &mut out);
/// assert_eq!(out, [0, 3, 64]);
/// for (c, &d) in codes.chunks_exact(2).zip(&out) {
///     assert_eq!(d, hamming(&query, c));
/// }
/// ```
///
/// # Panics
/// If `query` is empty, `codes.len()` is not a multiple of `w`, or `out` has the wrong length.
pub fn distances(query: &[u64], codes: &[u64], out: &mut [u32]) {
    let w = query.len();
    assert!(w > 0, "empty query");
    assert_eq!(codes.len() % w, 0, "codes are not whole rows");
    assert_eq!(
        out.len(),
        codes.len() / w,
        "output length must equal the number of codes"
    );
    let k = Kernel::select(KernelFamily::current(), w);
    k.distances(query, codes, out);
}

/// Distances from each of the `queries.len() / w` queries to each of the `codes.len() / w` codes,
/// written row-major to `out` (`out[q * n_codes + c]`).
///
/// Codes are visited in tiles of about 32 KiB; each tile is compared with every query before the
/// next is loaded, so the codes are read from memory once per call instead of once per query.
///
/// ```
/// use bsa_index::hamming::{distances_batch, hamming};
/// let w = 1; // one word per code
/// let queries = [0b0000u64, 0b1111];
/// let codes = [0b0001u64, 0b0011, 0b0111];
/// let mut out = vec![0u32; queries.len() * codes.len()];
/// distances_batch(&queries, &codes, w, &mut out);
/// assert_eq!(out, [1, 2, 3, /* query 1 */ 3, 2, 1]);
/// for (q, query) in queries.chunks_exact(w).enumerate() {
///     for (c, code) in codes.chunks_exact(w).enumerate() {
///         assert_eq!(out[q * codes.len() + c], hamming(query, code));
///     }
/// }
/// ```
///
/// # Panics
/// If `w == 0`, the slices are not whole rows, or `out.len() != n_queries * n_codes`.
pub fn distances_batch(queries: &[u64], codes: &[u64], w: usize, out: &mut [u32]) {
    assert!(w > 0, "zero words per code");
    assert_eq!(queries.len() % w, 0, "queries are not whole rows");
    assert_eq!(codes.len() % w, 0, "codes are not whole rows");
    let nq = queries.len() / w;
    let nc = codes.len() / w;
    assert_eq!(
        out.len(),
        nq * nc,
        "output length must be n_queries * n_codes"
    );
    let k = Kernel::select(KernelFamily::current(), w);
    let tile = tile_codes(w);
    let mut start = 0;
    while start < nc {
        let end = (start + tile).min(nc);
        let block = &codes[start * w..end * w];
        for (qi, q) in queries.chunks_exact(w).enumerate() {
            k.distances(q, block, &mut out[qi * nc + start..qi * nc + end]);
        }
        start = end;
    }
}

/// Name of the kernel `family` uses for `words_per_code` words (e.g. `"avx512-w4"`,
/// `"avx2-w16"`, `"portable-any"`), for benchmarks and `--stats`. A family the CPU lacks names
/// the portable kernel it would fall back to.
///
/// ```
/// use bsa_index::hamming::kernel_name;
/// use bsa_index::KernelFamily;
/// // The portable family has a kernel for 4 words (256 bits), and a loop for 5.
/// assert_eq!(kernel_name(KernelFamily::Portable, 4), "portable-w4");
/// assert_eq!(kernel_name(KernelFamily::Portable, 5), "portable-any");
/// // Every name starts with the family that runs it, which may be the portable fallback.
/// let name = kernel_name(KernelFamily::current(), 16);
/// assert!(name.starts_with(KernelFamily::current().name()), "{name}");
/// ```
pub fn kernel_name(family: KernelFamily, words_per_code: usize) -> &'static str {
    Kernel::select(family, words_per_code).name()
}

/// What the flat scan of `family` spends per code word, relative to the AVX-512 scan: 1, 3
/// (AVX2) or 5 (portable). Measured with `examples/kernel_probe.rs` on 1024-bit codes (2.0, 6.1
/// and 9.8 ns per query-code pair on an Intel Xeon); the inverted search uses it to decide when a
/// query's posting lists or bitmaps beat the scan, whose cost depends on the family while theirs
/// barely does.
pub(crate) fn scan_word_cost(family: KernelFamily) -> u64 {
    match family {
        KernelFamily::Avx512 => 1,
        KernelFamily::Avx2 => 3,
        KernelFamily::Portable => 5,
    }
}

/// Codes per cache tile: about 32 KiB of codes, at least 64.
pub(crate) fn tile_codes(w: usize) -> usize {
    (32 * 1024 / (8 * w)).max(64)
}

type ScanFn = fn(&[u64], &[u64], u32, &mut TopK);
type DistFn = fn(&[u64], &[u64], &mut [u32]);

/// A kernel chosen for one code width: a fused scan (distance + threshold test) and a plain
/// distance writer.
#[derive(Clone, Copy)]
pub(crate) struct Kernel {
    scan: ScanFn,
    dist: DistFn,
    name: &'static str,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Kernel {
    /// The kernel of `family` for `w` words per code: the portable one where the family has no
    /// kernel of that width, or the CPU lacks the family (callers check it first:
    /// [`KernelFamily::resolve`]).
    pub(crate) fn select(family: KernelFamily, w: usize) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            let vector = match family {
                KernelFamily::Avx512 => avx512::select(w),
                KernelFamily::Avx2 => avx2::select(w),
                KernelFamily::Portable => None,
            };
            if let Some(k) = vector {
                return k;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = family;
        Self::portable(w)
    }

    /// The portable kernel for `w` words per code (used where no vector kernel applies, and in tests).
    pub(crate) fn portable(w: usize) -> Kernel {
        match w {
            1 => Kernel {
                scan: scan_fixed::<1>,
                dist: dist_fixed::<1>,
                name: "portable-w1",
            },
            2 => Kernel {
                scan: scan_fixed::<2>,
                dist: dist_fixed::<2>,
                name: "portable-w2",
            },
            3 => Kernel {
                scan: scan_fixed::<3>,
                dist: dist_fixed::<3>,
                name: "portable-w3",
            },
            4 => Kernel {
                scan: scan_fixed::<4>,
                dist: dist_fixed::<4>,
                name: "portable-w4",
            },
            6 => Kernel {
                scan: scan_fixed::<6>,
                dist: dist_fixed::<6>,
                name: "portable-w6",
            },
            8 => Kernel {
                scan: scan_fixed::<8>,
                dist: dist_fixed::<8>,
                name: "portable-w8",
            },
            12 => Kernel {
                scan: scan_fixed::<12>,
                dist: dist_fixed::<12>,
                name: "portable-w12",
            },
            16 => Kernel {
                scan: scan_fixed::<16>,
                dist: dist_fixed::<16>,
                name: "portable-w16",
            },
            _ => Kernel {
                scan: scan_dyn,
                dist: dist_dyn,
                name: "portable-any",
            },
        }
    }

    /// The kernel's name (for benchmarks and `--stats`).
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// Offers every code of `codes` (rows `first_row..`) to `topk`. `query.len()` is the width.
    #[inline]
    pub(crate) fn scan(&self, query: &[u64], codes: &[u64], first_row: u32, topk: &mut TopK) {
        (self.scan)(query, codes, first_row, topk)
    }

    /// Writes the distance of every code of `codes` to `out`.
    #[inline]
    pub(crate) fn distances(&self, query: &[u64], codes: &[u64], out: &mut [u32]) {
        (self.dist)(query, codes, out)
    }
}

fn scan_fixed<const W: usize>(query: &[u64], codes: &[u64], first_row: u32, topk: &mut TopK) {
    let q: &[u64; W] = query.try_into().expect("query width equals kernel width");
    let mut thr = topk.threshold();
    for (i, c) in codes.chunks_exact(W).enumerate() {
        // chunks_exact(W) yields W-element slices, so the conversion cannot fail.
        let c: &[u64; W] = c.try_into().expect("chunk of W words");
        let d = hamming_fixed(q, c);
        if d < thr {
            topk.push(d, first_row + i as u32);
            thr = topk.threshold();
        }
    }
}

fn dist_fixed<const W: usize>(query: &[u64], codes: &[u64], out: &mut [u32]) {
    let q: &[u64; W] = query.try_into().expect("query width equals kernel width");
    for (c, o) in codes.chunks_exact(W).zip(out.iter_mut()) {
        let c: &[u64; W] = c.try_into().expect("chunk of W words");
        *o = hamming_fixed(q, c);
    }
}

fn scan_dyn(query: &[u64], codes: &[u64], first_row: u32, topk: &mut TopK) {
    let mut thr = topk.threshold();
    for (i, c) in codes.chunks_exact(query.len()).enumerate() {
        let d = hamming(query, c);
        if d < thr {
            topk.push(d, first_row + i as u32);
            thr = topk.threshold();
        }
    }
}

fn dist_dyn(query: &[u64], codes: &[u64], out: &mut [u32]) {
    for (c, o) in codes.chunks_exact(query.len()).zip(out.iter_mut()) {
        *o = hamming(query, c);
    }
}

/// The pieces every vector family repeats: `select(w)`, which returns the family's [`Kernel`]
/// for `w` words per code (one of the listed widths) once `$detected` confirms the CPU has the
/// features, and the safe
/// `scan::<W>` / `dist::<W>` wrappers around the module's `unsafe` `scan_impl` / `dist_impl`.
#[cfg(target_arch = "x86_64")]
macro_rules! family_kernels {
    ($detected:expr, $prefix:literal, [$($w:literal),*]) => {
        pub(super) fn select(w: usize) -> Option<Kernel> {
            if !$detected {
                return None;
            }
            Some(match w {
                $($w => Kernel {
                    scan: scan::<$w>,
                    dist: dist::<$w>,
                    name: concat!($prefix, "-w", $w),
                },)*
                _ => return None,
            })
        }

        fn scan<const W: usize>(query: &[u64], codes: &[u64], first_row: u32, topk: &mut TopK) {
            assert_eq!(query.len(), W);
            // SAFETY: only reachable through `select`, which checked the CPU features.
            unsafe { scan_impl::<W>(query, codes, first_row, topk) }
        }

        fn dist<const W: usize>(query: &[u64], codes: &[u64], out: &mut [u32]) {
            assert_eq!(query.len(), W);
            // SAFETY: only reachable through `select`, which checked the CPU features.
            unsafe { dist_impl::<W>(query, codes, out) }
        }
    };
}

/// Offers row `first + j` with distance `dist(j)` for each set bit `j` of `mask`, in ascending
/// order: the hits of one step of a vector kernel.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn offer_mask(topk: &mut TopK, mut mask: u32, first: u32, dist: impl Fn(usize) -> u32) {
    while mask != 0 {
        let j = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        topk.offer(dist(j), first + j as u32);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! AVX-512F + VPOPCNTDQ kernels: eight codes per step, the popcounts of all their words in
    //! vector registers, then a transposing reduction to eight distances in row order.
    //!
    //! Safety: every `unsafe` function here requires the CPU features `avx512f` and
    //! `avx512vpopcntdq`. They are reachable only through [`select`], which returns them only after
    //! `is_x86_feature_detected!` confirmed both. Loads are unaligned (`loadu`) and stay inside
    //! the slices: each step reads exactly the 8 * W words of eight whole codes.

    use super::{Kernel, TopK};
    use std::arch::x86_64::*;

    family_kernels!(
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vpopcntdq"),
        "avx512",
        [1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64]
    );

    /// The query in 512-bit registers: for W = 1, 2 or 4 one register holding 8 / W copies,
    /// otherwise (W at most 64) `W.div_ceil(8)` registers, the lanes past the query's end zero.
    struct Query {
        regs: [__m512i; 8],
    }

    /// The words of a code that lie in its last, partial register (W not a multiple of 8), as
    /// a load mask: lanes `0..W % 8`.
    const fn tail_mask<const W: usize>() -> __mmask8 {
        ((1u32 << (W % 8)) - 1) as __mmask8
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load_query<const W: usize>(q: &[u64]) -> Query {
        unsafe {
            let mut regs = [_mm512_setzero_si512(); 8];
            if W < 8 && 8 % W == 0 {
                let mut lanes = [0u64; 8];
                for (i, l) in lanes.iter_mut().enumerate() {
                    *l = q[i % W];
                }
                regs[0] = _mm512_loadu_si512(lanes.as_ptr().cast());
            } else {
                for (m, r) in regs.iter_mut().enumerate().take(W / 8) {
                    *r = _mm512_loadu_si512(q[8 * m..].as_ptr().cast());
                }
                if !W.is_multiple_of(8) {
                    // Masked: reads only the query's own words, the other lanes are zero.
                    regs[W / 8] =
                        _mm512_maskz_loadu_epi64(tail_mask::<W>(), q[W / 8 * 8..].as_ptr().cast());
                }
            }
            Query { regs }
        }
    }

    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    #[inline]
    unsafe fn pop_xor(q: __m512i, p: *const u64) -> __m512i {
        unsafe { _mm512_popcnt_epi64(_mm512_xor_si512(q, _mm512_loadu_si512(p.cast()))) }
    }

    /// Adds adjacent 64-bit lanes of `a` and `b` pairwise: lane 2i gets a[2i]+a[2i+1], lane 2i+1
    /// gets b[2i]+b[2i+1].
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn pair_add(a: __m512i, b: __m512i) -> __m512i {
        _mm512_add_epi64(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
    }

    /// Adds 128-bit lanes: [a.L0+a.L1, a.L2+a.L3, b.L0+b.L1, b.L2+b.L3].
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn lane_add(a: __m512i, b: __m512i) -> __m512i {
        _mm512_add_epi64(
            _mm512_shuffle_i64x2::<0b10_00_10_00>(a, b),
            _mm512_shuffle_i64x2::<0b11_01_11_01>(a, b),
        )
    }

    /// Distances of the eight codes starting at `p` (each W words), lane i = code i.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    #[inline]
    unsafe fn dist8<const W: usize>(q: &Query, p: *const u64) -> __m512i {
        unsafe {
            match W {
                1 => pop_xor(q.regs[0], p),
                2 => {
                    // r0 = codes 0..4, r1 = codes 4..8 -> sums in lane order [0,4,1,5,2,6,3,7].
                    let s = pair_add(pop_xor(q.regs[0], p), pop_xor(q.regs[0], p.add(8)));
                    _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), s)
                }
                4 => {
                    // two codes per register -> sums in lane order [0,2,1,3,4,6,5,7].
                    let s01 = pair_add(pop_xor(q.regs[0], p), pop_xor(q.regs[0], p.add(8)));
                    let s23 =
                        pair_add(pop_xor(q.regs[0], p.add(16)), pop_xor(q.regs[0], p.add(24)));
                    let s = lane_add(s01, s23);
                    _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 1, 3, 4, 6, 5, 7), s)
                }
                _ => {
                    // Per-code lane counts a_i over the code's W / 8 whole registers and, when W is
                    // not a multiple of 8, a last one loaded masked to the code's own words (masked
                    // lanes neither read memory nor fault, and are zero, as are the query's there);
                    // then an 8x8 transposing sum (in row order).
                    let mut a = [_mm512_setzero_si512(); 8];
                    for (i, acc) in a.iter_mut().enumerate() {
                        let c = p.add(i * W);
                        let mut s = _mm512_setzero_si512();
                        for m in 0..W / 8 {
                            s = _mm512_add_epi64(s, pop_xor(q.regs[m], c.add(8 * m)));
                        }
                        if !W.is_multiple_of(8) {
                            let tail =
                                _mm512_maskz_loadu_epi64(tail_mask::<W>(), c.add(W / 8 * 8).cast());
                            let x = _mm512_xor_si512(q.regs[W / 8], tail);
                            s = _mm512_add_epi64(s, _mm512_popcnt_epi64(x));
                        }
                        *acc = s;
                    }
                    let x0 = lane_add(pair_add(a[0], a[1]), pair_add(a[2], a[3]));
                    let x1 = lane_add(pair_add(a[4], a[5]), pair_add(a[6], a[7]));
                    lane_add(x0, x1)
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    unsafe fn scan_impl<const W: usize>(
        query: &[u64],
        codes: &[u64],
        first_row: u32,
        topk: &mut TopK,
    ) {
        unsafe {
            let q = load_query::<W>(query);
            let n = codes.len() / W;
            let full = n / 8 * 8;
            let mut thr = _mm512_set1_epi64(i64::from(topk.threshold()));
            let mut i = 0;
            while i < full {
                // i + 8 <= n, so the eight codes at i lie inside `codes`.
                let d = dist8::<W>(&q, codes.as_ptr().add(i * W));
                let mask = _mm512_cmplt_epu64_mask(d, thr);
                if mask != 0 {
                    let mut lanes = [0u64; 8];
                    _mm512_storeu_si512(lanes.as_mut_ptr().cast(), d);
                    super::offer_mask(topk, mask.into(), first_row + i as u32, |j| lanes[j] as u32);
                    thr = _mm512_set1_epi64(i64::from(topk.threshold()));
                }
                i += 8;
            }
            super::scan_fixed::<W>(query, &codes[full * W..], first_row + full as u32, topk);
        }
    }

    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    unsafe fn dist_impl<const W: usize>(query: &[u64], codes: &[u64], out: &mut [u32]) {
        unsafe {
            let q = load_query::<W>(query);
            let n = (codes.len() / W).min(out.len());
            let full = n / 8 * 8;
            let mut i = 0;
            while i < full {
                let d = dist8::<W>(&q, codes.as_ptr().add(i * W));
                // i + 8 <= out.len(): store eight u32 distances.
                _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), _mm512_cvtepi64_epi32(d));
                i += 8;
            }
            super::dist_fixed::<W>(query, &codes[full * W..n * W], &mut out[full..n]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! AVX2 kernels: eight codes per step, as the AVX-512 ones, with the popcount done by Mula's
    //! nibble lookup: `vpshufb` looks up the bit count of each 4-bit half of every byte, and
    //! `vpsadbw` against zero adds the eight byte counts of each 64-bit word. Codes of four or
    //! more words add their byte counts first (at most 8 per byte per vector, so up to 31
    //! vectors fit a byte) and run one `vpsadbw` per code; a transposing reduction then gives
    //! eight `u32` distances in row order.
    //!
    //! All eight codes of a step go through the vector units. A hybrid that sent four of them
    //! through scalar `popcnt` instead (so integer and vector units would work side by side) was
    //! no faster on an Intel Xeon (Sapphire Rapids; 9% faster at 1024 bits, equal at 256) and
    //! slower on an AMD EPYC (Zen 4), an AVX2 kernel's main customer: 1M x 256-bit codes, 2
    //! threads, batch 1,397-1,428 QPS vector-only against 919-1,365 hybrid
    //! (`examples/flat_qps.rs`, alternating runs).
    //!
    //! Safety: every `unsafe` function here requires the CPU feature `avx2`. They are reachable
    //! only through [`select`], which returns them only after `is_x86_feature_detected!`
    //! confirmed it. Loads are unaligned (`loadu`) and stay inside the slices: each step reads
    //! exactly the 8 * W words of eight whole codes.

    use super::{Kernel, TopK};
    use std::arch::x86_64::*;

    // Widths that are multiples of 4 words only (below 4: 1 and 2). A 6-word kernel (a masked
    // or 128-bit load for the last two words) was 6% slower than the portable one on an AMD
    // EPYC (Zen 5: 2.14 against 2.02 ns per pair, `examples/kernel_probe.rs 384`); the 12-word
    // one is 10% faster (3.07 against 3.38).
    family_kernels!(
        is_x86_feature_detected!("avx2"),
        "avx2",
        [1, 2, 4, 8, 12, 16, 24, 32, 48, 64]
    );

    /// The query in 256-bit registers: for W < 4 one register holding 4 / W copies, for W >= 4
    /// (a multiple of 4, at most 64) W / 4 registers.
    struct Query {
        regs: [__m256i; 16],
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn load_query<const W: usize>(q: &[u64]) -> Query {
        unsafe {
            let mut regs = [_mm256_setzero_si256(); 16];
            if W < 4 {
                let mut lanes = [0u64; 4];
                for (i, l) in lanes.iter_mut().enumerate() {
                    *l = q[i % W];
                }
                regs[0] = crate::bits::load_ymm(lanes.as_ptr());
            } else {
                for (m, r) in regs.iter_mut().enumerate().take(W / 4) {
                    *r = crate::bits::load_ymm(q[4 * m..].as_ptr());
                }
            }
            Query { regs }
        }
    }

    /// Bit counts of the 32 bytes of `q ^ *p`, one per byte.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn byte_counts(q: __m256i, p: *const u64) -> __m256i {
        unsafe {
            let lut = _mm256_setr_epi8(
                0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, //
                0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
            );
            let low = _mm256_set1_epi8(0x0f);
            let x = _mm256_xor_si256(q, crate::bits::load_ymm(p));
            let lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(x, low));
            let hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16::<4>(x), low));
            _mm256_add_epi8(lo, hi)
        }
    }

    /// Adds the byte counts of each 64-bit word: four `u64` lanes.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn word_sums(bytes: __m256i) -> __m256i {
        _mm256_sad_epu8(bytes, _mm256_setzero_si256())
    }

    /// Popcounts of the four words of `q ^ *p`, one per `u64` lane.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn pop_xor(q: __m256i, p: *const u64) -> __m256i {
        unsafe { word_sums(byte_counts(q, p)) }
    }

    /// Adds adjacent 64-bit lanes of `a` and `b` pairwise within each 128-bit half:
    /// [a0+a1, b0+b1 | a2+a3, b2+b3].
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn pair_add(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi64(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b))
    }

    /// Packs two vectors of four small `u64` lanes into one of eight `u32` lanes:
    /// [a0, b0, a1, b1 | a2, b2, a3, b3].
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn interleave32(a: __m256i, b: __m256i) -> __m256i {
        _mm256_blend_epi32::<0b1010_1010>(a, _mm256_slli_epi64::<32>(b))
    }

    /// Eight `u32` distances in row order from the per-code `u64` lane sums `r[i]` (code i's
    /// distance is the sum of the four lanes of `r[i]`).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn reduce8(r: &[__m256i; 8]) -> __m256i {
        unsafe {
            // [r0_l, r1_l, r2_l, r3_l] summed over lane pairs, per 128-bit half.
            let ab = {
                let a = interleave32(r[0], r[1]);
                let b = interleave32(r[2], r[3]);
                _mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b))
            };
            let cd = {
                let c = interleave32(r[4], r[5]);
                let d = interleave32(r[6], r[7]);
                _mm256_add_epi32(_mm256_unpacklo_epi64(c, d), _mm256_unpackhi_epi64(c, d))
            };
            // Add the two 128-bit halves: [d0..d3 | d4..d7].
            _mm256_add_epi32(
                _mm256_permute2x128_si256::<0x20>(ab, cd),
                _mm256_permute2x128_si256::<0x31>(ab, cd),
            )
        }
    }

    /// Distances of the eight codes starting at `p` (each W words) as eight `u32`, lane i = code i.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dist8<const W: usize>(q: &Query, p: *const u64) -> __m256i {
        unsafe {
            match W {
                1 => {
                    // Two registers of four one-word codes: [0,1,2,3] and [4,5,6,7].
                    let a = pop_xor(q.regs[0], p);
                    let b = pop_xor(q.regs[0], p.add(4));
                    // [a0,b0,a1,b1 | a2,b2,a3,b3] -> row order.
                    let x = interleave32(a, b);
                    _mm256_permutevar8x32_epi32(x, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7))
                }
                2 => {
                    // Four registers of two two-word codes each.
                    let s01 = pair_add(pop_xor(q.regs[0], p), pop_xor(q.regs[0], p.add(4))); // [0,2|1,3]
                    let s23 = pair_add(pop_xor(q.regs[0], p.add(8)), pop_xor(q.regs[0], p.add(12))); // [4,6|5,7]
                    let x = interleave32(s01, s23); // [0,4,2,6 | 1,5,3,7]
                    _mm256_permutevar8x32_epi32(x, _mm256_setr_epi32(0, 4, 2, 6, 1, 5, 3, 7))
                }
                _ => {
                    // W = 4m: byte counts of a code's m registers added, then one vpsadbw per code.
                    let mut r = [_mm256_setzero_si256(); 8];
                    for (i, acc) in r.iter_mut().enumerate() {
                        let c = p.add(i * W);
                        let mut bytes = byte_counts(q.regs[0], c);
                        for m in 1..W / 4 {
                            bytes = _mm256_add_epi8(bytes, byte_counts(q.regs[m], c.add(4 * m)));
                        }
                        *acc = word_sums(bytes);
                    }
                    reduce8(&r)
                }
            }
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn scan_impl<const W: usize>(
        query: &[u64],
        codes: &[u64],
        first_row: u32,
        topk: &mut TopK,
    ) {
        unsafe {
            // W <= 64, so distances are at most 4096 and compare correctly as signed i32 against
            // a threshold clamped to i32::MAX.
            let clamp = |t: u32| _mm256_set1_epi32(t.min(i32::MAX as u32) as i32);
            let q = load_query::<W>(query);
            let n = codes.len() / W;
            let full = n / 8 * 8;
            let mut thr = clamp(topk.threshold());
            let mut i = 0;
            while i < full {
                // i + 8 <= n, so the eight codes at i lie inside `codes`.
                let d = dist8::<W>(&q, codes.as_ptr().add(i * W));
                let mask =
                    _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(thr, d))) as u32;
                if mask != 0 {
                    let mut lanes = [0u32; 8];
                    _mm256_storeu_si256(lanes.as_mut_ptr().cast(), d);
                    super::offer_mask(topk, mask, first_row + i as u32, |j| lanes[j]);
                    thr = clamp(topk.threshold());
                }
                i += 8;
            }
            super::scan_fixed::<W>(query, &codes[full * W..], first_row + full as u32, topk);
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn dist_impl<const W: usize>(query: &[u64], codes: &[u64], out: &mut [u32]) {
        unsafe {
            let q = load_query::<W>(query);
            let n = (codes.len() / W).min(out.len());
            let full = n / 8 * 8;
            let mut i = 0;
            while i < full {
                let d = dist8::<W>(&q, codes.as_ptr().add(i * W));
                // i + 8 <= out.len(): store eight u32 distances.
                _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), d);
                i += 8;
            }
            super::dist_fixed::<W>(query, &codes[full * W..n * W], &mut out[full..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topk::TopK;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn naive(a: &[u64], b: &[u64]) -> u32 {
        let mut d = 0;
        for (x, y) in a.iter().zip(b) {
            for bit in 0..64 {
                if (x >> bit) & 1 != (y >> bit) & 1 {
                    d += 1;
                }
            }
        }
        d
    }

    fn random_codes(rng: &mut Xoshiro256PlusPlus, n: usize, w: usize, sparse: bool) -> Vec<u64> {
        (0..n * w)
            .map(|_| {
                if sparse {
                    rng.random::<u64>() & rng.random::<u64>() & rng.random::<u64>()
                } else {
                    rng.random()
                }
            })
            .collect()
    }

    #[test]
    fn every_kernel_equals_naive() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        for w in [1usize, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 33, 48, 64, 65] {
            for n in [0usize, 1, 7, 8, 9, 31, 100] {
                let codes = random_codes(&mut rng, n, w, w % 2 == 0);
                let q = random_codes(&mut rng, 1, w, false);
                let want: Vec<u32> = codes.chunks_exact(w).map(|c| naive(&q, c)).collect();
                for k in KernelFamily::supported()
                    .into_iter()
                    .map(|f| Kernel::select(f, w))
                {
                    let mut got = vec![0; n];
                    k.distances(&q, &codes, &mut got);
                    assert_eq!(got, want, "{k:?} w={w} n={n}");
                    for kk in [1usize, 3, 200] {
                        let mut t = TopK::new(kk, None);
                        k.scan(&q, &codes, 5, &mut t);
                        let mut r = TopK::new(kk, None);
                        for (i, &d) in want.iter().enumerate() {
                            r.offer(d, 5 + i as u32);
                        }
                        assert_eq!(
                            t.into_sorted_keys(),
                            r.into_sorted_keys(),
                            "{k:?} w={w} n={n} k={kk}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn extreme_codes_every_kernel() {
        // All-ones against all-zeros: the largest per-byte and per-code sums a kernel adds.
        for w in [1usize, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64] {
            for n in [8usize, 17] {
                let mut codes = vec![0u64; n * w];
                for (i, c) in codes.chunks_exact_mut(w).enumerate() {
                    let fill = if i % 2 == 0 { u64::MAX } else { 1 << (i % 64) };
                    c.iter_mut().for_each(|x| *x = fill);
                }
                for q in [vec![0u64; w], vec![u64::MAX; w]] {
                    let want: Vec<u32> = codes.chunks_exact(w).map(|c| naive(&q, c)).collect();
                    for f in KernelFamily::supported() {
                        let mut got = vec![0; n];
                        Kernel::select(f, w).distances(&q, &codes, &mut got);
                        assert_eq!(got, want, "{f} w={w} n={n}");
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn batch_equals_single(w in 1usize..20, nq in 1usize..5, nc in 0usize..3000, seed in any::<u64>()) {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let codes = random_codes(&mut rng, nc, w, false);
            let qs = random_codes(&mut rng, nq, w, false);
            let mut batch = vec![0; nq * nc];
            distances_batch(&qs, &codes, w, &mut batch);
            for (qi, q) in qs.chunks_exact(w).enumerate() {
                let mut one = vec![0; nc];
                distances(q, &codes, &mut one);
                prop_assert_eq!(&batch[qi * nc..(qi + 1) * nc], &one[..]);
                for (c, &d) in codes.chunks_exact(w).zip(&one) {
                    prop_assert_eq!(d, hamming(q, c));
                }
            }
        }
    }

    /// Small inputs for every width a kernel exists for (and two without), on every family:
    /// no code, fewer codes than one vector step, a step and a partial one, codes and queries
    /// that start one word into their buffers (not on a vector's alignment), outputs longer
    /// than the codes. Against `hamming`, so it is quick enough for Miri.
    #[test]
    fn small_inputs_every_width_offset_slices() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        for w in [1usize, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64, 65] {
            for n in [0usize, 1, 7, 8, 9, 17] {
                let buf = random_codes(&mut rng, n + 1, w, false);
                let codes = &buf[1..1 + n * w];
                let qbuf = random_codes(&mut rng, 2, w, false);
                let q = &qbuf[1..1 + w];
                let want: Vec<u32> = codes.chunks_exact(w).map(|c| hamming(q, c)).collect();
                for f in KernelFamily::supported() {
                    let k = Kernel::select(f, w);
                    let mut got = vec![u32::MAX; n + 3];
                    k.distances(q, codes, &mut got);
                    assert_eq!(&got[..n], &want[..], "{k:?} w={w} n={n}");
                    assert!(
                        got[n..].iter().all(|&d| d == u32::MAX),
                        "{k:?} wrote past n"
                    );
                    let mut t = TopK::new(3, None);
                    k.scan(q, codes, 9, &mut t);
                    let mut r = TopK::new(3, None);
                    for (i, &d) in want.iter().enumerate() {
                        r.offer(d, 9 + i as u32);
                    }
                    assert_eq!(
                        t.into_sorted_keys(),
                        r.into_sorted_keys(),
                        "{k:?} w={w} n={n}"
                    );
                }
            }
        }
    }

    #[test]
    fn reports_kernel_name() {
        assert_eq!(Kernel::portable(4).name(), "portable-w4");
        assert_eq!(kernel_name(KernelFamily::Portable, 7), "portable-any");
        for f in KernelFamily::supported() {
            // Every family has a kernel of its own for 256- and 768-bit codes, AVX-512 for
            // 384-bit codes too (AVX2 keeps the portable one there).
            assert_eq!(kernel_name(f, 4), format!("{f}-w4"));
            assert_eq!(kernel_name(f, 12), format!("{f}-w12"));
            let w6 = if f == KernelFamily::Avx2 {
                "portable"
            } else {
                f.name()
            };
            assert_eq!(kernel_name(f, 6), format!("{w6}-w6"));
        }
    }
}
