"""``occurrence-store``: migrate, inspect occurrences, submit, list and find tasks, drain.

Every listing takes ``--output json`` (keys documented in docs/cli.md, stable across
releases), before or after the command. Errors are one line on stderr with a non-zero exit,
never a traceback. Read-only commands never create a database; an occurrence is retired only
once it owns no pending or active work, and a retired one is given none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from occurrence_store.errors import StoreError, UnknownOccurrence, VersionConflict
from occurrence_store.models import (
    DEFAULT_AGENT_ID,
    AgentId,
    DrainResult,
    InFlightPolicy,
    OccurrenceId,
    OccurrenceState,
    TaskStatus,
    validate_occurrence_id,
)
from occurrence_store.store import Store
from occurrence_store.urls import DatabaseURL, default_database_url, parse_database_url

EXIT_ERROR = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="occurrence-store",
        description="Inspect and operate the occurrence database (PostgreSQL or SQLite).",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="postgresql://USER@HOST:PORT/DB or sqlite:///PATH (default: $DATABASE_URL, else "
        f"the embedded SQLite file {default_database_url()})",
    )
    _output(parser, default="text",
            help_text="text or json, here or after any command; a command's own -o wins "
            "(default: text)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = sub.add_parser("migrate", help="apply pending schema migrations")
    migrate.add_argument("--status", action="store_true", help="show migrations, apply nothing")
    _output(migrate)

    occ = sub.add_parser("occurrences", help="list occurrences: state, heartbeat, pending work")
    occ.add_argument("--agent", metavar="NAMESPACE/NAME", type=AgentId,
                     help="list only the occurrences of this agent (AgentDeployment); an "
                     "unknown agent lists none")
    occ_sub = occ.add_subparsers(dest="occ_command", metavar="SUBCOMMAND")
    reg = occ_sub.add_parser("register", help="register an occurrence (as its runtime would)")
    reg.add_argument("occurrence_id", type=OccurrenceId)
    reg.add_argument("--ordinal", type=_non_negative_int)
    _output(reg)
    state = occ_sub.add_parser(
        "state", help="set an occurrence's lifecycle state (draining fences it: its runtime "
        "stops taking work)")
    state.add_argument("occurrence_id", type=OccurrenceId)
    state.add_argument("state", choices=[s.value for s in OccurrenceState])
    state.add_argument("--expected-version", type=int,
                       help="only if the row still has this version (else: conflict error)")
    state.add_argument("--force", action="store_true",
                       help="with retired: first drain its pending and active tasks onto the "
                       "other active occurrences of its agent (in-flight thoughts released)")
    _output(state)
    disown = occ_sub.add_parser(
        "disown", help="forget which agent owns these occurrence ids (its AgentDeployment is "
        "gone for good and another one should take them)")
    disown.add_argument("occurrence_ids", nargs="+", metavar="ID", type=OccurrenceId)
    _output(disown)
    _output(occ)

    tasks = sub.add_parser("tasks", help="submit, list or find tasks")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", required=True, metavar="SUBCOMMAND")
    submit = tasks_sub.add_parser("submit", help="add pending tasks to an occurrence")
    submit.add_argument("--occurrence", required=True, type=OccurrenceId)
    submit.add_argument("--description", required=True)
    submit.add_argument("--count", type=_positive_int, default=1)
    submit.add_argument("--channel", default="")
    submit.add_argument("--idempotency-key",
                        help="submit once: if the agent already has a task with this key, "
                        "print it instead of adding another (needs --count 1)")
    _output(submit)
    listing = tasks_sub.add_parser("list", help="list an occurrence's tasks")
    listing.add_argument("--occurrence", required=True, type=OccurrenceId)
    listing.add_argument("--status", choices=[s.value for s in TaskStatus])
    _output(listing)
    show = tasks_sub.add_parser(
        "show", help="find one task wherever it is: owner, status, thoughts, transfer history")
    show.add_argument("task_id", metavar="TASK_ID")
    _output(show)

    requeues = sub.add_parser(
        "requeues", help="tasks a rolled-back revision failed that went back to pending")
    requeues.add_argument("--agent", metavar="NAMESPACE/NAME", required=True, type=AgentId,
                          help="the agent (AgentDeployment) whose rollbacks to list")
    requeues.add_argument("--revision", help="only those of this revision")
    requeues.add_argument("--limit", type=_positive_int, default=100,
                          help="newest first, at most this many (at most 1000; default 100)")
    _output(requeues)

    drain = sub.add_parser("drain", help="move an occurrence's pending work to survivors")
    drain.add_argument("--from", dest="source", required=True, type=OccurrenceId)
    drain.add_argument("--to", dest="targets", required=True,
                       help="comma-separated survivor occurrence ids")
    drain.add_argument("--in-flight", choices=[*(p.value for p in InFlightPolicy), "leave"],
                       default=InFlightPolicy.RELEASE.value,
                       help="release: processing thoughts go back to pending and move; "
                       "wait: tasks with processing thoughts stay; leave: deprecated synonym "
                       "of wait (default: release)")
    drain.add_argument("--batch-size", type=_positive_int, default=25_000)
    drain.add_argument("--reason", default="manual drain")
    _output(drain)
    return parser


def _output(p: argparse.ArgumentParser, *, default: str = argparse.SUPPRESS,
            help_text: str | None = None) -> None:
    """``-o/--output``. Only the top level has a default: a command's option sets the value
    only when given (so ``occurrence-store -o json occurrences`` keeps json)."""
    p.add_argument("--output", "-o", choices=["text", "json"], default=default, help=help_text)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, else a one-line usage error."""
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not >= {minimum}")
        return n
    return parse


