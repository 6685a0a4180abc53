"""The model layer: the AgentDeployment's spec and status (pydantic models that are also the
CRD schema), its conditions, the names and well-known labels, the owner reference, the object
cache, the pause annotation. Pure; imports nothing else of the operator.
"""
