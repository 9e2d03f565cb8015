//! Model files: safetensors with the PyTorch layout, readable from Python.
//!
//! | tensor | shape | dtype |
//! | --- | --- | --- |
//! | `encoder.weight` | `N x D` | F32 |
//! | `encoder.bias` | `N` | F32 |
//! | `decoder.weight` | `D x N` | F32 |
//! | `decoder.bias` | `D` | F32 |
//!
//! Metadata (all strings, as safetensors requires): `format` = `bsa-model`, `format_version`,
//! `bits`, `k`, `dim`, `method`, `loss`, `alpha`, `target`, and `training` (JSON of the training
//! settings and report, informational). In Python:
//!
//! ```python
//! from safetensors.numpy import load_file
//! w = load_file("model.safetensors")
//! h = x @ w["encoder.weight"].T + w["encoder.bias"]
//! codes = h > 0   # methods bsa, sign, lsh, itq; topk: the k largest h of each row
//! xhat = codes @ w["decoder.weight"].T + w["decoder.bias"]
//! ```

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::model::{Autoencoder, Method, ModelConfig, Params};

/// Value of the `format` metadata key, and the version of the model file layout this build
/// writes (it reads `1..=FORMAT_VERSION`): the search crate reads model files too
/// ([`bsa_index::model`]).
pub use bsa_index::model::{FORMAT, FORMAT_VERSION};

/// Writes `model` to `path` (atomically: a temporary file renamed into place). `training` is
/// stored as informational JSON metadata.
pub fn save(
    path: impl AsRef<Path>,
    model: &Autoencoder,
    training: &serde_json::Value,
) -> Result<()> {
    let path = path.as_ref();
    let buf = to_bytes_named(path, model, training)?;
    super::file::write_atomic(path, |w| std::io::Write::write_all(w, &buf))
}

/// The bytes [`save`] writes: a model file in memory (e.g. to send a model to another process).
///
/// ```
/// use bsa::baselines::BaselineParams;
/// use bsa::model::Method;
/// let x = ndarray::Array2::from_shape_fn((64, 8), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
/// let (model, _) = BaselineParams::new(Method::Lsh, 16).fit(x.view())?;
/// let bytes = bsa::io::model::to_bytes(&model, &serde_json::Value::Null)?;
/// let again = bsa::io::model::from_bytes(&bytes, "<memory>")?;
/// assert_eq!(again.params.we, model.params.we);
/// # Ok::<(), bsa::Error>(())
/// ```
pub fn to_bytes(model: &Autoencoder, training: &serde_json::Value) -> Result<Vec<u8>> {
    to_bytes_named(Path::new("<memory>"), model, training)
}

/// [`to_bytes`], naming `path` in errors.
fn to_bytes_named(
    path: &Path,
    model: &Autoencoder,
    training: &serde_json::Value,
) -> Result<Vec<u8>> {
    let p = &model.params;
    let c = &model.config;
    let (n, d) = (c.bits, c.dim);
    let wd = p.wd_t.t().as_standard_layout().into_owned();
    // Logical (row-major) order, whatever the memory layout.
    fn slice<'a>(a: impl IntoIterator<Item = &'a f32>) -> Vec<u8> {
        a.into_iter().flat_map(|v| v.to_le_bytes()).collect()
    }
    let tensors = [
        ("encoder.weight", vec![n, d], slice(&p.we)),
        ("encoder.bias", vec![n], slice(&p.be)),
        ("decoder.weight", vec![d, n], slice(&wd)),
        ("decoder.bias", vec![d], slice(&p.bd)),
    ];
    let views = tensors
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (*name, v))
                .map_err(|e| Error::format(path, format!("cannot lay out tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta: HashMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("format_version", FORMAT_VERSION.to_string()),
        ("bits", n.to_string()),
        ("k", c.k.to_string()),
        ("dim", d.to_string()),
        ("method", c.method.to_string()),
        ("loss", c.loss.to_string()),
        ("alpha", c.alpha.to_string()),
        ("target", c.target.to_string()),
        ("training", training.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let buf = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::format(path, format!("cannot serialise the model: {e}")))?;
    sorted_header(buf)
        .map_err(|e| Error::format(path, format!("cannot serialise the model header: {e}")))
}

/// Rewrites a serialised safetensors buffer with the keys of its JSON header in sorted order.
/// safetensors writes the `__metadata__` map in `HashMap` iteration order, which changes from run
/// to run; sorting makes the same model always give the same bytes.
fn sorted_header(buf: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    use std::collections::BTreeMap;
    let n = buf
        .get(..8)
        .and_then(|b| usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok())
        .filter(|&n| n <= buf.len() - 8)
        .ok_or("header length out of range")?;
    let mut header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&buf[8..8 + n]).map_err(|e| e.to_string())?;
    if let Some(meta) = header.get_mut("__metadata__") {
        // Through a BTreeMap, so the order is sorted whatever serde_json's map type.
        let sorted: BTreeMap<String, String> =
            serde_json::from_value(meta.take()).map_err(|e| e.to_string())?;
        *meta = serde_json::to_value(sorted).map_err(|e| e.to_string())?;
    }
    let mut text = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    // safetensors pads the header with spaces to a multiple of 8 bytes.
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + buf.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&buf[8 + n..]);
    Ok(out)
}

