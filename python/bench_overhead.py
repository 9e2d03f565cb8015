"""Overhead of searching from Python: batch search over a 100k index through `bsa` (the Python
package) against the `bsa search --stats` time of the same search by the command line.

    python python/bench_overhead.py [--base B.npy] [--queries Q.npy] [--repeats 7] [--bsa PATH]

Both search the same index directory with the same queries on all cores; each case alternates
Python and CLI runs and reports medians. `search_seconds` of the CLI covers the tables, the
search and the rescoring, not loading or encoding the float queries; the Python time is the wall
time of `index.search(...)`, which also encodes float queries, so for float queries the median
time of `model.encode(queries)` is reported and subtracted (the "python - encode" column).
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
    ap.add_argument("--bsa", default=str(default_bsa()))
    a = ap.parse_args()

    base = np.load(a.base)
    queries = np.load(a.queries)
    print(f"base {base.shape}, queries {queries.shape}, {os.cpu_count()} cores, bsa {a.bsa}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # ITQ, 384 bits (48 bytes per vector): quick to fit, with a decoder for --score adc.
        model = bsa.train(base, method="itq", bits=384, progress=False)
        index = bsa.Index.build(x=base, model=model, vectors=True, path=tmp / "idx")
        qcodes = model.encode(queries)
        np.save(tmp / "qcodes.npy", qcodes)
        np.save(tmp / "query.npy", queries)
        cases = [
            ("hamming, query codes", qcodes, ["--query-codes", tmp / "qcodes.npy"], {}, []),
            ("hamming, float queries", queries, ["--queries", tmp / "query.npy"], {}, []),
            ("adc, float queries", queries, ["--queries", tmp / "query.npy"], dict(score="adc"), ["--score", "adc"]),
            ("adc + rescore 4, float queries", queries, ["--queries", tmp / "query.npy"],
             dict(score="adc", rescore=4), ["--score", "adc", "--rescore", "4"]),
        ]
        enc = statistics.median(timed(lambda: model.encode(queries)) for _ in range(a.repeats))
        print(f"model.encode of {len(queries)} queries: median {enc * 1e3:.1f} ms\n")
        print("| search | python (ms) | python - encode (ms) | CLI search_seconds (ms) | overhead |")
        print("| --- | --- | --- | --- | --- |")
        for name, q, qargs, kw, extra in cases:
            index.search(q, a.k, **kw)  # warm the page cache and the pool
            py, cli = [], []
            for _ in range(a.repeats):
                py.append(timed(lambda: index.search(q, a.k, **kw)))
                cli.append(cli_seconds(a.bsa, tmp / "idx", qargs, a.k, extra))
            p, c = statistics.median(py), statistics.median(cli)
            net = p - enc if q.dtype != np.uint8 else p
            print(f"| {name} | {p * 1e3:.1f} | {net * 1e3:.1f} | {c * 1e3:.1f} | {(net - c) / c * 100:+.1f}% |",
                  flush=True)

        quarters = [queries[i::4] for i in range(4)]
        serial, parallel = [], []
        for _ in range(a.repeats):
            serial.append(timed(lambda: [index.search(b, a.k, score="adc", threads=1) for b in quarters]))
            with ThreadPoolExecutor(4) as pool:
                parallel.append(timed(lambda: list(pool.map(
                    lambda b: index.search(b, a.k, score="adc", threads=1), quarters))))
        s, p = statistics.median(serial), statistics.median(parallel)
        print(f"\nadc, 4 quarters of the queries, threads=1 per search: one Python thread {s * 1e3:.1f} ms, "
              f"four Python threads {p * 1e3:.1f} ms ({s / p:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
