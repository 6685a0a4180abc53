"""Canary rollouts of the pod template as a pure state machine.

With `spec.rollout.strategy: Canary`, a change of the pod template (image, env, args...)
reaches the occurrences in waves. The operator holds the StatefulSet's
`updateStrategy.rollingUpdate.partition` so that only the highest ordinals — the wave's
canary occurrences, also the first to leave on a scale-down — run the new revision:

    (template changed) ──▶ Progressing, wave 0 ──(wave rolled: its pods updated, all ready)──▶
        bake `bakeSeconds` ──▶ wave 1 ──▶ … ──▶ last wave (100 %) baked ──▶ Complete
        (the new template and revision become the stable ones, the partition goes to 0)

- `spec.rollout.paused` holds the rollout in its wave (phase Paused: no wave starts or
  passes; the partition still follows the size); unset, it goes on.
- A newer template during a rollout restarts it from the first wave with the newest template
  (the intermediate one never reaches the last wave).
- The template set back to the stable one ends the rollout (Reverted, partition 0): the
  StatefulSet puts the canary occurrences back on the stable revision, same ids, same work.
- A wave stops baking when it stops being rolled (a pod not ready): the bake starts over.
- With 0 replicas there is nothing to roll: the rollout completes at once.

Every decision is made from the persisted `.status.rollout` and what the StatefulSet says, so
an operator restarted at any point resumes the same wave. The record is persisted *before* the
partition it asks for is applied: a pod below the partition that is recreated (evicted,
deleted) comes back on the current (stable) revision, so a stale record must never raise the
partition past pods already updated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from occurrence_store.outcomes import WorkOutcome

from ..kube.events import EventType
from ..model.spec import RolloutSpec, WaveSpec
from ..model.status import ACTIVE_ROLLOUT_PHASES, FailedWorkStatus, GateStatus, RolloutStatus
from ..model.timeutil import format_time, parse_time
from ..model.wellknown import GROUP
from .gates import evaluate, gate_name
from .prometheus import PrometheusReading

Event = tuple[EventType, str, str]

ROLLOUT_ANNOTATION = f"{GROUP}/rollout"
"""`kubectl annotate agd NAME occurrence.dev/rollout=promote|abort|retry`: a one-shot
command to the canary rollout; the operator removes it once it has acted (or refused)."""
Command = Literal["promote", "abort", "retry"]
COMMANDS: tuple[Command, ...] = ("promote", "abort", "retry")


@dataclass(frozen=True)
class Observed:
    """What the pass saw, all `plan` needs besides the spec and the record."""

    template: str
    """Hash of the pod template this pass renders."""
    template_changed: bool
    """The live StatefulSet runs another pod template than the rendered one (only read when
    there is no record yet)."""
    replicas: int
    """The StatefulSet's spec.replicas (during a drain: still the size before it)."""
    ready: int = 0
    updated: int = 0
    """status.updatedReplicas: pods on the StatefulSet's updateRevision."""
    observed: bool = True
    """status.observedGeneration has caught up with the last write (the revisions and counts
    are of the template the operator last applied)."""
    update_revision: str | None = None
    current_revision: str | None = None
    canary: WorkOutcome | None = None
    """What the canary occurrences (ordinals at or above the recorded partition) finished
    since the wave started baking; None: not measured (no bake, no gates, no database)."""
    stable: WorkOutcome | None = None
    """What the stable occurrences finished over the same time."""
    prometheus: tuple[PrometheusReading | None, ...] | None = None
    """The current wave's Prometheus gates' readings, by gate (None where the gate is a
    metric's); None: not measured."""
    command: Command | None = None
    """The `occurrence.dev/rollout` annotation's command, if set."""


@dataclass(frozen=True)
class RolloutDecision:
    partition: int
    """The StatefulSet's rollingUpdate.partition to apply."""
    record: RolloutStatus | None
    """`.status.rollout` to persist before the partition is applied (None: remove it)."""
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    """When to look again (a bake ends); None: StatefulSet events or the resync will do."""
    delete_canaries: bool = False
    """Once the partition is applied, delete the pods below it that are not on the stable
    revision: a StatefulSet never replaces a pod below its partition by itself, and one
    deleted there comes back on the stable revision (after a rollback: every canary; after a
    restart with a newer template: the previous template's pods the first wave no longer
    covers)."""


