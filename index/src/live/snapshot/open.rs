//! The [`Snapshot`] type and how it is opened: the root manifest read (either format), every
//! segment opened or shared with an older snapshot, and checked against what the manifest
//! says of it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};
use crate::files::verify_plain_file;
use crate::index::{Index, OpenOptions};
use crate::live::meta::{
    GraphSource, GraphTemplate, LiveManifest, Template, read_bridge, read_deletes,
    read_manifest_bytes,
};
use crate::manifest::{MANIFEST_FILE, Manifest, SEGMENTED_FORMAT_VERSION, manifest_version};

use super::segment::{Bridges, SegmentReader, UnreadBridge};

/// The segments of an index directory as one generation of its manifest listed them: searched
/// as one index, ids unique over the live rows, deleted rows never returned.
///
/// A snapshot maps its segments' files; writers never change a published file and remove old
/// ones only after committing a new manifest, so a snapshot stays consistent while the index is
/// added to, deleted from or compacted (its mapped files outlive their removal). Open a new
/// snapshot to see the changes. Both formats open: a single-segment index directory (format v1,
/// `bsa build`) is a snapshot of one segment.
///
/// Hits of a snapshot search carry *global* rows: segment `s`'s row `r` is
/// `segments()[s].base() + r`. Ties between equal distances or scores fall to the smaller id
/// (segments store rows in id order, see [`IndexBuilder::build`](crate::IndexBuilder::build)).
///
/// ```
/// use bsa_index::live::{IdFilter, SearchOptions, Snapshot, Writer, NewRows};
/// use bsa_index::{IndexBuilder, Mode, Score};
/// # fn main() -> bsa_index::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("idx");
/// IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
/// let mut w = Writer::open(&path)?;
/// w.add(&NewRows::codes(&[0b0001]).ids(&[7]), false)?; // a second segment
/// w.delete(&[0])?;
/// let snap = Snapshot::open(&path)?;
/// let flat = Mode::parse("flat")?;
/// let (hits, _) = snap.search(&[0b0001], 2, &Score::Hamming, &flat, &SearchOptions::default())?;
/// assert_eq!(hits[0].ids, vec![7, 1]); // id 0 is deleted
/// let only = SearchOptions::default().with_filter(Some(IdFilter::Allow(&[2])));
/// let (hits, _) = snap.search(&[0b0001], 2, &Score::Hamming, &flat, &only)?;
/// assert_eq!((hits[0].ids.clone(), hits[0].distances.clone()), (vec![2], vec![2]));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Snapshot {
    pub(super) dir: PathBuf,
    pub(super) generation: u64,
    pub(super) segmented: bool,
    pub(super) bits: usize,
    pub(super) segments: Vec<SegmentReader>,
    pub(super) model: Option<PathBuf>,
    /// Length and CRC of the root model file (segmented indexes; a v1 segment checks its own).
    pub(super) model_info: Option<crate::manifest::FileInfo>,
    pub(super) template: Template,
    pub(super) next_id: u64,
    pub(super) extra: serde_json::Value,
    /// The bridges into the largest segment's graph, put together at the first graph search.
    pub(super) bridges: OnceLock<Option<Bridges>>,
    /// The model for float queries, read at the first [`Snapshot::query_model`] and kept (with
    /// what its products derive), shared by [`Snapshot::reopen`] while the model file is the
    /// same: a server reads it once, and an old snapshot keeps its codes' model after a rebuild.
    #[cfg(feature = "float-queries")]
    pub(super) query_model: OnceLock<Arc<crate::model::QueryModel>>,
    /// The root `manifest.json` as read, and every other file of the generation (relative).
    pub(super) manifest_bytes: Vec<u8>,
    pub(super) files: Vec<String>,
}

