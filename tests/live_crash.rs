//! Crash safety of the live index (issue 16): `bsa add`, `bsa compact` and `bsa delete` are
//! killed (SIGKILL, by pid) at random points, many times, each time on a fresh copy of one
//! index. After every kill the index must pass `bsa verify` and search exactly as it did before
//! the command or as it does after a full run (byte for byte, with `bsa verify`'s line, which
//! names the generation and the segments, so that a compaction that changes no result is still
//! told apart). Then the index must take further commands despite what the killed process left:
//! the command run again reaches the after state, a later `bsa delete` gives the same index as
//! on an uninterrupted copy, and the directory holds nothing its manifest does not name.
//!
//! Two kinds of index, each with three segments and deleted rows so that compaction has work:
//! one built from packed codes (`--inverted --hnsw`, a graph on the codes) and one from a model
//! (`--vectors --hnsw`: a graph on the decoded codes, norms, stored vectors, and bridges from
//! the largest segment's graph to the others' rows, written in the commits). The add is an
//! upsert, so its commit also writes deletes files, and its new segment fills the smallest
//! size tier (four segments under 2000 rows), so the default merge policy merges all four in
//! the same commit; for the model index it is also run with `--merge-factor 0`, which bridges
//! the new segment in its commit instead. The delete drops a whole segment. Each kind
//! also covers the first change of a fresh `bsa build` (format v1, whose files move into the
//! first segment before the commit).
//!
//! Kill points: two runs in three sleep a random time (seeded) in [0, a full run's duration];
//! every third watches the root manifest and kills as soon as it has been replaced, to land in
//! the short window between the commit and the end of the process (the removal of what the old
//! generation named). A run that ends before the kill must reach the after state. Every other
//! run that a kill left as before is killed once more while the command runs again (on top of
//! what the first left, and during its clean-up of it). `bsa add` and `bsa compact` must each
//! have been killed at least once while writing (before the commit, with files left behind) and
//! once after the commit.

#![cfg(unix)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;

const SIGKILL: i32 = 9;
/// Rows of the first build, of each of the two adds that make segments 1 and 2, and of the add
/// under test.
const BASE: usize = 1200;
const SEG: usize = 200;
const NEW: usize = 150;
const BITS: usize = 128;
const DIM: usize = 32;
const QUERIES: usize = 8;

fn command(cwd: &Path, args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bsa"));
    c.args(args)
        .current_dir(cwd)
        // Keep OpenBLAS from spawning a thread per core in every process.
        .env("OPENBLAS_NUM_THREADS", "1")
        .env_remove("RUST_BACKTRACE");
    c
}

/// Runs `bsa args...` in `cwd`, asserts success and returns stdout.
#[track_caller]
fn ok(cwd: &Path, args: &[String]) -> String {
    let out = command(cwd, args).output().expect("cannot run bsa");
    assert!(
        out.status.success(),
        "bsa {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `args` with `--index dir` after the subcommand.
fn on_index(args: &[&str], dir: &Path) -> Vec<String> {
    let mut v = vec![args[0].to_string(), "--index".into(), path_str(dir)];
    v.extend(args[1..].iter().map(|s| s.to_string()));
    v
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").to_string()
}

fn npy(path: &Path, descr: &str, shape: &str, data: &[u8]) {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    fs::write(path, out).unwrap();
}

fn write_f32(path: &Path, rows: &[Vec<f32>]) {
    let data: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    npy(
        path,
        "<f4",
        &format!("({}, {})", rows.len(), rows[0].len()),
        &data,
    );
}

fn write_u8(path: &Path, rows: &[Vec<u8>]) {
    let data: Vec<u8> = rows.iter().flatten().copied().collect();
    npy(
        path,
        "|u1",
        &format!("({}, {})", rows.len(), rows[0].len()),
        &data,
    );
}

fn write_ids(path: &Path, ids: &[i64]) {
    let data: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy(path, "<i8", &format!("({},)", ids.len()), &data);
}

/// Copies a directory tree (files and directories only, as an index holds).
fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).unwrap();
        }
    }
}

