"""The OpenAPI 3.1 description the runtime serves at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from occurrence_agent.auth import Scope, required_scope
from occurrence_agent.schemas import MAX_CURSOR_LENGTH, MAX_ID_LENGTH, ShutdownRequest, TaskCreate
from occurrence_store.models import TaskStatus

_ERROR = {"$ref": "#/components/schemas/Error"}
_OBJ = {"type": "object"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Malformed request", 404: "Not found (or another occurrence's)",
            413: "Body too large",
            422: "Invalid body, or an idempotency key reused for a different request",
            401: "No bearer token, or not one of this agent's",
            403: "The work token on an admin route: the admin token is required",
            429: "Too many submissions from this credential (see Retry-After)",
            503: "Draining or shutting down"}
    return {str(code): _json(_ERROR, text[code]) for code in codes}


def _secured(paths: dict[str, Any]) -> dict[str, Any]:
    """Mark every route that needs a token, with the refusals it may answer."""
    for path, operations in paths.items():
        for method, operation in operations.items():
            needed = required_scope(method, path)
            if needed is None:
                continue
            operation["security"] = [{"bearer": []}]
            codes: tuple[int, ...] = (401, 403) if needed is Scope.ADMIN else (401,)
            if (method, path) == ("post", "/tasks"):
                codes += (429,)
            operation["responses"].update(_errors(*codes))
            operation["description"] = (f"Needs the {needed.value} token"
                                        + (" (or the admin token)." if needed is Scope.WORK
                                           else "."))
    return paths


def openapi_document(occurrence_id: str) -> dict[str, Any]:
    task_id_param = {"name": "task_id", "in": "path", "required": True,
                     "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Occurrence agent runtime", "version": "1",
                 "description": f"API of occurrence {occurrence_id}: its own tasks only."},
        "paths": _secured({
            "/tasks": {
                "post": {
                    "summary": "Submit a task to this occurrence",
                    "parameters": [{
                        "name": "Idempotency-Key", "in": "header", "required": False,
                        "description": "Submit once: a retry with the same key, to any "
                        "occurrence of this agent, returns the first submission's task (200). "
                        "Same as the body's correlation_id.",
                        "schema": {"type": "string", "minLength": 1,
                                   "maxLength": MAX_ID_LENGTH}}],
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/TaskCreate"}}}},
                    "responses": {"201": _json({"$ref": "#/components/schemas/Task"}, "Created"),
                                  "200": _json({"$ref": "#/components/schemas/Task"},
                                               "Already submitted with this idempotency key "
                                               "(header Idempotent-Replayed: true)"),
                                  **_errors(400, 413, 422, 503)},
                },
                "get": {
                    "summary": "List this occurrence's tasks",
                    "parameters": [
                        {"name": "status", "in": "query", "required": False,
                         "schema": {"type": "string", "enum": [s.value for s in TaskStatus]}},
                        {"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                        {"name": "offset", "in": "query", "required": False,
                         "description": "Rows to skip, at most 10000; page further with "
                                        "`after`. `total` is counted on the first page only.",
                         "schema": {"type": "integer", "minimum": 0, "maximum": 10000}},
                        {"name": "after", "in": "query", "required": False,
                         "description": "The previous page's `next`: pages in creation "
                         "order, each read from where the last ended.",
                         "schema": {"type": "string", "maxLength": MAX_CURSOR_LENGTH}},
                    ],
                    "responses": {"200": _json(_OBJ, "A page: tasks, next (the cursor of the "
                                               "following page, or null), total (first page "
                                               "only)"), **_errors(400)},
                },
            },
            "/tasks/{task_id}": {"get": {
                "summary": "One of this occurrence's tasks", "parameters": [task_id_param],
                "responses": {"200": _json({"$ref": "#/components/schemas/Task"}, "Task"),
                              **_errors(404)}}},
            "/tasks/{task_id}/thoughts": {"get": {
                "summary": "Thoughts of one of this occurrence's tasks",
                "parameters": [task_id_param],
                "responses": {"200": _json(_OBJ, "Thoughts"), **_errors(404)}}},
            "/shutdown": {"post": {
                "summary": "Request an agent-wide shutdown (one decision all occurrences obey)",
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ShutdownRequest"}}}},
                "responses": {"200": _json(_OBJ, "Decided"),
                              "202": _json(_OBJ, "Another occurrence is still deciding"),
                              "409": _json(_OBJ, "A canary rollout is under way and this "
                                           "occurrence is not on the stable revision: ask "
                                           "one that is"),
                              **_errors(400, 422)}}},
            "/status": {"get": {"summary": "This occurrence's state",
                                "responses": {"200": _json(_OBJ, "State")}}},
            "/healthz": {"get": {"summary": "Liveness",
                                 "responses": {"200": _json(_OBJ, "Alive")}}},
            "/readyz": {"get": {"summary": "Readiness: woken up, not draining, lease alive, "
                                           "worker reaching the database",
                                "responses": {"200": _json(_OBJ, "Ready"),
                                              "503": _json(_OBJ, "Not ready")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
                "description": "Text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document",
                                      "responses": {"200": _json(_OBJ, "OpenAPI")}}},
        }),
        "components": {
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "The 'work' or 'admin' key of the AgentDeployment's Secret "
                "<name>-agent-token (AGENT_TOKEN_DIR in the pod)."}},
            "schemas": {
            "TaskCreate": TaskCreate.model_json_schema(),
            "ShutdownRequest": ShutdownRequest.model_json_schema(),
            "Task": {"type": "object", "required": ["task_id", "status", "agent_occurrence_id"],
                     "properties": {"task_id": {"type": "string"},
                                    "agent_occurrence_id": {"type": "string"},
                                    "description": {"type": "string"},
                                    "status": {"type": "string",
                                               "enum": [s.value for s in TaskStatus]},
                                    "priority": {"type": "integer"},
                                    "agent_id": {"type": "string"},
                                    "correlation_id": {"type": ["string", "null"]},
                                    "context": _OBJ, "outcome": _OBJ}},
            "Error": {"type": "object", "required": ["error"],
                      "properties": {"error": {"type": "string"}, "status": {"type": "integer"},
                                     "occurrence_id": {"type": "string"}, "detail": {}}},
            }},
    }
