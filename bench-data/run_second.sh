#!/usr/bin/env bash
# Measure issue 6's ranking of codes on a data set: recall@10 of sign bits, ITQ, the retrieval
# preset (binary matching pursuit) and optionally BSA as the paper defines it, each by Hamming, by
# every asymmetric score that applies, and rescored from the top 40, plus `bsa eval` metrics.
#   bash run_second.sh DATA_DIR WORK_DIR [sign itq pursuit bsa]   (default: sign itq pursuit)
# DATA_DIR holds base.npy, query.npy, gt_top100.npy (make_second.sh makes them). BSA is the bsa
# binary (default target/release/bsa); THREADS (default 2) its thread count. Everything the
# commands print is kept in WORK_DIR (models, indexes, JSON lines, logs); the last step prints a
# tab-separated table `model score rescore queries recall@10`, also saved as WORK_DIR/recall.tsv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[ $# -ge 2 ] || { echo "usage: run_second.sh DATA_DIR WORK_DIR [sign itq pursuit bsa]" >&2; exit 2; }
data="$1"; work="$2"; shift 2
methods=("$@"); [ ${#methods[@]} -gt 0 ] || methods=(sign itq pursuit)
BSA="${BSA:-$here/../target/release/bsa}"
THREADS="${THREADS:-2}"
PY="${PY:-python3}"
mkdir -p "$work"
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

train() { # name, train flags...
  local name="$1"; shift
  if [ ! -f "$work/$name.safetensors" ]; then
    log "train $name: $*"
    /usr/bin/time -f "%e s wall, %M KB max RSS" -o "$work/$name.train.time" \
      nice "$BSA" train --data "$data/base.npy" "$@" --threads "$THREADS" --json -q \
      --out "$work/$name.safetensors" > "$work/$name.train.json"
  fi
  if [ ! -d "$work/$name.idx" ]; then
    log "build $name"
    nice "$BSA" build --model "$work/$name.safetensors" --data "$data/base.npy" --vectors \
      --threads "$THREADS" -q --out "$work/$name.idx"
  fi
}

search() { # name, score, rescore (0 = none)
  local name="$1" score="$2" rescore="$3" out
  out="$work/$name.$score.r$rescore.jsonl"
  [ -s "$out" ] && return 0
  local extra=(); [ "$rescore" = 0 ] || extra=(--rescore "$rescore")
  log "search $name --score $score ${extra[*]}"
  nice "$BSA" search --index "$work/$name.idx" --queries "$data/query.npy" --k 10 --score "$score" \
    "${extra[@]}" --threads "$THREADS" --stats --out "$out.tmp" 2> "$out.stats"
  mv "$out.tmp" "$out"
}

for m in "${methods[@]}"; do
  case "$m" in
    sign) train sign --method sign ;;
    itq) train itq --method itq --bits 384 ;;   # N = D for the 384-d sets
    pursuit) train pursuit --preset retrieval ;;
    bsa) train bsa --method bsa --bits 1024 --k 32 --epochs 10 ;;
    *) echo "run_second.sh: unknown method $m (sign itq pursuit bsa)" >&2; exit 2 ;;
  esac
  # soft (sigmoid(q We^T + be) . b) needs an encoder whose activations mean something: BSA's, and
  # pursuit's atom correlations. For sign and ITQ it ranks by little more than popcount (recall
  # 0.002 on the WordNet sample), so it is skipped there.
  asym=(adc); case "$m" in pursuit|bsa) asym=(adc soft) ;; esac
  for s in hamming cosine "${asym[@]}"; do search "$m" "$s" 0; done
  for s in hamming "${asym[@]}"; do search "$m" "$s" 4; done
  if [ ! -f "$work/$m.eval.json" ]; then
    log "eval $m"
    nice "$BSA" eval --model "$work/$m.safetensors" --data "$data/base.npy" --threads "$THREADS" --json \
      > "$work/$m.eval.json"
  fi
done

{
  for f in "$work"/*.jsonl; do
    b="$(basename "$f" .jsonl)"              # NAME.SCORE.rR
    r="$("$PY" "$here/recall.py" --gt "$data/gt_top100.npy" --k 10 "$f" | cut -f2,3)"
    printf '%s\t%s\t%s\t%s\n' "${b%%.*}" "$(echo "$b" | cut -d. -f2)" "${b##*.r}" "$r"
  done
} | sort > "$work/recall.tsv"
cat "$work/recall.tsv"
