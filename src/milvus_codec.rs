//! How bsa's codes and ADC queries look as Milvus vectors: the fields a collection holds, sparse
//! rows of set bits, the pruned sparse ADC query and its bound. Plain functions without the
//! Milvus client, compiled in every build (so their tests run without the `milvus` feature);
//! `bsa::milvus` (feature `milvus`) re-exports them.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// Which vector fields a collection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forms {
    /// The packed code only (Hamming).
    Binary,
    /// The set bits only (overlap, ADC).
    Sparse,
    /// Both fields.
    Both,
}

impl Forms {
    /// Parses `binary`, `sparse` or `both`.
    pub fn parse(s: &str) -> Result<Forms> {
        Ok(match s {
            "binary" => Forms::Binary,
            "sparse" => Forms::Sparse,
            "both" => Forms::Both,
            _ => bail!("--as must be binary, sparse or both, not {s:?}"),
        })
    }

    /// Whether the binary field exists.
    pub fn binary(self) -> bool {
        matches!(self, Forms::Binary | Forms::Both)
    }

    /// Whether the sparse field exists.
    pub fn sparse(self) -> bool {
        matches!(self, Forms::Sparse | Forms::Both)
    }
}

/// The set bits of a packed code, ascending.
pub fn set_bits(code: &[u64]) -> impl Iterator<Item = u32> + '_ {
    code.iter().enumerate().flat_map(|(wi, &w)| {
        let mut x = w;
        std::iter::from_fn(move || {
            if x == 0 {
                return None;
            }
            let j = wi as u32 * 64 + x.trailing_zeros();
            x &= x - 1;
            Some(j)
        })
    })
}

/// One row of a Milvus sparse vector: `(u32 index, f32 value)` little-endian pairs, ascending.
pub fn sparse_row(entries: impl Iterator<Item = (u32, f32)>) -> Vec<u8> {
    let mut row = Vec::new();
    for (j, v) in entries {
        row.extend_from_slice(&j.to_le_bytes());
        row.extend_from_slice(&v.to_le_bytes());
    }
    row
}

/// Rebuilds a packed code from a sparse row of set bits (weights ignored, bits checked).
pub fn code_from_sparse(row: &[u8], bits: usize, wpc: usize) -> Result<Vec<u64>> {
    if !row.len().is_multiple_of(8) {
        bail!(
            "a sparse row of {} bytes is not (index, value) pairs",
            row.len()
        );
    }
    let mut code = vec![0u64; wpc];
    for pair in row.chunks_exact(8) {
        let j = u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]) as usize;
        if j >= bits {
            bail!("sparse row has bit {j}, but codes have {bits} bits");
        }
        code[j / 64] |= 1 << (j % 64);
    }
    Ok(code)
}

/// The sparse ADC query: the `keep` largest entries of `table` (all when `None`), ascending by
/// bit. Milvus's sparse vectors hold positive weights only, so entries `<= 0` are always left out;
/// [`adc_bound`] accounts for that.
pub fn adc_query(table: &[f32], keep: Option<usize>) -> Vec<(u32, f32)> {
    let mut e: Vec<(u32, f32)> = table
        .iter()
        .enumerate()
        .filter(|&(_, &v)| v > 0.0)
        .map(|(j, &v)| (j as u32, v))
        .collect();
    if let Some(p) = keep
        && p < e.len()
    {
        // Largest first, ties to the lower bit, then back to ascending bits.
        e.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        e.truncate(p);
        e.sort_by_key(|&(j, _)| j);
    }
    e
}

/// Upper bound on the ADC score `(offset + sum of t_j over b) / |xhat_b|` of any code that Milvus
/// ranked at or below inner product `ip` for the unpruned positive query (whose inner product is
/// the sum of the positive `t_j` over b, so it bounds the full sum from above), given that norms
/// lie in `[lo, hi]`. `slack` covers Milvus's float summation order. A code of norm 0 scores 0.
pub fn adc_bound(offset: f32, ip: f32, slack: f64, (lo, hi): (f32, f32)) -> f64 {
    let num = f64::from(offset) + f64::from(ip) + slack;
    let b = if num >= 0.0 {
        if lo > 0.0 {
            num / f64::from(lo)
        } else {
            f64::INFINITY
        }
    } else {
        num / f64::from(hi)
    };
    if lo <= 0.0 { b.max(0.0) } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_rows_round_trip_to_codes() {
        let code = vec![0b1001u64, 1 << 63];
        let bits: Vec<u32> = set_bits(&code).collect();
        assert_eq!(bits, vec![0, 3, 127]);
        let row = sparse_row(bits.iter().map(|&j| (j, 1.0)));
        assert_eq!(row.len(), 24);
        assert_eq!(code_from_sparse(&row, 128, 2).unwrap(), code);
        assert!(code_from_sparse(&row, 100, 2).is_err());
        assert!(code_from_sparse(&row[..5], 128, 2).is_err());
    }

    #[test]
    fn adc_query_keeps_the_largest_positive_entries() {
        let t = [0.5, -1.0, 2.0, 0.0, 1.0];
        assert_eq!(adc_query(&t, None), vec![(0, 0.5), (2, 2.0), (4, 1.0)]);
        assert_eq!(adc_query(&t, Some(2)), vec![(2, 2.0), (4, 1.0)]);
        assert_eq!(adc_query(&t, Some(9)).len(), 3);
    }

    #[test]
    fn adc_bound_divides_by_the_worst_norm() {
        assert_eq!(adc_bound(1.0, 3.0, 0.0, (2.0, 8.0)), 2.0);
        assert_eq!(adc_bound(-5.0, 1.0, 0.0, (2.0, 8.0)), -0.5);
    }

    #[test]
    fn forms_parse() {
        assert!(Forms::parse("both").unwrap().binary());
        assert!(!Forms::parse("binary").unwrap().sparse());
        assert!(Forms::parse("dense").is_err());
    }
}
