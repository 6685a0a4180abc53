#!/usr/bin/env bash
# The e2e scenario (hack/e2e/scenario.sh) on kind, for machines with Docker and kind
# (`make e2e`, or `make e2e-kind`). The same script runs in CI on the local cluster's real
# node (hack/e2e-local.sh): what passes here passed there.
#
# `make e2e-kind` first creates the cluster (make kind-up) and builds the image (make image);
# this script tags the second image of the rollout step, loads both into kind, runs the
# scenario and deletes the cluster at the end (KEEP_CLUSTER=1 keeps it). kind pulls the
# example's postgres:16 from Docker Hub itself.
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-docker}
KIND=${KIND:-kind}
KIND_CLUSTER=${KIND_CLUSTER:-occurrence}
IMAGE_REPO=${IMAGE_REPO:-ghcr.io/occurrence-dev/occurrence-operator}
IMAGE_TAG=${IMAGE_TAG:?IMAGE_TAG is required}
IMAGE="$IMAGE_REPO:$IMAGE_TAG"
ROLL_IMAGE="$IMAGE-roll"

for tool in "$DOCKER" "$KIND" "${KUBECTL:-kubectl}" "${HELM:-helm}"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "e2e-kind: '$tool' not found" >&2; exit 1; }
done

cleanup() {
  local rc=$?
  if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then "$KIND" delete cluster --name "$KIND_CLUSTER" || true; fi
  exit "$rc"
}
trap cleanup EXIT

"$DOCKER" tag "$IMAGE" "$ROLL_IMAGE"
"$KIND" load docker-image "$IMAGE" "$ROLL_IMAGE" --name "$KIND_CLUSTER"
KUBE_CONTEXT="kind-$KIND_CLUSTER" IMAGE="$IMAGE" ROLL_IMAGE="$ROLL_IMAGE" bash hack/e2e/scenario.sh
