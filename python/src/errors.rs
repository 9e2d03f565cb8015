//! bsa's errors as Python exceptions: the `bsa.FormatError` exception type, [`py_err`] (which
//! exception a caller catches for each kind of `bsa::Error`), and the rewrites that make the
//! library's messages name the Python arguments the caller passed (`q`, `x`, `codes`) rather than
//! the library's names for them (`queries`, `data`).

use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyOSError, PyPermissionError, PyRuntimeError,
    PyValueError,
};
use pyo3::prelude::*;

pyo3::create_exception!(
    bsa,
    FormatError,
    PyValueError,
    "A file is not what bsa expects: a damaged, truncated or foreign index or model file. The \
     message names the file and what to do."
);

/// A bsa error as the Python exception a caller would catch for it: bad arguments as
/// `ValueError`, missing or unreadable files as `OSError` (`FileNotFoundError`, ...), damaged
/// files as `bsa.FormatError` (a `ValueError`), a writer's lock held past `lock_timeout` as
/// `TimeoutError`, a diverged fit as `RuntimeError`; the message is
/// bsa's, which names the file, the row or the numbers that disagree.
pub(crate) fn py_err(e: bsa::Error) -> PyErr {
    use bsa::Error as E;
    use bsa_index::Error as I;
    match &e {
        E::Io { error, .. } | E::Index(I::Io { error, .. }) => io_err(error, e.to_string()),
        E::InvalidArgument(_)
        | E::Index(I::InvalidArgument(_))
        | E::DimMismatch { .. }
        | E::BadRow { .. }
        | E::Index(I::DimMismatch { .. }) => PyValueError::new_err(bare(e)),
        E::Index(I::LockTimeout { .. }) => pyo3::exceptions::PyTimeoutError::new_err(bare(e)),
        E::Format { .. } | E::Index(_) => FormatError::new_err(e.to_string()),
        _ => PyRuntimeError::new_err(e.to_string()),
    }
}

/// The `OSError` of `error`: with the system's error number when there is one (`e.errno ==
/// errno.ENOSPC`; Python picks the subclass, `FileNotFoundError` for `ENOENT`), else the subclass
/// of its kind (bsa's own errors of a kind, "no such index directory" say, have no number).
fn io_err(error: &std::io::Error, msg: String) -> PyErr {
    use std::io::ErrorKind as K;
    if let Some(errno) = error.raw_os_error() {
        return PyOSError::new_err((errno, msg));
    }
    match error.kind() {
        K::NotFound => PyFileNotFoundError::new_err(msg),
        K::AlreadyExists => PyFileExistsError::new_err(msg),
        K::PermissionDenied => PyPermissionError::new_err(msg),
        K::NotADirectory => pyo3::exceptions::PyNotADirectoryError::new_err(msg),
        K::IsADirectory => pyo3::exceptions::PyIsADirectoryError::new_err(msg),
        _ => PyOSError::new_err(msg),
    }
}

pub(crate) fn index_err(e: bsa_index::Error) -> PyErr {
    py_err(bsa::Error::Index(e))
}

/// `e` with a bad row of the matrix the library calls `library` ("queries", "new rows",
/// "data") said as a row of the Python argument `python` ("q", "x"), which the caller passed.
pub(crate) fn row_of(e: bsa::Error, library: &str, python: &str) -> bsa::Error {
    match e {
        bsa::Error::BadRow { path, row, detail } if path.as_os_str() == library => {
            bsa::Error::BadRow {
                path: python.into(),
                row,
                detail,
            }
        }
        e => e,
    }
}

/// `e` with a bad row of packed codes (padding bits set: "row R: bits beyond ...", from
/// `bsa_index::pack`, which knows no argument names) said as a row of the Python argument
/// `python` ("q", "codes"). For calls given codes, whose other errors name no row.
pub(crate) fn code_row_of(e: bsa::Error, python: &str) -> bsa::Error {
    match e {
        bsa::Error::Index(bsa_index::Error::InvalidArgument(m)) if m.starts_with("row ") => {
            bsa::Error::InvalidArgument(format!("{python}: {m}"))
        }
        e => e,
    }
}

/// The message of `e` without the "invalid argument: " its type prefixes (a Python
/// `ValueError` says it already, and the caller names the argument).
pub(crate) fn bare(e: bsa::Error) -> String {
    match e {
        bsa::Error::InvalidArgument(m)
        | bsa::Error::Index(bsa_index::Error::InvalidArgument(m)) => m,
        e => e.to_string(),
    }
}
