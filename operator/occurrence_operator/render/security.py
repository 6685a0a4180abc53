"""Security contexts that pass the `restricted` Pod Security Standard, with user overrides.

Overrides are merged key by key over the defaults (nested objects merged, lists replaced), so
a user who only changes `runAsUser` keeps every other default. The CRD and the spec model
reject overrides that would break the restricted standard.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..model.spec import ContainerSecurityContextOverride, PodSecurityContextOverride

DEFAULT_UID = 10001
DEFAULT_GID = 10001

DEFAULT_POD_SECURITY_CONTEXT: Mapping[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": DEFAULT_UID,
    "runAsGroup": DEFAULT_GID,
    "seccompProfile": {"type": "RuntimeDefault"},
}

DEFAULT_CONTAINER_SECURITY_CONTEXT: Mapping[str, Any] = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`: mappings merge recursively, anything else is replaced."""
    merged: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _seccomp_fixup(merged: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    # A seccompProfile override is a whole profile: merging `{type: RuntimeDefault}` over a
    # Localhost default (or the reverse) must not keep a stale localhostProfile.
    if "seccompProfile" in override:
        merged["seccompProfile"] = dict(override["seccompProfile"])
    return merged


def pod_security_context(override: PodSecurityContextOverride | None) -> dict[str, Any]:
    base = deep_merge(DEFAULT_POD_SECURITY_CONTEXT, {})
    if override is None:
        return base
    wire = override.to_wire()
    if wire.pop("userFromPlatform", False):  # ours, not a core/v1 field
        base.pop("runAsUser")
        base.pop("runAsGroup")
    return _seccomp_fixup(deep_merge(base, wire), wire)


def container_security_context(
    override: ContainerSecurityContextOverride | None,
) -> dict[str, Any]:
    base = deep_merge(DEFAULT_CONTAINER_SECURITY_CONTEXT, {})
    if override is None:
        return base
    wire = override.to_wire()
    return _seccomp_fixup(deep_merge(base, wire), wire)
