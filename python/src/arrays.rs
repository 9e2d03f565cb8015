//! numpy arrays in and out: any array-like argument as a numpy array ([`as_array`]), checked
//! and converted to the C-contiguous float32 or packed uint8 matrix the library reads, in place
//! when it is one already ([`float32_matrix`], [`code_matrix`], [`view2`]); result matrices
//! allocated without aborting on a huge `k` ([`filled`]); and the warning of float inputs whose
//! rows are not of unit length ([`warn_if_not_unit`]).

use bsa::model::Method;
use ndarray::{Array2, ArrayView2};
use numpy::{
    PyArray2, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray2, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyMemoryError, PyOSError, PyTypeError, PyUserWarning, PyValueError};
use pyo3::prelude::*;

/// An `nq x k` matrix of `v`, or `MemoryError` (not an abort) when it cannot be allocated.
pub(crate) fn filled<T: Clone>(nq: usize, k: usize, v: T) -> PyResult<Array2<T>> {
    let too_large = || {
        PyMemoryError::new_err(format!(
            "{nq} queries x k = {k} results do not fit in memory; ask for fewer neighbours"
        ))
    };
    let n = nq.checked_mul(k).ok_or_else(too_large)?;
    let mut data = Vec::new();
    data.try_reserve_exact(n).map_err(|_| too_large())?;
    data.resize(n, v);
    Ok(Array2::from_shape_vec((nq, k), data).expect("nq x k values"))
}

/// `obj` as a numpy array (lists and objects with `__array__` go through `numpy.asarray`).
pub(crate) fn as_array<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    if let Ok(a) = obj.cast::<PyUntypedArray>() {
        return Ok(a.clone());
    }
    // numpy makes None a 0-d object array, whose dtype the checks below would name: say None.
    if obj.is_none() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a numpy array, got None"
        )));
    }
    let py = obj.py();
    let not_an_array = || {
        PyTypeError::new_err(format!(
            "{name} must be a numpy array, got {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    };
    let array = py
        .import("numpy")?
        .call_method1("asarray", (obj,))
        .map_err(|e| {
            // Ctrl-C, and memory and I/O errors, in an `__array__` (a lazy tensor's, a file
            // reader's) go on as they are; anything else is said as this argument's type, with
            // numpy's error as its cause.
            let as_is = e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
                || e.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
                || e.is_instance_of::<PyMemoryError>(py)
                || e.is_instance_of::<PyOSError>(py);
            if as_is {
                return e;
            }
            let t = not_an_array();
            t.set_cause(py, Some(e));
            t
        })?;
    array
        .cast_into::<PyUntypedArray>()
        .map_err(|_| not_an_array())
}

/// How many rows an input array may have.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Rows {
    /// Data to fit, build or evaluate from: at least one row.
    Some,
    /// A batch to answer row by row (queries, rows to encode or decode): an empty batch gets
    /// empty answers, as FAISS gives them, so that a caller's last batch needs no special case.
    Any,
}

/// Checks that `a` is 2-D with at least one column and the rows `rows` asks for.
fn check_2d(a: &Bound<'_, PyUntypedArray>, name: &str, what: &str, rows: Rows) -> PyResult<()> {
    let shape = a.shape();
    if a.ndim() != 2 {
        let hint = if a.ndim() == 1 {
            format!("; for a single vector use {name}.reshape(1, -1)")
        } else {
            String::new()
        };
        return Err(PyValueError::new_err(format!(
            "{name} must be a 2-D array ({what}), got shape {}{hint}",
            shape_str(shape)
        )));
    }
    if (shape[0] == 0 && rows == Rows::Some) || shape[1] == 0 {
        return Err(PyValueError::new_err(format!(
            "{name} is empty (shape {}); it needs at least one row and one column",
            shape_str(shape)
        )));
    }
    Ok(())
}

pub(crate) fn shape_str(shape: &[usize]) -> String {
    match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub(crate) fn dtype_str(a: &Bound<'_, PyUntypedArray>) -> String {
    a.dtype().to_string()
}

/// `a` as a C-contiguous, aligned array of `dtype`: `numpy.require` copies it only when it is
/// not one already (`ascontiguousarray` keeps a misaligned array as it is, and a view of
/// misaligned values is undefined behaviour in Rust).
pub(crate) fn contiguous<'py>(
    a: Bound<'py, PyAny>,
    dtype: Bound<'py, numpy::PyArrayDescr>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = a.py();
    py.import("numpy")?
        .call_method1("require", (a, dtype, ["C", "A"]))
}

/// `a` as a C-contiguous native float32 matrix: the array itself when it is one (zero copy),
/// else a converted copy (float16, float64, other byte orders and layouts).
pub(crate) fn float32_matrix<'py>(
    a: Bound<'py, PyUntypedArray>,
    name: &str,
    rows: Rows,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let py = a.py();
    if a.dtype().kind() != b'f' {
        return Err(PyTypeError::new_err(format!(
            "{name} must hold floats (float32; float16 and float64 are converted), got dtype {}",
            dtype_str(&a)
        )));
    }
    check_2d(&a, name, "n vectors x dimension", rows)?;
    // Any float wider than float32 (float64 of either byte order, longdouble).
    if a.dtype().itemsize() > 4 {
        // Checked before numpy's conversion, which makes such values inf (with its own
        // warning) for bsa to report as "+infinity", a value the array does not hold.
        let cols = a.shape()[1];
        let wide = contiguous(a.clone().into_any(), numpy::dtype::<f64>(py))?;
        let wide = wide.cast_into::<PyArray2<f64>>()?;
        bsa::io::check_float32_range(wide.readonly().as_slice()?, cols)
            .map_err(|d| PyValueError::new_err(format!("{name}: {d}")))?;
    }
    let native = a.dtype().is_equiv_to(&numpy::dtype::<f32>(py));
    // A view of misaligned floats (e.g. `buf[1:].view(np.float32)`) is undefined behaviour in
    // Rust: numpy copies those too.
    let aligned: bool = a.getattr("flags")?.getattr("aligned")?.extract()?;
    let a = if native && aligned && a.is_c_contiguous() {
        a.into_any()
    } else {
        contiguous(a.into_any(), numpy::dtype::<f32>(py))?
    };
    Ok(a.cast_into::<PyArray2<f32>>()?)
}

