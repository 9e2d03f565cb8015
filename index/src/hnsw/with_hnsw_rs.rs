//! The part of [`crate::hnsw`] that runs hnsw_rs (the `hnsw-rs` feature, on by default): building
//! Hamming graphs over the codes, and loading the hnsw_rs dump of indexes written before
//! `graph.bin` existed. Nothing here is compiled without the feature, and nothing here uses its
//! parent module (the parent uses this one).
//!
//! The graph is *built* with hnsw_rs, driven with [`DistHammingBits`], a bit-level Hamming
//! distance (anndists' `DistHamming` counts *unequal words*, which is wrong for packed codes).
//! After building, the graph is exported as flat neighbour lists into `graph.bin`, which the
//! search reads in place ([`crate::graph`]: no hnsw_rs at search time). The hnsw_rs dump
//! (`hnsw.hnsw.graph` and `hnsw.hnsw.data`, hnsw_rs's native-endian, 64-bit layout) is still
//! written beside it. Indexes written before `graph.bin` existed have only the dump: it is loaded
//! through hnsw_rs on first use and converted to the same flat lists in memory. hnsw_rs's loader
//! panics or exits on malformed bytes, so both dump files are always checked against the
//! manifest's CRC-32 before they are handed to it.
//!
//! Rows and hnsw_rs ids: the builder inserts row `r` with hnsw_rs `DataId` `r`, so the exported
//! neighbour ids are the `DataId`s (checked to cover `0..n` exactly once).

use std::path::Path;

use hnsw_rs::prelude::{AnnT, Distance, Hnsw, HnswIo};

use crate::error::{Error, Result};
use crate::files::verify_plain_file;
use crate::graph::{write_graph_file, GraphData, GraphLayout, GraphView, GRAPH_FILE};
use crate::hamming::{hamming, hamming_fixed};
use crate::manifest::{FileInfo, HnswInfo, HnswParams, Manifest};

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
    let bad = |d: String| Error::InvalidArgument(format!("HNSW graph export: {d}"));
    let mut levels: Vec<Option<usize>> = vec![None; n];
    let mut lists: Vec<Vec<Vec<u32>>> = vec![Vec::new(); n];
    for point in hnsw.get_point_indexation() {
        let row = point.get_origin_id();
        if row >= n {
            return Err(bad(format!("point id {row} is not below {n}")));
        }
        if levels[row].is_some() {
            continue;
        }
        let level = usize::from(point.get_point_id().0);
        levels[row] = Some(level);
        lists[row] = point
            .get_neighborhood_id()
            .into_iter()
            .take(level + 1)
            .map(|l| {
                l.iter()
                    .map(|nb| nb.get_origin_id())
                    .filter(|&d| d < n && d != row)
                    .map(|d| d as u32)
                    .collect()
            })
            .collect();
        lists[row].resize(level + 1, Vec::new());
    }
    if let Some(missing) = levels.iter().position(Option::is_none) {
        return Err(bad(format!(
            "row {missing} is not in the graph ({} points for {n} rows)",
            hnsw.get_nb_point()
        )));
    }
    let level_of = |r: u32| levels[r as usize].unwrap_or(0);
    let mut layer0 = Vec::with_capacity(n);
    let mut upper = Vec::with_capacity(n);
    let (mut stride0, mut stride_upper) = (2 * m.max(1), m.max(1));
    for mut ls in lists {
        let rest = ls.split_off(1);
        let l0 = ls.pop().unwrap_or_default();
        stride0 = stride0.max(l0.len());
        layer0.push(l0);
        let up: Vec<Vec<u32>> = rest
            .into_iter()
            .enumerate()
            .map(|(i, l)| l.into_iter().filter(|&nb| level_of(nb) > i).collect())
            .collect();
        for l in &up {
            stride_upper = stride_upper.max(l.len());
        }
        upper.push(up);
    }
    let too_wide = |s: usize| {
        u32::try_from(s)
            .ok()
            .filter(|&s| s <= crate::graph::MAX_STRIDE)
            .ok_or_else(|| bad(format!("{s} neighbours per node exceed the limit")))
    };
    let mut data = GraphData {
        layer0,
        upper,
        stride0: too_wide(stride0)?,
        stride_upper: too_wide(stride_upper)?,
    };
    data.link_unreached();
    too_wide(data.stride0 as usize)?;
    Ok(data)
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
        Error::io(
            dir,
            std::io::Error::other(format!("writing the HNSW graph: {e:#}")),
        )
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

/// Loads the hnsw_rs dump `info` of the index in `dir` described by `manifest` (one written
/// before `graph.bin`) and converts it to flat lists in memory: the payload `graph.bin` would
/// hold, and its layout.
pub(crate) fn load_dump(
    dir: &Path,
    manifest: &Manifest,
    info: &HnswInfo,
) -> Result<(Vec<u64>, GraphLayout)> {
    let n = manifest.n;
    // hnsw_rs panics or exits on malformed files: check every byte first, and make a panic
    // on a dump that matches its checksum anyway (written so) an error about the file (its
    // exits and allocations of lengths read from the file stay out of reach).
    for name in [&info.graph, &info.data] {
        verify_plain_file(&dir.join(name), &manifest.files[name])?;
    }
    let gpath = dir.join(&info.graph);
    let mut io = HnswIo::new(dir, &info.basename);
    let io = &mut io;
    // `{ io }` moves the borrow into the closure (not a reborrow): the graph outlives it.
    let load = move || { io }.load_hnsw();
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(load));
    let mut hnsw: Hnsw<'_, u64, DistHammingBits> = match loaded {
        Ok(Ok(hnsw)) => hnsw,
        Ok(Err(e)) => {
            let why = format!("hnsw_rs could not load the graph: {e:#}");
            return Err(Error::corrupt(&gpath, why));
        }
        Err(_) => {
            let why = "hnsw_rs failed reading the graph (it is malformed although it matches \
                       its checksum)";
            return Err(Error::corrupt(&gpath, why.to_string()));
        }
    };
    hnsw.set_searching_mode(true);
    if hnsw.get_nb_point() != n as usize {
        return Err(Error::corrupt(
            &gpath,
            format!(
                "graph has {} points but the index has {}",
                hnsw.get_nb_point(),
                n as usize
            ),
        ));
    }
    let payload = export(&hnsw, n as usize, info.params.max_connections)
        .and_then(|g| g.to_payload())
        .map_err(|e| Error::corrupt(&gpath, e.to_string()))?;
    drop(hnsw);
    let layout = GraphView::validate(bytemuck::cast_slice(&payload), n, &gpath)?;
    Ok((payload, layout))
}
