"""The ``occurrence-store`` CLI as users run it: a real process, real databases."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from occurrence_store import Store
from occurrence_store.migrations import load_migrations

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
