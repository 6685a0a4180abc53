"""The agent API's bearer tokens: one Secret per AgentDeployment, made once, never patched.

The operator creates ``<name>-agent-token`` (keys ``work`` and ``admin``, 256 random bits
each) when it is missing and leaves it alone afterwards: deleting it is how a user rotates
the tokens (the next reconcile makes a new one; the kubelet updates the mounted files; the
agents re-read them). The Secret is owned by the AgentDeployment, so it goes with it.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from ..model import naming, wellknown
from ..model.owner import Owner

TOKEN_BYTES = 32


def new_tokens() -> dict[str, str]:
    """Fresh random tokens, one per scope."""
    return {key: secrets.token_urlsafe(TOKEN_BYTES) for key in wellknown.TOKEN_KEYS}


def build_token_secret(owner: Owner, tokens: dict[str, str]) -> dict[str, Any]:
    """The Secret manifest holding ``tokens`` (see :func:`new_tokens`)."""
    name = owner.name
    return {
        **owner.child("v1", "Secret", naming.token_secret_name(name)),
        "type": "Opaque",
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in tokens.items()},
    }
