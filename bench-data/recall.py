"""recall@k of `bsa search` output against an exact ground-truth file.

    python recall.py --gt GT.npy --k 10 RESULTS.jsonl [RESULTS2.jsonl ...]

Each RESULTS file holds the JSON lines of `bsa search` (`{"query": i, "ids": [...], ...}`), one per
query. recall@k of a query is |first k ids returned ∩ first k ids of its ground-truth row| / k
(the definition in issue 6 and `src/metrics.rs::recall_at_k`); a shorter list counts its missing
entries as misses. Prints one line per file: `file  queries  recall@k`. Only the standard library
and numpy are needed.
"""

import argparse
import json
import sys

import numpy as np


def recall(path, gt, k):
    """Mean recall@k over the queries in one JSON-lines file; every query row must be present once."""
    seen = set()
    total = 0.0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                q = int(rec["query"])
                ids = rec["ids"][:k]
            except (ValueError, KeyError, TypeError) as e:
                sys.exit(f"recall.py: {path}:{lineno}: not a bsa search result line ({e})")
            if not 0 <= q < gt.shape[0]:
                sys.exit(f"recall.py: {path}:{lineno}: query {q} outside the ground truth's {gt.shape[0]} rows")
            if q in seen:
                sys.exit(f"recall.py: {path}:{lineno}: query {q} appears twice")
            seen.add(q)
            total += len(set(ids) & set(gt[q, :k].tolist())) / k
    if not seen:
        sys.exit(f"recall.py: {path}: no result lines")
    return len(seen), total / len(seen)


def main():
    ap = argparse.ArgumentParser(description="recall@k of bsa search output")
    ap.add_argument("--gt", required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("results", nargs="+")
    args = ap.parse_args()
    gt = np.load(args.gt)
    if gt.ndim != 2 or gt.shape[1] < args.k:
        sys.exit(f"recall.py: {args.gt}: shape {gt.shape}, need at least {args.k} columns")
    for path in args.results:
        n, r = recall(path, gt, args.k)
        print(f"{path}\t{n}\t{r:.4f}")


if __name__ == "__main__":
    main()