def is_active(record: RolloutStatus | None) -> bool:
    """A canary rollout is under way (its partition holds part of the fleet back)."""
    return record is not None and record.phase in ACTIVE_ROLLOUT_PHASES


def held_back(record: RolloutStatus | None) -> int:
    """Ordinals the rollout keeps on the stable revision on purpose (below its partition):
    during a rollout, and after a rollback while the failed template is still the spec's."""
    if record is not None and (is_active(record) or record.phase == "RolledBack"):
        return record.partition
    return 0


def wave_sizes(waves: Sequence[WaveSpec], replicas: int) -> list[int]:
    """How many occurrences each wave puts on the new revision, for `replicas` occurrences:
    a count (at most all), or a percent rounded up (at least one); never fewer than the wave
    before; the last wave is every occurrence."""
    sizes: list[int] = []
    for wave in waves:
        if wave.occurrences is not None:
            size = min(wave.occurrences, replicas)
        else:
            size = min(replicas, max(1, math.ceil(replicas * (wave.percent or 100) / 100)))
        sizes.append(max(size, sizes[-1] if sizes else 0))
    if sizes:
        sizes[-1] = replicas
    return [min(size, replicas) for size in sizes]


def plan(rollout: RolloutSpec, record: RolloutStatus | None, seen: Observed, now: datetime
         ) -> RolloutDecision:
    """The partition to apply and the record to persist for this pass."""
    if rollout.strategy == "RollingUpdate":
        # No partition: the StatefulSet rolls every occurrence (also what a canary rollout
        # in progress had held back); status.rollout goes.
        if seen.command is not None:  # removed like any command: say it did nothing
            return RolloutDecision(0, None, events=(
                ("Warning", "RolloutCommandIgnored",
                 f"{ROLLOUT_ANNOTATION}={seen.command} does not apply: "
                 "spec.rollout.strategy is RollingUpdate (no canary rollout)"),))
        return RolloutDecision(0, None)
    if seen.command is not None:
        return _command(rollout, record, seen, now, seen.command)
    if record is None or (not is_active(record) and record.stable_template is None):
        if seen.template_changed:
            return _start(rollout, record, seen, now)
        return RolloutDecision(0, _steady(seen))
    if is_active(record) and seen.template == record.canary_template:
        decision = _continue(rollout, record, seen, now)
        if seen.observed and seen.updated > seen.replicas - decision.partition:
            # more pods on the new revision than the ordinals at or above the partition: a
            # scale-up raised it over a canary, which goes back to the stable revision (the
            # wave keeps its number of canaries, on the highest ordinals)
            decision = replace(decision, delete_canaries=True)
        return decision
    if record.phase == "RolledBack" and seen.template == record.canary_template:
        # the rolled-back template stays in the spec: hold every ordinal on the stable one
        return RolloutDecision(seen.replicas, _with(record, partition=seen.replicas),
                               delete_canaries=True)
    if seen.template == record.stable_template and not is_active(record):
        return RolloutDecision(0, _settled(record, seen))
    if seen.template == record.stable_template:
        message = (f"the pod template went back to the stable one during wave "
                   f"{record.wave}: every occurrence returns to revision "
                   f"{record.stable_revision or 'stable'}")
        reverted = _with(record, phase="Reverted", partition=0, canary_occurrences=0,
                         completed_at=format_time(now), bake_started_at=None, message=message)
        return RolloutDecision(0, reverted, (("Normal", "RolloutReverted", message),))
    return _start(rollout, record, seen, now)


def _steady(seen: Observed) -> RolloutStatus:
    """No rollout yet: what the StatefulSet runs is the stable template."""
    return RolloutStatus.from_fields(
        phase="Complete", stable_template=seen.template,
        stable_revision=seen.current_revision if seen.observed else None,
        message="every occurrence runs the stable template")


def _settled(record: RolloutStatus, seen: Observed) -> RolloutStatus:
    """Outside a rollout, on the stable template: the record as it is, nothing held back any
    more (after a rollback: Reverted, its gates kept as the why), the stable revision filled
    in once known."""
    if record.phase == "RolledBack":
        record = _with(record, phase="Reverted", partition=0, canary_occurrences=0,
                       message=f"the stable template is back in the spec ({record.message})")
    if record.stable_revision is None and seen.observed and seen.current_revision:
        return _with(record, stable_revision=seen.current_revision)
    return record


