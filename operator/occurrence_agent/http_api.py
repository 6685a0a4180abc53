"""The HTTP API (aiohttp): submit and read this occurrence's tasks, probes, metrics.

Every error is JSON ``{"error": ..., "status": ...}``. Malformed input is a 4xx; a
database that cannot be reached is a 503; a 500 means a bug and is logged as one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from pydantic import ValidationError

from occurrence_agent.auth import TokenFiles, authorize, required_scope
from occurrence_agent.metrics import CONTENT_TYPE
from occurrence_agent.openapi import openapi_document
from occurrence_agent.ratelimit import SubmitLimiter
from occurrence_agent.schemas import (
    MAX_BODY_BYTES,
    MAX_OFFSET,
    MAX_PAGE,
    MAX_SHUTDOWN_WAIT_SECONDS,
    BadRequest,
    ShutdownRequest,
    TaskCreate,
    check_id,
    cursor_of,
    idempotency_key,
    parse_cursor,
    parse_int,
    parse_json_object,
    parse_status,
    task_json,
    thought_json,
)
from occurrence_store.errors import StoreError, StoreQueryError
from occurrence_store.models import OccurrenceId, Task, TaskStatus
from occurrence_store.scoped import ScopedStore
from occurrence_store.unreachable import DATABASE_ERRORS

log = logging.getLogger(__name__)


class RuntimeView(Protocol):
    """What the API needs from the runtime."""

    occurrence_id: OccurrenceId

    @property
    def scoped(self) -> ScopedStore: ...
    def refusal(self) -> str | None: ...
    def readiness(self) -> tuple[bool, str]: ...
    def status(self) -> dict[str, Any]: ...
    async def submit(self, body: TaskCreate, idempotency_key: str | None = None
                     ) -> tuple[Task, bool]: ...
    async def request_shutdown(self, body: ShutdownRequest, requested_by: str
                               ) -> tuple[int, dict[str, Any]]: ...
    async def render_metrics(self) -> str: ...


RUNTIME: web.AppKey[RuntimeView] = web.AppKey("runtime", RuntimeView)


@dataclass
class Guard:
    """The API's door: tokens checked on every request, submissions limited per caller."""

    tokens: TokenFiles
    limiter: SubmitLimiter
    request_seconds: float = 30.0
    """Longest a request may take, body included (a slow client, a stuck database call)."""
    on_refusal: Callable[[str], None] = lambda reason: None
    """Counts a refusal by reason: unauthenticated, forbidden, rate_limited."""


GUARD: web.AppKey[Guard] = web.AppKey("guard", Guard)
PRINCIPAL: web.RequestKey[str] = web.RequestKey("principal", str)
"""Request key: which credential made the request (``work``, ``admin``, ``anonymous``)."""



def json_error(request: web.Request, status: int, message: str, detail: Any = None,
               headers: dict[str, str] | None = None) -> web.Response:
    runtime = request.app.get(RUNTIME)
    body: dict[str, Any] = {"error": message, "status": status}
    if runtime is not None:
        body["occurrence_id"] = runtime.occurrence_id
    if detail is not None:
        body["detail"] = detail
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as exc:
        return json_error(request, exc.status, str(exc), exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return json_error(request, exc.status, exc.reason, headers=headers)
    except DATABASE_ERRORS as exc:
        log.warning("request failed, database unavailable: %s", exc,
                    extra={"event": "api.database_unavailable", "path": request.path})
        return json_error(request, 503, "database unavailable")
    except StoreQueryError:  # the database refused a statement: a bug, not the client's
        log.exception("store query failed on %s %s", request.method, request.path,
                      extra={"event": "api.bug"})
        return json_error(request, 500, "internal error")
    except StoreError as exc:
        log.warning("request failed in the store: %s", exc, extra={"event": "api.store_error"})
        return json_error(request, 503, f"store error: {exc}")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path,
                      extra={"event": "api.bug"})
        return json_error(request, 500, "internal error")


KEEPALIVE_SECONDS = 15.0
"""How long an idle keep-alive connection stays open."""


@web.middleware
async def deadline_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    # a shutdown request may wait for the decision: its own bound comes on top
    limit = request.app[GUARD].request_seconds + (
        MAX_SHUTDOWN_WAIT_SECONDS if request.path == "/shutdown" else 0)
    try:
        async with asyncio.timeout(limit):
            return await handler(request)
    except TimeoutError:
        log.warning("request took over %gs: %s %s", limit, request.method,
                    request.path, extra={"event": "api.deadline", "path": request.path})
        return json_error(request, 503, f"request took over {limit:g}s",
                          headers={"Retry-After": "5"})


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    guard = request.app[GUARD]
    verdict = authorize(guard.tokens.current(), request.headers.get("Authorization"),
                        required_scope(request.method, request.path))
    if verdict.status:
        reason = "unauthenticated" if verdict.status == 401 else "forbidden"
        guard.on_refusal(reason)
        path = request.path[:200]  # the client's text: bounded (and escaped by the formatter)
        log.info("request refused (%s): %s %s", reason, request.method, path,
                 extra={"event": "api.refused", "status": verdict.status, "path": path})
        headers = ({"WWW-Authenticate": 'Bearer realm="occurrence-agent"'}
                   if verdict.status == 401 else None)
        return json_error(request, verdict.status, verdict.message, headers=headers)
    request[PRINCIPAL] = verdict.principal
    return await handler(request)


