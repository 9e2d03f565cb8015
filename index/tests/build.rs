//! Builder behaviour (ids, vectors, model, overwrite, atomic publication) and rescoring.

mod common;

use bsa_index::vectors::{Vectors, cosine, cosine_top_k};
use bsa_index::{Error, Hits, Index, IndexBuilder, SearchParams, VectorDtype, pack};
use common::*;
use proptest::prelude::*;
use rand::Rng;

#[test]
fn ids_must_be_unique_and_match() {
    let dir = tempfile::tempdir().unwrap();
    let codes = vec![1u64, 2, 3];
    let e = IndexBuilder::new(64, &codes)
        .ids(&[5, 6, 5])
        .build(dir.path().join("a"))
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(ref m) if m.contains("id 5")),
        "{e}"
    );
    let e = IndexBuilder::new(64, &codes)
        .ids(&[5, 6])
        .build(dir.path().join("a"))
        .unwrap_err();
    assert!(matches!(e, Error::DimMismatch { .. }), "{e}");
    assert!(!dir.path().join("a").exists());
    // No temp dirs left behind either.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bad_inputs_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    assert!(matches!(
        IndexBuilder::new(64, &[]).build(&out),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        IndexBuilder::new(0, &[1]).build(&out),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        IndexBuilder::new(65, &[1, 2, 3]).build(&out),
        Err(Error::DimMismatch { .. })
    ));
    assert!(matches!(
        IndexBuilder::new(60, &[1 << 61]).build(&out),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        IndexBuilder::new(64, &[1])
            .vectors(&[1.0, 2.0, 3.0], 2)
            .build(&out),
        Err(Error::DimMismatch { .. })
    ));
    assert!(matches!(
        IndexBuilder::new(64, &[1])
            .vectors(&[1.0, f32::NAN], 2)
            .build(&out),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        IndexBuilder::new(64, &[1])
            .model_file(dir.path().join("nope"))
            .build(&out),
        Err(Error::Io { .. })
    ));
    assert!(!out.exists());
}

/// The builder's bounds at their edges, each said in its own words: vectors of dimension 0
/// (no floats for any number of rows, so the size check alone lets them through, and the
/// manifest written would be refused on open), and an HNSW graph of one connection per node
/// (the smallest that builds is 2).
#[test]
fn zero_dimension_vectors_and_one_connection_graphs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let e = IndexBuilder::new(64, &[1, 2])
        .vectors(&[], 0)
        .build(&out)
        .unwrap_err();
    assert!(
        e.to_string().contains("vector dimension must be in 1..="),
        "{e}"
    );
    let one = bsa_index::HnswParams {
        max_connections: 1,
        ..Default::default()
    };
    let e = one.validate().unwrap_err();
    assert!(
        e.to_string()
            .contains("max_connections (M) must be in 2..="),
        "{e}"
    );
    let two = bsa_index::HnswParams {
        max_connections: 2,
        ..Default::default()
    };
    two.validate().unwrap();
    assert!(!out.exists());
}

