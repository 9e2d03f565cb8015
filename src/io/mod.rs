//! Embedding file I/O: `.npy` (via [`npyz`]) and `.fvecs`.
//!
//! * [`Embeddings::open`] loads a 2-D float matrix. Little-endian C-order `float32` `.npy` files
//!   are memory-mapped with zero copy; `float16`, `float64`, big-endian and Fortran-order files are
//!   converted into an owned row-major `f32` buffer; `.fvecs` files are read into memory.
//! * [`write_f32`], [`write_u8`] and [`write_i32`] write 2-D `.npy` files atomically (a temporary
//!   file beside the target, then a rename), so readers never see a half-written file.
//! * [`read_u8`], [`read_i32`] and [`read_u64_ids`] read packed codes, ground truth and ids.
//!
//! Every malformed input (garbage bytes, a truncated file, the wrong dtype or rank, ...) is reported
//! as an [`Error`] naming the file, the problem and what to do; no input makes these functions panic.
//!
//! ```
//! # fn main() -> bsa::error::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("emb.npy");
//! bsa::io::write_f32(&path, 2, 3, &[1.0, 0.0, 0.0, 0.0, 2.0, 0.0])?;
//! let emb = bsa::io::Embeddings::open(&path)?;
//! assert_eq!((emb.n(), emb.dim()), (2, 3));
//! assert!(emb.is_mapped());
//! emb.check_finite()?;
//! emb.check_nonzero_norms()?;
//! emb.expect_dim(3)?;
//! # Ok(()) }
//! ```

mod fvecs;
pub mod model;
mod npy;

pub use npy::{read_i32, read_u64_ids, read_u8, write_f32, write_i32, write_u8};

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::Mmap;
use ndarray::ArrayView2;

use crate::error::{Error, Result};

/// The path reported for embeddings built with [`Embeddings::from_vec`].
const MEMORY_PATH: &str = "<memory>";

/// Float embeddings loaded from `.npy` (`float32`, `float16`, `float64`; 2-D; either byte order;
/// C or Fortran order) or `.fvecs`, held as row-major `f32`.
///
/// The data is either memory-mapped (little-endian C-order `float32` `.npy`, zero copy; see
/// [`Embeddings::is_mapped`]) or owned. A mapped file must not be modified or truncated by another
/// process while the `Embeddings` is alive.
///
/// Invariant: `n >= 1`, `dim >= 1` and the data holds exactly `n * dim` values.
///
/// ```
/// use bsa::io::Embeddings;
/// let emb = Embeddings::from_vec(2, 2, vec![1.0, 2.0, 3.0, 4.0]).unwrap();
/// assert_eq!(emb.row(1), &[3.0, 4.0]);
/// assert_eq!(emb.view()[[0, 1]], 2.0);
/// assert_eq!(emb.path().to_str(), Some("<memory>"));
/// ```
pub struct Embeddings {
    path: PathBuf,
    n: usize,
    dim: usize,
    storage: Storage,
}

enum Storage {
    /// `n * dim` native `f32` values at `map[offset..]`, 4-byte aligned (checked when built).
    Mapped { map: Mmap, offset: usize },
    /// Exactly `n * dim` values.
    Owned(Vec<f32>),
}

