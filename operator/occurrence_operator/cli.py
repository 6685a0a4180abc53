"""`occurrence-operator`: run the operator (Kopf underneath).

    occurrence-operator --namespace team-a [--namespace team-b]   # namespace-scoped
    occurrence-operator --all-namespaces                          # cluster-wide
    occurrence-operator --all-namespaces --peering occurrence-operator  # several replicas

Standalone (no peering) by default: one replica with the `Recreate` strategy. With
`--peering NAME` several replicas run and Kopf's peering keeps only the highest-priority
one active (the KopfPeering/ClusterKopfPeering CRDs must be installed: crds/kopf-peering.yaml),
so no drain runs twice: the others are paused and do nothing at all (kopf_handlers.py, may_act.py).

Kopf pauses *all* peers that share the highest priority, and the replicas of one Deployment
all get the same `--priority`. So under peering the priority Kopf sees is
`priority * 1000 + a random tie-breaker below 1000`, drawn at start: replicas with the same
`--priority` elect one of them, and a higher `--priority` still always wins.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from collections.abc import Mapping

from .model import wellknown
from .reconcile.config import (
    LIVENESS_ENV,
    METRICS_ADDRESS_ENV,
    PEERING_LIFETIME_ENV,
    POD_NAME_ENV,
    POD_NAMESPACE_ENV,
    POD_SERVICE_ACCOUNT_ENV,
    RESYNC_SECONDS_ENV,
    OperatorConfig,
    SettingsError,
)

EXIT_USAGE = 2

PRIORITY_SPREAD = 1000
"""Room for the tie-breaker between replicas of the same `--priority` (see above)."""


def peering_priority(priority: int, tie_breaker: int | None = None) -> int:
    """The priority announced to Kopf's peering for a user-facing `--priority`."""
    if tie_breaker is None:
        tie_breaker = random.SystemRandom().randrange(PRIORITY_SPREAD)
    return priority * PRIORITY_SPREAD + tie_breaker % PRIORITY_SPREAD


def build_parser() -> argparse.ArgumentParser:
    """The CLI; a flag not given defaults from the environment (`config.OperatorEnvironment`)."""
    parser = argparse.ArgumentParser(
        prog="occurrence-operator",
        description="Kubernetes operator for AgentDeployments (occurrence.dev/v1alpha1).",
        epilog=f"Environment only: {RESYNC_SECONDS_ENV} (seconds between re-checks of "
        f"every AgentDeployment, default 300), {PEERING_LIFETIME_ENV} (seconds after which a "
        f"silent peer counts as dead, default Kopf's 60), {POD_NAME_ENV} (the Events' "
        f"reporting instance, default the host name), {POD_NAMESPACE_ENV} and "
        f"{POD_SERVICE_ACCOUNT_ENV} (the operator's own ServiceAccount, which agents may not "
        "use), OCCURRENCE_OPERATOR_PROMETHEUS_URLS (comma-separated base URLs a canary "
        "rollout's prometheus gate may query; default none), "
        "OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM (a JSON list of NetworkPolicyPeers every "
        "agent NetworkPolicy admits beside its own: the platform's Prometheus; default none), "
        "KUBERNETES_SERVICE_HOST (set in "
        "every pod: there, a tenant's sqlite:/// URL is refused). A bad value is a one-line "
        "error, exit 2.",
    )
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="watch this namespace (repeatable; globs like 'team-*' allowed)",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch the whole cluster"
    )
    parser.add_argument(
        "--peering",
        metavar="NAME",
        help="Kopf peering object name for running several replicas (default: standalone)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=0,
        help="peering priority: the highest is active (ties broken at random)",
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        help="liveness endpoint (empty: none). Default http://0.0.0.0:8080/healthz "
        f"[{LIVENESS_ENV}]",
    )
    parser.add_argument(
        "--metrics-address",
        metavar="HOST:PORT",
        help=f"Prometheus /metrics address (empty: none). Default 0.0.0.0:9090 "
        f"[{METRICS_ADDRESS_ENV}]",
    )
    parser.add_argument(
        "--log-format",
        choices=("json", "plain", "full"),
        default="json",
        help="log format (default: json, one object per line)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def build_config(
    argv: list[str] | None = None, environ: Mapping[str, str] | None = None
) -> OperatorConfig:
    """The operator's configuration from its command line and environment."""
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    priority = None if args.peering is None else peering_priority(args.priority)
    return OperatorConfig.from_args(args, env, priority=priority)


def main(argv: list[str] | None = None) -> int:
    try:
        config = build_config(argv)
    except SettingsError as e:
        print(f"occurrence-operator: error: {e}", file=sys.stderr)
        return EXIT_USAGE

    import kopf

    log_format = {
        "json": kopf.LogFormat.JSON,
        "plain": kopf.LogFormat.PLAIN,
        "full": kopf.LogFormat.FULL,
    }[config.log_format]
    kopf.configure(verbose=config.verbose, log_format=log_format, log_refkey="object")

    from . import kopf_handlers  # noqa: F401  (registers the handlers)

    logging.getLogger(__name__).info(
        "starting %s for %s%s",
        wellknown.MANAGER,
        "all namespaces" if config.all_namespaces else ", ".join(config.namespaces),
        "" if config.priority is None
        else f", peering {config.peering!r} with priority {config.priority}",
    )
    kopf.run(
        clusterwide=config.all_namespaces,
        namespaces=config.namespaces,
        standalone=config.peering is None,
        peering_name=config.peering,
        priority=config.priority,
        liveness_endpoint=config.liveness or None,
        memo=kopf.Memo(config=config),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