/// `a` as a C-contiguous uint8 matrix of packed codes (zero copy when it is one).
pub(crate) fn code_matrix<'py>(
    a: Bound<'py, PyUntypedArray>,
    name: &str,
    rows: Rows,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let py = a.py();
    if !a.dtype().is_equiv_to(&numpy::dtype::<u8>(py)) {
        let hint = if a.dtype().kind() == b'b' {
            "; pack booleans with numpy.packbits(b, axis=1, bitorder=\"little\")"
        } else {
            ""
        };
        return Err(PyTypeError::new_err(format!(
            "{name} must be packed codes of dtype uint8 (numpy.packbits(..., bitorder=\"little\") \
             rows), got dtype {}{hint}",
            dtype_str(&a)
        )));
    }
    check_2d(&a, name, "n codes x bytes per code", rows)?;
    let a = if a.is_c_contiguous() {
        a.into_any()
    } else {
        py.import("numpy")?
            .call_method1("ascontiguousarray", (a,))?
    };
    Ok(a.cast_into::<PyArray2<u8>>()?)
}

/// A borrowed matrix view of a C-contiguous array.
pub(crate) fn view2<'a, T: numpy::Element>(a: &'a PyReadonlyArray2<'_, T>) -> ArrayView2<'a, T> {
    a.as_array()
}

/// Warns (`UserWarning`) when rows of `x` (the argument `what`) are not of unit length and
/// `method`'s codes depend on a row's length, with `bsa`'s words ([`bsa::io::OffUnit::warning`]).
/// A warnings filter set to "error" makes it the call's exception. Rows of another width than
/// the model's `dim` are left to the call's own error.
pub(crate) fn warn_if_not_unit(
    py: Python<'_>,
    x: ArrayView2<'_, f32>,
    what: &str,
    (method, dim): (Method, usize),
) -> PyResult<()> {
    if !method.depends_on_length() || x.ncols() != dim {
        return Ok(());
    }
    if let Some(off) = bsa::io::off_unit_length(x) {
        if let Ok(msg) = std::ffi::CString::new(off.warning(what, x.nrows(), method)) {
            PyErr::warn(py, &py.get_type::<PyUserWarning>(), &msg, 1)?;
        }
    }
    Ok(())
}
