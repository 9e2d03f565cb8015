//! The `bsa.Model` class (load, save, pickle, encode, decode, eval) and `bsa.train`, which
//! fits one with the same settings, defaults and checks as `bsa train` ([`fit_model`]), its
//! messages naming `train`'s keyword arguments rather than the command's flags.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bsa::baselines::BaselineParams;
use bsa::model::{Autoencoder, FrozenModel, LossKind, Method, Target};
use bsa::query::check_rows;
use bsa::train::{Progress, TrainParams};
use ndarray::{Array2, ArrayView2};
use numpy::{PyArray2, PyArrayMethods, PyReadonlyArray2};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyUserWarning, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::arrays::{as_array, code_matrix, float32_matrix, view2, warn_if_not_unit, Rows};
use crate::errors::{bare, code_row_of, py_err};
use crate::threads::{interruptible, interruptible_if, with_blas_threads, without_gil};
use crate::values::{json_to_py, positive, Int};

/// Rows above which a model's encode, decode or eval runs [`interruptible`] (Ctrl-C stops
/// it); fewer make a short call, not worth the thread that waits for the signal.
const INTERRUPTIBLE_ROWS: usize = 4096;

/// Writes a line to Python's `sys.stderr` (so notebooks show it), taking the GIL for it.
fn progress_line(line: String) {
    Python::attach(|py| {
        if let Ok(err) = py.import("sys").and_then(|s| s.getattr("stderr")) {
            let _ = err.call_method1("write", (line + "\n",));
            let _ = err.call_method0("flush");
        }
    });
}

/// A trained model: it encodes float vectors into sparse binary codes and decodes them back.
///
/// Make one with :func:`bsa.train` or :meth:`Model.load`.
///
/// Example::
///
///     import numpy as np, bsa
///     x = np.random.default_rng(0).standard_normal((2000, 64)).astype(np.float32)
///     x /= np.linalg.norm(x, axis=1, keepdims=True)  # compared by direction: unit rows
///     model = bsa.train(x, method="itq", bits=32)
///     codes = model.encode(x)          # uint8, (2000, 4): numpy.packbits(bitorder="little") rows
///     xhat = model.decode(codes)       # float32, (2000, 64)
///     model.save("itq.safetensors")
#[pyclass(frozen, module = "bsa", name = "Model")]
pub(crate) struct Model {
    /// Frozen: what searches derive from it (tables, Gram matrix) is kept without re-checking.
    pub(crate) inner: Arc<FrozenModel>,
    /// The `training` metadata saved with the model.
    pub(crate) training: serde_json::Value,
}

impl Model {
    /// The argument `x` (float, n x dim, its rows as `rows` allows) as the float32 matrix the
    /// model reads; refused when its width is not the model's `dim` (encode and eval).
    fn input<'py>(
        &self,
        x: &Bound<'py, PyAny>,
        rows: Rows,
    ) -> PyResult<PyReadonlyArray2<'py, f32>> {
        let x = float32_matrix(as_array(x, "x")?, "x", rows)?.readonly();
        let (dim, cols) = (self.inner.config.dim, view2(&x).ncols());
        if cols != dim {
            let e = bsa::Error::model_dim("x", dim, cols);
            return Err(PyValueError::new_err(e.to_string()));
        }
        Ok(x)
    }
}

#[pymethods]
impl Model {
    /// Loads a model file written by :meth:`Model.save` or ``bsa train``.
    ///
    /// Example: ``model = bsa.Model.load("model.safetensors")``
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Model> {
        let (model, training) = py
            .detach(|| {
                // Read once: a pipe cannot be read twice, and a file replaced in between would
                // give another model's training record.
                let bytes = bsa::io::read_file(&path)?;
                let m = bsa::io::model::from_bytes(&bytes, &path)?;
                Ok::<_, bsa::Error>((m, bsa::io::model::training_info_from_bytes(&bytes, &path)?))
            })
            .map_err(py_err)?;
        Ok(Model {
            inner: Arc::new(FrozenModel::new(model)),
            training,
        })
    }

