"""The kube layer: the API client (`client.Kube`, reads answered from the object cache),
events, Secrets, the database handles (`shared_stores`), peering, the AgentDeployment during
one pass, metrics, `may_act` (may this replica write now); above them the objects beside the
StatefulSet (`owned_objects`), the list+watch streams (`informer`) and the agents' API
(`agent_api`).
Imports render and model; the drain, the rollout and the orchestration build on it.
"""
