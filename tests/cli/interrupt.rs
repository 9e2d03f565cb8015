//! Ctrl-C (SIGINT) and SIGTERM during `bsa build`: the build stops within about a second,
//! removes its unfinished directory, leaves the index it would have replaced as it was, and
//! ends by the signal (as a shell expects of a command it interrupted). `bsa add` stops before
//! its commit the same way.

#![cfg(unix)]

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{TestDir, normalised, npy_bytes};

#[test]
fn a_signalled_build_stops_and_leaves_no_trace() {
    let t = TestDir::new();
    // 30,000 random 256-bit codes with a graph on them (hnsw_rs, ef_construction 200): a
    // build of several seconds at least, stopped long before its end.
    let (n, bytes) = (30_000usize, 32usize);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let codes: Vec<u8> = (0..n * bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    t.write(
        "c.npy",
        &npy_bytes("|u1", &format!("({n}, {bytes})"), &codes),
    );
    t.write("small.npy", &npy_bytes("|u1", "(3, 32)", &codes[..96]));
    t.bsa(&["build", "--codes", "small.npy", "--out", "idx", "-q"])
        .ok();
    let before = t.read("idx/manifest.json");
    for signal in ["-INT", "-TERM"] {
        let child = bsa_in_a_terminal(&t)
            .args([
                "build", "--codes", "c.npy", "--out", "idx", "--force", "--hnsw", "-q",
            ])
            .spawn()
            .unwrap();
        // Signalled once the build is writing its temporary directory (the handler is in).
        let pid = child.id();
        let stderr = stop_with(child, signal, || staging(&t, "idx", pid));
        assert!(
            stderr.contains("building idx from c.npy: stopped before it finished"),
            "{signal}: {stderr}"
        );
        assert_eq!(t.names(""), ["c.npy", "idx", "small.npy"], "{signal}");
        assert_eq!(t.read("idx/manifest.json"), before, "{signal}");
        t.bsa(&["verify", "--index", "idx"]).ok();
    }
    // `bsa add` stops before its commit, leaving the index as it was, files included.
    t.bsa(&[
        "build",
        "--codes",
        "small.npy",
        "--out",
        "live",
        "--hnsw",
        "-q",
    ])
    .ok();
    let listing = || t.names("live");
    let before = listing();
    let child = bsa_in_a_terminal(&t)
        .args([
            "add",
            "--index",
            "live",
            "--codes",
            "c.npy",
            "--merge-factor",
            "0",
        ])
        .spawn()
        .unwrap();
    // Signalled once the new segment is being written.
    stop_with(child, "-INT", || {
        listing().iter().any(|n| n.contains(".tmp-"))
    });
    // The writers' lock file stays (it is made by the first writer).
    let after: Vec<String> = listing().into_iter().filter(|n| n != "LOCK").collect();
    assert_eq!(after, before);
    let verified = t.bsa(&["verify", "--index", "live"]).ok();
    assert!(
        verified.stdout.contains("ok, 3 codes"),
        "{}",
        verified.stdout
    );
    // A build started with SIGINT ignored (a script's background job) ignores Ctrl-C.
    t.write(
        "mid.npy",
        &npy_bytes("|u1", "(8000, 32)", &codes[..8000 * 32]),
    );
    let mut child = Command::new("sh")
        .args([
            "-c",
            &format!("trap '' INT; exec '{}' \"$@\"", env!("CARGO_BIN_EXE_bsa")),
        ])
        .args([
            "sh", "build", "--codes", "mid.npy", "--out", "mid", "--hnsw", "-q",
        ])
        .args(["--m", "8", "--ef-construction", "40"])
        .current_dir(t.path(""))
        .spawn()
        .unwrap();
    let pid = child.id();
    signal_when(&mut child, "-INT", || staging(&t, "mid", pid));
    assert!(child.wait().unwrap().success());
    let verified = t.bsa(&["verify", "--index", "mid"]).ok();
    assert!(verified.stdout.contains("8000"), "{}", verified.stdout);
    // What a killed build left (SIGKILL: no clean-up) is pointed out by the next build there.
    std::fs::create_dir(t.path(".mid.tmp-1")).unwrap();
    let out = t
        .bsa(&[
            "build",
            "--codes",
            "small.npy",
            "--out",
            "mid",
            "--force",
            "-q",
        ])
        .ok();
    assert!(
        out.stderr
            .contains(".mid.tmp-1 was left by a build of mid that was killed"),
        "{}",
        out.stderr
    );
}

/// `bsa` with the signals the tests send at their default action, as a terminal runs it: a
/// test harness started in the background by a shell without job control (`cargo test &` in
/// a script) passes SIGINT on ignored, and bsa rightly keeps an ignored signal ignored (a
/// script's background job goes on when Ctrl-C stops the script). It runs in `t`'s folder with
/// one OpenBLAS thread, its output piped.
fn bsa_in_a_terminal(t: &TestDir) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(env!("CARGO_BIN_EXE_bsa"));
    c.current_dir(t.path(""))
        .env("OPENBLAS_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: signal() only, between fork and exec.
    unsafe {
        c.pre_exec(|| {
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::signal(s, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    c
}

/// Whether process `pid`'s build of `name` has made its staging folder (`.NAME.tmp-PID-N`, N
/// random) in the test folder.
fn staging(t: &TestDir, name: &str, pid: u32) -> bool {
    let prefix = format!(".{name}.tmp-{pid}-");
    std::fs::read_dir(t.path("")).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(&prefix)
    })
}

/// Sends `signal` (`"-INT"`, `"-TERM"`) to `child` once `ready()` holds (polled every 5 ms),
/// failing if the child ends first.
/// Ctrl-C during `bsa bench` stops it at the next training step: it ends by the signal, its
/// temporary folder of indexes is removed (a killed bench left it in $TMPDIR), and no report
/// is written.
#[test]
fn a_signalled_bench_stops_and_leaves_no_trace() {
    let t = TestDir::new();
    t.write_f32("base.npy", &normalised(2000, 32, 5));
    std::fs::create_dir(t.path("tmp")).unwrap();
    let child = bsa_in_a_terminal(&t)
        .args([
            "bench",
            "--base",
            "base.npy",
            "--queries",
            "base.npy",
            "--methods",
            "bsa",
            "--bits",
            "256",
            "--k",
            "8",
            "--epochs",
            "2000",
            "--hnsw",
            "none",
            "--cache",
            "cache",
            "-q",
            "--out",
            "rep",
        ])
        .env("TMPDIR", t.path("tmp"))
        .spawn()
        .unwrap();
    // Signalled once the cells' temporary folder exists (the handler is in by then).
    let tmp = t.path("tmp");
    stop_with(child, "-INT", || {
        std::fs::read_dir(&tmp).unwrap().next().is_some()
    });
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "{left:?} left in TMPDIR");
    assert!(!t.exists("rep"));
}

/// Ctrl-C or SIGTERM during `bsa train` (each kind of fit), `bsa groundtruth` and `bsa search`
/// stops them at their next step, round, block or batch: they end by the signal within seconds
/// (the trainings would run for minutes), say so, and write nothing. (A signal during the
/// final write would leave its temporary file, were it not for `bsa::io::abandon_writes_on`,
/// which its doctest covers. The ground truth and the search here take seconds, not minutes:
/// the time limit cannot tell whether they stopped between blocks or at their write.)
#[cfg(target_os = "linux")]
#[test]
fn a_signalled_train_groundtruth_or_search_writes_nothing() {
    let t = TestDir::new();
    t.write_f32("base.npy", &normalised(2000, 32, 5));
    t.write_f32("big.npy", &normalised(60_000, 64, 6));
    let codes: Vec<u8> = (0..60_000usize * 32)
        .map(|i| (i * 7919 % 251) as u8)
        .collect();
    t.write("c.npy", &npy_bytes("|u1", "(60000, 32)", &codes));
    t.bsa(&["build", "--codes", "c.npy", "--out", "idx", "-q"])
        .ok();
    let train = ["train", "-q", "--data"];
    let runs: [(&str, Vec<&str>); 5] = [
        (
            "-INT",
            [
                &train[..],
                &[
                    "base.npy", "--bits", "256", "--k", "8", "--epochs", "1000000",
                ],
            ]
            .concat(),
        ),
        (
            "-TERM",
            [
                &train[..],
                &[
                    "base.npy", "--method", "pursuit", "--bits", "512", "--k", "8", "--rounds",
                    "1000000",
                ],
            ]
            .concat(),
        ),
        (
            "-INT",
            [
                &train[..],
                &[
                    "big.npy",
                    "--method",
                    "itq",
                    "--bits",
                    "64",
                    "--itq-iterations",
                    "100000",
                ],
            ]
            .concat(),
        ),
        (
            "-TERM",
            vec![
                "groundtruth",
                "-q",
                "--base",
                "big.npy",
                "--queries",
                "big.npy",
                "--k",
                "10",
            ],
        ),
        (
            "-INT",
            vec![
                "search",
                "--index",
                "idx",
                "--query-codes",
                "c.npy",
                "--k",
                "100",
            ],
        ),
    ];
    for (signal, args) in runs {
        let child = bsa_in_a_terminal(&t)
            .args(&args)
            .args(["--threads", "1", "--out", "out.bin"])
            .spawn()
            .unwrap();
        let pid = child.id();
        // Signalled once the command's handler is in: a signal before it ends the process by
        // its default action, which would test nothing.
        stop_with(child, signal, || catches(pid, libc::SIGINT));
        assert_eq!(
            t.names(""),
            ["base.npy", "big.npy", "c.npy", "idx"],
            "{args:?}"
        );
    }
}

/// Whether process `pid` has a handler for `signal` (Linux: the `SigCgt` mask of its status).
#[cfg(target_os = "linux")]
fn catches(pid: u32, signal: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask >> (signal - 1) & 1 == 1)
}

/// Sends `signal` to `child` once `ready()` holds ([`signal_when`]) and asserts that it ended
/// by that signal within 20 seconds, saying it stopped; returns what it said on stderr.
fn stop_with(mut child: Child, signal: &str, ready: impl Fn() -> bool) -> String {
    signal_when(&mut child, signal, ready);
    let signalled = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.signal(),
        Some(signal_number(signal)),
        "{signal}: {stderr}"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(20),
        "{signal}: stopped after {:?}: {stderr}",
        signalled.elapsed()
    );
    assert!(
        stderr.contains("stopped before it finished"),
        "{signal}: {stderr}"
    );
    stderr
}

