"""Rollout gates from Prometheus (`gates[].prometheus`) against a real Prometheus server
(Debian's `prometheus` package, `hack/ensure-promtool.sh --server`) scraping real agent
processes — a stable one and a canary that fails every task — through the operator's own
query code (rollout/prometheus.py) and gate evaluation (rollout/gates.py).

Proven here: the query is templated with the rollout's revisions and occurrence ids, the
agents' `occurrence_revision_info` joins per revision, a bad canary fails the gate and a
good one passes it, and an unreachable, unallowed, malformed or ambiguous answer is
Inconclusive — never a pass."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import aiohttp
import pytest

from occurrence_operator.model.spec import GateSpec, PrometheusGate
from occurrence_operator.rollout import prometheus
from occurrence_operator.rollout.gates import evaluate
from testing.agentproc import Agent, migrate, stop_agents
from testing.ports import free_port
from testing.waiting import wait_for_async

REPO = Path(__file__).resolve().parents[2]
AGENT_ID = "team/prom"
PER_REVISION = (  # failed / finished tasks of one revision (no failure yet: no series, so 0)
    '(sum(occurrence_tasks_finished_total{status="failed"} * on (occurrence_id) group_left '
    '(revision) occurrence_revision_info{revision="{{REV}}"}) or vector(0)) / '
    'sum(occurrence_tasks_finished_total * on (occurrence_id) group_left (revision) '
    'occurrence_revision_info{revision="{{REV}}"})')


@pytest.fixture
async def fleet(pg_url: str, tmp_path: Path) -> AsyncIterator[list[Agent]]:
    """A stable agent and a canary one (failing every task), each having finished 10."""
    await migrate(pg_url)
    agents = [
        Agent("prom-0", pg_url, tmp_path, {"--agent-id": AGENT_ID, "--revision": "rev-stable",
                                           "--simulated-work-ms": "1"}),
        Agent("prom-1", pg_url, tmp_path, {"--agent-id": AGENT_ID, "--revision": "rev-canary",
                                           "--simulated-work-ms": "1",
                                           "--simulated-failure-ratio": "1"})]
    try:
        async with aiohttp.ClientSession() as http:
            for agent in agents:
                agent.start()
            for agent in agents:
                await agent.wait_ready(http)
                await agent.submit_all(http, 10, "work")

            async def finished() -> bool:
                for agent in agents:
                    _, text = await agent.get(http, "/metrics")
                    done = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                               if line.startswith("occurrence_tasks_finished_total{"))
                    if done < 10:
                        return False
                return True

            await wait_for_async(finished, 60, "both agents to finish their tasks")
        yield agents
    finally:
        await stop_agents(agents, 15)


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    """The Prometheus server from PATH or the project's cache (Debian's package)."""
    done = subprocess.run(["bash", str(REPO / "hack" / "ensure-promtool.sh"), "--server"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"no prometheus: {done.stderr}"
    return done.stdout.strip().splitlines()[-1]


def _spawn(binary: str, workdir: Path, targets: list[str], port: int
           ) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    config = workdir / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                      "scrape_configs:\n- job_name: agents\n  static_configs:\n"
                      f"  - targets: [{', '.join(repr(t) for t in targets)}]\n")
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    return proc, log


@pytest.fixture
async def prometheus_url(fleet: list[Agent], tmp_path: Path, prometheus_binary: str
                         ) -> AsyncIterator[str]:
    """A real Prometheus scraping both agents every second."""
    port = free_port()
    proc, log = _spawn(prometheus_binary, tmp_path, [f"127.0.0.1:{a.port}" for a in fleet],
                       port)
    url = f"http://127.0.0.1:{port}"
    try:
        async def scraped() -> bool:
            reading = await prometheus.read(
                PrometheusGate.model_validate(
                    {"url": url, "query": "count(occurrence_revision_info)"}), {}, [url])
            return reading.value == 2

        deadline = time.monotonic() + 60
        while not await scraped():
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "Prometheus scraped no agent within 60 s"
            await asyncio.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


VARIABLES = {"canaryRevision": "rev-canary", "stableRevision": "rev-stable",
             "canaryOccurrences": prometheus.alternation(["prom-1"]),
             "stableOccurrences": prometheus.alternation(["prom-0"]),
             "namespace": "team", "name": "prom", "bakeSeconds": "60"}
NOW = datetime(2026, 12, 7, tzinfo=UTC)


def _gate(url: str, query: str, **limits: float) -> GateSpec:
    return GateSpec.model_validate({"prometheus": {"url": url, "query": query}, **limits})


async def _judge(gate: GateSpec, allowed: list[str]) -> tuple[str, float | None, str | None]:
    assert gate.prometheus is not None
    reading = await prometheus.read(gate.prometheus, VARIABLES, allowed)
    status = evaluate(gate, None, None, None, NOW, index=0, reading=reading)
    return status.verdict, status.canary, status.message


async def test_the_canary_fails_a_gate_the_stable_revision_passes(prometheus_url: str) -> None:
    canary = _gate(prometheus_url, PER_REVISION.replace("{{REV}}", "{{canaryRevision}}"),
                   max=0.1)
    assert await _judge(canary, [prometheus_url]) == ("Fail", 1.0, None)
    stable = _gate(prometheus_url, PER_REVISION.replace("{{REV}}", "{{stableRevision}}"),
                   max=0.1)
    assert await _judge(stable, [prometheus_url]) == ("Pass", 0.0, None)
    by_ids = _gate(prometheus_url, 'sum(occurrence_tasks_finished_total{status="failed", '
                   'occurrence_id=~"{{canaryOccurrences}}"})', max=5)
    assert await _judge(by_ids, [prometheus_url]) == ("Fail", 10.0, None)


async def test_no_clear_answer_is_inconclusive_never_a_pass(prometheus_url: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cases = {
        "unallowed": (_gate(prometheus_url, "vector(0)", max=1), [], "not a Prometheus URL"),
        "unreachable": (_gate(closed, "vector(0)", max=1), [closed], "did not answer"),
        "bad query": (_gate(prometheus_url, "sum(", max=1), [prometheus_url], "bad_data"),
        "no data": (_gate(prometheus_url, 'occurrence_revision_info{revision="nope"}', max=1),
                    [prometheus_url], "no data"),
        "two series": (_gate(prometheus_url, "occurrence_revision_info", max=1),
                       [prometheus_url], "2 samples"),
    }
    for case, (gate, allowed, why) in cases.items():
        verdict, value, message = await _judge(gate, allowed)
        assert (verdict, value) == ("Inconclusive", None), case
        assert message is not None and why in message, (case, message)
