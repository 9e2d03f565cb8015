//! Every bad input is a clear error: exit code 2, nothing on stdout, and one line on stderr
//! starting with `bsa:` that names the file (and the row), says what is wrong and, where the
//! library knows, what to do about it. Nothing is written on failure.

use crate::util::{TestDir, f32_bytes, normalised, npy_bytes};
#[cfg(unix)]
use std::os::unix::fs::FileTypeExt;

/// A folder with `good.npy` (40 x 16 unit vectors) and `model.safetensors`, a 16-d model trained
/// on it.
fn setup() -> TestDir {
    let t = TestDir::new();
    t.write_f32("good.npy", &normalised(40, 16, 1));
    t.train("good.npy", "model.safetensors", 32, 4, &[]);
    t
}

/// Builds `idx` from `good.npy` with the model of [`setup`].
fn build_idx(t: &TestDir) {
    build_index(t, "idx", &[]);
}

/// An index of good.npy at `out` with model.safetensors, built with `extra` flags.
fn build_index(t: &TestDir, out: &str, extra: &[&str]) {
    let mut args = vec![
        "build",
        "--model",
        "model.safetensors",
        "--data",
        "good.npy",
        "-q",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    t.bsa(&args).ok();
}

/// Runs `bsa train`, `bsa encode` and `bsa eval` on the data file `data` and checks each fails
/// with all of `needles` in its message (and no output file). `encode` is skipped when
/// `encode_too` is false.
#[track_caller]
fn all_reject(t: &TestDir, data: &str, needles: &[&str], encode_too: bool) {
    let train = t.bsa(&[
        "train",
        "--data",
        data,
        "--bits",
        "32",
        "--k",
        "4",
        "--epochs",
        "1",
        "--out",
        "out.safetensors",
        "-q",
    ]);
    train.fails_with(needles);
    assert!(
        !t.exists("out.safetensors"),
        "train wrote a model despite the error"
    );
    if encode_too {
        let enc = t.bsa(&[
            "encode",
            "--model",
            "model.safetensors",
            "--data",
            data,
            "--out",
            "codes.npy",
        ]);
        enc.fails_with(needles);
        assert!(
            !t.exists("codes.npy"),
            "encode wrote codes despite the error"
        );
    }
    let eval = t.bsa(&[
        "eval",
        "--model",
        "model.safetensors",
        "--data",
        data,
        "--json",
    ]);
    eval.fails_with(needles);
}

#[test]
fn nan_is_reported_with_its_row() {
    let t = setup();
    let mut x = normalised(12, 16, 2);
    x.row_mut(7)[3] = f32::NAN;
    t.write_f32("nan.npy", &x);
    all_reject(
        &t,
        "nan.npy",
        &["bsa: nan.npy: row 7: column 3 is NaN", "drop this row"],
        true,
    );
}

#[test]
fn infinity_is_reported_with_its_row() {
    let t = setup();
    let mut x = normalised(12, 16, 3);
    x.row_mut(4)[0] = f32::INFINITY;
    x.row_mut(9)[1] = f32::NEG_INFINITY;
    t.write_f32("inf.npy", &x);
    all_reject(
        &t,
        "inf.npy",
        &[
            "bsa: inf.npy: row 4: column 0 is +infinity",
            "drop this row",
        ],
        true,
    );

    let mut x = normalised(12, 16, 3);
    x.row_mut(2)[15] = f32::NEG_INFINITY;
    t.write_f32("neginf.npy", &x);
    all_reject(
        &t,
        "neginf.npy",
        &["neginf.npy: row 2: column 15 is -infinity"],
        true,
    );
}

#[test]
fn zero_norm_row_is_rejected_where_it_has_no_direction() {
    let t = setup();
    let mut x = normalised(12, 16, 4);
    x.row_mut(5).fill(0.0);
    t.write_f32("zero.npy", &x);
    // Cosine training and the cosine metrics of `eval` cannot use an all-zero row ...
    all_reject(
        &t,
        "zero.npy",
        &["bsa: zero.npy: row 5: L2 norm is 0", "drop this row"],
        false,
    );
    // ... but encoding one is well defined (the model's biases), and so is MSE training.
    t.bsa(&[
        "encode",
        "--model",
        "model.safetensors",
        "--data",
        "zero.npy",
        "--out",
        "c.npy",
    ])
    .ok();
    t.bsa(&[
        "train",
        "--data",
        "zero.npy",
        "--bits",
        "16",
        "--k",
        "2",
        "--epochs",
        "1",
        "--loss",
        "mse",
        "--out",
        "mse.safetensors",
        "-q",
    ])
    .ok();
    // A zero query has no direction to score by: refused by adc and soft (which answered every
    // score 0 and the lowest ids), as by --rescore; Hamming searches its code.
    build_idx(&t);
    let args = [
        "search",
        "--index",
        "idx",
        "--queries",
        "zero.npy",
        "--k",
        "3",
    ];
    t.bsa(&args).ok();
    for score in ["adc", "soft"] {
        let out = t.bsa(&[&args[..], &["--score", score]].concat());
        out.fails_with(&["bsa: zero.npy: row 5: L2 norm is 0", "drop this row"]);
    }
}

#[test]
fn truncated_npy() {
    let t = setup();
    let full = npy_bytes("<f4", "(12, 16)", &f32_bytes(&normalised(12, 16, 5).data));
    // Cut in the data ...
    t.write("cut.npy", &full[..full.len() - 10]);
    all_reject(
        &t,
        "cut.npy",
        &[
            "bsa: cut.npy: truncated .npy file",
            "needs 768 data bytes",
            "758 are present",
            "re-create it",
        ],
        true,
    );
    // ... and in the header.
    t.write("cuthead.npy", &full[..40]);
    all_reject(
        &t,
        "cuthead.npy",
        &["bsa: cuthead.npy: truncated .npy file", "re-create it"],
        true,
    );
}

#[test]
fn wrong_dtype() {
    let t = setup();
    bsa::io::write_i32(t.path("int.npy"), 12, 16, &[1; 12 * 16]).unwrap();
    all_reject(
        &t,
        "int.npy",
        &[
            "bsa: int.npy: expected float32, float16 or float64",
            "int32",
            "x.astype(np.float32)",
        ],
        true,
    );
}

#[test]
fn wrong_rank() {
    let t = setup();
    t.write(
        "one.npy",
        &npy_bytes("<f4", "(16,)", &f32_bytes(&[0.25; 16])),
    );
    all_reject(
        &t,
        "one.npy",
        &[
            "bsa: one.npy: expected a 2-D float array",
            "(16,)",
            "reshape(1, -1)",
        ],
        true,
    );
    t.write(
        "three.npy",
        &npy_bytes("<f4", "(2, 3, 16)", &f32_bytes(&[0.25; 96])),
    );
    all_reject(
        &t,
        "three.npy",
        &[
            "bsa: three.npy: expected a 2-D float array",
            "(2, 3, 16)",
            "reshape(-1, x.shape[-1])",
        ],
        true,
    );
}

#[test]
fn not_npy_at_all() {
    let t = setup();
    t.write("text.npy", b"id,vector\n1,0.5 0.25\n2,0.1 0.9\n");
    all_reject(
        &t,
        "text.npy",
        &["bsa: text.npy: not a .npy file", "numpy.save"],
        true,
    );
    t.write("empty.npy", b"");
    all_reject(&t, "empty.npy", &["bsa: empty.npy:"], true);
}

#[test]
fn missing_file() {
    let t = setup();
    all_reject(
        &t,
        "missing.npy",
        &[
            "bsa: missing.npy: No such file",
            "; check that the path exists",
        ],
        true,
    );
    t.bsa(&[
        "eval",
        "--model",
        "nomodel.safetensors",
        "--data",
        "good.npy",
    ])
    .fails_with(&["bsa: nomodel.safetensors: No such file"]);
    t.bsa(&[
        "encode",
        "--model",
        "nomodel.safetensors",
        "--data",
        "good.npy",
        "--out",
        "c.npy",
    ])
    .fails_with(&["bsa: nomodel.safetensors: No such file"]);
}

#[test]
fn unknown_extension() {
    let t = setup();
    std::fs::copy(t.path("good.npy"), t.path("good.csv")).unwrap();
    all_reject(
        &t,
        "good.csv",
        &[
            "bsa: good.csv: unsupported embedding file extension '.csv'",
            ".npy",
            ".fvecs",
        ],
        true,
    );
    std::fs::copy(t.path("good.npy"), t.path("noext")).unwrap();
    all_reject(
        &t,
        "noext",
        &["bsa: noext: the file name has no extension", "*.npy"],
        true,
    );
    std::fs::copy(t.path("good.npy"), t.path("good.npz")).unwrap();
    all_reject(
        &t,
        "good.npz",
        &["bsa: good.npz: unsupported extension '.npz'", "numpy.save"],
        true,
    );
}

#[test]
fn data_dimension_must_match_the_model() {
    let t = setup();
    t.write_f32("eight.npy", &normalised(10, 8, 6));
    for args in [
        &[
            "encode",
            "--model",
            "model.safetensors",
            "--data",
            "eight.npy",
            "--out",
            "c.npy",
        ][..],
        &[
            "eval",
            "--model",
            "model.safetensors",
            "--data",
            "eight.npy",
        ][..],
    ] {
        let out = t.bsa(args);
        out.fails_with(&[
            "bsa: dimension mismatch",
            "the columns of eight.npy against the model's input dimension",
            "expected 16, got 8",
            "train a model for this dimension",
        ]);
    }
    assert!(!t.exists("c.npy"));
}

/// The model from `setup` with its bytes changed by `f`, written as `name`.
fn corrupt_model(t: &TestDir, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = t.read("model.safetensors");
    f(&mut bytes);
    t.write(name, &bytes);
}

/// `bsa encode` and `bsa eval` with model `model` both fail with `needles`.
#[track_caller]
fn model_rejected(t: &TestDir, model: &str, needles: &[&str]) {
    t.bsa(&[
        "encode", "--model", model, "--data", "good.npy", "--out", "c.npy",
    ])
    .fails_with(needles);
    assert!(!t.exists("c.npy"));
    t.bsa(&["eval", "--model", model, "--data", "good.npy", "--json"])
        .fails_with(needles);
}

#[test]
fn garbage_model_file() {
    let t = setup();
    t.write(
        "garbage.safetensors",
        b"\x00\x01 this is not a model at all \xff\xfe",
    );
    model_rejected(
        &t,
        "garbage.safetensors",
        &[
            "bsa: garbage.safetensors: not a safetensors model file",
            "retrain it with `bsa train`",
        ],
    );
    t.write("empty.safetensors", b"");
    model_rejected(
        &t,
        "empty.safetensors",
        &["bsa: empty.safetensors: not a safetensors model file"],
    );
    // An embedding file passed as the model.
    model_rejected(
        &t,
        "good.npy",
        &["bsa: good.npy: not a safetensors model file"],
    );
}

#[test]
fn truncated_model_file() {
    let t = setup();
    corrupt_model(&t, "cut.safetensors", |b| b.truncate(b.len() - 10));
    model_rejected(&t, "cut.safetensors", &["bsa: cut.safetensors:"]);
    // Cut inside the header.
    corrupt_model(&t, "cuthead.safetensors", |b| b.truncate(100));
    model_rejected(
        &t,
        "cuthead.safetensors",
        &["bsa: cuthead.safetensors: not a safetensors model file"],
    );
}

#[test]
fn model_file_from_a_newer_bsa() {
    let t = setup();
    corrupt_model(&t, "new.safetensors", |b| {
        // Same length, so the header's offsets stay valid: only the version differs.
        let key = b"\"format_version\":\"1\"";
        let at = b
            .windows(key.len())
            .position(|w| w == key)
            .expect("no format_version");
        b[at + key.len() - 2] = b'7';
    });
    model_rejected(
        &t,
        "new.safetensors",
        &[
            "bsa: new.safetensors: model format v7 is newer than this bsa reads",
            "upgrade bsa or retrain",
        ],
    );
}

#[test]
fn invalid_training_flags() {
    let t = setup();
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            "good.npy",
            "--out",
            "bad.safetensors",
            "-q",
        ];
        args.extend_from_slice(extra);
        let out = t.bsa(&args);
        assert!(!t.exists("bad.safetensors"));
        out
    };
    // Checked by bsa.
    // The range these methods take is said as it is (it said "1 and --bits", which --k 32
    // then was not).
    train(&["--bits", "32", "--k", "0"]).fails_with(&[
        "bsa: invalid argument: --k must be between 1 and 31, below --bits (32), got 0",
    ]);
    for method in ["bsa", "topk", "pursuit"] {
        train(&["--method", method, "--bits", "32", "--k", "33"])
            .fails_with(&["--k must be between 1 and 31, below --bits (32), got 33"]);
        train(&["--method", method, "--bits", "1", "--k", "1"])
            .fails_with(&["--bits 1 leaves no --k below it"]);
    }
    for rows in ["0", "1"] {
        for method in ["pursuit", "itq"] {
            train(&[
                "--method",
                method,
                "--bits",
                "8",
                "--k",
                "2",
                "--fit-rows",
                rows,
            ])
            .fails_with(&[&format!("--fit-rows must be at least 2, got {rows}")]);
        }
    }
    for method in ["bsa", "topk", "pursuit"] {
        train(&["--method", method, "--bits", "32", "--k", "32"]).fails_with(&[
            "--k 32 sets every one of the 32 bits",
            "use a --k below --bits",
        ]);
    }
    train(&["--bits", "0", "--k", "1"])
        .fails_with(&["bsa: invalid argument: --bits must be positive"]);
    train(&["--bits", "32", "--k", "4", "--lr", "0"])
        .fails_with(&["bsa: invalid argument: --lr must be a positive number, got 0"]);
    train(&["--bits", "32", "--k", "4", "--lr=-1e-3"])
        .fails_with(&["--lr must be a positive number"]);
    train(&["--bits", "32", "--k", "4", "--epochs", "0"])
        .fails_with(&["bsa: invalid argument: --epochs must be at least 1"]);
    train(&["--bits", "32", "--k", "4", "--batch", "0"])
        .fails_with(&["bsa: invalid argument: --batch must be at least 1"]);
    train(&[
        "--bits",
        "32",
        "--k",
        "4",
        "--epochs",
        "2",
        "--warmup-epochs",
        "2",
    ])
    .fails_with(&["--warmup-epochs 2 must be below --epochs 2"]);
    train(&["--bits", "32", "--k", "4", "--alpha=-1"])
        .fails_with(&["bsa: invalid argument: --alpha must be a number >= 0"]);
    // Finite as f64 but not in the f32 loss: said so, not reported as a divergence.
    train(&["--bits", "32", "--k", "4", "--alpha", "1e39"]).fails_with(&[
        "--alpha must be a number >= 0 within float32's range",
        "1e39",
    ]);
    train(&["--bits", "32", "--k", "4", "--neighbour-weight", "1e39"]).fails_with(&[
        "--neighbour-weight must be a number >= 0 within float32's range",
        "1e39",
    ]);
    // A negative number is the flag's bad value, not an unknown argument `-1`.
    train(&["--bits", "32", "--k", "4", "--epochs", "-1"])
        .usage_error(&["invalid value '-1' for '--epochs"]);
    train(&["--bits", "32", "--k", "4", "--threads", "0"])
        .fails_with(&["bsa: invalid argument: --threads must be in 1..=1024, got 0"]);
    train(&["--bits", "32", "--k", "4", "--threads", "4000"])
        .fails_with(&["--threads must be in 1..=1024, got 4000"]);
    train(&["--bits", "100000", "--k", "4"])
        .fails_with(&["bsa: invalid argument: --bits must be at most 65536, got 100000"]);
    train(&["--bits", "18446744073709551615", "--k", "4"])
        .fails_with(&["--bits must be at most 65536"]);
    for method in ["topk", "lsh", "itq", "pursuit"] {
        train(&["--bits", "100000", "--k", "4", "--method", method])
            .fails_with(&["--bits must be at most 65536"]);
    }
    // Checked by clap.
    train(&["--bits", "32", "--k", "4", "--method", "bogus"]).usage_error(&[
        "--method",
        "bogus",
        "bsa, topk",
    ]);
    train(&["--bits", "32", "--k", "4", "--loss", "l1"]).usage_error(&["--loss", "cosine, mse"]);
    train(&["--bits", "32", "--k", "-1"]).usage_error(&["--k"]);
    train(&["--bits", "32"]).usage_error(&["--k"]);
    train(&["--bits", "32", "--k", "4", "--lr", "fast"]).usage_error(&["--lr", "fast"]);
    t.bsa(&[
        "encode",
        "--model",
        "model.safetensors",
        "--data",
        "good.npy",
    ])
    .usage_error(&["--out"]);
    t.bsa(&["frobnicate"]).usage_error(&["frobnicate"]);
}

