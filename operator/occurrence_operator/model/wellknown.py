"""Well-known names: the AgentDeployment API (group, version, kind), the labels the operator
stamps on its objects, the environment it sets on agent pods, the default commands.

(Formerly `api.py`: renamed so it is not mistaken for an API client or server.)"""

from __future__ import annotations

from occurrence_store import AgentId

GROUP = "occurrence.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "AgentDeployment"
LIST_KIND = "AgentDeploymentList"
PLURAL = "agentdeployments"
SINGULAR = "agentdeployment"
SHORT_NAMES = ("agd",)
CATEGORIES = ("occurrence",)
"""`kubectl get occurrence` lists every AgentDeployment (like `kubectl get all`)."""
CRD_NAME = f"{PLURAL}.{GROUP}"

# Well-known labels (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/)
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"

# Our own labels. Selectors use only these: `app.kubernetes.io/instance` is also set by
# Helm to the release name, so selecting on it could match pods that are not ours.
LABEL_AGENTDEPLOYMENT = f"{GROUP}/agentdeployment"
LABEL_OCC_COMPONENT = f"{GROUP}/component"
LABEL_MIGRATION_HASH = f"{GROUP}/migration-hash"
# canary|stable: which side of a canary rollout an agent pod is on. Pods start as stable
# (the pod template's value); during a rollout the operator relabels those on the canary
# revision (and back once it is over). Not in any selector: relabelling restarts nothing.
LABEL_TRACK = f"{GROUP}/track"
TRACK_STABLE, TRACK_CANARY = "stable", "canary"

APP_NAME = "occurrence-agent"
MANAGER = "occurrence-operator"

COMPONENT_AGENT = "agent"
COMPONENT_MIGRATIONS = "migrations"

# Set by the StatefulSet controller on every pod (Kubernetes >= 1.28).
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"

# Environment variables the operator sets on every agent pod; users may not set them.
ENV_OCCURRENCE_ID = "AGENT_OCCURRENCE_ID"
ENV_OCCURRENCE_ORDINAL = "AGENT_OCCURRENCE_ORDINAL"
ENV_DATABASE_URL = "DATABASE_URL"
ENV_PORT = "AGENT_PORT"
ENV_AGENT_ID = "AGENT_ID"
ENV_IN_FLIGHT_RECOVERY = "AGENT_IN_FLIGHT_RECOVERY"
ENV_TOKEN_DIR = "AGENT_TOKEN_DIR"
ENV_REVISION = "AGENT_REVISION"
RESERVED_ENV = (ENV_OCCURRENCE_ID, ENV_OCCURRENCE_ORDINAL, ENV_DATABASE_URL, ENV_PORT,
                ENV_AGENT_ID, ENV_IN_FLIGHT_RECOVERY, ENV_TOKEN_DIR, ENV_REVISION)

# Set by the StatefulSet controller on every pod: the revision it was created from.
REVISION_LABEL = "controller-revision-hash"

# occurrence-agent flags that would override what the operator sets (argparse abbreviations
# are off in the agent, so only these spellings and `--flag=value` reach them).
RESERVED_AGENT_FLAGS = ("--occurrence-id", "--ordinal", "--agent-id", "--database-url",
                        "--port", "--in-flight-recovery", "--token-dir", "--revision")

# The agent API's bearer tokens: one Secret per AgentDeployment, mounted read-only.
TOKEN_KEYS = ("work", "admin")
TOKEN_MOUNT_PATH = "/var/run/occurrence-agent/tokens"


def agent_id(namespace: str, name: str) -> AgentId:
    """The agent an AgentDeployment runs, as the shared database knows it: its occurrence ids,
    shared decisions and idempotency keys belong to ``<namespace>/<name>``."""
    return AgentId(f"{namespace}/{name}")

DEFAULT_AGENT_COMMAND = ("occurrence-agent",)
DEFAULT_MIGRATIONS_COMMAND = ("occurrence-store", "migrate")