    /// Writes the model as a safetensors file (the same file ``bsa train`` writes; it opens
    /// with ``bsa encode --model``, ``bsa build --model`` and ``safetensors.numpy.load_file``).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        without_gil(py, None, || {
            bsa::io::model::save(&path, &self.inner, &self.training)
        })
    }

    /// The model file's bytes (what :meth:`save` writes), e.g. to keep a model in a database;
    /// :meth:`from_bytes` reads them back. Pickling (``pickle``, ``multiprocessing``) uses them.
    ///
    /// Example: ``same = bsa.Model.from_bytes(model.to_bytes())``
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = py
            .detach(|| bsa::io::model::to_bytes(&self.inner, &self.training))
            .map_err(py_err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Reads a model from the bytes of a model file (:meth:`to_bytes`, or a file's contents;
    /// ``bytes``, ``bytearray`` or ``memoryview``),
    /// with the checks of :meth:`load`.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Model> {
        // Any buffer of bytes: bytes, bytearray, memoryview (what database drivers return).
        let buffer = pyo3::buffer::PyBuffer::<u8>::get(data).map_err(|e| {
            let kind = data.get_type().name().map_or("?".into(), |n| n.to_string());
            PyTypeError::new_err(format!(
                "data must be a model file's bytes (bytes, bytearray, or a memoryview of bytes), \
                 not {kind}: {e}"
            ))
        })?;
        let data = buffer.to_vec(py)?;
        let data = data.as_slice();
        let (model, training) = py
            .detach(|| {
                let m = bsa::io::model::from_bytes(data, "<bytes>")?;
                Ok::<_, bsa::Error>((
                    m,
                    bsa::io::model::training_info_from_bytes(data, "<bytes>")?,
                ))
            })
            .map_err(py_err)?;
        Ok(Model {
            inner: Arc::new(FrozenModel::new(model)),
            training,
        })
    }

    /// Pickling: a model travels as its file's bytes.
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        let from_bytes = py.get_type::<Model>().getattr("from_bytes")?;
        Ok((from_bytes, (self.to_bytes(py)?,)))
    }

    /// The codes of the rows of ``x`` (float, n x dim): uint8, n x ceil(bits / 8), bit j of a
    /// code in byte j // 8 at bit j % 8 (``numpy.packbits(bitorder="little")``, the layout of
    /// ``bsa encode`` and FAISS's binary indexes). ``threads``: default all cores. Ctrl-C stops
    /// the encoding of a large batch (``KeyboardInterrupt``).
    ///
    /// Example: ``codes = model.encode(x); bits = numpy.unpackbits(codes, axis=1, bitorder="little")``
    #[pyo3(signature = (x, *, threads=None))]
    fn encode<'py>(
        &self,
        x: &Bound<'py, PyAny>,
        threads: Option<Int>,
    ) -> PyResult<Bound<'py, PyArray2<u8>>> {
        let py = x.py();
        let threads = positive("threads", threads)?;
        let x = self.input(x, Rows::Any)?;
        let xv = view2(&x);
        let m = &self.inner;
        warn_if_not_unit(py, xv, "x", (m.config.method, m.config.dim))?;
        let n = xv.nrows();
        let encode = |stop: &Arc<AtomicBool>| {
            check_rows("x", xv, false)?;
            m.encode_packed_until(xv, stop)
        };
        // Ctrl-C can stop a large batch (minutes for a million rows of a pursuit model).
        let codes = interruptible_if(py, threads, n > INTERRUPTIBLE_ROWS, encode)?;
        let cols = m.config.bits.div_ceil(8);
        let codes = Array2::from_shape_vec((n, cols), codes).expect("n x bytes per code");
        Ok(numpy::IntoPyArray::into_pyarray(codes, py))
    }

    /// The vectors the decoder rebuilds from packed ``codes`` (uint8, n x ceil(bits / 8), as
    /// :meth:`encode` makes them): float32, n x dim. Ctrl-C stops the decoding of a large batch
    /// (``KeyboardInterrupt``).
    fn decode<'py>(&self, codes: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let py = codes.py();
        let c = code_matrix(as_array(codes, "codes")?, "codes", Rows::Any)?;
        let c = c.readonly();
        let (rows, cols) = c.as_array().dim();
        let bytes = c.as_slice()?;
        let m = &self.inner;
        // Ctrl-C can stop a large batch (tens of seconds for half a million rows).
        let x = interruptible_if(py, None, rows > INTERRUPTIBLE_ROWS, |stop| {
            bsa::pipeline::decode_packed_until(m, bytes, rows, cols, stop)
                .map_err(|e| code_row_of(e, "codes"))
        })?;
        Ok(numpy::IntoPyArray::into_pyarray(x, py))
    }

    /// The paper's metrics of the model on ``x`` (as ``bsa eval --json``): a dict with ``n``,
    /// ``bits``, ``k``, ``reconstruction_loss``, ``reconstruction_mse``,
    /// ``fixed_topk_reconstruction_loss``, ``active_mean``, ``active_std``, ``dead_features`` and
    /// ``feature_frequency_quantiles``. ``threads``: default all cores. Ctrl-C stops the
    /// evaluation of a large set (``KeyboardInterrupt``).
    ///
    /// Example: ``model.eval(queries)["reconstruction_loss"]``
    #[pyo3(signature = (x, *, threads=None))]
    fn eval<'py>(
        &self,
        x: &Bound<'py, PyAny>,
        threads: Option<Int>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = x.py();
        let threads = positive("threads", threads)?;
        let x = self.input(x, Rows::Some)?;
        let xv = view2(&x);
        let m = &self.inner;
        // Ctrl-C can stop a large set (it is encoded and decoded twice).
        let metrics = interruptible_if(py, threads, xv.nrows() > INTERRUPTIBLE_ROWS, |stop| {
            check_rows("x", xv, true)?;
            bsa::io::check_float32_norms("x", xv)?;
            Ok(bsa::metrics::evaluate_until(m, xv, stop)?.0)
        })?;
        let v = serde_json::to_value(metrics)
            .map_err(|e| PyRuntimeError::new_err(format!("metrics as JSON: {e}")))?;
        json_to_py(py, &v)
    }

    /// Code length N.
    #[getter]
    fn bits(&self) -> usize {
        self.inner.config.bits
    }

    /// Target number of set bits K.
    #[getter]
    fn k(&self) -> usize {
        self.inner.config.k
    }

    /// Input dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.config.dim
    }

    /// How the model was made: ``bsa``, ``topk``, ``sign``, ``lsh``, ``itq`` or ``pursuit``.
    #[getter]
    fn method(&self) -> String {
        self.inner.config.method.to_string()
    }

    /// The training settings and report saved with the model (a dict).
    #[getter]
    fn training<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.training)
    }

    fn __repr__(&self) -> String {
        let c = &self.inner.config;
        format!(
            "bsa.Model(method={:?}, bits={}, k={}, dim={})",
            c.method.to_string(),
            c.bits,
            c.k,
            c.dim
        )
    }
}

