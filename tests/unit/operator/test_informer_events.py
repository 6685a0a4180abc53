"""What an informer hands on, without the streams: relist diffs, stale events, pods uncached."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest

from occurrence_operator.kube.client import Kube
from occurrence_operator.kube.informer import Informer, Watched

PODS = Watched("/api/v1", "pods", "x", cached=False)
STS = Watched("/apis/apps/v1", "statefulsets", "x")


def obj(name: str, version: str, owner: str = "web") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "team", "resourceVersion": version,
                         "labels": {"occurrence.dev/agentdeployment": owner}},
            "spec": {}}


def informer(watched: Watched) -> tuple[Informer, list[tuple[str, str]], Kube]:
    seen: list[tuple[str, str]] = []
    kube = Kube(None)
    inf = Informer(kube, watched, "team",
                   lambda kind, o, old: seen.append((kind, o["metadata"]["name"])),
                   loop=None)  # type: ignore[arg-type]  # the stream thread is never started
    return inf, seen, kube


def test_an_uncached_kind_reports_relist_diffs_from_what_it_saw() -> None:
    inf, seen, kube = informer(PODS)
    inf._replace([obj("web-0", "1"), obj("web-1", "1")])
    assert sorted(seen) == [("ADDED", "web-0"), ("ADDED", "web-1")]
    seen.clear()
    inf._apply("MODIFIED", obj("web-0", "2"))
    inf._replace([obj("web-0", "2")])  # web-1 went while the watch was down
    assert seen == [("MODIFIED", "web-0"), ("DELETED", "web-1")]
    assert inf.synced.is_set()
    # never served: a pod path is always a GET
    assert kube.cache.lookup("/api/v1/namespaces/team/pods/web-0") == (False, None)


def test_a_gone_uncached_object_keeps_its_owner_label() -> None:
    inf, _, _ = informer(PODS)
    owners: list[str] = []
    inf.on_event = lambda kind, o, old: owners.append(
        o["metadata"]["labels"]["occurrence.dev/agentdeployment"])
    inf._replace([obj("a-0", "1", owner="a")])
    owners.clear()
    inf._replace([])
    assert owners == ["a"]


def test_a_cached_kind_skips_events_older_than_a_write() -> None:
    inf, seen, kube = informer(STS)
    inf._replace([obj("web", "5")])
    kube.cache.wrote("/apis/apps/v1/namespaces/team/statefulsets/web", "PATCH",
                     {**obj("web", "9"), "kind": "StatefulSet"})
    seen.clear()
    inf._apply("MODIFIED", obj("web", "7"))
    assert seen == []
    inf._apply("MODIFIED", obj("web", "10"))
    assert seen == [("MODIFIED", "web")]


def test_a_failing_handler_is_logged_and_counted_not_raised() -> None:
    inf, _, kube = informer(STS)

    def broken(kind: str, o: dict[str, Any], old: Any) -> None:
        raise RuntimeError("bug")

    inf.on_event = broken
    inf._apply("ADDED", obj("web", "1"))
    text = generate_latest(kube.metrics.registry).decode()
    assert ('occurrence_operator_informer_errors_total{reason="handler",'
            'resource="statefulsets"} 1.0') in text
