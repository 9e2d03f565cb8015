//! [`Index`]: an opened, memory-mapped index directory.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::bitmaps::{BitmapView, BitmapsLayout};
use crate::error::{Error, Result};
use crate::files::read_manifest_bytes;
use crate::files::{verify_plain_file, Section};
use crate::format::{ElemKind, FileKind};
use crate::graph::GraphView;
use crate::hnsw::HnswGraph;
use crate::manifest::{GraphMetric, Manifest, VectorDtype, MANIFEST_FILE};
use crate::postings::{InvertedView, PostingsLayout};
use crate::score::Score;
use crate::search::rescore::{rescore, rescore_batch};
use crate::search::Layouts;
use crate::search::{
    CodesView, FlatParams, FlatSearcher, GraphParams, GraphSearcher, Hits, InvertedParams,
    InvertedSearcher, InvertedStats, SearchParams, Searcher,
};
use crate::sparse::{SparseLayout, SparseView};
use crate::vectors::Vectors;

/// How to open an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Verify the full CRC-32 of every payload (codes, ids, vectors, model) before returning.
    ///
    /// On by default. This reads every byte once (about a second per 10 GB), which also warms the
    /// page cache. For very large indexes that are opened often, set it to `false`: `open` then
    /// does only O(1) checks (magic, version, header checksums, sizes, alignment) and you can run
    /// [`Index::verify`] separately (`bsa verify`). The HNSW graph files are always verified when
    /// the graph is loaded, because the graph loader (hnsw_rs) does not tolerate bad bytes.
    pub verify_checksums: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            verify_checksums: true,
        }
    }
}

impl OpenOptions {
    /// Options with checksum verification set to `verify`.
    pub fn verify_checksums(verify: bool) -> Self {
        OpenOptions {
            verify_checksums: verify,
        }
    }
}

/// An opened index: codes, ids and (optionally) vectors are memory-mapped, not copied.
///
/// `Index` is `Send + Sync`: open it once and search it from many threads at once.
pub struct Index {
    pub(crate) dir: PathBuf,
    pub(crate) manifest: Manifest,
    pub(crate) codes: Section,
    pub(crate) ids: Section,
    pub(crate) vectors: Option<Section>,
    /// Posting lists and the layout of their payload (validated at open).
    pub(crate) inverted: Option<(Section, PostingsLayout)>,
    pub(crate) norms: Option<Section>,
    /// Per-code set bits and the layout of their payload (validated at open).
    pub(crate) sparse: Option<(Section, SparseLayout)>,
    /// Bitmap posting lists and the layout of their payload (validated at open).
    pub(crate) bitmaps: Option<(Section, BitmapsLayout)>,
    pub(crate) hnsw: OnceLock<HnswGraph>,
    /// `graph.bin`, opened with the index and read at the first graph search: like the files
    /// mapped at open, it is held from the open on, so a live index's commit that removes it (a
    /// compaction) leaves an open index able to walk its graph.
    pub(crate) graph_file: Option<std::fs::File>,
    /// The codes in the layouts of the table scan and the slab scan, built at first use.
    pub(crate) layouts: Layouts,
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
    pub fn open(dir: impl AsRef<Path>) -> Result<Index> {
        Self::open_with(dir, OpenOptions::default())
    }