fn signal_number(signal: &str) -> i32 {
    match signal {
        "-INT" => libc::SIGINT,
        "-TERM" => libc::SIGTERM,
        other => panic!("no signal {other}"),
    }
}

fn signal_when(child: &mut Child, signal: &str, ready: impl Fn() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        assert!(
            child.try_wait().unwrap().is_none(),
            "ended before the signal"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let number = signal_number(signal);
    // Directly, not by starting kill(1): the command's remaining work may be short.
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill() with the pid of a child not yet waited for (so not reused).
    assert_eq!(unsafe { libc::kill(pid, number) }, 0, "{signal}");
}

/// A build past the file size limit (`ulimit -f`) is an error that names the file, exits 2 and
/// leaves no temporary folder: SIGXFSZ is ignored, so the write fails with EFBIG instead of
/// killing the process mid-build.
#[test]
fn a_build_past_the_file_size_limit_is_an_error_not_a_kill() {
    use std::os::unix::process::CommandExt;
    let t = TestDir::new();
    let (n, bytes) = (20_000usize, 64usize);
    let codes: Vec<u8> = (0..n * bytes).map(|i| (i * 7919 % 251) as u8).collect();
    t.write(
        "c.npy",
        &npy_bytes("|u1", &format!("({n}, {bytes})"), &codes),
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bsa"));
    cmd.args(["build", "--codes", "c.npy", "--out", "idx", "-q"])
        .current_dir(t.path(""));
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 512 * 1024,
                rlim_max: libc::RLIM_INFINITY,
            };
            match libc::setrlimit(libc::RLIMIT_FSIZE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{:?} {stderr}", out.status);
    assert!(stderr.contains("codes.bin: File too large"), "{stderr}");
    assert_eq!(t.names(""), ["c.npy"], "left behind");
}
