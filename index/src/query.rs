//! `bsa search` as a library call: float queries or packed query codes in, the hits `bsa search`
//! prints out, for a query server as for the command line and the Python package.
//!
//! A search of an index is more than a [`Searcher`](crate::Searcher): float queries are encoded
//! with the index's model, the asymmetric scores (`adc`, `soft`) and `overlap` need per-query
//! tables, the mode's searcher runs with `k x rescore` candidates, and those are re-ranked by
//! exact cosine against the stored vectors. [`search`] does all of it, and checks what
//! `bsa search` checks (finite queries, a score the index and the mode can answer, an `ef` the
//! mode takes), so that every caller gets the same bytes for the same inputs.
//!
//! ```no_run
//! use bsa_index::query::{search, Queries, Request};
//! # fn main() -> bsa_index::Result<()> {
//! let index = bsa_index::live::Snapshot::open("idx")?; // every segment of the index
//! let model = index.query_model()?; // the model copied in by `bsa build --model`
//! let queries = ndarray::Array2::<f32>::ones((2, 384));
//! let request = Request::new(10).mode("flat")?.score("adc")?.rescore(Some(4));
//! let view = model.as_ref().map(|m| m.view());
//! let found = search(&index, view, Queries::Floats(queries.view()), &request)?;
//! println!("{:?} in {:.3}s", found.hits[0].ids, found.seconds);
//! # Ok(()) }
//! ```

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use ndarray::{ArrayView2, CowArray, Ix2};

use crate::error::{Error, Result};
use crate::live::{IdFilter, SearchOptions, Snapshot};
use crate::model::{ModelView, per_unit_query};
pub use crate::model::{check_rows, nonfinite_detail, norm_detail, plainly_fine};
use crate::{Hits, Mode, Score, SearchParams, SearchStats, pack};

/// How codes are ranked (`bsa search --score`).
///
/// ```
/// use bsa_index::query::ScoreName;
/// for name in ScoreName::NAMES {
///     assert_eq!(ScoreName::parse(name)?.name(), name);
/// }
/// assert!(ScoreName::Adc.needs_floats() && !ScoreName::Overlap.needs_floats());
/// let e = ScoreName::parse("cos").unwrap_err();
/// assert!(e.to_string().contains("expected one of hamming, cosine"), "{e}");
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreName {
    /// `|q xor b|`, ascending.
    Hamming,
    /// `|q and b| / sqrt(|q| |b|)`, descending.
    Cosine,
    /// `|q and b| / |q or b|`, descending.
    Jaccard,
    /// `|q and b|`, descending: a 0/1 table of the query's bits (the sparse inner product Milvus
    /// computes).
    Overlap,
    /// `cos(q, xhat_b)`: the float query against each code as the model decodes it.
    Adc,
    /// `sigmoid(q We^T + be) . b`: a sum over the code's set bits, so codes with more bits score
    /// higher; it ranks codes of a fixed number of bits (topk, pursuit), while codes whose bit
    /// counts vary (sign, ITQ, BSA) it ranks mostly by that count.
    Soft,
}

impl ScoreName {
    /// Every score's name, as `bsa search --score` spells it.
    pub const NAMES: [&'static str; 6] = ["hamming", "cosine", "jaccard", "overlap", "adc", "soft"];

    /// The score called `name` (one of [`NAMES`](Self::NAMES)).
    pub fn parse(name: &str) -> Result<ScoreName> {
        Ok(match name {
            "hamming" => ScoreName::Hamming,
            "cosine" => ScoreName::Cosine,
            "jaccard" => ScoreName::Jaccard,
            "overlap" => ScoreName::Overlap,
            "adc" => ScoreName::Adc,
            "soft" => ScoreName::Soft,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown score {name:?}; expected one of {}",
                    Self::NAMES.join(", ")
                )));
            }
        })
    }

    /// The score's name.
    pub fn name(self) -> &'static str {
        match self {
            ScoreName::Hamming => "hamming",
            ScoreName::Cosine => "cosine",
            ScoreName::Jaccard => "jaccard",
            ScoreName::Overlap => "overlap",
            ScoreName::Adc => "adc",
            ScoreName::Soft => "soft",
        }
    }

    /// Whether the score compares the float query with the codes (needs float queries and the
    /// model).
    pub fn needs_floats(self) -> bool {
        matches!(self, ScoreName::Adc | ScoreName::Soft)
    }
}

/// The queries of a search.
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// use bsa_index::query::{search, Queries, Request};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// let codes = [0b0011u64, 0b0110, 0b1100, 0b1001, 0b1111]; // five 4-bit codes, ids 0..5
/// bsa_index::IndexBuilder::new(4, &codes).build(&path)?;
/// let index = bsa_index::live::Snapshot::open(&path)?;
/// // numpy's packbits(bitorder="little") of the query bits 0, 1 and 2: one byte a query.
/// let q = Queries::Packed { bytes: &[0b0111], rows: 1, cols: 1 };
/// assert_eq!(search(&index, None, q, &Request::new(2))?.hits[0].ids, [0, 1]);
/// let wide = Queries::Packed { bytes: &[0b0111, 0], rows: 1, cols: 2 }; // not 4-bit codes
/// assert!(search(&index, None, wide, &Request::new(2)).is_err());
/// # Ok(()) }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy)]
pub enum Queries<'a> {
    /// Float queries, `nq x D`, encoded with the model (and used by `adc`, `soft` and rescoring).
    Floats(ArrayView2<'a, f32>),
    /// Packed query codes: `rows x ceil(bits / 8)` bytes, numpy `packbits(bitorder="little")`.
    Packed {
        /// The bytes, row-major.
        bytes: &'a [u8],
        /// Number of queries (none is fine: no answers).
        rows: usize,
        /// Bytes per query code, checked against the index's code size even when there are
        /// no rows.
        cols: usize,
    },
}

impl<'a> Queries<'a> {
    /// Float queries from a row-major buffer of `rows x dim` floats (a server's request body),
    /// without ndarray in the caller's code. An [`Error::InvalidArgument`] when `dim` is 0 or
    /// does not divide the buffer's length (whether `dim` is the model's is checked by the
    /// search).
    ///
    /// ```
    /// use bsa_index::query::Queries;
    /// let body = [0.6f32, 0.8, 0.0, 1.0, 0.0, 0.0];
    /// let Queries::Floats(q) = Queries::floats(&body, 3)? else { unreachable!() };
    /// assert_eq!(q.dim(), (2, 3));
    /// assert!(Queries::floats(&body, 4).is_err()); // 6 floats are not rows of 4
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn floats(data: &'a [f32], dim: usize) -> Result<Queries<'a>> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(Error::InvalidArgument(format!(
                "float queries: {} floats are not whole rows of {dim} (give the queries' \
                 dimension, the model's input dimension)",
                data.len()
            )));
        }
        let q = ArrayView2::from_shape((data.len() / dim, dim), data)
            .expect("whole rows of dim floats");
        Ok(Queries::Floats(q))
    }

    /// The number of queries: rows of floats, or packed codes.
    ///
    /// ```
    /// use bsa_index::query::Queries;
    /// assert_eq!(Queries::floats(&[0.6f32, 0.8, 0.0, 1.0], 2)?.len(), 2);
    /// let none = Queries::Packed { bytes: &[], rows: 0, cols: 4 };
    /// assert!(none.is_empty() && none.len() == 0);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        match self {
            Queries::Floats(q) => q.nrows(),
            Queries::Packed { rows, .. } => *rows,
        }
    }

    /// Whether there are no queries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What to search for: `bsa search`'s options. Made with [`Request::new`] and its setters