/// Overwriting deletes an index's folder whole, so it refuses while the folder holds anything
/// bsa did not write (a user's notes kept beside the index), in either format, and names it.
#[test]
fn overwrite_never_deletes_what_bsa_did_not_write() {
    use bsa_index::live::{NewRows, Writer};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("idx");
    let model = dir.path().join("m.safetensors");
    std::fs::write(&model, b"not read here").unwrap();
    let params = bsa_index::HnswParams {
        max_connections: 4,
        ef_construction: 8,
        ef_search: 8,
    };
    let build = || {
        let codes: Vec<u64> = (0..40).collect();
        let vectors: Vec<f32> = (0..80).map(|i| (i % 7) as f32 - 3.0).collect();
        IndexBuilder::new(64, &codes)
            .vectors(&vectors, 2)
            .inverted(true)
            .hnsw(params)
            .graph_on(&vectors, 2) // the native builder: in every build of bsa-index
            .model_file(&model)
            .overwrite(true)
            .build(&out)
    };
    build().unwrap();
    // Every file bsa wrote may go: an index replaced by itself is replaced.
    build().unwrap();
    // hnsw_rs's dump beside a Hamming graph's graph.bin too.
    #[cfg(feature = "hnsw-rs")]
    {
        let hamming = dir.path().join("hamming");
        for _ in 0..2 {
            IndexBuilder::new(64, &(0..40).collect::<Vec<u64>>())
                .hnsw(params)
                .overwrite(true)
                .build(&hamming)
                .unwrap();
        }
        assert!(hamming.join("hnsw.hnsw.graph").is_file());
    }
    // An empty folder holds nothing to lose (`create_dir_all` of a path through the index
    // leaves them): not counted.
    std::fs::create_dir(out.join("empty")).unwrap();
    let mine = ["notes.txt", "plots"];
    std::fs::write(out.join(mine[0]), "keep me").unwrap();
    std::fs::create_dir(out.join(mine[1])).unwrap();
    std::fs::write(out.join(mine[1]).join("recall.png"), "keep me").unwrap();
    let refused = |what: &str| {
        let e = build().unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("holds entries bsa did not write (notes.txt, plots)"),
            "{what}: {text}"
        );
        assert!(text.contains("move them out of the index first"), "{text}");
        assert!(matches!(&e, Error::Io { error, .. }
            if error.kind() == std::io::ErrorKind::AlreadyExists));
        assert_eq!(
            std::fs::read_to_string(out.join(mine[0])).unwrap(),
            "keep me"
        );
        assert!(out.join(mine[1]).join("recall.png").is_file());
        let live = bsa_index::live::Snapshot::open(&out).unwrap().len();
        assert!(live == 40 || live == 49, "{what}: {live}");
    };
    refused("single segment");
    // A segmented index (after an add and a delete) names its segments, deletes and model.
    let mut w = Writer::open(&out).unwrap();
    let extra: Vec<f32> = vec![0.5; 20];
    let codes: Vec<u64> = (100..110).collect();
    let rows = NewRows::codes(&codes).vectors(&extra).graph_vectors(&extra);
    w.add(&rows, false).unwrap();
    w.delete(&[3]).unwrap();
    drop(w);
    refused("segmented");
    // A writer's leftovers are bsa's own.
    std::fs::create_dir(out.join("seg-000099")).unwrap();
    std::fs::write(out.join(".manifest.json.tmp-12345"), "").unwrap();
    refused("with leftovers");
    std::fs::remove_file(out.join(mine[0])).unwrap();
    std::fs::remove_dir_all(out.join(mine[1])).unwrap();
    // Inside a segment, what its own manifest does not name; and a file named as hnsw_rs's
    // dumps are, but not one (a dump starts with hnsw_rs's tag).
    std::fs::write(out.join("seg-000000/NOTES.txt"), "keep me").unwrap();
    std::fs::write(out.join("hnsw.hnsw.graph"), "my notes").unwrap();
    let e = build().unwrap_err().to_string();
    assert!(
        e.contains("bsa did not write (hnsw.hnsw.graph, seg-000000/NOTES.txt)"),
        "{e}"
    );
    std::fs::remove_file(out.join("seg-000000/NOTES.txt")).unwrap();
    std::fs::remove_file(out.join("hnsw.hnsw.graph")).unwrap();
    // A user's file put in while the build waits for the index's writers (its first check
    // passed): checked again once they are done.
    let (held, is_held) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let out = &out;
        s.spawn(move || {
            let _w = Writer::open(out).unwrap(); // an add under way, say
            held.send(()).unwrap();
            released.recv().ok();
        });
        is_held.recv().unwrap();
        let codes: Vec<u64> = (0..40).collect();
        let e = IndexBuilder::new(64, &codes)
            .overwrite(true)
            .on_wait(|| {
                std::fs::write(out.join("late.txt"), "keep me").unwrap();
                release.send(()).unwrap();
            })
            .build(out)
            .unwrap_err();
        assert!(e.to_string().contains("the new index was not kept"), "{e}");
        assert!(
            e.to_string().contains("bsa did not write (late.txt)"),
            "{e}"
        );
    });
    assert!(out.join("late.txt").is_file());
    std::fs::remove_file(out.join("late.txt")).unwrap();
    build().unwrap();
    assert_eq!(Index::open(&out).unwrap().len(), 40);
    // A segment's own manifest says what is bsa's in it, whether the root's can be read or
    // not (a killed writer's segment, a damaged root manifest).
    let plain = dir.path().join("plain");
    IndexBuilder::new(64, &[1, 2, 3]).build(&plain).unwrap();
    Writer::open(&plain)
        .unwrap()
        .add(&NewRows::codes(&[4]), false)
        .unwrap();
    std::fs::write(plain.join("seg-000001/NOTES.txt"), "keep me").unwrap();
    std::fs::write(plain.join("manifest.json"), "{").unwrap();
    let e = IndexBuilder::new(64, &[5])
        .overwrite(true)
        .build(&plain)
        .unwrap_err()
        .to_string();
    assert!(e.contains("here (seg-000001/NOTES.txt)"), "{e}");
    assert!(plain.join("seg-000001/NOTES.txt").is_file());
    // A manifest that cannot be read names nothing: its model file cannot be told from a
    // user's, and the refusal says why (and only its own advice).
    std::fs::write(out.join("manifest.json"), "{").unwrap();
    let e = build().unwrap_err().to_string();
    assert!(e.contains("an index whose manifest cannot be read"), "{e}");
    assert!(
        e.contains("cannot tell its own files from others here (model.safetensors)"),
        "{e}"
    );
    assert!(!e.contains("rebuild it with `bsa build`"), "{e}");
    assert!(out.join("model.safetensors").is_file());
}

