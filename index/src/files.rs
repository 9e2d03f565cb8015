//! Mapped index files and their checksums: the bottom of the file-handling layer.
//!
//! Every binary file of an index is a 64-byte [`Header`] and a payload (see `FORMAT.md`);
//! [`Section`] maps one, validates its header, length and alignment, and verifies its CRCs on
//! demand. Plain files (the model, hnsw_rs dumps) are checked whole by [`verify_plain_file`].
//! Nothing here knows what the payloads mean.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::format::{ElemKind, FileKind, Header};
use crate::lock_note::{LOCK_FILE, LockHolder, note_holder};
use crate::manifest::{FileInfo, MANIFEST_FILE, MAX_MANIFEST_LEN};

/// What `path` is when it is not a regular file, for an error message (`"a directory"`, `"not
/// a regular file (a pipe, socket or device)"`), or `None` when it is one (symbolic links
/// followed). Checked before opening: an open of a pipe waits for a writer.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let dir = tempfile::tempdir()?;
/// assert_eq!(bsa_index::not_a_file(dir.path())?, Some("a directory"));
/// std::fs::write(dir.path().join("f"), b"x")?;
/// assert_eq!(bsa_index::not_a_file(&dir.path().join("f"))?, None);
/// # Ok(()) }
/// ```
pub fn not_a_file(path: &Path) -> std::io::Result<Option<&'static str>> {
    let meta = std::fs::metadata(path)?;
    Ok(if meta.is_file() {
        None
    } else if meta.is_dir() {
        Some("a directory")
    } else {
        Some("not a regular file (a pipe, socket or device)")
    })
}

/// The folder `path` is in: its parent, or `.` for a bare name (whose parent is empty).
///
/// ```
/// use std::path::Path;
/// assert_eq!(bsa_index::parent_dir(Path::new("out/idx")), Path::new("out"));
/// assert_eq!(bsa_index::parent_dir(Path::new("idx")), Path::new("."));
/// ```
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// What a writer of the output `path` replaces: `path` with its `.` components dropped (`idx/.`
/// is `idx`) and, when it is a symbolic link, what the link names (to be made if the link
/// dangles). The link is kept and what it names replaced, as a shell's `>` does: a link
/// `current -> idx-v3` rebuilt with `--force` gives a new `idx-v3`, not a folder in the link's
/// place beside the old index.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// # #[cfg(unix)] {
/// let dir = tempfile::tempdir()?;
/// std::fs::create_dir(dir.path().join("idx-v3"))?;
/// std::os::unix::fs::symlink("idx-v3", dir.path().join("current"))?;
/// let target = bsa_index::output_target(&dir.path().join("current/."))?;
/// assert_eq!(target, std::fs::canonicalize(dir.path().join("idx-v3"))?);
/// # }
/// # Ok(()) }
/// ```
pub fn output_target(path: &Path) -> std::io::Result<PathBuf> {
    let named: PathBuf = path.components().collect();
    if !std::fs::symlink_metadata(&named).is_ok_and(|m| m.file_type().is_symlink()) {
        return Ok(named);
    }
    match std::fs::canonicalize(&named) {
        Ok(target) => Ok(target),
        // A dangling link: what it names is made, relative to the link's folder.
        Err(_) => {
            let link = std::fs::read_link(&named)?;
            Ok(match named.parent() {
                Some(dir) if link.is_relative() => dir.join(link),
                _ => link,
            })
        }
    }
}

/// Makes the entries of the folder `path` durable (`fsync` of the folder): after a rename or
/// a file made in it. Unix only; elsewhere a folder cannot be opened to sync, and this does
/// nothing.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(path, e))?;
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Makes the data of the file `path` durable (`fsync`), as after copying it: a copy's bytes
/// sit in the page cache until then, and a crash after the rename that publishes them would
/// leave a short or empty file under the new manifest.
pub(crate) fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Refuses the file at `path` as corrupt when it holds `holds` of `what` (`"ids"`, `"set
/// bits"`) but the manifest lists `listed`: the one wording of every such count check.
pub(crate) fn check_listed_count(path: &Path, what: &str, holds: u64, listed: u64) -> Result<()> {
    if holds != listed {
        return Err(Error::corrupt(
            path,
            format!("holds {holds} {what} but the manifest says {listed}"),
        ));
    }
    Ok(())
}

