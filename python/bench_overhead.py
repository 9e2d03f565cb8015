"""Overhead of searching from Python: batch search over a 100k index through `bsa` (the Python
package) against the `bsa search --stats` time of the same search by the command line.

    python python/bench_overhead.py [--base B.npy] [--queries Q.npy] [--repeats 7] [--bsa PATH]

Both search the same index directories with the same batch of queries on all cores; each case
alternates Python and CLI runs and reports medians. `search_seconds` of the CLI covers the tables, the
search and the rescoring, not loading or encoding the float queries; the Python time is the wall
time of `index.search(...)`, which also encodes float queries, so for float queries the median
time of `model.encode(queries)` is measured in the same loop and subtracted (the "python - encode" column).
Also: four Python threads searching a quarter of the queries each (threads=1 per search)
against one thread searching them one quarter after another.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import bsa

ROOT = Path(__file__).resolve().parents[1]


def default_bsa():
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / "bsa"


def cli_seconds(bsa_bin, index, qargs, k, extra):
    p = subprocess.run(
        [str(bsa_bin), "search", "--index", str(index), *qargs, "--k", str(k), "--stats",
         "--out", os.devnull, *extra],
        capture_output=True, text=True, check=True,
    )
    return json.loads(p.stderr.strip().splitlines()[-1])["search_seconds"]


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="/work/shared/data/wordnet-minilm/base.npy")
    ap.add_argument("--queries", default="/work/shared/data/wordnet-minilm/query.npy")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nq", type=int, default=2000, help="queries per batch (the first NQ)")
    ap.add_argument("--bsa", default=str(default_bsa()))
    a = ap.parse_args()

    base = np.load(a.base)
    queries = np.load(a.queries)
    print(f"base {base.shape}, queries {queries.shape}, {os.cpu_count()} cores, bsa {a.bsa}", flush=True)
    queries = queries[: a.nq]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "query.npy", queries)
        floats = ["--queries", tmp / "query.npy"]
        # Dense codes for Hamming: ITQ, 384 bits (48 bytes per vector), quick to fit.
        itq = bsa.train(base, method="itq", bits=384, progress=False)
        dense = bsa.Index.build(x=base, model=itq, path=tmp / "dense")
        np.save(tmp / "qcodes.npy", itq.encode(queries))
        # Sparse codes for the table scores (ADC reads their set bits): a small pursuit,
        # N = 1024, K = 32, 2 rounds on 20k rows, with the vectors for rescoring.
        pursuit = bsa.train(base, method="pursuit", bits=1024, k=32, rounds=2, fit_rows=20000,
                            progress=False)
        sparse = bsa.Index.build(x=base, model=pursuit, vectors=True, path=tmp / "sparse")
        cases = [
            ("ITQ-384, hamming, query codes", dense, itq, np.load(tmp / "qcodes.npy"),
             ["--query-codes", tmp / "qcodes.npy"], {}, []),
            ("ITQ-384, hamming, float queries", dense, itq, queries, floats, {}, []),
            ("pursuit-1024, inverted hamming", sparse, pursuit, queries, floats,
             dict(mode="inverted"), ["--mode", "inverted"]),
            ("pursuit-1024, adc", sparse, pursuit, queries, floats, dict(score="adc"),
             ["--score", "adc"]),
            ("pursuit-1024, adc + rescore 4", sparse, pursuit, queries, floats,
             dict(score="adc", rescore=4), ["--score", "adc", "--rescore", "4"]),
        ]
        print("| search | python (ms) | python - encode (ms) | CLI search_seconds (ms) | overhead |")
        print("| --- | --- | --- | --- | --- |")
        for name, index, model, q, qargs, kw, extra in cases:
            index.search(q, a.k, **kw)  # warm the page cache and the pool
            py, cli, enc = [], [], []
            for _ in range(a.repeats):
                py.append(timed(lambda: index.search(q, a.k, **kw)))
                cli.append(cli_seconds(a.bsa, index.path, qargs, a.k, extra))
                enc.append(timed(lambda: model.encode(q)) if q.dtype != np.uint8 else 0.0)
            p, c, e = statistics.median(py), statistics.median(cli), statistics.median(enc)
            print(f"| {name} | {p * 1e3:.1f} | {(p - e) * 1e3:.1f} | {c * 1e3:.1f} | "
                  f"{(p - e - c) / c * 100:+.1f}% |", flush=True)

        print("\nFour Python threads searching a quarter of the batch each (threads=1 per search)"
              " against one thread searching the quarters one after another:")
        for name, index, q, kw in [
            ("ITQ-384, hamming, query codes", dense, np.load(tmp / "qcodes.npy"), {}),
            ("pursuit-1024, adc", sparse, queries, dict(score="adc")),
        ]:
            quarters = [q[i::4] for i in range(4)]
            serial, parallel = [], []
            for _ in range(a.repeats):
                serial.append(timed(lambda: [index.search(b, a.k, threads=1, **kw) for b in quarters]))
                with ThreadPoolExecutor(4) as pool:
                    parallel.append(timed(lambda: list(pool.map(
                        lambda b: index.search(b, a.k, threads=1, **kw), quarters))))
            s, p = statistics.median(serial), statistics.median(parallel)
            print(f"- {name}: one thread {s * 1e3:.1f} ms, four threads {p * 1e3:.1f} ms ({s / p:.2f}x)",
                  flush=True)

if __name__ == "__main__":
    sys.exit(main())