/// Reads a model file written by [`save`] (or by the PyTorch peer trainer `bsa_torch.py`, whose
/// files hold the same tensors), checking the format marker, version, every tensor's presence,
/// dtype and shape, and that the weights are finite.
pub fn load(path: impl AsRef<Path>) -> Result<Autoencoder> {
    let path = path.as_ref();
    let buf = super::file::read_file(path)?;
    from_bytes(&buf, path)
}

/// Reads a model from the bytes of a model file ([`to_bytes`]), with [`load`]'s checks; `name`
/// is what errors call it. The file's settings and weights are read by the search crate's
/// reader ([`bsa_index::model`], so a query server reads the same model from the same bytes);
/// the training settings (`loss`, `alpha`, `target`) here.
pub fn from_bytes(buf: &[u8], name: impl AsRef<Path>) -> Result<Autoencoder> {
    let path = name.as_ref();
    let settings = bsa_index::model::ModelSettings::read(buf, path)?;
    let config = if settings.peer {
        peer_config(&settings, path)?
    } else {
        let get = |key: &str| -> Result<&String> {
            settings.metadata.get(key).ok_or_else(|| {
                Error::format(
                    path,
                    format!("metadata key {key:?} is missing; is this a bsa model file?"),
                )
            })
        };
        ModelConfig {
            dim: settings.dim,
            bits: settings.bits,
            k: settings.k,
            method: parse(path, "method", &settings.method)?,
            loss: parse(path, "loss", get("loss")?)?,
            alpha: parse(path, "alpha", get("alpha")?)?,
            target: parse(path, "target", get("target")?)?,
        }
    };
    config
        .validate()
        .map_err(|e| Error::format(path, format!("bad model settings: {e}")))?;
    let (we, be, wd_t, bd) = bsa_index::model::read_weights(buf, path, config.bits, config.dim)?;
    Ok(Autoencoder {
        config,
        params: Params { we, be, wd_t, bd },
    })
}

/// The settings of a model file written by the PyTorch trainer `bsa_torch.py` (the peer of
/// `bsa train`): the same tensors, with metadata `D`, `N`, `K`, `mode` (`bsa` or `topk`) and,
/// from its `train` command, `loss`, `alpha`, `target` (the paper's defaults when absent), so
/// that `bsa eval` measures a model trained there as one trained here.
fn peer_config(settings: &bsa_index::model::ModelSettings, path: &Path) -> Result<ModelConfig> {
    let meta = &settings.metadata;
    let or = |key: &str, default: &'static str| meta.get(key).map_or(default, String::as_str);
    // bsa or topk, as the search crate's reader checked.
    let method: Method = parse(path, "mode", &settings.method)?;
    let config = ModelConfig {
        dim: settings.dim,
        bits: settings.bits,
        k: settings.k,
        method,
        loss: parse(path, "loss", or("loss", "cosine"))?,
        alpha: parse(path, "alpha", or("alpha", "1.0"))?,
        target: parse(path, "target", or("target", "khot"))?,
    }
    // As `bsa train` records a TopK model: no alignment term, whatever the peer was given.
    .as_trained();
    Ok(config)
}