/// `e`, an error reading `path`, a file the manifest beside it lists: a missing file is said
/// as listed by that manifest, since the usual cause is the manifest, not the file: another
/// index's manifest copied in, or a copy of the directory that stopped half-way.
pub(crate) fn listed_file_error(path: &Path, e: std::io::Error) -> Error {
    if e.kind() != std::io::ErrorKind::NotFound {
        return Error::io(path, e);
    }
    let manifest = path.with_file_name(MANIFEST_FILE);
    let what = format!(
        "missing, though {} lists it: the directory is an incomplete copy, or that manifest is \
         another index's; copy the whole index again or rebuild it",
        manifest.display()
    );
    Error::io(
        path,
        std::io::Error::new(std::io::ErrorKind::NotFound, what),
    )
}

/// Opens a file of the index (one its manifest lists) for reading, refusing anything but a
/// regular file first: a FIFO put in an index file's place would block the open forever, and a
/// directory would fail later with an unclear error. A missing file is reported as listed by
/// the manifest beside it ([`listed_file_error`]).
pub(crate) fn open_regular(path: &Path) -> Result<File> {
    let not_found = |e| listed_file_error(path, e);
    if let Some(what) = not_a_file(path).map_err(not_found)? {
        return Err(Error::corrupt(
            path,
            format!("{what}, where the index keeps a file"),
        ));
    }
    File::open(path).map_err(not_found)
}

/// Whether `path` is a regular file whose first bytes are `magic` (anything else, a FIFO
/// included, is not opened for reading: a FIFO would block).
pub(crate) fn starts_with(path: &Path, magic: &[u8]) -> bool {
    use std::io::Read;
    let mut head = vec![0u8; magic.len()];
    open_regular(path).is_ok_and(|mut f| f.read_exact(&mut head).is_ok()) && head == magic
}

/// Reads `dir/manifest.json` (at most [`MAX_MANIFEST_LEN`] bytes) and returns its path and bytes.
pub(crate) fn read_manifest_bytes(dir: &Path) -> Result<(std::path::PathBuf, Vec<u8>)> {
    use std::io::Read;
    let path = dir.join(MANIFEST_FILE);
    let f = open_regular(&path).map_err(|e| {
        // The usual mistakes, said as such rather than as the manifest's I/O error (still I/O
        // errors of their kind: Python raises FileNotFoundError for them). Anything else (a
        // manifest behind a symbolic-link loop, an unreadable one) keeps its own error.
        let Error::Io { .. } = e else {
            return e;
        };
        let (kind, what) = match std::fs::metadata(dir) {
            Err(d) if d.kind() == std::io::ErrorKind::NotFound => (
                std::io::ErrorKind::NotFound,
                "no such index directory".to_string(),
            ),
            Ok(m) if !m.is_dir() => (
                std::io::ErrorKind::NotADirectory,
                "not a directory".to_string(),
            ),
            Ok(_) if matches!(path.try_exists(), Ok(false)) => (
                std::io::ErrorKind::NotFound,
                format!("not an index directory (no {MANIFEST_FILE})"),
            ),
            _ => return e,
        };
        let what = format!("{what}; give the directory `bsa build` wrote");
        Error::io(dir, std::io::Error::new(kind, what))
    })?;
    let mut bytes = Vec::new();
    f.take(MAX_MANIFEST_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(&path, e))?;
    if bytes.len() as u64 > MAX_MANIFEST_LEN {
        return Err(Error::corrupt(
            &path,
            format!("larger than {MAX_MANIFEST_LEN} bytes"),
        ));
    }
    Ok((path, bytes))
}

/// One mapped binary file with its validated header.
#[derive(Debug)]
pub(crate) struct Section {
    pub(crate) path: PathBuf,
    pub(crate) map: Mmap,
    pub(crate) header: Header,
    /// The mapped file's device and inode (Unix), to tell whether a path still names it.
    identity: Option<(u64, u64)>,
}

