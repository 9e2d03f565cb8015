#!/usr/bin/env python3
"""Issue 14's frontier at rescored recall 0.97 and 0.98 (48 bytes), measured in rotation.

benches/adc_frontier.py runs each system's whole block after the other's, so a change of load
between the blocks moves every ratio. This script builds FAISS's ``HNSW32,PQ48`` (at each
``--faiss-efc``, efConstruction 40 by default) and ``OPQ96,PQ96x4fs`` (trained on the first 50k
base rows) and, in each round, runs every configuration in turn (FAISS's HNSW at efSearch 32-96
and OPQ; bsa's ADC graph at each ``--ef``, rescored from the top 40), the order reversed every
other round. Each turn runs its configuration ``--reps`` times in a row and counts the median of
all but the first (warm, as a server runs; with ``--reps 1`` one run right after the other
configurations', which favours bsa: FAISS loses more to cold caches). It prints each
configuration's median QPS and recall@10 after rescoring the top 40 and, at each recall target,
the fastest configuration of each side that reaches it and the median of their per-round ratios
(issue 14: bsa's fastest against FAISS's fastest of equal recall). bsa is timed two ways: ``bsa
search --stats`` (a process per search: the tables, walk and rescoring, on an index mapped
afresh, so its pages fault in during the timed span) and, when the ``bsa`` Python package is
installed (``maturin develop --release``), one ``Index.search`` call on an index opened once,
as FAISS is timed: ``index.search(xq, 10)`` alone on its index in memory (its rescored recall
re-ranks its top 40 exactly, untimed).

Usage (repository root; the index is adc_frontier.py's 48-byte one, built with --f16; give
FAISS the bsa graph's efConstruction too when it is not 40, so each side has its best):

    python3 benches/adc_rotate.py --index /tmp/bsa-adc-frontier/idx-48 [--rounds 9] [--reps 5]
        [--ef 20,24,28,32,36,64] [--faiss-efc 40,200]
"""

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import faiss  # noqa: E402  (after OMP_WAIT_POLICY)
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "wordnet-minilm"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bsa", default=str(ROOT / "target/release/bsa"))
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--ef", default="20,24,28,32,36,64", help="bsa's ef values (comma-separated)")
    ap.add_argument("--faiss-efc", default="40",
                    help="efConstruction values of FAISS's HNSW32,PQ48 (comma-separated)")
    ap.add_argument("--targets", default="0.97,0.98")
    ap.add_argument("--reps", type=int, default=5,
                    help="runs of each configuration per round; its QPS is the median of all but "
                         "the first (warm, as a server runs); 1: one cold-ish run per round")
    a = ap.parse_args()
    faiss.omp_set_num_threads(2)
    x = np.load(DATA / "base.npy").astype(np.float32)
    q = np.load(DATA / "query.npy")[: a.queries].astype(np.float32)
    gt = np.load(DATA / "gt_top100.npy")[: len(q), :10]
    qpath = Path(tempfile.mkdtemp()) / "queries.npy"
    np.save(qpath, q)

    def recall(ids):
        return np.mean([len(set(list(r)[:10]) & set(g)) / 10 for r, g in zip(ids, gt)])

    hnsw = {}
    for efc in [int(e) for e in a.faiss_efc.split(",")]:
        index = faiss.index_factory(x.shape[1], "HNSW32,PQ48", faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = efc
        index.train(x[:50000])
        index.add(x)
        hnsw[efc] = index
    opq = faiss.index_factory(x.shape[1], "OPQ96,PQ96x4fs", faiss.METRIC_INNER_PRODUCT)
    opq.train(x[:50000])
    opq.add(x)

    def faiss_run(index, ef=None):
        if ef:
            index.hnsw.efSearch = ef
        t = time.perf_counter()
        index.search(q, 10)
        dt = time.perf_counter() - t
        _, top40 = index.search(q, 40)
        ranked = []
        for i, c in enumerate(top40):
            c = c[c >= 0]
            ranked.append(c[np.argsort(-(x[c] @ q[i]), kind="stable")][:10])
        return len(q) / dt, recall(ranked)

    def bsa_run(ef):
        out = subprocess.run(
            [a.bsa, "search", "--index", a.index, "--queries", qpath, "--k", "10", "--score", "adc",
             "--mode", "hnsw", "--ef", str(ef), "--rescore", "4", "--threads", "2", "--stats",
             "--no-verify"], capture_output=True, text=True, check=True)
        stats = json.loads(out.stderr.strip().splitlines()[-1])
        return stats["qps"], recall([json.loads(line)["ids"] for line in out.stdout.splitlines()])

    try:
        import bsa
    except ImportError:
        bsa = None
        print("the bsa Python package is not installed: bsa is timed by its command line only")
    if bsa is not None:
        opened = bsa.Index.open(a.index, verify=False)

    def bsa_py_run(ef):
        t = time.perf_counter()
        _, ids = opened.search(q, 10, score="adc", mode="hnsw", ef=ef, rescore=4, threads=2)
        dt = time.perf_counter() - t
        return len(q) / dt, recall(ids)

    efs = [int(e) for e in a.ef.split(",")]
    configs = [(f"faiss HNSW32,PQ48 efConstruction {efc} efSearch {ef}",
                lambda index=index, ef=ef: faiss_run(index, ef))
               for efc, index in hnsw.items() for ef in (32, 40, 48, 64, 80, 96)]
    configs.append(("faiss OPQ96,PQ96x4fs", lambda: faiss_run(opq)))
    configs += [(f"bsa ef {ef}", lambda ef=ef: bsa_run(ef)) for ef in efs]
    if bsa is not None:
        configs += [(f"bsa in process ef {ef}", lambda ef=ef: bsa_py_run(ef)) for ef in efs]
    def warm(run):
        got = [run() for _ in range(a.reps)]
        return float(np.median([s for s, _ in got[1:] or got])), got[-1][1]

    runs = {}
    for r in range(a.rounds):
        for name, run in configs if r % 2 == 0 else configs[::-1]:
            runs.setdefault(name, []).append(warm(run))
    for name, v in runs.items():
        print(f"{name}: median {np.median([s for s, _ in v]):.0f} QPS, recall@10 rescored {v[0][1]:.4f}")

    def fastest(prefix, target):
        """The name of the fastest (median QPS) configuration whose names start with
        ``prefix`` and whose rescored recall reaches ``target``, or None."""
        ok = [(np.median([s for s, _ in v]), name) for name, v in runs.items()
              if name.startswith(prefix) and v[0][1] >= target]
        return max(ok)[1] if ok else None

    for target in [float(t) for t in a.targets.split(",")]:
        f = fastest("faiss", target)
        for side in ["bsa ef"] + (["bsa in process"] if bsa is not None else []):
            b = fastest(side, target)
            if b is None or f is None:
                print(f"at {target}: {'FAISS' if f is None else side} reaches no configuration")
                continue
            ratio = np.median([x_[0] / y_[0] for x_, y_ in zip(runs[b], runs[f])])
            print(f"at {target}: {b} ({runs[b][0][1]:.4f}) / {f} ({runs[f][0][1]:.4f}): "
                  f"{ratio:.2f}x (median of per-round ratios)")


if __name__ == "__main__":
    main()
