#!/usr/bin/env bash
# `make bench`: install the load generator and nginx if missing, then run bench.request_path.
# PROFILE=1 also records a py-spy profile of the gateway (bench/results/gateway.svg).
# BENCH_DURATION=S (default 10) and BENCH_WARMUP=S (default 2) set each wrk run's length.
# BENCH_AUTH=sigv4 (or bearer) runs the gateway with --auth-file and signs every request.
# BENCH_BUILD=python benchmarks the pure-Python request path instead of the compiled one.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

have_nginx() { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; }
if ! command -v wrk >/dev/null || ! have_nginx; then
  echo "bench: installing wrk and nginx-light"
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get install -y -q wrk nginx-light >/dev/null; then
    $SUDO apt-get update -q >/dev/null
    $SUDO apt-get install -y -q wrk nginx-light >/dev/null
  fi
fi

if [ "${PROFILE:-0}" = 1 ] && [ ! -x .venv/bin/py-spy ]; then
  echo "bench: installing py-spy"
  .venv/bin/pip install -q py-spy
fi

mkdir -p bench/results
# This checkout's code, whichever checkout the venv was installed from: the mypyc-compiled
# build (`make compiled`, what `make run` serves) unless BENCH_BUILD=python.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "${BENCH_BUILD:-compiled}" = compiled ]; then
  if make --no-print-directory compiled; then
    export PYTHONPATH="$PWD/build/compiled:$PYTHONPATH"
  else
    echo "bench: mypyc build failed (build/compile.log): benchmarking pure Python"
  fi
fi
.venv/bin/python -P -m bench.request_path "$@"
# BENCH_CEILING=0 skips the per-core ceiling (bench.ceiling, bench/results/ceiling.md).
if [ "${BENCH_CEILING:-1}" = 1 ]; then
  echo "bench: per-core ceiling (one gateway process, upstream = nginx return 200)"
  .venv/bin/python -P -m bench.ceiling
fi