_non_negative_int = _int_at_least(0)
_positive_int = _int_at_least(1)


def _emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    if args.output == "json":
        print(json.dumps(payload, indent=2, sort_keys=True, default=str))
    else:
        print(text)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


async def _known(store: Store, occurrence_id: OccurrenceId) -> None:
    """Refuse ids that are neither registered nor own any work: almost always a typo."""
    validate_occurrence_id(occurrence_id)
    if await store.registry.get(occurrence_id) is not None:
        return
    if await store.scope(occurrence_id).count_tasks() > 0:
        return
    known = ", ".join(o.occurrence_id for o in await store.registry.list()) or "none"
    raise UnknownOccurrence(
        f"unknown occurrence {occurrence_id!r} (registered: {known}); "
        "register it with `occurrence-store occurrences register ID`"
    )


def _read_only(args: argparse.Namespace) -> bool:
    """Commands that only read: they must never create a database (a typo in the URL)."""
    if args.command == "migrate":
        return bool(args.status)
    if args.command == "occurrences":
        return getattr(args, "occ_command", None) is None
    if args.command == "tasks":
        return args.tasks_command in ("list", "show")
    return bool(args.command == "requeues")


def _require_database(url: DatabaseURL) -> None:
    """A read-only command on a SQLite file that does not exist: refuse before opening it
    (opening creates the file and its directory)."""
    if url.dialect == "sqlite" and url.sqlite_path and not Path(url.sqlite_path).exists():
        raise StoreError(
            f"no database at {url.sqlite_path}: a read-only command creates none "
            "(check --database-url or $DATABASE_URL)"
        )


async def _run(args: argparse.Namespace) -> int:
    url = parse_database_url(args.database_url)
    if _read_only(args):
        _require_database(url)
    store = await Store.open(url)
    try:
        if args.command == "migrate":
            return await _cmd_migrate(store, args)
        await _require_schema(store)
        if args.command == "occurrences":
            return await _cmd_occurrences(store, args)
        if args.command == "tasks":
            return await _cmd_tasks(store, args)
        if args.command == "drain":
            return await _cmd_drain(store, args)
        if args.command == "requeues":
            return await _cmd_requeues(store, args)
        raise AssertionError(args.command)
    finally:
        await store.close()


async def _require_schema(store: Store) -> None:
    pending = [s for s in await store.migrator.status() if not s.applied]
    if pending:
        raise StoreError(
            f"database schema is not migrated ({len(pending)} pending): run "
            "`occurrence-store migrate` first"
        )