    /// Opens the index directory `dir` with explicit options.
    pub fn open_with(dir: impl AsRef<Path>, options: OpenOptions) -> Result<Index> {
        let dir = dir.as_ref().to_path_buf();
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
        if ids.header.count != manifest.n {
            return Err(Error::corrupt(
                &ids.path,
                format!(
                    "holds {} ids but the manifest says {}",
                    ids.header.count, manifest.n
                ),
            ));
        }
        let vectors = match (&seg.vectors, &manifest.vectors) {
            (Some(name), Some(vi)) => {
                let s = Section::open(dir.join(name), FileKind::Vectors, &info(name))?;
                let want = match vi.dtype {
                    VectorDtype::F32 => ElemKind::F32,
                    VectorDtype::F16 => ElemKind::F16,
                };
                if s.header.count != manifest.n || s.header.width != vi.dim || s.header.elem != want
                {
                    return Err(Error::corrupt(
                        &s.path,
                        format!(
                            "holds {} vectors of dimension {} ({:?}) but the manifest says {} of {} ({:?})",
                            s.header.count, s.header.width, s.header.elem, manifest.n, vi.dim, vi.dtype
                        ),
                    ));
                }
                Some(s)
            }
            (None, None) => None,
            _ => return Err(Error::corrupt(&mpath, "vectors listed inconsistently")),
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
            manifest,
            codes,
            ids,
            vectors,
            inverted: None,
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
            if view.set_bits() as u64 != si.set_bits {
                return Err(Error::corrupt(
                    &s.path,
                    format!(
                        "holds {} set bits but the manifest says {}",
                        view.set_bits(),
                        si.set_bits
                    ),
                ));
            }
            let layout = view.layout();
            index.sparse = Some((s, layout));
        }
        if let Some(bi) = &index.manifest.bitmaps {
            let s =
                open_per_code_section(&index.dir, &index.manifest, &bi.file, FileKind::Bitmaps)?;
            let (view, layout) = BitmapView::from_payload(
                s.payload(),
                index.manifest.n,
                index.manifest.bits,
                &s.path,
            )?;
            let set_bits: u64 = (0..view.bits())
                .map(|j| u64::from(view.column_count(j)))
                .sum();
            if set_bits != bi.set_bits {
                return Err(Error::corrupt(
                    &s.path,
                    format!(
                        "holds {set_bits} set bits but the manifest says {}",
                        bi.set_bits
                    ),
                ));
            }
            index.bitmaps = Some((s, layout));
        }
        if let (Some(s), Some(ii)) = (inverted_section, &index.manifest.inverted) {
            // Search indexes with the lists' values, so their structure is always checked (one
            // pass), even when checksums are skipped: bytes from disk never cause a panic.
            let view = InvertedView::from_payload(
                s.payload(),
                index.manifest.n,
                index.manifest.bits,
                &s.path,
            )?;
            if view.postings_len() as u64 != ii.postings {
                return Err(Error::corrupt(
                    &s.path,
                    format!(
                        "holds {} postings but the manifest says {}",
                        view.postings_len(),
                        ii.postings
                    ),
                ));
            }
            let layout = view.layout();
            index.inverted = Some((s, layout));
        }
        if options.verify_checksums {
            index.verify_mapped()?;
            if let Some(m) = &index.manifest.model {
                verify_plain_file(&index.dir.join(&m.file), &index.manifest.files[&m.file])?;
            }
        }
        Ok(index)
    }

