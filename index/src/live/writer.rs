//! [`Writer`]: adds, deletes, upserts and compacts, one atomic commit each.
//!
//! Every change follows one protocol: new files only (a segment directory written by
//! [`IndexBuilder`] into a temporary directory and renamed, a deletes file named by the new
//! generation), each `fsync`ed; then the new root manifest written beside the old one, `fsync`ed
//! and renamed over it (the commit); then files of a writer's kinds that no manifest names are
//! removed (others in the folder are left alone). A crash before the rename leaves the old
//! generation whole (plus unnamed files, which the next writer removes); after it, the new one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::builder::{IndexBuilder, StoredRows};
use crate::error::{Error, Result};
use crate::files::{LockWait, sync_dir, sync_file};
use crate::hnsw::require_hamming_builder;
use crate::index::Index;
use crate::index::OpenOptions;
use crate::live::meta::{
    BridgeEntry, DeletesEntry, GraphSource, LiveManifest, LiveModel, Named, SegmentEntry, Template,
    bridge_name, deletes_name, is_first_segments_leftover, is_writers_name, largest_segment,
    named_entries, read_deletes, read_manifest_bytes, replace_file, segment_name, write_bridge,
    write_deletes,
};
use crate::live::snapshot::Snapshot;
use crate::manifest::{MANIFEST_FILE, Manifest};
use crate::rowset::RowSet;
use crate::search::GraphParams;
use crate::vectors::Vectors;
use crate::{GraphVectors, VectorDtype};

pub use crate::manifest::LOCK_FILE;

/// Rows to add: packed codes and what the index's template asks of every segment.
///
/// ```
/// use bsa_index::live::NewRows;
/// let codes = [0b01u64, 0b10];
/// let rows = NewRows::codes(&codes).ids(&[7, 3]);
/// assert_eq!(rows.len(8), 2);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct NewRows<'a> {
    codes: &'a [u64],
    ids: Option<&'a [u64]>,
    vectors: Option<&'a [f32]>,
    graph_vectors: Option<&'a [f32]>,
    norms: Option<&'a [f32]>,
}

impl<'a> NewRows<'a> {
    /// Rows of packed `codes` (as [`IndexBuilder::new`] takes them); ids follow the index's
    /// largest id unless [`ids`](Self::ids) are given.
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// // 128-bit codes: two words a row.
    /// bsa_index::IndexBuilder::new(128, &[1, 0, 2, 0]).ids(&[5, 9]).build(&path)?;
    /// let added = Writer::open(&path)?.add(&NewRows::codes(&[3, 0, 4, 0]), false)?;
    /// assert_eq!((added.added, added.id_range), (2, (10, 11)));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn codes(codes: &'a [u64]) -> Self {
        NewRows {
            codes,
            ids: None,
            vectors: None,
            graph_vectors: None,
            norms: None,
        }
    }
    /// Their ids (unique, not in the index unless upserting).
    ///
    /// ```
    /// use bsa_index::{live::{NewRows, Writer}, Error};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).ids(&[10, 11]).build(&path)?;
    /// let mut w = Writer::open(&path)?;
    /// let twice = w.add(&NewRows::codes(&[3, 4]).ids(&[20, 20]), false);
    /// assert!(matches!(twice, Err(Error::InvalidArgument(_))));
    /// let taken = w.add(&NewRows::codes(&[3]).ids(&[11]), false);
    /// assert!(matches!(taken, Err(Error::InvalidArgument(_))));
    /// assert_eq!(w.add(&NewRows::codes(&[3, 4]).ids(&[20, 21]), false)?.id_range, (20, 21));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn ids(mut self, ids: &'a [u64]) -> Self {
        self.ids = Some(ids);
        self
    }
    /// Their float vectors (required when the index stores vectors).
    ///
    /// ```
    /// use bsa_index::{live::{NewRows, Snapshot, Writer}, Error};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).vectors(&[1.0, 0.0, 0.0, 1.0], 2).build(&path)?;
    /// let mut w = Writer::open(&path)?;
    /// let bare = w.add(&NewRows::codes(&[3]), false);
    /// assert!(matches!(bare, Err(Error::InvalidArgument(_))));
    /// w.add(&NewRows::codes(&[3]).vectors(&[0.6, 0.8]), false)?;
    /// assert_eq!(Snapshot::open(&path)?.len(), 3);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn vectors(mut self, v: &'a [f32]) -> Self {
        self.vectors = Some(v);
        self
    }
    /// The vectors their graph is built on (required when the index's graph is on vectors).
    ///
    /// ```
    /// use bsa_index::{live::{NewRows, Writer}, Error, HnswParams, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let v: Vec<f32> = (0..16).flat_map(|i| [(i as f32).cos(), (i as f32).sin()]).collect();
    /// let codes: Vec<u64> = (0..16).map(|i| 1 << i).collect();
    /// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).graph_on(&v, 2).build(&path)?;
    /// let mut w = Writer::open(&path)?;
    /// let bare = w.add(&NewRows::codes(&[3]), false);
    /// assert!(matches!(bare, Err(Error::InvalidArgument(_))));
    /// let added = w.add(&NewRows::codes(&[3]).graph_vectors(&[0.6, 0.8]), false)?;
    /// assert_eq!(added.added, 1);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn graph_vectors(mut self, v: &'a [f32]) -> Self {
        self.graph_vectors = Some(v);
        self
    }
    /// Their per-code norms (required when the index stores norms).
    ///
    /// ```
    /// use bsa_index::{live::{NewRows, Snapshot, Writer}, Error};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).norms(&[1.0, 2.0]).build(&path)?;
    /// let mut w = Writer::open(&path)?;
    /// let bare = w.add(&NewRows::codes(&[3]), false);
    /// assert!(matches!(bare, Err(Error::InvalidArgument(_))));
    /// w.add(&NewRows::codes(&[3]).norms(&[1.5]), false)?;
    /// assert_eq!(Snapshot::open(&path)?.segments()[1].index().norms(), Some(&[1.5][..]));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn norms(mut self, v: &'a [f32]) -> Self {
        self.norms = Some(v);
        self
    }
    /// Number of rows for codes of `bits` bits.
    ///
    /// ```
    /// use bsa_index::live::NewRows;
    /// let rows = NewRows::codes(&[1, 2, 3, 4]);
    /// assert_eq!((rows.len(64), rows.len(128), rows.len(256)), (4, 2, 1));
    /// ```
    pub fn len(&self, bits: usize) -> usize {
        self.codes.len() / bits.div_ceil(64).max(1)
    }
}

/// What [`Writer::add`] did (its example reads one).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AddReport {
    /// Rows added.
    pub added: usize,
    /// Rows whose ids were already live and were replaced (upsert).
    pub replaced: usize,
    /// The directory name of the segment that holds the new rows (a merged one if the merge
    /// policy merged the new segment).
    pub segment: String,
    /// The smallest and largest id added.
    pub id_range: (u64, u64),
    /// Segments (the new one included) the merge policy merged in the same commit (0: none);
    /// a segment a merge made and a later merge of the same add merged again is not counted.
    pub merged: usize,
    /// Live rows of the segments those merges left.
    pub merged_rows: usize,
    /// Segments given a bridge in the same commit ([`Writer::add_bridging`]; 0 otherwise).
    pub bridged: usize,
    /// Their edges, together.
    pub bridge_edges: usize,
    /// The generation committed.
    pub generation: u64,
}

/// What [`Writer::delete`] did (its example reads one).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeleteReport {
    /// Rows marked deleted.
    pub deleted: usize,
    /// Ids that were not live in the index (reported, not an error).
    pub unknown: Vec<u64>,
    /// The generation committed (unchanged if nothing was deleted).
    pub generation: u64,
}

/// What [`Writer::compact`] did (its example reads one).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// Segments merged into one (or dropped, when all their rows were deleted).
    pub merged: usize,
    /// Live rows written to the merged segment.
    pub rows: usize,
    /// Deleted rows dropped.
    pub dropped: usize,
    /// Segments after compaction.
    pub segments: usize,
    /// Segments given a bridge in the same commit ([`Writer::compact_bridging`]; 0 otherwise).
    pub bridged: usize,
    /// Their edges, together.
    pub bridge_edges: usize,
    /// The generation committed (unchanged if there was nothing to do).
    pub generation: u64,
}

/// When [`Writer::add_merging`] merges segments: size tiers, as a log-structured merge does.
///
/// A segment of `r` live rows is in tier `t` when `min_rows * factor^t <= max(r, min_rows) <
/// min_rows * factor^(t+1)`. When a tier holds `factor` segments or more, they are merged into
/// one (of the next tier, about), the lowest full tier first. Segments of `max_rows` live rows
/// or more are never merged by the policy (only by [`Writer::compact`]), so that no add has to
/// rewrite a large segment (its graph build alone takes minutes at a million rows).
///
/// ```
/// use bsa_index::live::MergePolicy;
/// let p = MergePolicy::tiered(4);
/// // Four segments of about 10k rows beside one of 1M: the four are merged.
/// assert_eq!(p.select_sizes(&[1_000_000, 10_000, 10_000, 12_000, 9_000]), vec![1, 2, 3, 4]);
/// // Three are not enough.
/// assert!(p.select_sizes(&[1_000_000, 10_000, 10_000, 12_000]).is_empty());
/// // Segments at max_rows (1M by default) stay as they are.
/// assert!(MergePolicy::tiered(2).select_sizes(&[1_000_000, 1_200_000]).is_empty());
/// assert!(bsa_index::live::MergePolicy::NEVER.select_sizes(&[5, 5, 5, 5, 5]).is_empty());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MergePolicy {
    /// Segments of one tier that are merged together (below 2: never merge).
    pub factor: usize,
    /// Segments with fewer live rows count as this many (the lowest tier).
    pub min_rows: u64,
    /// Segments with this many live rows or more are not merged by the policy.
    pub max_rows: u64,
}

