//! HNSW graph over the packed codes (the only file that uses hnsw_rs).
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
use crate::files::{verify_plain_file, Section};
use crate::format::FileKind;
use crate::graph::{write_graph_file, GraphData, GraphLayout, GraphView, GRAPH_FILE};
use crate::hamming::{hamming, hamming_fixed};
use crate::manifest::{FileInfo, HnswParams, Manifest};

/// Basename of the hnsw_rs dump inside an index directory.
pub const HNSW_BASENAME: &str = "hnsw";
/// Largest accepted `max_connections`. hnsw_rs exits the process above 256 and stores the value
/// in one byte in its dump (256 would reload as 0), so the limit here is 255.
pub const MAX_CONNECTIONS_LIMIT: usize = 255;
/// Number of layers hnsw_rs requires for a dump (its `NB_LAYER_MAX`).
const HNSW_LAYERS: usize = 16;
/// Points inserted between progress reports.
const INSERT_BATCH: usize = 1024;

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

/// The largest `ef_construction` and `ef_search` accepted: far above any useful value (a
/// candidate list as large as the graph makes the walk a scan), low enough that the lists
/// allocated for it always fit in memory.
pub const MAX_EF: usize = 1 << 20;

impl HnswParams {
    /// Checks the parameters (`max_connections` in 2..=255, `ef_construction` and `ef_search` in
    /// 1..=[`MAX_EF`]).
    ///
    /// ```
    /// use bsa_index::HnswParams;
    /// assert!(HnswParams::default().validate().is_ok());
    /// let huge = HnswParams { ef_construction: 1 << 40, ..HnswParams::default() };
    /// assert!(huge.validate().unwrap_err().to_string().contains("ef_construction"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        if !(2..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            return Err(Error::InvalidArgument(format!(
                "HNSW max_connections (M) must be in 2..={MAX_CONNECTIONS_LIMIT}, got {}",
                self.max_connections
            )));
        }
        for (name, ef) in [
            ("ef_construction", self.ef_construction),
            ("ef_search", self.ef_search),
        ] {
            if !(1..=MAX_EF).contains(&ef) {
                return Err(Error::InvalidArgument(format!(
                    "HNSW {name} must be in 1..={MAX_EF}, got {ef}"
                )));
            }
        }
        Ok(())
    }
}

/// Where the flat graph lives: mapped from `graph.bin`, or converted in memory from an hnsw_rs dump.
enum GraphStore {
    Mapped(Section),
    Owned(Vec<u64>),
}

/// A loaded HNSW graph: the flat neighbour lists and their validated layout.
pub(crate) struct HnswGraph {
    store: GraphStore,
    layout: GraphLayout,
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

/// Builds a graph over `codes` in the current rayon pool, dumps it into `dir` with hnsw_rs, and
/// exports it as `graph.bin`. Returns the dump's basename and the graph file's name and manifest
/// entry. `progress(done)` is called after each batch of inserts; an error it returns (e.g.
/// [`Error::Stopped`]) ends the build.
pub(crate) fn build_and_dump(
    codes: &[u64],
    w: usize,
    params: &HnswParams,
    dir: &Path,
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
    let payload = export(&hnsw, n, params.max_connections)?.to_payload()?;
    let info = write_graph_file(&dir.join(GRAPH_FILE), n as u64, &payload)?;
    Ok((used, (GRAPH_FILE.to_string(), info)))
}

impl HnswGraph {
    /// Loads the graph of the index in `dir` described by `manifest`, from `opened` (its
    /// `graph.bin`, opened with the index) if given.
    pub(crate) fn load(
        dir: &Path,
        manifest: &Manifest,
        opened: Option<&std::fs::File>,
    ) -> Result<HnswGraph> {
        let no_graph = || {
            Error::InvalidArgument(format!(
                "{}: the index has no HNSW graph; rebuild it with one (bsa build --hnsw; hnsw=True from Python)",
                dir.display()
            ))
        };
        if manifest.graph.is_none() && manifest.hnsw.is_none() {
            return Err(no_graph());
        }
        let native = manifest.graph_file();
        let n = manifest.n;
        if let Some(name) = native {
            // Listed under `files` (checked by Manifest::from_bytes). The graph is small next to
            // the codes, and its structure is checked byte by byte below anyway, so its checksum
            // is always verified, whatever OpenOptions said.
            let finfo = manifest.files[name];
            let s = match opened {
                Some(file) => Section::of_file(file, dir.join(name), FileKind::Graph, &finfo)?,
                None => Section::open(dir.join(name), FileKind::Graph, &finfo)?,
            };
            s.verify(&finfo)?;
            if s.header.count != n {
                return Err(Error::corrupt(
                    &s.path,
                    format!(
                        "holds a graph of {} nodes but the index has {n} codes",
                        s.header.count
                    ),
                ));
            }
            let layout = GraphView::validate(s.payload(), n, &s.path)?;
            if GraphView::from_layout(s.payload(), &layout).level0_stride()
                != s.header.width as usize
            {
                return Err(Error::corrupt(
                    &s.path,
                    format!(
                        "header says {} level-0 slots per node, the graph disagrees",
                        s.header.width
                    ),
                ));
            }
            return Ok(HnswGraph {
                store: GraphStore::Mapped(s),
                layout,
            });
        }
        // An index from before graph.bin: load the hnsw_rs dump and convert it in memory.
        // hnsw_rs panics or exits on malformed files: check every byte first, and make a panic
        // on a dump that matches its checksum anyway (written so) an error about the file (its
        // exits and allocations of lengths read from the file stay out of reach).
        let info = manifest.hnsw.as_ref().ok_or_else(no_graph)?;
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
        Ok(HnswGraph {
            store: GraphStore::Owned(payload),
            layout,
        })
    }

    /// The graph's flat lists.
    pub(crate) fn view(&self) -> GraphView<'_> {
        let payload: &[u8] = match &self.store {
            GraphStore::Mapped(s) => s.payload(),
            GraphStore::Owned(v) => bytemuck::cast_slice(v),
        };
        GraphView::from_layout(payload, &self.layout)
    }
}
