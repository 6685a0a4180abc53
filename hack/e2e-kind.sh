#!/usr/bin/env bash
# End to end on kind (make e2e, on a machine with Docker and kind): the image built and
# loaded by `make image kind-load` is installed with the Helm chart, the example
# (manifests/examples: PostgreSQL, Secret, AgentDeployment of 3) is applied, then
# scaled 3 -> 5 -> 2, and the database is checked: the occurrences registered, the departed
# ones own no unfinished work, transfers were recorded, no task was lost. The kind cluster is
# deleted at the end (KEEP_CLUSTER=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."

KIND=${KIND:-kind}
KUBECTL=${KUBECTL:-kubectl}
HELM=${HELM:-helm}
KIND_CLUSTER=${KIND_CLUSTER:-occurrence}
IMAGE_REPO=${IMAGE_REPO:-ghcr.io/occurrence-dev/occurrence-operator}
IMAGE_TAG=${IMAGE_TAG:?IMAGE_TAG is required}
OPERATOR_NAMESPACE=${OPERATOR_NAMESPACE:-occurrence-system}
HELM_RELEASE=${HELM_RELEASE:-occurrence-operator}
NS=agents
AGD=demo-agent
TASKS_PER_OCCURRENCE=${TASKS_PER_OCCURRENCE:-200}
TIMEOUT=${TIMEOUT:-300s}

for tool in "$KIND" "$KUBECTL" "$HELM"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "e2e: '$tool' not found" >&2; exit 1; }
done

k() { "$KUBECTL" --context "kind-$KIND_CLUSTER" "$@"; }
step() { printf '\n== %s\n' "$*"; }
fail() { echo "e2e: FAILED: $*" >&2; exit 1; }

cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "--- diagnostics" >&2
    k -n "$NS" get agd,statefulset,pods,jobs -o wide >&2 || true
    k -n "$NS" describe agd "$AGD" >&2 || true
    k -n "$OPERATOR_NAMESPACE" logs deploy/"$HELM_RELEASE" --tail=100 >&2 || true
  fi
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    "$KIND" delete cluster --name "$KIND_CLUSTER" || true
  fi
  exit "$rc"
}
trap cleanup EXIT

psql() {
  k -n "$NS" exec deploy/postgres -- psql -U agents -d agents -tAq -c "$1"
}

step "install the operator (helm, image $IMAGE_REPO:$IMAGE_TAG)"
"$HELM" --kube-context "kind-$KIND_CLUSTER" upgrade --install "$HELM_RELEASE" charts/occurrence-operator \
  --namespace "$OPERATOR_NAMESPACE" --create-namespace \
  --set image.repository="$IMAGE_REPO" --set image.tag="$IMAGE_TAG" --set image.pullPolicy=Never \
  --wait --timeout 5m

step "apply the example (PostgreSQL, Secret, AgentDeployment of 3)"
k apply -k manifests/examples
k -n "$NS" patch agd "$AGD" --type merge \
  -p "{\"spec\":{\"image\":\"$IMAGE_REPO:$IMAGE_TAG\",\"imagePullPolicy\":\"Never\"}}"
k -n "$NS" rollout status deploy/postgres --timeout="$TIMEOUT"
k -n "$NS" wait agd/"$AGD" --for=condition=Ready --timeout="$TIMEOUT"

wait_ready_replicas() {
  local want=$1
  k -n "$NS" wait agd/"$AGD" --for=jsonpath='{.status.readyReplicas}'="$want" --timeout="$TIMEOUT"
  k -n "$NS" wait statefulset/"$AGD" --for=jsonpath='{.status.readyReplicas}'="$want" --timeout="$TIMEOUT"
}

active_occurrences() {
  psql "SELECT count(*) FROM occurrences WHERE state = 'active'"
}

step "3 occurrences registered"
wait_ready_replicas 3
[ "$(active_occurrences)" = 3 ] || fail "expected 3 active occurrences, got $(active_occurrences)"

step "scale 3 -> 5"
k -n "$NS" scale agd "$AGD" --replicas=5
wait_ready_replicas 5
for _ in $(seq 60); do [ "$(active_occurrences)" = 5 ] && break; sleep 2; done
[ "$(active_occurrences)" = 5 ] || fail "expected 5 active occurrences, got $(active_occurrences)"

step "give the occurrences that will leave some work ($TASKS_PER_OCCURRENCE tasks each)"
for ordinal in 2 3 4; do
  k -n "$NS" exec "$AGD-0" -- occurrence-store tasks submit --occurrence "$AGD-$ordinal" \
    --description e2e-scale-down --count "$TASKS_PER_OCCURRENCE" --output json >/dev/null
done
submitted=$(psql "SELECT count(*) FROM tasks WHERE description = 'e2e-scale-down'")
[ "$submitted" = $((3 * TASKS_PER_OCCURRENCE)) ] || fail "submitted $submitted tasks"

step "scale 5 -> 2 (drain, transfer, then shrink)"
k -n "$NS" scale agd "$AGD" --replicas=2
wait_ready_replicas 2
k -n "$NS" wait statefulset/"$AGD" --for=jsonpath='{.spec.replicas}'=2 --timeout="$TIMEOUT"
for _ in $(seq 60); do
  [ "$(psql "SELECT count(*) FROM occurrences WHERE state = 'retired'")" = 3 ] && break; sleep 2
done

step "assert occurrences and transfers"
retired=$(psql "SELECT string_agg(occurrence_id, ',' ORDER BY occurrence_id) FROM occurrences WHERE state = 'retired'")
[ "$retired" = "$AGD-2,$AGD-3,$AGD-4" ] || fail "retired occurrences: '$retired'"
left=$(psql "SELECT count(*) FROM tasks WHERE agent_occurrence_id IN ('$AGD-2','$AGD-3','$AGD-4') AND status IN ('pending','active')")
[ "$left" = 0 ] || fail "$left unfinished tasks still owned by departed occurrences"
total=$(psql "SELECT count(*) FROM tasks WHERE description = 'e2e-scale-down'")
[ "$total" = "$submitted" ] || fail "tasks lost or duplicated: $total of $submitted"
transfers=$(psql "SELECT count(*) FROM task_transfers WHERE from_occurrence_id IN ('$AGD-2','$AGD-3','$AGD-4')")
bad=$(psql "SELECT count(*) FROM task_transfers WHERE to_occurrence_id NOT IN ('$AGD-0','$AGD-1')")
[ "$bad" = 0 ] || fail "$bad transfers to an occurrence that is not a survivor"
echo "occurrences: $AGD-0, $AGD-1 active; $retired retired; $transfers tasks transferred to survivors"
[ "$transfers" -gt 0 ] || fail "no task was transferred (the departing occurrences finished all $submitted tasks before the drain: raise TASKS_PER_OCCURRENCE)"

step "e2e passed"
