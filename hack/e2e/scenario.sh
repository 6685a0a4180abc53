#!/usr/bin/env bash
# The whole system end to end, on any cluster whose nodes run pods: the kind cluster of
# `make e2e-kind` (hack/e2e-kind.sh) or the real node of the local cluster (`make e2e-local`,
# hack/e2e-local.sh, which `make test` runs). Nothing in here knows which one it is.
#
# Pass "helm": the operator from charts/ (in-cluster, its own ServiceAccount) in a namespace
# that enforces the restricted Pod Security Standard; manifests/examples applied as a user
# would (images overridden with kustomize); agents kept busy by a load generator in the
# cluster (through their Service); then, while they work: scale 3 -> 5, delete a pod, roll a
# new image tag (a new migrations Job gates the rollout), scale 5 -> 2 and SIGKILL the
# operator mid-drain, PostgreSQL backends terminated between the steps. Pass "kustomize":
# the operator from manifests/base instead, the example again, 3 -> 2 under load. The helm pass
# also switches to canary rollouts under load: a bad revision (the reference agent failing 4
# tasks of 5) rolls back by itself after the explorer wave, then a good one is promoted.
# After each pass the database is asked: every task submitted exists once and is completed,
# no thought completed twice, the departed own nothing unfinished, every move has a
# transfer record; `kubectl describe agd` shows the drain. A report is printed at the end.
#
# Environment:
#   IMAGE, ROLL_IMAGE     the project image, and a second tag of it for the rollout (required)
#   POSTGRES_IMAGE        replaces the example's postgres:16 (optional)
#   KUBECTL, HELM         binaries (default: kubectl, helm on PATH); KUBE_CONTEXT optional
#   E2E_PASSES            default "helm kustomize"
#   E2E_PG_FAULTS         1 (default): terminate the agents' PostgreSQL backends between steps
#   E2E_REPORT            also write the report to this file
#   E2E_TIMEOUT           seconds for each wait (default 240)
#   PLUGIN                the kubectl-occurrence to run (default: .venv/bin/kubectl-occurrence)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$REPO"

KUBECTL=${KUBECTL:-kubectl}
HELM=${HELM:-helm}
KUBE_CONTEXT=${KUBE_CONTEXT:-}
IMAGE=${IMAGE:?IMAGE is required (repository:tag of the project image)}
ROLL_IMAGE=${ROLL_IMAGE:?ROLL_IMAGE is required (a second tag of the same image)}
POSTGRES_IMAGE=${POSTGRES_IMAGE:-}
PASSES=${E2E_PASSES:-helm kustomize}
PG_FAULTS=${E2E_PG_FAULTS:-1}
TIMEOUT=${E2E_TIMEOUT:-240}
OPERATOR_NS=occurrence-system
RELEASE=occurrence-operator
NS=agents
AGD=demo-agent
PLUGIN=${PLUGIN:-$REPO/.venv/bin/kubectl-occurrence}
WORK="$(mktemp -d "${TMPDIR:-/tmp}/occurrence-e2e.XXXXXX")"
REPORT=()
T0=$SECONDS

k() { if [[ -n "$KUBE_CONTEXT" ]]; then "$KUBECTL" --context "$KUBE_CONTEXT" "$@"; else "$KUBECTL" "$@"; fi; }
h() { if [[ -n "$KUBE_CONTEXT" ]]; then "$HELM" --kube-context "$KUBE_CONTEXT" "$@"; else "$HELM" "$@"; fi; }
step() { printf '\n== [%4ss] %s\n' "$((SECONDS - T0))" "$*"; }
note() { printf '   %s\n' "$*"; REPORT+=("$*"); }
fail() { echo "e2e: FAILED: $*" >&2; exit 1; }

# wait_until DESCRIPTION TIMEOUT COMMAND...: poll every second until COMMAND succeeds
wait_until() {
  local what="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for $what"
    sleep 1
  done
}

diagnostics() {
  echo "--- diagnostics" >&2
  k get nodes -o wide >&2 || true
  k -n "$NS" get agd,statefulset,pods,jobs -o wide >&2 || true
  k -n "$NS" describe agd "$AGD" >&2 || true
  k -n "$NS" get events --sort-by=.lastTimestamp >&2 2>/dev/null | tail -n 40 >&2 || true
  k -n "$OPERATOR_NS" logs -l app.kubernetes.io/name=occurrence-operator --tail=80 >&2 || true
  local pod
  for pod in $(k -n "$NS" get pods -l "occurrence.dev/agentdeployment=$AGD" -o name 2>/dev/null); do
    echo "--- $pod" >&2; k -n "$NS" logs "$pod" --tail=25 >&2 || true
  done
  k -n "$NS" logs e2e-loadgen --tail=20 >&2 || true
}

