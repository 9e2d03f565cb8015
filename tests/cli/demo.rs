//! `bsa demo`, the README's first command, on the bundled sample: it runs through, keeps what
//! it made in `--work-dir`, never replaces files it did not make, and stops quietly when its
//! reader does.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::util::TestDir;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench-data");

#[test]
fn demo_runs_and_keeps_only_its_own_folder() {
    let t = TestDir::new();
    let demo = |work: &str| {
        t.bsa(&[
            "demo",
            "--epochs",
            "1",
            "--show",
            "1",
            "--data-dir",
            SAMPLE,
            "--work-dir",
            work,
        ])
    };
    let out = demo("w").ok();
    for step in [
        "1. Training BSA",
        "2. The paper's metrics",
        "recall@10",
        "5. Codes that retrieve",
    ] {
        assert!(
            out.stdout.contains(step),
            "{step:?} missing: {}",
            out.stdout
        );
    }
    assert!(t.exists("w/model.safetensors") && t.exists("w/index/manifest.json"));
    // Its own folder again: replaced.
    demo("w").ok();
    // A folder with the user's files: refused before anything is printed or written.
    std::fs::create_dir(t.path("mine")).unwrap();
    t.write("mine/model.safetensors", b"the user's model");
    demo("mine").fails_with(&["--work-dir mine", "give a new or empty folder"]);
    assert_eq!(t.read("mine/model.safetensors"), b"the user's model");
    assert!(!t.exists("mine/index"));
    // Bad settings too, and no folder is made for them.
    t.bsa(&[
        "demo",
        "--epochs",
        "0",
        "--data-dir",
        SAMPLE,
        "--work-dir",
        "w0",
    ])
    .fails_with(&["--epochs must be at least 1"]);
    assert!(!t.exists("w0"));
}

/// `--data-dir` with ground truth of fewer than 10 neighbours a query: refused as `bsa bench
/// --gt` refuses it (it printed recall@10 0.200), and ids past the base likewise.
#[test]
fn demo_refuses_ground_truth_bench_would() {
    use crate::util::{normalised, npy_bytes};
    let t = TestDir::new();
    std::fs::create_dir(t.path("d")).unwrap();
    t.write_f32("d/base.npy", &normalised(200, 8, 1));
    t.write_f32("d/query.npy", &normalised(10, 8, 2));
    let lines = |n: usize| (0..n).map(|i| format!("row {i}\n")).collect::<String>();
    t.write("d/base.txt", lines(200).as_bytes());
    t.write("d/query.txt", lines(10).as_bytes());
    let gt = |cols: usize, id: i32| {
        let data: Vec<u8> = (0..10 * cols).flat_map(|_| id.to_le_bytes()).collect();
        npy_bytes("<i4", &format!("(10, {cols})"), &data)
    };
    let demo = || t.bsa(&["demo", "--epochs", "1", "--show", "1", "--data-dir", "d"]);
    t.write("d/gt_top100.npy", &gt(2, 3));
    demo().fails_with(&["gt_top100.npy: 2 neighbours per query; recall@10 needs at least 10"]);
    t.write("d/gt_top100.npy", &gt(10, 500));
    demo().fails_with(&["gt_top100.npy: id 500 is not a row of the 200 base vectors"]);
}

/// `bsa demo | head -1`: the closed stdout ends the demo with exit 0, not a panic.
#[test]
fn a_closed_stdout_ends_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bsa"))
        .args(["demo", "--epochs", "1", "--show", "1", "--data-dir", SAMPLE])
        .env("OPENBLAS_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run the bsa binary");
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // stdout is dropped (closed) here: the demo's next line fails to write.
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
