//! Exact search: every code is compared with every query.
//!
//! The work is cut into tiles of (a block of up to 32 queries) x (a chunk of codes). Inside a tile
//! the codes are visited in ~32 KiB blocks and each block is compared with every query of the
//! tile before the next block is loaded, so memory traffic is one pass over the chunk per query
//! block. Few queries (down to one) get their codes split into several chunks so that every
//! thread of the calling rayon pool scans part of the codes; the per-chunk top-k lists are merged
//! exactly. Many queries get one chunk per query block. The parallelism is that of the rayon pool
//! the call runs in (`pool.install(|| index.search_flat(..))`).

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::hamming::{tile_codes, Kernel};
use crate::index::Index;
use crate::pack::check_high_bits_zero;
use crate::topk::{key_distance, key_row, merge_keys, TopK};

/// Largest number of queries scanned together against one block of codes.
const MAX_QUERY_BLOCK: usize = 32;
/// Smallest chunk of codes handed to one task when codes are split for parallelism.
const MIN_CHUNK: usize = 16 * 1024;

/// How to divide the work between threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Split {
    /// Split codes into chunks when there are too few query blocks to keep every thread busy (default).
    #[default]
    Auto,
    /// Only split queries (FAISS's strategy: one query is scanned by one thread).
    Queries,
    /// Always split codes into at least one chunk per thread.
    Codes,
}

/// Search settings shared by flat and HNSW search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SearchParams {
    /// Return only neighbours at Hamming distance `<= max_distance`.
    pub max_distance: Option<u32>,
    /// HNSW only: candidate list size (`ef`); `None` uses the value stored at build time. Raised to `k` if smaller.
    pub ef_search: Option<usize>,
    /// Flat only: how to divide the work between threads.
    pub split: Split,
}

impl SearchParams {
    /// Sets [`max_distance`](Self::max_distance).
    pub fn with_max_distance(mut self, d: Option<u32>) -> Self {
        self.max_distance = d;
        self
    }
    /// Sets [`ef_search`](Self::ef_search).
    pub fn with_ef_search(mut self, ef: Option<usize>) -> Self {
        self.ef_search = ef;
        self
    }
    /// Sets [`split`](Self::split).
    pub fn with_split(mut self, split: Split) -> Self {
        self.split = split;
        self
    }
}

/// The neighbours of one query, best first: ascending Hamming distance, ties by ascending row.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Hits {
    /// Row numbers (0-based positions in the index).
    pub rows: Vec<u64>,
    /// External ids of the rows (equal to `rows` when the index has no ids, or for bare slices).
    pub ids: Vec<u64>,
    /// Hamming distances.
    pub distances: Vec<u32>,
    /// Cosine similarities after rescoring (then the order is by descending score, ties by row).
    pub scores: Option<Vec<f32>>,
}

impl Hits {
    /// Number of neighbours.
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    /// Whether there are no neighbours.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Hits from parallel lists (e.g. candidates found elsewhere, to [rescore](Index::rescore)).
    pub fn from_parts(rows: Vec<u64>, ids: Vec<u64>, distances: Vec<u32>) -> Result<Hits> {
        if rows.len() != ids.len() || rows.len() != distances.len() {
            return Err(Error::InvalidArgument(format!(
                "hits need equal lengths, got {} rows, {} ids, {} distances",
                rows.len(),
                ids.len(),
                distances.len()
            )));
        }
        Ok(Hits {
            rows,
            ids,
            distances,
            scores: None,
        })
    }

    pub(crate) fn from_keys(keys: &[u64], ids: Option<&[u64]>) -> Hits {
        let rows: Vec<u64> = keys.iter().map(|&k| u64::from(key_row(k))).collect();
        Hits {
            ids: match ids {
                Some(ids) => rows.iter().map(|&r| ids[r as usize]).collect(),
                None => rows.clone(),
            },
            distances: keys.iter().map(|&k| key_distance(k)).collect(),
            rows,
            scores: None,
        }
    }
}

/// Checks a query matrix and returns the number of queries.
pub(crate) fn check_queries(queries: &[u64], w: usize, bits: usize) -> Result<usize> {
    if w == 0 || !queries.len().is_multiple_of(w) {
        return Err(Error::DimMismatch {
            what: format!("query words (a multiple of {w} words per {bits}-bit code)"),
            expected: w * (queries.len() / w.max(1)).max(1),
            got: queries.len(),
        });
    }
    check_high_bits_zero(queries, bits)?;
    Ok(queries.len() / w)
}