on_exit() {
  local rc=$?
  ((rc == 0)) || diagnostics
  rm -rf "$WORK"
  exit "$rc"
}
trap on_exit EXIT

# --- the database ---------------------------------------------------------------------------

psql() { k -n "$NS" exec -i deploy/postgres -- psql -U agents -d agents -v ON_ERROR_STOP=1 -tAq "$@"; }
sql() { psql -c "$1"; }

pg_fault() {  # a connection cut for every agent (and the operator): their backends terminated
  ((PG_FAULTS)) || return 0
  local n
  n="$(sql "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
            WHERE datname = 'agents' AND pid <> pg_backend_pid() AND backend_type = 'client backend'")"
  note "fault: terminated $n PostgreSQL backend(s) ($1)"
}

# --- objects --------------------------------------------------------------------------------

split_image() {  # $1: repo:tag -> "repo tag"
  local ref="$1"
  echo "${ref%:*} ${ref##*:}"
}

restricted_namespace() {
  k create namespace "$1" --dry-run=client -o yaml | k apply -f - >/dev/null
  k label namespace "$1" --overwrite pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/warn=restricted >/dev/null
}

install_operator() {  # $1: helm | kustomize
  local repo tag
  read -r repo tag <<<"$(split_image "$IMAGE")"
  if [[ "$1" == helm ]]; then
    step "operator: helm install charts/occurrence-operator into $OPERATOR_NS (restricted)"
    restricted_namespace "$OPERATOR_NS"
    restricted_namespace "$NS"  # the chart's default RBAC is a Role where the AgentDeployments live
    h upgrade --install "$RELEASE" charts/occurrence-operator --namespace "$OPERATOR_NS" \
      --set image.repository="$repo" --set image.tag="$tag" --set "watchNamespaces={$NS}" \
      --wait --timeout "${TIMEOUT}s" >/dev/null
    local tested
    tested="$(h test "$RELEASE" --namespace "$OPERATOR_NS" --timeout "${TIMEOUT}s" --logs 2>&1)" ||
      { echo "$tested" >&2; fail "helm test $RELEASE"; }
    grep -q "^ok: the operator answers" <<<"$tested" || { echo "$tested" >&2; fail "helm test said nothing"; }
    note "helm test: $(grep -m1 -o 'Phase: *[A-Za-z]*' <<<"$tested" | tr -s ' ') — the operator answers on its metrics Service, the API server serves the AgentDeployment API"
  else
    step "operator: kubectl apply -k manifests/base (image overridden)"
    mkdir -p "$WORK/base"
    cat >"$WORK/base/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: ["$(realpath --relative-to="$WORK/base" "$REPO/manifests/base")"]
images:
- {name: ghcr.io/occurrence-dev/occurrence-operator, newName: "$repo", newTag: "$tag"}
YAML
    k apply -k "$WORK/base" >/dev/null
    k -n "$OPERATOR_NS" rollout status deploy/"$RELEASE" --timeout="${TIMEOUT}s" >/dev/null
  fi
  local sa
  sa="$(k -n "$OPERATOR_NS" get deploy "$RELEASE" -o jsonpath='{.spec.template.spec.serviceAccountName}')"
  note "operator ($1): in-cluster as ServiceAccount $OPERATOR_NS/$sa"
}

uninstall_operator() {  # $1: helm | kustomize
  if [[ "$1" == helm ]]; then
    h uninstall "$RELEASE" --namespace "$OPERATOR_NS" --wait >/dev/null
  else
    k delete -k "$WORK/base" --ignore-not-found --wait >/dev/null
  fi
  k delete crd agentdeployments.occurrence.dev --ignore-not-found --wait >/dev/null
  k delete namespace "$OPERATOR_NS" --ignore-not-found --wait --timeout="${TIMEOUT}s" >/dev/null
}

apply_example() {
  step "example: kubectl apply -k manifests/examples (PostgreSQL, Secret, AgentDeployment of 3)"
  local repo tag
  read -r repo tag <<<"$(split_image "$IMAGE")"
  mkdir -p "$WORK/example"
  {
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    # kustomize takes no absolute path: the example, relative to this overlay
    echo "resources: [\"$(realpath --relative-to="$WORK/example" "$REPO/manifests/examples")\"]"
    echo "images:"
    echo "- {name: ghcr.io/occurrence-dev/occurrence-operator, newName: \"$repo\", newTag: \"$tag\"}"
    if [[ -n "$POSTGRES_IMAGE" ]]; then
      read -r repo tag <<<"$(split_image "$POSTGRES_IMAGE")"
      echo "- {name: postgres, newName: \"$repo\", newTag: \"$tag\"}"
    fi
  } >"$WORK/example/kustomization.yaml"
  k apply -k "$WORK/example" >/dev/null
  [[ "$(k -n "$NS" get agd "$AGD" -o jsonpath='{.spec.image}')" == "$IMAGE" ]] \
    || fail "the example's AgentDeployment does not run $IMAGE (kustomize images:)"
  k -n "$NS" rollout status deploy/postgres --timeout="${TIMEOUT}s" >/dev/null
  k -n "$NS" wait agd/"$AGD" --for=condition=Ready --timeout="${TIMEOUT}s" >/dev/null
  wait_ready 3
  psql <"$REPO/hack/e2e/track.sql" >/dev/null
  local job
  job="$(k -n "$NS" get jobs -l "occurrence.dev/agentdeployment=$AGD" -o jsonpath='{.items[0].metadata.name}')"
  note "example: migrations Job $job ran in a real pod; 3 occurrences Ready through their probes"
}