/// A file's device and inode number: while a map holds the file, no other file gets them.
#[cfg(unix)]
pub(crate) fn identity(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
pub(crate) fn identity(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// Whether `path` still names the file or directory whose [`identity`] was `then` (not another
/// put in its place). Where there are no identities to compare (outside Unix), anything still
/// at `path` is taken as it.
pub(crate) fn still_names(then: Option<(u64, u64)>, path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(now) => then.is_none() || identity(&now) == then,
        Err(_) => false,
    }
}

impl Section {
    /// Maps `path`, checks its header against `kind` and its length against the manifest entry.
    pub(crate) fn open(path: PathBuf, kind: FileKind, info: &FileInfo) -> Result<Section> {
        let file = open_regular(&path)?;
        Self::of_file(&file, path, kind, info)
    }

    /// [`open`](Self::open) on a file opened before (named `path` in errors): it maps what was
    /// opened, even if `path` has been removed or replaced since.
    pub(crate) fn of_file(
        file: &File,
        path: PathBuf,
        kind: FileKind,
        info: &FileInfo,
    ) -> Result<Section> {
        let meta = file.metadata().map_err(|e| Error::io(&path, e))?;
        let len = meta.len();
        // SAFETY: the map is read-only; the index files are immutable once built (the builder
        // never rewrites a published file), so the mapped bytes do not change under us unless
        // another process truncates or rewrites the file, which is documented as unsupported.
        let map = unsafe { Mmap::map(file) }.map_err(|e| Error::io(&path, e))?;
        // Reads of pages not yet cached then fill the page cache in 2 MiB folios, as the
        // builder's writes do (see `WRITE_CHUNK`): an index read back after a reboot is mapped
        // with huge pages too. It reads ahead 2-4 MiB per fault, which a memory-resident index
        // (what graph and rescoring searches need to be fast) reads whole anyway. A hint: a
        // kernel without transparent huge pages refuses it, and nothing changes.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        // The header is checked first so that a wrong or foreign file is reported as such.
        let header = Header::decode(&map, kind, len, &path)?;
        check_listed_len(&path, &header, info)?;
        let payload = payload_range(&header, map.len(), &path)?;
        let ok = match header.elem {
            _ if matches!(
                kind,
                FileKind::Inverted | FileKind::Sparse | FileKind::Bitmaps
            ) =>
            {
                bytemuck::try_cast_slice::<u8, u64>(&map[payload.clone()]).is_ok()
            }
            ElemKind::U64 => bytemuck::try_cast_slice::<u8, u64>(&map[payload]).is_ok(),
            ElemKind::F32 => bytemuck::try_cast_slice::<u8, f32>(&map[payload]).is_ok(),
            ElemKind::F16 => bytemuck::try_cast_slice::<u8, u16>(&map[payload]).is_ok(),
        };
        if !ok {
            return Err(Error::corrupt(&path, "payload is not aligned in memory"));
        }
        Ok(Section {
            path,
            map,
            header,
            identity: identity(&meta),
        })
    }

    /// Whether `path` names the file this section maps (not a file put in its place since).
    /// On a local file system a mapped file's inode cannot be handed to another file while the
    /// map holds it, so equal identities are the same file, whose bytes never change once
    /// published (a network file system's server may reuse the number for a file another
    /// host makes).
    pub(crate) fn is_at(&self, path: &Path) -> bool {
        still_names(self.identity, path)
    }

    /// The payload bytes (after the header).
    pub(crate) fn payload(&self) -> &[u8] {
        // Checked by `Section::open` (offset + len == file length == map length).
        let start = self.header.payload_offset as usize;
        &self.map[start..start + self.header.payload_len as usize]
    }

    /// Verifies the whole-file CRC recorded in the manifest, then the header's payload CRC
    /// ([`check_crcs`]).
    pub(crate) fn verify(&self, info: &FileInfo) -> Result<()> {
        let head = &self.map[..self.header.payload_offset as usize];
        check_crcs(&self.path, head, self.payload(), &self.header, info)
    }
}

/// Checks a binary file's checksums, its bytes read as `head` (header and gap) and `payload`:
/// the whole-file CRC its manifest `info` records, then `header`'s payload CRC. In that order,
/// damaged bytes are reported against the manifest's checksum, as every check of a file reports
/// them (`bsa verify` reads some files whole: their reports agreed with a search's only for the
/// header).
pub(crate) fn check_crcs(
    path: &Path,
    head: &[u8],
    payload: &[u8],
    header: &Header,
    info: &FileInfo,
) -> Result<()> {
    let got = crc32(payload);
    let whole = file_crc(head, got, payload.len() as u64);
    for (expected, got) in [(info.crc32, whole), (header.payload_crc, got)] {
        if got != expected {
            return Err(Error::Checksum {
                path: path.to_path_buf(),
                expected,
                got,
            });
        }
    }
    Ok(())
}

/// Checks the length of the file at `path`, whose `header` has been decoded against that length,
/// against the length its manifest entry `info` records.
pub(crate) fn check_listed_len(path: &Path, header: &Header, info: &FileInfo) -> Result<()> {
    let len = header.file_len().unwrap_or(u64::MAX);
    if len == info.len {
        return Ok(());
    }
    // The header has vouched for the file's length, so the file is whole: it and the manifest
    // come from different indexes (not a truncated copy).
    Err(Error::corrupt(
        path,
        format!(
            "{len} bytes, whole by its own header, but {} records {} bytes: the file and that \
             manifest come from different indexes (a file or a manifest copied from elsewhere)",
            path.with_file_name(MANIFEST_FILE).display(),
            info.len
        ),
    ))
}

/// Bytes per piece of [`crc32`]: large enough that combining the pieces' CRCs (a few hundred
/// nanoseconds each) is noise, small enough that a file of a few pieces keeps every core busy.
const CRC_PIECE: usize = 4 << 20;

/// CRC-32 of `bytes`, the same as `crc32fast::hash`. Called from outside a rayon pool (the
/// command line's open, a server's refresh), it is computed in pieces on the global pool and
/// combined: checking a 150 MB vectors file at open took one core ~15 ms of a one-query
/// `bsa search` while the others sat idle. Called on a rayon worker it is computed there alone:
/// a worker waiting on its pieces may run other jobs of the pool meanwhile, which could need a
/// lock the caller holds (a writer's, checking the index before a change).
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    if bytes.len() <= CRC_PIECE || rayon::current_thread_index().is_some() {
        return crc32fast::hash(bytes);
    }
    crc32_in_pieces(bytes)
}