def _validate(model: type[TaskCreate] | type[ShutdownRequest], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = exc.errors(include_url=False, include_context=False, include_input=False)
        raise BadRequest("invalid request body", 422, detail) from None


async def _body(request: web.Request) -> dict[str, Any]:
    return parse_json_object(await request.read())


async def submit_task(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    refusal = runtime.refusal()
    if refusal is not None:
        return json_error(request, 503, refusal, headers={"Retry-After": "5"})
    guard = request.app[GUARD]
    wait = guard.limiter.admit(request[PRINCIPAL])
    if wait:
        guard.on_refusal("rate_limited")
        return json_error(request, 429, "too many submissions from this credential",
                          headers={"Retry-After": SubmitLimiter.retry_after_header(wait)})
    body = _validate(TaskCreate, await _body(request))
    key = idempotency_key(request.headers.get("Idempotency-Key"), body)
    task, created = await runtime.submit(body, key)
    if not created and not body.same_request(task):
        raise BadRequest(f"idempotency key already used for task {task.task_id} with a "
                         "different request", 422)
    headers = {"Location": f"/tasks/{task.task_id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return web.json_response(task_json(task), status=201 if created else 200, headers=headers)


async def list_tasks(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    status = parse_status(request.query.get("status"))
    limit = parse_int(request.query.get("limit"), "limit", 100, 1, MAX_PAGE)
    offset = parse_int(request.query.get("offset"), "offset", 0, 0, MAX_OFFSET)
    after = parse_cursor(request.query.get("after"))
    wanted = TaskStatus(status) if status is not None else None
    page = await runtime.scoped.list_tasks(status=wanted, limit=limit, after=after,
                                           offset=offset)
    # counting costs a scan of the occurrence's history: once, on the first page only
    total = await runtime.scoped.count_tasks(wanted) if after is None and not offset else None
    following = cursor_of(page[-1]) if len(page) == limit else None
    return web.json_response({"occurrence_id": runtime.occurrence_id, "total": total,
                              "tasks": [task_json(t) for t in page], "next": following})


async def _own_task(request: web.Request) -> Task:
    task_id = request.match_info["task_id"]
    task = await request.app[RUNTIME].scoped.get_task(task_id) if check_id(task_id) else None
    if task is None:
        raise BadRequest("no such task on this occurrence", 404)
    return task


async def get_task(request: web.Request) -> web.Response:
    return web.json_response(task_json(await _own_task(request)))


async def get_thoughts(request: web.Request) -> web.Response:
    task = await _own_task(request)
    thoughts = await request.app[RUNTIME].scoped.get_thoughts_by_task(task.task_id)
    return web.json_response({"task_id": task.task_id,
                              "thoughts": [thought_json(t) for t in thoughts]})


async def shutdown(request: web.Request) -> web.Response:
    body = _validate(ShutdownRequest, await _body(request))
    status, payload = await request.app[RUNTIME].request_shutdown(
        body, requested_by=request[PRINCIPAL])
    return web.json_response(payload, status=status)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "occurrence_id": request.app[RUNTIME].occurrence_id})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    ready, reason = runtime.readiness()
    return web.json_response({"ready": ready, "reason": reason,
                              "occurrence_id": runtime.occurrence_id},
                             status=200 if ready else 503)


async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[RUNTIME].status())


async def metrics(request: web.Request) -> web.Response:
    text = await request.app[RUNTIME].render_metrics()
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app[RUNTIME].occurrence_id))


def create_app(runtime: RuntimeView, guard: Guard) -> web.Application:
    app = web.Application(middlewares=[error_middleware, deadline_middleware, auth_middleware],
                          client_max_size=MAX_BODY_BYTES)
    app[RUNTIME] = runtime
    app[GUARD] = guard
    app.router.add_post("/tasks", submit_task)
    app.router.add_get("/tasks", list_tasks)
    app.router.add_get("/tasks/{task_id}", get_task)
    app.router.add_get("/tasks/{task_id}/thoughts", get_thoughts)
    app.router.add_post("/shutdown", shutdown)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    return app