async def _cmd_migrate(store: Store, args: argparse.Namespace) -> int:
    if not args.status:
        applied = await store.migrator.migrate()
        payload = {"applied": [{"version": m.version, "name": m.name} for m in applied]}
        text = ("\n".join(f"applied {m.version:03d}_{m.name}" for m in applied)
                or "schema is up to date")
        _emit(args, payload, text)
        return 0
    statuses = await store.migrator.status()
    payload = {"migrations": [
        {"version": s.version, "name": s.name, "applied": s.applied,
         "applied_at": s.applied_at.isoformat() if s.applied_at else None,
         "checksum_ok": s.checksum_ok} for s in statuses]}
    rows = [(f"{s.version:03d}", s.name,
             ("applied" if s.checksum_ok else "applied, EDITED since (checksum differs)")
             if s.applied else "pending",
             s.applied_at.isoformat() if s.applied_at else "-") for s in statuses]
    _emit(args, payload, _table(("VERSION", "NAME", "STATE", "APPLIED AT"), rows))
    return 0


async def _cmd_occurrences(store: Store, args: argparse.Namespace) -> int:
    if getattr(args, "occ_command", None) == "register":
        occ = await store.registry.register(args.occurrence_id, ordinal=args.ordinal)
        _emit(args, {"occurrence_id": occ.occurrence_id, "state": occ.state.value},
              f"registered {occ.occurrence_id} ({occ.state.value})")
        return 0
    if getattr(args, "occ_command", None) == "disown":
        changed = await store.registry.disown(args.occurrence_ids)
        _emit(args, {"occurrence_ids": args.occurrence_ids, "changed": changed},
              f"{changed} occurrence id(s) disowned")
        return 0
    if getattr(args, "occ_command", None) == "state":
        return await _cmd_state(store, args)
    occurrences = await store.registry.list(agent_id=args.agent)
    payload = {"occurrences": [
        {"occurrence_id": o.occurrence_id, "ordinal": o.ordinal, "state": o.state.value,
         "version": o.version, "quiesced": o.quiesced,
         "heartbeat_age_seconds": round(o.heartbeat_age(), 3),
         "lease_expired": o.lease_expired(), "agent_id": o.agent_id,
         "pending_tasks": o.pending_tasks, "active_tasks": o.active_tasks}
        for o in occurrences]}
    rows = [(o.occurrence_id, o.state.value + (" (lease expired)" if o.lease_expired() else ""),
             f"{o.heartbeat_age():.1f}s", o.pending_tasks, o.active_tasks, o.agent_id or "-")
            for o in occurrences]
    _emit(args, payload, _table(
        ("OCCURRENCE", "STATE", "HEARTBEAT AGE", "PENDING", "ACTIVE", "AGENT"), rows))
    return 0


async def _cmd_state(store: Store, args: argparse.Namespace) -> int:
    await _known(store, args.occurrence_id)
    state = OccurrenceState(args.state)
    drained = None
    if state is OccurrenceState.RETIRED:
        drained = await _empty_before_retiring(store, args)
    occ = await store.registry.set_state(args.occurrence_id, state,
                                         expected_version=args.expected_version)
    text = f"{occ.occurrence_id} is {occ.state.value} (version {occ.version})"
    if drained is not None:
        text = (f"moved {drained.tasks_moved} task(s) and {drained.thoughts_moved} thought(s) "
                f"from {args.occurrence_id}: "
                + ", ".join(f"{k}={v}" for k, v in drained.per_target.items())
                + f"\n{text}")
    _emit(args, {"occurrence_id": occ.occurrence_id, "state": occ.state.value,
                 "version": occ.version,
                 "drained": drained.model_dump() if drained is not None else None}, text)
    return 0


async def _unfinished(store: Store, occurrence_id: OccurrenceId) -> int:
    """Pending and active tasks: the work nobody would run once the occurrence is retired."""
    scope = store.scope(occurrence_id)
    return (await scope.count_tasks(TaskStatus.PENDING)
            + await scope.count_tasks(TaskStatus.ACTIVE))