    /// The checksums [`OpenOptions::verify_checksums`] verifies at open, of the mapped files.
    pub(crate) fn verify_mapped(&self) -> Result<()> {
        let f = &self.manifest.files;
        let seg = self.manifest.segment();
        self.codes.verify(&f[&seg.codes])?;
        self.ids.verify(&f[&seg.ids])?;
        if let (Some(v), Some(name)) = (&self.vectors, &seg.vectors) {
            v.verify(&f[name])?;
        }
        if let (Some(s), Some(ni)) = (&self.norms, &self.manifest.norms) {
            s.verify(&f[&ni.file])?;
        }
        if let (Some((s, _)), Some(ii)) = (&self.inverted, &self.manifest.inverted) {
            s.verify(&f[&ii.file])?;
        }
        if let (Some((s, _)), Some(si)) = (&self.sparse, &self.manifest.sparse) {
            s.verify(&f[&si.file])?;
        }
        if let (Some((s, _)), Some(bi)) = (&self.bitmaps, &self.manifest.bitmaps) {
            s.verify(&f[&bi.file])?;
        }
        Ok(())
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
    pub fn verify(&self) -> Result<()> {
        self.verify_copied()?;
        self.verify_derived()
    }

    /// [`verify`](Self::verify) without comparing the posting lists, bitmaps and sparse codes
    /// with the codes: what a merge checks of the segments it copies rows from (it builds
    /// those structures again).
    pub(crate) fn verify_copied(&self) -> Result<()> {
        self.verify_mapped()?;
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
        for (name, info) in &self.manifest.files {
            if !mapped.contains(&name) {
                verify_plain_file(&self.dir.join(name), info)?;
            }
        }
        // A search opens the graph lazily: its header and neighbour lists are checked here
        // too, so that a graph a checksum cannot fault (a header rewritten with its own CRC
        // keeps the whole file's CRC) is found by a check and not by the first graph search.
        // A graph stored only as an hnsw_rs dump is left to that search: converting it is a
        // build's work, and hnsw_rs can end the process on a malformed dump (it calls exit).
        if self.manifest.graph_file().is_some() {
            self.load_hnsw()?;
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
        if let (Some(norms), Some(ni)) = (self.norms(), &self.manifest.norms) {
            if let Some((r, v)) = norms
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
            {
                return Err(bad(
                    &ni.file,
                    format!("the norm of row {r} is {v}; norms are finite and >= 0"),
                ));
            }
        }
        if let (Some(v), Some(dim), Some(name)) = (self.vectors(), self.vector_dim(), &seg.vectors)
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
        if self.ids.header.flags & crate::format::flags::IDS_ARE_ROWS != 0 {
            if let Some(r) = (0..ids.len()).find(|&r| ids[r] != r as u64) {
                return Err(bad(
                    &seg.ids,
                    format!(
                        "flagged as holding the row numbers, but row {r} has id {}",
                        ids[r]
                    ),
                ));
            }
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
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Number of codes.
    pub fn len(&self) -> usize {
        // n <= u32::MAX (validated), so it fits in usize on 64-bit targets.
        self.manifest.n as usize
    }

    /// Whether the index holds no codes.
    pub fn is_empty(&self) -> bool {
        self.manifest.n == 0
    }

    /// Bits per code.
    pub fn bits(&self) -> usize {
        self.manifest.bits as usize
    }

    /// `u64` words per code.
    pub fn words_per_code(&self) -> usize {
        self.manifest.words_per_code as usize
    }

    /// All codes, row-major, `len() * words_per_code()` words (mapped, not copied).
    pub fn codes(&self) -> &[u64] {
        // Alignment and length were checked with try_cast_slice in Section::open.
        bytemuck::cast_slice(self.codes.payload())
    }

    /// The code of `row`.
    ///
    /// # Panics
    /// If `row >= len()`.
    pub fn code(&self, row: usize) -> &[u64] {
        let w = self.words_per_code();
        &self.codes()[row * w..(row + 1) * w]
    }

    /// External ids, one per row (row numbers if none were given at build time).
    pub fn ids(&self) -> &[u64] {
        bytemuck::cast_slice(self.ids.payload())
    }

    /// Per-code norms for normalised table scores (`norms.bin`), if stored.
    pub fn norms(&self) -> Option<&[f32]> {
        // Alignment and length were checked with try_cast_slice in Section::open.
        self.norms
            .as_ref()
            .map(|s| bytemuck::cast_slice(s.payload()))
    }

    /// Whether float vectors are stored (needed for rescoring).
    pub fn has_vectors(&self) -> bool {
        self.vectors.is_some()
    }

    /// Dimension of the stored vectors, if any.
    pub fn vector_dim(&self) -> Option<usize> {
        self.manifest.vectors.map(|v| v.dim as usize)
    }

    /// Element type of the stored vectors, if any.
    pub fn vector_dtype(&self) -> Option<VectorDtype> {
        self.manifest.vectors.map(|v| v.dtype)
    }

    /// Whether an HNSW graph is stored.
    pub fn has_hnsw(&self) -> bool {
        self.manifest.hnsw.is_some() || self.manifest.graph.is_some()
    }

    /// What the stored graph's neighbours are nearest by, if there is a graph.
    pub fn graph_metric(&self) -> Option<GraphMetric> {
        match (&self.manifest.graph, &self.manifest.hnsw) {
            (Some(g), _) => Some(g.metric),
            (None, Some(_)) => Some(GraphMetric::Hamming),
            (None, None) => None,
        }
    }

    /// Path of the model file copied into the index, if any.
    pub fn model_path(&self) -> Option<PathBuf> {
        self.manifest.model.as_ref().map(|m| self.dir.join(&m.file))
    }

    /// The application's free-form manifest entry.
    pub fn extra(&self) -> &serde_json::Value {
        &self.manifest.extra
    }
}

/// Views of the optional files, for searchers built by hand (see [`crate::search`]).
impl Index {
    /// The codes with their ids, norms and set bits, as every searcher reads them.
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
    pub fn sparse(&self) -> Option<SparseView<'_>> {
        self.sparse
            .as_ref()
            .map(|(s, l)| SparseView::from_validated(s.payload(), self.bits(), l))
    }

    /// Whether the index has posting lists (`inverted.bin`).
    pub fn has_inverted(&self) -> bool {
        self.inverted.is_some()
    }

    /// The posting lists, if stored (with their bitmaps, if stored too).
    pub fn inverted(&self) -> Option<InvertedView<'_>> {
        self.inverted.as_ref().map(|(s, l)| {
            InvertedView::from_validated(s.payload(), self.len(), self.bits(), l)
                .with_bitmaps(self.bitmaps())
        })
    }

    /// The posting lists as bitmaps (`bitmaps.bin`), if stored.
    pub fn bitmaps(&self) -> Option<BitmapView<'_>> {
        self.bitmaps
            .as_ref()
            .map(|(s, l)| BitmapView::from_validated(s.payload(), self.len(), self.bits(), l))
    }

    /// Loads the HNSW graph now (otherwise the first HNSW search loads it). Useful to keep the
    /// loading time out of search timings. Maps `graph.bin` and checks its checksum and every
    /// neighbour id; for an index without `graph.bin`, verifies and converts the hnsw_rs dump.
    pub fn load_hnsw(&self) -> Result<()> {
        if self.hnsw.get().is_none() {
            let g = HnswGraph::load(&self.dir, &self.manifest, self.graph_file.as_ref())?;
            // Another thread may have won the race; both graphs are identical, keep the first.
            let _ = self.hnsw.set(g);
        }
        Ok(())
    }

    /// The HNSW graph as flat neighbour lists (loading it first, see [`Index::load_hnsw`]).
    pub fn graph(&self) -> Result<GraphView<'_>> {
        self.load_hnsw()?;
        // load_hnsw succeeded, so the cell is set.
        Ok(self.hnsw.get().expect("graph loaded").view())
    }

