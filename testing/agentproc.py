"""Run ``occurrence-agent`` processes for tests and benchmarks: start, discover the port,
talk, stop.

Every wait is bounded; :func:`running_agents` kills whatever is left in ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from occurrence_agent.journal import read_journal
from occurrence_store import Store

FAST = {
    "--lease-seconds": "3",
    "--poll-interval": "0.05",
    "--shared-lease-seconds": "5",
    "--wakeup-timeout": "30",
    "--drain-timeout": "5",
    "--simulated-work-ms": "5",
}


async def migrate(url: str) -> None:
    store = await Store.open(url, migrate=True)
    await store.close()


@dataclass
class Agent:
    occurrence_id: str
    url: str
    workdir: Path
    options: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    port: int | None = None
    starts: int = 0

    @property
    def port_file(self) -> Path:
        return self.workdir / f"{self.occurrence_id}.port"

    @property
    def log_file(self) -> Path:
        return self.workdir / f"{self.occurrence_id}.{self.starts}.log"

    @property
    def journal(self) -> Path:
        return self.workdir / f"{self.occurrence_id}.journal"

    def start(self) -> Agent:
        self.starts += 1
        self.port = None
        self.port_file.unlink(missing_ok=True)
        opts = {**FAST, **self.options}
        args = [sys.executable, "-m", "occurrence_agent.cli", "--occurrence-id",
                self.occurrence_id, "--database-url", self.url, "--host", "127.0.0.1",
                "--port", "0", "--port-file", str(self.port_file), "--journal", str(self.journal)]
        for key, value in opts.items():
            args += [key, value]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AGENT_") and k != "DATABASE_URL"}
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    @property
    def base(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}"

    async def wait_port(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.occurrence_id} exited {self.proc.returncode}:\n"
                                     f"{self.log_file.read_text()[-3000:]}")
            with contextlib.suppress(OSError, ValueError):
                self.port = int(self.port_file.read_text().strip())
                return self.port
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.occurrence_id}: no port within {timeout}s")

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 60) -> None:
        if self.port is None:
            await self.wait_port(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{self.base}/readyz") as resp:
                    if resp.status == 200:
                        return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.occurrence_id} exited:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.occurrence_id}: not ready within {timeout}s")

    async def submit(self, session: aiohttp.ClientSession, description: str,
                     **body: Any) -> tuple[int, dict[str, Any]]:
        async with session.post(f"{self.base}/tasks",
                                json={"description": description, **body}) as resp:
            return resp.status, await resp.json()

    async def submit_all(self, session: aiohttp.ClientSession, count: int, prefix: str,
                         **body: Any) -> list[str]:
        """Submit ``count`` tasks ``"{prefix} {n}"``; each must be accepted (201)."""
        ids = []
        for n in range(count):
            status, created = await self.submit(session, f"{prefix} {n}", **body)
            assert status == 201, created
            ids.append(created["task_id"])
        return ids

    async def get(self, session: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
        async with session.get(f"{self.base}{path}") as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.occurrence_id} did not exit within {timeout}s")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return "".join(p.read_text() for p in sorted(self.workdir.glob(
            f"{self.occurrence_id}.*.log")))

    def events(self) -> list[dict[str, Any]]:
        """Every log line of every run of this agent, parsed (all must be JSON)."""
        out = []
        for line in self.log().splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def journal_events(self) -> list[dict[str, Any]]:
        return read_journal(self.journal)


@contextlib.asynccontextmanager
async def running_agents(ids: Iterable[str], url: str, workdir: Path,
                         **options: str) -> AsyncIterator[list[Agent]]:
    agents = [Agent(i, url, workdir, dict(options)) for i in ids]
    try:
        for agent in agents:
            agent.start()
        yield agents
    finally:
        await stop_agents(agents, 15)


async def stop_agents(agents: Iterable[Agent], timeout: float) -> None:
    """SIGTERM every agent still running, give each `timeout` seconds, then kill."""
    agents = list(agents)
    for agent in agents:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.signal(signal.SIGTERM)
    for agent in agents:
        with contextlib.suppress(AssertionError):
            await agent.wait_exit(timeout)
        agent.kill()

