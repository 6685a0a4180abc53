"""`kubectl occurrence tasks|task`: what goes to an agent and what comes back, without a
cluster — the trust checks before a token is sent, one HTTP request over a byte stream (a
socket pair stands in for the port-forward), the bounds, and the rendering."""

from __future__ import annotations

import base64
import socket
import threading
from typing import Any

import pytest

from occurrence_operator import kubectl_occurrence as plugin
from occurrence_operator.kube.agent_api import (
    MAX_RESPONSE_BYTES,
    AgentApiError,
    agent_pod_ok,
    path_of,
    refusal,
    request_over,
    task_path,
    token_of,
)

AGD = {"metadata": {"name": "web", "namespace": "ns", "uid": "agd-uid"}}


def secret(owner_uid: str, work: str | None) -> dict[str, Any]:
    data = {} if work is None else {"work": work}
    return {"metadata": {"ownerReferences": [{"uid": owner_uid, "controller": True}]},
            "data": data}


def test_the_token_comes_only_from_the_secret_the_agentdeployment_owns() -> None:
    encoded = base64.b64encode(b"s3cret\n").decode()
    assert token_of(secret("agd-uid", encoded), AGD) == "s3cret"
    with pytest.raises(AgentApiError, match="not owned by the AgentDeployment"):
        token_of(secret("someone-else", encoded), AGD)
    with pytest.raises(AgentApiError, match="no work token"):
        token_of(secret("agd-uid", None), AGD)
    with pytest.raises(AgentApiError, match="not base64"):
        token_of(secret("agd-uid", "!!not base64!!"), AGD)


def pod(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "web-1",
                     "ownerReferences": [{"uid": "sts-uid", "controller": True}],
                     "labels": {"occurrence.dev/agentdeployment": "web",
                                "occurrence.dev/component": "agent"}},
        "status": {"phase": "Running"}}
    for key, value in changes.items():
        section, field = key.split("__")
        body[section][field] = value
    return body


@pytest.mark.parametrize(("changes", "why"), [
    ({}, None),
    ({"metadata__labels": {"occurrence.dev/agentdeployment": "web"}}, "not one of its agent"),
    ({"metadata__labels": {"occurrence.dev/agentdeployment": "other",
                           "occurrence.dev/component": "agent"}}, "not one of its agent"),
    ({"metadata__ownerReferences": [{"uid": "other", "controller": True}]},
     "not owned by its StatefulSet"),
    ({"metadata__deletionTimestamp": "2026-12-07T00:00:00Z"}, "terminating"),
    ({"status__phase": "Pending"}, "not running (Pending)"),
])
def test_a_token_goes_only_to_a_running_agent_pod_of_its_statefulset(
        changes: dict[str, Any], why: str | None) -> None:
    verdict = agent_pod_ok(pod(**changes), "web", "sts-uid")
    assert verdict == why if why is None else why in (verdict or "")


def serve_once(response: bytes) -> tuple[socket.socket, list[bytes], threading.Thread]:
    """A socket pair: the far end reads one request and writes `response`."""
    near, far = socket.socketpair()
    seen: list[bytes] = []

    def answer() -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = far.recv(65536)
            if not chunk:
                break
            data += chunk
        seen.append(data)
        far.sendall(response)
        far.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return near, seen, thread


