"""The operator's configuration: built once by the CLI from its flags and the environment.

`cli.main` builds an `OperatorConfig` and hands it to Kopf in the operator memo
(`kopf.run(memo=kopf.Memo(config=...))`); the startup handler (kopf_handlers.py) builds the
runtime objects from it. Nothing else reads the environment.

| setting | flag | environment variable | default |
| --- | --- | --- | --- |
| namespaces | `--namespace NS` (repeatable) / `--all-namespaces` | — | (required) |
| peering | `--peering NAME`, `--priority N` | — | standalone |
| liveness | `--liveness URL` | `OCCURRENCE_OPERATOR_LIVENESS` | `http://0.0.0.0:8080/healthz` |
| metrics | `--metrics-address HOST:PORT` | `OCCURRENCE_OPERATOR_METRICS_ADDRESS` | `0.0.0.0:9090` |
| resync | — | `OCCURRENCE_OPERATOR_RESYNC_SECONDS` | 300 |
| peer lifetime | — | `OCCURRENCE_OPERATOR_PEERING_LIFETIME` | Kopf's (60) |
| event instance | — | `POD_NAME` | the host name |
| Prometheus gate URLs | — | `OCCURRENCE_OPERATOR_PROMETHEUS_URLS` | none |
| scrapers of every agent | — | `OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM` (JSON) | none |

The environment is read by one pydantic-settings model, `OperatorEnvironment`: a bad value is
one `SettingsError` line naming the variable, the value and what is allowed (the CLI prints it
and exits 2), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

LIVENESS_ENV = "OCCURRENCE_OPERATOR_LIVENESS"
METRICS_ADDRESS_ENV = "OCCURRENCE_OPERATOR_METRICS_ADDRESS"
RESYNC_SECONDS_ENV = "OCCURRENCE_OPERATOR_RESYNC_SECONDS"
PEERING_LIFETIME_ENV = "OCCURRENCE_OPERATOR_PEERING_LIFETIME"
POD_NAME_ENV = "POD_NAME"
POD_NAMESPACE_ENV = "POD_NAMESPACE"
POD_SERVICE_ACCOUNT_ENV = "POD_SERVICE_ACCOUNT"

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"
DEFAULT_METRICS_ADDRESS = "0.0.0.0:9090"
DEFAULT_RESYNC_SECONDS = 300.0

LogFormat = Literal["json", "plain", "full"]


class SettingsError(ValueError):
    """A bad value in the operator's environment; the message is one line for the CLI."""


MAX_PEERS = 16
PEER_KEYS = frozenset({"podSelector", "namespaceSelector", "ipBlock"})
METRICS_ALLOWED_FROM_ENV = "OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM"


def network_policy_peers(text: str) -> tuple[dict[str, Any], ...]:
    """`OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM`: a JSON list of at most 16 core/v1
    NetworkPolicyPeers (podSelector, namespaceSelector, ipBlock); SettingsError naming the
    variable otherwise (the API server would refuse the policy on every pass)."""
    if not text.strip():
        return ()
    try:
        value = json.loads(text)
    except ValueError as e:
        raise SettingsError(f"{METRICS_ALLOWED_FROM_ENV}: not JSON: {e}") from None
    if not isinstance(value, list) or len(value) > MAX_PEERS:
        raise SettingsError(f"{METRICS_ALLOWED_FROM_ENV}: a JSON list of at most {MAX_PEERS} "
                            "NetworkPolicyPeers")
    for peer in value:
        if not isinstance(peer, dict) or not peer or not set(peer) <= PEER_KEYS or \
                not all(isinstance(v, dict) for v in peer.values()):
            raise SettingsError(f"{METRICS_ALLOWED_FROM_ENV}: {json.dumps(peer)[:80]} is not a "
                                f"NetworkPolicyPeer (objects under {', '.join(sorted(PEER_KEYS))})")
    return tuple(value)


class OperatorEnvironment(BaseSettings):
    """What the operator reads from its environment (the chart sets the `POD_*` ones)."""

    model_config = SettingsConfigDict(
        env_prefix="OCCURRENCE_OPERATOR_", case_sensitive=False, extra="ignore", frozen=True)

    liveness: str = DEFAULT_LIVENESS
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    resync_seconds: float = Field(DEFAULT_RESYNC_SECONDS, gt=0, le=86_400)
    peering_lifetime: int | None = Field(None, gt=0, le=86_400)
    pod_name: str | None = Field(None, validation_alias=POD_NAME_ENV)
    pod_namespace: str | None = Field(None, validation_alias=POD_NAMESPACE_ENV)
    pod_service_account: str | None = Field(None, validation_alias=POD_SERVICE_ACCOUNT_ENV)
    prometheus_urls: str = ""
    """Comma-separated base URLs a Prometheus rollout gate may query (empty: none)."""
    metrics_allowed_from: str = ""
    """JSON list of NetworkPolicyPeers added to every agent NetworkPolicy (empty: none)."""
    kubernetes_service_host: str | None = Field(None, validation_alias="KUBERNETES_SERVICE_HOST")
    """Set by the kubelet in every pod: the operator runs in the cluster."""

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> OperatorEnvironment:
        """From `environ` (the process's, or a test's); SettingsError for a bad value."""
        source = EnvSettingsSource(cls)
        # what `EnvSettingsSource` would read from os.environ (names folded), but an empty
        # value means "the default" — except for the endpoints, where empty means "none"
        source.env_vars = {k.lower(): v for k, v in environ.items()
                           if v != "" or k in (LIVENESS_ENV, METRICS_ADDRESS_ENV)}
        try:
            return cls.model_validate(source())
        except ValidationError as e:
            raise SettingsError("; ".join(
                f"{cls.variable(str(error['loc'][0]))}={str(error.get('input'))[:80]!r}: "
                f"{error['msg']}" for error in e.errors())) from None

    @classmethod
    def variable(cls, field_or_alias: str) -> str:
        """The environment variable of a field (errors name it by field or alias)."""
        field = cls.model_fields.get(field_or_alias)
        if field is None or field.validation_alias is not None:
            return field_or_alias
        return f"{cls.model_config.get('env_prefix', '')}{field_or_alias.upper()}"


