//! Damaged index files give a specific error naming the file: never a panic, never wrong results.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use bsa_index::format::{HEADER_LEN, Header};
use bsa_index::{
    Error, HnswParams, Index, IndexBuilder, OpenOptions, Score, SearchParams, Vectors,
};
use common::*;
use proptest::prelude::*;

const BITS: usize = 200;
const N: usize = 300;
const DIM: usize = 8;

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    queries: Vec<u64>,
    float_queries: Vec<f32>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(11);
    let codes = random_codes(&mut r, N, BITS, 1);
    let vectors: Vec<f32> = (0..N * DIM)
        .map(|i| ((i * 37 % 101) as f32) - 50.0)
        .collect();
    let model = dir.path().join("model.safetensors");
    fs::write(
        &model,
        b"pretend safetensors bytes: the index copies them verbatim",
    )
    .unwrap();
    let path = dir.path().join("index");
    IndexBuilder::new(BITS, &codes)
        .vectors(&vectors, DIM)
        .hnsw(HnswParams {
            max_connections: 8,
            ef_construction: 50,
            ef_search: 40,
        })
        .model_file(&model)
        .inverted(true)
        .bitmaps(Some(true))
        .norms(&(0..N).map(|i| (i % 5) as f32).collect::<Vec<f32>>())
        .extra(serde_json::json!({"who": "test"}))
        .build(&path)
        .unwrap();
    let queries = random_codes(&mut r, 3, BITS, 1);
    let float_queries: Vec<f32> = (0..3 * DIM).map(|i| (i as f32).sin()).collect();
    Fixture {
        _dir: dir,
        path,
        queries,
        float_queries,
    }
}

const FILES: [&str; 11] = [
    "manifest.json",
    "codes.bin",
    "ids.bin",
    "vectors.bin",
    "graph.bin",
    "hnsw.hnsw.graph",
    "hnsw.hnsw.data",
    "model.safetensors",
    "inverted.bin",
    "norms.bin",
    "bitmaps.bin",
];

/// Everything a user can do with an index, as comparable data.
fn exercise(path: &Path, f: &Fixture) -> Result<String, Error> {
    exercise_with(path, f, OpenOptions::default())
}

/// [`exercise`] of an index opened with `options`.
fn exercise_with(path: &Path, f: &Fixture, options: OpenOptions) -> Result<String, Error> {
    let index = Index::open_with(path, options)?;
    let p = SearchParams::default();
    let flat = index.search_flat(&f.queries, 10, &p)?;
    let hnsw = index.search_hnsw(&f.queries, 10, &p)?;
    let rescored = index.rescore_hits(&f.float_queries, &flat, 5)?;
    let forced = p.with_force_inverted(true);
    let (inv, stats) = index.search_inverted(&f.queries, 10, &Score::Hamming, &forced)?;
    // The fixture's dense codes make every Hamming query read the bitmaps.
    assert_eq!(stats.bitmap_queries, 3);
    let tables: Vec<f32> = (0..3 * BITS).map(|i| (i % 7) as f32 - 3.0).collect();
    let table = Score::Table {
        tables: &tables,
        offsets: &[0.5, 0.0, -1.0],
        normalise: true,
    };
    let (adc, _) = index.search_inverted(&f.queries, 10, &table, &forced)?;
    let adc_flat = index.search_flat_scored(&f.queries, 10, &table, &p)?;
    index.verify()?;
    Ok(format!(
        "{flat:?}{hnsw:?}{rescored:?}{inv:?}{adc:?}{adc_flat:?}{:?}{:?}",
        index
            .model_path()
            .map(|p| p.file_name().map(|s| s.to_owned())),
        index.extra()
    ))
}

fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// A copy of the index `src` at `dst` whose `file` has its last payload bit flipped; `dst`.
fn damaged_copy(src: &Path, dst: &Path, file: &str) -> PathBuf {
    copy_dir(src, dst);
    let mut b = fs::read(dst.join(file)).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    fs::write(dst.join(file), &b).unwrap();
    dst.to_path_buf()
}

fn assert_names(err: &Error, file: &str) {
    let msg = err.to_string();
    assert!(
        msg.contains(file),
        "error for {file} does not name it: {msg}"
    );
}

