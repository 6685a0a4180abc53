"""Three tenants in three namespaces under one operator, against a real API server and
PostgreSQL: A's database turns into a socket that accepts and never answers, B's database
has a table locked by someone else, and C scales 5 → 2 with 1,000 pending tasks on each
departing occurrence. C's drain finishes, nothing of C's is lost (from C's database), and A
and B each say what is wrong on their own AgentDeployment only. C's drain is timed with A
and B healthy first, then broken (printed, not asserted: a timing is a benchmark's)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
import pytest

from occurrence_store import Store, TaskStatus
from testing.operator_support import (
    OperatorProcess,
    agd_manifest,
    agd_status,
    condition,
    create_db_secret,
    drop_namespace,
    get,
    scale_down_phase,
)
from testing.postgres import create_database
from testing.waiting import wait_for

pytestmark = pytest.mark.cluster

TIMEOUT = 180
PER_DEPARTING = 1000


class SwitchableProxy:
    """A TCP port in front of PostgreSQL that forwards — until `blackhole()`: from then on
    it accepts connections and never answers, and the forwarded ones are cut."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.forwarding = True
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            if not self.forwarding:
                while await reader.read(65536):  # swallow, never answer
                    pass
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self.writers.add(up_writer)

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError, ConnectionError):
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                dst.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (OSError, ConnectionError):
            pass
        finally:
            writer.close()

    def blackhole(self) -> None:
        self.forwarding = False
        for writer in list(self.writers):
            writer.close()
        self.writers.clear()

    async def close(self) -> None:
        self.blackhole()
        if self.server is not None:
            self.server.close()


async def _database(pg_server: Any) -> str:
    """A new database on the session's server, migrated."""
    name = await create_database(pg_server)
    await (await Store.open(pg_server.url(name), migrate=True)).close()
    return name


def _degraded(cluster: Any, ns: str, name: str) -> dict[str, Any] | None:
    cond = condition(get(cluster, "agd", name, ns), "Degraded")
    return cond if cond and cond.get("status") == "True" else None


async def _drain_c(cluster: Any, ns: str, store: Store) -> float:
    """C back at 5 with 1,000 pending tasks on each of 2, 3, 4; then 5 → 2: seconds until
    the drain is Done (the StatefulSet at 2, the departing occurrences retired)."""
    for k in range(5):
        await store.registry.register(f"c-{k}", ordinal=k)
    for k in (2, 3, 4):
        await store.scope(f"c-{k}").add_tasks([f"c{k}-{i}" for i in range(PER_DEPARTING)])
    cluster.kubectl("-n", ns, "scale", "agd", "c", "--replicas=5")
    # every wait off the loop: the proxy in front of A's database runs on it
    await asyncio.to_thread(wait_for, lambda: agd_status(cluster, ns, "c").get(
        "readyReplicas") == 5 and agd_status(cluster, ns, "c").get("phase") == "Running",
        timeout=TIMEOUT, message="C Running with 5")
    t0 = time.monotonic()
    cluster.kubectl("-n", ns, "scale", "agd", "c", "--replicas=2")
    await asyncio.to_thread(wait_for, lambda: scale_down_phase(cluster, ns, "c") == "Done"
                            and agd_status(cluster, ns, "c").get("replicas") == 2,
                            timeout=TIMEOUT, message="C's drain Done")
    return time.monotonic() - t0


async def test_a_dead_and_a_locked_database_do_not_stall_another_tenants_drain(
    kube_cluster: Any, namespace: str, pg_server: Any, pg_url: str, tmp_path: Any
) -> None:
    cluster = kube_cluster
    a_ns = cluster.create_namespace(f"{namespace[:50]}-a")
    b_ns = cluster.create_namespace(f"{namespace[:50]}-b")
    c_ns = namespace
    proxy = SwitchableProxy(pg_server.host, pg_server.port)
    a_db = await _database(pg_server)
    b_db = await _database(pg_server)
    c_store = await Store.open(pg_url, migrate=True)
    operator = None
    locker: asyncpg.Connection | None = None
    try:
        port = await proxy.start()
        create_db_secret(cluster, a_ns, f"postgresql://{pg_server.user}@127.0.0.1:{port}/{a_db}")
        create_db_secret(cluster, b_ns, pg_server.url(b_db))
        create_db_secret(cluster, c_ns, pg_url)
        operator = OperatorProcess(cluster, [a_ns, b_ns, c_ns], tmp_path / "operator.log")
        await asyncio.to_thread(operator.start)
        off = {"migrations": {"enabled": False}}
        cluster.apply(agd_manifest("a", a_ns, replicas=3, **off))
        cluster.apply(agd_manifest("b", b_ns, replicas=3, **off))
        cluster.apply(agd_manifest("c", c_ns, replicas=2, **off))
        for ns, name in ((a_ns, "a"), (b_ns, "b"), (c_ns, "c")):
            await asyncio.to_thread(
                wait_for, lambda ns=ns, name=name: agd_status(cluster, ns, name).get("phase")
                == "Running", timeout=TIMEOUT, message=f"{name} Running")

        healthy = await _drain_c(cluster, c_ns, c_store)

        proxy.blackhole()  # A: accepts, never answers
        locker = await asyncpg.connect(pg_server.url(b_db))  # B: a table someone holds
        await locker.execute("BEGIN")
        await locker.execute("LOCK TABLE occurrences IN ACCESS EXCLUSIVE MODE")
        a_cond = await asyncio.to_thread(wait_for, lambda: _degraded(cluster, a_ns, "a"),
                                         timeout=TIMEOUT, message="A Degraded")
        b_cond = await asyncio.to_thread(wait_for, lambda: _degraded(cluster, b_ns, "b"),
                                         timeout=TIMEOUT, message="B Degraded")
        broken = await _drain_c(cluster, c_ns, c_store)

        assert a_cond["reason"] in ("DatabaseUnavailable", "DatabaseError"), a_cond
        assert b_cond["reason"] in ("DatabaseUnavailable", "DatabaseError"), b_cond
        assert _degraded(cluster, c_ns, "c") is None, "C is not A's or B's problem"
        # nothing of C's lost: every task once, none left on the occurrences that left
        owners: dict[str, str] = {}
        for k in range(5):
            for task in await c_store.scope(f"c-{k}").get_all_tasks():
                assert task.task_id not in owners, f"{task.task_id} owned twice"
                owners[task.task_id] = f"c-{k}"
        assert len(owners) == 2 * 3 * PER_DEPARTING
        assert set(owners.values()) == {"c-0", "c-1"}
        assert {t.status for k in (0, 1)
                for t in await c_store.scope(f"c-{k}").get_all_tasks()} == {TaskStatus.PENDING}
        assert operator.alive()
        print(f"\nC's drain 5 -> 2 ({3 * PER_DEPARTING} tasks): {healthy:.1f}s with A and B "
              f"healthy, {broken:.1f}s with A's database dead and B's locked "
              f"({broken / healthy:.2f}x)")
    finally:
        if locker is not None:
            await locker.close()
        await proxy.close()
        await c_store.close()
        if operator is not None:
            operator.stop()
        for ns in (a_ns, b_ns):
            drop_namespace(cluster, ns)