/// `--out` naming an input (the same file, a link to it, a file inside the index searched, or an
/// index folder holding the data it is rebuilt from) is refused before anything is written, and
/// the input is unchanged.
#[test]
fn out_never_overwrites_an_input() {
    let t = setup();
    let good = t.read("good.npy");
    let model = t.read("model.safetensors");
    let same = |args: &[&str], needles: &[&str]| {
        t.bsa(args).fails_with(needles);
        assert_eq!(t.read("good.npy"), good, "{args:?} changed the data");
        assert_eq!(
            t.read("model.safetensors"),
            model,
            "{args:?} changed the model"
        );
    };
    let encode = [
        "encode",
        "--model",
        "model.safetensors",
        "--data",
        "good.npy",
        "--out",
    ];
    same(
        &[&encode[..], &["good.npy"]].concat(),
        &["--out good.npy", "--data good.npy"],
    );
    same(
        &[&encode[..], &["./model.safetensors"]].concat(),
        &["--model", "choose another"],
    );
    std::fs::hard_link(t.path("good.npy"), t.path("link.npy")).unwrap();
    same(
        &[&encode[..], &["link.npy"]].concat(),
        &["--out link.npy", "--data"],
    );
    same(
        &[
            "train", "--data", "good.npy", "--bits", "32", "--k", "4", "--out", "good.npy", "-q",
        ],
        &["--out good.npy", "--data good.npy"],
    );
    same(
        &[
            "groundtruth",
            "--base",
            "good.npy",
            "--queries",
            "good.npy",
            "--k",
            "3",
            "--out",
            "good.npy",
        ],
        &["--base good.npy"],
    );

    build_idx(&t);
    let manifest = t.read("idx/manifest.json");
    t.bsa(&[
        "search",
        "--index",
        "idx",
        "--queries",
        "good.npy",
        "--out",
        "idx/manifest.json",
    ])
    .fails_with(&["--out idx/manifest.json", "inside --index idx"]);
    assert_eq!(t.read("idx/manifest.json"), manifest);
    std::fs::copy(t.path("good.npy"), t.path("idx/mine.npy")).unwrap();
    t.bsa(&[
        "build",
        "--model",
        "model.safetensors",
        "--data",
        "idx/mine.npy",
        "-q",
        "--force",
        "--out",
        "idx",
    ])
    .fails_with(&["--out idx", "--data idx/mine.npy"]);
    assert_eq!(t.read("idx/mine.npy"), good);

    // A search's --out is written whole: the results, and no temporary file beside them.
    let found = t
        .bsa(&[
            "search",
            "--index",
            "idx",
            "--queries",
            "good.npy",
            "--k",
            "2",
            "--out",
            "hits.jsonl",
        ])
        .ok();
    assert!(found.stdout.is_empty());
    assert_eq!(
        String::from_utf8(t.read("hits.jsonl"))
            .unwrap()
            .lines()
            .count(),
        40
    );
    let names: Vec<String> = std::fs::read_dir(t.path("."))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp")), "{names:?}");
}

