//! Python values other than arrays: integer arguments ([`Int`], which refuses a bool, and
//! [`positive`]), durations in seconds ([`seconds`], for `lock_timeout`), and JSON values
//! returned as the Python objects `json.loads` makes ([`json_to_py`]).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// An integer argument: a Python int, or anything with `__index__` (numpy's integers), but not
/// a bool, which Python counts as an int (`index.search(q, True)` searched for the top 1).
/// Taken as `i128`, so that a Python int past int64 is the argument's own check's `ValueError`
/// naming it, not pyo3's nameless `OverflowError`. Functions with an `Int` default give their
/// `text_signature`: pyo3 shows a default that is not a literal (`Int(10)`) as `...`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Int(pub(crate) i128);

impl<'a, 'py> FromPyObject<'a, 'py> for Int {
    type Error = PyErr;

    fn extract(obj: pyo3::Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_instance_of::<pyo3::types::PyBool>() {
            // pyo3 names the argument in a note ("while processing 'k'"), on Python 3.11 and
            // later (exception notes); earlier ones show this message alone.
            return Err(PyTypeError::new_err("an integer is required, got a bool"));
        }
        obj.extract::<i128>().map(Int)
    }
}

/// An optional positive integer argument ([`Int`]).
pub(crate) fn positive(name: &str, v: Option<Int>) -> PyResult<Option<usize>> {
    match v.map(|v| v.0) {
        None => Ok(None),
        Some(v) if v >= 1 => usize::try_from(v).map(Some).map_err(|_| {
            PyValueError::new_err(format!(
                "{name} is {v}, past any size this machine can hold"
            ))
        }),
        Some(v) => Err(PyValueError::new_err(format!(
            "{name} must be a positive integer, got {v}"
        ))),
    }
}

/// A duration in seconds given as `name`: 0 or more, and one a `Duration` holds (`None`: none
/// given, so no limit).
pub(crate) fn seconds(
    name: &str,
    v: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<std::time::Duration>> {
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    // A bool is an int to Python (and numpy's converts to float), so True would quietly mean
    // one second.
    let numpy_bool = v.py().import("numpy")?.getattr("bool_")?;
    let secs: f64 =
        match v.is_instance_of::<pyo3::types::PyBool>() || v.is_instance(&numpy_bool)? {
            true => None,
            false => v.extract().ok(),
        }
        .ok_or_else(|| {
            let kind = v
                .get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string());
            PyTypeError::new_err(format!(
            "{name} must be a number of seconds (or None to wait as long as it takes), got {kind}"
        ))
        })?;
    std::time::Duration::try_from_secs_f64(secs)
        .map(Some)
        .map_err(|_| {
            PyValueError::new_err(if secs >= 0.0 {
                format!("{name}={secs} is too long: pass None to wait as long as it takes")
            } else {
                format!("{name} must be a number of seconds, 0 or more, got {secs}")
            })
        })
}

/// A JSON value as the Python object `json.loads` makes of it.
pub(crate) fn json_to_py<'py>(
    py: Python<'py>,
    v: &serde_json::Value,
) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (v.to_string(),))
}
