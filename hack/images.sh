#!/usr/bin/env bash
# Container images without a registry, for the real node of the local cluster.
#
#   bash hack/images.sh build [NAME...]  # build (or reuse) the images (all, or: base project
#                                        #   postgres pause); prints IMAGE=... lines
#   bash hack/images.sh archive REF FILE # write one image as a docker-archive tarball
#
# Four images, each built with buildah and cached by the content it is made of:
#   base      Debian bookworm + Python 3.11 from Debian packages (debootstrap), keyed by its
#             package list and this recipe: what the project's Dockerfile gets as PYTHON_IMAGE
#   project   the project's own Dockerfile, unchanged, on top of base; keyed by the base and
#             the files the Dockerfile copies (a warm run rebuilds only when they change)
#   postgres  Debian's postgresql-15 on top of base (hack/images/postgres.Containerfile), for
#             manifests/examples/postgres.yaml
#   pause     the pod sandbox image: a static C program (hack/images/pause.c)
# Image storage lives in the cache (OCCURRENCE_CACHE_DIR, default ~/.cache/occurrence-operator),
# so nothing is written to the system's container storage. Missing tools are installed from
# Debian packages. On a machine with Docker, `make image` builds the same Dockerfile there.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGES_DIR="$REPO_ROOT/hack/images"
CACHE_ROOT="${OCCURRENCE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/occurrence-operator}"
IMAGE_REPO="${IMAGE_REPO:-ghcr.io/occurrence-dev/occurrence-operator}"
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR="${OCCURRENCE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_PACKAGES=(python3 python3-venv python-is-python3 ca-certificates)
STORE="$CACHE_ROOT/buildah"

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

bah() { buildah --root "$STORE/storage" --runroot "$STORE/run" --storage-driver overlay "$@"; }

have_image() { bah inspect --type image "$1" >/dev/null 2>&1; }

hash_of() { sha256sum | cut -c1-16; }

# Build-time network and trust of this machine: RUN steps use the host network, and pip
# inside the build trusts what pip on the host trusts (a proxy's CA, an index setting).
build_volumes() {
  local v=() f
  for f in /etc/pip.conf /etc/ssl/certs/ca-certificates.crt; do
    [[ -f "$f" ]] && v+=(-v "$f:$f:ro")
  done
  printf '%s\n' "${v[@]}"
}

bud() {  # $1: tag, rest: buildah bud arguments
  local tag="$1"; shift
  local vols=()
  mapfile -t vols < <(build_volumes)
  bah bud --quiet --layers --network host "${vols[@]}" --tag "$tag" "$@" >&2
}

# --- base ----------------------------------------------------------------------------------

build_base() {  # $1: tag
  local tag="$1" work
  work="$(mktemp -d "${TMPDIR:-/tmp}/occurrence-base.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  log "base: debootstrap $DEBIAN_SUITE (${BASE_PACKAGES[*]}) - about 2 min"
  local inc
  inc="$(IFS=,; echo "${BASE_PACKAGES[*]}")"
  debootstrap --variant=minbase --include="$inc" "$DEBIAN_SUITE" "$work/rootfs" "$DEBIAN_MIRROR" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; return 1; }
  local c mnt
  c="$(bah from scratch)"
  mnt="$(bah mount "$c")"
  tar -C "$work/rootfs" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    --exclude='./run/*' --exclude='./var/cache/apt/archives/*.deb' \
    --exclude='./var/lib/apt/lists/*' --exclude='./var/log/*' -cf - . | tar -C "$mnt" -xf -
  bah umount "$c" >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 \
    --label "org.opencontainers.image.description=Debian $DEBIAN_SUITE with ${BASE_PACKAGES[*]}" "$c"
  bah commit --quiet --rm "$c" "$tag" >/dev/null
}

base_key() {
  { echo "$DEBIAN_SUITE $DEBIAN_MIRROR ${BASE_PACKAGES[*]}"; declare -f build_base; } | hash_of
}

# --- the others ----------------------------------------------------------------------------

# The files the project's Dockerfile copies (see its COPY lines), caches excluded.
project_key() {
  {
    echo "base $1"
    cd "$REPO_ROOT"
    find Dockerfile .dockerignore requirements.lock pyproject.toml README.md operator -type f \
      ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' 2>/dev/null \
      | LC_ALL=C sort | xargs sha256sum
  } | hash_of
}

