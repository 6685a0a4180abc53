#!/usr/bin/env bash
# The e2e scenario (hack/e2e/scenario.sh) on the local cluster's real node, no Docker needed:
# build (or reuse) the images with buildah, start the control plane with a real node and no
# kwok nodes, load the images into the node's containerd, run the scenario, and tear
# everything down again, also when the scenario fails. `make test` runs this (make e2e-local).
#
#   E2E_PASSES, E2E_PG_FAULTS, E2E_TIMEOUT, E2E_REPORT: see hack/e2e/scenario.sh
#   KEEP_CLUSTER=1: leave the cluster running afterwards (hack/local-cluster.sh down stops it)
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS

# One real node per machine (its bridge and addresses are fixed): checkouts take turns.
exec 7>"${TMPDIR:-/tmp}/occurrence-real-node.lock"
if ! flock -n 7; then
  echo "e2e-local: another checkout runs the real-node scenario; waiting for it" >&2
  flock 7
fi

if bash hack/local-cluster.sh status >/dev/null 2>&1; then
  echo "e2e-local: a local cluster is running already; stop it first (make cluster-down)" >&2
  exit 1
fi

images="$(bash hack/images.sh build project postgres)"
IMAGE="$(sed -n 's/^IMAGE=//p' <<<"$images")"
POSTGRES_IMAGE="$(sed -n 's/^POSTGRES_IMAGE=//p' <<<"$images")"
ROLL_IMAGE="$IMAGE-roll"
t_images=$((SECONDS - t0))

cleanup() {
  local rc=$?
  if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then
    bash hack/local-cluster.sh down || rc=1
  fi
  echo "e2e-local: images ${t_images}s, cluster ${t_cluster:-?}s, scenario ${t_scenario:-?}s, total $((SECONDS - t0))s (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT

t=$SECONDS
OCCURRENCE_KWOK_NODES=0 bash hack/local-cluster.sh up --real-node
bash hack/local-cluster.sh load "$IMAGE" "$POSTGRES_IMAGE"
bash hack/local-cluster.sh tag "$IMAGE" "$ROLL_IMAGE"
t_cluster=$((SECONDS - t))

t=$SECONDS
eval "$(bash hack/local-cluster.sh env)"
KUBECTL="$PWD/.cluster/bin/kubectl" HELM="$PWD/.cluster/bin/helm" \
  IMAGE="$IMAGE" ROLL_IMAGE="$ROLL_IMAGE" POSTGRES_IMAGE="$POSTGRES_IMAGE" \
  bash hack/e2e/scenario.sh
t_scenario=$((SECONDS - t))