/// The `training` metadata of a model file, as JSON (`Null` when absent or unreadable).
pub fn training_info(path: impl AsRef<Path>) -> Result<serde_json::Value> {
    let path = path.as_ref();
    let buf = super::file::read_file(path)?;
    training_info_from_bytes(&buf, path)
}

/// [`training_info`] of the bytes of a model file; `name` is what errors call it.
pub fn training_info_from_bytes(buf: &[u8], name: impl AsRef<Path>) -> Result<serde_json::Value> {
    let path = name.as_ref();
    let (_, header) = SafeTensors::read_metadata(buf)
        .map_err(|e| Error::format(path, format!("not a safetensors file: {e}")))?;
    Ok(header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("training"))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(serde_json::Value::Null))
}

fn parse<T: std::str::FromStr>(path: &Path, key: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| Error::format(path, format!("metadata {key} = {value:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LossKind, Method, Target};

    /// The search crate reads a model file's method as the rule this crate encodes by, and its
    /// query model, read from the same bytes, gives the codes (BLAS-decided here, fixed-order
    /// there) and the ADC and soft tables of this crate, bit for bit: a query server built on
    /// `bsa-index` alone answers as `bsa search` does.
    #[test]
    fn the_search_crates_query_model_encodes_as_this_crate() -> Result<()> {
        use bsa_index::model::{QueryModel, Rule};
        use rand::{Rng, SeedableRng};
        let (dim, bits, k) = (24, 96, 7);
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(5);
        // Rows with repeated values, so that some pre-activations tie exactly.
        let mut x = ndarray::Array2::from_shape_fn((300, dim), |_| rng.random_range(-1.0f32..1.0));
        for i in (0..300).step_by(3) {
            x.row_mut(i).mapv_inplace(|v| (v * 4.0).round() / 4.0);
        }
        for method in Method::ALL {
            let mut params = Params::init(bits, dim, 11);
            // Repeated encoder rows: exact ties among the pre-activations, to the lower bit.
            for j in (1..bits).step_by(10) {
                let (row, bias) = (params.we.row(j - 1).to_owned(), params.be[j - 1]);
                params.we.row_mut(j).assign(&row);
                params.be[j] = bias;
            }
            if method == Method::Pursuit {
                params = crate::pursuit::dictionary_params(params.wd_t.clone(), params.bd.clone());
            }
            let config = ModelConfig {
                dim,
                bits,
                k,
                method,
                loss: LossKind::Cosine,
                alpha: 1.0,
                target: Target::Khot,
            };
            let model = Autoencoder { config, params };
            let bytes = to_bytes(&model, &serde_json::Value::Null).unwrap();
            let query = QueryModel::from_bytes(&bytes, "m.safetensors").unwrap();
            // The rule the file's method name reads as is the one this crate searches by.
            let want = model.view().rule;
            assert_eq!(
                Rule::of_method(&method.to_string(), k),
                Some(want),
                "{method}"
            );
            assert_eq!(query.rule(), want);
            assert_eq!(
                query.encode(x.view()).unwrap(),
                model.encode_active(x.view()),
                "{method}"
            );
            let q = x.slice(ndarray::s![..20, ..]);
            let w = query.weights();
            for (a, b) in [
                (w.adc_tables(q)?, model.adc_tables(q)?),
                (w.adc_candidate_tables(q)?, model.adc_candidate_tables(q)?),
                (w.soft_tables(q)?, model.soft_tables(q)?),
            ] {
                let bits_of = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits_of(&a.0), bits_of(&b.0), "{method}");
                assert_eq!(bits_of(&a.1), bits_of(&b.1), "{method}");
            }
        }
        Ok(())
    }

    fn model() -> Autoencoder {
        Autoencoder {
            config: ModelConfig {
                dim: 5,
                bits: 12,
                k: 3,
                method: Method::Topk,
                loss: LossKind::Mse,
                alpha: 0.5,
                target: Target::Masked,
            },
            params: Params::init(12, 5, 3),
        }
    }

    #[test]
    fn round_trip_keeps_config_and_weights() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let m = model();
        save(&path, &m, &serde_json::json!({"epochs": 3})).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.config, m.config);
        assert_eq!(back.params, m.params);
        assert_eq!(training_info(&path).unwrap()["epochs"], 3);
    }

    /// `bytes` (a model file) with its metadata replaced by `meta`.
    fn with_metadata(bytes: &[u8], meta: serde_json::Value) -> Vec<u8> {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        header["__metadata__"] = meta;
        let mut text = serde_json::to_vec(&header).unwrap();
        text.resize(text.len().next_multiple_of(8), b' ');
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&text);
        out.extend_from_slice(&bytes[8 + n..]);
        out
    }

    /// A model of the PyTorch peer trainer (its metadata: D, N, K, mode and the train
    /// command's loss, alpha, target) reads as the same model; without the train command's
    /// keys, with the paper's defaults; a mode it does not train is refused.
    #[test]
    fn the_pytorch_trainers_files_read_as_models() {
        let m = model();
        let bytes = to_bytes(&m, &serde_json::Value::Null).unwrap();
        let peer = serde_json::json!({
            "D": "5", "N": "12", "K": "3", "mode": "topk",
            "loss": "mse", "alpha": "0.5", "target": "masked", "epochs": "2",
        });
        let back = from_bytes(&with_metadata(&bytes, peer), "peer.safetensors").unwrap();
        // TopK, recorded as trained: alpha 0 and k-hot, as bsa train records it.
        let want = ModelConfig {
            alpha: 0.0,
            target: Target::Khot,
            ..m.config
        };
        assert_eq!((back.config, &back.params), (want, &m.params));
        let bare = serde_json::json!({"D": "5", "N": "12", "K": "3", "mode": "bsa"});
        let back = from_bytes(&with_metadata(&bytes, bare), "peer.safetensors").unwrap();
        assert_eq!(back.config.method, Method::Bsa);
        assert_eq!(
            (back.config.loss, back.config.alpha, back.config.target),
            (LossKind::Cosine, 1.0, Target::Khot)
        );
        let wrong = serde_json::json!({"D": "6", "N": "12", "K": "3"});
        let e = from_bytes(&with_metadata(&bytes, wrong), "peer.safetensors").unwrap_err();
        assert!(e.to_string().contains("shape"), "{e}");
        let itq = serde_json::json!({"D": "5", "N": "12", "K": "3", "mode": "itq"});
        let e = from_bytes(&with_metadata(&bytes, itq), "peer.safetensors").unwrap_err();
        assert!(e.to_string().contains("bsa or topk"), "{e}");
    }

    #[test]
    fn same_model_gives_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let m = model();
        let info = serde_json::json!({"epochs": 3});
        let mut files = Vec::new();
        // safetensors' metadata HashMap has a random order per map instance.
        for i in 0..8 {
            let path = dir.path().join(format!("m{i}.safetensors"));
            save(&path, &m, &info).unwrap();
            files.push(std::fs::read(&path).unwrap());
        }
        assert!(files.iter().all(|f| f == &files[0]));
        let back = load(dir.path().join("m0.safetensors")).unwrap();
        assert_eq!(back.params, m.params);
    }

    #[test]
    fn corrupt_or_foreign_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        save(&path, &model(), &serde_json::Value::Null).unwrap();
        let good = std::fs::read(&path).unwrap();

        std::fs::write(&path, b"not a model").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.contains("m.safetensors") && e.contains("not a safetensors"),
            "{e}"
        );

        let mut trunc = good.clone();
        trunc.truncate(good.len() - 10);
        std::fs::write(&path, &trunc).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("m.safetensors"), "{e}");

        // Same length, so the header's offsets stay valid: only the version differs.
        let key = b"\"format_version\":\"1\"";
        let at = good.windows(key.len()).position(|w| w == key).unwrap();
        let mut newer = good.clone();
        newer[at + key.len() - 2] = b'9';
        std::fs::write(&path, &newer).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("v9") && e.contains("upgrade bsa"), "{e}");
    }
}
