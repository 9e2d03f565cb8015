#!/usr/bin/env python3
"""bsa against FAISS ``IndexBinaryFlat`` on 384-bit sign codes (the sign bits of 384-d sentence
embeddings, 48 bytes a vector), exact batch search, in one run at equal threads.

Codes: ``x > 0`` of the WordNet all-MiniLM-L6-v2 base (100k) and query (10k) vectors, packed
little-endian (what ``bsa train --method sign`` + ``bsa encode`` give). bsa searches an index
built with ``bsa build --codes``; its QPS is ``bsa search --stats``' (the search alone). Each
round times FAISS and then every bsa kernel family asked for, alternating; the medians and the
per-round ratios are printed and written to benches/RESULTS-sign384.md. Distances must agree
with FAISS's at every rank (ids may differ on ties).

Usage (from the repository root, after ``cargo build --release``; a few minutes):

    /work/venv/bin/python benches/sign384_compare.py --data ../shared/data/wordnet-minilm \\
        --threads 2 --rounds 3 --kernels avx512,avx2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as faiss_compare.py: see there
import faiss  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))
from adc_frontier import cpu_name  # noqa: E402  (the same CPU line as the ADC report)


def sign_codes(x: np.ndarray) -> np.ndarray:
    return np.packbits(x > 0, axis=1, bitorder="little")


def bsa_search(bsa: str, idx: Path, qc: Path, out: Path, threads: int, kernel: str) -> tuple[float, str]:
    env = dict(os.environ, BSA_KERNEL=kernel)
    r = subprocess.run(
        [bsa, "search", "--index", str(idx), "--query-codes", str(qc), "--k", "10",
         "--threads", str(threads), "--stats", "--out", str(out)],
        env=env, capture_output=True, text=True, check=True,
    )
    stats = json.loads(r.stderr.strip().splitlines()[-1])
    return stats["qps"], stats["kernel"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with base.npy and query.npy")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kernels", default="avx512,avx2", help="BSA_KERNEL families, comma-separated")
    ap.add_argument("--bsa", default=str(ROOT / "target" / "release" / "bsa"))
    ap.add_argument("--out", type=Path, default=ROOT / "benches" / "RESULTS-sign384.md")
    a = ap.parse_args()

    base = sign_codes(np.load(a.data / "base.npy"))
    queries = sign_codes(np.load(a.data / "query.npy"))
    faiss.omp_set_num_threads(a.threads)
    index = faiss.IndexBinaryFlat(base.shape[1] * 8)
    index.add(base)
    kernels = a.kernels.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "base.npy", base)
        np.save(tmp / "q.npy", queries)
        subprocess.run([a.bsa, "build", "--codes", str(tmp / "base.npy"), "-q", "--out",
                        str(tmp / "idx")], check=True)
        faiss_qps: list[float] = []
        bsa_qps: dict[str, list[float]] = {k: [] for k in kernels}
        names: dict[str, str] = {}
        load_before = os.getloadavg()
        for _ in range(a.rounds):
            t = time.perf_counter()
            dist, _ = index.search(queries, 10)
            faiss_qps.append(len(queries) / (time.perf_counter() - t))
            for k in kernels:
                qps, names[k] = bsa_search(a.bsa, tmp / "idx", tmp / "q.npy", tmp / "out.jsonl",
                                           a.threads, k)
                bsa_qps[k].append(qps)
                got = [json.loads(line)["distances"] for line in open(tmp / "out.jsonl")]
                for i in range(100):
                    if list(got[i]) != dist[i].tolist():
                        sys.exit(f"query {i}: bsa distances {got[i]} differ from FAISS's {dist[i]}")
        load_after = os.getloadavg()

    fmed = statistics.median(faiss_qps)
    lines = [
        "# bsa against FAISS `IndexBinaryFlat` on 384-bit sign codes",
        "",
        f"Written by `benches/sign384_compare.py` on {datetime.datetime.now().isoformat(timespec='seconds')}; "
        f"CPU: {cpu_name()}; {a.threads} threads; "
        f"{len(base)} base x {len(queries)} queries, k = 10; {a.rounds} rounds, each FAISS then "
        f"bsa; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (a shared "
        "machine: compare numbers of this run only). Distances equal FAISS's at every rank "
        "(first 100 queries, every round).",
        "",
        "| system | kernel | QPS per round | median QPS | / FAISS (median of per-round ratios) |",
        "| --- | --- | --- | --- | --- |",
        f"| FAISS IndexBinaryFlat | its own | {', '.join(f'{q:,.0f}' for q in faiss_qps)} | "
        f"{fmed:,.0f} | 1.00x |",
    ]
    for k in kernels:
        ratios = [b / f for b, f in zip(bsa_qps[k], faiss_qps)]
        lines.append(
            f"| bsa | {names[k]} | {', '.join(f'{q:,.0f}' for q in bsa_qps[k])} | "
            f"{statistics.median(bsa_qps[k]):,.0f} | {statistics.median(ratios):.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    a.out.write_text(text)


if __name__ == "__main__":
    main()
