"""recall@10 of bsa search JSON lines against gt_top100.npy: recall.py RESULTS.jsonl GT.npy"""
import json, sys
import numpy as np
gt = np.load(sys.argv[2])
k = 10
hits = n = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    q = r["query"]
    hits += len(set(r["ids"][:k]) & set(gt[q, :k].tolist()))
    n += 1
assert n == gt.shape[0], f"{n} result lines for {gt.shape[0]} queries"
print(f"{hits / (n * k):.4f}")
