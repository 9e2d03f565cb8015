//! Measuring a search's quality: `bsa.groundtruth` (the exact nearest rows by cosine
//! similarity, as `bsa groundtruth` finds them) and `bsa.recall` (recall@k of search results
//! against them), with [`id_lists`] reading their integer id matrices.

use bsa::query::check_rows;
use numpy::{PyArray2, PyArrayDescrMethods, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::arrays::{
    as_array, contiguous, dtype_str, filled, float32_matrix, shape_str, view2, Rows,
};
use crate::threads::{interruptible, with_blas_threads};
use crate::values::{positive, Int};

/// A 2-D integer matrix (results or ground truth) as lists of ids, without negative entries
/// (FAISS's and `Index.search`'s -1 for "no hit").
/// The first `k` ids of each row of the 2-D integer array `obj`, negative entries (-1: no
/// hit) dropped after the cut, so that they stay misses where they stand.
fn id_lists(obj: &Bound<'_, PyAny>, name: &str, k: usize) -> PyResult<Vec<Vec<u64>>> {
    let a = as_array(obj, name)?;
    let kind = a.dtype().kind();
    if kind != b'i' && kind != b'u' {
        return Err(PyTypeError::new_err(format!(
            "{name} must hold integer ids, got dtype {}",
            dtype_str(&a)
        )));
    }
    if a.ndim() != 2 {
        return Err(PyValueError::new_err(format!(
            "{name} must be 2-D (queries x neighbours), got shape {}",
            shape_str(a.shape())
        )));
    }
    let py = a.py();
    if kind == b'u' {
        // Read as they are: through int64, ids of 2**63 or more would become negative misses.
        let a = contiguous(a.into_any(), numpy::dtype::<u64>(py))?.cast_into::<PyArray2<u64>>()?;
        let a = a.readonly();
        return Ok(a
            .as_array()
            .rows()
            .into_iter()
            .map(|r| r.iter().take(k).copied().collect())
            .collect());
    }
    let a = contiguous(a.into_any(), numpy::dtype::<i64>(py))?.cast_into::<PyArray2<i64>>()?;
    let a = a.readonly();
    Ok(a.as_array()
        .rows()
        .into_iter()
        .map(|r| {
            r.iter()
                .take(k)
                .filter_map(|&v| u64::try_from(v).ok())
                .collect()
        })
        .collect())
}

/// The exact ``k`` nearest rows of ``base`` by cosine similarity for each row of ``queries``
/// (both float, same dimension): int64, ``(nq, k)``, best first, ties to the lower row, -1
/// past the last row when ``base`` has fewer than ``k`` (as :meth:`Index.search` pads;
/// ``bsa groundtruth`` refuses such a ``k``). Otherwise the same as ``bsa groundtruth`` (a blocked GEMM picks candidates; float64 rescoring fixes the
/// order on every CPU and thread count). The GIL is released; Ctrl-C stops it
/// (``KeyboardInterrupt``).
///
/// Example: ``gt = bsa.groundtruth(base, queries, 100); print(bsa.recall(I, gt, 10))``
#[pyfunction]
#[pyo3(signature = (base, queries, k=Int(100), *, threads=None),
    text_signature = "(base, queries, k=100, *, threads=None)"
)]
pub(crate) fn groundtruth<'py>(
    base: &Bound<'py, PyAny>,
    queries: &Bound<'py, PyAny>,
    k: Int,
    threads: Option<Int>,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let py = base.py();
    let k = positive("k", Some(k))?.unwrap_or(1);
    let threads = positive("threads", threads)?;
    let b = float32_matrix(as_array(base, "base")?, "base", Rows::Some)?;
    let q = float32_matrix(as_array(queries, "queries")?, "queries", Rows::Any)?;
    let (b, q) = (b.readonly(), q.readonly());
    let (bv, qv) = (view2(&b), view2(&q));
    if bv.ncols() != qv.ncols() {
        return Err(PyValueError::new_err(format!(
            "queries have {} columns but base has {}: they must come from the same encoder",
            qv.ncols(),
            bv.ncols()
        )));
    }
    // Fewer base rows than k: the rest of each row is -1, as a search pads its results (and
    // as `recall` reads a padded ground truth). An empty batch gets an empty answer.
    let found = k.min(bv.nrows());
    // Allocated first, as a search's results: a `k` too large for memory is refused at once.
    let mut out = filled::<i64>(qv.nrows(), k, -1)?;
    let top = match qv.nrows() {
        0 => Vec::new(),
        // Ctrl-C stops it between blocks (a million rows by thousands of queries take minutes).
        _ => interruptible(py, threads, |stop| {
            check_rows("base", bv, true)?;
            check_rows("queries", qv, true)?;
            with_blas_threads(threads, || {
                let blocks = bsa::groundtruth::Blocks::default();
                bsa::groundtruth::exact_top_k_blocked(bv, qv, found, blocks, &mut |_, _| {}, stop)
            })
        })?,
    };
    for (mut row, ids) in out.rows_mut().into_iter().zip(&top) {
        for (dst, &id) in row.iter_mut().zip(ids) {
            *dst = i64::from(id);
        }
    }
    Ok(numpy::IntoPyArray::into_pyarray(out, py))
}

/// Recall@k: the fraction of each query's first ``k`` true neighbours (``gt``, e.g. from
/// :func:`groundtruth`) found among its first ``k`` results (``I`` from :meth:`Index.search`;
/// -1 entries count as misses), averaged over queries: each query counts ``k`` true
/// neighbours, so a -1 in ``gt`` (a ground truth padded as search results are) is one no
/// result can find. Integer ids of any dtype; a true neighbour repeated in ``I`` counts once.
///
/// Example: ``bsa.recall(I, gt, 10)``  # 0.0 .. 1.0
#[pyfunction]
#[pyo3(name = "recall", signature = (I, gt, k))]
#[allow(non_snake_case)]
pub(crate) fn recall(I: &Bound<'_, PyAny>, gt: &Bound<'_, PyAny>, k: Int) -> PyResult<f64> {
    let k = positive("k", Some(k))?.unwrap_or(1);
    let got = id_lists(I, "I", k)?;
    let truth_shape = as_array(gt, "gt")?.shape().to_vec();
    let truth = id_lists(gt, "gt", k)?;
    if got.len() != truth.len() {
        return Err(PyValueError::new_err(format!(
            "I has {} rows but gt has {}: one row per query in both",
            got.len(),
            truth.len()
        )));
    }
    if truth_shape.get(1).copied().unwrap_or(0) < k {
        return Err(PyValueError::new_err(format!(
            "gt has {} columns, fewer than k = {k} true neighbours",
            truth_shape.get(1).copied().unwrap_or(0)
        )));
    }
    Ok(I.py().detach(|| bsa::metrics::recall_at_k(&got, &truth, k)))
}
