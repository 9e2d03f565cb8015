//! HNSW graph over the packed codes (the only file that uses hnsw_rs).
//!
//! hnsw_rs is driven with [`DistHammingBits`], a bit-level Hamming distance (anndists'
//! `DistHamming` counts *unequal words*, which is wrong for packed codes). The graph is dumped
//! with hnsw_rs's own format into `hnsw.hnsw.graph` and `hnsw.hnsw.data` inside the index
//! directory and reloaded on first use, never rebuilt. Those files use hnsw_rs's native-endian,
//! 64-bit layout, and hnsw_rs's loader panics or exits on malformed bytes, so both files are
//! always checked against the manifest's CRC-32 before they are handed to it.

use std::path::Path;

use hnsw_rs::prelude::{AnnT, Distance, Hnsw, HnswIo};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::flat::{check_queries, Hits, SearchParams};
use crate::hamming::{hamming, hamming_fixed};
use crate::index::{verify_plain_file, Index};
use crate::manifest::HnswParams;
use crate::topk::key;

/// Basename of the hnsw_rs dump inside an index directory.
pub const HNSW_BASENAME: &str = "hnsw";
/// Largest accepted `max_connections`. hnsw_rs exits the process above 256 and stores the value
/// in one byte in its dump (256 would reload as 0), so the limit here is 255.
pub const MAX_CONNECTIONS_LIMIT: usize = 255;
/// Number of layers hnsw_rs requires for a dump (its `NB_LAYER_MAX`).
const HNSW_LAYERS: usize = 16;
/// Points inserted between progress reports.
const INSERT_BATCH: usize = 8192;

/// Bit-level Hamming distance between packed codes, for hnsw_rs.
#[derive(Debug, Default, Clone, Copy)]
pub struct DistHammingBits;

impl Distance<u64> for DistHammingBits {
    fn eval(&self, va: &[u64], vb: &[u64]) -> f32 {
        // Exact in f32 up to 2^24: build_and_dump limits codes to 2^24 bits.
        fn fixed<const W: usize>(a: &[u64], b: &[u64]) -> u32 {
            match (<&[u64; W]>::try_from(a), <&[u64; W]>::try_from(b)) {
                (Ok(a), Ok(b)) => hamming_fixed(a, b),
                _ => hamming(a, b),
            }
        }
        let d = match va.len() {
            1 => fixed::<1>(va, vb),
            2 => fixed::<2>(va, vb),
            4 => fixed::<4>(va, vb),
            8 => fixed::<8>(va, vb),
            16 => fixed::<16>(va, vb),
            _ => hamming(va, vb),
        };
        d as f32
    }
}

impl HnswParams {
    /// Checks the parameters (`max_connections` in 2..=255, `ef_construction >= 1`, `ef_search >= 1`).
    pub fn validate(&self) -> Result<()> {
        if !(2..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            return Err(Error::InvalidArgument(format!(
                "HNSW max_connections (M) must be in 2..={MAX_CONNECTIONS_LIMIT}, got {}",
                self.max_connections
            )));
        }
        if self.ef_construction == 0 || self.ef_search == 0 {
            return Err(Error::InvalidArgument(
                "HNSW ef_construction and ef_search must be >= 1".into(),
            ));
        }
        Ok(())
    }
}

/// A loaded HNSW graph.
pub(crate) struct HnswGraph {
    hnsw: Hnsw<'static, u64, DistHammingBits>,
}

