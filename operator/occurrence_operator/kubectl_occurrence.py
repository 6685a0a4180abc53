"""`kubectl occurrence`: a fleet at a glance, and the controls, from a laptop.

A kubectl plugin (krew-style name: the console script `kubectl-occurrence` on PATH makes
`kubectl occurrence …` work). It talks only to the API server, with the user's kubeconfig and
RBAC: it reads the AgentDeployment (its status is what the operator measured in the shared
database) and edits what the operator acts on — `spec.fencedOccurrences`, the
`occurrence.dev/reconcile` pause annotation, the `occurrence.dev/rollout` command annotation.
It never sees a database password.

    kubectl occurrence status NAME            # one screen: size, backlog, occurrences, drain,
                                              # rollout, conditions
    kubectl occurrence fence NAME OCC...      # take occurrences out of work (any ordinal)
    kubectl occurrence unfence NAME OCC...
    kubectl occurrence pause NAME             # the operator keeps its hands off
    kubectl occurrence resume NAME
    kubectl occurrence rollout status|promote|abort|retry NAME
    kubectl occurrence drain NAME --from OCC [--timeout S]   # fence, wait until it is empty
    kubectl occurrence tasks NAME [--occurrence OCC] [--status S] [--limit N]
    kubectl occurrence task NAME TASK_ID [--occurrence OCC]   # a task and its thoughts

`tasks` and `task` ask the agents themselves (their HTTP API, through a port-forward the API
server opens, with the AgentDeployment's work token read from its Secret): your RBAC needs
`pods/portforward` create and `secrets` get in the namespace (see :mod:`.agent_api`).

`-o json|yaml` anywhere on the line prints the machine-readable form. Errors are one line on
stderr, exit 1 (usage errors: exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from occurrence_store.models import OccurrenceId, TaskStatus

from .kube.agd_object import agd_path
from .kube.agent_api import (
    AgentApi,
    AgentApiError,
    Answer,
    agent_pod_ok,
    path_of,
    read_token,
    task_path,
)
from .kube.client import ApiError, Kube, collection_path, object_path
from .model.naming import ordinal_of, selector_string
from .model.never_adopt import owned_by
from .model.pause import PAUSED_VALUE, RECONCILE_ANNOTATION
from .rollout.planner import COMMANDS, ROLLOUT_ANNOTATION

EXIT_ERROR = 1
OUTPUTS = ("text", "json", "yaml")


class PluginError(Exception):
    """A one-line error for the user."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl occurrence",
        description="See and steer AgentDeployments (the occurrence operator) through the API "
        "server, with your kubeconfig.")
    _connection(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = sub.add_parser("status", help="size, backlog, occurrences, drain, rollout, "
                            "conditions of one AgentDeployment")
    status.add_argument("name")
    for verb, text in (("fence", "take occurrences out of work while their pods keep running "
                                 "(spec.fencedOccurrences)"),
                       ("unfence", "give fenced occurrences their work back")):
        fence = sub.add_parser(verb, help=text)
        fence.add_argument("name")
        fence.add_argument("occurrences", nargs="+", metavar="OCCURRENCE",
                           help="occurrence id NAME-K, or the ordinal K")
    for verb, text in (("pause", "the operator writes nothing for it (incident mode)"),
                       ("resume", "the operator reconciles it again")):
        sub.add_parser(verb, help=text).add_argument("name")
    rollout = sub.add_parser("rollout", help="a canary rollout: status, promote, abort, retry")
    rollout.add_argument("action", choices=("status", *COMMANDS))
    rollout.add_argument("name")
    drain = sub.add_parser("drain", help="fence an occurrence and wait until the operator has "
                           "moved its pending and active work to the others (it stays fenced "
                           "until `unfence`, like a cordoned node)")
    drain.add_argument("name")
    drain.add_argument("--from", dest="source", required=True, metavar="OCCURRENCE",
                       help="the occurrence to empty (NAME-K, or K)")
    drain.add_argument("--timeout", type=_seconds, default=300.0,
                       help="seconds to wait (default 300); 0: do not wait")
    tasks = sub.add_parser("tasks", help="tasks of each occurrence, oldest first, as its "
                           "agent answers (one page per occurrence)")
    tasks.add_argument("name")
    tasks.add_argument("--status", choices=[s.value for s in TaskStatus])
    tasks.add_argument("--limit", type=_page_size, default=20,
                       help=f"tasks per occurrence, 1-{MAX_TASKS} (default 20)")
    task = sub.add_parser("task", help="one task and its thoughts, from the occurrence that "
                          "owns it")
    task.add_argument("name")
    task.add_argument("task_id", metavar="TASK_ID")
    for child in (tasks, task):
        child.add_argument("--occurrence", metavar="OCCURRENCE",
                           help="ask only this occurrence (NAME-K, or K)")
    for child in (status, rollout, drain, tasks, task, *(sub.choices[v] for v in
                                                  ("fence", "unfence", "pause", "resume"))):
        _connection(child, top=False)
    return parser


MAX_TASKS = 1000
"""The most tasks asked of one occurrence (the agent's page bound)."""


def _bounded(kind: type[int] | type[float], low: float, high: float
             ) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` within [low, high]."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low:g}-{high:g}, got {text}")
        return value
    return parse


MAX_WAIT_SECONDS = 86_400
_page_size = _bounded(int, 1, MAX_TASKS)
_seconds = _bounded(float, 0, MAX_WAIT_SECONDS)

DRAIN_POLL_SECONDS = 2.0


def _connection(p: argparse.ArgumentParser, *, top: bool) -> None:
    """Flags accepted before and after the command; the one after it wins."""
    default = None if top else argparse.SUPPRESS
    p.add_argument("-n", "--namespace", default=default,
                   help="the AgentDeployment's namespace (default: the context's)")
    p.add_argument("--context", default=default, help="kubeconfig context")
    p.add_argument("--kubeconfig", default=default, help="kubeconfig file")
    p.add_argument("-o", "--output", choices=OUTPUTS, default=default,
                   help="text (default), json or yaml")


def _context_namespace(kubeconfig: str | None, context: str | None) -> str:
    from kubernetes import config

    contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
        config_file=kubeconfig)
    chosen = next((c for c in contexts if c["name"] == context), None) if context else active
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


# -- commands ---------------------------------------------------------------------------------


async def _get(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    try:
        body = await kube.get(agd_path(namespace, name))
    except ApiError as e:
        raise _api_error(e, namespace, name) from None
    if body is None:
        raise PluginError(f"AgentDeployment {namespace}/{name} not found")
    return body


async def _patch(kube: Kube, namespace: str, name: str, patch: Mapping[str, Any]
                 ) -> dict[str, Any]:
    try:
        return await kube.merge_patch(agd_path(namespace, name), patch)
    except ApiError as e:
        raise _api_error(e, namespace, name) from None


def _api_error(e: ApiError, namespace: str, name: str) -> PluginError:
    if e.status == 404:
        return PluginError(f"AgentDeployment {namespace}/{name} not found")
    if e.status == 409:
        return PluginError(f"AgentDeployment {namespace}/{name} changed meanwhile: try again")
    return PluginError(f"the API server refused ({e.status}): {e.message}")


def fence_ids(name: str, requested: Sequence[str]) -> list[OccurrenceId]:
    """`NAME-K` or `K` → `NAME-K`; anything else is refused before anything is written."""
    ids = []
    for text in requested:
        occurrence = f"{name}-{text}" if text.isdigit() and text.isascii() else text
        if ordinal_of(occurrence, name) is None:
            raise PluginError(f"{text!r} is not an occurrence of {name} ({name}-K, or K)")
        ids.append(OccurrenceId(occurrence))
    return ids


async def _fence(kube: Kube, namespace: str, name: str, requested: Sequence[str],
                 *, fence: bool) -> dict[str, Any]:
    wanted = fence_ids(name, requested)
    body = await _get(kube, namespace, name)
    current = list((body.get("spec") or {}).get("fencedOccurrences") or [])
    after = sorted({*current, *wanted} if fence else set(current) - set(wanted),
                   key=lambda o: ordinal_of(o, name) or 0)
    if after == sorted(current, key=lambda o: ordinal_of(o, name) or 0):
        return {"fencedOccurrences": current, "changed": False}
    # the resourceVersion makes it a compare-and-swap: a concurrent edit is a 409, not lost
    patch = {"metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
             "spec": {"fencedOccurrences": after or None}}
    await _patch(kube, namespace, name, patch)
    return {"fencedOccurrences": after, "changed": True}


@dataclass
class Agents:
    """The agent pods of one AgentDeployment that may be asked, and the API to ask them."""

    api: AgentApi
    pods: list[str]
    """Pod names (= occurrence ids), by ordinal."""
    skipped: dict[str, str]
    """Pods not asked, and why."""


async def _agents(kube: Kube, namespace: str, name: str, only: str | None) -> Agents:
    """The AgentDeployment's running agent pods (only `only` when given) and its work token —
    each checked to be the AgentDeployment's before a token goes anywhere."""
    agd = await _get(kube, namespace, name)
    if only is not None:
        (only,) = fence_ids(name, [only])
    try:
        token = await read_token(kube, namespace, agd)
        sts = await kube.get(object_path("apps/v1", "StatefulSet", namespace, name))
        if sts is None or not owned_by(sts, agd["metadata"]["uid"]):
            raise PluginError(f"StatefulSet {namespace}/{name} is missing or not the "
                              "AgentDeployment's: no agent is asked")
        pods = await kube.list(collection_path("v1", "Pod", namespace), selector_string(name))
    except AgentApiError as e:
        raise PluginError(str(e)) from None
    except ApiError as e:
        raise PluginError(f"the API server refused ({e.status}): {e.message}") from None
    asked: list[tuple[int, str]] = []
    skipped: dict[str, str] = {}
    for pod in pods:
        pod_name = pod["metadata"]["name"]
        ordinal = ordinal_of(pod_name, name)
        if ordinal is None or (only is not None and pod_name != only):
            continue
        if why := agent_pod_ok(pod, name, sts["metadata"]["uid"]):
            skipped[pod_name] = why
        else:
            asked.append((ordinal, pod_name))
    if only is not None and not asked:
        raise PluginError(f"{only}: {skipped.get(only, 'no such pod')}")
    port = int((agd.get("spec") or {}).get("port") or 8080)
    return Agents(AgentApi(kube, namespace, port, token), [p for _, p in sorted(asked)],
                  skipped)


def _refused(pod: str, answer: Answer) -> str:
    body = answer.body
    detail = body.get("error") if isinstance(body, dict) else body
    return f"{pod}: the agent answered {answer.status}: {str(detail or '')[:200]}".rstrip(": ")


async def _tasks(kube: Kube, namespace: str, name: str, only: str | None, status: str | None,
                 limit: int) -> dict[str, Any]:
    agents = await _agents(kube, namespace, name, only)
    path = path_of("/tasks", {"status": status, "limit": limit})
    occurrences: dict[str, Any] = {}
    errors = dict(agents.skipped)
    for pod in agents.pods:
        try:
            answer = await agents.api.get(pod, path)
        except AgentApiError as e:
            errors[pod] = str(e)
            continue
        if answer.status != 200 or not isinstance(answer.body, dict):
            errors[pod] = _refused(pod, answer)
            continue
        occurrences[pod] = {"total": answer.body.get("total"),
                            "tasks": answer.body.get("tasks") or []}
    return {"occurrences": occurrences, "errors": errors}


async def _task(kube: Kube, namespace: str, name: str, only: str | None, task_id: str
                ) -> dict[str, Any]:
    agents = await _agents(kube, namespace, name, only)
    errors = dict(agents.skipped)
    for pod in agents.pods:
        try:
            answer = await agents.api.get(pod, task_path(task_id))
            if answer.status == 404:
                continue
            if answer.status != 200:
                errors[pod] = _refused(pod, answer)
                continue
            thoughts = await agents.api.get(pod, task_path(task_id, thoughts=True))
        except AgentApiError as e:
            errors[pod] = str(e)
            continue
        listed = thoughts.body.get("thoughts") if isinstance(thoughts.body, dict) else None
        return {"occurrence": pod, "task": answer.body, "thoughts": listed or [],
                "errors": errors}
    where = "; ".join(f"{pod}: {why}" for pod, why in errors.items())
    raise PluginError(f"task {task_id!r} not found on any occurrence of {namespace}/{name} "
                      f"that answered" + (f" (not asked: {where})" if where else ""))


def render_tasks(result: Mapping[str, Any]) -> str:
    rows = [(pod, t.get("task_id"), t.get("status"), t.get("priority"), t.get("updated_at"),
             (t.get("description") or "")[:60])
            for pod, page in result["occurrences"].items() for t in page["tasks"]]
    lines = [_table(("OCCURRENCE", "TASK", "STATUS", "PRIORITY", "UPDATED", "DESCRIPTION"),
                    rows)] if rows else ["no tasks"]
    lines += [f"{pod}: {len(page['tasks'])} shown of {_dash(page['total'])}"
              for pod, page in result["occurrences"].items()]
    return "\n".join(lines)


def render_task(result: Mapping[str, Any]) -> str:
    task = result["task"]
    fields = [(k, task.get(k)) for k in (
        "task_id", "status", "priority", "description", "created_at", "updated_at",
        "agent_occurrence_id", "correlation_id") if task.get(k) not in (None, "")]
    if task.get("outcome"):
        fields.append(("outcome", json.dumps(task["outcome"], sort_keys=True)[:300]))
    width = max(len(k) for k, _ in fields) + 1
    lines = [f"{k:<{width}} {v}" for k, v in fields]
    lines += ["", _table(("THOUGHT", "STATUS", "ROUND", "UPDATED"), [
        (t.get("thought_id"), t.get("status"), _dash(t.get("round_number")),
         t.get("updated_at")) for t in result["thoughts"]]) if result["thoughts"]
        else "no thoughts"]
    return "\n".join(lines)


def _warn(errors: Mapping[str, str]) -> None:
    for pod, why in errors.items():
        one_line = " ".join(why.removeprefix(pod + ": ").split())
        print(f"kubectl occurrence: warning: {pod}: {one_line}", file=sys.stderr)


def drained(body: Mapping[str, Any], occurrence: str, generation: int) -> dict[str, Any] | None:
    """The occurrence's status row once the operator has acted on the fence (status observed
    at `generation` or later, the registry says draining) and nothing is left on it."""
    status = body.get("status") or {}
    if int(status.get("observedGeneration") or 0) < generation:
        return None
    row = next((o for o in status.get("occurrences") or () if o.get("id") == occurrence), None)
    if row is None or row.get("state") != "draining" or row.get("pendingTasks"):
        return None
    return dict(row)


async def _drain(kube: Kube, namespace: str, name: str, source: str, timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    (occurrence,) = fence_ids(name, [source])
    body = await _get(kube, namespace, name)
    replicas = int((body.get("spec") or {}).get("replicas") or 0)
    if (ordinal_of(occurrence, name) or 0) >= replicas:
        raise PluginError(f"{occurrence} is not one of the {replicas} occurrences of "
                          f"{namespace}/{name}: nothing runs there to drain")
    fenced = await _fence(kube, namespace, name, [occurrence], fence=True)
    body = await _get(kube, namespace, name)
    generation = int(body["metadata"].get("generation") or 0)
    started = clock()
    result = {"occurrence": occurrence, "fenced": True, "changed": fenced["changed"],
              "drained": False}
    if timeout <= 0:
        return result
    while True:
        if row := drained(body, occurrence, generation):
            return {**result, "drained": True, "seconds": round(clock() - started, 1),
                    "row": row}
        if clock() - started >= timeout:
            rows: list[dict[str, Any]] = (body.get("status") or {}).get("occurrences") or []
            row = next((o for o in rows if o.get("id") == occurrence), {})
            raise PluginError(
                f"{occurrence} is fenced but not empty after {timeout:g}s (state "
                f"{row.get('state', '?')}, {_dash(row.get('pendingTasks'))} pending or active "
                f"task(s)); it stays fenced: `kubectl occurrence status {name}` shows why, "
                f"`kubectl occurrence unfence {name} {occurrence}` gives it work back")
        await asyncio.sleep(DRAIN_POLL_SECONDS)
        body = await _get(kube, namespace, name)


async def _annotate(kube: Kube, namespace: str, name: str, key: str, value: str | None
                    ) -> None:
    await _get(kube, namespace, name)  # a clear "not found" before any write
    await _patch(kube, namespace, name, {"metadata": {"annotations": {key: value}}})


def summarize(body: Mapping[str, Any]) -> dict[str, Any]:
    """The machine-readable status: what `status` prints."""
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    status = body.get("status") or {}
    annotations = meta.get("annotations") or {}
    name = meta.get("name", "")
    fenced = set(spec.get("fencedOccurrences") or ())
    return {
        "name": name,
        "namespace": meta.get("namespace"),
        "phase": status.get("phase"),
        "image": spec.get("image"),
        "replicas": {"desired": spec.get("replicas"), "ready": status.get("readyReplicas"),
                     "draining": status.get("drainingReplicas") or 0,
                     "fenced": status.get("fencedReplicas") or 0},
        "backlog": status.get("backlog"),
        "paused": annotations.get(RECONCILE_ANNOTATION) == PAUSED_VALUE,
        "schema": status.get("lastMigration"),
        "occurrences": [
            {**row, "fenced": row.get("id") in fenced}
            for row in status.get("occurrences") or ()],
        "fencedOccurrences": sorted(fenced, key=lambda o: ordinal_of(o, name) or 0),
        "scaleDown": status.get("scaleDown"),
        "rollout": status.get("rollout"),
        "conditions": status.get("conditions") or [],
    }


def render_status(summary: Mapping[str, Any]) -> str:
    r = summary["replicas"]
    ready: dict[str, Any] = next(
        (c for c in summary["conditions"] if c.get("type") == "Ready"), {})
    lines = [
        f"AgentDeployment  {summary['namespace']}/{summary['name']}",
        f"Phase            {summary['phase'] or '-'}"
        + (f" ({ready.get('message')})" if ready.get("message") else ""),
        f"Image            {summary['image']}",
        f"Occurrences      desired {r['desired']}, ready {r['ready'] or 0}, "
        f"draining {r['draining']}, fenced {r['fenced']}",
        f"Backlog          {'-' if summary['backlog'] is None else summary['backlog']} "
        "pending or active tasks",
        "Reconcile        " + ("PAUSED (occurrence.dev/reconcile=paused)" if summary["paused"]
                                else "on"),
    ]
    schema = summary["schema"] or {}
    if schema:
        lines.append(f"Schema           {schema.get('hash')} (Job {schema.get('jobName')})")
    drain = summary["scaleDown"] or {}
    if drain:
        lines.append(f"Scale-down       {drain.get('phase')}: {drain.get('message') or ''} "
                     f"({drain.get('transferred', 0)} tasks moved)".rstrip())
    rollout = summary["rollout"] or {}
    if rollout:
        lines.append(f"Rollout          {rollout.get('phase')}: wave {rollout.get('wave')}, "
                     f"{rollout.get('canaryOccurrences', 0)} canary "
                     f"({rollout.get('canaryRevision')} over {rollout.get('stableRevision')})")
    lines += ["", _table(("OCCURRENCE", "ORDINAL", "STATE", "PENDING", "HEARTBEAT", "FENCED"), [
        (o.get("id"), o.get("ordinal"), o.get("state"), _dash(o.get("pendingTasks")),
         _age(o.get("heartbeatAgeSeconds")), "yes" if o["fenced"] else "")
        for o in summary["occurrences"]])]
    lines += ["", _table(("CONDITION", "STATUS", "REASON", "MESSAGE"), [
        (c.get("type"), c.get("status"), c.get("reason"), (c.get("message") or "")[:80])
        for c in summary["conditions"]])]
    return "\n".join(lines)


def render_rollout(summary: Mapping[str, Any]) -> str:
    rollout = summary["rollout"]
    if not rollout:
        return (f"{summary['namespace']}/{summary['name']}: no canary rollout "
                "(spec.rollout.strategy is RollingUpdate, or no template change yet)")
    lines = [f"{k:<18} {rollout.get(k)}" for k in (
        "phase", "wave", "canaryOccurrences", "partition", "canaryRevision", "stableRevision",
        "startedAt", "bakeStartedAt", "message") if rollout.get(k) is not None]
    gates = rollout.get("gates") or []
    if gates:
        lines += ["", _table(("GATE", "VERDICT", "CANARY", "STABLE", "THRESHOLD", "SAMPLES",
                              "MESSAGE"), [
            (g.get("metric"), g.get("verdict"), _dash(g.get("canary")), _dash(g.get("stable")),
             g.get("threshold"), g.get("samples"), (g.get("message") or "")[:80])
            for g in gates])]
    failed_work = rollout.get("failedWork") or {}
    if failed_work:
        lines += ["", f"{'failedWork':<18} {failed_work.get('requeued', 0)} task(s) revision "
                  f"{failed_work.get('revision')} failed went back to pending"
                  + ("" if failed_work.get("complete") else " (still giving back)")
                  + "; list them: occurrence-store requeues --agent "
                  f"{summary['namespace']}/{summary['name']}"]
    return "\n".join(lines)


def _dash(value: Any) -> Any:
    return "-" if value is None else value


def _age(seconds: Any) -> str:
    return "-" if seconds is None else f"{seconds}s"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def _emit(output: str, payload: Any, text: Callable[[], str]) -> None:
    if output == "json":
        print(json.dumps(payload, indent=2, sort_keys=True))
    elif output == "yaml":
        print(yaml.safe_dump(payload, sort_keys=True), end="")
    else:
        print(text())


async def run(args: argparse.Namespace, kube: Kube) -> int:
    ns, name, out = args.namespace, args.name, args.output or "text"
    if args.command == "status":
        summary = summarize(await _get(kube, ns, name))
        _emit(out, summary, lambda: render_status(summary))
    elif args.command in ("fence", "unfence"):
        result = await _fence(kube, ns, name, args.occurrences, fence=args.command == "fence")
        listed = ", ".join(result["fencedOccurrences"]) or "none"
        _emit(out, result, lambda: f"{ns}/{name}: fenced {listed}"
              + ("" if result["changed"] else " (unchanged)"))
    elif args.command in ("pause", "resume"):
        value = PAUSED_VALUE if args.command == "pause" else None
        await _annotate(kube, ns, name, RECONCILE_ANNOTATION, value)
        _emit(out, {"paused": value is not None},
              lambda: f"{ns}/{name}: " + ("paused: the operator writes nothing for it until "
                                          "`kubectl occurrence resume`" if value else
                                          "resumed: the operator reconciles it again"))
    elif args.command == "drain":
        result = await _drain(kube, ns, name, args.source, args.timeout)
        occurrence = result["occurrence"]
        _emit(out, result, lambda: (
            f"{ns}/{name}: {occurrence} fenced and empty (0 pending or active tasks) after "
            f"{result['seconds']:g}s" if result["drained"] else
            f"{ns}/{name}: {occurrence} fenced (not waiting for it to empty)")
            + f"; it takes no work until `kubectl occurrence unfence {name} {occurrence}`")
    elif args.command == "tasks":
        result = await _tasks(kube, ns, name, args.occurrence, args.status, args.limit)
        _emit(out, result, lambda: render_tasks(result))
        _warn(result["errors"])
        return EXIT_ERROR if result["errors"] else 0
    elif args.command == "task":
        found = await _task(kube, ns, name, args.occurrence, args.task_id)
        _emit(out, found, lambda: render_task(found))
        _warn(found["errors"])
    elif args.action == "status":
        summary = summarize(await _get(kube, ns, name))
        _emit(out, summary["rollout"], lambda: render_rollout(summary))
    else:
        await _annotate(kube, ns, name, ROLLOUT_ANNOTATION, args.action)
        _emit(out, {"command": args.action},
              lambda: f"{ns}/{name}: {ROLLOUT_ANNOTATION}={args.action} sent (the operator "
              "acts on it and removes it; `kubectl occurrence rollout status` shows the result)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("fence", "unfence"):
            fence_ids(args.name, args.occurrences)  # refuse a bad id before connecting
        if args.command in ("tasks", "task") and args.occurrence is not None:
            fence_ids(args.name, [args.occurrence])
        if args.command == "drain":
            fence_ids(args.name, [args.source])
        args.namespace = args.namespace or _context_namespace(args.kubeconfig, args.context)
        kube = Kube.from_kubeconfig(args.kubeconfig, args.context)
    except PluginError as e:
        print(f"kubectl occurrence: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # kubeconfig missing or unreadable: one line, no traceback
        print(f"kubectl occurrence: error: cannot load the kubeconfig: {e}", file=sys.stderr)
        return EXIT_ERROR
    try:
        return asyncio.run(run(args, kube))
    except PluginError as e:
        print(f"kubectl occurrence: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        kube.close()


if __name__ == "__main__":
    sys.exit(main())
