//! [`Snapshot::copy_to`]: a copy of one generation of an index, written whole beside its
//! destination and put in place as a build puts a new index (`Index.save` in Python).

use std::path::Path;

use crate::builder::Staged;
use crate::error::{Error, Result, check_stop};
use crate::files::{LockWait, WaitLimits, sync_dir, sync_file};
use crate::index::OpenOptions;
use crate::live::Snapshot;
use crate::manifest::MANIFEST_FILE;

impl Snapshot {
    /// Copies this snapshot's generation of the index to the directory `out`, whatever writers
    /// have committed since it was opened: its files ([`files`](Self::files)), then the root
    /// manifest as this snapshot read it, which readers look at last. The copy is written in a
    /// temporary folder beside `out` and put in place whole, as [`IndexBuilder`] puts a new
    /// index: `out` may exist only with `overwrite` and only as an index holding nothing but
    /// bsa's files ([`check_replaceable`](crate::check_replaceable); replaced under its
    /// writers' lock, waited for as `wait` says) or an empty folder; a link
    /// there is kept and what it names replaced; `out` must not be inside an index. When a
    /// writer has removed a file of this generation (a compaction), the copy fails with
    /// [`Error::Io`] of kind `NotFound`, and when a rebuild has replaced its files with others
    /// of the same names, the copy (checked against this generation's checksums before it is
    /// put in place) fails too: never a mix of generations; open the index again and copy
    /// that. The [`stop`](LockWait::stop) flag of `wait` ends the copy between files, and the
    /// wait for the lock, with [`Error::Stopped`], leaving `out` as it was; so does its
    /// [`timeout`](LockWait::timeout) the wait, with [`Error::LockTimeout`]. The lock is taken
    /// once the copy is complete, as a build takes it (its holder may finish meanwhile), so a
    /// copy that times out has been written and is removed.
    ///
    /// [`IndexBuilder`]: crate::IndexBuilder
    ///
    /// ```
    /// use bsa_index::{live::Snapshot, pack, IndexBuilder, LockWait};
    /// # fn main() -> bsa_index::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let codes = pack::pack_le_bytes(&[0b0001, 0b0011], 2, 1, 4)?;
    /// IndexBuilder::new(4, &codes).build(dir.path().join("idx"))?;
    /// let snap = Snapshot::open(dir.path().join("idx"))?;
    /// snap.copy_to(&dir.path().join("backup"), false, LockWait::new())?;
    /// assert_eq!(Snapshot::open(dir.path().join("backup"))?.len(), 2);
    /// // There already, and not asked to overwrite: refused.
    /// assert!(snap.copy_to(&dir.path().join("backup"), false, LockWait::new()).is_err());
    /// # Ok(()) }
    /// ```
    pub fn copy_to(&self, out: &Path, overwrite: bool, wait: LockWait<'_>) -> Result<()> {
        let LockWait {
            on_wait,
            stop,
            timeout,
        } = wait;
        let stop = stop.as_deref();
        let staged = Staged::new(out, overwrite, false)?;
        let root = self.dir();
        for f in self.files() {
            check_stop(stop)?;
            let (from, to) = (root.join(f), staged.dir().join(f));
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            // A source gone is a writer's removal; other errors name the side that failed.
            crate::files::copy_file(&from, &to).map_err(|e| match &e {
                Error::Io { path, error }
                    if *path == from && error.kind() == std::io::ErrorKind::NotFound =>
                {
                    self.superseded(e)
                }
                _ => e,
            })?;
            sync_file(&to)?;
        }
        // The segment folders' entries made durable, as the files' data above.
        let folders: std::collections::BTreeSet<_> = self
            .files()
            .iter()
            .filter_map(|f| Path::new(f).parent().filter(|p| !p.as_os_str().is_empty()))
            .collect();
        for folder in folders {
            sync_dir(&staged.dir().join(folder))?;
        }
        let manifest = staged.dir().join(MANIFEST_FILE);
        std::fs::write(&manifest, self.manifest_bytes()).map_err(|e| Error::io(&manifest, e))?;
        sync_file(&manifest)?;
        sync_dir(staged.dir())?;
        check_stop(stop)?;
        // The files copied are this generation's only if their checksums are the ones its
        // manifests record: a rebuild of the index reuses the file names, so a snapshot opened
        // before one would otherwise copy the new files under its old manifest. The segments'
        // own manifests, which record their files' checksums, were copied from disk too: they
        // must be the ones this snapshot read, or the checks vouch for a rebuild's segments
        // of the same names and sizes under this generation's root.
        Snapshot::open_with(staged.dir(), OpenOptions::verify_checksums(true))
            .and_then(|copy| {
                copy.verify_model()?;
                match copy.segments().iter().zip(self.segments()).find(|(c, s)| {
                    c.name() != s.name() || c.index().manifest() != s.index().manifest()
                }) {
                    Some((c, _)) => Err(Error::corrupt(
                        staged.dir().join(c.name()).join(MANIFEST_FILE),
                        "not the segment manifest this snapshot read",
                    )),
                    None => Ok(()),
                }
            })
            .map_err(|e| match self.is_current() {
                Ok(true) => e.rebased(staged.dir(), self.dir()),
                _ => {
                    let changed = std::io::Error::other(
                        "changed by a writer after this snapshot of it was opened (a rebuild \
                         reuses its file names), so its files are no longer this generation's; \
                         open the index again and copy that",
                    );
                    Error::io(self.dir(), changed)
                }
            })?;
        check_stop(stop)?;
        let limits = WaitLimits { stop, timeout };
        staged.commit(|| on_wait.map_or((), |f| f()), limits)
    }
}
