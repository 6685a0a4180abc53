"""Configuration, logs, metrics and the default handler: no processes, no network."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from occurrence_agent.config import AgentConfig, ConfigError, load_config
from occurrence_agent.handlers import DefaultHandler
from occurrence_agent.logs import JsonFormatter, OccurrenceFilter
from occurrence_agent.metrics import AgentMetrics
from occurrence_agent.schemas import BadRequest, parse_json_object
from occurrence_store import Task, Thought


def test_identity_from_the_environment() -> None:
    config = load_config(env={"AGENT_OCCURRENCE_ID": "agent-3", "AGENT_OCCURRENCE_ORDINAL": "3",
                              "DATABASE_URL": "postgresql://u@db:5432/x", "AGENT_PORT": "9000"})
    assert (config.occurrence_id, config.ordinal, config.port) == ("agent-3", 3, 9000)
    assert config.database_url == "postgresql://u@db:5432/x"
    assert not config.should_migrate  # a cluster database is migrated by the Job


def test_cli_options_win_and_embedded_sqlite_is_the_default() -> None:
    config = load_config({"occurrence_id": "local", "port": 0}, env={"AGENT_OCCURRENCE_ID": "x"})
    assert config.occurrence_id == "local" and config.port == 0
    assert config.database_url is None and config.should_migrate
    assert config.effective_heartbeat_interval == pytest.approx(config.lease_seconds / 3)


@pytest.mark.parametrize(("env", "needle"), [
    ({}, "AGENT_OCCURRENCE_ID"),
    ({"AGENT_OCCURRENCE_ID": "no spaces"}, "invalid occurrence id"),
    ({"AGENT_OCCURRENCE_ID": "__shared__"}, "reserved"),
    ({"AGENT_OCCURRENCE_ID": "a", "AGENT_OCCURRENCE_ORDINAL": "x"}, "AGENT_OCCURRENCE_ORDINAL"),
    ({"AGENT_OCCURRENCE_ID": "a", "AGENT_OCCURRENCE_ORDINAL": "-1"}, "ordinal"),
    ({"AGENT_OCCURRENCE_ID": "a", "DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
    ({"AGENT_OCCURRENCE_ID": "a", "AGENT_PORT": "70000"}, "AGENT_PORT"),
    ({"AGENT_OCCURRENCE_ID": "a", "AGENT_LEASE_SECONDS": "3",
      "AGENT_HEARTBEAT_INTERVAL": "2"}, "third of the lease"),
])
def test_bad_identity_or_settings_are_one_line_errors(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env=env)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_cli_exits_non_zero_with_one_line_error() -> None:
    env = {"PATH": "/usr/bin:/bin", "AGENT_OCCURRENCE_ID": "ok", "AGENT_OCCURRENCE_ORDINAL": "x"}
    result = subprocess.run([sys.executable, "-m", "occurrence_agent.cli"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("occurrence-agent: error:")


def test_unmigrated_database_is_a_one_line_start_failure(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "occurrence_agent.cli", "--occurrence-id", "a",
         "--database-url", f"sqlite:///{tmp_path / 'x.db'}", "--no-migrate", "--port", "0"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert events[-1]["event"] == "runtime.start_failed"
    assert "occurrence-store migrate" in events[-1]["msg"]
    assert all(e["occurrence_id"] == "a" for e in events)


def test_a_message_with_any_line_break_is_still_one_json_line() -> None:
    """Client text (a request path) reaches log lines: no character may split one."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(OccurrenceFilter("agent-7"))
    logger = logging.getLogger("occurrence_agent.http_api")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    nasty = "/tasks/a\nb\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\U00067358é"
    try:
        logger.info("request refused: %s", nasty, extra={"path": nasty})
    finally:
        logger.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()  # str.splitlines knows every line break
    entry = json.loads(line)
    assert entry["path"] == nasty and entry["msg"].endswith(nasty)
    assert line.isascii()


def test_json_logs_carry_the_occurrence_id_on_every_record() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(OccurrenceFilter("agent-7"))
    logger = logging.getLogger("occurrence_store.transfer")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("moved %d", 3, extra={"occurrence_id": "agent-9", "task_id": "t1"})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["occurrence_id"] == "agent-7" and first["subject_occurrence_id"] == "agent-9"
    assert first["msg"] == "moved 3" and first["task_id"] == "t1"
    assert second["exc_type"] == "ValueError" and second["occurrence_id"] == "agent-7"


