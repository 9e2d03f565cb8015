//! [`IndexBuilder`]: writes an index directory.
//!
//! Everything is written into a temporary directory beside the target (`.NAME.tmp-<pid>-<n>`,
//! `n` random, held locked while it is filled), checksummed while writing, fsync'd, and only then renamed to the target name, with the manifest
//! written last: a crash never leaves a half-written index under the real name.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::error::{Error, Result};
use crate::files::{ChunkWriter, LockWait, WaitLimits, crc_of_file, file_crc, sync_dir, sync_file};
use crate::format::{ElemKind, FORMAT_VERSION, FileKind, HEADER_LEN, Header, flags};
use crate::graph::{GRAPH_FILE, write_graph_file};
use crate::graph_build::{self, BuildParams, GraphVectors, UnitVectors};
use crate::hnsw::{HNSW_BASENAME, build_and_dump};
use crate::manifest::{
    BitmapsInfo, BuildInfo, FileInfo, GraphInfo, GraphMetric, HnswInfo, HnswParams, InvertedInfo,
    MANIFEST_FILE, Manifest, ModelInfo, NormsInfo, Segment, SparseInfo, VectorDtype, VectorsInfo,
};
use crate::pack::{check_high_bits_zero, words_per_code};
use crate::postings::InvertedLists;

/// Rows written between progress reports.
const ROWS_PER_STEP: usize = 1 << 16;

type Progress<'a> = Box<dyn FnMut(u64, u64) + 'a>;

/// Where `vectors.bin`'s rows come from.
#[derive(Clone, Copy)]
enum VectorSource<'a> {
    /// `n * dim` floats, row-major, written as the index's element type.
    Floats(&'a [f32]),
    /// Rows already stored as the index's element type, copied byte for byte.
    Stored(&'a dyn StoredRows),
}

/// Rows of vectors as another index stores them: what a live index's merge copies from its
/// segments, a row at a time, instead of gathering them all as floats first (at 1M 384-d rows,
/// 1.5 GB) and converting them back.
pub(crate) trait StoredRows {
    /// Rows.
    fn rows(&self) -> usize;
    /// Their element type.
    fn dtype(&self) -> VectorDtype;
    /// Appends row `r`'s elements, little-endian, to `out`.
    fn append_bytes(&self, r: usize, out: &mut Vec<u8>);
}

/// The vectors of a graph on floats: rows to be made unit length, or made so already.
enum GraphSource<'a> {
    Rows(&'a [f32], usize),
    Unit(GraphVectors),
}

/// Builds an index directory from packed codes and optional ids, vectors, HNSW graph and model.
///
/// ```no_run
/// # fn main() -> bsa_index::Result<()> {
/// use bsa_index::{HnswParams, IndexBuilder, VectorDtype};
/// let bits = 256;
/// let codes: Vec<u64> = vec![0; 1000 * 4]; // 1000 codes of 4 words
/// let vectors: Vec<f32> = vec![0.5; 1000 * 384];
/// IndexBuilder::new(bits, &codes)
///     .vectors(&vectors, 384)
///     .vector_dtype(VectorDtype::F16)
///     .hnsw(HnswParams::default())
///     .model_file("model.safetensors")
///     .extra(serde_json::json!({"encoder": "bsa"}))
///     .progress(|done, total| eprintln!("{done}/{total}"))
///     .build("my-index")?;
/// # Ok(()) }
/// ```
pub struct IndexBuilder<'a> {
    bits: usize,
    codes: &'a [u64],
    ids: Option<&'a [u64]>,
    vectors: Option<(VectorSource<'a>, usize)>,
    /// The order `vectors.bin` takes the rows of `vectors` in (ids out of order, sorted by
    /// [`build`](Self::build)): written row by row, with no permuted copy of them.
    vector_order: Option<&'a [usize]>,
    dtype: VectorDtype,
    hnsw: Option<HnswParams>,
    graph_vectors: Option<GraphSource<'a>>,
    inverted: bool,
    sparse: Option<bool>,
    bitmaps: Option<bool>,
    norms: Option<&'a [f32]>,
    model: Option<PathBuf>,
    extra: serde_json::Value,
    overwrite: bool,
    progress: Option<Progress<'a>>,
    on_wait: Option<Box<dyn FnOnce() + 'a>>,
    stop: Option<&'a AtomicBool>,
    lock_timeout: Option<std::time::Duration>,
    /// A segment a live index's writer builds inside its own directory (which its manifest
    /// will name): the one index path that may lie inside an index.
    segment: bool,
}

impl std::fmt::Debug for IndexBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexBuilder")
            .field("bits", &self.bits)
            .field("codes_words", &self.codes.len())
            .field("ids", &self.ids.map(<[u64]>::len))
            .field("vectors", &self.vectors.map(|(v, d)| (v.rows(d), d)))
            .field("dtype", &self.dtype)
            .field("hnsw", &self.hnsw)
            .field("inverted", &self.inverted)
            .field("sparse", &self.sparse)
            .field("bitmaps", &self.bitmaps)
            .field("norms", &self.norms.map(<[f32]>::len))
            .field("model", &self.model)
            .field("overwrite", &self.overwrite)
            .field("on_wait", &self.on_wait.is_some())
            .field("stop", &self.stop)
            .finish()
    }
}

/// Writes `dir/name`, a file of `kind` with a payload (inverted.bin, bitmaps.bin, sparse.bin):
/// a header for `n` codes of `bits` bits, then the payload `write` streams into the closure it
/// is given (returning its length).
fn payload_file(
    dir: &Path,
    name: &str,
    kind: FileKind,
    (n, bits): (usize, usize),
    write: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<u64>,
) -> Result<FileInfo> {
    let mut header = Header::new(kind, 0, n as u64, bits as u32, 0, ElemKind::U64)?;
    let mut sw = SectionWriter::create(dir.join(name))?;
    header.payload_len = write(&mut |b| sw.write(b))?;
    sw.finish(header)
}

/// What the steps of [`IndexBuilder::write`] share, one step a file: the staging folder they
/// fill, the number of rows, the files written so far (the manifest's `files`: lengths and
/// checksums) and the build's progress.
struct Staging<'d, 'a> {
    dir: &'d Path,
    n: usize,
    files: BTreeMap<String, FileInfo>,
    steps: Steps<'a>,
}

/// A build's progress in work units (see [`IndexBuilder::progress`]) and its stop flag:
/// every progress report is also where a stop is noticed.
struct Steps<'a> {
    progress: Option<Progress<'a>>,
    stop: Option<&'a AtomicBool>,
    /// Units done by the steps finished so far.
    done: u64,
    total: u64,
}

impl Steps<'_> {
    /// Counts `rows` more units done and reports them.
    fn advance(&mut self, rows: usize) -> Result<()> {
        self.done += rows as u64;
        self.report(self.done)
    }

    /// Reports `done` units of `total`, then returns `Err(Stopped)` if the stop flag is set.
    fn report(&mut self, done: u64) -> Result<()> {
        if let Some(p) = self.progress.as_mut() {
            p(done, self.total);
        }
        crate::error::check_stop(self.stop)
    }
}

/// Writes the manifest to `dir` and syncs it (the folder is synced by the caller).
fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let mpath = dir.join(MANIFEST_FILE);
    let bytes = manifest.to_bytes()?;
    let mut f = File::create(&mpath).map_err(|e| Error::io(&mpath, e))?;
    f.write_all(&bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&mpath, e))
}

/// Writes a binary file: placeholder header, payload (checksummed while written), real header.
struct SectionWriter {
    path: PathBuf,
    out: ChunkWriter<File>,
    crc: crc32fast::Hasher,
    written: u64,
}