/// Trains a model on the rows of ``x`` (float, n x dim) and returns it.
///
/// - ``preset="retrieval"``: binary matching pursuit, N = 4096 bits, K = 32 (``bits``, ``k``,
///   ``rounds`` override); the codes that retrieve best, searched with ``score="adc"``.
/// - ``method="bsa"`` (default) or ``"topk"``: the autoencoder by gradient descent; needs
///   ``bits`` and ``k``; ``epochs``, ``batch``, ``lr``, ``loss``, ``val_fraction`` apply, and
///   ``alpha`` and ``target`` to bsa (topk trains without the alignment term: it accepts
///   them with no effect, as ``bsa train --method topk --alpha`` does, and records alpha 0).
/// - ``method="sign" | "lsh" | "itq"``: the closed-form baselines (``bits`` defaults to dim for
///   sign); ``fit_rows`` and ``itq_iterations`` apply.
/// - ``method="pursuit"``: as the preset with explicit ``bits`` and ``k``.
///
/// A setting the method does not use raises ``ValueError`` (the model would not be what was
/// asked); settings left out take ``bsa train``'s defaults.
///
/// The same as ``bsa train`` with the same settings. ``threads`` (default all cores) sizes
/// both the thread pool and OpenBLAS; ``progress`` prints a line per epoch or round on
/// ``sys.stderr``. The GIL is released while training; fits from several Python threads run
/// one after another (OpenBLAS's thread count is one per process).
///
/// Example::
///
///     model = bsa.train(x, preset="retrieval")                # codes of 48 bytes as ids
///     model = bsa.train(x, bits=1024, k=32, epochs=10, seed=1)  # the paper's BSA
///     model = bsa.train(x, method="itq", bits=256)
#[pyfunction]
#[pyo3(signature = (
    x, preset=None, *, method=None, bits=None, k=None, seed=Int(0), threads=None, progress=true,
    epochs=None, batch=None, lr=None, alpha=None, loss=None, target=None, val_fraction=None,
    rounds=None, ridge=None, fit_rows=None, itq_iterations=None
),
    text_signature = "(x, preset=None, *, method=None, bits=None, k=None, seed=0, threads=None, progress=True, epochs=None, batch=None, lr=None, alpha=None, loss=None, target=None, val_fraction=None, rounds=None, ridge=None, fit_rows=None, itq_iterations=None)"
)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn train(
    x: &Bound<'_, PyAny>,
    preset: Option<&str>,
    method: Option<&str>,
    bits: Option<Int>,
    k: Option<Int>,
    seed: Int,
    threads: Option<Int>,
    progress: bool,
    epochs: Option<Int>,
    batch: Option<Int>,
    lr: Option<f64>,
    alpha: Option<f64>,
    loss: Option<&str>,
    target: Option<&str>,
    val_fraction: Option<f64>,
    rounds: Option<Int>,
    ridge: Option<f64>,
    fit_rows: Option<Int>,
    itq_iterations: Option<Int>,
) -> PyResult<Model> {
    let py = x.py();
    let seed = u64::try_from(seed.0)
        .map_err(|_| PyValueError::new_err(format!("seed must be in 0..2**64, got {}", seed.0)))?;
    let arg = |name: &str, e: String| PyValueError::new_err(format!("{name}: {e}"));
    let options = FitOptions {
        bits: positive("bits", bits)?,
        k: positive("k", k)?,
        seed,
        progress,
        epochs: positive("epochs", epochs)?,
        batch: positive("batch", batch)?,
        lr,
        alpha,
        loss: loss
            .map(|l| l.parse::<LossKind>().map_err(|e| arg("loss", bare(e))))
            .transpose()?,
        target: target
            .map(|t| t.parse::<Target>().map_err(|e| arg("target", bare(e))))
            .transpose()?,
        val_fraction,
        rounds: positive("rounds", rounds)?,
        ridge,
        fit_rows: positive("fit_rows", fit_rows)?,
        itq_iterations: positive("itq_iterations", itq_iterations)?,
    };
    let threads = positive("threads", threads)?;
    let method: Method = match (preset, method) {
        (Some(_), Some(_)) => {
            return Err(PyValueError::new_err(
                "give preset or method, not both (a preset names its method)",
            ))
        }
        (Some("retrieval"), None) => Method::Pursuit,
        (Some(p), None) => {
            return Err(PyValueError::new_err(format!(
                "preset must be \"retrieval\", got {p:?}"
            )))
        }
        (None, m) => m
            .unwrap_or("bsa")
            .parse()
            .map_err(|e: bsa::Error| arg("method", bare(e)))?,
    };
    options.refuse_unused(
        method,
        &match preset {
            Some(p) => format!("preset {p:?}"),
            None => format!("method {method}"),
        },
    )?;
    let x = float32_matrix(as_array(x, "x")?, "x", Rows::Some)?;
    let x = x.readonly();
    let xv = view2(&x);
    warn_if_not_unit(py, xv, "x", (method, xv.ncols()))?;
    let (n, dim) = xv.dim();
    // The one-code check encodes a sample: on the call's pool, as the fit (outside it, rayon's
    // global pool would start, which a process forked after the call could not use).
    type Fitted = (Autoencoder, serde_json::Value, Option<String>);
    let fit = |stop: &Arc<AtomicBool>| -> bsa::Result<Fitted> {
        let (model, report) =
            with_blas_threads(threads, || fit_model(xv, preset, method, &options, stop))
                .map_err(as_keywords)?;
        let one_code = model.one_code_warning(xv, "x");
        Ok((model, report, one_code))
    };
    let (model, mut report, one_code) = interruptible(py, threads, fit)?;
    // What made the model likely poor (a learning rate far too large, a loss that did not
    // fall): warned of, as `bsa train` does, and not kept in the model's metadata.
    if let Some(serde_json::Value::Array(warnings)) =
        report.as_object_mut().and_then(|r| r.remove("warnings"))
    {
        for w in warnings.iter().filter_map(|w| w.as_str()) {
            let w = bare(as_keywords(bsa::Error::InvalidArgument(w.to_string())));
            if let Ok(w) = std::ffi::CString::new(w) {
                PyErr::warn(py, &py.get_type::<PyUserWarning>(), &w, 1)?;
            }
        }
    }
    if let Some(w) = one_code.and_then(|w| std::ffi::CString::new(w).ok()) {
        PyErr::warn(py, &py.get_type::<PyUserWarning>(), &w, 1)?;
    }
    // What `bsa train` saves as the model's `training` metadata, with Python as the data.
    let mut training =
        serde_json::json!({"data": "<python>", "rows": n, "dim": dim, "threads": threads});
    if let (Some(t), serde_json::Value::Object(r)) = (training.as_object_mut(), report) {
        t.extend(r);
    }
    Ok(Model {
        inner: Arc::new(FrozenModel::new(model)),
        training,
    })
}

