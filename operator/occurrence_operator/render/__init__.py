"""The render layer: pure functions from a spec to the manifests the operator applies
(`objects.render`: everything one AgentDeployment renders to, in one call). Imports only the
model.
"""
