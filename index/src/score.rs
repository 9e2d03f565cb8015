//! Scores beyond Hamming distance, shared by the flat and the inverted search.
//!
//! Every score is a function of one query and one base code `b` (and, for table scores, of
//! numbers the caller computed per query). With `c = |q and b|`, `m = |q|`, `p = |b|`:
//!
//! | score | value | order |
//! |---|---|---|
//! | [`Score::Hamming`] | `m + p - 2c` (`u32`) | ascending distance |
//! | [`Score::Cosine`] | `c / sqrt(m p)`, 0 if `m = 0` or `p = 0` | descending score |
//! | [`Score::Jaccard`] | `c / (m + p - c)`, 0 if both codes are empty | descending score |
//! | [`Score::Table`] | `(offset + sum of t_j over the set bits j of b)`, divided by the code's stored norm if `normalise` (0 where the norm is 0) | descending score |
//!
//! Ties are broken by ascending row in every case, so results are deterministic.
//!
//! **Exactness.** Every score is computed by exactly one function of this module, in `f64`, and
//! rounded once to `f32`; the ranking uses that `f32` value. The overlap scores depend only on the
//! integers `(c, m, p)`. The table sum adds `t_j` (widened to `f64`) in ascending bit order,
//! starting from `0.0`, then adds the offset, then divides by the norm: the flat scan walks a
//! code's bits in that order and the inverted search visits the posting lists in ascending bit
//! order, so both perform the same `f64` operations in the same order and give bit-identical
//! scores. A brute-force reference that follows this definition agrees exactly.
//!
//! Table scores are what asymmetric search needs: for decoder ADC (bsa's `--score adc`) the
//! caller passes `t = Wd^T q`, `offset = q . bd` and stores `|xhat_b|` per code as the norm; for
//! soft scores `t = sigmoid(H_q)`, `offset = 0`, no norm. This crate knows nothing of decoders.

use crate::bits::for_each_set_bit;
use crate::error::{Error, Result};

/// How base codes are ranked for a query.
///
/// Every score ranks the same codes; here a flat search by cosine agrees with [`cosine`]
/// computed on each code's overlap and popcounts:
///
/// ```
/// use bsa_index::score::cosine;
/// use bsa_index::search::{CodesView, FlatParams, FlatSearcher, Searcher};
/// use bsa_index::{Score, SearchParams};
/// # fn main() -> bsa_index::Result<()> {
/// let codes = [0b1111u64, 0b0011, 0b1000_0001, 0b0111];
/// let q = 0b0011u64;
/// let flat = FlatSearcher::new(CodesView::new(&codes, 8)?, FlatParams::default());
/// let (hits, _) = flat.search(&[q], 4, &Score::Cosine, &SearchParams::default())?;
/// let score = |b: u64| cosine((q & b).count_ones(), q.count_ones(), b.count_ones());
/// assert_eq!(hits[0].rows, vec![1, 3, 0, 2]); // 1.0, 0.816, 0.707, 0.5
/// let expected: Vec<f32> = hits[0].rows.iter().map(|&r| score(codes[r as usize])).collect();
/// assert_eq!(hits[0].scores, Some(expected));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Score<'a> {
    /// Hamming distance, ascending (the default).
    Hamming,
    /// Binary cosine `|q and b| / sqrt(|q| |b|)`, descending.
    Cosine,
    /// Jaccard `|q and b| / |q or b|`, descending.
    Jaccard,
    /// A per-query table: `offsets[i] + sum of tables[i * bits + j]` over the set bits `j` of the
    /// code, optionally divided by the code's stored norm; descending.
    Table {
        /// `nq * bits` finite floats, row `i` for query `i`.
        tables: &'a [f32],
        /// `nq` finite floats.
        offsets: &'a [f32],
        /// Divide by the per-code norm stored in the index (`norms.bin`).
        normalise: bool,
    },
}

