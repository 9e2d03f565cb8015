//! The `bsa.Index` class: build, open, save, search, add, delete, compact, refresh and close an
//! index directory in `bsa build`'s format. An object holds the generation it searches
//! ([`Loaded`]: the snapshot with its model), replaced whole by its own changes and by
//! `refresh`; an index built without a path lives in a private folder ([`PrivateDir`]) removed
//! with the object. Ids given as Python lists, sets or arrays are read by [`id_vector`].

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bsa::live::AddSource;
use bsa::model::{FrozenModel, Method};
use bsa::pipeline::{build_index_notifying, BuildRequest, BuildSource, GraphOn};
use bsa::query::{Queries, Request};
use bsa_index::live::{IdFilter, Snapshot, Writer};
use bsa_index::{HnswParams, LockWait, OpenOptions, VectorDtype};
use numpy::{
    PyArray1, PyArray2, PyArrayDescrMethods, PyArrayMethods, PyUntypedArrayMethods, ToPyArray,
};
use pyo3::exceptions::{PyFileExistsError, PyTypeError, PyUserWarning, PyValueError};
use pyo3::prelude::*;

use crate::arrays::{
    as_array, code_matrix, contiguous, dtype_str, filled, float32_matrix, shape_str, view2,
    warn_if_not_unit, Rows,
};
use crate::errors::{bare, code_row_of, index_err, py_err, row_of};
use crate::model::Model;
use crate::threads::{
    changing, detached, interruptible, interruptible_if, run_interruptible, warn_waiting,
    without_gil, Changing,
};
use crate::values::{json_to_py, positive, seconds, Int};

/// Opens the index at `dir` for writing; if another writer holds it, warns (`UserWarning`)
/// before waiting, as `bsa add` says so on stderr: else a wait behind a long compaction in
/// another process looks like a hang. `stop` (Ctrl-C) ends the wait and the change, and
/// `lock_timeout` the wait (``TimeoutError``). `verify`:
/// the checksums of the generation changed are checked first, as ``bsa add`` and ``bsa delete``
/// check them (a change on a damaged file would carry the damage into a new generation).
fn open_writer(
    index: &Index,
    dir: &Path,
    stop: &Arc<AtomicBool>,
    verify: bool,
    lock_timeout: Option<std::time::Duration>,
) -> bsa::Result<Writer> {
    // Closed while this change waited for the in-process slot (`Index::close` takes it): the
    // change is not made, rather than made and then reported as failed.
    index.current()?;
    let wait = LockWait::new()
        .on_wait(|| warn_waiting(dir))
        .stop(Arc::clone(stop))
        .timeout(lock_timeout);
    let mut writer = Writer::open_waiting(dir, wait)?;
    if verify {
        writer.verify_checksums()?;
    }
    Ok(writer)
}

/// Warns (`UserWarning`) of each directory a killed build of `dir` left beside it
/// ([`bsa_index::build_leftovers`], as `bsa build` says on stderr): an index-sized folder
/// nothing else points out. Not removed: another build may be writing it.
fn warn_leftovers(py: Python<'_>, dir: &Path) {
    for left in bsa_index::build_leftovers(dir) {
        let msg = bsa_index::leftover_advice(&left, dir);
        if let Ok(msg) = std::ffi::CString::new(msg) {
            let _ = PyErr::warn(py, &py.get_type::<PyUserWarning>(), &msg, 1);
        }
    }
}

/// A search index: packed codes, memory-mapped, in ``bsa build``'s on-disk format.
///
/// Make one with :meth:`Index.build` (in a private temporary directory unless ``path`` is
/// given; :meth:`save` copies it) or :meth:`Index.open` (an index written by ``bsa build`` or
/// :meth:`save`). One index serves many Python threads at once: searches release the GIL.
/// A large enough batch of Hamming queries makes, once, an in-memory copy of the codes
/// transposed for counting many rows at once (as many bytes as the codes; kept while the
/// index is open).
///
/// Example::
///
///     index = bsa.Index.build(x=base, model=model, vectors=True)
///     D, I = index.search(queries, 10, score="adc", rescore=4)
///     index.save("my-index")            # then: bsa search --index my-index ...
///     index = bsa.Index.open("my-index")
#[pyclass(frozen, module = "bsa", name = "Index")]
pub(crate) struct Index {
    /// What searches read; replaced (not changed) by `add`, `delete` and `compact`, so a
    /// search that took it keeps its generation and that generation's model.
    /// `None` once closed ([`Index::close`]).
    inner: RwLock<Option<Arc<Loaded>>>,
    /// The private directory of an index built without a path; removed with the object, or
    /// by [`Index::close`].
    tmp: Mutex<Option<PrivateDir>>,
    /// Whether `refresh` verifies the checksums of the segments it opens (each before a search
    /// first reads it), as the open did.
    verify: bool,
}

/// The private folder of an index built without a path (`$TMPDIR/bsa-index-XXXX`, the index
/// in its `index` subfolder), removed with its object or by [`Index::close`]: by the process
/// that made it only (a forked child has the object too, and its exit must not remove its
/// parent's index), and only what bsa put there: the index, then the folder if nothing else is
/// in it (a copy saved beside the index, into a path taken from `index.path`, stays, and so
/// does the folder then).
struct PrivateDir {
    dir: Option<tempfile::TempDir>,
    pid: u32,
}

impl PrivateDir {
    fn new(dir: tempfile::TempDir) -> PrivateDir {
        PrivateDir {
            dir: Some(dir),
            pid: std::process::id(),
        }
    }

    /// Removes the index and then the folder, if empty (see the type); `Ok` in a forked child.
    fn remove(mut self) -> bsa::Result<()> {
        self.remove_now()
    }

    fn remove_now(&mut self) -> bsa::Result<()> {
        let Some(dir) = self.dir.take() else {
            return Ok(());
        };
        let folder = dir.keep();
        if std::process::id() != self.pid {
            return Ok(());
        }
        let index = folder.join("index");
        match std::fs::remove_dir_all(&index) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(bsa::Error::io(&index, e));
            }
            _ => {}
        }
        match std::fs::remove_dir(&folder) {
            Err(e) if e.kind() != std::io::ErrorKind::DirectoryNotEmpty => {
                Err(bsa::Error::io(&folder, e))
            }
            _ => Ok(()),
        }
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = self.remove_now();
    }
}

/// One generation of the index as opened: its snapshot and its model, loaded together.
struct Loaded {
    snap: Arc<Snapshot>,
    /// The index's own model (copied in at build time).
    model: Option<Arc<FrozenModel>>,
    /// The training metadata of that model, for `Index.model`.
    model_training: serde_json::Value,
}

