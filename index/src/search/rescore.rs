//! Re-ranking candidates by exact cosine similarity against stored float vectors (what Qdrant
//! and Weaviate call oversampling + rescoring): a step after any mode, not a mode.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::search::Hits;
use crate::vectors::{Vectors, cosine_top_k};

/// Re-ranks one query's hits by cosine similarity between `query` and the rows' vectors
/// (`dim` floats each) and keeps the best `k`: descending score, ties by smaller row.
///
/// The result keeps each hit's row, id and Hamming distance and sets `scores`.
///
/// ```
/// use bsa_index::search::{rescore::rescore, Hits};
/// use bsa_index::Vectors;
/// let vectors = [1.0f32, 0.0, 0.0, 1.0, 0.6, 0.8];
/// let mut hits = Hits::from_parts(vec![0, 1, 2], vec![10, 11, 12], vec![0, 1, 2])?;
/// let best = rescore(Vectors::F32(&vectors), 2, &[0.0, 1.0], &hits, 2)?;
/// assert_eq!(best.ids, vec![11, 12]);
/// // Hits whose (public) fields disagree in length are refused.
/// hits.ids.pop();
/// let e = rescore(Vectors::F32(&vectors), 2, &[0.0, 1.0], &hits, 2).unwrap_err();
/// assert!(e.to_string().contains("3 rows, 2 ids"), "{e}");
/// # Ok::<(), bsa_index::Error>(())
/// ```
pub fn rescore(
    vectors: Vectors<'_>,
    dim: usize,
    query: &[f32],
    hits: &Hits,
    k: usize,
) -> Result<Hits> {
    hits.check_lengths()?;
    let best = cosine_top_k(vectors, dim, query, &hits.rows, k)?;
    Ok(Hits {
        rows: best.iter().map(|&(p, _)| hits.rows[p]).collect(),
        ids: best.iter().map(|&(p, _)| hits.ids[p]).collect(),
        distances: best.iter().map(|&(p, _)| hits.distances[p]).collect(),
        scores: Some(best.iter().map(|&(_, s)| s).collect()),
    })
}

/// [`rescore`] for many queries in parallel: `queries` holds `hits.len() * dim` floats.
///
/// ```
/// use bsa_index::search::{rescore::rescore_batch, Hits};
/// use bsa_index::Vectors;
/// # fn main() -> bsa_index::Result<()> {
/// let vectors = [1.0f32, 0.0, /* 1 */ 0.0, 1.0, /* 2 */ 0.6, 0.8];
/// let hits = vec![
///     Hits::from_parts(vec![0, 1, 2], vec![10, 11, 12], vec![0, 1, 2])?,
///     Hits::from_parts(vec![2, 0], vec![12, 10], vec![1, 1])?,
/// ];
/// let queries = [0.0f32, 1.0, /* query 1 */ 1.0, 0.0];
/// let best = rescore_batch(Vectors::F32(&vectors), 2, &queries, &hits, 1)?;
/// assert_eq!((best[0].ids.clone(), best[1].ids.clone()), (vec![11], vec![10]));
/// assert_eq!(best[1].distances, vec![1]); // each hit keeps its Hamming distance
/// assert!(rescore_batch(Vectors::F32(&vectors), 2, &queries[..2], &hits, 1).is_err());
/// # Ok(()) }
/// ```
pub fn rescore_batch(
    vectors: Vectors<'_>,
    dim: usize,
    queries: &[f32],
    hits: &[Hits],
    k: usize,
) -> Result<Vec<Hits>> {
    if queries.len() != hits.len() * dim {
        return Err(Error::DimMismatch {
            what: format!("query floats ({} queries x dimension {dim})", hits.len()),
            expected: hits.len() * dim,
            got: queries.len(),
        });
    }
    hits.par_iter()
        .enumerate()
        .map(|(i, h)| rescore(vectors, dim, &queries[i * dim..(i + 1) * dim], h, k))
        .collect()
}