/// Exact top-k over a bare slice of codes (`n * words_per_code` words); hits' ids are rows.
///
/// This is what [`Index::search_flat`] runs on the mapped codes. `queries` holds
/// `nq * words_per_code` words; unused high bits of codes and queries must be zero.
/// `k > n` returns all `n` rows.
pub fn top_k(
    codes: &[u64],
    words_per_code: usize,
    bits: usize,
    queries: &[u64],
    k: usize,
    params: &SearchParams,
) -> Result<Vec<Hits>> {
    if words_per_code == 0 || bits == 0 || words_per_code != bits.div_ceil(64) {
        return Err(Error::InvalidArgument(format!(
            "{words_per_code} words per code cannot hold {bits}-bit codes"
        )));
    }
    if !codes.len().is_multiple_of(words_per_code)
        || codes.len() / words_per_code > u32::MAX as usize
    {
        return Err(Error::InvalidArgument(
            "codes are not whole rows or exceed 2^32-1 rows".into(),
        ));
    }
    check_queries(queries, words_per_code, bits)?;
    Ok(search_keys(codes, words_per_code, queries, k, params)
        .iter()
        .map(|keys| Hits::from_keys(keys, None))
        .collect())
}

/// Core of the exact search: sorted `(distance, row)` keys per query. Inputs must be validated.
pub(crate) fn search_keys(
    codes: &[u64],
    w: usize,
    queries: &[u64],
    k: usize,
    params: &SearchParams,
) -> Vec<Vec<u64>> {
    let n = codes.len() / w;
    let nq = queries.len() / w;
    let k = k.min(n);
    if nq == 0 {
        return Vec::new();
    }
    if k == 0 {
        return vec![Vec::new(); nq];
    }
    let kernel = Kernel::select(w);
    let threads = rayon::current_num_threads().max(1);
    let qblocks = nq.div_ceil(MAX_QUERY_BLOCK);
    let qb = nq.div_ceil(qblocks);
    let max_chunks = n.div_ceil(MIN_CHUNK).max(1);
    let chunks = match params.split {
        Split::Queries => 1,
        Split::Codes => (2 * threads).min(max_chunks),
        Split::Auto if qblocks >= 2 * threads => 1,
        Split::Auto => (2 * threads).div_ceil(qblocks).min(max_chunks),
    }
    .max(1);
    let chunk_len = n.div_ceil(chunks);
    let tile = tile_codes(w);

    let run = |task: usize| -> Vec<Vec<u64>> {
        let (qbi, ci) = (task / chunks, task % chunks);
        let q0 = qbi * qb;
        let q1 = (q0 + qb).min(nq);
        let r0 = ci * chunk_len;
        let r1 = (r0 + chunk_len).min(n);
        let mut tops: Vec<TopK> = (q0..q1)
            .map(|_| TopK::new(k, params.max_distance))
            .collect();
        let mut start = r0;
        while start < r1 {
            let end = (start + tile).min(r1);
            let block = &codes[start * w..end * w];
            for (qi, top) in (q0..q1).zip(tops.iter_mut()) {
                // start < n <= u32::MAX, checked by the callers.
                kernel.scan(&queries[qi * w..(qi + 1) * w], block, start as u32, top);
            }
            start = end;
        }
        tops.into_iter().map(TopK::into_sorted_keys).collect()
    };

    let tasks = qblocks * chunks;
    let parts: Vec<Vec<Vec<u64>>> = if tasks == 1 {
        vec![run(0)]
    } else {
        (0..tasks)
            .into_par_iter()
            .with_max_len(1)
            .map(run)
            .collect()
    };
    if chunks == 1 {
        return parts.into_iter().flatten().collect();
    }
    let mut out = Vec::with_capacity(nq);
    for qbi in 0..qblocks {
        let q_in_block = (nq - qbi * qb).min(qb);
        let block_parts = &parts[qbi * chunks..(qbi + 1) * chunks];
        for j in 0..q_in_block {
            let mut all = Vec::with_capacity(k * chunks);
            for part in block_parts {
                all.extend_from_slice(&part[j]);
            }
            out.push(merge_keys(all, k));
        }
    }
    out
}

impl Index {
    /// Exact k nearest codes by Hamming distance for each query.
    ///
    /// `queries` holds `nq * words_per_code()` words (packed like the index's codes, unused high
    /// bits zero). Returns one [`Hits`] per query, best first, ties by smaller row; `k > len()`
    /// returns every row. Runs on the current rayon pool.
    pub fn search_flat(
        &self,
        queries: &[u64],
        k: usize,
        params: &SearchParams,
    ) -> Result<Vec<Hits>> {
        let w = self.words_per_code();
        check_queries(queries, w, self.bits())?;
        let ids = self.ids();
        Ok(search_keys(self.codes(), w, queries, k, params)
            .iter()
            .map(|keys| Hits::from_keys(keys, Some(ids)))
            .collect())
    }

    /// Name of the distance kernel flat search uses for this index on this CPU (for `--stats`).
    pub fn kernel_name(&self) -> &'static str {
        Kernel::select(self.words_per_code()).name()
    }
}
