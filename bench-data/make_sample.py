#!/usr/bin/env python3
"""Cut the small checked-in benchmark sample out of the shared wordnet-minilm set.

Usage:
    python make_sample.py [SHARED_DIR]

SHARED_DIR defaults to ../../shared/data/wordnet-minilm relative to this script
(i.e. /work/shared/data/wordnet-minilm when the repo is at /work/main).
Outputs are written next to this script:

    base.npy       first 10000 rows of the shared base.npy   (10000 x 384 float32, C order)
    query.npy      first 1000 rows of the shared query.npy   (1000 x 384 float32, C order)
    base.txt       the matching 10000 sentences, one per line
    query.txt      the matching 1000 sentences, one per line
    gt_top100.npy  (1000 x 100 int32) exact top-100 base row ids per query by inner
                   product (= cosine, rows are unit length), best first.

Ground truth: scores are computed in float64 from the float32 vectors
(query.astype(f64) @ base.astype(f64).T); each row is ordered with a *stable*
argsort of -score, so equal scores are broken by the lower base row id.
Only numpy is needed.
"""
import argparse
import os
import sys

import numpy as np

N_BASE = 10_000
N_QUERY = 1_000
K = 100
MAX_TOTAL_BYTES = 20 * 1024 * 1024


def read_lines(path, n):
    out = []
    with open(path, encoding="utf-8", newline="\n") as f:
        for line in f:
            if len(out) == n:
                break
            out.append(line.rstrip("\n"))
    if len(out) != n:
        sys.exit(f"{path}: expected at least {n} lines, got {len(out)}")
    return out


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for s in lines:
            assert "\n" not in s
            f.write(s + "\n")


def exact_topk(query, base, k):
    """Exact top-k by inner product, float64 scores, ties -> lower id. Returns int32 (nq, k)."""
    b = base.astype(np.float64)
    out = np.empty((query.shape[0], k), dtype=np.int32)
    step = 256
    for i in range(0, query.shape[0], step):
        s = query[i:i + step].astype(np.float64) @ b.T
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        out[i:i + step] = order.astype(np.int32)
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_src = os.path.normpath(os.path.join(here, "..", "..", "shared", "data", "wordnet-minilm"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shared_dir", nargs="?", default=default_src,
                    help=f"folder holding the full wordnet-minilm set (default: {default_src})")
    ap.add_argument("--out", default=here, help="output folder (default: this script's folder)")
    args = ap.parse_args()
    src, out = args.shared_dir, args.out

    base_full = np.load(os.path.join(src, "base.npy"), mmap_mode="r")
    query_full = np.load(os.path.join(src, "query.npy"), mmap_mode="r")
    if base_full.dtype != np.float32 or query_full.dtype != np.float32:
        sys.exit(f"expected float32 inputs, got {base_full.dtype} / {query_full.dtype}")
    if base_full.shape[0] < N_BASE or query_full.shape[0] < N_QUERY or base_full.shape[1] != query_full.shape[1]:
        sys.exit(f"unexpected input shapes {base_full.shape} / {query_full.shape}")

    base = np.ascontiguousarray(base_full[:N_BASE], dtype="<f4")
    query = np.ascontiguousarray(query_full[:N_QUERY], dtype="<f4")
    base_txt = read_lines(os.path.join(src, "base.txt"), N_BASE)
    query_txt = read_lines(os.path.join(src, "query.txt"), N_QUERY)

    gt = exact_topk(query, base, K)

    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "base.npy"), base)
    np.save(os.path.join(out, "query.npy"), query)
    np.save(os.path.join(out, "gt_top100.npy"), np.ascontiguousarray(gt, dtype="<i4"))
    write_lines(os.path.join(out, "base.txt"), base_txt)
    write_lines(os.path.join(out, "query.txt"), query_txt)

    total = 0
    for name in ["base.npy", "query.npy", "gt_top100.npy", "base.txt", "query.txt"]:
        sz = os.path.getsize(os.path.join(out, name))
        total += sz
        print(f"{name:15s} {sz:>10d} bytes")
    print(f"{'total':15s} {total:>10d} bytes ({total / 2**20:.2f} MiB)")
    if total >= MAX_TOTAL_BYTES:
        sys.exit(f"sample is {total} bytes, over the {MAX_TOTAL_BYTES} byte budget")


if __name__ == "__main__":
    main()