#[test]
fn the_fixture_works() {
    let f = fixture();
    let listed: Vec<String> = fs::read_dir(&f.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for name in FILES {
        assert!(
            listed.contains(&name.to_string()),
            "{name} missing from {listed:?}"
        );
    }
    assert_eq!(listed.len(), FILES.len(), "{listed:?}");
    exercise(&f.path, &f).unwrap();
    let index = Index::open(&f.path).unwrap();
    assert_eq!(
        fs::read(index.model_path().unwrap()).unwrap(),
        b"pretend safetensors bytes: the index copies them verbatim"
    );
    assert_eq!(index.extra()["who"], "test");
}

#[test]
fn flipped_bytes_are_detected_in_every_file() {
    let f = fixture();
    let good = exercise(&f.path, &f).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    for name in FILES {
        let len = fs::metadata(f.path.join(name)).unwrap().len() as usize;
        let mut positions = vec![0, 4, 9, 20, 37, 50, 61, len / 2, len - 2, len - 1];
        positions.retain(|&p| p < len);
        for at in positions {
            let d = scratch.path().join(format!("{name}-{at}"));
            copy_dir(&f.path, &d);
            let mut b = fs::read(d.join(name)).unwrap();
            b[at] ^= 0x5a;
            fs::write(d.join(name), &b).unwrap();
            match exercise(&d, &f) {
                Err(e) => {
                    assert_names(&e, name);
                    // A payload's checksum that fails is the one the manifest records for
                    // the file, whichever check read it (a graph's first search said the
                    // header's).
                    let payload = name.ends_with(".bin") && at >= bsa_index::format::HEADER_LEN;
                    if let (Error::Checksum { expected, .. }, true) = (e, payload) {
                        let m: serde_json::Value = serde_json::from_slice(
                            &fs::read(f.path.join("manifest.json")).unwrap(),
                        )
                        .unwrap();
                        let listed = &m["manifest"]["files"][name]["crc32"];
                        assert_eq!(
                            listed.as_u64(),
                            Some(u64::from(expected)),
                            "{name} byte {at}"
                        );
                    }
                }
                Ok(res) => panic!(
                    "{name} byte {at} flipped but no error; same results: {}",
                    res == good
                ),
            }
        }
    }
}

#[test]
fn truncated_and_extended_files_are_detected() {
    let f = fixture();
    let scratch = tempfile::tempdir().unwrap();
    for name in FILES {
        let b = fs::read(f.path.join(name)).unwrap();
        for cut in [0, 3, 10, HEADER_LEN - 1, HEADER_LEN, b.len() - 1] {
            if cut >= b.len() {
                continue;
            }
            let d = scratch.path().join(format!("{name}-cut{cut}"));
            copy_dir(&f.path, &d);
            fs::write(d.join(name), &b[..cut]).unwrap();
            if name == "manifest.json" && cut == b.len() - 1 {
                // Only the final newline is gone: still the same manifest.
                assert_eq!(exercise(&d, &f).unwrap(), exercise(&f.path, &f).unwrap());
                continue;
            }
            let e = exercise(&d, &f).unwrap_err();
            assert_names(&e, name);
            if name.ends_with(".bin") {
                assert!(
                    matches!(e, Error::Truncated { .. }),
                    "{name} cut at {cut}: {e}"
                );
            }
        }
        let d = scratch.path().join(format!("{name}-ext"));
        copy_dir(&f.path, &d);
        let mut longer = b.clone();
        longer.extend_from_slice(b"tail");
        fs::write(d.join(name), &longer).unwrap();
        assert_names(&exercise(&d, &f).unwrap_err(), name);
    }
}

#[test]
fn missing_files_are_named() {
    let f = fixture();
    let scratch = tempfile::tempdir().unwrap();
    for name in FILES {
        let d = scratch.path().join(format!("{name}-gone"));
        copy_dir(&f.path, &d);
        fs::remove_file(d.join(name)).unwrap();
        let e = exercise(&d, &f).unwrap_err();
        assert_names(&e, name);
        if name != "manifest.json" {
            // The manifest that lists the file is the usual cause, so it is named too.
            let msg = e.to_string();
            assert!(msg.contains("missing, though"), "{name}: {msg}");
            assert!(msg.contains("manifest.json lists it"), "{name}: {msg}");
        }
    }
}

/// A whole file from another index (or another index's manifest) differs in length from the
/// manifest's record: that is said as such, not as a truncated copy, and both files are named.
#[test]
fn a_file_from_another_index_is_not_called_truncated() {
    let f = fixture();
    let scratch = tempfile::tempdir().unwrap();
    for rows in [N / 3, 2 * N] {
        let other = scratch.path().join(format!("other-{rows}"));
        let codes = random_codes(&mut rng(5), rows, BITS, 1);
        IndexBuilder::new(BITS, &codes).build(&other).unwrap();
        for name in ["codes.bin", "ids.bin"] {
            let d = scratch.path().join(format!("{name}-from-{rows}"));
            copy_dir(&f.path, &d);
            fs::copy(other.join(name), d.join(name)).unwrap();
            let e = exercise(&d, &f).unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{name}: {e}");
            assert_names(&e, name);
            let msg = e.to_string();
            assert!(msg.contains("whole by its own header"), "{msg}");
            assert!(msg.contains("manifest.json records"), "{msg}");
            assert!(msg.contains("come from different indexes"), "{msg}");
        }
    }
}

#[test]
fn version_and_magic_errors() {
    let f = fixture();
    let scratch = tempfile::tempdir().unwrap();
    for name in [
        "codes.bin",
        "ids.bin",
        "vectors.bin",
        "inverted.bin",
        "norms.bin",
    ] {
        let b = fs::read(f.path.join(name)).unwrap();
        // A file from a newer format, written consistently (valid header checksum).
        let kind = match name {
            "codes.bin" => bsa_index::format::FileKind::Codes,
            "ids.bin" => bsa_index::format::FileKind::Ids,
            "inverted.bin" => bsa_index::format::FileKind::Inverted,
            "norms.bin" => bsa_index::format::FileKind::Norms,
            _ => bsa_index::format::FileKind::Vectors,
        };
        let mut h = Header::decode(&b, kind, b.len() as u64, Path::new(name)).unwrap();
        h.version = 7;
        let mut newer = b.clone();
        newer[..HEADER_LEN].copy_from_slice(&h.encode());
        let d = scratch.path().join(format!("{name}-v7"));
        copy_dir(&f.path, &d);
        fs::write(d.join(name), &newer).unwrap();
        let e = Index::open(&d).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Version {
                    found: 7,
                    oldest: 1,
                    newest: 1,
                    ..
                }
            ),
            "{e}"
        );
        assert_names(&e, name);
        assert!(e.to_string().contains("upgrade bsa"), "{e}");

        h.version = 0;
        let mut old = b.clone();
        old[..HEADER_LEN].copy_from_slice(&h.encode());
        let d = scratch.path().join(format!("{name}-v0"));
        copy_dir(&f.path, &d);
        fs::write(d.join(name), &old).unwrap();
        assert!(matches!(
            Index::open(&d).unwrap_err(),
            Error::Version { found: 0, .. }
        ));
        // The version field damaged (the header not resealed): damage, not another format.
        old[8..12].copy_from_slice(&7u32.to_le_bytes());
        fs::write(d.join(name), &old).unwrap();
        let e = Index::open(&d).unwrap_err();
        assert!(matches!(e, Error::Checksum { .. }), "{e}");
        assert_names(&e, name);

        let mut magic = b.clone();
        magic[..8].copy_from_slice(b"NOTBSA!!");
        let d = scratch.path().join(format!("{name}-magic"));
        copy_dir(&f.path, &d);
        fs::write(d.join(name), &magic).unwrap();
        let e = Index::open(&d).unwrap_err();
        assert!(matches!(e, Error::NotAnIndex { .. }), "{e}");
        assert_names(&e, name);
    }
    // The manifest's own version and format name.
    let m = fs::read_to_string(f.path.join("manifest.json")).unwrap();
    let d = scratch.path().join("manifest-v3");
    copy_dir(&f.path, &d);
    fs::write(
        d.join("manifest.json"),
        m.replace("\"format_version\":1", "\"format_version\":3"),
    )
    .unwrap();
    assert!(matches!(
        Index::open(&d).unwrap_err(),
        Error::Version { found: 3, .. }
    ));
    // Version 2 is a segmented index: a single-segment open says what to open it with.
    fs::write(
        d.join("manifest.json"),
        m.replace("\"format_version\":1", "\"format_version\":2"),
    )
    .unwrap();
    let e = Index::open(&d).unwrap_err().to_string();
    assert!(
        e.contains("segmented index") && e.contains("Snapshot"),
        "{e}"
    );
    let d = scratch.path().join("manifest-other");
    copy_dir(&f.path, &d);
    fs::write(d.join("manifest.json"), b"{\"format\": \"something else\"}").unwrap();
    assert!(matches!(
        Index::open(&d).unwrap_err(),
        Error::NotAnIndex { .. }
    ));
    // Swapped files: ids where the codes should be.
    let d = scratch.path().join("swapped");
    copy_dir(&f.path, &d);
    fs::copy(d.join("ids.bin"), d.join("codes.bin")).unwrap();
    let e = Index::open(&d).unwrap_err();
    assert!(matches!(e, Error::NotAnIndex { .. }), "{e}");
}