impl Default for MergePolicy {
    /// [`tiered(2)`](Self::tiered): about one segment per doubling of the rows added. Graph
    /// searches pay a walk per segment (benches/RESULTS-live.md: ten 10k-row adds to a
    /// 1M-row index leave 1+2 segments at 0.81 of the compacted graph's QPS with factor 2,
    /// 1+4 at 0.65 with factor 4), and rewriting each row a few more times is cheap beside it.
    fn default() -> Self {
        MergePolicy::tiered(2)
    }
}

impl MergePolicy {
    /// Never merge.
    pub const NEVER: MergePolicy = MergePolicy {
        factor: 0,
        min_rows: 1000,
        max_rows: 1_000_000,
    };

    /// Merges the segments of a tier once it holds `factor` of them (tiers `factor` times apart,
    /// from 1000 rows), leaving segments of a million rows or more alone.
    pub fn tiered(factor: usize) -> Self {
        MergePolicy {
            factor,
            min_rows: 1000,
            max_rows: 1_000_000,
        }
    }

    /// Sets [`min_rows`](Self::min_rows).
    ///
    /// ```
    /// use bsa_index::live::MergePolicy;
    /// // Below 1000 rows every segment is in the lowest tier: these two are merged.
    /// assert_eq!(MergePolicy::tiered(2).select_sizes(&[10, 900]), vec![0, 1]);
    /// // With tiers from 10 rows, 10 is in [10, 20) and 900 in [640, 1280): no merge.
    /// assert!(MergePolicy::tiered(2).with_min_rows(10).select_sizes(&[10, 900]).is_empty());
    /// ```
    pub fn with_min_rows(mut self, rows: u64) -> Self {
        self.min_rows = rows;
        self
    }

    /// Sets [`max_rows`](Self::max_rows).
    ///
    /// ```
    /// use bsa_index::live::MergePolicy;
    /// let sizes = [5000, 6000];
    /// assert_eq!(MergePolicy::tiered(2).select_sizes(&sizes), vec![0, 1]);
    /// assert!(MergePolicy::tiered(2).with_max_rows(5000).select_sizes(&sizes).is_empty());
    /// ```
    pub fn with_max_rows(mut self, rows: u64) -> Self {
        self.max_rows = rows;
        self
    }

    /// The positions among `live_rows` (segments' live rows) of the segments to merge: every
    /// segment of the lowest tier that holds at least `factor` of them; empty if none does.
    ///
    /// ```
    /// use bsa_index::live::MergePolicy;
    /// // Tiers from 1000 rows, factor 2: [1000, 2000), [2000, 4000), ...
    /// let p = MergePolicy::tiered(2);
    /// // Two full tiers: the lower one ([1000, 2000), where 10 counts as 1000) goes first.
    /// assert_eq!(p.select_sizes(&[3000, 10, 2500, 1500]), vec![1, 3]);
    /// ```
    pub fn select_sizes(&self, live_rows: &[u64]) -> Vec<usize> {
        if self.factor < 2 {
            return Vec::new();
        }
        let f = self.factor as u64;
        let floor = self.min_rows.max(1);
        let tier = |rows: u64| {
            let (mut t, mut cap) = (0u32, floor.saturating_mul(f));
            while rows >= cap && cap < u64::MAX {
                t += 1;
                cap = cap.saturating_mul(f);
            }
            t
        };
        // Segments at `max_rows` or more are in no tier.
        let tiers: Vec<Option<u32>> = live_rows
            .iter()
            .map(|&r| (r < self.max_rows).then(|| tier(r)))
            .collect();
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for &t in tiers.iter().flatten() {
            *counts.entry(t).or_default() += 1;
        }
        match counts.into_iter().find(|&(_, c)| c >= self.factor) {
            Some((full, _)) => (0..tiers.len())
                .filter(|&s| tiers[s] == Some(full))
                .collect(),
            None => Vec::new(),
        }
    }

    /// [`select_sizes`](Self::select_sizes) over a manifest's segments.
    fn select(&self, segments: &[SegmentEntry]) -> BTreeSet<usize> {
        let live: Vec<u64> = segments.iter().map(SegmentEntry::live_rows).collect();
        self.select_sizes(&live).into_iter().collect()
    }
}

/// What [`Writer::merge`] wrote.
struct Merged {
    /// Live rows written.
    rows: usize,
    /// Deleted rows dropped.
    dropped: usize,
    /// The new segment's name (not written when `rows` is 0).
    name: String,
}

/// Computes the float vectors a merged segment's graph is built on, from its codes and (when
/// the index stores them) its stored vectors, for indexes whose graph is on vectors. It is
/// called on a chunk of rows at a time (a thousand or so), in order: each row's vector must
/// depend on that row alone.
///
/// ```
/// use bsa_index::live::{GraphVectorsFn, NewRows, Writer};
/// use bsa_index::{Error, HnswParams, IndexBuilder};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// let v: Vec<f32> = (0..16).flat_map(|i| [(i as f32).cos(), (i as f32).sin()]).collect();
/// let codes: Vec<u64> = (0..16).map(|i| 1 << i).collect();
/// IndexBuilder::new(64, &codes).vectors(&v, 2).hnsw(HnswParams::default()).graph_on(&v, 2)
///     .build(&path)?;
/// let mut w = Writer::open(&path)?;
/// w.add(&NewRows::codes(&[3]).vectors(&[0.6, 0.8]).graph_vectors(&[0.6, 0.8]), false)?;
/// // Merging rebuilds a graph: on what vectors?
/// assert!(matches!(w.compact(1, None), Err(Error::InvalidArgument(_))));
/// // Those the index stores (bsa decodes the codes with its model instead).
/// let stored: &GraphVectorsFn = &|_codes, stored| Ok(stored.expect("stored").to_vec());
/// assert_eq!(w.compact(1, Some(stored))?.rows, 17);
/// # Ok::<(), bsa_index::Error>(())
/// ```
pub type GraphVectorsFn<'a> = dyn Fn(&[u64], Option<&[f32]>) -> Result<Vec<f32>> + 'a;

/// Computes, for `n` rows' graph vectors (`n x dim`, as [`GraphVectorsFn`] gives them), each
/// row's table and offset as a query's for the index's table score (`n x bits` and `n`): what
/// a bridge's walk of the largest graph ranks that graph's nodes by ([`Writer::bridge`], whose
/// example gives one).
pub type RowTablesFn<'a> = dyn Fn(&[f32], usize) -> Result<(Vec<f32>, Vec<f32>)> + 'a;

/// Edges of a bridge per row: the row is linked from this many of the nearest nodes of the
/// largest segment's graph. A walk finds a row if it expands any of them; 8 against the 32 to
/// 64 neighbours of a node costs a walk of an index grown by a tenth about a tenth more
/// scored rows (`benches/RESULTS-live.md`, 2d). [`Writer::bridge`]'s example counts them.
pub const BRIDGE_EDGES: usize = 8;

/// Candidate list of the walk that finds a row's bridge edges.
pub const BRIDGE_EF: usize = 32;

/// Rows whose graph vectors (and, bridging, tables) are computed at once: bounds the memory
/// they take to this many rows'.
const CHUNK_ROWS: usize = 1024;

/// What [`Writer::bridge`] did (its example reads one).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeReport {
    /// Segments given a bridge from the largest segment's graph.
    pub segments: usize,
    /// Their edges, together.
    pub edges: usize,
    /// The generation committed (the current one when nothing was to do).
    pub generation: u64,
}

/// A segment's index while a writer prepares a commit: the snapshot's, for a committed segment,
/// or opened from its directory, for one written since.
enum SegmentIndex<'s> {
    Committed(&'s Index),
    Written(Box<Index>),
}

impl<'s> SegmentIndex<'s> {
    /// Segment `name` (in `dir`), from `snap` when it is among the `committed` names.
    fn open(snap: &'s Snapshot, committed: &[String], dir: &Path, name: &str) -> Result<Self> {
        Ok(match committed.iter().position(|n| n == name) {
            Some(at) => SegmentIndex::Committed(snap.segments()[at].index()),
            None => SegmentIndex::Written(Box::new(Index::open_with(
                dir.join(name),
                OpenOptions::verify_checksums(false),
            )?)),
        })
    }
}

impl std::ops::Deref for SegmentIndex<'_> {
    type Target = Index;
    fn deref(&self) -> &Index {
        match self {
            SegmentIndex::Committed(i) => i,
            SegmentIndex::Written(i) => i,
        }
    }
}

/// The stored vectors of a merge's rows, row `i` being row `at[i].1` of segment `parts[at[i].0]`:
/// copied into the merged segment as they are stored.
struct MergedVectors<'p, 's> {
    parts: &'p [SegmentIndex<'s>],
    at: &'p [(u32, u32)],
    dtype: VectorDtype,
}

impl MergedVectors<'_, '_> {
    /// Appends row `i`'s vector as `f32` to `out`.
    fn push_f32(&self, i: usize, out: &mut Vec<f32>) {
        let (p, r) = self.at[i];
        push_vector(&self.parts[p as usize], r as usize, out);
    }
}

