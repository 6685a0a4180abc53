"""A throwaway PostgreSQL server for a test session or a benchmark: initdb + pg_ctl in a
temp dir.

Runs the installed server binaries on a free loopback port with fsync off. As root
(CI here), initdb refuses to run, so the server runs as the unprivileged ``postgres``
user (or ``nobody``) that owns the temp dir. Never skips: a missing binary is an error
that says how to install it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from testing.ports import free_port


def find_pg_bin() -> Path:
    override = os.environ.get("PG_BIN")
    candidates = [override] if override else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: run `bash hack/ensure-postgres.sh` "
        "(installs Debian's postgresql) or set PG_BIN"
    )


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    data_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"


def _run_as(user: str | None, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    if user is not None:
        args = ["runuser", "-u", user, "--", *args]
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = find_pg_bin()
    run_user: str | None = None
    if os.geteuid() == 0:
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                pwd.getpwnam(name)
                run_user = name
                break
    base = Path(tempfile.mkdtemp(prefix="occurrence-pg-"))
    data_dir = base / "data"
    if run_user:
        entry = pwd.getpwnam(run_user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    port = free_port()
    try:
        _run_as(run_user, [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres",
                           "--auth=trust", "--no-sync", "-E", "UTF8"])
        options = (f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        _run_as(run_user, [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-o", options,
                           "-l", str(base / "server.log"), "-w", "-t", "60", "start"])
        yield PostgresServer("127.0.0.1", port, "postgres", data_dir)
    except subprocess.CalledProcessError as exc:
        log = (base / "server.log").read_text() if (base / "server.log").exists() else ""
        raise RuntimeError(f"PostgreSQL failed to start: {exc.stderr}\n{log}") from exc
    finally:
        if (data_dir / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                _run_as(run_user, [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m",
                                   "immediate", "-w", "stop"])
        deadline = time.monotonic() + 10
        while (data_dir / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(base, ignore_errors=True)


async def create_database(server: PostgresServer) -> str:
    """A new, empty database on `server`; its name."""
    import uuid

    import asyncpg

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server.url())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


async def describe_activity(url: str) -> str:
    """What every other session of `url`'s database is doing, and what it waits on: printed
    by a test that timed out waiting for the database (a lock, a slow statement)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid, application_name, state, wait_event_type, wait_event, "
            "now() - query_start AS running, left(query, 160) AS query FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() ORDER BY pid")
    finally:
        await conn.close()
    return "\n".join(" | ".join(str(v) for v in row.values()) for row in rows) or "(none)"
