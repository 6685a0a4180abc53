"""Kopf registrations: every trigger funnels into one idempotent reconcile.

- each AgentDeployment has a Kopf daemon, `worker`, that runs all of its reconciles
  (`Reconciler.serve`): when woken, when a requeue is due and every `RESYNC_SECONDS`;
- AgentDeployment resume/create/update, events of owned StatefulSets and Jobs (someone
  scaled the StatefulSet by hand, the migrations Job finished) and deleted agent pods (a
  drain waits for them) only wake that worker;
- peering (`--peering`, several replicas): Kopf pauses every replica but the active one by
  stopping its watch streams and cancelling its daemons. Since nothing reconciles outside
  the daemons (no timers or retries of our own) and every write checks the daemon's
  `stopped` flag (gate.py), a paused replica neither reconciles nor drains; the daemons
  come back, and resume any drain from `status.scaleDown`, when it is active again;
- deletion: nothing to do. The occurrences' work stays in the database, owned by their
  stable ids (`<name>-<k>`), and comes back if an AgentDeployment of the same name returns;
  owned objects go with the AgentDeployment through their ownerReferences. Kopf's finalizer
  (needed to stop the timer) is `occurrence.dev/finalizer`; if the operator is gone for
  good: `kubectl patch agd NAME --type=merge -p '{"metadata":{"finalizers":null}}'`.

Handlers return nothing: the status schema is declared field by field, so handler results
(`status.<handler id>`) would be pruned anyway; the reconciler writes `.status` itself.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import kopf

from . import api
from .kube import Kube
from .metrics import Metrics, serve
from .peering import ensure_peering_objects
from .reconcile import PassContext
from .scheduling import Reconciler
from .stores import Stores

log = logging.getLogger(__name__)

RESYNC_SECONDS = float(os.environ.get("OCCURRENCE_OPERATOR_RESYNC_SECONDS", "10"))
PEERING_LIFETIME_ENV = "OCCURRENCE_OPERATOR_PEERING_LIFETIME"
"""Seconds after which a silent peer counts as dead (Kopf's default: 60). A standby replica
takes over that long after the active one died without saying goodbye (SIGKILL, node loss)."""
NAMESPACES_ENV = "OCCURRENCE_OPERATOR_NAMESPACES"
"""Watched namespaces, comma-separated (set by the CLI; for the KopfPeering objects)."""
METRICS_ADDRESS_ENV = "OCCURRENCE_OPERATOR_METRICS_ADDRESS"
"""host:port of the /metrics endpoint (set by the CLI; empty disables it)."""

_OWNED = {api.LABEL_MANAGED_BY: api.MANAGER, api.LABEL_AGENTDEPLOYMENT: kopf.PRESENT}
_AGENT_PODS = {
    api.LABEL_OCC_COMPONENT: api.COMPONENT_AGENT,
    api.LABEL_AGENTDEPLOYMENT: kopf.PRESENT,
}

_state: dict[str, Any] = {}


def reconciler() -> Reconciler:
    return _state["reconciler"]


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=api.GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    settings.posting.enabled = False  # our own events (events.py), one per milestone
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    lifetime = os.environ.get(PEERING_LIFETIME_ENV, "")
    if lifetime:
        settings.peering.lifetime = int(lifetime)
    metrics = Metrics()
    kube = Kube.from_environment(metrics)
    _state["metrics"] = metrics
    _state["kube"] = kube
    _state["stores"] = Stores()
    instance = os.environ.get("POD_NAME") or socket.gethostname()
    _state["reconciler"] = Reconciler(
        PassContext(kube, _state["stores"], metrics, instance), RESYNC_SECONDS
    )
    if not settings.peering.standalone and settings.peering.mandatory:
        namespaces = [n for n in os.environ.get(NAMESPACES_ENV, "").split(",") if n]
        await ensure_peering_objects(
            kube, settings.peering.name, namespaces, settings.peering.clusterwide
        )
    address = os.environ.get(METRICS_ADDRESS_ENV, "")
    if address:
        host, _, port = address.rpartition(":")
        _state["metrics_runner"] = await serve(metrics, host or "0.0.0.0", int(port))
        log.info("metrics on http://%s/metrics", address)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if "reconciler" in _state:
        await _state["reconciler"].close()
    if "stores" in _state:
        await _state["stores"].close()
    runner = _state.pop("metrics_runner", None)
    if runner is not None:
        await runner.cleanup()
    if "kube" in _state:
        _state["kube"].close()
    _state.clear()


@kopf.daemon(
    api.GROUP,
    api.VERSION,
    api.PLURAL,
    cancellation_timeout=30.0,  # cancel at once when stopped; wait this long for the exit
)
async def worker(name: str, namespace: str, stopped: kopf.DaemonStopped, **_: Any) -> None:
    await reconciler().serve(namespace, name, stopped)


@kopf.on.resume(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.create(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.update(api.GROUP, api.VERSION, api.PLURAL)
async def changed(name: str, namespace: str, **_: Any) -> None:
    reconciler().trigger(namespace, name)


@kopf.on.delete(api.GROUP, api.VERSION, api.PLURAL, optional=True)
async def deleted(name: str, namespace: str, **_: Any) -> None:
    reconciler().forget(namespace, name)


@kopf.on.event("apps", "v1", "statefulsets", labels=_OWNED)
@kopf.on.event("batch", "v1", "jobs", labels=_OWNED)
async def owned_changed(labels: dict[str, str], namespace: str, **_: Any) -> None:
    reconciler().trigger(namespace, labels[api.LABEL_AGENTDEPLOYMENT])


@kopf.on.event("v1", "pods", labels=_AGENT_PODS)
async def agent_pod_changed(
    event: dict[str, Any], labels: dict[str, str], namespace: str, **_: Any
) -> None:
    # Only disappearances matter (a drain waits for departing pods); readiness changes
    # reach us through the StatefulSet's status.
    if event.get("type") == "DELETED":
        reconciler().trigger(namespace, labels[api.LABEL_AGENTDEPLOYMENT])