fn listing(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The entries `dir`'s root manifest names (a segmented one's segments, deletes and bridge
/// files and model; a single-segment one's files), with the manifest itself and the lock file, and
/// whether the index is segmented.
fn named(dir: &Path) -> (BTreeSet<String>, bool) {
    let text = fs::read_to_string(dir.join("manifest.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let m = &v["manifest"];
    let mut named: BTreeSet<String> = strings(&["manifest.json", "LOCK"]).into_iter().collect();
    let segmented = v["format_version"] == 2;
    if segmented {
        for s in m["segments"].as_array().unwrap() {
            named.insert(s["name"].as_str().unwrap().to_string());
            for part in ["deletes", "bridge"] {
                if let Some(f) = s[part]["file"].as_str() {
                    named.insert(f.to_string());
                }
            }
        }
        if let Some(f) = m["model"]["file"].as_str() {
            named.insert(f.to_string());
        }
    } else {
        named.extend(m["files"].as_object().unwrap().keys().cloned());
    }
    (named, segmented)
}

/// What `dir` holds that its manifest does not name.
fn stray(dir: &Path) -> Vec<String> {
    let (named, _) = named(dir);
    listing(dir).difference(&named).cloned().collect()
}

/// Asserts that `dir` is a segmented index holding exactly what its manifest names, the
/// manifest and the lock file: nothing an interrupted writer left behind.
#[track_caller]
fn assert_clean(dir: &Path) {
    let (named, segmented) = named(dir);
    assert!(segmented, "{}: not segmented", dir.display());
    assert_eq!(
        listing(dir),
        named,
        "{}: the entries differ from what the manifest names",
        dir.display()
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Built from packed codes with posting lists and a graph on the codes.
    Codes,
    /// Built with a model: stored vectors, norms, a graph on the decoded codes.
    Model,
}

/// The working folder of one kind: input files and the indexes to copy.
struct Fixture {
    kind: Kind,
    work: tempfile::TempDir,
}

impl Fixture {
    fn new(kind: Kind, seed: u64) -> Fixture {
        let work = tempfile::Builder::new()
            .prefix("bsa-crash-")
            .tempdir()
            .unwrap();
        let f = Fixture { kind, work };
        let w = f.dir();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let sizes = [
            ("base", BASE),
            ("a1", SEG),
            ("a2", SEG),
            ("new", NEW),
            ("q", QUERIES),
        ];
        for (name, n) in sizes {
            let p = w.join(format!("{name}.npy"));
            match kind {
                // Sparse codes: each bit set with probability 1/8.
                Kind::Codes => write_u8(
                    &p,
                    &(0..n)
                        .map(|_| {
                            (0..BITS / 8)
                                .map(|_| {
                                    rng.random::<u8>() & rng.random::<u8>() & rng.random::<u8>()
                                })
                                .collect()
                        })
                        .collect::<Vec<_>>(),
                ),
                Kind::Model => write_f32(
                    &p,
                    &(0..n)
                        .map(|_| {
                            let v: Vec<f64> =
                                (0..DIM).map(|_| rng.sample(StandardNormal)).collect();
                            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                            v.iter().map(|x| (x / norm) as f32).collect()
                        })
                        .collect::<Vec<_>>(),
                ),
            }
        }
        // The index under test has every 7th row of the first build deleted and some of
        // segment 1. The add under test
        // replaces live rows of segments 0 and 1, re-adds a deleted id and adds new ones. The
        // delete under test removes rows of segments 0 and 1, all of segment 2 (dropping it)
        // and an unknown id. The follow-up delete removes rows live in every state.
        let b = BASE as i64;
        let s = SEG as i64;
        let del: Vec<i64> = (0..b).step_by(7).chain(b + 5..b + 15).collect();
        write_ids(&w.join("del.npy"), &del);
        let mut new_ids: Vec<i64> = vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, b + 20, b + 21, b + 22];
        new_ids.extend((0..).map(|i| 100_000 + i).take(NEW - new_ids.len()));
        write_ids(&w.join("new_ids.npy"), &new_ids);
        let del2: Vec<i64> = (100..110)
            .chain(b + 50..b + 60)
            .chain(b + s..b + 2 * s)
            .chain([999_999])
            .collect();
        write_ids(&w.join("del2.npy"), &del2);
        write_ids(&w.join("follow.npy"), &[20, 22, 23, b + 30, b + 31]);

        let graph = ["--hnsw", "--m", "8", "--ef-construction", "32"];
        let mut build = match kind {
            Kind::Codes => strings(&["build", "--codes", "base.npy", "--inverted"]),
            Kind::Model => {
                ok(
                    w,
                    &strings(&[
                        "train",
                        "--data",
                        "base.npy",
                        "--method",
                        "lsh",
                        "--bits",
                        &BITS.to_string(),
                        "--k",
                        "8",
                        "--out",
                        "m.safetensors",
                        "-q",
                    ]),
                );
                strings(&[
                    "build",
                    "--model",
                    "m.safetensors",
                    "--data",
                    "base.npy",
                    "--vectors",
                ])
            }
        };
        build.extend(strings(&graph));
        build.extend(strings(&["--out", "v1", "-q"]));
        ok(w, &build);
        copy_dir(&w.join("v1"), &w.join("live"));
        let live = w.join("live");
        // Apart: the default policy would merge them with the first build's segment.
        for rows in ["a1.npy", "a2.npy"] {
            let add = ["add", f.rows_flag(), rows, "--merge-factor", "0"];
            ok(w, &on_index(&add, &live));
        }
        ok(w, &on_index(&["delete", "--ids", "del.npy"], &live));
        assert_clean(&live);
        // The model index's graph is on the decoded codes: its adds bridge their segments from
        // the largest one's graph in their commit, so the kills below land in that work too.
        let text = fs::read_to_string(live.join("manifest.json")).unwrap();
        let bridges = text.matches("\"bridge\"").count();
        assert_eq!(bridges > 0, kind == Kind::Model, "{text}");
        f
    }

    fn dir(&self) -> &Path {
        self.work.path()
    }

    /// The flag that gives rows to `bsa add`.
    fn rows_flag(&self) -> &'static str {
        match self.kind {
            Kind::Codes => "--codes",
            Kind::Model => "--data",
        }
    }

    /// What a search sees of `index`: `bsa verify`'s line (generation, segments, counts) and
    /// the full rankings of the queries (every live row), plus one other way of searching (the
    /// posting lists; rescoring by the stored vectors).
    fn state(&self, index: &Path) -> String {
        let w = self.dir();
        let verify = ok(w, &on_index(&["verify"], index)).replace(&path_str(index), "INDEX");
        let (queries, other): (&[&str], &[&str]) = match self.kind {
            Kind::Codes => (&["--query-codes", "q.npy"], &["--mode", "inverted"]),
            Kind::Model => (&["--queries", "q.npy"], &["--k", "20", "--rescore", "4"]),
        };
        let mut all = vec!["search"];
        all.extend_from_slice(queries);
        all.extend_from_slice(&["--k", "100000"]);
        let mut second = vec!["search"];
        second.extend_from_slice(queries);
        second.extend_from_slice(other);
        format!(
            "{verify}{}{}",
            ok(w, &on_index(&all, index)),
            ok(w, &on_index(&second, index))
        )
    }
}

#[derive(Debug, Default)]
struct Counts {
    /// Killed, and the index was as before the command.
    killed_before: usize,
    /// Killed, and the index was as after it.
    killed_after: usize,
    /// Ended before the kill.
    finished: usize,
    /// Of the kills, those made on seeing the new manifest.
    at_commit: usize,
    /// Kills before (after) the commit that left entries the manifest does not name: the
    /// process was stopped while writing (or while removing the old generation's files).
    debris_before: usize,
    debris_after: usize,
    /// Runs again after a kill that left the index as before, killed too.
    killed_twice: usize,
}

/// Kills `args` (a `bsa` command on `--index`) `iterations` times on copies of `base` and
/// checks each outcome as the module says.
fn crash_runs(f: &Fixture, name: &str, base: &Path, args: &[&str], iterations: usize) -> Counts {
    let w = f.dir();
    let started = Instant::now();
    let copy = |to: &str| -> PathBuf {
        let d = w.join(to);
        if d.exists() {
            fs::remove_dir_all(&d).unwrap();
        }
        copy_dir(base, &d);
        d
    };
    let follow = ["delete", "--ids", "follow.npy"];

    // References: the state before; three full runs (their duration, and the after state,
    // which must not depend on the run); the state after them and the follow-up delete.
    let before = f.state(&copy("ref-before"));
    let mut durations = Vec::new();
    let mut after = None;
    for r in 0..3 {
        let d = copy(&format!("ref-{r}"));
        let t = Instant::now();
        ok(w, &on_index(args, &d));
        durations.push(t.elapsed());
        assert_clean(&d);
        let s = f.state(&d);
        if let Some(a) = &after {
            assert_eq!(&s, a, "{name}: two full runs gave different indexes");
        }
        after = Some(s);
    }
    let after = after.unwrap();
    assert_ne!(before, after, "{name}: the command changes nothing");
    let ref0 = w.join("ref-0");
    ok(w, &on_index(&follow, &ref0));
    let followed = f.state(&ref0);
    durations.sort();
    let full = durations[1];

    let summary = |s: &str| s.lines().next().unwrap_or("").to_string();
    // Runs the command on `d` and kills it: after `pause` (a fraction of a full run), or on
    // seeing the manifest replaced. Checks the outcome; returns whether the process was killed,
    // whether the index is as before, and whether it holds entries the manifest does not name.
    let kill = |d: &Path, at_commit: bool, pause: f64, run: &str| -> (bool, bool, bool) {
        let manifest = d.join("manifest.json");
        let inode = |p: &Path| fs::metadata(p).map(|m| m.ino()).ok();
        let old = inode(&manifest);
        let mut child = command(w, &on_index(args, d))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run bsa");
        if at_commit {
            // Spin until the manifest has been replaced (or the process ended).
            while inode(&manifest) == old && child.try_wait().unwrap().is_none() {
                std::thread::yield_now();
            }
        } else {
            std::thread::sleep(full.mul_f64(pause));
        }
        // By pid: SIGKILL (a no-op if the process has ended).
        let _ = child.kill();
        let out: Output = child.wait_with_output().unwrap();
        let killed = out.status.signal() == Some(SIGKILL);
        if !killed {
            assert!(
                out.status.success(),
                "{name} {run}: bsa failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let got = f.state(d);
        let was_before = got == before;
        assert!(
            was_before || got == after,
            "{name} {run} (killed: {killed}): the index is neither as before nor as after\n\
             before: {}\nafter:  {}\ngot:    {}\nentries: {:?}",
            summary(&before),
            summary(&after),
            summary(&got),
            listing(d)
        );
        assert!(
            killed || !was_before,
            "{name} {run}: a run that ended left the index as before"
        );
        (killed, was_before, !stray(d).is_empty())
    };

    let mut rng = Xoshiro256PlusPlus::seed_from_u64(name.bytes().map(u64::from).sum());
    let mut counts = Counts::default();
    for i in 0..iterations {
        let d = copy("run");
        let at_commit = i % 3 == 2;
        let (killed, mut was_before, debris) = kill(&d, at_commit, rng.random(), &format!("#{i}"));
        match (killed, was_before) {
            (true, true) => counts.killed_before += 1,
            (true, false) => counts.killed_after += 1,
            (false, _) => counts.finished += 1,
        }
        counts.at_commit += usize::from(killed && at_commit);
        if killed && debris {
            if was_before {
                counts.debris_before += 1;
            } else {
                counts.debris_after += 1;
            }
        }
        if was_before && i % 2 == 0 {
            // Kill the command run again on top of what the first kill left (its clean-up
            // included).
            let (killed, before_again, _) = kill(&d, false, rng.random(), &format!("#{i} again"));
            counts.killed_twice += usize::from(killed);
            was_before = before_again;
        }
        if was_before {
            // What the killed runs left must not trip the same command run again.
            ok(w, &on_index(args, &d));
            assert_eq!(
                f.state(&d),
                after,
                "{name} #{i}: the command run again after the kill"
            );
            assert_clean(&d);
        }
        ok(w, &on_index(&follow, &d));
        assert_eq!(
            f.state(&d),
            followed,
            "{name} #{i}: a delete after the kill differs from one on an uninterrupted index"
        );
        assert_clean(&d);
    }
    println!(
        "{name}: {iterations} runs (full run {:.0} ms): killed before the commit {} ({} leaving \
         unnamed files), killed after it {} ({} leaving unnamed files; {} of the kills on seeing \
         the new manifest), ended before the kill {}; killed again while run again {}; {:.1} s",
        full.as_secs_f64() * 1e3,
        counts.killed_before,
        counts.debris_before,
        counts.killed_after,
        counts.debris_after,
        counts.at_commit,
        counts.finished,
        counts.killed_twice,
        started.elapsed().as_secs_f64()
    );
    counts
}

fn crash_safety(kind: Kind, seed: u64) {
    let f = Fixture::new(kind, seed);
    let k = format!("{kind:?}").to_lowercase();
    let (live, v1) = (f.dir().join("live"), f.dir().join("v1"));
    let add = [
        "add",
        f.rows_flag(),
        "new.npy",
        "--ids",
        "new_ids.npy",
        "--upsert",
    ];
    // Without merging, the model index's add bridges its new segment in its commit.
    let mut add_apart = add.to_vec();
    add_apart.extend(["--merge-factor", "0"]);
    let mut runs = vec![
        ("add", &live, &add[..], 45, true),
        (
            "compact",
            &live,
            &["compact", "--max-segments", "1"][..],
            36,
            true,
        ),
        (
            "delete",
            &live,
            &["delete", "--ids", "del2.npy"][..],
            15,
            false,
        ),
        ("add-to-v1", &v1, &add[..], 15, false),
    ];
    if kind == Kind::Model {
        runs.push(("add-bridged", &live, &add_apart[..], 24, true));
    }
    for (name, base, args, iterations, both) in runs {
        let c = crash_runs(&f, &format!("{k} {name}"), base, args, iterations);
        assert!(
            c.killed_before >= 1 || !both,
            "{k} {name}: no kill landed before the commit: {c:?}"
        );
        assert!(
            c.killed_after >= 1 || !both,
            "{k} {name}: no kill landed after the commit: {c:?}"
        );
        assert!(
            c.debris_before >= 1 || !both,
            "{k} {name}: no kill landed while the command was writing: {c:?}"
        );
    }
}

#[test]
fn killed_writers_leave_the_codes_index_before_or_after() {
    crash_safety(Kind::Codes, 16);
}

#[test]
fn killed_writers_leave_the_model_index_before_or_after() {
    crash_safety(Kind::Model, 61);
}