delete_example() {
  k -n "$NS" delete agd "$AGD" --ignore-not-found --wait --timeout="${TIMEOUT}s" >/dev/null
  k delete namespace "$NS" --ignore-not-found --wait --timeout="${TIMEOUT}s" >/dev/null
}

ready_replicas() {  # $1: want: the AgentDeployment and its StatefulSet agree
  [[ "$(k -n "$NS" get agd "$AGD" -o jsonpath='{.status.readyReplicas}')" == "$1" ]] &&
    [[ "$(k -n "$NS" get sts "$AGD" -o jsonpath='{.status.readyReplicas}')" == "$1" ]] &&
    [[ "$(k -n "$NS" get sts "$AGD" -o jsonpath='{.spec.replicas}')" == "$1" ]]
}
wait_ready() { wait_until "$1 occurrences Ready" "$TIMEOUT" ready_replicas "$1"; }

# --- load -----------------------------------------------------------------------------------

start_load() {  # $1: run id, $2: tasks per second
  k -n "$NS" create configmap e2e-loadgen --from-file="$REPO/hack/e2e/loadgen.py" \
    --dry-run=client -o yaml | k apply -f - >/dev/null
  k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: e2e-loadgen
  namespace: $NS
  labels: {app.kubernetes.io/name: e2e-loadgen}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: loadgen
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    command: [python, /scripts/loadgen.py]
    env:
    - {name: TARGET_HOST, value: "$AGD.$NS.svc.cluster.local"}
    - {name: RATE, value: "$2"}
    - {name: RUN_ID, value: "$1"}
    - {name: TASK_CONTEXT, value: '{"work_ms": 1000, "thoughts": 2}'}
    - name: AGENT_TOKEN  # a client gets the work token from the AgentDeployment's Secret
      valueFrom: {secretKeyRef: {name: "$AGD-agent-token", key: work}}
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
    resources:
      requests: {cpu: 20m, memory: 32Mi}
      limits: {memory: 128Mi}
    volumeMounts:
    - {name: scripts, mountPath: /scripts}
    - {name: tmp, mountPath: /tmp}
  volumes:
  - {name: scripts, configMap: {name: e2e-loadgen}}
  - {name: tmp, emptyDir: {}}
YAML
  k -n "$NS" wait pod/e2e-loadgen --for=condition=Ready --timeout="${TIMEOUT}s" >/dev/null
  wait_until "the first tasks accepted through the Service" 60 submitted_at_least 10
  note "load: $2 task(s)/s through Service $AGD.$NS (DNS: CoreDNS/kube-dns), 2 thoughts x 1 s each"
}

pod_phase_is() { [[ "$(k -n "$NS" get pod "$1" -o jsonpath='{.status.phase}')" == "$2" ]]; }
burst() {  # $1: tasks submitted at once (a backlog for the occurrences about to leave)
  local before
  before="$(k -n "$NS" logs e2e-loadgen | grep -c '"burst"' || true)"
  k -n "$NS" exec e2e-loadgen -- sh -c "echo $1 > /tmp/burst.tmp && mv /tmp/burst.tmp /tmp/burst"
  wait_until "a burst of $1 tasks" 120 bursts_at_least $((before + 1))
  note "load: a burst of $1 tasks just before the scale-down"
}
bursts_at_least() { (($(k -n "$NS" logs e2e-loadgen | grep -c '"burst"') >= $1)); }

submitted_at_least() { (($(k -n "$NS" logs e2e-loadgen | grep -c '"task_id"') >= $1)); }

