# shellcheck shell=bash
# The real node of the local cluster: sourced by hack/local-cluster.sh (`up --real-node`).
#
# Beside the kwok nodes (in which nothing runs), one node where pods really run:
#   containerd + runc + the CNI plugins   Debian packages (installed when missing)
#   kubelet, kube-proxy                   built with the control plane (same wrapper module)
#   CoreDNS                               built from its Go module (only the plugins used)
#   pause image                           hack/images/pause.c (hack/images.sh)
# Its network never leaves this machine: one bridge (NODE_BRIDGE) whose gateway address is
# also the node's address, pods in network namespaces on it, no masquerade, no route out.
# `down` stops all of it and removes what it made: processes, mounts, network namespaces,
# the bridge, iptables rules, cgroups, and the kernel settings the kubelet changed.
#
# What had to be set for this machine kind (a VM refusing negative oom_score_adj, no
# registry, no non-loopback address for the node): restrict_oom_score_adj in containerd,
# oomScoreAdj 0 for the kubelet and kube-proxy, a locally built sandbox image, the bridge
# gateway as node IP. See docs/local-control-plane.md.

NODE_NAME=occurrence-node-0
NODE_BRIDGE=occbr0
NODE_POD_CIDR=10.244.0.0/24
NODE_IP=10.244.0.1
CLUSTER_DNS_IP=10.96.0.10
CNI_BIN_DIR=/usr/lib/cni
# shellcheck disable=SC2034  # used by hack/local-cluster.sh (status, cluster_healthy)
NODE_COMPONENTS=(containerd kubelet kube-proxy coredns)
# containerd's root (content store, snapshots, image metadata) lives in the cache
NODE_IMAGE_ROOT="$CACHE_ROOT/node/containerd"
NODE_HOST_DIRS=(/var/run/netns /var/lib/cni/results /var/lib/cni /var/log/containers)
# Kernel settings the kubelet, the bridge plugin and kube-proxy change: restored by `down`.
NODE_SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables vm.overcommit_memory
  vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes)

node_ensure_packages() {
  [[ "$(id -u)" -eq 0 ]] || die "the real node needs root (containerd, kubelet, iptables)"
  bash "$HACK_DIR/ensure-packages.sh" containerd:containerd runc:runc \
    "$CNI_BIN_DIR/bridge:containernetworking-plugins" iptables:iptables ip:iproute2 \
    conntrack:conntrack
}

ctr_() { ctr --address "$NODE_DIR/containerd/containerd.sock" --namespace k8s.io "$@"; }

node_write_certs() {  # $1: pki dir
  local pki="$1"
  (
    cd "$pki" || exit 1
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:%s,DNS:%s\n' \
      "$NODE_IP" "$NODE_NAME" >kubelet.ext
    openssl req -newkey rsa:2048 -nodes -keyout kubelet.key -out kubelet.csr \
      -subj "/CN=$NODE_NAME" 2>/dev/null
    openssl x509 -req -in kubelet.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
      -extfile kubelet.ext -out kubelet.crt 2>/dev/null
    chmod 600 kubelet.key
  )
}

node_network_up() {
  local s
  : >"$NODE_DIR/sysctl.saved"
  for s in "${NODE_SYSCTLS[@]}"; do
    echo "$s=$(sysctl -n "$s" 2>/dev/null || echo)" >>"$NODE_DIR/sysctl.saved"
  done
  ip link add "$NODE_BRIDGE" type bridge
  ip addr add "$NODE_IP/${NODE_POD_CIDR#*/}" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  # Pods talk to each other, to Services and to this machine; nothing they send is
  # forwarded anywhere else (no masquerade either, see the CNI config).
  iptables -w -N OCCURRENCE-NODE
  iptables -w -A OCCURRENCE-NODE -o "$NODE_BRIDGE" -j ACCEPT
  iptables -w -A OCCURRENCE-NODE -j DROP
  iptables -w -I FORWARD 1 -i "$NODE_BRIDGE" -j OCCURRENCE-NODE
}

