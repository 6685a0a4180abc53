"""Sample AgentDeployments shared by the operator unit tests (not a test module)."""

from __future__ import annotations

import copy
from typing import Any

from occurrence_operator.model.owner import Owner
from occurrence_operator.model.spec import AgentDeploymentSpec

OWNER = Owner(name="thinker", namespace="agents", uid="0b5a4a5e-8c3f-4f6e-9a51-3d2f1c0e7b11")

MINIMAL: dict[str, Any] = {
    "image": "ghcr.io/example/agent:1.0.0",
    "database": {"secretRef": {"name": "agent-db"}},
}

FULL: dict[str, Any] = {
    "replicas": 5,
    "image": "ghcr.io/example/agent:2.3.1",
    "imagePullPolicy": "Always",
    "imagePullSecrets": [{"name": "registry-creds"}],
    "command": ["python", "-m", "my_agent"],
    "args": ["--log-level", "info"],
    "env": [
        {"name": "LOG_FORMAT", "value": "json"},
        {"name": "INSTANCE_LABEL", "value": "$(AGENT_OCCURRENCE_ID)"},
        {
            "name": "OPENAI_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "llm", "key": "api-key"}},
        },
    ],
    "envFrom": [{"configMapRef": {"name": "agent-settings"}}],
    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {
                            "matchLabels": {"occurrence.dev/agentdeployment": "thinker"}
                        },
                    },
                }
            ]
        }
    },
    "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
         "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": {"occurrence.dev/agentdeployment": "thinker"}}},
    ],
    "priorityClassName": "agents-high",
    "podMetadata": {"labels": {"team": "research", "app.kubernetes.io/name": "mine"},
                    "annotations": {"sidecar.istio.io/inject": "false"}},
    "volumes": [{"name": "prompts", "configMap": {"name": "thinker-prompts"}},
                {"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}}],
    "volumeMounts": [{"name": "prompts", "mountPath": "/etc/prompts", "readOnly": True},
                     {"name": "cache", "mountPath": "/var/cache/agent"}],
    "podDisruptionBudget": {"maxUnavailable": "25%"},
    "serviceAccountName": "thinker-agent",
    "podSecurityContext": {"runAsUser": 2000, "fsGroup": 2000},
    "containerSecurityContext": {
        "readOnlyRootFilesystem": False,
        "capabilities": {"add": ["NET_BIND_SERVICE"]},
    },
    "port": 9090,
    "probes": {
        "liveness": {"periodSeconds": 30},
        "readiness": {"periodSeconds": 3, "failureThreshold": 4},
    },
    "database": {"secretRef": {"name": "agent-db", "key": "postgres-url"}},
    "migrations": {
        "image": "ghcr.io/example/agent-migrations:2.3.1",
        "command": ["occurrence-store", "migrate", "--verbose"],
        "backoffLimit": 4,
        "activeDeadlineSeconds": 900,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                      "limits": {"memory": "128Mi"}},
    },
    "drain": {
        "timeoutSeconds": 300,
        "inFlight": "wait",
        "rebalanceOnScaleUp": True,
    },
    "terminationGracePeriodSeconds": 90,
}

SCALED_TO_ZERO: dict[str, Any] = {
    "replicas": 0,
    "image": "registry.local/agent@sha256:" + "ab" * 32,
    "database": {"secretRef": {"name": "shared-db"}},
    "migrations": {"enabled": False},
}

SAMPLES: dict[str, dict[str, Any]] = {
    "minimal": MINIMAL,
    "full": FULL,
    "scaled-to-zero": SCALED_TO_ZERO,
}


def spec_of(raw: dict[str, Any], **changes: Any) -> AgentDeploymentSpec:
    """Validate a copy of `raw` with top-level `changes` applied."""
    data = copy.deepcopy(raw)
    data.update(changes)
    return AgentDeploymentSpec.model_validate(data)