/// (`#[non_exhaustive]`: a field added later breaks no caller).
///
/// ```
/// use bsa_index::query::{Request, ScoreName};
/// let r = Request::new(10).mode("hnsw")?.with_ef(Some(64)).score("adc")?.rescore(Some(4));
/// assert_eq!((r.k, r.mode.name(), r.ef(), r.score, r.rescore), (10, "hnsw", Some(64), ScoreName::Adc, Some(4)));
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Request {
    /// Neighbours per query.
    pub k: usize,
    /// The search mode (`--mode`).
    pub mode: Mode,
    /// The HNSW candidate list size (`--ef`; `None`: the mode's own, else the one stored at
    /// build time, raised to `k` where it is smaller). Only mode `hnsw` takes one: a search in an exact mode refuses it, since it
    /// would be ignored.
    pub ef: Option<usize>,
    /// How codes are ranked (`--score`).
    pub score: ScoreName,
    /// Re-rank the best `k x rescore` candidates by exact cosine against the stored vectors.
    pub rescore: Option<usize>,
    /// Only neighbours within this Hamming distance (Hamming score only).
    pub max_distance: Option<u32>,
    /// Only neighbours scoring at least this (scores other than Hamming).
    pub min_score: Option<f32>,
    /// Whether hits carry their Hamming distances (`true` unless [`Request::distances`] says
    /// otherwise). A table score of float queries (`adc`, `soft`) ranks without the query's
    /// code, so a caller that reads only the scores can skip encoding the queries: the model's
    /// encoding (a pursuit of K atoms) costs more than the search it would otherwise feed.
    pub distances: bool,
}

impl Request {
    /// `k` neighbours, flat mode, Hamming score, no rescoring.
    ///
    /// ```
    /// use bsa_index::query::{Request, ScoreName};
    /// let r = Request::new(5);
    /// assert_eq!((r.k, r.mode.name(), r.score, r.rescore, r.ef()), (5, "flat", ScoreName::Hamming, None, None));
    /// ```
    pub fn new(k: usize) -> Request {
        Request {
            k,
            mode: Mode::parse("flat").expect("flat is a mode"),
            ef: None,
            score: ScoreName::Hamming,
            rescore: None,
            max_distance: None,
            min_score: None,
            distances: true,
        }
    }

    /// Sets the mode by name (`flat`, `inverted`, `hnsw`), keeping the `ef` set so far.
    ///
    /// ```
    /// use bsa_index::query::Request;
    /// let r = Request::new(10).with_ef(Some(64)).mode("hnsw")?;
    /// assert_eq!((r.mode.name(), r.ef()), ("hnsw", Some(64)));
    /// assert!(Request::new(10).mode("hnsh").is_err()); // a misspelt mode
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn mode(mut self, name: &str) -> Result<Request> {
        // An ef the old mode carried (a `mode` field set directly) moves to the request's.
        self.ef = self.ef();
        self.mode = Mode::parse(name)?;
        Ok(self)
    }