node_write_configs() {  # $1: pki dir, $2: api server URL, $3..: ports
  local pki="$1" server="$2" kubelet_port="$3" kubelet_healthz="$4" proxy_healthz="$5"
  local proxy_metrics="$6" dns_port="$7" dns_health="$8"
  local d="$NODE_DIR"
  mkdir -p "$d/containerd" "$NODE_IMAGE_ROOT" "$d/cni/net.d" "$d/cni/ipam" "$d/kubelet" "$d/pod-logs" "$d/volume-plugins"
  cat >"$d/containerd/config.toml" <<TOML
version = 2
# images and their unpacked layers outlive the cluster (nothing can be pulled again here,
# and importing them anew costs half a minute); containers and state do not
root = "$NODE_IMAGE_ROOT"
state = "$d/containerd/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$d/containerd/containerd.sock"
[ttrpc]
  address = "$d/containerd/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # this VM refuses negative oom_score_adj: without this every pod sandbox fails to start
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$d/containerd/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$d/cni/net.d"
    max_conf_num = 1
TOML
  cat >"$d/cni/net.d/10-occurrence.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "occurrence",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$d/cni/ipam",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
JSON
  write_kubeconfig "$d/kubelet.kubeconfig" "$server" "$pki/ca.crt" "system:node:$NODE_NAME" "$NODE_KUBELET_TOKEN"
  write_kubeconfig "$d/kube-proxy.kubeconfig" "$server" "$pki/ca.crt" system:kube-proxy "$NODE_PROXY_TOKEN"
  write_kubeconfig "$d/coredns.kubeconfig" "$server" "$pki/ca.crt" occurrence:coredns "$NODE_DNS_TOKEN"
  cat >"$d/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$d/containerd/containerd.sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
clusterDNS: [$CLUSTER_DNS_IP]
clusterDomain: cluster.local
podLogsDir: $d/pod-logs
volumePluginDir: $d/volume-plugins
serializeImagePulls: false
# images cannot be pulled again here: never garbage-collect them
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
evictionPressureTransitionPeriod: 30s
maxPods: 110
nodeStatusUpdateFrequency: 5s
shutdownGracePeriod: 0s
YAML
  cat >"$d/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $d/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $NODE_POD_CIDR
healthzBindAddress: 127.0.0.1:$proxy_healthz
metricsBindAddress: 127.0.0.1:$proxy_metrics
nodePortAddresses: [$NODE_IP/32]
oomScoreAdj: 0
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false, masqueradeAll: false, syncPeriod: 10s, minSyncPeriod: 1s}
YAML
  cat >"$d/Corefile" <<COREFILE
.:$dns_port {
    bind $NODE_IP
    health 127.0.0.1:$dns_health
    errors
    cache 5
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $d/coredns.kubeconfig
        pods insecure
        ttl 5
    }
}
COREFILE
}

# Cluster objects the node's own components need: RBAC for the kubelet and CoreDNS, and the
# kube-dns Service whose endpoint is CoreDNS on this machine.
node_cluster_objects() {  # $1: dns port
  "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" apply -f - >&2 <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "occurrence-local:kubelet"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:node:$NODE_NAME"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "occurrence-local:coredns"}
rules:
- {apiGroups: [""], resources: [services, namespaces, endpoints, pods], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "occurrence-local:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "occurrence-local:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "occurrence:coredns"}]
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  clusterIP: $CLUSTER_DNS_IP
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: $1}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: $1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-local
  namespace: kube-system
  labels:
    kubernetes.io/service-name: kube-dns
    endpointslice.kubernetes.io/managed-by: occurrence.dev-local-cluster
addressType: IPv4
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
ports:
- {name: dns, port: $1, protocol: UDP}
- {name: dns-tcp, port: $1, protocol: TCP}
YAML
}

node_prepare() {  # $1: pki dir. Before the API server starts: it listens on the node IP.
  local pki="$1"
  NODE_DIR="$TMP_DIR/node"
  mkdir -p "$NODE_DIR"
  cat >>"$STATE_FILE" <<ST
REAL_NODE=1
NODE_DIR=$NODE_DIR
ST
  ls /var/run/netns 2>/dev/null >"$NODE_DIR/netns.before" || true
  # host directories the runtime creates when missing: removed again by `down` if so
  local dir
  for dir in "${NODE_HOST_DIRS[@]}"; do [[ -d "$dir" ]] || echo "$dir"; done >"$NODE_DIR/host-dirs.created"
  node_write_certs "$pki"
  node_network_up
}

