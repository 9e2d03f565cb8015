//! The crate's error type.
//!
//! Every variant carries the evidence (the file, the numbers found and expected) and its message
//! says what failed, where, and what to do about it. The type is `Send + Sync + 'static`, so the
//! root crate can wrap it with `#[from]`.

use std::path::PathBuf;

/// What to do about a damaged file. A rebuild alone would lose the rows `bsa add` put in since
/// the build, so the copy comes first.
const REPAIR: &str = "restore the index from a copy, or rebuild it with `bsa build` (and add \
                      again the rows added since)";

/// What an [`Error::DimMismatch`] of rows given to a model ([`crate::model`]) says (`bsa` says
/// it with "dimension mismatch: " before it, as for every file given to a model).
pub const MODEL_DIM: &str = "the columns of the queries against the model's input dimension \
                             (embed with the same encoder the model was trained on, or train a \
                             model for this dimension)";

/// `std::result::Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while building, opening, verifying or searching an index.
///
/// The variants carry what a caller acts on, e.g. the damaged file to restore; the message says
/// it for a person:
///
/// ```
/// use bsa_index::{Error, Index, IndexBuilder};
/// # let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("idx");
/// IndexBuilder::new(64, &[1, 2, 3]).build(&path)?;
/// // One byte of the codes' payload changed after the build (bytes 0..64 are the header).
/// let file = path.join("codes.bin");
/// let mut bytes = std::fs::read(&file).unwrap();
/// bytes[64] ^= 1;
/// std::fs::write(&file, &bytes).unwrap();
/// match Index::open(&path) {
///     Err(Error::Checksum { path, .. }) => assert_eq!(path, file),
///     other => panic!("expected a checksum error, got {other:?}"),
/// }
/// let e = Index::open(&path).unwrap_err().to_string();
/// assert!(e.contains("codes.bin: checksum mismatch") && e.contains("restore the index"), "{e}");
/// assert!(matches!(Index::open(dir.path().join("none")), Err(Error::Io { .. })));
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed on `path`.
    #[error("{}: {error}{}", path.display(), io_hint(error))]
    Io {
        /// The file or directory being accessed.
        path: PathBuf,
        /// The underlying error (in the message, deliberately not a `source()`: callers print
        /// the whole chain, which would otherwise repeat it).
        error: std::io::Error,
    },

    /// The file does not start with the magic bytes of a bsa index file of the expected kind.
    #[error("{}: not a bsa index file (bad magic); point at a directory written by `bsa build`", path.display())]
    NotAnIndex {
        /// The offending file.
        path: PathBuf,
    },

    /// The file's format version is outside the range this build can read.
    #[error(
        "{}: format v{found} is not readable by bsa-index {} (reads v{oldest}..=v{newest}); {}",
        path.display(),
        env!("CARGO_PKG_VERSION"),
        if found > newest { "upgrade bsa or rerun `bsa build`" } else { "rerun `bsa build` to rewrite the index" }
    )]
    Version {
        /// The offending file.
        path: PathBuf,
        /// The version recorded in the file.
        found: u32,
        /// The oldest version this build reads.
        oldest: u32,
        /// The newest version this build reads.
        newest: u32,
    },

    /// The file needs a feature this build does not know (an incompatible-feature flag of a
    /// header, or a manifest's `incompat_features`): its checksum held, so it was written so,
    /// by a newer bsa.
    #[error(
        "{}: needs {feature}, unknown to bsa-index {}: it was written by a newer bsa; upgrade bsa \
         to read it",
        path.display(),
        env!("CARGO_PKG_VERSION")
    )]
    UnknownFeature {
        /// The offending file.
        path: PathBuf,
        /// What it needs, as its header or manifest names it.
        feature: String,
    },

    /// The file is shorter than its header or manifest says it must be.
    #[error("{}: truncated, need {need} bytes but the file has {have}; the copy is incomplete: {REPAIR}", path.display())]
    Truncated {
        /// The offending file.
        path: PathBuf,
        /// Bytes required.
        need: u64,
        /// Bytes present.
        have: u64,
    },

    /// A checksum did not match: the bytes changed after they were written.
    #[error("{}: checksum mismatch (expected {expected:#010x}, got {got:#010x}); the file is corrupt: {REPAIR}", path.display())]
    Checksum {
        /// The offending file.
        path: PathBuf,
        /// The checksum recorded when the file was written.
        expected: u32,
        /// The checksum of the bytes now present.
        got: u32,
    },

    /// The file is structurally invalid (inconsistent fields, bad JSON, unknown required feature, ...).
    #[error("{}: corrupt index file: {detail}; {REPAIR}", path.display())]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },

    /// A model file ([`crate::model`]) is damaged, foreign, or does not fit the index it is in.
    #[error("{}: {detail}", path.display())]
    Model {
        /// The model file.
        path: PathBuf,
        /// What is wrong and what to do about it.
        detail: String,
    },

    /// A row of a caller's float matrix (queries) holds a value a search cannot use: NaN,
    /// infinity, or (where cosine divides by it) a zero or overflowing norm.
    #[error("{}: row {row}: {detail}", path.display())]
    BadRow {
        /// The matrix's name (`"queries"`), or the file it came from.
        path: PathBuf,
        /// Zero-based row number.
        row: usize,
        /// What is wrong with it, and what to do.
        detail: String,
    },

    /// A caller-supplied array does not have the size the index needs.
    #[error("{what}: expected {expected}, got {got}{}", dim_hint(what))]
    DimMismatch {
        /// What was measured (e.g. "query words", "query dimension").
        what: String,
        /// The size the index needs.
        expected: usize,
        /// The size given.
        got: usize,
    },

    /// An argument is out of range or inconsistent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Another writer (an add, delete or compaction, or a build replacing the index) held the
    /// index's writers' lock for longer than the caller would wait
    /// ([`crate::LockWait::timeout`], [`crate::IndexBuilder::lock_timeout`]);
    /// nothing was changed. Try again once that writer has finished.
    #[error("{}", lock_timeout_message(dir, *timeout, holder.as_ref()))]
    LockTimeout {
        /// The index directory.
        dir: PathBuf,
        /// How long the caller would wait (and did).
        timeout: std::time::Duration,
        /// Who held the lock when the wait ended, as its `LOCK` file notes it.
        holder: Option<crate::lock_note::LockHolder>,
    },

    /// The caller asked the work to stop (e.g. [`crate::IndexBuilder::stop_when`]) and it did,
    /// leaving nothing behind: a build's temporary directory is removed, its target untouched.
    #[error("stopped before it finished, as asked; nothing was written")]
    Stopped,
}