#[test]
fn overwrite_replaces_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub/dir/idx");
    IndexBuilder::new(64, &[1, 2]).build(&out).unwrap();
    let e = IndexBuilder::new(64, &[3]).build(&out).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(Index::open(&out).unwrap().len(), 2);
    IndexBuilder::new(64, &[3])
        .overwrite(true)
        .build(&out)
        .unwrap();
    let index = Index::open(&out).unwrap();
    assert_eq!(index.codes(), &[3]);
    assert_eq!(index.ids(), &[0]);
    let names: Vec<String> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["idx".to_string()]);
    // Overwriting replaces an index or an empty directory, never other files.
    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    let e = IndexBuilder::new(64, &[3])
        .overwrite(true)
        .build(&mine)
        .unwrap_err();
    assert!(e.to_string().contains("not an index directory"), "{e}");
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep me"
    );
    // A folder whose manifest.json is not a bsa index's (a web app's) is not an index.
    let web = dir.path().join("web");
    std::fs::create_dir(&web).unwrap();
    std::fs::write(web.join("manifest.json"), r#"{"name": "my app"}"#).unwrap();
    std::fs::write(web.join("index.html"), "keep me").unwrap();
    let e = IndexBuilder::new(64, &[3])
        .overwrite(true)
        .build(&web)
        .unwrap_err();
    assert!(e.to_string().contains("not an index directory"), "{e}");
    assert!(web.join("index.html").is_file() && web.join("manifest.json").is_file());
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    IndexBuilder::new(64, &[3])
        .overwrite(true)
        .build(&empty)
        .unwrap();
    assert_eq!(Index::open(&empty).unwrap().len(), 1);
    // Never inside an index: its writers would delete what its manifest does not name. The
    // web folder above holds no index, so building inside it is fine.
    for inside in [out.join("backup"), out.join("a/b/c"), empty.join("x")] {
        let e = IndexBuilder::new(64, &[3]).build(&inside).unwrap_err();
        assert!(e.to_string().contains("inside the index directory"), "{e}");
        assert!(!inside.exists());
    }
    IndexBuilder::new(64, &[3]).build(web.join("idx")).unwrap();
    // Nor through `..` after folders still to be made (create_dir_all follows them): ...
    let sneaky = web.join("missing/../../sub/dir/idx/copy");
    let e = IndexBuilder::new(64, &[3]).build(&sneaky).unwrap_err();
    assert!(e.to_string().contains("inside the index directory"), "{e}");
    assert!(!out.join("copy").exists() && !web.join("missing").exists());
    // ... while such a path that ends outside every index is fine.
    IndexBuilder::new(64, &[3])
        .build(out.join("missing/../../outside"))
        .unwrap();
    assert!(dir.path().join("sub/dir/outside/manifest.json").is_file());
    // An index is known by its manifest's JSON, however laid out, and a damaged one by the
    // files only bsa writes: both stay protected, and a damaged one can still be replaced.
    let manifest = out.join("manifest.json");
    let bytes = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, [b"{ \n".as_slice(), &bytes[1..]].concat()).unwrap();
    Index::open(&out).unwrap();
    let e = IndexBuilder::new(64, &[3])
        .build(out.join("in"))
        .unwrap_err();
    assert!(e.to_string().contains("inside the index directory"), "{e}");
    std::fs::write(&manifest, b"").unwrap();
    let e = IndexBuilder::new(64, &[3])
        .build(out.join("in"))
        .unwrap_err();
    assert!(e.to_string().contains("inside the index directory"), "{e}");
    IndexBuilder::new(64, &[5])
        .overwrite(true)
        .build(&out)
        .unwrap();
    assert_eq!(Index::open(&out).unwrap().codes(), &[5]);
}