impl Loaded {
    /// `snap` with its model: `previous`'s when the manifest records the same model file
    /// (length and CRC), else loaded from the directory (another process may have rebuilt the
    /// index with another model: queries must be encoded with the model of the codes).
    fn new(snap: Snapshot, previous: Option<&Loaded>) -> bsa::Result<Loaded> {
        if let Some(p) = previous.filter(|p| p.snap.model_info() == snap.model_info()) {
            return Ok(Loaded {
                snap: Arc::new(snap),
                model: p.model.clone(),
                model_training: p.model_training.clone(),
            });
        }
        // Both from the bytes the snapshot's manifest names (a rebuild may have put another
        // model at that path since the open).
        let (model, model_training) = match bsa::query::index_model_and_training(&snap)? {
            Some((m, training)) => (Some(Arc::new(FrozenModel::new(m))), training),
            None => (None, serde_json::Value::Null),
        };
        Ok(Loaded {
            snap: Arc::new(snap),
            model,
            model_training,
        })
    }
}

impl Index {
    fn open_dir(dir: &Path, verify: bool, tmp: Option<PrivateDir>) -> bsa::Result<Index> {
        // Absolute: the object opens its directory again after every change (and its writers
        // write there), which a relative path would find under whatever working directory the
        // process has by then: another index of that name.
        let dir = std::path::absolute(dir).map_err(|e| bsa::Error::io(dir, e))?;
        let options = OpenOptions::verify_checksums(verify).lazy(true);
        let index = Snapshot::open_with(&dir, options)?;
        Ok(Index {
            inner: RwLock::new(Some(Arc::new(Loaded::new(index, None)?))),
            tmp: Mutex::new(tmp),
            verify,
        })
    }

    /// The current generation, or an error once the object is closed (as a closed file's
    /// calls raise `ValueError`).
    fn current(&self) -> bsa::Result<Arc<Loaded>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.as_ref().map(Arc::clone).ok_or_else(|| {
            bsa::Error::InvalidArgument(
                "this bsa.Index is closed (close() or the end of its with block): open the \
                 index again"
                    .into(),
            )
        })
    }

    /// [`Index::current`] for Python.
    fn loaded(&self) -> PyResult<Arc<Loaded>> {
        self.current().map_err(py_err)
    }

    /// The current snapshot.
    fn snap(&self) -> PyResult<Arc<Snapshot>> {
        Ok(Arc::clone(&self.loaded()?.snap))
    }

    /// Opens the directory again after this object's change (the new generation, with its
    /// model), sharing the segments it still lists with the generation before.
    fn reopen(&self) -> bsa::Result<()> {
        self.follow(true).map(drop)
    }

    /// Moves to the directory's current generation if it is not the one searched; returns
    /// whether it moved. `own`: after this object's change, made under the writers' lock, so
    /// nothing newer can be in place; otherwise (`refresh`) a generation another thread put in
    /// place meanwhile is not overwritten: the follow starts again from it.
    fn follow(&self, own: bool) -> bsa::Result<bool> {
        // After its own change, the segments it had not opened (its new one, and other
        // writers' it took in under the lock) are the ones the change's writer checked before
        // it changed anything, or whose check the caller waived (`verify=False`, which a
        // damaged index needs: a check now would raise with the change made).
        let options = match own {
            true => OpenOptions::verify_checksums(false),
            false => OpenOptions::verify_checksums(self.verify).lazy(true),
        };
        let mut moved = false;
        loop {
            let old = self.current()?;
            let Some(fresh) = old.snap.reopen(options)? else {
                return Ok(moved);
            };
            let fresh = Arc::new(Loaded::new(fresh, Some(&old))?);
            let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
            match inner.as_ref() {
                // Closed meanwhile: it stays closed.
                None => return Ok(moved),
                Some(now) if own || Arc::ptr_eq(now, &old) => {
                    *inner = Some(fresh);
                    return Ok(true);
                }
                Some(_) => moved = true,
            }
        }
    }
}

#[pymethods]
impl Index {
    /// Opens an index directory (written by ``bsa build`` or :meth:`save`), memory-mapped, its
    /// files' checksums verified, each before a search first reads it (the stored vectors at the
    /// first ``rescore``, the posting lists at the first ``mode="inverted"``, as ``bsa search``
    /// does). ``verify=False`` skips the full checksums (the header
    /// checks still run).
    ///
    /// Example: ``index = bsa.Index.open("idx")``
    #[staticmethod]
    #[pyo3(signature = (path, *, verify=true))]
    fn open(py: Python<'_>, path: PathBuf, verify: bool) -> PyResult<Index> {
        without_gil(py, None, || Index::open_dir(&path, verify, None))
    }

