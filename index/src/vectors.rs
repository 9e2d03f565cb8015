//! Stored float vectors (`vectors.bin`) and the exact cosine similarities that rescoring ranks
//! candidates by ([`crate::search::rescore`]).
//!
//! Scores are cosine similarities computed in `f32` (`f16` vectors are widened first; a stored
//! row too large or too small to square in `f32` is scored in `f64`). A zero vector has
//! similarity 0 with everything. The order is descending score, ties by ascending row.

use crate::error::{Error, Result};

/// Float vectors stored row-major, borrowed from memory or from the index's map.
///
/// The same rows as `f32` or as `f16` bits score alike (up to the rounding of the stored
/// values):
///
/// ```
/// use bsa_index::vectors::cosine;
/// use bsa_index::Vectors;
/// let rows = [3.0f32, 4.0, /* row 1 */ 0.0, -2.0];
/// let halves: Vec<u16> = rows.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect();
/// let query = [1.0f32, 0.0];
/// for v in [Vectors::F32(&rows), Vectors::F16(&halves)] {
///     assert_eq!(cosine(v, 0, &query), 0.6);
///     assert_eq!(cosine(v, 1, &query), 0.0);
/// }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy)]
pub enum Vectors<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// 16-bit floats given as their raw bits.
    F16(&'a [u16]),
}

impl Vectors<'_> {
    fn len_elems(&self) -> usize {
        match self {
            Vectors::F32(v) => v.len(),
            Vectors::F16(v) => v.len(),
        }
    }

    /// Asks the CPU to load row `row` (a hint; nothing if out of range).
    fn prefetch_row(&self, row: usize, dim: usize) {
        let range = row
            .checked_mul(dim)
            .and_then(|s| Some(s..s.checked_add(dim)?));
        match (self, range) {
            (Vectors::F32(v), Some(r)) => {
                if let Some(x) = v.get(r) {
                    crate::bits::prefetch(x);
                }
            }
            (Vectors::F16(v), Some(r)) => {
                if let Some(x) = v.get(r) {
                    crate::bits::prefetch(x);
                }
            }
            _ => {}
        }
    }

    /// Dot product of row `row` with `q`, and the row's squared norm.
    fn dot_norm(&self, row: usize, q: &[f32]) -> (f32, f32) {
        let dim = q.len();
        let (dot, nn) = match self {
            Vectors::F32(v) => {
                let r = &v[row * dim..(row + 1) * dim];
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx") {
                    // SAFETY: AVX is present.
                    let (dot, nn) = unsafe { dot_norm_avx(r, q) };
                    return (dot.iter().sum(), nn.iter().sum());
                }
                dot_norm_f32_lanes(r, q)
            }
            Vectors::F16(v) => {
                let r = &v[row * dim..(row + 1) * dim];
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx")
                    && std::arch::is_x86_feature_detected!("f16c")
                {
                    // SAFETY: AVX and F16C are present.
                    let (dot, nn) = unsafe { dot_norm_f16c(r, q) };
                    return (dot.iter().sum(), nn.iter().sum());
                }
                dot_norm_f16_lanes(r, q)
            }
        };
        (dot.iter().sum(), nn.iter().sum())
    }
}

/// The 8 lane sums of [`Vectors::dot_norm`] for `f16` bits: element `i` goes to lane `i % 8`,
/// in increasing `i`.
fn dot_norm_f16_lanes(r: &[u16], q: &[f32]) -> ([f32; 8], [f32; 8]) {
    let (mut dot, mut nn) = ([0f32; 8], [0f32; 8]);
    for (i, (&a, &b)) in r.iter().zip(q).enumerate() {
        let a = half::f16::from_bits(a).to_f32();
        dot[i % 8] += a * b;
        nn[i % 8] += a * a;
    }
    (dot, nn)
}

/// [`dot_norm_f16_lanes`] with the CPU's `f16` conversion ([`lane_sums_avx`]). Rescoring
/// reads thousands of stored rows per batch of queries; converting them one at a time in
/// software cost as much as reading them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
fn dot_norm_f16c(r: &[u16], q: &[f32]) -> ([f32; 8], [f32; 8]) {
    use std::arch::x86_64::*;
    lane_sums_avx(
        r,
        q,
        // SAFETY: `lane_sums_avx` passes 8 elements.
        |at| _mm256_cvtph_ps(unsafe { _mm_loadu_si128(at.as_ptr().cast()) }),
        |a| half::f16::from_bits(a).to_f32(),
    )
}

