//! [`Summary`]: what an index holds and what it costs on disk, from its manifests (no payload
//! is read), as `bsa info` prints it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Result;
use crate::live::Snapshot;
use crate::live::meta::GraphTemplate;
use crate::manifest::{GraphMetric, MANIFEST_FILE, SEGMENTED_FORMAT_VERSION, VectorsInfo};

/// What a [`Snapshot`] holds: rows, deletes, the files beside the codes, the search structures
/// of each segment and the bytes on disk by kind of file. See [`Snapshot::summary`].
///
/// ```
/// # if cfg!(not(feature = "hnsw-rs")) { return Ok(()); } // a graph over the codes: hnsw_rs
/// use bsa_index::live::{NewRows, Snapshot, Writer};
/// use bsa_index::{manifest::GraphMetric, HnswParams, IndexBuilder};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// let codes: Vec<u64> = (0..16).map(|i| 1 << i).collect();
/// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(&path)?;
/// let s = Snapshot::open(&path)?.summary()?;
/// assert_eq!((s.format_version, s.generation, s.segments[0].name.as_str()), (1, 0, "."));
/// let g = s.graph.unwrap();
/// assert_eq!((g.metric, g.dim, g.max_connections), (GraphMetric::Hamming, None, 32));
///
/// Writer::open(&path)?.add(&NewRows::codes(&[3]), false)?;
/// let s = Snapshot::open(&path)?.summary()?;
/// assert_eq!((s.format_version, s.generation, s.next_id), (2, 1, 17));
/// let names: Vec<&str> = s.segments.iter().map(|seg| seg.name.as_str()).collect();
/// assert_eq!(names, ["seg-000000", "seg-000001"]);
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// Format version of the root manifest: 1 (one segment, as `bsa build` writes it) or 2
    /// (segmented, after an add, delete or compact).
    pub format_version: u32,
    /// The manifest generation read (0 for format 1).
    pub generation: u64,
    /// Bits per code.
    pub bits: usize,
    /// Rows in every segment, deleted ones included.
    pub rows: usize,
    /// Rows that searches can return.
    pub live_rows: usize,
    /// The id a row added without ids gets next.
    pub next_id: u64,
    /// Stored float vectors (for rescoring), if every segment has them.
    pub vectors: Option<VectorsInfo>,
    /// Whether segments store per-code norms (normalised table scores such as ADC).
    pub norms: bool,
    /// Whether segments store posting lists (`--mode inverted`).
    pub inverted: bool,
    /// The graph every segment has, if any, and the metric it was built for.
    pub graph: Option<GraphSummary>,
    /// The model file's name in the index directory, if the index has one.
    pub model: Option<String>,
    /// The segments, in manifest order.
    pub segments: Vec<SegmentSummary>,
    /// Bytes on disk by kind of file, summed over segments: a segment file by its name
    /// (`codes.bin`, `vectors.bin`, `manifest.json` with the root manifest, ...), the model
    /// file as `model`, and a segmented index's deletes and bridge files as `deletes` and
    /// `bridges`.
    pub bytes: BTreeMap<String, u64>,
    /// Every file of the generation read, the root manifest included.
    pub total_bytes: u64,
}

/// The graph of a [`Summary`] (see its example).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct GraphSummary {
    /// What its distances compare: Hamming over codes, or cosine over float vectors (searched
    /// by table scores such as ADC).
    pub metric: GraphMetric,
    /// The dimension of the vectors it was built on (`None` for a graph over codes).
    pub dim: Option<u32>,
    /// `M`: the most connections a node keeps per layer.
    pub max_connections: usize,
    /// Candidates kept while building.
    pub ef_construction: usize,
    /// The default search `ef`.
    pub ef_search: usize,
}

/// One segment of a [`Summary`] (see its example, and [`Snapshot::summary`]'s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SegmentSummary {
    /// Directory name (`"."` for a format-1 index).
    pub name: String,
    /// Rows, deleted ones included.
    pub rows: usize,
    /// Rows not deleted.
    pub live_rows: usize,
    /// Whether it stores its posting lists as bitmaps too (`bitmaps.bin`).
    pub bitmaps: bool,
    /// Whether it stores each code's set bits as ids (`sparse.bin`, for ADC).
    pub sparse: bool,
    /// The segment whose graph links to its rows, if it is bridged.
    pub bridged_from: Option<String>,
    /// Bytes of the files in its directory.
    pub bytes: u64,
}