/// Mistakes with the inputs of build, add, train, bench and search name the file or flag
/// concerned and say what to give instead.
#[test]
fn messages_name_the_input_at_fault() {
    let t = setup();
    let i64s = |v: &[i64]| {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        npy_bytes("<i8", &format!("({},)", v.len()), &bytes)
    };
    t.write_f32("one.npy", &normalised(1, 16, 2));
    t.write_f32("narrow.npy", &normalised(12, 8, 3));
    t.write("codes.npy", &npy_bytes("|u1", "(3, 4)", &[7u8; 12]));
    t.write("none.npy", &npy_bytes("|u1", "(0, 4)", &[]));
    t.write("dup.npy", &i64s(&[1, 1, 2]));
    t.bsa(&["build", "--data", "good.npy", "--out", "i1"])
        .fails_with(&[
            "give --model M --data X",
            "bsa train --data X",
            "or --codes C",
        ]);
    // --bits is the width of packed codes; asked of float data, the answer is a model.
    t.bsa(&["build", "--data", "good.npy", "--bits", "64", "--out", "i1"])
        .fails_with(&[
            "--bits gives the width of --codes",
            "bsa train --data X --bits N",
        ]);
    t.bsa(&[
        "train",
        "--data",
        "one.npy",
        "--bits",
        "32",
        "--k",
        "4",
        "--out",
        "o.safetensors",
    ])
    .fails_with(&["one.npy: 1 row; training needs at least 2"]);
    t.bsa(&[
        "build",
        "--codes",
        "codes.npy",
        "--ids",
        "dup.npy",
        "--out",
        "i2",
    ])
    .fails_with(&["codes.npy and dup.npy", "id 1 appears more than once"]);
    t.bsa(&["build", "--codes", "none.npy", "--out", "i3"])
        .fails_with(&["from none.npy", "0 rows; there is nothing to index"]);
    t.bsa(&["build", "--codes", "codes.npy", "--out", "good.npy/idx"])
        .fails_with(&["good.npy is a file, not a directory"]);
    // Float data beside codes: nothing without a model could use it (float queries need one).
    t.write_f32("three.npy", &normalised(3, 16, 9));
    t.bsa(&[
        "build",
        "--codes",
        "codes.npy",
        "--data",
        "three.npy",
        "--out",
        "i4",
    ])
    .fails_with(&["used only with a model", "leave the data out"]);
    assert!(!t.exists("i4"));
    // --vectors without a model says so (clap's "--data is required" led to the refusal above).
    t.bsa(&["build", "--codes", "codes.npy", "--vectors", "--out", "i4"])
        .fails_with(&[
            "--vectors stores the --data vectors",
            "--model M --data X --vectors",
        ]);
    build_idx(&t);
    // Query codes of another width (padding bits set), a labels file that is not text, and
    // an ef above what a graph search takes: named before any search.
    let mut wide = vec![0u8; 3 * 4];
    wide[3] = 0x80; // bit 31 of row 0, beyond the 30 bits of the index
    t.write("q30.npy", &npy_bytes("|u1", "(3, 4)", &wide));
    t.bsa(&[
        "build",
        "--codes",
        "codes.npy",
        "--bits",
        "30",
        "--out",
        "i30",
        "-q",
    ]);
    t.bsa(&["search", "--index", "i30", "--query-codes", "q30.npy"])
        .fails_with(&["--query-codes q30.npy", "row 0"]);
    // No queries: refused as an empty --queries file is (it printed nothing, exit 0).
    t.write("none.npy", &npy_bytes("|u1", "(0, 4)", &[]));
    t.bsa(&["search", "--index", "i30", "--query-codes", "none.npy"])
        .fails_with(&["none.npy: no rows"]);
    t.write("labels.bin", &[0xff, 0xfe, 0x00, 0x80]);
    t.bsa(&[
        "search",
        "--index",
        "idx",
        "--queries",
        "good.npy",
        "--labels",
        "labels.bin",
    ])
    .fails_with(&["--labels labels.bin: not UTF-8 text"]);
    t.bsa(&[
        "search",
        "--index",
        "idx",
        "--queries",
        "good.npy",
        "--mode",
        "hnsw",
    ])
    .fails_with(&["idx: the index has no HNSW graph", "bsa build --hnsw"]);
    // It offers only the modes the index has: without posting lists, flat alone.
    build_index(&t, "idxn", &["--no-inverted"]);
    let no_lists = [
        "search",
        "--index",
        "idxn",
        "--queries",
        "good.npy",
        "--mode",
        "hnsw",
    ];
    let said = t
        .bsa(&no_lists)
        .fails_with(&["or use mode flat"])
        .to_string();
    assert!(!said.contains("inverted"), "{said}");
    build_index(&t, "idxg", &["--hnsw"]);
    t.bsa(&[
        "search",
        "--index",
        "idxg",
        "--queries",
        "good.npy",
        "--mode",
        "hnsw",
        "--score",
        "adc",
        "--ef",
        "4000000000",
    ])
    .fails_with(&["ef 4000000000 is above 1048576"]);
    t.bsa(&["add", "--index", "idx", "--data", "narrow.npy"])
        .fails_with(&["adding narrow.npy to idx", "expected 16, got 8"]);
    let bench = t.bsa(&[
        "bench",
        "--base",
        "good.npy",
        "--queries",
        "narrow.npy",
        "--out",
        "b",
    ]);
    let msg = bench.fails_with(&["narrow.npy has 8 columns but good.npy has 16"]);
    assert!(!msg.contains("model"), "{msg}");
    t.bsa(&["search", "--index", "nowhere", "--queries", "good.npy"])
        .fails_with(&["nowhere: no such index directory"]);
    std::fs::create_dir(t.path("plain")).unwrap();
    t.bsa(&["search", "--index", "plain", "--queries", "good.npy"])
        .fails_with(&["not an index directory"]);
    t.bsa(&["search", "--index", "idx", "--query-codes", "good.npy"])
        .fails_with(&["good.npy: float embeddings", "--queries"]);
    t.bsa(&[
        "search",
        "--index",
        "idx",
        "--queries",
        "good.npy",
        "--rescore",
        "0",
    ])
    .fails_with(&["--rescore must be at least 1"]);
    // Flags the search would ignore are refused.
    t.bsa(&[
        "search",
        "--index",
        "idx",
        "--queries",
        "good.npy",
        "--ef",
        "50",
    ])
    .fails_with(&[
        "ef sets the graph search's candidate list",
        "mode flat is exact",
    ]);
    t.bsa(&[
        "search",
        "--index",
        "idx",
        "--queries",
        "good.npy",
        "--collection",
        "c",
    ])
    .fails_with(&["--collection names a Milvus collection", "--milvus"]);
    t.bsa(&["compact", "--index", "idx", "--max-segments", "0"])
        .fails_with(&["--max-segments must be at least 1"]);
}

