"""Object names, labels and selectors derived from an AgentDeployment's name.

Every object the operator owns is named after the AgentDeployment, and selected by two
labels of our own group so that nothing else in the namespace can match by accident.
"""

from __future__ import annotations

import re

from occurrence_store import OccurrenceId

from . import wellknown

# The AgentDeployment name becomes a Service name (DNS-1035 label: starts with a letter) and a
# StatefulSet name. The StatefulSet controller adds `controller-revision-hash=<name>-<hash>` to
# pods, a label value capped at 63 characters, hence the documented 52-character limit.
MAX_NAME_LENGTH = 52
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_CEL_RULE = (
    f"size(self.metadata.name) <= {MAX_NAME_LENGTH} && self.metadata.name.matches('{NAME_PATTERN}')"
)
NAME_CEL_MESSAGE = (
    f"metadata.name must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters "
    "(lower-case letters, digits and '-', starting with a letter): it names the StatefulSet, "
    "its pods and the headless Service"
)

# Names of other objects referenced from the spec (Secrets, ServiceAccounts).
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

# Job names end up in the `job-name` pod label (63 characters at most).
MAX_LABEL_VALUE = 63
MIGRATE_INFIX = "-migrate-"


def validate_name(name: str) -> None:
    """Raise ValueError if `name` cannot be used for an AgentDeployment (same rule as the CRD)."""
    if len(name) > MAX_NAME_LENGTH or not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(f"invalid AgentDeployment name {name!r}: {NAME_CEL_MESSAGE}")


FENCED_ID_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?-(0|[1-9][0-9]{0,3})$"
"""`spec.fencedOccurrences` items: an occurrence id `<name>-<ordinal>`."""


def fenced_ordinals(ids: list[str] | None, name: str) -> frozenset[int]:
    """The ordinals `spec.fencedOccurrences` names; ValueError for an id that is not one of
    this AgentDeployment's. (The CRD checks the form of each id only: a CEL rule comparing
    it with `metadata.name`, which has no declared length, costs more than the budget.)"""
    ordinals = set()
    for occurrence in ids or ():
        ordinal = ordinal_of(occurrence, name)
        if ordinal is None:
            raise ValueError(f"spec.fencedOccurrences: {occurrence!r} is not an occurrence of "
                             f"{name!r} ({name}-<ordinal>)")
        ordinals.add(ordinal)
    return frozenset(ordinals)


def statefulset_name(name: str) -> str:
    return name


def service_name(name: str) -> str:
    """The headless Service that gives each occurrence a stable DNS name."""
    return name


def pdb_name(name: str) -> str:
    return name


def network_policy_name(name: str) -> str:
    return name


def token_secret_name(name: str) -> str:
    """The Secret holding the agent API's bearer tokens (keys ``work`` and ``admin``)."""
    return f"{name}-agent-token"


def occurrence_id(name: str, ordinal: int) -> OccurrenceId:
    """Occurrence id of ordinal `k`: the pod name `<name>-<k>`, stable across restarts."""
    if ordinal < 0:
        raise ValueError(f"ordinal must be >= 0, got {ordinal}")
    return OccurrenceId(f"{name}-{ordinal}")


def ordinal_of(occurrence: str, name: str | None = None) -> int | None:
    """The inverse of `occurrence_id`: the ordinal of `<name>-<k>`, or None when `occurrence`
    is not of that form (or, with `name`, not one of that AgentDeployment's)."""
    prefix, dash, tail = occurrence.rpartition("-")
    if not dash or not tail.isdigit() or not tail.isascii() or (name is not None
                                                              and prefix != name):
        return None
    return int(tail)


def migration_job_name(name: str, migration_hash: str) -> str:
    """`<name>-migrate-<hash>`, the name prefix cut so the whole fits in a label value.

    Cutting can only make two AgentDeployments share a Job name when their names share the
    prefix *and* their migration hashes are equal, i.e. they run the same migrations against
    the same database Secret: the same operation.
    """
    room = MAX_LABEL_VALUE - len(MIGRATE_INFIX) - len(migration_hash)
    prefix = name[:room].rstrip("-")
    return f"{prefix}{MIGRATE_INFIX}{migration_hash}"


def selector_labels(name: str, component: str = wellknown.COMPONENT_AGENT) -> dict[str, str]:
    """Labels selecting one AgentDeployment's pods of one component (immutable in a StatefulSet)."""
    return {wellknown.LABEL_AGENTDEPLOYMENT: name, wellknown.LABEL_OCC_COMPONENT: component}


def common_labels(name: str, component: str = wellknown.COMPONENT_AGENT) -> dict[str, str]:
    """All labels stamped on owned objects and their pod templates."""
    return {
        wellknown.LABEL_NAME: wellknown.APP_NAME,
        wellknown.LABEL_INSTANCE: name,
        wellknown.LABEL_COMPONENT: component,
        wellknown.LABEL_MANAGED_BY: wellknown.MANAGER,
        **selector_labels(name, component),
    }


def selector_string(name: str, component: str = wellknown.COMPONENT_AGENT) -> str:
    """`status.selector` for the scale subresource: the agent pods' selector, serialized
    (another `component`: that one's, e.g. the migrations Jobs').

    Same form as `metav1.FormatLabelSelector` for matchLabels (keys sorted), which is what
    `kubectl scale` and the HPA parse.
    """
    labels = selector_labels(name, component)
    return ",".join(f"{key}={labels[key]}" for key in sorted(labels))
