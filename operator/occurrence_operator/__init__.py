"""Occurrence operator: turns an AgentDeployment into Kubernetes objects.

One folder per layer, each importing only the ones below it (`lint-imports` checks it): the
entry points stay here (`cli`, `kubectl_occurrence`, `kopf_handlers`; `crdgen` and `rbac`
print the CRD and the RBAC rules) → `reconcile/` (the pass), beside it `autoscaling/` →
`drain/`, `rollout/` → `kube/` (the API server and the database handles) → `render/` (pure:
spec → manifests) → `model/` (pure: spec, status, names). Everything importable from here
without a cluster is pure and unit-tested.
"""