    /// Sets the score by name (see [`ScoreName::NAMES`]).
    ///
    /// ```
    /// use bsa_index::query::{Request, ScoreName};
    /// assert_eq!(Request::new(10).score("jaccard")?.score, ScoreName::Jaccard);
    /// assert!(Request::new(10).score("l2").is_err());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn score(mut self, name: &str) -> Result<Request> {
        self.score = ScoreName::parse(name)?;
        Ok(self)
    }

    /// Sets the rescoring factor.
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// use bsa_index::query::{search, Queries, Request};
    /// # use ndarray::{array, Array1};
    /// # use bsa_index::model::{QueryModel, Rule};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// // A 3-bit sign model of 2-d rows, and four rows stored with their codes for rescoring.
    /// let we = array![[1.0f32, 0.0], [0.0, 1.0], [1.0, -1.0]];
    /// let model = QueryModel::new("sign", Rule::Positive, we.clone(), Array1::zeros(3), we, Array1::zeros(2))?;
    /// let base = array![[1.0f32, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.6, 0.8]];
    /// let codes = bsa_index::pack::pack_set_bits(&model.encode(base.view())?, 3)?;
    /// bsa_index::IndexBuilder::new(3, &codes).vectors(base.as_slice().unwrap(), 2).build(&path)?;
    /// let index = bsa_index::live::Snapshot::open(&path)?;
    /// let q = array![[0.8f32, 0.6]];
    /// // Without rescoring, rows 0 and 1 tie at Hamming distance 1 from the query's code (ties by id);
    /// // with it, the best 2 x 2 candidates are re-ranked by exact cosine.
    /// let plain = search(&index, Some(model.view()), Queries::Floats(q.view()), &Request::new(2))?;
    /// assert_eq!((plain.hits[0].ids.as_slice(), plain.hits[0].distances.as_slice()), ([0, 1].as_slice(), [1, 1].as_slice()));
    /// let r = Request::new(2).rescore(Some(2));
    /// let found = search(&index, Some(model.view()), Queries::Floats(q.view()), &r)?;
    /// assert_eq!(found.hits[0].ids, [1, 0]); // cosines 0.96 and 0.8
    /// # Ok(()) }
    /// ```
    pub fn rescore(mut self, factor: Option<usize>) -> Request {
        self.rescore = factor;
        self
    }

    /// Sets the HNSW candidate list size (`None`: the value stored at build time). The exact
    /// modes take none: a search refuses an `ef` with them rather than ignore it.
    ///
    /// ```
    /// use bsa_index::query::Request;
    /// let r = Request::new(10).mode("hnsw")?.with_ef(Some(128));
    /// assert_eq!(r.ef(), Some(128));
    /// assert_eq!(Request::new(10).mode("hnsw")?.ef(), None); // the graph's own
    /// // Checked at search: a flat search does not take it.
    /// assert!(Request::new(10).with_ef(Some(128)).check_ef().is_err());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn with_ef(mut self, ef: Option<usize>) -> Request {
        // One place for it: a mode set directly with its own ef loses that one.
        self.ef = ef;
        self.mode = self.mode.with_ef_search(None);
        self
    }

    /// Sets the maximum Hamming distance.
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// use bsa_index::query::{search, Queries, Request};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let codes = [0b0011u64, 0b0110, 0b1100, 0b1001, 0b1111]; // five 4-bit codes, ids 0..5
    /// bsa_index::IndexBuilder::new(4, &codes).build(&path)?;
    /// let index = bsa_index::live::Snapshot::open(&path)?;
    /// let q = Queries::Packed { bytes: &[0b0011], rows: 1, cols: 1 };
    /// // Up to 10 neighbours, but only those within distance 1: none other than the query's code.
    /// let found = search(&index, None, q, &Request::new(10).max_distance(Some(1)))?;
    /// assert_eq!((found.hits[0].ids.as_slice(), found.hits[0].distances.as_slice()), ([0].as_slice(), [0].as_slice()));
    /// # Ok(()) }
    /// ```
    pub fn max_distance(mut self, d: Option<u32>) -> Request {
        self.max_distance = d;
        self
    }

    /// Sets the minimum score.
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// use bsa_index::query::{search, Queries, Request};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let codes = [0b0011u64, 0b0110, 0b1100, 0b1001, 0b1111]; // five 4-bit codes, ids 0..5
    /// bsa_index::IndexBuilder::new(4, &codes).build(&path)?;
    /// let index = bsa_index::live::Snapshot::open(&path)?;
    /// let q = Queries::Packed { bytes: &[0b0011], rows: 1, cols: 1 };
    /// let r = Request::new(10).score("jaccard")?.min_score(Some(0.5));
    /// assert_eq!(search(&index, None, q, &r)?.hits[0].ids, [0, 4]); // jaccard 1 and 0.5
    /// // A minimum score is not a Hamming search's: refused, not ignored.
    /// assert!(search(&index, None, q, &Request::new(10).min_score(Some(0.5))).is_err());
    /// # Ok(()) }
    /// ```
    pub fn min_score(mut self, s: Option<f32>) -> Request {
        self.min_score = s;
        self
    }

    /// Whether an `adc` search picks its candidates with the integer tables of
    /// [`Weights::adc_candidate_unit_tables`](crate::model::Weights::adc_candidate_unit_tables)
    /// ([`tables`]' `int_tables`): when rescoring re-ranks
    /// them, unless a `min_score` range is asked for, whose bound applies to the exact score,
    /// which those tables only approximate.
    ///
    /// ```
    /// use bsa_index::query::Request;
    /// let adc = Request::new(10).score("adc")?;
    /// assert!(!adc.picks_with_int_tables()); // the exact tables rank the results
    /// assert!(adc.rescore(Some(4)).picks_with_int_tables()); // the rescoring does
    /// assert!(!adc.rescore(Some(4)).min_score(Some(0.3)).picks_with_int_tables());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn picks_with_int_tables(&self) -> bool {
        self.rescore.is_some() && self.min_score.is_none()
    }

    /// Whether hits need their Hamming distances. With `false`, a search by `adc` or `soft` of
    /// float queries does not encode them and every hit's distance is `u32::MAX` (the scores,
    /// ids and order are the same); other scores rank by the query's code and still encode it.
    ///
    /// ```
    /// let r = bsa_index::query::Request::new(10).score("adc")?.distances(false);
    /// assert!(!r.distances);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn distances(mut self, wanted: bool) -> Request {
        self.distances = wanted;
        self
    }

    /// The HNSW candidate list size, if one was set (on the request, or on a `mode` field set
    /// directly); `None`: the graph's own, stored at build time.
    ///
    /// ```
    /// use bsa_index::query::Request;
    /// assert_eq!(Request::new(10).mode("hnsw")?.ef(), None);
    /// assert_eq!(Request::new(10).mode("hnsw")?.with_ef(Some(80)).ef(), Some(80));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn ef(&self) -> Option<usize> {
        self.ef.or(self.mode.ef_search())
    }

    /// The mode to search with: [`Request::mode`] with the request's `ef`, once
    /// [`Request::check_ef`] has passed.
    fn searched_mode(&self) -> Mode {
        self.mode.with_ef_search(self.ef())
    }

    /// Refuses an `ef` the search would ignore (an exact mode), and one out of range: above
    /// [`crate::hnsw::MAX_EF`], or below `k`. The walk keeps `ef` rows in its list and
    /// answers with the best `k x rescore` rows it scored: fewer than it rescores is fine, fewer
    /// than `k` is not (`k = usize::MAX` is a range search: every row in range the walk finds).
    ///
    /// ```
    /// use bsa_index::query::Request;
    /// let graph = Request::new(10).mode("hnsw")?;
    /// assert!(graph.with_ef(Some(64)).check_ef().is_ok());
    /// assert!(graph.with_ef(None).check_ef().is_ok()); // the graph's own
    /// let low = graph.with_ef(Some(5)).check_ef().unwrap_err();
    /// assert!(low.to_string().contains("ef 5 is below k 10"));
    /// let flat = Request::new(10).with_ef(Some(64)).check_ef().unwrap_err();
    /// assert!(flat.to_string().contains("mode flat is exact and takes no ef"));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn check_ef(&self) -> Result<()> {
        let Some(ef) = self.ef() else {
            return Ok(());
        };
        if !matches!(self.mode, Mode::Hnsw(_)) {
            return Err(Error::InvalidArgument(format!(
                "ef sets the graph search's candidate list: it takes mode hnsw (mode {} is exact \
                 and takes no ef)",
                self.mode.name()
            )));
        }
        if ef > crate::hnsw::MAX_EF {
            // The limit a graph's build takes for its own ef (ef_search in the manifest).
            return Err(Error::InvalidArgument(format!(
                "ef {ef} is above {}, the most a graph search takes",
                crate::hnsw::MAX_EF
            )));
        }
        if ef < self.k && self.k != usize::MAX {
            return Err(Error::InvalidArgument(format!(
                "ef {ef} is below k {}; give ef {} or more",
                self.k, self.k
            )));
        }
        Ok(())
    }
}

/// What a search found.
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// use bsa_index::query::{search, Queries, Request};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// let codes = [0b0011u64, 0b0110, 0b1100, 0b1001, 0b1111]; // five 4-bit codes, ids 0..5
/// bsa_index::IndexBuilder::new(4, &codes).build(&path)?;
/// let index = bsa_index::live::Snapshot::open(&path)?;
/// let q = Queries::Packed { bytes: &[0b0111, 0b1000], rows: 2, cols: 1 };
/// let found = search(&index, None, q, &Request::new(1).score("cosine")?)?;
/// assert_eq!(found.hits.len(), 2); // one list per query
/// assert_eq!(found.hits[1].ids, [2]); // the code 0b1100 is nearest 0b1000 (ids tie to the lower)
/// assert!(found.hits[1].scores.is_some()); // a non-Hamming score is reported
/// assert_eq!(found.encode_seconds, 0.0); // packed queries are not encoded
/// assert!(!found.stats.kernel.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Found {
    /// One list per query, best first (as `bsa search` prints them: `ids`, `distances`, and
    /// `scores` for non-Hamming scores or after rescoring).
    pub hits: Vec<Hits>,
    /// What the mode's searcher did (kernel, counters).
    pub stats: SearchStats,
    /// Seconds of the tables, the search and the rescoring: the span `bsa search --stats` reports
    /// as `search_seconds` (encoding the float queries is not in it).
    pub seconds: f64,
    /// Seconds spent encoding float queries with the model (`encode_seconds` of
    /// `bsa search --stats`); 0 for packed query codes. `encode_seconds + seconds` is the search
    /// without the argument checks.
    pub encode_seconds: f64,
    /// Where `seconds` went: the tables, the mode's search, the rescoring.
    pub steps: StepSeconds,
}

