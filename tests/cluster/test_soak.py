"""Chaos soak: scaling, operator SIGKILLs and database connection cuts under live traffic.

On the local control plane with a real PostgreSQL and the operator as a subprocess:

- *simulated occurrences*: for every agent pod that exists (kwok does not run containers),
  a coroutine plays the agent `<name>-k` against the core API: it registers and heartbeats
  in the registry and keeps submitting (`add_tasks`), activating (`activate_pending_tasks`)
  and completing (`update_task_status`) its own tasks, some with a thought in flight
  (`claim_pending_thoughts`, finished with a guarded `update_thought_status`). It obeys the
  registry: while `draining` it takes no new work, finishes what is in flight and reports
  `set_quiesced`; when its pod is terminating or gone it stops, as an agent that got SIGTERM
  would; a new pod (same ordinal, new uid) is a new incarnation that registers again and
  resets its predecessor's in-flight thoughts, as the runtime does;
- a *chaos driver* (seeded RNG) scales the AgentDeployment between 0 and 6, SIGKILLs the
  operator at random moments (some right after a scale-down, mid-drain) and restarts it,
  terminates every database backend (`pg_terminate_backend`, some mid-drain) and flips
  `spec.drain.inFlight` between `release` and `wait`.

Then it scales to a final size, waits (bounded) for the drain to settle and checks, over
every task ever submitted (a ledger of submitted ids and of completions this test made):
it exists exactly once; unless completed it is owned by an occurrence that exists now
(ordinal < final replicas, or ordinal 0 after a scale to zero); none is lost; none was
completed twice; every change of owner has a chain of `task_transfers` rows from the
submitter to the current owner; and every departed occurrence is `retired` in the registry.
Outcomes the client cannot know (a write whose connection was cut) are kept apart: a batch
of `add_tasks` must then be in the database entirely or not at all.

    SOAK_SECONDS=600 .venv/bin/pytest tests/cluster/test_soak.py -q -s   # longer, by hand
    SOAK_SEED=1234 ...                                                   # replay a seed

A replay repeats the same sequence of chaos decisions (and each simulated occurrence's own
decisions); where the time budget cuts that sequence, and how the steps interleave with the
operator and the database, still depend on the machine.

The seed is printed first; the summary line last. Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from occurrence_operator.model.naming import selector_string
from occurrence_store import OccurrenceState, Store, TaskStatus, ThoughtStatus
from testing.operator_support import agd_manifest, create_db_secret, get
from testing.waiting import wait_for

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "45"))
SOAK_SEED = int(os.environ.get("SOAK_SEED") or random.SystemRandom().randrange(1, 2**31))
MAX_REPLICAS = 6
SETTLE_TIMEOUT = 240.0
TICK = 0.3  # seconds between two steps of a simulated occurrence
MAX_ITERATIONS = max(20, int(SOAK_SECONDS * 4))  # chaos steps (also bounded by time)
MAX_TICKS = int((SOAK_SECONDS + SETTLE_TIMEOUT + 300) / TICK)  # per simulated occurrence
ACTIVE_PHASES = ("Fencing", "WaitingInFlight", "Transferring", "Shrinking", "Sweeping")
DESCRIPTION = re.compile(r"^soak:([0-9a-f]{32}):\d+$")

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(int(SOAK_SECONDS + SETTLE_TIMEOUT + 360))]


@dataclass
class Ledger:
    """What the simulated occurrences did, as they saw it."""

    submitted: dict[str, str] = field(default_factory=dict)
    """task id -> submitting occurrence (add_tasks returned)."""
    uncertain_batches: dict[str, tuple[str, int]] = field(default_factory=dict)
    """batch id -> (submitter, size): add_tasks raised; committed entirely or not at all."""
    completions: list[tuple[str, str]] = field(default_factory=list)
    """(task id, occurrence) for every update_task_status(COMPLETED) that returned True."""
    uncertain_completions: set[str] = field(default_factory=set)
    """Completions that raised: they may or may not have committed."""
    refused_completions: int = 0
    """update_task_status returned False: the task moved away meanwhile (drain)."""
    released_thoughts: int = 0
    """update_thought_status(expected PROCESSING) returned False: a drain released it."""
    db_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    error_samples: dict[str, str] = field(default_factory=dict)
    late_registrations: list[str] = field(default_factory=list)
    """Registered, then found its pod gone: the registry row may say active (harness race)."""
    incarnations: int = 0
    fenced_ticks: int = 0


@dataclass
class Chaos:
    iterations: int = 0
    scale_events: int = 0
    operator_kills: int = 0
    kills_mid_drain: int = 0
    connection_cuts: int = 0
    cuts_mid_drain: int = 0
    backends_terminated: int = 0
    log: list[str] = field(default_factory=list)


class Soak:
    def __init__(
        self, cluster: Any, ns: str, name: str, pg_url: str, start_operator: Any, rng: random.Random
    ) -> None:
        self.cluster, self.ns, self.name, self.pg_url = cluster, ns, name, pg_url
        self.start_operator = start_operator
        self.rng = rng
        self.ledger = Ledger()
        self.chaos = Chaos()
        self.t0 = time.monotonic()
        self.store: Store | None = None
        self.operator: Any = None
        self.operators: list[Any] = []
        self.desired = 0
        self.stopping = asyncio.Event()

        from kubernetes import client

        api = cluster.api_client()
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def note(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.2f}s] {text}"
        self.chaos.log.append(line)
        print(line, flush=True)

    # ------------------------------------------------------------------ kubernetes

    def _agd(self) -> dict[str, Any]:
        return get(self.cluster, "agd", self.name, self.ns) or {}

    async def agd(self) -> dict[str, Any]:
        return await asyncio.to_thread(self._agd)

    def _pods(self) -> dict[str, tuple[int, bool]]:
        """uid -> (ordinal, terminating) of the agent pods."""
        pods = self.core.list_namespaced_pod(
            self.ns, label_selector=selector_string(self.name), _request_timeout=10
        )
        found: dict[str, tuple[int, bool]] = {}
        for pod in pods.items:
            ordinal = int(pod.metadata.name.rsplit("-", 1)[1])
            found[pod.metadata.uid] = (ordinal, pod.metadata.deletion_timestamp is not None)
        return found

    async def scale(self, replicas: int) -> None:
        await asyncio.to_thread(
            self.cluster.kubectl, "-n", self.ns, "scale", "agd", self.name, f"--replicas={replicas}"
        )
        self.desired = replicas

    async def restart_operator(self) -> None:
        self.operator = await asyncio.to_thread(self.start_operator)
        self.operators.append(self.operator)

    # ------------------------------------------------------------------ occurrences

    def _pod_alive(self, ordinal: int, uid: str) -> bool:
        """The pod `<name>-<ordinal>` with this uid exists and is not terminating."""
        from kubernetes.client.exceptions import ApiException

        try:
            pod = self.core.read_namespaced_pod(
                f"{self.name}-{ordinal}", self.ns, _request_timeout=10
            )
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return bool(pod.metadata.uid == uid and pod.metadata.deletion_timestamp is None)

    async def occurrence(self, ordinal: int, uid: str, stop: asyncio.Event, seed: str) -> None:
        """One agent incarnation: the pod `<name>-<ordinal>` with a given uid."""
        assert self.store is not None
        rng = random.Random(seed)
        occ = f"{self.name}-{ordinal}"
        scoped = self.store.scope(occ)
        registry = self.store.registry
        ledger = self.ledger
        held: set[str] = set()  # active tasks it works on
        in_flight: dict[str, str] = {}  # task id -> its PROCESSING thought
        started = False
        for tick in range(MAX_TICKS):
            if stop.is_set():
                return
            try:
                if not started:
                    # As the runtime does at start: register, take back a crashed
                    # predecessor's in-flight thoughts. A process cannot start in a pod
                    # that is gone: without the checks, a registration racing the pod's
                    # deletion would re-activate an occurrence the drain just retired.
                    if not await asyncio.to_thread(self._pod_alive, ordinal, uid):
                        return
                    await registry.register(occ, ordinal=ordinal)
                    if not await asyncio.to_thread(self._pod_alive, ordinal, uid):
                        ledger.late_registrations.append(f"{occ} (pod {uid})")
                        return
                    await scoped.reset_processing_thoughts()
                    started = True
                row = await registry.heartbeat(occ)
                if row.state == OccurrenceState.ACTIVE:
                    if not stop.is_set():
                        await self._work(scoped, occ, rng, held, in_flight, tick)
                else:
                    # Fenced (or retired): take no new work; finish a little of what is in
                    # flight each step, then report quiesced. Tasks not in flight are the
                    # drain's now.
                    ledger.fenced_ticks += 1
                    held.intersection_update(in_flight)
                    if row.state == OccurrenceState.DRAINING:
                        for task_id in list(in_flight)[: rng.randint(0, 2)]:
                            await self._complete(scoped, occ, task_id, held, in_flight)
                        if not in_flight and not row.quiesced:
                            await registry.set_quiesced(occ, True)
            except Exception as e:
                ledger.db_errors[type(e).__name__] += 1
                ledger.error_samples.setdefault(type(e).__name__, str(e)[:200])
            await asyncio.sleep(TICK * rng.uniform(0.5, 1.5))

    async def _work(
        self,
        scoped: Any,
        occ: str,
        rng: random.Random,
        held: set[str],
        in_flight: dict[str, str],
        tick: int,
    ) -> None:
        ledger = self.ledger
        if not self.stopping.is_set() and rng.random() < 0.6:
            batch = uuid.uuid4().hex
            size = rng.randint(1, 8)
            try:
                ids = await scoped.add_tasks([f"soak:{batch}:{i}" for i in range(size)])
            except BaseException:
                ledger.uncertain_batches[batch] = (occ, size)
                raise
            for task_id in ids:
                ledger.submitted[task_id] = occ
        activated = await scoped.activate_pending_tasks(rng.randint(0, 4))
        held.update(t.task_id for t in activated)
        for task in activated[: rng.randint(0, len(activated))]:
            await scoped.add_thought(task.task_id, "think")  # some get a thought to work on
        for thought in await scoped.claim_pending_thoughts(rng.randint(0, 3)):
            in_flight[thought.source_task_id] = thought.thought_id
            held.add(thought.source_task_id)
        if tick % 5 == 0:  # pick up active work it inherited (transfers, a predecessor)
            held.update(t.task_id for t in await scoped.get_tasks_by_status(TaskStatus.ACTIVE))
        for task_id in rng.sample(sorted(held), k=min(len(held), rng.randint(0, 4))):
            await self._complete(scoped, occ, task_id, held, in_flight)

    async def _complete(
        self, scoped: Any, occ: str, task_id: str, held: set[str], in_flight: dict[str, str]
    ) -> None:
        """Finish the task's in-flight thought (guarded), then complete the task."""
        ledger = self.ledger
        held.discard(task_id)
        thought_id = in_flight.pop(task_id, None)
        if thought_id is not None and not await scoped.update_thought_status(
            thought_id, ThoughtStatus.COMPLETED, expected_status=ThoughtStatus.PROCESSING
        ):
            ledger.released_thoughts += 1  # released by a drain: no longer ours to finish
            return
        try:
            done = await scoped.update_task_status(task_id, TaskStatus.COMPLETED)
        except BaseException:
            ledger.uncertain_completions.add(task_id)
            raise
        if done:
            ledger.completions.append((task_id, occ))
        else:
            ledger.refused_completions += 1

    async def occurrences_driver(self) -> None:
        """Keep one simulated occurrence per live (not terminating) agent pod."""
        running: dict[str, tuple[asyncio.Event, asyncio.Task[None]]] = {}
        deadline = time.monotonic() + SOAK_SECONDS + SETTLE_TIMEOUT + 120
        try:
            while not self.stopping.is_set() and time.monotonic() < deadline:
                try:
                    pods = await asyncio.to_thread(self._pods)
                except Exception as e:
                    self.ledger.db_errors[f"kube:{type(e).__name__}"] += 1
                    await asyncio.sleep(0.5)
                    continue
                live = {uid: o for uid, (o, terminating) in pods.items() if not terminating}
                for uid in list(running):
                    if uid not in live:  # SIGTERM: finish the current step, then stop
                        running.pop(uid)[0].set()
                for uid, ordinal in live.items():
                    if uid not in running:
                        stop = asyncio.Event()
                        self.ledger.incarnations += 1
                        seed = f"{SOAK_SEED}-{ordinal}-{self.ledger.incarnations}"
                        running[uid] = (
                            stop,
                            asyncio.create_task(self.occurrence(ordinal, uid, stop, seed)),
                        )
                await asyncio.sleep(0.5)
        finally:
            for stop, _ in running.values():
                stop.set()
            tasks = [t for _, t in running.values()]
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=30)
                for t in pending:
                    t.cancel()

    # ------------------------------------------------------------------ chaos

    async def cut_connections(self, mid_drain: bool = False) -> None:
        phase = None
        if mid_drain:
            phase = await self.wait_for_drain()
        conn = await asyncpg.connect(self.pg_url, timeout=10)
        try:
            killed = await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        self.chaos.connection_cuts += 1
        self.chaos.backends_terminated += len(killed)
        if phase in ACTIVE_PHASES:
            self.chaos.cuts_mid_drain += 1
        self.note(f"cut {len(killed)} database connections (scaleDown phase {phase})")

    def _phase(self) -> str | None:
        obj = self.custom.get_namespaced_custom_object(
            "occurrence.dev",
            "v1alpha1",
            self.ns,
            "agentdeployments",
            self.name,
            _request_timeout=10,
        )
        return ((obj.get("status") or {}).get("scaleDown") or {}).get("phase")

    async def wait_for_drain(self) -> str | None:
        """Wait (bounded) until a scale-down drain is under way, then a random moment more
        (drains of a few hundred tasks take well under a second)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if await asyncio.to_thread(self._phase) in ACTIVE_PHASES:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(self.rng.uniform(0, 0.4))
        return await asyncio.to_thread(self._phase)

    async def kill_operator(self, mid_drain: bool) -> None:
        if mid_drain:
            await self.wait_for_drain()
        phase = await asyncio.to_thread(self._phase)
        await asyncio.to_thread(self.operator.kill)
        self.chaos.operator_kills += 1
        if phase in ACTIVE_PHASES:
            self.chaos.kills_mid_drain += 1
        self.note(f"SIGKILL operator (scaleDown phase {phase})")
        await asyncio.sleep(self.rng.uniform(0, 2.5))  # the operator is down a while
        await self.restart_operator()
        self.note("operator restarted")

    async def set_in_flight_policy(self, policy: str) -> None:
        patch = {"spec": {"drain": {"inFlight": policy}}}
        await asyncio.to_thread(
            self.cluster.kubectl,
            "-n",
            self.ns,
            "patch",
            "agd",
            self.name,
            "--type=merge",
            "-p",
            json.dumps(patch),
        )
        self.note(f"drain.inFlight -> {policy}")

    async def chaos_driver(self) -> None:
        deadline = time.monotonic() + SOAK_SECONDS
        rng = self.rng
        while time.monotonic() < deadline and self.chaos.iterations < MAX_ITERATIONS:
            self.chaos.iterations += 1
            roll = rng.random()
            try:
                if roll < 0.55:
                    target = rng.choice([r for r in range(MAX_REPLICAS + 1) if r != self.desired])
                    before = self.desired
                    await self.scale(target)
                    self.chaos.scale_events += 1
                    self.note(f"scale {before} -> {target}")
                    if target < before:
                        mid = rng.random()
                        if mid < 0.4:
                            await self.kill_operator(mid_drain=True)
                        elif mid < 0.6:
                            await self.cut_connections(mid_drain=True)
                elif roll < 0.7:
                    await self.kill_operator(mid_drain=False)
                elif roll < 0.9:
                    await self.cut_connections()
                elif roll < 0.95:
                    await self.set_in_flight_policy(rng.choice(["release", "wait"]))
            except Exception as e:  # a chaos step failing is reported, not fatal
                self.note(f"chaos step failed: {e!r}")
                if self.operator is None or not self.operator.alive():
                    await self.restart_operator()
            await asyncio.sleep(rng.uniform(0.3, 2.5))

    # ------------------------------------------------------------------ settle + check

    async def settled(self, final: int) -> str | None:
        """None when the system is at rest at `final` replicas, else what it still waits for."""
        agd = await self.agd()
        status = agd.get("status") or {}
        phase = (status.get("scaleDown") or {}).get("phase")
        if agd.get("spec", {}).get("replicas") != final:
            return "spec.replicas"
        if status.get("observedGeneration") != agd["metadata"]["generation"]:
            return "observedGeneration"
        if phase in ACTIVE_PHASES:
            return f"scaleDown phase {phase}"
        if status.get("drainingReplicas"):
            return "drainingReplicas"
        sts = await asyncio.to_thread(get, self.cluster, "sts", self.name, self.ns)
        if sts is None or sts["spec"]["replicas"] != final:
            return "StatefulSet replicas"
        pods = await asyncio.to_thread(self._pods)
        if sorted(o for o, _ in pods.values()) != list(range(final)):
            return f"pods {sorted(pods.values())}"
        return None

    async def check(self, final: int) -> tuple[list[str], dict[str, int]]:
        ledger = self.ledger
        violations: list[str] = []
        conn = await asyncpg.connect(self.pg_url, timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT task_id, agent_occurrence_id, status, description FROM tasks"
            )
            transfers = await conn.fetch(
                "SELECT task_id, from_occurrence_id, to_occurrence_id FROM task_transfers "
                "ORDER BY transfer_id"
            )
            registry = {
                r["occurrence_id"]: r["state"]
                for r in await conn.fetch("SELECT occurrence_id, state FROM occurrences")
            }
        finally:
            await conn.close()

        # 1. exactly once
        counts = collections.Counter(r["task_id"] for r in rows)
        violations += [f"task {t} exists {n} times" for t, n in counts.items() if n != 1]
        tasks = {r["task_id"]: r for r in rows}

        # uncertain submissions: the batch committed entirely or not at all
        submitted = dict(ledger.submitted)
        by_batch: dict[str, list[str]] = collections.defaultdict(list)
        for r in rows:
            m = DESCRIPTION.match(r["description"] or "")
            if m is None:
                violations.append(f"task {r['task_id']} was not submitted by the soak")
            elif r["task_id"] not in submitted:
                by_batch[m.group(1)].append(r["task_id"])
        for batch, ids in by_batch.items():
            if batch not in ledger.uncertain_batches:
                violations.append(f"tasks {ids} of batch {batch} unknown to the ledger")
                continue
            occ, size = ledger.uncertain_batches[batch]
            if len(ids) != size:
                violations.append(f"batch {batch} half-committed: {len(ids)} of {size} tasks")
            for task_id in ids:
                submitted[task_id] = occ

        # 2. none lost; unfinished work owned by an occurrence that exists now
        existing = {f"{self.name}-{k}" for k in range(max(final, 1))}
        for task_id, submitter in submitted.items():
            row = tasks.get(task_id)
            if row is None:
                violations.append(f"task {task_id} (submitted by {submitter}) lost")
                continue
            owner, status = row["agent_occurrence_id"], row["status"]
            if status in (TaskStatus.PENDING, TaskStatus.ACTIVE):
                if owner not in existing:
                    violations.append(f"{status} task {task_id} owned by departed {owner}")
                elif registry.get(owner) == OccurrenceState.RETIRED:
                    violations.append(f"{status} task {task_id} owned by retired {owner}")
            elif status != TaskStatus.COMPLETED:
                violations.append(f"task {task_id} in unexpected status {status}")

        # departed occurrences were retired by the drain's sweep (the registry agrees)
        late = {entry.split(" ")[0] for entry in ledger.late_registrations}
        for occ, state in sorted(registry.items()):
            ordinal = int(occ.rsplit("-", 1)[1])
            if ordinal >= max(final, 1) and state != OccurrenceState.RETIRED and occ not in late:
                violations.append(f"departed occurrence {occ} is {state}, not retired")

        # 3. never completed twice; completed only by the ledger's completions
        completed = collections.Counter(t for t, _ in ledger.completions)
        violations += [f"task {t} completed {n} times" for t, n in completed.items() if n > 1]
        for task_id in completed:
            row = tasks.get(task_id)
            if row is not None and row["status"] != TaskStatus.COMPLETED:
                violations.append(f"task {task_id} completed but now {row['status']}")
        for task_id, row in tasks.items():
            if (
                row["status"] == TaskStatus.COMPLETED
                and task_id not in completed
                and task_id not in ledger.uncertain_completions
            ):
                violations.append(f"task {task_id} completed by nobody in the ledger")

        # 4. every change of owner is a chain of transfer records submitter -> owner
        chains: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
        for t in transfers:
            chains[t["task_id"]].append((t["from_occurrence_id"], t["to_occurrence_id"]))
        for task_id, submitter in submitted.items():
            row = tasks.get(task_id)
            if row is None:
                continue
            at = submitter
            for src, dst in chains.get(task_id, []):
                if src != at:
                    violations.append(
                        f"task {task_id}: transfer {src}->{dst} but it was owned by {at}"
                    )
                at = dst
            if at != row["agent_occurrence_id"]:
                violations.append(
                    f"task {task_id}: owned by {row['agent_occurrence_id']} but its transfer "
                    f"records lead from {submitter} to {at}"
                )
        numbers = {
            "tasks": len(submitted),
            "completed": sum(1 for r in rows if r["status"] == TaskStatus.COMPLETED),
            "transfers": len(transfers),
            "moved_tasks": len(chains),
        }
        return violations, numbers


async def test_chaos_soak(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str, capsys: Any
) -> None:
    rng = random.Random(SOAK_SEED)
    with capsys.disabled():
        print(f"\nchaos soak: SOAK_SEED={SOAK_SEED} SOAK_SECONDS={SOAK_SECONDS:g}", flush=True)
    ns, cluster, name = namespace, kube_cluster, "soak"
    soak = Soak(cluster, ns, name, pg_url, start_operator, rng)
    soak.store = await Store.open(pg_url, migrate=True, max_size=12)
    driver: asyncio.Task[None] | None = None
    try:
        await soak.restart_operator()
        initial = rng.randint(1, MAX_REPLICAS)
        create_db_secret(cluster, ns, pg_url)
        policy = rng.choice(["release", "wait"])
        cluster.apply(
            agd_manifest(
                name, ns, replicas=initial, drain={"timeoutSeconds": 5, "inFlight": policy}
            )
        )
        soak.desired = initial
        wait_for(
            lambda: (soak._agd().get("status") or {}).get("readyReplicas") == initial,
            timeout=120,
            message=f"{name} with {initial} ready occurrences",
        )
        soak.note(f"deployed with {initial} replicas, drain.inFlight {policy}")
        driver = asyncio.create_task(soak.occurrences_driver())

        await soak.chaos_driver()

        # its own RNG: a replay whose time budget allowed one chaos step more or less still
        # ends at the same size from the same state
        final_rng = random.Random(f"{SOAK_SEED}-final")
        final = final_rng.choice([r for r in range(MAX_REPLICAS + 1) if r != soak.desired])
        soak.note(f"chaos over; final scale {soak.desired} -> {final}")
        await soak.scale(final)
        if not soak.operator.alive():
            await soak.restart_operator()
        deadline = time.monotonic() + SETTLE_TIMEOUT
        waiting: str | None = "start"
        while time.monotonic() < deadline:
            try:
                waiting = await soak.settled(final)
            except Exception as e:
                waiting = repr(e)
            if waiting is None:
                break
            await asyncio.sleep(0.5)
        soak.note(f"settled: {waiting is None} (last wait: {waiting})")
        soak.stopping.set()
        await asyncio.wait_for(driver, timeout=60)
        assert waiting is None, f"no rest within {SETTLE_TIMEOUT}s: waiting for {waiting}"
        assert await soak.settled(final) is None, "moved again after the occurrences stopped"

        violations, numbers = await soak.check(final)
        ledger, chaos = soak.ledger, soak.chaos
        summary = (
            f"soak summary: seed={SOAK_SEED} seconds={SOAK_SECONDS:g} "
            f"iterations={chaos.iterations} scale_events={chaos.scale_events} "
            f"operator_kills={chaos.operator_kills} (mid-drain {chaos.kills_mid_drain}) "
            f"connection_cuts={chaos.connection_cuts} (mid-drain {chaos.cuts_mid_drain}) "
            f"(backends {chaos.backends_terminated}) final_replicas={final} "
            f"tasks={numbers['tasks']} completed={numbers['completed']} "
            f"transfers={numbers['transfers']} moved_tasks={numbers['moved_tasks']} "
            f"refused_completions={ledger.refused_completions} "
            f"released_thoughts={ledger.released_thoughts} "
            f"uncertain={len(ledger.uncertain_batches)}b/{len(ledger.uncertain_completions)}c "
            f"incarnations={ledger.incarnations} client_errors={sum(ledger.db_errors.values())} "
            f"operator_error_lines={sum(len(op.errors()) for op in soak.operators)} "
            f"late_registrations={len(ledger.late_registrations)} "
            f"violations={len(violations)}"
        )
        with capsys.disabled():
            print(summary, flush=True)
            for kind, n in ledger.db_errors.items():
                print(f"client errors: {n} x {kind}: {ledger.error_samples.get(kind)}", flush=True)
        assert not violations, (
            f"{len(violations)} invariant violations (replay: SOAK_SEED={SOAK_SEED}):\n"
            + "\n".join(violations[:50])
            + "\n--- chaos log ---\n"
            + "\n".join(chaos.log)
        )
        assert numbers["tasks"] > 0 and chaos.iterations > 0
    finally:
        soak.stopping.set()
        if driver is not None and not driver.done():
            driver.cancel()
            with contextlib.suppress(BaseException):
                await driver
        await soak.store.close()
