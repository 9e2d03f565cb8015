//! The files a segmented index adds to its segments: the root `manifest.json` of format v2
//! ([`LiveManifest`]) and the per-segment deletes and bridge files. Reading, validating and the
//! atomic writes; nothing here searches.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::files::file_crc;
pub(crate) use crate::files::read_manifest_bytes;
use crate::format::{ElemKind, FileKind, HEADER_LEN, Header};
use crate::manifest::{
    FileInfo, HnswParams, LOCK_FILE, MANIFEST_FILE, Manifest, SEGMENTED_FORMAT_VERSION,
    VectorsInfo, check_features_and_size, check_file_name, manifest_version, seal, unparsed_body,
    unseal,
};
use crate::rowset::RowSet;

/// Incompatible features of a segmented index this build understands: `"deletes"` (rows can be
/// marked deleted by a deletes file; a reader that ignored it would return deleted rows).
/// [`LiveManifest`]'s example checks that a segmented index asks for them.
pub const LIVE_INCOMPAT_FEATURES: &[&str] = &["deletes"];

/// The root manifest of a segmented index (`manifest.json`, format v2): the segments, their
/// deletes, and what every new segment must hold. Replacing this file (write a temporary file,
/// `fsync`, `rename`) is the one commit point of every change.
///
/// ```
/// use bsa_index::live::{LiveManifest, NewRows, Writer, LIVE_INCOMPAT_FEATURES};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
/// let mut w = Writer::open(&path)?;
/// w.add(&NewRows::codes(&[3]), false)?; // the first change writes a v2 manifest
/// let file = path.join("manifest.json");
/// let m = LiveManifest::from_bytes(&std::fs::read(&file).unwrap(), &file)?;
/// assert_eq!(&m, w.manifest());
/// assert_eq!((m.generation, m.next_id, m.next_segment, m.rows()), (1, 3, 2, 3));
/// assert_eq!(m.incompat_features, LIVE_INCOMPAT_FEATURES);
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LiveManifest {
    /// Version of bsa-index that wrote this manifest.
    pub bsa_index_version: String,
    /// Incremented by every commit; a reader's snapshot is the generation it read.
    pub generation: u64,
    /// Bits per code (every segment's).
    pub bits: u32,
    /// `u64` words per code, `ceil(bits / 64)`.
    pub words_per_code: u32,
    /// Features a reader must understand ([`LIVE_INCOMPAT_FEATURES`]).
    pub incompat_features: Vec<String>,
    /// The id given to the next row added without ids: one past the largest id the index has
    /// ever held (built, added, deleted since or not).
    pub next_id: u64,
    /// The number in the name of the next segment (`seg-{next_segment:06}`), never reused.
    pub next_segment: u64,
    /// The segments, each a directory holding a single-segment index.
    pub segments: Vec<SegmentEntry>,
    /// The model shared by every segment (a file in the root directory), if any.
    pub model: Option<LiveModel>,
    /// What every segment holds beside codes and ids.
    pub template: Template,
    /// Free-form JSON of the application (bsa records its encoder settings), from the first build.
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// One segment of a [`LiveManifest`].
///
/// ```
/// use bsa_index::live::{NewRows, Writer};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// bsa_index::IndexBuilder::new(64, &[1, 2, 3]).build(&path)?;
/// let mut w = Writer::open(&path)?;
/// w.delete(&[1])?;
/// let seg = &w.manifest().segments[0];
/// assert_eq!((seg.name.as_str(), seg.rows, seg.live_rows()), ("seg-000000", 3, 2));
/// let deletes = seg.deletes.as_ref().unwrap();
/// assert_eq!((deletes.file.as_str(), deletes.deleted), ("deletes-seg-000000-g1.bin", 1));
/// assert_eq!(std::fs::metadata(path.join(&deletes.file)).unwrap().len(), deletes.info.len);
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SegmentEntry {
    /// Directory name of the segment inside the index directory.
    pub name: String,
    /// Rows in the segment, deleted ones included.
    pub rows: u64,
    /// Its deletes file, if any row is deleted.
    pub deletes: Option<DeletesEntry>,
    /// Its bridge from a larger segment's graph, if one was built (an index that ignores it
    /// finds the same rows by searching the segment on its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<BridgeEntry>,
}

impl SegmentEntry {
    /// Rows not deleted (see [`SegmentEntry`]'s example).
    pub fn live_rows(&self) -> u64 {
        self.rows - self.deletes.as_ref().map_or(0, |d| d.deleted)
    }
}

/// A segment's deletes file (see [`SegmentEntry`]'s example).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeletesEntry {
    /// File name in the index directory.
    pub file: String,
    /// Number of deleted rows.
    pub deleted: u64,
    /// File length and CRC-32.
    pub info: FileInfo,
}

