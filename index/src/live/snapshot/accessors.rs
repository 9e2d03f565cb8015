//! What an open [`Snapshot`] holds (its generation, files, segments, row counts and template)
//! and the lookups from a global row or an id to a segment's row.

use std::path::Path;

use crate::live::meta::{GraphSource, Template};
use crate::manifest::GraphMetric;

use super::open::Snapshot;
use super::segment::SegmentReader;

impl Snapshot {
    /// The index directory.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let snap = bsa_index::live::Snapshot::open(&path)?;
    /// assert_eq!(snap.dir(), path.as_path());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every file of this snapshot's generation but the root `manifest.json`, relative to
    /// [`dir`](Self::dir) (`/`-separated: `seg-000001/codes.bin`): with
    /// [`manifest_bytes`](Self::manifest_bytes), what a copy of this generation is made of,
    /// whatever a writer has committed since.
    ///
    /// ```
    /// use bsa_index::{live::Snapshot, pack, IndexBuilder};
    /// # fn main() -> bsa_index::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let codes = pack::pack_le_bytes(&[0b0001, 0b0011], 2, 1, 4)?;
    /// IndexBuilder::new(4, &codes).build(dir.path().join("idx"))?;
    /// let snap = Snapshot::open(dir.path().join("idx"))?;
    /// assert!(snap.files().iter().any(|f| f == "codes.bin"));
    /// assert!(snap.manifest_bytes().starts_with(b"{"));
    /// # Ok(()) }
    /// ```
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// The root `manifest.json` as this snapshot read it (see [`files`](Self::files)).
    ///
    /// ```
    /// # use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
    /// # let mut w = Writer::open(&path)?;
    /// # w.add(&NewRows::codes(&[0b1111]).ids(&[7]), false)?; // a second segment
    /// # w.delete(&[1])?;
    /// # let snap = Snapshot::open(&path)?;
    /// // `snap`: ids 0, 1, 2 (1 deleted) in one segment, id 7 in a second.
    /// let read = snap.manifest_bytes().to_vec();
    /// w.delete(&[0])?;
    /// assert_eq!(snap.manifest_bytes(), &read[..]); // as read, whatever was committed since
    /// assert_ne!(Snapshot::open(&path)?.manifest_bytes(), &read[..]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The manifest generation this snapshot read (0 for a single-segment index). Commits
    /// count up, but a rebuild in place (`bsa build --force`) starts again at 0: two snapshots
    /// of one number may be of two indexes. [`is_current`](Self::is_current) tells whether a
    /// snapshot is the directory's current one.
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// assert_eq!(Snapshot::open(&path)?.generation(), 0);
    /// let mut w = Writer::open(&path)?;
    /// w.add(&NewRows::codes(&[3]), false)?;
    /// let after_add = Snapshot::open(&path)?.generation();
    /// w.delete(&[0])?;
    /// assert!(Snapshot::open(&path)?.generation() > after_add); // one more commit
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the directory is in the segmented format (v2).
    ///
    /// ```
    /// use bsa_index::live::{Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// assert!(!Snapshot::open(&path)?.is_segmented());
    /// Writer::open(&path)?.delete(&[1])?; // a writer's first commit converts the directory
    /// assert!(Snapshot::open(&path)?.is_segmented());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn is_segmented(&self) -> bool {
        self.segmented
    }

    /// The segments, in manifest order.
    ///
    /// ```
    /// # use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
    /// # let mut w = Writer::open(&path)?;
    /// # w.add(&NewRows::codes(&[0b1111]).ids(&[7]), false)?; // a second segment
    /// # w.delete(&[1])?;
    /// # let snap = Snapshot::open(&path)?;
    /// // `snap`: ids 0, 1, 2 (1 deleted) in one segment, id 7 in a second.
    /// let sizes: Vec<(usize, u64)> = snap.segments().iter().map(|s| (s.rows(), s.base())).collect();
    /// assert_eq!(sizes, vec![(3, 0), (1, 3)]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn segments(&self) -> &[SegmentReader] {
        &self.segments
    }

    /// Bits per code.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(100, &[1, 0, 2, 0]).build(&path)?; // two 100-bit codes
    /// let snap = bsa_index::live::Snapshot::open(&path)?;
    /// assert_eq!((snap.bits(), snap.words_per_code()), (100, 2));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// `u64` words per code.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(130, &[1, 0, 0]).build(&path)?;
    /// let snap = bsa_index::live::Snapshot::open(&path)?;
    /// assert_eq!(snap.words_per_code(), 3); // queries are packed 3 words each
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn words_per_code(&self) -> usize {
        self.bits.div_ceil(64)
    }

    /// Rows that searches can return (deleted rows excluded).
    ///
    /// ```
    /// # use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
    /// # let mut w = Writer::open(&path)?;
    /// # w.add(&NewRows::codes(&[0b1111]).ids(&[7]), false)?; // a second segment
    /// # w.delete(&[1])?;
    /// # let snap = Snapshot::open(&path)?;
    /// // `snap`: ids 0, 1, 2 (1 deleted) in one segment, id 7 in a second.
    /// assert_eq!((snap.len(), snap.rows()), (3, 4)); // one of the 4 rows is deleted
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.segments.iter().map(SegmentReader::live_rows).sum()
    }

    /// Whether no row can be returned.
    ///
    /// ```
    /// use bsa_index::live::{Snapshot, Writer};
    /// use bsa_index::{Mode, Score};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).ids(&[5, 6]).build(&path)?;
    /// Writer::open(&path)?.delete(&[5, 6])?;
    /// let snap = Snapshot::open(&path)?;
    /// assert!(snap.is_empty());
    /// let (hits, _) = snap.search(&[1], 5, &Score::Hamming, &Mode::parse("flat")?, &Default::default())?;
    /// assert!(hits[0].is_empty());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows in every segment, deleted ones included (global rows are below this).
    ///
    /// ```
    /// # use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
    /// # let mut w = Writer::open(&path)?;
    /// # w.add(&NewRows::codes(&[0b1111]).ids(&[7]), false)?; // a second segment
    /// # w.delete(&[1])?;
    /// # let snap = Snapshot::open(&path)?;
    /// // `snap`: ids 0, 1, 2 (1 deleted) in one segment, id 7 in a second.
    /// assert_eq!(snap.rows(), 4);
    /// assert!(snap.locate(3).is_some() && snap.locate(4).is_none());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn rows(&self) -> usize {
        self.segments.iter().map(SegmentReader::rows).sum()
    }

    /// The application's JSON recorded at build time.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2])
    ///     .extra(serde_json::json!({"encoder": "bsa"}))
    ///     .build(&path)?;
    /// let snap = bsa_index::live::Snapshot::open(&path)?;
    /// assert_eq!(snap.extra()["encoder"], "bsa");
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn extra(&self) -> &serde_json::Value {
        &self.extra
    }

    /// What every segment holds beside codes and ids.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2])
    ///     .vectors(&[1.0, 0.0, 0.0, 1.0], 2)
    ///     .inverted(true)
    ///     .build(&path)?;
    /// let template = bsa_index::live::Snapshot::open(&path)?.template().clone();
    /// // Rows added later bring vectors, and their segment gets posting lists.
    /// assert_eq!(template.vectors.map(|v| v.dim), Some(2));
    /// assert!(template.inverted && !template.norms && template.graph.is_none());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// The id a row added without ids gets next.
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).ids(&[10, 4]).build(&path)?;
    /// assert_eq!(Snapshot::open(&path)?.next_id(), 11);
    /// let mut w = Writer::open(&path)?;
    /// w.delete(&[10])?;
    /// w.add(&NewRows::codes(&[3]), false)?; // gets id 11: deleted ids are not given again
    /// let snap = Snapshot::open(&path)?;
    /// assert!(snap.find_id(11).is_some());
    /// assert_eq!(snap.next_id(), 12);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Whether every segment stores float vectors (for rescoring).
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).vectors(&[1.0, 0.0, 0.0, 1.0], 2).build(&path)?;
    /// // Rows added to it bring their vectors.
    /// Writer::open(&path)?.add(&NewRows::codes(&[3]).vectors(&[0.6, 0.8]), false)?;
    /// let snap = Snapshot::open(&path)?;
    /// assert!(snap.has_vectors());
    /// assert_eq!(snap.vector_dim(), Some(2));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn has_vectors(&self) -> bool {
        self.template.vectors.is_some()
    }

    /// The dimension of the stored vectors.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).vectors(&[0.5; 6], 3).build(&path)?;
    /// assert_eq!(bsa_index::live::Snapshot::open(&path)?.vector_dim(), Some(3));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn vector_dim(&self) -> Option<usize> {
        self.template.vectors.map(|v| v.dim as usize)
    }

    /// Whether every segment stores per-code norms (normalised table scores such as ADC).
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).norms(&[1.0, 2.0]).build(&path)?;
    /// let snap = Snapshot::open(&path)?;
    /// assert!(snap.has_norms());
    /// // So rows added later must bring theirs.
    /// let mut w = Writer::open(&path)?;
    /// assert!(w.add(&NewRows::codes(&[3]), false).is_err());
    /// w.add(&NewRows::codes(&[3]).norms(&[1.5]), false)?;
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn has_norms(&self) -> bool {
        self.template.norms
    }

    /// Whether every segment has posting lists (`--mode inverted`).
    ///
    /// ```
    /// use bsa_index::live::{NewRows, SearchOptions, Snapshot, Writer};
    /// use bsa_index::{IndexBuilder, Mode, Score};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(8, &[0b0001, 0b0011]).inverted(true).build(&path)?;
    /// Writer::open(&path)?.add(&NewRows::codes(&[0b0111]), false)?; // gets posting lists too
    /// let snap = Snapshot::open(&path)?;
    /// assert!(snap.has_inverted());
    /// let inverted = Mode::parse("inverted")?;
    /// let (hits, _) = snap.search(&[0b0111], 2, &Score::Hamming, &inverted, &SearchOptions::default())?;
    /// assert_eq!(hits[0].ids, vec![2, 1]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn has_inverted(&self) -> bool {
        self.template.inverted
    }

    /// The metric of the segments' graphs, if they have one.
    ///
    /// ```
    /// # if cfg!(not(feature = "hnsw-rs")) { return Ok(()); } // a graph over the codes: hnsw_rs
    /// use bsa_index::{live::Snapshot, manifest::GraphMetric, HnswParams, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let codes: Vec<u64> = (0..32).map(|i| i * 0x0101).collect();
    /// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(&path)?;
    /// assert_eq!(Snapshot::open(&path)?.graph_metric(), Some(GraphMetric::Hamming));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn graph_metric(&self) -> Option<GraphMetric> {
        self.template.graph.map(|g| match g.on {
            GraphSource::Codes => GraphMetric::Hamming,
            GraphSource::Vectors { .. } => GraphMetric::Cosine,
        })
    }

    /// The segment and row of global row `row`.
    ///
    /// ```
    /// # use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
    /// # let mut w = Writer::open(&path)?;
    /// # w.add(&NewRows::codes(&[0b1111]).ids(&[7]), false)?; // a second segment
    /// # w.delete(&[1])?;
    /// # let snap = Snapshot::open(&path)?;
    /// // `snap`: ids 0, 1, 2 (1 deleted) in one segment, id 7 in a second.
    /// assert_eq!(snap.locate(1), Some((0, 1)));
    /// assert_eq!(snap.locate(3), Some((1, 0))); // row 0 of the second segment
    /// assert_eq!(snap.locate(4), None);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn locate(&self, row: u64) -> Option<(usize, usize)> {
        let s = self.segments.partition_point(|s| s.base <= row);
        let seg = self.segments.get(s.checked_sub(1)?)?;
        let r = (row - seg.base) as usize;
        (r < seg.rows()).then_some((s - 1, r))
    }

    /// The segment and row of the live row holding `id`.
    ///
    /// ```
    /// # use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
    /// # let mut w = Writer::open(&path)?;
    /// # w.add(&NewRows::codes(&[0b1111]).ids(&[7]), false)?; // a second segment
    /// # w.delete(&[1])?;
    /// # let snap = Snapshot::open(&path)?;
    /// // `snap`: ids 0, 1, 2 (1 deleted) in one segment, id 7 in a second.
    /// assert_eq!(snap.find_id(7), Some((1, 0)));
    /// assert_eq!(snap.find_id(2), Some((0, 2)));
    /// assert_eq!(snap.find_id(1), None); // deleted
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn find_id(&self, id: u64) -> Option<(usize, usize)> {
        self.segments
            .iter()
            .enumerate()
            .find_map(|(s, seg)| seg.live_row_of(id).map(|r| (s, r)))
    }
}
