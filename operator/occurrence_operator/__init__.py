"""Occurrence operator: turns an AgentDeployment into Kubernetes objects.

The modules in this package split the operator into pure parts (spec model, rendering,
drain planning, conditions) and the Kopf handlers that do the I/O. Everything importable
from here without a cluster is pure and unit-tested.
"""
