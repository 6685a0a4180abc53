"""The headless Service: stable DNS names `<name>-<k>.<name>` for each ready occurrence."""

from __future__ import annotations

from typing import Any

from ..model import naming
from ..model.owner import Owner
from ..model.spec import AgentDeploymentSpec
from .pod import PORT_NAME


def build_service(spec: AgentDeploymentSpec, owner: Owner) -> dict[str, Any]:
    """Headless (`clusterIP: None`), governing Service of the StatefulSet.

    Not-ready addresses are not published: a draining occurrence fails readiness and so
    drops out of DNS, which is how clients stop reaching it.
    """
    name = owner.name
    return {
        **owner.child("v1", "Service", naming.service_name(name)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": False,
            "selector": naming.selector_labels(name),
            "ports": [
                {"name": PORT_NAME, "port": spec.port, "targetPort": PORT_NAME, "protocol": "TCP"}
            ],
        },
    }
