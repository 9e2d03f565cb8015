"""Overhead of searching from Python: batch search over a 100k index through `bsa` (the Python
package) against the `bsa search --stats` time of the same search by the command line.

    python python/bench_overhead.py [--base B.npy] [--queries Q.npy] [--repeats 15] [--bsa PATH]

Both search the same index directories with the same batch of queries on all cores. Both sides
time the same span: Python's is the wall time of `index.search(...)` (argument checks, encoding
float queries, tables, search, rescoring, the result arrays), the CLI's is
`encode_seconds + search_seconds` of its `--stats` line (encoding, tables, search, rescoring;
not starting, loading the index and queries, or writing results). Each case runs one untimed
search on each side, then `--repeats` pairs, strictly alternating a Python and a CLI run, and
reports the median of each side and the median of the per-pair ratios Python / CLI (paired, so a
load change between pairs cancels out more than between medians), with its spread (the 25th
and 75th percentiles) and the load average before and after the case.
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
    """Encoding plus search seconds of one `bsa search --stats` run, and the encoding alone."""
    p = subprocess.run(
        [str(bsa_bin), "search", "--index", str(index), *qargs, "--k", str(k), "--stats",
         "--out", os.devnull, *extra],
        capture_output=True, text=True, check=True,
    )
    st = json.loads(p.stderr.strip().splitlines()[-1])
    return st["encode_seconds"] + st["search_seconds"], st["encode_seconds"]


def load():
    return "{:.1f}".format(os.getloadavg()[0])


def quartiles(v):
    q = statistics.quantiles(v, n=4, method="inclusive")
    return q[0], q[2]


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="/work/shared/data/wordnet-minilm/base.npy")
    ap.add_argument("--queries", default="/work/shared/data/wordnet-minilm/query.npy")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nq", type=int, default=2000, help="queries per batch (the first NQ)")
    ap.add_argument("--bsa", default=str(default_bsa()))
    a = ap.parse_args()

    base = np.load(a.base)
    queries = np.load(a.queries)
    print(f"base {base.shape}, queries {queries.shape}, {os.cpu_count()} cores, bsa {a.bsa}, "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
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
            ("ITQ-384, hamming, query codes", dense, np.load(tmp / "qcodes.npy"),
             ["--query-codes", tmp / "qcodes.npy"], {}, []),
            ("ITQ-384, hamming, float queries", dense, queries, floats, {}, []),
            ("pursuit-1024, inverted hamming", sparse, queries, floats,
             dict(mode="inverted"), ["--mode", "inverted"]),
            ("pursuit-1024, adc", sparse, queries, floats, dict(score="adc"),
             ["--score", "adc"]),
            ("pursuit-1024, adc + rescore 4", sparse, queries, floats,
             dict(score="adc", rescore=4), ["--score", "adc", "--rescore", "4"]),
        ]
        print(f"{a.repeats} pairs per case, Python then CLI; CLI = encode_seconds + search_seconds;"
              " difference = median of the per-pair ratios Python / CLI - 1 (25th-75th percentile)")
        print("| search | Python (ms) | CLI (ms) | of which encoding (ms) | difference | load before/after |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, index, q, qargs, kw, extra in cases:
            before = load()
            index.search(q, a.k, **kw)  # warm the page cache and the pool
            cli_seconds(a.bsa, index.path, qargs, a.k, extra)
            py, cli, enc = [], [], []
            for _ in range(a.repeats):
                py.append(timed(lambda: index.search(q, a.k, **kw)))
                c, e = cli_seconds(a.bsa, index.path, qargs, a.k, extra)
                cli.append(c)
                enc.append(e)
            ratios = [p / c for p, c in zip(py, cli)]
            lo, hi = quartiles(ratios)
            r = statistics.median(ratios)
            print(f"| {name} | {statistics.median(py) * 1e3:.1f} | {statistics.median(cli) * 1e3:.1f} | "
                  f"{statistics.median(enc) * 1e3:.1f} | {(r - 1) * 100:+.1f}% "
                  f"({(lo - 1) * 100:+.1f}% to {(hi - 1) * 100:+.1f}%) | {before} / {load()} |",
                  flush=True)

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
    print(f"load average at the end {' '.join(f'{v:.1f}' for v in os.getloadavg())}")

if __name__ == "__main__":
    sys.exit(main())