/// A segment's bridge file: edges from the graph nodes of a larger segment (`to`) to this
/// segment's rows, so that a walk of that graph finds this segment's rows too (see
/// [`crate::live`]). [`Writer::bridge`](crate::live::Writer::bridge)'s example reads one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BridgeEntry {
    /// File name in the index directory.
    pub file: String,
    /// The segment whose graph the edges leave from.
    pub to: String,
    /// Number of edges.
    pub edges: u64,
    /// File length and CRC-32.
    pub info: FileInfo,
}

/// The model file in the root directory.
///
/// ```
/// use bsa_index::live::{NewRows, Writer};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// let model = dir.path().join("m.safetensors");
/// std::fs::write(&model, b"weights").unwrap();
/// bsa_index::IndexBuilder::new(64, &[1, 2]).model_file(&model).build(&path)?;
/// let mut w = Writer::open(&path)?;
/// w.add(&NewRows::codes(&[3]), false)?; // the segments share the one model
/// let m = w.manifest().model.as_ref().unwrap();
/// assert_eq!((m.file.as_str(), m.original_name.as_str()), ("model.safetensors", "m.safetensors"));
/// assert_eq!(m.info.len, 7);
/// assert!(path.join(&m.file).is_file() && !path.join("seg-000001").join(&m.file).exists());
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LiveModel {
    /// File name in the index directory.
    pub file: String,
    /// The name it had when the index was built.
    pub original_name: String,
    /// File length and CRC-32.
    pub info: FileInfo,
}

/// What a segment holds beside its codes and ids; new segments (added or merged) follow it.
///
/// ```
/// # if cfg!(not(feature = "hnsw-rs")) { return Ok(()); } // a graph over the codes: hnsw_rs
/// use bsa_index::live::{GraphSource, NewRows, Writer};
/// use bsa_index::{HnswParams, IndexBuilder};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// let codes: Vec<u64> = (0..16).map(|i| 1 << i).collect();
/// IndexBuilder::new(64, &codes).norms(&[1.0; 16]).hnsw(HnswParams::default()).build(&path)?;
/// let mut w = Writer::open(&path)?;
/// let t = w.manifest().template.clone();
/// assert!(t.norms && !t.inverted && t.vectors.is_none());
/// let graph = t.graph.unwrap();
/// assert_eq!((graph.on, graph.params), (GraphSource::Codes, HnswParams::default()));
/// // An added segment gets its graph too, on its codes.
/// w.add(&NewRows::codes(&[3]).norms(&[1.0]), false)?;
/// assert!(w.snapshot()?.segments()[1].index().has_hnsw());
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct Template {
    /// Stored float vectors (for rescoring), if every segment has them.
    pub vectors: Option<VectorsInfo>,
    /// Whether segments store per-code norms (normalised table scores such as ADC).
    pub norms: bool,
    /// Whether segments store posting lists (`--mode inverted`).
    pub inverted: bool,
    /// The graph every segment has, if any.
    pub graph: Option<GraphTemplate>,
}