#[test]
fn skipping_checksums_defers_payload_errors_to_verify() {
    let f = fixture();
    let scratch = tempfile::tempdir().unwrap();
    let name = "codes.bin";
    let d = damaged_copy(&f.path, &scratch.path().join("x"), name);
    assert!(matches!(
        Index::open(&d).unwrap_err(),
        Error::Checksum { .. }
    ));
    let index = Index::open_with(&d, OpenOptions::verify_checksums(false)).unwrap();
    let e = index.verify().unwrap_err();
    assert!(matches!(e, Error::Checksum { .. }), "{e}");
    assert_names(&e, name);
}

/// With the vectors' check deferred, a damaged `vectors.bin` passes the open and the searches
/// that do not read it (their answers are the undamaged index's), and the first rescoring, the
/// one reader, names it; every later one too. Other files are still checked at open.
#[test]
fn deferred_vectors_are_verified_by_the_first_rescoring() {
    use bsa_index::live::{SearchOptions, Snapshot};
    let f = fixture();
    let scratch = tempfile::tempdir().unwrap();
    let d = damaged_copy(&f.path, &scratch.path().join("x"), "vectors.bin");
    let deferred = OpenOptions::default().lazy(true);
    let p = SearchParams::default();
    let good = Index::open(&f.path).unwrap();
    let want = good.search_flat(&f.queries, 10, &p).unwrap();
    assert!(matches!(Index::open(&d), Err(Error::Checksum { .. })));
    let index = Index::open_with(&d, deferred).unwrap();
    let hits = index.search_flat(&f.queries, 10, &p).unwrap();
    assert_eq!(hits, want);
    assert_eq!(
        index.search_hnsw(&f.queries, 10, &p).unwrap(),
        good.search_hnsw(&f.queries, 10, &p).unwrap()
    );
    for _ in 0..2 {
        let e = index.rescore_hits(&f.float_queries, &hits, 5).unwrap_err();
        assert!(matches!(e, Error::Checksum { .. }), "{e}");
        assert_names(&e, "vectors.bin");
        let e = index
            .rescore(&f.float_queries[..DIM], &hits[0], 5)
            .unwrap_err();
        assert_names(&e, "vectors.bin");
        // Nor does the accessor hand out the damaged bytes.
        let e = index.vectors().unwrap_err();
        assert!(matches!(e, Error::Checksum { .. }), "{e}");
    }
    // Opened lazily, the accessor is the first reader: it checks too.
    let fresh = Index::open_with(&d, deferred).unwrap();
    assert_names(&fresh.vectors().unwrap_err(), "vectors.bin");
    assert_names(
        &fresh.rescore_hits(&f.float_queries, &hits, 5).unwrap_err(),
        "vectors.bin",
    );
    // The same through a snapshot, whose rescoring reads each segment's vectors.
    let snap = Snapshot::open_with(&d, deferred).unwrap();
    let flat = bsa_index::Mode::parse("flat").unwrap();
    let (hits, _) = snap
        .search(
            &f.queries,
            10,
            &Score::Hamming,
            &flat,
            &SearchOptions::default(),
        )
        .unwrap();
    let e = snap.rescore_batch(&f.float_queries, &hits, 5).unwrap_err();
    assert_names(&e, "vectors.bin");
    // Undamaged, a deferred open rescores and reads as a verified one.
    let index = Index::open_with(&f.path, deferred).unwrap();
    match (index.vectors().unwrap(), good.vectors().unwrap()) {
        (Some(Vectors::F32(a)), Some(Vectors::F32(b))) => assert_eq!(a, b),
        other => panic!("the fixture stores f32 vectors: {other:?}"),
    }
    assert_eq!(
        index.rescore_hits(&f.float_queries, &want, 5).unwrap(),
        good.rescore_hits(&f.float_queries, &want, 5).unwrap()
    );
    // Only the vectors wait: damaged codes are still found at open.
    let d2 = damaged_copy(&f.path, &scratch.path().join("y"), "codes.bin");
    assert_names(&Index::open_with(&d2, deferred).unwrap_err(), "codes.bin");
}