/// The 8 lane sums of [`Vectors::dot_norm`] for `f32` rows: element `i` to lane `i % 8`, in
/// increasing `i`, whole chunks of 8 at a time (which the compiler vectorises, as two 4-lane
/// halves on the SSE baseline; indexing the lanes by `i % 8` kept every sum in memory, one
/// element at a time), then the rest.
fn dot_norm_f32_lanes(r: &[f32], q: &[f32]) -> ([f32; 8], [f32; 8]) {
    let (mut dot, mut nn) = ([0f32; 8], [0f32; 8]);
    let (rc, rt) = r.as_chunks::<8>();
    let (qc, qt) = q.as_chunks::<8>();
    for (a, b) in rc.iter().zip(qc) {
        for l in 0..8 {
            dot[l] += a[l] * b[l];
            nn[l] += a[l] * a[l];
        }
    }
    for (l, (&a, &b)) in rt.iter().zip(qt).enumerate() {
        dot[l] += a * b;
        nn[l] += a * a;
    }
    (dot, nn)
}

/// [`dot_norm_f32_lanes`] eight elements per step in one AVX register ([`lane_sums_avx`]; the
/// SSE baseline takes two halves of four). Rescoring 400 candidates of 384 dimensions spent a
/// fifth of a one-query graph search here.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn dot_norm_avx(r: &[f32], q: &[f32]) -> ([f32; 8], [f32; 8]) {
    use std::arch::x86_64::*;
    lane_sums_avx(
        r,
        q,
        // SAFETY: `lane_sums_avx` passes 8 elements.
        |at| unsafe { _mm256_loadu_ps(at.as_ptr()) },
        |a| a,
    )
}

/// The lane sums of [`Vectors::dot_norm`] with AVX, for rows of any element type: `load8`
/// turns 8 row elements into floats, `to_f32` one. Lane `l` of each accumulator adds elements
/// `l, l + 8, ...` in order with a separate multiply and add (no FMA), then the tail goes to
/// lanes `0..`, so every lane sum is the portable loops', bit for bit (tested).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx")]
fn lane_sums_avx<T: Copy>(
    r: &[T],
    q: &[f32],
    load8: impl Fn(&[T]) -> std::arch::x86_64::__m256,
    to_f32: impl Fn(T) -> f32,
) -> ([f32; 8], [f32; 8]) {
    use std::arch::x86_64::*;
    let n = r.len().min(q.len());
    let (rc, rt) = r[..n].as_chunks::<8>();
    let (qc, qt) = q[..n].as_chunks::<8>();
    let mut d = _mm256_setzero_ps();
    let mut s = _mm256_setzero_ps();
    for (a, b) in rc.iter().zip(qc) {
        let a = load8(a);
        // SAFETY: `b` holds 8 floats.
        let b = unsafe { _mm256_loadu_ps(b.as_ptr()) };
        d = _mm256_add_ps(d, _mm256_mul_ps(a, b));
        s = _mm256_add_ps(s, _mm256_mul_ps(a, a));
    }
    let (mut dot, mut nn) = ([0f32; 8], [0f32; 8]);
    // SAFETY: each array holds 8 floats.
    unsafe {
        _mm256_storeu_ps(dot.as_mut_ptr(), d);
        _mm256_storeu_ps(nn.as_mut_ptr(), s);
    }
    for (l, (&a, &b)) in rt.iter().zip(qt).enumerate() {
        let a = to_f32(a);
        dot[l] += a * b;
        nn[l] += a * a;
    }
    (dot, nn)
}

fn norm(q: &[f32]) -> f32 {
    let mut s = [0f32; 8];
    for (i, &x) in q.iter().enumerate() {
        s[i % 8] += x * x;
    }
    s.iter().sum::<f32>().sqrt()
}

/// Cosine similarity of row `row` of `vectors` with `query` (dimension `query.len()`).
///
/// # Panics
/// If the row is out of range.
///
/// ```
/// use bsa_index::vectors::cosine;
/// use bsa_index::Vectors;
/// let rows = [1.0f32, 1.0, /* row 1 */ -2.0, -2.0, /* row 2 */ 0.0, 0.0];
/// let v = Vectors::F32(&rows);
/// assert!((cosine(v, 0, &[5.0, 5.0]) - 1.0).abs() < 1e-6); // the scale does not matter
/// assert!((cosine(v, 1, &[5.0, 5.0]) + 1.0).abs() < 1e-6);
/// assert_eq!(cosine(v, 2, &[5.0, 5.0]), 0.0); // a zero vector scores 0
/// ```
pub fn cosine(vectors: Vectors<'_>, row: usize, query: &[f32]) -> f32 {
    cosines(&[(vectors, row)], query)[0]
}

