//! The `bsa` Python module: numpy arrays in, numpy arrays out, over the `bsa` and `bsa-index`
//! crates. Nothing is computed here: this crate converts arguments, releases the GIL around the
//! library calls and converts results and errors. Search and build go through `bsa::query` and
//! `bsa::pipeline`, the same calls as `bsa search` and `bsa build`, so the results are the same
//! bytes. The docstrings are the Python documentation (`help(bsa.Index.search)`); the signatures
//! are repeated in `bsa.pyi` for type checkers.
//!
//! The modules: [`errors`] (bsa's errors as Python exceptions), [`threads`] (calls off the GIL,
//! on thread pools, interruptible by Ctrl-C), [`arrays`] (numpy arrays in and out), [`values`]
//! (integer, duration and JSON values), [`model`] (`Model` and `train`), [`index`] (`Index`) and
//! [`measure`] (`groundtruth` and `recall`); this file holds the module's definition.

mod arrays;
mod errors;
mod index;
mod measure;
mod model;
mod threads;
mod values;

use pyo3::prelude::*;

use errors::FormatError;
use index::Index;
use measure::{groundtruth, recall};
use model::{train, Model};
use threads::after_fork_in_child;

/// bsa: sparse binary codes for dense embeddings, and their search.
///
/// ``bsa.train`` fits a :class:`Model` on float embeddings, :meth:`Model.encode` turns vectors
/// into packed binary codes, :class:`Index` stores codes (with the model and optionally the
/// float vectors) in ``bsa build``'s on-disk format and searches them
/// (``D, I = index.search(q, k)``, shaped like FAISS's results). ``bsa.groundtruth`` and
/// ``bsa.recall`` measure recall. Arrays are numpy arrays; C-contiguous float32 and uint8
/// inputs are read in place, other float types and layouts are converted.
#[pymodule]
#[pyo3(name = "bsa")]
fn bsa_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Like the command line at start-up: OpenBLAS's AVX2/AVX-512 kernels on CPUs newer than its
    // table (speed only; the results do not depend on it).
    // SAFETY: at import, bsa's OpenBLAS has run no product (nothing of bsa has run; numpy's
    // wheels carry their own OpenBLAS, under other symbol names), and the import holds the
    // GIL. What is left: a thread outside Python (C code without the GIL) reading the
    // environment while `OPENBLAS_CORETYPE` is set and removed, on a CPU newer than
    // OpenBLAS's table only (elsewhere nothing is written): the risk of any `os.environ`
    // write, which Python programs make freely.
    unsafe {
        bsa::threads::fix_blas_core(bsa::simd::Family::current());
    }
    // See `threads::FORKS`. (On platforms without fork, `os` has no `register_at_fork`.)
    let os = m.py().import("os")?;
    if os.hasattr("register_at_fork")? {
        let kwargs = pyo3::types::PyDict::new(m.py());
        kwargs.set_item("after_in_child", wrap_pyfunction!(after_fork_in_child, m)?)?;
        os.call_method("register_at_fork", (), Some(&kwargs))?;
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("FormatError", m.py().get_type::<FormatError>())?;
    m.add_class::<Model>()?;
    m.add_class::<Index>()?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(groundtruth, m)?)?;
    m.add_function(wrap_pyfunction!(recall, m)?)?;
    Ok(())
}
