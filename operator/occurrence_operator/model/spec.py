"""The AgentDeployment spec (occurrence.dev/v1alpha1): the single source of the CRD schema.

`python -m occurrence_operator.crdgen` turns these models into the CRD's OpenAPI schema;
field docstrings become `kubectl explain` text, so they are written for users.
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from . import wellknown
from .crdmodel import CelRule, CrdModel
from .naming import DNS1123_LABEL, DNS1123_SUBDOMAIN, FENCED_ID_PATTERN, MAX_NAME_LENGTH

ImagePullPolicy = Literal["Always", "IfNotPresent", "Never"]
InFlightMode = Literal["release", "wait"]
RecoveryMode = Literal["retry", "fail"]
RolloutStrategy = Literal["RollingUpdate", "Canary"]
GateMetric = Literal["taskFailureRatio", "thoughtErrorRatio", "completionsPerOccurrencePerMinute"]
ScaleToZeroTarget = Literal["ordinal-0"]

NonEmptyStr = Annotated[str, Field(min_length=1)]
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)]
# Kubernetes objects passed through to the pod unchanged; the API server validates them
# when the operator creates the StatefulSet.
Passthrough = dict[str, Any]

_RESERVED_ENV_CEL = ", ".join(f"'{name}'" for name in wellknown.RESERVED_ENV)
_RESERVED_FLAGS_CEL = ", ".join(f"'{flag}'" for flag in wellknown.RESERVED_AGENT_FLAGS)

MAX_REPLICAS = 1000
"""Every occurrence holds its own database connections (a pool of up to 10, plus one for
notifications): 1,000 occurrences already need a PostgreSQL with over 10,000 connections or
a pooler. A larger fleet is several AgentDeployments, or a different design."""
DAY_SECONDS = 86_400
DEFAULT_DRAIN_TIMEOUT_SECONDS = 120


def _reserved_flag(arg: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for flag in wellknown.RESERVED_AGENT_FLAGS)


def _probe_host(probe: Passthrough | None) -> str | None:
    """The probe handler (httpGet, tcpSocket) that names a host of its own, if one does."""
    for handler in ("httpGet", "tcpSocket"):
        value = (probe or {}).get(handler)
        if isinstance(value, dict) and "host" in value:
            return handler
    return None


class SecretKeyRef(CrdModel):
    """A key of a Secret in the AgentDeployment's namespace."""

    name: ObjectName
    """Name of the Secret."""
    key: str = Field("url", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """Key in the Secret whose value is the database URL."""


class DatabaseSpec(CrdModel):
    """The shared database all occurrences use. Its URL is only ever read from a Secret."""

    secret_ref: SecretKeyRef
    """Secret holding the database URL (e.g. postgresql://user:pass@host:5432/db)."""


class LocalObjectReference(CrdModel):
    """A reference to an object in the same namespace."""

    name: ObjectName


class EnvVar(CrdModel):
    """A container environment variable (core/v1 EnvVar); passed through to the pod."""

    model_config = ConfigDict(extra="allow", alias_generator=None)

    name: str = Field(min_length=1, max_length=256)
    """Variable name. The operator-managed names (AGENT_OCCURRENCE_ID, AGENT_OCCURRENCE_ORDINAL,
    DATABASE_URL, AGENT_PORT) are reserved."""


class SeccompProfile(CrdModel):
    """Seccomp profile; `Unconfined` is not allowed by the restricted Pod Security Standard."""

    __cel_rules__ = (
        CelRule(
            rule="self.type == 'Localhost' ? has(self.localhostProfile) "
            ": !has(self.localhostProfile)",
            message="seccompProfile.localhostProfile is required when type is Localhost "
            "and must not be set otherwise",
            check=lambda s: (s.type == "Localhost") == (s.localhost_profile is not None),
        ),
    )

    type: Literal["RuntimeDefault", "Localhost"]
    localhost_profile: str | None = Field(None, min_length=1, max_length=4096)


class Capabilities(CrdModel):
    """Linux capabilities. The restricted standard requires dropping ALL and allows adding
    only NET_BIND_SERVICE."""

    __cel_rules__ = (
        CelRule(
            rule="!has(self.drop) || 'ALL' in self.drop",
            message="capabilities.drop must contain ALL (restricted Pod Security Standard)",
            check=lambda c: c.drop is None or "ALL" in c.drop,
        ),
        CelRule(
            rule="!has(self.add) || self.add.all(c, c == 'NET_BIND_SERVICE')",
            message="capabilities.add may only contain NET_BIND_SERVICE "
            "(restricted Pod Security Standard)",
            check=lambda c: c.add is None or all(cap == "NET_BIND_SERVICE" for cap in c.add),
        ),
    )

    add: list[Annotated[str, Field(max_length=64)]] | None = Field(None, max_length=64)
    drop: list[Annotated[str, Field(max_length=64)]] | None = Field(None, max_length=64)


_NON_ROOT_RULE = CelRule(
    rule="!has(self.runAsNonRoot) || self.runAsNonRoot",
    message="runAsNonRoot cannot be false: pods must pass the restricted Pod Security Standard",
    check=lambda s: s.run_as_non_root is not False,
)


class PodSecurityContextOverride(CrdModel):
    """Fields merged over the pod's secure defaults (runAsNonRoot, runAsUser/runAsGroup 10001,
    seccompProfile RuntimeDefault)."""

    __cel_rules__ = (
        _NON_ROOT_RULE,
        CelRule(
            rule="!has(self.userFromPlatform) || !self.userFromPlatform || "
            "(!has(self.runAsUser) && !has(self.runAsGroup))",
            message="userFromPlatform leaves runAsUser and runAsGroup to the platform: set "
            "neither with it",
            check=lambda s: not s.user_from_platform or (
                s.run_as_user is None and s.run_as_group is None),
        ),
    )

    run_as_non_root: bool | None = None
    run_as_user: int | None = Field(None, ge=1)
    """UID to run as; 0 (root) is not allowed."""
    run_as_group: int | None = Field(None, ge=0)
    user_from_platform: bool | None = None
    """True: the pods set no runAsUser/runAsGroup, the platform assigns them (OpenShift's
    restricted-v2 SCC picks a UID from the namespace's range and refuses any other);
    runAsNonRoot stays true."""
    fs_group: int | None = Field(None, ge=0)
    fs_group_change_policy: Literal["OnRootMismatch", "Always"] | None = None
    supplemental_groups: list[Annotated[int, Field(ge=0)]] | None = None
    seccomp_profile: SeccompProfile | None = None


class ContainerSecurityContextOverride(CrdModel):
    """Fields merged over the agent container's secure defaults (allowPrivilegeEscalation false,
    capabilities drop ALL, readOnlyRootFilesystem true, runAsNonRoot true)."""

    __cel_rules__ = (
        _NON_ROOT_RULE,
        CelRule(
            rule="!has(self.allowPrivilegeEscalation) || !self.allowPrivilegeEscalation",
            message="allowPrivilegeEscalation cannot be true (restricted Pod Security Standard)",
            check=lambda s: s.allow_privilege_escalation is not True,
        ),
        CelRule(
            rule="!has(self.privileged) || !self.privileged",
            message="privileged cannot be true (restricted Pod Security Standard)",
            check=lambda s: s.privileged is not True,
        ),
    )

    run_as_non_root: bool | None = None
    run_as_user: int | None = Field(None, ge=1)
    """UID to run as; 0 (root) is not allowed."""
    run_as_group: int | None = Field(None, ge=0)
    read_only_root_filesystem: bool | None = None
    """Set false if the agent must write outside /tmp (an emptyDir is mounted at /tmp)."""
    allow_privilege_escalation: bool | None = None
    privileged: bool | None = None
    capabilities: Capabilities | None = None
    seccomp_profile: SeccompProfile | None = None


class ReadinessTiming(CrdModel):
    """Timing of the readiness probe. Its check stays the agent's /readyz: a fenced
    occurrence fails it, which is how it leaves the Service — so no handler may be given."""

    initial_delay_seconds: int | None = Field(None, ge=0, le=DAY_SECONDS)
    period_seconds: int | None = Field(None, ge=1, le=DAY_SECONDS)
    timeout_seconds: int | None = Field(None, ge=1, le=DAY_SECONDS)
    failure_threshold: int | None = Field(None, ge=1, le=1000)
    success_threshold: int | None = Field(None, ge=1, le=1000)


class ProbeOverrides(CrdModel):
    """Probe overrides. Liveness keys (core/v1 Probe) replace the default's keys, and giving
    a handler (httpGet, tcpSocket, exec, grpc) replaces the default handler; readiness takes
    timing only."""

    liveness: Passthrough | None = None
    """Default: httpGet /healthz on the agent port. httpGet.host and tcpSocket.host are
    refused (the kubelet would call that host instead of the pod)."""
    readiness: ReadinessTiming | None = None
    """Timing of the default httpGet /readyz on the agent port (a draining occurrence fails
    it)."""

    @field_validator("liveness")
    @classmethod
    def _no_probe_host(cls, value: Passthrough | None) -> Passthrough | None:
        # the API server cannot say this in CEL: the probe object is passed through untyped
        if (handler := _probe_host(value)) is not None:
            raise ValueError(f"probes.liveness must not set {handler}.host: the kubelet would "
                             "call that host (the probe always targets the agent's own pod)")
        return value


def _reserved_flags_rule(field: str, *, either: bool = False) -> CelRule:
    """The flags the operator sets through the environment, refused in `field`."""
    return CelRule(
        rule=f"!has(self.{field}) || self.{field}.all(a, ![{_RESERVED_FLAGS_CEL}].exists(f, "
        "a == f || a.startsWith(f + '=')))",
        message=f"{field} must not pass {', '.join(wellknown.RESERVED_AGENT_FLAGS)}"
        f"{' either' if either else ''}: the operator sets them (identity, database, port, "
        "tokens)",
        check=lambda s: getattr(s, field) is None
        or not any(_reserved_flag(a) for a in getattr(s, field)),
    )


def _command_rule(path: str, default: tuple[str, ...]) -> CelRule:
    field = path.rsplit(".", 1)[-1]
    return CelRule(
        rule=f"!has(self.{field}) || size(self.{field}) > 0",
        message=f"{path} must not be empty when set; omit it to run {' '.join(default)!r}",
        check=lambda m: getattr(m, field) is None or len(getattr(m, field)) > 0,
    )


class MigrationsSpec(CrdModel):
    """The schema migrations Job run before agent pods start or roll to a new image."""

    __cel_rules__ = (_command_rule("migrations.command", wellknown.DEFAULT_MIGRATIONS_COMMAND),)

    enabled: bool = True
    """Run the migrations Job and gate rollouts on its success."""
    image: str | None = Field(None, min_length=1)
    """Image of the Job; defaults to spec.image."""
    command: list[NonEmptyStr] | None = Field(None, max_length=64)
    """Command of the Job; defaults to ["occurrence-store", "migrate"]."""
    backoff_limit: int = Field(2, ge=0, le=100)
    """Retries of the Job before it is marked failed."""
    active_deadline_seconds: int = Field(600, ge=1, le=DAY_SECONDS)
    """Time limit of the Job."""
    pod_labels: dict[str, str] | None = None
    """Extra labels on the Job's pod (network policies, cost attribution...). The operator's
    own labels take precedence; they do not change the Job's name."""
    resources: Passthrough | None = None
    """core/v1 ResourceRequirements of the Job's container; defaults to spec.resources (in a
    namespace with a ResourceQuota and no LimitRange a pod without them is refused, and
    migrations would never run)."""


class PodMetadata(CrdModel):
    """Extra labels and annotations on the agent pods (service meshes, cost attribution,
    monitoring). The operator's own labels take precedence; changing these rolls the pods."""

    labels: dict[str, Annotated[str, Field(max_length=63)]] | None = None
    annotations: dict[str, Annotated[str, Field(max_length=65_536)]] | None = None


_PERCENT = r"^(100|[1-9]?[0-9])%$"


class PodDisruptionBudgetSpec(CrdModel):
    """The agent pods' PodDisruptionBudget."""

    __cel_rules__ = (CelRule(
        rule=f"!has(self.maxUnavailable) || (type(self.maxUnavailable) == int ? "
        f"self.maxUnavailable >= 0 && self.maxUnavailable <= {MAX_REPLICAS} : "
        f"self.maxUnavailable.matches('{_PERCENT}'))",
        message=f"maxUnavailable must be a count from 0 to {MAX_REPLICAS} or a percentage "
        "from 0% to 100%",
        check=lambda s: (0 <= s.max_unavailable <= MAX_REPLICAS)
        if isinstance(s.max_unavailable, int) else bool(re.match(_PERCENT, s.max_unavailable)),
    ),)

    max_unavailable: int | str = Field(1, json_schema_extra={"x-kubernetes-int-or-string": True})
    """Occurrences a voluntary disruption (a node drain) may take away at once: a count
    (0 blocks node drains) or a percentage. An evicted occurrence comes back with its id and
    its own work; unhealthy pods may always be evicted."""


class DrainSpec(CrdModel):
    """How work leaves occurrences that a scale-down removes."""

    timeout_seconds: int = Field(DEFAULT_DRAIN_TIMEOUT_SECONDS, ge=1, le=DAY_SECONDS)
    """Longest wait for departing occurrences' in-flight work (inFlight: wait) before it is
    released to pending anyway and transferred."""
    in_flight: InFlightMode = "release"
    """`release`: departing occurrences get releaseGraceSeconds to finish what they are doing
    (they stop taking work the instant they are fenced); then what is still in flight goes
    back to pending and is transferred, so a thought cut off this way runs again on a
    survivor. `wait`: wait up to timeoutSeconds for in-flight work to finish first."""
    release_grace_seconds: int = Field(10, ge=0, le=DAY_SECONDS)
    """inFlight: release — how long departing occurrences may finish in-flight work after the
    fence before it is released (at most timeoutSeconds). The operator moves on as soon as
    every departing occurrence has acknowledged (quiesced) or its lease has expired."""
    scale_to_zero_target: ScaleToZeroTarget = "ordinal-0"
    """Where work goes on a scale to 0: parked on occurrence <name>-0, the first to return."""
    rebalance_on_scale_up: bool = False
    """After a scale-up, move part of the pending work to the new occurrences."""


class NetworkPolicySpec(CrdModel):
    """Who may reach the agent port (API, metrics). Kubelet probes always may."""

    enabled: bool = True
    """Render a NetworkPolicy for the agent pods. It takes effect where the cluster's network
    plugin enforces NetworkPolicy."""
    allowed_from: list[Passthrough] | None = Field(None, max_length=64)
    """core/v1 NetworkPolicyPeer list allowed to connect (podSelector, namespaceSelector,
    ipBlock). Default: every pod in the AgentDeployment's namespace."""


class RetentionSpec(CrdModel):
    """How long finished work stays in the database (the operator deletes it, in batches)."""

    finished_days: int = Field(30, ge=0, le=3650)
    """Completed, failed and rejected tasks (with their thoughts) last updated longer ago are
    deleted, checked at most once an hour. 0: kept forever."""
    audit_days: int = Field(90, ge=1, le=3650)
    """Transfer records (where a task went in a drain) of deleted tasks are kept this long."""


class RecoverySpec(CrdModel):
    """What happens to stranded in-flight work: a thought left in processing by an occurrence
    that crashed, was cut off by a drain, or could not record its outcome — whose handler
    may have run, with side effects nobody knows about."""

    in_flight: RecoveryMode = "retry"
    """`retry`: put it back to pending, its handler runs again (at-least-once; handlers
    deduplicate with the thought's attempt key). `fail`: mark it, and its task, failed with
    the reason, so a handler never runs twice (at-most-once for what may have run)."""


class ScalingRules(CrdModel):
    """How fast the autoscaler may change the size in one direction (like an HPA's
    `behavior.scaleUp`/`scaleDown`); an unset field takes the direction's default."""

    stabilization_window_seconds: int | None = Field(None, ge=0, le=3600)
    """The size follows the most conservative recommendation of this window: the lowest of
    the last N seconds when scaling up, the highest when scaling down (no flapping on a
    backlog that dips for a moment). Default: 0 up, 300 down."""
    max_step: int | None = Field(None, ge=1, le=MAX_REPLICAS)
    """Most occurrences added (or removed) by one decision. Default: 4 up, no limit down."""
    cooldown_seconds: int | None = Field(None, ge=0, le=DAY_SECONDS)
    """Least time after the last scale (either direction) before the next one this way.
    Default: 0 up, 60 down."""


class AutoscalingSpec(CrdModel):
    """Size on the backlog (pending + active tasks of the whole AgentDeployment), measured
    from the database. The operator writes spec.replicas through the scale subresource, so
    every scale-down it decides drains first. While set, no HPA or KEDA ScaledObject may
    target this AgentDeployment (condition Degraded/AutoscalerConflict)."""

    __cel_rules__ = (
        CelRule(
            rule="self.minReplicas <= self.maxReplicas",
            message="autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
            check=lambda a: a.min_replicas <= a.max_replicas,
        ),
    )

    min_replicas: int = Field(1, ge=0, le=MAX_REPLICAS)
    """Fewest occurrences. 0: scale to zero when the backlog is empty (the work parks on
    <name>-0) and back to one when a task arrives for the AgentDeployment."""
    max_replicas: int = Field(ge=1, le=MAX_REPLICAS)
    """Most occurrences."""
    target_backlog_per_occurrence: int = Field(ge=1, le=1_000_000)
    """Desired replicas = ceil(backlog / this), within [minReplicas, maxReplicas]."""
    interval_seconds: int = Field(15, ge=1, le=3600)
    """How often the backlog is measured (one query per AgentDeployment)."""
    scale_up: ScalingRules = Field(default_factory=lambda: ScalingRules.model_validate({}),
                                   json_schema_extra={"default": {}})
    """Default: no stabilization, at most 4 more occurrences per decision, no cooldown."""
    scale_down: ScalingRules = Field(default_factory=lambda: ScalingRules.model_validate({}),
                                     json_schema_extra={"default": {}})
    """Default: the highest recommendation of the last 5 minutes, any step, and not within a
    minute of the last scale."""


PROMETHEUS_VARIABLES = ("canaryRevision", "stableRevision", "canaryOccurrences",
                        "stableOccurrences", "namespace", "name", "bakeSeconds")
"""What `{{...}}` a Prometheus gate's query may use (occurrences: a regex alternation of the
ids, for `occurrence_id=~"..."`; bakeSeconds: how long the wave has baked, for a range)."""


class PrometheusGate(CrdModel):
    """A gate read from Prometheus: one PromQL query that returns one number."""

    url: str = Field(min_length=1, max_length=2048, pattern=r"^https?://[^\s@]+$")
    """Base URL of the Prometheus HTTP API (`http://prometheus.monitoring:9090`); it must
    start with one the operator allows (`OCCURRENCE_OPERATOR_PROMETHEUS_URLS`, chart value
    `prometheusURLs`): otherwise the gate is Inconclusive. No credentials in it."""
    query: str = Field(min_length=1, max_length=4096)
    """PromQL returning one sample (a scalar, or a vector of one). `{{canaryRevision}}`,
    `{{stableRevision}}`, `{{canaryOccurrences}}`, `{{stableOccurrences}}` (regex
    alternations of occurrence ids), `{{namespace}}`, `{{name}}` and `{{bakeSeconds}}` are
    replaced first. No value, an error, or no answer within `timeoutSeconds` is
    Inconclusive — never a pass."""
    timeout_seconds: int = Field(5, ge=1, le=30)
    """How long the operator waits for Prometheus per evaluation."""

    @field_validator("query")
    @classmethod
    def _known_variables(cls, query: str) -> str:
        unknown = sorted(set(re.findall(r"\{\{\s*([^}]*?)\s*\}\}", query))
                         - set(PROMETHEUS_VARIABLES))
        if unknown:
            raise ValueError(f"unknown query variables {unknown}: use "
                             + ", ".join("{{" + v + "}}" for v in PROMETHEUS_VARIABLES))
        return query


class GateSpec(CrdModel):
    """A health check of a wave: on the work its canary occurrences finished while it bakes,
    against the stable occurrences over the same time (read from the shared database), or a
    number from Prometheus."""

    __cel_rules__ = (
        CelRule(
            rule="has(self.max) || has(self.min) || has(self.maxIncreaseOverStable)",
            message="a rollout gate sets max, min or maxIncreaseOverStable",
            check=lambda g: g.max is not None or g.min is not None
            or g.max_increase_over_stable is not None,
        ),
        CelRule(
            rule="has(self.metric) != has(self.prometheus)",
            message="a rollout gate sets exactly one of metric and prometheus",
            check=lambda g: (g.metric is None) != (g.prometheus is None),
        ),
        CelRule(
            rule="!has(self.prometheus) || !has(self.maxIncreaseOverStable)",
            message="a prometheus gate takes max or min (compare with the stable revision in "
            "the query itself: {{stableRevision}})",
            check=lambda g: g.prometheus is None or g.max_increase_over_stable is None,
        ),
    )

    metric: GateMetric | None = None
    """`taskFailureRatio`: failed / finished tasks. `thoughtErrorRatio`: failed / finished
    thoughts. `completionsPerOccurrencePerMinute`: completed tasks per occurrence per minute."""
    prometheus: PrometheusGate | None = None
    """Instead of `metric`: the gate's value is a PromQL query's (`max` / `min` apply)."""
    max: float | None = Field(None, ge=0)
    """The canary's value must not exceed this."""
    min: float | None = Field(None, ge=0)
    """The canary's value must be at least this."""
    max_increase_over_stable: float | None = Field(None, ge=0)
    """The canary's value may exceed the stable occurrences' over the same time by at most
    this (not applied in a wave with no stable occurrence left, e.g. the last one)."""
    min_samples: int = Field(20, ge=1, le=1_000_000)
    """Finished tasks (thoughts, for thoughtErrorRatio) the canary needs before the gate says
    anything; fewer is Inconclusive."""


class WaveSpec(CrdModel):
    """One wave of a canary rollout: how many occurrences run the new revision, and how long
    they bake before the next wave. Exactly one of `occurrences` and `percent`."""

    __cel_rules__ = (
        CelRule(
            rule="has(self.occurrences) != has(self.percent)",
            message="a rollout wave sets exactly one of occurrences and percent",
            check=lambda w: (w.occurrences is None) != (w.percent is None),
        ),
    )

    name: str = Field(min_length=1, max_length=63, pattern=DNS1123_LABEL)
    """Name of the wave, in events and status.rollout.wave (e.g. explorer, early, general)."""
    occurrences: int | None = Field(None, ge=1, le=MAX_REPLICAS)
    """Occurrences on the new revision in this wave (the highest ordinals), at most all."""
    percent: int | None = Field(None, ge=1, le=100)
    """Share of the occurrences on the new revision in this wave, rounded up (at least one)."""
    bake_seconds: int = Field(300, ge=0, le=DAY_SECONDS)
    """How long the wave runs, all its pods ready, before the next wave starts."""
    gates: list[GateSpec] | None = Field(None, max_length=8)
    """Health checks on the work the wave's canary occurrences did while it baked. All must
    pass at the end of the bake for the next wave to start; one failing failureLimit
    evaluations in a row rolls the rollout back."""
    max_bake_seconds: int | None = Field(None, ge=1, le=7 * DAY_SECONDS)
    """How long the wave may bake waiting for enough samples; then the rollout is
    Inconclusive (held: neither promoted nor rolled back). Default: twice bakeSeconds,
    at least bakeSeconds + 300."""

    def bake_limit(self) -> int:
        """The longest bake (maxBakeSeconds or its default)."""
        if self.max_bake_seconds is not None:
            return max(self.max_bake_seconds, self.bake_seconds)
        return max(2 * self.bake_seconds, self.bake_seconds + 300)


def _default_waves() -> list[WaveSpec]:
    """The reference system's waves: one explorer, an early quarter, then everyone."""
    return [WaveSpec.from_fields(name="explorer", occurrences=1),
            WaveSpec.from_fields(name="early", percent=25),
            WaveSpec.from_fields(name="general", percent=100)]


class RolloutSpec(CrdModel):
    """How a change of the pod template (image, env, args...) reaches the occurrences."""

    __cel_rules__ = (
        CelRule(
            rule="!has(self.waves) || size(self.waves) == 0 || "
            "(has(self.waves[size(self.waves) - 1].percent) && "
            "self.waves[size(self.waves) - 1].percent == 100)",
            message="the last rollout wave must be percent: 100 (every occurrence)",
            check=lambda r: not r.waves or r.waves[-1].percent == 100,
        ),
    )

    strategy: RolloutStrategy = "RollingUpdate"
    """`RollingUpdate`: the StatefulSet replaces every pod, one at a time, gated by readiness.
    `Canary`: the new revision reaches the occurrences in `waves` (highest ordinals first, by
    the StatefulSet's partition), each running `bakeSeconds` before the next starts."""
    waves: list[WaveSpec] | None = Field(None, min_length=1, max_length=10)
    """Canary waves in order, each with more occurrences than the one before; the last must
    be percent: 100. Default: explorer (1 occurrence), early (25 %), general (100 %), each
    baking 300 s."""
    paused: bool = False
    """Hold a canary rollout where it is: no wave starts or passes until unset."""
    failure_limit: int = Field(2, ge=1, le=100)
    """Consecutive failing evaluations of one gate that roll the rollout back."""
    analysis_interval_seconds: int = Field(30, ge=1, le=3600)
    """How often the gates are evaluated while a wave bakes."""
    retry_failed_on_rollback: bool = True
    """On a rollback (a failed gate or `occurrence.dev/rollout=abort`), the tasks the
    rolled-back revision finished as failed since the rollout started go back to pending,
    once each, on the occurrence that owns them (an audit record names the revision);
    `status.rollout.failedWork` counts them. A task that fails again on the stable revision
    stays failed."""

    @model_validator(mode="after")
    def _waves_grow(self) -> RolloutSpec:
        waves = self.waves or []
        names = [w.name for w in waves]
        if len(set(names)) != len(names):
            raise ValueError(f"rollout wave names must be unique: {names}")
        for kind in ("occurrences", "percent"):
            sizes = [getattr(w, kind) for w in waves if getattr(w, kind) is not None]
            if any(b <= a for a, b in itertools.pairwise(sizes)):
                raise ValueError(f"rollout waves must grow: {kind} {sizes}")
        return self

    def wave_list(self) -> list[WaveSpec]:
        """The waves in force (the default three when none are given)."""
        return list(self.waves) if self.waves else _default_waves()


class AgentDeploymentSpec(CrdModel):
    """Desired state: N occurrences of one agent sharing one database."""

    __cel_rules__ = (
        CelRule(
            rule=f"!has(self.env) || self.env.all(e, !(e.name in [{_RESERVED_ENV_CEL}]))",
            message=f"env must not set {', '.join(wellknown.RESERVED_ENV)}: the operator sets them "
            "(the database URL comes only from spec.database.secretRef)",
            check=lambda s: s.env is None
            or all(e.name not in wellknown.RESERVED_ENV for e in s.env),
        ),
        _command_rule("command", wellknown.DEFAULT_AGENT_COMMAND),
        _reserved_flags_rule("args"),
        _reserved_flags_rule("command", either=True),
    )

    replicas: int = Field(1, ge=0, le=MAX_REPLICAS)
    """Number of occurrences (pods <name>-0..N-1), at most 1000 (each holds its own database
    connections). Scaling down drains the departing ones."""
    image: str = Field(min_length=1)
    """Agent image."""
    image_pull_policy: ImagePullPolicy = "IfNotPresent"
    image_pull_secrets: list[LocalObjectReference] | None = None
    command: list[Annotated[str, Field(min_length=1, max_length=4096)]] | None = Field(
        None, max_length=64)
    """Container command; defaults to ["occurrence-agent"], the agent runtime. The flags the
    operator sets are refused here as in args."""
    args: list[Annotated[str, Field(max_length=4096)]] | None = Field(None, max_length=256)
    """Container args. The flags the operator sets through the environment (--occurrence-id,
    --database-url, --port, --token-dir...) are refused."""
    env: list[EnvVar] | None = Field(None, max_length=256)
    """Extra environment (core/v1 EnvVar). May refer to $(AGENT_OCCURRENCE_ID) and the other
    operator-managed variables, which are defined first."""
    env_from: list[Passthrough] | None = None
    """core/v1 EnvFromSource list."""
    resources: Passthrough | None = None
    """core/v1 ResourceRequirements of the agent container."""
    node_selector: dict[str, str] | None = None
    tolerations: list[Passthrough] | None = None
    affinity: Passthrough | None = None
    topology_spread_constraints: list[Passthrough] | None = Field(None, max_length=16)
    """core/v1 TopologySpreadConstraint list (e.g. spread occurrences over zones)."""
    priority_class_name: ObjectName | None = None
    pod_metadata: PodMetadata | None = None
    volumes: list[Passthrough] | None = Field(None, max_length=32)
    """Extra core/v1 Volumes of the agent pods, of the kinds the restricted Pod Security
    Standard allows (configMap, secret, emptyDir, projected, downwardAPI,
    persistentVolumeClaim, ephemeral, csi); the names `tmp` and `agent-token` are the
    operator's."""
    volume_mounts: list[Passthrough] | None = Field(None, max_length=32)
    """Extra core/v1 VolumeMounts of the agent container (not at /tmp or the token
    directory, which the operator mounts)."""
    sidecars: list[Passthrough] | None = Field(None, max_length=8)
    """Extra core/v1 Containers of the agent pods, beside the agent (a log shipper, a proxy).
    Each runs with the restricted security context defaults under its own settings, which
    may not break the restricted Pod Security Standard; `agent` is the operator's name."""
    init_containers: list[Passthrough] | None = Field(None, max_length=8)
    """core/v1 init Containers of the agent pods (native sidecars too: restartPolicy
    Always), under the same rules as `sidecars`."""
    pod_disruption_budget: PodDisruptionBudgetSpec = Field(
        default_factory=lambda: PodDisruptionBudgetSpec.model_validate({}),
        json_schema_extra={"default": {}})
    service_account_name: ObjectName | None = None
    automount_service_account_token: bool = False
    """Mount a Kubernetes API token into agent and migration pods. Off: neither calls the
    API, and a token they never use is one a compromised agent could."""
    pod_security_context: PodSecurityContextOverride | None = None
    container_security_context: ContainerSecurityContextOverride | None = None
    port: int = Field(8080, ge=1, le=65535)
    """Port of the agent HTTP API (health, readiness, metrics); exported as AGENT_PORT."""
    probes: ProbeOverrides | None = None
    database: DatabaseSpec
    migrations: MigrationsSpec = Field(
        default_factory=lambda: MigrationsSpec.model_validate({}),
        json_schema_extra={"default": {}},
    )
    drain: DrainSpec = Field(
        default_factory=lambda: DrainSpec.model_validate({}), json_schema_extra={"default": {}}
    )
    recovery: RecoverySpec = Field(default_factory=RecoverySpec, json_schema_extra={"default": {}})
    retention: RetentionSpec = Field(
        default_factory=lambda: RetentionSpec.model_validate({}),
        json_schema_extra={"default": {}})
    network_policy: NetworkPolicySpec = Field(
        default_factory=lambda: NetworkPolicySpec.model_validate({}),
        json_schema_extra={"default": {}})
    rollout: RolloutSpec = Field(
        default_factory=lambda: RolloutSpec.model_validate({}), json_schema_extra={"default": {}})
    fenced_occurrences: list[Annotated[str, Field(
        min_length=3, max_length=MAX_NAME_LENGTH + 5, pattern=FENCED_ID_PATTERN)]] | None = Field(
        None, max_length=MAX_REPLICAS, json_schema_extra={"x-kubernetes-list-type": "set"})
    """Occurrence ids (`<name>-<ordinal>`, any ordinal) taken out of work while their pods
    keep running: each claims nothing new, fails readiness, finishes (or, after the drain's
    grace, releases) its in-flight work, and its pending work moves to the occurrences that
    are not fenced. It stays fenced across pod restarts until removed from the list."""
    autoscaling: AutoscalingSpec | None = None
    """Size on the backlog instead of a fixed spec.replicas (which it then writes). Absent:
    the size is spec.replicas, set by you, kubectl scale or an HPA."""
    termination_grace_period_seconds: int = Field(60, ge=0, le=DAY_SECONDS)
    """Time an agent gets to exit after SIGTERM. Work is drained before pods are removed, so
    this only bounds the agent's own shutdown."""


def refuse_operator_account(spec: AgentDeploymentSpec, namespace: str,
                            operator_account: tuple[str, str] | None) -> None:
    """ValueError if the pods would run as the operator's own ServiceAccount (its rights:
    every Secret it may read, every object it may write, handed to the agent's image)."""
    if operator_account is not None and spec.service_account_name is not None and (
            (namespace, spec.service_account_name) == operator_account):
        raise ValueError(f"spec.serviceAccountName {spec.service_account_name!r} is the "
                         "operator's own ServiceAccount: agents must not get its rights")


RESTRICTED_VOLUME_SOURCES = ("configMap", "secret", "emptyDir", "projected", "downwardAPI",
                             "persistentVolumeClaim", "ephemeral", "csi")
"""The volume kinds the restricted Pod Security Standard allows."""
OPERATOR_VOLUMES = ("tmp", "agent-token")


def refuse_unsafe_pod_shape(spec: AgentDeploymentSpec) -> None:
    """ValueError for extra volumes or mounts that would not pass the restricted Pod Security
    Standard or would collide with the operator's own (the CRD passes core/v1 objects
    through unchecked; a refused pod would only show up as StatefulSet events)."""
    names: set[str] = set()
    for k, volume in enumerate(spec.volumes or ()):
        name = volume.get("name")
        if not isinstance(name, str) or not re.fullmatch(DNS1123_LABEL, name):
            raise ValueError(f"spec.volumes[{k}].name must be a DNS-1123 label, got {name!r}")
        if name in OPERATOR_VOLUMES or name in names:
            raise ValueError(f"spec.volumes[{k}].name {name!r} is taken"
                             + (" by the operator" if name in OPERATOR_VOLUMES else ""))
        names.add(name)
        sources = sorted(set(volume) - {"name"})
        if len(sources) != 1 or sources[0] not in RESTRICTED_VOLUME_SOURCES:
            raise ValueError(
                f"spec.volumes[{k}] ({name}) must have exactly one source of "
                f"{', '.join(RESTRICTED_VOLUME_SOURCES)} (the restricted Pod Security "
                f"Standard), got {', '.join(sources) or 'none'}")
    _refuse_unsafe_containers(spec, names)
    for k, mount in enumerate(spec.volume_mounts or ()):
        name, path = mount.get("name"), mount.get("mountPath")
        if name not in names:
            raise ValueError(f"spec.volumeMounts[{k}].name {name!r} is not one of spec.volumes")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"spec.volumeMounts[{k}].mountPath must be an absolute path")
        taken = ("/tmp", wellknown.TOKEN_MOUNT_PATH)
        if any(path.rstrip("/") == t or path.startswith(t + "/") or t.startswith(
                path.rstrip("/") + "/") for t in taken):
            raise ValueError(f"spec.volumeMounts[{k}].mountPath {path!r} overlaps "
                             f"{' or '.join(taken)}, which the operator mounts")