/// Lazily opened, damaged posting lists or bitmaps pass the open and the searches that do not
/// read them (same answers), and the first inverted search names the file, every one after it
/// too; a non-lazy open names it at once. Without checksums, lists whose structure is broken
/// (resealed, as a writer's bug would leave them) are named by the first inverted search,
/// where a non-lazy open named them.
#[test]
fn lazily_checked_lists_are_checked_by_the_first_inverted_search() {
    let f = fixture();
    let scratch = tempfile::tempdir().unwrap();
    let p = SearchParams::default();
    let forced = p.with_force_inverted(true);
    let good = Index::open(&f.path).unwrap();
    let want = good.search_flat(&f.queries, 10, &p).unwrap();
    let lazy = OpenOptions::default().lazy(true);
    for name in ["inverted.bin", "bitmaps.bin"] {
        let d = damaged_copy(&f.path, &scratch.path().join(name), name);
        assert_names(&Index::open(&d).unwrap_err(), name);
        let index = Index::open_with(&d, lazy).unwrap();
        assert_eq!(index.search_flat(&f.queries, 10, &p).unwrap(), want);
        for _ in 0..2 {
            let e = index
                .search_inverted(&f.queries, 10, &Score::Hamming, &forced)
                .unwrap_err();
            assert!(matches!(e, Error::Checksum { .. }), "{name}: {e}");
            assert_names(&e, name);
            assert_names(&index.inverted().unwrap_err(), name);
        }
    }
    // Broken structure under valid checksums: a reserved byte of the lists' sub-header set.
    let d = scratch.path().join("structure");
    copy_dir(&f.path, &d);
    reseal(
        &d,
        "inverted.bin",
        bsa_index::format::FileKind::Inverted,
        |payload| {
            payload[8] = 1;
        },
    );
    assert_names(&Index::open(&d).unwrap_err(), "inverted.bin");
    // A row twice in one list (it would count its overlap twice), under valid checksums.
    let repeated = scratch.path().join("repeated");
    copy_dir(&f.path, &repeated);
    let bits = good.bits();
    reseal(
        &repeated,
        "inverted.bin",
        bsa_index::format::FileKind::Inverted,
        |payload| {
            let offset = |j: usize| {
                u64::from_le_bytes(payload[64 + 8 * j..72 + 8 * j].try_into().unwrap()) as usize
            };
            let lists = (64 + 8 * (bits + 1)).next_multiple_of(64);
            let j = (0..bits).find(|&j| offset(j + 1) - offset(j) >= 2).unwrap();
            let at = lists + 4 * offset(j);
            payload.copy_within(at..at + 4, at + 4);
        },
    );
    let e = Index::open(&repeated).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_names(&e, "inverted.bin");
    let unchecked = OpenOptions::verify_checksums(false).lazy(true);
    for options in [lazy, unchecked] {
        let index = Index::open_with(&d, options).unwrap();
        assert_eq!(index.search_flat(&f.queries, 10, &p).unwrap(), want);
        let e = index
            .search_inverted(&f.queries, 10, &Score::Hamming, &forced)
            .unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert_names(&e, "inverted.bin");
    }
    // Undamaged, a lazy open searches as an eager one.
    let index = Index::open_with(&f.path, lazy).unwrap();
    assert_eq!(
        index
            .search_inverted(&f.queries, 10, &Score::Hamming, &forced)
            .unwrap(),
        good.search_inverted(&f.queries, 10, &Score::Hamming, &forced)
            .unwrap()
    );
}

