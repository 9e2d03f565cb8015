//! The list of search modes: the one place that maps a mode to its [`Searcher`].
//!
//! A new mode is a new file under `search/` with its searcher and parameters, a variant here,
//! and the command line's value for it; nothing else changes.

use crate::error::Result;
use crate::index::Index;
use crate::search::{FlatParams, GraphParams, InvertedParams, Searcher};

/// A search mode with its own parameters.
///
/// ```
/// use bsa_index::{pack, Index, IndexBuilder, Mode, Score, SearchParams};
///
/// # fn main() -> bsa_index::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let codes = pack::pack_le_bytes(&[0b0111, 0b0110, 0b1111], 3, 1, 4)?;
/// IndexBuilder::new(4, &codes).build(dir.path().join("idx"))?;
/// let index = Index::open(dir.path().join("idx"))?;
/// let searcher = index.searcher(&Mode::parse("flat")?)?;
/// let (hits, stats) = searcher.search(&[0b0111], 2, &Score::Hamming, &SearchParams::default())?;
/// assert_eq!(hits[0].rows, vec![0, 1]);
/// assert!(!stats.kernel.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Exact scan of every code ([`FlatSearcher`](crate::search::FlatSearcher)).
    Flat(FlatParams),
    /// Exact search over posting lists ([`InvertedSearcher`](crate::search::InvertedSearcher)).
    Inverted(InvertedParams),
    /// Approximate search over the HNSW graph ([`GraphSearcher`](crate::search::GraphSearcher)).
    Hnsw(GraphParams),
}

impl Mode {
    /// Every mode's name, as `bsa search --mode` spells it.
    ///
    /// ```
    /// use bsa_index::Mode;
    /// for name in Mode::NAMES {
    ///     assert_eq!(Mode::parse(name)?.name(), name);
    /// }
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub const NAMES: [&'static str; 3] = ["flat", "inverted", "hnsw"];

    /// The mode called `name` (one of [`NAMES`](Self::NAMES)) with default parameters.
    ///
    /// ```
    /// use bsa_index::{search::FlatParams, Mode};
    /// assert_eq!(Mode::parse("flat")?, Mode::Flat(FlatParams::default()));
    /// let e = Mode::parse("ivf").unwrap_err().to_string();
    /// assert!(e.contains("flat, inverted, hnsw")); // says what it takes
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn parse(name: &str) -> Result<Mode> {
        match name {
            "flat" => Ok(Mode::Flat(FlatParams::default())),
            "inverted" => Ok(Mode::Inverted(InvertedParams::default())),
            "hnsw" => Ok(Mode::Hnsw(GraphParams::default())),
            _ => Err(crate::Error::InvalidArgument(format!(
                "unknown search mode {name:?}; expected one of {}",
                Self::NAMES.join(", ")
            ))),
        }
    }

    /// The same mode with the candidate list size `ef` of the graph modes (`None`: the graph's
    /// default); the exact modes have no `ef` and are returned unchanged.
    ///
    /// ```
    /// use bsa_index::Mode;
    /// let hnsw = Mode::parse("hnsw")?.with_ef_search(Some(200));
    /// assert_eq!(hnsw.ef_search(), Some(200));
    /// let flat = Mode::parse("flat")?;
    /// assert_eq!(flat.with_ef_search(Some(200)), flat); // no ef: unchanged
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn with_ef_search(self, ef: Option<usize>) -> Mode {
        match self {
            Mode::Hnsw(p) => Mode::Hnsw(p.with_ef_search(ef)),
            other => other,
        }
    }

    /// The candidate list size set on a graph mode (`None` for the exact modes, or when the
    /// graph's default applies).
    ///
    /// ```
    /// use bsa_index::Mode;
    /// assert_eq!(Mode::parse("hnsw")?.ef_search(), None); // the graph's default
    /// assert_eq!(Mode::parse("hnsw")?.with_ef_search(Some(32)).ef_search(), Some(32));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn ef_search(&self) -> Option<usize> {
        match self {
            Mode::Hnsw(p) => p.ef_search,
            _ => None,
        }
    }

    /// The mode's name.
    ///
    /// ```
    /// let mode = bsa_index::Mode::parse("inverted")?;
    /// assert_eq!(mode.name(), "inverted");
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Flat(_) => "flat",
            Mode::Inverted(_) => "inverted",
            Mode::Hnsw(_) => "hnsw",
        }
    }
}

impl Index {
    /// The searcher of `mode` over this index; fails if the index lacks what the mode reads
    /// (posting lists, a graph), saying how to rebuild it.
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder, Mode, Score, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(4, &[0b0111, 0b0110, 0b1111]).build(&path)?;
    /// let index = Index::open(&path)?;
    /// let flat = index.searcher(&Mode::parse("flat")?)?;
    /// let (hits, _) = flat.search(&[0b0110], 1, &Score::Hamming, &SearchParams::default())?;
    /// assert_eq!(hits[0].rows, vec![1]);
    /// // Built without posting lists or a graph: those modes are refused, with the remedy.
    /// let e = index.searcher(&Mode::parse("inverted")?).err().unwrap();
    /// assert!(e.to_string().contains("--inverted"));
    /// assert!(index.searcher(&Mode::parse("hnsw")?).is_err());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn searcher(&self, mode: &Mode) -> Result<Box<dyn Searcher + '_>> {
        Ok(match *mode {
            Mode::Flat(p) => Box::new(self.flat_searcher(p)),
            Mode::Inverted(p) => Box::new(self.inverted_searcher(p)?),
            Mode::Hnsw(p) => Box::new(self.graph_searcher(p)?),
        })
    }
}
