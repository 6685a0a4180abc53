"""`make demo`: the main job end to end on the embedded SQLite default, on one host.

Three agent occurrences share one database file. The first to start performs the day's
wakeup for all; each works only its own tasks. Then occurrence demo-2 is scaled away the
way the operator does it: fenced (draining), quiesced, its pending work transferred to the
survivors, stopped with SIGTERM, retired. The demo ends by showing that every task was
completed exactly once and where the moved ones went.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from occurrence_store import InFlightPolicy, OccurrenceState, Store, TaskStatus

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("DEMO_DATA_DIR") or ROOT / ".data" / "demo")
OCCURRENCES = ["demo-0", "demo-1", "demo-2"]
TASKS_EACH = 60


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for {what}")
        time.sleep(0.2)


def http(port: int, path: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method="POST" if body is not None else "GET",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
    except OSError:
        return 0, {}


def start_agent(occurrence_id: str, ordinal: int, env: dict) -> tuple[subprocess.Popen, int]:
    port_file = DATA / f"{occurrence_id}.port"
    log = (DATA / f"{occurrence_id}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "occurrence_agent.cli", "--occurrence-id", occurrence_id,
         "--ordinal", str(ordinal), "--port", "0", "--port-file", str(port_file),
         "--host", "127.0.0.1", "--simulated-work-ms", "300", "--drain-timeout", "10",
         "--lease-seconds", "6"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    wait(lambda: port_file.exists() and port_file.read_text().strip(), 60,
         f"{occurrence_id} to bind its port (log: {log.name})")
    return proc, int(port_file.read_text())


async def report(store: Store) -> None:
    rows = []
    for occ in await store.registry.list():
        scope = store.scope(occ.occurrence_id)
        rows.append(f"  {occ.occurrence_id:8} {occ.state.value:9} pending={occ.pending_tasks:<3} "
                    f"active={occ.active_tasks:<3} "
                    f"completed={await scope.count_tasks(TaskStatus.COMPLETED)}")
    print("\n".join(rows))


async def main() -> int:
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    env = {**os.environ, "OCCURRENCE_DATA_DIR": str(DATA)}
    env.pop("DATABASE_URL", None)
    os.environ.update(OCCURRENCE_DATA_DIR=str(DATA))
    os.environ.pop("DATABASE_URL", None)
    say(f"embedded database: {DATA / 'occurrence.db'}")
    subprocess.run([sys.executable, "-m", "occurrence_store.cli", "migrate"], env=env, check=True)

    say("starting 3 occurrences; the first claims the day's wakeup, the others wait and join")
    agents = {occ: start_agent(occ, i, env) for i, occ in enumerate(OCCURRENCES)}
    try:
        for occ, (_, port) in agents.items():
            wait(lambda port=port: http(port, "/readyz")[0] == 200, 120, f"{occ} ready")
        store = await Store.open(None)
        try:
            wakeup = await store.shared.get_latest_shared_task("wakeup")
            print(f"  wakeup {wakeup.task_id} performed by {wakeup.claimed_by}: "
                  f"{wakeup.status.value}")

            say(f"submitting {TASKS_EACH} tasks to each occurrence through its HTTP API")
            submitted: set[str] = set()
            for occ, (_, port) in agents.items():
                for i in range(TASKS_EACH):
                    code, body = http(port, "/tasks", {"description": f"{occ} job {i}"})
                    assert code in (200, 201, 202), (code, body)
                    submitted.add(body["task_id"])
            await asyncio.sleep(1.0)
            await report(store)

            say("scale-down of demo-2: fence -> quiesce -> transfer -> SIGTERM -> retire")
            await store.registry.set_state("demo-2", OccurrenceState.DRAINING)
            port2 = agents["demo-2"][1]
            wait(lambda: http(port2, "/readyz")[0] == 503, 30, "demo-2 to notice it is fenced")
            code, body = http(agents["demo-2"][1], "/tasks", {"description": "late"})
            print(f"  demo-2 is not ready and refuses new work: HTTP {code} "
                  f"{body.get('error', body)}")
            deadline = time.monotonic() + 30
            while not (await store.registry.get("demo-2")).quiesced:
                if time.monotonic() > deadline:
                    raise SystemExit("demo: demo-2 did not quiesce")
                await asyncio.sleep(0.2)
            result = await store.transfers.drain("demo-2", ["demo-0", "demo-1"],
                                                 in_flight=InFlightPolicy.RELEASE,
                                                 reason="demo scale-down")
            print(f"  moved {result.tasks_moved} tasks: {result.per_target}")
            proc = agents["demo-2"][0]
            proc.send_signal(signal.SIGTERM)
            print(f"  demo-2 exited with code {proc.wait(30)}")
            await store.transfers.drain("demo-2", ["demo-0", "demo-1"],
                                        in_flight=InFlightPolicy.RELEASE, reason="sweep")
            await store.registry.set_state("demo-2", OccurrenceState.RETIRED)

            say("waiting for the survivors to finish everything")
            deadline = time.monotonic() + 120
            while True:
                done = sum([await store.scope(o).count_tasks(TaskStatus.COMPLETED)
                            for o in OCCURRENCES])
                if done >= len(submitted):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"demo: only {done}/{len(submitted)} tasks completed")
                await asyncio.sleep(0.5)
            await report(store)
            owners = {}
            for occ in OCCURRENCES:
                for task in await store.scope(occ).get_all_tasks():
                    owners[task.task_id] = occ
            lost = submitted - set(owners)
            moved = [t for t in submitted if owners.get(t) and
                     (await store.transfers.transfers_for_task(t))]
            print(f"\n  submitted={len(submitted)} completed={done} lost={len(lost)} "
                  f"transferred={len(moved)} (each with an audit record)")
            if moved:
                [record] = (await store.transfers.transfers_for_task(moved[0]))[-1:]
                print(f"  e.g. task {record.task_id}: {record.from_occurrence_id} -> "
                      f"{record.to_occurrence_id} ({record.reason})")
            return 0 if not lost else 1
        finally:
            await store.close()
    finally:
        for proc, _ in agents.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in agents.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        print(f"\n(agent logs: {DATA}/*.log)")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