def test_metrics_render_prometheus_text() -> None:
    metrics = AgentMetrics("a-0")
    metrics.inc("occurrence_claim_conflicts_total", kind="shared_task")
    metrics.inc("occurrence_thoughts_processed_total", 2, result="completed")
    metrics.set("occurrence_wakeup_wait_seconds", 1.5)
    text = metrics.render([("occurrence_tasks", {"status": "pending"}, 4)])
    sample = re.compile(r'^[a-z_]+\{(occurrence_id="a-0"|[a-z_]+="[^"]*")(,[a-z_]+="[^"]*")*\} '
                        r"[-+0-9.eInNa]+$")
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
    assert 'occurrence_tasks{occurrence_id="a-0",status="pending"} 4.0' in text
    assert 'occurrence_wakeup_wait_seconds{occurrence_id="a-0"} 1.5' in text
    assert "# TYPE occurrence_claim_conflicts_total counter" in text


async def test_default_handler_is_deterministic_and_configurable() -> None:
    now = datetime.now(UTC)
    task = Task(task_id="t", description="d", created_at=now, updated_at=now,
                context={"work_ms": 0, "thoughts": 2})
    first = Thought(thought_id="x", source_task_id="t", content="d", created_at=now,
                    updated_at=now)
    second = first.model_copy(update={"thought_depth": 1})
    handler = DefaultHandler(work_ms=0)
    a, b = await handler.handle(task, first), await handler.handle(task, first)
    assert a == b and a.action == "ponder"
    assert (await handler.handle(task, second)).action == "complete"
    failing = task.model_copy(update={"context": {"fail": True, "work_ms": "junk"}})
    assert (await handler.handle(failing, first)).action == "fail"


async def test_a_simulated_bad_version_fails_its_share_of_tasks_the_same_way_each_time(
) -> None:
    now = datetime.now(UTC)
    thought = Thought(thought_id="x", source_task_id="t", content="d", created_at=now,
                      updated_at=now)
    tasks = [Task(task_id=f"t-{i}", description="d", created_at=now, updated_at=now,
                  context={"work_ms": 0}) for i in range(2000)]
    bad = DefaultHandler(work_ms=0, failure_ratio=0.3)
    verdicts = [(await bad.handle(t, thought)).action for t in tasks]
    assert 0.25 < verdicts.count("fail") / len(tasks) < 0.35
    assert verdicts == [(await bad.handle(t, thought)).action for t in tasks]
    good = DefaultHandler(work_ms=0)
    assert {(await good.handle(t, thought)).action for t in tasks} == {"complete"}
    config = load_config(env={"AGENT_OCCURRENCE_ID": "a-0",
                              "AGENT_SIMULATED_FAILURE_RATIO": "0.8"})
    assert config.simulated_failure_ratio == 0.8
    with pytest.raises(ConfigError):
        load_config(env={"AGENT_OCCURRENCE_ID": "a-0", "AGENT_SIMULATED_FAILURE_RATIO": "2"})


@pytest.mark.parametrize("raw", [b"[]", b"nan", b'{"a": NaN}', b'{"a": "\\u0000"}',
                                 b'{"\\ud800": 1}', b"\xc3", b"[" * 100000])
def test_request_bodies_the_database_would_choke_on_are_refused(raw: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        parse_json_object(raw)
    assert 400 <= info.value.status < 500


def test_config_is_frozen() -> None:
    config = AgentConfig(occurrence_id="a")
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type
        config.port = 1  # type: ignore[misc]


def test_every_option_has_its_variable_in_the_help_and_every_variable_an_option() -> None:
    from occurrence_agent.cli import build_parser
    from occurrence_agent.config import ENV_NAMES
    parser = build_parser()
    options = {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}
    assert options == set(ENV_NAMES), options ^ set(ENV_NAMES)
    assert set(ENV_NAMES) == set(AgentConfig.model_fields)  # and every setting has both
    text = " ".join(parser.format_help().split())
    for name in ENV_NAMES.values():
        assert f"[{name}]" in text, name


def test_the_database_url_from_a_mounted_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text("postgresql://u:hunter2@db:5432/x\n")
    config = load_config(env={"AGENT_OCCURRENCE_ID": "a-0", "DATABASE_URL_FILE": str(secret)})
    assert config.database_url == "postgresql://u:hunter2@db:5432/x"
    assert "hunter2" not in config.redacted_database_url
    for env, needle in (
            ({"DATABASE_URL_FILE": str(tmp_path / "missing")}, "cannot read"),
            ({"DATABASE_URL_FILE": str(secret), "DATABASE_URL": "sqlite:///x.db"},
             "both set"),
    ):
        with pytest.raises(ConfigError, match=needle) as info:
            load_config(env={"AGENT_OCCURRENCE_ID": "a-0", **env})
        assert "hunter2" not in str(info.value)
    secret.write_text("mysql://nope")
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_config(env={"AGENT_OCCURRENCE_ID": "a-0", "DATABASE_URL_FILE": str(secret)})
