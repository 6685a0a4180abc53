"""Support code shared by tests/ and benchmarks/, owned by neither, never shipped in the wheel.

- ``testing.postgres``: a throwaway PostgreSQL server (initdb + pg_ctl) and fresh databases.
- ``testing.agentproc``: ``occurrence-agent`` processes (start, port, talk, stop).
- ``testing.localcluster``: the local Kubernetes control plane (hack/local-cluster.sh).
- ``testing.operator_support``: the operator as a subprocess, the CRD, manifests.
- ``testing.waiting``: the one bounded polling helper (``wait_for`` / ``wait_for_async``).
- ``testing.ports``: ``free_port``.

Nothing here imports from tests/ or benchmarks/; both import from here. The wheel is built
from operator/ only (``[tool.setuptools.packages.find] where = ["operator"]``) and the image
copies operator/ only, so this package never leaves the checkout.
"""