impl SectionWriter {
    fn create(path: PathBuf) -> Result<Self> {
        let f = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut out = ChunkWriter::new(f);
        out.write_all(&[0u8; HEADER_LEN])
            .map_err(|e| Error::io(&path, e))?;
        Ok(SectionWriter {
            path,
            out,
            crc: crc32fast::Hasher::new(),
            written: 0,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc.update(bytes);
        self.written += bytes.len() as u64;
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(&self.path, e))
    }

    fn finish(self, mut header: Header) -> Result<FileInfo> {
        let SectionWriter {
            path,
            out,
            crc,
            written,
        } = self;
        let io = |e| Error::io(&path, e);
        if written != header.payload_len {
            return Err(Error::InvalidArgument(format!(
                "{}: wrote {written} payload bytes, header says {}",
                path.display(),
                header.payload_len
            )));
        }
        header.payload_crc = crc.finalize();
        let hb = header.encode();
        let mut f = out.into_inner().map_err(io)?;
        f.seek(SeekFrom::Start(0)).map_err(io)?;
        f.write_all(&hb).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(FileInfo {
            len: HEADER_LEN as u64 + written,
            crc32: file_crc(&hb, header.payload_crc, written),
        })
    }
}

/// Removes the temporary directory unless the build succeeded.
struct TempDir {
    path: PathBuf,
    /// The folder's device and inode (Unix) once made: what [`Drop`] may remove.
    identity: Option<(u64, u64)>,
    keep: bool,
    /// The folders above `path` this build created for it: removed after it when empty (a
    /// stopped build "wrote nothing", parents included; a committed index keeps them full).
    _made: MadeDirs,
    /// The folder opened and locked (`flock`) while this build fills it, where the file system
    /// has such locks: [`build_leftovers`] does not list a folder a running build holds.
    _lock: Option<fs::File>,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Only the folder it made: a replacement that could not be undone leaves the index it
        // replaced at this path (see `put_back`). Unknown (no identity where there should be
        // one), it is left: a staging folder left over is named to the next build.
        let known = self.identity.is_some() || cfg!(not(unix));
        if !self.keep && known && crate::files::still_names(self.identity, &self.path) {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Folders a build created above its staging folder (absolute paths), removed when it is
/// dropped, deepest first, while they are empty: `remove_dir` takes only an empty folder, so a
/// folder holding the committed index, or another build's folder, stays, and so do those
/// above it. Dropped on every way out of [`Staged::new`] and with the staging folder.
#[derive(Default)]
struct MadeDirs(Vec<PathBuf>);

impl MadeDirs {
    /// Notes the folders of `dir` that do not exist, before they are made (`create_dir_all`).
    fn note_missing(&mut self, dir: &Path) {
        let missing = dir
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .take_while(|a| {
                matches!(fs::symlink_metadata(a), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
            })
            .filter_map(|a| std::path::absolute(a).ok());
        self.0.extend(missing);
        // Deepest first (a folder's path is longer than its parent's), each once.
        self.0
            .sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        self.0.dedup();
    }
}

impl Drop for MadeDirs {
    fn drop(&mut self) {
        for dir in &self.0 {
            if fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

/// `parent/.NAME.KIND-PID-N` (`KIND` `tmp` or `old`) with `N` a random number that no other
/// process picks (the pid alone repeats across PID namespaces and hosts sharing a folder).
fn unique_sibling(parent: &Path, name: &str, kind: &str) -> PathBuf {
    use std::hash::{BuildHasher, Hasher};
    // RandomState's keys are random per process (and per call after the first), mixed with
    // the time: no dependency for a name.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let n = h.finish() % 1_000_000_000_000;
    parent.join(format!(".{name}.{kind}-{}-{n}", std::process::id()))
}

/// The folder `path` opened and locked exclusively (`flock`, not waiting), or `None` where it
/// cannot be (outside Unix, a file system without locks): best effort, as it serves only to
/// tell a running build's folder from a dead one's in [`build_leftovers`].
fn lock_folder(path: &Path) -> Option<fs::File> {
    let f = fs::File::open(path).ok()?;
    f.try_lock().ok()?;
    Some(f)
}

/// Whether a running build holds the staging folder `path` locked ([`TempDir::_lock`]; in this
/// process or another). Only a real folder is opened: a pipe of that name would block the
/// open, and a link would lead elsewhere.
fn building_elsewhere(path: &Path) -> bool {
    if !fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return false;
    }
    let Ok(f) = fs::File::open(path) else {
        return false;
    };
    matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock))
}

fn sanitized_extension(p: &Path) -> String {
    p.extension()
        .and_then(|e| e.to_str())
        .filter(|e| !e.is_empty() && e.len() <= 16 && e.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(|e| format!(".{e}"))
        .unwrap_or_default()
}

impl<'a> IndexBuilder<'a> {
    /// Starts a builder for `codes`: `n * ceil(bits / 64)` packed words (see [`crate::pack`]),
    /// unused high bits zero.
    pub fn new(bits: usize, codes: &'a [u64]) -> Self {
        IndexBuilder {
            bits,
            codes,
            ids: None,
            vectors: None,
            dtype: VectorDtype::F32,
            hnsw: None,
            graph_vectors: None,
            vector_order: None,
            inverted: false,
            sparse: None,
            bitmaps: None,
            norms: None,
            model: None,
            extra: serde_json::Value::Null,
            overwrite: false,
            progress: None,
            on_wait: None,
            stop: None,
            lock_timeout: None,
            segment: false,
        }
    }

    /// Marks the build as a segment of the live index that contains it (see `segment`).
    pub(crate) fn live_segment(mut self) -> Self {
        self.segment = true;
        self
    }

    /// External ids, one per code, all distinct (default: row numbers).
    pub fn ids(mut self, ids: &'a [u64]) -> Self {
        self.ids = Some(ids);
        self
    }

    /// Float vectors (`n * dim`, row-major, finite) stored for rescoring.
    pub fn vectors(mut self, vectors: &'a [f32], dim: usize) -> Self {
        self.vectors = Some((VectorSource::Floats(vectors), dim));
        self
    }

    /// [`vectors`](Self::vectors) stored already (`dim` elements a row), in their element type,
    /// which the index takes: copied as they are.
    pub(crate) fn stored_vectors(mut self, rows: &'a dyn StoredRows, dim: usize) -> Self {
        self.vectors = Some((VectorSource::Stored(rows), dim));
        self.dtype = rows.dtype();
        self
    }

    /// Element type used to store the vectors (default `F32`; `F16` halves the size and stores
    /// each row divided by its length, which cosine rescoring does not see).
    pub fn vector_dtype(mut self, dtype: VectorDtype) -> Self {
        self.dtype = dtype;
        self
    }

    /// Also build and store an HNSW graph with these parameters: over the codes by Hamming
    /// distance (built with hnsw_rs, so it needs bsa-index's `hnsw-rs` feature, on by default;
    /// without it [`build`](Self::build) refuses before writing anything), or, with
    /// [`graph_on`](Self::graph_on), on float vectors (built natively, with or without the
    /// feature).
    pub fn hnsw(mut self, params: HnswParams) -> Self {
        self.hnsw = Some(params);
        self
    }

    /// Build the graph of [`hnsw`](Self::hnsw) on these float vectors (`n * dim`, row-major,
    /// finite), nearest by cosine similarity, instead of on the codes by Hamming distance: the
    /// graph that table scores such as decoder ADC search well (give the decoded codes, or the
    /// embeddings). It is built natively, in parallel and deterministically
    /// (`graph_build.rs`), and stored as `graph.bin`.
    pub fn graph_on(mut self, vectors: &'a [f32], dim: usize) -> Self {
        self.graph_vectors = Some(GraphSource::Rows(vectors, dim));
        self
    }

    /// [`graph_on`](Self::graph_on) with the vectors made unit length already, row chunk by
    /// chunk as the caller made them ([`GraphVectors`]): the builder then holds no second copy
    /// (a model's decoded codes were `n x dim` floats twice, 440 MB at 300k 384-d rows).
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// use bsa_index::{GraphVectors, HnswParams, IndexBuilder};
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut v = GraphVectors::new(2, 3);
    /// v.push(&[1.0, 0.0, 0.6, 0.8, 0.0, 1.0])?;
    /// let p = HnswParams { max_connections: 4, ef_construction: 8, ef_search: 8 };
    /// IndexBuilder::new(4, &[0b0001, 0b0011, 0b0010]).hnsw(p).graph_on_vectors(v)
    ///     .build(dir.path().join("idx"))?;
    /// # Ok(()) }
    /// ```
    pub fn graph_on_vectors(mut self, vectors: GraphVectors) -> Self {
        self.graph_vectors = Some(GraphSource::Unit(vectors));
        self
    }

    /// Also store posting lists per bit (`inverted.bin`) for [`Index::search_inverted`]
    /// (codes of at most 65535 bits).
    ///
    /// [`Index::search_inverted`]: crate::Index::search_inverted
    pub fn inverted(mut self, yes: bool) -> Self {
        self.inverted = yes;
        self
    }

    /// Whether to store the set bits of each code (`sparse.bin`), which table scores
    /// ([`crate::Score::Table`]) then read instead of the packed codes: `Some(true)` always
    /// (codes of at most 65535 bits), `Some(false)` never, `None` (the default) when
    /// [`crate::sparse::worth_storing`] says so (the layout is no larger than the codes).
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// use bsa_index::{Index, IndexBuilder};
    /// let dir = tempfile::tempdir().unwrap();
    /// let codes = vec![0b1011u64, 1 << 63, 0, 1]; // four 64-bit codes
    /// IndexBuilder::new(64, &codes).sparse(Some(true)).build(dir.path().join("i"))?;
    /// let index = Index::open(dir.path().join("i"))?;
    /// assert_eq!(index.sparse().unwrap().row(0), &[0, 1, 3]);
    /// # Ok(()) }
    /// ```
    pub fn sparse(mut self, store: Option<bool>) -> Self {
        self.sparse = store;
        self
    }

    /// Whether to store the posting lists also as bitmaps over rows (`bitmaps.bin`, as many
    /// bytes as the codes), which the inverted Hamming search reads for queries whose bitmap
    /// words are fewer than their postings (see [`crate::bitmaps`]): `Some(true)` always,
    /// `Some(false)` never, `None` (the default) when [`crate::bitmaps::worth_storing`] says so
    /// for a query drawn like the codes. Only with [`inverted`](Self::inverted).
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// use bsa_index::{Index, IndexBuilder};
    /// let dir = tempfile::tempdir().unwrap();
    /// let codes = vec![0b1011u64, 1 << 63, 0, 1]; // four 64-bit codes
    /// IndexBuilder::new(64, &codes)
    ///     .inverted(true)
    ///     .bitmaps(Some(true))
    ///     .build(dir.path().join("i"))?;
    /// let index = Index::open(dir.path().join("i"))?;
    /// assert_eq!(index.bitmaps()?.unwrap().column_count(0), 2);
    /// # Ok(()) }
    /// ```
    pub fn bitmaps(mut self, store: Option<bool>) -> Self {
        self.bitmaps = store;
        self
    }

    /// Store one finite, non-negative `f32` per code (`norms.bin`), the divisor of normalised
    /// table scores ([`crate::Score::Table`]).
    pub fn norms(mut self, norms: &'a [f32]) -> Self {
        self.norms = Some(norms);
        self
    }

    /// Copy this model file into the index (as `model.<ext>`), so queries can be encoded later.
    pub fn model_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.model = Some(path.into());
        self
    }

    /// Free-form JSON stored as the manifest's `extra` entry.
    pub fn extra(mut self, extra: serde_json::Value) -> Self {
        self.extra = extra;
        self
    }

    /// Replace an existing index at the output path (default: refuse). Only an index that
    /// holds nothing but bsa's files, or an empty directory, is replaced
    /// ([`check_replaceable`]).
    pub fn overwrite(mut self, yes: bool) -> Self {
        self.overwrite = yes;
        self
    }

    /// Called once, before the build waits, when the index it replaces (see
    /// [`overwrite`](Self::overwrite)) has a writer holding its lock (an add, delete or
    /// compaction): a command can say why it seems to hang.
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let codes = [1u64, 2, 3];
    /// bsa_index::IndexBuilder::new(64, &codes)
    ///     .overwrite(true)
    ///     .on_wait(|| eprintln!("waiting for another writer of idx"))
    ///     .build(dir.path().join("idx"))?;
    /// # Ok(()) }
    /// ```
    pub fn on_wait(mut self, f: impl FnOnce() + 'a) -> Self {
        self.on_wait = Some(Box::new(f));
        self
    }

    /// Waits at most `timeout` for the writers of an index it replaces (see
    /// [`overwrite`](Self::overwrite)), rather than as long as they take: past it, the build
    /// removes its temporary directory and returns [`Error::LockTimeout`], leaving `out` as
    /// it was. A zero timeout does not wait at all.
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// use std::{sync::mpsc, thread, time::Duration};
    /// use bsa_index::{live::Writer, Error, IndexBuilder};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let ((held, is_held), (release, released)) = (mpsc::channel(), mpsc::channel::<()>());
    /// let writer = thread::spawn({
    ///     let path = path.clone();
    ///     move || {
    ///         let _w = Writer::open(&path).unwrap(); // an add under way, say
    ///         held.send(()).unwrap();
    ///         released.recv().ok();
    ///     }
    /// });
    /// is_held.recv().unwrap();
    /// let rebuilt = IndexBuilder::new(64, &[3])
    ///     .overwrite(true)
    ///     .lock_timeout(Duration::from_millis(100))
    ///     .build(&path);
    /// assert!(matches!(rebuilt, Err(Error::LockTimeout { .. })));
    /// assert_eq!(bsa_index::Index::open(&path)?.len(), 2); // left as it was
    /// release.send(()).unwrap();
    /// writer.join().unwrap();
    /// # Ok(()) }
    /// ```
    pub fn lock_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.lock_timeout = Some(timeout);
        self
    }

    /// Progress callback `(done, total)` in work units (rows written per file, plus rows inserted
    /// into the HNSW graph). Called from the building thread.
    pub fn progress(mut self, f: impl FnMut(u64, u64) + 'a) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Stops the build once `stop` is set (by a Ctrl-C handler, another thread, a progress
    /// callback): it is checked at every progress step (at most 65,536 rows written, one batch
    /// of graph inserts, or the building of the posting lists, bitmaps or sparse codes apart:
    /// about a second, a few for millions of wide codes) until the index is complete, and
    /// while the build waits for the writers of an index it replaces.
    /// The build then removes its temporary directory and returns [`Error::Stopped`]; `out` is
    /// left as it was, an index it would have replaced included.
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// let dir = tempfile::tempdir().unwrap();
    /// let stop = AtomicBool::new(false);
    /// let codes = vec![7u64; 1 << 17];
    /// let built = bsa_index::IndexBuilder::new(64, &codes)
    ///     .stop_when(&stop)
    ///     .progress(|_, _| stop.store(true, Ordering::Relaxed))
    ///     .build(dir.path().join("idx"));
    /// assert!(matches!(built, Err(bsa_index::Error::Stopped)));
    /// assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    /// # Ok(()) }
    /// ```
    pub fn stop_when(mut self, stop: &'a AtomicBool) -> Self {
        self.stop = Some(stop);
        self
    }

    /// `Err(Stopped)` once the stop flag is set.
    fn check_stop(&self) -> Result<()> {
        crate::error::check_stop(self.stop)
    }

    fn validate(&self) -> Result<usize> {
        let bits = self.bits;
        if bits == 0 || bits > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "bits per code must be in 1..={}, got {bits}",
                u32::MAX
            )));
        }
        let w = words_per_code(bits);
        if !self.codes.len().is_multiple_of(w) {
            return Err(Error::DimMismatch {
                what: format!("code words (a multiple of {w} words per {bits}-bit code)"),
                expected: (self.codes.len() / w + 1) * w,
                got: self.codes.len(),
            });
        }
        let n = self.codes.len() / w;
        if n == 0 {
            return Err(Error::InvalidArgument("no codes to index".into()));
        }
        if n > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "{n} codes exceed the limit of {}",
                u32::MAX
            )));
        }
        check_high_bits_zero(self.codes, bits)?;
        if let Some(ids) = self.ids {
            if ids.len() != n {
                return Err(Error::DimMismatch {
                    what: "ids (one per code)".into(),
                    expected: n,
                    got: ids.len(),
                });
            }
            if let Err(d) = sorted_distinct_ids(ids) {
                return Err(Error::InvalidArgument(format!(
                    "id {d} appears more than once; ids must be unique"
                )));
            }
        }
        if let Some((source, dim)) = self.vectors {
            if dim == 0 || dim > u32::MAX as usize {
                return Err(Error::InvalidArgument(format!(
                    "vector dimension must be in 1..={}, got {dim}",
                    u32::MAX
                )));
            }
            let want = n
                .checked_mul(dim)
                .ok_or_else(|| Error::InvalidArgument("vectors size overflows".into()))?;
            match source {
                VectorSource::Floats(v) => {
                    if v.len() != want {
                        return Err(Error::DimMismatch {
                            what: format!("vector floats ({n} codes x dimension {dim})"),
                            expected: want,
                            got: v.len(),
                        });
                    }
                    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                        return Err(Error::InvalidArgument(format!(
                            "vector {} has a non-finite value at {}",
                            i / dim,
                            i % dim
                        )));
                    }
                }
                // Checked (sizes, checksums) when the index that stores them was opened.
                VectorSource::Stored(rows) => {
                    if rows.rows() != n || rows.dtype() != self.dtype {
                        return Err(Error::InvalidArgument(format!(
                            "{} stored {} vectors for {n} codes of {} vectors",
                            rows.rows(),
                            rows.dtype(),
                            self.dtype
                        )));
                    }
                }
            }
        }
        if let Some(h) = &self.hnsw {
            h.validate()?;
            if self.graph_vectors.is_none() {
                crate::hnsw::require_hamming_builder(
                    "an HNSW graph over the codes (IndexBuilder::hnsw without graph_on)",
                )?;
            }
        }
        if let Some(g) = &self.graph_vectors {
            if self.hnsw.is_none() {
                return Err(Error::InvalidArgument(
                    "graph vectors given but no graph asked for (set hnsw parameters)".into(),
                ));
            }
            let (floats, dim) = match g {
                GraphSource::Rows(v, dim) => (v.len(), *dim),
                GraphSource::Unit(v) => (v.len() * v.dim(), v.dim()),
            };
            if dim == 0 || floats != n * dim {
                return Err(Error::DimMismatch {
                    what: format!("graph vector floats ({n} rows x dimension {dim})"),
                    expected: n * dim,
                    got: floats,
                });
            }
            // GraphVectors::push checked its rows.
            if let GraphSource::Rows(v, dim) = g {
                graph_build::check_finite(v, *dim, 0)?;
            }
        }
        if self.inverted && bits > crate::format::MAX_INVERTED_BITS as usize {
            return Err(Error::InvalidArgument(format!(
                "an inverted index needs at most {} bits per code, got {bits}",
                crate::format::MAX_INVERTED_BITS
            )));
        }
        if self.bitmaps == Some(true) && !self.inverted {
            return Err(Error::InvalidArgument(
                "bitmap lists are searched with the posting lists: build an inverted index too"
                    .into(),
            ));
        }
        if self.sparse == Some(true) && bits > crate::format::MAX_INVERTED_BITS as usize {
            return Err(Error::InvalidArgument(format!(
                "a sparse layout needs at most {} bits per code, got {bits}",
                crate::format::MAX_INVERTED_BITS
            )));
        }
        if let Some(v) = self.norms {
            if v.len() != n {
                return Err(Error::DimMismatch {
                    what: "norms (one per code)".into(),
                    expected: n,
                    got: v.len(),
                });
            }
            if let Some(i) = v.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
                return Err(Error::InvalidArgument(format!(
                    "norm of code {i} is {}; norms must be finite and >= 0",
                    v[i]
                )));
            }
        }
        if let Some(m) = &self.model {
            let md = fs::metadata(m).map_err(|e| Error::io(m, e))?;
            if !md.is_file() {
                return Err(Error::InvalidArgument(format!(
                    "model {} is not a file",
                    m.display()
                )));
            }
        }
        Ok(n)
    }

    /// Writes the index to the directory `out` and returns its manifest.
    ///
    /// `out` must not exist unless [`overwrite`](Self::overwrite) is set; its parent is created if
    /// needed. HNSW construction runs on the current rayon pool.
    ///
    /// Rows are stored in ascending id order: ids given out of order are sorted together with
    /// their codes, vectors, graph vectors and norms. Ties between equal distances or scores,
    /// which every search breaks by the smaller row, are then broken by the smaller id, however
    /// the rows were given, and ids are found by binary search (see [`crate::live`]).
    pub fn build(mut self, out: impl AsRef<Path>) -> Result<Manifest> {
        self.validate()?;
        let Some(order) = self
            .ids
            .filter(|ids| !ids.windows(2).all(|p| p[0] < p[1]))
            .map(|ids| {
                let mut order: Vec<usize> = (0..ids.len()).collect();
                order.sort_unstable_by_key(|&r| ids[r]);
                order
            })
        else {
            return self.write(out.as_ref());
        };
        let w = words_per_code(self.bits);
        let rows = |x: &[u64]| -> Vec<u64> {
            order
                .iter()
                .flat_map(|&r| &x[r * w..(r + 1) * w])
                .copied()
                .collect()
        };
        let floats = |x: &[f32], d: usize| -> Vec<f32> {
            order
                .iter()
                .flat_map(|&r| &x[r * d..(r + 1) * d])
                .copied()
                .collect()
        };
        let codes = rows(self.codes);
        let ids: Vec<u64> = order.iter().map(|&r| self.ids.expect("ids")[r]).collect();
        let graph_vectors = match self.graph_vectors.take() {
            Some(GraphSource::Rows(v, d)) => Some(GraphSource::Unit({
                let mut g = GraphVectors::new(d, order.len());
                for &r in &order {
                    g.push(&v[r * d..(r + 1) * d])?;
                }
                g
            })),
            Some(GraphSource::Unit(mut g)) => {
                g.permute(&order);
                Some(GraphSource::Unit(g))
            }
            None => None,
        };
        let norms = self.norms.map(|v| floats(v, 1));
        IndexBuilder {
            bits: self.bits,
            codes: &codes,
            ids: Some(&ids),
            vectors: self.vectors,
            vector_order: Some(&order),
            dtype: self.dtype,
            hnsw: self.hnsw,
            graph_vectors,
            inverted: self.inverted,
            sparse: self.sparse,
            bitmaps: self.bitmaps,
            norms: norms.as_deref(),
            model: self.model.take(),
            extra: std::mem::take(&mut self.extra),
            overwrite: self.overwrite,
            progress: self.progress.take(),
            on_wait: self.on_wait.take(),
            stop: self.stop,
            lock_timeout: self.lock_timeout,
            segment: self.segment,
        }
        .write(out.as_ref())
    }

    /// Writes rows already in id order (see [`build`](Self::build)): each file into the
    /// staging folder in turn, the manifest (which names them all) last, and only then puts
    /// the folder in `out`'s place.
    fn write(mut self, out: &Path) -> Result<Manifest> {
        let n = self.validate()?;
        let staged = Staged::new(out, self.overwrite, self.segment)?;
        let tmp_path = staged.dir().to_path_buf();
        // Work units: every row once for each of codes.bin, ids.bin and vectors.bin, and once
        // more as it goes into a graph. norms.bin and the lists are not counted (see below).
        let total =
            n as u64 * (2 + u64::from(self.vectors.is_some()) + u64::from(self.hnsw.is_some()));
        let mut to = Staging {
            dir: &tmp_path,
            n,
            files: BTreeMap::new(),
            steps: Steps {
                progress: self.progress.take(),
                stop: self.stop,
                done: 0,
                total,
            },
        };

        self.write_codes(&mut to)?;
        self.write_ids(&mut to)?;
        let vectors = self.write_vectors(&mut to)?;
        let norms = self.write_norms(&mut to)?;
        // The lists and the sparse codes are each built in one go, reporting no progress: a
        // stop is checked before each instead (and between the posting lists and bitmaps).
        self.check_stop()?;
        let (inverted, bitmaps) = self.write_postings(&mut to)?;
        self.check_stop()?;
        let sparse = self.write_sparse(&mut to)?;
        let (graph, hnsw) = match (self.hnsw, self.graph_vectors.take()) {
            (Some(params), Some(source)) => (
                Some(self.write_cosine_graph(params, source, &mut to)?),
                None,
            ),
            (Some(params), None) => (None, Some(self.write_hamming_graph(params, &mut to)?)),
            _ => (None, None),
        };
        let model = self.write_model(&mut to)?;

        let w = words_per_code(self.bits);
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            bsa_index_version: env!("CARGO_PKG_VERSION").to_string(),
            n: n as u64,
            bits: self.bits as u32,
            words_per_code: w as u32,
            incompat_features: Vec::new(),
            segments: vec![Segment {
                rows: n as u64,
                codes: "codes.bin".into(),
                ids: "ids.bin".into(),
                vectors: vectors.map(|_| "vectors.bin".to_string()),
            }],
            vectors,
            hnsw,
            graph,
            model,
            inverted,
            norms,
            sparse,
            bitmaps,
            files: to.files,
            build: BuildInfo {
                ids_given: self.ids.is_some(),
                hnsw: self.hnsw,
                threads: rayon::current_num_threads(),
            },
            extra: std::mem::take(&mut self.extra),
        };
        write_manifest(&tmp_path, &manifest)?;
        sync_dir(&tmp_path)?;

        self.check_stop()?;
        let on_wait = self.on_wait.take();
        let wait = WaitLimits {
            stop: self.stop,
            timeout: self.lock_timeout,
        };
        staged.commit(|| on_wait.map_or((), |f| f()), wait)?;
        Ok(manifest)
    }

    /// codes.bin: the packed words as they are, a step of rows at a time.
    fn write_codes(&self, to: &mut Staging<'_, '_>) -> Result<()> {
        let (n, w) = (to.n, words_per_code(self.bits));
        let header = Header::new(
            FileKind::Codes,
            0,
            n as u64,
            self.bits as u32,
            w as u32,
            ElemKind::U64,
        )?;
        let mut sw = SectionWriter::create(to.dir.join("codes.bin"))?;
        for chunk in self.codes.chunks(ROWS_PER_STEP * w) {
            // Little-endian host (enforced in lib.rs): the words' memory is their on-disk form.
            sw.write(bytemuck::cast_slice(chunk))?;
            to.steps.advance(chunk.len() / w)?;
        }
        to.files.insert("codes.bin".to_string(), sw.finish(header)?);
        Ok(())
    }

    /// ids.bin: the ids given, or the row numbers (flagged [`flags::IDS_ARE_ROWS`]).
    fn write_ids(&self, to: &mut Staging<'_, '_>) -> Result<()> {
        let n = to.n;
        let id_flags = if self.ids.is_some() {
            0
        } else {
            flags::IDS_ARE_ROWS
        };
        let header = Header::new(FileKind::Ids, id_flags, n as u64, 64, 1, ElemKind::U64)?;
        let mut sw = SectionWriter::create(to.dir.join("ids.bin"))?;
        for start in (0..n).step_by(ROWS_PER_STEP) {
            let end = (start + ROWS_PER_STEP).min(n);
            for r in start..end {
                let id = self.ids.map_or(r as u64, |ids| ids[r]);
                sw.write(&id.to_le_bytes())?;
            }
            to.steps.advance(end - start)?;
        }
        to.files.insert("ids.bin".to_string(), sw.finish(header)?);
        Ok(())
    }

    /// vectors.bin, when vectors are stored: the rows in `vector_order` (when the ids were
    /// sorted), as the index's element type.
    fn write_vectors(&self, to: &mut Staging<'_, '_>) -> Result<Option<VectorsInfo>> {
        let Some((source, dim)) = self.vectors else {
            return Ok(None);
        };
        let n = to.n;
        let elem = self.dtype.elem_kind();
        let header = Header::new(FileKind::Vectors, 0, n as u64, dim as u32, dim as u32, elem)?;
        let mut sw = SectionWriter::create(to.dir.join("vectors.bin"))?;
        // A row at a time into the section's own buffer (a step's rows at once took 100 MB
        // of 384-d floats, a quarter of a 100k build's peak).
        let mut row = Vec::with_capacity(dim * 4);
        for start in (0..n).step_by(ROWS_PER_STEP) {
            let end = (start + ROWS_PER_STEP).min(n);
            for i in start..end {
                let r = self.vector_order.map_or(i, |o| o[i]);
                row.clear();
                match source {
                    VectorSource::Floats(v) => {
                        append_row_bytes(&v[r * dim..(r + 1) * dim], self.dtype, &mut row)
                    }
                    VectorSource::Stored(rows) => rows.append_bytes(r, &mut row),
                }
                sw.write(&row)?;
            }
            to.steps.advance(end - start)?;
        }
        to.files
            .insert("vectors.bin".to_string(), sw.finish(header)?);
        Ok(Some(VectorsInfo {
            dim: dim as u32,
            dtype: self.dtype,
        }))
    }

    /// norms.bin, when norms are given. Not a progress step (nor counted in the total): a
    /// float per row is written in a moment.
    fn write_norms(&self, to: &mut Staging<'_, '_>) -> Result<Option<NormsInfo>> {
        let Some(v) = self.norms else {
            return Ok(None);
        };
        let header = Header::new(FileKind::Norms, 0, to.n as u64, 1, 1, ElemKind::F32)?;
        let mut sw = SectionWriter::create(to.dir.join("norms.bin"))?;
        for chunk in v.chunks(ROWS_PER_STEP) {
            sw.write(bytemuck::cast_slice(chunk))?;
        }
        to.files.insert("norms.bin".to_string(), sw.finish(header)?);
        Ok(Some(NormsInfo {
            file: "norms.bin".into(),
        }))
    }

    /// inverted.bin, when posting lists are asked for, then bitmaps.bin when
    /// [`bitmaps`](Self::bitmaps) says so or, left to the build, when the lists' lengths say
    /// bitmaps are worth storing: one step, as that decision reads the lists, and so bitmaps
    /// (as large as the codes) are only built when they are stored.
    fn write_postings(
        &self,
        to: &mut Staging<'_, '_>,
    ) -> Result<(Option<InvertedInfo>, Option<BitmapsInfo>)> {
        let (n, bits) = (to.n, self.bits);
        let mut inverted_info = None;
        let mut store_bitmaps = false;
        if self.inverted {
            let lists = InvertedLists::build(self.codes, bits)?;
            let file = payload_file(
                to.dir,
                "inverted.bin",
                FileKind::Inverted,
                (n, bits),
                |out| lists.write_payload(out),
            )?;
            to.files.insert("inverted.bin".to_string(), file);
            inverted_info = Some(InvertedInfo {
                file: "inverted.bin".into(),
                postings: lists.postings_len() as u64,
            });
            store_bitmaps = self.bitmaps.unwrap_or_else(|| {
                let view = lists.view();
                let postings = (0..bits)
                    .map(|j| (view.list(j).len() as f64).powi(2))
                    .sum::<f64>()
                    / n.max(1) as f64;
                crate::bitmaps::worth_storing(n, lists.postings_len() as u64, postings)
            });
        }

        self.check_stop()?;
        let mut bitmaps_info = None;
        if store_bitmaps {
            let bm = crate::bitmaps::BitmapLists::build(self.codes, bits)?;
            let file = payload_file(to.dir, "bitmaps.bin", FileKind::Bitmaps, (n, bits), |out| {
                bm.write_payload(out)
            })?;
            to.files.insert("bitmaps.bin".to_string(), file);
            bitmaps_info = Some(BitmapsInfo {
                file: "bitmaps.bin".into(),
                set_bits: bm.set_bits(),
            });
        }
        Ok((inverted_info, bitmaps_info))
    }

    /// sparse.bin, when [`sparse`](Self::sparse) says so or, left to the build, when the
    /// codes are sparse enough for it to pay.
    fn write_sparse(&self, to: &mut Staging<'_, '_>) -> Result<Option<SparseInfo>> {
        let (n, bits) = (to.n, self.bits);
        let store = match self.sparse {
            Some(yes) => yes,
            None => {
                let set_bits: u64 = self.codes.iter().map(|x| u64::from(x.count_ones())).sum();
                crate::sparse::worth_storing(n, bits, set_bits)
            }
        };
        if !store {
            return Ok(None);
        }
        let sc = crate::sparse::SparseCodes::build(self.codes, bits)?;
        let file = payload_file(to.dir, "sparse.bin", FileKind::Sparse, (n, bits), |out| {
            sc.write_payload(out)
        })?;
        to.files.insert("sparse.bin".to_string(), file);
        Ok(Some(SparseInfo {
            file: "sparse.bin".into(),
            set_bits: sc.view().set_bits() as u64,
        }))
    }

    /// The graph on float vectors ([`GRAPH_FILE`], built natively, by cosine), reporting each
    /// batch of inserts.
    fn write_cosine_graph(
        &self,
        params: HnswParams,
        source: GraphSource<'_>,
        to: &mut Staging<'_, '_>,
    ) -> Result<GraphInfo> {
        let space = match source {
            GraphSource::Rows(vectors, dim) => {
                UnitVectors::normalized(vectors, dim, crate::kernel::KernelFamily::current())
            }
            GraphSource::Unit(v) => v.space,
        };
        let dim = space.dim;
        let bp = BuildParams {
            m: params.max_connections,
            ef_construction: params.ef_construction,
            seed: GRAPH_SEED,
        };
        // The graph reports its own running count of inserts: the last step, so it is added
        // to what was done before without counting it in.
        let base = to.steps.done;
        let data = graph_build::build(&space, &bp, |d| to.steps.report(base + d as u64))?;
        let payload = data.to_payload()?;
        let info = write_graph_file(&to.dir.join(GRAPH_FILE), to.n as u64, &payload)?;
        to.files.insert(GRAPH_FILE.to_string(), info);
        Ok(GraphInfo {
            file: GRAPH_FILE.to_string(),
            metric: GraphMetric::Cosine,
            dim: dim as u32,
            params,
        })
    }

    /// The graph on the codes (by Hamming distance, built and dumped by hnsw_rs): its
    /// `.hnsw.graph` and `.hnsw.data` files and the native copy it makes, reporting as
    /// [`write_cosine_graph`](Self::write_cosine_graph) does.
    fn write_hamming_graph(
        &self,
        params: HnswParams,
        to: &mut Staging<'_, '_>,
    ) -> Result<HnswInfo> {
        let w = words_per_code(self.bits);
        let dir = to.dir;
        let base = to.steps.done;
        let (basename, (native, native_info)) =
            build_and_dump(self.codes, w, &params, dir, HNSW_BASENAME, &mut |d| {
                to.steps.report(base + d)
            })?;
        to.files.insert(native.clone(), native_info);
        let info = HnswInfo {
            graph: format!("{basename}.hnsw.graph"),
            data: format!("{basename}.hnsw.data"),
            basename,
            params,
            native: Some(native),
        };
        for f in [&info.graph, &info.data] {
            let p = dir.join(f);
            sync_file(&p)?;
            to.files.insert(f.clone(), crc_of_file(&p)?);
        }
        debug_assert_eq!(info.basename, HNSW_BASENAME);
        Ok(info)
    }

    /// A copy of the model file, when one is given, as `model.<its extension>`.
    fn write_model(&self, to: &mut Staging<'_, '_>) -> Result<Option<ModelInfo>> {
        let Some(src) = &self.model else {
            return Ok(None);
        };
        let file = format!("model{}", sanitized_extension(src));
        let dst = to.dir.join(&file);
        crate::files::copy_file(src, &dst)?;
        sync_file(&dst)?;
        to.files.insert(file.clone(), crc_of_file(&dst)?);
        Ok(Some(ModelInfo {
            file,
            original_name: src
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }))
    }
}

