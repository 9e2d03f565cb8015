#!/usr/bin/env bash
# The paper-preset benchmark on the full WordNet set (bench-data/results/README.md), staged so
# that it survives interruptions: every stage reuses the cache, and the last command assembles
# the report from the cells that have finished (--cached-only lists the others as not run).
# The order answers issue 4's questions first.
#
#   cargo build --release
#   bench-data/results/run-paper.sh ../shared/data/wordnet-minilm [CACHE_DIR]
#
# On 2 cores: 3-4 hours for the whole grid (interrupt it any time: the last line alone then
# writes the report of what has finished).
set -euo pipefail
S=${1:?usage: run-paper.sh DATA_DIR (with base.npy, query.npy, gt_top100.npy) [CACHE_DIR]}
C=${2:-target/bench-paper-cache}
BSA=${BSA:-target/release/bsa}
common=(--base "$S/base.npy" --queries "$S/query.npy" --gt "$S/gt_top100.npy" --preset paper
        --threads 2 --cache "$C" --resume -q)
stage() {
  local name=$1
  shift
  echo "== $name $(date -u +%T)"
  "$BSA" bench "${common[@]}" "$@" --out "target/bench-paper-$name"
}
# Every method and ablation at N = 1024, K = 32, and the alpha sweep.
stage headline --methods sign,lsh,itq,bsa,bsa-alpha0,bsa-mse,bsa-healthy,topk,pursuit --bits 1024 --k 32
# The ablations across N (does MSE get worse as N grows?), and the retrieval preset's codes.
stage nsweep --methods bsa,bsa-mse,bsa-alpha0 --k 32 --alphas 1
stage retrieval --methods pursuit --bits 4096 --k 32
# K at N = 1024, every method at K = 32 across N, then the rest of the grid by N (the slowest,
# N = 4096, last).
stage ksweep --methods bsa,topk,pursuit,bsa-healthy --bits 1024 --alphas 1
stage k32 --methods lsh,bsa,bsa-mse,bsa-alpha0,bsa-healthy,topk,pursuit --k 32 --alphas 1
stage n512 --bits 512 --alphas 1
stage n2048 --bits 2048 --alphas 1
stage full
# The committed report: every finished cell of the paper grid.
"$BSA" bench "${common[@]}" --cached-only --out bench-data/results
