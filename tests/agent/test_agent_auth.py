"""The agent API behind bearer tokens, on a real runtime over real HTTP and PostgreSQL.

Every route the runtime's own ``/openapi.json`` lists is called without a token, with a
wrong one, with the work token where the admin token is needed, and with the right one.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from occurrence_agent import AgentConfig, OccurrenceRuntime, StartupError
from occurrence_agent.auth import OPEN_PATHS
from occurrence_store import Store
from testing.agentproc import migrate
from tests.agent.embedded import config, runtimes


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, str]:
    values = {"work": secrets.token_urlsafe(32), "admin": secrets.token_urlsafe(32)}
    directory = tmp_path / "tokens"
    directory.mkdir()
    for name, value in values.items():
        (directory / name).write_text(value)
    return {**values, "dir": str(directory)}


@pytest.fixture
async def migrated(pg_url: str) -> AsyncIterator[str]:
    await migrate(pg_url)
    yield pg_url


async def _call(runtime: OccurrenceRuntime, method: str, path: str, token: str | None = None,
                body: Any = None) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http, \
            http.request(method, f"http://127.0.0.1:{runtime.port}{path}", json=body,
                         headers=headers) as resp:
        payload = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, payload, resp.headers


async def test_a_token_that_is_not_utf8_is_a_401_not_a_500(
        migrated: str, tokens: dict[str, str]) -> None:
    """Header bytes that are not UTF-8 (found by a fuzz: a 500 and a traceback before)."""
    async with runtimes(migrated, ["auth-1"], token_dir=tokens["dir"]) as (runtime,):
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.port)
        try:
            writer.write(b"GET /tasks HTTP/1.1\r\nHost: agent\r\n"
                         b"Authorization: Bearer \xff\xfe" + tokens["work"].encode()[:8] +
                         b"\r\nConnection: close\r\n\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 20)
        finally:
            writer.close()
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.split()[1] == b"401", answer[:300]
        assert b"a valid bearer token is required" in answer


async def test_every_route_needs_its_token(migrated: str, tokens: dict[str, str]) -> None:
    async with runtimes(migrated, ["auth-0"], token_dir=tokens["dir"]) as (runtime,):
        status, created, _ = await _call(runtime, "POST", "/tasks", tokens["work"],
                                         {"description": "first"})
        assert status == 201
        status, doc, _ = await _call(runtime, "GET", "/openapi.json")
        assert status == 200 and doc["components"]["securitySchemes"]["bearer"]["scheme"] == \
            "bearer"
        routes = [(method.upper(), path.replace("{task_id}", created["task_id"]), operation)
                  for path, operations in doc["paths"].items()
                  for method, operation in operations.items()]
        assert len(routes) >= 9
        for method, path, operation in routes:
            if method == "POST" and path == "/shutdown":
                continue  # below, last: it stops the runtime
            body = {"description": "probe"} if method == "POST" else None
            if path in OPEN_PATHS:
                assert "security" not in operation
                assert (await _call(runtime, method, path))[0] == 200, path
                continue
            assert operation["security"] == [{"bearer": []}], path
            for token in (None, "x" * 40, tokens["work"][:-1]):
                status, payload, headers = await _call(runtime, method, path, token, body)
                assert status == 401, (method, path, token)
                assert payload["error"] and tokens["work"] not in str(payload)
                assert headers["WWW-Authenticate"].startswith("Bearer")
            for token in (tokens["work"], tokens["admin"]):
                status, _, _ = await _call(runtime, method, path, token, body)
                assert status in (200, 201), (method, path, status)
        # the work token may not stop the fleet; a malformed body is not even read without
        # the admin token
        for token, expected in ((None, 401), (tokens["work"], 403)):
            status, payload, _ = await _call(runtime, "POST", "/shutdown", token,
                                             {"reason": "not yours"})
            assert status == expected and "error" in payload
        status, payload, _ = await _call(runtime, "POST", "/shutdown", tokens["admin"],
                                         {"reason": "maintenance window", "wait_seconds": 5})
        assert status == 200 and payload["decided"], payload
        decision = await runtime.store.shared.get_latest_shared_task("shutdown")
        assert decision.context["caller"] == "admin"
        assert decision.context["reason"] == "maintenance window"
        refusals = {reason: runtime.metrics.value("occurrence_api_refusals_total", reason=reason)
                    for reason in ("unauthenticated", "forbidden")}
        assert refusals["unauthenticated"] >= 3 * (len(routes) - len(OPEN_PATHS) - 1) + 1
        assert refusals["forbidden"] == 1


async def test_submissions_beyond_the_rate_are_429_with_retry_after(
    migrated: str, tokens: dict[str, str],
) -> None:
    async with runtimes(migrated, ["rate-0"], token_dir=tokens["dir"], submit_rate=0.5,
                        submit_burst=3) as (runtime,):
        answers = [await _call(runtime, "POST", "/tasks", tokens["work"], {"description": "t"})
                   for _ in range(5)]
        assert [status for status, _, _ in answers] == [201, 201, 201, 429, 429]
        status, payload, headers = answers[3]
        assert int(headers["Retry-After"]) >= 1 and "too many" in payload["error"]
        # the admin credential has its own allowance; reads are never limited
        assert (await _call(runtime, "POST", "/tasks", tokens["admin"],
                            {"description": "t"}))[0] == 201
        status, listing, _ = await _call(runtime, "GET", "/tasks", tokens["work"])
        assert status == 200 and listing["total"] == 4
        assert runtime.metrics.value("occurrence_api_refusals_total", reason="rate_limited") == 2


async def test_a_rotated_token_replaces_the_old_one_without_a_restart(
    migrated: str, tokens: dict[str, str],
) -> None:
    async with runtimes(migrated, ["rotate-0"], token_dir=tokens["dir"]) as (runtime,):
        assert (await _call(runtime, "GET", "/tasks", tokens["work"]))[0] == 200
        new = secrets.token_urlsafe(32)
        path = Path(tokens["dir"]) / "work"
        path.unlink()  # the kubelet swaps the volume's files, it does not edit them
        path.write_text(new)
        for _ in range(50):
            if (await _call(runtime, "GET", "/tasks", new))[0] == 200:
                break
            await asyncio.sleep(0.1)
        assert (await _call(runtime, "GET", "/tasks", new))[0] == 200
        assert (await _call(runtime, "GET", "/tasks", tokens["work"]))[0] == 401


async def test_no_token_beyond_loopback_refuses_to_start_before_touching_anything(
    migrated: str, tmp_path: Path,
) -> None:
    runtime = OccurrenceRuntime(config("open-0", migrated, host="0.0.0.0"))
    with pytest.raises(StartupError, match=r"no API token configured and listening on 0\.0\.0\.0"):
        await runtime.start()
    default = AgentConfig(occurrence_id="open-2")
    assert default.host is None and default.listen_host == "127.0.0.1"  # no token: loopback
    assert AgentConfig(occurrence_id="open-3", token_dir=tmp_path).listen_host == "0.0.0.0"
    empty = tmp_path / "empty"
    empty.mkdir()
    runtime = OccurrenceRuntime(config("open-1", migrated, token_dir=str(empty)))
    with pytest.raises(StartupError, match="no token in"):
        await runtime.start()
    async with await Store.open(migrated) as store:
        assert await store.registry.list() == []


async def test_a_client_that_never_sends_its_body_is_cut_off(
    migrated: str, tokens: dict[str, str],
) -> None:
    async with runtimes(migrated, ["slow-0"], token_dir=tokens["dir"],
                        request_timeout=1) as (runtime,):
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.port)
        writer.write(f"POST /tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tokens['work']}"
                     "\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode())
        await writer.drain()
        started = asyncio.get_running_loop().time()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        waited = asyncio.get_running_loop().time() - started
        writer.close()
        assert head.startswith(b"HTTP/1.1 503") and b"Retry-After" in head, head
        assert 0.9 <= waited < 20, waited  # cut at the deadline, not at a socket timeout
        # the runtime serves others meanwhile and after
        assert (await _call(runtime, "GET", "/tasks", tokens["work"]))[0] == 200
