"""Everything one AgentDeployment renders to, in one call (what the handlers apply)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..model import naming
from ..model.owner import Owner
from ..model.spec import AgentDeploymentSpec
from .job import build_migration_job, migration_hash
from .network_policy import build_network_policy
from .pdb import build_pdb
from .service import build_service
from .statefulset import build_statefulset


@dataclass(frozen=True)
class Rendered:
    """The owned objects and the values the status reports about them."""

    statefulset: dict[str, Any]
    service: dict[str, Any]
    pdb: dict[str, Any]
    migration_job: dict[str, Any] | None
    migration_hash: str | None
    selector: str
    network_policy: dict[str, Any] | None = None

    def objects(self) -> list[dict[str, Any]]:
        """Manifests in apply order: the Job first (rollouts wait for it), then the rest."""
        ordered = [self.migration_job, self.service, self.pdb, self.network_policy,
                   self.statefulset]
        return [obj for obj in ordered if obj is not None]


def render(spec: AgentDeploymentSpec, owner: Owner, replicas: int,
           platform_peers: Sequence[Mapping[str, Any]] = ()) -> Rendered:
    """Render all objects; `replicas` is the StatefulSet size the drain planner allows now;
    `platform_peers` are admitted to every agent's port (the operator's
    `metrics_allowed_from`)."""
    naming.validate_name(owner.name)
    return Rendered(
        statefulset=build_statefulset(spec, owner, replicas),
        service=build_service(spec, owner),
        pdb=build_pdb(owner, spec),
        migration_job=build_migration_job(spec, owner),
        migration_hash=migration_hash(spec) if spec.migrations.enabled else None,
        selector=naming.selector_string(owner.name),
        network_policy=build_network_policy(spec, owner, platform_peers),
    )
