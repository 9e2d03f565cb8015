//! Serving bsa codes from a Milvus collection (cargo feature `milvus`).
//!
//! **Layout** of a collection written by [`Client::export`] (README, "Scaling out"):
//!
//! | field | Milvus type | index, metric | what |
//! |---|---|---|---|
//! | `id` | `Int64`, primary key | | the index's external id |
//! | `code` | `BinaryVector`, dim `8 ceil(N/8)` | `BIN_FLAT`, `HAMMING` | packed code, numpy `packbits(bitorder="little")` bytes (form `binary`) |
//! | `bits` | `SparseFloatVector` | `SPARSE_INVERTED_INDEX`, `IP` | the set bits, weight 1.0 (form `sparse`) |
//! | `norm` | `Float` | | `|xhat_b|`, the decoded code's norm, for ADC (indexes built with a model) |
//!
//! The collection's description is a JSON [`CollectionMeta`] (format, code length, forms, the
//! norm range), so a search knows what it talks to without a local index.
//!
//! **Search** asks Milvus for candidates and re-scores them in bsa from the codes Milvus returns,
//! with the same functions as the local search ([`bsa_index::score`]), so scores are
//! bit-identical to `bsa search --index`. Hamming (`BIN_FLAT`) and overlap (sparse inner product
//! of 0/1 weights, integer sums) are exact in Milvus itself. ADC sends the query's table as a
//! sparse query; Milvus ranks by the raw inner product `sum of t_j over the set bits`, which
//! ignores the offset and the code-norm division, so bsa re-ranks, and for an unpruned table it
//! proves the result exact with the bound of [`adc_bound`] or asks for more candidates.
//!
//! The SDK is async (tokio); this module runs it on a private single-thread runtime so callers
//! stay synchronous. Only the SDK's v1 API is used: against Milvus 2.5 (milvus-lite 2.5.1) its
//! v2 search fails with "primary-key or score field name is empty".

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use bsa_index::{Index, pack};
use milvus::client::Client as SdkClient;
use milvus::data::FieldColumn;
use milvus::index::{IndexParams, IndexType, MetricType};
use milvus::options::{CreateCollectionOptions, LoadOptions};
use milvus::proto::common::ConsistencyLevel;
use milvus::proto::schema::SparseFloatArray;
use milvus::query::SearchOptions;
use milvus::schema::{CollectionSchemaBuilder, FieldSchema};
use milvus::value::{Value, ValueVec};
use serde::{Deserialize, Serialize};

pub use crate::milvus_codec::{
    Forms, adc_bound, adc_query, code_from_sparse, set_bits, sparse_row,
};

/// Field names of the collection layout (module docs).
pub const FIELD_ID: &str = "id";
/// Binary vector field: the packed code.
pub const FIELD_CODE: &str = "code";
/// Sparse vector field: the set bits with weight 1.0.
pub const FIELD_BITS: &str = "bits";
/// Float field: the decoded code's norm (ADC).
pub const FIELD_NORM: &str = "norm";
/// Largest `limit` (top-k) one Milvus search accepts.
pub const MAX_LIMIT: usize = 16384;

/// What `bsa export` records in the collection's description (JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CollectionMeta {
    /// Always `"bsa-milvus"`.
    pub format: String,
    /// Layout version, 1.
    pub version: u32,
    /// Code length N in bits.
    pub bits: usize,
    /// The vector fields present.
    pub forms: Forms,
    /// Rows exported.
    pub rows: usize,
    /// Smallest and largest decoded-code norm, when the `norm` field exists (ADC bound).
    pub norm_range: Option<(f32, f32)>,
}

const META_FORMAT: &str = "bsa-milvus";

/// Export settings.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Vector fields to write.
    pub forms: Forms,
    /// Shards (Milvus `shards_num`): parallel insert channels, fixed at creation.
    pub shards: i32,
    /// In-memory replicas when loading (`replica_number`; one per query node at most).
    pub replicas: i32,
    /// Rows per insert request.
    pub batch: usize,
    /// Replace an existing collection of that name.
    pub replace: bool,
}