/// The seconds of each step of a search ([`Found::steps`], `step_seconds` of
/// `bsa search --stats`), summed over its batches: what to tune first (`ef` and `rescore`, or
/// whether exact ADC tables are worth their cost).
///
/// A graph search runs its groups of queries side by side, a group's steps one after the
/// other on one thread: its sums are thread time, adding up to about `threads x seconds`.
/// Other modes run each step of a batch on all threads: their sums are wall-clock time within
/// [`Found::seconds`].
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// use bsa_index::query::{search, Queries, Request};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// bsa_index::IndexBuilder::new(4, &[0b0011u64, 0b0110, 0b1100]).build(&path)?;
/// let index = bsa_index::live::Snapshot::open(&path)?;
/// let q = Queries::Packed { bytes: &[0b0111], rows: 1, cols: 1 };
/// let found = search(&index, None, q, &Request::new(2))?;
/// let steps = found.steps;
/// assert_eq!((steps.tables, steps.rescore), (0.0, 0.0)); // Hamming: no tables, no rescoring
/// assert!(steps.search > 0.0 && steps.search <= found.seconds);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct StepSeconds {
    /// Computing the per-query tables of a table score (ADC, soft, overlap); 0 for the others.
    pub tables: f64,
    /// The mode's searcher: the scan, the posting lists or the graph walk (and, in the first
    /// search of a graph, loading it: its checksum and structure are checked then, about 0.1 s
    /// at 1M rows).
    pub search: f64,
    /// Re-ranking the candidates by exact cosine against the stored vectors; 0 without
    /// rescoring.
    pub rescore: f64,
}

impl StepSeconds {
    /// Adds another batch's seconds.
    fn add(&mut self, other: StepSeconds) {
        self.tables += other.tables;
        self.search += other.search;
        self.rescore += other.rescore;
    }
}

/// Float queries as packed codes of `model` for an index of `bits`-bit codes.
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// use ndarray::{array, Array1};
/// use bsa_index::model::{QueryModel, Rule};
/// use bsa_index::query::encode_queries;
/// let we = array![[1.0f32, 0.0], [0.0, 1.0], [1.0, -1.0]];
/// let model = QueryModel::new("sign", Rule::Positive, we.clone(), Array1::zeros(3), we, Array1::zeros(2))?;
/// let q = array![[0.8f32, 0.6], [-1.0, 0.5]];
/// assert_eq!(encode_queries(model.view(), q.view(), 3)?, [0b111, 0b010]);
/// assert!(encode_queries(model.view(), q.view(), 64).is_err()); // an index of other codes
/// # Ok(()) }
/// ```
pub fn encode_queries(model: ModelView<'_>, q: ArrayView2<f32>, bits: usize) -> Result<Vec<u64>> {
    check_model_fits(model, q, bits)?;
    // Checked above: the weights' own entry checks only the width again.
    pack::pack_set_bits(&model.weights.codes(model.rule, q, None)?, bits)
}

/// Float queries searched without a model: the index's model was not given (it has one:
/// [`Snapshot::query_model`]), or the index has none.
fn no_model(index: &Snapshot, dir: &impl std::fmt::Display) -> Error {
    Error::InvalidArgument(match index.model_path() {
        Some(_) => format!(
            "{dir}: float queries need the index's model, and none was given: pass \
             Snapshot::query_model()'s"
        ),
        None => format!(
            "{dir}: the index has no model to encode float queries; build it with a model, \
             or search with packed query codes"
        ),
    })
}

/// Checks that `model` makes `bits`-bit codes from rows as wide as `q`'s.
fn check_model_fits(model: ModelView<'_>, q: ArrayView2<f32>, bits: usize) -> Result<()> {
    model.check()?;
    if model.bits() != bits {
        return Err(Error::InvalidArgument(format!(
            "the model makes {}-bit codes but the index holds {bits}-bit codes",
            model.bits()
        )));
    }
    model.weights.check_dim(q.ncols())
}

/// Searches `index` for `queries` as `bsa search` does, and returns what it prints.
///
/// Float queries are encoded with `model`, which must be the index's model
/// ([`Snapshot::query_model`]; only its code size and input dimension are checked against the
/// index here); packed codes need no model unless the score does. Checks, in order: finite
/// float queries (and non-zero rows for `adc`, `soft` and rescoring), that the score gets what
/// it needs (float queries and a model for `adc` and `soft`, norms for `adc`, a graph built for
/// the score for `hnsw`: Hamming for a graph on the codes, `adc` or `soft` for one on vectors;
/// Hamming for a maximum distance, another score for a minimum), that the index has what the
/// mode and rescoring read, then searches `k x rescore` candidates on the current rayon pool
/// and re-ranks them by exact cosine.
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// use bsa_index::query::{search, Queries, Request};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// let codes = [0b0011u64, 0b0110, 0b1100, 0b1001, 0b1111]; // five 4-bit codes, ids 0..5
/// bsa_index::IndexBuilder::new(4, &codes).build(&path)?;
/// let index = bsa_index::live::Snapshot::open(&path)?;
/// let query = 0b0111u64;
/// let found = search(&index, None, Queries::Packed { bytes: &[query as u8], rows: 1, cols: 1 }, &Request::new(3))?;
/// // The same as a brute-force scan: distance, then id.
/// let mut all: Vec<(u32, u64)> = codes.iter().zip(0..).map(|(c, id)| ((c ^ query).count_ones(), id)).collect();
/// all.sort();
/// assert_eq!(found.hits[0].ids, all[..3].iter().map(|a| a.1).collect::<Vec<_>>());
/// assert_eq!(found.hits[0].distances, all[..3].iter().map(|a| a.0).collect::<Vec<_>>());
/// # Ok(()) }
/// ```
pub fn search(
    index: &Snapshot,
    model: Option<ModelView<'_>>,
    queries: Queries<'_>,
    request: &Request,
) -> Result<Found> {
    search_filtered(index, model, queries, request, None)
}

/// [`search`] restricted by an id filter (`bsa search --allow-ids` / `--deny-ids`): exact
/// modes stay exact, the graph walks past excluded rows (see [`Snapshot::search`]).
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// use bsa_index::{live::IdFilter, query::{search_filtered, Queries, Request}};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// let codes = [0b0011u64, 0b0110, 0b1100, 0b1001, 0b1111]; // five 4-bit codes, ids 0..5
/// bsa_index::IndexBuilder::new(4, &codes).build(&path)?;
/// let index = bsa_index::live::Snapshot::open(&path)?;
/// let q = Queries::Packed { bytes: &[0b0011], rows: 1, cols: 1 };
/// let r = Request::new(2);
/// let deny = search_filtered(&index, None, q, &r, Some(IdFilter::Deny(&[0])))?;
/// assert_eq!(deny.hits[0].ids, [1, 3]); // the next nearest, distance 2 each
/// let allow = search_filtered(&index, None, q, &r, Some(IdFilter::Allow(&[2, 4])))?;
/// assert_eq!(allow.hits[0].ids, [4, 2]);
/// # Ok(()) }
/// ```
pub fn search_filtered(
    index: &Snapshot,
    model: Option<ModelView<'_>>,
    queries: Queries<'_>,
    request: &Request,
    filter: Option<IdFilter<'_>>,
) -> Result<Found> {
    search_until(index, model, queries, request, filter, None)
}

