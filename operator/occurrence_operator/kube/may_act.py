"""May this replica act on the cluster and the database right now?

Under Kopf peering (`--peering`), only the highest-priority replica is active: Kopf pauses
the others by stopping their watch streams and their daemons. Every reconcile runs inside
the AgentDeployment's Kopf daemon (kopf_handlers.py), which binds the daemon's `stopped` flag
here; every API write (client.py) and every drain step (drain/driver.py) checks it first and
raises `Interrupted` once the daemon is asked to stop (paused, exiting, object deleted).
Kopf also cancels the daemon task, so an await in flight is interrupted too. A reconcile
outside a daemon (unit tests, one-off tools) has no gate and always may act.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token

_may_act: ContextVar[Callable[[], bool] | None] = ContextVar("occurrence_may_act", default=None)


class Interrupted(BaseException):
    """This replica must stop acting now (paused by peering, stopping, or object gone).

    A BaseException so that the reconciler's `except Exception` recovery paths (which
    write status and events) do not swallow it.
    """


def bind(allowed: Callable[[], bool]) -> Token[Callable[[], bool] | None]:
    """Gate everything the current task (and tasks it creates) does on `allowed()`."""
    return _may_act.set(allowed)


def unbind(token: Token[Callable[[], bool] | None]) -> None:
    _may_act.reset(token)


def allowed() -> bool:
    check = _may_act.get()
    return check is None or check()


def check() -> None:
    """Raise `Interrupted` if this replica may not act any more."""
    if not allowed():
        raise Interrupted("this operator replica was paused or is stopping")