impl Template {
    /// What it says a segment holds, in words: "vectors (384 x f32), norms, posting lists, a
    /// graph on the codes (M 16)", or "codes and ids only".
    pub(crate) fn parts(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = self.vectors {
            parts.push(format!("vectors ({} x {})", v.dim, v.dtype));
        }
        if self.norms {
            parts.push("norms".to_string());
        }
        if self.inverted {
            parts.push("posting lists".to_string());
        }
        if let Some(g) = self.graph {
            let on = match g.on {
                GraphSource::Codes => "the codes".to_string(),
                GraphSource::Vectors { dim } => format!("{dim}-d vectors"),
            };
            parts.push(format!(
                "a graph on {on} (M {}, ef_construction {}, ef_search {})",
                g.params.max_connections, g.params.ef_construction, g.params.ef_search
            ));
        }
        if parts.is_empty() {
            "codes and ids only".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// How a segment's graph is built (see [`Template`]'s example).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GraphTemplate {
    /// The HNSW parameters.
    pub params: HnswParams,
    /// What the graph is built on.
    pub on: GraphSource,
}

/// What a segment's graph is built on (see [`Template`]'s example, and
/// [`GraphVectorsFn`](crate::live::GraphVectorsFn)'s for a graph on vectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
#[non_exhaustive]
pub enum GraphSource {
    /// The codes, nearest by Hamming distance (hnsw_rs).
    Codes,
    /// Float vectors of dimension `dim` the caller supplies (the decoded codes or the
    /// embeddings), nearest by cosine (the native builder; searched by table scores).
    Vectors {
        /// Their dimension.
        dim: u32,
    },
}

/// The segment a snapshot walks in graph mode: the most live rows, the first listed on ties.
pub(crate) fn largest_segment(live_rows: impl IntoIterator<Item = u64>) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (s, n) in live_rows.into_iter().enumerate() {
        if best.is_none_or(|(_, b)| n > b) {
            best = Some((s, n));
        }
    }
    best.map(|(s, _)| s)
}

/// Name of segment number `i`.
pub(crate) fn segment_name(i: u64) -> String {
    format!("seg-{i:06}")
}

/// Name of the bridge file from `target`'s graph to `segment` written at `generation`.
pub(crate) fn bridge_name(segment: &str, target: &str, generation: u64) -> String {
    format!("bridge-{segment}-from-{target}-g{generation}.bin")
}

/// Name of the deletes file of `segment` written at `generation`.
pub(crate) fn deletes_name(segment: &str, generation: u64) -> String {
    format!("deletes-{segment}-g{generation}.bin")
}

impl LiveManifest {
    /// Serialises the manifest inside its checksummed envelope (format v2).
    ///
    /// ```
    /// use bsa_index::live::{LiveManifest, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let mut w = Writer::open(&path)?;
    /// w.delete(&[0])?;
    /// let bytes = w.manifest().to_bytes()?;
    /// assert_eq!(bytes, std::fs::read(path.join("manifest.json")).unwrap()); // as committed
    /// assert_eq!(&LiveManifest::from_bytes(&bytes, &path)?, w.manifest());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        seal(self, SEGMENTED_FORMAT_VERSION)
    }

    /// Parses and validates the bytes of a v2 manifest read from `path` (named in errors).
    ///
    /// ```
    /// use bsa_index::{live::LiveManifest, Error};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?; // format v1: one segment
    /// let file = path.join("manifest.json");
    /// let v1 = LiveManifest::from_bytes(&std::fs::read(&file).unwrap(), &file);
    /// assert!(matches!(v1, Err(Error::Corrupt { path, .. }) if path == file));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<LiveManifest> {
        let version = manifest_version(bytes, path)?;
        if version != SEGMENTED_FORMAT_VERSION {
            return Err(Error::corrupt(
                path,
                format!("format v{version} is not a segmented index"),
            ));
        }
        let body = unseal(bytes, path)?;
        let m: LiveManifest = serde_json::from_str(body)
            .map_err(|e| unparsed_body(body, LIVE_INCOMPAT_FEATURES, e, path))?;
        m.validate(path)?;
        Ok(m)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |d: String| Err(Error::corrupt(path, d));
        check_features_and_size(
            &self.incompat_features,
            LIVE_INCOMPAT_FEATURES,
            self.bits,
            self.words_per_code,
            path,
        )?;
        let mut names = std::collections::BTreeSet::new();
        for s in &self.segments {
            check_file_name(&s.name, path)?;
            if !names.insert(s.name.as_str()) {
                return bad(format!("segment {:?} is listed twice", s.name));
            }
            if s.rows == 0 || s.rows > u64::from(u32::MAX) {
                return bad(format!("segment {:?} has {} rows", s.name, s.rows));
            }
            // The next add writes segment `next_segment`: it must be a new name.
            let number = s
                .name
                .strip_prefix("seg-")
                .and_then(|d| d.parse::<u64>().ok());
            if let Some(k) = number.filter(|&k| segment_name(k) == s.name)
                && k >= self.next_segment
            {
                return bad(format!(
                    "lists segment {:?} but next_segment is {}: the next change would \
                         write over it",
                    s.name, self.next_segment
                ));
            }
            // A change writes its files under the next generation's number: one listed with a
            // later number would be written over (the write refuses, with an error that says
            // only "File exists").
            let written_later = |file: &str| {
                file_generation(file)
                    .filter(|&g| g > self.generation)
                    .map(|g| {
                        Error::corrupt(
                            path,
                            format!(
                                "lists {file:?}, written at generation {g}, but is generation {}",
                                self.generation
                            ),
                        )
                    })
            };
            if let Some(b) = &s.bridge {
                check_file_name(&b.file, path)?;
                if b.to == s.name {
                    return bad(format!("segment {:?} is bridged from itself", s.name));
                }
                written_later(&b.file).map_or(Ok(()), Err)?;
            }
            if let Some(d) = &s.deletes {
                check_file_name(&d.file, path)?;
                written_later(&d.file).map_or(Ok(()), Err)?;
                if d.deleted == 0 || d.deleted > s.rows {
                    return bad(format!(
                        "segment {:?}: {} deleted of {} rows",
                        s.name, d.deleted, s.rows
                    ));
                }
            }
        }
        if let Some(m) = &self.model {
            check_file_name(&m.file, path)?;
        }
        if let Some(g) = &self.template.graph {
            g.params
                .validate()
                .or_else(|e| bad(format!("template graph: {e}")))?;
        }
        // Writers add one to each: far below where that could overflow.
        for (what, v) in [
            ("generation", self.generation),
            ("next_segment", self.next_segment),
        ] {
            if v >= 1 << 62 {
                return bad(format!("{what} {v} is beyond any number of commits"));
            }
        }
        Ok(())
    }

    /// Rows in every segment, deleted ones included ([`Writer::manifest`]'s example counts them).
    ///
    /// [`Writer::manifest`]: crate::live::Writer::manifest
    pub fn rows(&self) -> u64 {
        self.segments.iter().map(|s| s.rows).sum()
    }
}