    /// The stored vectors, if any.
    pub fn vectors(&self) -> Option<Vectors<'_>> {
        let s = self.vectors.as_ref()?;
        // Alignment and lengths were checked with try_cast_slice in Section::open.
        Some(match s.header.elem {
            ElemKind::F16 => Vectors::F16(bytemuck::cast_slice(s.payload())),
            _ => Vectors::F32(bytemuck::cast_slice(s.payload())),
        })
    }

    fn require_vectors(&self) -> Result<(Vectors<'_>, usize)> {
        match (self.vectors(), self.vector_dim()) {
            (Some(v), Some(d)) => Ok((v, d)),
            _ => Err(Error::InvalidArgument(format!(
                "{}: the index stores no vectors, so it cannot rescore; rebuild it with vectors (bsa build --vectors; vectors=True from Python)",
                self.dir.display()
            ))),
        }
    }

    /// The flat searcher over this index.
    pub fn flat_searcher(&self, params: FlatParams) -> FlatSearcher<'_> {
        FlatSearcher::new(self.codes_view(), params)
    }

    /// The inverted searcher over this index; fails if it has no posting lists.
    pub fn inverted_searcher(&self, params: InvertedParams) -> Result<InvertedSearcher<'_>> {
        let lists = self.inverted().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: the index has no posting lists; rebuild it with posting lists (bsa build --inverted; inverted=True from Python)",
                self.dir.display()
            ))
        })?;
        InvertedSearcher::new(self.codes_view(), lists, params)
    }

    /// The graph searcher over this index (loading the graph first); fails if it has none.
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
    pub fn kernel_name(&self, params: &SearchParams) -> Result<&'static str> {
        self.flat_searcher(FlatParams::default())
            .kernel_name(params)
    }

    /// Re-ranks one query's hits by cosine similarity with `query` against the stored vectors
    /// and keeps the best `k` ([`crate::search::rescore`]).
    ///
    /// The result keeps each hit's row, id and Hamming distance and sets `scores`.
    pub fn rescore(&self, query: &[f32], hits: &Hits, k: usize) -> Result<Hits> {
        let (vectors, dim) = self.require_vectors()?;
        rescore(vectors, dim, query, hits, k)
    }

    /// [`rescore`](Self::rescore) for many queries in parallel: `queries` holds `hits.len() * dim` floats.
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