postgres_key() {
  { echo "base $1"; cat "$IMAGES_DIR/postgres.Containerfile" "$IMAGES_DIR/postgres-entrypoint.sh"; } | hash_of
}

pause_key() { cat "$IMAGES_DIR/pause.c" "$IMAGES_DIR/pause.Containerfile" | hash_of; }

build_pause() {  # $1: tag
  local work
  work="$(mktemp -d "${TMPDIR:-/tmp}/occurrence-pause.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  gcc -static -Os -s -o "$work/pause" "$IMAGES_DIR/pause.c"
  cp "$IMAGES_DIR/pause.Containerfile" "$work/Containerfile"
  bud "$1" -f "$work/Containerfile" "$work"
}

# Remove older builds of the same repository (one per source change would pile up).
prune_repo() {  # $1: repository, $2: the tag to keep
  local ref
  while read -r ref; do
    [[ "$ref" == "$1:$2" || -z "$ref" ]] && continue
    bah rmi --force "$ref" >/dev/null 2>&1 || true
  done < <(bah images --format '{{.Name}}:{{.Tag}}' "$1" 2>/dev/null)
}

ensure() {  # $1: what, $2: ref, $3: build function, rest: its extra args
  local what="$1" ref="$2" fn="$3"; shift 3
  if have_image "$ref"; then
    log "$what: cached $ref"
  else
    local t=$SECONDS
    log "$what: building $ref"
    "$fn" "$ref" "$@" || die "$what: build failed"
    log "$what: built in $((SECONDS - t))s"
  fi
  prune_repo "${ref%:*}" "${ref##*:}"
}

build_project() {  # $1: tag, $2: base ref
  bud "$1" --build-arg "PYTHON_IMAGE=$2" -f "$REPO_ROOT/Dockerfile" "$REPO_ROOT"
}

build_postgres() {  # $1: tag, $2: base ref
  bud "$1" --build-arg "BASE_IMAGE=$2" -f "$IMAGES_DIR/postgres.Containerfile" "$IMAGES_DIR"
}

cmd_build() {  # names (default: all)
  local want=("$@")
  ((${#want[@]})) || want=(project postgres pause)
  [[ "$(id -u)" -eq 0 ]] || die "building images with buildah here needs root"
  bash "$REPO_ROOT/hack/ensure-packages.sh" buildah:buildah debootstrap:debootstrap \
    runc:runc gcc:gcc /usr/lib/x86_64-linux-gnu/libc.a:libc6-dev
  mkdir -p "$STORE"
  exec 8>"$STORE/.lock"
  flock 8
  local name out=() base project postgres pause
  for name in "${want[@]}"; do
    case "$name" in
      pause)
        pause="localhost/occurrence-pause:$(pause_key)"
        ensure pause "$pause" build_pause
        out+=("PAUSE_IMAGE=$pause") ;;
      base|project|postgres)
        base="localhost/occurrence-base:$DEBIAN_SUITE-$(base_key)"
        ensure base "$base" build_base
        if [[ "$name" == project ]]; then
          project="$IMAGE_REPO:local-$(project_key "$base")"
          ensure project "$project" build_project "$base"
          out+=("IMAGE=$project")
        elif [[ "$name" == postgres ]]; then
          postgres="localhost/occurrence-postgres:15-$(postgres_key "$base")"
          ensure postgres "$postgres" build_postgres "$base"
          out+=("POSTGRES_IMAGE=$postgres")
        else
          out+=("BASE_IMAGE=$base")
        fi ;;
      *) die "unknown image '$name' (base, project, postgres, pause)" ;;
    esac
  done
  exec 8>&-
  printf '%s\n' "${out[@]}"
}

cmd_archive() {  # $1: ref, $2: file
  [[ $# -eq 2 ]] || die "usage: $0 archive REF FILE"
  rm -f "$2"
  bah push --quiet "$1" "docker-archive:$2:$1" >/dev/null
}

case "${1:-}" in
  build) shift; cmd_build "$@" ;;
  archive) shift; cmd_archive "$@" ;;
  *) die "usage: $0 build | archive REF FILE" ;;
esac