/// [`train`]'s settings; `None` where not given (the library's defaults apply).
struct FitOptions {
    bits: Option<usize>,
    k: Option<usize>,
    seed: u64,
    progress: bool,
    epochs: Option<usize>,
    batch: Option<usize>,
    lr: Option<f64>,
    alpha: Option<f64>,
    loss: Option<LossKind>,
    target: Option<Target>,
    val_fraction: Option<f64>,
    rounds: Option<usize>,
    ridge: Option<f64>,
    fit_rows: Option<usize>,
    itq_iterations: Option<usize>,
}

impl FitOptions {
    /// Refuses settings `method` would ignore: the model would not be what was asked.
    fn refuse_unused(&self, method: Method, label: &str) -> PyResult<()> {
        let given = [
            ("epochs", self.epochs.is_some()),
            ("batch", self.batch.is_some()),
            ("lr", self.lr.is_some()),
            ("alpha", self.alpha.is_some()),
            ("loss", self.loss.is_some()),
            ("target", self.target.is_some()),
            ("val_fraction", self.val_fraction.is_some()),
            ("rounds", self.rounds.is_some()),
            ("ridge", self.ridge.is_some()),
            ("fit_rows", self.fit_rows.is_some()),
            ("itq_iterations", self.itq_iterations.is_some()),
        ];
        let given: Vec<&str> = given
            .iter()
            .filter(|&&(_, is_given)| is_given)
            .map(|&(name, _)| name)
            .collect();
        match method.unread(&given, str::to_string) {
            None => Ok(()),
            Some(unread) => Err(PyValueError::new_err(format!(
                "{label} does not read {unread}: leave them out"
            ))),
        }
    }
}

