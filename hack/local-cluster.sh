#!/usr/bin/env bash
# A local Kubernetes control plane for the tests, built from Go module sources.
#
#   bash hack/local-cluster.sh build   # build (or reuse) the pinned binaries
#   bash hack/local-cluster.sh up      # build if needed, start etcd, the control plane, kwok
#   bash hack/local-cluster.sh up --real-node   # ... and a real node (containerd, kubelet,
#                                      #   kube-proxy, CoreDNS) where pods really run (root)
#   bash hack/local-cluster.sh load IMAGE...    # import images (hack/images.sh) into the node
#   bash hack/local-cluster.sh down    # stop everything, free the ports, remove temp dirs
#   bash hack/local-cluster.sh status  # what runs, where
#   bash hack/local-cluster.sh env     # print `export KUBECONFIG=... PATH=...` for a shell
#
# No container engine is needed: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok run as local processes (as envtest and kwokctl's binary runtime
# do). kwok plays the kubelet: it manages fake Nodes and drives pods through the Stages in
# hack/kwok/. With --real-node a real kubelet joins too (hack/local-node.sh).
# See docs/local-control-plane.md.
#
# Environment:
#   OCCURRENCE_CLUSTER_DIR   state dir (default: <checkout>/.cluster)
#   OCCURRENCE_CACHE_DIR     binary cache root (default: ${XDG_CACHE_HOME:-~/.cache}/occurrence-operator)
#   OCCURRENCE_KWOK_NODES    number of fake nodes (default: 2)
#   OCCURRENCE_UP_TIMEOUT    seconds to wait for the control plane (default: 120)
#   OCCURRENCE_CLUSTER_OWNER_PID  recorded in .cluster/owner.pid by `up` (the test fixture)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HACK_DIR="$REPO_ROOT/hack"
VERSIONS_FILE="$HACK_DIR/k8s-versions.env"
# shellcheck source=hack/k8s-versions.env
source "$VERSIONS_FILE"

CLUSTER_DIR="$(realpath -m "${OCCURRENCE_CLUSTER_DIR:-$REPO_ROOT/.cluster}")"
CACHE_ROOT="${OCCURRENCE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/occurrence-operator}"
KWOK_NODES="${OCCURRENCE_KWOK_NODES:-2}"
UP_TIMEOUT="${OCCURRENCE_UP_TIMEOUT:-120}"
# shellcheck source=hack/local-node.sh
source "$HACK_DIR/local-node.sh"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm
  kubelet kube-proxy coredns)