/// A copy of a damaged index (Python's `Index.save`) fails its check, naming the source's
/// file: the copy's is in a temporary folder, removed by the time the error is read.
#[test]
fn a_copy_of_a_damaged_index_names_the_source_file() {
    use bsa_index::LockWait;
    use bsa_index::live::Snapshot;
    let f = fixture();
    let scratch = tempfile::tempdir().unwrap();
    let d = damaged_copy(&f.path, &scratch.path().join("x"), "codes.bin");
    let snap = Snapshot::open_with(&d, OpenOptions::verify_checksums(false)).unwrap();
    let e = snap
        .copy_to(&scratch.path().join("copy"), false, LockWait::new())
        .unwrap_err();
    assert!(
        matches!(&e, Error::Checksum { path, .. } if *path == d.join("codes.bin")),
        "{e}"
    );
    assert!(!scratch.path().join("copy").exists());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random mutations of any file: an error, or (for bytes that carry no meaning, such as JSON
    /// whitespace outside the checksummed body) exactly the original results.
    #[test]
    fn mutated_files_give_errors_never_panics(
        file in 0usize..FILES.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        random_file in any::<bool>(),
        junk in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let f = shared();
        let scratch = tempfile::tempdir().unwrap();
        let d = scratch.path().join("m");
        copy_dir(&f.fixture.path, &d);
        let name = FILES[file];
        let mut b = fs::read(d.join(name)).unwrap();
        if random_file {
            b = junk;
        } else {
            for (at, x) in &edits {
                let i = at.index(b.len());
                b[i] ^= x;
            }
            if let Some(c) = cut {
                b.truncate(c.index(b.len()));
            }
        }
        fs::write(d.join(name), &b).unwrap();
        if let Ok(res) = exercise(&d, &f.fixture) {
            prop_assert_eq!(res, f.good.clone());
        }
        // Checked at first use instead of at open: the same outcome (every search is run,
        // then verify); without checksums, errors or answers but never a panic.
        let lazy = OpenOptions::default().lazy(true);
        if let Ok(res) = exercise_with(&d, &f.fixture, lazy) {
            prop_assert_eq!(res, f.good.clone());
        }
        let _ = exercise_with(&d, &f.fixture, OpenOptions::verify_checksums(false).lazy(true));
    }
}

struct Shared {
    fixture: Fixture,
    good: String,
}

fn shared() -> &'static Shared {
    static S: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let fixture = fixture();
        let good = exercise(&fixture.path, &fixture).unwrap();
        Shared { fixture, good }
    })
}

/// A graph header rewritten with its own CRC (here a newer version) leaves the whole file's
/// CRC, which the manifest records, unchanged: a CRC over bytes that end in their own CRC is a
/// constant. The graph is opened lazily by searches, so `verify` opens and checks it too.
#[test]
fn verify_checks_the_graph_header_a_checksum_cannot_fault() {
    let f = fixture();
    let scratch = tempfile::tempdir().unwrap();
    let b = fs::read(f.path.join("graph.bin")).unwrap();
    let kind = bsa_index::format::FileKind::Graph;
    let mut h = Header::decode(&b, kind, b.len() as u64, Path::new("graph.bin")).unwrap();
    h.version = 7;
    let mut newer = b.clone();
    newer[..HEADER_LEN].copy_from_slice(&h.encode());
    assert_ne!(newer, b);
    assert_eq!(
        crc32fast::hash(&newer),
        crc32fast::hash(&b),
        "the whole-file CRC does not see a resealed header"
    );
    let d = scratch.path().join("graph-v7");
    copy_dir(&f.path, &d);
    fs::write(d.join("graph.bin"), &newer).unwrap();
    let index = Index::open(&d).expect("the graph is read at its first search");
    let e = index.verify().unwrap_err();
    assert!(matches!(e, Error::Version { found: 7, .. }), "{e}");
    assert_names(&e, "graph.bin");
}

/// Something other than a file where the index keeps one is refused by name, at once: a pipe
/// would block the open forever.
#[cfg(unix)]
#[test]
fn a_pipe_or_directory_in_place_of_a_file_is_refused() {
    let f = fixture();
    let scratch = tempfile::tempdir().unwrap();
    for name in ["manifest.json", "codes.bin", "model.safetensors"] {
        let d = scratch.path().join(format!("fifo-{name}"));
        copy_dir(&f.path, &d);
        fs::remove_file(d.join(name)).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(d.join(name))
            .status()
            .unwrap();
        assert!(made.success());
        let e = Index::open(&d).unwrap_err();
        assert_names(&e, name);
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
    let d = scratch.path().join("dir-ids");
    copy_dir(&f.path, &d);
    fs::remove_file(d.join("ids.bin")).unwrap();
    fs::create_dir(d.join("ids.bin")).unwrap();
    let e = Index::open(&d).unwrap_err();
    assert_names(&e, "ids.bin");
    assert!(e.to_string().contains("a directory"), "{e}");
}

/// The model is read when the first float query needs it, after an open that skipped the
/// checksums: a pipe in its place is refused rather than waited on, and a file far longer than
/// its record (here 64 GiB, sparse) is refused by its size, before a byte of it is read.
#[cfg(feature = "float-queries")]
#[test]
fn a_model_read_at_first_use_is_checked_before_it_is_read() {
    use bsa_index::live::Snapshot;
    let f = fixture();
    let scratch = tempfile::tempdir().unwrap();
    let no_verify = OpenOptions::verify_checksums(false);

    let d = scratch.path().join("fifo");
    copy_dir(&f.path, &d);
    let model = d.join("model.safetensors");
    fs::remove_file(&model).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&model)
        .status()
        .unwrap();
    assert!(made.success());
    let e = Snapshot::open_with(&d, no_verify)
        .unwrap()
        .query_model()
        .unwrap_err();
    assert_names(&e, "model.safetensors");
    assert!(e.to_string().contains("not a regular file"), "{e}");

    let d = scratch.path().join("huge");
    copy_dir(&f.path, &d);
    let recorded = fs::metadata(d.join("model.safetensors")).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(d.join("model.safetensors"))
        .unwrap()
        .set_len(1 << 36)
        .unwrap();
    let snap = Snapshot::open_with(&d, no_verify).unwrap();
    for e in [
        snap.query_model().unwrap_err(),
        snap.verify_model().unwrap_err(),
    ] {
        assert_names(&e, "model.safetensors");
        let want = format!("{} bytes, but", 1u64 << 36);
        assert!(e.to_string().contains(&want), "{e}");
        assert!(
            e.to_string().contains(&format!("records {recorded}")),
            "{e}"
        );
    }
}

