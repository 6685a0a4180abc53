"""The orchestration layer under the Kopf handlers: one worker per AgentDeployment
(`scheduling`) runs one reconcile pass at a time (`passes`) with what a pass is handed
(`passcontext`), over the pass's kits: migrations tracking, the occurrence-id claim, the
status document (`derived_status`), the operator's configuration, retention. Uses drain/, rollout/
and autoscaling/ (which reads `derived_status`).
"""