def _start(rollout: RolloutSpec, record: RolloutStatus | None, seen: Observed, now: datetime
           ) -> RolloutDecision:
    """A new template: a rollout from the first wave (restarting one in progress)."""
    waves = rollout.wave_list()
    stable_template = None if record is None else record.stable_template
    stable_revision = (record.stable_revision if record is not None else None) or (
        seen.current_revision if seen.observed else None)
    size = wave_sizes(waves, seen.replicas)[0]
    partition = seen.replicas - size
    events: list[Event] = []
    restarted = is_active(record)
    if restarted:
        assert record is not None
        events.append(("Normal", "RolloutRestarted",
                       f"a newer pod template replaced the one in wave {record.wave}; the "
                       "rollout starts over from the first wave"))
    message = f"wave {waves[0].name}: {size} of {seen.replicas} occurrences on the new template"
    events.append(("Normal", "RolloutStarted", message))
    started = RolloutStatus.from_fields(
        phase="Paused" if rollout.paused else "Progressing", wave=waves[0].name, wave_index=0,
        canary_occurrences=size, partition=partition, canary_template=seen.template,
        stable_template=stable_template, stable_revision=stable_revision,
        started_at=format_time(now), message=message,
        failed_work=_unfinished(record.failed_work if record is not None else None))
    if seen.replicas == 0:
        return _complete(started, seen, now, events)
    return RolloutDecision(partition, started, tuple(events), delete_canaries=restarted)


def _continue(rollout: RolloutSpec, record: RolloutStatus, seen: Observed, now: datetime
              ) -> RolloutDecision:
    waves = rollout.wave_list()
    index = min(record.wave_index, len(waves) - 1)  # waves removed mid-rollout
    wave = waves[index]
    size = wave_sizes(waves, seen.replicas)[index]
    partition = seen.replicas - size
    current = _with(record, wave=wave.name, wave_index=index, canary_occurrences=size,
                    partition=partition)
    if current.canary_revision is None and seen.observed and seen.update_revision and (
            seen.update_revision != current.stable_revision):
        current = _with(current, canary_revision=seen.update_revision)
    if seen.replicas == 0:
        return _complete(current, seen, now, [])
    events: list[Event] = []
    if rollout.paused:
        if record.phase != "Paused":
            message = f"paused in wave {wave.name} (spec.rollout.paused)"
            events.append(("Normal", "RolloutPaused", message))
            current = _with(current, phase="Paused", message=message)
        return RolloutDecision(partition, current, tuple(events))
    if record.phase == "Inconclusive":
        return RolloutDecision(partition, current, tuple(events))
    if record.phase == "Paused":
        message = f"resumed in wave {wave.name}"
        events.append(("Normal", "RolloutResumed", message))
        current = _with(current, phase="Progressing", message=message)
    rolled = seen.observed and seen.updated >= size and seen.ready >= seen.replicas
    if not rolled:
        waiting = (f"wave {wave.name}: waiting for {size} of {seen.replicas} occurrences on "
                   f"the new template, all ready ({seen.updated} updated, {seen.ready} ready)")
        return RolloutDecision(partition, _with(current, bake_started_at=None, message=waiting),
                               tuple(events))
    interval = float(rollout.analysis_interval_seconds) if wave.gates else None
    if current.bake_started_at is None:
        message = f"wave {wave.name}: {size} of {seen.replicas} occurrences on the new " \
                  f"template, baking {wave.bake_seconds} s"
        current = _with(current, bake_started_at=format_time(now), message=message, gates=None)
        if wave.bake_seconds > 0 or wave.gates:
            return RolloutDecision(partition, current, tuple(events),
                                   _sooner(float(wave.bake_seconds) or None, interval))
    baked = (now - parse_time(current.bake_started_at or format_time(now))).total_seconds()
    if wave.gates:
        current = _judged(wave, current, seen, now, interval or 0.0)
        failed = [g for g in current.gates or [] if g.failures >= rollout.failure_limit]
        if failed:
            return _roll_back(rollout, current, seen, now, failed, events)
    if baked < wave.bake_seconds:
        return RolloutDecision(partition, current, tuple(events),
                               _sooner(wave.bake_seconds - baked, interval))
    undecided = [g for g in current.gates or [] if g.verdict in ("Fail", "Inconclusive")]
    if wave.gates and not current.gates:  # never measured (no database yet): no evidence
        undecided = [GateStatus.from_fields(metric=gate_name(g, i), verdict="Inconclusive",
                                            threshold="", evaluated_at=format_time(now))
                     for i, g in enumerate(wave.gates)]
    if undecided:
        if baked < wave.bake_limit() or any(g.verdict == "Fail" for g in undecided):
            return RolloutDecision(partition, current, tuple(events), interval)
        message = (f"wave {wave.name}: too few samples after {wave.bake_limit()} s ("
                   + "; ".join(f"{g.metric}: {g.samples}" for g in undecided)
                   + "): held, neither promoted nor rolled back")
        held = _with(current, phase="Inconclusive", message=message)
        return RolloutDecision(partition, held,
                               (*events, ("Warning", "RolloutInconclusive", message)))
    passed = f"wave {wave.name} passed: {size} of {seen.replicas} occurrences baked " \
             f"{wave.bake_seconds} s"
    events.append(("Normal", "WavePassed", passed))
    if index == len(waves) - 1:
        return _complete(current, seen, now, events)
    following = waves[index + 1]
    next_size = wave_sizes(waves, seen.replicas)[index + 1]
    message = f"wave {following.name}: {next_size} of {seen.replicas} occurrences on the new " \
              "template"
    events.append(("Normal", "WaveStarted", message))
    promoted = _with(current, wave=following.name, wave_index=index + 1,
                     canary_occurrences=next_size, partition=seen.replicas - next_size,
                     bake_started_at=None, gates=None, message=message)
    return RolloutDecision(promoted.partition, promoted, tuple(events))