/// [`crc32`] in pieces on the current rayon pool.
fn crc32_in_pieces(bytes: &[u8]) -> u32 {
    use rayon::prelude::*;
    bytes
        .par_chunks(CRC_PIECE)
        .map(|piece| {
            let mut h = crc32fast::Hasher::new();
            h.update(piece);
            h
        })
        .reduce_with(|mut a, b| {
            // Rayon's reduce keeps the pieces' order: `a` is the bytes before `b`.
            a.combine(&b);
            a
        })
        .map_or_else(|| crc32fast::hash(&[]), |h| h.finalize())
}

/// CRC-32 of `prefix ++ payload` from the payload's CRC, without re-reading the payload.
pub(crate) fn file_crc(prefix: &[u8], payload_crc: u32, payload_len: u64) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(prefix);
    h.combine(&crc32fast::Hasher::new_with_initial_len(
        payload_crc,
        payload_len,
    ));
    h.finalize()
}

fn payload_range(h: &Header, map_len: usize, path: &Path) -> Result<std::ops::Range<usize>> {
    let start = usize::try_from(h.payload_offset)
        .map_err(|_| Error::corrupt(path, "payload offset too large"))?;
    let len =
        usize::try_from(h.payload_len).map_err(|_| Error::corrupt(path, "payload too large"))?;
    let end = start
        .checked_add(len)
        .ok_or_else(|| Error::corrupt(path, "payload end overflows"))?;
    if end > map_len {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            need: end as u64,
            have: map_len as u64,
        });
    }
    Ok(start..end)
}

/// Streams a file and returns its length and CRC-32.
pub(crate) fn crc_of_file(path: &Path) -> Result<FileInfo> {
    crc_of_reader(path, open_regular(path)?)
}

/// The length and CRC-32 of what `r` (reading `path`) yields until its end.
fn crc_of_reader(path: &Path, mut r: impl std::io::Read) -> Result<FileInfo> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = r.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok(FileInfo {
        len,
        crc32: h.finalize(),
    })
}