/// A link at the output path is kept and the index it names replaced (`current -> idx-v3`
/// rebuilt with overwrite gives a new idx-v3, not a folder in the link's place beside the old
/// index); a dangling link makes the index it names; `idx/.` is `idx`.
#[cfg(unix)]
#[test]
fn a_link_at_the_output_keeps_pointing_at_the_new_index() {
    let dir = tempfile::tempdir().unwrap();
    let (target, link) = (dir.path().join("idx-v3"), dir.path().join("current"));
    std::os::unix::fs::symlink("idx-v3", &link).unwrap();
    IndexBuilder::new(64, &[1, 2]).build(&link).unwrap();
    assert!(target.join("manifest.json").is_file());
    let e = IndexBuilder::new(64, &[3]).build(&link).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    IndexBuilder::new(64, &[3])
        .overwrite(true)
        .build(&link)
        .unwrap();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(Index::open(&target).unwrap().codes(), &[3]);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["current", "idx-v3"]);
    // `.` components are dropped: the rename into place would fail on `idx-v3/.`.
    IndexBuilder::new(64, &[4])
        .overwrite(true)
        .build(target.join("."))
        .unwrap();
    assert_eq!(Index::open(&link).unwrap().codes(), &[4]);
}

/// A link loop, or a dangling link to a dangling link, at the output is something there: refused
/// as "already exists" (the rename's bare "File exists" said before), and left as it was.
#[cfg(unix)]
#[test]
fn a_link_loop_at_the_output_already_exists() {
    let dir = tempfile::tempdir().unwrap();
    let (lp, a, b) = (
        dir.path().join("loop"),
        dir.path().join("a"),
        dir.path().join("b"),
    );
    std::os::unix::fs::symlink("loop", &lp).unwrap();
    std::os::unix::fs::symlink("b", &a).unwrap();
    std::os::unix::fs::symlink("missing", &b).unwrap();
    for out in [&lp, &a] {
        let e = IndexBuilder::new(64, &[1]).build(out).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
    }
    assert_eq!(
        std::fs::read_link(&lp).unwrap(),
        std::path::Path::new("loop")
    );
    assert_eq!(
        std::fs::read_link(&b).unwrap(),
        std::path::Path::new("missing")
    );
}

#[test]
fn packbits_rows_roundtrip_through_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(3);
    for bits in [1usize, 7, 8, 63, 64, 65, 200, 256] {
        let n = 50;
        let bools: Vec<bool> = (0..n * bits).map(|_| r.random_bool(0.3)).collect();
        let packed = pack::pack_bools(&bools, n, bits).unwrap();
        let bytes = pack::unpack_to_le_bytes(&packed, n, bits).unwrap();
        assert_eq!(bytes.len(), n * bits.div_ceil(8));
        let codes = pack::pack_le_bytes(&bytes, n, bits.div_ceil(8), bits).unwrap();
        assert_eq!(codes, packed);
        let out = dir.path().join(format!("b{bits}"));
        IndexBuilder::new(bits, &codes).build(&out).unwrap();
        let index = Index::open(&out).unwrap();
        assert_eq!(
            pack::unpack_to_le_bytes(index.codes(), n, bits).unwrap(),
            bytes
        );
        for row in 0..n {
            for j in 0..bits {
                assert_eq!(pack::get_bit(index.code(row), j), bools[row * bits + j]);
            }
        }
    }
}

fn brute_cosine(
    vectors: Vectors<'_>,
    dim: usize,
    n: usize,
    q: &[f32],
    rows: &[u64],
    k: usize,
) -> Vec<(u64, f32)> {
    let mut all: Vec<(u64, f32)> = (0..n as u64)
        .map(|r| (r, cosine(vectors, r as usize, q)))
        .collect();
    all.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
    let _ = dim;
    all.into_iter()
        .filter(|(r, _)| rows.contains(r))
        .take(k)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn cosine_top_k_equals_brute_force(
        n in 1usize..60,
        dim in 1usize..20,
        k in 0usize..70,
        seed in any::<u64>(),
        coarse in any::<bool>(),
    ) {
        let mut r = rng(seed);
        // Coarse values create exact score ties.
        let v: Vec<f32> = (0..n * dim).map(|_| if coarse { r.random_range(-1i32..=1) as f32 } else { r.random_range(-1.0f32..1.0) }).collect();
        let q: Vec<f32> = (0..dim).map(|_| if coarse { r.random_range(-1i32..=1) as f32 } else { r.random_range(-1.0f32..1.0) }).collect();
        let rows: Vec<u64> = (0..n as u64).filter(|_| r.random_bool(0.6)).collect();
        let got = cosine_top_k(Vectors::F32(&v), dim, &q, &rows, k).unwrap();
        let got: Vec<(u64, f32)> = got.into_iter().map(|(p, s)| (rows[p], s)).collect();
        prop_assert_eq!(got, brute_cosine(Vectors::F32(&v), dim, n, &q, &rows, k));
    }
}

