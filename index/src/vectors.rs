//! Stored float vectors (`vectors.bin`) and the exact cosine similarities that rescoring ranks
//! candidates by ([`crate::search::rescore`]).
//!
//! Scores are cosine similarities computed in `f32` (`f16` vectors are widened first). A zero
//! vector has similarity 0 with everything. The order is descending score, ties by ascending row.

use crate::error::{Error, Result};

/// Float vectors stored row-major, borrowed from memory or from the index's map.
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
        let mut dot = [0f32; 8];
        let mut nn = [0f32; 8];
        match self {
            Vectors::F32(v) => {
                let r = &v[row * dim..(row + 1) * dim];
                for (i, (&a, &b)) in r.iter().zip(q).enumerate() {
                    dot[i % 8] += a * b;
                    nn[i % 8] += a * a;
                }
            }
            Vectors::F16(v) => {
                let r = &v[row * dim..(row + 1) * dim];
                for (i, (&a, &b)) in r.iter().zip(q).enumerate() {
                    let a = half::f16::from_bits(a).to_f32();
                    dot[i % 8] += a * b;
                    nn[i % 8] += a * a;
                }
            }
        }
        (dot.iter().sum(), nn.iter().sum())
    }
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
pub fn cosine(vectors: Vectors<'_>, row: usize, query: &[f32]) -> f32 {
    let (dot, nn) = vectors.dot_norm(row, query);
    cosine_from(dot, nn.sqrt() * norm(query))
}

/// Checks a float query against vectors of dimension `dim`: its length, and finite values.
pub(crate) fn check_query(query: &[f32], dim: usize) -> Result<()> {
    if query.len() != dim {
        return Err(Error::DimMismatch {
            what: "query dimension".into(),
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
    let qn = norm(query);
    rows.iter()
        .enumerate()
        .map(|(pos, &(v, r))| {
            fetch(pos + AHEAD);
            let (dot, nn) = v.dot_norm(r, query);
            cosine_from(dot, nn.sqrt() * qn)
        })
        .collect()
}

/// `dot / denom`, or 0 when the norms give no finite positive denominator.
fn cosine_from(dot: f32, denom: f32) -> f32 {
    if denom > 0.0 && denom.is_finite() {
        dot / denom
    } else {
        0.0
    }
}

/// Scores `rows` (distinct) of `vectors` against `query` and returns the `k` best
/// `(position in rows, score)` pairs, descending score, ties by ascending row.
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
