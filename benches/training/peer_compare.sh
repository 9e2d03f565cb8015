#!/bin/bash
# peer_compare.sh ROUNDS BIN [BIN...]: `bsa train` (each binary) against the PyTorch peer (shared/peers/bsa_torch.py),
# same model, loss and batch (BSA, N = 1024, K = 32, cosine, alpha 1, batch 1024, 2 epochs), on
# the WordNet base, 2 threads, back to back, on both CPU kinds of this machine:
#   avx512: as the machine is;
#   avx2:   an AVX2-only CPU emulated: BSA_KERNEL=avx2 and OPENBLAS_CORETYPE=Haswell for bsa;
#           ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2 and ONEDNN_MAX_CPU_ISA=AVX2 for
#           PyTorch (its MKL and oneDNN would otherwise still use AVX-512).
# Prints one JSON line per run: kind, round, who (peer, or the binary's path), samples/s (mean of
# the 2 epochs for the peer, which reports each epoch; bsa reports its whole fit, validation
# passes included), the load average, and for bsa the phase times. Then, per kind and binary,
# a summary line: bsa / peer of each round (the peer run just before it), min, median, max.
set -eo pipefail
ROUNDS=${1:?usage: peer_compare.sh ROUNDS BIN [BIN...]}
shift
BINS=("$@")
S=${S:-/work/shared/data/wordnet-minilm}
PEER=${PEER:-/work/shared/peers/bsa_torch.py}
P=${PYTHON:-python3}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

run_bsa() { # BIN KIND ROUND ENV...
  local bin=$1 kind=$2 round=$3; shift 3
  env "$@" "$bin" train --data "$S/base.npy" --bits 1024 --k 32 --epochs 2 --batch 1024 \
    --threads 2 --quiet --json --out "$OUT/bsa.safetensors" > "$OUT/bsa.json"
  jq -c --arg kind "$kind" --argjson round "$round" --arg who "$bin" --arg load "$(cut -d' ' -f1 /proc/loadavg)" \
    '{kind: $kind, round: $round, who: $who, samples_per_sec, load: $load, kernel, blas_core, phase_seconds}' "$OUT/bsa.json"
}

run_peer() { # KIND ROUND ENV...
  local kind=$1 round=$2; shift 2
  env OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 "$@" "$P" "$PEER" train --data "$S/base.npy" \
    --N 1024 --K 32 --epochs 2 --batch 1024 --out "$OUT/peer.safetensors" > "$OUT/peer.txt"
  # "  ep  1 loss ... 4.3s (23456 samples/s)"
  local sps
  sps=$(grep -o '([0-9]* samples/s)' "$OUT/peer.txt" | tr -dc '0-9\n' | awk '{s += $1; n++} END {print s / n}')
  echo "{\"kind\": \"$kind\", \"round\": $round, \"who\": \"peer\", \"samples_per_sec\": $sps, \"load\": \"$(cut -d' ' -f1 /proc/loadavg)\"}"
}

for round in $(seq 1 "$ROUNDS"); do
  run_peer avx512 "$round"
  for bin in "${BINS[@]}"; do run_bsa "$bin" avx512 "$round"; done
  run_peer avx2 "$round" ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
  for bin in "${BINS[@]}"; do run_bsa "$bin" avx2 "$round" BSA_KERNEL=avx2 OPENBLAS_CORETYPE=Haswell; done
done | tee "$OUT/runs.jsonl"

# The ratios, from the lines above: each bsa run against the peer of its kind and round.
jq -s -c '
  (map(select(.who == "peer")) | map({key: "\(.kind) \(.round)", value: .samples_per_sec}) | from_entries) as $peer
  | map(select(.who != "peer") | . + {ratio: (.samples_per_sec / $peer["\(.kind) \(.round)"])})
  | group_by([.kind, .who])[]
  | (map(.ratio) | sort) as $r
  | {summary: .[0].kind, who: .[0].who,
     ratios: map(.ratio * 100 | round / 100),
     min: ($r[0] * 100 | round / 100),
     median: ((if ($r | length) % 2 == 1 then $r[($r | length - 1) / 2]
               else ($r[($r | length) / 2 - 1] + $r[($r | length) / 2]) / 2 end) * 100 | round / 100),
     max: ($r[-1] * 100 | round / 100)}' "$OUT/runs.jsonl"
