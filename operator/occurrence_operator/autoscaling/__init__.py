"""Autoscaling on the backlog (`spec.autoscaling`): the pure decision (decision.py), the
search for a second autoscaler (conflicts.py) and the pass's side effects (controller.py).

The autoscaler only ever writes spec.replicas, through the scale subresource; sizing the
StatefulSet, and draining what a scale-down removes, stays the drain's job (drain/).
"""

from .controller import Autoscaler, Memory, Report, autoscale, status_of
from .decision import History, ScaleDecision, decide, recommend

__all__ = ["Autoscaler", "History", "Memory", "Report", "ScaleDecision", "autoscale",
           "decide", "recommend", "status_of"]
