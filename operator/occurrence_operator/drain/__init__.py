"""The StatefulSet's size: the scale-down drain protocol, the skip-drain bypass and the
rebalance after a scale-up. One entry point, `Sizing` (sizing.py); one job per module:

- `sizing` — `Sizing`, what reconcile/passes.py calls: read the StatefulSet and the drain record,
  converge (or recover from a database error), finish; the outcome the status is made of;
- `planner` — the drain's phase diagram, pure: `plan` names one `DrainAction` at a time;
- `bypass` — the skip-drain escape hatch, pure (`should_bypass`, `bypassed`,
  `expire_skip_drain`);
- `rebalance` — the opt-in rebalance after a scale-up, pure (`rebalance_intent`,
  `plan_rebalance`, `rebalance_done`);
- `driver` — carries the decisions out: `drive` (observe → plan → act → persist, until the
  planner waits), `bypass`, `rebalance`. It writes the database (`occurrence_store`) and
  talks to Kubernetes only through the `DrainPort` protocol;
- `cluster` — `KubeDrainPort`, the Kubernetes side of `DrainPort`: scale the StatefulSet,
  persist / reload `.status.scaleDown` and `.status.rebalance`, count the departing pods,
  post the Events.

The operator ↔ agent handshake of a scale-down from N to M replicas (ordinals M..N-1 depart;
each step is idempotent and recorded in `.status.scaleDown` *before* anything it would have
to undo, so a restarted operator resumes from the record):

1. **intent** — `plan` returns ADVANCE with a `Fencing` record; `drive` persists it
   (`DrainPort.persist`).
2. **fence** — FENCE: `driver.execute` calls `store.registry.set_state(id, DRAINING,
   grace_seconds=...)` for each departing occurrence (`DrainSettings.grace_seconds`). From
   that commit on the database refuses the occurrence's claims (the registry row is the
   fencing token). Phase → `WaitingInFlight`.
3. **quiesced ack** — the agent learns of the fence from its heartbeat's registry row
   (`occurrence_agent.lifecycle.Presence`, poked at once by a PostgreSQL notification) →
   `OccurrenceRuntime._on_state` → `OccurrenceRuntime._drain`: it stops taking work and
   fails readiness (`OccurrenceRuntime.readiness`), lets in-flight work finish within the
   fence's grace and releases the rest (`OccurrenceRuntime._quiesce` → `Worker.quiesce`),
   then acknowledges with `store.registry.set_quiesced(id, True)`. `driver.observe` reads that as
   `Observations.in_flight_quiet`; a departing occurrence whose lease expired counts as
   `unresponsive`.
4. **release / transfer** — `planner._wait_in_flight` moves on (ADVANCE) once quiet, or
   RELEASE_IN_FLIGHT when the holders are dead or the grace (+ `ACK_MARGIN_SECONDS`, or
   the timeout with `inFlight: wait`) ran out; then TRANSFER, repeated until no
   pending/active work is left on the departing ids (`store.transfers.drain`, balanced
   over the survivors, per task and idempotent). Phase `Transferring`.
5. **scale** — SHRINK: `DrainPort.scale(M)` patches the StatefulSet (phase `Shrinking`);
   once the departing pods are gone (`DrainPort.departing_pods`), SWEEP moves stragglers
   once more and sets the occurrences RETIRED (phase `Done`).

A change of spec.replicas before the shrink retargets or cancels the drain (UNFENCE: the
registry state goes back to ACTIVE, the agent resumes). Every step `drive` takes runs under
the database lock `drain:<agent id>` and re-reads the record first (`DrainPort.reload`), so
two operators never drive the same drain at once.
"""

from __future__ import annotations

from .planner import draining_count, is_active
from .sizing import Sizing

__all__ = ["Sizing", "draining_count", "is_active"]