/// `query` times the power of two that brings its largest magnitude into `[1, 2)`. Cosine does
/// not change with the query's scale, and a power-of-two factor is exact: every product and sum
/// of the scoring loops is scaled by it without rounding, and `sqrt` of a power of four is exact,
/// so a cosine comes out bit for bit the same, while the squared norm of a huge or tiny query
/// stays inside `f32`'s range (a query times 1e20 overflowed it to infinity, one times 1e-30
/// underflowed it to 0: every score was then 0 and the order arbitrary).
pub(crate) fn scaled(query: &[f32]) -> Vec<f32> {
    let mut q = query.to_vec();
    scale(&mut q);
    q
}

/// [`scaled`] in place.
pub(crate) fn scale(query: &mut [f32]) {
    let max = query.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return;
    }
    // The exponent of `max` (a subnormal counts as -127); the factor is applied in
    // f64, where 2^-e is representable for every f32 exponent, and each product is an f32.
    let e = ((max.to_bits() >> 23) & 0xff) as i32 - 127;
    let factor = crate::score::pow2(-e);
    for x in query.iter_mut() {
        *x = (f64::from(*x) * factor) as f32;
    }
}

/// Checks a float query against vectors of dimension `dim`: its length, and finite values.
pub(crate) fn check_query(query: &[f32], dim: usize) -> Result<()> {
    if query.len() != dim {
        return Err(Error::DimMismatch {
            what: "float query dimension".into(),
            expected: dim,
            got: query.len(),
        });
    }
    if let Some(i) = query.iter().position(|x| !x.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "query element {i} is not finite"
        )));
    }
    Ok(())
}