/// What a score is, without the per-query data a batch carries: what an index or a graph is
/// built for, and what the command line's `--score` names.
///
/// ```
/// use bsa_index::{Score, ScoreKind};
/// let tables = [0.5f32; 8];
/// let adc = Score::Table { tables: &tables, offsets: &[0.0], normalise: false };
/// assert_eq!(adc.kind(), ScoreKind::Table { normalise: false });
/// assert_eq!(adc.name(), "table");
/// // Only Hamming search returns distances without scores.
/// assert!(!ScoreKind::Hamming.has_scores() && ScoreKind::Jaccard.has_scores());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScoreKind {
    /// Hamming distance, ascending.
    Hamming,
    /// Binary cosine, descending.
    Cosine,
    /// Jaccard, descending.
    Jaccard,
    /// A per-query table, divided by the per-code norm if `normalise`; descending.
    Table {
        /// Divide by the per-code norm stored in the index.
        normalise: bool,
    },
}

impl ScoreKind {
    /// Whether results carry float scores (everything but Hamming).
    pub fn has_scores(self) -> bool {
        !matches!(self, ScoreKind::Hamming)
    }
}

impl Score<'_> {
    /// The score's kind, without its tables.
    ///
    /// ```
    /// use bsa_index::{Score, ScoreKind};
    /// let t = Score::Table { tables: &[1.0], offsets: &[0.0], normalise: true };
    /// assert_eq!(t.kind(), ScoreKind::Table { normalise: true });
    /// assert!(!Score::Hamming.kind().has_scores());
    /// ```
    pub fn kind(&self) -> ScoreKind {
        match *self {
            Score::Hamming => ScoreKind::Hamming,
            Score::Cosine => ScoreKind::Cosine,
            Score::Jaccard => ScoreKind::Jaccard,
            Score::Table { normalise, .. } => ScoreKind::Table { normalise },
        }
    }

    /// Short name (`"hamming"`, `"cosine"`, `"jaccard"`, `"table"`), for statistics.
    pub fn name(&self) -> &'static str {
        match self {
            Score::Hamming => "hamming",
            Score::Cosine => "cosine",
            Score::Jaccard => "jaccard",
            Score::Table { .. } => "table",
        }
    }

    /// Whether results carry float scores (everything but Hamming).
    pub fn has_scores(&self) -> bool {
        self.kind().has_scores()
    }

    /// Checks table sizes and values for `nq` queries of `bits`-bit codes.
    pub(crate) fn validate(&self, nq: usize, bits: usize) -> Result<()> {
        if let Score::Table {
            tables, offsets, ..
        } = self
        {
            let want = nq
                .checked_mul(bits)
                .ok_or_else(|| Error::InvalidArgument("query tables size overflows".to_string()))?;
            if tables.len() != want {
                return Err(Error::DimMismatch {
                    what: format!("score table floats ({nq} queries x {bits} bits)"),
                    expected: want,
                    got: tables.len(),
                });
            }
            if offsets.len() != nq {
                return Err(Error::DimMismatch {
                    what: "score offsets (one per query)".into(),
                    expected: nq,
                    got: offsets.len(),
                });
            }
            // A branch-free pass first (it vectorises: every segment of a live index checks the
            // same tables, 4M floats for 1000 queries of 4096 bits), in parallel chunks (one
            // thread took 5% of a rescored graph search); the position only for the error.
            use rayon::prelude::*;
            let finite = |xs: &[f32]| xs.iter().fold(true, |ok, x| ok & x.is_finite());
            if !(tables.par_chunks(1 << 16).all(finite) && finite(offsets)) {
                let i = (tables.iter().chain(offsets.iter()))
                    .position(|x| !x.is_finite())
                    .unwrap_or(0);
                // Named by query: tables made from float queries overflow when a query's
                // values are huge.
                let (q, what) = match i.checked_sub(tables.len()) {
                    None => (i / bits.max(1), format!("entry {}", i % bits.max(1))),
                    Some(q) => (q, "offset".to_string()),
                };
                return Err(Error::InvalidArgument(format!(
                    "the score table of query {q} is not finite ({what}): a float query with \
                     values too large for f32 arithmetic? scale it down"
                )));
            }
        }
        Ok(())
    }
}

/// Binary cosine of overlap `c`, query popcount `m` and code popcount `p`.
///
/// ```
/// use bsa_index::score::cosine;
/// let (q, b) = (0b1110u64, 0b0111u64); // 3 bits each, 2 in common
/// let c = (q & b).count_ones();
/// assert_eq!(cosine(c, q.count_ones(), b.count_ones()), 2.0 / 3.0);
/// assert_eq!(cosine(3, 3, 3), 1.0); // the same code
/// assert_eq!(cosine(0, 0, 5), 0.0); // an empty query scores 0, not NaN
/// ```
#[inline]
pub fn cosine(c: u32, m: u32, p: u32) -> f32 {
    if m == 0 || p == 0 {
        0.0
    } else {
        (f64::from(c) / (f64::from(m) * f64::from(p)).sqrt()) as f32
    }
}