stop_load() {  # collects what the load generator was told into e2e_submitted
  k -n "$NS" exec e2e-loadgen -- sh -c 'touch /tmp/stop'
  wait_until "the load generator to stop" 60 pod_phase_is e2e-loadgen Succeeded
  k -n "$NS" logs e2e-loadgen >"$WORK/loadgen.log"
  python3 - "$WORK/loadgen.log" >"$WORK/submitted.csv" <<'PY'
import csv, json, sys
out = csv.writer(sys.stdout)
for line in open(sys.argv[1]):
    row = json.loads(line)
    if "task_id" in row:
        out.writerow([row["task_id"], row["occurrence_id"], row["seq"]])
PY
  psql -c "TRUNCATE e2e_submitted" -c "\\copy e2e_submitted (task_id, occurrence, seq) FROM STDIN WITH (FORMAT csv)" \
    <"$WORK/submitted.csv" >/dev/null
  local summary errors
  summary="$(grep '"done"' "$WORK/loadgen.log")" || fail "the load generator did not finish"
  # a 503 (draining, starting) sends the task elsewhere; any other error answer is a bug
  errors="$(grep '"error"' "$WORK/loadgen.log" || true)"
  [[ -z "$errors" ]] || fail "the agents answered with errors: $errors"
  note "load: $summary"
  [[ "$(sql "SELECT count(*) FROM e2e_submitted")" == "$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['done'])" "$summary")" ]] \
    || fail "the load generator's log and its summary disagree"
  k -n "$NS" delete pod e2e-loadgen --wait=false >/dev/null
}

all_finished() {
  [[ "$(sql "SELECT count(*) FROM e2e_submitted s JOIN tasks t USING (task_id)
             WHERE t.status NOT IN ('completed', 'failed', 'rejected')")" == 0 ]]
}

# --- the checks -----------------------------------------------------------------------------

# Every check is a count that must be 0 (SQL, in the database the agents use).
check_zero() {  # $1: what, $2: SQL count
  local n
  n="$(sql "$2")"
  [[ "$n" == 0 ]] || { sql "${2/count(*)/*} LIMIT 5" >&2 || true; fail "$1: $n"; }
}

assert_database() {  # $1: departed occurrence ids (SQL list), $2: survivors (SQL list)
  local departed="$1" survivors="$2"
  step "the database: every task once and completed, nothing stranded, every move recorded"
  wait_until "every submitted task to finish" "$TIMEOUT" all_finished
  check_zero "submitted tasks missing from the database" \
    "SELECT count(*) FROM e2e_submitted s WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.task_id = s.task_id)"
  # the tasks the bad canary revision failed went back to pending on its rollback and were
  # completed on the stable revision: none is left failed
  check_zero "submitted tasks not completed" \
    "SELECT count(*) FROM e2e_submitted s JOIN tasks t USING (task_id) WHERE t.status <> 'completed'"
  check_zero "tasks a thought failed on, completed without a requeue record" \
    "SELECT count(*) FROM e2e_submitted s WHERE EXISTS (SELECT 1 FROM e2e_thought_events e
       WHERE e.task_id = s.task_id AND e.new_status = 'failed') AND NOT EXISTS
       (SELECT 1 FROM task_requeues r WHERE r.task_id = s.task_id)"
  check_zero "tasks given back more than once for one revision" \
    "SELECT count(*) FROM (SELECT task_id FROM task_requeues GROUP BY task_id, revision
       HAVING count(*) > 1) twice"
  check_zero "tasks created twice for one submission (same idempotency key)" \
    "SELECT count(*) FROM tasks t WHERE t.context_json::jsonb ? 'e2e_seq'
       AND NOT EXISTS (SELECT 1 FROM e2e_submitted s WHERE s.task_id = t.task_id)"
  check_zero "thoughts completed twice" \
    "SELECT count(*) FROM (SELECT thought_id FROM e2e_thought_events WHERE new_status = 'completed'
       GROUP BY thought_id HAVING count(*) > 1) twice"
  check_zero "tasks completed with an unfinished thought" \
    "SELECT count(*) FROM e2e_submitted s JOIN thoughts th ON th.source_task_id = s.task_id
       WHERE th.status IN ('pending', 'processing')"
  check_zero "unfinished tasks owned by departed occurrences" \
    "SELECT count(*) FROM tasks WHERE agent_occurrence_id IN ($departed) AND status IN ('pending', 'active')"
  check_zero "unfinished thoughts owned by departed occurrences" \
    "SELECT count(*) FROM thoughts WHERE agent_occurrence_id IN ($departed) AND status IN ('pending', 'processing')"
  check_zero "thoughts owned by another occurrence than their task" \
    "SELECT count(*) FROM thoughts th JOIN tasks t ON t.task_id = th.source_task_id
       WHERE th.agent_occurrence_id <> t.agent_occurrence_id"
  check_zero "tasks that moved without a transfer record" \
    "SELECT count(*) FROM e2e_submitted s JOIN tasks t USING (task_id)
       WHERE t.agent_occurrence_id <> s.occurrence AND NOT EXISTS (SELECT 1 FROM task_transfers x
         WHERE x.task_id = t.task_id AND x.to_occurrence_id = t.agent_occurrence_id)"
  check_zero "transfers to an occurrence that did not stay" \
    "SELECT count(*) FROM task_transfers WHERE to_occurrence_id NOT IN ($survivors)
       AND from_occurrence_id IN ($departed)"
  check_zero "departed occurrences not retired" \
    "SELECT count(*) FROM occurrences WHERE occurrence_id IN ($departed) AND state <> 'retired'"
  check_zero "surviving occurrences not active" \
    "SELECT count(*) FROM occurrences WHERE occurrence_id IN ($survivors) AND state <> 'active'"
  local submitted moved transfers twice
  submitted="$(sql "SELECT count(*) FROM e2e_submitted")"
  moved="$(sql "SELECT count(*) FROM e2e_submitted s JOIN tasks t USING (task_id) WHERE t.agent_occurrence_id <> s.occurrence")"
  transfers="$(sql "SELECT count(*) FROM task_transfers")"
  twice="$(sql "SELECT count(*) FROM (SELECT thought_id FROM e2e_thought_events WHERE new_status = 'processing'
                GROUP BY thought_id HAVING count(*) > 1) t")"
  local requeued
  requeued="$(sql "SELECT count(*) FROM e2e_submitted s JOIN task_requeues r USING (task_id)")"
  local outcome="all completed"
  [[ -z "${CANARY_OCCURRENCE:-}" ]] ||
    outcome="all completed; $requeued failed by the bad canary revision on $CANARY_OCCURRENCE went back to pending on its rollback, each once, and were completed on the stable one"
  if [[ -n "${CANARY_OCCURRENCE:-}" ]] && ((requeued == 0)); then
    fail "the bad canary revision failed no task that went back: the rollback proved nothing"
  fi
  note "database: $submitted tasks submitted, each finished exactly once ($outcome); $moved ended on another occurrence; $transfers transfer record(s)"
  ((moved > 0)) || fail "no task was moved: the scale-down caught no work (raise the burst)"
  note "database: $twice thought(s) ran more than once (released or retried in flight); 0 completed twice"
  k -n "$NS" describe agd "$AGD" >"$WORK/describe.txt"
  if ! grep -q DrainStarted "$WORK/describe.txt" || ! grep -q DrainComplete "$WORK/describe.txt"; then
    cat "$WORK/describe.txt" >&2
    fail "kubectl describe agd shows no DrainStarted/DrainComplete event"
  fi
  note "kubectl describe agd: $(grep -oE 'Drain[A-Za-z]+' "$WORK/describe.txt" | sort | uniq -c | tr -s ' ' | tr '\n' ',' | sed 's/,$//')"
}