log() { printf '[local-cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------

# The recipe. Its text is part of the cache key (see cache_key), so editing it rebuilds.
# $1: output bin dir, $2: scratch dir for the wrapper modules, $3: build log.
build_binaries() {
  local out="$1" work="$2" buildlog="$3"
  local k8s="$KUBERNETES_VERSION" staging="$KUBERNETES_STAGING_VERSION"
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  # GOTOOLCHAIN is left alone: with the default (auto) an older local Go fetches the
  # toolchain a module asks for (kwok v0.8.0 says go 1.26.0) through the module proxy.
  export GOFLAGS=-mod=mod CGO_ENABLED=0
  mkdir -p "$out" "$work"

  # 1. Kubernetes (control plane, kubectl, the real node's kubelet and kube-proxy) + etcd in
  # one wrapper module, one `go build`.
  # `go install k8s.io/kubernetes/cmd/...@v` fails: its go.mod requires the staging modules
  # at v0.0.0 (replaced by ./staging/... upstream). Replace each with its published version;
  # the list comes from k8s.io/kubernetes' own go.mod.
  local wrap="$work/k8s" t=$SECONDS
  log "[1/4] kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy, etcd ..."
  rm -rf "$wrap"; mkdir -p "$wrap"
  (
    cd "$wrap"
    go mod init occurrence.dev/local-control-plane >/dev/null 2>&1
    go mod edit -go=1.24.0
    local kjson kmod
    kjson="$(go mod download -json "k8s.io/kubernetes@$k8s" || true)"
    kmod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p' <<<"$kjson")"
    [[ -f "$kmod" ]] || { echo "cannot download k8s.io/kubernetes@$k8s: $kjson" >&2; exit 1; }
    local m
    for m in $(awk '/=> \.\/staging\/src\// {print $1}' "$kmod"); do
      go mod edit -replace="$m=$m@$staging"
    done
    go get "k8s.io/kubernetes@$k8s" "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    # the pinned etcd must be what kubernetes resolves to, or MVS has moved something
    local got
    got="$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
    [[ "$got" == "$ETCD_VERSION" ]] || { echo "etcd resolved to $got, want $ETCD_VERSION" >&2; exit 1; }
    local vars="" p
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      vars+=" -X $p.gitVersion=$k8s -X $p.gitMajor=1 -X $p.gitMinor=$minor"
      vars+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    vars+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION"
    go build -trimpath -tags=selinux,notest -ldflags="-s -w$vars" -o "$out/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubectl \
      k8s.io/kubernetes/cmd/kubelet \
      k8s.io/kubernetes/cmd/kube-proxy
    go build -trimpath -ldflags="-s -w$vars" -o "$out/etcd" go.etcd.io/etcd/server/v3
  ) >>"$buildlog" 2>&1 || return 1
  log "[1/4] done in $((SECONDS - t))s"

  # 2. kwok: its own module graph (k8s.io/* v0.36), no replace directives -> go install.
  t=$SECONDS; log "[2/4] kwok ..."
  (
    cd "$work"
    GOBIN="$out" go install -trimpath -ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
      "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  ) >>"$buildlog" 2>&1 || return 1
  log "[2/4] done in $((SECONDS - t))s"

  # 3. helm: likewise.
  t=$SECONDS; log "[3/4] helm ..."
  (
    cd "$work"
    GOBIN="$out" go install -trimpath -ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
      "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  ) >>"$buildlog" 2>&1 || return 1
  log "[3/4] done in $((SECONDS - t))s"

  # 4. CoreDNS with only the plugins the real node's Corefile uses (hack/local-node.sh): a
  # main package of our own, as CoreDNS documents for custom builds, instead of all ~50.
  t=$SECONDS; log "[4/4] coredns ..."
  local dns="$work/coredns"
  rm -rf "$dns"; mkdir -p "$dns"
  (
    cd "$dns"
    go mod init occurrence.dev/local-coredns >/dev/null 2>&1
    cat >main.go <<'GO'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
)

func init() {
	// plugin order of a server block, as in CoreDNS's plugin.cfg
	dnsserver.Directives = []string{"bind", "health", "errors", "cache", "kubernetes"}
}

func main() { coremain.Run() }
GO
    go get "github.com/coredns/coredns@$COREDNS_VERSION"
    go mod tidy
    go build -trimpath -ldflags="-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
      -o "$out/coredns" .
  ) >>"$buildlog" 2>&1 || return 1
  log "[4/4] done in $((SECONDS - t))s"
}

cache_key() {
  { cat "$VERSIONS_FILE"; declare -f build_binaries; go env GOOS GOARCH 2>/dev/null || true; } \
    | sha256sum | cut -c1-16
}

cache_dir() { echo "$CACHE_ROOT/k8s-$(cache_key)"; }

binaries_complete() {
  local bin="$1" b
  for b in "${BINARIES[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

cmd_build() {
  command -v go >/dev/null || die "go is not installed (needed to build the control plane)"
  local dir; dir="$(cache_dir)"
  local bin="$dir/bin"
  if binaries_complete "$bin"; then
    log "binaries cached: $bin"
    link_bin "$bin"
    return 0
  fi
  mkdir -p "$dir"
  # one build at a time per cache dir (CI and a developer shell may race)
  exec 9>"$dir/.lock"
  flock 9
  if binaries_complete "$bin"; then
    exec 9>&-
    log "binaries cached (built concurrently): $bin"; link_bin "$bin"; return 0
  fi
  local buildlog="$dir/build.log" tmpbin="$dir/bin.tmp" work="$dir/work"
  rm -rf "$tmpbin"
  : >"$buildlog"
  log "building Kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION, helm $HELM_VERSION, CoreDNS $COREDNS_VERSION"
  log "  into $bin (log: $buildlog) - a cold build takes ~7-10 min on 2 cores"
  local start=$SECONDS
  if ! build_binaries "$tmpbin" "$work" "$buildlog"; then
    log "build FAILED after $((SECONDS - start))s; last lines of $buildlog:"
    tail -n 60 "$buildlog" >&2
    exit 1
  fi
  local b
  for b in "${BINARIES[@]}"; do
    [[ -x "$tmpbin/$b" ]] || { tail -n 60 "$buildlog" >&2; die "build produced no $b (log: $buildlog)"; }
  done
  rm -rf "$bin"; mv "$tmpbin" "$bin"; rm -rf "$work"
  exec 9>&-  # release the lock (and do not leak the fd into the daemons `up` starts)
  log "build done in $((SECONDS - start))s"
  link_bin "$bin"
}

# .cluster/bin -> the cached binaries
link_bin() {
  local bin="$1" b
  mkdir -p "$CLUSTER_DIR/bin"
  for b in "${BINARIES[@]}"; do ln -sfn "$bin/$b" "$CLUSTER_DIR/bin/$b"; done
}

# ---------------------------------------------------------------------------------------
# up / down / status / env
# ---------------------------------------------------------------------------------------

STATE_FILE="$CLUSTER_DIR/cluster.env"   # ports, temp dir, bin dir of the running cluster
PID_DIR="$CLUSTER_DIR/pids"
LOG_DIR="$CLUSTER_DIR/logs"
KUBECONFIG_PATH="$CLUSTER_DIR/kubeconfig"

free_ports() {  # $1: how many distinct free loopback ports
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

port_in_use() { ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }

process_age() {  # $1: pid; whole seconds since it started (field 22 of /proc/PID/stat)
  local start up
  start="$(awk '{print $22}' "/proc/$1/stat" 2>/dev/null || echo 0)"
  up="$(cut -d. -f1 /proc/uptime)"
  echo $((up - start / $(getconf CLK_TCK)))
}

pid_alive() {  # $1: component; true if its pid file names a live process of that binary
  local f="$PID_DIR/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  # guard against a recycled pid: argv[0] must be our binary — except in the first seconds
  # after `launch`, while the forked shell or setsid is still exec'ing it: then argv[0] is
  # theirs, or even empty (/proc/PID/cmdline reads empty during execve). Twice a check in
  # that window reported a starting kubelet as exited (once with argv[0] empty).
  local argv0
  argv0="$(head -z -n1 "/proc/$pid/cmdline" 2>/dev/null | tr -d '\0')"
  case "${argv0##*/}" in
    "$1") return 0 ;;
    *) (($(process_age "$pid") < 5)) ;;
  esac
}

start_component() {  # $1: component name, rest: command line
  local name="$1"; shift
  log "starting $name"
  # setsid: own session, so the caller's terminal signals do not reach it; all fds
  # redirected, so a caller capturing our output is not held open by the daemons.
  local np="127.0.0.1,localhost,$NODE_IP,10.96.0.0/16,$NODE_POD_CIDR"
  NO_PROXY="$np" no_proxy="$np" \
    setsid "$@" </dev/null >"$LOG_DIR/$name.log" 2>&1 &
  echo $! >"$PID_DIR/$name.pid"
}

wait_for() {  # $1: description, $2: timeout seconds, $3: component to watch (or ""), rest: check command
  local what="$1" timeout="$2" comp="$3"; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$comp" ]] && ! pid_alive "$comp"; then
      log "$comp exited while waiting for $what; last lines of $LOG_DIR/$comp.log:"
      tail -n 40 "$LOG_DIR/$comp.log" >&2 || true
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for $what"
      [[ -n "$comp" ]] && { tail -n 40 "$LOG_DIR/$comp.log" >&2 || true; }
      return 1
    fi
    sleep 0.5
  done
}

gen_certs() {  # $1: pki dir
  local pki="$1"
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -keyout ca.key -out ca.crt \
      -subj "/CN=occurrence-local-ca" 2>/dev/null
    cat >server.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:$NODE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EXT
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
      -extfile server.ext -out apiserver.crt 2>/dev/null
    # front proxy (request-header authentication), for aggregated API servers
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -keyout front-proxy-ca.key \
      -out front-proxy-ca.crt -subj "/CN=occurrence-local-front-proxy-ca" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >client.ext
    openssl req -newkey rsa:2048 -nodes -keyout front-proxy-client.key -out front-proxy-client.csr \
      -subj "/CN=front-proxy-client" 2>/dev/null
    openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key \
      -CAcreateserial -days 365 -extfile client.ext -out front-proxy-client.crt 2>/dev/null
    # the API server's client certificate towards kubelets (logs, exec, port-forward)
    openssl req -newkey rsa:2048 -nodes -keyout apiserver-kubelet-client.key \
      -out apiserver-kubelet-client.csr -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
    openssl x509 -req -in apiserver-kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -days 365 -extfile client.ext -out apiserver-kubelet-client.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 600 ./*.key
  )
}

write_kubeconfig() {  # $1: path, $2: server, $3: ca file, $4: user, $5: token
  local ca
  ca="$(base64 -w0 <"$3")"
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: occurrence-local
  cluster:
    server: $2
    certificate-authority-data: $ca
users:
- name: $4
  user:
    token: $5
contexts:
- name: occurrence-local
  context:
    cluster: occurrence-local
    user: $4
    namespace: default
current-context: occurrence-local
KC
  chmod 600 "$1"
}

cluster_healthy() {
  [[ -f "$STATE_FILE" ]] || return 1
  local c
  for c in "${COMPONENTS[@]}"; do pid_alive "$c" || return 1; done
  # shellcheck disable=SC1090
  if (source "$STATE_FILE"; [[ "${REAL_NODE:-0}" == 1 ]]); then
    for c in "${NODE_COMPONENTS[@]}"; do pid_alive "$c" || return 1; done
  fi
  # shellcheck disable=SC1090
  (source "$STATE_FILE" && "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz) >/dev/null 2>&1
}

create_nodes() {
  local i manifest=""
  for ((i = 0; i < KWOK_NODES; i++)); do
    manifest+="
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: \"0\"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-$i
    node-role.kubernetes.io/agent: \"\"
status:
  allocatable: {cpu: \"32\", memory: 256Gi, pods: \"110\"}
  capacity: {cpu: \"32\", memory: 256Gi, pods: \"110\"}
"
  done
  "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" apply -f - <<<"$manifest" >&2
}

cmd_up() {
  local t0=$SECONDS real_node=0
  case "${1:-}" in
    --real-node) real_node=1 ;;
    "") ;;
    *) die "usage: $0 up [--real-node]" ;;
  esac
  if cluster_healthy; then
    # shellcheck disable=SC1090
    if ((real_node)) && ! (source "$STATE_FILE"; [[ "${REAL_NODE:-0}" == 1 ]]); then
      die "already running without a real node: run down first"
    fi
    log "already running (kubeconfig: $KUBECONFIG_PATH)"
    return 0
  fi
  if [[ -f "$STATE_FILE" ]] || compgen -G "$PID_DIR/*.pid" >/dev/null; then
    log "stale state in $CLUSTER_DIR: cleaning up first"
    cmd_down
  fi
  cmd_build
  BIN="$(cache_dir)/bin"
  if ((real_node)); then
    node_ensure_packages
    PAUSE_IMAGE="$(bash "$HACK_DIR/images.sh" build pause | sed -n 's/^PAUSE_IMAGE=//p')"
    [[ -n "$PAUSE_IMAGE" ]] || die "no pause image"
    node_claim_bridge
  fi
  local tb=$SECONDS

  mkdir -p "$PID_DIR" "$LOG_DIR"
  rm -f "$LOG_DIR"/*.log
  local tmp
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/occurrence-cluster.XXXXXX")"
  TMP_DIR="$tmp"
  local ports
  read -r -a ports <<<"$(free_ports 5)"
  local etcd_port=${ports[0]} etcd_peer=${ports[1]} api_port=${ports[2]} kcm_port=${ports[3]} sched_port=${ports[4]}
  # record state before starting anything, so `down` can clean up a half-started cluster
  cat >"$STATE_FILE" <<ST
BIN=$BIN
TMP_DIR=$tmp
ETCD_PORT=$etcd_port
ETCD_PEER_PORT=$etcd_peer
APISERVER_PORT=$api_port
KCM_PORT=$kcm_port
SCHEDULER_PORT=$sched_port
KUBECONFIG=$KUBECONFIG_PATH
ST
  # any failure from here on: tear down what was started
  trap 'log "up failed; tearing down (logs kept in $LOG_DIR)"; cmd_down || true' ERR
  set -E

  local pki="$tmp/pki"
  gen_certs "$pki"
  local admin_token kcm_token sched_token kwok_token
  admin_token="$(openssl rand -hex 24)"; kcm_token="$(openssl rand -hex 24)"
  sched_token="$(openssl rand -hex 24)"; kwok_token="$(openssl rand -hex 24)"
  NODE_KUBELET_TOKEN="$(openssl rand -hex 24)"; NODE_PROXY_TOKEN="$(openssl rand -hex 24)"
  NODE_DNS_TOKEN="$(openssl rand -hex 24)"
  cat >"$pki/tokens.csv" <<TK
$admin_token,admin,admin,"system:masters"
$kcm_token,system:kube-controller-manager,system:kube-controller-manager
$sched_token,system:kube-scheduler,system:kube-scheduler
$kwok_token,kwok,kwok,"system:masters"
$NODE_KUBELET_TOKEN,system:node:$NODE_NAME,system:node:$NODE_NAME,"system:nodes"
$NODE_PROXY_TOKEN,system:kube-proxy,system:kube-proxy
$NODE_DNS_TOKEN,occurrence:coredns,occurrence:coredns
TK
  chmod 600 "$pki/tokens.csv"
  # With a real node the API server listens on the node's address, where pods reach it
  # (kubernetes.default -> kube-proxy -> here); otherwise on loopback only.
  local api_ip=127.0.0.1 endpoint_reconciler=none
  if ((real_node)); then
    node_prepare "$pki"
    api_ip="$NODE_IP" endpoint_reconciler=lease
  fi
  local server="https://$api_ip:$api_port"
  write_kubeconfig "$KUBECONFIG_PATH" "$server" "$pki/ca.crt" admin "$admin_token"
  write_kubeconfig "$tmp/kcm.kubeconfig" "$server" "$pki/ca.crt" system:kube-controller-manager "$kcm_token"
  write_kubeconfig "$tmp/scheduler.kubeconfig" "$server" "$pki/ca.crt" system:kube-scheduler "$sched_token"
  write_kubeconfig "$tmp/kwok.kubeconfig" "$server" "$pki/ca.crt" kwok "$kwok_token"

  start_component etcd "$BIN/etcd" \
    --name=local --data-dir="$tmp/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" \
    --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-cluster="local=http://127.0.0.1:$etcd_peer" \
    --unsafe-no-fsync --log-level=warn
  wait_for "etcd /health" 30 etcd curl -fsS "http://127.0.0.1:$etcd_port/health"

  start_component kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address="$api_ip" --advertise-address="$api_ip" --secure-port="$api_port" \
    --cert-dir="$tmp/apiserver" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" \
    --proxy-client-key-file="$pki/front-proxy-client.key" \
    --token-auth-file="$pki/tokens.csv" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --allow-privileged=true \
    --endpoint-reconciler-type="$endpoint_reconciler" \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --profiling=false
  wait_for "kube-apiserver /readyz" "$UP_TIMEOUT" kube-apiserver \
    "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz

  start_component kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$tmp/kcm.kubeconfig" \
    --authentication-kubeconfig="$tmp/kcm.kubeconfig" \
    --authorization-kubeconfig="$tmp/kcm.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" --cert-dir="$tmp/kcm" \
    --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" \
    --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --profiling=false
  start_component kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$tmp/scheduler.kubeconfig" \
    --authentication-kubeconfig="$tmp/scheduler.kubeconfig" \
    --authorization-kubeconfig="$tmp/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$sched_port" --cert-dir="$tmp/scheduler" \
    --leader-elect=false --profiling=false

  local stages="$tmp/kwok-stages.yaml" f
  : >"$stages"
  for f in "$HACK_DIR"/kwok/*.yaml; do { echo "---"; cat "$f"; } >>"$stages"; done
  start_component kwok "$BIN/kwok" \
    --kubeconfig="$tmp/kwok.kubeconfig" \
    --config="$stages" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40

  wait_for "kube-controller-manager /healthz" 60 kube-controller-manager \
    curl -fsSk "https://127.0.0.1:$kcm_port/healthz"
  wait_for "kube-scheduler /healthz" 60 kube-scheduler \
    curl -fsSk "https://127.0.0.1:$sched_port/healthz"
  if ((KWOK_NODES > 0)); then
    create_nodes
    wait_for "$KWOK_NODES kwok node(s) Ready" 60 kwok \
      "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" wait --for=condition=Ready node \
      -l type=kwok --timeout=5s
  fi
  if ((real_node)); then
    node_start "$pki" "$server"
  fi
  wait_for "ServiceAccount default/default (controllers up)" 60 kube-controller-manager \
    "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" -n default get serviceaccount default
  trap - ERR
  # who started it (the pytest fixture sets this, to recognise a cluster left behind by a
  # killed test session); empty for `make cluster-up`
  if [[ -n "${OCCURRENCE_CLUSTER_OWNER_PID:-}" ]]; then
    echo "$OCCURRENCE_CLUSTER_OWNER_PID" >"$CLUSTER_DIR/owner.pid"
  fi
  log "cluster up in $((SECONDS - tb))s (total $((SECONDS - t0))s): $server"
  log "  export KUBECONFIG=$KUBECONFIG_PATH PATH=$CLUSTER_DIR/bin:\$PATH"
}

stop_components() {  # components stopped together: SIGTERM, up to 10s, then SIGKILL
  local name pid i rc=0 names=()
  declare -A pids=()
  for name in "$@"; do
    [[ -f "$PID_DIR/$name.pid" ]] || continue
    if pid_alive "$name"; then
      pid="$(cat "$PID_DIR/$name.pid")"
      log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids[$name]=$pid; names+=("$name")
    else
      rm -f "$PID_DIR/$name.pid"
    fi
  done
  ((${#names[@]})) || return 0
  any_alive() { local n; for n in "${names[@]}"; do pid_alive "$n" && return 0; done; return 1; }
  for ((i = 0; i < 100; i++)); do any_alive || break; sleep 0.1; done
  for name in "${names[@]}"; do
    if pid_alive "$name"; then
      log "$name did not exit after 10s: SIGKILL"
      kill -KILL "${pids[$name]}" 2>/dev/null || true
    fi
  done
  for ((i = 0; i < 50; i++)); do any_alive || break; sleep 0.1; done
  for name in "${names[@]}"; do
    if pid_alive "$name"; then
      log "ERROR: could not stop $name (pid ${pids[$name]})"; rc=1; continue
    fi
    # an exited process lingers as a zombie until its parent (init) reaps it: wait for
    # that too, so that `pgrep kube-apiserver` is empty once `down` returns
    for ((i = 0; i < 50; i++)); do [[ -e "/proc/${pids[$name]}" ]] || break; sleep 0.1; done
    rm -f "$PID_DIR/$name.pid"
  done
  return $rc
}

cmd_down() {
  local rc=0 i
  if [[ -f "$STATE_FILE" ]]; then
    local REAL_NODE=0 NODE_DIR="" BIN=""
    # shellcheck disable=SC1090
    source "$STATE_FILE"
    if [[ "$REAL_NODE" == 1 ]]; then node_down || rc=1; fi
  fi
  # reverse start order: the API clients first, then the API server, etcd last
  stop_components kwok kube-scheduler kube-controller-manager || rc=1
  stop_components kube-apiserver || rc=1
  stop_components etcd || rc=1
  if [[ -f "$STATE_FILE" ]]; then
    local TMP_DIR="" ETCD_PORT="" ETCD_PEER_PORT="" APISERVER_PORT="" KCM_PORT="" SCHEDULER_PORT=""
    # shellcheck disable=SC1090
    source "$STATE_FILE"
    local p busy
    for ((i = 0; i < 50; i++)); do
      busy=""
      for p in $ETCD_PORT $ETCD_PEER_PORT $APISERVER_PORT $KCM_PORT $SCHEDULER_PORT; do
        port_in_use "$p" && busy+=" $p"
      done
      [[ -z "$busy" ]] && break
      sleep 0.2
    done
    if [[ -n "$busy" ]]; then log "ERROR: ports still in use:$busy"; rc=1; fi
    if [[ -n "$TMP_DIR" && -d "$TMP_DIR" && "$TMP_DIR" == */occurrence-cluster.* ]]; then
      rm -rf "$TMP_DIR"
    fi
    rm -f "$STATE_FILE"
  fi
  rm -f "$KUBECONFIG_PATH" "$CLUSTER_DIR/owner.pid"
  rmdir "$PID_DIR" 2>/dev/null || true
  ((rc == 0)) && log "down (logs kept in $LOG_DIR)"
  return $rc
}