/// Replaces `dir/name` by `bytes` atomically: a temporary file beside it, `fsync`, `rename`. A
/// crash leaves either the old file or the new one (and perhaps a temporary file that the next
/// writer removes). The rename is durable once the caller has `fsync`ed `dir` ([`sync_dir`](crate::files::sync_dir)):
/// it is visible before, so the caller knows the two steps apart.
pub(crate) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    let dst = dir.join(name);
    fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))
}

/// Writes a new file `dir/name` of `kind` holding `words` (one `u64` per element, the header's
/// width 64) and returns its length and CRC. The file is new (names carry the generation),
/// written and `fsync`ed before the manifest that names it.
fn write_words(dir: &Path, name: &str, kind: FileKind, words: &[u64]) -> Result<FileInfo> {
    let mut header = Header::new(kind, 0, words.len() as u64, 64, 1, ElemKind::U64)?;
    let payload: &[u8] = bytemuck::cast_slice(words);
    header.payload_crc = crc32fast::hash(payload);
    let hb = header.encode();
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(&hb);
    bytes.extend_from_slice(payload);
    let path = dir.join(name);
    // Never over a file of the same name: names carry their generation, so one there is a
    // committed file (or a failed change's, which the writer removes on failure).
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    f.write_all(&bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&path, e))?;
    Ok(FileInfo {
        len: bytes.len() as u64,
        crc32: file_crc(&hb, header.payload_crc, payload.len() as u64),
    })
}