# --- steps ----------------------------------------------------------------------------------

scale_and_wait() {  # $1: replicas
  k -n "$NS" scale agd "$AGD" --replicas="$1" >/dev/null
  wait_ready "$1"
}

drain_phase() { k -n "$NS" get agd "$AGD" -o jsonpath='{.status.scaleDown.phase}'; }
drain_done() { [[ "$(drain_phase)" == Done ]] && ready_replicas "$1"; }

delete_agent_pod() {  # $1: pod
  local uid
  uid="$(k -n "$NS" get pod "$1" -o jsonpath='{.metadata.uid}')"
  local t=$SECONDS
  k -n "$NS" delete pod "$1" --wait=false >/dev/null
  wait_until "$1 to come back" "$TIMEOUT" pod_replaced "$1" "$uid"
  wait_ready "$(k -n "$NS" get sts "$AGD" -o jsonpath='{.spec.replicas}')"
  note "kubectl delete pod $1: SIGTERM + grace period, the same ordinal back Ready in $((SECONDS - t))s"
}
pod_replaced() {
  local now
  now="$(k -n "$NS" get pod "$1" -o jsonpath='{.metadata.uid} {.status.conditions[?(@.type=="Ready")].status}')"
  [[ "$now" != "$2 "* && "$now" == *" True" ]]
}

rolled_out() {  # $1: replicas
  local s
  # observedGeneration first: right after a template change the status still describes the
  # previous one (current == update revision, all replicas "updated")
  # one read: status and image from two reads can straddle the template change (the old
  # generation's settled status, then the new image)
  s="$(k -n "$NS" get sts "$AGD" -o jsonpath='{.metadata.generation} {.status.observedGeneration} {.status.currentRevision} {.status.updateRevision} {.status.updatedReplicas} {.status.readyReplicas} {.spec.template.spec.containers[0].image}')"
  local gen observed cur upd updated ready image
  read -r gen observed cur upd updated ready image <<<"$s"
  [[ "$gen" == "$observed" && "$cur" == "$upd" && "$updated" == "$1" && "$ready" == "$1" &&
     "$image" == "$ROLL_IMAGE" ]]
}