/// Opens a non-mapped file the manifest lists ([`open_regular`]) and checks its size against
/// `info` before reading a byte: a file grown far past its record (a sparse file of a terabyte
/// put in its place) is refused at once, not read whole first. The returned reader stops one
/// byte past the recorded length, so a file that grows after the check is still caught by the
/// length comparison of what was read, and never read further.
fn open_plain(path: &Path, info: &FileInfo) -> Result<std::io::Take<File>> {
    use std::io::Read;
    let f = open_regular(path)?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    check_plain_len(path, len, info)?;
    Ok(f.take(info.len.saturating_add(1)))
}

/// Checks a whole non-mapped file (model, HNSW) against its manifest entry.
pub(crate) fn verify_plain_file(path: &Path, info: &FileInfo) -> Result<()> {
    compare_plain(path, crc_of_reader(path, open_plain(path, info)?)?, info)
}

/// Reads a whole non-mapped file (the model) checked against its manifest entry, as
/// [`verify_plain_file`] checks it: the checked bytes are the ones returned, with their length
/// and CRC.
pub(crate) fn read_plain_file(path: &Path, info: &FileInfo) -> Result<(Vec<u8>, FileInfo)> {
    use std::io::Read;
    let mut buf = Vec::new();
    open_plain(path, info)?
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    let got = info_of_bytes(&buf);
    compare_plain(path, got, info)?;
    Ok((buf, got))
}

/// Reads a whole file of the index that the manifest records no length or checksum for,
/// refusing anything but a regular file ([`open_regular`]).
pub(crate) fn read_regular(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    open_regular(path)?
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    Ok(buf)
}

/// The length and CRC-32 of a whole file's bytes, as a manifest records them.
pub(crate) fn info_of_bytes(bytes: &[u8]) -> FileInfo {
    FileInfo {
        len: bytes.len() as u64,
        crc32: crc32(bytes),
    }
}

/// A plain file's length and CRC `got` against its manifest entry.
fn compare_plain(path: &Path, got: FileInfo, info: &FileInfo) -> Result<()> {
    check_plain_len(path, got.len, info)?;
    if got.crc32 != info.crc32 {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            expected: info.crc32,
            got: got.crc32,
        });
    }
    Ok(())
}

/// A plain file's length `len` against its manifest entry.
fn check_plain_len(path: &Path, len: u64, info: &FileInfo) -> Result<()> {
    if len != info.len {
        // Not a file of this format: nothing says whether it is cut short or another's.
        return Err(Error::corrupt(
            path,
            format!(
                "{} bytes, but {} records {}: a copy cut short, or a file (or manifest) from \
                 another index",
                len,
                path.with_file_name(MANIFEST_FILE).display(),
                info.len
            ),
        ));
    }
    Ok(())
}

/// How a writer waits for another writer's lock of an index (an add, delete or compaction
/// under way, or a build replacing the index): as long as it takes unless [`stop`](Self::stop)
/// is set or the [`timeout`](Self::timeout) passes, first calling [`on_wait`](Self::on_wait).
/// Taken by [`Writer::open_waiting`](crate::live::Writer::open_waiting),
/// [`Snapshot::copy_to`](crate::live::Snapshot::copy_to) and
/// [`replace_index_dir`](crate::replace_index_dir); [`IndexBuilder`](crate::IndexBuilder) has
/// the same three as its own methods (`on_wait`, `stop_when`, which borrows its flag for the
/// whole build, and `lock_timeout`). It is `Send`: a wait can be made on one thread and
/// handed to another.
///
/// ```
/// use std::sync::{atomic::AtomicBool, Arc};
/// use std::time::Duration;
/// use bsa_index::{live::Writer, LockWait};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
/// let stop = Arc::new(AtomicBool::new(false)); // set by a Ctrl-C handler, say
/// let wait = LockWait::new()
///     .on_wait(|| eprintln!("waiting for another writer of idx"))
///     .stop(stop)
///     .timeout(Duration::from_secs(30));
/// let writer = Writer::open_waiting(&path, wait)?; // no other writer: no wait
/// assert_eq!(writer.generation(), 0);
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[derive(Default)]
pub struct LockWait<'a> {
    pub(crate) on_wait: Option<Box<dyn FnOnce() + Send + 'a>>,
    pub(crate) stop: Option<std::sync::Arc<AtomicBool>>,
    pub(crate) timeout: Option<Duration>,
}