impl GraphSummary {
    fn new(g: &GraphTemplate) -> GraphSummary {
        let (metric, dim) = match g.on {
            crate::live::GraphSource::Codes => (GraphMetric::Hamming, None),
            crate::live::GraphSource::Vectors { dim } => (GraphMetric::Cosine, Some(dim)),
        };
        GraphSummary {
            metric,
            dim,
            max_connections: g.params.max_connections,
            ef_construction: g.params.ef_construction,
            ef_search: g.params.ef_search,
        }
    }
}

impl Snapshot {
    /// What this snapshot holds and its bytes on disk, from the manifests and the files'
    /// lengths: quick at any size (open with `OpenOptions::verify_checksums(false)` to skip
    /// reading the payloads too). A writer that commits meanwhile may remove files of this
    /// generation: the error then names one; open the index again.
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// use bsa_index::IndexBuilder;
    /// # fn main() -> bsa_index::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("idx");
    /// IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?;
    /// let mut w = Writer::open(&path)?;
    /// w.add(&NewRows::codes(&[0b1111]), false)?; // a second segment
    /// w.delete(&[0])?;
    /// let s = Snapshot::open(&path)?.summary()?;
    /// assert_eq!((s.rows, s.live_rows, s.segments.len()), (4, 3, 2));
    /// assert_eq!(s.bytes["codes.bin"], 2 * 64 + 4 * 8); // two 64-byte headers, 4 codes of 8 bytes
    /// assert!(s.total_bytes > s.bytes["codes.bin"]);
    /// # Ok(()) }
    /// ```
    pub fn summary(&self) -> Result<Summary> {
        let dir = self.dir();
        let mut bytes = BTreeMap::<String, u64>::new();
        let mut by_segment = BTreeMap::<&str, u64>::new();
        let model = self.model_path().map(|p| {
            p.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        });
        // A file hard-linked twice (the model of an index that became segmented is in the root
        // and in its first segment) takes its bytes once, counted where first met: the root's
        // files first.
        let mut seen = std::collections::HashSet::<(u64, u64)>::new();
        let (root, in_segments): (Vec<&String>, Vec<&String>) = self
            .files()
            .iter()
            .partition(|f| !self.is_segmented() || !f.contains('/'));
        for f in root.into_iter().chain(in_segments) {
            let path = dir.join(f);
            let meta = std::fs::metadata(&path)
                .map_err(|e| self.superseded(crate::files::listed_file_error(&path, e)))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                if !seen.insert((meta.dev(), meta.ino())) {
                    continue;
                }
            }
            #[cfg(not(unix))]
            let _ = &mut seen;
            let len = meta.len();
            let root_segment = (!self.is_segmented()).then_some(".");
            let (segment, name) = match f.split_once('/') {
                Some((s, name)) => (Some(s), name.to_string()),
                None if Some(f) == model.as_ref() => (root_segment, "model".to_string()),
                None if !self.is_segmented() => (root_segment, f.clone()),
                None if f.starts_with("bridge-") => (None, "bridges".to_string()),
                None => (None, "deletes".to_string()),
            };
            *bytes.entry(name).or_default() += len;
            if let Some(s) = segment {
                *by_segment.entry(s).or_default() += len;
            }
        }
        let root_manifest = self.manifest_bytes().len() as u64;
        *bytes.entry(MANIFEST_FILE.to_string()).or_default() += root_manifest;
        if !self.is_segmented() {
            *by_segment.entry(".").or_default() += root_manifest;
        }
        let segments = self
            .segments()
            .iter()
            .map(|s| SegmentSummary {
                name: s.name().to_string(),
                rows: s.rows(),
                live_rows: s.live_rows(),
                bitmaps: s.index().has_bitmaps(),
                sparse: s.index().sparse().is_some(),
                bridged_from: s.bridged_from().map(str::to_string),
                bytes: by_segment.get(s.name()).copied().unwrap_or(0),
            })
            .collect();
        Ok(Summary {
            format_version: if self.is_segmented() {
                SEGMENTED_FORMAT_VERSION
            } else {
                self.segments()[0].index().manifest().format_version
            },
            generation: self.generation(),
            bits: self.bits(),
            rows: self.rows(),
            live_rows: self.len(),
            next_id: self.next_id(),
            vectors: self.template().vectors,
            norms: self.has_norms(),
            inverted: self.has_inverted(),
            graph: self.template().graph.as_ref().map(GraphSummary::new),
            model,
            segments,
            total_bytes: bytes.values().sum(),
            bytes,
        })
    }
}