impl StoredRows for MergedVectors<'_, '_> {
    fn rows(&self) -> usize {
        self.at.len()
    }

    fn dtype(&self) -> VectorDtype {
        self.dtype
    }

    fn append_bytes(&self, i: usize, out: &mut Vec<u8>) {
        let (p, r) = (self.at[i].0 as usize, self.at[i].1 as usize);
        let index = &self.parts[p];
        let dim = index.vector_dim().unwrap_or(0);
        let span = r * dim..(r + 1) * dim;
        match index.stored_vectors() {
            Some(Vectors::F32(v)) => v[span].iter().for_each(|x| out.extend(x.to_le_bytes())),
            Some(Vectors::F16(v)) => v[span].iter().for_each(|x| out.extend(x.to_le_bytes())),
            None => {}
        }
    }
}

/// The unit vectors a merged segment's graph is built on (`dim` floats a row), for rows with
/// `codes` (`w` words each) and, when the index stores them, `stored` vectors: computed by `f`
/// a chunk of rows at a time, so that no float copy of them all is made but the graph's own.
fn merged_graph_vectors(
    f: &GraphVectorsFn<'_>,
    codes: &[u64],
    w: usize,
    stored: Option<&MergedVectors<'_, '_>>,
    dim: usize,
    stop: Option<&AtomicBool>,
) -> Result<GraphVectors> {
    let n = codes.len() / w;
    let mut out = GraphVectors::new(dim, n);
    let mut floats = Vec::new();
    for start in (0..n).step_by(CHUNK_ROWS) {
        crate::error::check_stop(stop)?;
        let end = (start + CHUNK_ROWS).min(n);
        floats.clear();
        if let Some(s) = stored {
            (start..end).for_each(|i| s.push_f32(i, &mut floats));
        }
        let v = f(
            &codes[start * w..end * w],
            stored.map(|_| floats.as_slice()),
        )?;
        if v.len() != (end - start) * dim {
            return Err(Error::DimMismatch {
                what: format!(
                    "graph vector floats ({} rows x dimension {dim})",
                    end - start
                ),
                expected: (end - start) * dim,
                got: v.len(),
            });
        }
        out.push(&v)?;
    }
    Ok(out)
}

/// Appends row `r`'s stored vector as `f32` to `out` (nothing when `index` stores none).
fn push_vector(index: &Index, r: usize, out: &mut Vec<f32>) {
    let dim = index.vector_dim().unwrap_or(0);
    match index.stored_vectors() {
        Some(Vectors::F32(v)) => out.extend_from_slice(&v[r * dim..(r + 1) * dim]),
        Some(Vectors::F16(v)) => out.extend(
            v[r * dim..(r + 1) * dim]
                .iter()
                .map(|&x| half::f16::from_bits(x).to_f32()),
        ),
        None => {}
    }
}

/// Changes an index directory: the one writer of it at a time (an exclusive lock on
/// `DIR/LOCK`, waited for), while any number of [`Snapshot`]s read it.
///
/// A single-segment index (`bsa build`) becomes segmented (format v2) at its first change: its
/// files are hard-linked (or copied) into the first segment's directory before the commit.
///
/// ```
/// use bsa_index::live::{NewRows, Snapshot, Writer};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
/// assert!(!Snapshot::open(&path)?.is_segmented());
/// let mut w = Writer::open(&path)?;
/// w.add(&NewRows::codes(&[3]), false)?;
/// let snap = Snapshot::open(&path)?;
/// assert!(snap.is_segmented());
/// let names: Vec<&str> = snap.segments().iter().map(|s| s.name()).collect();
/// assert_eq!(names, ["seg-000000", "seg-000001"]); // the built rows, then the added one
/// # Ok::<(), bsa_index::Error>(())
/// ```
///
/// A writer stays on the thread that opened it (it is not `Send`): the process knows its lock
/// by that thread, so that a second [`Writer::open`] there is refused rather than waiting for
/// itself, and another thread's waits. A writer task opens its own writer.
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// # let dir = tempfile::tempdir().unwrap();
/// # bsa_index::IndexBuilder::new(64, &[1]).build(dir.path().join("idx")).unwrap();
/// send(bsa_index::live::Writer::open(dir.path().join("idx")).unwrap()); // does not compile
/// ```
pub struct Writer {
    dir: PathBuf,
    _lock: crate::files::DirLock,
    manifest: LiveManifest,
    /// The single-segment manifest, while the directory is still in format v1.
    v1: Option<Manifest>,
    snapshot: Option<Snapshot>,
    /// The root manifest's bytes as this writer read or committed them: a commit checks the
    /// file still holds them (no other writer committed since).
    manifest_bytes: Vec<u8>,
    /// After a commit, the last snapshot's segments the new generation still lists: the next
    /// [`snapshot`](Writer::snapshot) shares them rather than opening them again.
    kept: Vec<(String, Arc<crate::index::Index>)>,
    /// Set: the change under way stops before its commit ([`LockWait::stop`]).
    stop: Option<Arc<AtomicBool>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("dir", &self.dir)
            .field("generation", &self.manifest.generation)
            .field("segments", &self.manifest.segments.len())
            .finish()
    }
}

