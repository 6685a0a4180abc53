#!/usr/bin/env bash
# Install the Debian packages that provide missing commands:
#   bash hack/ensure-packages.sh buildah:buildah ctr:containerd ...
# Each argument is COMMAND:PACKAGE (or PATH:PACKAGE for files that are not commands, e.g.
# /usr/lib/cni/bridge:containernetworking-plugins). Nothing happens when all are present, so
# a warm machine pays nothing; a fresh one gets exactly what the scripts use.
set -euo pipefail
missing=()
for spec in "$@"; do
  what="${spec%%:*}" pkg="${spec#*:}"
  if [[ "$what" == /* ]]; then [[ -e "$what" ]] && continue
  else command -v "$what" >/dev/null 2>&1 && continue; fi
  [[ " ${missing[*]:-} " == *" $pkg "* ]] || missing+=("$pkg")
done
((${#missing[@]})) || exit 0
echo "installing Debian packages: ${missing[*]}" >&2
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
