"""The Kubernetes side of a rollout: `.status.rollout` on the AgentDeployment, its Events."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from ..agd_object import AgentDeploymentObject
from ..events import EventType
from ..status import RolloutStatus

log = logging.getLogger(__name__)


def read_rollout(wire: Any) -> RolloutStatus | None:
    """`.status.rollout` as persisted, or None (absent or unreadable: logged)."""
    if not wire:
        return None
    try:
        return RolloutStatus.model_validate(wire)
    except ValidationError:
        log.warning("ignoring unreadable status.rollout: %s", wire)
        return None


class KubeRolloutPort:
    """`RolloutPort` on the API server, for one pass over one AgentDeployment."""

    def __init__(self, agd: AgentDeploymentObject) -> None:
        self.agd = agd

    async def persist(self, record: RolloutStatus | None) -> None:
        wire = None if record is None else record.to_wire()
        await self.agd.write_status({"rollout": wire})
        self.agd.status["rollout"] = wire

    def queue_event(self, type_: EventType, reason: str, message: str) -> None:
        self.agd.event(type_, reason, message)