/// Jaccard similarity of overlap `c`, query popcount `m` and code popcount `p`.
///
/// ```
/// use bsa_index::score::jaccard;
/// let (q, b) = (0b1110u64, 0b0111u64); // 2 bits in common of 4 in either
/// assert_eq!(jaccard((q & b).count_ones(), q.count_ones(), b.count_ones()), 0.5);
/// assert_eq!(jaccard(0, 0, 0), 0.0); // two empty codes score 0, not NaN
/// ```
#[inline]
pub fn jaccard(c: u32, m: u32, p: u32) -> f32 {
    let union = u64::from(m) + u64::from(p) - u64::from(c.min(m).min(p));
    if union == 0 {
        0.0
    } else {
        (f64::from(c) / union as f64) as f32
    }
}

/// Final table score from the `f64` sum of table entries (added in ascending bit order).
///
/// ```
/// use bsa_index::score::{table_score, table_sum};
/// let table = [0.5f32, -1.0, 2.0, 0.25];
/// let sum = table_sum(&[0b0101], &table); // bits 0 and 2: 0.5 + 2.0
/// assert_eq!(table_score(1.0, sum, None), 3.5);
/// assert_eq!(table_score(1.0, sum, Some(2.0)), 1.75); // normalised by the code's norm
/// assert_eq!(table_score(1.0, sum, Some(0.0)), 0.0); // a zero norm scores 0
/// ```
#[inline]
pub fn table_score(offset: f32, sum: f64, norm: Option<f32>) -> f32 {
    let s = f64::from(offset) + sum;
    match norm {
        None => s as f32,
        Some(n) if n > 0.0 => (s / f64::from(n)) as f32,
        Some(_) => 0.0,
    }
}

/// `2^e` exactly, for `e` in `-1022..=1023` (a normal `f64`), built from its exponent bits: not
/// `powi`, whose precision Rust leaves unspecified (Miri returns it a few ulps off), so that a
/// factor scales every product and sum it enters without rounding (how rescoring and ground truth
/// keep huge and tiny queries inside `f32`'s range and their cosines bit for bit the same).
///
/// ```
/// use bsa_index::score::pow2;
/// assert_eq!(pow2(3), 8.0);
/// assert_eq!(pow2(-126), f64::from(f32::MIN_POSITIVE));
/// assert_eq!(pow2(-1022), f64::MIN_POSITIVE);
/// ```
///
/// # Panics
/// If `e` is outside `-1022..=1023`.
pub fn pow2(e: i32) -> f64 {
    assert!(
        (-1022..=1023).contains(&e),
        "pow2: 2^{e} is not a normal f64"
    );
    f64::from_bits(((1023 + e) as u64) << 52)
}

/// The `f64` sum of `table[j]` over the set bits `j` of `code`, in ascending bit order. The
/// table has an entry per bit of the codes: set bits past it (padding a damaged file or a
/// writer's bug set, which `verify` reports) are not counted, rather than read out of bounds.
///
/// ```
/// use bsa_index::score::table_sum;
/// let table: Vec<f32> = (0..70).map(|j| j as f32).collect(); // 70-bit codes
/// let code = [1 << 3 | 1 << 10, 1 << 5]; // bits 3, 10 and 69
/// assert_eq!(table_sum(&code, &table), 3.0 + 10.0 + 69.0);
/// assert_eq!(table_sum(&[0, 0], &table), 0.0);
/// ```
#[inline]
pub fn table_sum(code: &[u64], table: &[f32]) -> f64 {
    let mut s = 0.0f64;
    for_each_set_bit(code, table.len(), |j| s += f64::from(table[j]));
    s
}