/// `f16` holds magnitudes up to 65504 only and loses precision below 6e-5: vectors far from unit
/// length are stored as unit vectors, so they rescore as their `f32` originals do (before,
/// x 1e5 gave infinities and every score 0, x 1e-8 zeros and wrong hits).
#[test]
fn f16_vectors_of_any_length_rescore_like_f32() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(11);
    let (n, dim, bits) = (200usize, 16usize, 64usize);
    let unit: Vec<f32> = (0..n * dim).map(|_| r.random_range(-1.0f32..1.0)).collect();
    let codes: Vec<u64> = (0..n).map(|_| r.random()).collect();
    let rows: Vec<u64> = (0..n as u64).collect();
    let hits = Hits::from_parts(rows.clone(), rows, vec![0; n]).unwrap();
    for scale in [1e5f32, 1.0, 1e-8] {
        let vectors: Vec<f32> = unit.iter().map(|x| x * scale).collect();
        let out = dir.path().join(format!("s{scale}"));
        IndexBuilder::new(bits, &codes)
            .vectors(&vectors, dim)
            .vector_dtype(VectorDtype::F16)
            .build(&out)
            .unwrap();
        let index = Index::open(&out).unwrap();
        for i in [0usize, 17, 199] {
            let q = &unit[i * dim..(i + 1) * dim];
            let top = index.rescore(q, &hits, 1).unwrap();
            assert_eq!(top.rows, vec![i as u64], "scale {scale}, row {i}");
            let s = top.scores.as_deref().unwrap()[0];
            assert!(
                (s - 1.0).abs() < 1e-3,
                "scale {scale}, row {i}: self-score {s}"
            );
        }
    }
}

#[test]
fn rescore_through_the_index_f32_and_f16() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(9);
    let (n, dim, bits) = (400usize, 16usize, 128usize);
    let vectors: Vec<f32> = (0..n * dim).map(|_| r.random_range(-1.0f32..1.0)).collect();
    // Sign codes of the first 128 of... dim 16: repeat signs 8 times to fill 128 bits.
    let bools: Vec<bool> = (0..n)
        .flat_map(|i| (0..bits).map(move |j| (i, j)))
        .map(|(i, j)| vectors[i * dim + j % dim] > 0.0)
        .collect();
    let codes = pack::pack_bools(&bools, n, bits).unwrap();
    let ids: Vec<u64> = (0..n as u64).rev().collect();
    for dtype in [VectorDtype::F32, VectorDtype::F16] {
        let out = dir.path().join(format!("{dtype:?}"));
        IndexBuilder::new(bits, &codes)
            .ids(&ids)
            .vectors(&vectors, dim)
            .vector_dtype(dtype)
            .build(&out)
            .unwrap();
        let index = Index::open(&out).unwrap();
        assert_eq!(index.vector_dim(), Some(dim));
        assert_eq!(index.vector_dtype(), Some(dtype));
        let stored = index.vectors().unwrap().unwrap();
        let nq = 5;
        let qv: Vec<f32> = (0..nq * dim)
            .map(|_| r.random_range(-1.0f32..1.0))
            .collect();
        let qb: Vec<bool> = (0..nq)
            .flat_map(|i| (0..bits).map(move |j| (i, j)))
            .map(|(i, j)| qv[i * dim + j % dim] > 0.0)
            .collect();
        let qc = pack::pack_bools(&qb, nq, bits).unwrap();
        let hits = index
            .search_flat(&qc, 40, &SearchParams::default())
            .unwrap();
        let rescored = index.rescore_hits(&qv, &hits, 10).unwrap();
        for (i, (h, rs)) in hits.iter().zip(&rescored).enumerate() {
            let q = &qv[i * dim..(i + 1) * dim];
            let want = brute_cosine(stored, dim, n, q, &h.rows, 10);
            assert_eq!(rs.rows, want.iter().map(|x| x.0).collect::<Vec<_>>());
            assert_eq!(
                rs.scores.as_deref().unwrap(),
                &want.iter().map(|x| x.1).collect::<Vec<_>>()[..]
            );
            for (j, &row) in rs.rows.iter().enumerate() {
                // Rows are stored in id order: the row's id leads back to the vector given.
                assert_eq!(rs.ids[j], index.ids()[row as usize]);
                let given = ids.iter().position(|&x| x == rs.ids[j]).unwrap();
                let pos = h.rows.iter().position(|&x| x == row).unwrap();
                assert_eq!(rs.distances[j], h.distances[pos]);
                // f16 storage changes scores only by rounding.
                let exact = cosine(Vectors::F32(&vectors), given, q);
                assert!((rs.scores.as_ref().unwrap()[j] - exact).abs() < 2e-3);
            }
        }
        assert!(matches!(
            index.rescore(&[1.0; 3], &hits[0], 5),
            Err(Error::DimMismatch { .. })
        ));
        let bad = Hits::from_parts(vec![n as u64], vec![0], vec![0]).unwrap();
        assert!(Hits::from_parts(vec![1], vec![], vec![]).is_err());
        assert!(matches!(
            index.rescore(&qv[..dim], &bad, 5),
            Err(Error::InvalidArgument(_))
        ));
    }
    let plain = dir.path().join("plain");
    IndexBuilder::new(bits, &codes).build(&plain).unwrap();
    let index = Index::open(&plain).unwrap();
    let hits = index
        .search_flat(&codes[..2], 3, &SearchParams::default())
        .unwrap();
    let e = index.rescore(&vectors[..dim], &hits[0], 3).unwrap_err();
    assert!(e.to_string().contains("no vectors"), "{e}");
    let e = index
        .rescore_hits(&vectors[..2 * dim], &hits, 3)
        .unwrap_err();
    assert!(e.to_string().contains("no vectors"), "{e}");
}