impl Embeddings {
    /// Opens an embedding file, choosing the format by extension: `.npy` or `.fvecs`
    /// (case-insensitive). Any other extension is an error.
    ///
    /// `.npy` files must hold a 2-D `float32`, `float16` or `float64` array with at least one row.
    /// Fortran-order arrays are transposed into an owned row-major buffer.
    ///
    /// ```no_run
    /// let emb = bsa::io::Embeddings::open("corpus.npy")?;
    /// println!("{} vectors of dimension {}", emb.n(), emb.dim());
    /// # Ok::<(), bsa::error::Error>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Embeddings> {
        let path = path.as_ref();
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("npy") => npy::open_embeddings(path),
            Some("fvecs") => fvecs::read_fvecs(path),
            Some("npz") => Err(Error::format(
                path,
                "unsupported extension '.npz' (a zip of arrays); extract the embedding array and \
                 save it alone with numpy.save('emb.npy', arr), or convert to .fvecs",
            )),
            Some(other) => Err(Error::format(
                path,
                format!(
                    "unsupported embedding file extension '.{other}'; expected .npy \
                     (float32/float16/float64, shape n x dim) or .fvecs"
                ),
            )),
            None => Err(Error::format(
                path,
                "the file name has no extension, so its format is unknown; name it *.npy \
                 (float32/float16/float64, shape n x dim) or *.fvecs",
            )),
        }
    }

    /// Builds embeddings from row-major data already in memory (tests, generated data).
    /// The path is reported as `<memory>`.
    ///
    /// Errors with [`Error::InvalidArgument`] if `n` or `dim` is 0 and with [`Error::DimMismatch`]
    /// if `data.len() != n * dim`.
    ///
    /// ```
    /// let emb = bsa::io::Embeddings::from_vec(1, 3, vec![0.5; 3]).unwrap();
    /// assert!(!emb.is_mapped());
    /// assert!(bsa::io::Embeddings::from_vec(2, 3, vec![0.5; 3]).is_err());
    /// ```
    pub fn from_vec(n: usize, dim: usize, data: Vec<f32>) -> Result<Embeddings> {
        if n == 0 || dim == 0 {
            return Err(Error::InvalidArgument(format!(
                "embeddings need at least one row and one column, got {n} x {dim}"
            )));
        }
        let expected = n.checked_mul(dim).ok_or_else(|| {
            Error::InvalidArgument(format!("{n} x {dim} embeddings overflow the address space"))
        })?;
        if data.len() != expected {
            return Err(Error::DimMismatch {
                what: format!("length of the data for {n} x {dim} embeddings"),
                expected,
                got: data.len(),
            });
        }
        Ok(Embeddings::owned(PathBuf::from(MEMORY_PATH), n, dim, data))
    }

    /// Owned embeddings; the caller has checked `n, dim >= 1` and `data.len() == n * dim`.
    pub(crate) fn owned(path: PathBuf, n: usize, dim: usize, data: Vec<f32>) -> Embeddings {
        debug_assert!(n >= 1 && dim >= 1 && data.len() == n * dim);
        Embeddings {
            path,
            n,
            dim,
            storage: Storage::Owned(data),
        }
    }

    /// Mapped embeddings; the caller has checked `n, dim >= 1` and that `map[offset..]` holds
    /// exactly `n * dim * 4` bytes starting at a 4-byte-aligned address.
    pub(crate) fn mapped(
        path: PathBuf,
        n: usize,
        dim: usize,
        map: Mmap,
        offset: usize,
    ) -> Embeddings {
        let emb = Embeddings {
            path,
            n,
            dim,
            storage: Storage::Mapped { map, offset },
        };
        debug_assert_eq!(emb.as_slice().len(), n * dim);
        emb
    }

    /// The file the embeddings came from (`<memory>` for [`Embeddings::from_vec`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of rows (vectors); at least 1.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Number of columns (the embedding dimension); at least 1.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// All `n * dim` values, row-major.
    ///
    /// ```
    /// let emb = bsa::io::Embeddings::from_vec(2, 1, vec![1.0, 2.0]).unwrap();
    /// assert_eq!(emb.as_slice(), &[1.0, 2.0]);
    /// ```
    pub fn as_slice(&self) -> &[f32] {
        match &self.storage {
            Storage::Owned(v) => v,
            Storage::Mapped { map, offset } => {
                // Length and alignment were checked with `try_cast_slice` before construction,
                // so this cast cannot fail.
                bytemuck::cast_slice(&map[*offset..*offset + self.n * self.dim * 4])
            }
        }
    }

    /// The data as an `n x dim` ndarray view.
    ///
    /// ```
    /// let emb = bsa::io::Embeddings::from_vec(2, 2, vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    /// assert_eq!(emb.view().dim(), (2, 2));
    /// ```
    pub fn view(&self) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((self.n, self.dim), self.as_slice())
            .expect("Embeddings invariant: data holds exactly n * dim values")
    }

    /// Row `i` (length `dim`).
    ///
    /// # Panics
    /// If `i >= n`.
    ///
    /// ```
    /// let emb = bsa::io::Embeddings::from_vec(2, 2, vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    /// assert_eq!(emb.row(0), &[1.0, 2.0]);
    /// ```
    pub fn row(&self, i: usize) -> &[f32] {
        assert!(i < self.n, "row {i} out of range for {} rows", self.n);
        &self.as_slice()[i * self.dim..(i + 1) * self.dim]
    }

    /// `true` if the data is memory-mapped from the file (zero copy), `false` if it is owned.
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped { .. })
    }

    /// Checks that every value is finite. The error is [`Error::BadRow`] naming the file, the first
    /// row holding a NaN or infinity, and the column.
    ///
    /// ```
    /// let emb = bsa::io::Embeddings::from_vec(2, 2, vec![1.0, 2.0, f32::NAN, 4.0]).unwrap();
    /// let err = emb.check_finite().unwrap_err().to_string();
    /// assert!(err.contains("row 1"), "{err}");
    /// ```
    pub fn check_finite(&self) -> Result<()> {
        for (row, values) in self.as_slice().chunks_exact(self.dim).enumerate() {
            if let Some(col) = values.iter().position(|v| !v.is_finite()) {
                let v = values[col];
                let what = if v.is_nan() {
                    "NaN (not a number)"
                } else if v > 0.0 {
                    "+infinity"
                } else {
                    "-infinity"
                };
                return Err(Error::BadRow {
                    path: self.path.clone(),
                    row,
                    detail: format!(
                        "column {col} is {what}; training and search need finite values: fix or \
                         drop this row (numpy: x[np.isfinite(x).all(axis=1)])"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Checks that every row has a positive, finite L2 norm (computed in `f64`, and required to be
    /// representable as a positive finite `f32`), as cosine similarity needs. The error is
    /// [`Error::BadRow`] naming the first offending row.
    ///
    /// ```
    /// let emb = bsa::io::Embeddings::from_vec(2, 2, vec![1.0, 2.0, 0.0, 0.0]).unwrap();
    /// let err = emb.check_nonzero_norms().unwrap_err().to_string();
    /// assert!(err.contains("row 1"), "{err}");
    /// ```
    pub fn check_nonzero_norms(&self) -> Result<()> {
        for (row, values) in self.as_slice().chunks_exact(self.dim).enumerate() {
            let norm = values
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt();
            let norm32 = norm as f32;
            if norm32 > 0.0 && norm32.is_finite() {
                continue;
            }
            let detail = if norm.is_nan() || norm.is_infinite() {
                "L2 norm is not finite (the row holds NaN, infinity or huge values); cosine \
                 similarity needs finite vectors: fix or drop this row"
                    .to_string()
            } else if norm == 0.0 {
                "L2 norm is 0 (an all-zero vector); cosine similarity is undefined for it: drop \
                 this row (numpy: x[np.linalg.norm(x, axis=1) > 0])"
                    .to_string()
            } else {
                format!(
                    "L2 norm {norm:e} is outside the float32 range, so the row cannot be \
                     normalised for cosine similarity: rescale or drop this row"
                )
            };
            return Err(Error::BadRow {
                path: self.path.clone(),
                row,
                detail,
            });
        }
        Ok(())
    }

    /// Checks that the embeddings have `expected` columns; [`Error::DimMismatch`] naming the file
    /// otherwise.
    ///
    /// ```
    /// let emb = bsa::io::Embeddings::from_vec(1, 128, vec![1.0; 128]).unwrap();
    /// let err = emb.expect_dim(384).unwrap_err().to_string();
    /// assert!(err.contains("has 128 columns, the model expects 384"), "{err}");
    /// ```
    pub fn expect_dim(&self, expected: usize) -> Result<()> {
        if self.dim == expected {
            return Ok(());
        }
        Err(Error::DimMismatch {
            what: format!(
                "{} has {} columns, the model expects {expected} (embed with the same encoder the \
                 model was trained on, or train a model for this dimension)",
                self.path.display(),
                self.dim
            ),
            expected,
            got: self.dim,
        })
    }
}

impl fmt::Debug for Embeddings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Embeddings")
            .field("path", &self.path)
            .field("n", &self.n)
            .field("dim", &self.dim)
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

/// Opens `path` read-only and memory-maps it. Empty files are rejected (they cannot be mapped on
/// every platform, and no format read here is valid when empty).
pub(crate) fn map_file(path: &Path) -> Result<Mmap> {
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

/// Writes a file atomically: `write` fills a temporary file in the target's directory, which is
/// flushed, synced and renamed over `path`. On any error the temporary file is removed and `path`
/// is left untouched.
pub(crate) fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = path.file_name().ok_or_else(|| {
        Error::InvalidArgument(format!("{} does not name a file to write", path.display()))
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::io(path, e))?;
    let result = (|| {
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write(&mut w)?;
        w.flush()?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emb(n: usize, dim: usize, data: Vec<f32>) -> Embeddings {
        Embeddings::from_vec(n, dim, data).unwrap()
    }

    #[test]
    fn from_vec_accessors() {
        let e = emb(2, 3, vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!((e.n(), e.dim()), (2, 3));
        assert_eq!(e.path(), Path::new("<memory>"));
        assert_eq!(e.row(1), &[4., 5., 6.]);
        assert_eq!(e.view()[[1, 2]], 6.0);
        assert!(!e.is_mapped());
        assert!(format!("{e:?}").contains("dim: 3"));
    }

    #[test]
    fn embeddings_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Embeddings>();
    }

    #[test]
    fn from_vec_rejects_bad_sizes() {
        assert!(matches!(
            Embeddings::from_vec(2, 3, vec![0.0; 5]),
            Err(Error::DimMismatch {
                expected: 6,
                got: 5,
                ..
            })
        ));
        assert!(matches!(
            Embeddings::from_vec(0, 3, vec![]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            Embeddings::from_vec(3, 0, vec![]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            Embeddings::from_vec(usize::MAX, 2, vec![]),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn row_out_of_range_panics() {
        emb(1, 1, vec![1.0]).row(1);
    }

    #[test]
    fn check_finite_names_nan_row() {
        let e = emb(3, 2, vec![1., 2., 3., 4., 5., f32::NAN]);
        let err = e.check_finite().unwrap_err();
        assert!(matches!(err, Error::BadRow { row: 2, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("row 2") && msg.contains("column 1") && msg.contains("NaN"),
            "{msg}"
        );
        assert!(msg.contains("<memory>"), "{msg}");
    }

    #[test]
    fn check_finite_names_inf_row() {
        let e = emb(3, 2, vec![1., 2., f32::NEG_INFINITY, 4., 5., f32::INFINITY]);
        let msg = e.check_finite().unwrap_err().to_string();
        assert!(msg.contains("row 1") && msg.contains("-infinity"), "{msg}");
        let e = emb(1, 2, vec![1., f32::INFINITY]);
        let msg = e.check_finite().unwrap_err().to_string();
        assert!(msg.contains("row 0") && msg.contains("+infinity"), "{msg}");
        emb(2, 1, vec![f32::MAX, f32::MIN_POSITIVE])
            .check_finite()
            .unwrap();
    }

    #[test]
    fn check_nonzero_norms_names_zero_row() {
        let e = emb(3, 2, vec![1., 0., 0., 0., 0., 1.]);
        let err = e.check_nonzero_norms().unwrap_err();
        assert!(matches!(err, Error::BadRow { row: 1, .. }), "{err:?}");
        assert!(err.to_string().contains("L2 norm is 0"), "{err}");
        // Not finite.
        let e = emb(2, 1, vec![1., f32::NAN]);
        let msg = e.check_nonzero_norms().unwrap_err().to_string();
        assert!(msg.contains("row 1") && msg.contains("not finite"), "{msg}");
        // Large and tiny values whose squares overflow/underflow f32 are still fine.
        emb(2, 2, vec![1e30, 1e30, 1e-30, 0.0])
            .check_nonzero_norms()
            .unwrap();
        // Norm above f32::MAX.
        let e = emb(1, 4, vec![f32::MAX; 4]);
        let msg = e.check_nonzero_norms().unwrap_err().to_string();
        assert!(msg.contains("outside the float32 range"), "{msg}");
    }

    #[test]
    fn expect_dim_names_file_and_sizes() {
        let e = emb(1, 128, vec![1.0; 128]);
        e.expect_dim(128).unwrap();
        let err = e.expect_dim(384).unwrap_err();
        assert!(
            matches!(
                err,
                Error::DimMismatch {
                    expected: 384,
                    got: 128,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("<memory> has 128 columns, the model expects 384"),
            "{msg}"
        );
    }

    #[test]
    fn open_rejects_unknown_extensions() {
        for name in ["emb.txt", "emb.npz", "emb"] {
            let err = Embeddings::open(name).unwrap_err();
            assert!(matches!(err, Error::Format { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(".npy") && msg.contains(".fvecs"), "{msg}");
        }
    }

    #[test]
    fn open_missing_file_is_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Embeddings::open(dir.path().join("missing.npy")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.npy"));
    }

    #[test]
    fn write_atomic_leaves_no_temp_file_and_keeps_target_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_atomic(&path, |w| w.write_all(b"first")).unwrap();
        write_atomic(&path, |w| w.write_all(b"second")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let err = write_atomic(&path, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("boom"));
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.bin")]);
    }
}
