"""The ``occurrence-store`` CLI as users run it: a real process, real databases."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from occurrence_store import Store
from occurrence_store.migrations import load_migrations
from occurrence_store.models import TaskStatus

T = TypeVar("T")

CLI = [sys.executable, "-m", "occurrence_store.cli"]


def run(url: str | None, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = [*CLI] + (["--database-url", url] if url else [])
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def ok(url: str, *args: str) -> subprocess.CompletedProcess:
    result = run(url, *args)
    assert result.returncode == 0, result.stderr
    return result


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "occurrence-store"
    assert script.exists()
    assert subprocess.run([str(script), "--help"], capture_output=True).returncode == 0


def test_full_flow_with_json_output(db_url: str) -> None:
    migrated = json.loads(ok(db_url, "migrate", "--output", "json").stdout)
    assert [m["version"] for m in migrated["applied"]] == [
        m.version for m in load_migrations("sqlite")]
    status = json.loads(ok(db_url, "migrate", "--status", "-o", "json").stdout)
    assert all(m["applied"] and m["checksum_ok"] for m in status["migrations"])
    for i in range(3):
        ok(db_url, "occurrences", "register", f"agent-{i}", "--ordinal", str(i))
    submitted = json.loads(ok(db_url, "tasks", "submit", "--occurrence", "agent-2",
                              "--description", "work", "--count", "7", "-o", "json").stdout)
    assert len(submitted["task_ids"]) == 7
    listed = json.loads(ok(db_url, "tasks", "list", "--occurrence", "agent-2",
                           "--status", "pending", "-o", "json").stdout)
    assert {t["task_id"] for t in listed["tasks"]} == set(submitted["task_ids"])
    assert set(listed["tasks"][0]) == {"task_id", "status", "description", "channel_id",
                                       "priority", "created_at", "updated_at"}
    drained = json.loads(ok(db_url, "drain", "--from", "agent-2", "--to", "agent-0,agent-1",
                            "-o", "json").stdout)
    assert drained["tasks_moved"] == 7 and sorted(drained["per_target"].values()) == [3, 4]
    occ = json.loads(ok(db_url, "occurrences", "-o", "json").stdout)["occurrences"]
    assert [o["occurrence_id"] for o in occ] == ["agent-0", "agent-1", "agent-2"]
    assert {o["occurrence_id"]: o["pending_tasks"] for o in occ}["agent-2"] == 0
    assert set(occ[0]) == {"occurrence_id", "ordinal", "state", "version", "quiesced",
                           "heartbeat_age_seconds", "lease_expired", "agent_id",
                           "pending_tasks", "active_tasks"}
    fenced = json.loads(ok(db_url, "occurrences", "state", "agent-2", "draining",
                           "-o", "json").stdout)
    assert fenced["state"] == "draining"
    stale = run(db_url, "occurrences", "state", "agent-2", "retired", "--expected-version",
                str(fenced["version"] - 1))
    assert stale.returncode == 1 and "changed concurrently" in stale.stderr
    text = ok(db_url, "occurrences").stdout
    assert text.splitlines()[0].split()[:2] == ["OCCURRENCE", "STATE"]


def test_database_url_from_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    result = run(None, "migrate", env={"DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "env.db").exists()


def test_default_is_the_embedded_sqlite_file(tmp_path: Path) -> None:
    env = {"OCCURRENCE_DATA_DIR": str(tmp_path), "DATABASE_URL": ""}
    result = run(None, "migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "occurrence.db").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://x/y", "unsupported database URL scheme 'mysql'"),
        ("sqlite:///", "invalid SQLite URL"),
        ("postgresql://user:hunter2@127.0.0.1:1/db", "cannot connect to postgresql://user@127.0.0.1:1/db"),
        ("postgresql://h:notaport/db", "invalid PostgreSQL URL"),
    ],
)
def test_bad_urls_give_one_line_errors(url: str, message: str) -> None:
    result = run(url, "occurrences")
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr


def test_unknown_occurrence_and_unmigrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = run(url, "tasks", "submit", "--occurrence", "agent-0", "--description", "x")
    assert result.returncode == 1 and "not migrated" in result.stderr  # a write creates it
    result = run(url, "tasks", "list", "--occurrence", "agent-0")
    assert result.returncode == 1 and "not migrated" in result.stderr
    ok(url, "migrate")
    ok(url, "occurrences", "register", "agent-0")
    result = run(url, "tasks", "list", "--occurrence", "agent-9")
    assert result.returncode == 1
    assert "unknown occurrence 'agent-9' (registered: agent-0)" in result.stderr
    result = run(url, "drain", "--from", "agent-0", "--to", "agent-7")
    assert result.returncode == 1 and "survivor 'agent-7' is not registered" in result.stderr
    result = run(url, "tasks", "submit", "--occurrence", "bad id!", "--description", "x")
    assert result.returncode == 1 and "invalid occurrence id" in result.stderr
    result = run(url, "tasks", "submit", "--occurrence", "agent-0", "--description", "x",
                 "--count", "0")
    assert result.returncode == 2 and "is not >= 1" in result.stderr


def test_submit_once_and_find_a_task_anywhere(db_url: str) -> None:
    ok(db_url, "migrate")
    ok(db_url, "occurrences", "register", "agent-0")
    ok(db_url, "occurrences", "register", "agent-1")
    first = json.loads(ok(db_url, "tasks", "submit", "--occurrence", "agent-0",
                          "--description", "charge card", "--idempotency-key", "order-42",
                          "-o", "json").stdout)
    again = json.loads(ok(db_url, "tasks", "submit", "--occurrence", "agent-0",
                          "--description", "charge card", "--idempotency-key", "order-42",
                          "-o", "json").stdout)
    assert first["created"] is True and again["created"] is False
    assert again["task_ids"] == first["task_ids"]
    text = ok(db_url, "tasks", "submit", "--occurrence", "agent-0", "--description", "x",
              "--idempotency-key", "order-42").stdout
    assert "already has idempotency key 'order-42': nothing submitted" in text
    many = run(db_url, "tasks", "submit", "--occurrence", "agent-0", "--description", "x",
               "--idempotency-key", "k", "--count", "2")
    assert many.returncode == 1 and "--count 1" in many.stderr
    [task_id] = first["task_ids"]
    ok(db_url, "drain", "--from", "agent-0", "--to", "agent-1", "--reason", "test move")
    shown = json.loads(ok(db_url, "tasks", "show", task_id, "-o", "json").stdout)
    assert shown["task"]["owner"] == "agent-1" and shown["task"]["status"] == "pending"
    assert shown["task"]["idempotency_key"] == "order-42" and shown["thoughts"] == []
    assert [(t["from_occurrence_id"], t["to_occurrence_id"], t["reason"])
            for t in shown["transfers"]] == [("agent-0", "agent-1", "test move")]
    text = ok(db_url, "tasks", "show", task_id).stdout
    assert "owner        agent-1" in text and "test move" in text
    missing = run(db_url, "tasks", "show", "no-such-task")
    assert missing.returncode == 1 and "no task 'no-such-task' in this database" in missing.stderr


def test_disown_frees_ids_of_a_gone_agent(db_url: str) -> None:
    ok(db_url, "migrate")
    ok(db_url, "occurrences", "register", "agent-0")

    async def claim() -> None:
        async with await Store.open(db_url) as store:
            assert await store.registry.claim(["agent-0"], agent_id="old-ns/agent") == []

    asyncio.run(claim())
    listed = json.loads(ok(db_url, "occurrences", "-o", "json").stdout)["occurrences"]
    assert listed[0]["agent_id"] == "old-ns/agent"
    out = json.loads(ok(db_url, "occurrences", "disown", "agent-0", "-o", "json").stdout)
    assert out["changed"] == 1
    listed = json.loads(ok(db_url, "occurrences", "-o", "json").stdout)["occurrences"]
    assert listed[0]["agent_id"] == ""


@pytest.mark.parametrize("spelling", ["wait", "leave"])
def test_drain_in_flight_wait_and_its_deprecated_synonym_leave(
    tmp_path: Path, spelling: str
) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    ok(url, "migrate")
    ok(url, "occurrences", "register", "agent-0")
    ok(url, "occurrences", "register", "agent-1")
    ok(url, "tasks", "submit", "--occurrence", "agent-0", "--description", "x")
    drained = json.loads(ok(url, "drain", "--from", "agent-0", "--to", "agent-1",
                            "--in-flight", spelling, "-o", "json").stdout)
    assert drained["tasks_moved"] == 1 and drained["tasks_left_in_flight"] == 0
    help_text = " ".join(ok(url, "drain", "--help").stdout.split())
    assert "leave: deprecated synonym of wait" in help_text


# ------------------------------------------------------------------ guards


def in_store(url: str, work: Callable[[Store], Awaitable[T]]) -> T:
    """Set up or inspect the database in-process (the CLI under test runs as a process)."""
    async def go() -> T:
        async with await Store.open(url) as store:
            return await work(store)

    return asyncio.run(go())


def registry_row(url: str, occurrence_id: str) -> tuple[str, int, str]:
    async def get(store: Store) -> tuple[str, int, str]:
        occ = await store.registry.get(occurrence_id)
        assert occ is not None
        return occ.state.value, occ.version, occ.agent_id

    return in_store(url, get)


def unfinished_task_ids(url: str, occurrence_id: str) -> list[str]:
    async def get(store: Store) -> list[str]:
        scope = store.scope(occurrence_id)
        return [t.task_id for status in (TaskStatus.PENDING, TaskStatus.ACTIVE)
                for t in await scope.get_tasks_by_status(status)]

    return in_store(url, get)


def task_count(url: str, occurrence_id: str) -> int:
    return in_store(url, lambda store: store.scope(occurrence_id).count_tasks())


def one_error_line(result: subprocess.CompletedProcess, prefix: str) -> None:
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"occurrence-store: error: {prefix}"), result.stderr
    assert "Traceback" not in result.stderr


def setup_agents(url: str, agents: dict[str, list[str]]) -> None:
    """Migrate, register every occurrence and give each its agent (as the operator does)."""
    ok(url, "migrate")
    for ids in agents.values():
        for occurrence_id in ids:
            ok(url, "occurrences", "register", occurrence_id)

    async def claim(store: Store) -> None:
        for agent_id, ids in agents.items():
            assert await store.registry.claim(ids, agent_id=agent_id) == []

    in_store(url, claim)


def test_retire_is_refused_while_the_occurrence_owns_work(db_url: str) -> None:
    ok(db_url, "migrate")
    ok(db_url, "occurrences", "register", "agent-0")
    ok(db_url, "occurrences", "register", "agent-1")
    submitted = json.loads(ok(db_url, "tasks", "submit", "--occurrence", "agent-0",
                              "--description", "work", "--count", "3", "-o", "json").stdout)
    in_store(db_url, lambda store: store.scope("agent-0").activate_pending_tasks(1))
    before = registry_row(db_url, "agent-0")
    result = run(db_url, "occurrences", "state", "agent-0", "retired")
    one_error_line(result, "occurrence 'agent-0' owns 3 pending or active task(s) that nobody "
                   "would run once it is retired: drain it first with `occurrence-store drain "
                   "--from agent-0 --to ID[,ID...]`, or add --force")
    assert registry_row(db_url, "agent-0") == before  # still active, same version
    assert sorted(unfinished_task_ids(db_url, "agent-0")) == sorted(submitted["task_ids"])
    assert task_count(db_url, "agent-1") == 0
    stale = run(db_url, "occurrences", "state", "agent-0", "retired", "--force",
                "--expected-version", str(before[1] + 1))
    one_error_line(stale, "occurrence 'agent-0' changed concurrently")
    assert registry_row(db_url, "agent-0") == before and task_count(db_url, "agent-1") == 0
    # --force is for retiring only: a usage error, nothing changes
    misuse = run(db_url, "occurrences", "state", "agent-0", "draining", "--force")
    assert misuse.returncode == 2 and "--force applies only to" in misuse.stderr
    assert registry_row(db_url, "agent-0") == before
    # once drained by hand, retiring is allowed
    ok(db_url, "drain", "--from", "agent-0", "--to", "agent-1")
    retired = json.loads(ok(db_url, "occurrences", "state", "agent-0", "retired",
                            "-o", "json").stdout)
    assert retired["state"] == "retired" and retired["drained"] is None


def test_retire_force_drains_onto_the_agents_active_occurrences(db_url: str) -> None:
    setup_agents(db_url, {"ns/x": ["x-0", "x-1", "x-2", "x-3"], "ns/y": ["y-0"]})
    ok(db_url, "occurrences", "state", "x-3", "draining")  # fenced: takes no work
    submitted = json.loads(ok(db_url, "tasks", "submit", "--occurrence", "x-0",
                              "--description", "work", "--count", "7", "-o", "json").stdout)

    async def busy(store: Store) -> str:
        scope = store.scope("x-0")
        [task, _] = await scope.activate_pending_tasks(2)
        thought = await scope.add_thought(task.task_id, "thinking")
        assert [t.thought_id for t in await scope.claim_pending_thoughts(1)] == [
            thought.thought_id]
        return thought.thought_id

    thought_id = in_store(db_url, busy)
    version = registry_row(db_url, "x-0")[1]
    out = json.loads(ok(db_url, "occurrences", "state", "x-0", "retired", "--force",
                        "--expected-version", str(version), "-o", "json").stdout)
    assert out["state"] == "retired" and out["version"] == version + 1
    drained = out["drained"]
    assert drained["tasks_moved"] == 7 and drained["thoughts_released"] == 1
    assert set(drained["per_target"]) == {"x-1", "x-2"}  # its agent's active ones only
    assert sorted(drained["per_target"].values()) == [3, 4]  # balanced
    assert registry_row(db_url, "x-0")[0] == "retired"
    assert unfinished_task_ids(db_url, "x-0") == [] and task_count(db_url, "x-0") == 0
    assert task_count(db_url, "x-3") == 0 and task_count(db_url, "y-0") == 0
    moved = unfinished_task_ids(db_url, "x-1") + unfinished_task_ids(db_url, "x-2")
    assert sorted(moved) == sorted(submitted["task_ids"])  # each task once, none lost

    async def thoughts(store: Store) -> list[tuple[str, str]]:
        return [(o, t.status.value) for o in ("x-1", "x-2")
                if (t := await store.scope(o).get_thought(thought_id)) is not None]

    [(_, status)] = in_store(db_url, thoughts)
    assert status == "pending"  # released, moved with its task
    shown = json.loads(ok(db_url, "tasks", "show", moved[0], "-o", "json").stdout)
    assert [(t["from_occurrence_id"], t["reason"]) for t in shown["transfers"]] == [
        ("x-0", "retire --force")]
    text = ok(db_url, "occurrences", "state", "x-1", "retired", "--force").stdout
    assert text.startswith("moved ") and "x-2=" in text and "x-1 is retired" in text
    assert sorted(unfinished_task_ids(db_url, "x-2")) == sorted(submitted["task_ids"])


def test_retire_force_without_an_active_occurrence_to_take_the_work(db_url: str) -> None:
    setup_agents(db_url, {"ns/y": ["y-0", "y-1"], "ns/x": ["x-0"]})
    ok(db_url, "occurrences", "state", "y-1", "draining")
    ok(db_url, "tasks", "submit", "--occurrence", "y-0", "--description", "w", "--count", "2")
    before = registry_row(db_url, "y-0")
    result = run(db_url, "occurrences", "state", "y-0", "retired", "--force")
    one_error_line(result, "cannot retire 'y-0' with --force: no other active occurrence of its "
                   "agent 'ns/y' can take its 2 pending or active task(s)")
    assert registry_row(db_url, "y-0") == before
    assert task_count(db_url, "y-0") == 2 and task_count(db_url, "x-0") == 0
    assert in_store(db_url, lambda store: store.transfers.count_transfers()) == 0


def test_submit_to_a_retired_occurrence_is_refused(db_url: str) -> None:
    ok(db_url, "migrate")
    ok(db_url, "occurrences", "register", "agent-0")
    ok(db_url, "occurrences", "state", "agent-0", "retired")
    for extra in ([], ["--count", "3"], ["--idempotency-key", "k"]):
        result = run(db_url, "tasks", "submit", "--occurrence", "agent-0", "--description", "x",
                     *extra)
        one_error_line(result, "occurrence 'agent-0' is retired: nothing would ever run its "
                       "tasks; submit to an active occurrence")
    assert task_count(db_url, "agent-0") == 0
    assert registry_row(db_url, "agent-0")[0] == "retired"
    ok(db_url, "occurrences", "register", "agent-0")  # back (scale-up): active again
    ok(db_url, "tasks", "submit", "--occurrence", "agent-0", "--description", "x")
    assert task_count(db_url, "agent-0") == 1


@pytest.mark.parametrize(
    "command",
    [
        ["occurrences"],
        ["occurrences", "--agent", "ns/x"],
        ["-o", "json", "occurrences"],
        ["tasks", "list", "--occurrence", "agent-0"],
        ["tasks", "show", "some-task"],
        ["migrate", "--status"],
    ],
    ids=["occurrences", "occurrences-agent", "occurrences-json", "tasks-list", "tasks-show",
         "migrate-status"],
)
def test_read_only_commands_never_create_a_database(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "typo" / "dir" / "none.db"
    result = run(f"sqlite:///{path}", *command)
    one_error_line(result, f"no database at {path}: a read-only command creates none "
                   "(check --database-url or $DATABASE_URL)")
    assert list(tmp_path.iterdir()) == []  # no file, no directory


def test_read_only_command_on_the_missing_embedded_default(tmp_path: Path) -> None:
    env = {"OCCURRENCE_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": ""}
    result = run(None, "occurrences", env=env)
    one_error_line(result, f"no database at {tmp_path / 'data' / 'occurrence.db'}:")
    assert list(tmp_path.iterdir()) == []
    assert run(None, "migrate", env=env).returncode == 0  # a write creates it, as before
    result = run(None, "occurrences", "-o", "json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"occurrences": []}


def test_output_option_before_or_after_the_command(db_url: str) -> None:
    applied = json.loads(ok(db_url, "-o", "json", "migrate").stdout)
    assert applied["applied"]
    status = json.loads(ok(db_url, "--output", "json", "migrate", "--status").stdout)
    assert all(m["applied"] for m in status["migrations"])
    registered = json.loads(ok(db_url, "occurrences", "-o", "json", "register",
                               "agent-0").stdout)
    assert registered == {"occurrence_id": "agent-0", "state": "active"}
    assert json.loads(ok(db_url, "-o", "json", "occurrences").stdout)["occurrences"]
    assert json.loads(ok(db_url, "-o", "text", "occurrences", "-o", "json").stdout)
    text = ok(db_url, "-o", "json", "occurrences", "-o", "text").stdout  # the command's wins
    assert text.split()[:2] == ["OCCURRENCE", "STATE"]
    assert ok(db_url, "occurrences").stdout.split()[:2] == ["OCCURRENCE", "STATE"]  # default
    submitted = json.loads(ok(db_url, "-o", "json", "tasks", "submit", "--occurrence",
                              "agent-0", "--description", "x").stdout)
    [task_id] = submitted["task_ids"]
    assert json.loads(ok(db_url, "-o", "json", "tasks", "show", task_id).stdout)["task"][
        "task_id"] == task_id
    bad = run(db_url, "-o", "yaml", "occurrences")
    assert bad.returncode == 2 and "invalid choice: 'yaml'" in bad.stderr


def test_occurrences_of_one_agent(db_url: str) -> None:
    setup_agents(db_url, {"ns/x": ["x-0", "x-1"], "ns/y": ["y-0"]})
    ok(db_url, "occurrences", "register", "free-0")
    listed = json.loads(ok(db_url, "occurrences", "--agent", "ns/x", "-o", "json").stdout)
    assert [(o["occurrence_id"], o["agent_id"]) for o in listed["occurrences"]] == [
        ("x-0", "ns/x"), ("x-1", "ns/x")]
    text = ok(db_url, "occurrences", "--agent", "ns/y").stdout.splitlines()
    assert [line.split()[0] for line in text] == ["OCCURRENCE", "y-0"]
    unknown = json.loads(ok(db_url, "-o", "json", "occurrences", "--agent", "nope/none").stdout)
    assert unknown == {"occurrences": []}
    everyone = json.loads(ok(db_url, "occurrences", "-o", "json").stdout)["occurrences"]
    assert len(everyone) == 4
    misuse = run(db_url, "occurrences", "--agent", "ns/x", "register", "x-9")
    assert misuse.returncode == 2 and "--agent filters the listing" in misuse.stderr
    assert len(json.loads(ok(db_url, "occurrences", "-o", "json").stdout)["occurrences"]) == 4


def test_requeues_lists_what_a_rollback_gave_back(db_url: str) -> None:
    ok(db_url, "migrate")

    async def rollback() -> list[str]:
        store = await Store.open(db_url)
        try:
            await store.registry.register("w-1", agent_id="ns/w", revision="bad")
            scoped = store.scope("w-1")
            for i in range(3):
                task = await scoped.add_task(f"work {i}")
                await scoped.update_task_status(task.task_id, TaskStatus.FAILED,
                                                outcome={"error": "boom"})
            return await store.requeues.give_back("ns/w", "bad", ["w-1"], since_seconds=60,
                                                  reason="revision bad rolled back")
        finally:
            await store.close()

    back = asyncio.run(rollback())
    listed = json.loads(ok(db_url, "requeues", "--agent", "ns/w", "-o", "json").stdout)
    assert sorted(r["task_id"] for r in listed["requeues"]) == back
    assert {(r["revision"], r["occurrence_id"]) for r in listed["requeues"]} == {("bad", "w-1")}
    assert listed["requeues"][0]["previous_outcome"] == {"error": "boom"}
    text = ok(db_url, "requeues", "--agent", "ns/w", "--revision", "bad").stdout
    assert text.splitlines()[0].split()[:3] == ["TASK", "OCCURRENCE", "REVISION"]
    assert len(text.splitlines()) == 4
    none = json.loads(ok(db_url, "requeues", "--agent", "ns/other", "-o", "json").stdout)
    assert none["requeues"] == []
    missing = run(db_url, "requeues")
    assert missing.returncode == 2 and "--agent" in missing.stderr