/// A build stopped at any of its progress steps (codes, ids, vectors, either graph builder)
/// returns `Stopped`, leaves no temporary directory and leaves the index it would have replaced
/// as it was; a build that is not stopped completes.
#[test]
#[cfg_attr(
    not(feature = "hnsw-rs"),
    ignore = "stops a graph build over the codes: needs the hnsw-rs feature"
)]
fn a_stopped_build_leaves_no_trace() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("idx");
    IndexBuilder::new(64, &[1, 2]).build(&out).unwrap();
    let (n, bits, dim) = (300, 128, 8);
    let mut rng = rng(11);
    let codes = random_codes(&mut rng, n, bits, 8);
    let vectors: Vec<f32> = (0..n * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
    let params = bsa_index::HnswParams {
        max_connections: 8,
        ef_construction: 20,
        ef_search: 16,
    };
    for native in [false, true] {
        // Stop at the call-th progress step; usize::MAX: never.
        let build = |call: usize| {
            let (stop, calls) = (AtomicBool::new(false), AtomicUsize::new(0));
            let mut b = IndexBuilder::new(bits, &codes)
                .vectors(&vectors, dim)
                .inverted(true)
                .hnsw(params)
                .overwrite(true)
                .stop_when(&stop)
                .progress(|_, _| {
                    if calls.fetch_add(1, Ordering::Relaxed) + 1 == call {
                        stop.store(true, Ordering::Relaxed);
                    }
                });
            if native {
                b = b.graph_on(&vectors, dim);
            }
            let built = b.build(&out);
            (built, calls.load(Ordering::Relaxed))
        };
        let (built, steps) = build(usize::MAX);
        assert_eq!(built.unwrap().n, n as u64);
        assert!(steps >= 4, "{steps} progress steps");
        IndexBuilder::new(64, &[1, 2])
            .overwrite(true)
            .build(&out)
            .unwrap();
        for call in 1..=steps {
            let (built, _) = build(call);
            assert!(
                matches!(built, Err(Error::Stopped)),
                "native {native}, stopped at step {call}/{steps}: {built:?}"
            );
            let names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(names, ["idx"], "native {native}, step {call}");
            assert_eq!(Index::open(&out).unwrap().codes(), &[1, 2]);
        }
    }
}

/// A build that replaces an index waits for its writers; a stop ends the wait, and the index
/// and its writer are left as they were.
#[test]
fn a_stop_ends_the_wait_for_the_writers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("idx");
    IndexBuilder::new(64, &[1, 2]).build(&out).unwrap();
    // Held by another thread (this one asking for a lock it holds is an error, not a wait; a
    // Writer stays on the thread that opened it).
    let (stop, waiting) = (AtomicBool::new(false), AtomicBool::new(false));
    let (held, release) = (AtomicBool::new(false), AtomicBool::new(false));
    std::thread::scope(|s| {
        let holder = s.spawn(|| {
            let writer = bsa_index::live::Writer::open(&out).unwrap();
            held.store(true, Ordering::Relaxed);
            while !release.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            drop(writer);
        });
        while !held.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        s.spawn(|| {
            while !waiting.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            stop.store(true, Ordering::Relaxed);
        });
        let built = IndexBuilder::new(64, &[3])
            .overwrite(true)
            .on_wait(|| waiting.store(true, Ordering::Relaxed))
            .stop_when(&stop)
            .build(&out);
        assert!(matches!(built, Err(Error::Stopped)), "{built:?}");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["idx"]);
        release.store(true, Ordering::Relaxed);
        holder.join().unwrap();
    });
    assert_eq!(Index::open(&out).unwrap().codes(), &[1, 2]);
}