def http_response(status: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def test_one_request_carries_the_token_and_reads_the_json_answer() -> None:
    sock, seen, thread = serve_once(http_response("200 OK", b'{"tasks": [], "total": 0}'))
    answer = request_over(sock, "GET", path_of("/tasks", {"status": "pending", "limit": 5,
                                                          "after": None}), "tok", 5)
    thread.join(5)
    assert (answer.status, answer.body) == (200, {"tasks": [], "total": 0})
    request = seen[0].decode()
    assert request.startswith("GET /tasks?status=pending&limit=5 HTTP/1.1\r\n")
    assert "Authorization: Bearer tok\r\n" in request


def test_an_answer_over_the_bound_is_refused_and_silence_is_an_error() -> None:
    huge = b"x" * (MAX_RESPONSE_BYTES + 10)
    sock, _, thread = serve_once(http_response("200 OK", huge))
    with pytest.raises(AgentApiError, match="answer over"):
        request_over(sock, "GET", "/tasks", "tok", 5)
    thread.join(5)
    sock, _, thread = serve_once(b"")
    with pytest.raises(AgentApiError, match=r"RemoteDisconnected|BadStatusLine"):
        request_over(sock, "GET", "/tasks", "tok", 5)
    thread.join(5)


def test_task_ids_are_one_path_segment() -> None:
    assert task_path("a/../../metrics") == "/tasks/a%2F..%2F..%2Fmetrics"
    assert task_path("t 1", thoughts=True) == "/tasks/t%201/thoughts"


@pytest.mark.parametrize("argv", [
    ["tasks", "web", "--limit", "0"], ["tasks", "web", "--limit", "1001"],
    ["tasks", "web", "--limit", "many"], ["tasks", "web", "--status", "lost"],
    ["task", "web"],
])
def test_bad_arguments_are_usage_errors(argv: list[str], capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_:
        plugin.build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip()


def test_a_bad_occurrence_is_refused_before_connecting(capsys: Any) -> None:
    assert plugin.main(["tasks", "web", "--occurrence", "other-1",
                        "--kubeconfig", "/nonexistent"]) == plugin.EXIT_ERROR
    assert "'other-1' is not an occurrence of web" in capsys.readouterr().err


def test_rendering_lists_each_occurrences_page_and_a_task_with_its_thoughts() -> None:
    result = {"occurrences": {
        "web-0": {"total": 7, "tasks": [{"task_id": "t1", "status": "completed",
                                          "priority": 0, "updated_at": "2026-12-07T10:00:00Z",
                                          "description": "d" * 100}]},
        "web-1": {"total": 0, "tasks": []}}, "errors": {}}
    text = plugin.render_tasks(result)
    assert text.splitlines()[0].split() == ["OCCURRENCE", "TASK", "STATUS", "PRIORITY",
                                            "UPDATED", "DESCRIPTION"]
    assert text.splitlines()[1].split()[:3] == ["web-0", "t1", "completed"]
    assert "d" * 60 in text and "d" * 61 not in text
    assert "web-0: 1 shown of 7" in text and "web-1: 0 shown of 0" in text
    found = {"occurrence": "web-0", "errors": {},
             "task": {"task_id": "t1", "status": "failed", "outcome": {"error": "boom"}},
             "thoughts": [{"thought_id": "th1", "status": "failed", "round_number": 2,
                           "updated_at": "2026-12-07T10:00:01Z"}]}
    text = plugin.render_task(found)
    assert text.splitlines()[1].split() == ["status", "failed"]
    assert text.splitlines()[2].split() == ["outcome", '{"error":', '"boom"}']
    assert "th1" in text and "no thoughts" not in text


def test_a_refused_port_forward_is_one_line_with_the_api_servers_reason() -> None:
    raw = ("Handshake status 500 Internal Server Error -+-+- {'audit-id': 'a'} -+-+- "
           '{"kind":"Status","message":"no preferred addresses found; known addresses: []",'
           '"code":500}')
    assert refusal(raw) == ("500 Internal Server Error: no preferred addresses found; "
                            "known addresses: []")
    assert refusal("no\nStatus  body") == "no Status body"


def agd_with(generation: int, observed: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"generation": generation},
            "status": {"observedGeneration": observed, "occurrences": rows}}


def test_drained_means_the_fence_was_acted_on_and_nothing_is_left() -> None:
    empty = {"id": "web-1", "state": "draining", "pendingTasks": 0}
    assert plugin.drained(agd_with(3, 3, [empty]), "web-1", 3) == empty
    assert plugin.drained(agd_with(3, 2, [empty]), "web-1", 3) is None  # status before it
    busy = {**empty, "pendingTasks": 4}
    assert plugin.drained(agd_with(3, 3, [busy]), "web-1", 3) is None
    active = {**empty, "state": "active"}
    assert plugin.drained(agd_with(3, 3, [active]), "web-1", 3) is None
    assert plugin.drained(agd_with(3, 3, []), "web-1", 3) is None


async def test_drain_refuses_an_occurrence_that_does_not_run_and_times_out_fenced(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from occurrence_operator.kube.agd_object import agd_path
    from tests.unit.operator.fake_kube import FakeKube

    kube = FakeKube()
    kube.put(agd_path("ns", "web"), {
        "metadata": {"name": "web", "namespace": "ns", "generation": 1,
                     "resourceVersion": "1"},
        "spec": {"replicas": 3},
        "status": {"observedGeneration": 1, "occurrences": [
            {"id": "web-1", "state": "active", "pendingTasks": 5}]}})
    with pytest.raises(plugin.PluginError, match="not one of the 3 occurrences"):
        await plugin._drain(kube, "ns", "web", "3", 10)  # type: ignore[arg-type]
    monkeypatch.setattr(plugin, "DRAIN_POLL_SECONDS", 0)
    ticks = iter(range(100))
    with pytest.raises(plugin.PluginError, match=r"web-1 is fenced but not empty after 5s "
                                                 r"\(state active, 5 pending"):
        await plugin._drain(kube, "ns", "web", "1", 5,  # type: ignore[arg-type]
                            clock=lambda: float(next(ticks)))
    assert kube.objects[agd_path("ns", "web")]["spec"]["fencedOccurrences"] == ["web-1"]
    result = await plugin._drain(kube, "ns", "web", "web-1", 0)  # type: ignore[arg-type]
    assert result == {"occurrence": "web-1", "fenced": True, "changed": False,
                      "drained": False}
