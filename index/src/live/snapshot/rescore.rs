//! Re-ranking a snapshot search's hits by cosine similarity against the stored float vectors
//! ([`Snapshot::rescore`], [`Snapshot::rescore_batch`]).

use crate::error::{Error, Result};
use crate::search::Hits;
use crate::vectors::{check_query, cosines};

use super::open::Snapshot;

impl Snapshot {
    /// [`Snapshot::rescore`] of a batch: `queries` holds one float embedding per entry of
    /// `hits` (`hits.len() x dim` values, row-major), each entry's candidates re-ranked by its
    /// query, the queries in parallel on the calling rayon pool. The results are
    /// [`Snapshot::rescore`]'s, one by one; when queries fail, one of their errors is returned
    /// (which one, of several, is not fixed).
    ///
    /// ```
    /// use bsa_index::live::{SearchOptions, Snapshot};
    /// use bsa_index::{IndexBuilder, Mode, Score};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(8, &[0b0001, 0b0010]).vectors(&[1.0, 0.0, 0.6, 0.8], 2).build(&path)?;
    /// let snap = Snapshot::open(&path)?;
    /// let flat = Mode::parse("flat")?;
    /// let (hits, _) = snap.search(&[0, 0], 2, &Score::Hamming, &flat, &SearchOptions::default())?;
    /// let best = snap.rescore_batch(&[1.0, 0.0, 0.0, 1.0], &hits, 1)?;
    /// assert_eq!((best[0].ids[0], best[1].ids[0]), (0, 1));
    /// let e = snap.rescore_batch(&[1.0, 0.0], &hits, 1).unwrap_err().to_string();
    /// assert!(e.contains("expected 4, got 2"), "{e}"); // one embedding per entry of hits
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn rescore_batch(&self, queries: &[f32], hits: &[Hits], k: usize) -> Result<Vec<Hits>> {
        use rayon::prelude::*;
        let dim = self.vector_dim().unwrap_or(0);
        if dim > 0 && queries.len() != hits.len().saturating_mul(dim) {
            return Err(Error::DimMismatch {
                what: format!("float query values ({} queries of {dim})", hits.len()),
                expected: hits.len() * dim,
                got: queries.len(),
            });
        }
        hits.par_iter()
            .enumerate()
            .map(|(i, h)| self.rescore(&queries[i * dim..(i + 1) * dim], h, k))
            .collect()
    }

    /// Re-ranks one query's hits (global rows, as a search of this snapshot returns them) by
    /// cosine similarity with `query` against the stored vectors and keeps the best `k`:
    /// descending score, ties by smaller id. The same scores as [`Index::rescore`]. Hits whose
    /// rows hold other ids here, or deleted rows (a search of another snapshot: keep one
    /// snapshot for a query's search and rescoring), are an error.
    ///
    /// [`Index::rescore`]: crate::index::Index::rescore
    ///
    /// ```
    /// use bsa_index::live::{NewRows, SearchOptions, Snapshot, Writer};
    /// use bsa_index::{IndexBuilder, Mode, Score};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(8, &[0b0001, 0b0010]).vectors(&[1.0, 0.0, 0.6, 0.8], 2).build(&path)?;
    /// Writer::open(&path)?.add(&NewRows::codes(&[0b0100]).vectors(&[0.0, 1.0]), false)?;
    /// let snap = Snapshot::open(&path)?;
    /// let flat = Mode::parse("flat")?;
    /// // Three codes one bit from the query, in two segments; the vectors rank them.
    /// let (hits, _) = snap.search(&[0], 3, &Score::Hamming, &flat, &SearchOptions::default())?;
    /// assert_eq!(hits[0].ids, vec![0, 1, 2]);
    /// let best = snap.rescore(&[0.0, 1.0], &hits[0], 2)?;
    /// assert_eq!(best.ids, vec![2, 1]);
    /// assert_eq!(best.rows, vec![2, 1]);
    /// // The query is the float embedding, of the stored vectors' dimension.
    /// let e = snap.rescore(&[0.0; 3], &hits[0], 2).unwrap_err().to_string();
    /// assert!(e.contains("expected 2, got 3; rescoring takes the float embedding"), "{e}");
    /// // Hits of another snapshot are refused: id 1 is deleted in the next one.
    /// Writer::open(&path)?.delete(&[1])?;
    /// let next = Snapshot::open(&path)?;
    /// let e = next.rescore(&[0.0, 1.0], &hits[0], 2).unwrap_err();
    /// assert!(e.to_string().contains("row 1 (id 1) is deleted in this snapshot"), "{e}");
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn rescore(&self, query: &[f32], hits: &Hits, k: usize) -> Result<Hits> {
        let dim = self.vector_dim().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: the index stores no vectors, so it cannot rescore; rebuild it with vectors \
                 (bsa build --vectors; vectors=True from Python)",
                self.dir.display()
            ))
        })?;
        check_query(query, dim)?;
        hits.check_lengths()?;
        let located = hits
            .rows
            .iter()
            .zip(&hits.ids)
            .map(|(&row, &id)| {
                let (s, r) = self.locate(row).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "candidate row {row} is out of range (this snapshot, generation {}, has \
                         {} rows): the hits come from another snapshot; rescore with the one \
                         that searched",
                        self.generation,
                        self.rows()
                    ))
                })?;
                // Rows name rows of the snapshot that searched: hits of another generation
                // would be scored by other rows' vectors, or return a deleted id.
                let seg = &self.segments[s];
                let (live, here) = (!seg.is_deleted(r), seg.index.ids()[r]);
                if here != id || !live {
                    return Err(Error::InvalidArgument(format!(
                        "candidate row {row} (id {id}) is {} in this snapshot (generation {}): \
                         the hits come from another snapshot; rescore with the one that searched",
                        if live {
                            format!("id {here}")
                        } else {
                            "deleted".to_string()
                        },
                        self.generation
                    )));
                }
                let v = seg.index.vectors()?.ok_or_else(|| {
                    Error::corrupt(
                        self.dir.join(&seg.name),
                        "the segment stores no vectors but the index says every segment does",
                    )
                })?;
                Ok((v, r))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut scored: Vec<(usize, f32)> =
            cosines(&located, query).into_iter().enumerate().collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(hits.ids[a.0].cmp(&hits.ids[b.0])));
        scored.truncate(k);
        Ok(Hits {
            rows: scored.iter().map(|&(p, _)| hits.rows[p]).collect(),
            ids: scored.iter().map(|&(p, _)| hits.ids[p]).collect(),
            distances: scored.iter().map(|&(p, _)| hits.distances[p]).collect(),
            scores: Some(scored.iter().map(|&(_, s)| s).collect()),
        })
    }
}
