"""needs_apply: a rendered manifest vs the live object the API server returns."""

from __future__ import annotations

from occurrence_operator.kube.client import is_subset, needs_apply, resource_of


def test_server_defaults_and_omitted_empties_do_not_count_as_differences() -> None:
    desired = {"metadata": {"labels": {"a": "1"}}, "spec": {"x": False, "ports": [{"port": 1}]}}
    live = {
        "metadata": {"labels": {"a": "1", "extra": "2"}, "resourceVersion": "7"},
        "spec": {"ports": [{"port": 1, "protocol": "TCP"}], "type": "ClusterIP"},
    }
    assert not needs_apply(desired, live)


def test_changed_value_or_list_length_is_a_difference() -> None:
    live = {"metadata": {}, "spec": {"replicas": 3, "l": [1, 2]}}
    assert needs_apply({"metadata": {}, "spec": {"replicas": 2}}, live)
    assert needs_apply({"metadata": {}, "spec": {"l": [1]}}, live)
    assert needs_apply({"metadata": {}, "spec": {}}, None)


def test_booleans_are_not_numbers() -> None:
    assert not is_subset(True, 1)
    assert is_subset(0, 0)


def test_resource_of_paths() -> None:
    assert resource_of("/apis/apps/v1/namespaces/n/statefulsets/s") == "statefulsets"
    assert resource_of("/apis/g/v1/namespaces/n/agentdeployments/a/status") == (
        "agentdeployments/status"
    )
    assert resource_of("/api/v1/namespaces/n/events") == "events"
