//! `bsa train`: the JSON summary, reproducibility, thread count.

use crate::util::{TestDir, Weights, normalised};

fn train_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train", "--data", "x.npy", "--bits", "32", "--k", "4", "--epochs", "3", "--batch", "64",
        "--out", out, "--json", "-q",
    ];
    args.extend_from_slice(extra);
    args
}

#[track_caller]
fn finite(v: &serde_json::Value, key: &str) -> f64 {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {v}"));
    assert!(x.is_finite(), "{key} = {x}");
    x
}

/// A fit that finishes but learns nothing says so on stderr and in the summary: a learning
/// rate far too large or too small trained to a poor model and said nothing.
#[test]
fn a_fit_that_learns_nothing_warns() {
    let t = TestDir::new();
    t.write_f32("x.npy", &normalised(300, 16, 31));
    let s = t.bsa(&train_args("good.safetensors", &[])).ok();
    assert!(!s.stderr.contains("warning"), "{}", s.stderr);
    assert_eq!(s.json()["warnings"], serde_json::json!([]));
    for (lr, needle) in [
        (
            "1e30",
            "bsa: warning: --lr 1e30 is above 1: Adam moves every weight",
        ),
        (
            "1e-30",
            "bsa: warning: the training loss did not fall over 3 epochs",
        ),
    ] {
        let out = t.bsa(&train_args("m.safetensors", &["--lr", lr])).ok();
        assert!(out.stderr.contains(needle), "{lr}: {}", out.stderr);
        let warnings = out.json()["warnings"].clone();
        let said = needle.strip_prefix("bsa: warning: ").unwrap();
        assert!(
            warnings[0].as_str().is_some_and(|w| w.starts_with(said)),
            "{warnings}"
        );
    }
}

#[test]
fn json_summary_is_one_line() {
    let t = TestDir::new();
    t.write_f32("x.npy", &normalised(300, 16, 31));
    let out = t.bsa(&train_args("m.safetensors", &[])).ok();
    let s = out.json();
    assert_eq!(s["type"], "summary", "{s}");
    assert!(finite(&s, "samples_per_sec") > 0.0, "{s}");
    let train_loss = finite(&s, "train_loss");
    let val_loss = finite(&s, "validation_loss");
    assert!(train_loss > 0.0 && val_loss > 0.0, "{s}");
    assert_eq!(s["n"], 300);
    assert_eq!(s["dim"], 16);
    assert_eq!(s["bits"], 32);
    assert_eq!(s["k"], 4);
    assert_eq!(s["method"], "bsa");
    assert_eq!(s["epochs"], 3);
    assert_eq!(s["history"].as_array().map(Vec::len), Some(3), "{s}");
    assert_eq!(s["model"], "m.safetensors");
    // Quiet: no progress and no chatter on stderr.
    assert!(out.stderr.is_empty(), "{out:#?}");
    let w = Weights::load(&t.path("m.safetensors"));
    assert_eq!((w.bits, w.dim), (32, 16));
}

#[test]
fn without_json_stdout_is_empty() {
    let t = TestDir::new();
    t.write_f32("x.npy", &normalised(100, 8, 32));
    let out = t
        .bsa(&[
            "train",
            "--data",
            "x.npy",
            "--bits",
            "16",
            "--k",
            "2",
            "--epochs",
            "1",
            "--out",
            "m.safetensors",
            "-q",
        ])
        .ok();
    assert!(out.stdout.is_empty(), "{out:#?}");
    assert!(out.stderr.contains("wrote m.safetensors"), "{out:#?}");
}

#[test]
fn same_seed_gives_identical_model_files() {
    let t = TestDir::new();
    t.write_f32("x.npy", &normalised(300, 16, 33));
    for (a, b, extra) in [
        ("a.safetensors", "b.safetensors", &["--seed", "5"][..]),
        (
            "c.safetensors",
            "d.safetensors",
            &["--seed", "5", "--threads", "1"][..],
        ),
        (
            "e.safetensors",
            "f.safetensors",
            &["--seed", "5", "--method", "topk"][..],
        ),
    ] {
        t.bsa(&train_args(a, extra)).ok();
        t.bsa(&train_args(b, extra)).ok();
        assert!(
            t.read(a) == t.read(b),
            "{a} and {b} differ (flags {extra:?})"
        );
    }
    // A different seed gives a different model.
    t.bsa(&train_args("g.safetensors", &["--seed", "6"])).ok();
    assert!(
        Weights::load(&t.path("a.safetensors")).we != Weights::load(&t.path("g.safetensors")).we,
        "seeds 5 and 6 gave the same weights"
    );
}

#[test]
fn one_thread_works() {
    let t = TestDir::new();
    t.write_f32("x.npy", &normalised(300, 16, 34));
    let s = t
        .bsa(&train_args("m.safetensors", &["--threads", "1"]))
        .ok()
        .json();
    assert_eq!(s["threads"], 1, "{s}");
    assert!(finite(&s, "train_loss") > 0.0);
    finite(&s, "validation_loss");
    assert!(finite(&s, "samples_per_sec") > 0.0);
    assert!(t.exists("m.safetensors"));
}

/// `--json` and `--out /dev/stdout` would write the summary and the model down one stream,
/// neither readable: refused (it exited 0 with both mixed; a review's finding).
#[cfg(target_os = "linux")]
#[test]
fn json_and_a_model_on_stdout_are_refused() {
    let t = TestDir::new();
    t.write_f32("x.npy", &normalised(200, 16, 1));
    let out = t.bsa(&train_args("/dev/stdout", &[]));
    out.fails_with(&["--json prints its summary on stdout", "--out /dev/stdout"]);
}