roll_image() {  # $1: replicas
  local t=$SECONDS before
  before="$(k -n "$NS" get jobs -l "occurrence.dev/agentdeployment=$AGD" -o name | sort)"
  k -n "$NS" patch agd "$AGD" --type merge -p "{\"spec\":{\"image\":\"$ROLL_IMAGE\"}}" >/dev/null
  wait_until "the rollout of $ROLL_IMAGE" "$TIMEOUT" rolled_out "$1"
  local job
  job="$(comm -13 <(echo "$before") <(k -n "$NS" get jobs -l "occurrence.dev/agentdeployment=$AGD" -o name | sort) | head -n1)"
  [[ -n "$job" ]] || fail "no new migrations Job for $ROLL_IMAGE"
  [[ "$(k -n "$NS" get "$job" -o jsonpath='{.spec.template.spec.containers[0].image}')" == "$ROLL_IMAGE" ]] \
    || fail "$job does not run $ROLL_IMAGE"
  local done_at first_pod
  done_at="$(k -n "$NS" get "$job" -o jsonpath='{.status.completionTime}')"
  first_pod="$(k -n "$NS" get pods -l "occurrence.dev/agentdeployment=$AGD,occurrence.dev/component=agent" \
    -o jsonpath='{range .items[*]}{.metadata.creationTimestamp}{"\n"}{end}' | sort | head -n1)"
  [[ -n "$done_at" && ! "$first_pod" < "$done_at" ]] \
    || fail "pods of the new image started ($first_pod) before $job completed ($done_at)"
  note "image roll to ${ROLL_IMAGE##*:}: ${job#job.batch/} completed at $done_at, then the StatefulSet rolled pod by pod ($((SECONDS - t))s)"
}

# --- canary rollouts -------------------------------------------------------------------------

CANARY_ROLLOUT='{"spec":{"rollout":{"strategy":"Canary","analysisIntervalSeconds":5,"failureLimit":2,
  "waves":[{"name":"explorer","occurrences":1,"bakeSeconds":30,"maxBakeSeconds":240,
            "gates":[{"metric":"taskFailureRatio","maxIncreaseOverStable":0.2,"minSamples":4}]},
           {"name":"general","percent":100,"bakeSeconds":0}]}}}'
rollout_field() { k -n "$NS" get agd "$AGD" -o jsonpath="{.status.rollout.$1}"; }
rollout_phase_is() { [[ "$(rollout_field phase)" == "$1" ]]; }
pods_on_revision() {  # $1: revision, $2: replicas — every pod there, ready
  local revs
  revs="$(k -n "$NS" get pods -l "occurrence.dev/agentdeployment=$AGD,occurrence.dev/component=agent" \
    -o jsonpath='{range .items[*]}{.metadata.labels.controller-revision-hash}{"\n"}{end}' | sort -u)"
  [[ "$revs" == "$1" ]] && ready_replicas "$2"
}
set_agent_env() {  # $1: JSON list of extra env vars (the pod template changes: a new revision)
  k -n "$NS" patch agd "$AGD" --type merge -p "{\"spec\":{\"env\":$1}}" >/dev/null
}

canary_bad_revision_rolls_back() {  # $1: replicas
  k -n "$NS" patch agd "$AGD" --type merge -p "$CANARY_ROLLOUT" >/dev/null
  wait_until "the rollout record of the stable template" "$TIMEOUT" rollout_phase_is Complete
  local stable t=$SECONDS
  stable="$(k -n "$NS" get sts "$AGD" -o jsonpath='{.status.currentRevision}')"
  set_agent_env '[{"name":"AGENT_SIMULATED_FAILURE_RATIO","value":"0.8"}]'
  wait_until "the bad revision to be rolled back" "$TIMEOUT" rollout_phase_is RolledBack
  wait_until "every pod back on the stable revision $stable" "$TIMEOUT" pods_on_revision "$stable" "$1"
  local gate
  gate="$(k -n "$NS" get agd "$AGD" -o jsonpath='{range .status.rollout.gates[*]}{.metric}: canary {.canary} vs stable {.stable} ({.threshold}), {.samples} samples, {.failures} failing evaluations{end}')"
  k -n "$NS" describe agd "$AGD" | grep -q RolloutRolledBack || fail "no RolloutRolledBack event"
  note "canary: AGENT_SIMULATED_FAILURE_RATIO=0.8 on the explorer ($AGD-$(($1 - 1))) rolled back by itself in $((SECONDS - t))s — $gate; every pod back on $stable"
  wait_until "the failed work of the bad revision given back" "$TIMEOUT" failed_work_given_back
  note "canary: $(rollout_field failedWork.requeued) task(s) the bad revision failed went back to pending (status.rollout.failedWork), $((SECONDS - t))s after the bad template was applied"
  set_agent_env '[]'  # the stable template back in the spec: nothing held back any more
  wait_until "the partition back to 0" "$TIMEOUT" partition_is 0
}
failed_work_given_back() { [[ "$(rollout_field failedWork.complete)" == "true" ]]; }
partition_is() { [[ "$(k -n "$NS" get sts "$AGD" -o jsonpath='{.spec.updateStrategy.rollingUpdate.partition}')" == "$1" ]]; }

