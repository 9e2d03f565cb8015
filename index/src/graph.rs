//! The graph file (`graph.bin`): flat, per-level neighbour lists of `u32` rows.
//!
//! The graph is built natively on float vectors (the decoded codes or the stored embeddings,
//! by cosine: `graph_build`, [`IndexBuilder::graph_on`](crate::IndexBuilder::graph_on)), or
//! on the codes by Hamming distance with hnsw_rs (see [`crate::hnsw`]) and exported; either
//! way it is stored as flat neighbour lists in `graph.bin` (layout in `index/FORMAT.md`,
//! section "`graph.bin`") and read in place by [`GraphView`]. The search over it is
//! [`crate::search::graph`].
//!
//! Every byte of the file is checked before the first search ([`GraphView::from_payload`]):
//! neighbour ids are bounds-checked against the number of codes, so a damaged file gives an
//! error naming it, never a panic or an out-of-bounds read.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::Path;

use crate::error::{Error, Result};
use crate::files::{ChunkWriter, file_crc};
use crate::format::{ElemKind, FileKind, Header};
use crate::manifest::FileInfo;

/// File name of the native graph inside an index directory.
pub const GRAPH_FILE: &str = "graph.bin";
/// Padding value of a neighbour slot (no neighbour).
pub const NO_NEIGHBOUR: u32 = u32::MAX;
/// Largest accepted level (hnsw_rs uses at most 15).
pub const MAX_LEVEL: u32 = 63;
/// Largest accepted number of neighbour slots per node and level.
pub const MAX_STRIDE: u32 = 4096;
/// Length of the graph prelude at the start of the payload.
pub const PRELUDE_LEN: usize = 64;

/// Byte offsets of the graph prelude fields, relative to the start of the payload (see FORMAT.md).
pub mod prelude {
    /// `u32` number of nodes (= codes in the index).
    pub const N: usize = 0;
    /// `u32` slots per node on level 0 (`2M`, up to `2M + 2` after linking unreached nodes).
    pub const STRIDE0: usize = 4;
    /// `u32` slots per node on each upper level (`M`).
    pub const STRIDE_UPPER: usize = 8;
    /// `u32` highest level of any node.
    pub const MAX_LEVEL: usize = 12;
    /// `u32` row of the entry point (a node on the highest level).
    pub const ENTRY: usize = 16;
    /// `u32` reserved, zero.
    pub const RESERVED0: usize = 20;
    /// `u64` number of upper-level lists (the sum of all nodes' levels).
    pub const UPPER_LISTS: usize = 24;
    /// `[u8; 32]` reserved, zero.
    pub const RESERVED1: usize = 32;
}

fn pad64(x: usize) -> Option<usize> {
    x.checked_add(63).map(|v| v & !63)
}

/// Byte ranges of the sections of a validated graph payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GraphLayout {
    n: u32,
    stride0: u32,
    stride_upper: u32,
    max_level: u32,
    entry: u32,
    offsets: Range<usize>,
    layer0: Range<usize>,
    upper: Range<usize>,
}

impl GraphLayout {
    /// Payload length and section ranges for the given sizes (`None` on overflow).
    fn compute(n: u32, stride0: u32, stride_upper: u32, upper_lists: u64) -> Option<GraphLayout> {
        let n_us = n as usize;
        let off_start = PRELUDE_LEN;
        let off_end = off_start.checked_add(n_us.checked_add(1)?.checked_mul(8)?)?;
        let l0_start = pad64(off_end)?;
        let l0_end = l0_start.checked_add(n_us.checked_mul(stride0 as usize)?.checked_mul(4)?)?;
        let up_start = pad64(l0_end)?;
        let up_len = usize::try_from(upper_lists)
            .ok()?
            .checked_mul(stride_upper as usize)?
            .checked_mul(4)?;
        let up_end = up_start.checked_add(up_len)?;
        pad64(up_end)?;
        Some(GraphLayout {
            n,
            stride0,
            stride_upper,
            max_level: 0,
            entry: 0,
            offsets: off_start..off_end,
            layer0: l0_start..l0_end,
            upper: up_start..up_end,
        })
    }

    fn payload_len(&self) -> usize {
        // Computed without overflow in `compute`.
        pad64(self.upper.end).unwrap_or(usize::MAX)
    }
}