/// An `--out` that is not a regular file is refused before any work and left as it was (a
/// device or pipe would have been replaced by the rename, or the command would wait on the
/// pipe forever); a symbolic link is followed, the file it names replaced and the link kept;
/// a missing folder is named (a file's; a built index's folder is made with its parents).
#[cfg(unix)]
#[test]
fn outputs_are_regular_files() {
    let t = setup();
    let encode = |data: &str, out: &str| {
        t.bsa(&[
            "encode",
            "--model",
            "model.safetensors",
            "--data",
            data,
            "--out",
            out,
        ])
    };
    std::fs::create_dir(t.path("folder")).unwrap();
    encode("good.npy", "folder")
        .fails_with(&["--out folder: a directory", "give the path of a file"]);
    // A path ending in '/' names a folder, even one that does not exist: no `codes.npy`.
    encode("good.npy", "codes.npy/").fails_with(&[
        "--out codes.npy/: ends in a path separator",
        "give the path of a file",
    ]);
    encode("good.npy", "codes.npy/.").fails_with(&[
        "--out codes.npy/.: ends in a path separator",
        "give the path of a file",
    ]);
    assert!(!t.exists("codes.npy"));
    let fifo = t.path("pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    encode("good.npy", "pipe").fails_with(&["--out pipe: not a regular file"]);
    // A character device is written in place, not replaced: /dev/null discards an output.
    encode("good.npy", "/dev/null").ok();
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    // A pipe as the input beside an existing output: refused by its reader, not waited on.
    t.write("old.npy", b"old");
    encode("pipe", "old.npy").fails_with(&["pipe"]);
    assert_eq!(t.read("old.npy"), b"old");
    encode("good.npy", "missing/codes.npy")
        .fails_with(&["--out missing/codes.npy: the folder missing does not exist"]);
    // A folder output is made with its parents, as `mkdir -p` (README).
    build_index(&t, "made/with/parents", &[]);
    assert!(t.exists("made/with/parents/manifest.json"));
    t.write("target.npy", b"old");
    std::os::unix::fs::symlink("target.npy", t.path("link.npy")).unwrap();
    encode("good.npy", "link.npy").ok();
    assert!(
        std::fs::symlink_metadata(t.path("link.npy"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(bsa::io::read_u8(t.path("target.npy")).unwrap().0, 40);
    // A dangling link: the file it names is made (as a shell's `>` makes it), the link kept.
    std::os::unix::fs::symlink("made.npy", t.path("dangling.npy")).unwrap();
    encode("good.npy", "dangling.npy").ok();
    let meta = std::fs::symlink_metadata(t.path("dangling.npy")).unwrap();
    assert!(meta.file_type().is_symlink());
    assert_eq!(bsa::io::read_u8(t.path("made.npy")).unwrap().0, 40);
}

/// `--out /dev/stdout` writes to stdout as it is: a pipe (refused as "not a regular file"
/// before), or a file the shell appends to, whose earlier lines are kept (the rename replaced
/// the file before, losing them).
#[cfg(target_os = "linux")]
#[test]
fn out_dev_stdout_is_the_stream_itself() {
    let t = setup();
    build_idx(&t);
    let search = [
        "search",
        "--index",
        "idx",
        "--queries",
        "good.npy",
        "--k",
        "2",
    ];
    let plain = t.bsa(&search).ok().stdout.clone();
    // The harness reads stdout through a pipe.
    let mut args = search.to_vec();
    args.extend(["--out", "/dev/stdout"]);
    assert_eq!(t.bsa(&args).ok().stdout, plain);
    t.write("log.txt", b"earlier\n");
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(t.path("log.txt"))
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bsa"))
        .args(&args)
        .current_dir(t.path(""))
        .stdout(log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let want = format!("earlier\n{plain}");
    assert_eq!(String::from_utf8(t.read("log.txt")).unwrap(), want);
}

/// Codes whose bytes are all 0 or 1 look like bits stored one per byte (`astype(np.uint8)` of
/// 0/1 values): the build, an add and a search by such query codes say so, and how to pack
/// them; packed codes build without a word.
#[test]
fn unpacked_bits_are_pointed_out() {
    let t = TestDir::new();
    let ones: Vec<u8> = (0..64 * 8).map(|i| (i % 3 == 0) as u8).collect();
    t.write("bits.npy", &npy_bytes("|u1", "(64, 8)", &ones));
    let out = t
        .bsa(&["build", "--codes", "bits.npy", "--out", "i1", "-q"])
        .ok();
    assert!(
        out.stderr.contains("every byte of bits.npy is 0 or 1"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("np.packbits"), "{}", out.stderr);
    let packed: Vec<u8> = (0..64 * 8).map(|i| (i * 37 % 251) as u8).collect();
    t.write("codes.npy", &npy_bytes("|u1", "(64, 8)", &packed));
    let out = t
        .bsa(&["build", "--codes", "codes.npy", "--out", "i2", "-q"])
        .ok();
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    for args in [
        &["search", "--index", "i2", "--query-codes", "bits.npy"][..],
        &["add", "--index", "i2", "--codes", "bits.npy"][..],
    ] {
        let out = t.bsa(args).ok();
        assert!(
            out.stderr.contains("every byte of bits.npy is 0 or 1"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

/// A full disk behind stdout is said as standard output's (it was a bare "No space left on
/// device"), exit 2.
#[cfg(target_os = "linux")]
#[test]
fn a_failed_write_to_stdout_says_so() {
    let t = setup();
    build_idx(&t);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bsa"))
        .args(["info", "--index", "idx"])
        .current_dir(t.path(""))
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bsa: writing to standard output: No space left on device"),
        "{stderr}"
    );
}

/// A command that needs one of two flags names both when neither is given (it named one:
/// `bsa add` asked for --data of an index built from codes).
#[test]
fn a_missing_choice_names_both_flags() {
    let t = TestDir::new();
    t.bsa(&["add", "--index", "idx"])
        .usage_error(&["<--data <DATA>|--codes <CODES>>"]);
    t.bsa(&["search", "--index", "idx"])
        .usage_error(&["<--queries <QUERIES>|--query-codes <QUERY_CODES>>"]);
    t.bsa(&["search", "--queries", "q.npy"])
        .usage_error(&["<--index <INDEX>|--milvus <MILVUS>>"]);
    t.bsa(&[
        "add", "--index", "idx", "--data", "a.npy", "--codes", "b.npy",
    ])
    .usage_error(&["'--data <DATA>' cannot be used with '--codes <CODES>'"]);
}

/// A graph on the data of an index of codes is refused with the reason alone: the warning to
/// keep the data (--vectors, which codes cannot take) came first (a review's finding).
#[test]
fn a_refused_build_gives_no_advice_it_cannot_take() {
    let t = setup();
    t.bsa(&[
        "encode",
        "--model",
        "model.safetensors",
        "--data",
        "good.npy",
        "--out",
        "codes.npy",
    ])
    .ok();
    let out = t.bsa(&[
        "build",
        "--codes",
        "codes.npy",
        "--hnsw",
        "--hnsw-on",
        "data",
        "--out",
        "idx",
    ]);
    let msg = out.fails_with(&["needs a model"]);
    assert!(!msg.contains("warning"), "{msg}");
}

/// Training computes in float32: a row whose squared norm is not a normal float32 (norm above
/// 1.8e19 or below 1.1e-19) is refused by every trainer, naming the file and row, where it
/// used to train a model that gives every row one code (and blame --lr or --ridge). `bsa eval`
/// and `bsa bench` compute so too, and refuse them (eval said such rows were at cosine
/// distance 1).
#[test]
fn training_refuses_rows_float32_cannot_square() {
    let t = TestDir::new();
    t.write_f32("unit.npy", &normalised(50, 8, 1));
    t.bsa(&[
        "train",
        "--data",
        "unit.npy",
        "--bits",
        "16",
        "--k",
        "4",
        "--epochs",
        "1",
        "--out",
        "unit.safetensors",
        "-q",
    ])
    .ok();
    for (name, scale) in [("long.npy", 1e20f32), ("short.npy", 1e-20)] {
        let mut m = normalised(50, 8, 1);
        m.row_mut(7).iter_mut().for_each(|v| *v *= scale);
        t.write_f32(name, &m);
        t.bsa(&["eval", "--model", "unit.safetensors", "--data", name])
            .fails_with(&[&format!("{name}: row 7: L2 norm"), "L2-normalise"]);
        // bench trains on its base and evaluates on its queries, both in float32.
        for (base, queries) in [(name, "unit.npy"), ("unit.npy", name)] {
            t.bsa(&[
                "bench",
                "--base",
                base,
                "--queries",
                queries,
                "--methods",
                "sign",
                "--out",
                "r",
            ])
            .fails_with(&[&format!("{name}: row 7: L2 norm")]);
        }
        let methods: [&[&str]; 4] = [
            &["--bits", "16", "--k", "4", "--epochs", "1"],
            &["--bits", "16", "--k", "4", "--epochs", "1", "--loss", "mse"],
            &["--method", "itq", "--bits", "4"],
            &[
                "--method", "pursuit", "--bits", "16", "--k", "2", "--rounds", "1",
            ],
        ];
        for method in methods {
            let args = [
                &["train", "--data", name, "--out", "m.safetensors", "-q"][..],
                method,
            ]
            .concat();
            t.bsa(&args)
                .fails_with(&[&format!("{name}: row 7: L2 norm"), "L2-normalise"]);
            assert!(!t.exists("m.safetensors"));
        }
    }
    // At the edges of the range, a row trains.
    let mut m = normalised(50, 8, 1);
    m.row_mut(7).iter_mut().for_each(|v| *v *= 1e19);
    t.write_f32("edge.npy", &m);
    t.bsa(&[
        "train",
        "--data",
        "edge.npy",
        "--bits",
        "16",
        "--k",
        "4",
        "--epochs",
        "1",
        "-q",
        "--out",
        "m.safetensors",
    ])
    .ok();
}

/// A model that gives every row one code is written (training ended without error) with a
/// warning naming the file: rows of norm 0.001 leave a BSA model so; unit rows do not.
#[test]
fn a_model_of_one_code_is_warned_of() {
    let t = TestDir::new();
    let mut m = normalised(300, 16, 1);
    m.data.iter_mut().for_each(|v| *v *= 1e-3);
    t.write_f32("small.npy", &m);
    t.write_f32("unit.npy", &normalised(300, 16, 1));
    let train = |data: &str| {
        let args = [
            "train", "--data", data, "--bits", "64", "--k", "8", "--epochs", "2", "-q",
        ];
        t.bsa(&[&args[..], &["--out", "m.safetensors"]].concat())
            .ok()
            .stderr
            .clone()
    };
    let small = train("small.npy");
    assert!(
        small.contains("the model gives all 300 rows of small.npy one code"),
        "{small}"
    );
    let unit = train("unit.npy");
    assert!(!unit.contains("one code"), "{unit}");
}