/// A replacing build onto a link loop or a dangling chain of links: refused before any work
/// (the name leads to no directory); the publish loop, which asked whether anything was there
/// through the links, spun for ever at 100% CPU. Nothing is left beside the links.
#[cfg(unix)]
#[test]
fn a_replacing_build_onto_a_link_loop_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::os::unix::fs::symlink(p("b"), p("a")).unwrap();
    std::os::unix::fs::symlink(p("a"), p("b")).unwrap();
    std::os::unix::fs::symlink(p("d"), p("c")).unwrap();
    std::os::unix::fs::symlink(p("missing"), p("d")).unwrap();
    for out in ["a", "c"] {
        let (done, got) = std::sync::mpsc::channel();
        let path = p(out);
        std::thread::spawn(move || {
            let built = IndexBuilder::new(64, &[1, 2]).overwrite(true).build(&path);
            let _ = done.send(built.map(|_| ()));
        });
        let built = got
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the build onto {out} did not end"));
        let err = built.unwrap_err().to_string();
        assert!(err.contains("refusing to replace it"), "{out}: {err}");
    }
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c", "d"]);
}

/// An index name that is not UTF-8 is refused saying so (it said only "not a usable directory
/// name"); folders above it may have any name. (Linux: macOS's file systems refuse such names.)
#[cfg(target_os = "linux")]
#[test]
fn a_non_utf8_index_name_is_refused_saying_why() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"ix\xff");
    let err = IndexBuilder::new(64, &[1])
        .build(dir.path().join(odd))
        .unwrap_err();
    assert!(err.to_string().contains("is not valid UTF-8"), "{err}");
    let inside = dir.path().join(odd).join("idx");
    IndexBuilder::new(64, &[1]).build(&inside).unwrap();
    assert_eq!(Index::open(&inside).unwrap().len(), 1);
}

/// A build stopped before it finished removes the folders it made for the index's path, as
/// "nothing was written" says; it left them before. Folders that were there stay.
#[test]
fn a_stopped_build_removes_the_folders_it_made() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("kept")).unwrap();
    let out = dir.path().join("kept/a/b/idx");
    let stop = std::sync::atomic::AtomicBool::new(true);
    let built = IndexBuilder::new(64, &[1, 2, 3])
        .stop_when(&stop)
        .build(&out);
    assert!(matches!(built, Err(Error::Stopped)), "{built:?}");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("kept"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // Finished, the build keeps them.
    IndexBuilder::new(64, &[1, 2, 3]).build(&out).unwrap();
    assert_eq!(Index::open(&out).unwrap().len(), 3);
}