/// An index directory being written: a temporary folder beside its destination, put in the
/// destination's place whole by [`commit`](Self::commit) and removed if dropped before (an
/// error, a stop). Every writer of a whole index goes through it (the builder, a snapshot's
/// copy), so all check their destination alike.
pub(crate) struct Staged {
    /// The destination, as [`output_target`](crate::files::output_target) resolves it.
    out: PathBuf,
    tmp: TempDir,
    /// Whether an index at `out` may be replaced: checked again at the commit, as one may
    /// have appeared meanwhile (another build of the same path).
    overwrite: bool,
}

/// Refuses `out` when something is there (a build or copy without overwriting).
fn refuse_existing(out: &Path) -> Result<()> {
    // The name, not what it leads to: a link loop or a chain of dangling links is something.
    if fs::symlink_metadata(out).is_err() {
        return Ok(());
    }
    let exists = std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "already exists; remove it, or allow replacing it (bsa build --force; overwrite=True \
         from Python)",
    );
    Err(Error::io(out, exists))
}

impl Staged {
    /// Checks that an index may be written at `out` and makes the temporary folder beside it.
    /// `out` may exist only with `overwrite`, and only as an index of bsa's files or an empty
    /// folder ([`check_replaceable`]); it must not be inside another index
    /// ([`check_outside_index`]) unless it is a `segment` of one.
    pub(crate) fn new(out: &Path, overwrite: bool, segment: bool) -> Result<Staged> {
        // A link's target is replaced, the link kept; `idx/.` is `idx` (renaming to it fails).
        let out = crate::files::output_target(out).map_err(|e| Error::io(out, e))?;
        let unusable = |why: &str| {
            Error::InvalidArgument(format!(
                "{}: not a usable directory name: {why}",
                out.display()
            ))
        };
        let name = out
            .file_name()
            .ok_or_else(|| unusable("it names no folder of its own (a root, or ending in ..)"))?
            .to_str()
            .ok_or_else(|| {
                unusable(
                    "it is not valid UTF-8, which the names of the index's staging folders \
                     need; choose a UTF-8 name (the folders above it may be any)",
                )
            })?
            .to_string();
        let parent = crate::files::parent_dir(&out);
        if !overwrite {
            refuse_existing(&out)?;
        }
        // The name, not what it leads to: a link loop or a dangling chain is refused here.
        if fs::symlink_metadata(&out).is_ok() {
            check_replaceable(&out)?;
        }
        if !segment {
            check_outside_index(&out)?;
        }
        // A file where a folder of the path should be: said plainly (create_dir_all reports
        // "File exists").
        if let Some(file) = parent.ancestors().find(|a| a.is_file()) {
            return Err(Error::InvalidArgument(format!(
                "{}: {} is a file, not a directory; choose an index path in a directory",
                out.display(),
                file.display()
            )));
        }
        // `.NAME.tmp-PID-N`, N random: a name no other build takes, whichever process, PID
        // namespace (containers sharing a volume, each its pid 1) or host it runs on, made by
        // mkdir, which fails rather than share a folder. Nothing of another name is removed:
        // a folder that looks left by a dead build may be a live one's on another host.
        let mut made = MadeDirs::default();
        let mut tries = 0;
        // The parent made a moment ago can be removed (empty) by another build of a path in it
        // that stopped, before this one's folder is in it: made again, once or twice.
        let mut retry = |e: &std::io::Error| {
            tries += 1;
            e.kind() == std::io::ErrorKind::NotFound && tries <= 3
        };
        let tmp = loop {
            made.note_missing(parent);
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            let real = match fs::canonicalize(parent) {
                Ok(p) => p,
                Err(e) if retry(&e) => continue,
                Err(e) => return Err(Error::io(parent, e)),
            };
            let path = unique_sibling(&real, &name, "tmp");
            match fs::create_dir(&path) {
                Ok(()) => {
                    let _lock = lock_folder(&path);
                    // From the open folder where there is one: the folder made, whatever is at
                    // its path by now.
                    let meta = match &_lock {
                        Some(f) => f.metadata(),
                        None => fs::metadata(&path),
                    };
                    let identity = meta.ok().and_then(|m| crate::files::identity(&m));
                    break TempDir {
                        identity,
                        path,
                        keep: false,
                        _made: made,
                        _lock,
                    };
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) if retry(&e) => continue,
                Err(e) => return Err(Error::io(&path, e)),
            }
        };
        Ok(Staged {
            out,
            tmp,
            overwrite,
        })
    }

