"""``occurrence-agent``: run one occurrence of the agent.

In Kubernetes the identity comes from the environment (``AGENT_OCCURRENCE_ID``,
``AGENT_OCCURRENCE_ORDINAL``, ``DATABASE_URL``); on one host::

    occurrence-agent --occurrence-id a1 --port 0 --port-file /tmp/a1.port

uses the embedded SQLite default, so several processes share one database file.
Exit codes: 0 stopped cleanly, 1 could not start, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from occurrence_agent.config import ENV_NAMES, ConfigError, load_config
from occurrence_agent.logs import configure_logging
from occurrence_agent.runtime import OccurrenceRuntime, StartupError

PROG = "occurrence-agent"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Run one occurrence of the agent: register, join the shared "
        "wakeup, process this occurrence's own tasks, serve the HTTP API.",
        epilog="Every option also reads an environment variable (shown in brackets).",
        allow_abbrev=False)  # the operator refuses its own flags in spec.args by exact name
    add = p.add_argument
    add("--occurrence-id", help="stable identity of this occurrence")
    add("--ordinal", type=int, help="StatefulSet ordinal")
    add("--agent-id", help="the agent this occurrence belongs to, <namespace>/<name>: "
        "decisions and idempotency keys are per agent (default: the database's default "
        "agent)")
    add("--revision", help="the revision this process runs (the operator sets the pod's "
        "controller-revision-hash): stamped on every status it sets")
    add("--database-url", help="postgresql://... or sqlite:///path; default: the embedded "
        "SQLite file shared by processes on this host")
    add("--database-url-file", type=Path,
        help="read the database URL from this file (a mounted Secret key) instead")
    add("--host", help="listen address (default: 0.0.0.0 with --token-dir, else 127.0.0.1)")
    add("--port", type=int, help="HTTP port, 0 picks a free one (default 8080)")
    add("--port-file", type=Path, help="write the bound port here")
    mig = p.add_mutually_exclusive_group()
    mig.add_argument("--migrate", dest="migrate", action="store_const", const=True,
                     help="apply migrations at start (default only for embedded SQLite)")
    mig.add_argument("--no-migrate", dest="migrate", action="store_const", const=False)
    add("--max-active-tasks", type=int, help="active tasks at most (default 10)")
    add("--thought-concurrency", type=int, help="thoughts worked at once (default 4)")
    add("--poll-interval", type=float, help="seconds between idle polls (default 0.5)")
    add("--lease-seconds", type=float, help="registry lease (default 30)")
    add("--heartbeat-interval", type=float, help="default: a third of the lease")
    add("--wakeup-timeout", type=float, help="max seconds to wait for the shared wakeup (120)")
    add("--shared-lease-seconds", type=float, help="lease on a shared decision being made (30)")
    add("--drain-timeout", type=float,
        help="seconds to finish in-flight work when draining or stopping (default 20)")
    add("--in-flight-recovery", choices=["retry", "fail"],
        help="stranded in-flight thoughts (the handler may have run): run again (retry, "
        "default) or mark FAILED (fail)")
    add("--max-thought-attempts", type=int,
        help="attempts per thought before it is FAILED (default 5)")
    add("--retry-backoff-seconds", type=float,
        help="wait before retrying a failed attempt, doubling each time (default 1)")
    add("--retry-backoff-max-seconds", type=float,
        help="longest wait between attempts (default 60)")
    add("--simulated-work-ms", type=int, help="default handler: work per thought (50)")
    add("--simulated-failure-ratio", type=float,
        help="default handler: share of tasks it fails, to try a bad version (0)")
    add("--wakeup-steps", type=int, help="default handler: wakeup steps (3)")
    add("--journal", dest="journal_path", type=Path,
        help="append thought events (JSON lines) to this file")
    add("--log-level", help="DEBUG, INFO (default), WARNING, ERROR")
    add("--access-log", action="store_const", const=True, help="log every HTTP request")
    add("--token-dir", type=Path,
        help="directory of the API's bearer tokens, files 'work' and 'admin'; required "
        "unless --host is a loopback address")
    add("--submit-rate", type=float,
        help="tasks one credential may submit per second, 0: no limit (default 200)")
    add("--request-timeout", type=float,
        help="longest an HTTP request may take, body included (default 30)")
    add("--submit-burst", type=int,
        help="submissions one credential may make at once (default 400)")
    _name_the_variables(p)
    return p


def _name_the_variables(parser: argparse.ArgumentParser) -> None:
    """Every option's help ends with its environment variable, from the one map
    (`config.ENV_NAMES`); an option without one is a bug (tests/agent/test_agent_units.py)."""
    for action in parser._actions:
        name = ENV_NAMES.get(action.dest)
        if name is not None and action.option_strings and action.help is not None:
            action.help = f"{action.help} [{name}]"


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


async def _run(runtime: OccurrenceRuntime) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.request_stop, signal.Signals(sig).name)
    await runtime.run()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    try:
        config = load_config(overrides)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    configure_logging(config.occurrence_id, config.log_level)
    runtime = OccurrenceRuntime(config)
    try:
        asyncio.run(_run(runtime))
    except StartupError as exc:
        logging.getLogger("occurrence_agent").error(
            "cannot start: %s", exc, extra={"event": "runtime.start_failed"})
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
