"""Schema-driven fuzzing of the HTTP API: whatever the request, never a 500.

The routes, methods, parameters and body schemas come from the ``/openapi.json`` the
runtime serves; hypothesis generates values that follow the schema, break it, or are
plain garbage. The agent runs as a real process against a real PostgreSQL (the backend
that refuses NUL characters and lone surrogates).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from occurrence_agent.auth import required_scope
from testing.agentproc import Agent, migrate
from testing.postgres import PostgresServer

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _from_schema(schema: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "$ref" in schema:
        return _from_schema(components[schema["$ref"].rsplit("/", 1)[1]], components)
    kind = schema.get("type")
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0),
                       max_size=min(schema.get("maxLength", 50), 50))
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False)
    if kind == "object" and "properties" in schema:
        props = {k: _from_schema(v, components) for k, v in schema["properties"].items()}
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: v for k, v in props.items() if k in required},
            optional={k: v for k, v in props.items() if k not in required})
    if kind == "object":
        return st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4)
    return JSON_VALUES


def _mutate(value: Any) -> st.SearchStrategy[Any]:
    """The valid value, or one with a field replaced or added by arbitrary JSON."""
    if not isinstance(value, dict):
        return st.just(value)
    return st.one_of(
        st.just(value),
        st.builds(lambda k, v: {**value, k: v},
                  st.sampled_from([*value, "extra"]) if value else st.just("extra"), JSON_VALUES))


def _bodies(schema: dict[str, Any] | None, components: dict[str, Any]
            ) -> st.SearchStrategy[bytes | None]:
    structured: st.SearchStrategy[Any] = (
        _from_schema(schema, components).flatmap(_mutate) if schema else JSON_VALUES)
    return st.one_of(
        st.none(),
        structured.map(lambda v: json.dumps(v).encode()),
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
        st.sampled_from([b"{", b"[1,", b'{"description": NaN}', b'{"description": "\\u0000"}',
                         b'{"description": "\\ud800"}', b"[" * 5000 + b"]" * 5000,
                         b'{"description": "x", "context": ' + b'{"a":' * 40 + b"1" + b"}" * 41,
                         b'{"description": "x", "priority": 99999999999999999999999}',
                         b"\xff\xfe"]),
    )


@st.composite
def requests(draw: st.DrawFn, doc: dict[str, Any]) -> tuple[str, str, bytes | None, str]:
    components = doc["components"]["schemas"]
    routes = [(path, method, op) for path, ops in doc["paths"].items()
              for method, op in ops.items()]
    path, method, op = draw(st.sampled_from(routes))
    if draw(st.integers(0, 9)) == 0:  # sometimes a method the route does not have
        method = draw(st.sampled_from(["get", "post", "put", "delete", "patch", "options"]))
    query: dict[str, str] = {}
    for param in op.get("parameters", []):
        value = draw(st.one_of(_from_schema(param["schema"], components).map(str),
                               st.text(max_size=20)))
        if param["in"] == "path":
            path = path.replace("{" + param["name"] + "}", quote(value, safe="") or "x")
        elif draw(st.booleans()):
            query[param["name"]] = value
    if draw(st.integers(0, 19)) == 0:
        path = "/" + quote(draw(st.text(max_size=30)), safe="/")
    body_schema = (op.get("requestBody", {}).get("content", {})
                   .get("application/json", {}).get("schema"))
    body = draw(_bodies(body_schema, components))
    if query:
        path += "?" + urlencode(query)
    content_type = draw(st.sampled_from(["application/json", "text/plain", "",
                                         "application/json; charset=latin-1"]))
    return method.upper(), path, body, content_type


def _create_database(server: PostgresServer) -> str:
    name = f"fuzz_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        conn = await asyncpg.connect(server.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        await migrate(server.url(name))

    asyncio.run(create())
    return server.url(name)


WORK_TOKEN, ADMIN_TOKEN = "work-" + uuid.uuid4().hex, "admin-" + uuid.uuid4().hex
"""The fuzzed agent runs behind tokens, as in a pod; requests carry the work token unless
the fuzzer drops it or sends a wrong one."""


@pytest.fixture(scope="module")
def fuzz_agent(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Agent]:
    workdir = tmp_path_factory.mktemp("fuzz")
    tokens = workdir / "tokens"
    tokens.mkdir()
    (tokens / "work").write_text(WORK_TOKEN)
    (tokens / "admin").write_text(ADMIN_TOKEN)
    agent = Agent("fuzz-0", _create_database(pg_server), workdir,
                  {"--simulated-work-ms": "0", "--token-dir": str(tokens)})
    agent.start()
    try:
        asyncio.run(agent.wait_port(30))
        yield agent
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.signal(signal.SIGTERM)
            try:
                agent.proc.wait(15)
            finally:
                agent.kill()


def _call(agent: Agent, method: str, path: str, body: bytes | None = None,
          content_type: str = "application/json", token: str | None = WORK_TOKEN
          ) -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=30)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("Content-Type") or ""
    finally:
        conn.close()


def _doc(agent: Agent) -> dict[str, Any]:
    status, body, _ = _call(agent, "GET", "/openapi.json")
    assert status == 200
    return json.loads(body)


def test_openapi_document_lists_every_route(fuzz_agent: Agent) -> None:
    doc = _doc(fuzz_agent)
    assert doc["openapi"].startswith("3.")
    assert {"/tasks", "/tasks/{task_id}", "/healthz", "/readyz", "/metrics",
            "/openapi.json", "/shutdown"} <= set(doc["paths"])


@pytest.mark.timeout(300)
def test_fuzzed_requests_never_get_a_500(fuzz_agent: Agent) -> None:
    doc = _doc(fuzz_agent)
    # /shutdown would stop the fleet under test: it is fuzzed with bodies that fail validation
    # only, by keeping it out of the routes and checking it below.
    doc["paths"].pop("/shutdown")
    seen: dict[int, int] = {}

    @settings(max_examples=400, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(requests(doc), st.sampled_from([WORK_TOKEN, WORK_TOKEN, WORK_TOKEN, None,
                                           WORK_TOKEN[:-1], ADMIN_TOKEN + "x"]))
    def check(request: tuple[str, str, bytes | None, str], token: str | None) -> None:
        method, path, body, content_type = request
        status, payload, ctype = _call(fuzz_agent, method, path, body, content_type, token)
        seen[status] = seen.get(status, 0) + 1
        assert status < 500, (method, path, body, payload[:300])
        if token != WORK_TOKEN and required_scope(method, urlsplit(path).path) is not None:
            assert status == 401, (method, path, token, status)
        if status >= 400 and method != "HEAD":
            assert ctype.startswith("application/json"), (status, payload[:200])
            assert "error" in json.loads(payload)

    check()
    assert fuzz_agent.proc.poll() is None, "the agent survived"
    assert 200 in seen and any(400 <= s < 500 for s in seen), seen
    status, payload, _ = _call(fuzz_agent, "POST", "/tasks",
                               json.dumps({"description": "still works"}).encode())
    assert status == 201, payload
    bugs = [e for e in fuzz_agent.events() if e.get("event") == "api.bug"]
    assert not bugs, bugs[:1]


@pytest.mark.parametrize("body", [b"[]", b'{"reason": 5}', b'{"wait_seconds": -1}',
                                  b'{"nope": 1}', b"\xff", b'{"reason": "a\\u0000"}'])
def test_malformed_shutdown_requests_are_4xx(fuzz_agent: Agent, body: bytes) -> None:
    status, payload, _ = _call(fuzz_agent, "POST", "/shutdown", body, token=ADMIN_TOKEN)
    assert 400 <= status < 500 and "error" in json.loads(payload)
    assert fuzz_agent.proc.poll() is None