    /// The temporary folder to fill.
    pub(crate) fn dir(&self) -> &Path {
        &self.tmp.path
    }

    /// Puts the filled folder in the destination's place under its writers' lock (waiting for
    /// them as `wait` says: `on_wait` first), replacing what was there whole.
    pub(crate) fn commit(mut self, on_wait: impl FnOnce(), wait: WaitLimits<'_>) -> Result<()> {
        if self.overwrite {
            // A refusal now comes after the work: the new index goes with the staging folder.
            replace_index_dir_until(&self.tmp.path, &self.out, on_wait, wait).map_err(
                |e| match e {
                    Error::Io { path, error }
                        if error.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        let why = format!("{error}; the new index was not kept");
                        Error::io(path, std::io::Error::new(error.kind(), why))
                    }
                    e => e,
                },
            )?;
        } else {
            refuse_existing(&self.out)?;
            // Renamed only where nothing is: another build of the same path may have published
            // its index since the check above, which a plain replacement would overwrite (both
            // builds "succeeding", one index lost).
            publish_new(&self.tmp.path, &self.out)?;
        }
        self.tmp.keep = true;
        Ok(())
    }
}

/// Publishes the complete index directory `new` at `out` (both in the same directory): renamed
/// into place, or, when `out` exists, in place of it: `out` must then be replaceable
/// ([`check_replaceable`]), and under the lock of its writers, waited for as `wait` says (a
/// writer that committed into the directory after it was replaced would name the old index's
/// files in the new one), it is moved aside, `new` renamed in (the old one moved back if that
/// fails) and the old one checked again, now that nothing can write into it by path (a user's
/// file found then puts both back, refused as before), and removed. The parent is synced. A
/// wait that ends ([`Error::Stopped`], [`Error::LockTimeout`]) leaves `out` and `new`
/// untouched.
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// use bsa_index::LockWait;
/// let dir = tempfile::tempdir().unwrap();
/// let (out, new) = (dir.path().join("idx"), dir.path().join(".idx.new"));
/// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&out)?;
/// bsa_index::IndexBuilder::new(64, &[3]).build(&new)?;
/// let wait = LockWait::new().on_wait(|| eprintln!("waiting for idx's writers"));
/// bsa_index::replace_index_dir(&new, &out, wait)?;
/// assert_eq!(bsa_index::Index::open(&out)?.len(), 1);
/// assert!(!new.exists());
/// # Ok(()) }
/// ```
pub fn replace_index_dir(new: &Path, out: &Path, wait: LockWait<'_>) -> Result<()> {
    let LockWait {
        on_wait,
        stop,
        timeout,
    } = wait;
    let limits = WaitLimits {
        stop: stop.as_deref(),
        timeout,
    };
    replace_index_dir_until(new, out, || on_wait.map_or((), |f| f()), limits)
}