/// `e`, from opening segment `name` at `seg_dir`, said as damage when the segment's manifest
/// claims the segmented format: a segment is a single-segment index (format v1), and the
/// single-segment reader's advice (open it as a snapshot) would lead nowhere.
fn segment_error(e: Error, name: &str, seg_dir: &Path) -> Error {
    let Error::InvalidArgument(_) = e else {
        return e;
    };
    let read = read_manifest_bytes(seg_dir).ok();
    let version =
        read.and_then(|(path, bytes)| Some((manifest_version(&bytes, &path).ok()?, path)));
    match version {
        Some((SEGMENTED_FORMAT_VERSION, path)) if name != "." => Error::corrupt(
            path,
            format!(
                "segment {name}'s manifest says format v{SEGMENTED_FORMAT_VERSION} (a segmented \
                 index), but a segment is a single-segment index (format v1): the segment is \
                 damaged, or another index's folder was put in its place"
            ),
        ),
        _ => e,
    }
}

/// The template a single-segment index implies for segments added to it.
pub(crate) fn template_of(m: &Manifest) -> Template {
    Template {
        vectors: m.vectors,
        norms: m.norms.is_some(),
        inverted: m.inverted.is_some(),
        graph: match (&m.graph, &m.hnsw) {
            (Some(g), _) => Some(GraphTemplate {
                params: g.params,
                on: GraphSource::Vectors { dim: g.dim },
            }),
            (None, Some(h)) => Some(GraphTemplate {
                params: h.params,
                on: GraphSource::Codes,
            }),
            (None, None) => None,
        },
    }
}

impl Snapshot {
    /// Opens the index directory `dir` (either format), verifying the checksums of every file
    /// it maps and of its model. Graphs are checked at their first search, or now with
    /// [`load_graphs`](Self::load_graphs) (a server's warm-up: an index whose graph is damaged
    /// or gone still answers the exact modes).
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let built = Snapshot::open(&path)?; // as `bsa build` wrote it: one segment
    /// assert!(!built.is_segmented() && built.len() == 2);
    /// Writer::open(&path)?.add(&NewRows::codes(&[3]), false)?;
    /// let grown = Snapshot::open(&path)?; // segments
    /// assert!(grown.is_segmented() && grown.len() == 3);
    /// assert!(Snapshot::open(dir.path()).is_err()); // no index there
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn open(dir: impl AsRef<Path>) -> Result<Snapshot> {
        Self::open_with(dir, OpenOptions::default())
    }

    /// Opens `dir` with explicit options. If a writer commits while this reads (and removes
    /// files of the generation read), the manifest is read again.
    ///
    /// ```
    /// use bsa_index::{live::Snapshot, IndexBuilder, OpenOptions};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// // O(1) checks per file now; the checksums later.
    /// let snap = Snapshot::open_with(&path, OpenOptions::verify_checksums(false))?;
    /// assert_eq!(snap.len(), 2);
    /// snap.verify_checksums()?;
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn open_with(dir: impl AsRef<Path>, options: OpenOptions) -> Result<Snapshot> {
        Self::open_reusing(dir.as_ref(), options, &[])
    }