canary_good_revision_promotes() {  # $1: replicas
  local t=$SECONDS before
  before="$(rollout_field stableRevision)"
  set_agent_env '[{"name":"AGENT_ACCESS_LOG","value":"false"}]'
  wait_until "the good revision to be promoted through its waves" $((TIMEOUT * 2)) rollout_phase_is Complete
  local after
  after="$(rollout_field stableRevision)"
  [[ -n "$after" && "$after" != "$before" ]] || fail "the stable revision did not move on ($before -> $after)"
  wait_until "every pod on the promoted revision $after" "$TIMEOUT" pods_on_revision "$after" "$1"
  note "canary: a good revision went explorer -> general and became stable ($after) in $((SECONDS - t))s; events: $(k -n "$NS" describe agd "$AGD" | grep -oE '\b(Rollout|Wave)(Started|Passed|Complete|RolledBack|Restarted|Reverted)\b' | sort | uniq -c | tr -s ' ' | tr '\n' ',' | sed 's/,$//')"
}

scale_down_killing_operator() {  # $1: replicas
  local t=$SECONDS phase="" killed=""
  k -n "$NS" scale agd "$AGD" --replicas="$1" >/dev/null
  local deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    phase="$(drain_phase)"
    case "$phase" in
      Fencing|WaitingInFlight|Transferring|Shrinking|Sweeping) break ;;
    esac
    sleep 0.2
  done
  local pod
  pod="$(k -n "$OPERATOR_NS" get pods -l app.kubernetes.io/name=occurrence-operator -o jsonpath='{.items[0].metadata.name}')"
  k -n "$OPERATOR_NS" delete pod "$pod" --grace-period=0 --force >/dev/null 2>&1
  killed="$phase"
  k -n "$OPERATOR_NS" rollout status deploy/"$RELEASE" --timeout="${TIMEOUT}s" >/dev/null
  wait_until "the drain to finish after the operator restart" "$TIMEOUT" drain_done "$1"
  note "scale 5 -> $1: operator pod SIGKILLed in drain phase '${killed:-none seen}', the new one resumed; drain Done in $((SECONDS - t))s"
}

# --- fencing any occurrence -------------------------------------------------------------------

occurrence_state_is() {  # $1: occurrence id, $2: registry state
  [[ "$(sql "SELECT state FROM occurrences WHERE occurrence_id = '$1'")" == "$2" ]]
}
fenced_and_empty() {  # $1: occurrence id
  occurrence_state_is "$1" draining &&
    [[ "$(sql "SELECT count(*) FROM tasks WHERE agent_occurrence_id = '$1'
                AND status IN ('pending', 'active')")" == 0 ]] &&
    [[ "$(k -n "$NS" get agd "$AGD" -o jsonpath='{.status.fencedReplicas}')" == 1 ]]
}
pod_identity() {  # $1: pod — uid and restarts: the same pod, never restarted
  k -n "$NS" get pod "$1" -o jsonpath='{.metadata.uid}/{.status.containerStatuses[0].restartCount}'
}

fence_middle_occurrence() {  # $1: replicas. Under load: $AGD-1 out of work, its pod running.
  local occ="$AGD-1" before t=$SECONDS
  before="$(pod_identity "$occ")"
  burst 30
  k -n "$NS" patch agd "$AGD" --type=merge \
    -p "{\"spec\":{\"fencedOccurrences\":[\"$occ\"]}}" >/dev/null
  wait_until "$occ fenced and emptied (its work on the others)" "$TIMEOUT" fenced_and_empty "$occ"
  [[ "$(pod_identity "$occ")" == "$before" ]] || fail "$occ's pod was replaced or restarted"
  pod_phase_is "$occ" Running || fail "$occ's pod is not Running while fenced"
  note "fence $occ under load: emptied in $((SECONDS - t))s; its pod kept running (same uid, no restart)"
  k -n "$NS" patch agd "$AGD" --type=json \
    -p '[{"op":"remove","path":"/spec/fencedOccurrences"}]' >/dev/null
  wait_until "$occ un-fenced" "$TIMEOUT" occurrence_state_is "$occ" active
  wait_ready "$1"
  note "un-fence $occ: active and Ready again after $((SECONDS - t))s in all"
}

# `kubectl occurrence tasks|task` from the host, as a user at a laptop: a port-forward the API
# server opens to each agent, the work token from the AgentDeployment's Secret. What the
# agents answer must be what the database holds.
plugin() {
  local args=()
  [[ -n "$KUBE_CONTEXT" ]] && args+=(--context "$KUBE_CONTEXT")
  "$PLUGIN" "${args[@]}" -n "$NS" "$@"
}