/// [`Error::LockTimeout`]'s message: whose lock, who holds it, and how long the caller waited.
fn lock_timeout_message(
    dir: &std::path::Path,
    timeout: std::time::Duration,
    holder: Option<&crate::lock_note::LockHolder>,
) -> String {
    let holder = holder.map_or_else(
        || "an add, delete, compact or build replacing it".to_string(),
        ToString::to_string,
    );
    let (held, hint) = if timeout.is_zero() {
        ("holds its lock, and no wait was asked for".to_string(), "")
    } else {
        let secs = timeout.as_secs_f64();
        (
            format!("still held its lock after {secs} s of waiting"),
            ", or wait longer",
        )
    };
    format!(
        "{}: another writer of the index ({holder}) {held}, so nothing was changed: try again \
         once it has finished{hint}",
        dir.display()
    )
}

/// `Err(`[`Error::Stopped`]`)` once the caller's stop flag (if any) is set: the one check every
/// stoppable computation makes between its steps.
///
/// ```
/// use std::sync::atomic::AtomicBool;
/// assert!(bsa_index::check_stop(None).is_ok());
/// assert!(bsa_index::check_stop(Some(&AtomicBool::new(false))).is_ok());
/// let stop = AtomicBool::new(true);
/// assert!(matches!(bsa_index::check_stop(Some(&stop)), Err(bsa_index::Error::Stopped)));
/// ```
pub fn check_stop(stop: Option<&std::sync::atomic::AtomicBool>) -> Result<()> {
    match stop {
        Some(s) if s.load(std::sync::atomic::Ordering::Relaxed) => Err(Error::Stopped),
        _ => Ok(()),
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    pub(crate) fn model(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            detail: detail.into(),
        }
    }

    /// A copy of this error, for an outcome kept and said again ([`std::io::Error`] is not
    /// `Clone`: an I/O error's copy is made from its OS error number, or else has its kind and
    /// message).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Error::Io { path, error } => Error::io(
                path.clone(),
                match error.raw_os_error() {
                    // The number kept: `lacks_resources` and the hint read it.
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(error.kind(), format!("{error}{}", io_hint(error))),
                },
            ),
            Error::NotAnIndex { path } => Error::NotAnIndex { path: path.clone() },
            Error::Version {
                path,
                found,
                oldest,
                newest,
            } => Error::Version {
                path: path.clone(),
                found: *found,
                oldest: *oldest,
                newest: *newest,
            },
            Error::UnknownFeature { path, feature } => Error::UnknownFeature {
                path: path.clone(),
                feature: feature.clone(),
            },
            Error::Truncated { path, need, have } => Error::Truncated {
                path: path.clone(),
                need: *need,
                have: *have,
            },
            Error::Checksum {
                path,
                expected,
                got,
            } => Error::Checksum {
                path: path.clone(),
                expected: *expected,
                got: *got,
            },
            Error::Corrupt { path, detail } => Error::corrupt(path.clone(), detail.clone()),
            Error::Model { path, detail } => Error::model(path.clone(), detail.clone()),
            Error::BadRow { path, row, detail } => Error::BadRow {
                path: path.clone(),
                row: *row,
                detail: detail.clone(),
            },
            Error::DimMismatch {
                what,
                expected,
                got,
            } => Error::DimMismatch {
                what: what.clone(),
                expected: *expected,
                got: *got,
            },
            Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
            Error::LockTimeout {
                dir,
                timeout,
                holder,
            } => Error::LockTimeout {
                dir: dir.clone(),
                timeout: *timeout,
                holder: holder.clone(),
            },
            Error::Stopped => Error::Stopped,
        }
    }

    /// The same error, a path under `from` said as the same path under `to`: a check of a copy
    /// names the source's file, not the copy's (a temporary one, gone by the time it is read).
    pub(crate) fn rebased(mut self, from: &std::path::Path, to: &std::path::Path) -> Self {
        match &mut self {
            Error::Io { path, .. }
            | Error::NotAnIndex { path }
            | Error::Version { path, .. }
            | Error::UnknownFeature { path, .. }
            | Error::Truncated { path, .. }
            | Error::Checksum { path, .. }
            | Error::Corrupt { path, .. }
            | Error::Model { path, .. }
            | Error::BadRow { path, .. } => {
                rebase(path, from, to);
            }
            Error::LockTimeout { dir, .. } => rebase(dir, from, to),
            Error::DimMismatch { .. } | Error::InvalidArgument(_) | Error::Stopped => {}
        }
        self
    }

    /// The message without its advice to restore or rebuild the index, for a caller that gives
    /// advice of its own.
    pub(crate) fn cause(&self) -> String {
        let full = self.to_string();
        match full.strip_suffix(REPAIR) {
            Some(cause) => cause.trim_end_matches([':', ';', ' ']).to_string(),
            None => full,
        }
    }
}

