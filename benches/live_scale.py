#!/usr/bin/env python3
"""Issue 16's measurements of the live index (benches/RESULTS-live.md).

1. ``add``: the time of ``bsa add`` of the same 100, 10k and 20k rows to a 100k-row and a 1M-row
   index of the same kind, each repeat on a fresh copy (``cp -al``: hard links; a writer never
   changes a published file, it writes new ones and renames a new manifest over the old, so the
   copies stay independent), the two sizes alternating. Two kinds: a codes-only index (256-bit
   sign codes, flat) and the model index of issue 14's scale check (4096-bit pursuit codes,
   vectors, posting lists and bitmaps, an ADC graph on the decoded codes, M 32, ef_construction 40).
2. ``segments``: the 1M index plus 10 segments of 10k rows against the same 1.1M rows compacted
   into one segment (``bsa compact --max-segments 1``) and into two (``--max-segments 2``: the
   small ones merged): ``bsa search --stats`` QPS of 1000 queries, k 10, per mode and score, the
   indexes rotating; exact modes must give the same answers on all (the script checks), the
   graph's recall@10 is measured against the exact ADC answer. ``small-segments``: the graph with
   the small segments searched otherwise (``exp-bin``'s experimental binary).
3. ``filter``: on the 100k WordNet index with an ADC graph (the brief's build command) or the
   compacted 1.1M index (``--filter-index m1m-compact``), recall@10 of ``--mode hnsw --score adc
   --allow-ids`` against the exact ``--mode flat --score adc`` under the same filter, at several
   fractions of ids allowed, QPS of both, and the ``--stats`` filter counters; with
   ``--walk-bsa`` (``walk-bin``'s build, SUBSET_SCAN_FRACTION = 0) the graph walk at every fraction.

Every QPS is ``--stats``' qps (the query tables and the search, not loading the index or
encoding the queries); every number is the median of --reps runs, ratios are of medians of the
same run; the 1-minute load average is recorded before every run (the machine is shared).

Usage:

    python3 benches/live_scale.py --bsa /work/livebench/bin/bsa --work /work/livebench all
    python3 benches/live_scale.py ... data | build | walk-bin | exp-bin | add | segments |
        small-segments | filter | report   (benches/RESULTS-live.md lists the exact commands)

Inputs: /work/scale1m/base1m.npy and q.npy (benches/adc_scale_1m.sh makes them, and the 1M index
/work/scale1m/idx, which this script links rather than rebuilds when it exists), the pursuit model
/work/adc-bench/m.safetensors, and the WordNet data /work/shared/data/wordnet-minilm.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SEED = 1616
# Rows added to each base: 100 (what an add costs beyond its rows), 10k, 20k.
ADD_ROWS = (100, 10_000, 20_000)


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def load1():
    return os.getloadavg()[0]


class Bench:
    def __init__(self, a):
        self.a = a
        self.bsa = str(Path(a.bsa).resolve())
        self.work = Path(a.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.threads = str(a.threads)
        # One file per result (steps may run at the same time).
        self.results = self.work / "results"
        self.results.mkdir(exist_ok=True)

    # ---------------------------------------------------------------- helpers
    def p(self, name):
        return self.work / name

    def run(self, args, binary=None, **kw):
        cmd = [binary or self.bsa] + [str(x) for x in args]
        print("  $", " ".join(cmd), file=sys.stderr, flush=True)
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)

    def save(self, key, value):
        tmp = self.results / f".{key}.tmp"
        tmp.write_text(json.dumps(value, indent=1))
        tmp.rename(self.results / f"{key}.json")

    def load(self):
        return {f.stem: json.loads(f.read_text()) for f in sorted(self.results.glob("*.json"))}

    def fresh_copy(self, src, dst):
        """An independent copy of an index directory by hard links (see the module docs)."""
        if dst.exists():
            shutil.rmtree(dst)
        subprocess.run(["cp", "-al", str(src), str(dst)], check=True)

    def search(self, index, extra, out="/dev/null", binary=None):
        """One `bsa search --stats` run: its stats."""
        args = ["search", "--index", index, "--k", "10", "--threads", self.threads,
                "--stats", "--no-verify", "--out", out] + extra
        r = self.run(args, binary=binary)
        stats = json.loads(r.stderr.strip().splitlines()[-1])
        return stats

    # ---------------------------------------------------------------- data
    def data(self):
        a = self.a
        base1m = Path(a.base1m)
        wn = Path(a.wordnet)
        x = np.load(wn / "base.npy").astype(np.float32)
        # 100k new rows drawn like base1m's rows 100k.. (benches/adc_scale_1m.sh): a WordNet base
        # row plus N(0, 0.01^2) noise, renormalised, with another seed.
        rng = np.random.default_rng(SEED)
        new = x + rng.standard_normal(x.shape, dtype=np.float32) * 0.01
        new /= np.linalg.norm(new, axis=1, keepdims=True)
        rng.shuffle(new)
        np.save(self.p("new100k.npy"), new)
        for n in ADD_ROWS:
            np.save(self.p(f"new{n}.npy"), new[:n])
            np.save(self.p(f"ids{n}.npy"), np.arange(2_000_000, 2_000_000 + n, dtype=np.int64))
        for j in range(10):
            np.save(self.p(f"chunk{j}.npy"), new[j * 10_000:(j + 1) * 10_000])
        q = np.load(Path(a.queries1m))[:1000].astype(np.float32)
        np.save(self.p("q1000.npy"), q)
        # 256-bit sign codes of a seeded Gaussian projection, packed little bit order.
        proj = np.random.default_rng(SEED + 1).standard_normal((x.shape[1], 256)).astype(np.float32)

        def sign_codes(v):
            return np.packbits(v @ proj > 0, axis=1, bitorder="little")

        b = np.load(base1m, mmap_mode="r")
        out = np.lib.format.open_memmap(self.p("codes1m.npy"), mode="w+", dtype=np.uint8,
                                        shape=(len(b), 32))
        for s in range(0, len(b), 100_000):
            out[s:s + 100_000] = sign_codes(np.asarray(b[s:s + 100_000]))
        out.flush()
        np.save(self.p("codes100k.npy"), np.asarray(out[:100_000]))
        nc = sign_codes(new)
        for n in ADD_ROWS:
            np.save(self.p(f"newcodes{n}.npy"), nc[:n])
        for j in range(10):
            np.save(self.p(f"chunkcodes{j}.npy"), nc[j * 10_000:(j + 1) * 10_000])
        np.save(self.p("qcodes1000.npy"), sign_codes(q))
        np.save(self.p("wn_q1000.npy"), np.load(wn / "query.npy")[:1000].astype(np.float32))

    # ---------------------------------------------------------------- builds
    def timed_build(self, name, args):
        out = self.p(name)
        if out.exists():
            print(f"  {out} exists, kept", file=sys.stderr)
            return
        t = time.perf_counter()
        self.run(["build"] + args + ["--threads", self.threads, "--quiet", "--out", out])
        self.save(f"build_{name}", {"seconds": time.perf_counter() - t, "load1": load1()})

    def build(self):
        a = self.a
        model_args = ["--model", a.model, "--vectors", "--hnsw", "--m", "32",
                      "--ef-construction", "40", "--inverted", "--bitmaps"]
        # The 1M model index: issue 14's (benches/adc_scale_1m.sh), linked when it exists.
        if Path(a.index1m).exists():
            if not self.p("m1m").exists():
                subprocess.run(["cp", "-al", a.index1m, str(self.p("m1m"))], check=True)
        else:
            self.timed_build("m1m", ["--data", a.base1m] + model_args)
        # The 100k index of the same kind: base1m's first 100k rows (= WordNet's base).
        self.timed_build("m100k", ["--data", Path(a.wordnet) / "base.npy"] + model_args)
        self.timed_build("c1m", ["--codes", self.p("codes1m.npy"), "--no-inverted"])
        self.timed_build("c100k", ["--codes", self.p("codes100k.npy"), "--no-inverted"])
        # Criterion 3's index: the brief's command (default M 32, ef_construction 200).
        self.timed_build("wn", ["--model", a.model, "--data", Path(a.wordnet) / "base.npy",
                                "--vectors", "--hnsw"])

    def walk_bin(self):
        """A bsa that always walks the graph under a filter (SUBSET_SCAN_FRACTION = 0): this
        tree's source with that one constant changed, built beside it (for the filter step's
        --walk-bsa; flat searches under a filter are unchanged by it)."""
        repo = Path(__file__).resolve().parents[1]
        src, target = self.p("src-walk"), self.p("target-walk")
        if src.exists():
            shutil.rmtree(src)
        src.mkdir()
        subprocess.run(f"git -C {repo} archive HEAD | tar -x -C {src}", shell=True, check=True)
        f = src / "index/src/live/snapshot.rs"
        text = f.read_text()
        old = "pub const SUBSET_SCAN_FRACTION: f64 = 0.05;"
        assert old in text, "SUBSET_SCAN_FRACTION moved: update walk_bin"
        f.write_text(text.replace(old, "pub const SUBSET_SCAN_FRACTION: f64 = 0.0;"))
        if not target.exists() and self.a.target_seed and Path(self.a.target_seed).exists():
            # Reuse the dependencies another release build compiled.
            subprocess.run(["cp", "-r", self.a.target_seed, str(target)], check=True)
        env = dict(os.environ, CARGO_TARGET_DIR=str(target))
        subprocess.run(["cargo", "build", "--release", "-p", "bsa"], cwd=src, env=env, check=True)
        shutil.copy(target / "release/bsa", self.p("bin/bsa-walk"))

    def exp_bin(self):
        """A bsa whose graph mode can search the segments smaller than the largest with another
        ef (BSA_EXP_SMALL_EF) or by the flat scan (BSA_EXP_SMALL_FLAT_ROWS): an experiment for
        RESULTS-live.md's proposals, not a change of the library."""
        repo = Path(__file__).resolve().parents[1]
        src, target = self.p("src-exp"), self.p("target-walk")
        if src.exists():
            shutil.rmtree(src)
        src.mkdir()
        subprocess.run(f"git -C {repo} archive HEAD | tar -x -C {src}", shell=True, check=True)
        f = src / "index/src/live/snapshot.rs"
        text = f.read_text()
        old = """        for seg in &self.segments {
            let (mut hits, s, strategy) =
                self.search_segment(seg, queries, nq, k, score, mode, &params, options)?;"""
        assert old in text, "Snapshot::search changed: update exp_bin"
        new = """        let largest = self.segments.iter().map(|s| s.rows()).max().unwrap_or(0);
        for seg in &self.segments {
            let mut seg_mode = *mode;
            if let (Mode::Hnsw(_), true) = (mode, seg.rows() < largest) {
                let var = |v: &str| std::env::var(v).ok().and_then(|v| v.parse::<usize>().ok());
                if var("BSA_EXP_SMALL_FLAT_ROWS").is_some_and(|n| seg.rows() < n) {
                    seg_mode = Mode::parse("flat")?;
                } else if let Some(e) = var("BSA_EXP_SMALL_EF") {
                    seg_mode = mode.with_ef_search(Some(e.max(k.min(seg.rows()))));
                }
            }
            let mode = &seg_mode;
            let (mut hits, s, strategy) =
                self.search_segment(seg, queries, nq, k, score, mode, &params, options)?;"""
        f.write_text(text.replace(old, new))
        if not target.exists() and self.a.target_seed and Path(self.a.target_seed).exists():
            subprocess.run(["cp", "-r", self.a.target_seed, str(target)], check=True)
        env = dict(os.environ, CARGO_TARGET_DIR=str(target))
        subprocess.run(["cargo", "build", "--release", "-p", "bsa"], cwd=src, env=env, check=True)
        shutil.copy(target / "release/bsa", self.p("bin/bsa-exp"))

    def small_segments(self):
        """The graph over 1 large + 10 small segments with the small ones searched otherwise
        (exp-bin's binary): QPS against the compacted index, recall@10 against the exact answer."""
        a = self.a
        exp = str(self.p("bin/bsa-exp"))
        truth_file = self.p("out-model-flat_adc-compact.jsonl")
        if not truth_file.exists():
            self.search(self.p("m1m-compact"), ["--queries", self.p("q1000.npy"), "--score", "adc"],
                        out=truth_file)
        truth = self.answers(truth_file.name)
        variants = [
            ("compacted (1 segment)", "m1m-compact", {}),
            ("1+10 segments, ef 64 everywhere", "m1m-seg", {}),
            ("1+10, small segments ef 10", "m1m-seg", {"BSA_EXP_SMALL_EF": "10"}),
            ("1+10, small segments ef 16", "m1m-seg", {"BSA_EXP_SMALL_EF": "16"}),
            ("1+10, small segments ef 32", "m1m-seg", {"BSA_EXP_SMALL_EF": "32"}),
            ("1+10, small segments flat (exact)", "m1m-seg", {"BSA_EXP_SMALL_FLAT_ROWS": "50000"}),
            ("1+1 (small ones merged), ef 64", "m1m-2seg", {}),
            ("1+1, small segment ef 16", "m1m-2seg", {"BSA_EXP_SMALL_EF": "16"}),
        ]
        runs = {v[0]: [] for v in variants}
        recall = {}
        args = ["--queries", self.p("q1000.npy"), "--mode", "hnsw", "--score", "adc"]
        for rep in range(a.reps):
            order = variants[rep % len(variants):] + variants[:rep % len(variants)]
            for name, idx, env in order:
                l1 = load1()
                out = self.p("out-exp.jsonl")
                old = {k: os.environ.get(k) for k in env}
                os.environ.update(env)
                try:
                    st = self.search(self.p(idx), args, out=out if rep == 0 else "/dev/null", binary=exp)
                finally:
                    for k, v in old.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v
                runs[name].append({"qps": st["qps"], "load1": l1, "stats": st})
                if rep == 0:
                    recall[name] = float(np.mean([len(set(x) & set(t)) / 10
                                                  for x, t in zip(self.answers(out.name), truth)]))
                print(f"small {name} rep {rep}: qps {st['qps']:.0f}", file=sys.stderr, flush=True)
        self.save("small_segments", {"runs": runs, "recall": recall})

    # ---------------------------------------------------------------- 1. add
    def add(self):
        reps = self.a.reps
        kinds = {
            "codes": (["c100k", "c1m"], lambda n: ["--codes", self.p(f"newcodes{n}.npy")]),
            "model": (["m100k", "m1m"], lambda n: ["--data", self.p(f"new{n}.npy")]),
        }
        res = self.load().get("add", {})
        for kind, (bases, rows) in kinds.items():
            if self.a.kinds and kind not in self.a.kinds:
                continue
            # Adding codes takes a fraction of a second: more repeats.
            for n in ADD_ROWS:
                for rep in range(reps * 3 if kind == "codes" else reps):
                    order = bases if rep % 2 == 0 else bases[::-1]
                    for base in order:
                        tmp = self.p(f"tmp-add-{base}")
                        self.fresh_copy(self.p(base), tmp)
                        l1 = load1()
                        cmd = ["/usr/bin/time", "-f", "%e %U %S %M", self.bsa, "add", "--index", str(tmp),
                               "--ids", str(self.p(f"ids{n}.npy")), "--threads", self.threads] + \
                              [str(x) for x in rows(n)]
                        t = time.perf_counter()
                        r = subprocess.run(cmd, check=True, capture_output=True, text=True)
                        wall = time.perf_counter() - t
                        _, user, sys_, rss_kb = r.stderr.strip().splitlines()[-1].split()
                        cpu, rss_kb = float(user) + float(sys_), int(rss_kb)
                        shutil.rmtree(tmp)
                        key = f"{kind}/{base}/{n}"
                        res.setdefault(key, []).append({"seconds": wall, "cpu_seconds": cpu,
                                                        "rss_mb": rss_kb / 1024,
                                                        "load1": l1})
                        print(f"add {key} rep {rep}: {wall:.2f} s, cpu {cpu:.2f} s, {rss_kb / 1024:.0f} MB, "
                              f"load {l1:.2f}", file=sys.stderr, flush=True)
                        self.save("add", res)

    # ---------------------------------------------------------------- 2. segments
    def segment_kinds(self):
        return {
            "codes": ("c1m", lambda j: ["--codes", self.p(f"chunkcodes{j}.npy")],
                      [("flat hamming", ["--query-codes", self.p("qcodes1000.npy")])]),
            "model": ("m1m", lambda j: ["--data", self.p(f"chunk{j}.npy")],
                      [("flat hamming", ["--queries", self.p("q1000.npy")]),
                       ("flat adc", ["--queries", self.p("q1000.npy"), "--score", "adc"]),
                       ("inverted hamming", ["--queries", self.p("q1000.npy"), "--mode", "inverted"]),
                       ("inverted adc", ["--queries", self.p("q1000.npy"), "--mode", "inverted",
                                         "--score", "adc"]),
                       ("hnsw adc", ["--queries", self.p("q1000.npy"), "--mode", "hnsw",
                                     "--score", "adc"])]),
        }

    def prepare(self):
        """The 1M indexes plus 10 segments of 10k rows, and the same rows compacted."""
        for kind, (base, rows, _) in self.segment_kinds().items():
            if self.a.kinds and kind not in self.a.kinds:
                continue
            seg, comp = self.p(f"{base}-seg"), self.p(f"{base}-compact")
            if not seg.exists():
                tmp = self.p(f"{base}-seg.tmp")
                self.fresh_copy(self.p(base), tmp)
                t = time.perf_counter()
                for j in range(10):
                    ids = np.arange(3_000_000 + j * 10_000, 3_000_000 + (j + 1) * 10_000)
                    np.save(self.p("chunk_ids.npy"), ids)
                    self.run(["add", "--index", tmp, "--ids", self.p("chunk_ids.npy"),
                              "--merge-factor", "0", "--threads", self.threads] + rows(j))
                self.save(f"adds_{base}", {"seconds": time.perf_counter() - t, "load1": load1()})
                tmp.rename(seg)
            if not comp.exists():
                tmp = self.p(f"{base}-compact.tmp")
                self.fresh_copy(seg, tmp)
                t = time.perf_counter()
                self.run(["compact", "--index", tmp, "--max-segments", "1",
                          "--threads", self.threads])
                self.save(f"compact_{base}", {"seconds": time.perf_counter() - t, "load1": load1()})
                tmp.rename(comp)
            for factor, suffix in ((4, "tiered"), (2, "tiered2")):
                tiered = self.p(f"{base}-{suffix}")
                if kind != "model" or tiered.exists():
                    continue
                # The same 10 adds under a merge policy (bsa add --merge-factor F).
                tmp = self.p(f"{base}-{suffix}.tmp")
                self.fresh_copy(self.p(base), tmp)
                adds = []
                for j in range(10):
                    ids = np.arange(3_000_000 + j * 10_000, 3_000_000 + (j + 1) * 10_000)
                    np.save(self.p("chunk_ids.npy"), ids)
                    l1 = load1()
                    t = time.perf_counter()
                    r = self.run(["add", "--index", tmp, "--ids", self.p("chunk_ids.npy"),
                                  "--merge-factor", factor, "--threads", self.threads] + rows(j))
                    m = json.loads((tmp / "manifest.json").read_text())["manifest"]
                    adds.append({"seconds": time.perf_counter() - t, "load1": l1,
                                 "segments": len(m["segments"]),
                                 "line": r.stderr.strip().splitlines()[-1]})
                    print(f"  {suffix} add {j}: {adds[-1]}", file=sys.stderr, flush=True)
                self.save(f"adds_{suffix}_{base}", adds)
                tmp.rename(tiered)
            two = self.p(f"{base}-2seg")
            if kind == "model" and not two.exists():
                # The 10 small segments merged into one (what a merge policy would keep).
                tmp = self.p(f"{base}-2seg.tmp")
                self.fresh_copy(seg, tmp)
                t = time.perf_counter()
                self.run(["compact", "--index", tmp, "--max-segments", "2",
                          "--threads", self.threads])
                self.save(f"compact2_{base}", {"seconds": time.perf_counter() - t, "load1": load1()})
                tmp.rename(two)

    def segments(self):
        a = self.a
        self.prepare()
        res = self.load().get("segments", {})
        for kind, (base, _, configs) in self.segment_kinds().items():
            if a.kinds and kind not in a.kinds:
                continue
            variants = [("seg", self.p(f"{base}-seg")), ("compact", self.p(f"{base}-compact"))]
            if self.p(f"{base}-2seg").exists():
                variants.append(("2seg", self.p(f"{base}-2seg")))
            for suffix in ("tiered", "tiered2"):
                if self.p(f"{base}-{suffix}").exists():
                    variants.append((suffix, self.p(f"{base}-{suffix}")))
            for label, extra in configs:
                if a.configs and label not in a.configs:
                    continue
                key = f"{kind}/{label}"
                runs = {name: [] for name, _ in variants}
                for rep in range(a.reps):
                    # Each variant first, middle and last in turn.
                    order = variants[rep % len(variants):] + variants[:rep % len(variants)]
                    for name, idx in order:
                        l1 = load1()
                        out = self.p(f"out-{kind}-{label.replace(' ', '_')}-{name}.jsonl")
                        st = self.search(idx, extra, out=out if rep == 0 else "/dev/null")
                        runs[name].append({"qps": st["qps"], "load1": l1, "stats": st})
                        print(f"{key} {name} rep {rep}: qps {st['qps']:.1f} load {l1:.2f}",
                              file=sys.stderr, flush=True)
                answers = {name: self.answers(f"out-{kind}-{label.replace(' ', '_')}-{name}.jsonl")
                           for name, _ in variants}
                same = {name: float(np.mean([x == y for x, y in zip(answers[name], answers["compact"])]))
                        for name, _ in variants}
                if not label.startswith("hnsw"):
                    assert all(v == 1.0 for v in same.values()), f"{key}: exact answers differ: {same}"
                res[key] = {"runs": runs, "same_ids": same}
                # The graph's recall@10 against the exact answer (flat adc, the same on all).
                exact = self.p(f"out-{kind}-flat_adc-compact.jsonl")
                if label.startswith("hnsw") and exact.exists():
                    truth = self.answers(exact.name)
                    res[key]["recall"] = {
                        name: float(np.mean([len(set(x) & set(t)) / 10
                                             for x, t in zip(answers[name], truth)]))
                        for name, _ in variants}
                self.save("segments", res)

    def answers(self, name):
        return [json.loads(x)["ids"] for x in self.p(name).read_text().splitlines()]

    # ---------------------------------------------------------------- 3. filter
    def filter(self):
        a = self.a
        name = a.filter_index
        idx = self.p(name)
        if name == "wn":
            universe = np.arange(100_000)
            q = ["--queries", self.p("wn_q1000.npy"), "--score", "adc"]
        else:  # the 1.1M rows of the segments step (ids 0.. and 3,000,000..)
            universe = np.concatenate([np.arange(1_000_000), np.arange(3_000_000, 3_100_000)])
            q = ["--queries", self.p("q1000.npy"), "--score", "adc"]
        n = len(universe)
        ef = ["--ef", str(a.ef)] if a.ef else []
        # name: (binary, arguments); "walk" is the graph walk at every fraction (walk-bin).
        modes = {"flat": (self.bsa, ["--mode", "flat"]), "hnsw": (self.bsa, ["--mode", "hnsw"] + ef)}
        if a.walk_bsa:
            modes["walk"] = (str(Path(a.walk_bsa).resolve()), ["--mode", "hnsw"] + ef)
        rkey = "filter_" + name + (f"_{a.tag}" if a.tag else "")
        res = self.load().get(rkey, {})
        for frac in list(a.fractions) + [None]:
            if frac is None:
                allow, ids = [], None
            else:
                ids = np.sort(universe[np.random.default_rng(SEED + int(frac * 1e4)).choice(
                    n, size=int(round(frac * n)), replace=False)]).astype(np.int64)
                np.save(self.p(f"allow-{name}-{frac}.npy"), ids)
                allow = ["--allow-ids", self.p(f"allow-{name}-{frac}.npy")]
            runs = {m: [] for m in modes}
            answers = {}
            for rep in range(a.reps):
                order = list(modes) if rep % 2 == 0 else list(modes)[::-1]
                for m in order:
                    binary, margs = modes[m]
                    l1 = load1()
                    out = self.p(f"out-filter-{name}-{m}.jsonl")
                    st = self.search(idx, q + margs + allow, out=out, binary=binary)
                    runs[m].append({"qps": st["qps"], "load1": l1, "stats": st})
                    if rep == 0:
                        answers[m] = [json.loads(x)["ids"] for x in out.read_text().splitlines()]
                    print(f"filter {frac} {m} rep {rep}: qps {st['qps']:.1f} load {l1:.2f}",
                          file=sys.stderr, flush=True)
            if ids is not None:
                allowed = set(ids.tolist())
                for m in modes:
                    assert all(set(h) <= allowed for h in answers[m]), f"{m}: a hit not allowed"
            recall = {m: float(np.mean([len(set(h) & set(f)) / max(1, len(f))
                                        for h, f in zip(answers[m], answers["flat"])]))
                      for m in modes if m != "flat"}
            short = {m: sum(len(h) < 10 for h in answers[m]) for m in modes}
            key = ("none" if frac is None else f"{frac}") + (f"/ef{a.ef}" if a.ef else "")
            res[key] = {"runs": runs, "recall": recall, "short_answers": short}
            print(f"filter {key}: recall@10 {recall}", file=sys.stderr, flush=True)
            self.save(rkey, res)

    # ---------------------------------------------------------------- report
    def report(self):
        r = self.load()
        out = []
        if "add" in r:
            out.append("| kind | rows added | base rows | wall s (median) | min..max | CPU s (median) | peak RSS MB | load1 |")
            out.append("|---|---|---|---|---|---|---|---|")
            for key, runs in r["add"].items():
                kind, base, n = key.split("/")
                s = [x["seconds"] for x in runs]
                cpu = median([x.get("cpu_seconds", 0) for x in runs])
                out.append(f"| {kind} | {n} | {base} | {median(s):.2f} | {min(s):.2f}..{max(s):.2f} | {cpu:.2f} | "
                           f"{median([x['rss_mb'] for x in runs]):.0f} | "
                           f"{median([x['load1'] for x in runs]):.1f} |")
            out.append("")
        if "segments" in r:
            out.append("| index | mode, score | QPS 1+10 segments | QPS 1 segment (compacted) | ratio | "
                       "QPS 1+1 segments (small ones merged) | ratio | same ids as compacted (11 / 2) | "
                       "recall@10 vs exact (11 / 1 / 2) | load1 |")
            out.append("|---" * 10 + "|")
            for key, v in r["segments"].items():
                kind, label = key.split("/")
                q = {n: median([x["qps"] for x in rs]) for n, rs in v["runs"].items()}
                l1 = median([x["load1"] for rs in v["runs"].values() for x in rs])
                two = (f"{q['2seg']:.0f} | {q['2seg'] / q['compact']:.2f}" if "2seg" in q else "- | -")
                same = v["same_ids"]
                same = same if isinstance(same, dict) else {"seg": same}
                rec = v.get("recall")
                rec = " / ".join(f"{rec[n]:.3f}" for n in ("seg", "compact", "2seg") if n in rec) if rec else "-"
                out.append(f"| {kind} | {label} | {q['seg']:.0f} | {q['compact']:.0f} | "
                           f"{q['seg'] / q['compact']:.2f} | {two} | "
                           f"{' / '.join(f'{same[n]:.3f}' for n in ('seg', '2seg') if n in same)} | "
                           f"{rec} | {l1:.1f} |")
            out.append("")
        if "small_segments" in r:
            v = r["small_segments"]
            base = median([x["qps"] for x in v["runs"]["compacted (1 segment)"]])
            out.append("| graph search (hnsw adc, ef 64) | QPS | / compacted | recall@10 vs exact | "
                       "nodes visited/query | load1 |")
            out.append("|---|---|---|---|---|---|")
            for name, rs in v["runs"].items():
                q = median([x["qps"] for x in rs])
                nv = rs[0]["stats"].get("nodes_visited")
                out.append(f"| {name} | {q:.0f} | {q / base:.2f} | {v['recall'][name]:.4f} | "
                           f"{round(nv / 1000) if nv else '-'} | {median([x['load1'] for x in rs]):.1f} |")
            out.append("")
        for fkey in [k for k in r if k.startswith("filter")]:
            out.append(f"{fkey}:")
            modes = [m for m in ("hnsw", "walk") if any(m in v["runs"] for v in r[fkey].values())]
            head = "| allowed | QPS flat (exact) |"
            for m in modes:
                head += f" recall@10 {m} | QPS {m} | {m}/flat | {m} strategy | {m} nodes/query |"
            out.append(head + " load1 |")
            out.append("|---" * (head.count("|") - 1 + 1) + "|")
            for key, v in r[fkey].items():
                f = median([x["qps"] for x in v["runs"]["flat"]])
                row = f"| {key} | {f:.0f} |"
                for m in modes:
                    if m not in v["runs"]:
                        row += " - | - | - | - | - |"
                        continue
                    h = median([x["qps"] for x in v["runs"][m]])
                    st = v["runs"][m][0]["stats"]
                    strat = ", ".join(f"{k}={st[k]}" for k in st if k.startswith("filter_")) or "-"
                    nv = st.get("nodes_visited")
                    nq = st.get("queries", 1000)
                    row += (f" {v['recall'][m]:.4f} | {h:.0f} | {h / f:.2f} | {strat} | "
                            f"{round(nv / nq) if nv is not None else '-'} |")
                l1 = median([x["load1"] for rs in v["runs"].values() for x in rs])
                out.append(row + f" {l1:.1f} |")
            out.append("")
        print("\n".join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["data", "build", "walk-bin", "exp-bin", "add", "prepare", "segments", "small-segments", "filter", "report", "all"])
    ap.add_argument("--bsa", default=os.environ.get("BSA", "target/release/bsa"))
    ap.add_argument("--work", default="/work/livebench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--base1m", default="/work/scale1m/base1m.npy")
    ap.add_argument("--queries1m", default="/work/scale1m/q.npy")
    ap.add_argument("--index1m", default="/work/scale1m/idx",
                    help="an existing 1M model index to link (built when missing)")
    ap.add_argument("--model", default="/work/adc-bench/m.safetensors")
    ap.add_argument("--wordnet", default="/work/shared/data/wordnet-minilm")
    ap.add_argument("--kinds", nargs="*", help="codes, model (default both)")
    ap.add_argument("--configs", nargs="*", help="segments: only these 'mode score' labels")
    ap.add_argument("--fractions", nargs="*", type=float, default=[0.01, 0.1, 0.5])
    ap.add_argument("--ef", type=int, help="filter: --ef of the graph search")
    ap.add_argument("--tag", help="filter: suffix of the result's name (e.g. before_fix)")
    ap.add_argument("--filter-index", default="wn", help="filter: wn (100k) or m1m-compact (1.1M)")
    ap.add_argument("--walk-bsa", help="filter: also run the graph with this bsa (walk-bin's)")
    ap.add_argument("--target-seed", default="/work/target-rel",
                    help="walk-bin: a release target directory to copy compiled dependencies from")
    a = ap.parse_args()
    b = Bench(a)
    if a.step != "all":
        getattr(b, a.step.replace("-", "_"))()
        return
    for step in ["data", "build", "walk-bin", "exp-bin", "add", "segments", "small-segments"]:
        getattr(b, step.replace("-", "_"))()
    for name in ["wn", "m1m-compact"]:
        a.filter_index, a.walk_bsa = name, str(b.p("bin/bsa-walk"))
        b.filter()
    b.report()


if __name__ == "__main__":
    main()