/// Builds replacing an index (`--force`) into a path that does not exist yet, at once: each
/// saw nothing there and renamed its folder in, and all but the first failed with "Directory
/// not empty". Now each puts its index there or replaces the one another put, and every build
/// succeeds; the index is one of them, whole, with nothing left beside it.
#[test]
fn builds_replacing_into_a_missing_path_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("idx");
    for round in 0..40 {
        let _ = std::fs::remove_dir_all(&out);
        let built: Vec<Result<u64, bsa_index::Error>> = std::thread::scope(|s| {
            let handles: Vec<_> = (1..=4u64)
                .map(|t| {
                    let out = &out;
                    s.spawn(move || {
                        IndexBuilder::new(64, &[t; 8])
                            .overwrite(true)
                            .build(out)
                            .map(|_| t)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(built.iter().all(Result::is_ok), "round {round}: {built:?}");
        let codes = Index::open(&out).unwrap().codes().to_vec();
        assert!((1..=4).any(|t| codes == [t; 8]), "round {round}: {codes:?}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "round {round}: {names:?}");
    }
}

/// Two threads of one process building the same index at once, the path spelled two ways,
/// each stage their own folder (the second removed the first's, which had the same pid in its
/// name): with overwriting both succeed, without it one is refused; the index is one of the
/// two, whole, and nothing is left beside it.
#[cfg(unix)]
#[test]
fn two_threads_building_one_index_do_not_share_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("idx");
    // The second thread spells the path through a link to the folder: the same staging
    // folder unless its name is kept by the folder's real path.
    let other = {
        std::os::unix::fs::symlink(dir.path(), dir.path().join("here")).unwrap();
        dir.path().join("here/idx")
    };
    let rows = 200_000usize;
    let both = |overwrite: bool| -> Vec<Result<u64, bsa_index::Error>> {
        std::thread::scope(|s| {
            let handles: Vec<_> = [(1u64, &out), (2, &other)]
                .into_iter()
                .map(|(t, path)| {
                    s.spawn(move || {
                        let codes = vec![t; rows];
                        IndexBuilder::new(64, &codes)
                            .overwrite(overwrite)
                            .build(path)
                            .map(|_| t)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let check = || {
        let index = Index::open(&out).unwrap();
        index.verify().unwrap();
        assert_eq!(index.len(), rows);
        assert!(index.codes() == vec![1u64; rows] || index.codes() == vec![2u64; rows]);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["here", "idx"]);
    };
    // A new path without overwriting: one build makes it, the other is refused (at its commit
    // when both started before either finished), never both "succeeding".
    let built = both(false);
    assert_eq!(built.iter().filter(|r| r.is_ok()).count(), 1, "{built:?}");
    for e in built.iter().filter_map(|r| r.as_ref().err()) {
        assert!(e.to_string().contains("already exists"), "{e}");
    }
    check();
    // Replacing it: both succeed, one after the other.
    let built = both(true);
    assert!(built.iter().all(Result::is_ok), "{built:?}");
    check();
}

/// A graph given as vectors made unit length chunk by chunk (`GraphVectors`, what `bsa build`
/// passes for a model's decoded codes) is the graph of the same rows given whole, byte for
/// byte, with ids in order and out of order; rows that are not whole or not finite are refused.
#[test]
fn graph_vectors_pushed_in_chunks_build_the_graph_of_the_rows() {
    use bsa_index::{GraphVectors, HnswParams};
    let (n, dim) = (300, 12);
    let mut rng = rng(41);
    let x: Vec<f32> = (0..n * dim)
        .map(|_| rng.random::<f32>() * 4.0 - 2.0)
        .collect();
    let codes: Vec<u64> = (0..n).map(|_| rng.random::<u64>()).collect();
    let p = HnswParams {
        max_connections: 6,
        ef_construction: 24,
        ef_search: 24,
    };
    let shuffled: Vec<u64> = (0..n as u64).map(|i| (i * 7919) % 1009).collect();
    for ids in [None, Some(shuffled.as_slice())] {
        let dir = tempfile::tempdir().unwrap();
        let mut whole = IndexBuilder::new(64, &codes).hnsw(p).graph_on(&x, dim);
        let mut v = GraphVectors::new(dim, n);
        for chunk in x.chunks(dim * 70) {
            v.push(chunk).unwrap();
        }
        let mut pushed = IndexBuilder::new(64, &codes).hnsw(p).graph_on_vectors(v);
        if let Some(ids) = ids {
            whole = whole.ids(ids);
            pushed = pushed.ids(ids);
        }
        whole.build(dir.path().join("a")).unwrap();
        pushed.build(dir.path().join("b")).unwrap();
        let read = |name: &str| std::fs::read(dir.path().join(name).join("graph.bin")).unwrap();
        assert_eq!(read("a"), read("b"), "ids {:?}", ids.map(|_| "shuffled"));
    }
    let mut v = GraphVectors::new(dim, 2);
    assert!(v.push(&x[..dim + 1]).is_err());
    let mut bad = x[..dim].to_vec();
    bad[3] = f32::INFINITY;
    let err = v.push(&bad).unwrap_err().to_string();
    assert!(err.contains("non-finite value at 3"), "{err}");
    // A row count other than the codes' is refused by the build.
    let dir = tempfile::tempdir().unwrap();
    let mut few = GraphVectors::new(dim, 2);
    few.push(&x[..2 * dim]).unwrap();
    let err = IndexBuilder::new(64, &codes)
        .hnsw(p)
        .graph_on_vectors(few)
        .build(dir.path().join("c"))
        .unwrap_err();
    assert!(matches!(err, Error::DimMismatch { .. }), "{err}");
}

/// Rescoring breaks ties of equal cosine by the smaller row, whatever order the hits came in.
#[test]
fn rescore_ties_go_to_the_smaller_row() {
    use bsa_index::search::rescore::rescore;
    // Rows 0, 1, 2: rows 0 and 2 hold the same vector.
    let vectors = [0.6f32, 0.8, 1.0, 0.0, 0.6, 0.8];
    let hits = Hits::from_parts(vec![2, 1, 0], vec![12, 11, 10], vec![0, 1, 2]).unwrap();
    let best = rescore(Vectors::F32(&vectors), 2, &[0.0, 1.0], &hits, 3).unwrap();
    assert_eq!(best.rows, vec![0, 2, 1]);
}
