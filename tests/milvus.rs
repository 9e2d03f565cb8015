//! `bsa export` and `bsa search --milvus` against a real Milvus server (feature `milvus`), and the
//! clear error of a build without the feature.
//!
//! With the feature, the tests need a running server: `BSA_MILVUS_URL` (e.g.
//! `http://127.0.0.1:19530`) and `BSA_MILVUS_CTL`, a command that takes `restart` (stops the
//! server by its process id and starts it again on the same data). `.ci/run` sets both with
//! `.ci/milvus.sh`; without them the tests fail and say so, they never pass silently.
//!
//! The data are real: the first rows of `bench-data/base.npy` (WordNet sentences, MiniLM) as the
//! corpus, rows of `bench-data/query.npy` as queries, codes from a pursuit model (exactly K bits
//! set). Milvus's answers are compared with `bsa search --index` on the same codes.

use std::path::Path;
use std::process::Command;

/// What one run of `bsa` gave: exit code, stdout, stderr.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

#[cfg(feature = "milvus")]
impl Run {
    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "bsa failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// JSON lines of stdout.
    fn lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
            .collect()
    }
}

fn bsa(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_bsa"))
        .args(args)
        .current_dir(dir)
        .env("OPENBLAS_NUM_THREADS", "1")
        .output()
        .expect("cannot run the bsa binary");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[cfg(not(feature = "milvus"))]
#[test]
fn without_the_feature_export_and_milvus_search_say_how_to_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let url = "http://127.0.0.1:9";
    for args in [
        &[
            "export",
            "--index",
            "idx",
            "--milvus",
            url,
            "--collection",
            "c",
        ][..],
        &[
            "search",
            "--milvus",
            url,
            "--collection",
            "c",
            "--query-codes",
            "q.npy",
        ][..],
    ] {
        let r = bsa(dir.path(), args);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(r.stdout.is_empty());
        assert!(
            r.stderr.starts_with("bsa: ") && r.stderr.contains("--features milvus"),
            "{}",
            r.stderr
        );
    }
}

#[cfg(feature = "milvus")]
mod live {
    use super::*;
    use std::path::PathBuf;

    fn bench_data(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("bench-data")
            .join(name)
    }

    const BASE_ROWS: usize = 3000;
    const QUERIES: usize = 100;
    const BITS: &str = "1024";
    const K_BITS: &str = "16";