    /// The index's current generation if a writer has committed since this snapshot was
    /// opened (`None` if this snapshot is current): what a server that follows a changing
    /// index calls between queries. The segments both generations list are not opened again:
    /// the new snapshot shares their maps, their loaded graphs and their scan layouts with this
    /// one, so the first searches after a small change do not pay to build them again, and
    /// only new segments are checked (with `options`). A directory replaced by another index
    /// (`bsa build --force`) is opened whole: a segment is shared only while its directory and
    /// files are the ones this snapshot opened (by inode numbers: on a network file system,
    /// whose server may reuse them for another host's files, open the index afresh instead).
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// use bsa_index::OpenOptions;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let mut w = Writer::open(&path)?;
    /// w.add(&NewRows::codes(&[3]), false)?;
    /// let mut snap = Snapshot::open(&path)?;
    /// assert!(snap.reopen(OpenOptions::default())?.is_none()); // nothing new
    /// w.add(&NewRows::codes(&[4]), false)?;
    /// let next = snap.reopen(OpenOptions::default())?.expect("a new generation");
    /// assert_eq!((next.len(), next.segments().len()), (4, 3));
    /// // The first two segments are the ones `snap` opened, not opened again.
    /// let same = |a: &Snapshot, b: &Snapshot, s: usize| {
    ///     std::ptr::eq(a.segments()[s].index(), b.segments()[s].index())
    /// };
    /// assert!(same(&snap, &next, 0) && same(&snap, &next, 1));
    /// snap = next;
    /// assert!(snap.is_current()?);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn reopen(&self, options: OpenOptions) -> Result<Option<Snapshot>> {
        if self.is_current()? {
            return Ok(None);
        }
        let kept = self.kept_segments(|_| true);
        let fresh = Self::open_reusing(&self.dir, options, &kept)?;
        // The same model file (length and CRC): its model, read and derived, goes on.
        #[cfg(feature = "float-queries")]
        if let Some(m) = self
            .query_model
            .get()
            .filter(|_| fresh.model_info == self.model_info)
        {
            let _ = fresh.query_model.set(Arc::clone(m));
        }
        Ok(Some(fresh))
    }

    /// This snapshot's segments that `keep` names, to share with a later generation.
    pub(crate) fn kept_segments(&self, keep: impl Fn(&str) -> bool) -> Vec<(String, Arc<Index>)> {
        let kept = self.segments.iter().filter(|r| keep(&r.name));
        kept.map(|r| (r.name.clone(), Arc::clone(&r.index)))
            .collect()
    }

    /// [`open_with`](Self::open_with), sharing the segments of `kept` (name, opened index) that
    /// the manifest lists and whose files are still the ones mapped.
    pub(crate) fn open_reusing(
        dir: &Path,
        options: OpenOptions,
        kept: &[(String, Arc<Index>)],
    ) -> Result<Snapshot> {
        crate::builder::check_not_nested(dir)?;
        let mut attempts = 0;
        loop {
            let (path, bytes) = read_manifest_bytes(dir)?;
            match Self::open_bytes(dir, &path, &bytes, options, kept) {
                // A graph or bridge file is opened quietly (an index whose graph is gone still
                // scans): one missing because a writer committed meanwhile and removed it is of
                // a generation already gone, so the current one is opened instead.
                Ok(s) if attempts < 16 && s.segments.iter().any(SegmentReader::missed_a_file) => {
                    attempts += 1;
                    if read_manifest_bytes(dir).is_ok_and(|(_, now)| now == bytes) {
                        return Ok(s);
                    }
                }
                Ok(s) => return Ok(s),
                Err(e) => {
                    attempts += 1;
                    let now = read_manifest_bytes(dir).map(|(_, b)| b).ok();
                    if attempts >= 16 || now.as_deref() == Some(&bytes[..]) {
                        return Err(e);
                    }
                }
            }
        }
    }

    fn open_bytes(
        dir: &Path,
        path: &Path,
        bytes: &[u8],
        options: OpenOptions,
        kept: &[(String, Arc<Index>)],
    ) -> Result<Snapshot> {
        // A segment of `kept` of that name whose files are still in place, or the segment opened.
        let open = |name: &str, seg_dir: &Path| -> Result<Arc<Index>> {
            let same = kept.iter().find(|(n, i)| n == name && i.is_at(seg_dir));
            match same {
                Some((_, index)) => Ok(Arc::clone(index)),
                None => Index::open_with(seg_dir, options)
                    .map(Arc::new)
                    .map_err(|e| segment_error(e, name, seg_dir)),
            }
        };
        if manifest_version(bytes, path)? != SEGMENTED_FORMAT_VERSION {
            let index = open(".", dir)?;
            let m = index.manifest();
            // Saturating, as a writer's `next_id` is: an index holding id u64::MAX has no id
            // after it, and an add without ids is refused (`Writer::add`).
            let next_id = index.ids().iter().max().map_or(0, |&m| m.saturating_add(1));
            return Ok(Snapshot {
                dir: dir.to_path_buf(),
                generation: 0,
                segmented: false,
                bits: index.bits(),
                model: index.model_path(),
                model_info: m
                    .model
                    .as_ref()
                    .and_then(|mo| m.files.get(&mo.file).copied()),
                template: template_of(m),
                extra: m.extra.clone(),
                next_id,
                files: m.files.keys().cloned().collect(),
                manifest_bytes: bytes.to_vec(),
                segments: vec![SegmentReader::new(".".into(), index, None, 0)],
                bridges: OnceLock::new(),
                #[cfg(feature = "float-queries")]
                query_model: OnceLock::new(),
            });
        }
        let m = LiveManifest::from_bytes(bytes, path)?;
        let mut segments = Vec::with_capacity(m.segments.len());
        let mut files = Vec::new();
        let mut base = 0u64;
        for s in &m.segments {
            let seg_dir = dir.join(&s.name);
            // (A folder behind a symbolic-link loop is not missing: its open says what it is.)
            if matches!(seg_dir.try_exists(), Ok(false)) {
                // Said as the root manifest's, not as "no such index" (the usual causes: a
                // copy of the index that stopped half-way, or another index's manifest).
                return Err(Error::corrupt(
                    path,
                    format!(
                        "lists segment {}, which is missing: the directory is an incomplete \
                         copy, or this manifest is another index's",
                        seg_dir.display()
                    ),
                ));
            }
            let index = open(&s.name, &seg_dir)?;
            let in_segment = index.manifest().files.keys().map(String::as_str);
            for f in in_segment.chain([MANIFEST_FILE]) {
                files.push(format!("{}/{f}", s.name));
            }
            files.extend(s.deletes.iter().map(|d| d.file.clone()));
            files.extend(s.bridge.iter().map(|b| b.file.clone()));
            if index.len() as u64 != s.rows || index.bits() != m.bits as usize {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "segment {} holds {} codes of {} bits but the manifest says {} of {}",
                        seg_dir.display(),
                        index.len(),
                        index.bits(),
                        s.rows,
                        m.bits
                    ),
                ));
            }
            // Searches and writers take the template as what every segment holds.
            let holds = template_of(index.manifest());
            if holds != m.template {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "segment {} holds {} but the manifest says every segment holds {}",
                        seg_dir.display(),
                        holds.parts(),
                        m.template.parts()
                    ),
                ));
            }
            let deleted = match &s.deletes {
                Some(d) => Some(read_deletes(dir, d, s.rows as usize)?),
                None => None,
            };
            let mut reader = SegmentReader::new(s.name.clone(), index, deleted, base);
            // A bridge from a segment not listed is ignored (writers drop such entries).
            let from = s.bridge.as_ref().and_then(|b| {
                let to = m.segments.iter().find(|t| t.name == b.to)?;
                Some((b, to.rows as usize))
            });
            if let Some((b, nodes)) = from {
                // Not a reason to refuse the index: its exact modes do not read bridges.
                let rows = s.rows as usize;
                let edges = read_bridge(dir, b, rows, nodes).map_err(|_| UnreadBridge {
                    dir: dir.to_path_buf(),
                    entry: b.clone(),
                    rows,
                    nodes,
                });
                reader.bridge = Some((b.to.clone(), edges));
            }
            segments.push(reader);
            base += s.rows;
        }
        if let (Some(mo), true) = (&m.model, options.verify_checksums) {
            verify_plain_file(&dir.join(&mo.file), &mo.info)?;
        }
        Ok(Snapshot {
            dir: dir.to_path_buf(),
            generation: m.generation,
            segmented: true,
            bits: m.bits as usize,
            model: m.model.as_ref().map(|mo| dir.join(&mo.file)),
            model_info: m.model.as_ref().map(|mo| mo.info),
            template: m.template.clone(),
            extra: m.extra.clone(),
            next_id: m.next_id,
            segments,
            bridges: OnceLock::new(),
            #[cfg(feature = "float-queries")]
            query_model: OnceLock::new(),
            files: files
                .into_iter()
                .chain(m.model.iter().map(|mo| mo.file.clone()))
                .collect(),
            manifest_bytes: bytes.to_vec(),
        })
    }
}
