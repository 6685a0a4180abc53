"""An append-only record of thought events (started, completed, lost) in a JSON-lines file.

Optional (``--journal PATH``); tests and demos use it to prove that every thought was
completed exactly once across crashes. Each event is one ``write`` of one line on a file
opened with ``O_APPEND``, so several processes can share a file and a SIGKILL loses at
most the event being written.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class Journal:
    def __init__(self, path: Path | None, occurrence_id: str) -> None:
        self.path = path
        self.occurrence_id = occurrence_id
        self._fd: int | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(self, event: str, **fields: Any) -> None:
        if self._fd is None:
            return
        entry = {"event": event, "occurrence_id": self.occurrence_id, "pid": os.getpid(),
                 "t": round(time.time(), 6), **fields}
        os.write(self._fd, (json.dumps(entry, default=str) + "\n").encode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Every complete event in ``path`` (a torn last line from a SIGKILL is skipped)."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