    /// Builds an index, as ``bsa build`` does, and opens it.
    ///
    /// Give either ``codes`` (uint8, n x ceil(bits / 8), ``numpy.packbits(bitorder="little")``
    /// rows; ``bits`` defaults to 8 x the columns) or ``x`` (float, n x dim) with ``model``
    /// (the model is stored in the index, so float queries and ``score="adc"`` work). ``x`` is
    /// also what ``vectors=True`` stores for ``rescore`` (``f16=True``: as float16).
    /// ``ids``: one non-negative integer per row (default: row numbers). ``hnsw=True`` adds a
    /// graph (``m``, ``ef_construction``, ``ef_search``: 32, 200 and 64 unless given), built on ``hnsw_on``: ``"decoded"`` (the
    /// model's decoded codes, searched with ``score="adc"``; the default with a model),
    /// ``"data"`` (``x`` itself, also for ``adc``) or ``"codes"`` (Hamming; the default
    /// without a model). ``inverted`` and ``bitmaps``: ``None``
    /// stores posting lists (and their bitmaps) when they pay off, except for a pursuit model's
    /// codes (searched with ``score="adc"``, which does not read them), ``True`` always,
    /// ``False`` never. ``path``: where to write it (default: a private temporary directory removed with
    /// the object); ``overwrite`` replaces an index there (one holding nothing but bsa's files:
    /// ``FileExistsError`` names anything else in it), once the new one is complete, after
    /// its writers (waiting at most ``lock_timeout`` seconds for them if given, then
    /// ``TimeoutError``, the old index kept, as in :meth:`add`). Ctrl-C stops the build within about
    /// a second (``KeyboardInterrupt``), leaving nothing at ``path`` (an index it would have
    /// replaced stays as it was), unless the new index was complete: a Ctrl-C while it is
    /// put in place lets the call return, with a ``UserWarning`` saying so.
    ///
    /// Example::
    ///
    ///     index = bsa.Index.build(codes=model.encode(base))                # Hamming only
    ///     index = bsa.Index.build(x=base, model=model, vectors=True, hnsw=True)
    #[staticmethod]
    #[pyo3(signature = (
        codes=None, x=None, model=None, ids=None, vectors=false, hnsw=false, *, bits=None,
        f16=false, inverted=None, bitmaps=None, m=None, ef_construction=None, ef_search=None,
        hnsw_on=None, path=None, overwrite=false, threads=None, lock_timeout=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn build(
        py: Python<'_>,
        codes: Option<&Bound<'_, PyAny>>,
        x: Option<&Bound<'_, PyAny>>,
        model: Option<&Bound<'_, Model>>,
        ids: Option<&Bound<'_, PyAny>>,
        vectors: bool,
        hnsw: bool,
        bits: Option<Int>,
        f16: bool,
        inverted: Option<bool>,
        bitmaps: Option<bool>,
        m: Option<Int>,
        ef_construction: Option<Int>,
        ef_search: Option<Int>,
        hnsw_on: Option<String>,
        path: Option<PathBuf>,
        overwrite: bool,
        threads: Option<Int>,
        lock_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Index> {
        let bits = positive("bits", bits)?;
        let lock_timeout = seconds("lock_timeout", lock_timeout)?;
        let threads = positive("threads", threads)?;
        let graph_on = match hnsw_on.as_deref() {
            None => None,
            Some("decoded") => Some(GraphOn::Decoded),
            Some("data") => Some(GraphOn::Data),
            Some("codes") => Some(GraphOn::Codes),
            Some(other) => {
                return Err(PyValueError::new_err(format!(
                    "hnsw_on: unknown value {other:?}; expected \"decoded\", \"data\" or \"codes\""
                )))
            }
        };
        let graph_settings = [
            ("m", m),
            ("ef_construction", ef_construction),
            ("ef_search", ef_search),
        ];
        if let (false, Some((name, _))) = (hnsw, graph_settings.iter().find(|(_, v)| v.is_some())) {
            // As `bsa build --m` without `--hnsw`: it would be ignored.
            return Err(PyValueError::new_err(format!(
                "{name} is a setting of the graph: it needs hnsw=True"
            )));
        }
        let hnsw = if hnsw {
            let d = HnswParams::default();
            Some(HnswParams {
                max_connections: positive("m", m)?.unwrap_or(d.max_connections),
                ef_construction: positive("ef_construction", ef_construction)?
                    .unwrap_or(d.ef_construction),
                ef_search: positive("ef_search", ef_search)?.unwrap_or(d.ef_search),
            })
        } else {
            None
        };
        match (&codes, &model, &x) {
            (Some(_), Some(_), _) => {
                return Err(PyValueError::new_err(
                    "give codes, or x with model, not both codes and model",
                ))
            }
            (None, Some(_), None) => {
                return Err(PyValueError::new_err(
                    "model needs x, the vectors to encode",
                ))
            }
            (None, None, _) => {
                return Err(PyValueError::new_err(
                    "give codes (packed uint8), or x (float vectors) with model",
                ))
            }
            _ => {}
        }
        if vectors && x.is_none() {
            return Err(PyValueError::new_err("vectors=True stores x: give x"));
        }
        // Options that would be ignored are refused: the index would not be what was asked.
        if bits.is_some() && model.is_some() {
            return Err(PyValueError::new_err(
                "bits is the model's code length: give bits only with codes",
            ));
        }
        if graph_on.is_some() && hnsw.is_none() {
            return Err(PyValueError::new_err(
                "hnsw_on chooses what the graph is built on: it needs hnsw=True",
            ));
        }
        if f16 && !vectors {
            return Err(PyValueError::new_err(
                "f16 is how stored vectors are kept: it needs vectors=True",
            ));
        }
        if codes.is_some() && x.is_some() {
            // Stored vectors are read only by rescoring, whose float queries need a model to
            // encode them, and a graph on the data needs one too.
            return Err(PyValueError::new_err(
                "x is used with a model (encoded, stored, the graph built on it); an index of \
                 codes alone has no use for it (float queries need a model): leave x out, or \
                 give x with model",
            ));
        }
        let x = x
            .map(|x| float32_matrix(as_array(x, "x")?, "x", Rows::Some))
            .transpose()?;
        let x = x.as_ref().map(|x| x.readonly());
        let codes = codes
            .map(|c| code_matrix(as_array(c, "codes")?, "codes", Rows::Some))
            .transpose()?;
        let codes = codes.as_ref().map(|c| c.readonly());
        let ids = ids.map(|i| id_vector(i, "ids", Ids::PerRow)).transpose()?;
        let model = model.map(|m| m.get());
        let code_rows = codes.as_ref().map(|c| c.as_array().nrows());
        let code_bytes = codes.as_ref().map(|c| c.as_slice()).transpose()?;
        let xv = x.as_ref().map(view2);
        if let (Some(xv), Some(m)) = (xv, model) {
            warn_if_not_unit(py, xv, "x", (m.inner.config.method, m.inner.config.dim))?;
        }

        let (dir, tmp) = match path {
            Some(p) if p.exists() && !overwrite => {
                return Err(PyFileExistsError::new_err(format!(
                    "{}: exists; pass overwrite=True to replace it",
                    p.display()
                )))
            }
            Some(p) => (p, None),
            None => {
                let t =
                    bsa::io::temp_dir_in(&std::env::temp_dir(), "bsa-index-").map_err(py_err)?;
                (t.path().join("index"), Some(PrivateDir::new(t)))
            }
        };
        if tmp.is_none() {
            warn_leftovers(py, &dir);
        }
        // Said before the model's copy is written beside it (the check would name that file).
        bsa_index::check_outside_index(&dir).map_err(|e| py_err(e.into()))?;
        // Ctrl-C stops the build (encoding, files, graph): nothing is left at `path`.
        changing(py, threads, &dir, lock_timeout, |stop, lock_timeout| {
            // The index keeps a copy of the model file: write it once, beside the build where
            // its folder exists (a full or small $TMPDIR is not the index's disk).
            let near = (dir.parent())
                .map(|p| {
                    if p.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        p
                    }
                })
                .filter(|p| p.is_dir());
            let system_tmp = std::env::temp_dir();
            let model_dir = bsa::io::temp_dir_in(near.unwrap_or(&system_tmp), ".bsa-model-")?;
            let model_file = model_dir.path().join("model.safetensors");
            let source = match (model, code_bytes) {
                (Some(m), _) => {
                    bsa::io::model::save(&model_file, &m.inner, &m.training)?;
                    BuildSource::Model {
                        model: &m.inner,
                        file: &model_file,
                    }
                }
                (None, Some(bytes)) => BuildSource::Codes {
                    bytes,
                    rows: code_rows.unwrap_or(0),
                    bits,
                },
                (None, None) => unreachable!("checked above"),
            };
            let mut request = BuildRequest::new(source);
            request.data = xv;
            request.data_name = xv.map(|_| "<python>".to_string());
            request.ids = ids.as_deref();
            request.vectors = vectors.then_some(if f16 {
                VectorDtype::F16
            } else {
                VectorDtype::F32
            });
            request.hnsw = hnsw;
            request.graph_on = graph_on;
            request.inverted = inverted;
            request.bitmaps = bitmaps;
            request.overwrite = overwrite;
            request.lock_timeout = lock_timeout;
            request.stop = Some(stop);
            build_index_notifying(&request, &dir, |_, _| {}, || warn_waiting(&dir)).map_err(
                |e| match code_bytes {
                    Some(_) => code_row_of(e, "codes"),
                    None => row_of(e, "data", "x"),
                },
            )?;
            // Its own files were just written: not read again. Other writers' are, by refresh.
            let index = Index::open_dir(&dir, false, tmp)?;
            Ok(Index {
                verify: true,
                ..index
            })
        })
    }