impl Writer {
    /// Opens `dir` for writing: waits for the lock, reads the current generation (checksums
    /// of the mapped files are not re-verified: `bsa verify` does that), and removes what
    /// interrupted writers left behind. A thread that already holds this index's writer gets
    /// [`Error::InvalidArgument`] at once rather than waiting for itself.
    ///
    /// ```
    /// use bsa_index::{live::Writer, Error};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let none = Writer::open(&path); // no index there yet
    /// let not_found = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    /// assert!(matches!(none, Err(Error::Io { error, .. }) if not_found(&error)));
    /// assert!(!path.exists()); // nor made a folder for its lock
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let w = Writer::open(&path)?;
    /// assert_eq!((w.dir(), w.generation()), (path.as_path(), 0));
    /// // A second writer on this thread would wait for ever: refused.
    /// assert!(matches!(Writer::open(&path), Err(Error::InvalidArgument(_))));
    /// drop(w);
    /// assert!(Writer::open(&path).is_ok());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn open(dir: impl AsRef<Path>) -> Result<Writer> {
        Writer::open_waiting(dir, LockWait::default())
    }

    /// [`Writer::open`] that waits for another writer's lock (an add, delete or compaction, or
    /// a build replacing the index) as `wait` says: calling its
    /// [`on_wait`](LockWait::on_wait) first, so a command can say why it seems to hang; for at
    /// most its [`timeout`](LockWait::timeout), past which [`Error::LockTimeout`] names the
    /// holder where its `LOCK` file notes one; and until its [`stop`](LockWait::stop) flag is
    /// set ([`Error::Stopped`]). That flag also ends any change of this writer under way, at
    /// its next step (a progress step of a segment's build or merge, a chunk of bridged rows,
    /// at the latest before the commit), leaving the index as it was (what the change wrote is
    /// removed).
    ///
    /// ```
    /// use bsa_index::{live::{NewRows, Snapshot, Writer}, Error, LockWait};
    /// use std::sync::{atomic::{AtomicBool, Ordering}, mpsc, Arc};
    /// use std::{thread, time::Duration};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let first = Writer::open(&path)?;
    /// // A second writer is told it waits, and gives up after its timeout.
    /// let (waiting, told) = mpsc::channel();
    /// let second = thread::spawn({
    ///     let path = path.clone();
    ///     move || {
    ///         let wait = LockWait::new()
    ///             .on_wait(move || waiting.send(()).unwrap())
    ///             .timeout(Duration::from_millis(50));
    ///         Writer::open_waiting(&path, wait).map(drop)
    ///     }
    /// });
    /// let Err(Error::LockTimeout { holder, .. }) = second.join().unwrap() else {
    ///     panic!("the first writer holds the lock")
    /// };
    /// assert!(told.try_recv().is_ok());
    /// assert_eq!(holder.map(|h| h.pid), Some(std::process::id()));
    /// drop(first);
    /// // A set stop flag ends a change before it commits.
    /// let stop = Arc::new(AtomicBool::new(false));
    /// let wait = LockWait::new().stop(Arc::clone(&stop)).timeout(Duration::ZERO);
    /// let mut writer = Writer::open_waiting(&path, wait)?;
    /// stop.store(true, Ordering::Relaxed);
    /// let added = writer.add(&NewRows::codes(&[3]), false);
    /// assert!(matches!(added, Err(Error::Stopped)));
    /// drop(writer);
    /// assert_eq!(Snapshot::open(&path)?.len(), 2);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn open_waiting(dir: impl AsRef<Path>, wait: LockWait<'_>) -> Result<Writer> {
        let LockWait {
            on_wait,
            stop,
            timeout,
        } = wait;
        Writer::open_inner(dir.as_ref(), || on_wait.map_or((), |f| f()), stop, timeout)
    }

    fn open_inner(
        dir: &Path,
        on_wait: impl FnOnce(),
        stop: Option<Arc<AtomicBool>>,
        timeout: Option<std::time::Duration>,
    ) -> Result<Writer> {
        let dir = dir.to_path_buf();
        // No index there (no folder, a file, no manifest) is said as the readers say it, as an
        // I/O error of its kind, before the lock file would be made in a folder of no index.
        read_manifest_bytes(&dir)?;
        crate::builder::check_not_nested(&dir)?;
        let wait = crate::files::WaitLimits {
            stop: stop.as_deref(),
            timeout,
        };
        let lock = crate::files::lock_dir(&dir, on_wait, wait)?;
        let snapshot = Snapshot::open_with(&dir, OpenOptions::verify_checksums(false))?;
        let (manifest, v1) = if snapshot.is_segmented() {
            let (path, bytes) = read_manifest_bytes(&dir)?;
            (LiveManifest::from_bytes(&bytes, &path)?, None)
        } else {
            let m = snapshot.segments()[0].index().manifest().clone();
            let model = match &m.model {
                Some(mo) => Some(LiveModel {
                    file: mo.file.clone(),
                    original_name: mo.original_name.clone(),
                    info: m.files[&mo.file],
                }),
                None => None,
            };
            let live = LiveManifest {
                bsa_index_version: env!("CARGO_PKG_VERSION").to_string(),
                generation: 0,
                bits: m.bits,
                words_per_code: m.words_per_code,
                incompat_features: vec!["deletes".into()],
                next_id: snapshot.next_id(),
                next_segment: 1,
                segments: vec![SegmentEntry {
                    name: segment_name(0),
                    rows: m.n,
                    deletes: None,
                    bridge: None,
                }],
                model,
                template: snapshot.template().clone(),
                extra: m.extra.clone(),
            };
            (live, Some(m))
        };
        let mut w = Writer {
            dir,
            _lock: lock,
            manifest,
            v1,
            manifest_bytes: snapshot.manifest_bytes().to_vec(),
            snapshot: Some(snapshot),
            kept: Vec::new(),
            stop,
        };
        w.collect_garbage()?;
        Ok(w)
    }

    /// The index directory this writer changes (as given to [`open`](Self::open), whose
    /// example reads it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The generation last committed (0: never changed since `bsa build`).
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let mut w = Writer::open(&path)?;
    /// assert_eq!(w.generation(), 0);
    /// w.add(&NewRows::codes(&[3]), false)?;
    /// w.delete(&[0])?;
    /// assert_eq!(w.generation(), 2); // one commit each
    /// w.delete(&[0])?; // already deleted: nothing to commit
    /// assert_eq!(w.generation(), 2);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn generation(&self) -> u64 {
        self.manifest.generation
    }

    /// The manifest the next commit starts from.
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let mut w = Writer::open(&path)?;
    /// w.add(&NewRows::codes(&[3]), false)?;
    /// w.delete(&[0])?;
    /// let m = w.manifest();
    /// assert_eq!((m.generation, m.next_id, m.rows()), (2, 3, 3));
    /// let live: Vec<u64> = m.segments.iter().map(|s| s.live_rows()).collect();
    /// assert_eq!(live, vec![1, 1]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn manifest(&self) -> &LiveManifest {
        &self.manifest
    }

    /// The generation this writer changes, as a snapshot (opened without verifying checksums).
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let mut w = Writer::open(&path)?;
    /// w.add(&NewRows::codes(&[3]).ids(&[9]), false)?;
    /// let snap = w.snapshot()?; // the generation just committed
    /// assert_eq!((snap.generation(), snap.len()), (1, 3));
    /// assert_eq!(snap.find_id(9), Some((1, 0))); // segment 1, row 0
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn snapshot(&mut self) -> Result<&Snapshot> {
        if self.snapshot.is_none() {
            let kept = std::mem::take(&mut self.kept);
            let options = OpenOptions::verify_checksums(false);
            self.snapshot = Some(Snapshot::open_reusing(&self.dir, options, &kept)?);
        }
        Ok(self.snapshot.as_ref().expect("opened above"))
    }

    /// Verifies the checksums of every file of the generation this writer changes but the
    /// graphs' ([`Snapshot::verify_checksums`]): a change on top of a damaged file would carry the
    /// damage into a new generation under fresh checksums. `bsa add` and `bsa delete` call it
    /// first (graphs are checked at their first search, not here).
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// use bsa_index::live::{NewRows, Writer};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let mut writer = Writer::open(&path)?;
    /// writer.verify_checksums()?;
    /// writer.add(&NewRows::codes(&[3]), false)?;
    /// drop(writer);
    /// // A byte of the added codes flipped on disk: opening does not read them, this does.
    /// let codes = path.join("seg-000001/codes.bin");
    /// let mut bytes = std::fs::read(&codes).unwrap();
    /// *bytes.last_mut().unwrap() ^= 1;
    /// std::fs::write(&codes, &bytes).unwrap();
    /// let mut writer = Writer::open(&path)?;
    /// let damaged = writer.verify_checksums();
    /// assert!(matches!(damaged, Err(bsa_index::Error::Checksum { .. })));
    /// # Ok(()) }
    /// ```
    pub fn verify_checksums(&mut self) -> Result<()> {
        self.snapshot()?.verify_checksums()
    }

    /// The ids `rows` new rows added without ids get: the ones after the largest id the index
    /// has held (deleted ids are not given again). Refused when they would pass `u64::MAX`.
    ///
    /// ```
    /// # use bsa_index::{IndexBuilder, live::Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[1, 2, 3]).ids(&[10, 7, 2]).build(&path)?;
    /// let writer = Writer::open(&path)?;
    /// assert_eq!(writer.default_ids(2)?, vec![11, 12]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn default_ids(&self, rows: usize) -> Result<Vec<u64>> {
        let next = self.manifest.next_id;
        match next.checked_add(rows as u64) {
            Some(end) => Ok((next..end).collect()),
            None => Err(Error::InvalidArgument(format!(
                "{}: not {} left after the largest id the index has held ({}{}); give the \
                 new rows' ids",
                self.dir.display(),
                match rows {
                    1 => "one id".to_string(),
                    n => format!("{n} ids"),
                },
                next - 1,
                // `next_id` saturates: at u64::MAX the largest id is u64::MAX - 1 or u64::MAX.
                if next == u64::MAX { " or more" } else { "" }
            ))),
        }
    }

    /// Adds `rows` as a new segment. Ids (given, or following the largest id so far) must not
    /// be live in the index unless `upsert`, which deletes the rows holding them in the same
    /// commit. The segment holds what the index's template asks for (vectors, norms, posting
    /// lists, a graph), so `rows` must bring the inputs of each.
    ///
    /// Merges no segments: see [`add_merging`](Self::add_merging).
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// use bsa_index::{Mode, Score};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(8, &[0b0001, 0b0011]).ids(&[10, 11]).build(&path)?;
    /// let mut w = Writer::open(&path)?;
    /// // Id 11 is live: an upsert replaces its row, a plain add is refused.
    /// assert!(w.add(&NewRows::codes(&[0b1111]).ids(&[11]), false).is_err());
    /// let r = w.add(&NewRows::codes(&[0b1111, 0b0111]).ids(&[11, 12]), true)?;
    /// assert_eq!((r.added, r.replaced, r.id_range, r.generation), (2, 1, (11, 12), 1));
    /// assert_eq!(r.segment, "seg-000001");
    /// let snap = Snapshot::open(&path)?;
    /// let flat = Mode::parse("flat")?;
    /// let (hits, _) = snap.search(&[0b1111], 2, &Score::Hamming, &flat, &Default::default())?;
    /// assert_eq!((hits[0].ids.as_slice(), snap.len()), (&[11, 12][..], 3));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn add(&mut self, rows: &NewRows<'_>, upsert: bool) -> Result<AddReport> {
        self.add_merging(rows, upsert, MergePolicy::NEVER, None)
    }

    /// [`add`](Self::add), then the merges `policy` asks for, all in one commit: the segments
    /// of a full size tier (which may include the new one) are merged into one, with their
    /// deleted rows dropped, and again while a tier is full. `graph_vectors` as for
    /// [`compact`](Self::compact), needed when a merge happens in an index whose graph is on
    /// float vectors.
    ///
    /// A merge rewrites only segments of one tier, so an add costs what the rows added cost
    /// plus, now and then, a merge of segments about as large as the tier (each row is
    /// rewritten about log_factor(index rows / rows per add) times over its life), and the
    /// number of segments stays about `(factor - 1)` per tier, which keeps searches of a
    /// growing index near the speed of a compacted one.
    ///
    /// ```
    /// use bsa_index::live::{MergePolicy, NewRows, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2, 3, 4]).build(&path)?;
    /// let mut w = Writer::open(&path)?;
    /// let policy = MergePolicy::tiered(2).with_min_rows(1); // tiers 1, 2, 4, ... rows
    /// let r = w.add_merging(&NewRows::codes(&[5]), false, policy, None)?;
    /// assert_eq!((r.merged, w.manifest().segments.len()), (0, 2)); // 4 rows, 1 row
    /// let r = w.add_merging(&NewRows::codes(&[6]), false, policy, None)?;
    /// // The two 1-row segments filled their tier: merged into one, in the same commit.
    /// assert_eq!((r.merged, r.merged_rows, r.generation), (2, 2, 2));
    /// assert_eq!(w.manifest().segments.len(), 2); // 4 rows, 2 rows
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn add_merging(
        &mut self,
        rows: &NewRows<'_>,
        upsert: bool,
        policy: MergePolicy,
        graph_vectors: Option<&GraphVectorsFn<'_>>,
    ) -> Result<AddReport> {
        self.change(|w| w.add_inner(rows, upsert, policy, graph_vectors, None))
    }

    /// [`add_merging`](Self::add_merging), and in the same commit the bridges
    /// [`bridge`](Self::bridge) would write (for the new segment, and for every segment when
    /// the largest one changed): one commit, so a crash leaves the index as before or with the
    /// rows added and bridged. For an index whose graph is on float vectors; others are added
    /// as by `add_merging`.
    ///
    /// ```
    /// use bsa_index::live::{MergePolicy, NewRows, Writer};
    /// use bsa_index::{HnswParams, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let v: Vec<f32> = (0..16).flat_map(|i| [(i as f32).cos(), (i as f32).sin()]).collect();
    /// let codes: Vec<u64> = (0..16).map(|i| 1 << i).collect();
    /// IndexBuilder::new(64, &codes).vectors(&v, 2).hnsw(HnswParams::default()).graph_on(&v, 2)
    ///     .build(&path)?;
    /// // A toy table per row (bsa makes a row's table from its model, as for a query).
    /// let tables = |v: &[f32], n: usize| {
    ///     Ok((v.chunks(2).flat_map(|x| [x[0]; 64]).collect(), vec![0.0; n]))
    /// };
    /// let stored = |_: &[u64], v: Option<&[f32]>| Ok(v.expect("stored").to_vec());
    ///
    /// let mut w = Writer::open(&path)?;
    /// let rows = NewRows::codes(&[3]).vectors(&[0.6, 0.8]).graph_vectors(&[0.6, 0.8]);
    /// let r = w.add_bridging(&rows, false, MergePolicy::NEVER, &stored, &tables)?;
    /// assert_eq!((r.bridged, r.generation), (1, 1)); // added and bridged in one commit
    /// assert_eq!(w.snapshot()?.segments()[1].bridged_from(), Some("seg-000000"));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn add_bridging(
        &mut self,
        rows: &NewRows<'_>,
        upsert: bool,
        policy: MergePolicy,
        graph_vectors: &GraphVectorsFn<'_>,
        tables: &RowTablesFn<'_>,
    ) -> Result<AddReport> {
        self.change(|w| w.add_inner(rows, upsert, policy, Some(graph_vectors), Some(tables)))
    }

    fn add_inner(
        &mut self,
        rows: &NewRows<'_>,
        upsert: bool,
        policy: MergePolicy,
        graph_vectors: Option<&GraphVectorsFn<'_>>,
        tables: Option<&RowTablesFn<'_>>,
    ) -> Result<AddReport> {
        let (n, ids) = self.new_rows_ids(rows)?;
        let t = self.manifest.template.clone();
        let graph_dim = self.check_row_fields(rows, &t)?;
        let sorted = crate::builder::sorted_distinct_ids(&ids).map_err(|id| {
            Error::InvalidArgument(format!(
                "id {id} appears more than once among the new rows; ids must be unique"
            ))
        })?;
        let clashes = self.clashing_ids(&ids, upsert)?;

        let mut next = self.manifest.clone();
        let name = segment_name(next.next_segment);
        self.write_new_segment(rows, &ids, &t, graph_dim, &name)?;
        self.record_new_segment(&mut next, &name, &sorted, &clashes)?;
        let mut segment = name;
        let (merged, merged_rows) =
            self.merge_tiers(&mut next, &mut segment, policy, graph_vectors)?;
        let (bridged, bridge_edges) = match (graph_vectors, tables) {
            (Some(g), Some(t)) => self.bridge_into(&mut next, g, t)?,
            _ => (0, 0),
        };
        let generation = self.commit(next)?;
        Ok(AddReport {
            added: n,
            replaced: clashes.len(),
            segment,
            id_range: (sorted[0], sorted[n - 1]),
            merged,
            merged_rows,
            bridged,
            bridge_edges,
            generation,
        })
    }

    /// How many rows `rows` adds and their ids (as given, or the next free ones): refused when
    /// its words are not whole codes or its ids not one per row.
    fn new_rows_ids(&self, rows: &NewRows<'_>) -> Result<(usize, Vec<u64>)> {
        let bits = self.manifest.bits as usize;
        let w = bits.div_ceil(64);
        if rows.codes.is_empty() || !rows.codes.len().is_multiple_of(w) {
            return Err(Error::InvalidArgument(format!(
                "no rows to add, or {} words are not whole {bits}-bit codes",
                rows.codes.len()
            )));
        }
        let n = rows.codes.len() / w;
        let ids: Vec<u64> = match rows.ids {
            Some(ids) if ids.len() != n => {
                return Err(Error::DimMismatch {
                    what: "ids (one per new row)".into(),
                    expected: n,
                    got: ids.len(),
                });
            }
            Some(ids) => ids.to_vec(),
            None => self.default_ids(n)?,
        };
        Ok((n, ids))
    }

    /// Checks that `rows` gives exactly what the index stores for every row (vectors, norms,
    /// graph vectors) and that its graph can be built here; returns the dimension of the
    /// graph's float vectors, when its graph is on them.
    fn check_row_fields(&self, rows: &NewRows<'_>, t: &Template) -> Result<Option<usize>> {
        let need = |what: &str, have: bool, want: bool| -> Result<()> {
            match (have, want) {
                (false, true) => Err(Error::InvalidArgument(format!(
                    "the index stores {what} for every row: give them for the new rows too"
                ))),
                (true, false) => Err(Error::InvalidArgument(format!(
                    "the index stores no {what}; add the rows without them"
                ))),
                _ => Ok(()),
            }
        };
        need("vectors", rows.vectors.is_some(), t.vectors.is_some())?;
        need("norms", rows.norms.is_some(), t.norms)?;
        let graph_dim = match t.graph.map(|g| g.on) {
            Some(GraphSource::Vectors { dim }) => Some(dim as usize),
            _ => None,
        };
        self.require_graph_builder(t, "adding rows")?;
        need(
            "graph vectors (its graph is built on float vectors)",
            rows.graph_vectors.is_some(),
            graph_dim.is_some(),
        )?;
        Ok(graph_dim)
    }

    /// The new `ids` already in the index, each with its (segment, row): refused unless
    /// `upsert`, which replaces them.
    fn clashing_ids(&mut self, ids: &[u64], upsert: bool) -> Result<Vec<(u64, (usize, usize))>> {
        let snap = self.snapshot()?;
        let clashes: Vec<(u64, (usize, usize))> = ids
            .iter()
            .filter_map(|&id| snap.find_id(id).map(|at| (id, at)))
            .collect();
        if !clashes.is_empty() && !upsert {
            let mut shown: Vec<u64> = clashes.iter().map(|&(id, _)| id).collect();
            shown.sort_unstable();
            let more = shown.len().saturating_sub(10);
            shown.truncate(10);
            return Err(Error::InvalidArgument(format!(
                "{}: {} of the new ids are already in the index: {}{}; add with --upsert \
                 (upsert=True from Python) to replace them, or delete them first",
                self.dir.display(),
                clashes.len(),
                shown
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            )));
        }
        Ok(clashes)
    }

    /// Writes `rows` with their `ids` as the new segment `name`, stored as the template `t`
    /// says (its graph on the graph vectors when `graph_dim` is given).
    fn write_new_segment(
        &self,
        rows: &NewRows<'_>,
        ids: &[u64],
        t: &Template,
        graph_dim: Option<usize>,
        name: &str,
    ) -> Result<()> {
        let bits = self.manifest.bits as usize;
        let mut b = IndexBuilder::new(bits, rows.codes)
            .live_segment()
            .ids(ids)
            .inverted(t.inverted)
            .extra(serde_json::Value::Null);
        if let Some(stop) = self.stop.as_deref() {
            b = b.stop_when(stop);
        }
        if let (Some(v), Some(vi)) = (rows.vectors, t.vectors) {
            b = b.vectors(v, vi.dim as usize).vector_dtype(vi.dtype);
        }
        if let Some(nm) = rows.norms {
            b = b.norms(nm);
        }
        if let Some(g) = t.graph {
            b = b.hnsw(g.params);
            if let (Some(v), Some(d)) = (rows.graph_vectors, graph_dim) {
                b = b.graph_on(v, d);
            }
        }
        b.build(self.dir.join(name))?;
        Ok(())
    }

    /// Puts the new segment `name` (of the rows with ids `sorted`) into `next`, and the rows
    /// its ids replace (`clashes`) into `next`'s deletes.
    fn record_new_segment(
        &mut self,
        next: &mut LiveManifest,
        name: &str,
        sorted: &[u64],
        clashes: &[(u64, (usize, usize))],
    ) -> Result<()> {
        let n = sorted.len();
        let mut deleted: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &(_, (s, r)) in clashes {
            deleted.entry(s).or_default().push(r);
        }
        next.next_segment += 1;
        next.next_id = next.next_id.max(sorted[n - 1].saturating_add(1));
        next.segments.push(SegmentEntry {
            name: name.to_string(),
            rows: n as u64,
            deletes: None,
            bridge: None,
        });
        self.mark_deleted(next, &deleted)
    }

    /// Merges the segments of `next` as `policy` selects, tier after tier, until it selects
    /// none; `segment` (the new one) follows its rows into the merged segment. Returns how
    /// many segments of `next` were merged and the rows of the segments the merges made.
    fn merge_tiers(
        &mut self,
        next: &mut LiveManifest,
        segment: &mut String,
        policy: MergePolicy,
        graph_vectors: Option<&GraphVectorsFn<'_>>,
    ) -> Result<(usize, usize)> {
        let mut merged = 0;
        // Segments the merges made: one merged again in a later round (merges cascade up the
        // tiers) is counted neither as a segment merged nor for its rows.
        let mut made: Vec<(String, usize)> = Vec::new();
        loop {
            let tier = policy.select(&next.segments);
            if tier.is_empty() {
                break;
            }
            let holds_new = tier.iter().any(|&s| next.segments[s].name == *segment);
            for &s in &tier {
                let name = &next.segments[s].name;
                match made.iter().position(|(m, _)| m == name) {
                    Some(i) => drop(made.swap_remove(i)),
                    None => merged += 1,
                }
            }
            let (m, done) = self.merge(next, &tier, graph_vectors)?;
            if holds_new {
                *segment = done.name.clone();
            }
            made.push((done.name, done.rows));
            *next = m;
        }
        let merged_rows = made.iter().map(|(_, rows)| rows).sum();
        Ok((merged, merged_rows))
    }

    /// Gives every segment other than the largest (by live rows) a bridge from the largest
    /// segment's graph, when it has none from that segment yet: each of its rows is linked from
    /// the [`BRIDGE_EDGES`] graph nodes nearest to it (a walk of the graph ranked by the row's
    /// table), so that a graph search walks one graph and still finds the rows of every
    /// bridged segment, instead of searching each segment on its own. Applies to indexes whose
    /// graph is on float vectors (searched by table scores such as ADC); `graph_vectors` gives
    /// the rows' vectors as for a merge, `tables` their tables. Commits when it wrote any.
    ///
    /// The time is that of one graph walk per row bridged, so an add followed by this costs
    /// in proportion to the rows added. Bridges are an accelerator: a reader that ignores
    /// them, or an index whose bridges lead from a segment that is no longer the largest, finds
    /// the same rows by searching the segments on their own.
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Writer, BRIDGE_EDGES};
    /// use bsa_index::{HnswParams, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let v: Vec<f32> = (0..16).flat_map(|i| [(i as f32).cos(), (i as f32).sin()]).collect();
    /// let codes: Vec<u64> = (0..16).map(|i| 1 << i).collect();
    /// IndexBuilder::new(64, &codes).vectors(&v, 2).hnsw(HnswParams::default()).graph_on(&v, 2)
    ///     .build(&path)?;
    /// let mut w = Writer::open(&path)?;
    /// let (a, b) = ([0.6, 0.8], [0.8, 0.6]);
    /// w.add(&NewRows::codes(&[3]).vectors(&a).graph_vectors(&a), false)?;
    /// w.add(&NewRows::codes(&[5]).vectors(&b).graph_vectors(&b), false)?;
    ///
    /// // A toy table per row (bsa makes a row's table from its model, as for a query).
    /// let tables = |v: &[f32], n: usize| {
    ///     Ok((v.chunks(2).flat_map(|x| [x[0]; 64]).collect(), vec![0.0; n]))
    /// };
    /// let stored = |_: &[u64], v: Option<&[f32]>| Ok(v.expect("stored").to_vec());
    /// let r = w.bridge(&stored, &tables)?;
    /// // Each added row linked from BRIDGE_EDGES nodes of the 16-row segment's graph.
    /// assert_eq!((r.segments, r.edges, r.generation), (2, 2 * BRIDGE_EDGES, 3));
    /// let bridge = w.manifest().segments[1].bridge.as_ref().unwrap();
    /// assert_eq!(bridge.to, "seg-000000");
    /// // Nothing left to bridge: no commit.
    /// assert_eq!(w.bridge(&stored, &tables)?.generation, 3);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn bridge(
        &mut self,
        graph_vectors: &GraphVectorsFn<'_>,
        tables: &RowTablesFn<'_>,
    ) -> Result<BridgeReport> {
        self.change(|w| {
            let mut next = w.manifest.clone();
            let (segments, edges) = w.bridge_into(&mut next, graph_vectors, tables)?;
            let generation = match segments {
                0 => w.manifest.generation,
                _ => w.commit(next)?,
            };
            Ok(BridgeReport {
                segments,
                edges,
                generation,
            })
        })
    }

    /// Writes the bridges [`bridge`](Self::bridge) describes for `next` (a manifest this writer
    /// is preparing, whose new segments are read from their directories) and names them in it;
    /// commits nothing. Returns the segments bridged and their edges.
    fn bridge_into(
        &mut self,
        next: &mut LiveManifest,
        graph_vectors: &GraphVectorsFn<'_>,
        tables: &RowTablesFn<'_>,
    ) -> Result<(usize, usize)> {
        let on_vectors = matches!(
            next.template.graph.map(|g| g.on),
            Some(GraphSource::Vectors { .. })
        );
        let live = next.segments.iter().map(SegmentEntry::live_rows);
        let (true, Some(target)) = (on_vectors, largest_segment(live)) else {
            return Ok((0, 0));
        };
        let to = next.segments[target].name.clone();
        let todo: Vec<usize> = (0..next.segments.len())
            .filter(|&s| s != target)
            .filter(|&s| next.segments[s].bridge.as_ref().is_none_or(|b| b.to != to))
            .collect();
        if todo.is_empty() {
            return Ok((0, 0));
        }
        let (bits, w) = (next.bits as usize, next.words_per_code as usize);
        let generation = self.manifest.generation + 1;
        let stores_vectors = next.template.vectors.is_some();
        let dir = self.dir.clone();
        let committed = self.committed_names();
        let stop = self.stop.clone();
        let snap = self.snapshot()?;
        let target_index = SegmentIndex::open(snap, &committed, &dir, &to)?;
        let graph = target_index.graph_searcher(GraphParams::default())?;
        let mut edges_total = 0;
        for &s in &todo {
            let name = next.segments[s].name.clone();
            let index = SegmentIndex::open(snap, &committed, &dir, &name)?;
            let n = index.len();
            let mut edges: Vec<(u32, u32)> = Vec::with_capacity(n * BRIDGE_EDGES);
            for start in (0..n).step_by(CHUNK_ROWS) {
                crate::error::check_stop(stop.as_deref())?;
                let end = (start + CHUNK_ROWS).min(n);
                let mut stored = Vec::new();
                for r in start..end {
                    push_vector(&index, r, &mut stored);
                }
                let stored = stores_vectors.then_some(stored.as_slice());
                let gv = graph_vectors(&index.codes()[start * w..end * w], stored)?;
                let (t, o) = tables(&gv, end - start)?;
                if t.len() != (end - start) * bits || o.len() != end - start {
                    return Err(Error::InvalidArgument(format!(
                        "bridging needs a {bits}-entry table and an offset per row: got {} \
                         table entries and {} offsets for {} rows",
                        t.len(),
                        o.len(),
                        end - start
                    )));
                }
                let targets = graph.bridge_targets(&t, &o, BRIDGE_EF, BRIDGE_EDGES);
                for (i, nodes) in targets.iter().enumerate() {
                    edges.extend(nodes.iter().map(|&v| (v, (start + i) as u32)));
                }
            }
            edges.sort_unstable();
            edges.dedup();
            let file = bridge_name(&name, &to, generation);
            let info = write_bridge(&dir, &file, &edges)?;
            edges_total += edges.len();
            next.segments[s].bridge = Some(BridgeEntry {
                file,
                to: to.clone(),
                edges: edges.len() as u64,
                info,
            });
        }
        Ok((todo.len(), edges_total))
    }

    /// `Err(Stopped)` once the stop flag of its [`LockWait`] is set.
    fn check_stop(&self) -> Result<()> {
        crate::error::check_stop(self.stop.as_deref())
    }

    /// The stop flag this writer was opened with ([`LockWait::stop`]), for the long
    /// work a caller does for a change (encoding the rows it adds).
    ///
    /// ```
    /// use std::sync::{atomic::{AtomicBool, Ordering}, Arc};
    /// use bsa_index::live::Writer;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// assert!(Writer::open(&path)?.stop_flag().is_none());
    /// let stop = Arc::new(AtomicBool::new(false));
    /// let w = Writer::open_waiting(&path, bsa_index::LockWait::new().stop(Arc::clone(&stop)))?;
    /// stop.store(true, Ordering::Relaxed); // Ctrl-C, say
    /// assert!(w.stop_flag().unwrap().load(Ordering::Relaxed));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn stop_flag(&self) -> Option<&AtomicBool> {
        self.stop.as_deref()
    }

    /// The names of the committed generation's segments (those its snapshot holds).
    fn committed_names(&self) -> Vec<String> {
        self.manifest
            .segments
            .iter()
            .map(|e| e.name.clone())
            .collect()
    }

    /// Marks the live rows holding `ids` deleted. Ids not live in the index are reported in
    /// [`DeleteReport::unknown`]; nothing is committed when no row changes. A segment whose
    /// rows are all deleted is dropped.
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).ids(&[10, 11]).build(&path)?;
    /// let mut w = Writer::open(&path)?;
    /// w.add(&NewRows::codes(&[3]).ids(&[12]), false)?;
    /// let r = w.delete(&[10, 12, 99])?;
    /// assert_eq!((r.deleted, r.unknown, r.generation), (2, vec![99], 2));
    /// let snap = Snapshot::open(&path)?;
    /// // Id 12's segment is gone; id 10's row stays, marked deleted.
    /// assert_eq!((snap.segments().len(), snap.rows(), snap.len()), (1, 2, 1));
    /// assert_eq!(w.delete(&[10])?.generation, 2); // nothing to delete: no commit
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn delete(&mut self, ids: &[u64]) -> Result<DeleteReport> {
        self.change(|w| w.delete_inner(ids))
    }

    fn delete_inner(&mut self, ids: &[u64]) -> Result<DeleteReport> {
        let snap = self.snapshot()?;
        let mut unknown = Vec::new();
        let mut deleted: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for &id in ids {
            if !seen.insert(id) {
                continue;
            }
            match snap.find_id(id) {
                Some((s, r)) => deleted.entry(s).or_default().push(r),
                None => unknown.push(id),
            }
        }
        let count = deleted.values().map(Vec::len).sum();
        if count == 0 {
            return Ok(DeleteReport {
                deleted: 0,
                unknown,
                generation: self.manifest.generation,
            });
        }
        let mut next = self.manifest.clone();
        self.mark_deleted(&mut next, &deleted)?;
        let generation = self.commit(next)?;
        Ok(DeleteReport {
            deleted: count,
            unknown,
            generation,
        })
    }

    /// Adds `rows` (segment index to rows) to the deletes of `next`'s segments: new deletes
    /// files named by the coming generation, fully deleted segments dropped.
    fn mark_deleted(
        &mut self,
        next: &mut LiveManifest,
        rows: &BTreeMap<usize, Vec<usize>>,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let generation = next.generation + 1;
        let dir = self.dir.clone();
        let snap = self.snapshot()?;
        let mut drop = BTreeSet::new();
        for (&s, rs) in rows {
            let seg = &snap.segments()[s];
            let mut set = seg
                .deleted()
                .cloned()
                .unwrap_or_else(|| RowSet::empty(seg.rows()));
            for &r in rs {
                set.insert(r);
            }
            let entry = &mut next.segments[s];
            if set.count() == seg.rows() {
                drop.insert(s);
                continue;
            }
            let file = deletes_name(&entry.name, generation);
            let info = write_deletes(&dir, &file, &set)?;
            entry.deletes = Some(DeletesEntry {
                file,
                deleted: set.count() as u64,
                info,
            });
        }
        let mut i = 0;
        next.segments.retain(|_| {
            i += 1;
            !drop.contains(&(i - 1))
        });
        Ok(())
    }

    /// Merges segments so that at most `max_segments` (0 counts as 1) remain (the smallest
    /// first), and drops deleted rows: every segment with deleted rows joins that one merge (a
    /// single new segment), so fewer than `max_segments` may remain; so does every segment whose
    /// rows are not in id order (written before segments were), so that its ties fall to the
    /// smaller id again. A graph on float vectors is
    /// rebuilt on the vectors `graph_vectors` computes (required for such indexes; other
    /// graphs are rebuilt from the codes). Nothing is committed when there is nothing to do.
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2, 3]).build(&path)?;
    /// let mut w = Writer::open(&path)?;
    /// w.add(&NewRows::codes(&[4]), false)?;
    /// w.add(&NewRows::codes(&[5]), false)?;
    /// w.delete(&[0])?;
    /// // Two segments at most: the two smallest and the one with a deleted row, merged.
    /// let r = w.compact(2, None)?;
    /// assert_eq!((r.merged, r.rows, r.dropped, r.segments, r.generation), (3, 4, 1, 1, 4));
    /// assert_eq!(w.compact(1, None)?.generation, 4); // nothing to do: no commit
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn compact(
        &mut self,
        max_segments: usize,
        graph_vectors: Option<&GraphVectorsFn<'_>>,
    ) -> Result<CompactReport> {
        self.change(|w| w.compact_inner(max_segments, graph_vectors, None))
    }

    /// [`compact`](Self::compact), and in the same commit the bridges [`bridge`](Self::bridge)
    /// would write for the segments left; commits when either has work.
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Writer};
    /// use bsa_index::{HnswParams, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let v: Vec<f32> = (0..16).flat_map(|i| [(i as f32).cos(), (i as f32).sin()]).collect();
    /// let codes: Vec<u64> = (0..16).map(|i| 1 << i).collect();
    /// IndexBuilder::new(64, &codes).vectors(&v, 2).hnsw(HnswParams::default()).graph_on(&v, 2)
    ///     .build(&path)?;
    /// let mut w = Writer::open(&path)?;
    /// for x in [[0.6, 0.8], [0.8, 0.6]] {
    ///     w.add(&NewRows::codes(&[3]).vectors(&x).graph_vectors(&x), false)?;
    /// }
    /// // A toy table per row (bsa makes a row's table from its model, as for a query).
    /// let tables = |v: &[f32], n: usize| {
    ///     Ok((v.chunks(2).flat_map(|x| [x[0]; 64]).collect(), vec![0.0; n]))
    /// };
    /// let stored = |_: &[u64], v: Option<&[f32]>| Ok(v.expect("stored").to_vec());
    /// // The two 1-row segments merged, and the merged one bridged, in one commit.
    /// let r = w.compact_bridging(2, &stored, &tables)?;
    /// assert_eq!((r.merged, r.segments, r.bridged, r.generation), (2, 2, 1, 3));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn compact_bridging(
        &mut self,
        max_segments: usize,
        graph_vectors: &GraphVectorsFn<'_>,
        tables: &RowTablesFn<'_>,
    ) -> Result<CompactReport> {
        self.change(|w| w.compact_inner(max_segments, Some(graph_vectors), Some(tables)))
    }

    fn compact_inner(
        &mut self,
        max_segments: usize,
        graph_vectors: Option<&GraphVectorsFn<'_>>,
        tables: Option<&RowTablesFn<'_>>,
    ) -> Result<CompactReport> {
        let max_segments = max_segments.max(1);
        let m = self.manifest.clone();
        // Segments with deleted rows, and those whose rows are not in id order (written before
        // segments were): rewritten in id order, their ties fall to the smaller id again.
        let unsorted: Vec<bool> = (self.snapshot()?.segments().iter())
            .map(|r| !r.in_id_order())
            .collect();
        let mut merge: BTreeSet<usize> = (0..m.segments.len())
            .filter(|&s| m.segments[s].deletes.is_some() || unsorted.get(s) == Some(&true))
            .collect();
        if m.segments.len() > max_segments {
            let mut by_size: Vec<usize> = (0..m.segments.len()).collect();
            by_size.sort_by_key(|&s| (m.segments[s].live_rows(), s));
            merge.extend(
                by_size
                    .into_iter()
                    .take(m.segments.len() - max_segments + 1),
            );
        }
        let (mut next, merged) = match merge.is_empty() {
            true => (m.clone(), None),
            false => {
                let (next, merged) = self.merge(&m, &merge, graph_vectors)?;
                (next, Some(merged))
            }
        };
        let (bridged, bridge_edges) = match (graph_vectors, tables) {
            (Some(g), Some(t)) => self.bridge_into(&mut next, g, t)?,
            _ => (0, 0),
        };
        let segments = next.segments.len();
        let generation = match (&merged, bridged) {
            (None, 0) => m.generation,
            _ => self.commit(next)?,
        };
        Ok(CompactReport {
            merged: if merged.is_some() { merge.len() } else { 0 },
            rows: merged.as_ref().map_or(0, |d| d.rows),
            dropped: merged.as_ref().map_or(0, |d| d.dropped),
            segments,
            bridged,
            bridge_edges,
            generation,
        })
    }

    /// Writes the live rows of segments `merge` of `m` (a manifest this writer is preparing:
    /// the segments of its snapshot are read from it, new ones from their directories; deleted
    /// rows as `m` names them) into one new segment, and returns `m` with it in place of the
    /// first of them (the others removed; none if no row is live). Commits nothing.
    fn merge(
        &mut self,
        m: &LiveManifest,
        merge: &BTreeSet<usize>,
        graph_vectors: Option<&GraphVectorsFn<'_>>,
    ) -> Result<(LiveManifest, Merged)> {
        let bits = m.bits as usize;
        let w = bits.div_ceil(64);
        let t = m.template.clone();
        let graph_on_vectors = matches!(t.graph.map(|g| g.on), Some(GraphSource::Vectors { .. }));
        self.require_graph_builder(&t, "merging segments")?;
        if graph_on_vectors && graph_vectors.is_none() {
            return Err(Error::InvalidArgument(
                "the index's graph is built on float vectors: merging segments needs them for \
                 the merged rows (bsa compact and bsa add decode them with the index's model)"
                    .into(),
            ));
        }
        let name = segment_name(m.next_segment);
        let dir = self.dir.clone();
        let committed = self.committed_names();
        let stop = self.stop.clone();
        let snap = self.snapshot()?;
        let (mut codes, mut ids, mut norms) = (Vec::new(), Vec::new(), Vec::new());
        // The segments, open until the merged one is written: its vectors are copied from them.
        let mut parts = Vec::with_capacity(merge.len());
        let mut at: Vec<(u32, u32)> = Vec::new();
        let mut dropped = 0;
        for &s in merge {
            let entry = &m.segments[s];
            let part = SegmentIndex::open(snap, &committed, &dir, &entry.name)?;
            let index = &*part;
            if index.vector_dim() != t.vectors.map(|v| v.dim as usize)
                || index.vector_dtype() != t.vectors.map(|v| v.dtype)
            {
                let said = |dim: Option<usize>, dtype: Option<VectorDtype>| match (dim, dtype) {
                    (Some(d), Some(t)) => format!("{d}-d {t} vectors"),
                    _ => "no vectors".to_string(),
                };
                return Err(Error::Corrupt {
                    path: dir.join(&entry.name).join(MANIFEST_FILE),
                    detail: format!(
                        "the segment stores {} where the index's manifest says {}",
                        said(index.vector_dim(), index.vector_dtype()),
                        said(
                            t.vectors.map(|v| v.dim as usize),
                            t.vectors.map(|v| v.dtype)
                        )
                    ),
                });
            }
            // The merged segment gets new checksums: a damaged byte copied into it would pass
            // every later check, so what is copied (codes, ids, vectors, norms) is checked
            // first (a pass over the segment, small beside rebuilding its lists and graph).
            // Its posting lists, bitmaps and sparse codes are not copied but built again from
            // the codes, so they are not compared with the codes here (a wrong one is mended).
            index.verify_copied()?;
            let deleted = match &entry.deletes {
                Some(d) => Some(read_deletes(&dir, d, index.len())?),
                None => None,
            };
            for r in 0..index.len() {
                if deleted.as_ref().is_some_and(|d| d.contains(r)) {
                    dropped += 1;
                    continue;
                }
                codes.extend_from_slice(index.code(r));
                ids.push(index.ids()[r]);
                at.push((parts.len() as u32, r as u32));
                if let Some(nm) = index.norms() {
                    norms.push(nm[r]);
                }
            }
            parts.push(part);
        }
        let vectors = t.vectors.map(|vi| MergedVectors {
            parts: &parts,
            at: &at,
            dtype: vi.dtype,
        });
        let rows = ids.len();
        let mut next = m.clone();
        let first = *merge.first().expect("not empty");
        let mut kept: Vec<SegmentEntry> = Vec::new();
        for (s, e) in m.segments.iter().enumerate() {
            if s == first && rows > 0 {
                kept.push(SegmentEntry {
                    name: name.clone(),
                    rows: rows as u64,
                    deletes: None,
                    bridge: None,
                });
            }
            if !merge.contains(&s) {
                kept.push(e.clone());
            }
        }
        if rows > 0 {
            debug_assert_eq!(codes.len(), rows * w);
            let gv = match (t.graph.map(|g| g.on), graph_vectors) {
                (Some(GraphSource::Vectors { dim }), Some(f)) => Some(merged_graph_vectors(
                    f,
                    &codes,
                    w,
                    vectors.as_ref(),
                    dim as usize,
                    stop.as_deref(),
                )?),
                _ => None,
            };
            let mut b = IndexBuilder::new(bits, &codes)
                .live_segment()
                .ids(&ids)
                .inverted(t.inverted)
                .extra(serde_json::Value::Null);
            if let Some(stop) = stop.as_deref() {
                b = b.stop_when(stop);
            }
            if let (Some(v), Some(vi)) = (&vectors, t.vectors) {
                b = b.stored_vectors(v, vi.dim as usize);
            }
            if t.norms {
                b = b.norms(&norms);
            }
            if let Some(g) = t.graph {
                b = b.hnsw(g.params);
                if let Some(v) = gv {
                    b = b.graph_on_vectors(v);
                }
            }
            b.build(dir.join(&name))?;
            next.next_segment += 1;
        }
        next.segments = kept;
        Ok((
            next,
            Merged {
                rows,
                dropped,
                name,
            },
        ))
    }

    /// Commits `next` as the next generation: the first commit of a single-segment index moves
    /// its files into the first segment's directory (hard links, so nothing is copied) before
    /// the new manifest replaces the old one. Then removes what no manifest names.
    fn commit(&mut self, mut next: LiveManifest) -> Result<u64> {
        // The last moment a stop leaves the index as it was.
        self.check_stop()?;
        if let Some(v1) = &self.v1 {
            self.link_first_segment(v1)?;
        }
        // A bridge from a segment no longer listed (merged away or dropped) leads nowhere.
        let names: BTreeSet<String> = next.segments.iter().map(|e| e.name.clone()).collect();
        for e in &mut next.segments {
            if e.bridge.as_ref().is_some_and(|b| !names.contains(&b.to)) {
                e.bridge = None;
            }
        }
        next.generation = self.manifest.generation + 1;
        next.bsa_index_version = env!("CARGO_PKG_VERSION").to_string();
        // The new files' directory entries are durable before the manifest that names them.
        sync_dir(&self.dir)?;
        let bytes = next.to_bytes()?;
        self.check_alone(Some(&next))?;
        replace_file(&self.dir, MANIFEST_FILE, &bytes)?;
        self.manifest_bytes = bytes;
        // Committed: readers open the new generation from here on, so the writer is at it too,
        // whatever fails below (a retry must not repeat the change).
        self.manifest = next;
        // The single-segment files this first change moved into `seg-000000/` (as links), which
        // the root no longer needs: removed by name here, as only this commit knows them.
        let moved: Vec<String> = match self.v1.take() {
            Some(v1) => v1.files.into_keys().collect(),
            None => Vec::new(),
        };
        if let Some(old) = self.snapshot.take() {
            self.kept = old.kept_segments(|name| names.contains(name));
        }
        sync_dir(&self.dir)?;
        let model = self.manifest.model.as_ref().map(|m| m.file.as_str());
        for f in moved.iter().filter(|f| Some(f.as_str()) != model) {
            let _ = fs::remove_file(self.dir.join(f));
        }
        // The change is made: a file the old generation named that cannot be removed now is
        // removed by the next writer's open (an error here would read as a change not made).
        let _ = self.collect_garbage();
        Ok(self.manifest.generation)
    }

    /// Refuses a change (before it starts, and again before its commit of `next`) unless this
    /// writer is still the only one: its `LOCK` file still in place (removed by hand, it lets
    /// a second writer in), the root manifest still the one this writer read, and every segment
    /// `next` lists present. Checked last before the commit, so that two writers let in
    /// together cannot publish a manifest naming files the other removed; the loser's change
    /// is not made and it says why.
    fn check_alone(&self, next: Option<&LiveManifest>) -> Result<()> {
        let lock = self.dir.join(LOCK_FILE);
        if !self._lock.is_still_held(&self.dir) {
            return Err(Error::InvalidArgument(format!(
                "{}: the lock file was removed or replaced while this writer held it, so another \
                 writer may be changing the index at the same time; nothing was committed. Check \
                 that no other bsa process writes to it, then open the index again and make the \
                 change",
                lock.display()
            )));
        }
        let (path, now) = read_manifest_bytes(&self.dir)?;
        if now != self.manifest_bytes {
            return Err(Error::InvalidArgument(format!(
                "{}: another writer committed while this one held the lock (was its lock file \
                 {} removed?); nothing was committed: make the change again",
                path.display(),
                lock.display()
            )));
        }
        let listed = next.map_or(&[][..], |n| &n.segments[..]);
        if let Some(gone) = listed.iter().find(|s| !self.dir.join(&s.name).is_dir()) {
            return Err(Error::InvalidArgument(format!(
                "{}: the new generation's segment {} is gone (another writer removed it?); \
                 nothing was committed: make the change again",
                self.dir.display(),
                gone.name
            )));
        }
        Ok(())
    }

    /// Refuses, before any work, a change (`doing`) that builds a segment's graph over the codes
    /// in a build of bsa-index without hnsw_rs (the `hnsw-rs` feature).
    fn require_graph_builder(&self, t: &Template, doing: &str) -> Result<()> {
        match t.graph.map(|g| g.on) {
            Some(GraphSource::Codes) => require_hamming_builder(&format!(
                "{}: the index's graphs are over the codes, and {doing} builds one",
                self.dir.display()
            )),
            _ => Ok(()),
        }
    }

    /// Runs one change. If it fails, what it wrote for a commit that did not happen (a
    /// segment, deletes or bridge files) is removed, so that this writer can go on: a retry
    /// writes the same names again.
    fn change<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.check_alone(None)?;
        let out = f(self);
        if out.is_err() {
            // What cannot be removed now is removed by the next writer's open; the change's
            // own error is the one to report.
            let _ = self.collect_garbage();
        }
        out
    }

    /// Puts the files of the single-segment index at the root into `seg-000000/` (hard links,
    /// or copies where links fail), through a temporary directory renamed into place.
    fn link_first_segment(&self, v1: &Manifest) -> Result<()> {
        let name = segment_name(0);
        let tmp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        for f in v1.files.keys().map(String::as_str).chain([MANIFEST_FILE]) {
            let (src, dst) = (self.dir.join(f), tmp.join(f));
            if let Err(e) = fs::hard_link(&src, &dst) {
                // A file the manifest lists is missing: said as the other commands say it.
                if f != MANIFEST_FILE
                    && e.kind() == std::io::ErrorKind::NotFound
                    && matches!(src.try_exists(), Ok(false))
                {
                    return Err(crate::files::listed_file_error(&src, e));
                }
                crate::files::copy_file(&src, &dst)?;
                sync_file(&dst)?;
            }
        }
        sync_dir(&tmp)?;
        let dst = self.dir.join(&name);
        fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
        sync_dir(&self.dir)
    }

    /// Removes what interrupted writers left and what the current generation no longer
    /// names, among the files bsa writes ([`is_writers_name`]): anything else in the folder (a
    /// user's notes, a data file, a mounted volume) is left alone.
    fn collect_garbage(&mut self) -> Result<()> {
        // Without the lock another writer may be at work here: what looks unnamed may be its
        // new segment, not yet committed.
        if !self._lock.is_still_held(&self.dir) {
            return Ok(());
        }
        // No file goes before the manifest that stops naming it is durable: after a commit whose
        // last directory sync failed (an error its caller got), a crash could bring back the
        // manifest before it, which names the files removed below.
        sync_dir(&self.dir)?;
        let keep = match &self.v1 {
            Some(v1) => named_entries(Some(Named::Single(v1))),
            None => named_entries(Some(Named::Segmented(&self.manifest))),
        };
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        for e in entries {
            let e = e.map_err(|e| Error::io(&self.dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let leftover = self.v1.is_none() && is_first_segments_leftover(&self.dir, &name);
            if keep.contains(&name) || !(is_writers_name(&name) || leftover) {
                continue;
            }
            let p = e.path();
            let r = if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            r.map_err(|err| Error::io(&p, err))?;
        }
        Ok(())
    }
}