/// A read-only view of a native HNSW graph: per-level neighbour lists of `u32` rows.
///
/// Obtained from [`crate::Index::graph`] or, for a payload read elsewhere,
/// [`GraphView::from_payload`] (which validates every byte).
///
/// ```
/// use bsa_index::graph::NO_NEIGHBOUR;
/// use bsa_index::{HnswParams, Index, IndexBuilder};
/// # fn main() -> bsa_index::Result<()> {
/// let n = 40;
/// let vectors: Vec<f32> = (0..n * 4).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
/// let codes: Vec<u64> = (0..n as u64).collect();
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("idx");
/// let params = HnswParams { max_connections: 4, ..HnswParams::default() };
/// IndexBuilder::new(64, &codes).hnsw(params).graph_on(&vectors, 4).build(&path)?;
/// let index = Index::open(&path)?;
/// let graph = index.graph()?;
/// assert_eq!(graph.len(), n);
/// assert_eq!((graph.level0_stride(), graph.upper_stride()), (8, 4)); // 2M and M
/// assert_eq!(graph.level(graph.entry_point()), graph.max_level());
/// for row in 0..n as u32 {
///     for level in 0..=graph.level(row) {
///         let (slots, near) = (graph.slots(row, level), graph.neighbours(row, level));
///         assert!(near.iter().all(|&r| (r as usize) < n && r != row));
///         assert!(slots[near.len()..].iter().all(|&s| s == NO_NEIGHBOUR)); // padding last
///     }
///     assert!(graph.neighbours(row, graph.level(row) + 1).is_empty());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct GraphView<'a> {
    n: u32,
    stride0: usize,
    stride_upper: usize,
    max_level: u32,
    entry: u32,
    offsets: &'a [u64],
    layer0: &'a [u32],
    upper: &'a [u32],
}

