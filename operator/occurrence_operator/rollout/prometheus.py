"""Gates read from Prometheus (`gates[].prometheus`): one PromQL query, one number.

The query is templated with the rollout's revisions and occurrence ids (the agents export
`occurrence_revision_info{occurrence_id, revision}` to join on), sent to the Prometheus HTTP
API with a bounded time and a bounded answer. Anything but exactly one finite number — no
data, an error, no answer, a URL the operator does not allow — is a reading without a value:
the gate is Inconclusive, never a pass.

The URL comes from a tenant's AgentDeployment and is fetched from the operator's network
position, so it must start with one the platform allows (`OCCURRENCE_OPERATOR_PROMETHEUS_URLS`);
none is allowed by default. What comes back is never copied into the status but as a number,
or Prometheus' own error message (bounded) when it answered with one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from occurrence_store import OccurrenceId

from ..model.spec import PrometheusGate

MAX_ANSWER_BYTES = 256 * 1024
"""The largest answer read: one sample is a few hundred bytes."""
MAX_ERROR_CHARS = 200


@dataclass(frozen=True)
class PrometheusReading:
    """A query's value, or why there is none."""

    value: float | None
    error: str | None = None


def render_query(query: str, variables: Mapping[str, str]) -> str:
    """`{{name}}` replaced by its value (the spec allows only known names)."""
    return re.sub(r"\{\{\s*([A-Za-z]+)\s*\}\}", lambda m: variables.get(m.group(1), ""), query)


def alternation(ids: Sequence[OccurrenceId]) -> str:
    """Occurrence ids as a PromQL regex alternation (`a-0|a-1`); ids are DNS labels, but
    escape anything else anyway (as RE2 takes it: `-` unescaped). No id: a regex that
    matches nothing."""
    return "|".join(re.sub(r"([^A-Za-z0-9_-])", r"\\\1", i) for i in ids) or "$^"


def is_allowed(url: str, allowed: Sequence[str]) -> bool:
    """`url` is one of `allowed` or below one (by path: `http://p:9090` allows
    `http://p:9090/prometheus`, never `http://p:90901`)."""
    for base in allowed:
        base = base.rstrip("/")
        if base and (url.rstrip("/") == base or url.startswith(base + "/")):
            return True
    return False


async def read(gate: PrometheusGate, variables: Mapping[str, str], allowed: Sequence[str],
               session: aiohttp.ClientSession | None = None) -> PrometheusReading:
    """One evaluation of `gate`'s query."""
    if not is_allowed(gate.url, allowed):
        return PrometheusReading(None, f"{gate.url} is not a Prometheus URL the operator allows "
                                       "(OCCURRENCE_OPERATOR_PROMETHEUS_URLS)")
    query = render_query(gate.query, variables)
    endpoint = gate.url.rstrip("/") + "/api/v1/query"
    timeout = aiohttp.ClientTimeout(total=gate.timeout_seconds)
    own = session is None
    http = session or aiohttp.ClientSession(timeout=timeout)
    try:
        async with http.get(endpoint, params={"query": query}, timeout=timeout,
                            allow_redirects=False) as resp:
            body = await resp.content.read(MAX_ANSWER_BYTES + 1)
            status = resp.status
    except (TimeoutError, aiohttp.ClientError) as e:
        return PrometheusReading(None, f"Prometheus did not answer: {type(e).__name__}")
    finally:
        if own:
            await http.close()
    if len(body) > MAX_ANSWER_BYTES:
        return PrometheusReading(None, f"the answer is over {MAX_ANSWER_BYTES} bytes: the query "
                                       "must return one sample")
    return parse(status, body)


def parse(status: int, body: bytes) -> PrometheusReading:
    """The reading of one `/api/v1/query` answer."""
    try:
        answer: Any = json.loads(body)
    except ValueError:
        return PrometheusReading(None, f"HTTP {status}: not a Prometheus answer")
    if not isinstance(answer, dict):
        return PrometheusReading(None, f"HTTP {status}: not a Prometheus answer")
    if answer.get("status") != "success":
        error = str(answer.get("error") or "")[:MAX_ERROR_CHARS]
        return PrometheusReading(None, f"HTTP {status}: {answer.get('errorType', 'error')}"
                                       + (f": {error}" if error else ""))
    raw = answer.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    kind, result = data.get("resultType"), data.get("result")
    sample: Any
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        sample = result
    elif kind == "vector" and isinstance(result, list):
        if len(result) != 1:
            return PrometheusReading(None, "no data" if not result else
                                     f"{len(result)} samples: the query must return one "
                                     "(aggregate it, e.g. sum(...))")
        sample = (result[0] or {}).get("value") if isinstance(result[0], dict) else None
    else:
        return PrometheusReading(None, f"a {kind} result: the query must return one sample")
    try:
        value = float(sample[1]) if isinstance(sample, list) and len(sample) == 2 else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        return PrometheusReading(None, "not a finite number")
    return PrometheusReading(value)