/// [`replace_index_dir`] with the wait's callback and limits apart (a build's are borrowed).
fn replace_index_dir_until(
    new: &Path,
    out: &Path,
    on_wait: impl FnOnce(),
    wait: WaitLimits<'_>,
) -> Result<()> {
    let mut on_wait = Some(on_wait);
    // Each round ends in a return but when another build puts its index at `out` between the
    // check and the rename; a few rounds are plenty (an endless one would hang the build).
    for _ in 0..PUBLISH_ROUNDS {
        // The name, not what it leads to: a link loop or a dangling chain is something, which
        // check_replaceable refuses.
        if fs::symlink_metadata(out).is_ok() {
            check_replaceable(out)?;
            let _writers = lock_writers(out, || on_wait.take().map_or((), |f| f()), wait)?;
            // Again once its writers are done: the wait may have been long, and a user's file
            // put there meanwhile would go with the old index.
            check_replaceable(out)?;
            // And once it is out of the way: a file put in after that last look, and before
            // the swap, would go with it. Until then the new index's writers wait (it has none
            // yet): one that committed into it at `out` would see its rows go with a put-back.
            let new_writers = lock_writers(new, || {}, wait)?;
            let done = replace_dir_rounds(new, out, PUBLISH_ROUNDS, &check_replaceable);
            drop(new_writers);
            return done.map_err(|refused| keep_put_back(new, out, refused));
        }
        // Nothing there: put `new` there unless another build has meanwhile (a plain rename
        // then failed with "Directory not empty"); its index is then replaced as any other,
        // under its lock, and the last build wins as `--force` says.
        match publish_if_absent(new, out) {
            Ok(()) => return sync_dir(crate::files::parent_dir(out)),
            Err(e) if appeared(&e) => continue,
            Err(e) => return Err(Error::io(out, e)),
        }
    }
    Err(another_kept_publishing(out))
}

/// Rounds of [`replace_index_dir_until`] and [`replace_dir`] before they give up on a path
/// other writers keep putting directories at.
const PUBLISH_ROUNDS: usize = 16;

/// Renames `new` to `out` if nothing is there: atomically where `RENAME_NOREPLACE` exists, else
/// by a plain rename (which replaces only an empty folder). Something there is an error of
/// which [`appeared`] says yes.
fn publish_if_absent(new: &Path, out: &Path) -> std::io::Result<()> {
    if rename_noreplace(new, out)? {
        return Ok(());
    }
    fs::rename(new, out)
}

