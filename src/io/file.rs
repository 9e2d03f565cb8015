//! Files in and out: read-only memory maps and atomic writes (temporary file, sync, rename), for
//! every reader and writer of `io`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use memmap2::Mmap;

use crate::error::{Error, Result};

/// Opens `path` read-only and memory-maps it. Empty files are rejected (they cannot be mapped on
/// every platform, and no format read here is valid when empty).
pub(crate) fn map_file(path: &Path) -> Result<Mmap> {
    // Checked before the open, which on a pipe would wait for a writer: a pipe or a directory
    // cannot be mapped, and the map's own error ("No such device") would not say why.
    if let Some(what) = bsa_index::not_a_file(path).map_err(|e| Error::io(path, e))? {
        return Err(Error::format(
            path,
            format!(
                "{what}; bsa maps its input files: give the path of a file (write a pipe's output to one first)"
            ),
        ));
    }
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Err(Error::format(
            path,
            "the file is empty (0 bytes); it was probably not written completely: re-create it",
        ));
    }
    // SAFETY: the map is read-only and only ever read through `&[u8]`. Mapping a file is sound as
    // long as no one modifies or truncates it while the map is alive; that is a documented
    // requirement of `Embeddings` (and the other readers drop the map before returning). Length
    // checks are done against the map's own length, never against metadata read earlier.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(map)
}

/// Reads the file `path` whole, refusing devices and sockets first (`/dev/zero` would be read
/// until memory runs out) and a directory as the I/O error of that kind. A pipe is read (a
/// shell's `<(...)`, or `/dev/stdin` fed by one).
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("labels.txt"), "a\nb\n").unwrap();
/// assert_eq!(bsa::io::read_file(&dir.path().join("labels.txt")).unwrap(), b"a\nb\n");
/// let err = bsa::io::read_file(dir.path()).unwrap_err().to_string();
/// assert!(err.contains("a directory"), "{err}");
/// # #[cfg(unix)]
/// assert!(bsa::io::read_file(std::path::Path::new("/dev/zero")).is_err());
/// ```
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    let kind = fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .file_type();
    if kind.is_dir() {
        let e = std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "a directory; give the path of a file",
        );
        return Err(Error::io(path, e));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_char_device() || kind.is_block_device() || kind.is_socket() {
            return Err(Error::format(
                path,
                "a device or socket, not a file; give the path of a file",
            ));
        }
    }
    fs::read(path).map_err(|e| Error::io(path, e))
}

/// Whether `path` names one of this process's open files (`/dev/stdout`, `/dev/stderr`,
/// `/dev/fd/N`, `/proc/self/fd/N`), which an output goes to as the stream it is: a pipe is
/// written, a redirected file appended to, never replaced (a rename would swap the shell's
/// file for another, losing what `>>` kept in it).
fn is_own_stream(path: &Path) -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    let Some(p) = path.to_str() else { return false };
    let fd = |prefix: &str| {
        p.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    matches!(p, "/dev/stdout" | "/dev/stderr") || fd("/dev/fd/") || fd("/proc/self/fd/")
}

