//! The hnsw_rs dump of an index's Hamming graph (`hnsw.hnsw.graph`, `hnsw.hnsw.data`: hnsw_rs
//! 0.3.5's native-endian, 64-bit layout), read by bsa itself: checked against the index's sizes
//! (its CRC-32s are checked before), and converted to the flat lists `graph.bin` holds, for
//! indexes written before `graph.bin` existed. No hnsw_rs here: a build without the `hnsw-rs`
//! feature reads them too. hnsw_rs's own loader is not used: it panics, aborts, exits or reads
//! out of bounds on malformed bytes, and reads through pointers it has not aligned.
//!
//! Rows and hnsw_rs ids: the builder inserts row `r` with hnsw_rs `DataId` `r`, so the
//! neighbours' `DataId`s are rows (checked to cover `0..n` exactly once).

use std::path::Path;

use crate::error::{Error, Result};
use crate::files::verify_plain_file;
use crate::graph::{GraphData, GraphLayout, GraphView};
use crate::manifest::{HnswInfo, Manifest};

/// The flat lists of a graph over `n` rows from its points as hnsw_rs holds them: each point's
/// `DataId` (its row), its level and its neighbours' `DataId`s on each level, nearest first (as
/// many levels as hnsw_rs keeps; those above the point's own are ignored). The builder's export
/// and the conversion of a dump read by [`read_dump_graph`] share it, so both give the same graph.
/// Errors (as text): a `DataId` not below `n`, or a row without a point.
pub(super) fn flat_lists(
    points: impl IntoIterator<Item = (u64, usize, Vec<Vec<u64>>)>,
    n: usize,
    m: usize,
) -> std::result::Result<GraphData, String> {
    let mut levels: Vec<Option<usize>> = vec![None; n];
    let mut lists: Vec<Vec<Vec<u32>>> = vec![Vec::new(); n];
    let mut seen = 0usize;
    for (row, level, neighbours) in points {
        seen += 1;
        let row = match usize::try_from(row) {
            Ok(r) if r < n => r,
            _ => return Err(format!("point id {row} is not below {n}")),
        };
        if levels[row].is_some() {
            continue;
        }
        levels[row] = Some(level);
        lists[row] = neighbours
            .into_iter()
            .take(level + 1)
            .map(|l| {
                l.into_iter()
                    .filter(|&d| d < n as u64 && d != row as u64)
                    .map(|d| d as u32)
                    .collect()
            })
            .collect();
        lists[row].resize(level + 1, Vec::new());
    }
    if let Some(missing) = levels.iter().position(Option::is_none) {
        return Err(format!(
            "row {missing} is not in the graph ({seen} points for {n} rows)"
        ));
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
            .ok_or_else(|| format!("{s} neighbours per node exceed the limit"))
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

/// hnsw_rs's tag of the data file and of each point's record in it (its `MAGICDATAP`).
const DUMP_DATA_MAGIC: u32 = 0xa67f_0000;

/// hnsw_rs's tags of a graph description of format 3 and of format 4.
const DUMP_GRAPH_MAGICS: [u32; 2] = [0x002a_6771, 0x002a_6779];

/// Whether `path` starts as one of hnsw_rs's dump files does (graph description or data), by
/// its tag: a file of bsa's, not a user's of that name.
pub(crate) fn is_dump_file(path: &Path) -> bool {
    // Little-endian host (lib.rs): the tags' bytes as written.
    [DUMP_DATA_MAGIC, DUMP_GRAPH_MAGICS[0], DUMP_GRAPH_MAGICS[1]]
        .iter()
        .any(|tag| crate::files::starts_with(path, &tag.to_le_bytes()))
}

/// Reads a file front to back, counting the bytes left, for the checks of a dump's layout.
struct DumpReader<'p> {
    path: &'p Path,
    r: std::io::BufReader<std::fs::File>,
    left: u64,
}

impl<'p> DumpReader<'p> {
    fn open(path: &'p Path) -> Result<Self> {
        let f = crate::files::open_regular(path)?;
        let left = f.metadata().map_err(|e| Error::io(path, e))?.len();
        Ok(DumpReader {
            path,
            r: std::io::BufReader::with_capacity(1 << 16, f),
            left,
        })
    }

    /// The next `k <= 8` bytes as a native-endian unsigned number.
    fn uint(&mut self, k: usize) -> Result<u64> {
        use std::io::Read;
        if self.left < k as u64 {
            return Err(Error::corrupt(self.path, "the hnsw_rs dump is cut short"));
        }
        let mut b = [0u8; 8];
        self.r
            .read_exact(&mut b[..k])
            .map_err(|e| Error::io(self.path, e))?;
        self.left -= k as u64;
        let mut x = [0u8; 8];
        if cfg!(target_endian = "little") {
            x[..k].copy_from_slice(&b[..k]);
            Ok(u64::from_le_bytes(x))
        } else {
            x[8 - k..].copy_from_slice(&b[..k]);
            Ok(u64::from_be_bytes(x))
        }
    }

    /// The next `k` bytes.
    fn bytes(&mut self, k: usize) -> Result<Vec<u8>> {
        use std::io::Read;
        if self.left < k as u64 {
            return Err(Error::corrupt(self.path, "the hnsw_rs dump is cut short"));
        }
        let mut b = vec![0u8; k];
        self.r
            .read_exact(&mut b)
            .map_err(|e| Error::io(self.path, e))?;
        self.left -= k as u64;
        Ok(b)
    }

    fn skip(&mut self, k: u64) -> Result<()> {
        use std::io::Read;
        if self.left < k {
            return Err(Error::corrupt(self.path, "the hnsw_rs dump is cut short"));
        }
        let skipped = std::io::copy(&mut (&mut self.r).take(k), &mut std::io::sink())
            .map_err(|e| Error::io(self.path, e))?;
        if skipped != k {
            return Err(Error::corrupt(
                self.path,
                "the hnsw_rs dump changed while read",
            ));
        }
        self.left -= k;
        Ok(())
    }
}

/// Reads the hnsw_rs graph file `path` of an index of `n` codes of `w` words, trusting nothing
/// in it (hnsw_rs's own loader ended in an abort, a process exit or a panic on false values,
/// each found by a fuzzer or a review): a description of format 3 or 4 (2 is refused) of `n`
/// points of `w` words of type `u64` under bsa's Hamming distance (names in UTF-8) in at most
/// 16 layers; then layers of `n` points in all, each a distinct `DataId` below `n` (a row),
/// in a full dump point `r` of layer `l` saying it is (`l`, `r`) and every neighbour it names
/// by layer and rank a point of the file (a light dump names neither), its lists no longer
/// than the rest of the file; then an entry point among them. Returns the points' ids in file
/// order, which the data file's records must repeat, and with `keep_lists` the points as
/// [`flat_lists`] takes them.
fn read_dump_graph(path: &Path, n: u64, w: u32, keep_lists: bool) -> Result<DumpGraph> {
    let bad = |d: String| Err(Error::corrupt(path, d));
    let mut r = DumpReader::open(path)?;
    let tag = r.uint(4)?;
    let version4 = match u32::try_from(tag) {
        Ok(t) if t == DUMP_GRAPH_MAGICS[0] => false,
        Ok(t) if t == DUMP_GRAPH_MAGICS[1] => true,
        _ => {
            return bad(format!(
                "not an hnsw_rs graph description of format 3 or 4 (tag {tag:#x})"
            ));
        }
    };
    let full = r.uint(1)? == 1;
    r.skip(1 + if version4 { 8 } else { 0 })?; // M, the level scale
    let point_layers = r.uint(1)?;
    r.skip(8)?; // ef
    let described = r.uint(8)?;
    let dim = r.uint(8)?;
    if dim != u64::from(w) || described != n {
        return bad(format!(
            "the hnsw_rs graph describes {described} vectors of {dim} words, not {n} of {w}"
        ));
    }
    // The distance's name (hnsw_rs compares its last `::` part) and the element type's (the
    // whole name).
    for (want, last_part) in [
        ("DistHammingBits", true),
        (std::any::type_name::<u64>(), false),
    ] {
        let len = r.uint(8)?;
        if len > 256 {
            return bad(format!("an hnsw_rs name of {len} bytes"));
        }
        let name = r.bytes(len as usize)?;
        let name = String::from_utf8_lossy(&name);
        let compared = if last_part {
            name.rsplit("::").next()
        } else {
            Some(&*name)
        };
        if compared != Some(want) {
            return bad(format!(
                "the hnsw_rs graph names {name:?} where {want:?} belongs"
            ));
        }
    }
    let layers = r.uint(1)?;
    if layers > 16 || point_layers > 16 {
        return bad(format!(
            "{layers} layers (points list {point_layers}); hnsw_rs has at most 16"
        ));
    }
    let mut ids = Vec::new();
    // Which rows have a point: hnsw_rs inserted row r as DataId r, each once.
    let mut seen = vec![false; n as usize];
    let mut points = Vec::new();
    let mut counts = [0u64; 16];
    // The largest rank named on each layer by a neighbour, plus one (0: none named).
    let mut named = [0u64; 16];
    for layer in 0..layers {
        let (tag, count) = (r.uint(4)?, r.uint(8)?);
        if tag != 0x000a_676f || count > n - ids.len() as u64 {
            return bad(format!(
                "layer {layer} (tag {tag:#x}) brings the points to {}; the index has {n}",
                (ids.len() as u64).saturating_add(count)
            ));
        }
        counts[layer as usize] = count;
        for rank in 0..count {
            let (tag, id) = (r.uint(4)?, r.uint(8)?);
            // A light dump does not repeat where a point is.
            let (at, at_rank) = if full {
                (r.uint(1)?, r.uint(4)?)
            } else {
                (layer, rank)
            };
            if tag != 0x000a_678f || at != layer || at_rank != rank {
                return bad(format!(
                    "point {rank} of layer {layer} has tag {tag:#x} and says it is point \
                     {at_rank} of layer {at}"
                ));
            }
            match seen.get_mut(id as usize) {
                Some(s) if id < n && !*s => *s = true,
                Some(_) if id < n => {
                    return bad(format!("row {id} has two points in the graph"));
                }
                _ => return bad(format!("a point is row {id}, not below the index's {n}")),
            }
            ids.push(id);
            let mut per_layer = Vec::new();
            for _ in 0..point_layers {
                let lists = r.uint(8)?;
                match lists.checked_mul(12 + if full { 5 } else { 0 }) {
                    Some(b) if b <= r.left => {}
                    _ => {
                        return bad(format!(
                            "a point of layer {layer} lists {lists} neighbours, more than the \
                             file holds"
                        ));
                    }
                }
                let mut list = Vec::new();
                for _ in 0..lists {
                    let nb = r.uint(8)?; // its id
                    if keep_lists {
                        list.push(nb);
                    }
                    let (nl, nr) = if full {
                        (r.uint(1)?, r.uint(4)?)
                    } else {
                        (0, 0)
                    };
                    if nl >= 16 {
                        return bad(format!(
                            "a point of layer {layer} names neighbour {nr} of layer {nl}"
                        ));
                    }
                    named[nl as usize] = named[nl as usize].max(nr + 1);
                    r.skip(4)?; // its distance
                }
                if keep_lists {
                    per_layer.push(list);
                }
            }
            if keep_lists {
                points.push((id, layer as usize, per_layer));
            }
        }
    }
    if ids.len() as u64 != n {
        return bad(format!(
            "the hnsw_rs graph holds {} points, not {n}",
            ids.len()
        ));
    }
    if let Some(l) = (0..16).find(|&l| named[l] > counts[l]) {
        return bad(format!(
            "a neighbour is named point {} of layer {l}, which holds {}",
            named[l] - 1,
            counts[l]
        ));
    }
    let entry = r.uint(8)?;
    if full {
        let (el, er) = (r.uint(1)?, r.uint(4)?);
        if el >= 16 || er >= counts[el as usize] {
            return bad(format!(
                "the entry point is point {er} of layer {el}, which the graph does not hold"
            ));
        }
    } else if !seen.get(entry as usize).is_some_and(|&s| s) {
        return bad(format!(
            "the entry point is row {entry}, which has no point in the graph"
        ));
    }
    Ok(DumpGraph { ids, points })
}

/// What [`read_dump_graph`] read of an hnsw_rs graph description.
#[derive(Debug)]
struct DumpGraph {
    /// The points' `DataId`s in file order.
    ids: Vec<u64>,
    /// With `keep_lists`, each point's `DataId`, layer and neighbours' `DataId`s on each layer it
    /// lists, in file order (nearest first, as hnsw_rs wrote them); else empty.
    points: Vec<(u64, usize, Vec<Vec<u64>>)>,
}

/// Checks the layout of the hnsw_rs data file `path` of an index of `n` codes of `w` words: its
/// tag and dimension `w`, then `n` records of a tag, an id and `8 w` bytes of codes, each
/// saying so, and nothing after them (native-endian, 64-bit: as written on the platforms that
/// read it). The codes themselves are not read: the index's `codes.bin` holds them.
fn check_dump_data(path: &Path, n: u64, w: u32, ids: &[u64]) -> Result<()> {
    let bad = |d: String| Err(Error::corrupt(path, d));
    let mut r = DumpReader::open(path)?;
    let len = r.left;
    let codes = 8 * u64::from(w);
    let need = n.checked_mul(20 + codes).and_then(|r| r.checked_add(12));
    if need != Some(len) {
        return bad(format!(
            "hnsw_rs data file of {len} bytes; {n} points of {w} words take {}",
            need.map_or("more than 2^64".to_string(), |b| b.to_string())
        ));
    }
    let (tag, dim) = (r.uint(4)?, r.uint(8)?);
    if tag != u64::from(DUMP_DATA_MAGIC) || dim != u64::from(w) {
        return bad(format!(
            "hnsw_rs data file does not start with its tag and dimension {w} (found {tag:#x} and \
             {dim})"
        ));
    }
    for (p, &want) in ids.iter().enumerate() {
        let (tag, id, bytes) = (r.uint(4)?, r.uint(8)?, r.uint(8)?);
        if id != want {
            return bad(format!(
                "hnsw_rs data file: record {p} is of point {id}, where the graph has point {want}"
            ));
        }
        if tag != u64::from(DUMP_DATA_MAGIC) || bytes != codes {
            return bad(format!(
                "hnsw_rs data file: the record of point {p} does not hold {w} words (tag {tag:#x}, \
                 {bytes} bytes)"
            ));
        }
        r.skip(codes)?; // the codes: read in one pass, not held
    }
    Ok(())
}

/// Checks the layout of the hnsw_rs dump `info` of the index in `dir` against the index's
/// sizes (a read of both files, front to back, holding no lists): what a first load of the
/// graph would refuse (bar lists longer than `graph.bin` takes).
/// [`Index::verify`](crate::Index::verify) runs it.
pub(crate) fn check_dump_layout(dir: &Path, manifest: &Manifest, info: &HnswInfo) -> Result<()> {
    let (n, w) = (manifest.n, manifest.words_per_code);
    let graph = read_dump_graph(&dir.join(&info.graph), n, w, false)?;
    check_dump_data(&dir.join(&info.data), n, w, &graph.ids)
}

/// Converts the hnsw_rs dump `info` of the index in `dir` described by `manifest` (one written
/// before `graph.bin`) to flat lists in memory: the payload `graph.bin` would hold, and its
/// layout. Both dump files are checked first (checksums, then layout); the graph is then read
/// by bsa itself, the way the builder exports a graph, not by hnsw_rs's loader, which reads
/// its buffers through pointers it has not aligned.
pub(crate) fn load_dump(
    dir: &Path,
    manifest: &Manifest,
    info: &HnswInfo,
) -> Result<(Vec<u64>, GraphLayout)> {
    let (n, w) = (manifest.n, manifest.words_per_code);
    for name in [&info.graph, &info.data] {
        verify_plain_file(&dir.join(name), &manifest.files[name])?;
    }
    let gpath = dir.join(&info.graph);
    let graph = read_dump_graph(&gpath, n, w, true)?;
    check_dump_data(&dir.join(&info.data), n, w, &graph.ids)?;
    let rows = usize::try_from(n).map_err(|_| Error::corrupt(&gpath, "too many points"))?;
    let payload = flat_lists(graph.points, rows, info.params.max_connections)
        .and_then(|g| g.to_payload().map_err(|e| e.to_string()))
        .map_err(|e| Error::corrupt(&gpath, e))?;
    let layout = GraphView::validate(bytemuck::cast_slice(&payload), n, &gpath)?;
    Ok((payload, layout))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An hnsw_rs graph description of format 4 (as hnsw_rs 0.3.5's `dump` writes it) of
    /// points `(DataId, layer, neighbours' DataIds per listed layer)`, laid out by layer in the
    /// order given, `full` or light, codes of one word, entry point the first point.
    fn description(points: &[(u64, u8, Vec<Vec<u64>>)], n: u64, full: bool) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(0x002a_6779u32.to_ne_bytes());
        b.extend([u8::from(full), 8]); // full, M
        b.extend(1.0f64.to_ne_bytes()); // level scale
        b.push(16); // lists per point
        b.extend(16u64.to_ne_bytes()); // ef
        b.extend(n.to_ne_bytes());
        b.extend(1u64.to_ne_bytes()); // words per code
        for name in ["hnsw::DistHammingBits", "u64"] {
            b.extend((name.len() as u64).to_ne_bytes());
            b.extend(name.as_bytes());
        }
        let layers = points.iter().map(|p| p.1).max().unwrap_or(0) + 1;
        b.push(layers);
        // (layer, rank) of each DataId, for the full form's references.
        let at = |id: u64| {
            let p = points.iter().find(|p| p.0 == id).unwrap();
            let rank = points.iter().filter(|q| q.1 == p.1 && q.0 < id).count();
            (p.1, rank as u32)
        };
        for layer in 0..layers {
            let here: Vec<_> = points.iter().filter(|p| p.1 == layer).collect();
            b.extend(0x000a_676fu32.to_ne_bytes());
            b.extend((here.len() as u64).to_ne_bytes());
            for (rank, (id, _, lists)) in here.iter().enumerate() {
                b.extend(0x000a_678fu32.to_ne_bytes());
                b.extend(id.to_ne_bytes());
                if full {
                    b.push(layer);
                    b.extend((rank as u32).to_ne_bytes());
                }
                for l in 0..16 {
                    let list = lists.get(l).cloned().unwrap_or_default();
                    b.extend((list.len() as u64).to_ne_bytes());
                    for nb in list {
                        b.extend(nb.to_ne_bytes());
                        if full {
                            let (nl, nr) = at(nb);
                            b.push(nl);
                            b.extend(nr.to_ne_bytes());
                        }
                        b.extend(1.0f32.to_ne_bytes());
                    }
                }
            }
        }
        let entry = points[0].0;
        b.extend(entry.to_ne_bytes());
        if full {
            let (el, er) = at(entry);
            b.push(el);
            b.extend(er.to_ne_bytes());
        }
        b
    }

    fn read(bytes: &[u8], n: u64) -> Result<DumpGraph> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.hnsw.graph");
        std::fs::write(&path, bytes).unwrap();
        read_dump_graph(&path, n, 1, true)
    }

    #[test]
    fn full_and_light_dumps_read_alike() {
        // Points sorted by DataId within a layer (ranks follow them): 2 on layer 1.
        let points = vec![
            (2, 1, vec![vec![0, 1], vec![]]),
            (0, 0, vec![vec![1, 2]]),
            (1, 0, vec![vec![0, 2]]),
        ];
        let full = read(&description(&points, 3, true), 3).unwrap();
        let light = read(&description(&points, 3, false), 3).unwrap();
        assert_eq!(full.ids, [0, 1, 2]);
        assert_eq!(full.points, light.points);
        let g = flat_lists(full.points, 3, 2).unwrap();
        assert_eq!(g.layer0, [vec![1, 2], vec![0, 2], vec![0, 1]]);
    }

    #[test]
    fn a_row_twice_or_out_of_range_is_refused() {
        for full in [true, false] {
            let twice = vec![(0, 0, vec![]), (0, 0, vec![])];
            let err = read(&description(&twice, 2, full), 2)
                .unwrap_err()
                .to_string();
            assert!(err.contains("row 0 has two points"), "{err}");
            let beyond = vec![(0, 0, vec![]), (7, 0, vec![])];
            let err = read(&description(&beyond, 2, full), 2)
                .unwrap_err()
                .to_string();
            assert!(err.contains("row 7, not below"), "{err}");
        }
    }
}