/// `path` moved from under `from` to under `to` (`from` itself to `to`, no trailing `/`).
fn rebase(path: &mut PathBuf, from: &std::path::Path, to: &std::path::Path) {
    if let Ok(rest) = path.strip_prefix(from) {
        *path = match rest.as_os_str().is_empty() {
            true => to.to_path_buf(),
            false => to.join(rest),
        };
    }
}

/// What to do about a [`Error::DimMismatch`] of the queries (the usual cause); other sizes
/// (ids, norms, tables) are the caller's arithmetic, said by the numbers alone.
fn dim_hint(what: &str) -> &'static str {
    if what == MODEL_DIM {
        // Says what to do itself.
        ""
    } else if what.starts_with("float query") {
        // Rescoring compares the embedding itself with the stored vectors.
        "; rescoring takes the float embedding, of the stored vectors' dimension"
    } else if what.starts_with("query") {
        "; the queries must be encoded with the index's model / code size"
    } else {
        ""
    }
}

/// What to do about an I/O error, by its kind (none when there is nothing general to say), as
/// `"; ..."` to follow the error's own words: the hint of this crate's I/O errors, and of bsa's.
/// An error made with words of its own (`std::io::Error::new`, as bsa makes one for a file its
/// manifest lists but that is missing) says what to do itself, and gets none.
///
/// ```
/// let missing = std::fs::File::open("/no/such/file").unwrap_err();
/// assert_eq!(bsa_index::io_hint(&missing), "; check that the path exists");
/// let said = std::io::Error::new(std::io::ErrorKind::NotFound, "gone; open it again");
/// assert_eq!(bsa_index::io_hint(&said), "");
/// # #[cfg(target_os = "linux")]
/// assert!(bsa_index::io_hint(&std::io::Error::from_raw_os_error(24)).contains("ulimit -n"));
/// ```
pub fn io_hint(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind::*;
    if e.get_ref().is_some() {
        return "";
    }
    match e.kind() {
        NotFound => "; check that the path exists",
        PermissionDenied => "; check the permissions of the path and its folders",
        StorageFull | QuotaExceeded => {
            "; free space (or inodes) on its file system, or choose another"
        }
        ReadOnlyFilesystem => "; its file system is read-only: choose a writable place",
        ResourceBusy => {
            "; it is busy: if it is a mount point, give a folder inside it (an output folder \
             is replaced whole)"
        }
        FileTooLarge => "; past the file size limit (`ulimit -f`) or its file system's",
        InvalidFilename => {
            "; a name too long for its file system (bsa's temporary names add up to 26 \
             characters to it)"
        }
        _ if e.raw_os_error() == Some(EMFILE) && cfg!(unix) => {
            "; the process may open no more files: raise its limit (ulimit -n); an open index \
             with a graph holds one per segment, and bsa compact makes fewer segments"
        }
        _ if e.raw_os_error() == Some(ENFILE) && cfg!(unix) => {
            "; the system's open files are at its limit (fs.file-max): close some, or raise it"
        }
        _ => "",
    }
}