/// Whether a rename failed because something is at its destination.
fn appeared(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::DirectoryNotEmpty
    )
}

fn another_kept_publishing(out: &Path) -> Error {
    Error::io(
        out,
        std::io::Error::other(
            "other writers kept putting directories here while this one was published; \
             nothing was replaced: try again",
        ),
    )
}

/// The directories that killed builds of `out` (SIGKILL, a second Ctrl-C, a crash) left beside
/// it: `.NAME.tmp-PID-N` (an unfinished index) and `.NAME.old-PID-N` (a replaced one being
/// removed), for a caller to point out. A staging folder its build holds locked (a build
/// running now, in this process or another) is not listed. Not removed here: a build on a
/// file system without locks (or another host sharing the folder) may be writing one.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::create_dir(dir.path().join(".idx.tmp-4242")).unwrap();
/// std::fs::create_dir(dir.path().join(".idx.tmp-4242-1")).unwrap(); // a second thread's
/// std::fs::create_dir(dir.path().join(".idx.tmp-mine")).unwrap(); // not a pid: not ours
/// let left = bsa_index::build_leftovers(&dir.path().join("idx"));
/// let names = [".idx.tmp-4242", ".idx.tmp-4242-1"];
/// assert_eq!(left, names.map(|n| dir.path().join(n)));
/// ```
pub fn build_leftovers(out: &Path) -> Vec<PathBuf> {
    // Where a build of `out` puts its folders: beside what a link there names.
    let out = &crate::files::output_target(out).unwrap_or_else(|_| out.to_path_buf());
    let (Some(name), Some(parent)) = (out.file_name(), out.parent()) else {
        return Vec::new();
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let name = name.to_string_lossy();
    let prefixes = [format!(".{name}.tmp-"), format!(".{name}.old-")];
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut left: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let file = e.file_name();
            let file = file.to_string_lossy();
            let pid = prefixes.iter().find_map(|p| file.strip_prefix(p.as_str()));
            // `PID`, or `PID-N` (a second build in one process).
            let number = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
            pid.is_some_and(|p| match p.split_once('-') {
                Some((pid, n)) => number(pid) && number(n),
                None => number(p),
            })
        })
        .map(|e| out.with_file_name(e.file_name()))
        // A staging folder locked by its build is not left: it is being written.
        .filter(|p| !building_elsewhere(p))
        .collect();
    left.sort();
    left
}

/// Puts the directory `new` at `out` (a sibling path, same file system), replacing whatever
/// directory is there whole, and syncs the parent. On Linux the two are swapped in one step
/// (`renameat2` with `RENAME_EXCHANGE`) and the old one, now at `new`, removed: a reader finds
/// the old directory or the new one at `out`, and a crash leaves one of them there (and the
/// other at `new`). Where the file system cannot swap, `out` is moved aside to `.NAME.old-PID-N`,
/// `new` renamed in (the old one moved back if that fails) and the old one removed: between the
/// two renames there is no directory at `out`, and a crash there leaves the old one at
/// `.NAME.old-PID-N` ([`leftover_advice`] says to rename it back). No checks:
/// [`replace_index_dir`] is the one for indexes; this serves any directory written whole (a
/// benchmark's report).
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let (out, new) = (dir.path().join("report"), dir.path().join(".report.new"));
/// std::fs::create_dir(&out).unwrap();
/// std::fs::write(out.join("old.svg"), "old").unwrap();
/// std::fs::create_dir(&new).unwrap();
/// std::fs::write(new.join("results.json"), "[]").unwrap();
/// bsa_index::replace_dir(&new, &out)?;
/// assert!(out.join("results.json").exists() && !out.join("old.svg").exists());
/// assert!(!new.exists());
/// # Ok(()) }
/// ```
pub fn replace_dir(new: &Path, out: &Path) -> Result<()> {
    replace_dir_rounds(new, out, PUBLISH_ROUNDS, &|_| Ok(()))
}

/// [`replace_dir`] with `rounds` left for a path other writers keep filling, and `may_remove`,
/// asked of the replaced directory once it is out of the way and before it is removed: an
/// error puts it back at `out` (and `new` back at `new`) and is returned, naming `out`.
/// Checked there, nothing written into `out` by path between a caller's last look and the
/// swap is lost: from the swap on, such writes land in the new directory.
fn replace_dir_rounds(
    new: &Path,
    out: &Path,
    rounds: usize,
    may_remove: &dyn Fn(&Path) -> Result<()>,
) -> Result<()> {
    let parent = crate::files::parent_dir(out);
    if rounds == 0 {
        return Err(another_kept_publishing(out));
    }
    // The name, not what it leads to (a dangling link is replaced, as a directory is).
    if fs::symlink_metadata(out).is_ok() {
        if exchange(new, out).map_err(|e| Error::io(out, e))? {
            if let Err(refused) = may_remove(new) {
                return Err(put_back(new, out, refused, |a, b| {
                    exchange(a, b).and_then(|done| match done {
                        true => Ok(()),
                        false => Err(std::io::Error::other("the file system no longer swaps")),
                    })
                }));
            }
            // The swap made durable before the only other copy goes.
            sync_dir(parent)?;
            remove_replaced(new);
            return sync_dir(parent);
        }
        // A name no other process uses: the folder removed below is this one's.
        let old = aside_name(out);
        fs::rename(out, &old).map_err(|e| Error::io(out, e))?;
        if let Err(e) = fs::rename(new, out) {
            let _ = fs::rename(&old, out);
            return Err(Error::io(out, e));
        }
        if let Err(refused) = may_remove(&old) {
            // Two renames back: `out` empty between them, as it was between the two above.
            return Err(put_back(&old, out, refused, |a, b| {
                fs::rename(b, new)?;
                fs::rename(a, b)
            }));
        }
        // As after the swap above: both renames durable before the old index's files go (a
        // crash could otherwise bring back `out` naming the old folder, emptied).
        sync_dir(parent)?;
        remove_replaced(&old);
    } else {
        match publish_if_absent(new, out) {
            Ok(()) => {}
            // Another writer put a directory there meanwhile: replace it as above.
            Err(e) if appeared(&e) => {
                return replace_dir_rounds(new, out, rounds - 1, may_remove);
            }
            Err(e) => return Err(Error::io(out, e)),
        }
    }
    sync_dir(parent)
}

/// After a replacement of `out` by the index staged at `new` was refused and put back: what a
/// user wrote into the new index while it was at `out` is not removed with the staging folder
/// (its build failed): the folder is kept under a name no build removes, and `refused` says
/// where.
fn keep_put_back(new: &Path, out: &Path, refused: Error) -> Error {
    // Unknown (the folder cannot be listed) is kept too: it may hold a user's file.
    let entries = match crate::live::meta::foreign_entries(new) {
        Ok(f) => f.entries,
        Err(e) => vec![format!("({})", e.cause())],
    };
    if entries.is_empty() || fs::symlink_metadata(new).is_err() {
        return refused;
    }
    let parent = crate::files::parent_dir(out);
    let kept = aside_name(out);
    if fs::rename(new, &kept).is_err() {
        return refused;
    }
    let _ = sync_dir(parent);
    let why = match refused {
        Error::Io { error, .. } => error.to_string(),
        other => other.to_string(),
    };
    // Not "already exists", which a build's error extends with "the new index was not kept".
    Error::io(
        out,
        std::io::Error::other(format!(
            "{why}; the new index, put back, had gained entries meanwhile ({}): it is kept at {}",
            entries.join(", "),
            kept.display()
        )),
    )
}

/// A free `.NAME.old-PID-N` path beside `out`, for a directory moved aside: a name no build
/// removes, which [`build_leftovers`] lists to the next build.
fn aside_name(out: &Path) -> PathBuf {
    let parent = crate::files::parent_dir(out);
    let name = out
        .file_name()
        .map_or("index".into(), |n| n.to_string_lossy());
    loop {
        let old = unique_sibling(parent, &name, "old");
        if fs::symlink_metadata(&old).is_err() {
            return old;
        }
    }
}

/// Undoes a replacement that `refused` (a check of the replaced directory, now at `moved`)
/// forbids to finish: `back(moved, out)` puts the replaced directory back at `out` and the new
/// one where it was staged. Returns `refused`, naming `out`; if the directories cannot be put
/// back, the replaced one is kept under a name no build removes (`.NAME.old-PID-N`, which
/// [`build_leftovers`] lists), and the error says where.
fn put_back(
    moved: &Path,
    out: &Path,
    refused: Error,
    back: impl FnOnce(&Path, &Path) -> std::io::Result<()>,
) -> Error {
    let parent = crate::files::parent_dir(out);
    let refused = refused.rebased(moved, out);
    let failed = match back(moved, out) {
        Ok(()) => {
            let _ = sync_dir(parent);
            return refused;
        }
        Err(e) => e,
    };
    let kept = aside_name(out);
    // A staging folder is removed when its build fails: the replaced directory leaves it.
    let at = match fs::rename(moved, &kept) {
        Ok(()) => kept,
        Err(_) => moved.to_path_buf(),
    };
    let _ = sync_dir(parent);
    let why = match refused {
        Error::Io { error, .. } => error.to_string(),
        other => other.to_string(),
    };
    // Not "already exists": the replacement was made (or half made), so "not kept" is untrue.
    let now = match fs::symlink_metadata(out) {
        Ok(_) => "the new index is in its place".to_string(),
        Err(_) => format!("nothing is at {} now: rename it back", out.display()),
    };
    Error::io(
        out,
        std::io::Error::other(format!(
            "{why}; the replaced directory could not be put back ({failed}): it is at {}, with \
             those entries, and {now}",
            at.display()
        )),
    )
}

/// Removes the replaced index, moved aside to `old` once the new one is in place. The
/// replacement is made whatever happens here: a folder that cannot be removed whole (an
/// immutable file, a reader's `.nfsXXXX` on NFS) stays under its staging name, which
/// [`build_leftovers`] names to the next build, rather than turning a done replacement into
/// an error (`bsa build --force` exited 2 with the new index in place).
fn remove_replaced(old: &Path) {
    let _ = fs::remove_dir_all(old);
}

/// Renames the complete index directory `new` to `out`, which must not exist: refused (as
/// [`refuse_existing`] refuses it) if something appeared there meanwhile, atomically
/// (`renameat2` with `RENAME_NOREPLACE`; where the file system cannot, a plain rename, which
/// fails onto anything but an empty folder). The parent is synced.
fn publish_new(new: &Path, out: &Path) -> Result<()> {
    // Something at `out` is said as "already exists"; other errors as they are.
    let refused = |e: std::io::Error| match refuse_existing(out) {
        Err(exists) => exists,
        Ok(()) => Error::io(out, e),
    };
    if !rename_noreplace(new, out).map_err(refused)? {
        fs::rename(new, out).map_err(refused)?;
    }
    let parent = crate::files::parent_dir(out);
    sync_dir(parent)
}