/// A candidate Milvus returned: its id, its code (packed `u64` words) and its norm.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// External id.
    pub id: u64,
    /// The code, `words_per_code(bits)` words.
    pub code: Vec<u64>,
    /// The decoded-code norm, if the collection has the field.
    pub norm: Option<f32>,
    /// Milvus's own score: Hamming distance or inner product.
    pub milvus_score: f32,
}

/// A connection to one Milvus server.
pub struct Client {
    rt: tokio::runtime::Runtime,
    inner: SdkClient,
    url: String,
}

impl Client {
    /// Connects to `url` (e.g. `http://127.0.0.1:19530`).
    pub fn connect(url: &str) -> Result<Client> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime for the Milvus client")?;
        let inner = rt
            .block_on(SdkClient::with_timeout(
                url.to_string(),
                std::time::Duration::from_secs(60),
                None,
                None,
            ))
            .with_context(|| format!("connecting to Milvus at {url}"))?;
        Ok(Client {
            rt,
            inner,
            url: url.to_string(),
        })
    }

    /// Whether the collection exists.
    pub fn has_collection(&self, name: &str) -> Result<bool> {
        self.rt
            .block_on(self.inner.has_collection(name))
            .with_context(|| format!("{}: listing collection {name}", self.url))
    }

    /// Drops the collection.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        self.rt
            .block_on(self.inner.drop_collection(name))
            .with_context(|| format!("{}: dropping collection {name}", self.url))
    }

    /// Reads the [`CollectionMeta`] of a collection written by `bsa export`.
    pub fn meta(&self, name: &str) -> Result<CollectionMeta> {
        if !self.has_collection(name)? {
            bail!(
                "{}: no collection {name:?}; write it with `bsa export`",
                self.url
            );
        }
        let d = self
            .rt
            .block_on(self.inner.describe_collection(name))
            .with_context(|| format!("{}: describing collection {name}", self.url))?;
        let meta: CollectionMeta = serde_json::from_str(&d.schema.description)
            .ok()
            .filter(|m: &CollectionMeta| m.format == META_FORMAT)
            .with_context(|| {
                format!(
                    "{}: collection {name:?} was not written by `bsa export` (description {:?})",
                    self.url, d.schema.description
                )
            })?;
        if meta.version != 1 {
            bail!(
                "{}: collection {name:?} has bsa layout version {}, this bsa reads version 1",
                self.url,
                meta.version
            );
        }
        Ok(meta)
    }

    /// Creates the collection, inserts every row of `index` in batches (calling `progress` with
    /// the rows done), flushes, builds the vector indexes and loads the collection.
    pub fn export(
        &self,
        name: &str,
        index: &Index,
        opts: &ExportOptions,
        mut progress: impl FnMut(usize),
    ) -> Result<CollectionMeta> {
        let bits = index.bits();
        let n = index.len();
        let wpc = index.words_per_code();
        let bytes_per_code = pack::bytes_per_code(bits);
        if opts.batch == 0 {
            bail!("--batch must be at least 1");
        }
        if opts.shards < 1 || opts.replicas < 1 {
            bail!("--shards and --replicas must be at least 1");
        }
        if let Some(&id) = index.ids().iter().find(|&&id| i64::try_from(id).is_err()) {
            bail!(
                "{}: id {id} does not fit Milvus's Int64 primary key",
                index.dir().display()
            );
        }
        let norms = index.norms();
        let norm_range = norms.map(|v| {
            v.iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                    (lo.min(x), hi.max(x))
                })
        });
        let meta = CollectionMeta {
            format: META_FORMAT.into(),
            version: 1,
            bits,
            forms: opts.forms,
            rows: n,
            norm_range: if n == 0 { None } else { norm_range },
        };
        if self.has_collection(name)? {
            if !opts.replace {
                bail!(
                    "{}: collection {name:?} already exists; pass --replace to drop and rewrite it",
                    self.url
                );
            }
            self.drop_collection(name)?;
        }

        let id_f = FieldSchema::new_primary_int64(FIELD_ID, "external id", false);
        let code_f = FieldSchema::new_binary_vector(
            FIELD_CODE,
            "packed code, packbits little bit order",
            (bytes_per_code * 8) as i64,
        );
        let bits_f = FieldSchema::new_sparse_float_vector(FIELD_BITS, "set bits, weight 1");
        let norm_f = FieldSchema::new_float(FIELD_NORM, "decoded code norm");
        let mut sb = CollectionSchemaBuilder::new(name, &serde_json::to_string(&meta)?);
        sb.add_field(id_f.clone());
        if opts.forms.binary() {
            sb.add_field(code_f.clone());
        }
        if opts.forms.sparse() {
            sb.add_field(bits_f.clone());
        }
        if norms.is_some() {
            sb.add_field(norm_f.clone());
        }
        let schema = sb.build().context("building the collection schema")?;
        // Strong consistency: a search right after the export sees every row.
        let copts = CreateCollectionOptions::with_shard_num(opts.shards)
            .consistency_level(ConsistencyLevel::Strong);
        self.rt
            .block_on(self.inner.create_collection(schema, Some(copts)))
            .with_context(|| format!("{}: creating collection {name}", self.url))?;

        let mut done = 0;
        while done < n {
            let end = (done + opts.batch).min(n);
            let words = &index.codes()[done * wpc..end * wpc];
            let ids: Vec<i64> = index.ids()[done..end].iter().map(|&i| i as i64).collect();
            let mut cols = vec![FieldColumn::new(&id_f, ids)];
            if opts.forms.binary() {
                let bytes = pack::unpack_to_le_bytes(words, end - done, bits)?;
                cols.push(FieldColumn::new(&code_f, bytes));
            }
            if opts.forms.sparse() {
                let contents = words
                    .chunks_exact(wpc)
                    .map(|c| sparse_row(set_bits(c).map(|j| (j, 1.0f32))))
                    .collect();
                cols.push(FieldColumn::new(
                    &bits_f,
                    ValueVec::SparseFloat(SparseFloatArray {
                        contents,
                        dim: bits as i64,
                    }),
                ));
            }
            if let Some(v) = norms {
                cols.push(FieldColumn::new(&norm_f, v[done..end].to_vec()));
            }
            self.rt
                .block_on(self.inner.insert(name, cols, None))
                .with_context(|| {
                    format!("{}: inserting rows {done}..{end} into {name}", self.url)
                })?;
            done = end;
            progress(done);
        }
        self.rt
            .block_on(self.inner.flush(name))
            .with_context(|| format!("{}: flushing {name}", self.url))?;
        if opts.forms.binary() {
            let p = IndexParams::new(
                "code_hamming".into(),
                IndexType::BinFlat,
                MetricType::HAMMING,
                HashMap::new(),
            );
            self.rt
                .block_on(self.inner.create_index(name, FIELD_CODE, p))
                .with_context(|| format!("{}: indexing field {FIELD_CODE} of {name}", self.url))?;
        }
        if opts.forms.sparse() {
            // drop_ratio_build 0: keep every posting, so the inverted index is exact.
            let p = IndexParams::new(
                "bits_ip".into(),
                IndexType::SparseInvertedIndex,
                MetricType::IP,
                HashMap::from([("drop_ratio_build".to_string(), "0".to_string())]),
            );
            self.rt
                .block_on(self.inner.create_index(name, FIELD_BITS, p))
                .with_context(|| format!("{}: indexing field {FIELD_BITS} of {name}", self.url))?;
        }
        self.load(name, opts.replicas)?;
        Ok(meta)
    }

    /// Loads the collection into memory with `replicas` replicas (needed before searching; the
    /// server keeps it loaded across restarts).
    pub fn load(&self, name: &str, replicas: i32) -> Result<()> {
        self.rt
            .block_on(
                self.inner
                    .load_collection(name, Some(LoadOptions::with_replica_number(replicas))),
            )
            .with_context(|| format!("{}: loading collection {name}", self.url))
    }

    /// Hamming search on the binary field: for each packed query (numpy little-bit-order bytes),
    /// the `limit` nearest codes.
    pub fn search_binary(
        &self,
        name: &str,
        meta: &CollectionMeta,
        queries: &[Vec<u8>],
        limit: usize,
    ) -> Result<Vec<Vec<Candidate>>> {
        if !meta.forms.binary() {
            bail!(
                "collection {name:?} has no binary field (exported with --as sparse); use --score overlap or adc, or re-export with --as binary or both"
            );
        }
        let data = queries
            .iter()
            .map(|q| Value::Binary(q.as_slice().into()))
            .collect();
        self.search(name, meta, data, FIELD_CODE, "HAMMING", limit)
    }

    /// Inner-product search on the sparse field: each query is `(bit, weight)` pairs, ascending.
    pub fn search_sparse(
        &self,
        name: &str,
        meta: &CollectionMeta,
        queries: &[Vec<(u32, f32)>],
        limit: usize,
    ) -> Result<Vec<Vec<Candidate>>> {
        if !meta.forms.sparse() {
            bail!(
                "collection {name:?} has no sparse field (exported with --as binary); use --score hamming, or re-export with --as sparse or both"
            );
        }
        let data = queries
            .iter()
            .map(|q| {
                Value::SparseFloat(std::borrow::Cow::Owned(SparseFloatArray {
                    contents: vec![sparse_row(q.iter().copied())],
                    dim: meta.bits as i64,
                }))
            })
            .collect();
        self.search(name, meta, data, FIELD_BITS, "IP", limit)
    }

    fn search(
        &self,
        name: &str,
        meta: &CollectionMeta,
        data: Vec<Value<'_>>,
        field: &str,
        metric: &str,
        limit: usize,
    ) -> Result<Vec<Vec<Candidate>>> {
        if limit == 0 || limit > MAX_LIMIT {
            bail!("a Milvus search returns 1 to {MAX_LIMIT} candidates, not {limit}");
        }
        let nq = data.len();
        // The codes come back with the candidates from the sparse field. Milvus 2.5 (milvus-lite)
        // fails a search that outputs a binary vector field, so a binary-only collection's codes
        // are fetched by a second request, a query by id.
        let code_field = if meta.forms.sparse() {
            FIELD_BITS
        } else {
            FIELD_CODE
        };
        let mut out_fields = if meta.forms.sparse() {
            vec![FIELD_BITS.to_string()]
        } else {
            Vec::new()
        };
        if meta.norm_range.is_some() {
            out_fields.push(FIELD_NORM.to_string());
        }
        let opts = SearchOptions::new()
            .limit(limit)
            .output_fields(out_fields)
            .add_param("anns_field", field)
            .add_param("metric_type", metric)
            .add_param("drop_ratio_search", "0");
        let res = self
            .rt
            .block_on(self.inner.search(name, data, Some(opts)))
            .with_context(|| format!("{}: searching {name}", self.url))?;
        if res.len() != nq {
            bail!(
                "{}: Milvus answered {} of {nq} queries",
                self.url,
                res.len()
            );
        }
        let wpc = pack::words_per_code(meta.bits);
        let bpc = pack::bytes_per_code(meta.bits);
        let mut all = Vec::with_capacity(nq);
        for r in res {
            let m = r.id.len();
            let col = |f: &str| {
                r.field
                    .iter()
                    .find(|c| c.name == f)
                    .with_context(|| format!("{}: Milvus returned no field {f}", self.url))
            };
            let fetched;
            let code_col = if meta.forms.sparse() {
                col(code_field)?
            } else {
                fetched = self.codes_by_id(name, meta, &r.id)?;
                &fetched
            };
            let codes: Vec<Vec<u64>> = match &code_col.value {
                ValueVec::Binary(b) if b.len() == m * bpc => b
                    .chunks_exact(bpc)
                    .map(|c| pack::pack_le_bytes(c, 1, bpc, meta.bits))
                    .collect::<Result<_, _>>()?,
                ValueVec::SparseFloat(s) if s.contents.len() == m => s
                    .contents
                    .iter()
                    .map(|row| code_from_sparse(row, meta.bits, wpc))
                    .collect::<Result<_>>()?,
                _ => bail!(
                    "{}: field {code_field} came back in an unexpected form",
                    self.url
                ),
            };
            let norms: Option<Vec<f32>> = if meta.norm_range.is_some() {
                match &col(FIELD_NORM)?.value {
                    ValueVec::Float(v) if v.len() == m => Some(v.clone()),
                    _ => bail!(
                        "{}: field {FIELD_NORM} came back in an unexpected form",
                        self.url
                    ),
                }
            } else {
                None
            };
            let mut cands = Vec::with_capacity(m);
            for (i, code) in codes.into_iter().enumerate() {
                let id = match &r.id[i] {
                    Value::Long(v) => u64::try_from(*v)
                        .with_context(|| format!("{}: negative id {v}", self.url))?,
                    other => bail!("{}: unexpected id {other:?}", self.url),
                };
                cands.push(Candidate {
                    id,
                    code,
                    norm: norms.as_ref().map(|v| v[i]),
                    milvus_score: r.score[i],
                });
            }
            all.push(cands);
        }
        Ok(all)
    }
}

