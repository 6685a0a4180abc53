"""Superseded migrations Jobs: after a Job succeeds, the finished Jobs of the same
AgentDeployment before it go (with their pods: background propagation); a running one, the
kept one and any Job it does not own stay; a refusal is logged and counted, never fatal."""

from __future__ import annotations

from typing import Any

from occurrence_operator.kube.agd_object import AgentDeploymentObject
from occurrence_operator.kube.client import ApiError
from occurrence_operator.reconcile.migrations import remove_superseded_jobs
from tests.unit.operator.fake_kube import FakeKube

NS, NAME, UID = "ns", "web", "agd-uid"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
LABELS = {"occurrence.dev/agentdeployment": NAME, "occurrence.dev/component": "migrations"}


def job(name: str, state: str | None, owner: str = UID, **labels: str) -> dict[str, Any]:
    conditions = [] if state is None else [{"type": state, "status": "True"}]
    return {"metadata": {"name": name, "labels": {**LABELS, **labels},
                         "ownerReferences": [{"uid": owner, "controller": True}]},
            "status": {"conditions": conditions}}


def agd(kube: FakeKube) -> AgentDeploymentObject:
    return AgentDeploymentObject(kube, {"metadata": {  # type: ignore[arg-type]
        "name": NAME, "namespace": NS, "uid": UID}}, "test")


async def test_only_the_finished_jobs_it_owns_before_the_kept_one_go() -> None:
    kube = FakeKube()
    for body in (job("web-migrate-a", "Failed"), job("web-migrate-b", "Complete"),
                 job("web-migrate-c", "Complete"), job("web-migrate-d", None),
                 job("foreign", "Complete", owner="someone-else"),
                 job("other-agent", "Complete", **{"occurrence.dev/agentdeployment": "x"})):
        kube.put(f"{JOBS}/{body['metadata']['name']}", body)
    assert await remove_superseded_jobs(agd(kube), "web-migrate-c", UID) == 2
    assert sorted(k.rsplit("/", 1)[1] for k in kube.objects) == [
        "foreign", "other-agent", "web-migrate-c", "web-migrate-d"]
    assert {(verb, path.rsplit("/", 1)[1], how) for verb, path, how in kube.writes} == {
        ("DELETE", "web-migrate-a", "Background"), ("DELETE", "web-migrate-b", "Background")}


class RefusingKube(FakeKube):
    async def delete(self, path: str, *, propagation: str | None = None) -> None:
        raise ApiError(403, "Forbidden", "jobs is forbidden")


async def test_a_refusal_is_counted_and_the_migration_still_succeeds() -> None:
    kube = RefusingKube()
    kube.put(f"{JOBS}/web-migrate-a", job("web-migrate-a", "Complete"))
    assert await remove_superseded_jobs(agd(kube), "web-migrate-b", UID) == 0
    assert 'occurrence_operator_housekeeping_errors_total{task="migration_job_cleanup"} 1.0' \
        in kube.metrics.render()
