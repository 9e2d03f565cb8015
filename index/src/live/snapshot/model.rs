//! The model file of a [`Snapshot`]: its path and bytes, the float-query model read once and
//! kept, and whether a model fits the index.

use std::path::{Path, PathBuf};
#[cfg(feature = "float-queries")]
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::live::meta::GraphSource;

use super::open::Snapshot;

impl Snapshot {
    /// The model file shared by the segments, if any.
    ///
    /// ```
    /// use bsa_index::{live::Snapshot, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let model = dir.path().join("m.safetensors");
    /// std::fs::write(&model, b"weights").unwrap();
    /// IndexBuilder::new(64, &[1, 2]).model_file(&model).build(&path)?;
    /// let copied = Snapshot::open(&path)?.model_path().unwrap();
    /// assert_eq!(std::fs::read(copied).unwrap(), b"weights");
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn model_path(&self) -> Option<PathBuf> {
        self.model.clone()
    }

    /// The index's model ([`Snapshot::model_path`]) for answering float queries, if the index
    /// has one, checked to fit the index ([`Snapshot::check_model`]): a query server's way to
    /// encode float queries and make the `adc` and `soft` tables ([`crate::model`]) the way
    /// `bsa search` does, without BLAS. Read at the first call and kept with the snapshot (and
    /// with what its products derive from it): later calls, and the snapshots
    /// [`reopen`](Self::reopen) makes while the model file is the same, share it. The bytes
    /// read are checked against the manifest's length and CRC first (a damaged file is an
    /// [`Error::Checksum`]; a model a rebuild put there after this snapshot was opened, an
    /// [`Error::Model`] saying to open the index again: call this once after opening, and the
    /// snapshot keeps its codes' model whatever happens to the directory); a model file that
    /// cannot be read or does not fit is an [`Error::Model`] naming it.
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    /// # let (eye, zeros) = (bytes(&[1.0, 0.0, 0.0, 1.0]), bytes(&[0.0, 0.0]));
    /// # use safetensors::{tensor::TensorView, Dtype};
    /// # let tensors = [
    /// #     ("encoder.weight", TensorView::new(Dtype::F32, vec![2, 2], &eye).unwrap()),
    /// #     ("encoder.bias", TensorView::new(Dtype::F32, vec![2], &zeros).unwrap()),
    /// #     ("decoder.weight", TensorView::new(Dtype::F32, vec![2, 2], &eye).unwrap()),
    /// #     ("decoder.bias", TensorView::new(Dtype::F32, vec![2], &zeros).unwrap()),
    /// # ];
    /// # let settings = [("format", "bsa-model"), ("format_version", "1"), ("dim", "2"),
    /// #                 ("bits", "2"), ("k", "1"), ("method", "topk")];
    /// # let meta = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    /// # let model_file = dir.path().join("m.safetensors");
    /// # std::fs::write(&model_file, safetensors::serialize(tensors, Some(meta)).unwrap()).unwrap();
    /// use bsa_index::{live::Snapshot, IndexBuilder};
    /// use bsa_index::query::{search, Queries, Request};
    /// // Two 2-bit codes of a 2-d model that sets the bit of the larger coordinate.
    /// IndexBuilder::new(2, &[0b01, 0b10]).model_file(&model_file).build(&path)?;
    /// let snap = Snapshot::open(&path)?;
    /// let model = snap.query_model()?.expect("built with a model");
    /// assert!(std::sync::Arc::ptr_eq(&model, &snap.query_model()?.unwrap())); // read once
    /// let q = ndarray::array![[0.2f32, 0.9]];
    /// let found = search(&snap, Some(model.view()), Queries::Floats(q.view()), &Request::new(1))?;
    /// assert_eq!(found.hits[0].ids, [1]); // the code with bit 1 set
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "float-queries")]
    pub fn query_model(&self) -> Result<Option<Arc<crate::model::QueryModel>>> {
        if let Some(m) = self.query_model.get() {
            return Ok(Some(Arc::clone(m)));
        }
        let Some((path, buf)) = self.model_bytes()? else {
            return Ok(None);
        };
        let source = crate::files::info_of_bytes(&buf);
        let model = crate::model::QueryModel::from_checked_bytes(&buf, &path, source)?;
        self.check_model(&path, model.bits(), model.dim())?;
        // Two threads' first calls may both read it: the first kept is everyone's.
        Ok(Some(Arc::clone(
            self.query_model.get_or_init(|| Arc::new(model)),
        )))
    }

    /// The bytes of the model file copied into the index, if it has one, and its path: the
    /// bytes this snapshot's manifest names, checked against the length and CRC-32 it records
    /// (an index of format 1 written before models had entries there is read unchecked).
    /// A model put in the file's place since (a rebuild over the index, with another model of
    /// the same shape) would encode queries this snapshot's codes do not answer, so it is an
    /// error (open the index again), never a model read in silence. For an application that
    /// reads the model its own way; [`Snapshot::query_model`] reads it for searches.
    ///
    /// ```
    /// use bsa_index::live::Snapshot;
    /// use bsa_index::IndexBuilder;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let model = dir.path().join("m.safetensors");
    /// std::fs::write(&model, b"weights").unwrap();
    /// IndexBuilder::new(64, &[1, 2]).model_file(&model).build(&path)?;
    /// let snap = Snapshot::open(&path)?;
    /// let (file, bytes) = snap.model_bytes()?.expect("built with a model");
    /// assert_eq!((file, &bytes[..]), (snap.model_path().unwrap(), &b"weights"[..]));
    /// // Another file put in its place is refused, not read.
    /// std::fs::write(snap.model_path().unwrap(), b"WEIGHTS").unwrap();
    /// assert!(snap.model_bytes().unwrap_err().to_string().contains("checksum"));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn model_bytes(&self) -> Result<Option<(PathBuf, Vec<u8>)>> {
        let Some(path) = self.model_path() else {
            return Ok(None);
        };
        let buf = match &self.model_info {
            Some(info) => {
                crate::files::read_plain_file(&path, info)
                    .map_err(|e| self.file_superseded(e))?
                    .0
            }
            // A format-1 index records no checksum of its model.
            None => crate::files::read_regular(&path).map_err(|e| self.superseded(e))?,
        };
        Ok(Some((path, buf)))
    }

    /// Checks that a model making `bits`-bit codes from `dim`-d rows, read from `path` (this
    /// index's model file), fits the index: its codes are the index's width, and its rows the
    /// stored vectors' and the graph's dimension. A model that does not fit (a manifest edited,
    /// or a model file put in place of another with its checksum) would encode queries the
    /// index cannot answer: an [`Error::Model`] naming `path`.
    pub fn check_model(&self, path: &Path, bits: usize, dim: usize) -> Result<()> {
        let graph_dim = self.template().graph.and_then(|g| match g.on {
            GraphSource::Vectors { dim } => Some(dim as usize),
            _ => None,
        });
        let misfit = if bits != self.bits() {
            Some(format!(
                "makes {bits}-bit codes but the index holds {}-bit codes",
                self.bits()
            ))
        } else if let Some(v) = self.vector_dim().filter(|&v| v != dim) {
            Some(format!(
                "reads {dim}-d rows but the index stores {v}-d vectors"
            ))
        } else {
            graph_dim.filter(|&g| g != dim).map(|g| {
                format!("reads {dim}-d rows but the index's graph is built on {g}-d vectors")
            })
        };
        match misfit {
            None => Ok(()),
            Some(what) => Err(Error::model(
                path,
                format!(
                    "this model {what}: it is not the model the index was built with (its \
                     manifest or model file was replaced); rebuild the index"
                ),
            )),
        }
    }

    /// The length and CRC-32 the manifest records for the model file, if any: two snapshots
    /// with the same have the same model (a holder of a loaded model can tell whether a newer
    /// generation needs it loaded again).
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// use bsa_index::IndexBuilder;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let model = dir.path().join("m.safetensors");
    /// std::fs::write(&model, b"weights").unwrap();
    /// IndexBuilder::new(64, &[1, 2]).model_file(&model).build(&path)?;
    /// let before = Snapshot::open(&path)?;
    /// assert_eq!(before.model_info().unwrap().len, 7);
    /// Writer::open(&path)?.add(&NewRows::codes(&[3]), false)?;
    /// // A new generation, the same model: no need to load it again.
    /// assert_eq!(Snapshot::open(&path)?.model_info(), before.model_info());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn model_info(&self) -> Option<crate::manifest::FileInfo> {
        self.model_info
    }
}