fn rd_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn rd_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl<'a> GraphView<'a> {
    /// Validates a graph payload (the bytes after `graph.bin`'s 64-byte header, 8-byte aligned in
    /// memory) for an index of `n` codes and returns a view of it. `path` names the file in errors.
    ///
    /// Checks the prelude (sizes, entry point, reserved bytes), that the payload length equals the
    /// one implied by the sizes, that the level offsets start at 0 and grow by at most
    /// `max_level` per node (and reach exactly the number of upper lists), that the entry point is
    /// on the highest level, and that every neighbour slot holds a row `< n` or
    /// [`NO_NEIGHBOUR`], with padding only after the last neighbour of a list.
    ///
    /// ```
    /// use bsa_index::graph::{GraphView, GRAPH_FILE};
    /// use bsa_index::{HnswParams, Index, IndexBuilder};
    /// # fn main() -> bsa_index::Result<()> {
    /// let vectors: Vec<f32> = (0..40).map(|i| ((i * 7) % 11) as f32 - 5.0).collect(); // 10 x 4
    /// let codes: Vec<u64> = (0..10).collect();
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).graph_on(&vectors, 4).build(&path)?;
    /// let file = std::fs::read(path.join(GRAPH_FILE)).unwrap();
    /// let mut words = vec![0u64; (file.len() - 64) / 8]; // the payload, 8-byte aligned
    /// bytemuck::cast_slice_mut(&mut words).copy_from_slice(&file[64..]);
    /// let payload: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    /// let graph = GraphView::from_payload(payload, 10, &path)?;
    /// let index = Index::open(&path)?;
    /// assert_eq!(graph.neighbours(3, 0), index.graph()?.neighbours(3, 0));
    /// assert!(GraphView::from_payload(payload, 11, &path).is_err()); // another index's size
    /// // Level 0 starts at byte 192 (prelude, 11 offsets, padding): point a slot past the end.
    /// payload[192..196].copy_from_slice(&10u32.to_le_bytes());
    /// assert!(GraphView::from_payload(payload, 10, &path).is_err());
    /// # Ok(()) }
    /// ```
    pub fn from_payload(payload: &'a [u8], n: u64, path: &Path) -> Result<GraphView<'a>> {
        let layout = Self::validate(payload, n, path)?;
        Ok(Self::from_layout(payload, &layout))
    }

    pub(crate) fn validate(payload: &[u8], n: u64, path: &Path) -> Result<GraphLayout> {
        let bad = |d: String| Error::corrupt(path, format!("graph: {d}"));
        if payload.len() < PRELUDE_LEN {
            return Err(bad(format!(
                "payload of {} bytes is shorter than its {PRELUDE_LEN}-byte prelude",
                payload.len()
            )));
        }
        let gn = rd_u32(payload, prelude::N);
        let stride0 = rd_u32(payload, prelude::STRIDE0);
        let stride_upper = rd_u32(payload, prelude::STRIDE_UPPER);
        let max_level = rd_u32(payload, prelude::MAX_LEVEL);
        let entry = rd_u32(payload, prelude::ENTRY);
        let upper_lists = rd_u64(payload, prelude::UPPER_LISTS);
        if u64::from(gn) != n || gn == 0 {
            return Err(bad(format!("has {gn} nodes but the index has {n} codes")));
        }
        if !(1..=MAX_STRIDE).contains(&stride0) || !(1..=MAX_STRIDE).contains(&stride_upper) {
            return Err(bad(format!(
                "neighbour slots per node ({stride0} on level 0, {stride_upper} above) must be in 1..={MAX_STRIDE}"
            )));
        }
        if max_level > MAX_LEVEL {
            return Err(bad(format!(
                "highest level {max_level} exceeds {MAX_LEVEL}"
            )));
        }
        if entry >= gn {
            return Err(bad(format!("entry point {entry} is not below {gn}")));
        }
        if rd_u32(payload, prelude::RESERVED0) != 0
            || payload[prelude::RESERVED1..PRELUDE_LEN] != [0u8; 32]
        {
            return Err(bad("reserved prelude bytes are not zero".into()));
        }
        let mut layout = GraphLayout::compute(gn, stride0, stride_upper, upper_lists)
            .ok_or_else(|| bad(format!("sizes overflow ({upper_lists} upper lists)")))?;
        layout.max_level = max_level;
        layout.entry = entry;
        if layout.payload_len() != payload.len() {
            return Err(bad(format!(
                "payload is {} bytes but {gn} nodes x {stride0} slots and {upper_lists} upper lists x {stride_upper} slots need {}",
                payload.len(),
                layout.payload_len()
            )));
        }
        let padding_zero = |r: Range<usize>| payload[r].iter().all(|&b| b == 0);
        if !padding_zero(layout.offsets.end..layout.layer0.start)
            || !padding_zero(layout.layer0.end..layout.upper.start)
            || !padding_zero(layout.upper.end..payload.len())
        {
            return Err(bad("padding between sections is not zero".into()));
        }
        let misaligned = || bad("payload is not aligned in memory".into());
        let offsets: &[u64] =
            bytemuck::try_cast_slice(&payload[layout.offsets.clone()]).map_err(|_| misaligned())?;
        let layer0: &[u32] =
            bytemuck::try_cast_slice(&payload[layout.layer0.clone()]).map_err(|_| misaligned())?;
        let upper: &[u32] =
            bytemuck::try_cast_slice(&payload[layout.upper.clone()]).map_err(|_| misaligned())?;
        if offsets[0] != 0 {
            return Err(bad(format!(
                "level offsets start at {} instead of 0",
                offsets[0]
            )));
        }
        let mut top = 0u64;
        for (i, p) in offsets.windows(2).enumerate() {
            let level = p[1]
                .checked_sub(p[0])
                .filter(|&l| l <= u64::from(max_level));
            match level {
                Some(l) => top = top.max(l),
                None => {
                    return Err(bad(format!(
                        "level of node {i} is not in 0..={max_level} (offsets {} then {})",
                        p[0], p[1]
                    )));
                }
            }
        }
        if offsets[gn as usize] != upper_lists {
            return Err(bad(format!(
                "level offsets end at {} but there are {upper_lists} upper lists",
                offsets[gn as usize]
            )));
        }
        let entry_level = offsets[entry as usize + 1] - offsets[entry as usize];
        if top != u64::from(max_level) || entry_level != u64::from(max_level) {
            return Err(bad(format!(
                "highest level is {max_level} but the nodes reach {top} and the entry point {entry} is on level {entry_level}"
            )));
        }
        let check_lists = |slots: &[u32], stride: usize, what: &str| -> Result<()> {
            for (li, list) in slots.chunks_exact(stride).enumerate() {
                let len = list
                    .iter()
                    .position(|&x| x == NO_NEIGHBOUR)
                    .unwrap_or(stride);
                if let Some(&x) = list[..len].iter().find(|&&x| x >= gn) {
                    return Err(bad(format!(
                        "{what} list {li} holds neighbour {x}, not below {gn}"
                    )));
                }
                if list[len..].iter().any(|&x| x != NO_NEIGHBOUR) {
                    return Err(bad(format!(
                        "{what} list {li} has neighbours after its padding"
                    )));
                }
            }
            Ok(())
        };
        check_lists(layer0, stride0 as usize, "level-0")?;
        check_lists(upper, stride_upper as usize, "upper-level")?;
        Ok(layout)
    }

    /// A view of a payload already validated into `layout`.
    pub(crate) fn from_layout(payload: &'a [u8], layout: &GraphLayout) -> GraphView<'a> {
        // `validate` cast these exact ranges successfully, and the payload has not changed (it is
        // an immutable map or an owned buffer), so the casts cannot fail.
        GraphView {
            n: layout.n,
            stride0: layout.stride0 as usize,
            stride_upper: layout.stride_upper as usize,
            max_level: layout.max_level,
            entry: layout.entry,
            offsets: bytemuck::cast_slice(&payload[layout.offsets.clone()]),
            layer0: bytemuck::cast_slice(&payload[layout.layer0.clone()]),
            upper: bytemuck::cast_slice(&payload[layout.upper.clone()]),
        }
    }

    /// Number of nodes (= codes in the index).
    pub fn len(&self) -> usize {
        self.n as usize
    }

    /// Whether the graph has no nodes (never true for a validated graph).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Row of the entry point, a node on the highest level.
    pub fn entry_point(&self) -> u32 {
        self.entry
    }

    /// Highest level of any node (0 when every node is on level 0 only).
    pub fn max_level(&self) -> usize {
        self.max_level as usize
    }

    /// Neighbour slots per node on level 0 (`2M`, or up to `2M + 2` where the builder linked
    /// nodes it had left unreachable).
    pub fn level0_stride(&self) -> usize {
        self.stride0
    }

    /// Neighbour slots per node on each upper level (`M`).
    pub fn upper_stride(&self) -> usize {
        self.stride_upper
    }

    /// Highest level of node `row`.
    ///
    /// ```
    /// # use bsa_index::{HnswParams, Index, IndexBuilder};
    /// # fn main() -> bsa_index::Result<()> {
    /// # let codes: Vec<u64> = (0..300u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # let vectors: Vec<f32> = (0..1200u64).map(|i| (i * 7919 % 101) as f32 / 50.0 - 1.0).collect();
    /// # let hnsw = HnswParams { max_connections: 4, ..HnswParams::default() };
    /// # IndexBuilder::new(64, &codes).hnsw(hnsw).graph_on(&vectors, 4).build(&path)?;
    /// # let index = Index::open(&path)?;
    /// let g = index.graph()?; // 300 nodes of 4-d vectors, M = 4 (as in `neighbours`)
    /// assert_eq!(g.level(g.entry_point()), g.max_level()); // the entry point is on the top
    /// assert!((0..300).all(|r| g.level(r) <= g.max_level()));
    /// assert!(g.max_level() > 0); // 300 nodes at M = 4 reach level 1 (about 1 in 4 do)
    /// assert!((0..300).filter(|&r| g.level(r) > 0).count() < 150);
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    /// If `row >= len()`.
    pub fn level(&self, row: u32) -> usize {
        let r = row as usize;
        (self.offsets[r + 1] - self.offsets[r]) as usize
    }

    /// The slots of node `row` on `level` including the [`NO_NEIGHBOUR`] padding; empty if the
    /// node is not on that level.
    ///
    /// ```
    /// use bsa_index::graph::NO_NEIGHBOUR;
    /// # use bsa_index::{HnswParams, Index, IndexBuilder};
    /// # fn main() -> bsa_index::Result<()> {
    /// # let codes: Vec<u64> = (0..300u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # let vectors: Vec<f32> = (0..1200u64).map(|i| (i * 7919 % 101) as f32 / 50.0 - 1.0).collect();
    /// # let hnsw = HnswParams { max_connections: 4, ..HnswParams::default() };
    /// # IndexBuilder::new(64, &codes).hnsw(hnsw).graph_on(&vectors, 4).build(&path)?;
    /// # let index = Index::open(&path)?;
    /// let g = index.graph()?; // 300 nodes of 4-d vectors, M = 4 (as in `neighbours`)
    /// for r in 0..300 {
    ///     let s = g.slots(r, 0);
    ///     assert_eq!(s.len(), g.level0_stride()); // 2M slots on level 0 here, M above
    ///     let used = s.iter().take_while(|&&x| x != NO_NEIGHBOUR).count();
    ///     assert!(s[used..].iter().all(|&x| x == NO_NEIGHBOUR)); // padding only at the end
    ///     let above = g.slots(r, 1);
    ///     assert_eq!(above.len(), if g.level(r) >= 1 { g.upper_stride() } else { 0 });
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    /// If `row >= len()`.
    #[inline]
    pub fn slots(&self, row: u32, level: usize) -> &'a [u32] {
        let r = row as usize;
        if level == 0 {
            return &self.layer0[r * self.stride0..(r + 1) * self.stride0];
        }
        let (start, end) = (self.offsets[r], self.offsets[r + 1]);
        if level as u64 > end - start {
            return &[];
        }
        // start + level - 1 < end <= upper lists (validated), so this is in bounds.
        let list = (start + level as u64 - 1) as usize;
        &self.upper[list * self.stride_upper..(list + 1) * self.stride_upper]
    }

    /// The neighbours of node `row` on `level` (rows, padding removed), nearest first as built;
    /// empty if the node is not on that level.
    ///
    /// Every node is reached from the entry point through level 0 (the builder links what its
    /// pruning would leave apart), and a node's neighbours on a level are on that level too:
    ///
    /// ```
    /// use bsa_index::{HnswParams, Index, IndexBuilder};
    /// # fn main() -> bsa_index::Result<()> {
    /// let codes: Vec<u64> = (0..300u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("idx");
    /// let vectors: Vec<f32> = (0..1200u64).map(|i| (i * 7919 % 101) as f32 / 50.0 - 1.0).collect();
    /// let hnsw = HnswParams { max_connections: 4, ..HnswParams::default() };
    /// IndexBuilder::new(64, &codes).hnsw(hnsw).graph_on(&vectors, 4).build(&path)?; // 300 x 4
    /// let index = Index::open(&path)?;
    /// let g = index.graph()?;
    /// let mut seen = vec![false; g.len()];
    /// let mut stack = vec![g.entry_point()];
    /// seen[g.entry_point() as usize] = true;
    /// while let Some(r) = stack.pop() {
    ///     for &nb in g.neighbours(r, 0) {
    ///         if !std::mem::replace(&mut seen[nb as usize], true) {
    ///             stack.push(nb);
    ///         }
    ///     }
    /// }
    /// assert!(seen.iter().all(|&s| s));
    /// for r in 0..300 {
    ///     for level in 1..=g.level(r) {
    ///         assert!(g.neighbours(r, level).iter().all(|&nb| g.level(nb) >= level));
    ///     }
    ///     assert!(g.neighbours(r, g.level(r) + 1).is_empty());
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    /// If `row >= len()`.
    pub fn neighbours(&self, row: u32, level: usize) -> &'a [u32] {
        let s = self.slots(row, level);
        let len = s.iter().position(|&x| x == NO_NEIGHBOUR).unwrap_or(s.len());
        &s[..len]
    }
}

