#!/bin/bash
# peer_compare.sh ROUNDS BIN [BIN...]: `bsa train` (each binary) against the PyTorch peer (shared/peers/bsa_torch.py),
# same model, loss and batch (BSA, N = 1024, K = 32, cosine, alpha 1, batch 1024, 2 epochs), on
# the WordNet base, 2 threads, back to back, on both CPU kinds of this machine:
#   avx512: as the machine is;
#   avx2:   an AVX2-only CPU emulated: BSA_KERNEL=avx2 and OPENBLAS_CORETYPE=Haswell for bsa;
#           ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2 and ONEDNN_MAX_CPU_ISA=AVX2 for
#           PyTorch (its MKL and oneDNN would otherwise still use AVX-512).
# With FLUSHED=1 the peer also runs on a copy of the base whose entries below 2^-64 of their
# row's largest are zero (who: peer-flushed), as `bsa train` reads its batches: the WordNet
# vectors have entries near 1e-37 whose products are subnormal floats, slow on x86, and the
# second ratio shows how much of bsa's lead is that alone.
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
if [ "${FLUSHED:-0}" = 1 ]; then
  "$P" -c 'import sys, numpy as np
x = np.load(sys.argv[1])
floor = np.abs(x).max(axis=1, keepdims=True) * np.float32(2.0 ** -64)
np.save(sys.argv[2], np.where(np.abs(x) < floor, np.float32(0), x))' "$S/base.npy" "$OUT/flushed.npy"
fi

run_bsa() { # BIN KIND ROUND ENV...
  local bin=$1 kind=$2 round=$3; shift 3
  env "$@" "$bin" train --data "$S/base.npy" --bits 1024 --k 32 --epochs 2 --batch 1024 \
    --threads 2 --quiet --json --out "$OUT/bsa.safetensors" > "$OUT/bsa.json"
  jq -c --arg kind "$kind" --argjson round "$round" --arg who "$bin" --arg load "$(cut -d' ' -f1 /proc/loadavg)" \
    '{kind: $kind, round: $round, who: $who, samples_per_sec, load: $load, kernel, blas_core, phase_seconds}' "$OUT/bsa.json"
}

run_peer() { # KIND ROUND WHO DATA ENV...
  local kind=$1 round=$2 who=$3 data=$4; shift 4
  env OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 "$@" "$P" "$PEER" train --data "$data" \
    --N 1024 --K 32 --epochs 2 --batch 1024 --out "$OUT/peer.safetensors" > "$OUT/peer.txt"
  # "  ep  1 loss ... 4.3s (23456 samples/s)"
  local sps
  sps=$(grep -o '([0-9]* samples/s)' "$OUT/peer.txt" | tr -dc '0-9\n' | awk '{s += $1; n++} END {print s / n}')
  echo "{\"kind\": \"$kind\", \"round\": $round, \"who\": \"$who\", \"samples_per_sec\": $sps, \"load\": \"$(cut -d' ' -f1 /proc/loadavg)\"}"
}

run_peers() { # KIND ROUND ENV...
  local kind=$1 round=$2; shift 2
  run_peer "$kind" "$round" peer "$S/base.npy" "$@"
  if [ "${FLUSHED:-0}" = 1 ]; then run_peer "$kind" "$round" peer-flushed "$OUT/flushed.npy" "$@"; fi
}

for round in $(seq 1 "$ROUNDS"); do
  run_peers avx512 "$round"
  for bin in "${BINS[@]}"; do run_bsa "$bin" avx512 "$round"; done
  run_peers avx2 "$round" ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
  for bin in "${BINS[@]}"; do run_bsa "$bin" avx2 "$round" BSA_KERNEL=avx2 OPENBLAS_CORETYPE=Haswell; done
done | tee "$OUT/runs.jsonl"

# The ratios, from the lines above: each bsa run against the peer of its kind and round (and,
# with FLUSHED=1, against the peer on the flushed copy: `vs_flushed`; the peer-flushed line's own
# ratio is the peer's speed-up from the flushing).
jq -s -c '
  def by_round(who): map(select(.who == who)) | map({key: "\(.kind) \(.round)", value: .samples_per_sec}) | from_entries;
  def r2: . * 100 | round / 100;
  def stats: sort as $r
    | {ratios: map(r2), min: ($r[0] | r2),
       median: ((if ($r | length) % 2 == 1 then $r[($r | length - 1) / 2]
                 else ($r[($r | length) / 2 - 1] + $r[($r | length) / 2]) / 2 end) | r2),
       max: ($r[-1] | r2)};
  by_round("peer") as $peer
  | by_round("peer-flushed") as $flushed
  | map(select(.who != "peer")
        | "\(.kind) \(.round)" as $key
        | . + {ratio: (.samples_per_sec / $peer[$key])}
        | if .who != "peer-flushed" and $flushed[$key] then . + {ratio_flushed: (.samples_per_sec / $flushed[$key])} else . end)
  | group_by([.kind, .who])[]
  | {summary: .[0].kind, who: .[0].who} + (map(.ratio) | stats)
    + (if .[0].ratio_flushed then {vs_flushed: (map(.ratio_flushed) | stats)} else {} end)' "$OUT/runs.jsonl"
