//! The library's error type. Every variant carries the evidence a user needs: the file, the row,
//! the numbers that disagree, and (in its message) what to do about it.

use std::path::PathBuf;

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in bsa's library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed at the operating-system level.
    // The OS error is part of the message and deliberately not a `source()`: the CLI prints the
    // whole error chain, which would otherwise repeat it.
    #[error("{}: {}", path.display(), io_text(error))]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A file is not in the format expected (bad magic, wrong dtype or rank, truncated, ...).
    #[error("{}: {detail}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong and, where possible, how to fix it.
        detail: String,
    },
    /// A row of an embedding file, or of a matrix given to a call, holds a value that training
    /// or search cannot use.
    #[error("{}: row {row}: {detail}", path.display())]
    BadRow {
        /// The file, or the matrix's name ([`crate::query::check_rows`]'s `what`).
        path: PathBuf,
        /// Zero-based row number.
        row: usize,
        /// What is wrong with it (NaN, infinity, zero norm).
        detail: String,
    },
    /// Two things that must agree in size do not ([`Error::model_dim`] for embeddings given to
    /// a model).
    #[error("dimension mismatch: {what}: expected {expected}, got {got}")]
    DimMismatch {
        /// What was being compared.
        what: String,
        /// The size required.
        expected: usize,
        /// The size found.
        got: usize,
    },
    /// A parameter is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Training produced a non-finite or exploding loss.
    #[error("training diverged: {0}")]
    Diverged(String),
    /// A linear-algebra routine (LAPACK: SVD, eigendecomposition, Cholesky) failed, for example
    /// on a matrix that is singular or not finite.
    #[error("linear algebra failed: {0}")]
    Linalg(String),
    /// The caller asked a long computation to stop (e.g. `TrainParams::fit_until`, a build's
    /// `BuildRequest::stop`); nothing was produced (the index crate's
    /// [`bsa_index::Error::Stopped`] arrives as this variant).
    #[error("stopped before it finished, as asked; nothing was written")]
    Stopped,
    /// An error from the search index crate.
    #[error(transparent)]
    Index(bsa_index::Error),
}

impl Error {
    /// `subject`'s columns (a file, "the queries") are not the model's input dimension: said
    /// with one wording and hint by every command that gives embeddings to a model.
    ///
    /// ```
    /// let e = bsa::Error::model_dim("q.npy", 384, 100).to_string();
    /// assert_eq!(
    ///     e,
    ///     "dimension mismatch: the columns of q.npy against the model's input dimension (embed \
    ///      with the same encoder the model was trained on, or train a model for this \
    ///      dimension): expected 384, got 100"
    /// );
    /// ```
    pub fn model_dim(subject: impl std::fmt::Display, expected: usize, got: usize) -> Error {
        Error::DimMismatch {
            what: format!(
                "the columns of {subject} against the model's input dimension (embed with the \
                 same encoder the model was trained on, or train a model for this dimension)"
            ),
            expected,
            got,
        }
    }
}

impl From<bsa_index::Error> for Error {
    /// Wraps the index crate's error; its `Stopped` becomes [`Error::Stopped`], so that one
    /// variant says "stopped as asked" whichever crate stopped, and its `Model` (a model file
    /// that cannot be read, [`bsa_index::model`]) becomes [`Error::Format`], as every other
    /// file's.
    fn from(e: bsa_index::Error) -> Error {
        match e {
            bsa_index::Error::Stopped => Error::Stopped,
            bsa_index::Error::Model { path, detail } => Error::Format { path, detail },
            bsa_index::Error::BadRow { path, row, detail } => Error::BadRow { path, row, detail },
            // Rows given to a model: said as every command of this crate says it.
            bsa_index::Error::DimMismatch {
                what,
                expected,
                got,
            } if what == bsa_index::model::MODEL_DIM => Error::DimMismatch {
                what,
                expected,
                got,
            },
            e => Error::Index(e),
        }
    }
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    /// A format error for `path` with a message.
    pub fn format(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

/// An OS error as [`Error::Io`] says it: its words and what to do about it, as the search
/// crate's errors say it ([`bsa_index::io_hint`]); "No such file or directory (os error 2)"
/// alone said no remedy. bsa's own errors of an OS kind carry their own words (a missing --out
/// folder) and get no hint.
fn io_text(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(_) => format!("{error}{}", bsa_index::io_hint(error)),
        None => error.to_string(),
    }
}