/// An owned graph under construction, serialised into the payload of `graph.bin`.
#[derive(Debug, Clone)]
pub(crate) struct GraphData {
    /// Level-0 neighbour rows per node (at most `stride0` each).
    pub(crate) layer0: Vec<Vec<u32>>,
    /// Upper-level lists per node: `upper[row][l - 1]` is the list on level `l`.
    pub(crate) upper: Vec<Vec<Vec<u32>>>,
    pub(crate) stride0: u32,
    pub(crate) stride_upper: u32,
}

impl GraphData {
    /// The entry point: the smallest row on the highest level.
    fn entry(&self) -> u32 {
        let levels = self.upper.iter().map(Vec::len);
        let max_level = levels.clone().max().unwrap_or(0);
        levels.into_iter().position(|l| l == max_level).unwrap_or(0) as u32
    }

    /// Links level 0 so that a walk from any node reaches every other, and returns how many
    /// links it added. A builder keeps a node's links only where they rank among the nearest
    /// of the other node's: where distances tie by the thousand (Hamming distances of sparse
    /// codes), hnsw_rs left a third of 2,000 random codes with no node linking to them, so no
    /// search could return them, whatever its `ef`. A graph whose nodes all reach each other is
    /// left as it is (WordNet's graphs get 0-2 links per 100k nodes).
    ///
    /// First every node is made reachable from the entry point: each unreached node, in row
    /// order, is linked from the first node of its own list (its nearest, as the builder found
    /// them) that is reached and has a free slot, else from a reached node with a free slot,
    /// else from a reached node with one slot past the stride (each node hosts at most one
    /// such link, and each node reached brings its own: there is always one). Then the nodes
    /// that cannot walk back to the entry point: each strongly connected component of them
    /// that no link leaves (every such node walks into one) gets one link to the entry point,
    /// from its member with the shortest list. So the level-0 stride grows by at most two, and
    /// only in a graph the builder left disconnected. Deterministic: the same graph gives the
    /// same links.
    pub(crate) fn link_unreached(&mut self) -> usize {
        let n = self.layer0.len();
        if n == 0 {
            return 0;
        }
        let entry = self.entry() as usize;
        let stride = self.stride0 as usize;
        let mut reached = vec![false; n];
        // The reached nodes in the order they were reached: the hosts of links to unreached
        // nodes with no reached neighbour, taken in order (their lists only grow).
        let mut hosts = vec![entry];
        reached[entry] = true;
        let spread = |from: usize, reached: &mut [bool], hosts: &mut Vec<usize>, g: &[Vec<u32>]| {
            let mut stack = vec![from];
            while let Some(v) = stack.pop() {
                for &w in &g[v] {
                    if !std::mem::replace(&mut reached[w as usize], true) {
                        stack.push(w as usize);
                        hosts.push(w as usize);
                    }
                }
            }
        };
        spread(entry, &mut reached, &mut hosts, &self.layer0);
        let (mut free, mut spare) = (0, 0);
        let mut added = 0;
        for u in 0..n {
            if reached[u] {
                continue;
            }
            let near = self.layer0[u]
                .iter()
                .map(|&v| v as usize)
                .find(|&v| reached[v] && self.layer0[v].len() < stride);
            let v = near.unwrap_or_else(|| {
                while free < hosts.len() && self.layer0[hosts[free]].len() >= stride {
                    free += 1;
                }
                if free < hosts.len() {
                    return hosts[free];
                }
                while self.layer0[hosts[spare]].len() > stride {
                    spare += 1;
                }
                hosts[spare]
            });
            self.layer0[v].push(u as u32);
            reached[u] = true;
            hosts.push(u);
            spread(u, &mut reached, &mut hosts, &self.layer0);
            added += 1;
        }
        // The nodes that walk back to the entry point, in one pass over the strongly connected
        // components: Tarjan's algorithm numbers a component only after every component its
        // links reach, so a link between two components always leads to a lower number, and
        // taking the nodes in the order of their components' numbers settles each component
        // from links already settled. (Sweeps to a fixed point, before, took as many passes as
        // the longest chain of links running against the row order: hours for a graph file
        // made to zig-zag, at 1M nodes. No reversed copy of the lists either: at 1M nodes it
        // would be the graph's size.)
        let (comp, count) = components(&self.layer0, &vec![true; n]);
        let mut by_component: Vec<usize> = (0..n).collect();
        by_component.sort_unstable_by_key(|&u| comp[u]);
        let mut component_leads = vec![false; count];
        component_leads[comp[entry] as usize] = true;
        for &u in &by_component {
            let c = comp[u] as usize;
            if !component_leads[c] {
                component_leads[c] = self.layer0[u]
                    .iter()
                    .any(|&v| component_leads[comp[v as usize] as usize]);
            }
        }
        let lost: Vec<bool> = (0..n).map(|u| !component_leads[comp[u] as usize]).collect();
        if lost.iter().any(|&l| l) {
            // The nodes a lost node links to are lost too (else it would walk back through
            // them), so the components found above are theirs. A component is a sink when no
            // link leaves it (every lost node walks into one); the member with the shortest list
            // gets the link.
            let mut left = vec![false; count];
            let mut pick: Vec<Option<usize>> = vec![None; count];
            for u in (0..n).filter(|&u| lost[u]) {
                let c = comp[u] as usize;
                left[c] |= self.layer0[u].iter().any(|&v| comp[v as usize] != comp[u]);
                if pick[c].is_none_or(|p| self.layer0[u].len() < self.layer0[p].len()) {
                    pick[c] = Some(u);
                }
            }
            for u in (0..count).filter(|&c| !left[c]).filter_map(|c| pick[c]) {
                self.layer0[u].push(entry as u32);
                added += 1;
            }
        }
        let longest = self.layer0.iter().map(Vec::len).max().unwrap_or(0);
        self.stride0 = self.stride0.max(longest as u32);
        added
    }

