"""No piece of a database password in what the core and the agent print, for nasty passwords.

Real channels: the exception a failed ``Store.open`` raises and every log record around it;
the agent CLI's stderr and its JSON log lines, both when it cannot start and when it starts
against a real PostgreSQL role whose password holds every character a URL parser splits on
(percent-encoded, as it must be to work).
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest

from occurrence_store import Store
from occurrence_store.errors import StoreError
from testing.agentproc import migrate
from testing.postgres import PostgresServer

PASSWORDS = ("Pa/SS@W0RD?X#Y:1", "A@B@C%40D", "ZZ:Q?PASSWORD=@XQZ", "#SECRET/../ETC",
             "QUOTE'AND\"SLASH\\")


def pieces(password: str) -> list[str]:
    return [p for p in {password, quote(password, safe=""),
                        *re.split(r"[^A-Za-z0-9]", password)} if len(p) >= 3]


def assert_clean(text: str, password: str, channel: str) -> None:
    for piece in pieces(password):
        assert piece not in text, f"{piece!r} of the password in {channel}: {text[:400]}"


@pytest.mark.parametrize("password", PASSWORDS)
async def test_a_failed_open_says_nothing_of_the_password(
    password: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for url in (f"postgresql://nobody:{password}@127.0.0.1:1/none",
                f"postgresql://nobody:{quote(password, safe='')}@127.0.0.1:1/none"):
        with pytest.raises(StoreError) as failure:
            await Store.open(url)
        assert_clean(str(failure.value), password, "the error")
    assert_clean(caplog.text, password, "the log records")


def _agent(url: str, workdir: Path, occurrence_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "occurrence_agent.cli", "--occurrence-id", occurrence_id,
         "--database-url", url, "--host", "127.0.0.1", "--port", "0",
         "--port-file", str(workdir / f"{occurrence_id}.port"), "--wakeup-timeout", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


async def _run_briefly(url: str, workdir: Path, occurrence_id: str) -> tuple[bool, str]:
    """Start the agent, stop it once it serves (or let it fail): (started, its output)."""
    agent = _agent(url, workdir, occurrence_id)
    port_file = workdir / f"{occurrence_id}.port"
    for _ in range(300):
        if port_file.exists() or agent.poll() is not None:
            break
        await asyncio.sleep(0.1)
    started = port_file.exists()
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
    out, _ = agent.communicate(timeout=60)
    return started, out.decode(errors="replace")


@pytest.mark.timeout(240)
async def test_the_agent_prints_no_piece_of_the_password_starting_or_failing(
    pg_server: PostgresServer, pg_url: str, tmp_path: Path,
) -> None:
    await migrate(pg_url)
    database = pg_url.rsplit("/", 1)[1]
    host_port = pg_server.url().split("@", 1)[1].split("/", 1)[0]
    admin = await asyncpg.connect(pg_server.url())
    try:
        for number, password in enumerate(PASSWORDS):
            role = f"pw_{uuid.uuid4().hex[:8]}"
            literal = await admin.fetchval("SELECT quote_literal($1)", password)
            await admin.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD {literal}")
            # raw: misparsed, refused or (with '@' only) understood; whatever happens, clean
            raw = f"postgresql://{role}:{password}@{host_port}/{database}"
            _, text = await _run_briefly(raw, tmp_path, f"raw-{number}")
            assert_clean(text, password, "the agent's output (raw URL)")
            # percent-encoded, as a working URL must be: the agent starts and logs its database
            good = f"postgresql://{role}:{quote(password, safe='')}@{host_port}/{database}"
            started, text = await _run_briefly(good, tmp_path, f"good-{number}")
            assert started and '"registry.registered"' in text, text[-1500:]  # it got in
            assert f"{role}@{host_port}" in text, text[-1500:]
            assert_clean(text, password, "the agent's output (encoded URL)")
    finally:
        await admin.close()