    /// Copies the index to the directory ``path`` (atomically: a temporary directory beside it,
    /// renamed into place), where ``bsa search --index`` and :meth:`open` read it. The copy
    /// holds the rows this object searches, whatever other processes committed since it was
    /// opened (if one removed a file of them meanwhile, ``FileNotFoundError``: open the index
    /// again and save that); changes of this process to the index (this object's ``add`` in
    /// another thread, say) are waited for first, and this object's own leave it at the
    /// generation copied.
    /// ``overwrite`` replaces an index there, one holding nothing but bsa's files
    /// (``FileExistsError`` names anything else in it), after its writers finish; a symbolic
    /// link there is kept and the index it names replaced. Ctrl-C stops the copy
    /// (``KeyboardInterrupt``), leaving ``path`` as it was; one while the copy is put in place
    /// lets the call return, with a ``UserWarning``. ``lock_timeout``: seconds to wait
    /// at most for the writers of an index it replaces (then ``TimeoutError``, that index kept),
    /// as in :meth:`add`.
    #[pyo3(signature = (path, *, overwrite=false, lock_timeout=None))]
    fn save(
        &self,
        py: Python<'_>,
        path: PathBuf,
        overwrite: bool,
        lock_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let lock_timeout = seconds("lock_timeout", lock_timeout)?;
        let source = self.snap()?.dir().to_path_buf();
        // This process's changes of the index wait for the copy, and it for them: a merge or
        // compaction in another thread would remove files the copy reads. (A path that is the
        // index itself is refused by the copy.)
        let held: [&Path; 2] = [&path, &source];
        run_interruptible(
            py,
            None,
            Some((&held, lock_timeout)),
            |stop, lock_timeout| {
                // The generation once they are done: the object's own, current.
                let index = self.current()?.snap.clone();
                let wait = LockWait::new()
                    .on_wait(|| warn_waiting(&path))
                    .stop(Arc::clone(stop))
                    .timeout(lock_timeout);
                Ok(index.copy_to(&path, overwrite, wait)?)
            },
        )
    }

