//! `f32` dot products whose every bit is fixed by their inputs, on every kernel family.
//!
//! The graph builder compares float vectors millions of times; its choices (which neighbours a
//! node keeps) must not depend on the CPU, or one index built on two machines would answer
//! differently. So the sum has one order, whatever the SIMD width:
//!
//! * element `t` is multiplied (`a[t] * b[t]`, rounded to `f32`, never fused) and added to lane
//!   `t % 64` of 64 running sums, in ascending `t`;
//! * the 64 lanes are folded in halves: lane `i` += lane `i + 32`, then `i + 16`, `i + 8`,
//!   `i + 4`, `i + 2`, `i + 1`; lane 0 is the result.
//!
//! AVX-512 holds the 64 lanes in four registers, AVX2 in eight, the portable code in an array;
//! they perform the same IEEE operations on every lane and agree bit for bit (tested).
//!
//! This is not the order of [`crate::deterministic::dot`] (left to right, the encoders' and the
//! tables'): the two give other bits for the same inputs, so each caller keeps to the one its
//! promise names. Graphs built on vectors use this one.
//!
//! ```
//! use bsa_index::dot::dot;
//! let a: Vec<f32> = (0..100).map(|i| i as f32 * 0.5).collect();
//! let b = vec![2.0f32; 100];
//! assert_eq!(dot(&a, &b), 4950.0);
//! ```

use crate::kernel::KernelFamily;

/// Lanes of the running sums (see the module docs).
const LANES: usize = 64;

/// A dot-product kernel of one family (see [`Dot::select`]).
///
/// Every family gives the same bits: a product computed on one machine can be checked on another.
///
/// ```
/// use bsa_index::dot::Dot;
/// use bsa_index::KernelFamily;
/// let a: Vec<f32> = (0..300).map(|i| (i as f32 * 0.37).sin()).collect();
/// let b: Vec<f32> = (0..300).map(|i| (i as f32 * 0.11).cos()).collect();
/// let portable = Dot::select(KernelFamily::Portable).dot(&a, &b);
/// for family in KernelFamily::supported() {
///     let d = Dot::select(family);
///     assert_eq!(d.family(), family);
///     assert_eq!(d.dot(&a, &b).to_bits(), portable.to_bits());
/// }
/// ```
#[derive(Clone, Copy)]
pub struct Dot {
    f: fn(&[f32], &[f32]) -> f32,
    f4: fn(&[f32], [&[f32]; 4]) -> [f32; 4],
    family: KernelFamily,
}

impl std::fmt::Debug for Dot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dot({})", self.family)
    }
}

impl Dot {
    /// The kernel of `family` (the portable one if the CPU lacks the family).
    ///
    /// ```
    /// use bsa_index::dot::Dot;
    /// use bsa_index::KernelFamily;
    /// let d = Dot::select(KernelFamily::Avx512);
    /// // The family asked for if this CPU runs it, else the portable kernel.
    /// let expected = if KernelFamily::Avx512.is_supported() {
    ///     KernelFamily::Avx512
    /// } else {
    ///     KernelFamily::Portable
    /// };
    /// assert_eq!(d.family(), expected);
    /// assert_eq!(d.dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
    /// ```
    pub fn select(family: KernelFamily) -> Dot {
        #[cfg(not(target_arch = "x86_64"))]
        let _ = family; // only x86-64 has families besides the portable one
        #[cfg(target_arch = "x86_64")]
        if family.is_supported() {
            match family {
                KernelFamily::Avx512 => {
                    return Dot {
                        f: x86::dot_avx512_safe,
                        f4: x86::dot4_avx512_safe,
                        family,
                    };
                }
                KernelFamily::Avx2 => {
                    return Dot {
                        f: x86::dot_avx2_safe,
                        f4: |q, rows| rows.map(|r| x86::dot_avx2_safe(q, r)),
                        family,
                    };
                }
                KernelFamily::Portable => {}
            }
        }
        Dot {
            f: dot_portable,
            f4: |q, rows| rows.map(|r| dot_portable(q, r)),
            family: KernelFamily::Portable,
        }
    }

    /// The family this kernel belongs to.
    pub fn family(&self) -> KernelFamily {
        self.family
    }