/// [`search_filtered`] that returns [`Error::Stopped`] once `stop` is set (e.g. by Ctrl-C):
/// with a flag, the queries are searched in batches (about a tenth of a second each, at least
/// 256 queries and 64 per thread of the pool) and the flag is checked before each. The hits are
/// those of one whole call (each query's hits do not depend on the other queries); the stats
/// name the kernels of the first batch, and their counters of work (rows scanned, nodes
/// visited) are summed over the batches, while those counting segments are not (every batch
/// searched the same segments).
///
/// ```no_run
/// # fn main() -> bsa_index::Result<()> {
/// use std::sync::atomic::AtomicBool;
/// use bsa_index::query::{search_until, Queries, Request};
/// let index = bsa_index::live::Snapshot::open("idx")?;
/// let model = index.query_model()?;
/// let q = ndarray::Array2::<f32>::ones((10_000, 384));
/// let stop = AtomicBool::new(false); // set by a Ctrl-C handler
/// let found = search_until(&index, model.as_ref().map(|m| m.view()), Queries::Floats(q.view()),
///                          &Request::new(10), None, Some(&stop))?;
/// # Ok(()) }
/// ```
pub fn search_until(
    index: &Snapshot,
    model: Option<ModelView<'_>>,
    queries: Queries<'_>,
    request: &Request,
    filter: Option<IdFilter<'_>>,
    stop: Option<&AtomicBool>,
) -> Result<Found> {
    let threads = rayon::current_num_threads();
    let batch = match stop {
        Some(_) => {
            // A Hamming scan without rescoring is the cheap one; the others cost about 10x a
            // pair.
            let cheap = request.score == ScoreName::Hamming && request.rescore.is_none();
            let words = crate::pack::words_per_code(index.bits());
            Some(stop_batch(index.rows(), words, threads, cheap, request.k))
        }
        None => {
            let tables = matches!(
                request.score,
                ScoreName::Adc | ScoreName::Soft | ScoreName::Overlap
            );
            // A range search holds the hits in range, whatever k (usize::MAX without one):
            // what its answer holds in any case, so only its tables count.
            let range = request.max_distance.is_some() || request.min_score.is_some();
            let fetch = match range {
                true => 0,
                false => request
                    .k
                    .saturating_mul(request.rescore.unwrap_or(1))
                    .min(index.rows()),
            };
            let nq = match queries {
                Queries::Floats(q) => q.nrows(),
                Queries::Packed { rows, .. } => rows,
            };
            memory_batch(nq, index.bits(), tables, fetch, threads)
        }
    };
    search_batched(index, model, queries, request, filter, stop, batch)
}

/// Bytes a batch of a search without a stop flag may hold in per-query tables and candidate
/// lists before it is split ([`memory_batch`]).
const BATCH_BYTES: usize = 256 << 20;

/// Queries per batch of a search without a stop flag: `None` (one batch, the fastest) unless
/// the batch's tables (4 bytes an entry, `bits` entries a query, for table scores) and
/// candidate lists (about 40 bytes a candidate, `fetch` a query) would pass [`BATCH_BYTES`];
/// then as many queries as fit, in whole groups of 64 a thread and at least 256 (a stoppable
/// search's floor: the scans' slabs, built per batch, need 256 queries; a range search in
/// batches of 128 ran 4x slower on the row-major kernel). 100,000 ADC queries of
/// 4096-bit codes held 1.6 GB of tables at once (2.2 GB of heap in all: a memory review), in
/// batches of 15,872 at most 256 MB.
fn memory_batch(
    nq: usize,
    bits: usize,
    tables: bool,
    fetch: usize,
    threads: usize,
) -> Option<usize> {
    let per_query = (if tables { bits.saturating_mul(4) } else { 0 })
        .saturating_add(fetch.saturating_mul(40))
        .max(1);
    let whole = 64 * threads.max(1);
    let fits = BATCH_BYTES / per_query;
    let batch = (fits - fits % whole).max(256usize.next_multiple_of(whole));
    (nq > batch).then_some(batch)
}

/// The fewest and most queries a thread takes at a time in a graph search
/// ([`search_batched`]): at least the AMX kernel's tile of 16 queries, at most 256 (their
/// tables are 4 MB of 4096-entry tables).
const GRAPH_GROUP: (usize, usize) = (16, 256);

/// Queries per batch of a stoppable search over `rows` codes of `words` 64-bit words on
/// `threads` threads, so that the flag is checked about every tenth of a second: 2^28
/// query-code pairs for a plain Hamming scan (`cheap`) of codes up to 6 words (384 bits, fewer
/// pairs for wider codes, whose pairs cost more), 2^25 for table and cosine scores or rescoring
/// (which cost about 10x a pair), fewer for k above 128 (the top-k lists' work grows with it);
/// in whole groups of 64 queries a thread, at least 256 queries. Batches of 256 queries over
/// 100k codes (15 ms of Hamming scan) cost a batch of 2000 sign-code queries from Python a
/// fifth of its speed (one thread, 36-38 against 44-49 us a query, same run).
fn stop_batch(rows: usize, words: usize, threads: usize, cheap: bool, k: usize) -> usize {
    let pairs: usize = if cheap {
        (1 << 28) / words.div_ceil(6).max(1)
    } else {
        1 << 25
    };
    let deep = (k.min(1 << 20) / 128).max(1);
    // Whole groups of 64 queries (the wide ADC kernel's) for every thread: 2000 ADC queries
    // (rescored) in batches of 320 on two threads took 266 ms, in batches of 256 or 640 215-229
    // (one batch 220; Python, 100k codes, same run).
    let whole = 64 * threads;
    let batch = pairs / deep / rows.max(1);
    (batch - batch % whole).max(256usize.next_multiple_of(whole))
}

