"""Named statement parameters: ``:task_id`` in the SQL, ``task_id=...`` in the call.

A statement is compiled once — the first time it runs — to PostgreSQL's positional
``$1..$n`` (the SQLite adapter then turns those into ``?1..?n``, also once per statement),
with the order in which its arguments go; later runs only look it up. A name used twice is
one parameter. ``::type`` casts are left alone.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")


@functools.lru_cache(maxsize=4096)
def compile_named(sql: str) -> tuple[str, tuple[str, ...]]:
    """``sql`` with ``:name`` placeholders as ``$n``, and the names in ``$n`` order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match[1]
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _NAMED.sub(number, sql), tuple(names)


def bind(sql: str, params: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """The positional statement and arguments for ``sql`` run with ``params``."""
    text, names = compile_named(sql)
    try:
        args = tuple([params[name] for name in names])
    except KeyError as exc:
        raise TypeError(f"statement parameter {exc.args[0]!r} not given") from None
    if len(args) != len(params):
        raise TypeError(f"statement parameters not used: {sorted(set(params) - set(names))}")
    return text, args
