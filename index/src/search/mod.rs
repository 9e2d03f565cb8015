//! Searchers: one type per search mode, over borrowed views of the data, never the `Index`.
//!
//! A [`Searcher`] answers a batch of packed query codes with the `k` best rows per query under a
//! [`Score`](crate::Score). Each mode is one type with its own parameters:
//!
//! | mode | searcher | reads | results |
//! |---|---|---|---|
//! | `flat` | [`FlatSearcher`] | the codes ([`CodesView`]), `sparse.bin` for table scores | exact |
//! | `inverted` | [`InvertedSearcher`] | posting lists ([`InvertedView`](crate::InvertedView)), their bitmaps | exact, identical to flat |
//! | `hnsw` | [`GraphSearcher`] | the graph ([`GraphView`](crate::graph::GraphView)) | approximate, by the score the graph was built for (Hamming on the codes, a table score on float vectors) |
//!
//! This module holds what every mode shares: the checks of queries and scores, and the one
//! conversion of the modes' sorted `(key, row)` lists into [`Hits`].
//! [`Mode`](crate::Mode) lists the modes and opens the right searcher on an [`Index`](crate::Index).
//!
//! ```
//! use bsa_index::search::{CodesView, FlatParams, FlatSearcher, Searcher};
//! use bsa_index::{Score, SearchParams};
//!
//! # fn main() -> bsa_index::Result<()> {
//! let codes = [0b0111u64, 0b0110, 0b1111, 0b0011]; // four 4-bit codes, one word each
//! let view = CodesView::new(&codes, 4)?;
//! let searcher = FlatSearcher::new(view, FlatParams::default());
//! let (hits, _stats) = searcher.search(&[0b0111], 3, &Score::Hamming, &SearchParams::default())?;
//! assert_eq!(hits[0].rows, vec![0, 1, 2]); // rows 1, 2 and 3 tie at distance 1: smaller rows first
//! assert_eq!(hits[0].distances, vec![0, 1, 1]);
//! # Ok(()) }
//! ```

pub(crate) mod blocked;
pub mod flat;
pub mod graph;
pub mod inverted;
pub mod rescore;

mod searcher;

pub(crate) use flat::SharedTables;
pub use flat::{FlatParams, FlatSearcher};
pub use graph::{GraphParams, GraphSearcher};
pub use inverted::{InvertedParams, InvertedSearcher, InvertedStats};
pub use searcher::{CodesView, Cutoffs, Hit, Hits, SearchParams, SearchStats, Searcher, Split};
pub(crate) use searcher::{Layouts, check_allowed, check_queries, search_within_by};
