"""`occurrence-operator`: run the operator (Kopf underneath).

    occurrence-operator --namespace team-a [--namespace team-b]   # namespace-scoped
    occurrence-operator --all-namespaces                          # cluster-wide
    occurrence-operator --all-namespaces --peering occurrence-operator  # several replicas

Standalone (no peering) by default: one replica with the `Recreate` strategy. With
`--peering NAME` several replicas run and Kopf's peering keeps only the highest-priority
one active (the KopfPeering/ClusterKopfPeering CRD must be installed), so no drain runs
twice.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import api


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
    parser.add_argument("--priority", type=int, default=0, help="peering priority")
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

    from . import handlers  # noqa: F401  (registers the handlers)

    logging.getLogger(__name__).info(
        "starting %s for %s",
        api.MANAGER,
        "all namespaces" if args.all_namespaces else ", ".join(args.namespaces),
    )
    kopf.run(
        clusterwide=bool(args.all_namespaces),
        namespaces=args.namespaces or (),
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
        liveness_endpoint=args.liveness or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
