//! [`Index`]: an opened, memory-mapped index directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::format::{ElemKind, FileKind, Header};
use crate::hnsw::HnswGraph;
use crate::inverted::{InvertedView, Layout};
use crate::manifest::{FileInfo, Manifest, VectorDtype, MANIFEST_FILE, MAX_MANIFEST_LEN};

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

/// One mapped binary file with its validated header.
#[derive(Debug)]
pub(crate) struct Section {
    pub(crate) path: PathBuf,
    pub(crate) map: Mmap,
    pub(crate) header: Header,
}

impl Section {
    pub(crate) fn open(path: PathBuf, kind: FileKind, info: &FileInfo) -> Result<Section> {
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        // SAFETY: the map is read-only; the index files are immutable once built (the builder
        // never rewrites a published file), so the mapped bytes do not change under us unless
        // another process truncates or rewrites the file, which is documented as unsupported.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        // The header is checked first so that a wrong or foreign file is reported as such.
        let header = Header::decode(&map, kind, len, &path)?;
        if len < info.len {
            return Err(Error::Truncated {
                path,
                need: info.len,
                have: len,
            });
        }
        if len != info.len {
            return Err(Error::corrupt(
                &path,
                format!("length {len} differs from the manifest's {}", info.len),
            ));
        }
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
        Ok(Section { path, map, header })
    }

    pub(crate) fn payload(&self) -> &[u8] {
        // Checked by `Section::open` (offset + len == file length == map length).
        let start = self.header.payload_offset as usize;
        &self.map[start..start + self.header.payload_len as usize]
    }

    /// Verifies the payload CRC and the whole-file CRC recorded in the manifest.
    pub(crate) fn verify(&self, info: &FileInfo) -> Result<()> {
        let got = crc32fast::hash(self.payload());
        if got != self.header.payload_crc {
            return Err(Error::Checksum {
                path: self.path.clone(),
                expected: self.header.payload_crc,
                got,
            });
        }
        let whole = file_crc(
            &self.map[..self.header.payload_offset as usize],
            got,
            self.header.payload_len,
        );
        if whole != info.crc32 {
            return Err(Error::Checksum {
                path: self.path.clone(),
                expected: info.crc32,
                got: whole,
            });
        }
        Ok(())
    }
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
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
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

/// Checks a whole non-mapped file (model, HNSW) against its manifest entry.
pub(crate) fn verify_plain_file(path: &Path, info: &FileInfo) -> Result<()> {
    let got = crc_of_file(path)?;
    if got.len < info.len {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            need: info.len,
            have: got.len,
        });
    }
    if got.len > info.len {
        return Err(Error::corrupt(
            path,
            format!("length {} exceeds the manifest's {}", got.len, info.len),
        ));
    }
    if got.crc32 != info.crc32 {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            expected: info.crc32,
            got: got.crc32,
        });
    }
    Ok(())
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
    pub(crate) inverted: Option<(Section, Layout)>,
    pub(crate) norms: Option<Section>,
    /// Per-code set bits and the layout of their payload (validated at open).
    pub(crate) sparse: Option<(Section, crate::sparse::Layout)>,
    /// Bitmap posting lists and the layout of their payload (validated at open).
    pub(crate) bitmaps: Option<(Section, crate::bitmaps::Layout)>,
    pub(crate) hnsw: OnceLock<HnswGraph>,
    /// The codes in the layout of the quantised table scan, built at first use (or why not).
    pub(crate) adc: OnceLock<std::result::Result<crate::adc::AdcCodes, String>>,
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
    use std::io::Read;
    let path = dir.join(MANIFEST_FILE);
    let f = File::open(&path).map_err(|e| Error::io(&path, e))?;
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
            adc: OnceLock::new(),
        };
        if let Some(si) = &index.manifest.sparse {
            let s = open_per_code_section(&index.dir, &index.manifest, &si.file, FileKind::Sparse)?;
            // Searches index tables with these values: always check the structure (one pass).
            let view = crate::sparse::SparseView::from_payload(
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
            let (view, layout) = crate::bitmaps::BitmapView::from_payload(
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

    fn verify_mapped(&self) -> Result<()> {
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

    /// Verifies every checksum of every file of the index (O(size of the index)).
    ///
    /// Returns the first mismatch as [`Error::Checksum`] (or [`Error::Truncated`]) naming the file.
    pub fn verify(&self) -> Result<()> {
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
        self.manifest.hnsw.is_some()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_crc_combines() {
        let a = b"header bytes".to_vec();
        let b = b"and the payload that follows".to_vec();
        let mut all = a.clone();
        all.extend_from_slice(&b);
        assert_eq!(
            file_crc(&a, crc32fast::hash(&b), b.len() as u64),
            crc32fast::hash(&all)
        );
    }

    #[test]
    fn index_is_send_sync() {
        fn f<T: Send + Sync>() {}
        f::<Index>();
    }
}