async def _empty_before_retiring(store: Store, args: argparse.Namespace) -> DrainResult | None:
    """Refuse to retire an occurrence that owns work, unless ``--force``: then drain the work
    onto the other active occurrences of its agent first. ``None``: nothing had to move."""
    occurrence_id = args.occurrence_id
    owned = await _unfinished(store, occurrence_id)
    if owned == 0:
        return None
    if not args.force:
        raise StoreError(
            f"occurrence {occurrence_id!r} owns {owned} pending or active task(s) that nobody "
            f"would run once it is retired: drain it first with `occurrence-store drain --from "
            f"{occurrence_id} --to ID[,ID...]`, or add --force to move them to the other "
            "active occurrences of its agent"
        )
    row = await store.registry.get(occurrence_id)
    if args.expected_version is not None and (row is None
                                              or row.version != args.expected_version):
        # checked before any work moves; set_state checks it again when it writes
        raise VersionConflict(occurrence_id, args.expected_version,
                              row.version if row is not None else None)
    agent_id = row.agent_id if row is not None else DEFAULT_AGENT_ID
    targets = [o.occurrence_id for o in await store.registry.list(
        state=OccurrenceState.ACTIVE, agent_id=agent_id) if o.occurrence_id != occurrence_id]
    if not targets:
        agent = f"of its agent {agent_id!r}" if agent_id else "without an agent (it has none)"
        raise StoreError(
            f"cannot retire {occurrence_id!r} with --force: no other active occurrence "
            f"{agent} can take its {owned} pending or active task(s); register or activate "
            f"one, or drain it with `occurrence-store drain --from {occurrence_id} --to ID`"
        )
    result = await store.transfers.drain(
        occurrence_id, targets, in_flight=InFlightPolicy.RELEASE, reason="retire --force")
    left = await _unfinished(store, occurrence_id)
    if left:
        raise StoreError(
            f"{left} task(s) reached {occurrence_id!r} while it was drained (moved: "
            f"{result.tasks_moved}): not retired; run it again"
        )
    return result


async def _cmd_tasks(store: Store, args: argparse.Namespace) -> int:
    if args.tasks_command == "show":
        return await _cmd_show(store, args)
    await _known(store, args.occurrence)
    if args.tasks_command == "submit":
        occ = await store.registry.get(args.occurrence)
        if occ is not None and occ.state is OccurrenceState.RETIRED:
            raise StoreError(
                f"occurrence {args.occurrence!r} is retired: nothing would ever run its tasks; "
                "submit to an active occurrence"
            )
    scope = store.scope(args.occurrence)
    if args.tasks_command == "submit" and args.idempotency_key is not None:
        if args.count != 1:
            raise StoreError("--idempotency-key submits one task: drop --count or use --count 1")
        task, created = await scope.add_task_once(
            args.description, idempotency_key=args.idempotency_key, channel_id=args.channel)
        _emit(args, {"occurrence_id": task.agent_occurrence_id, "task_ids": [task.task_id],
                     "created": created},
              f"submitted task {task.task_id} to {task.agent_occurrence_id}" if created else
              f"task {task.task_id} (on {task.agent_occurrence_id}) already has idempotency key "
              f"{args.idempotency_key!r}: nothing submitted")
        return 0
    if args.tasks_command == "submit":
        ids = await scope.add_tasks([args.description] * args.count, channel_id=args.channel)
        _emit(args, {"occurrence_id": args.occurrence, "task_ids": ids, "created": True},
              f"submitted {len(ids)} task(s) to {args.occurrence}")
        return 0
    tasks = (await scope.get_tasks_by_status(TaskStatus(args.status)) if args.status
             else await scope.get_all_tasks())
    payload = {"occurrence_id": args.occurrence, "tasks": [
        {"task_id": t.task_id, "status": t.status.value, "description": t.description,
         "channel_id": t.channel_id, "priority": t.priority,
         "created_at": t.created_at.isoformat(), "updated_at": t.updated_at.isoformat()}
        for t in tasks]}
    rows = [(t.task_id, t.status.value, t.priority, t.description[:60]) for t in tasks]
    _emit(args, payload, _table(("TASK", "STATUS", "PRIORITY", "DESCRIPTION"), rows))
    return 0