/// Rewrites `file` of the index at `dir` with `edit` applied to its payload, resealed: payload
/// CRC, header CRC and the manifest's record of the file agree again, as a writer's bug would
/// leave them. Checksums then pass; only the payload's own rules can fault it.
fn reseal(dir: &Path, file: &str, kind: bsa_index::format::FileKind, edit: impl FnOnce(&mut [u8])) {
    let mut b = fs::read(dir.join(file)).unwrap();
    let mut h = Header::decode(&b, kind, b.len() as u64, Path::new(file)).unwrap();
    let (start, end) = (
        h.payload_offset as usize,
        (h.payload_offset + h.payload_len) as usize,
    );
    edit(&mut b[start..end]);
    h.payload_crc = crc32fast::hash(&b[start..end]);
    b[..HEADER_LEN].copy_from_slice(&h.encode());
    replace_listed_file(dir, file, &b);
}

/// Values that break the payload rules under valid checksums (a repeated id, a negative or NaN
/// norm, a non-finite vector, a padding bit set) pass the open, but `verify` names the file and
/// the row: before, it said "ok" and searches answered with them. Searches never panic on them.
#[test]
fn verify_checks_the_values_checksums_cannot() {
    use bsa_index::format::FileKind;
    let f = &shared().fixture;
    let scratch = tempfile::tempdir().unwrap();
    let set = |at: usize, bytes: &[u8]| {
        let bytes = bytes.to_vec();
        move |p: &mut [u8]| p[at..at + bytes.len()].copy_from_slice(&bytes)
    };
    type Edit = Box<dyn FnOnce(&mut [u8])>;
    let cases: Vec<(&str, FileKind, Edit, &str)> = vec![
        (
            "ids.bin",
            FileKind::Ids,
            Box::new(set(8, &0u64.to_le_bytes())),
            "id 0 is stored more than once",
        ),
        (
            "norms.bin",
            FileKind::Norms,
            Box::new(set(4 * 7, &(-1f32).to_le_bytes())),
            "the norm of row 7 is -1",
        ),
        (
            "norms.bin",
            FileKind::Norms,
            Box::new(set(0, &f32::NAN.to_le_bytes())),
            "the norm of row 0 is NaN",
        ),
        (
            "vectors.bin",
            FileKind::Vectors,
            Box::new(set(4 * (DIM * 3 + 2), &f32::INFINITY.to_le_bytes())),
            "row 3, column 2 is not finite",
        ),
        // 200 bits: word 3 of a code holds bits 192..200; bit 63 of it is padding.
        (
            "codes.bin",
            FileKind::Codes,
            Box::new(|p: &mut [u8]| p[8 * 4 * 5 + 31] |= 0x80),
            "code 5 sets bits past bit 200",
        ),
    ];
    for (i, (file, kind, edit, needle)) in cases.into_iter().enumerate() {
        let d = scratch.path().join(format!("case{i}"));
        copy_dir(&f.path, &d);
        reseal(&d, file, kind, edit);
        let index = Index::open(&d).expect("checksums pass");
        let e = index.verify().unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{file}: {e}");
        assert_names(&e, file);
        assert!(e.to_string().contains(needle), "{needle:?}: {e}");
        // Every search answers without a panic (a table score read its table at a padding bit,
        // past its end: a fuzzer's finding), and `exercise` ends in verify's error.
        assert!(exercise(&d, f).is_err(), "{file}");
    }
}

/// Posting lists, bitmaps and sparse codes that describe other codes (here those of another
/// index with the same sizes: the rows of the codes in another order), put in place with their
/// manifest entries resealed, open and pass every checksum; `verify` builds them again from the
/// codes and names the file. Before, it said "ok" and the exact inverted search and the table
/// scores answered for codes the index does not hold.
#[test]
fn verify_checks_derived_files_describe_the_codes() {
    let scratch = tempfile::tempdir().unwrap();
    let codes = random_codes(&mut rng(3), N, BITS, 2);
    let w = BITS.div_ceil(64);
    let mut swapped = codes.clone();
    // Rows 0 and 1 swapped: the same number of set bits, so the same layout and sizes.
    swapped[..2 * w].rotate_left(w);
    assert_ne!(swapped, codes);
    let build = |codes: &[u64], name: &str| {
        let path = scratch.path().join(name);
        IndexBuilder::new(BITS, codes)
            .inverted(true)
            .bitmaps(Some(true))
            .sparse(Some(true))
            .build(&path)
            .unwrap();
        path
    };
    let good = build(&codes, "good");
    let other = build(&swapped, "other");
    Index::open(&good).unwrap().verify().unwrap();
    for file in ["inverted.bin", "bitmaps.bin", "sparse.bin"] {
        let d = scratch.path().join(format!("foreign-{file}"));
        copy_dir(&good, &d);
        let b = fs::read(other.join(file)).unwrap();
        assert_ne!(b, fs::read(good.join(file)).unwrap(), "{file}");
        replace_listed_file(&d, file, &b);
        let index = Index::open(&d).expect("checksums and structure pass");
        let e = index.verify().unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{file}: {e}");
        assert_names(&e, file);
        assert!(
            e.to_string()
                .contains("does not describe the codes of codes.bin"),
            "{file}: {e}"
        );
    }
}