plugin_reads_the_agents() {  # $@: the occurrences that stay
  local occ json want got id owner thoughts
  for occ in "$@"; do
    json="$(plugin tasks "$AGD" --occurrence "$occ" --status completed --limit 3 -o json)" \
      || fail "kubectl occurrence tasks --occurrence $occ: exit $?"
    want="$(sql "SELECT count(*) FROM tasks WHERE agent_occurrence_id = '$occ' AND status = 'completed'")"
    got="$(python3 -c 'import json,sys; p=json.loads(sys.argv[1])["occurrences"][sys.argv[2]]
print(p["total"], len(p["tasks"]), len({t["status"] for t in p["tasks"]} - {"completed"}))' "$json" "$occ")"
    [[ "$got" == "$want 3 0" ]] || fail "kubectl occurrence tasks $occ: total, shown, not completed = $got (database: $want completed)"
  done
  id="$(sql "SELECT s.task_id FROM e2e_submitted s JOIN tasks t USING (task_id) ORDER BY t.updated_at DESC LIMIT 1")"
  owner="$(sql "SELECT agent_occurrence_id FROM tasks WHERE task_id = '$id'")"
  thoughts="$(sql "SELECT count(*) FROM thoughts WHERE source_task_id = '$id'")"
  json="$(plugin task "$AGD" "$id" -o json)" || fail "kubectl occurrence task $id: exit $?"
  got="$(python3 -c 'import json,sys; r=json.loads(sys.argv[1])
print(r["occurrence"], r["task"]["status"], len(r["thoughts"]))' "$json")"
  [[ "$got" == "$owner completed $thoughts" ]] || fail "kubectl occurrence task $id: $got (database: $owner completed $thoughts)"
  plugin task "$AGD" no-such-task >/dev/null 2>&1 && fail "kubectl occurrence task no-such-task succeeded"
  plugin tasks "$AGD" --limit 2 | sed 's/^/   | /'  # what a user sees
  plugin task "$AGD" "$id" | sed 's/^/   | /'
  note "kubectl occurrence tasks/task: each agent's answer (through a port-forward, with its token) matches the database ($id on $owner, $thoughts thought(s))"
}

# --- the passes -----------------------------------------------------------------------------

pass_helm() {
  install_operator helm
  apply_example
  start_load helm 4
  step "scale 3 -> 5 under load"
  scale_and_wait 5
  pg_fault "after scale-up"
  step "kubectl delete pod $AGD-1 mid-work"
  delete_agent_pod "$AGD-1"
  step "roll a new image tag"
  roll_image 5
  pg_fault "after the rollout"
  step "canary: a bad revision under load rolls back by itself"
  CANARY_OCCURRENCE="'$AGD-4'"
  canary_bad_revision_rolls_back 5
  step "canary: a good revision is promoted wave by wave"
  canary_good_revision_promotes 5
  step "scale 5 -> 2, SIGKILL the operator mid-drain"
  burst 60
  scale_down_killing_operator 2
  pg_fault "after the drain"
  step "stop the load"
  sleep 3
  stop_load
  assert_database "'$AGD-2','$AGD-3','$AGD-4'" "'$AGD-0','$AGD-1'"
  step "clean up the helm pass"
  delete_example
  uninstall_operator helm
}

pass_kustomize() {
  CANARY_OCCURRENCE=""
  install_operator kustomize
  apply_example
  start_load kustomize 4
  step "fence $AGD-1 (a middle ordinal) under load, then give it back"
  fence_middle_occurrence 3
  step "scale 3 -> 2 under load"
  burst 30
  local t=$SECONDS
  k -n "$NS" scale agd "$AGD" --replicas=2 >/dev/null
  wait_until "the drain" "$TIMEOUT" drain_done 2
  note "scale 3 -> 2 (kustomize install): drain Done in $((SECONDS - t))s"
  pg_fault "after the drain"
  stop_load
  assert_database "'$AGD-2'" "'$AGD-0','$AGD-1'"
  step "kubectl occurrence tasks / task: the agents' own answers, from the host"
  plugin_reads_the_agents "$AGD-0" "$AGD-1"
  step "clean up the kustomize pass"
  delete_example
  uninstall_operator kustomize
}

k get nodes -o wide
for pass in $PASSES; do
  case "$pass" in
    helm) pass_helm ;;
    kustomize) pass_kustomize ;;
    *) fail "unknown pass '$pass' (helm, kustomize)" ;;
  esac
done

step "e2e passed in $((SECONDS - T0))s"
{
  echo "e2e report ($(date -u +%Y-%m-%dT%H:%M:%SZ), ${SECONDS}s, passes: $PASSES)"
  printf -- '- %s\n' "${REPORT[@]}"
} | tee "${E2E_REPORT:-/dev/null}"
