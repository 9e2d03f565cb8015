//! The part of [`crate::hnsw`] that runs hnsw_rs (the `hnsw-rs` feature, on by default):
//! building Hamming graphs over the codes. Nothing here is compiled without the feature.
//!
//! The graph is *built* with hnsw_rs, driven with [`DistHammingBits`], a bit-level Hamming
//! distance (anndists' `DistHamming` counts *unequal words*, which is wrong for packed codes).
//! After building, the graph is exported as flat neighbour lists into `graph.bin`, which the
//! search reads in place ([`crate::graph`]: no hnsw_rs at search time). The hnsw_rs dump
//! (`hnsw.hnsw.graph` and `hnsw.hnsw.data`, hnsw_rs's native-endian, 64-bit layout) is still
//! written beside it; indexes written before `graph.bin` existed have only the dump, which
//! `dump.rs` reads (without hnsw_rs) into the same flat lists this export makes.
//!
//! Rows and hnsw_rs ids: the builder inserts row `r` with hnsw_rs `DataId` `r`, so the exported
//! neighbour ids are the `DataId`s (checked to cover `0..n` exactly once).

use std::path::Path;

use hnsw_rs::prelude::{AnnT, Distance, Hnsw};

use super::dump::flat_lists;
use crate::error::{Error, Result};
use crate::graph::{GRAPH_FILE, GraphData, write_graph_file};
use crate::hamming::{hamming, hamming_fixed};
use crate::manifest::{FileInfo, HnswParams};

/// Number of layers hnsw_rs requires for a dump (its `NB_LAYER_MAX`).
const HNSW_LAYERS: usize = 16;
/// Points inserted between progress reports.
const INSERT_BATCH: usize = 1024;

/// Bit-level Hamming distance between packed codes, for hnsw_rs.
///
/// Needs the `hnsw-rs` feature (on by default).
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

/// Exports an hnsw_rs graph over `n` rows (inserted with `DataId` = row) as flat lists.
///
/// Level-0 lists get `max(2M, longest list)` slots and upper lists `max(M, longest list)`, so
/// nothing is cut. Neighbours are kept in hnsw_rs's order (nearest first); an upper-level
/// neighbour that is not itself on that level (never expected from hnsw_rs) is dropped, so the
/// greedy descent only follows nodes that have a list there.
fn export(hnsw: &Hnsw<'_, u64, DistHammingBits>, n: usize, m: usize) -> Result<GraphData> {
    let points = hnsw.get_point_indexation().into_iter().map(|point| {
        let lists = point.get_neighborhood_id();
        let lists = lists
            .iter()
            .map(|l| l.iter().map(|nb| nb.get_origin_id() as u64).collect());
        (
            point.get_origin_id() as u64,
            usize::from(point.get_point_id().0),
            lists.collect(),
        )
    });
    flat_lists(points, n, m).map_err(|d| Error::InvalidArgument(format!("HNSW graph export: {d}")))
}

/// Builds a graph over `codes` in the current rayon pool, dumps it into `dir` with hnsw_rs under
/// `basename`, and exports it as `graph.bin`. Returns the dump's basename and the graph file's
/// name and manifest entry. `progress(done)` is called after each batch of inserts; an error it
/// returns (e.g. [`Error::Stopped`]) ends the build.
pub(crate) fn build_and_dump(
    codes: &[u64],
    w: usize,
    params: &HnswParams,
    dir: &Path,
    basename: &str,
    progress: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<(String, (String, FileInfo))> {
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
        // DataId = row number: the export relies on it.
        let batch: Vec<(&[u64], usize)> = (done..end)
            .map(|r| (&codes[r * w..(r + 1) * w], r))
            .collect();
        hnsw.parallel_insert_slice(&batch);
        done = end;
        progress(done as u64)?;
    }
    let used = hnsw.file_dump(dir, basename).map_err(|e| {
        // hnsw_rs passes a system error on inside anyhow's: said as the system's (its number,
        // and advice such as freeing space), of the folder its two files are written in.
        let os = (e.chain()).find_map(|c| {
            c.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error)
        });
        let error = match os {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::other(format!("writing the HNSW graph: {e:#}")),
        };
        Error::io(dir, error)
    })?;
    if used != basename {
        return Err(Error::io(
            dir,
            std::io::Error::other(format!("hnsw_rs dumped under basename {used:?}")),
        ));
    }
    let payload = export(&hnsw, n, params.max_connections)?.to_payload()?;
    let info = write_graph_file(&dir.join(GRAPH_FILE), n as u64, &payload)?;
    Ok((used, (GRAPH_FILE.to_string(), info)))
}
