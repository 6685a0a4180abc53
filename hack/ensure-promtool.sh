#!/usr/bin/env bash
# Provide promtool (Prometheus' rule checker) for the alert-rule tests — or, with --server,
# the Prometheus server for the rollout's Prometheus-gate tests — and print its path.
#
#   bash hack/ensure-promtool.sh            # -> ~/.cache/occurrence-operator/promtool-<v>/promtool
#   bash hack/ensure-promtool.sh --server   # -> ~/.cache/occurrence-operator/promtool-<v>/prometheus
#
# A binary on PATH is used as is. Otherwise both are taken from Debian's `prometheus`
# package without installing it (apt-get download + dpkg-deb -x: no service is set up or
# started) and cached under the project's cache root, keyed by the package version.
#   OCCURRENCE_CACHE_DIR   cache root (default: ${XDG_CACHE_HOME:-~/.cache}/occurrence-operator)
set -euo pipefail
binary=promtool
[[ "${1:-}" == "--server" ]] && binary=prometheus
if command -v "$binary" >/dev/null 2>&1; then command -v "$binary"; exit 0; fi
CACHE_ROOT="${OCCURRENCE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/occurrence-operator}"
version="$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')"
if [[ -z "$version" || "$version" == "(none)" ]]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  version="$(apt-cache policy prometheus | awk '/Candidate:/ {print $2}')"
fi
dir="$CACHE_ROOT/promtool-${version//[^A-Za-z0-9.+-]/_}"
if [[ ! -x "$dir/promtool" || ! -x "$dir/prometheus" ]]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download -qq "prometheus=$version" 2>/dev/null) \
    || { echo "ensure-promtool: cannot download Debian's prometheus $version" >&2; exit 1; }
  dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
  mkdir -p "$dir"
  for b in promtool prometheus; do
    install -m 0755 "$work/x/usr/bin/$b" "$dir/$b.tmp"
    mv "$dir/$b.tmp" "$dir/$b"
  done
fi
echo "$dir/$binary"
