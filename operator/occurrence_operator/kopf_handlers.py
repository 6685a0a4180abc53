"""Kopf registrations: Kopf hosts one worker per AgentDeployment; our informers wake it.

- each AgentDeployment has a Kopf daemon, `worker`, that runs all of its reconciles
  (`Reconciler.serve`, scheduling.py): when woken, when a requeue is due and every
  `OperatorConfig.resync_seconds`;
- one path wakes it: the informers (informer.py: one label-selected list+watch per kind and
  watched namespace, which also keeps the object cache the passes read from). A change of an
  AgentDeployment's spec or metadata, any change of an object it owns (someone scaled the
  StatefulSet by hand, the migrations Job finished, a Service was deleted) and deleted agent
  pods (a drain waits for them) call `Reconciler.trigger`; an AgentDeployment's DELETED
  event calls `Reconciler.forget`. There are no Kopf change handlers (create, update,
  resume, delete): they would only wake the worker a second time for the same change, and
  Kopf would write its diff-base annotation on every object for them. A new object's
  worker starts with a pass, as does every worker when the operator (re)starts. Nothing is
  polled: at idle a worker runs once per resync (300 s), and its pass reads the cache, not
  the API server;
- peering (`--peering`, several replicas): Kopf pauses every replica but the active one by
  stopping its watch streams and cancelling its daemons. Since nothing reconciles outside
  the daemons (no timers or retries of our own) and every write checks the daemon's
  `stopped` flag (may_act.py), a paused replica neither reconciles nor drains; the daemons
  come back, and resume any drain from `status.scaleDown`, when it is active again;
- deletion: nothing to do. The occurrences' work stays in the database, owned by their
  stable ids (`<name>-<k>`), and comes back if an AgentDeployment of the same name returns;
  owned objects go with the AgentDeployment through their ownerReferences. Kopf's finalizer
  (Kopf adds it so that a deleted object's daemon is stopped before the object goes) is
  `occurrence.dev/finalizer`; if the operator is gone for good:
  `kubectl patch agd NAME --type=merge -p '{"metadata":{"finalizers":null}}'`.

State: the CLI puts the `OperatorConfig` in Kopf's operator memo (`memo.config`); `startup`
builds the `Runtime` (API client, databases, metrics, reconciler) from it into the same memo
(`memo.runtime`). Kopf gives every resource handler a shallow copy of that memo, so all
handlers reach the one `Runtime` through their `memo` argument; there is no module state.

Handlers return nothing: the status schema is declared field by field, so handler results
(`status.<handler id>`) would be pruned anyway; the reconciler writes `.status` itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from .kube.client import Kube
from .kube.informer import Informer, OnEvent, Watched, start_informers
from .kube.metrics import OperatorMetrics, serve
from .kube.peering import ensure_peering_objects
from .kube.shared_stores import Stores
from .model import wellknown
from .reconcile.config import OperatorConfig
from .reconcile.passcontext import PassContext
from .reconcile.scheduling import Reconciler

log = logging.getLogger(__name__)

OWNED_SELECTOR = (f"{wellknown.LABEL_MANAGED_BY}={wellknown.MANAGER},"
                  f"{wellknown.LABEL_AGENTDEPLOYMENT}")
AGENT_POD_SELECTOR = (f"{wellknown.LABEL_OCC_COMPONENT}={wellknown.COMPONENT_AGENT},"
                      f"{wellknown.LABEL_AGENTDEPLOYMENT}")
OWNED_KINDS = (
    Watched("/apis/apps/v1", "statefulsets", OWNED_SELECTOR),
    Watched("/apis/batch/v1", "jobs", OWNED_SELECTOR),
    Watched("/api/v1", "services", OWNED_SELECTOR),
    Watched("/apis/policy/v1", "poddisruptionbudgets", OWNED_SELECTOR),
    Watched("/apis/networking.k8s.io/v1", "networkpolicies", OWNED_SELECTOR),
)
"""Watched and cached. Secrets are not (the operator never lists Secrets): the token
Secret and the database Secret are read by name, at most once per resync (`secrets.py`)."""
AGENT_PODS = Watched("/api/v1", "pods", AGENT_POD_SELECTOR, cached=False)
AGENT_DEPLOYMENTS = Watched(f"/apis/{wellknown.API_VERSION}", wellknown.PLURAL)


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
    informers: list[Informer] = field(default_factory=list)

    @classmethod
    def build(cls, config: OperatorConfig) -> Runtime:
        metrics = OperatorMetrics()
        kube = Kube.from_environment(metrics)
        stores = Stores()
        context = PassContext(kube, stores, metrics, config.instance,
                              config.own_service_account, allow_sqlite=not config.in_cluster,
                              resync_seconds=config.resync_seconds,
                              prometheus_urls=config.prometheus_urls,
                              metrics_allowed_from=config.metrics_allowed_from)
        one_namespace = len(informer_namespaces(config)) == 1
        return cls(config, metrics, kube, stores,
                   Reconciler(context, config.resync_seconds, one_namespace=one_namespace))

    def start_informers(self) -> None:
        """The watches that keep `kube.cache` current and wake the workers."""
        trigger = self.reconciler.trigger
        kinds: dict[Watched, OnEvent] = {kind: _wake_owner(trigger) for kind in OWNED_KINDS}
        kinds[AGENT_PODS] = _wake_owner(trigger, only="DELETED")
        kinds[AGENT_DEPLOYMENTS] = _wake_on_change(trigger, self.reconciler.forget)
        self.informers = start_informers(self.kube, kinds, informer_namespaces(self.config))

    async def close(self) -> None:
        for informer in self.informers:
            informer.stop()
        await self.reconciler.close()
        await self.stores.close()
        if self.metrics_runner is not None:
            await self.metrics_runner.cleanup()
        self.kube.close()


def informer_namespaces(config: OperatorConfig) -> tuple[str, ...]:
    """The namespaces to watch one by one; () for cluster-wide (`--all-namespaces`, or a
    `--namespace` glob, whose matches Kopf finds as namespaces come and go)."""
    if config.all_namespaces or any(c in ns for ns in config.namespaces for c in "*?[!"):
        return ()
    return config.namespaces


def _wake_owner(trigger: Any, only: str | None = None) -> OnEvent:
    """An owned object changed: wake its AgentDeployment's worker (for pods: only when one
    is gone; readiness reaches us through the StatefulSet's status)."""
    def on_event(kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        meta = obj.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(wellknown.LABEL_AGENTDEPLOYMENT)
        if owner and (only is None or kind == only):
            trigger(meta["namespace"], owner)
    return on_event


_WAKING_METADATA = ("generation", "annotations", "labels", "deletionTimestamp", "finalizers")


def _wake_on_change(trigger: Any, forget: Any) -> OnEvent:
    """An AgentDeployment's spec or metadata changed (not its status: that is our write), or
    it is gone."""
    def on_event(kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        meta = obj.get("metadata") or {}
        before = (old or {}).get("metadata") or {}
        if kind == "DELETED":
            forget(meta["namespace"], meta["name"], meta.get("uid"))
        elif old is None or any(
                meta.get(k) != before.get(k) for k in _WAKING_METADATA):
            trigger(meta["namespace"], meta["name"])
    return on_event


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
    # Named namespaces only: no scanning of the cluster's namespaces and CRDs (Kopf would
    # list and watch both cluster-wide). The AgentDeployment resource is found once at
    # startup through API discovery, so a namespaced install needs no ClusterRole at all;
    # a CRD version added later is served after a restart (a chart upgrade restarts it).
    settings.scanning.disabled = bool(informer_namespaces(config))
    if config.peering_lifetime is not None:
        settings.peering.lifetime = config.peering_lifetime
    runtime = Runtime.build(config)
    memo["runtime"] = runtime
    runtime.start_informers()
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