/// The OS error numbers of "too many open files" in the process (EMFILE) and in the system
/// (ENFILE): the same on Linux, the BSDs and macOS, and std has no kind for them.
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;

/// Whether `e` says that this process or machine lacks something, rather than that a file is
/// wrong: permission to read or write it, a free file descriptor, address space to map it.
/// `bsa verify` exits 2 on such an error, not 1 (damage): the index may well be intact.
///
/// ```
/// use std::io::{Error, ErrorKind};
/// assert!(bsa_index::lacks_resources(&Error::from(ErrorKind::PermissionDenied)));
/// assert!(!bsa_index::lacks_resources(&Error::from(ErrorKind::NotFound)));
/// # #[cfg(target_os = "linux")]
/// assert!(bsa_index::lacks_resources(&Error::from_raw_os_error(24))); // EMFILE
/// ```
pub fn lacks_resources(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), PermissionDenied | OutOfMemory) || too_many_open_files(e)
}

/// Whether `e` is EMFILE or ENFILE: the process's or the system's open files are at their limit.
fn too_many_open_files(e: &std::io::Error) -> bool {
    cfg!(unix) && matches!(e.raw_os_error(), Some(ENFILE | EMFILE))
}

/// Tests: `e` is an [`Error::UnknownFeature`] of `needs`, said with its one remedy.
#[cfg(test)]
pub(crate) fn assert_unknown_feature(e: &Error, needs: &str) {
    assert!(matches!(e, Error::UnknownFeature { .. }), "{e:?}");
    let s = e.to_string();
    assert!(
        s.contains(&format!("needs {needs}, unknown to bsa-index ")),
        "{s}"
    );
    assert!(
        s.ends_with(": it was written by a newer bsa; upgrade bsa to read it"),
        "{s}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_static<T: Send + Sync + 'static>() {}

    #[test]
    fn error_is_send_sync_static() {
        assert_send_sync_static::<Error>();
    }

    #[test]
    fn messages_name_file_and_fix() {
        let e = Error::Version {
            path: "idx/codes.bin".into(),
            found: 3,
            oldest: 1,
            newest: 2,
        };
        let s = e.to_string();
        assert!(s.contains("idx/codes.bin"), "{s}");
        assert!(s.contains("v3") && s.contains("v1..=v2"), "{s}");
        assert!(s.contains("upgrade bsa"), "{s}");
        let old = Error::Version {
            path: "x".into(),
            found: 0,
            oldest: 1,
            newest: 2,
        };
        assert!(old.to_string().contains("rerun `bsa build`"));
        let damaged = Error::corrupt("idx/seg-000001/codes.bin", "bad popcount");
        let s = damaged.to_string();
        assert!(s.starts_with("idx/seg-000001/codes.bin: corrupt index file: bad popcount;"));
        assert!(s.ends_with("restore the index from a copy, or rebuild it with `bsa build` (and add again the rows added since)"), "{s}");
    }

    #[test]
    fn io_errors_say_what_to_do_by_their_kind() {
        let msg = |kind: std::io::ErrorKind| {
            Error::io("idx/codes.bin", std::io::Error::from(kind)).to_string()
        };
        assert!(msg(std::io::ErrorKind::NotFound).ends_with("; check that the path exists"));
        assert!(
            msg(std::io::ErrorKind::StorageFull)
                .contains("free space (or inodes) on its file system")
        );
        assert!(msg(std::io::ErrorKind::ReadOnlyFilesystem).contains("read-only"));
        assert!(msg(std::io::ErrorKind::ResourceBusy).contains("give a folder inside it"));
        assert!(msg(std::io::ErrorKind::FileTooLarge).contains("ulimit -f"));
        // Nothing general to say: no advice that would mislead (a full disk is no permission).
        let other = msg(std::io::ErrorKind::Interrupted);
        assert!(
            other.starts_with("idx/codes.bin: ") && !other.contains("; "),
            "{other}"
        );
        // Words of its own: no general hint after them; a copy says what the original said.
        let said = std::io::Error::new(std::io::ErrorKind::NotFound, "gone; open it again");
        let said = Error::io("idx/graph.bin", said);
        assert!(said.to_string().ends_with("gone; open it again"), "{said}");
        let os = Error::io("idx/x", std::fs::File::open("/no/such/file").unwrap_err());
        assert!(
            os.to_string().ends_with("; check that the path exists"),
            "{os}"
        );
        for e in [said, os] {
            assert_eq!(e.duplicate().to_string(), e.to_string());
        }
    }
}