/// `ids.bin` flagged as holding the row numbers (a reader may skip reading it) must hold them.
#[test]
fn verify_checks_the_ids_are_rows_flag() {
    let scratch = tempfile::tempdir().unwrap();
    let codes = random_codes(&mut rng(4), 50, 64, 1);
    let path = scratch.path().join("idx");
    let ids: Vec<u64> = (0..50).map(|i| 2 * i).collect();
    IndexBuilder::new(64, &codes)
        .ids(&ids)
        .build(&path)
        .unwrap();
    let kind = bsa_index::format::FileKind::Ids;
    let mut b = fs::read(path.join("ids.bin")).unwrap();
    let mut h = Header::decode(&b, kind, b.len() as u64, Path::new("ids.bin")).unwrap();
    assert_eq!(h.flags & bsa_index::format::flags::IDS_ARE_ROWS, 0);
    h.flags |= bsa_index::format::flags::IDS_ARE_ROWS;
    b[..HEADER_LEN].copy_from_slice(&h.encode());
    replace_listed_file(&path, "ids.bin", &b);
    let e = Index::open(&path).unwrap().verify().unwrap_err();
    assert_names(&e, "ids.bin");
    assert!(
        e.to_string()
            .contains("flagged as holding the row numbers, but row 1 has id 2"),
        "{e}"
    );
}

/// A manifest behind a symbolic-link loop is said as such (the system's error, naming it), not
/// as a folder with no manifest; a folder with none is still said that way.
#[cfg(unix)]
#[test]
fn a_manifest_behind_a_link_loop_is_not_called_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    IndexBuilder::new(64, &[1, 2, 3]).build(&path).unwrap();
    let manifest = path.join("manifest.json");
    fs::remove_file(&manifest).unwrap();
    let e = bsa_index::live::Snapshot::open(&path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no manifest.json"), "{e}");
    std::os::unix::fs::symlink("manifest.json", &manifest).unwrap();
    let e = bsa_index::live::Snapshot::open(&path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("manifest.json") && !e.contains("no manifest.json"),
        "{e}"
    );
}