/// Opens one of [`is_own_stream`]'s paths for appending.
fn open_own_stream(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

/// The flag of [`abandon_writes_on`].
static ABANDON: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Makes every [`write_atomic`] of this process give up once `flag` is set: one that has not
/// yet begun writes nothing, and one whose write (or sync) ends after the flag was set removes
/// its temporary file instead of renaming it into place; either returns [`Error::Stopped`] and
/// leaves the file at its path as it was. For a program's signal handler (the `bsa` command
/// line's Ctrl-C): a process killed while it writes leaves its temporary file behind, where
/// one stopped this way leaves nothing. A write to a stream (a pipe, `/dev/stdout`, a
/// terminal) that has begun cannot be taken back and goes on. The first flag given stays: a
/// later call returns `false` and changes nothing. (For one write given its own flag, check
/// the flag in `write`'s closure and return an error: the temporary file goes as well.)
///
/// ```
/// use std::sync::{atomic::{AtomicBool, Ordering}, Arc};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("out.txt");
/// let stop = Arc::new(AtomicBool::new(false));
/// assert!(bsa::io::abandon_writes_on(Arc::clone(&stop)));
/// bsa::io::write_atomic(&path, |w| std::io::Write::write_all(w, b"old")).unwrap();
/// let written = bsa::io::write_atomic(&path, |w| {
///     std::io::Write::write_all(w, b"new")?;
///     stop.store(true, Ordering::SeqCst); // a signal handler's, while it writes
///     Ok(())
/// });
/// assert!(matches!(written, Err(bsa::Error::Stopped)));
/// assert_eq!(std::fs::read(&path).unwrap(), b"old");
/// assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1); // no temporary file
/// assert!(!bsa::io::abandon_writes_on(Arc::new(AtomicBool::new(false)))); // the first stays
/// ```
pub fn abandon_writes_on(flag: Arc<AtomicBool>) -> bool {
    ABANDON.set(flag).is_ok()
}

/// Writes a file atomically: `write` fills a temporary file in the target's directory, which is
/// flushed, synced and renamed over `path`. On any error the temporary file is removed and `path`
/// is left untouched, so a reader sees the old file or the new one, never half of one; the new
/// one gets the old one's permission bits (Unix; not its set-id bits), and only its owner can
/// read it until it is in place. A symbolic link at `path` is followed (the file it names is
/// replaced, the link kept); a character device (`/dev/null`, a terminal) is written in place,
/// as a stream, and so is one of the process's own open files named as such (`/dev/stdout`,
/// `/dev/stderr`, `/dev/fd/N`, `/proc/self/fd/N`: appended to, so a shell's `>>` keeps what the
/// file held); any other path that is not a regular file (a directory, block device, pipe or
/// socket) is refused before `write` runs, never renamed over. Temporary files that an earlier
/// write of `path` left when its process was killed or interrupted are removed. Once the flag
/// of [`abandon_writes_on`] is set, nothing is put in place ([`Error::Stopped`]).
///
/// ```
/// use std::io::Write;
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("results.txt");
/// bsa::io::write_atomic(&path, |w| w.write_all(b"done\n")).unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"done\n");
/// ```
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    write_atomic_unless(path, ABANDON.get().map(|f| &**f), write)
}