/// [`search_until`] in batches of `batch` queries (`None`: one), `stop` checked before each
/// (which [`search_until`] sizes to about a tenth of a second each). A graph search (`Mode::Hnsw`)
/// instead hands each thread groups of at most `batch` queries (and at most 256) whole. The hits
/// do not depend on the batches.
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// use bsa_index::query::{search_batched, Queries, Request};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// let codes = [0b0011u64, 0b0110, 0b1100, 0b1001, 0b1111]; // five 4-bit codes, ids 0..5
/// bsa_index::IndexBuilder::new(4, &codes).build(&path)?;
/// let index = bsa_index::live::Snapshot::open(&path)?;
/// let bytes = [0b0001u8, 0b0110, 0b1111];
/// let q = Queries::Packed { bytes: &bytes, rows: 3, cols: 1 };
/// let r = Request::new(2).score("jaccard")?;
/// let whole = search_batched(&index, None, q, &r, None, None, None)?;
/// let one_by_one = search_batched(&index, None, q, &r, None, None, Some(1))?;
/// assert_eq!(whole.hits, one_by_one.hits);
/// // Three batches did the work of one and searched the index's one segment.
/// let count = |f: &bsa_index::query::Found, name| f.stats.counter(name);
/// assert_eq!(count(&one_by_one, "codes_scanned"), count(&whole, "codes_scanned"));
/// assert_eq!(count(&one_by_one, "segments"), Some(1));
/// # Ok(()) }
/// ```
pub fn search_batched(
    index: &Snapshot,
    model: Option<ModelView<'_>>,
    queries: Queries<'_>,
    request: &Request,
    filter: Option<IdFilter<'_>>,
    stop: Option<&AtomicBool>,
    batch: Option<usize>,
) -> Result<Found> {
    check_request(index, model, request)?;
    let bits = index.bits();
    let score_name = request.score;
    let floats = float_queries(model, &queries, request)?;
    check_index_serves(index, request)?;
    let skip_codes = !request.distances && score_name.needs_floats();
    let (codes, encode_seconds) = query_codes(index, model, floats.as_ref(), queries, skip_codes)?;
    check_rescore(index, request, floats.is_some())?;

    // The graph's ef travels in the mode; the searcher reads only these.
    let params = SearchParams::default()
        .with_max_distance(request.max_distance)
        .with_skip_distances(skip_codes);
    let fetch = request
        .k
        .saturating_mul(request.rescore.unwrap_or(1).max(1));
    // A graph search's ef, now that the index is known to have a graph for this score (the
    // exact modes' was checked at the top).
    request.check_ef()?;
    let mode = request.searched_mode();
    let started = Instant::now();
    let options = SearchOptions::default()
        .with_params(params)
        .with_filter(filter)
        .with_min_score(request.min_score);
    let wpc = pack::words_per_code(bits);
    let nq = codes.len() / wpc;
    // One batch: its tables, its search, its rescoring.
    let run = |start: usize, end: usize| -> Result<(Vec<Hits>, SearchStats, StepSeconds)> {
        crate::check_stop(stop)?;
        let clock = Instant::now();
        let batch_codes = &codes[start * wpc..end * wpc];
        let (tables, offsets) = tables(
            score_name,
            model,
            floats
                .as_ref()
                .map(|q| q.slice(ndarray::s![start..end, ..])),
            batch_codes,
            bits,
            request.picks_with_int_tables(),
        )?;
        let score = match score_name {
            ScoreName::Cosine => Score::Cosine,
            ScoreName::Jaccard => Score::Jaccard,
            ScoreName::Adc | ScoreName::Soft | ScoreName::Overlap => Score::Table {
                tables: &tables,
                offsets: &offsets,
                normalise: score_name == ScoreName::Adc,
            },
            ScoreName::Hamming => Score::Hamming,
        };
        let tables_done = clock.elapsed().as_secs_f64();
        let (mut part, part_stats) = index.search(batch_codes, fetch, &score, &mode, &options)?;
        let search_done = clock.elapsed().as_secs_f64();
        if let (Some(_), Some(q)) = (request.rescore, &floats) {
            let rows = q.slice(ndarray::s![start..end, ..]);
            let rows = rows.as_slice().expect("rows of a standard layout");
            part = index.rescore_batch(rows, &part, request.k)?;
        }
        let steps = StepSeconds {
            // Scores without tables took none (the call returned at once).
            tables: if offsets.is_empty() { 0.0 } else { tables_done },
            search: search_done - tables_done,
            rescore: if request.rescore.is_some() {
                clock.elapsed().as_secs_f64() - search_done
            } else {
                0.0
            },
        };
        Ok((part, part_stats, steps))
    };
    let parts = if matches!(mode, Mode::Hnsw(_)) && nq > 0 {
        // A graph walk costs tens of microseconds a query: batches of a few hundred queries,
        // each split between the threads, cost more in their parallel steps' joins and
        // wake-ups than in work. So each thread takes groups of queries whole (their tables,
        // walks and rescoring, one after the other; the groups' own parallel steps run on the
        // thread that took the group), and the only wait is the end. WordNet, ef 20, rescored,
        // 2000 queries on 2 threads, in process: 47,000-48,000 QPS in split batches of 256,
        // 49,000-50,000 in groups of 16 (the tables' kernel then reads the decoder once per 16
        // queries), 52,000-55,000 in groups of 128-1000. At least 4 groups a thread, so that
        // the last ones even out.
        use rayon::prelude::*;
        let group = nq
            .div_ceil(4 * rayon::current_num_threads())
            .clamp(GRAPH_GROUP.0, GRAPH_GROUP.1)
            .min(batch.unwrap_or(nq))
            .max(1);
        (0..nq.div_ceil(group))
            .into_par_iter()
            .map(|g| run(g * group, ((g + 1) * group).min(nq)))
            .collect::<Result<Vec<_>>>()?
    } else {
        let batch = batch.unwrap_or(nq).max(1);
        // One batch when there are no queries, so the stats are the searcher's.
        let mut parts = vec![run(0, batch.min(nq))?];
        let mut start = batch.min(nq);
        while start < nq {
            let end = (start + batch).min(nq);
            parts.push(run(start, end)?);
            start = end;
        }
        parts
    };
    let mut parts = parts.into_iter();
    let (mut hits, mut stats, mut steps) = parts.next().expect("one batch at least");
    hits.reserve(nq - hits.len());
    for (part, part_stats, part_steps) in parts {
        hits.extend(part);
        stats.add_batch(part_stats);
        steps.add(part_steps);
    }
    Ok(Found {
        hits,
        stats,
        seconds: started.elapsed().as_secs_f64(),
        encode_seconds,
        steps,
    })
}

/// Checks the request's own arguments before anything is read: k and rescore at least 1, the
/// model (when its file is known) the index's own, and an ef only a graph search reads.
fn check_request(index: &Snapshot, model: Option<ModelView<'_>>, request: &Request) -> Result<()> {
    if request.k == 0 {
        return Err(Error::InvalidArgument(
            "k must be at least 1 (neighbours per query)".into(),
        ));
    }
    if request.rescore == Some(0) {
        return Err(Error::InvalidArgument(
            "rescore must be at least 1 (candidates fetched per result, then rescored)".into(),
        ));
    }
    if let (Some(file), Some(info)) = (model.and_then(|m| m.source), index.model_info())
        && file != info
    {
        return Err(Error::InvalidArgument(format!(
            "{}: the model given is not this index's model (its file's length and CRC-32 are \
                 not the ones the manifest records): search with the model \
                 Snapshot::query_model reads from this snapshot",
            index.dir().display()
        )));
    }
    if !matches!(request.mode, Mode::Hnsw(_)) {
        // An ef the exact modes would ignore is refused first; a graph search's ef is checked
        // later, once the index is known to have a graph for this score.
        request.check_ef()?;
    }
    Ok(())
}

/// The float queries in standard layout (`None` for packed codes), checked against the model's
/// width and for rows the score cannot rank by; refused for a score that needs floats.
fn float_queries<'q>(
    model: Option<ModelView<'_>>,
    queries: &'q Queries<'_>,
    request: &Request,
) -> Result<Option<CowArray<'q, f32, Ix2>>> {
    let score_name = request.score;
    let floats = match queries {
        Queries::Floats(q) => {
            // Rows of the wrong width are said as such first: a row of no columns is no "zero
            // vector" to drop.
            if let Some(m) = model {
                m.weights.check_dim(q.ncols())?;
            }
            // A zero query has no direction to score by: every ADC or soft score would be 0
            // (the hits the lowest ids), its cosine undefined. Its code (the model's biases)
            // is still a code to search by Hamming distance.
            let tables = matches!(score_name, ScoreName::Adc | ScoreName::Soft);
            check_rows("queries", *q, tables || request.rescore.is_some())?;
            Some(q.as_standard_layout())
        }
        Queries::Packed { .. } => None,
    };
    if score_name.needs_floats() && floats.is_none() {
        return Err(Error::InvalidArgument(format!(
            "score {} needs float queries (it compares the float query with the codes)",
            score_name.name()
        )));
    }
    Ok(floats)
}

