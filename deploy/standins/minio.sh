#!/bin/sh
# `minio server DIR [--address ADDR] [--console-address ADDR]`, served by moto on the S3 port.
set -eu
[ "${1:-}" = server ] || { echo "minio stand-in: only 'minio server' is supported" >&2; exit 2; }
shift
port=9000
while [ $# -gt 0 ]; do
  case "$1" in
    --address) port=${2##*:}; shift 2 ;;
    --console-address) shift 2 ;;  # no console in the stand-in
    *) shift ;;                    # the data folder: moto keeps objects in memory
  esac
done
exec /opt/s3/bin/moto_server -H 0.0.0.0 -p "$port"
