"""The local Kubernetes control plane (hack/local-cluster.sh) seen from Python.

Used by the session-scoped ``kube_cluster`` fixture (tests/cluster/conftest.py), by
the cluster tests and by the benchmarks. Two modes:

- default: build (if needed) and start etcd, kube-apiserver, kube-controller-manager,
  kube-scheduler and kwok as local processes via ``hack/local-cluster.sh``; stop them at
  the end of the session (also after a failed or interrupted run: try/finally + atexit).
- ``OCCURRENCE_TEST_KUBECONFIG=/path/to/kubeconfig``: use that existing cluster, start
  nothing, stop nothing.

Pods on kwok nodes do not run their containers: kwok drives their status through the
Stages in hack/kwok/. A test that needs what a pod's command really does runs that exact
command and environment as a local process (``run_pod_command_locally``).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testing.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "hack" / "local-cluster.sh"
EXTERNAL_KUBECONFIG_ENV = "OCCURRENCE_TEST_KUBECONFIG"



class KubectlFailed(subprocess.CalledProcessError):
    """A kubectl that exited non-zero; its message carries kubectl's stderr (what a test
    report shows), which `CalledProcessError`'s leaves out."""

    def __str__(self) -> str:
        return f"{super().__str__()} stderr: {(self.stderr or '').strip()[-2000:]}"

class ClusterError(RuntimeError):
    """The control plane could not be built or started (message carries the logs)."""


def cluster_dir() -> Path:
    # relative to the checkout, as for hack/local-cluster.sh (which runs there)
    return (REPO_ROOT / os.environ.get("OCCURRENCE_CLUSTER_DIR", ".cluster")).resolve()


def run_script(
    command: str, *, timeout: float, stream: bool = False, env: Mapping[str, str] | None = None
) -> str:
    """Run ``hack/local-cluster.sh COMMAND``; raise ClusterError with its output on failure.

    stream=True lets the script's progress go straight to the terminal (builds take long)
    while still keeping a copy for the error message.
    """
    full_env = {**os.environ, **(env or {})}
    if stream:
        proc = subprocess.Popen(
            ["bash", str(SCRIPT), command],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
        )
        lines: list[str] = []
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        for line in proc.stdout:
            lines.append(line)
            print(line, end="", flush=True)
            if time.monotonic() > deadline:
                proc.kill()
                break
        rc = proc.wait()
        output = "".join(lines)
    else:
        try:
            done = subprocess.run(
                ["bash", str(SCRIPT), command],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=full_env,
            )
        except subprocess.TimeoutExpired as e:
            raise ClusterError(
                f"hack/local-cluster.sh {command} timed out after {timeout}s\n"
                f"{e.stdout or ''}{e.stderr or ''}"
            ) from e
        rc, output = done.returncode, done.stdout + done.stderr
    if rc != 0:
        raise ClusterError(
            f"hack/local-cluster.sh {command} failed (exit {rc}):\n{output}\n"
            f"{_component_logs() if command == 'up' else ''}"
        )
    return output


def _component_logs(lines: int = 30) -> str:
    logs = cluster_dir() / "logs"
    out = []
    for log in sorted(logs.glob("*.log")) if logs.is_dir() else []:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {log} (last {lines} lines) ---\n" + "\n".join(tail))
    return "\n".join(out)


def build_binaries(timeout: float = 60 * 60) -> None:
    """Build or reuse the pinned binaries (a cold build takes ~10 min on 2 cores)."""
    run_script("build", timeout=timeout, stream=True)


@dataclass
class KubeCluster:
    """A running cluster: the admin kubeconfig and the binaries next to it."""

    kubeconfig: Path
    bin_dir: Path | None  # None for an external cluster without .cluster/bin
    external: bool = False
    _started_by_us: bool = field(default=False, repr=False)

    @property
    def kubectl_path(self) -> str:
        if self.bin_dir is not None and (self.bin_dir / "kubectl").exists():
            return str(self.bin_dir / "kubectl")
        found = shutil.which("kubectl")
        if not found:
            raise ClusterError("no kubectl: neither .cluster/bin/kubectl nor one on PATH")
        return found

    @property
    def helm_path(self) -> str:
        if self.bin_dir is not None and (self.bin_dir / "helm").exists():
            return str(self.bin_dir / "helm")
        found = shutil.which("helm")
        if not found:
            raise ClusterError("no helm: neither .cluster/bin/helm nor one on PATH")
        return found

    def env(self) -> dict[str, str]:
        """Environment for subprocesses talking to this cluster (kubectl, helm, the operator)."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        if self.bin_dir is not None:
            env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        no_proxy = "127.0.0.1,localhost"
        env["NO_PROXY"] = env["no_proxy"] = ",".join(
            p for p in (env.get("NO_PROXY"), no_proxy) if p
        )
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raise with stderr when check and it fails."""
        cmd = [self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args]
        done = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, env=self.env()
        )
        if check and done.returncode != 0:
            raise KubectlFailed(done.returncode, cmd, output=done.stdout, stderr=done.stderr)
        return done

    def kubectl_json(self, *args: str, timeout: float = 60) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json", timeout=timeout).stdout)

    def get_raw(self, path: str, timeout: float = 60) -> Any:
        """GET an API path (``kubectl get --raw``) and decode its JSON."""
        return json.loads(self.kubectl("get", "--raw", path, timeout=timeout).stdout)

    def apply(self, manifest: str, *args: str) -> str:
        return self.kubectl("apply", "-f", "-", *args, input=manifest).stdout

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        cmd = [self.helm_path, "--kubeconfig", str(self.kubeconfig), *args]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=self.env(), check=True
        )

    def create_namespace(self, name: str, timeout: float = 60) -> str:
        """Create a namespace and wait for its ``default`` ServiceAccount.

        Until the ServiceAccount controller has created it, the ServiceAccount admission
        plugin rejects pods in the namespace.
        """
        self.kubectl("create", "namespace", name)
        wait_for(
            lambda: (
                self.kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode
                == 0
            ),
            timeout=timeout,
            interval=0.5,
            retry_on=(Exception,),
            message=f"ServiceAccount {name}/default",
        )
        return name

    def api_client(self) -> Any:
        """An official ``kubernetes`` Python client ApiClient for this cluster."""
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(
            config_file=str(self.kubeconfig), client_configuration=configuration
        )
        return client.ApiClient(configuration)

    def stop(self) -> None:
        """Stop the cluster if this process started it (idempotent)."""
        if self._started_by_us:
            self._started_by_us = False
            run_script("down", timeout=120)


