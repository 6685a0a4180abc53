"""The schema migrations Job, named after a hash of what determines its effect.

The hash covers exactly: the migrations image (`migrations.image`, else `spec.image`), the
migrations command, and the database Secret reference (name and key). So:

* the same spec always yields the same Job name (the operator finds the Job it made);
* a new agent image yields a new Job (a new image may bring new migrations) and rollouts wait
  for it;
* pointing the deployment at another database Secret runs the migrations there too (harmless
  when nothing is new: migrations are recorded in `schema_migrations` and are idempotent);
* replicas, env, resources, probes, drain settings, backoffLimit and activeDeadlineSeconds do
  not change the name: they do not change what the migration does.

The Secret's *content* is not covered (the operator never reads the URL); to re-run the
migrations after changing the URL in place, point `database.secretRef` at a new Secret.
No `ttlSecondsAfterFinished`: the Job that last succeeded is kept (`status.lastMigration`
names it, its logs stay available); the operator deletes the finished ones before it once a
newer one succeeds (migrations.py).
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from ..model import naming, wellknown
from ..model.owner import Owner
from ..model.spec import AgentDeploymentSpec, ContainerSecurityContextOverride
from .pod import database_url_env, scheduling, tmp_volume, tmp_volume_mount
from .security import container_security_context, pod_security_context

HASH_LENGTH = 10
CONTAINER_NAME = "migrate"


def migrations_image(spec: AgentDeploymentSpec) -> str:
    return spec.migrations.image or spec.image


def migrations_command(spec: AgentDeploymentSpec) -> list[str]:
    return list(spec.migrations.command or wellknown.DEFAULT_MIGRATIONS_COMMAND)


def migration_inputs(spec: AgentDeploymentSpec) -> dict[str, Any]:
    """Everything the migration hash covers, as a canonical JSON-able mapping."""
    ref = spec.database.secret_ref
    return {
        "image": migrations_image(spec),
        "command": migrations_command(spec),
        "databaseSecret": {"name": ref.name, "key": ref.key},
    }


def migration_hash(spec: AgentDeploymentSpec) -> str:
    """First 10 hex digits of the SHA-256 of the canonical JSON of `migration_inputs`."""
    canonical = json.dumps(migration_inputs(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LENGTH]


def migrations_security(spec: AgentDeploymentSpec) -> ContainerSecurityContextOverride | None:
    """The agent container's overrides without its added capabilities: the migrations need
    none (a capability the agent needs, e.g. NET_BIND_SERVICE, is not the Job's to have)."""
    override = spec.container_security_context
    if override is None or override.capabilities is None:
        return override
    return override.model_copy(update={"capabilities": None})


def build_migration_job(spec: AgentDeploymentSpec, owner: Owner) -> dict[str, Any] | None:
    """The Job manifest, or None when migrations are disabled."""
    if not spec.migrations.enabled:
        return None
    name = owner.name
    digest = migration_hash(spec)
    labels = {
        **naming.common_labels(name, wellknown.COMPONENT_MIGRATIONS),
        wellknown.LABEL_MIGRATION_HASH: digest,
    }
    container = {
        "name": CONTAINER_NAME,
        "image": migrations_image(spec),
        "imagePullPolicy": spec.image_pull_policy,
        "command": migrations_command(spec),
        "env": [database_url_env(spec)],
        "securityContext": container_security_context(migrations_security(spec)),
        "volumeMounts": [tmp_volume_mount()],
    }
    resources = spec.migrations.resources or spec.resources
    if resources:
        container["resources"] = copy.deepcopy(resources)
    return {
        **owner.child("batch/v1", "Job", naming.migration_job_name(name, digest), labels),
        "spec": {
            "backoffLimit": spec.migrations.backoff_limit,
            "activeDeadlineSeconds": spec.migrations.active_deadline_seconds,
            "template": {
                "metadata": {"labels": {**(spec.migrations.pod_labels or {}), **labels}},
                "spec": {
                    "restartPolicy": "Never",
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(spec.pod_security_context),
                    **scheduling(spec),
                    "containers": [container],
                    "volumes": [tmp_volume()],
                },
            },
        },
    }
