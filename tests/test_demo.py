"""`make demo` is the README's first command: it must keep working end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "DEMO_DATA_DIR": str(tmp_path / "demo")}
    env.pop("DATABASE_URL", None)
    done = subprocess.run([sys.executable, str(ROOT / "hack" / "demo.py")], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = [line for line in done.stdout.splitlines() if "submitted=" in line]
    assert summary and "lost=0" in summary[0], done.stdout[-2000:]
    fields = dict(part.split("=") for part in summary[0].split() if "=" in part)
    assert fields["submitted"] == fields["completed"] == "180"
    assert int(fields["transferred"]) > 0
    assert "refuses new work: HTTP 503" in done.stdout
