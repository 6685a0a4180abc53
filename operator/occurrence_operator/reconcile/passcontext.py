"""What every reconcile pass shares: the API, the open databases, the metrics, who we are,
and the memory kept between passes (the autoscaler's, the retention runs')."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from occurrence_store import AgentId

from .. import autoscaling
from ..kube.client import Kube
from ..kube.metrics import OperatorMetrics
from ..kube.shared_stores import Stores


@dataclass(frozen=True)
class PassContext:
    """What every pass uses: the API, the open databases, the metrics, who we are."""

    kube: Kube
    stores: Stores
    metrics: OperatorMetrics
    instance: str
    """This replica's name, the `reportingInstance` of its Events."""
    own_service_account: tuple[str, str] | None = None
    retention_runs: dict[AgentId, float] = field(default_factory=dict)
    autoscalers: dict[str, autoscaling.Memory] = field(default_factory=dict)
    """The autoscaler's memory per AgentDeployment uid."""
    prometheus_urls: tuple[str, ...] = ()
    """Base URLs a Prometheus rollout gate may query (`OperatorConfig.prometheus_urls`)."""
    metrics_allowed_from: tuple[dict[str, Any], ...] = ()
    """Peers every agent NetworkPolicy admits (`OperatorConfig.metrics_allowed_from`)."""
    allow_sqlite: bool = True
    """False in a pod: a tenant's sqlite:/// URL would be a file in the operator's pod."""
    resync_seconds: float | None = None
    """How old a read of a Secret may be (Secrets are read by name, never watched or
    listed): one resync, so a changed database Secret or a deleted token Secret is seen
    within one (the database Secret at once when the database fails)."""