async def _cmd_requeues(store: Store, args: argparse.Namespace) -> int:
    records = await store.requeues.records(args.agent, revision=args.revision,
                                           limit=min(args.limit, 1000))
    payload = {"agent_id": args.agent, "requeues": [
        r.model_dump(mode="json") for r in records]}
    rows = [(r.task_id, r.occurrence_id, r.revision, r.requeued_at.isoformat(timespec="seconds"),
             r.reason[:60]) for r in records]
    _emit(args, payload, _table(("TASK", "OCCURRENCE", "REVISION", "REQUEUED", "REASON"), rows))
    return 0


async def _cmd_show(store: Store, args: argparse.Namespace) -> int:
    report = await store.unscoped.find_task(args.task_id)
    if report is None:
        raise StoreError(f"no task {args.task_id!r} in this database")
    task = report.task
    payload = {
        "task": {**task.model_dump(mode="json"), "owner": task.agent_occurrence_id},
        "thoughts": [t.model_dump(mode="json") for t in report.thoughts],
        "transfers": [r.model_dump(mode="json") for r in report.transfers],
    }
    lines = [
        f"task         {task.task_id}",
        f"owner        {task.agent_occurrence_id}" + (f" (agent {task.agent_id})"
                                                      if task.agent_id else ""),
        f"status       {task.status.value}",
        f"description  {task.description[:200]}",
        f"created      {task.created_at.isoformat()}",
        f"updated      {task.updated_at.isoformat()}",
    ]
    if task.idempotency_key:
        lines.append(f"key          {task.idempotency_key}")
    if task.outcome:
        lines.append(f"outcome      {json.dumps(task.outcome, sort_keys=True)[:200]}")
    lines += ["", f"thoughts ({len(report.thoughts)})", _table(
        ("THOUGHT", "OWNER", "STATUS", "DEPTH", "ATTEMPTS", "LAST ERROR"),
        [(t.thought_id, t.agent_occurrence_id, t.status.value, t.thought_depth, t.attempts,
          (t.last_error or "-")[:60]) for t in report.thoughts])]
    lines += ["", f"transfers ({len(report.transfers)})", _table(
        ("WHEN", "FROM", "TO", "THOUGHTS", "REASON"),
        [(r.transferred_at.isoformat(), r.from_occurrence_id, r.to_occurrence_id,
          r.thoughts_moved, r.reason) for r in report.transfers])]
    _emit(args, payload, "\n".join(lines))
    return 0


async def _cmd_drain(store: Store, args: argparse.Namespace) -> int:
    targets = [OccurrenceId(t.strip()) for t in args.targets.split(",") if t.strip()]
    if not targets:
        raise StoreError("--to needs at least one survivor occurrence id")
    await _known(store, args.source)
    for target in targets:
        validate_occurrence_id(target)
        if await store.registry.get(target) is None:
            raise UnknownOccurrence(
                f"survivor {target!r} is not registered: work would go to nobody"
            )
    result = await store.transfers.drain(
        args.source, targets, in_flight=InFlightPolicy(args.in_flight), reason=args.reason,
        batch_size=args.batch_size,
    )
    payload = result.model_dump()
    text = (f"moved {result.tasks_moved} task(s) and {result.thoughts_moved} thought(s) from "
            f"{args.source}: " + ", ".join(f"{k}={v}" for k, v in result.per_target.items())
            + (f"; {result.tasks_left_in_flight} left in flight"
               if result.tasks_left_in_flight else ""))
    _emit(args, payload, text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "force", False) and args.state != OccurrenceState.RETIRED.value:
        parser.error("--force applies only to `occurrences state ID retired`")
    if args.command == "occurrences" and args.agent is not None and (
            args.occ_command is not None):
        parser.error(f"--agent filters the listing: `occurrences {args.occ_command}` "
                     "does not take it")
    try:
        return asyncio.run(_run(args))
    except StoreError as exc:
        print(f"occurrence-store: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