/// Renames `a` to `b` unless `b` exists (`EEXIST`): `Ok(false)` when this system or file
/// system cannot (then nothing changed).
#[cfg(target_os = "linux")]
fn rename_noreplace(a: &Path, b: &Path) -> std::io::Result<bool> {
    renameat2(a, b, libc::RENAME_NOREPLACE)
}

#[cfg(not(target_os = "linux"))]
fn rename_noreplace(_: &Path, _: &Path) -> std::io::Result<bool> {
    Ok(false)
}

/// `renameat2(a, b, flags)`: `Ok(false)` when this system or file system cannot (then nothing
/// changed).
#[cfg(target_os = "linux")]
fn renameat2(a: &Path, b: &Path, flags: libc::c_uint) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes());
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: two NUL-terminated paths that outlive the call; the raw system call, as libc
    // wrappers of renameat2 are missing from older C libraries.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        // No such system call (kernels before 3.15, some sandboxes), or a file system that
        // cannot do it.
        Some(libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP | libc::EPERM) => Ok(false),
        _ => Err(e),
    }
}

/// Swaps the paths `a` and `b` in one step: `Ok(false)` when this system or file system cannot
/// (then nothing changed).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<bool> {
    #[cfg(test)]
    if tests::NO_EXCHANGE.get() {
        return Ok(false);
    }
    renameat2(a, b, libc::RENAME_EXCHANGE)
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<bool> {
    Ok(false)
}

/// What a caller should tell its user about `left`, a directory a killed build of `out` left
/// ([`build_leftovers`]): one sentence naming both.
///
/// ```
/// use std::path::Path;
/// let text = bsa_index::leftover_advice(Path::new("no/such/.idx.old-42"), Path::new("no/such/idx"));
/// assert!(text.contains("rename it to no/such/idx"));
/// ```
pub fn leftover_advice(left: &Path, out: &Path) -> String {
    let out = &crate::files::output_target(out).unwrap_or_else(|_| out.to_path_buf());
    let prefix = format!(
        ".{}.old-",
        out.file_name().unwrap_or_default().to_string_lossy()
    );
    let old = left
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(&prefix));
    let (left, shown) = (left.display(), out.display());
    if old && !out.exists() {
        format!(
            "{left} holds the index that was at {shown} when a build replacing it was killed: \
             rename it to {shown} to restore it"
        )
    } else if old {
        format!(
            "{left} holds the index a killed build of {shown} replaced ({shown} is the new \
             one); remove it unless such a build is running"
        )
    } else {
        format!(
            "{left} was left by a build of {shown} that was killed (an unfinished index, or the \
             one a build with --force had just replaced); remove it unless such a build is \
             running"
        )
    }
}

/// Checks that `dir` may be replaced by an index: it is an index directory (its
/// `manifest.json` is a bsa index's) holding nothing bsa did not write, or an empty directory.
/// Anything else is refused, so that overwriting (`bsa build --force`, Python's
/// `overwrite=True`) can only ever delete an index (a web app's folder holds a `manifest.json`
/// too), never a user's file kept inside one.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let dir = tempfile::tempdir()?;
/// assert!(bsa_index::check_replaceable(dir.path()).is_ok()); // empty
/// std::fs::write(dir.path().join("notes.txt"), "mine")?;
/// let err = bsa_index::check_replaceable(dir.path()).unwrap_err();
/// assert!(err.to_string().contains("not an index directory"));
/// # Ok(()) }
/// ```
pub fn check_replaceable(dir: &Path) -> Result<()> {
    // The kind of error an OS gives for a path that exists (Python: FileExistsError).
    let refuse = |why: String| {
        let e = std::io::Error::new(std::io::ErrorKind::AlreadyExists, why);
        Err(Error::io(dir, e))
    };
    let advice = "refusing to replace it (remove it yourself or choose another path)";
    if !dir.is_dir() {
        return refuse(format!("not a directory; {advice}"));
    }
    if is_index_dir(dir) {
        // Replacing an index deletes its folder whole: not with a user's files in it.
        let foreign = crate::live::meta::foreign_entries(dir)?;
        let entries = &foreign.entries;
        if entries.is_empty() {
            return Ok(());
        }
        const SHOWN: usize = 5;
        let mut list = entries[..entries.len().min(SHOWN)].join(", ");
        if entries.len() > SHOWN {
            list += &format!(" and {} more", entries.len() - SHOWN);
        }
        return refuse(match foreign.unreadable_manifest {
            Some(e) => format!(
                "an index whose manifest cannot be read ({}), so bsa cannot tell its own files \
                 from others here ({list}); refusing to replace it: move out what is yours, \
                 then remove the index yourself and build again",
                e.cause()
            ),
            None => format!(
                "an index, but it also holds entries bsa did not write ({list}); refusing to \
                 replace it, which would delete them (move them out of the index first)"
            ),
        });
    }
    let mut entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    match entries.next() {
        None => Ok(()),
        Some(_) => refuse(format!(
            "not an index directory (no bsa index manifest) and not empty; {advice}"
        )),
    }
}

/// `ids` sorted, or the smallest id they hold more than once (the one a build or an add of
/// these ids refuses by name).
pub(crate) fn sorted_distinct_ids(ids: &[u64]) -> std::result::Result<Vec<u64>, u64> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    match sorted.windows(2).find(|p| p[0] == p[1]) {
        Some(p) => Err(p[0]),
        None => Ok(sorted),
    }
}

/// Refuses to open `dir` as an index of its own when it is inside an index directory (a
/// segment, `idx/seg-000001`): its deletes and the other segments are the enclosing index's, so
/// a search of it alone returns deleted rows, and a writer would convert it into an index the
/// enclosing one can no longer read.
pub(crate) fn check_not_nested(dir: &Path) -> Result<()> {
    // Resolved first: `.` in a segment, or a link to one, is that segment.
    let Ok(real) = fs::canonicalize(dir) else {
        return Ok(());
    };
    match enclosing_index(&real) {
        None => Ok(()),
        Some(index) => Err(Error::InvalidArgument(format!(
            "{}: a folder inside the index {} (one of its segments, or a copy kept there), not \
             an index of its own: a segment's deletes and the other segments are the enclosing \
             index's, and its writers remove what its manifest does not name; give that index, \
             or move the folder out of it",
            dir.display(),
            index.display()
        ))),
    }
}

/// Whether `dir` holds a bsa index: a `manifest.json` whose JSON says `"format": "bsa-index"`
/// (a web app's `manifest.json` is not one), or, when the manifest cannot be read as JSON (a
/// damaged index), the files only bsa writes: a `LOCK`, a `seg-*` folder or a `codes.bin`
/// with bsa's magic.
fn is_index_dir(dir: &Path) -> bool {
    #[derive(serde::Deserialize)]
    struct Head {
        format: Option<serde_json::Value>,
    }
    match crate::files::read_manifest_bytes(dir) {
        Ok((_, bytes)) => match serde_json::from_slice::<Head>(&bytes) {
            Ok(h) => matches!(h.format, Some(serde_json::Value::String(f))
                if f == crate::manifest::FORMAT_NAME),
            Err(_) => has_bsa_files(dir),
        },
        Err(_) => dir.join(MANIFEST_FILE).is_file() && has_bsa_files(dir),
    }
}

/// Whether `dir` holds a file only bsa writes (see [`is_index_dir`]).
fn has_bsa_files(dir: &Path) -> bool {
    let codes = crate::files::starts_with(&dir.join("codes.bin"), &crate::format::MAGIC_CODES);
    let segment = fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with("seg-")
                && e.file_type().is_ok_and(|t| t.is_dir())
        })
    });
    codes || segment || dir.join(crate::manifest::LOCK_FILE).is_file()
}

/// Refuses an output path `out` inside an index's directory: a file written there replaces
/// one of the index's own (a model saved as `idx/model.safetensors`), and anything else is
/// removed by the index's next add, delete or compact, whose writers delete what its manifest
/// does not name (a backup saved into the index it copies, say). `out` itself may be an index
/// (to be replaced).
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// use bsa_index::{check_outside_index, pack, IndexBuilder};
/// let dir = tempfile::tempdir().unwrap();
/// let codes = pack::pack_le_bytes(&[0b0001, 0b0011], 2, 1, 4)?;
/// IndexBuilder::new(4, &codes).build(dir.path().join("idx"))?;
/// assert!(check_outside_index(&dir.path().join("copy")).is_ok());
/// let err = check_outside_index(&dir.path().join("idx/backup/copy")).unwrap_err();
/// assert!(err.to_string().contains("inside the index directory"));
/// # Ok(()) }
/// ```
pub fn check_outside_index(out: &Path) -> Result<()> {
    match enclosing_index(out) {
        None => Ok(()),
        Some(index) => Err(Error::InvalidArgument(format!(
            "{}: inside the index directory {}, whose files only bsa's writers change (this \
             would replace one of them, or be removed by its next add, delete or compact); \
             choose a path outside it",
            out.display(),
            index.display()
        ))),
    }
}

/// The index directory `path` would be inside (its nearest enclosing folder that holds an
/// index), whether or not `path` and its folders exist yet.
fn enclosing_index(path: &Path) -> Option<PathBuf> {
    let parent = crate::files::parent_dir(path);
    // The nearest folder that exists, as the file system resolves it (`..`, links, the
    // working directory), then the folders still to be made, applied by hand as
    // `create_dir_all` will follow them (`a/missing/../../idx/x` is inside `idx`; missing
    // folders are no links, so this is exact).
    let existing = parent.ancestors().find_map(|a| {
        let shown = if a.as_os_str().is_empty() {
            Path::new(".")
        } else {
            a
        };
        fs::canonicalize(shown).ok().map(|real| (a, real))
    });
    let (found, mut real) = existing?;
    let rest = parent.strip_prefix(found).unwrap_or(Path::new(""));
    for c in rest.components() {
        match c {
            std::path::Component::Normal(name) => real.push(name),
            std::path::Component::ParentDir => {
                real.pop();
            }
            _ => {}
        }
    }
    real.ancestors()
        .find(|a| is_index_dir(a))
        .map(Path::to_path_buf)
}

/// Waits for and holds the lock of the live index's writers in `dir`, if it has them (a
/// directory without the lock file has had no writer, and one that starts now waits for the
/// lock file this creates).
fn lock_writers(
    dir: &Path,
    on_wait: impl FnOnce(),
    wait: WaitLimits<'_>,
) -> Result<Option<crate::files::DirLock>> {
    if !dir.join(MANIFEST_FILE).is_file() {
        return Ok(None);
    }
    crate::files::lock_dir(dir, on_wait, wait).map(Some)
}