/// An index with only an hnsw_rs dump (as written before `graph.bin` existed) whose dump lies
/// about its vectors' size under valid checksums: hnsw_rs took the dimension of the dump's
/// header for each point's vector and read it from a buffer of the length the point's record
/// gave, past its end (a segmentation fault of the first graph search, which no `catch_unwind`
/// turns into an error: a fuzzer's finding). The data file's layout is checked first now.
#[test]
fn a_resealed_hnsw_rs_dump_with_false_sizes_is_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("idx");
    let codes = random_codes(&mut rng(6), 24, 100, 1);
    // One thread: hnsw_rs's parallel inserts race, and under load the dump's first point came
    // out without neighbours on layer 0, which the byte offsets below rely on.
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| {
            IndexBuilder::new(100, &codes)
                .hnsw(HnswParams {
                    max_connections: 6,
                    ef_construction: 20,
                    ef_search: 16,
                })
                .build(&path)
        })
        .unwrap();
    // The dump alone, as an index written before graph.bin has it.
    fs::remove_file(path.join("graph.bin")).unwrap();
    let mpath = path.join("manifest.json");
    let mut m = bsa_index::Manifest::from_bytes(&fs::read(&mpath).unwrap(), &mpath).unwrap();
    m.files.remove("graph.bin");
    m.hnsw.as_mut().unwrap().native = None;
    fs::write(&mpath, m.to_bytes().unwrap()).unwrap();
    let q = random_codes(&mut rng(7), 1, 100, 1);
    let p = SearchParams::default();
    Index::open(&path).unwrap().search_hnsw(&q, 3, &p).unwrap();
    let graph = fs::read(path.join("hnsw.hnsw.graph")).unwrap();
    let data = fs::read(path.join("hnsw.hnsw.data")).unwrap();
    // The dimension (2 words) in the graph file's description (after hnsw_rs's tag of format 4,
    // the dump mode, M, the level scale, the layers, ef and the points) and in the data file's
    // header (after its tag); then 24 records of a tag, an id, a length and the codes.
    assert_eq!(graph[..4], 0x002a_6779u32.to_ne_bytes());
    assert_eq!(graph[31..39], 2u64.to_ne_bytes());
    assert_eq!(data[4..12], 2u64.to_ne_bytes());
    assert_eq!(data.len(), 12 + 24 * (20 + 16));
    let mut wide_graph = graph.clone();
    let mut wide_data = data.clone();
    wide_graph[31..39].copy_from_slice(&(1u64 << 22).to_ne_bytes());
    wide_data[4..12].copy_from_slice(&(1u64 << 22).to_ne_bytes());
    let mut short_record = data.clone();
    short_record[12 + 36 * 5 + 12..][..8].copy_from_slice(&8u64.to_ne_bytes());
    let mut format2 = graph.clone();
    format2[..4].copy_from_slice(&0x002a_677fu32.to_ne_bytes());
    // Layer 0's number of points, after the description's two names and the number of layers:
    // hnsw_rs reserved memory for as many (an abort: "memory allocation of 8796093022208 bytes
    // failed").
    let name_len = |at: usize| u64::from_ne_bytes(graph[at..at + 8].try_into().unwrap()) as usize;
    let at = 39 + 8 + name_len(39);
    let at = at + 8 + name_len(at) + 1;
    assert_eq!(graph[at..at + 4], 0x000a_676fu32.to_ne_bytes());
    let mut many_points = graph.clone();
    many_points[at + 4..at + 12].copy_from_slice(&(1u64 << 40).to_ne_bytes());
    // Values hnsw_rs asserts on or indexes with (a panic, printed, before these checks). The
    // first point of layer 0 (after its tag: an id, its layer and its rank), then its first
    // list of a full dump (a length, then per neighbour an id, a layer, a rank, a distance);
    // the description's count of points; the entry point (the file's last 13 bytes: an id,
    // a layer, a rank); the element type's name (the second name, "u64").
    assert_eq!(graph[4], 1, "a full dump");
    let point = at + 12;
    assert_eq!(graph[point..point + 4], 0x000a_678fu32.to_ne_bytes());
    assert_eq!(graph[point + 12], 0, "on layer 0");
    assert_eq!(graph[point + 13..point + 17], 0i32.to_ne_bytes(), "rank 0");
    assert!(name_len(point + 17) > 0, "with neighbours on layer 0");
    let with = |at: usize, bytes: &[u8]| {
        let mut g = graph.clone();
        g[at..at + bytes.len()].copy_from_slice(bytes);
        g
    };
    let misplaced = with(point + 13, &5i32.to_ne_bytes());
    let far_neighbour = with(point + 17 + 8 + 8 + 1, &1000i32.to_ne_bytes());
    let fewer = with(23, &23u64.to_ne_bytes());
    let far_entry = with(graph.len() - 4, &1000i32.to_ne_bytes());
    let second_name = 39 + 8 + name_len(39);
    assert_eq!(graph[second_name + 8..second_name + 11], *b"u64");
    let u32_name = with(second_name + 8, b"u32");
    let other_id = with(point + 4, &u64::MAX.to_ne_bytes());
    // The data file's first record (after its 12-byte header: a tag, then the id) names row 23,
    // a row of the index but not the graph's first point.
    let mut other_record = data.clone();
    other_record[16..24].copy_from_slice(&23u64.to_ne_bytes());
    let cases: [(&[u8], &[u8], &str, &str); 12] = [
        (
            &misplaced,
            &data,
            "hnsw.hnsw.graph",
            "point 0 of layer 0 has tag 0xa678f and says it is point 5 of layer 0",
        ),
        (
            &far_neighbour,
            &data,
            "hnsw.hnsw.graph",
            "a neighbour is named point 1000 of layer",
        ),
        (
            &fewer,
            &data,
            "hnsw.hnsw.graph",
            "describes 23 vectors of 2 words, not 24 of 2",
        ),
        (
            &far_entry,
            &data,
            "hnsw.hnsw.graph",
            "the entry point is point 1000 of layer",
        ),
        (
            &u32_name,
            &data,
            "hnsw.hnsw.graph",
            "names \"u32\" where \"u64\" belongs",
        ),
        (
            &other_id,
            &data,
            "hnsw.hnsw.graph",
            "a point is row 18446744073709551615, not below the index's 24",
        ),
        (
            &graph,
            &other_record,
            "hnsw.hnsw.data",
            "record 0 is of point 23, where the graph has point",
        ),
        (
            &many_points,
            &data,
            "hnsw.hnsw.graph",
            "layer 0 (tag 0xa676f) brings the points to 1099511627776; the index has 24",
        ),
        (
            &wide_graph,
            &wide_data,
            "hnsw.hnsw.graph",
            "vectors of 4194304 words, not 2",
        ),
        (
            &graph,
            &wide_data,
            "hnsw.hnsw.data",
            "dimension 2 (found 0xa67f0000 and 4194304)",
        ),
        (
            &graph,
            &short_record,
            "hnsw.hnsw.data",
            "the record of point 5 does not hold 2 words",
        ),
        // hnsw_rs ended the process when it read a point of a format 2 dump.
        (
            &format2,
            &data,
            "hnsw.hnsw.graph",
            "not an hnsw_rs graph description of format 3 or 4",
        ),
    ];
    for (graph, data, file, needle) in cases {
        replace_listed_file(&path, "hnsw.hnsw.graph", graph);
        replace_listed_file(&path, "hnsw.hnsw.data", data);
        let index = Index::open(&path).expect("checksums pass");
        let e = index.search_hnsw(&q, 3, &p).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert_names(&e, file);
        assert!(e.to_string().contains(needle), "{needle:?}: {e}");
        // Every graph search says so (the failed load is not kept), and so does the check.
        let e = index.search_hnsw(&q, 3, &p).unwrap_err();
        assert!(e.to_string().contains(needle), "{needle:?}: {e}");
        let e = Index::open(&path).unwrap().verify().unwrap_err();
        assert_names(&e, file);
        assert!(e.to_string().contains(needle), "verify: {needle:?}: {e}");
    }
    // The sound dump passes the check.
    replace_listed_file(&path, "hnsw.hnsw.graph", &graph);
    replace_listed_file(&path, "hnsw.hnsw.data", &data);
    Index::open(&path).unwrap().verify().unwrap();
}
