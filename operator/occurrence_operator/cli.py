"""`occurrence-operator`: run the operator (Kopf underneath).

    occurrence-operator --namespace team-a [--namespace team-b]   # namespace-scoped
    occurrence-operator --all-namespaces                          # cluster-wide
    occurrence-operator --all-namespaces --peering occurrence-operator  # several replicas

Standalone (no peering) by default: one replica with the `Recreate` strategy. With
`--peering NAME` several replicas run and Kopf's peering keeps only the highest-priority
one active (the KopfPeering/ClusterKopfPeering CRDs must be installed: crds/kopf-peering.yaml),
so no drain runs twice: the others are paused and do nothing at all (handlers.py, gate.py).

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

from . import api

PRIORITY_SPREAD = 1000
"""Room for the tie-breaker between replicas of the same `--priority` (see above)."""


def peering_priority(priority: int, tie_breaker: int | None = None) -> int:
    """The priority announced to Kopf's peering for a user-facing `--priority`."""
    if tie_breaker is None:
        tie_breaker = random.SystemRandom().randrange(PRIORITY_SPREAD)
    return priority * PRIORITY_SPREAD + tie_breaker % PRIORITY_SPREAD


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="occurrence-operator",
        description="Kubernetes operator for AgentDeployments (occurrence.dev/v1alpha1).",
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
        default=os.environ.get("OCCURRENCE_OPERATOR_LIVENESS", "http://0.0.0.0:8080/healthz"),
        metavar="URL",
        help="liveness endpoint (empty: none). Default http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--metrics-address",
        default=os.environ.get("OCCURRENCE_OPERATOR_METRICS_ADDRESS", "0.0.0.0:9090"),
        metavar="HOST:PORT",
        help="Prometheus /metrics address (empty: none). Default 0.0.0.0:9090",
    )
    parser.add_argument(
        "--log-format",
        choices=("json", "plain", "full"),
        default="json",
        help="log format (default: json, one object per line)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    import kopf

    log_format = {
        "json": kopf.LogFormat.JSON,
        "plain": kopf.LogFormat.PLAIN,
        "full": kopf.LogFormat.FULL,
    }[args.log_format]
    kopf.configure(verbose=args.verbose, log_format=log_format, log_refkey="object")
    os.environ["OCCURRENCE_OPERATOR_METRICS_ADDRESS"] = args.metrics_address or ""
    os.environ["OCCURRENCE_OPERATOR_NAMESPACES"] = ",".join(args.namespaces or ())

    from . import handlers  # noqa: F401  (registers the handlers)

    priority = None if args.peering is None else peering_priority(args.priority)
    logging.getLogger(__name__).info(
        "starting %s for %s%s",
        api.MANAGER,
        "all namespaces" if args.all_namespaces else ", ".join(args.namespaces),
        "" if priority is None else f", peering {args.peering!r} with priority {priority}",
    )
    kopf.run(
        clusterwide=bool(args.all_namespaces),
        namespaces=args.namespaces or (),
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=priority,
        liveness_endpoint=args.liveness or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
