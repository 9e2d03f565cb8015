//! How the segments' hits combine: the cutoffs each segment passes to the next
//! ([`BestSoFar`]) and the final [`merge`] of every segment's hits.

use crate::score::{desc_key, from_desc_key};
use crate::search::Hits;

/// Each query's best keys over the segments searched so far, for the cutoffs of the next:
/// the `k`-th best hit (once `k` hits were found), within the minimum score if one was asked.
pub(super) struct BestSoFar {
    /// `k`, or 0 when no cutoffs are kept (`k` above [`MAX_CUTOFF_K`]).
    k: usize,
    scored: bool,
    min_score: Option<f32>,
    /// Per query, up to `k` keys (distances, or [`desc_key`]s of scores), unordered.
    keys: Vec<Vec<u32>>,
}

/// Above this `k` no cutoffs are kept (range searches ask for every row in range).
const MAX_CUTOFF_K: usize = 1 << 12;

impl BestSoFar {
    pub(super) fn new(nq: usize, k: usize, scored: bool, min_score: Option<f32>) -> Self {
        BestSoFar {
            k: if k <= MAX_CUTOFF_K { k } else { 0 },
            scored,
            min_score,
            keys: vec![Vec::new(); nq],
        }
    }

    pub(super) fn add(&mut self, hits: &[Hits]) {
        if self.k == 0 {
            return;
        }
        for (keys, h) in self.keys.iter_mut().zip(hits) {
            match &h.scores {
                Some(s) if self.scored => keys.extend(s.iter().map(|&x| desc_key(x))),
                _ => keys.extend_from_slice(&h.distances),
            }
            if keys.len() > self.k {
                keys.select_nth_unstable(self.k - 1);
                keys.truncate(self.k);
            }
        }
    }

    /// Query `q`'s `k`-th best key so far.
    fn kth(&self, q: usize) -> Option<u32> {
        let keys = &self.keys[q];
        (self.k > 0 && keys.len() == self.k).then(|| keys.iter().copied().max().unwrap_or(0))
    }

    /// The cutoffs of the next segment, as maximum distances (Hamming) or minimum scores;
    /// `None` when no query has one.
    pub(super) fn cutoffs(&self) -> (Option<Vec<u32>>, Option<Vec<f32>>) {
        let nq = self.keys.len();
        let any = (0..nq).any(|q| self.kth(q).is_some());
        if self.scored {
            let floor = self.min_score.unwrap_or(f32::NEG_INFINITY);
            let min = (any || self.min_score.is_some()).then(|| {
                (0..nq)
                    .map(|q| {
                        self.kth(q)
                            .map_or(floor, |key| from_desc_key(key).max(floor))
                    })
                    .collect()
            });
            (None, min)
        } else {
            let max = any.then(|| (0..nq).map(|q| self.kth(q).unwrap_or(u32::MAX)).collect());
            (max, None)
        }
    }
}

/// Merges each query's hits from every segment: best first (ascending distance, or descending
/// score), ties by smaller id, at most `k`.
pub(super) fn merge(parts: Vec<Vec<Hits>>, nq: usize, k: usize, scored: bool) -> Vec<Hits> {
    match parts.len() {
        0 => return vec![Hits::none(scored); nq],
        1 => return parts.into_iter().next().expect("one part"),
        _ => {}
    }
    (0..nq)
        .map(|q| {
            let mut all: Vec<(&Hits, usize)> = parts
                .iter()
                .flat_map(|p| (0..p[q].len()).map(move |i| (&p[q], i)))
                .collect();
            all.sort_by(|&(a, i), &(b, j)| {
                let by_key = if scored {
                    let (sa, sb) = (a.scores.as_ref(), b.scores.as_ref());
                    sb.map_or(0.0, |s| s[j])
                        .total_cmp(&sa.map_or(0.0, |s| s[i]))
                } else {
                    a.distances[i].cmp(&b.distances[j])
                };
                by_key.then(a.ids[i].cmp(&b.ids[j]))
            });
            all.truncate(k);
            Hits {
                rows: all.iter().map(|&(h, i)| h.rows[i]).collect(),
                ids: all.iter().map(|&(h, i)| h.ids[i]).collect(),
                distances: all.iter().map(|&(h, i)| h.distances[i]).collect(),
                scores: scored.then(|| {
                    all.iter()
                        .map(|&(h, i)| h.scores.as_ref().map_or(0.0, |s| s[i]))
                        .collect()
                }),
            }
        })
        .collect()
}