    /// The payload as `u64` words (so it is 8-byte aligned in memory), and its byte length.
    ///
    /// The entry point is the smallest row on the highest level.
    pub(crate) fn to_payload(&self) -> Result<Vec<u64>> {
        let too_big = || Error::InvalidArgument("HNSW graph too large to store".into());
        let n = u32::try_from(self.layer0.len()).map_err(|_| too_big())?;
        if n == 0 || self.upper.len() != n as usize {
            return Err(Error::InvalidArgument(
                "HNSW graph has no nodes or inconsistent levels".into(),
            ));
        }
        let levels: Vec<usize> = self.upper.iter().map(Vec::len).collect();
        let max_level = levels.iter().copied().max().unwrap_or(0);
        if max_level > MAX_LEVEL as usize {
            return Err(Error::InvalidArgument(format!(
                "HNSW graph has {max_level} levels, more than {MAX_LEVEL}"
            )));
        }
        let entry = self.entry();
        let upper_lists: u64 = levels.iter().map(|&l| l as u64).sum();
        let mut layout = GraphLayout::compute(n, self.stride0, self.stride_upper, upper_lists)
            .ok_or_else(too_big)?;
        layout.max_level = max_level as u32;
        layout.entry = entry;
        // Written in place, as the bytes of the words returned (the payload is whole words).
        let mut words = vec![0u64; layout.payload_len() / 8];
        debug_assert_eq!(layout.payload_len() % 8, 0);
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        let put32 =
            |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put32(bytes, prelude::N, n);
        put32(bytes, prelude::STRIDE0, self.stride0);
        put32(bytes, prelude::STRIDE_UPPER, self.stride_upper);
        put32(bytes, prelude::MAX_LEVEL, max_level as u32);
        put32(bytes, prelude::ENTRY, entry);
        bytes[prelude::UPPER_LISTS..prelude::UPPER_LISTS + 8]
            .copy_from_slice(&upper_lists.to_le_bytes());
        let mut off = 0u64;
        let mut at = layout.offsets.start;
        bytes[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
        for &l in &levels {
            off += l as u64;
            at += 8;
            bytes[at..at + 8].copy_from_slice(&off.to_le_bytes());
        }
        let write_list = |b: &mut [u8], start: usize, stride: usize, list: &[u32]| {
            for s in 0..stride {
                let v = list.get(s).copied().unwrap_or(NO_NEIGHBOUR);
                put32(b, start + 4 * s, v);
            }
        };
        let s0 = self.stride0 as usize;
        for (r, list) in self.layer0.iter().enumerate() {
            write_list(bytes, layout.layer0.start + 4 * r * s0, s0, list);
        }
        let su = self.stride_upper as usize;
        let mut li = 0usize;
        for lists in &self.upper {
            for list in lists {
                write_list(bytes, layout.upper.start + 4 * li * su, su, list);
                li += 1;
            }
        }
        Ok(words)
    }
}

/// Writes `graph.bin` (header + `payload`) to `path`, fsync'd, and returns its manifest entry.
pub(crate) fn write_graph_file(path: &Path, n: u64, payload: &[u64]) -> Result<FileInfo> {
    let bytes: &[u8] = bytemuck::cast_slice(payload);
    let stride0 = rd_u32(bytes, prelude::STRIDE0);
    let mut header = Header::new(FileKind::Graph, 0, n, stride0, 0, ElemKind::U64)?;
    header.payload_len = bytes.len() as u64;
    header.payload_crc = crc32fast::hash(bytes);
    let hb = header.encode();
    let io = |e| Error::io(path, e);
    let f = File::create(path).map_err(io)?;
    let mut out = ChunkWriter::new(f);
    out.write_all(&hb).map_err(io)?;
    out.write_all(bytes).map_err(io)?;
    let f = out.into_inner().map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(FileInfo {
        len: (hb.len() + bytes.len()) as u64,
        crc32: file_crc(&hb, header.payload_crc, bytes.len() as u64),
    })
}

/// The strongly connected components of level 0 restricted to the nodes `inside` (Tarjan's
/// algorithm, iterative: graphs have a million nodes), as a component number per node (`u32::MAX`
/// outside) and the number of components.
fn components(layer0: &[Vec<u32>], inside: &[bool]) -> (Vec<u32>, usize) {
    let n = layer0.len();
    const NONE: u32 = u32::MAX;
    let (mut order, mut low, mut comp) = (vec![NONE; n], vec![0u32; n], vec![NONE; n]);
    let mut on_stack = vec![false; n];
    let (mut stack, mut calls) = (Vec::new(), Vec::<(usize, usize)>::new());
    let (mut next, mut count) = (0u32, 0usize);
    for root in (0..n).filter(|&r| inside[r]) {
        if order[root] != NONE {
            continue;
        }
        calls.push((root, 0));
        while let Some(&(v, i)) = calls.last() {
            if i == 0 && order[v] == NONE {
                order[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = layer0[v].get(i) {
                calls.last_mut().expect("a call is open").1 += 1;
                let w = w as usize;
                if !inside[w] {
                    continue;
                }
                if order[w] == NONE {
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(order[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == order[v] {
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp[w] = count as u32;
                    if w == v {
                        break;
                    }
                }
                count += 1;
            }
        }
    }
    (comp, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nodes a walk of level 0 from `start` reaches.
    fn reached_from(g: &GraphData, start: usize) -> Vec<bool> {
        let mut seen = vec![false; g.layer0.len()];
        let mut stack = vec![start];
        seen[start] = true;
        while let Some(v) = stack.pop() {
            for &w in &g.layer0[v] {
                if !std::mem::replace(&mut seen[w as usize], true) {
                    stack.push(w as usize);
                }
            }
        }
        seen
    }

    #[test]
    fn linking_makes_every_node_reach_every_other() {
        // Node 2 is the entry point (the only one on level 1). Nodes 0 and 1 link to each other
        // and nowhere else: a walk from them never leaves them. Node 3 has no node linking to
        // it; node 4 links nowhere; the entry's list and node 5's are full (stride 2).
        let mut g = GraphData {
            layer0: vec![
                vec![1],
                vec![0],
                vec![5, 6],
                vec![2],
                vec![],
                vec![2, 6],
                vec![5],
            ],
            upper: vec![vec![], vec![], vec![vec![]], vec![], vec![], vec![], vec![]],
            stride0: 2,
            stride_upper: 1,
        };
        let added = g.link_unreached();
        for start in 0..7 {
            assert!(
                reached_from(&g, start).iter().all(|&r| r),
                "from {start}: {g:?}"
            );
        }
        // 0 (and 1 through it) is linked from 6, the first reached node with a free slot, 3
        // from 0 and 4 from 1 (the next ones); 0 and 1 then walk back through 3, and 4, a
        // component no link leaves, links to the entry point. No list grew past the stride.
        let want: [&[u32]; 7] = [&[1, 3], &[0, 4], &[5, 6], &[2], &[2], &[2, 6], &[5, 0]];
        assert_eq!(g.layer0, want.map(<[u32]>::to_vec), "{g:?}");
        assert_eq!((added, g.stride0), (4, 2));
        // A graph whose nodes already reach each other is left as it is.
        let before = g.clone();
        assert_eq!(g.link_unreached(), 0);
        assert_eq!(format!("{g:?}"), format!("{before:?}"));

        // Every list full (stride 1): 2 is linked from the entry point 0, one slot past the
        // stride, and the component {2, 3}, which no link leaves, links back to it.
        let mut g = GraphData {
            layer0: vec![vec![1], vec![0], vec![3], vec![2]],
            upper: vec![vec![vec![]], vec![], vec![], vec![]],
            stride0: 1,
            stride_upper: 1,
        };
        assert_eq!(g.link_unreached(), 2);
        let want: [&[u32]; 4] = [&[1, 2], &[0], &[3, 0], &[2]];
        assert_eq!(g.layer0, want.map(<[u32]>::to_vec), "{g:?}");
        assert_eq!(g.stride0, 2);
        for start in 0..4 {
            assert!(
                reached_from(&g, start).iter().all(|&r| r),
                "from {start}: {g:?}"
            );
        }
    }

    /// The nodes that cannot walk back to the entry point, found by components, against a
    /// brute-force reference: on random graphs whose every node the entry point reaches, one
    /// link is added per strongly connected component of such nodes that no link leaves (found
    /// by a walk from every node), from its member with the shortest list, and afterwards every
    /// node reaches every other. Half the graphs link along a zig-zag chain (0, 2, 1, 4, 3, ...)
    /// that runs against the row order, as a file could be made to.
    #[test]
    fn nodes_that_cannot_walk_back_get_one_link_per_closed_component() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |m: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % m as u64) as usize
        };
        for round in 0..200 {
            let n = 2 + next(40);
            let mut layer0 = vec![Vec::new(); n];
            if round % 2 == 0 {
                for u in 1..n {
                    layer0[next(u)].push(u as u32);
                }
            } else {
                let mut chain = vec![0];
                for pair in (1..n).step_by(2) {
                    chain.extend((pair..(pair + 2).min(n)).rev());
                }
                for w in chain.windows(2) {
                    layer0[w[0]].push(w[1] as u32);
                }
            }
            for _ in 0..next(2 * n) {
                let (u, v) = (next(n), next(n));
                if u != v && !layer0[u].contains(&(v as u32)) {
                    layer0[u].push(v as u32);
                }
            }
            let stride0 = layer0.iter().map(Vec::len).max().unwrap().max(1) as u32;
            let mut upper = vec![vec![]; n];
            upper[0] = vec![vec![]];
            let mut g = GraphData {
                layer0,
                upper,
                stride0,
                stride_upper: 1,
            };
            let reach: Vec<Vec<bool>> = (0..n).map(|u| reached_from(&g, u)).collect();
            assert!(reach[0].iter().all(|&r| r), "round {round}: {g:?}");
            let lost = |u: usize| !reach[u][0];
            let same = |u: usize, v: usize| reach[u][v] && reach[v][u];
            let mut want: Vec<(usize, usize)> = Vec::new(); // (from, list length before)
            for u in (0..n).filter(|&u| lost(u)) {
                let first = (0..n).find(|&v| same(u, v)).unwrap();
                let closed = (0..n)
                    .filter(|&v| same(u, v))
                    .all(|v| g.layer0[v].iter().all(|&w| same(u, w as usize)));
                let shortest = (0..n)
                    .filter(|&v| same(u, v))
                    .min_by_key(|&v| g.layer0[v].len())
                    .unwrap();
                if first == u && closed {
                    want.push((shortest, g.layer0[shortest].len()));
                }
            }
            let before = g.layer0.clone();
            assert_eq!(g.link_unreached(), want.len(), "round {round}: {before:?}");
            for &(u, len) in &want {
                assert_eq!(g.layer0[u].len(), len + 1);
                assert_eq!(g.layer0[u].last(), Some(&0));
            }
            for start in 0..n {
                assert!(reached_from(&g, start).iter().all(|&r| r), "round {round}");
            }
        }
    }
}
