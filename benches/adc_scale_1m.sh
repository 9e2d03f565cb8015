#!/usr/bin/env bash
# Issue 14's scale check: 1M vectors (WordNet's 100k base repeated 10 times with small Gaussian
# noise, renormalised), exact ground truth by `bsa groundtruth`, the 48-byte pursuit model, and
# flat ADC against the ADC graph (recall@10 after rescoring the top 40, QPS, 2 threads), with the
# build's time and peak memory. Usage: benches/adc_scale_1m.sh MODEL.safetensors [WORKDIR]
# EFC (ef_construction, default 200 as `bsa build`'s) and F16=1 (vectors stored as float16,
# as the 100k report's index) set the build.
set -euo pipefail
model=$1
work=${2:-/tmp/bsa-scale-1m}
bsa=${BSA:-target/release/bsa}
data=${DATA:-../shared/data/wordnet-minilm}
efc=${EFC:-200}
f16=(); [ "${F16:-0}" = 1 ] && f16=(--f16)
mkdir -p "$work"
python3 - "$data" "$work" <<'PY'
import sys, numpy as np
data, work = sys.argv[1], sys.argv[2]
x = np.load(f"{data}/base.npy").astype(np.float32)
rng = np.random.default_rng(7)
out = np.lib.format.open_memmap(f"{work}/base1m.npy", mode="w+", dtype=np.float32, shape=(10 * len(x), x.shape[1]))
for r in range(10):
    y = x + (rng.standard_normal(x.shape, dtype=np.float32) * 0.01 if r else 0)
    out[r * len(x):(r + 1) * len(x)] = y / np.linalg.norm(y, axis=1, keepdims=True)
out.flush()
np.save(f"{work}/q.npy", np.load(f"{data}/query.npy")[:2000].astype(np.float32))
PY
"$bsa" groundtruth --base "$work/base1m.npy" --queries "$work/q.npy" --k 10 --threads 2 --out "$work/gt.npy"
/usr/bin/time -v "$bsa" build --model "$model" --data "$work/base1m.npy" --vectors "${f16[@]}" --hnsw --m 32 \
  --ef-construction "$efc" --threads 2 --quiet --force --out "$work/idx" 2> "$work/build.time"
grep -E "Elapsed|Maximum resident" "$work/build.time"
recall() {
  python3 -c "
import json, sys, numpy as np
gt = np.load('$work/gt.npy')[:, :10]
ids = [json.loads(l)['ids'][:10] for l in open('$work/out.jsonl')]
print('%.4f' % np.mean([len(set(a) & set(gt[i])) / 10 for i, a in enumerate(ids)]))"
}
search() { # label, args...
  local label=$1; shift
  "$bsa" search --index "$work/idx" --queries "$work/q.npy" --k 10 --score adc --rescore 4 \
    --threads 2 --stats --no-verify "$@" > "$work/out.jsonl" 2> "$work/stats.json"
  echo "$label recall@10 rescored $(recall) qps $(python3 -c "import json; print(round(json.loads(open('$work/stats.json').read().strip().splitlines()[-1])['qps']))")"
}
search "flat ADC"
for ef in 40 48 64 96 128 256; do search "ADC graph ef $ef" --mode hnsw --ef "$ef"; done
