"""docs/bad-inputs.md, row by row: every bad input there is backed by a test.

- rows whose test is `self` (the `occurrence-store` and `occurrence-agent` command lines and
  the agent's HTTP API) are run here: the documented exit code or HTTP status, and the
  documented message as a substring of what the user sees;
- every other row names a test (`path::name[param]`); it must exist: the function is defined
  in that file, and the parameter id appears in it (the api-server and operator rows are
  asserted against this same table by tests/cluster/test_bad_inputs_cluster.py).

Also: no traceback ever, and the password `hunter2` used in bad URLs never appears in the
output unless the row is marked **Bug** (then it must, until the bug is fixed and the row
updated).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import http.client
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from occurrence_store import Store
from tests.badinput.table import REPO_ROOT, SELF, SURFACES, Row, rows

SECRET = "hunter2"
COMMAND_TIMEOUT = 60
MODULES = {"occurrence-store": "occurrence_store.cli", "occurrence-agent": "occurrence_agent.cli"}

ROWS = rows()
SELF_ROWS = [r for r in ROWS if r.test == SELF]
COMMAND_ROWS = [r for r in SELF_ROWS if r.surface in ("cli", "agent")]
HTTP_ROWS = [r for r in SELF_ROWS if r.surface == "http"]
NAMED_ROWS = [r for r in ROWS if r.test != SELF]


def _ids(selected: list[Row]) -> list[str]:
    return [r.id for r in selected]


# ------------------------------------------------------------------ the table itself


def test_table_is_well_formed() -> None:
    assert len(ROWS) >= 100, "the inventory lost its rows (header changed?)"
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids)), f"duplicate ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    for row in ROWS:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", row.id), f"{row}: id"
        assert row.surface in SURFACES, f"{row}: unknown surface {row.surface!r}"
        assert row.message, f"{row}: 'what the user gets' needs the exact text in a code span"
        assert row.result, f"{row}: no result"
        if row.test == SELF:
            assert row.surface in ("cli", "agent", "http"), f"{row}: cannot run {row.surface}"
            assert row.command, f"{row}: the bad input must be a code span to run"
            if row.surface == "http":
                assert row.http_status is not None, f"{row}: result needs 'HTTP NNN'"
            else:
                assert row.exit_code is not None, f"{row}: result needs 'exit N'"
        else:
            row.test_ref()  # well-formed path::name[param]


def test_every_surface_of_the_issue_is_covered() -> None:
    """Malformed and out-of-range CR fields, Secret problems, unreachable database,
    migrations failure, bad occurrence ids (CLI and agent), bad URLs, malformed HTTP."""
    ids = {r.id for r in ROWS}
    for needed in (
        "crd-replicas-negative",
        "crd-drain-in-flight",
        "op-secret-missing",
        "op-secret-key-missing",
        "op-db-unreachable",
        "op-migrations-failed",
        "cli-migration-edited",
        "cli-id-space",
        "agent-id-space",
        "url-scheme",
        "url-unreachable",
        "http-json-syntax",
    ):
        assert needed in ids


@pytest.mark.parametrize("row", NAMED_ROWS, ids=_ids(NAMED_ROWS))
def test_named_test_exists(row: Row) -> None:
    path, name, param = row.test_ref()
    source = REPO_ROOT / path
    assert source.is_file(), f"{row}: {path} does not exist"
    tree = ast.parse(source.read_text(), filename=str(source))
    functions = {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }
    assert name in functions, f"{row}: no test function {name} in {path}"
    if param is not None:
        strings = {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
        assert param in strings, f"{row}: {path} has no case {param!r}"


# ------------------------------------------------------------------ command lines


def _migrated(path: Path, *occurrences: str) -> None:
    async def build() -> None:
        store = await Store.open(f"sqlite:///{path}", migrate=True)
        try:
            for k, occ in enumerate(occurrences):
                await store.registry.register(occ, ordinal=k)
        finally:
            await store.close()

    asyncio.run(build())


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """store.db (a1, a2 registered), t.db (migration 001 edited), f.db (a future 999)."""
    base = tmp_path_factory.mktemp("bad-inputs")
    _migrated(base / "store.db", "a1", "a2")
    _migrated(base / "t.db")
    _migrated(base / "f.db")
    with contextlib.closing(sqlite3.connect(base / "t.db")) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = '0000' WHERE version = 1")
        conn.commit()
    with contextlib.closing(sqlite3.connect(base / "f.db")) as conn:
        conn.execute(
            "INSERT INTO schema_migrations VALUES (999, 'from_the_future', 'abc', "
            "'2026-01-01 00:00:00')"
        )
        conn.commit()
    return base


def _clean_env(workdir: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AGENT_") and k != "DATABASE_URL"
    }
    env["OCCURRENCE_DATA_DIR"] = str(workdir / "data")
    return env


def _argv(program: str) -> list[str]:
    """The console script next to this interpreter (what users run), else `python -m`."""
    script = Path(sys.executable).parent / program
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", MODULES[program]]


def run_row(row: Row, workdir: Path) -> subprocess.CompletedProcess[str]:
    words = shlex.split(row.command)
    env = _clean_env(workdir)
    if row.surface == "cli":
        env["DATABASE_URL"] = "sqlite:///store.db"  # relative to workdir
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0], flags=re.S):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    assert words and words[0] in MODULES, f"{row}: runs {words[:1]}, not one of {list(MODULES)}"
    return subprocess.run(
        [*_argv(words[0]), *words[1:]],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


def _check_secret(row: Row, output: str) -> None:
    if SECRET not in row.command:
        return
    if row.is_bug:
        assert SECRET in output, f"{row}: the leak is fixed: update the row (and this test)"
    else:
        assert SECRET not in output, f"{row}: the password leaked:\n{output}"


@pytest.mark.parametrize("row", COMMAND_ROWS, ids=_ids(COMMAND_ROWS))
def test_command_row(row: Row, pristine: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    shutil.copytree(pristine, workdir)  # each row sees the same databases
    done = run_row(row, workdir)
    output = done.stdout + done.stderr
    assert done.returncode == row.exit_code, (
        f"{row}: exit {done.returncode}, documented {row.exit_code}\n{output}"
    )
    if row.surface == "cli":
        where = done.stderr if done.returncode else done.stdout
        if done.returncode == 1:  # the CLI's own errors: exactly one line
            assert len(done.stderr.strip().splitlines()) == 1, f"{row}: not one line:\n{output}"
    else:
        where = output  # start failures are JSON log lines
        if done.returncode == 2 and not row.message.startswith("occurrence-agent: error: arg"):
            assert len(done.stderr.strip().splitlines()) == 1, f"{row}: not one line:\n{output}"
    assert row.message in where, f"{row}: documented text not found:\n{row.message}\n---\n{output}"
    assert "Traceback" not in output, f"{row}: traceback:\n{output}"
    _check_secret(row, output)


# ------------------------------------------------------------------ the agent's HTTP API


@pytest.fixture(scope="module")
def agent_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One `occurrence-agent` on an embedded SQLite file, ready (after its wakeup)."""
    workdir = tmp_path_factory.mktemp("bad-http")
    port_file = workdir / "agent.port"
    args = [
        *_argv("occurrence-agent"),
        "--occurrence-id",
        "bad-http-0",
        "--database-url",
        f"sqlite:///{workdir / 'agent.db'}",
        "--migrate",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--wakeup-steps",
        "0",
        "--simulated-work-ms",
        "0",
    ]
    log = (workdir / "agent.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=_clean_env(workdir))
    try:
        deadline = time.monotonic() + 60
        port = 0
        while True:
            assert proc.poll() is None, (workdir / "agent.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "agent not ready within 60s"
            with contextlib.suppress(OSError, ValueError):
                port = port or int(port_file.read_text().strip())
            if port:
                with contextlib.suppress(OSError):
                    if _request(port, "GET", "/readyz", None)[0] == 200:
                        break
            time.sleep(0.1)
        yield port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


def _request(port: int, method: str, path: str, body: bytes | None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", errors="replace")
    finally:
        conn.close()


def parse_request(row: Row) -> tuple[str, str, bytes | None]:
    """`METHOD PATH [BODY]`; BODY is text, `<hex ff fe>` or `<repeat N c>`."""
    method, path, *rest = row.command.split(" ", 2)
    if not rest:
        return method, path, None
    body = rest[0]
    if m := re.fullmatch(r"<hex ((?:[0-9a-f]{2} ?)+)>", body):
        return method, path, bytes.fromhex(m.group(1))
    if m := re.fullmatch(r"<repeat (\d+) (.)>", body):
        return method, path, (m.group(2) * int(m.group(1))).encode()
    return method, path, body.encode()


@pytest.mark.parametrize("row", HTTP_ROWS, ids=_ids(HTTP_ROWS))
def test_http_row(row: Row, agent_port: int) -> None:
    method, path, body = parse_request(row)
    status, text = _request(agent_port, method, path, body)
    assert status == row.http_status, f"{row}: HTTP {status}, documented {row.http_status}\n{text}"
    assert row.message in text, f"{row}: documented text not found:\n{row.message}\n---\n{text}"
    assert text.lstrip().startswith("{"), f"{row}: not a JSON error: {text[:200]}"