def start(*, up_timeout: float = 60 * 60) -> KubeCluster:
    """Return a running cluster: the external one, the already-running local one, or a
    freshly started local one (stopped again at interpreter exit at the latest)."""
    external = os.environ.get(EXTERNAL_KUBECONFIG_ENV)
    if external:
        path = Path(external).expanduser().resolve()
        if not path.is_file():
            raise ClusterError(f"{EXTERNAL_KUBECONFIG_ENV}={external}: no such file")
        local_bin = cluster_dir() / "bin"
        cluster = KubeCluster(
            kubeconfig=path, bin_dir=local_bin if local_bin.is_dir() else None, external=True
        )
        cluster.kubectl("get", "--raw", "/readyz")  # fail loudly if it is unreachable
        return cluster

    directory = cluster_dir()
    already_running = (
        subprocess.run(
            ["bash", str(SCRIPT), "status"],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        ).returncode
        == 0
    )
    cluster = KubeCluster(
        kubeconfig=directory / "kubeconfig",
        bin_dir=directory / "bin",
        _started_by_us=not already_running,
    )
    if already_running:
        if not _left_by_dead_session(directory):
            # someone ran `make cluster-up` (or another live session did): use it, leave it
            return cluster
        # a killed test session left it behind: start afresh and own it
        run_script("down", timeout=120)
        cluster._started_by_us = True
    atexit.register(_stop_quietly, cluster)
    _stop_on_sigterm(cluster)
    try:
        run_script("up", timeout=up_timeout, env={"OCCURRENCE_CLUSTER_OWNER_PID": str(os.getpid())})
    except BaseException:
        _stop_quietly(cluster)
        raise
    return cluster


def _left_by_dead_session(directory: Path) -> bool:
    try:
        owner = int((directory / "owner.pid").read_text().strip())
    except (OSError, ValueError):
        return False  # started by hand
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _stop_on_sigterm(cluster: KubeCluster) -> None:
    """atexit does not run when the process dies of SIGTERM (a CI job timeout, `kill`):
    stop the cluster first, then die of the signal as before."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def handler(signum: int, frame: object) -> None:
        _stop_quietly(cluster)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, handler)


def _stop_quietly(cluster: KubeCluster) -> None:
    try:
        cluster.stop()
    except Exception as e:  # at exit there is nobody left to raise to
        print(f"local cluster teardown failed: {e}", flush=True)


# ---------------------------------------------------------------------------------------
# Pods on kwok nodes do not run their containers: run a container's command locally.
# ---------------------------------------------------------------------------------------


def container_command(
    pod_spec: Mapping[str, Any], container: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The argv (command + args) and literal env of a container in a pod spec.

    Only literal ``value`` env entries are taken; ``valueFrom`` entries must be supplied
    by the caller (they reference Secrets/ConfigMaps the test knows).
    """
    containers = pod_spec.get("containers") or []
    chosen = next((c for c in containers if container is None or c.get("name") == container), None)
    if chosen is None:
        raise KeyError(f"no container {container!r} in pod spec")
    argv = [*(chosen.get("command") or []), *(chosen.get("args") or [])]
    if not argv:
        raise ValueError(
            f"container {chosen.get('name')!r} has no command/args: the image entrypoint "
            "would run, which cannot be reproduced locally"
        )
    env = {
        e["name"]: str(e.get("value", "")) for e in chosen.get("env") or [] if "valueFrom" not in e
    }
    return argv, env


def run_pod_command_locally(
    pod_spec: Mapping[str, Any],
    *,
    container: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    argv_override: Sequence[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a container's exact command and environment from a rendered manifest locally."""
    argv, env = container_command(pod_spec, container)
    full_env = {**os.environ, **env, **(extra_env or {})}
    return subprocess.run(
        list(argv_override or argv),
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
