"""Load generator of the e2e scenario: runs in a pod, submits tasks through the agents' Service.

The agents' Service is headless, so its DNS name resolves to the Ready pods; every task goes
to one of them at random (re-resolved every time, so scaling shows up at once). A draining or
stopping occurrence answers 503: the same task is then offered to another one. Each task
carries an ``Idempotency-Key`` so that a retry after a lost answer does not create it twice.

One JSON line per accepted task on stdout (``{"task_id", "occurrence_id", "seq"}``), then a
summary line ``{"done": ...}`` once ``/tmp/stop`` exists (the scenario creates it). A number
written to ``/tmp/burst`` submits that many tasks at once, without pacing (so that the
occurrences a scale-down removes have a backlog), then ``{"burst": N}``.
Standard library only: the image's Python runs it as it is.

Environment: TARGET_HOST, TARGET_PORT (8080), RATE (tasks per second), TASK_CONTEXT (JSON
for the default handler, e.g. {"work_ms": 800, "thoughts": 2}), RUN_ID (in every key).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import sys
import time

HOST = os.environ["TARGET_HOST"]
PORT = int(os.environ.get("TARGET_PORT", "8080"))
RATE = float(os.environ.get("RATE", "3"))
CONTEXT = json.loads(os.environ.get("TASK_CONTEXT", '{"work_ms": 800, "thoughts": 2}'))
RUN_ID = os.environ.get("RUN_ID", "e2e")
TOKEN = os.environ.get("AGENT_TOKEN", "")
STOP_FILE = "/tmp/stop"
BURST_FILE = "/tmp/burst"
counters = {"retries": 0, "unavailable": 0, "connect_errors": 0, "timeouts": 0, "other": 0}


def log(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def addresses() -> list[str]:
    try:
        infos = socket.getaddrinfo(HOST, PORT, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    found = sorted({info[4][0] for info in infos})
    random.shuffle(found)
    return found


def post(address: str, seq: int) -> dict[str, object] | None:
    body = json.dumps({"description": f"{RUN_ID} load {seq}",
                       "context": {**CONTEXT, "e2e_seq": seq, "e2e_run": RUN_ID}})
    headers = {"Content-Type": "application/json", "Idempotency-Key": f"{RUN_ID}-{seq}"}
    if TOKEN:
        headers["Authorization"] = f"Bearer {TOKEN}"
    conn = http.client.HTTPConnection(address, PORT, timeout=5)
    try:
        conn.request("POST", "/tasks", body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
    except TimeoutError:
        counters["timeouts"] += 1
        return None
    except OSError:
        counters["connect_errors"] += 1
        return None
    finally:
        conn.close()
    if response.status in (200, 201):
        return json.loads(payload)
    if response.status == 503:
        counters["unavailable"] += 1
    else:
        counters["other"] += 1
        log(error=response.status, body=payload.decode(errors="replace")[:300], seq=seq)
    return None


def submit(seq: int) -> None:
    """Until one occurrence accepts it: the task is never given up on."""
    while True:
        for address in addresses():
            task = post(address, seq)
            if task is not None:
                log(task_id=task["task_id"], occurrence_id=task["agent_occurrence_id"], seq=seq)
                return
            counters["retries"] += 1
        time.sleep(0.3)


def take_burst() -> int:
    try:
        with open(BURST_FILE) as f:
            count = int(f.read().strip() or 0)
        os.unlink(BURST_FILE)
    except (OSError, ValueError):
        return 0
    return count


def main() -> int:
    seq = 0
    paced = 0
    started = time.monotonic()
    while not os.path.exists(STOP_FILE):
        burst = take_burst()
        for _ in range(burst):
            submit(seq)
            seq += 1
        if burst:
            log(burst=burst)
        submit(seq)
        seq += 1
        paced += 1
        delay = started + paced / RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    log(done=seq, seconds=round(time.monotonic() - started, 1), **counters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