/// The packed query codes, encoded with the model from `floats` (all-zero ones when
/// `skip_codes`), or checked and packed from the bytes given; with the seconds the encoding
/// took.
fn query_codes(
    index: &Snapshot,
    model: Option<ModelView<'_>>,
    floats: Option<&CowArray<'_, f32, Ix2>>,
    queries: Queries<'_>,
    skip_codes: bool,
) -> Result<(Vec<u64>, f64)> {
    let dir = index.dir().display();
    let bits = index.bits();
    let mut encode_seconds = 0.0;
    let codes = match (floats, queries) {
        (Some(q), _) => {
            let m = model.ok_or_else(|| no_model(index, &dir))?;
            if skip_codes {
                // Table scores rank without the codes: all-zero ones stand in for them, and
                // the hits skip their distances (search_batched's SearchParams::skip_distances).
                check_model_fits(m, q.view(), bits)?;
                vec![0; q.nrows() * pack::words_per_code(bits)]
            } else {
                let started = Instant::now();
                let codes = encode_queries(m, q.view(), bits)?;
                encode_seconds = started.elapsed().as_secs_f64();
                codes
            }
        }
        (None, Queries::Packed { bytes, rows, cols }) => {
            let want = pack::bytes_per_code(bits);
            if cols != want {
                return Err(Error::DimMismatch {
                    what: format!("bytes per query code (the index holds {bits}-bit codes)"),
                    expected: want,
                    got: cols,
                });
            }
            pack::pack_le_bytes(bytes, rows, cols, bits)?
        }
        (None, Queries::Floats(_)) => unreachable!("float queries are kept above"),
    };
    Ok((codes, encode_seconds))
}

/// Checks that a rescoring request has float queries (`has_floats`) and an index with
/// vectors to rescore them with.
fn check_rescore(index: &Snapshot, request: &Request, has_floats: bool) -> Result<()> {
    let dir = index.dir().display();
    if request.rescore.is_some() {
        if !has_floats {
            return Err(Error::InvalidArgument(
                "rescoring needs float queries (codes alone cannot be rescored)".into(),
            ));
        }
        if !index.has_vectors() {
            return Err(Error::InvalidArgument(format!(
                "{dir}: the index stores no vectors to rescore with; rebuild it with vectors"
            )));
        }
    }
    Ok(())
}

/// Checks that `index` has what `request`'s mode and score read (a graph for that score,
/// posting lists, norms) and that its range bound suits its score.
fn check_index_serves(index: &Snapshot, request: &Request) -> Result<()> {
    let dir = index.dir().display();
    let score_name = request.score;
    // The exact modes a refused graph search can be pointed to: those the index has.
    let exact_modes = match index.has_inverted() {
        true => "mode flat or inverted",
        false => "mode flat",
    };
    if matches!(request.mode, Mode::Hnsw(_)) && index.graph_metric().is_none() {
        // Said before which score a graph answers: there is none.
        return Err(Error::InvalidArgument(format!(
            "{dir}: the index has no HNSW graph for mode hnsw; rebuild it with one (bsa build \
             --hnsw; hnsw=True from Python), or use {exact_modes}"
        )));
    }
    if matches!(request.mode, Mode::Hnsw(_)) {
        // A graph answers the score it was built for.
        let cosine = index.graph_metric() == Some(crate::manifest::GraphMetric::Cosine);
        let table = matches!(score_name, ScoreName::Adc | ScoreName::Soft);
        if cosine && !table {
            // What bsa's build recorded in `extra` (`graph_on`); a cosine graph without it
            // is on the decoded codes (bsa::graph_on::GraphOn::of_index).
            let on = match index.extra().get("graph_on").and_then(|v| v.as_str()) {
                Some("data") => "the data",
                _ => "the decoded codes",
            };
            return Err(Error::InvalidArgument(format!(
                "mode hnsw: this index's graph was built on {on} (float vectors) and ranks by \
                 score adc or soft; use {exact_modes} for score {}",
                score_name.name()
            )));
        }
        if !cosine && score_name != ScoreName::Hamming {
            return Err(Error::InvalidArgument(format!(
                "mode hnsw: this index's graph ranks by Hamming distance only; use {exact_modes} \
                 for score {}, or build the graph on decoded vectors",
                score_name.name()
            )));
        }
    }
    if matches!(request.mode, Mode::Inverted(_)) && !index.has_inverted() {
        return Err(Error::InvalidArgument(format!(
            "{dir}: the index has no posting lists for mode inverted; rebuild it with inverted \
             lists (bsa build --inverted; inverted=True from Python)"
        )));
    }
    if request.max_distance.is_some() && score_name != ScoreName::Hamming {
        return Err(Error::InvalidArgument(
            "a maximum distance applies to score hamming only (give a minimum score)".into(),
        ));
    }
    if request.min_score.is_some() && score_name == ScoreName::Hamming {
        return Err(Error::InvalidArgument(
            "a minimum score applies to scores other than hamming (give a maximum distance)".into(),
        ));
    }
    if score_name == ScoreName::Adc && !index.has_norms() {
        return Err(Error::InvalidArgument(format!(
            "{dir}: score adc needs the norms of the decoded codes; rebuild the index with a model"
        )));
    }
    Ok(())
}

/// The per-query tables and offsets of a table score (empty for the others), the same bits on
/// every CPU and thread count:
///
/// * `adc`: [`Weights::adc_tables`](crate::model::Weights::adc_tables) per unit query
///   ([`per_unit_query`]), or, with `int_tables` (for candidates then re-ranked by exact
///   cosine: [`Request::picks_with_int_tables`]), the integer tables of
///   [`Weights::adc_candidate_unit_tables`](crate::model::Weights::adc_candidate_unit_tables), which
///   pick nearly the same candidates (99.2% of the top 40 on WordNet) at a third to half the
///   cost;
/// * `soft`: [`Weights::soft_tables`](crate::model::Weights::soft_tables);
/// * `overlap`: [`overlap_tables`] of the query codes (`bits` per code).
///
/// `model` and `floats` are needed by `adc` and `soft` (empty tables without them).
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// use bsa_index::query::{tables, ScoreName};
/// let codes = [0b0101u64]; // one 4-bit query code
/// let (t, offsets) = tables(ScoreName::Overlap, None, None, &codes, 4, false)?;
/// assert_eq!((t, offsets), (vec![1.0, 0.0, 1.0, 0.0], vec![0.0]));
/// // Hamming ranks by the codes themselves: no tables.
/// assert_eq!(tables(ScoreName::Hamming, None, None, &codes, 4, false)?, (vec![], vec![]));
/// # Ok(()) }
/// ```
pub fn tables(
    score: ScoreName,
    model: Option<ModelView<'_>>,
    floats: Option<ArrayView2<f32>>,
    codes: &[u64],
    bits: usize,
    int_tables: bool,
) -> Result<(Vec<f32>, Vec<f32>)> {
    Ok(match (score, model, floats) {
        (ScoreName::Adc, Some(m), Some(q)) if int_tables => {
            m.weights.adc_candidate_unit_tables(q)?
        }
        (ScoreName::Adc, Some(m), Some(q)) => {
            // Each query times the power of two that brings its largest magnitude into [1, 2)
            // first: an exact factor, which the division by the query's length cancels bit for
            // bit, while a tiny query's products no longer fall below f32's normal range in
            // the table product (a WordNet query times 2^-130 lost 1.6% of its flat ADC ids,
            // its scores up to 2.6e-4 off) nor a huge one's overflow.
            let q = scaled_rows(q);
            per_unit_query(m.weights.adc_tables(q.view())?, q.view())
        }
        (ScoreName::Soft, Some(m), Some(q)) => m.weights.soft_tables(q)?,
        (ScoreName::Overlap, _, _) => overlap_tables(codes, bits),
        _ => (Vec::new(), Vec::new()),
    })
}