    /// The ``k`` best rows of the index for each query, as ``(D, I)`` numpy arrays of shape
    /// ``(nq, k)``, best first (FAISS's layout): ``I`` int64 ids, -1 where there are fewer than
    /// ``k`` hits; ``D`` int32 Hamming distances (missing: 2**31 - 1) for ``score="hamming"``,
    /// else float32 scores, higher is better (missing: -inf): the score's values, or exact
    /// cosine similarities after ``rescore``.
    ///
    /// ``q``: float queries (n x dim, encoded with the index's model) or packed query codes
    /// (uint8, as :meth:`Model.encode` makes them). ``score``: ``hamming`` (the default,
    /// ``None``, is Hamming too, with a ``UserWarning`` when the index's codes are a pursuit
    /// model's, made to be searched with ``adc``), ``cosine``,
    /// ``jaccard``, ``overlap`` (code against code), ``adc`` or ``soft`` (float query against
    /// code; need float queries and the model; ``soft`` sums over the code's set bits, so it
    /// ranks codes of a fixed number of bits, topk and pursuit, and not sign, ITQ or BSA codes,
    /// which it ranks by their bit counts). ``mode``: ``flat`` (exact scan), ``inverted``
    /// (exact, posting lists) or ``hnsw`` (graph, approximate, the score it was built for; ``ef`` is its
    /// candidate list size, at least ``k``; by default the build's, raised to the candidates
    /// asked for: ``k``, or ``k x R`` with ``rescore``). ``rescore=R``: the best ``k x R`` by ``score`` (for
    /// ``hnsw``, of every row the walk scored, so ``ef`` may be below ``k x R``; for ``adc``,
    /// picked with 8-bit integer tables, as ``bsa search --rescore``) are re-ranked by exact
    /// cosine against the stored vectors. ``max_distance``: Hamming only, drop hits
    /// farther away. ``threads``: default all cores. The results are those of ``bsa search``
    /// with the same options; the GIL is released while searching.
    ///
    /// Example::
    ///
    ///     D, I = index.search(queries, 10)                                   # Hamming
    ///     D, I = index.search(queries, 10, score="adc", rescore=4)           # best recall
    ///     D, I = index.search(queries, 10, score="adc", mode="hnsw", ef=128)  # graph
    ///
    /// Filters and ranges: ``allow_ids`` (only these ids) or ``deny_ids`` (never these), exact
    /// in the exact modes; ``min_score``: drop hits scoring less (scores other than Hamming; with
    /// ``rescore``, the bound applies to ``score``'s exact value, and the cosines in ``D`` then
    /// order those hits, so they may be below it).
    /// With a range (``max_distance`` or ``min_score``), ``k=None`` returns every hit in range
    /// (as ``bsa search`` without ``--k``): the arrays are as wide as the most hits of a query,
    /// padded as above. Example: ``D, I = index.search(q, None, max_distance=40)``
    ///
    /// Ctrl-C stops a large batch of queries (``KeyboardInterrupt``), checked between batches of
    /// at least 256 queries, sized to about 2**28 query-code pairs of a Hamming scan of short
    /// codes (fewer for wider codes, 2**25 for other scores).
    #[pyo3(signature = (
        q, k=Some(Int(10)), *, score=None, mode="flat", rescore=None, ef=None, max_distance=None,
        min_score=None, allow_ids=None, deny_ids=None, threads=None
    ),
    text_signature = "($self, q, k=10, *, score=None, mode=\"flat\", rescore=None, ef=None, max_distance=None, min_score=None, allow_ids=None, deny_ids=None, threads=None)"
)]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn search<'py>(
        &self,
        q: &Bound<'py, PyAny>,
        k: Option<Int>,
        score: Option<&str>,
        mode: &str,
        rescore: Option<Int>,
        ef: Option<Int>,
        max_distance: Option<Int>,
        min_score: Option<f64>,
        allow_ids: Option<&Bound<'py, PyAny>>,
        deny_ids: Option<&Bound<'py, PyAny>>,
        threads: Option<Int>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyArray2<i64>>)> {
        if allow_ids.is_some() && deny_ids.is_some() {
            return Err(PyValueError::new_err(
                "give allow_ids or deny_ids, not both",
            ));
        }
        // Scores are float32: a bound past its range would become +inf, silently (and no
        // hit); -inf keeps every hit, as such a bound does.
        let min_score = match min_score {
            Some(v) if v > 0.0 && v.is_finite() && !(v as f32).is_finite() => {
                return Err(PyValueError::new_err(format!(
                    "min_score is {v:e}, beyond float32's range (3.4e38), in which scores are"
                )))
            }
            Some(v) if v.is_nan() => {
                return Err(PyValueError::new_err(
                    "min_score is NaN: give a number (-inf keeps every hit)",
                ))
            }
            v => v.map(|v| v as f32),
        };
        let allow = allow_ids
            .map(|i| id_vector(i, "allow_ids", Ids::Set))
            .transpose()?;
        let deny = deny_ids
            .map(|i| id_vector(i, "deny_ids", Ids::Set))
            .transpose()?;
        let py = q.py();
        let k = match k {
            Some(k) => Some(positive("k", Some(k))?.unwrap_or(1)),
            None if max_distance.is_some() || min_score.is_some() => None,
            None => {
                return Err(PyValueError::new_err(
                    "k=None returns every hit in range: give max_distance or min_score too \
                     (or a k)",
                ))
            }
        };
        let rescore = positive("rescore", rescore)?;
        let ef = positive("ef", ef)?;
        let threads = positive("threads", threads)?;
        let max_distance = match max_distance {
            None => None,
            Some(Int(d)) => Some(u32::try_from(d).map_err(|_| {
                PyValueError::new_err(format!(
                    "max_distance must be between 0 and 2**32 - 1, got {d}"
                ))
            })?),
        };
        let request = Request::new(k.unwrap_or(usize::MAX))
            .mode(mode)
            .map_err(|e| PyValueError::new_err(format!("mode: {}", bare(e.into()))))?
            .score(score.unwrap_or("hamming"))
            .map_err(|e| PyValueError::new_err(format!("score: {}", bare(e.into()))))?
            .rescore(rescore)
            .with_ef(ef)
            .max_distance(max_distance)
            .min_score(min_score);
        // D holds scores for every score but Hamming (and after rescoring): the distances are
        // then not read, so adc and soft need not encode the queries.
        let request = request.distances(request.score == bsa::query::ScoreName::Hamming);
        let arr = as_array(q, "q")?;
        let is_codes = arr.dtype().is_equiv_to(&numpy::dtype::<u8>(py));
        if !is_codes && arr.dtype().kind() != b'f' {
            return Err(PyTypeError::new_err(format!(
                "q must be float vectors (float32; float16 and float64 are converted) or packed \
                 codes (uint8, as Model.encode makes them), got dtype {}",
                dtype_str(&arr)
            )));
        }
        let floats = if is_codes {
            None
        } else {
            Some(float32_matrix(arr.clone(), "q", Rows::Any)?)
        };
        let floats = floats.as_ref().map(|f| f.readonly());
        let codes = if is_codes {
            Some(code_matrix(arr, "q", Rows::Any)?)
        } else {
            None
        };
        let codes = codes.as_ref().map(|c| c.readonly());
        let queries = match (&floats, &codes) {
            (Some(f), _) => Queries::Floats(view2(f)),
            (None, Some(c)) => Queries::Packed {
                bytes: c.as_slice()?,
                rows: c.as_array().nrows(),
                cols: c.as_array().ncols(),
            },
            (None, None) => unreachable!("one of the two"),
        };
        let nq = queries.len();
        // Warnings run Python code (a `showwarning` hook may close this object, which waits for
        // the searches holding a generation): given while none is held.
        let model_config = |index: &Index| -> PyResult<Option<(Method, usize)>> {
            let loaded = index.loaded()?;
            Ok(loaded
                .model
                .as_deref()
                .map(|m| (m.config.method, m.config.dim)))
        };
        let method = model_config(self)?;
        // ADC tables and rescoring divide by a query's length; Hamming and soft scores compare
        // its code (or activations), which depend on it.
        if let (Queries::Floats(v), Some(config)) = (queries, method) {
            if request.score != bsa::query::ScoreName::Adc {
                warn_if_not_unit(q.py(), v, "q", config)?;
            }
        }
        let loaded = self.loaded()?;
        // The model's own derived matrices (FrozenModel::view): searches of several indexes
        // in turn do not make them again at each switch.
        let (index, model) = (&loaded.snap, loaded.model.as_deref().map(FrozenModel::view));
        // Both lists were refused above, naming the parameters.
        let filter = IdFilter::from_lists(allow.as_deref(), deny.as_deref())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        // The results are allocated before the search runs, so that a `k` too large for memory
        // is refused at once.
        let ids = k.map(|k| filled::<i64>(nq, k, -1)).transpose()?;
        // Ctrl-C stops a long search (checked between batches of queries); a short one
        // (under about 64M query-code pairs) does not pay for the waiting thread (0.6 ms).
        let long = nq > 256 && (nq as u64).saturating_mul(index.len() as u64) > 1 << 26;
        let found = interruptible_if(py, threads, long, |stop| {
            bsa_index::query::search_until(index, model, queries, &request, filter, Some(stop))
                .map_err(|e| match queries {
                    Queries::Packed { .. } => code_row_of(e.into(), "q"),
                    _ => row_of(e.into(), "queries", "q"),
                })
        })?;
        let pursuit = (loaded.model.as_deref()).is_some_and(|m| m.config.method == Method::Pursuit);
        drop(loaded);
        // As `bsa search` notes on stderr (a range is a Hamming one, asked for by name): such
        // codes rank poorly by Hamming (WordNet recall@10: 0.38, adc 0.80).
        if score.is_none()
            && max_distance.is_none()
            && matches!(queries, Queries::Floats(_))
            && pursuit
        {
            PyErr::warn(
                py,
                &py.get_type::<PyUserWarning>(),
                c"ranked by Hamming distance (the default score); this index's codes are a \
                  pursuit model's (preset=\"retrieval\"), made to be searched with score=\"adc\" \
                  (and rescore=R with stored vectors); pass score=\"hamming\" to keep Hamming \
                  without this warning",
                1,
            )?;
        }
        let k = k.unwrap_or_else(|| found.hits.iter().map(|h| h.ids.len()).max().unwrap_or(0));
        let mut ids = match ids {
            Some(ids) => ids,
            None => filled::<i64>(nq, k, -1)?,
        };
        let scored = found.hits.iter().any(|h| h.scores.is_some())
            || request.score != bsa::query::ScoreName::Hamming
            || rescore.is_some();
        for (row, h) in ids.rows_mut().into_iter().zip(&found.hits) {
            for (dst, &id) in row.into_iter().zip(&h.ids) {
                *dst = i64::try_from(id)
                    .map_err(|_| PyValueError::new_err(format!("id {id} does not fit int64")))?;
            }
        }
        let d = if scored {
            let mut d = filled::<f32>(nq, k, f32::NEG_INFINITY)?;
            for (row, h) in d.rows_mut().into_iter().zip(&found.hits) {
                for (dst, &s) in row.into_iter().zip(h.scores.iter().flatten()) {
                    *dst = s;
                }
            }
            numpy::IntoPyArray::into_pyarray(d, py).into_any()
        } else {
            let mut d = filled::<i32>(nq, k, i32::MAX)?;
            for (row, h) in d.rows_mut().into_iter().zip(&found.hits) {
                for (dst, &dist) in row.into_iter().zip(&h.distances) {
                    *dst = dist as i32;
                }
            }
            numpy::IntoPyArray::into_pyarray(d, py).into_any()
        };
        Ok((d, numpy::IntoPyArray::into_pyarray(ids, py)))
    }

    /// Adds rows as a new segment, as ``bsa add`` does: ``x`` (float, n x dim, encoded with the
    /// index's model; also stored when the index stores vectors) or ``codes`` (uint8 packed
    /// codes, for an index built from codes). ``ids``: one new id per row (default: after the
    /// largest id so far); ids already in the index raise ``ValueError`` unless ``upsert=True``,
    /// which replaces their rows. Returns the number of rows replaced. The index changes on disk
    /// (one atomic commit); searches already running keep the rows they started with. An empty
    /// batch (0 rows) adds nothing and returns 0, as FAISS's ``add`` of none.
    /// ``merge_factor``: that many segments in one size tier (tiers ``merge_factor`` times apart:
    /// with 2, fewer than 2000 live rows, 2000-3999, ...) are merged in the same commit (as
    /// ``bsa add --merge-factor``; 0 never merges). Ctrl-C stops it before its commit
    /// (``KeyboardInterrupt``; the index stays as it was); one that comes after the commit (or
    /// during a call too short to stop) lets it return, with a ``UserWarning``, so that a
    /// ``KeyboardInterrupt`` always means the rows were not added. ``verify``: the index's
    /// checksums are checked first, and a damaged index is refused (``verify=False`` changes it
    /// anyway, as ``bsa add --no-verify``). ``lock_timeout``: seconds to wait at most for another
    /// writer of the index (another process's add, say) before raising ``TimeoutError`` with
    /// nothing changed (0: do not wait; default: wait as long as it takes), as
    /// ``bsa add --lock-timeout``.
    ///
    /// Example: ``index.add(x=new_vectors, ids=new_ids)``
    #[pyo3(signature = (x=None, codes=None, ids=None, *, upsert=false, merge_factor=Int(2), threads=None, verify=true, lock_timeout=None),
    text_signature = "($self, x=None, codes=None, ids=None, *, upsert=False, merge_factor=2, threads=None, verify=True, lock_timeout=None)"
)]
    #[allow(clippy::too_many_arguments)]
    fn add(
        &self,
        py: Python<'_>,
        x: Option<&Bound<'_, PyAny>>,
        codes: Option<&Bound<'_, PyAny>>,
        ids: Option<&Bound<'_, PyAny>>,
        upsert: bool,
        merge_factor: Int,
        threads: Option<Int>,
        verify: bool,
        lock_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let threads = positive("threads", threads)?;
        let lock_timeout = seconds("lock_timeout", lock_timeout)?;
        let merge = match (usize::try_from(merge_factor.0), merge_factor.0) {
            (Ok(f), _) => bsa_index::live::MergePolicy::tiered(f),
            (Err(_), f) if f < 0 => {
                let e = format!("merge_factor must be 0 or more, got {f}");
                return Err(PyValueError::new_err(e));
            }
            (Err(_), f) => {
                let e = format!("merge_factor is {f}, past any size this machine can hold");
                return Err(PyValueError::new_err(e));
            }
        };
        let ids = ids.map(|i| id_vector(i, "ids", Ids::PerRow)).transpose()?;
        let floats = match x {
            Some(x) => Some(float32_matrix(as_array(x, "x")?, "x", Rows::Any)?),
            None => None,
        };
        let floats = floats.as_ref().map(|f| f.readonly());
        let packed = match codes {
            Some(c) => Some(code_matrix(as_array(c, "codes")?, "codes", Rows::Any)?),
            None => None,
        };
        let packed = packed.as_ref().map(|c| c.readonly());
        let source = match (&floats, &packed) {
            (Some(_), Some(_)) => return Err(PyValueError::new_err("give x or codes, not both")),
            (Some(f), None) => AddSource::Floats(view2(f)),
            (None, Some(c)) => AddSource::Packed {
                bytes: c.as_slice()?,
                rows: c.as_array().nrows(),
                cols: c.as_array().ncols(),
            },
            (None, None) => return Err(PyValueError::new_err("give x (floats) or codes")),
        };
        if source.rows() == 0 {
            // A pipeline's last batch may be empty: nothing to add, as FAISS's add of none,
            // and no writer's lock to wait for. Its width is checked all the same, as a
            // search checks an empty batch's.
            let loaded = self.loaded()?;
            let model = loaded.model.as_deref().map(|m| &**m);
            bsa::live::check_source(&loaded.snap, model, source, false).map_err(|e| {
                py_err(match source {
                    AddSource::Packed { .. } => code_row_of(e, "codes"),
                    _ => row_of(e, "new rows", "x"),
                })
            })?;
            return match ids.as_deref() {
                Some(i) if !i.is_empty() => Err(PyValueError::new_err(format!(
                    "ids: {} ids for 0 new rows",
                    i.len()
                ))),
                _ => Ok(0),
            };
        }
        if let (AddSource::Floats(v), Some(m)) = (source, self.loaded()?.model.as_deref()) {
            warn_if_not_unit(py, v, "x", (m.config.method, m.config.dim))?;
        }
        let dir = self.snap()?.dir().to_path_buf();
        // Ctrl-C stops the wait for another writer, the encoding, the segment's build and its
        // merges, before the commit: the index stays as it was.
        let report = changing(py, threads, &dir, lock_timeout, |stop, lock_timeout| {
            let mut writer = open_writer(self, &dir, stop, verify, lock_timeout)?;
            let r = bsa::live::add(&mut writer, source, ids.as_deref(), upsert, false, merge)
                .map_err(|e| match source {
                    AddSource::Packed { .. } => code_row_of(e, "codes"),
                    _ => row_of(e, "new rows", "x"),
                })?;
            // Under the lock: two threads changing one Index reopen in commit order.
            self.reopen()?;
            drop(writer);
            Ok(r)
        })?;
        Ok(report.replaced)
    }

    /// Marks the rows holding ``ids`` deleted, as ``bsa delete`` does; ids not in the index are
    /// ignored. Returns the number of rows deleted. ``verify`` and ``lock_timeout`` as in
    /// :meth:`add`.
    ///
    /// Example: ``index.delete(np.array([3, 5]))``
    #[pyo3(signature = (ids, *, verify=true, lock_timeout=None))]
    fn delete(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        verify: bool,
        lock_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let ids = id_vector(ids, "ids", Ids::Set)?;
        let lock_timeout = seconds("lock_timeout", lock_timeout)?;
        let dir = self.snap()?.dir().to_path_buf();
        let report = changing(py, None, &dir, lock_timeout, |stop, lock_timeout| {
            let mut writer = open_writer(self, &dir, stop, verify, lock_timeout)?;
            let r = writer.delete(&ids)?;
            self.reopen()?;
            drop(writer);
            Ok(r)
        })?;
        Ok(report.deleted)
    }

    /// Merges segments (at most ``max_segments`` remain) and drops deleted rows, as
    /// ``bsa compact`` does. Ctrl-C stops it before its commit (``KeyboardInterrupt``), as in
    /// :meth:`add`.
    /// ``verify`` and ``lock_timeout`` as in :meth:`add`.
    #[pyo3(signature = (max_segments=Int(1), *, threads=None, verify=true, lock_timeout=None),
    text_signature = "($self, max_segments=1, *, threads=None, verify=True, lock_timeout=None)"
)]
    fn compact(
        &self,
        py: Python<'_>,
        max_segments: Int,
        threads: Option<Int>,
        verify: bool,
        lock_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let lock_timeout = seconds("lock_timeout", lock_timeout)?;
        let max_segments = positive("max_segments", Some(max_segments))?.unwrap_or(1);
        let threads = positive("threads", threads)?;
        let dir = self.snap()?.dir().to_path_buf();
        changing(py, threads, &dir, lock_timeout, |stop, lock_timeout| {
            let mut writer = open_writer(self, &dir, stop, verify, lock_timeout)?;
            bsa::live::compact(&mut writer, max_segments)?;
            self.reopen()?;
            drop(writer);
            Ok(())
        })
    }

    /// Number of rows (deleted rows not counted).
    fn __len__(&self) -> PyResult<usize> {
        Ok(self.snap()?.len())
    }

    /// Number of segments (1 until rows are added).
    #[getter]
    fn segments(&self) -> PyResult<usize> {
        Ok(self.snap()?.segments().len())
    }

    /// Bits per code.
    #[getter]
    fn bits(&self) -> PyResult<usize> {
        Ok(self.snap()?.bits())
    }

    /// The index directory (a temporary one for an index built without ``path``).
    #[getter]
    fn path(&self) -> PyResult<PathBuf> {
        Ok(self.snap()?.dir().to_path_buf())
    }

    /// The index's model (copied in at build time), or ``None``.
    #[getter]
    fn model(&self) -> PyResult<Option<Model>> {
        let loaded = self.loaded()?;
        Ok(loaded.model.as_ref().map(|m| Model {
            inner: Arc::clone(m),
            training: loaded.model_training.clone(),
        }))
    }

    /// The external ids of the rows (int64), deleted rows left out: segment by segment, and in
    /// increasing order within a segment (a build or an add stores its rows sorted by id), not
    /// in the order they were given.
    #[getter]
    fn ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let snap = self.snap()?;
        let ids = snap
            .segments()
            .iter()
            .flat_map(|s| {
                s.index()
                    .ids()
                    .iter()
                    .enumerate()
                    .filter(|&(r, _)| !s.is_deleted(r))
                    .map(|(_, &i)| i64::try_from(i))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| PyValueError::new_err("an id does not fit int64"))?;
        Ok(ids.to_pyarray(py))
    }

    /// What the index holds and its bytes on disk, as a dict (``bsa info --json``'s summary):
    /// ``format_version``, ``generation`` (counts commits; a rebuild with ``overwrite=True`` or
    /// ``bsa build --force`` starts again at 0, so use :meth:`refresh` to follow an index, not
    /// this number), ``bits``, ``rows`` (deleted ones included),
    /// ``live_rows``, ``next_id``, ``vectors`` (``{"dim", "dtype"}`` or ``None``), ``norms``,
    /// ``inverted``, ``graph``, ``graph_on`` (with a graph: ``"decoded"``, ``"data"`` or
    /// ``"codes"``), ``model`` (its file name), ``segments`` (a dict per segment:
    /// ``name``, ``rows``, ``live_rows``, ``bitmaps``, ``sparse``, ``bridged_from``,
    /// ``bytes``), ``bytes`` by kind of file and ``total_bytes``. The sizes are read from the
    /// disk: ``FileNotFoundError`` when another writer has removed files of the generation
    /// this object searches since it was opened (a compaction); open the index again.
    ///
    /// >>> idx.info()["live_rows"] == len(idx)
    /// True
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let snap = self.snap()?;
        let summary = snap.summary().map_err(index_err)?;
        let mut value =
            serde_json::to_value(&summary).map_err(|e| PyValueError::new_err(e.to_string()))?;
        // As `bsa info --json` says it.
        let graph_on = GraphOn::of_index(snap.extra(), snap.graph_metric());
        if let (Some(on), Some(v)) = (graph_on, value.as_object_mut()) {
            v.insert("graph_on".into(), on.name().into());
        }
        json_to_py(py, &value)
    }

    /// Whether float vectors are stored (``rescore`` needs them).
    #[getter]
    fn has_vectors(&self) -> PyResult<bool> {
        Ok(self.snap()?.has_vectors())
    }

    /// Whether posting lists are stored (``mode="inverted"`` needs them).
    #[getter]
    fn has_inverted(&self) -> PyResult<bool> {
        Ok(self.snap()?.has_inverted())
    }

    /// Whether an HNSW graph is stored (``mode="hnsw"`` needs it).
    #[getter]
    fn has_hnsw(&self) -> PyResult<bool> {
        Ok(self.snap()?.graph_metric().is_some())
    }

    /// Checks every checksum of every file, and the values checksums cannot vouch for (ids
    /// unique over every segment, norms and float32 vectors finite, padding bits zero, posting
    /// lists, bitmaps and sparse codes equal to what the codes imply, the next default id past
    /// every id); raises ``bsa.FormatError`` naming a damaged file. It checks the generation
    /// this object searches: the files it maps stay readable to it when another writer removes
    /// them (a compaction), but those it reads by path (a graph, the model) raise
    /// ``FileNotFoundError`` then: open the index again to check what is there now.
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        let index = self.snap()?;
        detached(py, None, || index.verify())?.map_err(index_err)
    }

    /// Moves this object to the index's current generation when another writer (another
    /// process, ``bsa add`` or another ``Index`` object) has committed since it opened its
    /// own; returns whether it did. Searches see one generation from open (or the last change or
    /// ``refresh``) on: a server that follows a changing index calls this between requests. Its
    /// own changes (``add``, ``delete``, ``compact``) move it at once. Segments both generations
    /// hold are shared, not opened again (their graphs and scan layouts stay warm); new ones
    /// are checked as :meth:`open` checks an index (their checksums, unless it was opened with
    /// ``verify=False``, each before a search first reads the file); a damaged one raises
    /// ``bsa.FormatError`` naming it, and the object stays at its generation.
    ///
    /// Example: ``if index.refresh(): print(len(index), "rows now")``
    fn refresh(&self, py: Python<'_>) -> PyResult<bool> {
        without_gil(py, None, || self.follow(false))
    }

    /// Pickling (``multiprocessing``, say): an index travels as its path and is opened there
    /// again (:meth:`open`, checksums verified), at the generation the folder then holds. An
    /// index built without ``path`` lives only as long as its object: ``TypeError``.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, (PathBuf,))> {
        let tmp = self.tmp.lock().unwrap_or_else(PoisonError::into_inner);
        if tmp.is_some() {
            return Err(PyTypeError::new_err(
                "cannot pickle a bsa.Index built without a path (its folder is removed with \
                 the object): build it with path=... or save() it, then pickle that",
            ));
        }
        let open = py.get_type::<Index>().getattr("open")?;
        Ok((open, (self.snap()?.dir().to_path_buf(),)))
    }

    /// Closes the index: later calls raise ``ValueError``, and the folder of an index built
    /// without ``path`` is removed now rather than when the object goes (a reference kept by a
    /// notebook, a thread or a pool worker ended by SIGTERM kept it on disk), once the calls
    /// under way in other threads have finished with it (a change waiting for its turn is
    /// not made: ``ValueError``). Closing again does nothing. ``with`` closes the index at the
    /// end of its block.
    ///
    /// Example::
    ///
    ///     with bsa.Index.build(codes=codes) as index:
    ///         D, I = index.search(query_codes, 10)
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Ok(loaded) = self.current() else {
            return Ok(());
        };
        let dir = loaded.snap.dir().to_path_buf();
        drop(loaded);
        // After this object's changes under way (they hold the in-process slot of the
        // directory), so that none of them writes into a folder being removed.
        let tmp = interruptible(py, None, |stop| {
            let _changing = Changing::wait(&dir, stop, None, || {})?;
            let taken = self
                .inner
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let tmp = self
                .tmp
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            // The folder goes once the calls under way in other threads (a search, a save, a
            // verify: each holds the generation it reads) have finished with its files.
            if let (Some(loaded), Some(_)) = (&taken, &tmp) {
                while Arc::strong_count(loaded) > 1 || Arc::strong_count(&loaded.snap) > 1 {
                    if bsa_index::check_stop(Some(stop)).is_err() {
                        // Interrupted: closed all the same; the folder goes with the object.
                        *self.tmp.lock().unwrap_or_else(PoisonError::into_inner) = tmp;
                        return Err(bsa::Error::Stopped);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            Ok(tmp)
        })?;
        if let Some(tmp) = tmp {
            tmp.remove().map_err(py_err)?;
        }
        Ok(())
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Closes the index (:meth:`close`); an exception of the block goes on.
    #[pyo3(signature = (exc_type, exc_value, traceback))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc_value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let _ = (exc_type, exc_value, traceback);
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match self.snap() {
            Ok(snap) => format!(
                "bsa.Index(n={}, bits={}, segments={}, path={:?})",
                snap.len(),
                snap.bits(),
                snap.segments().len(),
                snap.dir().display().to_string()
            ),
            Err(_) => "bsa.Index(closed)".to_string(),
        }
    }
}

/// Whether the ids of [`id_vector`] are a set of ids (to filter on or delete: a Python `set`
/// is taken) or one id per row, in order (a `set` is refused: it has no order).
#[derive(Clone, Copy, PartialEq)]
enum Ids {
    Set,
    PerRow,
}

/// A 1-D array of non-negative integer ids as `u64`.
fn id_vector(obj: &Bound<'_, PyAny>, name: &str, kind: Ids) -> PyResult<Vec<u64>> {
    use pyo3::types::{PyFrozenSet, PySet};
    if obj.is_instance_of::<PySet>() || obj.is_instance_of::<PyFrozenSet>() {
        // numpy makes a set an object array of one element.
        if kind == Ids::PerRow {
            return Err(PyTypeError::new_err(format!(
                "{name} is a set, which has no order: give a list or array with one id per row"
            )));
        }
        let list = obj
            .py()
            .import("builtins")?
            .call_method1("sorted", (obj,))?;
        return id_vector(&list, name, kind);
    }
    let a = as_array(obj, name)?;
    // `[]` is a float64 array to numpy: an empty list is no ids, whatever its dtype.
    if a.ndim() == 1 && a.len() == 0 {
        return Ok(Vec::new());
    }
    let kind = a.dtype().kind();
    if kind != b'i' && kind != b'u' {
        // What numpy made of a Python object, said in the caller's terms: a generator is one
        // object (not read), a float anywhere makes a list float64, and an int past uint64 an
        // object array.
        let hint = if obj.hasattr("dtype")? {
            ""
        } else if a.ndim() == 0 {
            let kind = obj
                .get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string());
            return Err(PyTypeError::new_err(format!(
                "{name} must be a list, range or array of integers, got a {kind}"
            )));
        } else if kind == b'f' {
            " (numpy makes a list float64 when it holds a float, or an int of 2**63 or more: \
             ids are integers below 2**63)"
        } else if kind == b'O' {
            " (numpy makes a list of objects when it holds something other than numbers, or an \
             int of 2**64 or more: ids are integers below 2**63)"
        } else {
            ""
        };
        return Err(PyTypeError::new_err(format!(
            "{name} must hold integers, got dtype {}{hint}",
            dtype_str(&a)
        )));
    }
    if a.ndim() != 1 {
        return Err(PyValueError::new_err(format!(
            "{name} must be 1-D (one id per row), got shape {}",
            shape_str(a.shape())
        )));
    }
    if kind == b'u' {
        let py = a.py();
        let a = contiguous(a.into_any(), numpy::dtype::<u64>(py))?;
        let a = a.cast_into::<PyArray1<u64>>()?;
        let a = a.readonly();
        let ids = a.as_slice()?;
        // Searches return ids as int64: an id they could not return is refused here.
        bsa::pipeline::check_ids_fit_int64(name, ids)
            .map_err(|e| PyValueError::new_err(bare(e)))?;
        return Ok(ids.to_vec());
    }
    let py = a.py();
    let a = contiguous(a.into_any(), numpy::dtype::<i64>(py))?;
    let a = a.cast_into::<PyArray1<i64>>()?;
    let a = a.readonly();
    a.as_slice()?
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            u64::try_from(v).map_err(|_| {
                PyValueError::new_err(format!("{name}[{i}] is {v}; ids must be non-negative"))
            })
        })
        .collect()
}
