"""Kopf registrations: every trigger funnels into one idempotent reconcile.

- each AgentDeployment has a Kopf daemon, `worker`, that runs all of its reconciles
  (`Reconciler.serve`, scheduling.py): when woken, when a requeue is due and every
  `OperatorConfig.resync_seconds`;
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

State: the CLI puts the `OperatorConfig` in Kopf's operator memo (`memo.config`); `startup`
builds the `Runtime` (API client, databases, metrics, reconciler) from it into the same memo
(`memo.runtime`). Kopf gives every resource handler a shallow copy of that memo, so all
handlers reach the one `Runtime` through their `memo` argument; there is no module state.

Handlers return nothing: the status schema is declared field by field, so handler results
(`status.<handler id>`) would be pruned anyway; the reconciler writes `.status` itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from . import wellknown
from .config import OperatorConfig
from .kube import Kube
from .metrics import OperatorMetrics, serve
from .peering import ensure_peering_objects
from .reconcile import PassContext
from .scheduling import Reconciler
from .stores import Stores

log = logging.getLogger(__name__)

_OWNED: dict[str, Any] = {wellknown.LABEL_MANAGED_BY: wellknown.MANAGER,
                          wellknown.LABEL_AGENTDEPLOYMENT: kopf.PRESENT}
_AGENT_PODS: dict[str, Any] = {
    wellknown.LABEL_OCC_COMPONENT: wellknown.COMPONENT_AGENT,
    wellknown.LABEL_AGENTDEPLOYMENT: kopf.PRESENT,
}


@dataclass
class Runtime:
    """The objects every handler shares, built once at startup from the config."""

    config: OperatorConfig
    metrics: OperatorMetrics
    kube: Kube
    stores: Stores
    reconciler: Reconciler
    metrics_runner: Any = None
    """The /metrics HTTP server (aiohttp runner), if enabled."""

    @classmethod
    def build(cls, config: OperatorConfig) -> Runtime:
        metrics = OperatorMetrics()
        kube = Kube.from_environment(metrics)
        stores = Stores()
        context = PassContext(kube, stores, metrics, config.instance,
                              config.own_service_account)
        return cls(config, metrics, kube, stores, Reconciler(context, config.resync_seconds))

    async def close(self) -> None:
        await self.reconciler.close()
        await self.stores.close()
        if self.metrics_runner is not None:
            await self.metrics_runner.cleanup()
        self.kube.close()


def runtime_of(memo: Any) -> Runtime:
    """The `Runtime` in a Kopf memo (operator or resource memo)."""
    runtime: Runtime = memo["runtime"]
    return runtime


def reconciler_of(memo: Any) -> Reconciler:
    return runtime_of(memo).reconciler


def _namespaced(namespace: str | None) -> str:
    """Every object the handlers watch is namespaced (Kopf types it optional)."""
    assert namespace is not None
    return namespace


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    config: OperatorConfig = memo["config"]
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=wellknown.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=wellknown.GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{wellknown.GROUP}/finalizer"
    settings.posting.enabled = False  # our own events (events.py), one per milestone
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    if config.peering_lifetime is not None:
        settings.peering.lifetime = config.peering_lifetime
    runtime = Runtime.build(config)
    memo["runtime"] = runtime
    if not settings.peering.standalone and settings.peering.mandatory:
        await ensure_peering_objects(
            runtime.kube, settings.peering.name, config.namespaces, settings.peering.clusterwide
        )
    endpoint = config.metrics_endpoint
    if endpoint is not None:
        runtime.metrics_runner = await serve(runtime.metrics, *endpoint)
        log.info("metrics on http://%s/metrics", config.metrics_address)


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    runtime = memo.pop("runtime", None)
    if runtime is not None:
        await runtime.close()


@kopf.daemon(
    wellknown.GROUP,
    wellknown.VERSION,
    wellknown.PLURAL,
    cancellation_timeout=30.0,  # cancel at once when stopped; wait this long for the exit
)
async def worker(
    name: str, namespace: str | None, stopped: kopf.DaemonStopped, memo: Any, **_: Any
) -> None:
    await reconciler_of(memo).serve(_namespaced(namespace), name, stopped)


@kopf.on.resume(wellknown.GROUP, wellknown.VERSION, wellknown.PLURAL)
@kopf.on.create(wellknown.GROUP, wellknown.VERSION, wellknown.PLURAL)
@kopf.on.update(wellknown.GROUP, wellknown.VERSION, wellknown.PLURAL)
async def changed(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    reconciler_of(memo).trigger(_namespaced(namespace), name)


@kopf.on.delete(wellknown.GROUP, wellknown.VERSION, wellknown.PLURAL, optional=True)
async def deleted(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    reconciler_of(memo).forget(_namespaced(namespace), name)


@kopf.on.event("apps", "v1", "statefulsets", labels=_OWNED)
@kopf.on.event("batch", "v1", "jobs", labels=_OWNED)
async def owned_changed(
    labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any
) -> None:
    reconciler_of(memo).trigger(_namespaced(namespace), labels[wellknown.LABEL_AGENTDEPLOYMENT])


@kopf.on.event("v1", "pods", labels=_AGENT_PODS)
async def agent_pod_changed(
    event: kopf.RawEvent, labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any
) -> None:
    # Only disappearances matter (a drain waits for departing pods); readiness changes
    # reach us through the StatefulSet's status.
    if event.get("type") == "DELETED":
        reconciler_of(memo).trigger(_namespaced(namespace), labels[wellknown.LABEL_AGENTDEPLOYMENT])