impl std::fmt::Debug for LockWait<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockWait")
            .field("on_wait", &self.on_wait.is_some())
            .field("stop", &self.stop)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<'a> LockWait<'a> {
    /// A wait as long as it takes, telling no one: [`LockWait::default`].
    pub fn new() -> LockWait<'a> {
        LockWait::default()
    }

    /// Called once, before waiting, if another writer holds the lock (not for a zero
    /// [`timeout`](Self::timeout), which does not wait): a command can say why it seems to
    /// hang.
    pub fn on_wait(mut self, f: impl FnOnce() + Send + 'a) -> Self {
        self.on_wait = Some(Box::new(f));
        self
    }

    /// Ends the wait with [`Error::Stopped`] once `flag` is set (Ctrl-C, say), and with it the
    /// work of the caller it was given to (a [`Writer`](crate::live::Writer)'s changes, a
    /// copy), leaving the index as it was.
    pub fn stop(mut self, flag: std::sync::Arc<AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Waits at most `timeout`: past it, [`Error::LockTimeout`], naming the holder where its
    /// `LOCK` file notes one, and nothing changed. A zero timeout does not wait at all. It
    /// bounds the wait only, not the work done once the lock is taken. `None` (the default):
    /// as long as it takes.
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }
}

/// How [`lock_dir`] waits for another's lock: until `stop` is set, and for at most `timeout`
/// (`None`: as long as it takes). The borrowed form of a [`LockWait`]'s limits, which an
/// [`IndexBuilder`](crate::IndexBuilder)'s borrowed stop flag also makes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WaitLimits<'a> {
    pub(crate) stop: Option<&'a AtomicBool>,
    pub(crate) timeout: Option<Duration>,
}

/// The writers' lock of an index directory (see [`lock_dir`]), held until dropped.
pub(crate) struct DirLock {
    /// The locked `LOCK` file; closing it releases the lock.
    _file: File,
    /// The lock file's identity in [`held_locks`].
    key: Option<(u64, u64)>,
    /// Not `Send`: [`held_locks`] names the thread that took the lock, so a second taker on that
    /// thread is refused instead of waiting for itself. A lock moved to another thread made that
    /// record false: the thread holding it could wait for itself, and the one that took it was
    /// refused (a review's finding).
    _stays_on_its_thread: std::marker::PhantomData<*const ()>,
}

impl DirLock {
    /// Whether `dir/LOCK` is still the file this lock holds. Deleted or replaced (by hand, or
    /// a tool that cleans folders), it no longer keeps other writers out: one may have taken a
    /// new `LOCK` and be changing the index too.
    pub(crate) fn is_still_held(&self, dir: &Path) -> bool {
        still_at(&self._file, &dir.join(LOCK_FILE))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // The note names a holder only while there is one (a killed writer's stays until the
        // next writer writes its own).
        let _ = self._file.set_len(0);
        if let Some(key) = self.key {
            held_locks().remove(&key);
        }
    }
}

/// The lock files this process holds (by device and inode) and the thread holding each: a
/// thread that asks again for a lock it holds would wait for itself forever.
fn held_locks()
-> std::sync::MutexGuard<'static, std::collections::HashMap<(u64, u64), std::thread::ThreadId>> {
    static HELD: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<(u64, u64), std::thread::ThreadId>>,
    > = std::sync::OnceLock::new();
    HELD.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The identity of an open file (device, inode) where the platform has one.
fn file_key(f: &File) -> Option<(u64, u64)> {
    f.metadata().ok().and_then(|m| identity(&m))
}

