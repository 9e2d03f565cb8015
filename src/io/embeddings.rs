//! [`Embeddings`]: a float matrix held as row-major `f32`, memory-mapped or owned. The readers
//! (`npy`, `fvecs`) build it and sit above it; [`Embeddings::open`], which picks the reader by
//! extension, is in `io/mod.rs`, above both.

use std::fmt;
use std::path::{Path, PathBuf};

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
        self.check_rows_by(nonfinite_detail)
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
        self.check_rows_by(norm_detail)
    }

    /// The first row that is not [`plainly_fine`] and that `detail` finds fault with, as
    /// [`Error::BadRow`] naming this file ([`check_finite`](Self::check_finite),
    /// [`check_nonzero_norms`](Self::check_nonzero_norms)).
    fn check_rows_by(&self, detail: impl Fn(&[f32]) -> Option<String>) -> Result<()> {
        for (row, values) in self.as_slice().chunks_exact(self.dim).enumerate() {
            if plainly_fine(values) {
                continue;
            }
            if let Some(detail) = detail(values) {
                return Err(Error::BadRow {
                    path: self.path.clone(),
                    row,
                    detail,
                });
            }
        }
        Ok(())
    }

    /// [`off_unit_length`] of these rows.
    ///
    /// ```
    /// let emb = bsa::io::Embeddings::from_vec(3, 2, vec![0.6, 0.8, 3.0, 4.0, 0.0, 0.5]).unwrap();
    /// let off = emb.off_unit_length().unwrap();
    /// assert_eq!((off.rows, off.min_norm, off.max_norm), (2, 0.5, 5.0));
    /// ```
    pub fn off_unit_length(&self) -> Option<OffUnit> {
        off_unit_length(self.view())
    }

    /// Checks that the embeddings have `expected` columns; [`Error::DimMismatch`] naming the file
    /// otherwise.
    ///
    /// ```
    /// let emb = bsa::io::Embeddings::from_vec(1, 128, vec![1.0; 128]).unwrap();
    /// let err = emb.expect_dim(384).unwrap_err().to_string();
    /// assert!(err.contains("the columns of <memory> against the model's input dimension"), "{err}");
    /// assert!(err.ends_with("expected 384, got 128"), "{err}");
    /// ```
    pub fn expect_dim(&self, expected: usize) -> Result<()> {
        if self.dim == expected {
            return Ok(());
        }
        Err(Error::model_dim(self.path.display(), expected, self.dim))
    }
}

/// How far from 1 a row's L2 norm may be for [`Embeddings::off_unit_length`]: 1%, far above the
/// rounding of rows normalised in `f32` (about 1e-7) or stored as `f16` (about 1e-3).
pub const UNIT_TOLERANCE: f64 = 0.01;

/// Rows not of unit length, from [`off_unit_length`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OffUnit {
    /// How many rows have a norm off 1 by more than [`UNIT_TOLERANCE`].
    pub rows: usize,
    /// The smallest L2 norm of any row.
    pub min_norm: f32,
    /// The largest L2 norm of any row.
    pub max_norm: f32,
}

/// The L2 norms training and evaluation (`bsa eval`, `Model.eval`) take, smallest and
/// largest: they compute in `f32`, where a row's squared norm must be a normal number. Longer
/// rows overflow BLAS's dot products to infinity (the loss then stays where it started),
/// shorter ones lose their digits to subnormals and 0 (every row gets one code; its cosine
/// distance to its reconstruction comes out 1). Search computes norms in `f64` and takes any
/// positive `f32`.
pub const FLOAT32_NORMS: (f32, f32) = (1.0842022e-19, 1.8446743e19);