class OperatorConfig(BaseModel):
    """Everything the operator is told at start; immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    namespaces: tuple[str, ...] = ()
    """Watched namespaces (`--namespace`, repeatable, globs allowed); empty with
    `all_namespaces`."""
    all_namespaces: bool = False
    """Watch the whole cluster (`--all-namespaces`)."""
    peering: str | None = None
    """Kopf peering object name (`--peering`); None: standalone, one replica."""
    priority: int | None = None
    """The priority announced to Kopf's peering (`cli.peering_priority` of `--priority`:
    with its tie-breaker); None when standalone."""
    peering_lifetime: int | None = Field(None, gt=0)
    """Seconds after which a silent peer counts as dead
    (`OCCURRENCE_OPERATOR_PEERING_LIFETIME`); None: Kopf's default (60)."""
    liveness: str = DEFAULT_LIVENESS
    """Liveness endpoint URL (`--liveness`, `OCCURRENCE_OPERATOR_LIVENESS`); empty: none."""
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    """host:port of /metrics (`--metrics-address`, `OCCURRENCE_OPERATOR_METRICS_ADDRESS`);
    empty: no metrics endpoint."""
    resync_seconds: float = Field(DEFAULT_RESYNC_SECONDS, gt=0)
    """Periodic re-check of every AgentDeployment, also when nothing woke it up
    (`OCCURRENCE_OPERATOR_RESYNC_SECONDS`)."""
    instance: str = Field(min_length=1)
    """This replica's name as the `reportingInstance` of its Events (`POD_NAME`, else the
    host name)."""
    own_service_account: tuple[str, str] | None = None
    """(namespace, name) of the operator's own ServiceAccount (`POD_NAMESPACE`,
    `POD_SERVICE_ACCOUNT`, set by the chart): an AgentDeployment may not run its pods as it."""
    in_cluster: bool = False
    """Running in a pod (`KUBERNETES_SERVICE_HOST`): tenants' sqlite:/// URLs are refused."""
    prometheus_urls: tuple[str, ...] = ()
    """Base URLs a `prometheus` rollout gate may query (`OCCURRENCE_OPERATOR_PROMETHEUS_URLS`,
    comma-separated): the operator fetches them from its own network position, so a tenant
    names only what the platform allows; none by default."""
    metrics_allowed_from: tuple[dict[str, Any], ...] = ()
    """NetworkPolicyPeers admitted to every agent's port beside what each AgentDeployment's
    `spec.networkPolicy` allows (`OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM`, a JSON list; chart
    value `metrics.allowFrom`): the platform's Prometheus, set once for every tenant."""
    log_format: LogFormat = "json"
    """`--log-format`."""
    verbose: bool = False
    """`--verbose`: debug logging."""

    @property
    def metrics_endpoint(self) -> tuple[str, int] | None:
        """(host, port) of the metrics endpoint, or None when disabled."""
        if not self.metrics_address:
            return None
        host, _, port = self.metrics_address.rpartition(":")
        return host or "0.0.0.0", int(port)

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, environ: Mapping[str, str], *, priority: int | None
    ) -> OperatorConfig:
        """From the parsed CLI flags (`cli.build_parser`, whose defaults come from the
        environment) and the environment for what has no flag (SettingsError: a bad value)."""
        env = OperatorEnvironment.read(environ)
        return cls(
            namespaces=tuple(args.namespaces or ()),
            all_namespaces=bool(args.all_namespaces),
            peering=args.peering,
            priority=priority,
            peering_lifetime=env.peering_lifetime,
            liveness=env.liveness if args.liveness is None else args.liveness,
            metrics_address=(env.metrics_address if args.metrics_address is None
                             else args.metrics_address),
            resync_seconds=env.resync_seconds,
            instance=env.pod_name or socket.gethostname(),
            own_service_account=(
                (env.pod_namespace, env.pod_service_account)
                if env.pod_namespace and env.pod_service_account else None),
            in_cluster=env.kubernetes_service_host is not None,
            prometheus_urls=tuple(u.strip() for u in env.prometheus_urls.split(",")
                                  if u.strip()),
            metrics_allowed_from=network_policy_peers(env.metrics_allowed_from),
            log_format=args.log_format,
            verbose=bool(args.verbose),
        )