/// Waits for and takes the writers' lock of the index directory `dir` (its `LOCK` file,
/// created if missing): an exclusive advisory lock, released when the guard returned is
/// dropped or its process ends. Another thread's lock is waited for; the calling thread's own
/// (a second [`Writer`](crate::live::Writer) opened while it holds one, a build replacing the
/// index it is changing) is an error, as the wait would never end. If the directory was replaced while this waited (a build over an index
/// holds its lock meanwhile), the old lock is on a removed file: the new directory's is taken.
///
/// `on_wait` is called once, before the first wait, if another process or handle holds the
/// lock: a caller can say why it seems to hang. With a stop flag or a timeout, the wait polls
/// the lock (every 20 ms) and ends with [`Error::Stopped`] once the flag is set, or with
/// [`Error::LockTimeout`] once the timeout has passed (at once, `on_wait` not called, for a
/// zero timeout).
pub(crate) fn lock_dir(
    dir: &Path,
    on_wait: impl FnOnce(),
    wait: WaitLimits<'_>,
) -> Result<DirLock> {
    let path = dir.join(LOCK_FILE);
    let mut on_wait = Some(on_wait);
    let started = std::time::Instant::now();
    loop {
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let key = file_key(&lock);
        let me = std::thread::current().id();
        if key.is_some_and(|k| held_locks().get(&k) == Some(&me)) {
            return Err(Error::InvalidArgument(format!(
                "{}: this thread already holds the index's writers' lock (a Writer open on it), \
                 and would wait for itself forever: change the index through that Writer, or \
                 drop it first",
                dir.display()
            )));
        }
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                // A caller that asked not to wait is not told it waits.
                if let Some(f) = on_wait
                    .take()
                    .filter(|_| wait.timeout != Some(Duration::ZERO))
                {
                    f();
                }
                match wait {
                    // A signal's handler (Python's, say) interrupts the wait: it goes on.
                    WaitLimits {
                        stop: None,
                        timeout: None,
                    } => loop {
                        match lock.lock() {
                            Ok(()) => break,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(Error::io(&path, e)),
                        }
                    },
                    WaitLimits { stop, timeout } => loop {
                        crate::error::check_stop(stop)?;
                        let poll = Duration::from_millis(20);
                        let waited = started.elapsed();
                        let nap = match timeout {
                            Some(t) if waited >= t => {
                                return Err(Error::LockTimeout {
                                    dir: dir.to_path_buf(),
                                    timeout: t,
                                    holder: LockHolder::of(dir),
                                });
                            }
                            Some(t) => poll.min(t - waited),
                            None => poll,
                        };
                        std::thread::sleep(nap);
                        match lock.try_lock() {
                            Ok(()) => break,
                            Err(TryLockError::WouldBlock) => {}
                            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
                        }
                    },
                }
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        if still_at(&lock, &path) {
            if let Some(k) = key {
                held_locks().insert(k, me);
            }
            note_holder(&lock);
            return Ok(DirLock {
                _file: lock,
                key,
                _stays_on_its_thread: std::marker::PhantomData,
            });
        }
    }
}

/// The size and alignment of the writes that fill an index file: 2 MiB, the huge-page size of
/// x86-64 and of aarch64 with 4 KiB pages.
///
/// Why: Linux page caches with large folios (ext4 from 6.16, xfs, btrfs, tmpfs with `huge=`)
/// keep a whole aligned 2 MiB `write` as one folio, which every later read-only map of the
/// file covers with one TLB entry. Written in 1 MiB pieces, or copied in smaller ones, a file
/// stays in 4 KiB-64 KiB folios, and a graph search at 1M vectors, whose every visited node and
/// rescored row is a TLB miss, answered 15-20% fewer queries per second (48-byte codes, f32
/// vectors, 2 threads; same files, rewritten in 2 MiB pieces: ef 48 24,600 -> 29,500 QPS).
pub(crate) const WRITE_CHUNK: usize = 2 << 20;

