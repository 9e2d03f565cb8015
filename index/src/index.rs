//! [`Index`]: an opened, memory-mapped index directory.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::bitmaps::{BitmapView, BitmapsLayout};
use crate::error::{Error, Result};
use crate::files::read_manifest_bytes;
use crate::files::{Section, check_listed_count, verify_plain_file};
use crate::format::{ElemKind, FileKind};
use crate::graph::GraphView;
use crate::hnsw::HnswGraph;
use crate::manifest::{GraphMetric, MANIFEST_FILE, Manifest, VectorDtype};
use crate::postings::{InvertedView, PostingsLayout};
use crate::score::Score;
use crate::search::Layouts;
use crate::search::rescore::{rescore, rescore_batch};
use crate::search::{
    CodesView, FlatParams, FlatSearcher, GraphParams, GraphSearcher, Hits, InvertedParams,
    InvertedSearcher, InvertedStats, SearchParams, Searcher,
};
use crate::sparse::{SparseLayout, SparseView};
use crate::vectors::Vectors;

/// How to open an index.
///
/// ```
/// use bsa_index::{Index, IndexBuilder, OpenOptions};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// IndexBuilder::new(64, &[1, 2, 3]).build(&path)?;
/// assert!(OpenOptions::default().verify_checksums);
/// // No checksums at open (headers, sizes and a structural pass); every byte checked later.
/// let index = Index::open_with(&path, OpenOptions::verify_checksums(false))?;
/// index.verify()?;
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Verify the full CRC-32 of every payload (codes, ids, vectors, model) before returning.
    ///
    /// On by default. This reads every byte once (about a second per 10 GB), which also warms the
    /// page cache; [`OpenOptions::lazy`] leaves the files only some searches read to those
    /// searches. For very large indexes that are opened often, set it to `false`: `open` then
    /// checks magic, version, header checksums, sizes and alignment, and the structure of the
    /// sparse codes and (unless lazy) the posting lists in one pass, and you can run
    /// [`Index::verify`] separately (`bsa verify`). The HNSW graph files are always verified when
    /// the graph is loaded, because the graph loader (hnsw_rs) does not tolerate bad bytes.
    pub verify_checksums: bool,
    /// Check the files only some searches read at the first search that reads them rather
    /// than at open ([`OpenOptions::lazy`]).
    pub lazy: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            verify_checksums: true,
            lazy: false,
        }
    }
}

impl OpenOptions {
    /// Options with checksum verification set to `verify`.
    ///
    /// ```
    /// use bsa_index::OpenOptions;
    /// assert_eq!(OpenOptions::verify_checksums(true), OpenOptions::default());
    /// assert!(!OpenOptions::verify_checksums(false).verify_checksums);
    /// ```
    pub fn verify_checksums(verify: bool) -> Self {
        OpenOptions {
            verify_checksums: verify,
            ..OpenOptions::default()
        }
    }

    /// Checks the files only some searches read when a search first reads them, not at open:
    /// the stored vectors (`vectors.bin`, often most of an index's bytes), which only rescoring
    /// reads, and the posting lists and their bitmaps (`inverted.bin`, `bitmaps.bin`), which
    /// only inverted searches read. Their checksums (with `verify_checksums`) and structure are
    /// then checked once, by the first search that needs them, so a one-shot search (`bsa
    /// search`) reads from disk only the files it uses. Everything a search reads is still
    /// checked before it is used, [`Index::vectors`] included.
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder, OpenOptions, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(4, &[0b0001, 0b0010]).vectors(&[1.0, 0.0, 0.0, 1.0], 2).build(&path)?;
    /// let index = Index::open_with(&path, OpenOptions::default().lazy(true))?;
    /// let hits = index.search_flat(&[0b0001], 2, &SearchParams::default())?;
    /// let best = index.rescore(&[0.0, 1.0], &hits[0], 1)?; // vectors.bin verified here
    /// assert_eq!(best.rows, vec![1]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn lazy(self, lazy: bool) -> Self {
        OpenOptions { lazy, ..self }
    }
}

/// An opened index: codes, ids and (optionally) vectors are memory-mapped, not copied.
///
/// `Index` is `Send + Sync`: open it once and search it from many threads at once.
///
/// ```
/// use bsa_index::{Index, IndexBuilder, SearchParams};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// // Three 8-bit codes (one u64 word each) with external ids.
/// IndexBuilder::new(8, &[0b0000_0001, 0b0000_0011, 0b1111_0000])
///     .ids(&[10, 20, 30])
///     .build(&path)?;
///
/// let index = Index::open(&path)?;
/// assert_eq!((index.len(), index.bits(), index.words_per_code()), (3, 8, 1));
/// assert_eq!(index.code(2), &[0b1111_0000]);
/// assert_eq!(index.ids(), &[10, 20, 30]);
///
/// let hits = index.search_flat(&[0b0000_0001], 2, &SearchParams::default())?;
/// assert_eq!(hits[0].ids, vec![10, 20]);
/// assert_eq!(hits[0].distances, vec![0, 1]);
///
/// // Send + Sync: one index serves many threads.
/// let far = std::thread::scope(|s| {
///     s.spawn(|| index.search_flat(&[0b1111_0000], 1, &SearchParams::default()))
///         .join()
///         .unwrap()
/// })?;
/// assert_eq!(far[0].ids, vec![30]);
/// # Ok::<(), bsa_index::Error>(())
/// ```
pub struct Index {
    pub(crate) dir: PathBuf,
    /// The directory's device and inode when the open began (Unix), for [`Index::is_at`].
    dir_identity: Option<(u64, u64)>,
    pub(crate) manifest: Manifest,
    pub(crate) codes: Section,
    pub(crate) ids: Section,
    pub(crate) vectors: Option<Section>,
    /// Whether the files only some searches read (vectors, posting lists, bitmaps) have their
    /// checksums verified at first use rather than at open ([`OpenOptions::lazy`]).
    checksums_at_first_use: bool,
    /// Once the first read (a rescoring, [`Index::vectors`]) has verified `vectors` (with
    /// `checksums_at_first_use`): the outcome.
    vectors_verified: OnceLock<Result<()>>,
    /// Posting lists, and the layout of their payload once checked (at open, or at first use
    /// with [`OpenOptions::lazy`]), or why the check failed.
    pub(crate) inverted: Option<(Section, OnceLock<Result<PostingsLayout>>)>,
    pub(crate) norms: Option<Section>,
    /// Per-code set bits and the layout of their payload (validated at open).
    pub(crate) sparse: Option<(Section, SparseLayout)>,
    /// Bitmap posting lists, and the layout of their payload once checked (as `inverted`).
    pub(crate) bitmaps: Option<(Section, OnceLock<Result<BitmapsLayout>>)>,
    pub(crate) hnsw: OnceLock<HnswGraph>,
    /// `graph.bin`, opened with the index and read at the first graph search: like the files
    /// mapped at open, it is held from the open on, so a live index's commit that removes it (a
    /// compaction) leaves an open index able to walk its graph.
    pub(crate) graph_file: Option<std::fs::File>,
    /// The codes in the layouts of the table scan and the slab scan, built at first use.
    pub(crate) layouts: Layouts,
}

