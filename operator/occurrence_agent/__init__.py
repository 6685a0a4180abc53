"""Agent runtime: one occurrence of the agent, inside a pod or on a host.

Run it with ``occurrence-agent`` or embed :class:`OccurrenceRuntime` with your own
:class:`Handler`.
"""

from occurrence_agent.config import AgentConfig, ConfigError, load_config
from occurrence_agent.handlers import (
    BaseHandler,
    Decision,
    DefaultHandler,
    Handler,
    ShutdownVerdict,
)
from occurrence_agent.runtime import OccurrenceRuntime, StartupError

__all__ = [
    "AgentConfig",
    "BaseHandler",
    "ConfigError",
    "Decision",
    "DefaultHandler",
    "Handler",
    "OccurrenceRuntime",
    "ShutdownVerdict",
    "StartupError",
    "load_config",
]
