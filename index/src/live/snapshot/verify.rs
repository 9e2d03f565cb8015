//! The checks of an open [`Snapshot`] (checksums, graphs, unique live ids, `next_id`, the
//! model file), and its errors said as "superseded" when a writer removed or replaced a file
//! after the snapshot was opened.

use crate::error::{Error, Result};
use crate::files::verify_plain_file;
use crate::live::meta::read_manifest_bytes;

use super::open::Snapshot;

impl Snapshot {
    /// Verifies every checksum of every file (segments, deletes, model) and, as
    /// [`Index::verify`] does in each segment, what checksums cannot vouch for: here also that
    /// no id is live in two segments (`bsa delete` would remove one of them, and searches could
    /// return an id twice) and that `next_id` is past every id.
    ///
    /// [`Index::verify`]: crate::index::Index::verify
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// use bsa_index::{Error, IndexBuilder, OpenOptions};
    /// use std::io::{Seek, SeekFrom, Write};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// Writer::open(&path)?.add(&NewRows::codes(&[3]), false)?;
    /// Snapshot::open(&path)?.verify()?;
    /// // Flip a bit of the new segment's codes (a 64-byte header, then the codes).
    /// let snap = Snapshot::open(&path)?;
    /// let codes = path.join(snap.segments()[1].name()).join("codes.bin");
    /// let mut f = std::fs::OpenOptions::new().write(true).open(codes).unwrap();
    /// f.seek(SeekFrom::Start(64)).unwrap();
    /// f.write_all(&[0b111]).unwrap();
    /// drop(f);
    /// let snap = Snapshot::open_with(&path, OpenOptions::verify_checksums(false))?;
    /// assert!(matches!(snap.verify(), Err(Error::Checksum { .. })));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn verify(&self) -> Result<()> {
        self.verify_all().map_err(|e| self.superseded(e))
    }

    /// Verifies the checksums [`Snapshot::open`] verifies (every mapped file of every segment,
    /// and the model; not the graphs, see [`load_graphs`](Self::load_graphs)), for a snapshot
    /// opened without them: cheaper than [`Snapshot::verify`],
    /// which also checks what checksums cannot vouch for. A writer checks this before a change
    /// ([`Writer::verify_checksums`](crate::live::Writer::verify_checksums)).
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// use bsa_index::{live::Snapshot, OpenOptions};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let snap = Snapshot::open_with(&path, OpenOptions::verify_checksums(false))?;
    /// snap.verify_checksums()?;
    /// # Ok(()) }
    /// ```
    pub fn verify_checksums(&self) -> Result<()> {
        let mapped = || -> Result<()> {
            for s in &self.segments {
                s.index.verify_open_checksums()?;
            }
            self.check_bridges_read()
        };
        // A v1 index's segment checks the model too, by path: replaced by a rebuild is said so.
        mapped().map_err(|e| self.file_superseded(e))?;
        self.verify_model()
    }

    /// Loads and checks every segment's HNSW graph now (its checksum and every neighbour id),
    /// which the first graph search would otherwise do: a server's warm-up, so that a damaged
    /// or missing graph fails here and the first query does not pay for loading. Segments
    /// without a graph are skipped.
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// # if cfg!(not(feature = "hnsw-rs")) { return Ok(()); } // a graph over the codes: hnsw_rs
    /// use bsa_index::{live::Snapshot, HnswParams, IndexBuilder};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("idx");
    /// let codes: Vec<u64> = (0..32).map(|i| i * 0x0101).collect();
    /// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(&path)?;
    /// let snap = Snapshot::open(&path)?;
    /// snap.load_graphs()?;
    /// // A graph damaged on disk is found by the warm-up, not by a query.
    /// let graph = path.join("graph.bin");
    /// let mut bytes = std::fs::read(&graph).unwrap();
    /// let last = bytes.len() - 1;
    /// bytes[last] ^= 1;
    /// std::fs::write(&graph, bytes).unwrap();
    /// assert!(Snapshot::open(&path)?.load_graphs().is_err());
    /// # Ok(()) }
    /// ```
    pub fn load_graphs(&self) -> Result<()> {
        let load = || -> Result<()> {
            for s in &self.segments {
                if s.index.has_hnsw() {
                    s.index.load_hnsw()?;
                }
            }
            Ok(())
        };
        load().map_err(|e| self.superseded(e))
    }

    /// `e`, a failure to read a file of this snapshot, as its caller should read it: a file
    /// gone because a writer has committed another generation since (a compaction removes the
    /// segments it merged) is said as such, with what to do, not as a damaged index or an
    /// incomplete copy. Other errors are returned as they are.
    pub(crate) fn superseded(&self, e: Error) -> Error {
        let Error::Io { path, error } = &e else {
            return e;
        };
        // A folder that cannot be read any more is no longer this generation either.
        if error.kind() != std::io::ErrorKind::NotFound || self.is_current().unwrap_or(false) {
            return e;
        }
        // The whole directory gone is no compaction's doing, and leaves nothing to open again.
        let why = match self.dir.try_exists() {
            Ok(false) => format!(
                "the index directory {} was removed (or moved) after this snapshot of it was \
                 opened",
                self.dir.display()
            ),
            _ => "removed by a change to the index after this snapshot of it was opened (a \
                  compaction, say); open the index again"
                .to_string(),
        };
        Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, why))
    }

    fn verify_all(&self) -> Result<()> {
        for s in &self.segments {
            s.index.verify()?;
        }
        self.check_bridges_read()?;
        if self.segments.len() > 1 {
            let mut live: Vec<u64> = self
                .segments
                .iter()
                .flat_map(|s| {
                    let ids = s.index.ids();
                    (0..ids.len()).filter(|&r| !s.is_deleted(r)).map(|r| ids[r])
                })
                .collect();
            live.sort_unstable();
            if let Some(w) = live.windows(2).find(|w| w[0] == w[1]) {
                let id = w[0];
                let holders: Vec<&str> = self
                    .segments
                    .iter()
                    .filter(|s| s.live_row_of(id).is_some())
                    .map(|s| s.name())
                    .collect();
                return Err(Error::corrupt(
                    self.dir.join(crate::manifest::MANIFEST_FILE),
                    format!(
                        "id {id} is live in more than one segment ({}); ids are unique over \
                         the live rows of all segments",
                        holders.join(", ")
                    ),
                ));
            }
        }
        // Rows added without ids get ids from `next_id` on: below an id in use, an add would
        // collide with it. (It saturates at u64::MAX, which may then be in use.)
        let largest = self.segments.iter().flat_map(|s| s.index.ids()).max();
        if let Some(&id) = largest.filter(|&&id| id >= self.next_id && self.next_id != u64::MAX) {
            return Err(Error::corrupt(
                self.dir.join(crate::manifest::MANIFEST_FILE),
                format!(
                    "next_id is {}, but id {id} is in the index; it is one past the largest id",
                    self.next_id
                ),
            ));
        }
        self.verify_model()
    }

    /// Verifies the checksum of the model file, if the index has one: a writer that encodes new
    /// rows with it checks it first (a small file, read whole anyway), as the rows a damaged
    /// model encodes would be committed under new, valid checksums.
    ///
    /// ```
    /// use bsa_index::{live::Snapshot, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let model = dir.path().join("m.safetensors");
    /// std::fs::write(&model, b"weights").unwrap();
    /// IndexBuilder::new(64, &[1, 2]).model_file(&model).build(&path)?;
    /// let snap = Snapshot::open(&path)?;
    /// snap.verify_model()?;
    /// // The model changed under the index: not the one its rows were encoded with.
    /// std::fs::write(snap.model_path().unwrap(), b"WEIGHTS").unwrap();
    /// assert!(snap.verify_model().is_err());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn verify_model(&self) -> Result<()> {
        if let (Some(p), Some(info)) = (&self.model, &self.model_info) {
            verify_plain_file(p, info).map_err(|e| self.file_superseded(e))?;
        }
        Ok(())
    }

    /// `e`, a file of this generation failing its manifest entry, as said to the caller: a
    /// file removed ([`Self::superseded`]), or the model (read by path) found replaced (a
    /// different length or CRC) since this snapshot was opened when the index is no longer
    /// this generation (a rebuild put its own model there), is said to be so; otherwise it is
    /// damage, `e`.
    pub(super) fn file_superseded(&self, e: Error) -> Error {
        let e = self.superseded(e);
        let path = match &e {
            Error::Checksum { path, .. }
            | Error::Corrupt { path, .. }
            | Error::Truncated { path, .. }
            | Error::Model { path, .. } => path.clone(),
            _ => return e,
        };
        // Only the model is read by path: a mapped file failing its checks is damage, whatever
        // writers committed since (they never change a mapped file, they write new ones).
        if self.model.as_deref() != Some(path.as_path()) || self.is_current().unwrap_or(true) {
            return e;
        }
        Error::model(
            &path,
            "replaced by a change to the index after this snapshot of it was opened (a \
             rebuild); open the index again",
        )
    }

    /// Whether the index directory still holds this snapshot's generation: `false` once a
    /// writer has committed another (an add, delete or compact, or a build that replaced the
    /// index; the [`generation`](Self::generation) number alone cannot tell, as a rebuilt index
    /// starts again at 0, and one of the same shape can have equal manifests: the files each
    /// segment maps are checked to be still in place too). One read of the root manifest and
    /// a look at each segment's folder and codes file: a server can ask before a batch of queries, or call
    /// [`reopen`](Self::reopen), which asks this first (a snapshot it holds keeps answering
    /// from its own generation meanwhile).
    ///
    /// ```
    /// use bsa_index::{live::Snapshot, live::Writer, pack, IndexBuilder};
    /// # fn main() -> bsa_index::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("idx");
    /// let codes = pack::pack_le_bytes(&[0b0001, 0b0011], 2, 1, 4)?;
    /// IndexBuilder::new(4, &codes).build(&path)?;
    /// let snap = Snapshot::open(&path)?;
    /// assert!(snap.is_current()?);
    /// Writer::open(&path)?.delete(&[0])?;
    /// assert!(!snap.is_current()?);
    /// assert!(Snapshot::open(&path)?.is_current()?);
    /// # Ok(()) }
    /// ```
    pub fn is_current(&self) -> Result<bool> {
        let (_, now) = read_manifest_bytes(&self.dir)?;
        // Equal manifests can list other files: a directory replaced by another index of the
        // same shape (same segment names, rows and generation) has equal manifest bytes.
        Ok(now == self.manifest_bytes && self.segments.iter().all(|s| s.index.is_at(&s.index.dir)))
    }

    /// The error of the first bridge file that could not be read at open and still cannot be
    /// read, if any. Each is read again: a passing error at open (too many open files) says
    /// nothing of the bridges after it.
    fn check_bridges_read(&self) -> Result<()> {
        for s in &self.segments {
            if let Some((_, Err(unread))) = &s.bridge {
                unread.read()?;
            }
        }
        Ok(())
    }
}