def _refuse_unsafe_containers(spec: AgentDeploymentSpec, volumes: set[str]) -> None:
    """Sidecars and init containers: named, with an image, mounting only the pod's volumes,
    and nothing the restricted Pod Security Standard refuses."""
    seen = {"agent"}
    for field, containers in (("sidecars", spec.sidecars), ("initContainers",
                                                             spec.init_containers)):
        for k, container in enumerate(containers or ()):
            where = f"spec.{field}[{k}]"
            name = container.get("name")
            if not isinstance(name, str) or not re.fullmatch(DNS1123_LABEL, name):
                raise ValueError(f"{where}.name must be a DNS-1123 label, got {name!r}")
            if name in seen:
                raise ValueError(f"{where}.name {name!r} is taken")
            seen.add(name)
            if not isinstance(container.get("image"), str) or not container["image"]:
                raise ValueError(f"{where} ({name}) needs an image")
            if any(isinstance(p, dict) and p.get("hostPort") for p in container.get("ports")
                   or ()):
                raise ValueError(f"{where} ({name}): hostPort is not allowed (Pod Security)")
            for mount in container.get("volumeMounts") or ():
                if mount.get("name") not in volumes | {"tmp"}:
                    raise ValueError(f"{where} ({name}) mounts {mount.get('name')!r}, which is "
                                     "not one of spec.volumes (or tmp)")
            problem = _unrestricted(container.get("securityContext") or {})
            if problem:
                raise ValueError(f"{where} ({name}).securityContext: {problem} (the restricted "
                                 "Pod Security Standard)")


def _unrestricted(context: dict[str, Any]) -> str | None:
    """What in a container's security context the restricted standard refuses, if anything."""
    if context.get("privileged") is True:
        return "privileged cannot be true"
    if context.get("allowPrivilegeEscalation") is True:
        return "allowPrivilegeEscalation cannot be true"
    if context.get("runAsNonRoot") is False or context.get("runAsUser") == 0:
        return "it cannot run as root"
    added = set((context.get("capabilities") or {}).get("add") or ()) - {"NET_BIND_SERVICE"}
    if added:
        return f"capabilities {sorted(added)} cannot be added (only NET_BIND_SERVICE)"
    if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
        return "seccompProfile cannot be Unconfined"
    return None
