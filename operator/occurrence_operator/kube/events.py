"""Kubernetes Events on the AgentDeployment (core/v1), one per milestone."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from ..model import wellknown
from ..model.timeutil import format_time, utcnow
from .client import ApiError, Kube, collection_path

log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]


def build_event(
    body: Mapping[str, Any], type_: EventType, reason: str, message: str, *, instance: str
) -> dict[str, Any]:
    """The Event; `instance` is its `reportingInstance` (this operator replica's name)."""
    meta = body["metadata"]
    now = format_time(utcnow())
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": wellknown.API_VERSION,
            "kind": wellknown.KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": wellknown.MANAGER},
        "reportingComponent": wellknown.MANAGER,
        "reportingInstance": instance[:128],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


async def post(
    kube: Kube,
    body: Mapping[str, Any],
    type_: EventType,
    reason: str,
    message: str,
    *,
    instance: str,
) -> None:
    """Post an event; failures are logged, never raised (events are best effort)."""
    level = logging.WARNING if type_ == "Warning" else logging.INFO
    log.log(level, "%s: %s", reason, message, extra={"reason": reason})
    try:
        await kube.create(
            collection_path("v1", "Event", body["metadata"]["namespace"]),
            build_event(body, type_, reason, message, instance=instance),
        )
    except ApiError as e:
        log.warning("could not post event %s: %s", reason, e)
