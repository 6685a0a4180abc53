"""Canary rollouts (`spec.rollout.strategy: Canary`) against a real API server, StatefulSet
controller and kwok pods: waves by partition, highest ordinals first; an operator killed
mid-wave resumes the wave; pause; the stable template back reverts the canaries."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from occurrence_store import OccurrenceState, Store, TaskStatus
from testing.operator_support import (
    agd_manifest,
    agd_status,
    condition,
    create_db_secret,
    events,
    get,
)
from testing.waiting import wait_for, wait_for_async

pytestmark = pytest.mark.cluster

TIMEOUT = 150
STABLE, NEW = "registry.example/agent:1", "registry.example/agent:2"


def _images(cluster: Any, ns: str, name: str, replicas: int) -> dict[int, str | None]:
    """Ordinal -> image of the pod there now (None: no pod)."""
    out: dict[int, str | None] = {}
    for k in range(replicas):
        pod = get(cluster, "pod", f"{name}-{k}", ns)
        out[k] = None if pod is None else pod["spec"]["containers"][0]["image"]
    return out


def _rollout(cluster: Any, ns: str, name: str) -> dict[str, Any]:
    return agd_status(cluster, ns, name).get("rollout") or {}


def _settled(cluster: Any, ns: str, name: str, replicas: int, phase: str, image: str
             ) -> dict[str, Any] | None:
    """The StatefulSet once the rollout is in `phase` and every pod runs `image`, ready."""
    sts = get(cluster, "sts", name, ns)
    status = (sts or {}).get("status") or {}
    # rolled back, the StatefulSet's update revision is the failed one, which no pod runs
    updated = 0 if phase == "RolledBack" else replicas
    if (_rollout(cluster, ns, name).get("phase") == phase
            and status.get("readyReplicas") == replicas
            and status.get("updatedReplicas", 0) == updated
            and set(_images(cluster, ns, name, replicas).values()) == {image}):
        return sts
    return None


def _tracks(cluster: Any, ns: str, name: str, replicas: int) -> list[str | None]:
    """Ordinal -> the occurrence.dev/track label of the live pod there."""
    out: list[str | None] = []
    for k in range(replicas):
        pod = get(cluster, "pod", f"{name}-{k}", ns)
        live = pod is not None and not pod["metadata"].get("deletionTimestamp")
        out.append(pod["metadata"]["labels"].get("occurrence.dev/track") if live else None)
    return out


async def _migrated(url: str) -> None:
    await (await Store.open(url, migrate=True)).close()


def _canary(name: str, ns: str, image: str, waves: list[dict[str, Any]], **rollout: Any
            ) -> str:
    return agd_manifest(name, ns, replicas=4, image=image,
                        rollout={"strategy": "Canary", "waves": waves, **rollout})


async def _steady(cluster: Any, ns: str, name: str, pg_url: str, start_operator: Any,
                  waves: list[dict[str, Any]], **rollout: Any) -> tuple[Any, dict[str, Any]]:
    """The database migrated, the operator started and `name` (4 occurrences, canary
    rollouts) steady on the stable template: (the operator process, the StatefulSet)."""
    await _migrated(pg_url)
    create_db_secret(cluster, ns, pg_url)
    op = start_operator()
    cluster.apply(_canary(name, ns, STABLE, waves, **rollout))
    sts = wait_for(lambda: _settled(cluster, ns, name, 4, "Complete", STABLE), timeout=TIMEOUT,
                   message="steady on the stable template")
    return op, sts


async def test_a_new_template_reaches_the_highest_ordinals_first_wave_by_wave(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "waves"
    waves = [{"name": "explorer", "occurrences": 1, "bakeSeconds": 4},
             {"name": "early", "percent": 50, "bakeSeconds": 4},
             {"name": "general", "percent": 100, "bakeSeconds": 4}]
    _, before = await _steady(cluster, ns, name, pg_url, start_operator, waves)
    stable_revision = before["status"]["currentRevision"]
    assert _rollout(cluster, ns, name)["stableRevision"] == stable_revision

    cluster.apply(_canary(name, ns, NEW, waves))
    seen: dict[str, int] = {}  # wave -> most pods on the new image while it was current
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        record = _rollout(cluster, ns, name)
        images = _images(cluster, ns, name, 4)
        on_new = sorted(k for k, image in images.items() if image == NEW)
        # the new template only ever runs on a suffix of the ordinals: the highest first
        assert on_new == list(range(4 - len(on_new), 4)), images
        # The record is persisted before the partition moves, so pods can only be ahead of a
        # record that moved while they were listed: count the pods of the readings it held
        # still over (every wave is named; the last one may pass too fast to be held).
        held = _rollout(cluster, ns, name) == record
        if record.get("phase") == "Progressing" and record.get("canaryTemplate"):
            wave = record["wave"]
            seen.setdefault(wave, 0)
            if held:
                assert len(on_new) <= record["canaryOccurrences"], (record, images)
                seen[wave] = max(seen[wave], len(on_new))
        if _settled(cluster, ns, name, 4, "Complete", NEW):
            break
        await asyncio.sleep(0.3)
    after = wait_for(lambda: _settled(cluster, ns, name, 4, "Complete", NEW), timeout=10,
                     message="every occurrence on the new template")
    assert list(seen) == ["explorer", "early", "general"], seen
    assert seen["explorer"] == 1 and seen["early"] == 2, seen
    record = _rollout(cluster, ns, name)
    assert after["spec"]["updateStrategy"]["rollingUpdate"]["partition"] == 0
    assert record["stableRevision"] == after["status"]["currentRevision"] != stable_revision
    assert record["canaryRevision"] == record["stableRevision"]
    reasons = [e["reason"] for e in events(cluster, ns, name)
               if e["reason"].startswith(("Rollout", "Wave"))]
    assert reasons.count("RolloutStarted") == 1 and reasons.count("RolloutComplete") == 1
    assert reasons.count("WavePassed") == 3 and reasons.count("WaveStarted") == 2, reasons


async def test_a_killed_operator_resumes_the_wave_pause_holds_it_and_the_stable_template_reverts(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "revert"
    waves = [{"name": "explorer", "occurrences": 1, "bakeSeconds": 3600},
             {"name": "general", "percent": 100, "bakeSeconds": 0}]
    op, _ = await _steady(cluster, ns, name, pg_url, start_operator, waves)
    cluster.apply(_canary(name, ns, NEW, waves))
    baking = wait_for(lambda: (r := _rollout(cluster, ns, name)).get("bakeStartedAt") and r,
                      timeout=TIMEOUT, message="the explorer baking")
    assert baking["wave"] == "explorer" and baking["partition"] == 3
    assert _images(cluster, ns, name, 4) == {0: STABLE, 1: STABLE, 2: STABLE, 3: NEW}

    op.kill()  # SIGKILL mid-wave: the next operator resumes from status.rollout
    start_operator()
    await asyncio.sleep(6)
    resumed = _rollout(cluster, ns, name)
    assert {k: resumed[k] for k in ("wave", "startedAt", "bakeStartedAt", "partition")} == {
        k: baking[k] for k in ("wave", "startedAt", "bakeStartedAt", "partition")}
    assert _images(cluster, ns, name, 4) == {0: STABLE, 1: STABLE, 2: STABLE, 3: NEW}

    cluster.apply(_canary(name, ns, NEW, waves, paused=True))
    wait_for(lambda: _rollout(cluster, ns, name).get("phase") == "Paused", timeout=60,
             message="Paused")
    cluster.apply(_canary(name, ns, STABLE, waves, paused=True))
    wait_for(lambda: _settled(cluster, ns, name, 4, "Reverted", STABLE), timeout=TIMEOUT,
             message="every occurrence back on the stable template")
    reasons = [e["reason"] for e in events(cluster, ns, name)
               if e["reason"].startswith("Rollout")]
    assert reasons.count("RolloutStarted") == 1, reasons
    assert {"RolloutPaused", "RolloutReverted"} <= set(reasons), reasons  # (Events keep
    # times to the second: their order within one second is not theirs)
    sts = get(cluster, "sts", name, ns)
    assert sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"] == 0


class Pods:
    """What the stand-in agents know of their pods, as a real agent would: the revision each
    ordinal's live pod was created from (None: no pod there, or it is terminating — a real
    agent stops claiming once its pod is being deleted). Refreshed from the API server."""

    def __init__(self, cluster: Any, ns: str, name: str) -> None:
        self.cluster, self.ns, self.name = cluster, ns, name
        self.revisions: dict[int, str | None] = {}

    def refresh(self) -> None:
        pods = self.cluster.kubectl_json(
            "-n", self.ns, "get", "pods", "-l",
            f"occurrence.dev/agentdeployment={self.name},occurrence.dev/component=agent")
        revisions: dict[int, str | None] = {}
        for pod in pods["items"]:
            meta = pod["metadata"]
            ordinal = int(meta["name"].rsplit("-", 1)[1])
            live = not meta.get("deletionTimestamp")
            revisions[ordinal] = meta["labels"].get("controller-revision-hash") if live else None
        self.revisions = revisions


async def _work(store: Store, ns: str, name: str, replicas: int, pods: Pods, stable: str,
                bad: bool, stop: asyncio.Event) -> dict[str, int]:
    """Stand-in agents: tasks keep arriving on every occurrence whose pod runs; each
    occurrence works its pending tasks, stamped with the revision its pod runs (registered as
    a real agent does). Fenced for a drain, one takes no work and reports quiesced (pending
    work is then the drain's). With `bad`, a revision other than `stable` fails 4 tasks of 5.
    Returns tasks submitted and finished per status; after `stop`, works off what is
    pending."""
    counts = {"submitted": 0, "completed": 0, "failed": 0}
    registered: dict[int, str | None] = {}
    i = 0

    async def active(k: int) -> bool:
        """Registered on its pod's revision, heartbeating; False once fenced or retired."""
        revision = pods.revisions.get(k)
        if revision is None:
            return False
        occurrence = f"{name}-{k}"
        if registered.get(k) != revision:
            await store.registry.register(occurrence, agent_id=f"{ns}/{name}",
                                          revision=revision)
            registered[k] = revision
        row = await store.registry.heartbeat(occurrence)
        if row.state is OccurrenceState.DRAINING and not row.quiesced:
            await store.registry.set_quiesced(occurrence, True)
        return row.state is OccurrenceState.ACTIVE

    async def work_off(k: int) -> int:
        if not await active(k):
            return 0
        revision = pods.revisions.get(k)
        scoped = store.scope(f"{name}-{k}")
        done = 0
        for task in await scoped.activate_pending_tasks(50):
            failed = bad and revision != stable and hash(task.task_id) % 5 != 0
            await scoped.update_task_status(
                task.task_id, TaskStatus.FAILED if failed else TaskStatus.COMPLETED)
            counts["failed" if failed else "completed"] += 1
            done += 1
        return done

    while not stop.is_set():
        await asyncio.to_thread(pods.refresh)
        for k in range(replicas):
            # submitted only while it is active, and before it can report quiesced below
            if await active(k):
                await store.scope(f"{name}-{k}").add_task(f"work {i}")
                counts["submitted"] += 1
            await work_off(k)
        i += 1
        await asyncio.sleep(0.05)
    for _ in range(100):  # what is still pending (tasks given back included)
        await asyncio.to_thread(pods.refresh)
        if not sum([await work_off(k) for k in range(replicas)]):
            break
    return counts


async def _every_task_once_and_completed(store: Store, name: str, counts: dict[str, int]
                                         ) -> None:
    """From the database: every task the stand-ins submitted exists once, on one of the 4
    occurrences, and is completed (none stranded pending, none left failed)."""
    tasks = [t for k in range(4) for t in await store.scope(f"{name}-{k}").get_all_tasks()]
    assert len(tasks) == len({t.task_id for t in tasks}) == counts["submitted"]
    assert {t.status for t in tasks} == {TaskStatus.COMPLETED}, \
        sorted((t.agent_occurrence_id, t.status.value) for t in tasks
               if t.status is not TaskStatus.COMPLETED)


GATE = {"metric": "taskFailureRatio", "maxIncreaseOverStable": 0.2, "minSamples": 5}


async def _until(check: Any, timeout: float, message: str) -> Any:
    """`wait_for` that lets the event loop run (the stand-in agents work meanwhile)."""
    return await wait_for_async(lambda: asyncio.to_thread(check), timeout, message,
                                interval=0.5, retry_on=())


@pytest.mark.parametrize("bad", [True, False], ids=["bad-revision", "good-revision"])
async def test_gates_judge_the_canary_on_its_work_in_the_database(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str, bad: bool
) -> None:
    """The canary is judged on the work it did; a bad one is rolled back and every task it
    failed goes back to pending once and is completed on the stable revision: at the end,
    from the database, every task submitted exists once and is completed, and each one the
    bad revision failed has its requeue record."""
    ns, cluster, name = namespace, kube_cluster, "gated"
    store = await Store.open(pg_url, migrate=True)
    stop = asyncio.Event()
    worker = None
    try:
        waves = [{"name": "explorer", "occurrences": 1, "bakeSeconds": 8, "maxBakeSeconds": 90,
                  "gates": [GATE]},
                 {"name": "general", "percent": 100, "bakeSeconds": 1}]
        extra = {"analysisIntervalSeconds": 2, "failureLimit": 2}
        _, steady = await _steady(cluster, ns, name, pg_url, start_operator, waves, **extra)
        stable = steady["status"]["currentRevision"]
        pods = Pods(cluster, ns, name)
        worker = asyncio.create_task(_work(store, ns, name, 4, pods, stable, bad, stop))
        cluster.apply(_canary(name, ns, NEW, waves, **extra))
        if bad:
            sts = await _until(lambda: _settled(cluster, ns, name, 4, "RolledBack", STABLE),
                               TIMEOUT, "rolled back: every pod on the stable one")
            assert sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"] == 4
            record = _rollout(cluster, ns, name)
            (gate,) = record["gates"]
            assert gate["verdict"] == "Fail" and gate["failures"] >= 2, gate
            assert gate["canary"] > gate["stable"] + 0.2, gate
            warnings = [e for e in events(cluster, ns, name) if e["type"] == "Warning"]
            assert [e["reason"] for e in warnings] == ["RolloutRolledBack"], warnings
            assert "taskFailureRatio" in warnings[0]["message"]
            await _until(lambda: (condition(get(cluster, "agd", name, ns), "Ready") or {}).get(
                "status") == "True", 60, "Ready on the stable revision")
            work = await _until(lambda: (_rollout(cluster, ns, name).get("failedWork") or {})
                                if (_rollout(cluster, ns, name).get("failedWork") or {}).get(
                                    "complete") else None, 60, "failed work all given back")
            assert work["revision"] == record["canaryRevision"] != stable
            assert "FailedWorkRequeued" in {e["reason"] for e in events(cluster, ns, name)}
        else:
            # the explorer (the highest ordinal) is labelled canary while its wave bakes
            await _until(lambda: _tracks(cluster, ns, name, 4) == [
                "stable", "stable", "stable", "canary"], TIMEOUT, "the explorer labelled canary")
            await _until(lambda: _settled(cluster, ns, name, 4, "Complete", NEW), TIMEOUT,
                         "promoted through both waves")
            await _until(lambda: _tracks(cluster, ns, name, 4) == ["stable"] * 4, 30,
                         "every pod labelled stable once it is over")
            record = _rollout(cluster, ns, name)
            assert record["stableTemplate"] == record["canaryTemplate"]
            assert "failedWork" not in record
            assert not [e for e in events(cluster, ns, name) if e["type"] == "Warning"]
    finally:
        stop.set()
        if worker is not None:
            counts = await worker
        await store.close()
    # from the database: every task once, every one completed (none left failed by the bad
    # revision), each failure of the bad revision given back once, with its record
    store = await Store.open(pg_url)
    try:
        await _every_task_once_and_completed(store, name, counts)
        records = await store.requeues.records(f"{ns}/{name}", limit=1000)
        assert len(records) == counts["failed"] == len({r.task_id for r in records})
        if bad:
            assert counts["failed"] > 0
            assert _rollout(cluster, ns, name)["failedWork"]["requeued"] == counts["failed"]
            assert {r.occurrence_id for r in records} == {f"{name}-3"}  # the canary's own
    finally:
        await store.close()


async def test_a_newer_template_mid_rollout_starts_over_and_the_previous_ones_pods_go_back(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    """v2 reached two occurrences when v3 arrived: the rollout starts over from the first
    wave with v3, and the v2 pod the first wave no longer covers returns to the stable
    template (a StatefulSet never replaces a pod below its partition by itself)."""
    ns, cluster, name = namespace, kube_cluster, "restart"
    v3 = "registry.example/agent:3"
    waves = [{"name": "explorer", "occurrences": 1, "bakeSeconds": 0},
             {"name": "early", "percent": 50, "bakeSeconds": 3600},
             {"name": "general", "percent": 100, "bakeSeconds": 0}]
    await _steady(cluster, ns, name, pg_url, start_operator, waves)
    cluster.apply(_canary(name, ns, NEW, waves))
    wait_for(lambda: _images(cluster, ns, name, 4) == {0: STABLE, 1: STABLE, 2: NEW, 3: NEW}
             and _rollout(cluster, ns, name).get("bakeStartedAt"), timeout=TIMEOUT,
             message="the early wave (2 of 4) baking on v2")
    waves[0]["bakeSeconds"] = 3600  # this time the explorer stays
    cluster.apply(_canary(name, ns, v3, waves))
    wait_for(lambda: _images(cluster, ns, name, 4) == {0: STABLE, 1: STABLE, 2: STABLE, 3: v3}
             and _rollout(cluster, ns, name).get("wave") == "explorer", timeout=TIMEOUT,
             message="v3 on the explorer only, the v2 pod below it back on the stable one")
    record = _rollout(cluster, ns, name)
    assert record["phase"] == "Progressing" and record["partition"] == 3
    reasons = [e["reason"] for e in events(cluster, ns, name)]
    assert reasons.count("RolloutStarted") == 2 and "RolloutRestarted" in reasons


async def test_the_rollout_annotation_aborts_and_retries_once_each(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "annotated"
    waves = [{"name": "explorer", "occurrences": 1, "bakeSeconds": 3600},
             {"name": "general", "percent": 100, "bakeSeconds": 0}]
    await _steady(cluster, ns, name, pg_url, start_operator, waves)
    cluster.apply(_canary(name, ns, NEW, waves))
    wait_for(lambda: _rollout(cluster, ns, name).get("bakeStartedAt"), timeout=TIMEOUT,
             message="the explorer baking")

    def annotate(value: str) -> None:
        cluster.kubectl("-n", ns, "annotate", "agd", name, f"occurrence.dev/rollout={value}")

    def annotation_gone() -> bool:
        agd = get(cluster, "agd", name, ns) or {}
        return "occurrence.dev/rollout" not in (agd["metadata"].get("annotations") or {})

    annotate("abort")
    wait_for(lambda: _settled(cluster, ns, name, 4, "RolledBack", STABLE), timeout=TIMEOUT,
             message="aborted: every pod back on the stable template")
    wait_for(annotation_gone, timeout=30, message="the abort annotation removed")
    annotate("retry")
    wait_for(lambda: _images(cluster, ns, name, 4) == {0: STABLE, 1: STABLE, 2: STABLE, 3: NEW}
             and _rollout(cluster, ns, name).get("phase") == "Progressing", timeout=TIMEOUT,
             message="retried: the explorer on the new template again")
    wait_for(annotation_gone, timeout=30, message="the retry annotation removed")
    annotate("promote")
    wait_for(lambda: _settled(cluster, ns, name, 4, "Complete", NEW), timeout=TIMEOUT,
             message="promoted through the last wave")
    annotate("promote")  # nothing under way: refused, said why, removed
    wait_for(annotation_gone, timeout=30, message="the ignored annotation removed")
    reasons = [e["reason"] for e in events(cluster, ns, name)]
    for reason in ("RolloutAborted", "RolloutRolledBack", "RolloutRetried",
                   "RolloutCommandIgnored", "RolloutComplete"):
        assert reason in reasons, reasons


async def test_scaling_mid_rollout_drains_first_and_the_partition_follows_the_size(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    """4 → 2 while the explorer (ordinal 3) bakes: the departing occurrences are drained to
    the survivors before their pods go, then the partition follows the new size — the
    explorer is now ordinal 1, ordinal 0 stays stable. 2 → 3: the explorer moves up to
    ordinal 2 and ordinal 1 goes back to the stable revision. The rollout then completes.
    From the database: every task submitted exists once and is completed, nothing is left on
    the occurrences that left."""
    ns, cluster, name = namespace, kube_cluster, "shrinking"
    store = await Store.open(pg_url, migrate=True)
    stop = asyncio.Event()
    worker = None
    try:
        waves = [{"name": "explorer", "occurrences": 1, "bakeSeconds": 3600},
                 {"name": "general", "percent": 100, "bakeSeconds": 0}]
        _, steady = await _steady(cluster, ns, name, pg_url, start_operator, waves)
        pods = Pods(cluster, ns, name)
        worker = asyncio.create_task(_work(store, ns, name, 4, pods,
                                           steady["status"]["currentRevision"], False, stop))
        cluster.apply(_canary(name, ns, NEW, waves))
        await _until(lambda: _tracks(cluster, ns, name, 4) == [
            "stable", "stable", "stable", "canary"] and _rollout(cluster, ns, name).get(
            "bakeStartedAt"), TIMEOUT, "the explorer (ordinal 3) baking")
        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=2")

        def shrunk() -> bool:
            sts = get(cluster, "sts", name, ns) or {}
            record = _rollout(cluster, ns, name)
            return (sts.get("spec", {}).get("replicas") == 2
                    and sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"] == 1
                    and record.get("phase") == "Progressing"
                    and record.get("wave") == "explorer"
                    and _images(cluster, ns, name, 4) == {0: STABLE, 1: NEW, 2: None, 3: None}
                    and _tracks(cluster, ns, name, 2) == ["stable", "canary"])

        await _until(shrunk, TIMEOUT, "2 occurrences, the explorer now ordinal 1")
        reasons = [e["reason"] for e in events(cluster, ns, name)]
        assert "DrainComplete" in reasons, reasons
        # 2 -> 3: the explorer moves up to ordinal 2, ordinal 1 goes back to the stable one
        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=3")
        await _until(lambda: _images(cluster, ns, name, 4) == {0: STABLE, 1: STABLE, 2: NEW,
                                                                3: None}
                     and _tracks(cluster, ns, name, 3) == ["stable", "stable", "canary"],
                     TIMEOUT, "3 occurrences, the explorer now ordinal 2 alone")
        cluster.kubectl("-n", ns, "annotate", "agd", name, "occurrence.dev/rollout=promote")
        await _until(lambda: _settled(cluster, ns, name, 3, "Complete", NEW), TIMEOUT,
                     "promoted at the new size")
    finally:
        stop.set()
        if worker is not None:
            counts = await worker
        await store.close()
    store = await Store.open(pg_url)
    try:
        await _every_task_once_and_completed(store, name, counts)
        assert counts["submitted"] > 0 and counts["failed"] == 0
    finally:
        await store.close()
