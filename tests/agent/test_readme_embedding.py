"""The README's "embed the runtime in your own agent" example, run as written."""

from __future__ import annotations

import asyncio
from pathlib import Path

from occurrence_agent.config import load_config
from occurrence_agent.handlers import BaseHandler, Decision
from occurrence_agent.runtime import OccurrenceRuntime
from occurrence_store import TaskStatus
from occurrence_store.models import Task, Thought


class Summariser(BaseHandler):
    async def handle(self, task: Task, thought: Thought) -> Decision:
        return Decision("complete", result={"summary": task.description.upper()})


async def test_embedded_runtime_with_own_handler(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'agent.db'}"
    config = load_config({"occurrence_id": "agent-0", "database_url": url, "port": 0,
                          "migrate": True}, env={})
    async with OccurrenceRuntime(config, handler=Summariser()) as runtime:
        task = await runtime.scoped.add_task("hello")
        for _ in range(100):
            done = await runtime.scoped.get_task(task.task_id)
            if done.status == TaskStatus.COMPLETED:
                break
            await asyncio.sleep(0.1)
        assert done.status == TaskStatus.COMPLETED
        assert done.outcome["result"] == {"summary": "HELLO"}
        assert done.outcome["by"] == "agent-0"
        runtime.request_stop("test done")
        await asyncio.wait_for(runtime.wait_stopped(), 30)
