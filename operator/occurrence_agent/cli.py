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
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from occurrence_agent.config import ENV_NAMES, AgentConfig, ConfigError, load_config
from occurrence_agent.logs import configure_logging
from occurrence_agent.runtime import OccurrenceRuntime, StartupError

PROG = "occurrence-agent"


_OPTION_NAMES = {"journal_path": "--journal"}
"""Options not spelled as their setting's name."""


def build_parser() -> argparse.ArgumentParser:
    """One option per `AgentConfig` setting, its help from the setting's description, its
    default and its environment variable: the settings are declared once, in config.py."""
    p = argparse.ArgumentParser(
        prog=PROG, description="Run one occurrence of the agent: register, join the shared "
        "wakeup, process this occurrence's own tasks, serve the HTTP API.",
        epilog="Every option also reads an environment variable (shown in brackets).",
        allow_abbrev=False)  # the operator refuses its own flags in spec.args by exact name
    for name, setting in AgentConfig.model_fields.items():
        flag = _OPTION_NAMES.get(name, "--" + name.replace("_", "-"))
        help_text = _help(name, setting)
        kind = _value_type(setting.annotation)
        if name == "migrate":  # on, off, or left to the database kind
            both = p.add_mutually_exclusive_group()
            both.add_argument(flag, dest=name, action="store_const", const=True, help=help_text)
            both.add_argument("--no-migrate", dest=name, action="store_const", const=False)
        elif kind is bool:
            p.add_argument(flag, dest=name, action="store_const", const=True, help=help_text)
        elif get_origin(kind) is Literal:
            p.add_argument(flag, dest=name, choices=get_args(kind), help=help_text)
        else:
            p.add_argument(flag, dest=name, type=kind, help=help_text)
    return p


def _value_type(annotation: Any) -> Any:
    """The type an option parses to: `X | None` is X, a NewType its base type."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (UnionType, Union) and len(args) == 1:
        annotation = args[0]
    return getattr(annotation, "__supertype__", annotation)


def _help(name: str, setting: FieldInfo) -> str:
    text = (setting.description or "").rstrip(".")
    default = setting.default
    if default is not PydanticUndefined and default not in (None, "") and default is not False:
        text += f" (default {default:g})" if isinstance(default, float) else f" (default {default})"
    return f"{text} [{ENV_NAMES[name]}]"


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