/// `check`'s outcome, found once: later callers, and those that waited while it ran, read it
/// (an error, said again, without reading the file again).
fn checked_once<T>(cell: &OnceLock<Result<T>>, check: impl FnOnce() -> Result<T>) -> Result<&T> {
    cell.get_or_init(check).as_ref().map_err(Error::duplicate)
}

/// The offset of the first byte where `payload` and the bytes `write` produces (in pieces)
/// differ, counting a length difference; `None` when they are equal.
fn first_difference(
    payload: &[u8],
    write: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<u64>,
) -> Result<Option<usize>> {
    let (mut at, mut diff) = (0usize, None);
    write(&mut |piece: &[u8]| {
        if diff.is_none() {
            let have = payload.get(at..).unwrap_or_default();
            let same = have.iter().zip(piece).take_while(|(a, b)| a == b).count();
            if same < piece.len() {
                diff = Some(at + same);
            }
        }
        at += piece.len();
        Ok(())
    })?;
    Ok(diff.or((at != payload.len()).then_some(at.min(payload.len()))))
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dir", &self.dir)
            .field("n", &self.manifest.n)
            .field("bits", &self.manifest.bits)
            .field("vectors", &self.manifest.vectors)
            .field("hnsw", &self.manifest.hnsw.is_some())
            .finish()
    }
}

/// Opens an optional file that describes every code (`inverted.bin`, `sparse.bin`,
/// `bitmaps.bin`: `count` = codes, `width` = bits) and checks it against the manifest.
fn open_per_code_section(
    dir: &Path,
    manifest: &Manifest,
    name: &str,
    kind: FileKind,
) -> Result<Section> {
    let s = Section::open(dir.join(name), kind, &manifest.files[name])?;
    if s.header.count != manifest.n || s.header.width != manifest.bits {
        return Err(Error::corrupt(
            &s.path,
            format!(
                "describes {} codes of {} bits but the manifest says {} of {}",
                s.header.count, s.header.width, manifest.n, manifest.bits
            ),
        ));
    }
    Ok(s)
}

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let (path, bytes) = read_manifest_bytes(dir)?;
    Manifest::from_bytes(&bytes, &path)
}