/// `e` with `bsa train`'s flags, which the library's checks and hints name (`--val-fraction
/// must be in [0, 0.5)`, "lower --lr"), said as [`train`]'s keyword arguments (`val_fraction`,
/// `lr`): a Python caller passed no flags.
fn as_keywords(e: bsa::Error) -> bsa::Error {
    fn keywords(m: String) -> String {
        let mut out = String::with_capacity(m.len());
        let mut rest = m.as_str();
        while let Some(at) = rest.find("--") {
            let (before, flag) = rest.split_at(at);
            out.push_str(before);
            let name_len = flag[2..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
                .unwrap_or(flag.len() - 2);
            let name = &flag[2..2 + name_len];
            let starts_word = !out.ends_with(|c: char| c.is_alphanumeric());
            match name.starts_with(|c: char| c.is_ascii_lowercase()) && starts_word {
                true => out.push_str(&name.replace('-', "_")),
                false => out.push_str(&flag[..2 + name_len]),
            }
            rest = &flag[2 + name_len..];
        }
        out.push_str(rest);
        out
    }
    use bsa::Error as E;
    match e {
        E::InvalidArgument(m) => E::InvalidArgument(keywords(m)),
        E::Diverged(m) => E::Diverged(keywords(m)),
        E::Linalg(m) => E::Linalg(keywords(m)),
        e => e,
    }
}

/// The fit behind [`train`], without the GIL: the same three paths as `bsa train` (gradient
/// descent, closed-form baselines, pursuit). Returns the model and its training metadata.
fn fit_model(
    x: ArrayView2<f32>,
    preset: Option<&str>,
    method: Method,
    o: &FitOptions,
    stop: &AtomicBool,
) -> bsa::Result<(Autoencoder, serde_json::Value)> {
    let dim = x.ncols();
    let arg = |e: String| bsa::Error::InvalidArgument(e);
    bsa::io::check_float32_norms("x", x)?;
    if method == Method::Pursuit {
        check_rows("x", x, true)?;
        let mut params = match (preset, o.bits, o.k) {
            (Some(_), b, k) => bsa::pipeline::retrieval_preset(b, k),
            (None, Some(b), Some(k)) => bsa::pursuit::PursuitParams::new(b, k),
            _ => {
                return Err(arg(
                    "method pursuit needs bits and k (or use preset=\"retrieval\")".into(),
                ))
            }
        };
        params.rounds = o.rounds.unwrap_or(params.rounds);
        params.ridge = o.ridge.unwrap_or(params.ridge);
        params.seed = o.seed;
        params.fit_rows = o.fit_rows;
        let mut progress = |r: &bsa::pursuit::RoundStats| {
            if o.progress {
                progress_line(format!(
                    "bsa: round {:>2}: reconstruction {:.4}, {} dead atoms re-seeded, {:.1}s",
                    r.round, r.reconstruction_loss, r.dead_atoms_reseeded, r.seconds
                ));
            }
        };
        let (dictionary, _) = params.fit_until(x, None, &mut progress, stop)?;
        // The model's own figure, as `bsa train` records it (not the last round's).
        let rec = params.fit_reconstruction(&dictionary, x, stop)?;
        let info = serde_json::json!({
            "preset": preset, "settings": params, "reconstruction_loss": rec,
        });
        return Ok((params.model(dim, dictionary), info));
    }
    if method.is_baseline() {
        check_rows("x", x, true)?;
        let bits = match (method, o.bits) {
            (_, Some(b)) => b,
            (Method::Sign, None) => dim,
            (m, None) => return Err(arg(format!("method {m} needs bits"))),
        };
        let mut params = BaselineParams::new(method, bits);
        if let Some(k) = o.k {
            params.k = k;
        }
        params.seed = o.seed;
        params.fit_rows = o.fit_rows.unwrap_or(params.fit_rows);
        params.itq_iterations = o.itq_iterations.unwrap_or(params.itq_iterations);
        params.validate(dim)?;
        let (model, report) = params.fit_until(x, stop)?;
        let info = serde_json::json!({
            "settings": params,
            "epochs_run": 0,
            "fit_rows": report.fit_rows,
            "train_reconstruction": report.reconstruction,
            "quantization_loss": report.quantization_loss.last(),
        });
        return Ok((model, info));
    }
    let (Some(bits), Some(k)) = (o.bits, o.k) else {
        return Err(arg(format!("method {method} needs bits and k")));
    };
    let mut params = TrainParams::new(bits, k);
    params.method = method;
    params.loss = o.loss.unwrap_or(params.loss);
    params.target = o.target.unwrap_or(params.target);
    params.alpha = o.alpha.unwrap_or(params.alpha);
    params.epochs = o.epochs.unwrap_or(params.epochs);
    params.batch = o.batch.unwrap_or(params.batch);
    params.lr = o.lr.unwrap_or(params.lr);
    params.seed = o.seed;
    params.val_fraction = o.val_fraction.unwrap_or(params.val_fraction);
    check_rows("x", x, params.loss == LossKind::Cosine)?;
    params.validate(x.nrows(), dim)?;
    let mut progress = |p: &Progress| {
        if let (true, Progress::Epoch(e)) = (o.progress, p) {
            let val = e
                .validation
                .map(|v| format!(", validation loss {:.4}", v.loss))
                .unwrap_or_default();
            progress_line(format!(
                "bsa: epoch {:>3}: loss {:.4} rec {:.4} align {:.4} active {:.1}{val}",
                e.epoch, e.train.loss, e.train.rec, e.train.align, e.train.active_mean
            ));
        }
    };
    let (model, report) = params.fit_until(x, &mut progress, stop)?;
    let last = match report.best_epoch {
        Some(e) => report.epochs.get(e - 1),
        None => report.epochs.last(),
    };
    let info = serde_json::json!({
        "warnings": report.warnings,
        "settings": params.as_trained(),
        "epochs_run": report.epochs.len(),
        "train_loss": last.map(|l| l.train.loss),
        "validation_loss": last.and_then(|l| l.validation.map(|v| v.loss)),
    });
    Ok((model, info))
}