impl VectorSource<'_> {
    /// Rows of `dim` elements.
    fn rows(&self, dim: usize) -> usize {
        match self {
            VectorSource::Floats(v) => v.len() / dim.max(1),
            VectorSource::Stored(rows) => rows.rows(),
        }
    }
}

/// Appends `row`'s elements as `dtype`, little-endian, to `out`.
fn append_row_bytes(row: &[f32], dtype: VectorDtype, out: &mut Vec<u8>) {
    match dtype {
        VectorDtype::F32 => row
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        // As unit vectors: f16 holds magnitudes up to 65504 only, and loses precision below
        // 6e-5, so rows far from unit length came back as infinities or zeros (scores 0, wrong
        // hits); their cosines do not depend on their length.
        VectorDtype::F16 => {
            let norm = row.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
            let norm = norm.sqrt();
            let scale = if norm > 0.0 && norm.is_finite() {
                1.0 / norm
            } else {
                1.0
            };
            for &x in row {
                let unit = (f64::from(x) * scale) as f32;
                out.extend_from_slice(&half::f16::from_f32(unit).to_le_bytes());
            }
        }
    }
}

/// Seed of the native graph's level draw (fixed: the same vectors give the same graph).
const GRAPH_SEED: u64 = 0x6273_612d_6772_6170;

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Set: `exchange` says the file system cannot swap, as one without `RENAME_EXCHANGE`
        /// does, so the two-rename replacement runs.
        pub(super) static NO_EXCHANGE: std::cell::Cell<bool> =
            const { std::cell::Cell::new(false) };
    }

    /// A user's file put into an index after the last look before its replacement (a window
    /// that cannot be closed before the swap) is found in the replaced directory once it is
    /// out of the way: both directories go back, and the refusal names the index's path. With
    /// the swap and with the two renames of file systems that cannot swap.
    #[test]
    fn a_replacement_puts_back_an_index_that_gained_a_users_file() {
        for no_exchange in [false, true] {
            NO_EXCHANGE.set(no_exchange);
            let dir = tempfile::tempdir().unwrap();
            let (out, new) = (dir.path().join("idx"), dir.path().join(".idx.new"));
            IndexBuilder::new(64, &[1, 2]).build(&out).unwrap();
            IndexBuilder::new(64, &[3]).build(&new).unwrap();
            // Past the checks before the swap: as if written just after them.
            fs::write(out.join("notes.txt"), "mine").unwrap();
            let e = replace_dir_rounds(&new, &out, PUBLISH_ROUNDS, &check_replaceable)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("{}: ", out.display())), "{e}");
            assert!(
                e.contains("notes.txt") && e.contains("did not write"),
                "{e}"
            );
            assert_eq!(fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
            assert_eq!(crate::Index::open(&out).unwrap().len(), 2);
            assert_eq!(crate::Index::open(&new).unwrap().len(), 1);
            assert_eq!(
                fs::read_dir(dir.path()).unwrap().count(),
                2,
                "nothing else left"
            );
            // Without the file, the replacement goes through.
            fs::remove_file(out.join("notes.txt")).unwrap();
            replace_dir_rounds(&new, &out, PUBLISH_ROUNDS, &check_replaceable).unwrap();
            assert_eq!(crate::Index::open(&out).unwrap().len(), 1);
            assert!(!new.exists());
        }
        NO_EXCHANGE.set(false);
    }

    /// Directories that cannot be put back: the replaced one leaves the staging folder (which
    /// its failed build removes) for a name no build removes, and the error says where.
    #[test]
    fn a_replaced_directory_that_cannot_go_back_is_kept_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let (out, moved) = (dir.path().join("idx"), dir.path().join(".idx.tmp-1-2"));
        fs::create_dir(&out).unwrap();
        fs::create_dir(&moved).unwrap();
        fs::write(moved.join("notes.txt"), "mine").unwrap();
        let refused = Error::io(&moved, std::io::Error::other("holds notes.txt"));
        let e = put_back(&moved, &out, refused, |_, _| {
            Err(std::io::Error::other("no swap"))
        })
        .to_string();
        assert_kept_aside(&out, &moved, "notes.txt", &e);
        assert!(
            e.starts_with(&format!("{}: holds notes.txt", out.display())),
            "{e}"
        );
        assert!(e.contains("no swap"), "{e}");
        assert!(e.ends_with("the new index is in its place"), "{e}");
    }

    /// The one folder kept aside for `out` under a name no build removes: `gone` moved there,
    /// with the user's `file` ("mine") in it, and the error `e` names it.
    fn assert_kept_aside(out: &Path, gone: &Path, file: &str, e: &str) {
        let kept = build_leftovers(out);
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(!gone.exists());
        assert_eq!(fs::read_to_string(kept[0].join(file)).unwrap(), "mine");
        assert!(e.contains(&kept[0].display().to_string()), "{e}");
    }

    /// A put-back new index that gained a user's file while it was in place is kept beside
    /// the index under a name no build removes, and the refusal says where; one that gained
    /// nothing goes with its staging folder.
    #[test]
    fn a_put_back_index_that_gained_a_users_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (out, new) = (dir.path().join("idx"), dir.path().join(".idx.new"));
        IndexBuilder::new(64, &[1]).build(&new).unwrap();
        let refused = || Error::io(&out, std::io::Error::other("holds notes.txt"));
        let e = keep_put_back(&new, &out, refused()).to_string();
        assert_eq!(e, format!("{}: holds notes.txt", out.display()));
        assert!(new.exists() && build_leftovers(&out).is_empty());
        fs::write(new.join("later.txt"), "mine").unwrap();
        let e = keep_put_back(&new, &out, refused()).to_string();
        assert_kept_aside(&out, &new, "later.txt", &e);
        assert!(e.contains("later.txt"), "{e}");
    }

    /// A staging folder's guard removes the folder it made, not another put at its path.
    #[cfg(unix)]
    #[test]
    fn a_staging_folder_removes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("idx");
        let staged = Staged::new(&out, false, false).unwrap();
        let path = staged.dir().to_path_buf();
        let aside = dir.path().join("aside");
        fs::rename(&path, &aside).unwrap();
        fs::create_dir(&path).unwrap();
        fs::write(path.join("notes.txt"), "mine").unwrap();
        drop(staged);
        assert_eq!(fs::read_to_string(path.join("notes.txt")).unwrap(), "mine");
        // Its own folder, put back, goes.
        fs::remove_dir_all(&path).unwrap();
        fs::rename(&aside, &path).unwrap();
        let staged = Staged::new(&out, false, false).unwrap();
        let second = staged.dir().to_path_buf();
        drop(staged);
        assert!(!second.exists() && path.exists());
    }

    /// While a build fills its staging folder it holds it locked: the listing of leftovers
    /// (which every CLI and Python build makes first) skips it; once the build is done, nothing
    /// of it is left beside the index.
    #[cfg(unix)]
    #[test]
    fn a_build_holds_its_staging_folder_locked() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("idx");
        let staged = |d: &Path| {
            fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(".idx.tmp-")
                })
                .collect::<Vec<_>>()
        };
        let seen = std::cell::RefCell::new(Vec::new());
        IndexBuilder::new(64, &[1, 2, 3])
            .progress(|_, _| {
                let folders = staged(dir.path());
                let listed = build_leftovers(&out);
                let locked = folders.iter().all(|f| building_elsewhere(f));
                seen.borrow_mut()
                    .push((folders.len(), listed.len(), locked));
            })
            .build(&out)
            .unwrap();
        let seen = seen.into_inner();
        assert!(!seen.is_empty(), "the build reported progress");
        assert!(seen.iter().all(|&s| s == (1, 0, true)), "{seen:?}");
        assert!(staged(dir.path()).is_empty());
    }

    /// A build removes no staging folder but its own, whoever left it (a build of another PID
    /// namespace with this pid, or a dead one: they look the same from here), and stages under
    /// a name of its own; the leftovers listed are the folders no build holds locked.
    #[cfg(unix)]
    #[test]
    fn builds_leave_other_staging_folders_and_list_the_unlocked_ones() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("idx");
        let pid = std::process::id();
        let live = dir.path().join(format!(".idx.tmp-{pid}-1"));
        let dead = dir.path().join(format!(".idx.tmp-{pid}"));
        for d in [&live, &dead] {
            fs::create_dir(d).unwrap();
            fs::write(d.join("codes.bin"), "theirs").unwrap();
        }
        let held = lock_folder(&live).expect("a folder can be locked here");
        assert_eq!(build_leftovers(&out), vec![dead.clone()]);
        IndexBuilder::new(64, &[1, 2]).build(&out).unwrap();
        IndexBuilder::new(64, &[3])
            .overwrite(true)
            .build(&out)
            .unwrap();
        for d in [&live, &dead] {
            assert_eq!(fs::read_to_string(d.join("codes.bin")).unwrap(), "theirs");
        }
        assert_eq!(crate::Index::open(&out).unwrap().len(), 1);
        drop(held);
        assert_eq!(build_leftovers(&out), vec![dead, live]);
        // Nothing else of the builds' is left beside it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn directories_swap_in_one_step() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for (d, mark) in [(&a, "was a"), (&b, "was b")] {
            fs::create_dir(d).unwrap();
            fs::write(d.join("mark"), mark).unwrap();
        }
        // tmpfs and ext4 swap; a file system that cannot says so and nothing moves.
        if exchange(&a, &b).unwrap() {
            assert_eq!(fs::read_to_string(a.join("mark")).unwrap(), "was b");
            assert_eq!(fs::read_to_string(b.join("mark")).unwrap(), "was a");
        } else {
            assert_eq!(fs::read_to_string(a.join("mark")).unwrap(), "was a");
        }
    }

    #[test]
    fn leftovers_are_explained_by_what_they_hold() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("idx");
        let old = dir.path().join(".idx.old-42");
        let tmp = dir.path().join(".idx.tmp-42");
        // The replaced index, and no index at `out`: the one copy, to be put back.
        assert!(leftover_advice(&old, &out).contains("rename it to"));
        // An unfinished build of an index whose own name has `.old-` in it is no such copy.
        let named = dir.path().join("b.old-1");
        let unfinished = dir.path().join(".b.old-1.tmp-42");
        assert!(leftover_advice(&unfinished, &named).contains("an unfinished index"));
        assert!(!leftover_advice(&old, &out).contains("remove it"));
        fs::create_dir(&out).unwrap();
        assert!(leftover_advice(&old, &out).contains("is the new one); remove it unless"));
        assert!(leftover_advice(&tmp, &out).contains("remove it unless such a build is running"));
    }
}
