"""One owner per occurrence id: an AgentDeployment claims `<name>-0..` before touching any.

Two AgentDeployments of the same name in different namespaces (or clusters) on the same
database would run the same occurrences; the registry's owner column refuses that, and the
pass stops (`Degraded`/`OccurrenceIdConflict`) before it creates, fences, drains or retires
anything.
"""

from __future__ import annotations

import logging
import re

from occurrence_store import AgentId, Occurrence, Store

from ..kube.shared_stores import Stores
from ..model.naming import occurrence_id
from .derived_status import OCCURRENCE_ID_CONFLICT, Problem, short_error

log = logging.getLogger(__name__)


async def claim_occurrence_ids(
    store: Store, name: str, upper: int, *, agent_id: AgentId, owner_uid: str | None
) -> Problem | None:
    """Claim `<name>-0..upper-1` for `agent_id`; a Problem if another agent owns any.

    The caller passes every id the pass could touch: the StatefulSet's, the desired ones',
    an active drain's departing ones (and ordinal 0, where scale-to-zero parks work).
    """
    ids = [occurrence_id(name, k) for k in range(upper)]
    refused = await store.registry.claim(ids, agent_id=agent_id, owner_uid=owner_uid)
    if not refused:
        return None
    first = refused[0]
    uid = f" (uid {first.owner_uid})" if first.owner_uid else ""
    names = ", ".join(c.occurrence_id for c in refused[:5]) + (
        f" and {len(refused) - 5} more" if len(refused) > 5 else "")
    return Problem(OCCURRENCE_ID_CONFLICT, (
        f"occurrence ids {names} belong to agent {first.owner}{uid} on the same database: "
        "this AgentDeployment would run the same occurrences, so it creates, fences, "
        "drains and retires none of them. Rename it or use another database (if that "
        "agent is gone for good: `occurrence-store occurrences disown ID...`)"))


async def own_occurrences(stores: Stores, url: str, name: str, agent_id: AgentId
                          ) -> list[Occurrence] | None:
    """The registry rows of `<name>-<k>` owned by `agent_id`; None if they cannot be read
    (the sizing step has reported the database problem already)."""
    try:
        store = await stores.get(url)
        rows = await store.registry.list(agent_id=agent_id)
    except Exception as e:  # reported through Degraded by the sizing step already
        log.warning("%s: cannot list occurrences: %s", agent_id, short_error(e))
        return None
    pattern = re.compile(rf"^{re.escape(name)}-(\d+)$")
    return [o for o in rows if pattern.match(o.occurrence_id)]