impl Index {
    /// Opens the index directory `dir`, verifying all checksums (see [`OpenOptions`]).
    ///
    /// ```
    /// use bsa_index::{live::Writer, Index, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// assert_eq!(Index::open(&path)?.len(), 2);
    /// // Once a writer has changed it, the index has segments: open it as a `live::Snapshot`.
    /// Writer::open(&path)?.delete(&[0])?;
    /// assert!(Index::open(&path).is_err());
    /// assert_eq!(bsa_index::live::Snapshot::open(&path)?.len(), 1);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn open(dir: impl AsRef<Path>) -> Result<Index> {
        Self::open_with(dir, OpenOptions::default())
    }

    /// Whether this index is the one in `dir` now: opened from there, the directory the same
    /// one (not another put in its place, even during this index's open, which could have read
    /// the old manifest and the new files), and the codes file there the one mapped. Files are
    /// never rewritten once published, so the rest is the same too. Identities are inode
    /// numbers: sound on a local file system, where a mapped file keeps its number, not on a
    /// network one whose server may hand it to a file another host makes.
    pub(crate) fn is_at(&self, dir: &Path) -> bool {
        self.dir == dir
            && crate::files::still_names(self.dir_identity, dir)
            && self.codes.is_at(&dir.join(&self.manifest.segment().codes))
    }

    /// Opens the index directory `dir` with explicit options.
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder, OpenOptions};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let index = Index::open_with(&path, OpenOptions::verify_checksums(false))?;
    /// assert_eq!(index.codes(), &[1, 2]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn open_with(dir: impl AsRef<Path>, options: OpenOptions) -> Result<Index> {
        let dir = dir.as_ref().to_path_buf();
        // Before the manifest: a directory put in place of this one from here on is not it.
        let dir_identity = std::fs::metadata(&dir)
            .ok()
            .and_then(|m| crate::files::identity(&m));
        let manifest = read_manifest(&dir)?;
        let mpath = dir.join(MANIFEST_FILE);
        let seg = manifest.segment().clone();
        // Names were checked to be listed under `files` by Manifest::from_bytes.
        let info = |name: &str| manifest.files[name];

        let codes = Section::open(dir.join(&seg.codes), FileKind::Codes, &info(&seg.codes))?;
        let h = &codes.header;
        if h.count != manifest.n || h.width != manifest.bits {
            return Err(Error::corrupt(
                &codes.path,
                format!(
                    "holds {} codes of {} bits but the manifest says {} of {}",
                    h.count, h.width, manifest.n, manifest.bits
                ),
            ));
        }
        let ids = Section::open(dir.join(&seg.ids), FileKind::Ids, &info(&seg.ids))?;
        check_listed_count(&ids.path, "ids", ids.header.count, manifest.n)?;
        let vectors = match (&seg.vectors, &manifest.vectors) {
            (Some(name), Some(vi)) => {
                let s = Section::open(dir.join(name), FileKind::Vectors, &info(name))?;
                let want = vi.dtype.elem_kind();
                if s.header.count != manifest.n || s.header.width != vi.dim || s.header.elem != want
                {
                    return Err(Error::corrupt(
                        &s.path,
                        format!(
                            "holds {} vectors of dimension {} ({:?}) but the manifest says {} of {} ({:?})",
                            s.header.count,
                            s.header.width,
                            s.header.elem,
                            manifest.n,
                            vi.dim,
                            vi.dtype
                        ),
                    ));
                }
                Some(s)
            }
            (None, None) => None,
            _ => {
                return Err(Error::corrupt(
                    &mpath,
                    "a segment lists a vectors file but the manifest describes no stored \
                     vectors, or the other way round",
                ));
            }
        };
        let norms = match &manifest.norms {
            Some(ni) => {
                let s = Section::open(dir.join(&ni.file), FileKind::Norms, &info(&ni.file))?;
                if s.header.count != manifest.n {
                    return Err(Error::corrupt(
                        &s.path,
                        format!(
                            "holds {} norms but the manifest says {} codes",
                            s.header.count, manifest.n
                        ),
                    ));
                }
                Some(s)
            }
            None => None,
        };
        let inverted_section = match &manifest.inverted {
            Some(ii) => Some(open_per_code_section(
                &dir,
                &manifest,
                &ii.file,
                FileKind::Inverted,
            )?),
            None => None,
        };
        // Only opened here: its checks wait for the first graph search. A missing file is
        // reported then, as before, so that an index whose graph is gone still scans.
        let graph_file = manifest
            .graph_file()
            .and_then(|name| crate::files::open_regular(&dir.join(name)).ok());
        let mut index = Index {
            dir,
            dir_identity,
            manifest,
            codes,
            ids,
            vectors,
            checksums_at_first_use: options.verify_checksums && options.lazy,
            vectors_verified: OnceLock::new(),
            inverted: inverted_section.map(|s| (s, OnceLock::new())),
            norms,
            sparse: None,
            bitmaps: None,
            hnsw: OnceLock::new(),
            graph_file,
            layouts: Layouts::default(),
        };
        if let Some(si) = &index.manifest.sparse {
            let s = open_per_code_section(&index.dir, &index.manifest, &si.file, FileKind::Sparse)?;
            // Searches index tables with these values: always check the structure (one pass).
            let view = SparseView::from_payload(
                s.payload(),
                index.manifest.n,
                index.manifest.bits,
                &s.path,
            )?;
            check_listed_count(&s.path, "set bits", view.set_bits() as u64, si.set_bits)?;
            let layout = view.layout();
            index.sparse = Some((s, layout));
        }
        if let Some(bi) = &index.manifest.bitmaps {
            let s =
                open_per_code_section(&index.dir, &index.manifest, &bi.file, FileKind::Bitmaps)?;
            index.bitmaps = Some((s, OnceLock::new()));
        }
        if !options.lazy {
            // Searches index with the lists' values, so their structure is always checked (one
            // pass), even when checksums are skipped: bytes from disk never cause a panic.
            index.bitmaps_layout()?;
            index.inverted_layout()?;
        }
        if options.verify_checksums {
            index.verify_mapped(!options.lazy)?;
            index.verify_model_file()?;
        }
        Ok(index)
    }

    /// The bitmaps' layout, their structure (and, when deferred, their checksum) checked
    /// first: at open, or once, by the first search that reads them.
    fn bitmaps_layout(&self) -> Result<Option<&BitmapsLayout>> {
        let (Some((s, checked)), Some(bi)) = (&self.bitmaps, &self.manifest.bitmaps) else {
            return Ok(None);
        };
        let check = || -> Result<BitmapsLayout> {
            if self.checksums_at_first_use {
                s.verify(&self.manifest.files[&bi.file])?;
            }
            let (view, layout) = BitmapView::from_payload(
                s.payload(),
                self.manifest.n,
                self.manifest.bits,
                &s.path,
            )?;
            let set_bits: u64 = (0..view.bits())
                .map(|j| u64::from(view.column_count(j)))
                .sum();
            check_listed_count(&s.path, "set bits", set_bits, bi.set_bits)?;
            Ok(layout)
        };
        checked_once(checked, check).map(Some)
    }

    /// The posting lists' layout, checked first (as [`bitmaps_layout`](Self::bitmaps_layout)).
    fn inverted_layout(&self) -> Result<Option<&PostingsLayout>> {
        let (Some((s, checked)), Some(ii)) = (&self.inverted, &self.manifest.inverted) else {
            return Ok(None);
        };
        let check = || -> Result<PostingsLayout> {
            if self.checksums_at_first_use {
                s.verify(&self.manifest.files[&ii.file])?;
            }
            let view = InvertedView::from_payload(
                s.payload(),
                self.manifest.n,
                self.manifest.bits,
                &s.path,
            )?;
            let postings = view.postings_len() as u64;
            check_listed_count(&s.path, "postings", postings, ii.postings)?;
            Ok(view.layout())
        };
        checked_once(checked, check).map(Some)
    }

    /// The checksums [`OpenOptions::verify_checksums`] verifies at an open that is not lazy
    /// (what a writer checks before a change): the mapped files' and
    /// the model's (a segment keeps a format-1 index's model when it is first changed).
    pub(crate) fn verify_open_checksums(&self) -> Result<()> {
        self.verify_mapped(true)?;
        self.verify_model_file()
    }

    fn verify_model_file(&self) -> Result<()> {
        if let Some(m) = &self.manifest.model {
            verify_plain_file(&self.dir.join(&m.file), &self.manifest.files[&m.file])?;
        }
        Ok(())
    }

    /// The checksums of the mapped files: all, or (`all` false) those every search may read,
    /// not the vectors, posting lists and bitmaps ([`OpenOptions::lazy`]).
    fn verify_mapped(&self, all: bool) -> Result<()> {
        let f = &self.manifest.files;
        let seg = self.manifest.segment();
        self.codes.verify(&f[&seg.codes])?;
        self.ids.verify(&f[&seg.ids])?;
        if let (Some(s), Some(ni)) = (&self.norms, &self.manifest.norms) {
            s.verify(&f[&ni.file])?;
        }
        if let (Some((s, _)), Some(si)) = (&self.sparse, &self.manifest.sparse) {
            s.verify(&f[&si.file])?;
        }
        if !all {
            return Ok(());
        }
        self.verify_vectors()?;
        if let (Some((s, _)), Some(ii)) = (&self.inverted, &self.manifest.inverted) {
            s.verify(&f[&ii.file])?;
        }
        if let (Some((s, _)), Some(bi)) = (&self.bitmaps, &self.manifest.bitmaps) {
            s.verify(&f[&bi.file])?;
        }
        Ok(())
    }

    fn verify_vectors(&self) -> Result<()> {
        match (&self.vectors, &self.manifest.segment().vectors) {
            (Some(v), Some(name)) => v.verify(&self.manifest.files[name]),
            _ => Ok(()),
        }
    }

    /// Verifies every checksum of every file of the index, then what checksums cannot vouch for
    /// (a writer's bug would leave it under valid ones): ids unique (and the row numbers when
    /// `ids.bin` says so), norms finite and >= 0, f32 vectors finite, codes' padding bits zero,
    /// and posting lists, bitmaps and sparse codes equal to what the codes imply (built again,
    /// so a check of an index with them costs about as much memory as building them).
    /// O(size of the index).
    ///
    /// Returns the first mismatch as [`Error::Checksum`] (or [`Error::Truncated`]) naming the
    /// file, or as [`Error::Corrupt`] naming the file and the row or byte at fault.
    ///
    /// ```
    /// use bsa_index::{Error, Index, IndexBuilder, OpenOptions};
    /// use std::io::{Seek, SeekFrom, Write};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[1, 2, 3]).build(&path)?;
    /// Index::open(&path)?.verify()?;
    ///
    /// // Flip a bit of the first code (`codes.bin`: a 64-byte header, then the codes).
    /// let mut f = std::fs::OpenOptions::new().write(true).open(path.join("codes.bin")).unwrap();
    /// f.seek(SeekFrom::Start(64)).unwrap();
    /// f.write_all(&[0b11]).unwrap();
    /// drop(f);
    ///
    /// // Opened without checksums, the index looks fine; `verify` finds the damage.
    /// let index = Index::open_with(&path, OpenOptions::verify_checksums(false))?;
    /// assert_eq!(index.code(0), &[0b11]);
    /// assert!(matches!(index.verify(), Err(Error::Checksum { .. })));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn verify(&self) -> Result<()> {
        self.verify_copied()
            .and_then(|()| self.verify_derived())
            .map_err(|e| self.superseded(e))
    }

    /// `e` said as what it is when a file this index lists is gone because the directory
    /// changed since it was opened (a writer's first change makes the index segmented, moving
    /// its files into a segment): not "an incomplete copy". A [`Snapshot`](crate::live::Snapshot)
    /// follows such changes.
    fn superseded(&self, e: Error) -> Error {
        let Error::Io { path, error } = &e else {
            return e;
        };
        if error.kind() != std::io::ErrorKind::NotFound
            || read_manifest(&self.dir).is_ok_and(|m| m == self.manifest)
        {
            return e;
        }
        let gone = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "removed by a change to the index after this handle opened it (a writer's first \
             change moves the files into a segment); open the index again, or read it \
             through live::Snapshot, which follows changes",
        );
        Error::io(path, gone)
    }

    /// [`verify`](Self::verify) without comparing the posting lists, bitmaps and sparse codes
    /// with the codes: what a merge checks of the segments it copies rows from (it builds
    /// those structures again).
    pub(crate) fn verify_copied(&self) -> Result<()> {
        self.verify_mapped(true)?;
        let seg = self.manifest.segment();
        let mapped: Vec<&String> = [
            Some(&seg.codes),
            Some(&seg.ids),
            seg.vectors.as_ref(),
            self.manifest.norms.as_ref().map(|x| &x.file),
            self.manifest.inverted.as_ref().map(|x| &x.file),
            self.manifest.sparse.as_ref().map(|x| &x.file),
            self.manifest.bitmaps.as_ref().map(|x| &x.file),
        ]
        .into_iter()
        .flatten()
        .collect();
        let graph = self.manifest.graph_file();
        for (name, info) in &self.manifest.files {
            if !mapped.contains(&name) && Some(name) != graph {
                verify_plain_file(&self.dir.join(name), info)?;
            }
        }
        // A search opens the graph lazily: its header and neighbour lists are checked here
        // too, so that a graph a checksum cannot fault (a header rewritten with its own CRC
        // keeps the whole file's CRC) is found by a check and not by the first graph search.
        // It is read through the file held since the open, as a search reads it: a writer's
        // commit since may have removed the path (a compaction, a first change), which leaves
        // this index readable, and so checkable. A graph stored only as an hnsw_rs dump is not
        // converted here (its lists are built in memory), but its layout is checked against
        // the index's sizes, as its first load does.
        if let Some(name) = graph {
            match self.hnsw.get() {
                Some(loaded) => loaded.verify_again(&self.manifest.files[name])?,
                None => self.load_hnsw()?,
            }
        } else if let Some(info) = &self.manifest.hnsw {
            crate::hnsw::check_dump_layout(&self.dir, &self.manifest, info)?;
        }
        self.verify_values()
    }

    /// The payload rules a checksum cannot vouch for (a writer's bug would leave them with
    /// matching checksums, and searches would answer wrongly without an error): ids unique,
    /// norms finite and >= 0, f32 vectors finite, codes' bits past `bits` zero. (The repeat
    /// search sorts a copy of unsorted ids: 8 bytes a row for the check's length.)
    fn verify_values(&self) -> Result<()> {
        let seg = self.manifest.segment();
        let bad = |file: &str, detail: String| Error::corrupt(self.dir.join(file), detail);
        let ids = self.ids();
        if !ids.windows(2).all(|w| w[0] < w[1]) {
            // Older segments may hold their ids unsorted: sort a copy to find a repeat.
            let mut sorted = ids.to_vec();
            sorted.sort_unstable();
            if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return Err(bad(
                    &seg.ids,
                    format!("id {} is stored more than once; ids are unique", w[0]),
                ));
            }
        }
        if let (Some(norms), Some(ni)) = (self.norms(), &self.manifest.norms)
            && let Some((r, v)) = norms
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
        {
            return Err(bad(
                &ni.file,
                format!("the norm of row {r} is {v}; norms are finite and >= 0"),
            ));
        }
        if let (Some(v), Some(dim), Some(name)) =
            (self.stored_vectors(), self.vector_dim(), &seg.vectors)
        {
            let at = match v {
                Vectors::F32(x) => x.iter().position(|v| !v.is_finite()),
                // f16 rows are not checked: writers before 0.1.0 of 2026-12-04 stored values
                // beyond f16's range as infinities (FORMAT.md), and such indexes stay valid.
                Vectors::F16(_) => None,
            };
            if let Some(i) = at {
                return Err(bad(
                    name,
                    format!(
                        "row {}, column {} is not finite; stored vectors are",
                        i / dim.max(1),
                        i % dim.max(1)
                    ),
                ));
            }
        }
        if self.ids.header.flags & crate::format::flags::IDS_ARE_ROWS != 0
            && let Some(r) = (0..ids.len()).find(|&r| ids[r] != r as u64)
        {
            return Err(bad(
                &seg.ids,
                format!(
                    "flagged as holding the row numbers, but row {r} has id {}",
                    ids[r]
                ),
            ));
        }
        let (w, tail) = (self.words_per_code(), self.bits() % 64);
        if tail != 0 {
            let padding = !((1u64 << tail) - 1);
            if let Some(r) = (0..self.len()).find(|&r| self.code(r)[w - 1] & padding != 0) {
                return Err(bad(
                    &seg.codes,
                    format!("code {r} sets bits past bit {}; they are zero", self.bits()),
                ));
            }
        }
        Ok(())
    }

    /// The posting lists, bitmaps and sparse codes describe the codes of `codes.bin`: each is
    /// built again from the codes, as the builder built it, and compared byte for byte (their
    /// layout is a function of the codes). A writer's bug here would make the exact inverted
    /// search and the table scores answer wrongly under valid checksums.
    fn verify_derived(&self) -> Result<()> {
        let (codes, bits) = (self.codes(), self.bits());
        let differs = |section: &Section, at: Option<usize>| match at {
            None => Ok(()),
            Some(at) => Err(Error::corrupt(
                &section.path,
                format!(
                    "does not describe the codes of {} (first difference at payload byte \
                     {at}): a writer's bug or a file from another index",
                    self.manifest.segment().codes
                ),
            )),
        };
        if let Some((s, _)) = &self.inverted {
            let lists = crate::postings::InvertedLists::build(codes, bits)?;
            differs(
                s,
                first_difference(s.payload(), |out| lists.write_payload(out))?,
            )?;
        }
        if let Some((s, _)) = &self.bitmaps {
            let maps = crate::bitmaps::BitmapLists::build(codes, bits)?;
            differs(
                s,
                first_difference(s.payload(), |out| maps.write_payload(out))?,
            )?;
        }
        if let Some((s, _)) = &self.sparse {
            let sparse = crate::sparse::SparseCodes::build(codes, bits)?;
            differs(
                s,
                first_difference(s.payload(), |out| sparse.write_payload(out))?,
            )?;
        }
        Ok(())
    }

    /// The index directory.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let index = bsa_index::Index::open(&path)?;
    /// assert_eq!(index.dir(), path.as_path());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(100, &[1, 0, 2, 0]).build(&path)?; // two 100-bit codes
    /// let m = bsa_index::Index::open(&path)?.manifest().clone();
    /// assert_eq!((m.n, m.bits, m.words_per_code), (2, 100, 2));
    /// assert!(m.files.contains_key("codes.bin") && m.files.contains_key("ids.bin"));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Number of codes.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2, 3]).build(&path)?;
    /// let index = bsa_index::Index::open(&path)?;
    /// assert_eq!(index.len(), 3);
    /// assert!(!index.is_empty());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        // n <= u32::MAX (validated), so it fits in usize on 64-bit targets.
        self.manifest.n as usize
    }

    /// Whether the index holds no codes.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// // An index holds at least one code: the builder refuses none.
    /// assert!(bsa_index::IndexBuilder::new(64, &[]).build(&path).is_err());
    /// bsa_index::IndexBuilder::new(64, &[7]).build(&path)?;
    /// assert!(!bsa_index::Index::open(&path)?.is_empty());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.manifest.n == 0
    }

    /// Bits per code.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(12, &[0xfff, 0x001]).build(&path)?;
    /// let index = bsa_index::Index::open(&path)?;
    /// assert_eq!((index.bits(), index.words_per_code()), (12, 1));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn bits(&self) -> usize {
        self.manifest.bits as usize
    }

    /// `u64` words per code.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// // 130 bits take three words per code.
    /// bsa_index::IndexBuilder::new(130, &[1, 0, 0, 0, 0, 3]).build(&path)?;
    /// let index = bsa_index::Index::open(&path)?;
    /// assert_eq!((index.len(), index.words_per_code()), (2, 3));
    /// assert_eq!(index.codes().len(), index.len() * index.words_per_code());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn words_per_code(&self) -> usize {
        self.manifest.words_per_code as usize
    }

    /// All codes, row-major, `len() * words_per_code()` words (mapped, not copied).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(100, &[1, 0, 2, 1]).build(&path)?; // two codes of two words
    /// let index = bsa_index::Index::open(&path)?;
    /// assert_eq!(index.codes(), &[1, 0, 2, 1]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn codes(&self) -> &[u64] {
        // Alignment and length were checked with try_cast_slice in Section::open.
        bytemuck::cast_slice(self.codes.payload())
    }

    /// The code of `row`.
    ///
    /// # Panics
    /// If `row >= len()`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(100, &[1, 0, 2, 1]).build(&path)?;
    /// let index = bsa_index::Index::open(&path)?;
    /// assert_eq!(index.code(1), &[2, 1]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn code(&self, row: usize) -> &[u64] {
        let w = self.words_per_code();
        &self.codes()[row * w..(row + 1) * w]
    }

    /// External ids, one per row (row numbers if none were given at build time).
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// IndexBuilder::new(64, &[5, 6, 7]).ids(&[30, 10, 20]).build(dir.path().join("a"))?;
    /// let index = Index::open(dir.path().join("a"))?;
    /// // Rows are stored in id order, each with its code.
    /// assert_eq!(index.ids(), &[10, 20, 30]);
    /// assert_eq!(index.codes(), &[6, 7, 5]);
    /// // Without ids, a row's id is its number.
    /// IndexBuilder::new(64, &[5, 6, 7]).build(dir.path().join("b"))?;
    /// assert_eq!(Index::open(dir.path().join("b"))?.ids(), &[0, 1, 2]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn ids(&self) -> &[u64] {
        bytemuck::cast_slice(self.ids.payload())
    }

    /// Per-code norms for normalised table scores (`norms.bin`), if stored.
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[1, 2]).norms(&[0.5, 2.0]).build(&path)?;
    /// assert_eq!(Index::open(&path)?.norms(), Some(&[0.5, 2.0][..]));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn norms(&self) -> Option<&[f32]> {
        // Alignment and length were checked with try_cast_slice in Section::open.
        self.norms
            .as_ref()
            .map(|s| bytemuck::cast_slice(s.payload()))
    }

    /// Whether float vectors are stored (needed for rescoring).
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// IndexBuilder::new(64, &[1, 2]).vectors(&[1.0, 0.0, 0.0, 1.0], 2).build(dir.path().join("v"))?;
    /// assert!(Index::open(dir.path().join("v"))?.has_vectors());
    /// IndexBuilder::new(64, &[1, 2]).build(dir.path().join("no-v"))?;
    /// assert!(!Index::open(dir.path().join("no-v"))?.has_vectors());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn has_vectors(&self) -> bool {
        self.vectors.is_some()
    }

    /// Dimension of the stored vectors, if any.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).vectors(&[0.5; 6], 3).build(&path)?;
    /// assert_eq!(bsa_index::Index::open(&path)?.vector_dim(), Some(3));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn vector_dim(&self) -> Option<usize> {
        self.manifest.vectors.map(|v| v.dim as usize)
    }

    /// Element type of the stored vectors, if any.
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder, VectorDtype};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[1, 2])
    ///     .vectors(&[0.5; 4], 2)
    ///     .vector_dtype(VectorDtype::F16)
    ///     .build(&path)?;
    /// assert_eq!(Index::open(&path)?.vector_dtype(), Some(VectorDtype::F16));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn vector_dtype(&self) -> Option<VectorDtype> {
        self.manifest.vectors.map(|v| v.dtype)
    }

    /// Whether an HNSW graph is stored.
    ///
    /// ```
    /// # if cfg!(not(feature = "hnsw-rs")) { return Ok(()); } // a graph over the codes: hnsw_rs
    /// use bsa_index::{HnswParams, Index, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let codes: Vec<u64> = (0..32).map(|i| i * 0x0101).collect();
    /// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(&path)?;
    /// assert!(Index::open(&path)?.has_hnsw());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn has_hnsw(&self) -> bool {
        self.manifest.hnsw.is_some() || self.manifest.graph.is_some()
    }

    /// What the stored graph's neighbours are nearest by, if there is a graph.
    ///
    /// ```
    /// # if cfg!(not(feature = "hnsw-rs")) { return Ok(()); } // a graph over the codes: hnsw_rs
    /// use bsa_index::{manifest::GraphMetric, HnswParams, Index, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let codes: Vec<u64> = (0..32).map(|i| i * 0x0101).collect();
    /// // A graph built on the codes links rows by Hamming distance.
    /// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(dir.path().join("g"))?;
    /// assert_eq!(Index::open(dir.path().join("g"))?.graph_metric(), Some(GraphMetric::Hamming));
    /// IndexBuilder::new(64, &codes).build(dir.path().join("flat"))?;
    /// assert_eq!(Index::open(dir.path().join("flat"))?.graph_metric(), None);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn graph_metric(&self) -> Option<GraphMetric> {
        match (&self.manifest.graph, &self.manifest.hnsw) {
            (Some(g), _) => Some(g.metric),
            (None, Some(_)) => Some(GraphMetric::Hamming),
            (None, None) => None,
        }
    }

    /// Path of the model file copied into the index, if any.
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let model = dir.path().join("my-model.safetensors");
    /// std::fs::write(&model, b"model bytes").unwrap();
    /// IndexBuilder::new(64, &[1, 2]).model_file(&model).build(&path)?;
    /// let copied = Index::open(&path)?.model_path().unwrap();
    /// assert_eq!(copied, path.join("model.safetensors"));
    /// assert_eq!(std::fs::read(copied).unwrap(), b"model bytes");
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn model_path(&self) -> Option<PathBuf> {
        self.manifest.model.as_ref().map(|m| self.dir.join(&m.file))
    }

    /// The application's free-form manifest entry.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2])
    ///     .extra(serde_json::json!({"encoder": "bsa", "dim": 384}))
    ///     .build(&path)?;
    /// let index = bsa_index::Index::open(&path)?;
    /// assert_eq!(index.extra()["encoder"], "bsa");
    /// assert_eq!(index.extra()["dim"], 384);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn extra(&self) -> &serde_json::Value {
        &self.manifest.extra
    }
}