    #[track_caller]
    fn env(name: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: the `milvus` feature's tests need a running Milvus server. \
                 Run .ci/run, or: .ci/milvus.sh install && .ci/milvus.sh start && \
                 BSA_MILVUS_URL=http://127.0.0.1:19530 BSA_MILVUS_CTL=.ci/milvus.sh \
                 cargo test --features milvus --test milvus"
            )
        })
    }

    /// A fresh collection name (Milvus names: letters, digits, underscores).
    fn collection(tag: &str) -> String {
        format!("bsa_test_{tag}_{}", std::process::id())
    }

    /// The first `n` rows of a bench-data file, written to `dir/name`.
    fn head(dir: &Path, src: &str, n: usize, name: &str) {
        let e = bsa::io::Embeddings::open(bench_data(src)).unwrap();
        let n = n.min(e.n());
        bsa::io::write_f32(dir.join(name), n, e.dim(), &e.as_slice()[..n * e.dim()]).unwrap();
    }

    /// Results as (ids, distances, scores) per query.
    type Table = Vec<(Vec<u64>, Vec<u32>, Vec<f32>)>;

    fn parse(r: &Run) -> Table {
        r.lines()
            .iter()
            .enumerate()
            .map(|(i, v)| {
                assert_eq!(v["query"], i);
                let ids = v["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap())
                    .collect();
                let d = v["distances"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect();
                let s = v
                    .get("scores")
                    .and_then(|s| s.as_array())
                    .map(|a| a.iter().map(|x| x.as_f64().unwrap() as f32).collect())
                    .unwrap_or_default();
                (ids, d, s)
            })
            .collect()
    }

    /// Milvus equals local rank by rank: the same distances, the same scores (bit for bit).
    /// Tied rows may come in another order, so ids are compared as the set of strictly better
    /// ranks only through the values. Returns how many ids differ (ties), for the message.
    #[track_caller]
    fn assert_same(what: &str, local: &Table, milvus: &Table, by_scores: bool) -> usize {
        assert_eq!(local.len(), milvus.len(), "{what}: query count");
        let mut tie_swaps = 0;
        for (q, (l, m)) in local.iter().zip(milvus).enumerate() {
            assert_eq!(l.0.len(), m.0.len(), "{what}: query {q}: result count");
            if by_scores {
                assert_eq!(l.2, m.2, "{what}: query {q}: scores differ");
            } else {
                assert_eq!(l.1, m.1, "{what}: query {q}: distances differ");
            }
            tie_swaps += l.0.iter().zip(&m.0).filter(|(a, b)| a != b).count();
        }
        tie_swaps
    }

    /// Mean recall@k of `got` against `truth` (ids).
    fn recall(truth: &Table, got: &Table) -> f64 {
        let mut hit = 0usize;
        let mut all = 0usize;
        for (t, g) in truth.iter().zip(got) {
            all += t.0.len();
            hit += g.0.iter().filter(|id| t.0.contains(id)).count();
        }
        hit as f64 / all.max(1) as f64
    }

    struct Fixture {
        dir: tempfile::TempDir,
        url: String,
        coll: String,
    }

    impl Fixture {
        fn p(&self) -> &Path {
            self.dir.path()
        }

        fn local(&self, extra: &[&str]) -> Table {
            let mut args = vec!["search", "--index", "idx", "--k", "10"];
            args.extend_from_slice(extra);
            parse(&bsa(self.p(), &args).ok())
        }

        fn milvus(&self, extra: &[&str]) -> (Table, String) {
            let mut args = vec![
                "search",
                "--milvus",
                &self.url,
                "--collection",
                &self.coll,
                "--k",
                "10",
            ];
            args.extend_from_slice(extra);
            let r = bsa(self.p(), &args).ok();
            (parse(&r), r.stderr)
        }

        /// Hamming, overlap, exact ADC and rescored ADC through Milvus equal the local search.
        fn check_exact(&self, when: &str) {
            let qc = ["--query-codes", "qc.npy"];
            let n = assert_same(
                &format!("hamming {when}"),
                &self.local(&qc),
                &self.milvus(&qc).0,
                false,
            );
            eprintln!("{when}: hamming equal at every rank ({n} tie swaps)");
            let ov = ["--query-codes", "qc.npy", "--score", "overlap"];
            let n = assert_same(
                &format!("overlap {when}"),
                &self.local(&ov),
                &self.milvus(&ov).0,
                true,
            );
            eprintln!("{when}: overlap equal at every rank ({n} tie swaps)");
            let adc = ["--queries", "q.npy", "--score", "adc"];
            let (m, err) =
                self.milvus(&[&adc[..], &["--model", "m.safetensors", "--stats"]].concat());
            assert!(!err.contains("not proven"), "{err}");
            let n = assert_same(&format!("adc {when}"), &self.local(&adc), &m, true);
            eprintln!("{when}: unpruned adc equal at every rank ({n} tie swaps); {err}");
            let rs = ["--queries", "q.npy", "--score", "adc", "--rescore", "4"];
            let (m, _) = self.milvus(
                &[
                    &rs[..],
                    &["--model", "m.safetensors", "--vectors", "base.npy"],
                ]
                .concat(),
            );
            let n = assert_same(&format!("adc+rescore {when}"), &self.local(&rs), &m, true);
            eprintln!("{when}: rescored adc equal at every rank ({n} tie swaps)");
        }
    }

    #[test]
    fn milvus_serves_the_same_top_k_as_local_search_and_survives_a_restart() {
        let url = env("BSA_MILVUS_URL");
        let ctl = env("BSA_MILVUS_CTL");
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
            url,
            coll: collection("main"),
        };
        head(f.p(), "base.npy", BASE_ROWS, "base.npy");
        head(f.p(), "query.npy", QUERIES, "q.npy");
        bsa(
            f.p(),
            &[
                "train",
                "--data",
                "base.npy",
                "--method",
                "pursuit",
                "--bits",
                BITS,
                "--k",
                K_BITS,
                "--rounds",
                "2",
                "--seed",
                "7",
                "--out",
                "m.safetensors",
            ],
        )
        .ok();
        bsa(
            f.p(),
            &[
                "build",
                "--model",
                "m.safetensors",
                "--data",
                "base.npy",
                "--vectors",
                "--out",
                "idx",
            ],
        )
        .ok();
        bsa(
            f.p(),
            &[
                "encode",
                "--model",
                "m.safetensors",
                "--data",
                "q.npy",
                "--out",
                "qc.npy",
            ],
        )
        .ok();

        let r = bsa(
            f.p(),
            &[
                "export",
                "--index",
                "idx",
                "--milvus",
                &f.url,
                "--collection",
                &f.coll,
                "--as",
                "both",
                "--shards",
                "2",
                "--batch",
                "700",
                "--replace",
                "--quiet",
            ],
        )
        .ok();
        let summary = &r.lines()[0];
        assert_eq!(summary["rows"], BASE_ROWS, "{summary}");
        assert_eq!(summary["norms"], true, "{summary}");

        // A second export to the same name refuses to overwrite.
        let again = bsa(
            f.p(),
            &[
                "export",
                "--index",
                "idx",
                "--milvus",
                &f.url,
                "--collection",
                &f.coll,
                "--quiet",
            ],
        );
        assert_eq!(again.code, 2);
        assert!(again.stderr.contains("already exists"), "{}", again.stderr);

        f.check_exact("after export");

        // Pruned ADC: recall@10 against the exact (unpruned) top 10.
        let exact = f.local(&["--queries", "q.npy", "--score", "adc"]);
        for p in ["8", "16", "32", "64"] {
            let (m, _) = f.milvus(&[
                "--queries",
                "q.npy",
                "--score",
                "adc",
                "--model",
                "m.safetensors",
                "--prune",
                p,
            ]);
            let r = recall(&exact, &m);
            eprintln!("pruned adc: {p} largest table entries of {BITS}: recall@10 = {r:.3}");
            assert!(r > 0.0, "pruned ADC found nothing");
        }

        // Float queries off unit length: their pursuit codes depend on it, so a Hamming search
        // warns once, as the local search does; ADC, which divides by the length, does not.
        let q = bsa::io::Embeddings::open(f.p().join("q.npy")).unwrap();
        let doubled: Vec<f32> = q.as_slice().iter().map(|v| v * 2.0).collect();
        bsa::io::write_f32(f.p().join("q2.npy"), q.n(), q.dim(), &doubled).unwrap();
        let warned = format!("{QUERIES} of {QUERIES} rows of q2.npy are not of unit length");
        let (_, err) = f.milvus(&["--queries", "q2.npy", "--model", "m.safetensors"]);
        assert_eq!(err.matches(&warned).count(), 1, "{err}");
        let adc = [
            "--queries",
            "q2.npy",
            "--model",
            "m.safetensors",
            "--score",
            "adc",
        ];
        let (_, err) = f.milvus(&adc);
        assert!(!err.contains("not of unit length"), "{err}");

        // Errors name the collection or the server, and the fix.
        let missing = collection("missing");
        let r = bsa(
            f.p(),
            &[
                "search",
                "--milvus",
                &f.url,
                "--collection",
                &missing,
                "--query-codes",
                "qc.npy",
            ],
        );
        assert_eq!(r.code, 2);
        assert!(
            r.stderr.contains(&missing) && r.stderr.contains("bsa export"),
            "{}",
            r.stderr
        );
        let r = bsa(
            f.p(),
            &[
                "search",
                "--milvus",
                "http://127.0.0.1:1",
                "--collection",
                "c",
                "--query-codes",
                "qc.npy",
            ],
        );
        assert_eq!(r.code, 2);
        assert!(
            r.stderr
                .contains("connecting to Milvus at http://127.0.0.1:1"),
            "{}",
            r.stderr
        );

        // Restart the server (stopped by its process id), then search the same collection.
        let st = Command::new(&ctl)
            .arg("restart")
            .status()
            .unwrap_or_else(|e| panic!("cannot run BSA_MILVUS_CTL={ctl}: {e}"));
        assert!(st.success(), "{ctl} restart failed");
        f.check_exact("after restart");
    }
}