cmd_status() {
  if [[ ! -f "$STATE_FILE" ]]; then
    echo "not running (no $STATE_FILE)"
    return 1
  fi
  cat "$STATE_FILE"
  local c rc=0
  local all=("${COMPONENTS[@]}")
  # shellcheck disable=SC1090
  if (source "$STATE_FILE"; [[ "${REAL_NODE:-0}" == 1 ]]); then all+=("${NODE_COMPONENTS[@]}"); fi
  for c in "${all[@]}"; do
    if pid_alive "$c"; then echo "$c: running (pid $(cat "$PID_DIR/$c.pid"))"
    else echo "$c: NOT running"; rc=1; fi
  done
  if cluster_healthy; then echo "apiserver: ready"; else echo "apiserver: NOT ready"; rc=1; fi
  return $rc
}

cmd_env() {
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
  echo "export PATH=$CLUSTER_DIR/bin:\$PATH"
}

main() {
  local cmd="${1:-}"
  case "$cmd" in
    build) cmd_build ;;
    up) shift; cmd_up "$@" ;;
    load) shift; cmd_load "$@" ;;
    tag) shift; cmd_tag "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) die "usage: $0 build|up [--real-node]|load IMAGE...|tag REF NEWREF|down|status|env" ;;
  esac
}

main "$@"
