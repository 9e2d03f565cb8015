#!/usr/bin/env python3
"""Issue 14's 1M check beside FAISS: how much any graph gains over a flat scan on that set.

The issue's 1M set is WordNet's 100k base repeated 10 times with small Gaussian noise
(``benches/adc_scale_1m.sh``), so a query's exact top 10 are near-copies of one or two base
vectors (1.5 on average), and a beam of ``ef`` rows holds about ``ef / 10`` distinct ones. This
script measures, in rotation on that set, the flat scan and the graph of both systems:

* bsa (Python package, one ``Index.search`` call on the index of ``adc_scale_1m.sh``, opened
  once): the exact flat ADC scan and the ADC graph at several ``ef``, both rescored from the
  top 40;
* FAISS: the exact float scan ``IndexFlatIP`` and ``IndexHNSWFlat`` (M 32, efConstruction 40:
  a graph on the exact vectors, the best case for a graph), and ``HNSW32,PQ48`` (48 bytes,
  rescored from its top 40 untimed, as ``adc_rotate.py`` does); plus ``IndexHNSWFlat`` on the
  first 100k rows (the original WordNet base, ground truth by its exact scan) for the efSearch
  the same recall needs without the copies; and ``IVF4096,Flat`` (k-means on 256k rows drawn
  at random, the inverted file FAISS's guidelines give for 1M vectors), whose cells hold
  whole groups of copies where a graph's beam does not.

It prints each configuration's median QPS and recall@10, and the per-round ratio of each graph
configuration to its own system's flat scan. FAISS's graphs are saved in WORKDIR and reused.

Usage (repository root; the bsa package installed with ``maturin develop --release``):

    benches/adc_scale_1m.sh MODEL /tmp/bsa-scale-1m
    python3 benches/adc_scale_compare.py /tmp/bsa-scale-1m [--rounds 5]
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import faiss  # noqa: E402  (after OMP_WAIT_POLICY)
import numpy as np  # noqa: E402

import bsa  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bsa-ef", default="64,128,256,320,512")
    ap.add_argument("--faiss-ef", default="64,128,256,320,512")
    ap.add_argument("--nprobe", default="16,32,64")
    a = ap.parse_args()
    w = a.workdir
    faiss.omp_set_num_threads(2)
    x = np.load(w / "base1m.npy")
    q = np.load(w / "q.npy").astype(np.float32)
    gt = np.load(w / "gt.npy")[:, :10]
    n_small = len(x) // 10

    def recall(ids, truth=gt):
        return float(np.mean([len(set(list(r)[:10]) & set(g)) / 10 for r, g in zip(ids, truth)]))

    def built(name, make):
        path = w / f"faiss-{name}.index"
        if path.exists():
            return faiss.read_index(str(path))
        t = time.perf_counter()
        index = make()
        print(json.dumps({"built": name, "seconds": round(time.perf_counter() - t, 1)}), flush=True)
        faiss.write_index(index, str(path))
        return index

    def hnsw_flat(rows):
        def make():
            index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 40
            index.add(rows)
            return index
        return make

    def hnsw_pq():
        index = faiss.index_factory(x.shape[1], "HNSW32,PQ48", faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        index.train(x[:50000])
        index.add(x)
        return index

    def ivf_flat():
        index = faiss.index_factory(x.shape[1], "IVF4096,Flat", faiss.METRIC_INNER_PRODUCT)
        rows = np.sort(np.random.default_rng(7).choice(len(x), 256000, replace=False))
        index.train(x[rows])
        index.add(x)
        return index

    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    ivf = built("ivf4096-flat-1m", ivf_flat)
    graph = built("hnsw32-flat-1m", hnsw_flat(x))
    graph_pq = built("hnsw32-pq48-1m", hnsw_pq)
    small = x[:n_small]
    graph_small = built("hnsw32-flat-100k", hnsw_flat(small))
    small_flat = faiss.IndexFlatIP(x.shape[1])
    small_flat.add(small)
    gt_small = small_flat.search(q, 10)[1]
    opened = bsa.Index.open(str(w / "idx"), verify=False)

    def faiss_run(index, ef=None, rescored=False, truth=gt, nprobe=None):
        if ef:
            index.hnsw.efSearch = ef
        if nprobe:
            index.nprobe = nprobe
        t = time.perf_counter()
        _, ids = index.search(q, 40 if rescored else 10)
        dt = time.perf_counter() - t
        if rescored:
            ids = [c[np.argsort(-(x[c] @ q[i]), kind="stable")][:10]
                   for i, c in enumerate(c[c >= 0] for c in ids)]
        return len(q) / dt, recall(ids, truth)

    def bsa_run(**kw):
        t = time.perf_counter()
        _, ids = opened.search(q, 10, score="adc", rescore=4, threads=2, **kw)
        dt = time.perf_counter() - t
        return len(q) / dt, recall(ids)

    bsa_efs = [int(e) for e in a.bsa_ef.split(",")]
    faiss_efs = [int(e) for e in a.faiss_ef.split(",")]
    configs = [("bsa flat ADC", lambda: bsa_run(mode="flat"))]
    configs += [(f"bsa ADC graph ef {e}", lambda e=e: bsa_run(mode="hnsw", ef=e)) for e in bsa_efs]
    configs.append(("faiss Flat", lambda: faiss_run(flat)))
    configs += [(f"faiss HNSW32,Flat efSearch {e}", lambda e=e: faiss_run(graph, e))
                for e in faiss_efs]
    configs += [(f"faiss HNSW32,PQ48 efSearch {e} (rescored top 40, untimed)",
                 lambda e=e: faiss_run(graph_pq, e, rescored=True)) for e in faiss_efs]
    configs += [(f"faiss IVF4096,Flat nprobe {p}", lambda p=p: faiss_run(ivf, nprobe=p))
                for p in (int(p) for p in a.nprobe.split(","))]
    configs += [(f"faiss HNSW32,Flat on the first 100k efSearch {e}",
                 lambda e=e: faiss_run(graph_small, e, truth=gt_small)) for e in (16, 32, 64)]
    runs = {}
    for r in range(a.rounds):
        for name, run in configs if r % 2 == 0 else configs[::-1]:
            runs.setdefault(name, []).append(run())
    for name, v in runs.items():
        line = {"config": name, "median_qps": round(float(np.median([s for s, _ in v]))),
                "recall@10": round(v[0][1], 4)}
        base = "bsa flat ADC" if name.startswith("bsa") else "faiss Flat"
        if name != base and "100k" not in name:
            line["x_own_flat"] = round(float(np.median(
                [g[0] / f[0] for g, f in zip(v, runs[base])])), 2)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