/// Builds a graph over `codes` in the current rayon pool and dumps it into `dir`.
/// Returns the basename used. `progress(done)` is called after each batch of inserts.
pub(crate) fn build_and_dump(
    codes: &[u64],
    w: usize,
    params: &HnswParams,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<String> {
    params.validate()?;
    if w * 64 > 1 << 24 {
        return Err(Error::InvalidArgument(
            "HNSW supports codes of at most 2^24 bits".into(),
        ));
    }
    let n = codes.len() / w;
    let hnsw: Hnsw<u64, DistHammingBits> = Hnsw::new(
        params.max_connections,
        n.max(1),
        HNSW_LAYERS,
        params.ef_construction,
        DistHammingBits,
    );
    let mut done = 0usize;
    while done < n {
        let end = (done + INSERT_BATCH).min(n);
        let batch: Vec<(&[u64], usize)> = (done..end)
            .map(|r| (&codes[r * w..(r + 1) * w], r))
            .collect();
        hnsw.parallel_insert_slice(&batch);
        done = end;
        progress(done as u64);
    }
    let used = hnsw.file_dump(dir, HNSW_BASENAME).map_err(|e| {
        Error::io(
            dir,
            std::io::Error::other(format!("writing the HNSW graph: {e:#}")),
        )
    })?;
    if used != HNSW_BASENAME {
        return Err(Error::io(
            dir,
            std::io::Error::other(format!("hnsw_rs dumped under basename {used:?}")),
        ));
    }
    Ok(used)
}

impl HnswGraph {
    fn load(index: &Index) -> Result<HnswGraph> {
        let info = index.manifest.hnsw.as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: the index has no HNSW graph; rebuild it with HNSW enabled (bsa build --hnsw)",
                index.dir.display()
            ))
        })?;
        // hnsw_rs panics or exits on malformed files: check every byte first.
        for name in [&info.graph, &info.data] {
            verify_plain_file(&index.dir.join(name), &index.manifest.files[name])?;
        }
        // hnsw_rs ties the graph's lifetime to the loader; the loader is tiny (paths and options,
        // no memory map since mmap is off), so it is leaked once per load to obtain 'static.
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(&index.dir, &info.basename)));
        let mut hnsw: Hnsw<'static, u64, DistHammingBits> = io.load_hnsw().map_err(|e| {
            Error::corrupt(
                index.dir.join(&info.graph),
                format!("hnsw_rs could not load the graph: {e:#}"),
            )
        })?;
        hnsw.set_searching_mode(true);
        if hnsw.get_nb_point() != index.len() {
            return Err(Error::corrupt(
                index.dir.join(&info.graph),
                format!(
                    "graph has {} points but the index has {}",
                    hnsw.get_nb_point(),
                    index.len()
                ),
            ));
        }
        Ok(HnswGraph { hnsw })
    }

    fn search(
        &self,
        query: &[u64],
        k: usize,
        ef: usize,
        n: usize,
        max_distance: Option<u32>,
    ) -> Vec<u64> {
        let mut keys: Vec<u64> = self
            .hnsw
            .search(query, k, ef.max(k))
            .into_iter()
            .filter(|nb| nb.d_id < n)
            .map(|nb| key(nb.distance as u32, nb.d_id as u32))
            .filter(|&kk| max_distance.is_none_or(|m| (kk >> 32) as u32 <= m))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys.truncate(k);
        keys
    }
}

impl Index {
    /// Loads the HNSW graph now (otherwise the first HNSW search loads it). Useful to keep the
    /// loading time out of search timings. Verifies the graph files' checksums first.
    pub fn load_hnsw(&self) -> Result<()> {
        if self.hnsw.get().is_none() {
            let g = HnswGraph::load(self)?;
            // Another thread may have won the race; both graphs are identical, keep the first.
            let _ = self.hnsw.set(g);
        }
        Ok(())
    }

    /// Approximate k nearest codes by Hamming distance via the stored HNSW graph.
    ///
    /// Same input and output conventions as [`Index::search_flat`]: best first, ties by row. The
    /// candidate list size is `params.ef_search` or the build-time default, and at least `k`.
    /// Queries run in parallel on the current rayon pool. May return fewer than `k` hits.
    pub fn search_hnsw(
        &self,
        queries: &[u64],
        k: usize,
        params: &SearchParams,
    ) -> Result<Vec<Hits>> {
        let w = self.words_per_code();
        let nq = check_queries(queries, w, self.bits())?;
        self.load_hnsw()?;
        // load_hnsw succeeded, so the cell is set.
        let g = self.hnsw.get().expect("graph loaded");
        let ef = params
            .ef_search
            .or(self.manifest.hnsw.as_ref().map(|h| h.params.ef_search))
            .unwrap_or(64);
        let k = k.min(self.len());
        let ids = self.ids();
        let n = self.len();
        Ok((0..nq)
            .into_par_iter()
            .map(|qi| {
                if k == 0 {
                    return Hits::default();
                }
                let keys = g.search(
                    &queries[qi * w..(qi + 1) * w],
                    k,
                    ef,
                    n,
                    params.max_distance,
                );
                Hits::from_keys(&keys, Some(ids))
            })
            .collect())
    }
}