/// Views of the optional files, for searchers built by hand (see [`crate::search`]).
impl Index {
    /// The codes with their ids, norms and set bits, as every searcher reads them.
    ///
    /// ```
    /// use bsa_index::search::{FlatParams, FlatSearcher, Searcher};
    /// use bsa_index::{Index, IndexBuilder, Score, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).ids(&[10, 11, 12]).build(&path)?;
    /// let index = Index::open(&path)?;
    /// let view = index.codes_view();
    /// assert_eq!((view.len(), view.bits()), (3, 8));
    /// // A searcher built by hand on the view reports the index's ids.
    /// let flat = FlatSearcher::new(view, FlatParams::default());
    /// let (hits, _) = flat.search(&[0b0111], 2, &Score::Hamming, &SearchParams::default())?;
    /// assert_eq!(hits[0].ids, vec![12, 11]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn codes_view(&self) -> CodesView<'_> {
        CodesView::from_validated(
            self.codes(),
            self.bits(),
            self.ids(),
            self.norms(),
            self.sparse(),
            &self.layouts,
        )
    }

    /// The per-code set bits (`sparse.bin`), if stored.
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[0b1011, 1 << 63]).sparse(Some(true)).build(&path)?;
    /// let index = Index::open(&path)?;
    /// let sparse = index.sparse().unwrap();
    /// assert_eq!(sparse.row(0), &[0, 1, 3]);
    /// assert_eq!(sparse.row(1), &[63]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn sparse(&self) -> Option<SparseView<'_>> {
        self.sparse
            .as_ref()
            .map(|(s, l)| SparseView::from_validated(s.payload(), self.bits(), l))
    }

    /// Whether the index has posting lists (`inverted.bin`).
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// IndexBuilder::new(64, &[1, 2]).inverted(true).build(dir.path().join("inv"))?;
    /// assert!(Index::open(dir.path().join("inv"))?.has_inverted());
    /// IndexBuilder::new(64, &[1, 2]).build(dir.path().join("flat"))?;
    /// assert!(!Index::open(dir.path().join("flat"))?.has_inverted());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn has_inverted(&self) -> bool {
        self.inverted.is_some()
    }

    /// Whether the posting lists are stored as bitmaps too (`bitmaps.bin`).
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[1, 2]).inverted(true).bitmaps(Some(true)).build(&path)?;
    /// assert!(Index::open(&path)?.has_bitmaps());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn has_bitmaps(&self) -> bool {
        self.bitmaps.is_some()
    }

    /// The posting lists, if stored (with their bitmaps, if stored too).
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[0b1011, 1 << 63, 0, 1]).inverted(true).build(&path)?;
    /// let index = Index::open(&path)?;
    /// let lists = index.inverted()?.unwrap();
    /// assert_eq!(lists.list(0), &[0, 3]); // the rows with bit 0 set
    /// assert_eq!(lists.list(63), &[1]);
    /// assert!(lists.list(2).is_empty());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn inverted(&self) -> Result<Option<InvertedView<'_>>> {
        let (Some((s, _)), Some(l)) = (&self.inverted, self.inverted_layout()?) else {
            return Ok(None);
        };
        let lists = InvertedView::from_validated(s.payload(), self.len(), self.bits(), l);
        Ok(Some(lists.with_bitmaps(self.bitmaps()?)))
    }

    /// The posting lists as bitmaps (`bitmaps.bin`), if stored.
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[0b1011, 1 << 63, 0, 1])
    ///     .inverted(true)
    ///     .bitmaps(Some(true))
    ///     .build(&path)?;
    /// let index = Index::open(&path)?;
    /// let bitmaps = index.bitmaps()?.unwrap();
    /// assert_eq!((bitmaps.column_count(0), bitmaps.column_count(3)), (2, 1));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn bitmaps(&self) -> Result<Option<BitmapView<'_>>> {
        let (Some((s, _)), Some(l)) = (&self.bitmaps, self.bitmaps_layout()?) else {
            return Ok(None);
        };
        Ok(Some(BitmapView::from_validated(
            s.payload(),
            self.len(),
            self.bits(),
            l,
        )))
    }

    /// Loads the HNSW graph now (otherwise the first HNSW search loads it). Useful to keep the
    /// loading time out of search timings. Maps `graph.bin` and checks its checksum and every
    /// neighbour id; for an index without `graph.bin`, verifies and converts the hnsw_rs dump
    /// (with the `hnsw-rs` feature, on by default; without it, an error naming the index
    /// directory says so).
    ///
    /// ```
    /// # if cfg!(not(feature = "hnsw-rs")) { return Ok(()); } // a graph over the codes: hnsw_rs
    /// use bsa_index::{HnswParams, Index, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let codes: Vec<u64> = (0..32).map(|i| i * 0x0101).collect();
    /// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(&path)?;
    /// let index = Index::open(&path)?;
    /// index.load_hnsw()?; // checked and loaded now, not in the first search
    /// assert_eq!(index.graph()?.len(), 32);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn load_hnsw(&self) -> Result<()> {
        if self.hnsw.get().is_none() {
            let g = HnswGraph::load(&self.dir, &self.manifest, self.graph_file.as_ref())?;
            // Another thread may have won the race; both graphs are identical, keep the first.
            let _ = self.hnsw.set(g);
        }
        Ok(())
    }

    /// Whether the manifest lists a `graph.bin` that could not be opened with the index (a
    /// writer's commit removed it meanwhile, or it is gone): its first graph search says so.
    pub(crate) fn graph_unopened(&self) -> bool {
        self.manifest.graph_file().is_some() && self.graph_file.is_none()
    }

    /// The HNSW graph as flat neighbour lists (loading it first, see [`Index::load_hnsw`]).
    ///
    /// ```
    /// # if cfg!(not(feature = "hnsw-rs")) { return Ok(()); } // a graph over the codes: hnsw_rs
    /// use bsa_index::{HnswParams, Index, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let codes: Vec<u64> = (0..32).map(|i| i * 0x0101).collect();
    /// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(dir.path().join("g"))?;
    /// let index = Index::open(dir.path().join("g"))?;
    /// let graph = index.graph()?;
    /// assert_eq!(graph.len(), 32);
    /// let entry = graph.entry_point();
    /// assert!(graph.neighbours(entry, 0).iter().all(|&n| n < 32 && n != entry));
    /// // Without a graph, an error that says how to build one.
    /// IndexBuilder::new(64, &codes).build(dir.path().join("flat"))?;
    /// assert!(Index::open(dir.path().join("flat"))?.graph().is_err());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn graph(&self) -> Result<GraphView<'_>> {
        self.load_hnsw()?;
        // load_hnsw succeeded, so the cell is set.
        Ok(self.hnsw.get().expect("graph loaded").view())
    }

    /// The stored vectors, if any. Under a lazy open ([`OpenOptions::lazy`]) their checksum is
    /// verified here (or by a rescoring) the first time they are read: once, with the outcome
    /// kept, so a damaged `vectors.bin` is an error each time ([`Error::Checksum`] naming it),
    /// never bytes read unchecked.
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder, Vectors, VectorDtype};
    /// # let dir = tempfile::tempdir().unwrap();
    /// IndexBuilder::new(64, &[1, 2]).vectors(&[1.0, 0.0, 0.0, 1.0], 2).build(dir.path().join("a"))?;
    /// let index = Index::open(dir.path().join("a"))?;
    /// assert!(matches!(index.vectors()?, Some(Vectors::F32(v)) if v == [1.0, 0.0, 0.0, 1.0]));
    /// // f16 vectors come as their raw bits (1.0 is 0x3c00).
    /// IndexBuilder::new(64, &[1, 2])
    ///     .vectors(&[1.0, 0.0, 0.0, 1.0], 2)
    ///     .vector_dtype(VectorDtype::F16)
    ///     .build(dir.path().join("b"))?;
    /// let index = Index::open(dir.path().join("b"))?;
    /// assert!(matches!(index.vectors()?, Some(Vectors::F16(v)) if v == [0x3c00, 0, 0, 0x3c00]));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn vectors(&self) -> Result<Option<Vectors<'_>>> {
        if self.vectors.is_some() && self.checksums_at_first_use {
            checked_once(&self.vectors_verified, || self.verify_vectors())?;
        }
        Ok(self.stored_vectors())
    }

    /// The stored vectors as mapped, with no checksum verified here: for the checks that
    /// verify them first ([`Index::verify`], a writer's [`Index::verify_copied`]).
    pub(crate) fn stored_vectors(&self) -> Option<Vectors<'_>> {
        let s = self.vectors.as_ref()?;
        // Alignment and lengths were checked with try_cast_slice in Section::open.
        Some(match s.header.elem {
            ElemKind::F16 => Vectors::F16(bytemuck::cast_slice(s.payload())),
            _ => Vectors::F32(bytemuck::cast_slice(s.payload())),
        })
    }

    fn require_vectors(&self) -> Result<(Vectors<'_>, usize)> {
        match (self.vectors()?, self.vector_dim()) {
            (Some(v), Some(d)) => Ok((v, d)),
            _ => Err(Error::InvalidArgument(format!(
                "{}: the index stores no vectors, so it cannot rescore; rebuild it with vectors (bsa build --vectors; vectors=True from Python)",
                self.dir.display()
            ))),
        }
    }

    /// The flat searcher over this index.
    ///
    /// ```
    /// use bsa_index::search::{FlatParams, Searcher};
    /// use bsa_index::{Index, IndexBuilder, Score, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(4, &[0b0111, 0b0110, 0b1111]).build(&path)?;
    /// let index = Index::open(&path)?;
    /// let flat = index.flat_searcher(FlatParams::default());
    /// assert_eq!((flat.mode(), flat.rows()), ("flat", 3));
    /// let (hits, _) = flat.search(&[0b0110], 3, &Score::Hamming, &SearchParams::default())?;
    /// assert_eq!(hits[0].rows, vec![1, 0, 2]);
    /// assert_eq!(hits[0].distances, vec![0, 1, 2]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn flat_searcher(&self, params: FlatParams) -> FlatSearcher<'_> {
        FlatSearcher::new(self.codes_view(), params)
    }

    /// The inverted searcher over this index; fails if it has no posting lists.
    ///
    /// ```
    /// use bsa_index::search::{InvertedParams, Searcher};
    /// use bsa_index::{Index, IndexBuilder, Score, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let codes = [0b0111, 0b0110, 0b1111, 0b1000];
    /// IndexBuilder::new(4, &codes).inverted(true).build(dir.path().join("inv"))?;
    /// let index = Index::open(dir.path().join("inv"))?;
    /// let inverted = index.inverted_searcher(InvertedParams::default())?;
    /// let (hits, _) = inverted.search(&[0b0110], 2, &Score::Hamming, &SearchParams::default())?;
    /// assert_eq!(hits, index.search_flat(&[0b0110], 2, &SearchParams::default())?);
    /// // Without posting lists there is no inverted searcher.
    /// IndexBuilder::new(4, &codes).build(dir.path().join("flat"))?;
    /// let flat_only = Index::open(dir.path().join("flat"))?;
    /// assert!(flat_only.inverted_searcher(InvertedParams::default()).is_err());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn inverted_searcher(&self, params: InvertedParams) -> Result<InvertedSearcher<'_>> {
        let lists = self.inverted()?.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: the index has no posting lists; rebuild it with posting lists (bsa build --inverted; inverted=True from Python)",
                self.dir.display()
            ))
        })?;
        InvertedSearcher::new(self.codes_view(), lists, params)
    }

    /// The graph searcher over this index (loading the graph first); fails if it has none.
    ///
    /// ```
    /// # if cfg!(not(feature = "hnsw-rs")) { return Ok(()); } // a graph over the codes: hnsw_rs
    /// use bsa_index::search::{GraphParams, Searcher};
    /// use bsa_index::{HnswParams, Index, IndexBuilder, Score, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let codes: Vec<u64> = (0..32).map(|i| i * 0x0101).collect();
    /// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(&path)?;
    /// let index = Index::open(&path)?;
    /// let graph = index.graph_searcher(GraphParams::default().with_ef_search(Some(32)))?;
    /// assert_eq!(graph.mode(), "hnsw");
    /// let (hits, _) = graph.search(&[5 * 0x0101], 1, &Score::Hamming, &SearchParams::default())?;
    /// assert_eq!((hits[0].rows[0], hits[0].distances[0]), (5, 0));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn graph_searcher(&self, params: GraphParams) -> Result<GraphSearcher<'_>> {
        let built = match (&self.manifest.graph, &self.manifest.hnsw) {
            (Some(g), _) => Some(g.params),
            (None, Some(h)) => Some(h.params),
            (None, None) => None,
        };
        let ef = built.map(|p| p.ef_search).unwrap_or(64);
        let metric = self.graph_metric().unwrap_or(GraphMetric::Hamming);
        GraphSearcher::new(self.codes_view(), self.graph()?, params, ef, metric)
    }
}