/// [`write_atomic`], given up once `stop` is set (see [`abandon_writes_on`]).
pub(super) fn write_atomic_unless(
    path: &Path,
    stop: Option<&AtomicBool>,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let stopped = || stop.is_some_and(|s| s.load(Ordering::SeqCst));
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let shown = path;
    if stopped() {
        return Err(Error::Stopped);
    }
    if is_own_stream(path) {
        let stream = (|| {
            let mut w = BufWriter::with_capacity(1 << 20, open_own_stream(path)?);
            write(&mut w)?;
            w.flush()
        })();
        return stream.map_err(|e| Error::io(shown, e));
    }
    let resolved = writable_target(path)?;
    let path = resolved.as_path();
    if is_char_device(path) {
        let stream = (|| {
            let file = OpenOptions::new().write(true).open(path)?;
            // What was opened, not what the path held a moment before: a regular file put
            // there since would be written over in place, untruncated.
            #[cfg(unix)]
            {
                use std::os::unix::fs::FileTypeExt;
                if !file.metadata()?.file_type().is_char_device() {
                    return Err(std::io::Error::other(
                        "changed from a device to something else while opened",
                    ));
                }
            }
            let mut w = BufWriter::with_capacity(1 << 20, file);
            write(&mut w)?;
            w.flush()
        })();
        return stream.map_err(|e| Error::io(shown, e));
    }
    let file_name = path.file_name().ok_or_else(|| {
        Error::InvalidArgument(format!("{} does not name a file to write", shown.display()))
    })?;
    let dir = bsa_index::parent_dir(path);
    let file_name = file_name.to_string_lossy();
    remove_stale_temps(dir, &file_name);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    // A file replaced keeps its permission bits (a private 0600 result stays private; not
    // set-id bits, and the owner is the writer's, as for any new file): its replacement is
    // made readable by its owner alone, so nobody else can open it while it is written, and
    // given the old file's mode once it is whole (see below).
    let old_mode = old_mode(path);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if old_mode.is_some() {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&tmp).map_err(|e| Error::io(shown, e))?;
    // Held until the rename: a process that cannot tell this one is running (another PID
    // namespace, another host on a shared folder) finds the file locked and leaves it.
    lock_temp(&file);
    let mut abandoned = false;
    let result = (|| {
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write(&mut w)?;
        w.flush()?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        if stopped() {
            // Asked to stop while writing (or syncing, which can take as long): the old file
            // stays, and the new one goes.
            abandoned = true;
            return Err(std::io::Error::from(std::io::ErrorKind::Interrupted));
        }
        // Whole now, it gets the old mode before it is in place (so readers the old file
        // allowed are not refused in between), with its owner's read and write kept until
        // after: a temporary file a kill leaves must stay removable.
        if let Some(mode) = old_mode {
            set_mode(&file, mode | 0o600);
        }
        fs::rename(&tmp, path)?;
        if let Some(mode) = old_mode.filter(|m| m & 0o600 != 0o600) {
            set_mode(&file, mode);
        }
        drop(file);
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        if abandoned {
            return Err(Error::Stopped);
        }
        return Err(Error::io(shown, e));
    }
    Ok(())
}

/// The permission bits (`rwx` for owner, group and others) of the regular file at `path`, if
/// there is one (Unix; `None` elsewhere).
fn old_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(path).ok().filter(|m| m.is_file())?;
        Some(meta.permissions().mode() & 0o777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Gives `file` the permission bits `mode` (Unix; nothing elsewhere, where [`old_mode`] is
/// `None`). Best effort: the data are written whatever the mode.
fn set_mode(file: &File, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = file.set_permissions(fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = (file, mode);
}

/// Removes the temporary files that writes of `file_name` in `dir` left when their process
/// ended before the rename (`.NAME.tmp-PID-N`, its process killed or stopped by Ctrl-C while
/// writing), so that they do not pile up beside the output. A write in progress keeps its
/// file: its process is running here (this one included), or it holds the file's lock (a
/// writer this process cannot see), or it made the file in the last [`STALE_AFTER`]. Best
/// effort, Unix only: a file that cannot be removed is left, as before.
fn remove_stale_temps(dir: &Path, file_name: &str) {
    #[cfg(unix)]
    {
        let prefix = format!(".{file_name}.tmp-");
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((pid, n)) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|rest| rest.split_once('-'))
            else {
                continue;
            };
            let (Ok(pid), true) = (pid.parse::<i32>(), n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= STALE_AFTER));
            if !(is_file && old && pid > 0 && !n.is_empty() && !process_running(pid)) {
                continue;
            }
            // Opened for writing: on NFS an exclusive flock is a byte-range lock, which needs it.
            let opened = OpenOptions::new().read(true).write(true).open(entry.path());
            if let Ok(f) = opened
                && lock_temp(&f)
            {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, file_name);
}

/// How old a temporary file of a process that is not running must be to be removed: its
/// writer makes it, then locks it, a moment apart.
#[cfg(unix)]
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// Takes the exclusive lock of a write's temporary file (`flock`) without waiting; whether it
/// was taken. Elsewhere than Unix, nothing (and `true`).
fn lock_temp(file: &File) -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor this `File` keeps open; no memory is touched.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        true
    }
}

/// Whether a process `pid` exists on this machine (signal 0 checks without sending one; a
/// process of another user answers EPERM, and exists).
#[cfg(unix)]
fn process_running(pid: i32) -> bool {
    // SAFETY: kill with signal 0 sends no signal and touches no memory.
    let sent = unsafe { libc::kill(pid, 0) } == 0;
    sent || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Whether `path` is a character device (`/dev/null`, a terminal): [`write_atomic`] writes it
/// in place, as a stream, having no file to replace (renaming over it would replace the device
/// itself, as root).
fn is_char_device(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// A temporary folder in `parent` named `PREFIX` and random characters, removed with what it
/// holds when dropped; its error, if it cannot be made, is the system's own ([`Error::Io`] of
/// `parent`, with its number and advice): tempfile says the system's message with the random
/// name it tried ("Read-only file system (os error 30) at path \".x-G07DLR\"") and no number, so
/// the folder is tried once more by `mkdir`, which fails the same way and says it plainly.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let staging = bsa::io::temp_dir_in(dir.path(), ".stage-")?;
/// assert!(staging.path().starts_with(dir.path()));
/// // A file is no folder to make one in: the system's error, said of the path given.
/// let file = dir.path().join("f");
/// std::fs::write(&file, b"")?;
/// let e = bsa::io::temp_dir_in(&file, ".stage-").unwrap_err();
/// assert!(e.to_string().starts_with(&format!("{}: Not a directory", file.display())), "{e}");
/// # Ok(()) }
/// ```
pub fn temp_dir_in(parent: &Path, prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .map_err(|e| {
            let probe = parent.join(format!("{prefix}{}", std::process::id()));
            match fs::create_dir(&probe) {
                // (A folder of that name left by a killed process is no answer: tempfile's.)
                Err(os)
                    if os.raw_os_error().is_some()
                        && os.kind() != std::io::ErrorKind::AlreadyExists =>
                {
                    Error::io(parent, os)
                }
                made => {
                    // Not the same failure (tempfile's was, say, a name clash): its own words.
                    if made.is_ok() {
                        let _ = fs::remove_dir(&probe);
                    }
                    Error::io(parent, e)
                }
            }
        })
}

/// The file [`write_atomic`] replaces for `path`: `path` itself, or the file a symbolic link
/// there names (made if the link dangles). Refused when it exists and is neither a regular
/// file nor a character device (`--out /dev/null` discards an output; renaming over a pipe
/// would replace it, and opening one with no reader waits for ever; over a directory it fails
/// late), when its folder does not exist, and when it is inside an index's directory
/// ([`bsa_index::check_outside_index`]: it would replace one of the index's files or be removed
/// by the index's next writer). A directory is an [`Error::Io`] of kind `IsADirectory` (as
/// [`read_file`]'s), the rest [`Error::InvalidArgument`].
pub fn writable_target(path: &Path) -> Result<std::path::PathBuf> {
    if is_own_stream(path) {
        // Written where the caller's shell pointed it (a pipe too), checked by opening it.
        open_own_stream(path).map_err(|e| Error::io(path, e))?;
        return Ok(path.to_path_buf());
    }
    // `out.npy/` (or `out.npy/.`) names a folder, as the OS takes it, where the path's file
    // name would write `out.npy`: refused as opening it for writing would be.
    let bytes = path.as_os_str().as_encoded_bytes();
    let separator = |b: Option<&u8>| b.is_some_and(|&c| std::path::is_separator(char::from(c)));
    let folder = separator(bytes.last())
        || (bytes.ends_with(b".")
            && separator(bytes.len().checked_sub(2).and_then(|i| bytes.get(i))));
    if folder && !path.is_dir() {
        let e = std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "ends in a path separator (or one and '.'), so it names a folder; an output is \
             written by replacing a file: give the path of a file",
        );
        return Err(Error::io(path, e));
    }
    let target = bsa_index::output_target(path).map_err(|e| Error::io(path, e))?;
    bsa_index::check_outside_index(&target).map_err(|e| match e {
        // Named as the caller gave it, not as the link resolved.
        bsa_index::Error::InvalidArgument(m) if target != path => {
            Error::InvalidArgument(format!("{} ({m})", path.display()))
        }
        bsa_index::Error::InvalidArgument(m) => Error::InvalidArgument(m),
        e => e.into(),
    })?;
    if is_char_device(&target) {
        return Ok(target);
    }
    if let Ok(Some(what)) = bsa_index::not_a_file(&target) {
        let why =
            format!("{what}; an output is written by replacing a file: give the path of a file");
        // A folder is the OS's own kind of error (Python: IsADirectoryError, as reading one is).
        if target.is_dir() {
            let e = std::io::Error::new(std::io::ErrorKind::IsADirectory, why);
            return Err(Error::io(path, e));
        }
        return Err(Error::InvalidArgument(format!("{}: {why}", path.display())));
    }
    let dir = bsa_index::parent_dir(&target);
    if !dir.is_dir() {
        // An I/O error of the kind the OS would give (Python: FileNotFoundError), said plainly.
        let missing = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "the folder {} does not exist; create it first",
                dir.display()
            ),
        );
        return Err(Error::io(path, missing));
    }
    Ok(target)
}