def _complete(record: RolloutStatus, seen: Observed, now: datetime, events: list[Event]
              ) -> RolloutDecision:
    """Every occurrence on the new template: it is the stable one now."""
    message = (f"every occurrence ({seen.replicas}) runs the new template"
               + (f" (revision {record.canary_revision})" if record.canary_revision else ""))
    done = _with(record, phase="Complete", partition=0, canary_occurrences=seen.replicas,
                 stable_template=record.canary_template,
                 stable_revision=record.canary_revision or record.stable_revision,
                 bake_started_at=None, completed_at=format_time(now), message=message)
    return RolloutDecision(0, done, (*events, ("Normal", "RolloutComplete", message)))


def _unfinished(failed_work: FailedWorkStatus | None) -> FailedWorkStatus | None:
    """A rolled-back revision's failed work still being given back goes on being given back
    in the next rollout (kept in its record until complete)."""
    return failed_work if failed_work is not None and not failed_work.complete else None


def _with(record: RolloutStatus, **changes: Any) -> RolloutStatus:
    return record.model_copy(update=changes)


def _sooner(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def gates_due(record: RolloutStatus, interval: float, now: datetime) -> bool:
    """The wave's gates are due an evaluation: none yet, or the last `interval` ago (what to
    measure for them is asked only then)."""
    latest = max((parse_time(g.evaluated_at) for g in record.gates or []), default=None)
    return latest is None or (now - latest).total_seconds() >= interval


def _judged(wave: WaveSpec, record: RolloutStatus, seen: Observed, now: datetime,
            interval: float) -> RolloutStatus:
    """The record with its gates evaluated, at most once per `interval` (a failure counts
    once per evaluation, however often the pass runs)."""
    if not gates_due(record, interval, now):
        return record
    last = {g.metric: g for g in record.gates or []}
    gates = wave.gates or []
    if seen.canary is None and any(g.metric is not None for g in gates):
        return record
    if seen.prometheus is None and any(g.prometheus is not None for g in gates):
        return record
    readings = seen.prometheus or ()
    judged = [evaluate(gate, seen.canary, seen.stable, last.get(gate_name(gate, i)), now,
                       index=i, reading=readings[i] if i < len(readings) else None)
              for i, gate in enumerate(gates)]
    return _with(record, gates=judged)


def _roll_back(rollout: RolloutSpec, record: RolloutStatus, seen: Observed, now: datetime,
               failed: list[GateStatus], events: list[Event], why: str | None = None
               ) -> RolloutDecision:
    """A gate failed failureLimit evaluations in a row (or a person aborted): every ordinal
    back on the stable revision (partition at the size, canary pods deleted to be recreated
    there), and — with retryFailedOnRollback — the tasks the canary revision failed since
    the rollout started marked to go back to pending (`failed_work`, carried out by the
    driver until the revision runs nowhere)."""
    cause = why or ("wave {} failed its gates ({})".format(record.wave, "; ".join(
        f"{g.metric} {g.canary} against {g.threshold}"
        + (f" (stable {g.stable})" if g.stable is not None else "")
        + f", {g.failures} evaluations in a row" for g in failed)))
    message = (f"{cause}: every occurrence goes back to revision "
               f"{record.stable_revision or 'stable'}")
    failed_work = record.failed_work
    if rollout.retry_failed_on_rollback and record.canary_revision and (
            record.canary_revision != record.stable_revision):
        failed_work = FailedWorkStatus.from_fields(
            revision=record.canary_revision, since=record.started_at or format_time(now))
    rolled_back = _with(record, phase="RolledBack", partition=seen.replicas,
                        canary_occurrences=0, bake_started_at=None,
                        completed_at=format_time(now), failed_work=failed_work,
                        message=message)
    return RolloutDecision(seen.replicas, rolled_back,
                           (*events, ("Warning", "RolloutRolledBack", message)),
                           delete_canaries=True)


def _command(rollout: RolloutSpec, record: RolloutStatus | None, seen: Observed,
             now: datetime, command: Command) -> RolloutDecision:
    """A person's one-shot command (the annotation): promote the current wave now, abort
    (roll back now) a rollout under way, or retry a rolled-back template from the first wave.
    A command that does not apply changes nothing and says why."""
    unchanged = replace(seen, command=None)
    if command == "retry" and record is not None and record.phase == "RolledBack" and (
            seen.template == record.canary_template):
        retried = _start(rollout, _with(record, phase="Reverted"), seen, now)
        note: Event = ("Normal", "RolloutRetried",
                       f"retry requested ({ROLLOUT_ANNOTATION}): the rolled-back template "
                       "starts over from the first wave")
        return replace(retried, events=(note, *retried.events))
    if command in ("promote", "abort") and is_active(record) and (
            record is not None and seen.template == record.canary_template):
        if command == "abort":
            message = f"aborted ({ROLLOUT_ANNOTATION}=abort) in wave {record.wave}"
            return _roll_back(rollout, record, seen, now, [],
                              [("Normal", "RolloutAborted", message)], why=message)
        return _promote(rollout, record, seen, now)
    decision = plan(rollout, record, unchanged, now)
    phase = "no rollout" if record is None else f"phase {record.phase}"
    refused: Event = ("Warning", "RolloutCommandIgnored",
                      f"{ROLLOUT_ANNOTATION}={command} does not apply ({phase}): promote and "
                      "abort act on a rollout under way, retry on a rolled-back one")
    return replace(decision, events=(*decision.events, refused))


def _promote(rollout: RolloutSpec, record: RolloutStatus, seen: Observed, now: datetime
             ) -> RolloutDecision:
    """The current wave passes now (whatever its bake or gates say)."""
    waves = rollout.wave_list()
    index = min(record.wave_index, len(waves) - 1)
    wave = waves[index]
    events: list[Event] = [("Normal", "WavePassed",
                            f"wave {wave.name} promoted ({ROLLOUT_ANNOTATION}=promote)")]
    current = _with(record, phase="Progressing")
    if index == len(waves) - 1:
        return _complete(current, seen, now, events)
    following = waves[index + 1]
    size = wave_sizes(waves, seen.replicas)[index + 1]
    message = f"wave {following.name}: {size} of {seen.replicas} occurrences on the new template"
    events.append(("Normal", "WaveStarted", message))
    promoted = _with(current, wave=following.name, wave_index=index + 1,
                     canary_occurrences=size, partition=seen.replicas - size,
                     bake_started_at=None, gates=None, message=message)
    return RolloutDecision(promoted.partition, promoted, tuple(events))