/// Shortcuts: one call per mode with the options of [`SearchParams`].
impl Index {
    /// Exact k nearest codes by Hamming distance for each query.
    ///
    /// `queries` holds `nq * words_per_code()` words (packed like the index's codes, unused high
    /// bits zero). Returns one [`Hits`] per query, best first, ties by smaller row; `k > len()`
    /// returns every row. Runs on the current rayon pool.
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(4, &[0b0111, 0b0110, 0b1111, 0b0000]).ids(&[1, 2, 3, 4]).build(&path)?;
    /// let index = Index::open(&path)?;
    /// // Two queries, one word each: one `Hits` per query.
    /// let hits = index.search_flat(&[0b0111, 0b0000], 2, &SearchParams::default())?;
    /// assert_eq!((hits[0].ids.clone(), hits[0].distances.clone()), (vec![1, 2], vec![0, 1]));
    /// assert_eq!((hits[1].ids.clone(), hits[1].distances.clone()), (vec![4, 2], vec![0, 2]));
    /// // Range search: only codes within distance 1, however large `k` is.
    /// let near = SearchParams::default().with_max_distance(Some(1));
    /// assert_eq!(index.search_flat(&[0b0111], 10, &near)?[0].ids, vec![1, 2, 3]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn search_flat(
        &self,
        queries: &[u64],
        k: usize,
        params: &SearchParams,
    ) -> Result<Vec<Hits>> {
        self.search_flat_scored(queries, k, &Score::Hamming, params)
    }

    /// Exact k best codes for each query under any [`Score`] (see [`crate::score`]).
    ///
    /// [`Score::Hamming`] is [`search_flat`](Self::search_flat). Other scores rank by descending
    /// score, ties by smaller row, and set [`Hits::scores`]; [`Hits::distances`] still hold
    /// Hamming distances. A normalised [`Score::Table`] uses the norms stored in the index.
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder, Score, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(4, &[0b0001, 0b0010, 0b0110]).build(&path)?;
    /// let index = Index::open(&path)?;
    /// // One query's table: bit j of a code adds tables[j].
    /// let table = Score::Table { tables: &[1.0, 2.0, 4.0, 8.0], offsets: &[0.5], normalise: false };
    /// let hits = index.search_flat_scored(&[0b0000], 2, &table, &SearchParams::default())?;
    /// assert_eq!(hits[0].rows, vec![2, 1]);
    /// assert_eq!(hits[0].scores, Some(vec![6.5, 2.5]));
    /// assert_eq!(hits[0].distances, vec![2, 1]); // still Hamming distances to the query code
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn search_flat_scored(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        params: &SearchParams,
    ) -> Result<Vec<Hits>> {
        let flat = self.flat_searcher(FlatParams::default().with_split(params.split));
        Ok(flat.search(queries, k, score, params)?.0)
    }

    /// Exact k best codes for each query by inverted search: identical to
    /// [`search_flat_scored`](Self::search_flat_scored) (rows, distances, scores, ties by row),
    /// with statistics on how each query was answered (see [`crate::search::inverted`]).
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder, Score, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let codes: Vec<u64> = (0..100).map(|i| 1 << (i % 64)).collect(); // one bit each
    /// IndexBuilder::new(64, &codes).inverted(true).build(&path)?;
    /// let index = Index::open(&path)?;
    /// let queries = [0b1, 1 << 40];
    /// let p = SearchParams::default();
    /// let (hits, stats) = index.search_inverted(&queries, 3, &Score::Hamming, &p)?;
    /// assert_eq!(hits, index.search_flat_scored(&queries, 3, &Score::Hamming, &p)?);
    /// assert_eq!(hits[0].rows, vec![0, 64, 1]);
    /// assert_eq!(stats.inverted_queries + stats.flat_queries, 2);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn search_inverted(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        params: &SearchParams,
    ) -> Result<(Vec<Hits>, InvertedStats)> {
        params.resolved()?;
        let p = InvertedParams {
            force_inverted: params.force_inverted,
            split: params.split,
        };
        self.inverted_searcher(p)?
            .search_with_stats(queries, k, score, params)
    }

    /// Approximate k nearest codes by Hamming distance via the stored HNSW graph.
    ///
    /// Same input and output conventions as [`Index::search_flat`]: best first, ties by row. The
    /// walk's candidate list size is `params.ef_search` or the build-time default; the answer is
    /// the best `k` rows the walk scored (with `k` above `ef`, more than the list holds).
    /// Queries run in parallel on the current rayon pool. May return fewer than `k` hits. The
    /// algorithm is described in [`crate::search::graph`].
    ///
    /// ```
    /// # if cfg!(not(feature = "hnsw-rs")) { return Ok(()); } // a graph over the codes: hnsw_rs
    /// use bsa_index::{HnswParams, Index, IndexBuilder, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let codes: Vec<u64> = (0..64).map(|i| (1u64 << i) - 1).collect(); // i low bits set
    /// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(&path)?;
    /// let index = Index::open(&path)?;
    /// let p = SearchParams::default().with_ef_search(Some(64));
    /// let hits = index.search_hnsw(&[0b111], 3, &p)?;
    /// assert_eq!(hits[0].rows[0], 3);
    /// assert_eq!(hits[0].distances[0], 0);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn search_hnsw(
        &self,
        queries: &[u64],
        k: usize,
        params: &SearchParams,
    ) -> Result<Vec<Hits>> {
        params.resolved()?;
        crate::search::check_queries(queries, self.words_per_code(), self.bits())?;
        let graph = self.graph_searcher(GraphParams::default().with_ef_search(params.ef_search))?;
        Ok(graph.search(queries, k, &Score::Hamming, params)?.0)
    }

    /// Name of the distance kernel a flat search with `params` uses for this index on this CPU
    /// (for `--stats`, e.g. `"avx2-w16"`); fails as the search would on a family the CPU lacks.
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder, KernelFamily, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let index = Index::open(&path)?;
    /// let portable = SearchParams::default().with_kernel(Some(KernelFamily::Portable));
    /// assert_eq!(index.kernel_name(&portable)?, "portable-w1"); // one word per code
    /// assert!(!index.kernel_name(&SearchParams::default())?.is_empty());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn kernel_name(&self, params: &SearchParams) -> Result<&'static str> {
        self.flat_searcher(FlatParams::default())
            .kernel_name(params)
    }

    /// Re-ranks one query's hits by cosine similarity with `query` against the stored vectors
    /// and keeps the best `k` ([`crate::search::rescore`]).
    ///
    /// The result keeps each hit's row, id and Hamming distance and sets `scores`.
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// // Codes at equal Hamming distance from the query; their vectors tell them apart.
    /// let vectors = [1.0, 0.0, 0.6, 0.8, 0.0, 1.0]; // three rows of two floats
    /// IndexBuilder::new(4, &[0b0001, 0b0010, 0b0100]).vectors(&vectors, 2).build(&path)?;
    /// let index = Index::open(&path)?;
    /// let hits = index.search_flat(&[0b0000], 3, &SearchParams::default())?;
    /// assert_eq!(hits[0].rows, vec![0, 1, 2]); // ties: by row
    /// let best = index.rescore(&[0.0, 1.0], &hits[0], 2)?;
    /// assert_eq!(best.rows, vec![2, 1]);
    /// let scores = best.scores.unwrap(); // cosine similarities
    /// assert!(scores[0] == 1.0 && (scores[1] - 0.8).abs() < 1e-6);
    /// assert_eq!(best.distances, vec![1, 1]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn rescore(&self, query: &[f32], hits: &Hits, k: usize) -> Result<Hits> {
        let (vectors, dim) = self.require_vectors()?;
        rescore(vectors, dim, query, hits, k)
    }

    /// [`rescore`](Self::rescore) for many queries in parallel: `queries` holds `hits.len() * dim` floats.
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let vectors = [1.0, 0.0, 0.6, 0.8, 0.0, 1.0]; // three rows of two floats
    /// IndexBuilder::new(4, &[0b0001, 0b0010, 0b0100]).vectors(&vectors, 2).build(&path)?;
    /// let index = Index::open(&path)?;
    /// let hits = index.search_flat(&[0b0000, 0b0000], 3, &SearchParams::default())?;
    /// // Two float queries, one per `Hits`.
    /// let best = index.rescore_hits(&[0.0, 1.0, 1.0, 0.0], &hits, 1)?;
    /// assert_eq!((best[0].rows.clone(), best[1].rows.clone()), (vec![2], vec![0]));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn rescore_hits(&self, queries: &[f32], hits: &[Hits], k: usize) -> Result<Vec<Hits>> {
        let (vectors, dim) = self.require_vectors()?;
        rescore_batch(vectors, dim, queries, hits, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_send_sync() {
        fn f<T: Send + Sync>() {}
        f::<Index>();
    }
}
