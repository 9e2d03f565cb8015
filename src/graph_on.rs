//! What an index's HNSW graph is built on: a small module of its own, below both
//! [`crate::pipeline`] (which builds graphs) and [`crate::query`] (whose errors name them).

/// What an HNSW graph is built on (`bsa build --hnsw-on`; recorded in the manifest's `extra`
/// as `graph_on`, so that `bsa add` and `bsa compact` build the same graphs for new segments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphOn {
    /// The codes as the model decodes them, nearest by cosine: the graph `adc` searches.
    Decoded,
    /// The float data itself, nearest by cosine: also a graph for `adc`.
    Data,
    /// The codes, nearest by Hamming distance: the graph `hamming` searches.
    Codes,
}

impl GraphOn {
    /// The name `--hnsw-on` takes.
    pub fn name(self) -> &'static str {
        match self {
            GraphOn::Decoded => "decoded",
            GraphOn::Data => "data",
            GraphOn::Codes => "codes",
        }
    }

    /// What an index's graph was built on, from the `extra` its build recorded (`None` when it
    /// has no graph). Indexes built before `graph_on` was recorded: the decoded codes when the
    /// graph is on float vectors (the default then), the codes otherwise.
    pub fn of_index(
        extra: &serde_json::Value,
        metric: Option<bsa_index::manifest::GraphMetric>,
    ) -> Option<GraphOn> {
        let metric = metric?;
        Some(match extra.get("graph_on").and_then(|v| v.as_str()) {
            Some("data") => GraphOn::Data,
            Some("codes") => GraphOn::Codes,
            Some("decoded") => GraphOn::Decoded,
            _ if metric == bsa_index::manifest::GraphMetric::Cosine => GraphOn::Decoded,
            _ => GraphOn::Codes,
        })
    }
}
