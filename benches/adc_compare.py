#!/usr/bin/env python3
"""Flat exact ADC (``bsa search --score adc``) before and after the quantised scan, against FAISS
``IndexPQFastScan`` (``PQ96x4fs``), in one run, at equal threads (index/RESULTS-adc.md).

Every round runs, in turn: each bsa binary x each index x each kernel family, then FAISS; the
reported numbers are medians over --rounds, and the ratios compare medians of the same run (the
machine is shared, so absolute numbers drift; ratios less so). bsa's number is ``--stats``' qps:
the per-query ADC tables and the search, not loading or encoding the queries. FAISS's number is
``index.search`` on all queries at once (its look-up tables included), inner product, trained on
the first 50,000 base rows, ``omp_set_num_threads(threads)``, OMP_WAIT_POLICY=PASSIVE.

Every bsa run's output must be the same bytes as the first binary's on the same index (the scan
is exact), or the script stops.

Usage (indexes built beforehand, see index/RESULTS-adc.md for the commands):

    python3 benches/adc_compare.py --data /work/shared/data/wordnet-minilm \\
        --queries q2000.npy --bin before=/path/bsa-main --bin after=target/release/bsa \\
        --index pursuit=idx --index sign=idx-sign --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# See benches/faiss_compare.py: spinning OpenMP threads collapse on a loaded 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import faiss  # noqa: E402  (after OMP_WAIT_POLICY)


def median(xs):
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])


def bsa_qps(binary, index, queries, threads, k, family, out):
    env = dict(os.environ)
    # The kernel family of every SIMD path; OpenBLAS told to use its AVX2 kernels with avx2.
    env.pop("BSA_KERNEL", None)
    env.pop("OPENBLAS_CORETYPE", None)
    if family:
        env["BSA_KERNEL"] = family
        if family == "avx2":
            env["OPENBLAS_CORETYPE"] = "Haswell"
    cmd = [binary, "search", "--index", index, "--queries", queries, "--k", str(k),
           "--score", "adc", "--threads", str(threads), "--stats", "--out", out]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    stats = json.loads(r.stderr.strip().splitlines()[-1])
    return stats


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="directory with base.npy")
    ap.add_argument("--queries", required=True, help="float queries .npy (e.g. the first 2,000)")
    ap.add_argument("--bin", action="append", required=True, help="name=path of a bsa binary")
    ap.add_argument("--index", action="append", required=True, help="name=path of an index")
    ap.add_argument("--families", default="portable,avx2,avx512",
                    help="kernel families for binaries after the first (the first runs its default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--faiss", default="PQ96x4fs")
    a = ap.parse_args()

    bins = [b.split("=", 1) for b in a.bin]
    indexes = [i.split("=", 1) for i in a.index]
    families = [f for f in a.families.split(",") if f]
    base = np.load(Path(a.data) / "base.npy").astype(np.float32)
    q = np.ascontiguousarray(np.load(a.queries).astype(np.float32))
    faiss.omp_set_num_threads(a.threads)
    t = time.time()
    fi = faiss.index_factory(base.shape[1], a.faiss, faiss.METRIC_INNER_PRODUCT)
    fi.train(base[:50000])
    fi.add(base)
    print(f"faiss {a.faiss}: trained and added in {time.time() - t:.1f} s", file=sys.stderr)

    runs = []  # (label, binary name, index name, family)
    for bi, (bname, _) in enumerate(bins):
        for iname, _ in indexes:
            for fam in ([None] if bi == 0 else families):
                runs.append((bname, iname, fam))
    qps = {r: [] for r in runs}
    rescored = {}
    kernel = {}
    faiss_qps = []
    tmp = tempfile.mkdtemp(prefix="adc-compare-")
    reference = {}
    for rnd in range(a.rounds):
        for run in runs:
            bname, iname, fam = run
            out = os.path.join(tmp, "out.jsonl")
            st = bsa_qps(dict(bins)[bname], dict(indexes)[iname], a.queries, a.threads, a.k, fam, out)
            body = Path(out).read_bytes()
            if iname not in reference:
                reference[iname] = body
            elif reference[iname] != body:
                sys.exit(f"{bname} {iname} {fam}: results differ from the first binary's")
            qps[run].append(st["qps"])
            rescored[run] = st.get("codes_rescored")
            kernel[run] = st.get("table_kernel", st.get("kernel"))
        t = time.perf_counter()
        fi.search(q, a.k)
        faiss_qps.append(len(q) / (time.perf_counter() - t))
        print(f"round {rnd + 1}/{a.rounds} done, load {os.getloadavg()[0]:.2f}", file=sys.stderr)

    fq = median(faiss_qps)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
               platform.processor())
    print(f"CPU: {cpu}, {os.cpu_count()} cores; threads {a.threads}; {len(q)} queries; k {a.k}; "
          f"{a.rounds} rounds; load average at the end {os.getloadavg()[0]:.2f}\n")
    print(f"FAISS {a.faiss} (faiss {faiss.__version__}): median {fq:,.0f} QPS "
          f"(rounds: {', '.join(f'{x:,.0f}' for x in faiss_qps)})\n")
    first = {iname: median(qps[(bins[0][0], iname, None)]) for iname, _ in indexes}
    print("| binary | index | BSA_KERNEL | table kernel | median QPS | vs first binary | vs FAISS | re-scored / query |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in runs:
        bname, iname, fam = run
        m = median(qps[run])
        rs = rescored[run]
        rs = f"{rs / len(q):.0f}" if rs is not None else "-"
        print(f"| {bname} | {iname} | {fam or 'default'} | {kernel[run]} | {m:,.0f} | "
              f"{m / first[iname]:.2f}x | {m / fq:.2f}x | {rs} |")


if __name__ == "__main__":
    main()