node_start() {  # $1: pki dir, $2: api server URL
  local pki="$1" server="$2"
  local ports
  read -r -a ports <<<"$(free_ports 6)"
  local kubelet_port=${ports[0]} kubelet_healthz=${ports[1]} proxy_healthz=${ports[2]}
  local proxy_metrics=${ports[3]} dns_port=${ports[4]} dns_health=${ports[5]}
  node_write_configs "$pki" "$server" "$kubelet_port" "$kubelet_healthz" "$proxy_healthz" \
    "$proxy_metrics" "$dns_port" "$dns_health"

  start_component containerd containerd --config "$NODE_DIR/containerd/config.toml"
  wait_for "containerd" 30 containerd ctr_ version
  node_load_images "$PAUSE_IMAGE"

  node_cluster_objects "$dns_port"
  start_component kubelet "$BIN/kubelet" \
    --config="$NODE_DIR/kubelet.yaml" --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \
    --root-dir="$NODE_DIR/kubelet" --cert-dir="$NODE_DIR/kubelet/pki" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --node-labels=type=real --v=1
  start_component kube-proxy "$BIN/kube-proxy" --config="$NODE_DIR/kube-proxy.yaml" --v=1
  start_component coredns "$BIN/coredns" -conf "$NODE_DIR/Corefile"
  wait_for "kubelet /healthz" 60 kubelet curl -fsS "http://127.0.0.1:$kubelet_healthz/healthz"
  wait_for "kube-proxy /healthz" 60 kube-proxy curl -fsS "http://127.0.0.1:$proxy_healthz/healthz"
  wait_for "CoreDNS /health" 60 coredns curl -fsS "http://127.0.0.1:$dns_health/health"
  wait_for "node $NODE_NAME Ready" 90 kubelet \
    "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
}

# Images built by hack/images.sh, into the node's containerd (no registry: the kubelet finds
# them there; pods use imagePullPolicy IfNotPresent or Never).
node_load_images() {  # refs
  local ref tar=""
  for ref in "$@"; do
    if [[ -n "$(ctr_ images ls -q "name==$ref" 2>/dev/null)" ]]; then
      log "image $ref: already in the node"
    else
      log "loading image $ref into the node"
      [[ -n "$tar" ]] || tar="$(mktemp "${TMPDIR:-/tmp}/occurrence-image.XXXXXX.tar")"
      bash "$HACK_DIR/images.sh" archive "$ref" "$tar"
      ctr_ images import --snapshotter overlayfs "$tar" >/dev/null
    fi
    node_prune_images "$ref"
  done
  [[ -z "$tar" ]] || rm -f "$tar"
}

# Refs carry a content hash: older builds of the same repository are dead weight.
node_prune_images() {  # $1: the ref to keep (and its -roll tag)
  local repo="${1%:*}" other
  for other in $(ctr_ images ls -q 2>/dev/null | grep -F "$repo:"); do
    [[ "$other" == "$1" || "$other" == "$1-roll" || "${other%:*}" != "$repo" ]] && continue
    ctr_ images rm "$other" >/dev/null 2>&1 || true
  done
}

cmd_load() {  # image refs (from hack/images.sh's storage)
  [[ -f "$STATE_FILE" ]] || die "the cluster is not running"
  # shellcheck disable=SC1090
  source "$STATE_FILE"
  [[ "${REAL_NODE:-0}" == 1 ]] || die "the cluster has no real node (up --real-node)"
  node_load_images "$@"
}

cmd_tag() {  # $1: existing ref, $2: new ref (both in the node's containerd)
  [[ -f "$STATE_FILE" ]] || die "the cluster is not running"
  # shellcheck disable=SC1090
  source "$STATE_FILE"
  ctr_ images tag --force "$1" "$2" >/dev/null
}

# ---------------------------------------------------------------------------------------
# down: pods first (through the kubelet, so that every sandbox's network is torn down), then
# the processes, then whatever is left of containers, mounts, namespaces, rules and cgroups.
# ---------------------------------------------------------------------------------------

node_drain_pods() {
  local k=("$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" --request-timeout=10s)
  pid_alive kube-apiserver && pid_alive kubelet || return 0
  "${k[@]}" delete pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" \
    --grace-period=2 --wait=false >/dev/null 2>&1 || true
  local i
  for ((i = 0; i < 60; i++)); do
    [[ -z "$("${k[@]}" get pods -A --field-selector "spec.nodeName=$NODE_NAME" -o name 2>/dev/null)" ]] && break
    sleep 0.5
  done
  # the kubelet stops each sandbox (network torn down) before it lets the pod go
  for ((i = 0; i < 40; i++)); do
    [[ -z "$(ctr_ tasks ls -q 2>/dev/null)" ]] && break
    sleep 0.5
  done
}

node_remove_containers() {
  pid_alive containerd || return 0
  local id
  for id in $(ctr_ tasks ls -q 2>/dev/null); do
    ctr_ tasks kill --all --signal SIGKILL "$id" >/dev/null 2>&1 || true
  done
  sleep 0.5
  for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete --force "$id" >/dev/null 2>&1 || true; done
  for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
}