/// `q` with each row times the power of two that brings its largest magnitude into `[1, 2)`
/// ([`crate::vectors`]' query scaling; rows of zeros or non-finite values as they are).
fn scaled_rows(q: ArrayView2<f32>) -> ndarray::Array2<f32> {
    let mut out = q.as_standard_layout().into_owned();
    for mut row in out.rows_mut() {
        crate::vectors::scale(row.as_slice_mut().expect("rows of a standard-layout array"));
    }
    out
}

/// Per-query 0/1 tables of the overlap score: 1.0 at each set bit of the query code, offsets 0
/// (the sparse inner product Milvus computes for `--milvus --score overlap`).
///
/// ```
/// let (t, offsets) = bsa_index::query::overlap_tables(&[0b011, 0b100], 3);
/// assert_eq!(t, [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]); // one row of 3 per query
/// assert_eq!(offsets, [0.0, 0.0]);
/// ```
pub fn overlap_tables(codes: &[u64], bits: usize) -> (Vec<f32>, Vec<f32>) {
    let wpc = pack::words_per_code(bits);
    if wpc == 0 {
        return (Vec::new(), Vec::new());
    }
    let nq = codes.len() / wpc.max(1);
    let mut t = vec![0.0f32; nq * bits];
    for (i, code) in codes.chunks_exact(wpc).enumerate() {
        for j in (0..bits).filter(|&j| pack::get_bit(code, j)) {
            t[i * bits + j] = 1.0;
        }
    }
    (t, vec![0.0; nq])
}

#[cfg(test)]
mod tests {
    /// The fast path of `check_rows` decides as the exact checks do: rows at the edges of
    /// `f32` (tiny, huge, subnormal, zero, NaN, infinite values) are accepted or refused with
    /// or without it.
    #[test]
    fn check_rows_decides_as_the_exact_checks() {
        use super::{nonfinite_detail, norm_detail, plainly_fine};
        let rows: Vec<Vec<f32>> = vec![
            vec![0.5; 384],
            vec![1e20; 384],
            vec![1e-20; 384],
            vec![1e-40; 384],
            vec![3e38; 2],
            vec![0.0; 384],
            vec![0.0, 1e-45, 0.0],
            vec![1.0, f32::NAN],
            vec![1.0, f32::INFINITY],
            vec![f32::NEG_INFINITY],
            vec![-1e-15, 2e-16, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1e-16],
        ];
        for r in &rows {
            let x = ndarray::ArrayView2::from_shape((1, r.len()), r).unwrap();
            for nonzero in [false, true] {
                let exact = nonfinite_detail(r).is_none() && (!nonzero || norm_detail(r).is_none());
                assert_eq!(super::check_rows("x", x, nonzero).is_ok(), exact, "{r:?}");
                assert!(!plainly_fine(r) || exact, "{r:?}");
            }
        }
    }

    /// ADC tables per unit query do not depend on the query's scale: a query times 2^-60 or
    /// 2^100 gives the bits of the query itself, and one times 2^-135 (its elements subnormal,
    /// so their products fell below f32's range in the table product) those of its elements
    /// scaled back up, exactly.
    #[test]
    fn adc_tables_do_not_depend_on_the_query_scale() {
        use super::{ScoreName, tables};
        use crate::model::{ModelView, Rule, Weights};
        let (dim, bits) = (24, 40);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2001) as f32 / 1000.0 - 1.0
        };
        let we = ndarray::Array2::from_shape_fn((bits, dim), |_| next());
        let wd_t = ndarray::Array2::from_shape_fn((bits, dim), |_| next());
        let be = ndarray::Array1::zeros(bits);
        let bd = ndarray::Array1::from_shape_fn(dim, |_| next());
        let weights = Weights {
            we: we.view(),
            be: be.view(),
            wd_t: wd_t.view(),
            bd: bd.view(),
            derived: None,
        };
        let m = ModelView {
            weights,
            rule: Rule::Positive,
            source: None,
        };
        let q = ndarray::Array2::from_shape_fn((3, dim), |(i, _)| next() * 0.3f32.powi(i as i32));
        let run = |q: &ndarray::Array2<f32>| {
            tables(ScoreName::Adc, Some(m), Some(q.view()), &[], bits, false).unwrap()
        };
        let times = |q: &ndarray::Array2<f32>, e: i32| {
            let f = crate::score::pow2(e);
            q.mapv(|v| (f64::from(v) * f) as f32)
        };
        let want = run(&q);
        for e in [-60, 100] {
            assert_eq!(run(&times(&q, e)), want, "2^{e}");
        }
        let tiny = times(&q, -135);
        assert!(tiny.iter().all(|v| !v.is_normal()), "subnormal elements");
        assert_eq!(run(&tiny), run(&times(&tiny, 135)), "2^-135");
    }

    /// A search without a stop flag runs in one batch unless its tables and candidate lists
    /// would pass 256 MB; its batches are then whole groups of 64 queries a thread, at least
    /// 256 queries.
    #[test]
    fn searches_without_a_flag_are_split_only_past_their_memory() {
        use super::memory_batch;
        // 10,000 ADC queries of 4096-bit codes: 160 MB of tables, one batch.
        assert_eq!(memory_batch(10_000, 4096, true, 10, 2), None);
        // 100,000: batches of 15,872 (16.4 KB a query, whole groups of 128 under 256 MB).
        assert_eq!(memory_batch(100_000, 4096, true, 10, 2), Some(15_872));
        // Hamming has no tables: its candidates alone decide (400 bytes a query here).
        assert_eq!(memory_batch(100_000, 4096, false, 10, 2), None);
        assert_eq!(memory_batch(1_000_000, 4096, false, 10, 2), Some(670_976));
        // Deep candidate lists: never below 256 queries a batch.
        assert_eq!(memory_batch(10_000, 64, false, 100_000, 2), Some(256));
        assert_eq!(memory_batch(10_000, 64, false, 100_000, 16), Some(1024));
    }

    /// A stoppable search checks its flag about every 2^28 query-code pairs of a Hamming scan
    /// of codes up to 384 bits (fewer for wider codes; 2^25 of other scores, fewer for a deep
    /// k), never more often than every 256 queries, in whole groups of 64 per thread.
    #[test]
    fn stop_batches_follow_the_pairs_scanned() {
        use super::stop_batch;
        assert_eq!(stop_batch(100_000, 6, 2, true, 10), 2560);
        assert_eq!(stop_batch(100_000, 1, 2, true, 10), 2560);
        // 4096-bit codes: 64 words, 11 times the pairs' cost.
        assert_eq!(stop_batch(100_000, 64, 2, true, 10), 256);
        assert_eq!(stop_batch(10_000, 64, 2, true, 10), 2432);
        assert_eq!(stop_batch(100_000, 6, 2, false, 10), 256);
        assert_eq!(stop_batch(10_000, 6, 2, false, 1000), 384);
        assert_eq!(stop_batch(10_000_000, 6, 2, true, 10), 256);
        assert_eq!(stop_batch(10_000_000, 6, 3, true, 10), 384);
        assert_eq!(stop_batch(10_000_000, 6, 8, true, 10), 512);
        assert_eq!(stop_batch(0, 6, 1, true, usize::MAX), (1 << 28) / 8192);
    }
}