    /// `a . b` in the fixed order of the module docs.
    ///
    /// The order is the lanes', not left to right: here the two large terms (lanes 0 and 2)
    /// cancel before the small one (lane 1) is added, where a left-to-right sum would lose it.
    ///
    /// ```
    /// use bsa_index::dot::Dot;
    /// use bsa_index::KernelFamily;
    /// let a = [1e8f32, 1.0, -1e8];
    /// let ones = [1.0f32; 3];
    /// let left_to_right: f32 = a.iter().sum();
    /// assert_eq!(left_to_right, 0.0);
    /// assert_eq!(Dot::select(KernelFamily::current()).dot(&a, &ones), 1.0);
    /// ```
    ///
    /// # Panics
    /// If the lengths differ.
    #[inline]
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(
            a.len(),
            b.len(),
            "dot product of slices of different lengths"
        );
        (self.f)(a, b)
    }

    /// `q . rows[i]` for four rows at once, each bit for bit [`Dot::dot`]`(q, rows[i])`: the
    /// AVX-512 kernel reads the four rows together, so their loads from memory overlap.
    ///
    /// ```
    /// use bsa_index::dot::Dot;
    /// use bsa_index::KernelFamily;
    /// let d = Dot::select(KernelFamily::current());
    /// let q: Vec<f32> = (0..128).map(|i| i as f32).collect();
    /// let rows: Vec<Vec<f32>> = (0..4).map(|j| vec![j as f32; 128]).collect();
    /// let got = d.dot4(&q, [&rows[0], &rows[1], &rows[2], &rows[3]]);
    /// for j in 0..4 {
    ///     assert_eq!(got[j], d.dot(&q, &rows[j]));
    /// }
    /// ```
    ///
    /// # Panics
    /// If the lengths differ.
    #[inline]
    pub fn dot4(&self, q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
        assert!(
            rows.iter().all(|r| r.len() == q.len()),
            "dot product of slices of different lengths"
        );
        (self.f4)(q, rows)
    }
}

/// `a . b` in the fixed order of the module docs, with the kernels of
/// [`KernelFamily::current`].
///
/// ```
/// use bsa_index::dot::{dot, Dot};
/// use bsa_index::KernelFamily;
/// let a: Vec<f32> = (0..200).map(|i| i as f32 / 7.0).collect();
/// let b: Vec<f32> = (0..200).map(|i| 1.0 - i as f32 / 13.0).collect();
/// let d = dot(&a, &b);
/// assert_eq!(d.to_bits(), Dot::select(KernelFamily::current()).dot(&a, &b).to_bits());
/// assert_eq!(d.to_bits(), Dot::select(KernelFamily::Portable).dot(&a, &b).to_bits());
/// ```
///
/// # Panics
/// If the lengths differ.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    Dot::select(KernelFamily::current()).dot(a, b)
}

/// Adds the elements past the last whole block of 64 to their lanes, then folds the lanes.
#[inline(always)]
fn finish(lanes: &mut [f32; LANES], a: &[f32], b: &[f32]) -> f32 {
    let full = a.len() / LANES * LANES;
    for t in full..a.len() {
        lanes[t % LANES] += a[t] * b[t];
    }
    fold(lanes, LANES)
}

