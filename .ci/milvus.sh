#!/usr/bin/env bash
# A local Milvus server for the `milvus` feature's tests: the gRPC server binary that PyPI's
# milvus-lite 2.5.1 ships (milvus_lite/lib/milvus), on loopback.
#
#   .ci/milvus.sh install   venv + milvus-lite in $MILVUS_HOME/venv
#   .ci/milvus.sh start     start the server on 127.0.0.1:$MILVUS_PORT, record its pid, wait for it
#   .ci/milvus.sh stop      stop the recorded pid (SIGTERM, then SIGKILL after 30 s)
#   .ci/milvus.sh restart   stop + start (data persists in $MILVUS_HOME/milvus.db)
#
# MILVUS_HOME defaults to target/milvus, MILVUS_PORT to 19530.
set -euo pipefail
cd "$(dirname "$0")/.."
self=$PWD/.ci/milvus.sh
home=${MILVUS_HOME:-$PWD/target/milvus}
port=${MILVUS_PORT:-19530}
pidfile=$home/server.pid
mkdir -p "$home"

# The package folder, found without `import milvus_lite` (that import needs setuptools).
libdir() {
  local site
  site=$("$home/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$site/milvus_lite/lib"
}

alive() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case ${1:-} in
  install)
    if [ ! -x "$(libdir 2>/dev/null)/milvus" ]; then
      python3 -m venv "$home/venv"
      "$home/venv/bin/pip" install -q milvus-lite==2.5.1
    fi
    test -x "$(libdir)/milvus"
    ;;
  start)
    if alive; then echo "milvus: already running (pid $(cat "$pidfile"))" >&2; exit 1; fi
    lib=$(libdir)
    LD_LIBRARY_PATH=$lib nohup "$lib/milvus" "$home/milvus.db" "127.0.0.1:$port" ERROR \
      >>"$home/server.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    for _ in $(seq 120); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "milvus: pid $(cat "$pidfile") on 127.0.0.1:$port"
        exit 0
      fi
      alive || { echo "milvus: the server exited; log:" >&2; tail -20 "$home/server.log" >&2; exit 1; }
      sleep 0.5
    done
    echo "milvus: no answer on port $port after 60 s" >&2
    exit 1
    ;;
  stop)
    [ -f "$pidfile" ] || exit 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$pidfile"
    echo "milvus: stopped pid $pid"
    ;;
  restart)
    "$self" stop
    "$self" start
    ;;
  *)
    echo "usage: $0 install|start|stop|restart" >&2
    exit 2
    ;;
esac
