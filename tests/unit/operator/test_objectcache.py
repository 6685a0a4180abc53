"""The object cache: what it answers, what it leaves to the API server, versions forward only."""

from __future__ import annotations

from typing import Any

import pytest

from occurrence_operator.model.objectcache import (
    ObjectCache,
    ObjectKey,
    Stale,
    is_newer,
    split_path,
)

STS = "/apis/apps/v1/statefulsets"
PATH = "/apis/apps/v1/namespaces/team/statefulsets/web"


def sts(name: str = "web", version: str = "5", replicas: int = 3) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": "team", "resourceVersion": version},
            "spec": {"replicas": replicas}}


def synced(*items: dict[str, Any], namespace: str | None = "team") -> ObjectCache:
    cache = ObjectCache()
    cache.replace(STS, namespace, items)
    return cache


def test_paths_split_into_collection_namespace_name_and_subresource() -> None:
    assert split_path(PATH) == (ObjectKey(STS, "team", "web"), "")
    assert split_path(PATH + "/scale?x=1") == (ObjectKey(STS, "team", "web"), "scale")
    assert split_path("/apis/apps/v1/namespaces/team/statefulsets") is None
    assert split_path("/api/v1/namespaces/team") is None
    assert split_path("/api/v1/nodes/n1") is None


def test_versions_compare_as_numbers_and_unknown_ones_replace() -> None:
    assert is_newer("10", "9") and is_newer("9", "9") and not is_newer("9", "10")
    assert is_newer("abc", "10") and is_newer(None, "3") and is_newer("3", None)


def test_nothing_is_answered_before_the_collection_is_listed() -> None:
    cache = ObjectCache()
    assert cache.lookup(PATH) == (False, None)
    assert cache.lookup(PATH, ours_only=True) == (False, None)


def test_a_held_object_is_a_hit_and_a_copy() -> None:
    cache = synced(sts())
    hit, obj = cache.lookup(PATH)
    assert hit and obj == sts()
    assert obj is not None
    obj["spec"]["replicas"] = 99
    assert cache.lookup(PATH)[1] == sts()


def test_an_absent_object_is_a_miss_unless_only_ours_matter() -> None:
    cache = synced()
    assert cache.lookup(PATH) == (False, None)  # a same-named object without our labels?
    assert cache.lookup(PATH, ours_only=True) == (True, None)
    assert cache.lookup(PATH + "/status") == (False, None)


def test_a_cluster_wide_list_covers_every_namespace() -> None:
    cache = synced(sts(), namespace=None)
    assert cache.lookup(PATH)[0]
    assert cache.lookup(PATH.replace("team", "other"), ours_only=True) == (True, None)


def test_a_relist_reports_what_changed_and_what_is_gone() -> None:
    cache = synced(sts("a"), sts("b"))
    changed, gone = cache.replace(STS, "team", [sts("a"), sts("c"), sts("b", version="6")])
    assert sorted(o["metadata"]["name"] for o in changed) == ["b", "c"]
    assert gone == []
    changed, gone = cache.replace(STS, "team", [sts("c")])
    assert changed == [] and sorted(o["metadata"]["name"] for o in gone) == ["a", "b"]


def test_an_event_older_than_what_is_held_is_ignored() -> None:
    cache = synced(sts(version="7"))
    with pytest.raises(Stale):
        cache.apply_event(STS, "MODIFIED", sts(version="6", replicas=1))
    assert cache.lookup(PATH)[1] == sts(version="7")
    old = cache.apply_event(STS, "MODIFIED", sts(version="8", replicas=1))
    assert old == sts(version="7")
    cache.apply_event(STS, "DELETED", sts(version="9"))
    assert cache.lookup(PATH, ours_only=True) == (True, None)


def test_a_broken_watch_answers_nothing_until_listed_again() -> None:
    cache = synced(sts())
    cache.unsync(STS, "team")
    assert cache.lookup(PATH) == (False, None)


def test_a_write_puts_the_answer_so_the_next_read_is_not_older() -> None:
    cache = synced(sts(version="5"))
    cache.wrote(PATH, "PATCH", sts(version="9", replicas=5))
    assert cache.lookup(PATH)[1] == sts(version="9", replicas=5)
    with pytest.raises(Stale):  # the watch catching up with an older version
        cache.apply_event(STS, "MODIFIED", sts(version="8", replicas=4))


def test_a_create_is_held_under_the_object_path() -> None:
    cache = synced()
    cache.wrote("/apis/apps/v1/namespaces/team/statefulsets", "POST", sts(version="3"))
    assert cache.lookup(PATH)[1] == sts(version="3")


def test_a_status_write_answers_the_whole_object() -> None:
    cache = synced(sts(version="5"))
    cache.wrote(PATH + "/status", "PATCH", {**sts(version="6"), "status": {"replicas": 3}})
    assert cache.lookup(PATH)[1] == {**sts(version="6"), "status": {"replicas": 3}}


def test_a_scale_write_makes_older_copies_misses_until_the_watch_catches_up() -> None:
    cache = synced(sts(version="5"))
    scale = {"kind": "Scale", "metadata": {"name": "web", "namespace": "team",
                                           "resourceVersion": "9"}, "spec": {"replicas": 1}}
    cache.wrote(PATH + "/scale", "PATCH", scale)
    assert cache.lookup(PATH) == (False, None)
    cache.apply_event(STS, "MODIFIED", sts(version="7"))  # still older than the scale
    assert cache.lookup(PATH) == (False, None)
    cache.apply_event(STS, "MODIFIED", sts(version="9", replicas=1))
    assert cache.lookup(PATH)[1] == sts(version="9", replicas=1)


def test_a_failed_or_deleting_write_drops_the_copy() -> None:
    cache = synced(sts())
    cache.wrote(PATH, "DELETE", None)
    assert cache.lookup(PATH) == (False, None)


def test_writes_to_collections_nobody_watches_are_not_held() -> None:
    cache = ObjectCache()
    cache.wrote(PATH, "PATCH", sts(version="9"))
    assert cache.lookup(PATH) == (False, None)