/// The cosine similarity of `query` with each `(vectors, row)` (rows in range, checked by the
/// caller), in order. Candidates are scattered rows of large mapped files: the rows a few steps
/// ahead are requested while the current one is scored, so their cache misses overlap, and the
/// query's norm is computed once.
pub(crate) fn cosines(rows: &[(Vectors<'_>, usize)], query: &[f32]) -> Vec<f32> {
    let dim = query.len();
    const AHEAD: usize = 16;
    let fetch = |pos: usize| {
        if let Some(&(v, r)) = rows.get(pos) {
            v.prefetch_row(r, dim);
        }
    };
    (0..AHEAD).for_each(fetch);
    let query = &scaled(query)[..];
    let qn = norm(query);
    rows.iter()
        .enumerate()
        .map(|(pos, &(v, r))| {
            fetch(pos + AHEAD);
            let (dot, nn) = v.dot_norm(r, query);
            if (TINY_SQUARED_NORM..=f32::MAX).contains(&nn) {
                cosine_from(dot, nn.sqrt() * qn)
            } else {
                v.cosine_f64(r, query)
            }
        })
        .collect()
}

/// Below this squared norm (2^-100) a stored `f32` row's squares may have lost their precision
/// to `f32`'s smallest values (or vanished), and above `f32::MAX` they overflowed: such rows,
/// which only `f32` storage can hold (a row times 1e20 or 1e-22 of a file given as is), are
/// scored in `f64` instead ([`Vectors::cosine_f64`]); any other row's squares of elements that
/// small are below its sum's rounding.
const TINY_SQUARED_NORM: f32 = 7.888_609e-31;

impl Vectors<'_> {
    /// The cosine of row `row` with `query` in `f64` (for rows whose magnitude leaves `f32`'s
    /// range when squared), in a fixed order: the same on every CPU. A zero row scores 0.
    fn cosine_f64(&self, row: usize, query: &[f32]) -> f32 {
        let dim = query.len();
        let at = |i: usize| match self {
            Vectors::F32(v) => f64::from(v[row * dim + i]),
            Vectors::F16(v) => f64::from(half::f16::from_bits(v[row * dim + i]).to_f32()),
        };
        let (mut dot, mut nn, mut qq) = (0f64, 0f64, 0f64);
        for (i, &q) in query.iter().enumerate() {
            let (a, q) = (at(i), f64::from(q));
            dot += a * q;
            nn += a * a;
            qq += q * q;
        }
        let denom = (nn * qq).sqrt();
        if denom > 0.0 && denom.is_finite() {
            ((dot / denom) as f32).clamp(-1.0, 1.0)
        } else {
            0.0
        }
    }
}

/// `dot / denom` within [-1, 1] (rounding took a row's cosine with itself to 1.0000001), or 0
/// when the norms give no finite positive denominator.
fn cosine_from(dot: f32, denom: f32) -> f32 {
    if denom > 0.0 && denom.is_finite() {
        (dot / denom).clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

/// Scores `rows` (distinct) of `vectors` against `query` and returns the `k` best
/// `(position in rows, score)` pairs, descending score, ties by ascending row.
///
/// ```
/// use bsa_index::vectors::{cosine, cosine_top_k};
/// use bsa_index::Vectors;
/// # fn main() -> bsa_index::Result<()> {
/// let rows = [1.0f32, 0.0, /* 1 */ 0.0, 1.0, /* 2 */ 0.6, 0.8, /* 3 */ 0.0, 2.0];
/// let v = Vectors::F32(&rows);
/// let query = [0.0f32, 1.0];
/// // Candidates 3, 0 and 1 (e.g. a Hamming search's rows): 1 and 3 tie at 1.0.
/// let best = cosine_top_k(v, 2, &query, &[3, 0, 1], 2)?;
/// assert_eq!(best, vec![(2, cosine(v, 1, &query)), (0, cosine(v, 3, &query))]);
/// assert_eq!(best[0].1, 1.0);
/// assert!(cosine_top_k(v, 2, &query, &[4], 1).is_err()); // no row 4
/// assert!(cosine_top_k(v, 3, &query, &[0], 1).is_err()); // not whole rows of 3
/// # Ok(()) }
/// ```
pub fn cosine_top_k(
    vectors: Vectors<'_>,
    dim: usize,
    query: &[f32],
    rows: &[u64],
    k: usize,
) -> Result<Vec<(usize, f32)>> {
    if dim == 0 || !vectors.len_elems().is_multiple_of(dim) {
        return Err(Error::InvalidArgument(format!(
            "vectors are not whole rows of dimension {dim}"
        )));
    }
    check_query(query, dim)?;
    let n = vectors.len_elems() / dim;
    let located = rows
        .iter()
        .map(|&r| {
            usize::try_from(r)
                .ok()
                .filter(|&r| r < n)
                .map(|r| (vectors, r))
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "candidate row {r} is out of range (index has {n} rows)"
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut scored: Vec<(usize, usize, f32)> = cosines(&located, query)
        .into_iter()
        .enumerate()
        .map(|(pos, s)| (pos, located[pos].1, s))
        .collect();
    scored.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.1.cmp(&b.1)));
    scored.truncate(k);
    Ok(scored.into_iter().map(|(p, _, s)| (p, s)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cosine is scale-free, and so are the scores: a query times a power of two scores bit for
    /// bit as the query, and one times 1e20 or 1e-30 (whose squared norm leaves f32's range)
    /// scores as the query up to the rounding of the multiplication.
    #[test]
    fn scores_do_not_depend_on_the_query_scale() {
        let dim = 37;
        let rows: Vec<f32> = (0..5 * dim)
            .map(|i| ((i * 7919 % 97) as f32 - 48.0) / 50.0)
            .collect();
        let halves: Vec<u16> = rows
            .iter()
            .map(|&x| half::f16::from_f32(x).to_bits())
            .collect();
        let q: Vec<f32> = (0..dim)
            .map(|i| ((i * 31 % 17) as f32 - 8.0) / 10.0)
            .collect();
        for v in [Vectors::F32(&rows), Vectors::F16(&halves)] {
            let located: Vec<_> = (0..5).map(|r| (v, r)).collect();
            let want = cosines(&located, &q);
            assert!(want.iter().all(|s| s.abs() > 1e-3), "{want:?}");
            // Exact powers of two (`powi`'s precision is unspecified, and Miri's is not exact).
            let pow2 = |e: i32| f32::from_bits(((127 + e) as u32) << 23);
            for factor in [pow2(60), pow2(-100), 0.5] {
                let scaled: Vec<f32> = q.iter().map(|x| x * factor).collect();
                assert_eq!(cosines(&located, &scaled), want, "x {factor}");
                assert_eq!(cosine(v, 3, &scaled), want[3]);
            }
            for factor in [1e20f32, 1e-30] {
                let scaled: Vec<f32> = q.iter().map(|x| x * factor).collect();
                for (got, want) in cosines(&located, &scaled).iter().zip(&want) {
                    assert!(
                        (got - want).abs() < 1e-5,
                        "x {factor}: {got} against {want}"
                    );
                }
            }
        }
    }

    /// A stored row whose squared norm leaves `f32`'s range (a file's rows given unnormalised,
    /// times 1e20 or 1e-22) scores as the row itself: it scored 0 and ranked by row.
    #[test]
    fn scores_do_not_depend_on_a_stored_rows_scale() {
        let dim = 19;
        let base: Vec<f32> = (0..dim)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let mut rows = Vec::new();
        for factor in [1.0f32, 1e20, 1e-22, 1e-40, 0.0] {
            rows.extend(base.iter().map(|x| x * factor));
        }
        let located: Vec<_> = (0..5).map(|r| (Vectors::F32(&rows), r)).collect();
        let got = cosines(&located, &base);
        assert!((got[0] - 1.0).abs() < 1e-6, "{got:?}");
        for (r, &s) in got.iter().enumerate().take(4).skip(1) {
            assert!((s - 1.0).abs() < 1e-4, "row {r}: {got:?}");
        }
        assert_eq!(got[4], 0.0, "a zero row scores 0");
        let negated: Vec<f32> = base.iter().map(|x| -x).collect();
        let got = cosines(&located, &negated);
        assert!(got[1] < -0.9999 && got[2] < -0.9999, "{got:?}");
    }

    /// Element `i` to lane `i % 8` in increasing `i`, one multiply and one add each: the sums
    /// cosine scores promise on every CPU, which the vectorised loops (chunks of 8 for `f32`,
    /// the CPU's conversion for `f16`) must keep bit for bit.
    #[test]
    fn dot_norm_is_the_lane_sums_bit_for_bit() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for dim in [1, 7, 8, 9, 16, 23, 384, 385] {
            // f16: random bits of every magnitude, subnormals and signs included, with
            // infinities and NaNs (exponent all ones) made finite.
            let halves: Vec<u16> = (0..3 * dim)
                .map(|_| next() as u16)
                .map(|b| if b & 0x7c00 == 0x7c00 { b & !0x4000 } else { b })
                .collect();
            let floats: Vec<f32> = (0..3 * dim)
                .map(|_| ((next() % 20001) as f32 / 1000.0 - 10.0) * 1.000_1)
                .collect();
            let q: Vec<f32> = (0..dim)
                .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            for row in 0..3 {
                let at = row * dim..(row + 1) * dim;
                let (dot, nn) = dot_norm_f16_lanes(&halves[at.clone()], &q);
                let (mut fdot, mut fnn) = ([0f32; 8], [0f32; 8]);
                for (i, (&a, &b)) in floats[at].iter().zip(&q).enumerate() {
                    fdot[i % 8] += a * b;
                    fnn[i % 8] += a * a;
                }
                let sums = |d: [f32; 8], n: [f32; 8]| {
                    let s: (f32, f32) = (d.iter().sum(), n.iter().sum());
                    (s.0.to_bits(), s.1.to_bits())
                };
                for (v, want) in [
                    (Vectors::F16(&halves), sums(dot, nn)),
                    (Vectors::F32(&floats), sums(fdot, fnn)),
                ] {
                    let got = v.dot_norm(row, &q);
                    let got = (got.0.to_bits(), got.1.to_bits());
                    assert_eq!(got, want, "{v:?} dim {dim} row {row}");
                }
                // Both f32 paths, whichever the CPU takes.
                let r = &floats[row * dim..(row + 1) * dim];
                let (d, n) = dot_norm_f32_lanes(r, &q);
                assert_eq!(sums(d, n), sums(fdot, fnn), "portable f32 dim {dim}");
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx") {
                    // SAFETY: AVX is present.
                    let (d, n) = unsafe { dot_norm_avx(r, &q) };
                    assert_eq!(sums(d, n), sums(fdot, fnn), "avx f32 dim {dim}");
                }
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx")
                    && std::arch::is_x86_feature_detected!("f16c")
                {
                    // SAFETY: AVX and F16C are present.
                    let (d, n) = unsafe { dot_norm_f16c(&halves[row * dim..(row + 1) * dim], &q) };
                    assert_eq!(sums(d, n), sums(dot, nn), "f16c dim {dim}");
                }
            }
        }
    }
}