/// Maps a score to a `u32` whose *ascending* order is the score's *descending* order (`-0.0` and
/// `0.0` map to the same value), so scores reuse the distance machinery of [`crate::topk`].
///
/// ```
/// use bsa_index::score::{desc_key, from_desc_key};
/// let scores = [0.5f32, -2.0, 3.0, 0.0];
/// let mut keys: Vec<u32> = scores.iter().map(|&s| desc_key(s)).collect();
/// keys.sort(); // ascending keys: best score first
/// let best_first: Vec<f32> = keys.iter().map(|&k| from_desc_key(k)).collect();
/// assert_eq!(best_first, [3.0, 0.5, 0.0, -2.0]);
/// assert_eq!(desc_key(-0.0), desc_key(0.0));
/// ```
#[inline]
pub fn desc_key(score: f32) -> u32 {
    let b = (score + 0.0).to_bits();
    let asc = if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    };
    !asc
}

/// Inverse of [`desc_key`].
///
/// ```
/// use bsa_index::score::{desc_key, from_desc_key};
/// for s in [1.5f32, -0.25, f32::MAX, f32::NEG_INFINITY, 1e-40] {
///     assert_eq!(from_desc_key(desc_key(s)), s);
/// }
/// assert_eq!(from_desc_key(desc_key(-0.0)).to_bits(), 0.0f32.to_bits()); // -0.0 comes back as 0.0
/// ```
#[inline]
pub fn from_desc_key(key: u32) -> f32 {
    let asc = !key;
    let b = if asc & 0x8000_0000 != 0 {
        asc & 0x7fff_ffff
    } else {
        !asc
    };
    f32::from_bits(b)
}

/// The per-row score key of an overlap score (`Cosine` or `Jaccard`).
#[inline]
pub(crate) fn overlap_key(jaccard_score: bool, c: u32, m: u32, p: u32) -> u32 {
    desc_key(if jaccard_score {
        jaccard(c, m, p)
    } else {
        cosine(c, m, p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Tables and offsets must be finite; the error names the query and the entry (or offset)
    /// of the first value that is not, wherever it is.
    #[test]
    fn validate_names_the_first_value_that_is_not_finite() {
        let (nq, bits) = (3, 40);
        let check = |tables: &[f32], offsets: &[f32]| {
            let score = Score::Table {
                tables,
                offsets,
                normalise: false,
            };
            score.validate(nq, bits).map_err(|e| e.to_string())
        };
        let mut t = vec![0.5f32; nq * bits];
        let mut o = vec![1.0f32; nq];
        assert!(check(&t, &o).is_ok());
        o[2] = f32::NEG_INFINITY;
        assert!(
            check(&t, &o)
                .unwrap_err()
                .contains("query 2 is not finite (offset)")
        );
        for (i, bad, want) in [
            (0, f32::NAN, "query 0 is not finite (entry 0)"),
            (77, f32::INFINITY, "query 1 is not finite (entry 37)"),
            (119, f32::NAN, "query 2 is not finite (entry 39)"),
        ] {
            t[i] = bad;
            let e = check(&t, &o).unwrap_err();
            assert!(e.contains(want), "{e}");
            t[i] = 0.5;
        }
        assert!(
            check(&t[1..], &o)
                .unwrap_err()
                .contains("score table floats")
        );
    }

    #[test]
    fn overlap_edge_cases() {
        assert_eq!(cosine(0, 0, 5), 0.0);
        assert_eq!(cosine(0, 3, 0), 0.0);
        assert_eq!(cosine(2, 2, 2), 1.0);
        assert_eq!(jaccard(0, 0, 0), 0.0);
        assert_eq!(jaccard(2, 4, 2), 0.5);
        assert_eq!(table_score(1.0, 2.0, Some(0.0)), 0.0);
        assert_eq!(table_score(1.0, 2.0, Some(2.0)), 1.5);
        assert_eq!(table_sum(&[0b101, 1], &[1.0; 128]), 3.0);
        // Padding bits past the table (a 100-bit code's bit 120) are not read.
        assert_eq!(table_sum(&[0b101, 1 << 56], &[1.0; 100]), 2.0);
        assert_eq!(desc_key(0.0), desc_key(-0.0));
    }

    proptest! {
        #[test]
        fn desc_key_reverses_order_and_round_trips(a in any::<f32>(), b in any::<f32>()) {
            prop_assume!(a.is_finite() && b.is_finite());
            if a > b {
                prop_assert!(desc_key(a) < desc_key(b));
            } else if a == b {
                prop_assert_eq!(desc_key(a), desc_key(b));
            }
            prop_assert_eq!(from_desc_key(desc_key(a)), a + 0.0);
        }
    }
}