node_unmount_all() {  # everything mounted below the node's directory, deepest first
  local m
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "ERROR: cannot unmount $m"
  done < <(awk -v d="$NODE_DIR/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r)
}

node_remove_netns() {  # the network namespaces that appeared while the node ran (sandboxes')
  local ns
  for ns in /var/run/netns/cni-*; do
    [[ -e "$ns" ]] || continue
    grep -qxF "${ns##*/}" "$NODE_DIR/netns.before" 2>/dev/null && continue
    ip netns delete "${ns##*/}" 2>/dev/null || { umount "$ns" 2>/dev/null; rm -f "$ns"; }
  done
}

node_remove_cgroups() {  # the kubelet's pod cgroups, bottom up
  local c
  for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "$c" ]] || continue
    find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ -d "$c" ]] && log "ERROR: cgroup $c is still in use"
  done
}

node_remove_rules() {  # every iptables rule and chain of kube-proxy, the CNI plugins and ours
  local save restore table
  for save in iptables-save ip6tables-save; do
    restore="${save/-save/-restore}"
    command -v "$save" >/dev/null || continue
    for table in nat filter mangle; do
      local rules
      rules="$("$save" -t "$table" 2>/dev/null)" || continue
      grep -qE 'KUBE-|CNI-|OCCURRENCE-' <<<"$rules" || continue
      grep -vE '(^:|-A |-j |-g )(KUBE-|CNI-|OCCURRENCE-)|^-A .* -j (KUBE-|CNI-|OCCURRENCE-)' <<<"$rules" \
        | "$restore" -w -T "$table" 2>/dev/null || log "ERROR: could not clean $save -t $table"
    done
  done
}

node_restore_sysctls() {
  [[ -f "$NODE_DIR/sysctl.saved" ]] || return 0
  local line
  while IFS= read -r line; do
    if [[ -n "${line#*=}" ]]; then sysctl -qw "$line" >/dev/null 2>&1 || true; fi
  done <"$NODE_DIR/sysctl.saved"
}

# The bridge is one per machine. A live node of any checkout (its processes run below a
# /tmp/occurrence-cluster.*/node/ directory) owns it: refuse. A bridge no live node owns was left
# by a run that was killed before `down` (a stopped session, a lost VM): clean it and its rules.
node_claim_bridge() {
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || return 0
  if pgrep -f "occurrence-cluster\.[A-Za-z0-9]+/node/" >/dev/null 2>&1; then
    die "bridge $NODE_BRIDGE exists and a node runs: $(pgrep -af "occurrence-cluster\.[A-Za-z0-9]+/node/" | head -2 | tr '\n' ';')"
  fi
  log "bridge $NODE_BRIDGE left by a node that no longer runs: removing it and its rules"
  ip link delete "$NODE_BRIDGE" || die "could not delete the stale bridge $NODE_BRIDGE"
  node_remove_rules
}

node_down() {
  [[ -n "${NODE_DIR:-}" ]] || return 0
  local rc=0
  node_drain_pods
  stop_components coredns kube-proxy || rc=1
  if [[ -x "$BIN/kube-proxy" ]]; then "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
  stop_components kubelet || rc=1
  node_remove_containers
  stop_components containerd || rc=1
  # shims of containers that would not die
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $NODE_DIR/" 2>/dev/null || true
  node_unmount_all
  node_remove_netns
  node_remove_cgroups
  if ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then ip link delete "$NODE_BRIDGE" || rc=1; fi
  node_remove_rules
  node_restore_sysctls
  rm -f /var/lib/cni/results/occurrence-* 2>/dev/null || true
  find /var/log/containers -maxdepth 1 -lname "$NODE_DIR/*" -delete 2>/dev/null || true
  local dir
  while read -r dir; do rmdir "$dir" 2>/dev/null || true; done <"$NODE_DIR/host-dirs.created" 2>/dev/null
  node_verify_clean || rc=1
  return $rc
}

# What `down` promises: nothing of the node is left on this machine.
node_verify_clean() {
  local left=()
  pgrep -f "$NODE_DIR/" >/dev/null 2>&1 && left+=("processes: $(pgrep -af "$NODE_DIR/" | head -3 | tr '\n' ';')")
  awk -v d="$NODE_DIR/" 'index($2, d) == 1' /proc/self/mounts | grep -q . && left+=("mounts below $NODE_DIR")
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 && left+=("bridge $NODE_BRIDGE")
  iptables-save 2>/dev/null | grep -qE 'KUBE-|CNI-|OCCURRENCE-' && left+=("iptables rules")
  if ((${#left[@]})); then
    log "ERROR: the real node left behind: ${left[*]}"
    return 1
  fi
}
