"""Fixtures of the cluster tests: ``kube_cluster`` (session-scoped: a real API server),
``namespace`` (a fresh namespace with the CRD installed) and ``start_operator`` (the
operator as a subprocess, stopped after the test). Helpers: testing/operator_support.py.

By default the control plane is built from pinned Go module sources (first time on a
machine: ~10 min, then cached in ~/.cache/occurrence-operator) and started as local
processes by hack/local-cluster.sh; it is stopped at the end of the session, also when
tests fail (try/finally in the fixture, atexit as the last resort).

Set OCCURRENCE_TEST_KUBECONFIG=/path/to/kubeconfig to run the same tests against an
existing cluster instead: then nothing is built, started or stopped.

The fixture never skips: if the binaries cannot be built or the cluster cannot start,
every test using it fails with the build/start log.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testing import localcluster
from testing.operator_support import OperatorProcess, drop_namespace, install_crd, safe_name

# The build runs once, before any test starts, so that a cold build (tens of minutes) is
# not cut by the per-test timeout (pytest-timeout applies to fixture setup too).
_build_error: str | None = None


def pytest_collection_finish(session: pytest.Session) -> None:
    global _build_error
    if session.config.option.collectonly:
        return
    if os.environ.get(localcluster.EXTERNAL_KUBECONFIG_ENV):
        return
    if not any("kube_cluster" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    capman = session.config.pluginmanager.getplugin("capturemanager")
    try:
        # let the build's progress reach the terminal (collection output is captured)
        if capman is not None:
            with capman.global_and_fixture_disabled():
                localcluster.build_binaries()
        else:
            localcluster.build_binaries()
    except localcluster.ClusterError as e:
        _build_error = str(e)


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[localcluster.KubeCluster]:
    if _build_error is not None:
        pytest.fail(
            "could not build the local control plane (hack/local-cluster.sh build):\n"
            + _build_error,
            pytrace=False,
        )
    try:
        cluster = localcluster.start()
    except localcluster.ClusterError as e:
        pytest.fail(f"could not start the local control plane:\n{e}", pytrace=False)
    # for code under test that reads the default location (kopf, kubernetes client)
    previous = os.environ.get("KUBECONFIG")
    try:
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        cluster.stop()


@pytest.fixture(scope="session")
def agd_crd(kube_cluster: localcluster.KubeCluster) -> None:
    """The AgentDeployment CRD, installed once per session."""
    install_crd(kube_cluster)


@pytest.fixture
def namespace(
    kube_cluster: localcluster.KubeCluster, agd_crd: None, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace with the CRD installed; AgentDeployments' finalizers cleared after."""
    name = f"{safe_name(request.node.name)[:40]}-{uuid.uuid4().hex[:5]}".strip("-")
    kube_cluster.create_namespace(name)
    yield name
    drop_namespace(kube_cluster, name)


@pytest.fixture
def start_operator(
    kube_cluster: localcluster.KubeCluster, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start `occurrence-operator --namespace <namespace>`; stopped (and logs shown) after."""
    started: list[OperatorProcess] = []

    def start(**kwargs: Any) -> OperatorProcess:
        proc = OperatorProcess(
            kube_cluster, [namespace], tmp_path / f"operator-{len(started)}.log", **kwargs
        )
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()
        tail = "\n".join(proc.logs().splitlines()[-40:])
        print(f"--- operator log {proc.log_path} (tail) ---\n{tail}")
