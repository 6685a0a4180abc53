"""The operator on a cluster, for the cluster tests and the benchmarks: the operator as a
subprocess, the CRD, manifests, namespaces.

The pytest fixtures built on them (`namespace`, `start_operator`) are in
tests/cluster/conftest.py; the waits are testing/waiting.py's.

The operator runs as `python -m occurrence_operator.cli --namespace NS` (what the console
script runs), with its own kubeconfig, so a test can SIGKILL it mid-drain and start it again.
Every wait is bounded.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from testing.ports import free_port
from testing.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_FILE = REPO_ROOT / "crds" / "agentdeployments.occurrence.dev.yaml"
RBAC_FILE = REPO_ROOT / "manifests" / "base" / "rbac.yaml"
CHART = REPO_ROOT / "charts" / "occurrence-operator"
PEERING_CRD_FILE = REPO_ROOT / "crds" / "kopf-peering.yaml"
RESYNC_SECONDS = 2


def install_crd(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    wait_established(cluster, "agentdeployments.occurrence.dev")


def install_peering_crds(cluster: Any) -> None:
    """Kopf's KopfPeering/ClusterKopfPeering CRDs (crds/kopf-peering.yaml)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(PEERING_CRD_FILE))
    for crd in ("kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        wait_established(cluster, crd)


def wait_established(cluster: Any, crd: str, timeout: float = 120) -> None:
    """Until the CRD's `Established` condition is True. Polled with `kubectl get` rather than
    one `kubectl wait`, which gives up on its first error (a discovery refresh, a busy API
    server); the timeout's message shows the CRD's conditions as they were."""
    def conditions() -> dict[str, str]:
        crd_object = cluster.kubectl_json("get", "crd", crd)
        return {c["type"]: c["status"]
                for c in (crd_object.get("status") or {}).get("conditions") or []}

    def described() -> str:
        try:
            return f"CRD {crd} Established (conditions: {conditions()})"
        except subprocess.CalledProcessError as exc:
            return f"CRD {crd} Established (unreadable: {exc})"

    wait_for(lambda: conditions().get("Established") == "True", timeout=timeout,
             message=described)


class OperatorProcess:
    """`occurrence-operator --namespace NS` as a child process."""

    def __init__(
        self,
        cluster: Any,
        namespaces: list[str],
        log_path: Path,
        kubeconfig: Path | None = None,
        extra_args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.extra_env = dict(env or {})
        self.namespaces = namespaces
        self.log_path = log_path
        self.kubeconfig = kubeconfig or cluster.kubeconfig
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.health_port = 0

    def start(self, timeout: float = 60) -> OperatorProcess:
        self.metrics_port, self.health_port = free_port(), free_port()
        env = self.cluster.env()
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["OCCURRENCE_OPERATOR_RESYNC_SECONDS"] = str(RESYNC_SECONDS)
        env["PYTHONPATH"] = str(REPO_ROOT / "operator")
        env.update(self.extra_env)
        args = [sys.executable, "-m", "occurrence_operator.cli"]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        args += [
            "--liveness",
            f"http://127.0.0.1:{self.health_port}/healthz",
            "--metrics-address",
            f"127.0.0.1:{self.metrics_port}",
            "--log-format",
            "json",
            *self.extra_args,
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(self._healthy, timeout=timeout, message="operator liveness endpoint")
        return self

    def _healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited early:\n{self.logs()[-4000:]}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=2
            ) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> dict[str, float]:
        """Samples of /metrics, keyed by `name{labels}`."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            text = r.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples

    def api_writes(self) -> int:
        return int(
            sum(
                v
                for k, v in self.metrics().items()
                if k.startswith("occurrence_operator_api_writes_total")
            )
        )

    def reconciles(self) -> int:
        return int(
            sum(
                v
                for k, v in self.metrics().items()
                if k.startswith("occurrence_operator_reconciles_total")
            )
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye — what a node failure looks like."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log records (other lines skipped)."""
        records = []
        for line in self.logs().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def errors(self) -> list[str]:
        """Log lines at ERROR or above (JSON log format).

        Kopf logs a request it retries at error level ("... will retry"); those are not
        errors of the operator (e.g. a 429 "storage is (re)initializing" while a freshly
        installed CRD's storage comes up) and are left out."""
        found = []
        for line in self.logs().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                if "Traceback" in line:
                    found.append(line)
                continue
            if str(record.get("severity", record.get("levelname", ""))).lower() in (
                "error",
                "critical",
            ) and "will retry" not in str(record.get("message", "")):
                found.append(line)
        return found


def agd_manifest(
    name: str, namespace: str, *, replicas: int, secret: str = "db", **spec: Any
) -> str:
    body: dict[str, Any] = {
        "apiVersion": "occurrence.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "image": "registry.example/agent:1",
            "database": {"secretRef": {"name": secret}},
            **spec,
        },
    }
    return yaml.safe_dump(body)


def create_db_secret(
    cluster: Any, namespace: str, url: str, name: str = "db", key: str = "url"
) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: base64.b64encode(url.encode()).decode()},
    }
    cluster.apply(json.dumps(secret))


def get(cluster: Any, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    done = cluster.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    if done.returncode != 0:
        if "NotFound" in done.stderr or "not found" in done.stderr:
            return None
        raise subprocess.CalledProcessError(
            done.returncode, "kubectl get", done.stdout, done.stderr
        )
    return json.loads(done.stdout)


def sts_replicas(cluster: Any, namespace: str, name: str) -> int | None:
    """spec.replicas of the StatefulSet `name` (None: there is none)."""
    sts = get(cluster, "sts", name, namespace)
    return None if sts is None else int(sts["spec"]["replicas"])


def agd_status(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    """The AgentDeployment's status ({} while it has none or does not exist)."""
    return (get(cluster, "agd", name, namespace) or {}).get("status") or {}


def scale_down_phase(cluster: Any, namespace: str, name: str) -> str | None:
    """`status.scaleDown.phase` (None: no drain on record)."""
    return (agd_status(cluster, namespace, name).get("scaleDown") or {}).get("phase")


def running_with(cluster: Any, namespace: str, name: str, replicas: int) -> bool:
    status = agd_status(cluster, namespace, name)
    return status.get("readyReplicas") == replicas and status.get("phase") == "Running"


def condition(obj: Mapping[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return None


def events(cluster: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    items = cluster.kubectl_json(
        "-n",
        namespace,
        "get",
        "events",
        "--field-selector",
        f"involvedObject.name={name},involvedObject.kind=AgentDeployment",
    )["items"]
    return sorted(items, key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["name"]))


def safe_name(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", text.lower())[:40].strip("-")


def drop_namespace(cluster: Any, name: str) -> None:
    """Delete a test namespace without waiting; clear AgentDeployment finalizers first so
    the deletion does not hang when no operator is left to remove them."""
    listed = cluster.kubectl("-n", name, "get", "agd", "-o", "name", check=False)
    for ref in listed.stdout.split():
        cluster.kubectl("-n", name, "patch", ref, "--type=merge",
                        "-p", '{"metadata":{"finalizers":null}}', check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