impl Client {
    /// The `code` column of the rows with these ids, in the order of `ids`.
    fn codes_by_id(
        &self,
        name: &str,
        meta: &CollectionMeta,
        ids: &[Value<'_>],
    ) -> Result<FieldColumn> {
        let mut list = Vec::with_capacity(ids.len());
        for v in ids {
            match v {
                Value::Long(x) => list.push(*x),
                other => bail!("{}: unexpected id {other:?}", self.url),
            }
        }
        if list.is_empty() {
            return Ok(FieldColumn::new(
                &FieldSchema::new_binary_vector(
                    FIELD_CODE,
                    "",
                    (pack::bytes_per_code(meta.bits) * 8) as i64,
                ),
                Vec::<u8>::new(),
            ));
        }
        let expr = format!(
            "{FIELD_ID} in [{}]",
            list.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let opts = milvus::query::QueryOptions::new()
            .output_fields(vec![FIELD_ID.to_string(), FIELD_CODE.to_string()]);
        let cols = self
            .rt
            .block_on(self.inner.query(name, &expr, &opts))
            .with_context(|| format!("{}: fetching codes from {name}", self.url))?;
        let find = |f: &str| {
            cols.iter()
                .find(|c| c.name == f)
                .with_context(|| format!("{}: Milvus returned no field {f}", self.url))
        };
        let (ValueVec::Long(got), ValueVec::Binary(bytes)) =
            (&find(FIELD_ID)?.value, &find(FIELD_CODE)?.value)
        else {
            bail!("{}: codes came back in an unexpected form", self.url);
        };
        let bpc = pack::bytes_per_code(meta.bits);
        if bytes.len() != got.len() * bpc {
            bail!("{}: codes came back in an unexpected form", self.url);
        }
        let at: HashMap<i64, usize> = got.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let mut out = Vec::with_capacity(list.len() * bpc);
        for id in &list {
            let i = *at
                .get(id)
                .with_context(|| format!("{}: id {id} vanished from {name}", self.url))?;
            out.extend_from_slice(&bytes[i * bpc..(i + 1) * bpc]);
        }
        let mut c = find(FIELD_CODE)?.clone();
        c.value = ValueVec::Binary(out);
        Ok(c)
    }
}