/// Folds the first `width` lanes in halves down to lane 0.
#[inline(always)]
fn fold(lanes: &mut [f32; LANES], mut width: usize) -> f32 {
    while width > 1 {
        width /= 2;
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
    }
    lanes[0]
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for i in 0..LANES {
            lanes[i] += x[i] * y[i];
        }
    }
    finish(&mut lanes, a, b)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Safety: each `unsafe` function needs the CPU features it enables; they are reachable
    //! only through [`super::Dot::select`], which checked them. Loads are unaligned and stay
    //! inside the slices (whole blocks of 64 elements only).

    use super::{LANES, finish};
    use std::arch::x86_64::*;

    pub(super) fn dot_avx512_safe(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: selected only when the CPU has AVX-512F.
        unsafe { dot_avx512(a, b) }
    }

    pub(super) fn dot4_avx512_safe(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
        // SAFETY: selected only when the CPU has AVX-512F; the lengths were checked equal.
        unsafe { dot4_avx512(q, rows) }
    }

    pub(super) fn dot_avx2_safe(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: selected only when the CPU has AVX2.
        unsafe { dot_avx2(a, b) }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        unsafe {
            let blocks = a.len() / LANES;
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            // Register k holds lanes 16k..16k+15.
            let mut r = [_mm512_setzero_ps(); 4];
            for blk in 0..blocks {
                for (k, acc) in r.iter_mut().enumerate() {
                    let at = blk * LANES + 16 * k;
                    let p = _mm512_mul_ps(_mm512_loadu_ps(pa.add(at)), _mm512_loadu_ps(pb.add(at)));
                    *acc = _mm512_add_ps(*acc, p);
                }
            }
            let mut lanes = [0.0f32; LANES];
            if a.len().is_multiple_of(LANES) {
                // Fold by 32 and 16 in registers: lanes i += i + 32, then i += i + 16.
                let x = _mm512_add_ps(_mm512_add_ps(r[0], r[2]), _mm512_add_ps(r[1], r[3]));
                return fold16(x);
            }
            for (k, acc) in r.iter().enumerate() {
                _mm512_storeu_ps(lanes.as_mut_ptr().add(16 * k), *acc);
            }
            finish(&mut lanes, a, b)
        }
    }

    /// Four of [`dot_avx512`] with the query's loads shared and the rows' loads interleaved.
    #[target_feature(enable = "avx512f")]
    unsafe fn dot4_avx512(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
        unsafe {
            if !q.len().is_multiple_of(LANES) {
                return rows.map(|r| dot_avx512(q, r));
            }
            let pq = q.as_ptr();
            let p = rows.map(<[f32]>::as_ptr);
            // acc[k][j] holds lanes 16k..16k+15 of row j.
            let mut acc = [[_mm512_setzero_ps(); 4]; 4];
            for blk in 0..q.len() / LANES {
                for (k, accs) in acc.iter_mut().enumerate() {
                    let at = blk * LANES + 16 * k;
                    let x = _mm512_loadu_ps(pq.add(at));
                    for (a, row) in accs.iter_mut().zip(p) {
                        *a = _mm512_add_ps(*a, _mm512_mul_ps(x, _mm512_loadu_ps(row.add(at))));
                    }
                }
            }
            // A plain loop: a closure handed to `array::map` would run out of line, outside this
            // function's target features, with the vectors passed through memory.
            let [a0, a1, a2, a3] = acc;
            let mut out = [0.0f32; 4];
            for (j, o) in out.iter_mut().enumerate() {
                *o = fold16(_mm512_add_ps(
                    _mm512_add_ps(a0[j], a2[j]),
                    _mm512_add_ps(a1[j], a3[j]),
                ));
            }
            out
        }
    }

    /// The fold of 16 lanes (`i += i + 8`, `i + 4`, `i + 2`, `i + 1`) in registers: the same
    /// additions on the same lanes as [`fold`], so the same bits.
    #[target_feature(enable = "avx512f")]
    unsafe fn fold16(x: __m512) -> f32 {
        unsafe {
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x)));
            let y = _mm256_add_ps(_mm512_castps512_ps256(x), hi);
            fold8(y)
        }
    }

    /// [`fold16`] from 8 lanes down.
    #[target_feature(enable = "avx2")]
    unsafe fn fold8(y: __m256) -> f32 {
        let z = _mm_add_ps(_mm256_castps256_ps128(y), _mm256_extractf128_ps::<1>(y));
        let w = _mm_add_ps(z, _mm_movehl_ps(z, z));
        _mm_cvtss_f32(_mm_add_ss(w, _mm_shuffle_ps::<1>(w, w)))
    }

    #[target_feature(enable = "avx2")]
    unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        unsafe {
            let blocks = a.len() / LANES;
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            // Register k holds lanes 8k..8k+7.
            let mut r = [_mm256_setzero_ps(); 8];
            for blk in 0..blocks {
                for (k, acc) in r.iter_mut().enumerate() {
                    let at = blk * LANES + 8 * k;
                    let p = _mm256_mul_ps(
                        _mm256_castsi256_ps(crate::bits::load_ymm(pa.add(at))),
                        _mm256_castsi256_ps(crate::bits::load_ymm(pb.add(at))),
                    );
                    *acc = _mm256_add_ps(*acc, p);
                }
            }
            let mut lanes = [0.0f32; LANES];
            if a.len().is_multiple_of(LANES) {
                // The same folds as AVX-512: lanes i += i + 32 (register k += k + 4), then
                // i += i + 16 (register k += k + 2).
                let h0 = _mm256_add_ps(r[0], r[4]);
                let h1 = _mm256_add_ps(r[1], r[5]);
                let h2 = _mm256_add_ps(r[2], r[6]);
                let h3 = _mm256_add_ps(r[3], r[7]);
                // Then i += i + 8 (register 0 += register 1) and the rest in registers.
                return fold8(_mm256_add_ps(_mm256_add_ps(h0, h2), _mm256_add_ps(h1, h3)));
            }
            for (k, acc) in r.iter().enumerate() {
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8 * k), *acc);
            }
            finish(&mut lanes, a, b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, written out plainly.
    fn reference(a: &[f32], b: &[f32]) -> f32 {
        let mut lanes = [0.0f32; LANES];
        for t in 0..a.len() {
            lanes[t % LANES] += a[t] * b[t];
        }
        fold(&mut lanes, LANES)
    }

    #[test]
    fn every_family_equals_the_definition_bit_for_bit() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Wide range of magnitudes and both signs, so rounding order shows.
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 10f32.powi((x % 7) as i32 - 3)
        };
        for d in [0, 1, 7, 63, 64, 65, 100, 128, 384, 385, 1000] {
            let a: Vec<f32> = (0..d).map(|_| next()).collect();
            let b: Vec<f32> = (0..d).map(|_| next()).collect();
            let want = reference(&a, &b);
            let rows: Vec<Vec<f32>> = (0..4).map(|_| (0..d).map(|_| next()).collect()).collect();
            let want4 = rows.iter().map(|r| reference(&a, r).to_bits());
            for family in KernelFamily::supported() {
                let dot = Dot::select(family);
                assert_eq!(
                    dot.dot(&a, &b).to_bits(),
                    want.to_bits(),
                    "d = {d}, {family}"
                );
                let got4 = dot.dot4(&a, [&rows[0], &rows[1], &rows[2], &rows[3]]);
                assert!(
                    got4.iter().map(|x| x.to_bits()).eq(want4.clone()),
                    "dot4, d = {d}, {family}"
                );
            }
        }
    }
}
