"""Canary rollouts of the pod template (`spec.rollout`): waves by the StatefulSet's partition.

- `planner` — pure: the rollout's phase diagram; the partition and `.status.rollout` for a
  pass (`plan`), the waves' sizes for a replica count (`wave_sizes`);
- `driver` — carries a decision out through `RolloutPort` (persist the record first, then
  the events), and reads what the planner needs off the rendered and live StatefulSets;
- `cluster` — `KubeRolloutPort`, the Kubernetes side, and `read_rollout`.

`Rollout` is what reconcile/passes.py calls, in the template step (after sizing, before the
StatefulSet template is applied): `partition_for(rendered, live)` decides and persists, and
returns the partition the applied StatefulSet carries.
"""

from __future__ import annotations

from .planner import held_back
from .rollout import Rollout

__all__ = ["Rollout", "held_back"]