/// Reads the `u64` words of file `dir/file` of `kind`, checked against its header and the
/// length and CRC its manifest entry recorded (`info`).
fn read_words(dir: &Path, file: &str, kind: FileKind, info: &FileInfo) -> Result<Vec<u64>> {
    let path = dir.join(file);
    let io = |e| Error::io(&path, e);
    let mut f = crate::files::open_regular(&path)?;
    let len = f.metadata().map_err(io)?.len();
    // The header, then the length, then the rest: a foreign file is reported as such, and a
    // name pointing at some large file is refused without reading it.
    let mut bytes = Vec::with_capacity(HEADER_LEN);
    (&mut f)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let header = Header::decode(&bytes, kind, len, &path)?;
    crate::files::check_listed_len(&path, &header, info)?;
    f.read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 != len {
        return Err(Error::corrupt(
            &path,
            format!(
                "changed while read ({len} bytes at first, {} read)",
                bytes.len()
            ),
        ));
    }
    let (head, payload) = bytes.split_at(header.payload_offset as usize);
    crate::files::check_crcs(&path, head, payload, &header, info)?;
    Ok(payload
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// Writes the deletes file `dir/name` for `deleted` (a set over a segment's rows) and returns
/// its length and CRC.
pub(crate) fn write_deletes(dir: &Path, name: &str, deleted: &RowSet) -> Result<FileInfo> {
    write_words(dir, name, FileKind::Deletes, deleted.words())
}

/// Reads and checks a deletes file against its manifest entry and its segment's `rows`.
pub(crate) fn read_deletes(dir: &Path, entry: &DeletesEntry, rows: usize) -> Result<RowSet> {
    let words = read_words(dir, &entry.file, FileKind::Deletes, &entry.info)?;
    let path = dir.join(&entry.file);
    let set = RowSet::from_words(&words, rows).ok_or_else(|| {
        Error::corrupt(
            &path,
            format!("does not describe the {rows} rows of its segment"),
        )
    })?;
    if set.count() as u64 != entry.deleted {
        return Err(Error::corrupt(
            &path,
            format!(
                "marks {} rows deleted but the manifest says {}",
                set.count(),
                entry.deleted
            ),
        ));
    }
    Ok(set)
}

/// Writes the bridge file `dir/name` of `edges` (`(node of the target's graph, row of the
/// segment)`, sorted, no repeats) and returns its length and CRC.
pub(crate) fn write_bridge(dir: &Path, name: &str, edges: &[(u32, u32)]) -> Result<FileInfo> {
    let words: Vec<u64> = edges
        .iter()
        .map(|&(v, r)| u64::from(v) << 32 | u64::from(r))
        .collect();
    write_words(dir, name, FileKind::Bridge, &words)
}

/// Reads and checks a bridge file against its manifest entry, its segment's `rows` and its
/// target segment's `nodes`: the edges, sorted.
pub(crate) fn read_bridge(
    dir: &Path,
    entry: &BridgeEntry,
    rows: usize,
    nodes: usize,
) -> Result<Vec<(u32, u32)>> {
    let words = read_words(dir, &entry.file, FileKind::Bridge, &entry.info)?;
    let path = dir.join(&entry.file);
    crate::files::check_listed_count(&path, "edges", words.len() as u64, entry.edges)?;
    if !words.windows(2).all(|p| p[0] < p[1]) {
        return Err(Error::corrupt(
            &path,
            "its edges are not sorted".to_string(),
        ));
    }
    let edges: Vec<(u32, u32)> = words
        .iter()
        .map(|&x| ((x >> 32) as u32, x as u32))
        .collect();
    if let Some(&(v, r)) = edges
        .iter()
        .find(|&&(v, r)| v as usize >= nodes || r as usize >= rows)
    {
        return Err(Error::corrupt(
            &path,
            format!(
                "edge ({v}, {r}) is outside segment {:?} ({nodes} rows) or its own {rows} rows",
                entry.to
            ),
        ));
    }
    Ok(edges)
}

/// An index directory's manifest, of either format.
pub(crate) enum Named<'a> {
    Single(&'a Manifest),
    Segmented(&'a LiveManifest),
}

/// The entries of an index directory its manifest names, with the manifest and the lock.
pub(crate) fn named_entries(manifest: Option<Named>) -> BTreeSet<String> {
    let mut keep: BTreeSet<String> = [MANIFEST_FILE.to_string(), LOCK_FILE.to_string()]
        .into_iter()
        .collect();
    match manifest {
        None => {}
        Some(Named::Single(v1)) => keep.extend(v1.files.keys().cloned()),
        Some(Named::Segmented(m)) => {
            for s in &m.segments {
                keep.insert(s.name.clone());
                keep.extend(s.deletes.as_ref().map(|d| d.file.clone()));
                keep.extend(s.bridge.as_ref().map(|b| b.file.clone()));
            }
            keep.extend(m.model.as_ref().map(|mo| mo.file.clone()));
        }
    }
    keep
}

/// What of an index directory bsa did not write ([`foreign_entries`]).
#[derive(Debug, Default)]
pub(crate) struct Foreign {
    /// The entries, sorted, inside a segment as `seg-000001/notes.txt`.
    pub(crate) entries: Vec<String>,
    /// Why a manifest could not be read, if one could not: what only it names (a model file)
    /// is then among `entries`.
    pub(crate) unreadable_manifest: Option<Error>,
}

/// The entries of the index directory `dir` that bsa did not write: neither the manifest, the
/// lock, an entry the manifest names, one of a writer's names ([`is_writers_name`]), a file of
/// the single-segment format or an hnsw_rs dump (by their first bytes) nor an empty folder;
/// inside each segment folder, those its own manifest does not name. Replacing
/// the index whole (`bsa build --force`) would delete them with it, so it refuses while there
/// are any. A manifest that cannot be read names nothing: what only it names then counts as
/// the user's, the safe side, and [`Foreign::unreadable_manifest`] says why.
pub(crate) fn foreign_entries(dir: &Path) -> Result<Foreign> {
    let (mut single, mut segmented, mut unreadable) = (None, None, None);
    let parsed = read_manifest_bytes(dir).and_then(|(path, bytes)| {
        match manifest_version(&bytes, &path)? {
            SEGMENTED_FORMAT_VERSION => segmented = Some(LiveManifest::from_bytes(&bytes, &path)?),
            _ => single = Some(Manifest::from_bytes(&bytes, &path)?),
        }
        Ok(())
    });
    if let Err(e) = parsed {
        unreadable = Some(e);
    }
    let keep = named_entries(
        (single.as_ref().map(Named::Single)).or(segmented.as_ref().map(Named::Segmented)),
    );
    let mut foreign = Foreign::default();
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        // Not through a link: what it leads to is not in the index (a replace removes the link).
        if is_segment(&name) && e.file_type().is_ok_and(|t| t.is_dir()) {
            // A segment is an index of the single-segment format: its files are its manifest's
            // (named by the root manifest or not: that one may be unreadable, or the segment a
            // killed writer's).
            let inner = foreign_entries(&path)?;
            if !inner.entries.is_empty() {
                // (An empty one's missing manifest explains nothing.)
                unreadable = unreadable.or(inner.unreadable_manifest);
            }
            let inside = inner.entries.into_iter().map(|f| format!("{name}/{f}"));
            foreign.entries.extend(inside);
            continue;
        }
        // An empty folder holds nothing to lose (`create_dir_all` of a path through the
        // index leaves them).
        let empty_dir = fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
        if !(keep.contains(&name)
            || is_writers_name(&name)
            || is_first_segments_leftover(dir, &name)
            || empty_dir)
        {
            foreign.entries.push(name);
        }
    }
    foreign.entries.sort();
    foreign.unreadable_manifest = unreadable;
    Ok(foreign)
}

/// Whether `name` is one bsa's writers give an entry of the index directory: a segment
/// (`seg-` and six or more digits), a deletes or bridge file (`deletes-SEG-gN.bin`,
/// `bridge-SEG-from-SEG-gN.bin`), or a temporary one of these or of the manifest
/// (`.NAME.tmp-...`). Names of the single-segment format's files are not among them: after
/// the first change they are removed only as what they are, bsa's files by their first bytes
/// ([`is_first_segments_leftover`]).
pub(crate) fn is_writers_name(name: &str) -> bool {
    if let Some((base, _)) = name.strip_prefix('.').and_then(|t| t.split_once(".tmp-")) {
        return base == MANIFEST_FILE || is_writers_name(base);
    }
    let generation = |s: &str| s.strip_prefix('g').is_some_and(digits);
    if let Some(rest) = name
        .strip_prefix("deletes-")
        .and_then(|r| r.strip_suffix(".bin"))
    {
        return rest
            .rsplit_once('-')
            .is_some_and(|(seg, g)| is_segment(seg) && generation(g));
    }
    if let Some(rest) = name
        .strip_prefix("bridge-")
        .and_then(|r| r.strip_suffix(".bin"))
    {
        return rest.rsplit_once('-').is_some_and(|(pair, g)| {
            generation(g)
                && pair
                    .split_once("-from-")
                    .is_some_and(|(a, b)| is_segment(a) && is_segment(b))
        });
    }
    is_segment(name)
}

/// The generation a deletes or bridge file was written at, from its name (`...-gN.bin`).
fn file_generation(name: &str) -> Option<u64> {
    let (_, g) = name.strip_suffix(".bin")?.rsplit_once("-g")?;
    is_writers_name(name).then(|| g.parse().ok()).flatten()
}

/// `seg-` and six or more digits ([`segment_name`]).
fn is_segment(name: &str) -> bool {
    name.strip_prefix("seg-")
        .is_some_and(|d| d.len() >= 6 && digits(d))
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether the entry `name` of the index directory `dir` is a file of the single-segment
/// format of bsa's, by its name and its first bytes: at a segmented index's root, one the
/// first change left behind (killed between its commit and its clean-up); anywhere, one bsa
/// wrote ([`foreign_entries`]). By bsa's magic (or hnsw_rs's tags) at its start, a user's
/// `vectors.bin` of numpy values is not one. The segment a leftover moved into may be merged
/// away by then, so the name and the bytes are all there is to go by.
pub(crate) fn is_first_segments_leftover(dir: &Path, name: &str) -> bool {
    const SINGLE_SEGMENT_FILES: [&str; 8] = [
        "codes.bin",
        "ids.bin",
        "vectors.bin",
        "norms.bin",
        "inverted.bin",
        "sparse.bin",
        "bitmaps.bin",
        "graph.bin",
    ];
    if name == "hnsw.hnsw.graph" || name == "hnsw.hnsw.data" {
        return crate::hnsw::is_dump_file(&dir.join(name));
    }
    SINGLE_SEGMENT_FILES.contains(&name) && crate::files::starts_with(&dir.join(name), b"BSA\0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_names_are_only_bsas_own() {
        for ours in [
            "seg-000012",
            ".seg-000012.tmp-77",
            ".seg-000012.tmp-77-1",
            ".manifest.json.tmp-9",
            "deletes-seg-000001-g4.bin",
            ".deletes-seg-000001-g4.bin.tmp-9",
            "bridge-seg-000002-from-seg-000000-g5.bin",
            "seg-1234567",
        ] {
            assert!(is_writers_name(ours), "{ours}");
        }
        for theirs in [
            "seg-backup",
            "seg-",
            "seg-2024",
            "deletes-old.bin",
            "bridge-notes.bin",
            "deletes-seg-000001.bin",
            "codes.bin",
            "vectors.bin",
            "notes.txt",
            "mydata.npy",
            ".hidden",
            ".notes.tmp-1",
            "deletes.txt",
            "manifest.json.bak",
            "model.safetensors",
            "LOCK",
        ] {
            assert!(!is_writers_name(theirs), "{theirs}");
        }
    }

    #[test]
    fn deletes_round_trip_and_refuse_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = RowSet::empty(130);
        for r in [0, 63, 64, 129] {
            set.insert(r);
        }
        let info = write_deletes(dir.path(), "d.bin", &set).unwrap();
        let entry = DeletesEntry {
            file: "d.bin".into(),
            deleted: 4,
            info,
        };
        assert_eq!(read_deletes(dir.path(), &entry, 130).unwrap(), set);
        // Another segment size, another count, a flipped byte: each is refused, naming the file.
        assert!(read_deletes(dir.path(), &entry, 100).is_err());
        let wrong = DeletesEntry {
            deleted: 3,
            ..entry.clone()
        };
        assert!(read_deletes(dir.path(), &wrong, 130).is_err());
        let p = dir.path().join("d.bin");
        let mut b = fs::read(&p).unwrap();
        b[HEADER_LEN] ^= 2;
        fs::write(&p, &b).unwrap();
        let e = read_deletes(dir.path(), &entry, 130).unwrap_err();
        assert!(matches!(e, Error::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("d.bin"), "{e}");
    }

    #[test]
    fn bridges_round_trip_and_refuse_damage() {
        let dir = tempfile::tempdir().unwrap();
        let edges = [(0, 5), (0, 9), (7, 1), (99, 0)];
        let info = write_bridge(dir.path(), "b.bin", &edges).unwrap();
        let entry = BridgeEntry {
            file: "b.bin".into(),
            to: "seg-000000".into(),
            edges: 4,
            info,
        };
        assert_eq!(read_bridge(dir.path(), &entry, 10, 100).unwrap(), edges);
        // A node or row out of range, another count, unsorted edges, a flipped byte: each is
        // refused, naming the file.
        for (rows, nodes) in [(9, 100), (10, 99)] {
            let e = read_bridge(dir.path(), &entry, rows, nodes).unwrap_err();
            assert!(e.to_string().contains("b.bin"), "{e}");
        }
        let wrong = BridgeEntry {
            edges: 3,
            ..entry.clone()
        };
        assert!(read_bridge(dir.path(), &wrong, 10, 100).is_err());
        let info = write_bridge(dir.path(), "u.bin", &[(7, 1), (0, 5)]).unwrap();
        let unsorted = BridgeEntry {
            file: "u.bin".into(),
            edges: 2,
            info,
            ..entry.clone()
        };
        let e = read_bridge(dir.path(), &unsorted, 10, 100).unwrap_err();
        assert!(e.to_string().contains("not sorted"), "{e}");
        let p = dir.path().join("b.bin");
        let mut b = fs::read(&p).unwrap();
        b[HEADER_LEN + 3] ^= 1;
        fs::write(&p, &b).unwrap();
        let e = read_bridge(dir.path(), &entry, 10, 100).unwrap_err();
        assert!(matches!(e, Error::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("b.bin"), "{e}");
    }

    #[test]
    fn manifest_round_trips_and_detects_edits() {
        let m = LiveManifest {
            bsa_index_version: "x".into(),
            generation: 3,
            bits: 70,
            words_per_code: 2,
            incompat_features: vec!["deletes".into()],
            next_id: 10,
            next_segment: 2,
            segments: vec![SegmentEntry {
                name: segment_name(1),
                rows: 5,
                deletes: None,
                bridge: None,
            }],
            model: None,
            template: Template::default(),
            extra: serde_json::json!({"a": 1}),
        };
        let b = m.to_bytes().unwrap();
        let p = Path::new("manifest.json");
        assert_eq!(LiveManifest::from_bytes(&b, p).unwrap(), m);
        let edited = String::from_utf8(b)
            .unwrap()
            .replace("\"rows\": 5", "\"rows\": 6");
        assert!(matches!(
            LiveManifest::from_bytes(edited.as_bytes(), p),
            Err(Error::Checksum { .. })
        ));
        // Sealed with a valid checksum, a deletes file from a later generation is refused: the
        // next change would write its own under that name.
        let mut back = m.clone();
        back.segments[0].deletes = Some(DeletesEntry {
            file: deletes_name(&segment_name(1), 4),
            deleted: 1,
            info: FileInfo { len: 64, crc32: 0 },
        });
        let e = LiveManifest::from_bytes(&back.to_bytes().unwrap(), p).unwrap_err();
        assert!(
            e.to_string()
                .contains("written at generation 4, but is generation 3"),
            "{e}"
        );
        back.generation = 4;
        assert_eq!(
            LiveManifest::from_bytes(&back.to_bytes().unwrap(), p).unwrap(),
            back
        );
        // Sealed with a valid checksum, counters no writer could add one to are refused.
        let mut far = m.clone();
        far.generation = u64::MAX;
        let e = LiveManifest::from_bytes(&far.to_bytes().unwrap(), p).unwrap_err();
        assert!(
            e.to_string().contains("beyond any number of commits"),
            "{e}"
        );
    }

    /// Graph mode walks the largest segment and bridges lead from it: of equal segments, the
    /// first listed, so that a tie picks the same segment in every process and an add of an
    /// equal segment does not move the walk (and make every bridge stale).
    #[test]
    fn the_largest_segment_is_the_first_of_equals() {
        assert_eq!(largest_segment([3, 5, 5, 2]), Some(1));
        assert_eq!(largest_segment([4, 4]), Some(0));
        assert_eq!(largest_segment([]), None);
    }

    /// Each check of a segment's entry, on a manifest resealed with a valid checksum (so only
    /// the check itself can refuse it): a segment listed twice (its rows would be searched
    /// twice, its ids live twice), a segment of 0 rows, one bridged from itself, and a deletes
    /// count of 0 or above the segment's rows (the count `rows - deleted` of live rows would be
    /// wrong or wrap). No other test edits these fields, so dropping any of the checks passed.
    #[test]
    fn manifest_refuses_each_bad_segment_entry() {
        let seg = |k: u64, rows: u64| SegmentEntry {
            name: segment_name(k),
            rows,
            deletes: None,
            bridge: None,
        };
        let good = LiveManifest {
            bsa_index_version: "x".into(),
            generation: 3,
            bits: 64,
            words_per_code: 1,
            incompat_features: vec![],
            next_id: 10,
            next_segment: 3,
            segments: vec![seg(1, 5), seg(2, 4)],
            model: None,
            template: Template::default(),
            extra: serde_json::Value::Null,
        };
        let p = Path::new("manifest.json");
        let refused = |edit: &dyn Fn(&mut LiveManifest)| {
            let mut m = good.clone();
            edit(&mut m);
            let e = LiveManifest::from_bytes(&m.to_bytes().unwrap(), p).unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
            e.to_string()
        };
        let deletes = |deleted: u64| DeletesEntry {
            file: deletes_name(&segment_name(1), 3),
            deleted,
            info: FileInfo { len: 64, crc32: 0 },
        };
        // The edits below are refused for what they change: the same manifest with sound
        // values reads back.
        let mut sound = good.clone();
        sound.segments[0].deletes = Some(deletes(5));
        sound.segments[1].bridge = Some(BridgeEntry {
            file: bridge_name(&segment_name(2), &segment_name(1), 3),
            to: segment_name(1),
            edges: 4,
            info: FileInfo { len: 64, crc32: 0 },
        });
        assert_eq!(
            LiveManifest::from_bytes(&sound.to_bytes().unwrap(), p).unwrap(),
            sound
        );

        let e = refused(&|m| m.segments[1].name = segment_name(1));
        assert!(e.contains("segment \"seg-000001\" is listed twice"), "{e}");
        let e = refused(&|m| m.segments[1].rows = 0);
        assert!(e.contains("segment \"seg-000002\" has 0 rows"), "{e}");
        let e = refused(&|m| {
            m.segments[1].bridge = Some(BridgeEntry {
                file: bridge_name(&segment_name(2), &segment_name(2), 3),
                to: segment_name(2),
                edges: 1,
                info: FileInfo { len: 64, crc32: 0 },
            })
        });
        assert!(e.contains("is bridged from itself"), "{e}");
        let e = refused(&|m| m.segments[0].deletes = Some(deletes(0)));
        assert!(e.contains("0 deleted of 5 rows"), "{e}");
        let e = refused(&|m| m.segments[0].deletes = Some(deletes(6)));
        assert!(e.contains("6 deleted of 5 rows"), "{e}");
    }
}