/// A writer that passes bytes on in whole [`WRITE_CHUNK`]s at offsets that are multiples of it
/// (counted from its first byte), the last piece shorter: see [`WRITE_CHUNK`] for why.
/// [`into_inner`](Self::into_inner) writes what is left; dropped without it, it loses it.
pub(crate) struct ChunkWriter<W: std::io::Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: std::io::Write> ChunkWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        ChunkWriter {
            inner,
            buf: Vec::with_capacity(WRITE_CHUNK),
        }
    }

    /// Writes the last, partial piece and returns the inner writer.
    pub(crate) fn into_inner(mut self) -> std::io::Result<W> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf)?;
        }
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: std::io::Write> std::io::Write for ChunkWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() && bytes.len() >= WRITE_CHUNK {
            // Whole pieces straight from the caller's slice: a graph's 256 MB payload is not
            // copied through the buffer.
            let whole = bytes.len() - bytes.len() % WRITE_CHUNK;
            self.inner.write_all(&bytes[..whole])?;
            return Ok(whole);
        }
        let n = bytes.len().min(WRITE_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == WRITE_CHUNK {
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(n)
    }

    /// Does not pass a partial piece on (that would break the alignment of the ones after it);
    /// [`into_inner`](Self::into_inner) does at the end.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether the open file `f` is still the file at `path`.
fn still_at(f: &File, path: &Path) -> bool {
    still_names(file_key(f), path)
}

/// Copies `src` to a new file `dst`, an error naming the file that failed: the source for a
/// read, the copy for a write (a full disk is the copy's, not the model's).
pub(crate) fn copy_file(src: &Path, dst: &Path) -> Result<()> {
    use std::io::{Read, Write};
    let mut from = File::open(src).map_err(|e| Error::io(src, e))?;
    let to = File::create(dst).map_err(|e| Error::io(dst, e))?;
    let mut to = ChunkWriter::new(to);
    let mut buf = vec![0u8; WRITE_CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(src, e)),
        };
        to.write_all(&buf[..n]).map_err(|e| Error::io(dst, e))?;
    }
    to.into_inner().map_err(|e| Error::io(dst, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every piece `ChunkWriter` passes on is a whole aligned chunk but the last, whatever the
    /// sizes of the writes (a header, rows, a slice of several chunks mid-piece and at a chunk
    /// boundary), and the bytes arrive unchanged and in order.
    #[test]
    fn chunk_writer_passes_on_whole_aligned_chunks() {
        use std::io::Write;
        struct Pieces(Vec<Vec<u8>>);
        impl Write for Pieces {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                // At most 3 chunks per call: `write_all` must loop over short writes.
                let n = b.len().min(3 * WRITE_CHUNK);
                self.0.push(b[..n].to_vec());
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut want = Vec::new();
        let mut w = ChunkWriter::new(Pieces(Vec::new()));
        fn put(w: &mut ChunkWriter<Pieces>, want: &mut Vec<u8>, len: usize) {
            let bytes: Vec<u8> = (want.len()..want.len() + len)
                .map(|i| (i % 251) as u8)
                .collect();
            w.write_all(&bytes).unwrap();
            want.extend_from_slice(&bytes);
        }
        put(&mut w, &mut want, 64);
        for _ in 0..3000 {
            put(&mut w, &mut want, 1536);
        }
        put(&mut w, &mut want, 5 * WRITE_CHUNK + 3);
        let at_boundary = WRITE_CHUNK - want.len() % WRITE_CHUNK;
        put(&mut w, &mut want, at_boundary);
        put(&mut w, &mut want, 7 * WRITE_CHUNK);
        put(&mut w, &mut want, 100);
        w.flush().unwrap();
        let pieces = w.into_inner().unwrap().0;
        let mut at = 0;
        for (i, p) in pieces.iter().enumerate() {
            assert_eq!(at % WRITE_CHUNK, 0, "piece {i} starts at {at}");
            if i + 1 < pieces.len() {
                assert_eq!(p.len() % WRITE_CHUNK, 0, "piece {i} of {} bytes", p.len());
            }
            at += p.len();
        }
        assert_eq!(pieces.concat(), want);
        assert_eq!(pieces.last().unwrap().len(), want.len() % WRITE_CHUNK);
    }

    /// The pieces' combination is the CRC of the whole, for lengths around the piece size and
    /// for pools of 1 to 5 threads (which split the pieces differently); and so is `crc32`
    /// from outside a pool (in pieces) and on a worker (alone).
    #[test]
    fn crc32_in_pieces_is_the_crc32_of_the_whole() {
        use rand::{RngCore, SeedableRng};
        let mut bytes = vec![0u8; 5 * CRC_PIECE + 4099];
        rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(7).fill_bytes(&mut bytes);
        for threads in 1..=5 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for len in [
                0,
                1,
                CRC_PIECE,
                CRC_PIECE + 1,
                2 * CRC_PIECE - 1,
                3 * CRC_PIECE,
                bytes.len(),
            ] {
                let b = &bytes[bytes.len() - len..];
                assert_eq!(
                    pool.install(|| crc32_in_pieces(b)),
                    crc32fast::hash(b),
                    "{len} bytes on {threads} threads"
                );
                assert_eq!(pool.install(|| crc32(b)), crc32fast::hash(b));
            }
        }
        assert_eq!(crc32(&bytes), crc32fast::hash(&bytes));
    }
}