/// Checks that every row of `x` (named `what`: a file, or an argument) other than an all-zero
/// one has an L2 norm within [`FLOAT32_NORMS`]; [`Error::BadRow`] naming the first that does
/// not, and what to do. (Zero rows and values that are not finite are the input checks' call.)
///
/// ```
/// use bsa::io::check_float32_norms;
/// let fine = ndarray::array![[0.6f32, 0.8], [0.0, 0.0], [3e18, 4e18]];
/// check_float32_norms("x", fine.view()).unwrap();
/// let long = ndarray::array![[0.6f32, 0.8], [3e19, 4e19]];
/// let e = check_float32_norms("x", long.view()).unwrap_err();
/// assert!(matches!(e, bsa::Error::BadRow { row: 1, .. }), "{e}");
/// assert!(e.to_string().contains("L2-normalise"), "{e}");
/// let short = ndarray::array![[1e-20f32, 0.0]];
/// assert!(check_float32_norms("x", short.view()).is_err());
/// ```
pub fn check_float32_norms(what: &str, x: ArrayView2<'_, f32>) -> Result<()> {
    let (low, high) = (f64::from(FLOAT32_NORMS.0), f64::from(FLOAT32_NORMS.1));
    for (row, r) in x.rows().into_iter().enumerate() {
        let norm = r
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        // Zero rows, and rows with a value that is not finite, are the input checks' to refuse.
        if norm.is_finite() && norm != 0.0 && !(low..=high).contains(&norm) {
            return Err(Error::BadRow {
                path: PathBuf::from(what),
                row,
                detail: format!(
                    "L2 norm {norm:.3e} is outside what training and evaluation compute with \
                     in float32 ({low:.2e} to {high:.2e}, where its square is a normal \
                     float32): scale the rows, best L2-normalised (x / np.linalg.norm(x, \
                     axis=1, keepdims=True))"
                ),
            });
        }
    }
    Ok(())
}

/// The rows of `x` whose L2 norm is not 1 within [`UNIT_TOLERANCE`] (rows normalised in `f32`
/// or `f16` are well inside it), with the smallest and largest norm of all rows; `None` when
/// every row is of unit length (or there are none). Rows with a value that is not finite are
/// not counted: the input checks refuse them. Any strides: a numpy array's transpose or
/// column slice is read in place.
///
/// ```
/// use ndarray::{ArrayView2, s};
/// let x = ArrayView2::from_shape((3, 2), &[0.6, 0.8, 3.0, 4.0, 0.0, 0.5]).unwrap();
/// let off = bsa::io::off_unit_length(x).unwrap();
/// assert_eq!((off.rows, off.min_norm, off.max_norm), (2, 0.5, 5.0));
/// assert!(bsa::io::off_unit_length(x.slice(s![..1, ..])).is_none());
/// // The transpose's rows are the columns: norms 3.06 and 4.11.
/// assert_eq!(bsa::io::off_unit_length(x.t()).unwrap().rows, 2);
/// ```
pub fn off_unit_length(x: ArrayView2<'_, f32>) -> Option<OffUnit> {
    // One pass on the calling thread, a small part of the encoding the rows are given to: not
    // on rayon's global pool, which a process forked after the pass could not use (Python's
    // test_fork hung).
    if x.ncols() == 0 {
        return None; // no row has a length to judge (the input checks refuse such data)
    }
    let (mut rows, mut min, mut max) = (0, f64::INFINITY, 0f64);
    for r in x.rows() {
        let n = r
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if n.is_finite() {
            rows += usize::from((n - 1.0).abs() > UNIT_TOLERANCE);
            (min, max) = (min.min(n), max.max(n));
        }
    }
    (rows > 0).then_some(OffUnit {
        rows,
        min_norm: min as f32,
        max_norm: max as f32,
    })
}

impl OffUnit {
    /// The warning for `n` rows of `what` (a file, or an argument's name) encoded by a model
    /// of `method`, as `bsa` prints it after `bsa: warning: ` and Python passes to `warnings`.
    ///
    /// ```
    /// use bsa::model::Method;
    /// let x = ndarray::ArrayView2::from_shape((2, 2), &[3.0, 4.0, 0.0, 1e-12]).unwrap();
    /// let off = bsa::io::off_unit_length(x).unwrap();
    /// let w = off.warning("x.npy", 2, Method::Pursuit);
    /// assert!(w.starts_with("2 of 2 rows of x.npy are not of unit length (L2 norms 1.00e-12 to 5)"), "{w}");
    /// ```
    pub fn warning(&self, what: &str, n: usize, method: crate::model::Method) -> String {
        format!(
            "{} of {n} rows of {what} are not of unit length (L2 norms {} to {}), and {method} \
             codes depend on a row's length: give L2-normalised rows (x / np.linalg.norm(x, \
             axis=1, keepdims=True)) to training and to search alike",
            self.rows,
            short(self.min_norm),
            short(self.max_norm)
        )
    }
}

/// `x` to three decimals without trailing zeros (`4`, `0.25`), or in scientific notation
/// (`1.00e-10`) outside 0.001..1e6, or `0`: a norm for a message, not `4.0000005`.
fn short(x: f32) -> String {
    if x == 0.0 {
        "0".into()
    } else if (0.001..1e6).contains(&x) {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{x:.2e}")
    }
}

// The row checks embedding files share with searches' queries (the search crate's).
pub(crate) use bsa_index::query::{nonfinite_detail, norm_detail, plainly_fine};

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
