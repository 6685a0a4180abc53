"""The one bounded polling helper of the tests and benchmarks, sync and async.

``wait_for(probe, timeout, message)`` calls ``probe`` every ``interval`` seconds until it
returns something truthy and returns that; after ``timeout`` seconds it raises
:class:`WaitTimeout`: "timed out after {timeout}s waiting for {message} (last: ...)", with the
probe's last result, or its last error. ``message`` may be a callable, evaluated only then
(to describe the state at the time of failure). An exception listed in ``retry_on`` (by
default ``subprocess.CalledProcessError``: a kubectl that failed because the object is not
there yet) counts as "not yet"; any other exception propagates at once.

``wait_for_async`` is the same for the event loop: ``probe`` may be sync or return an
awaitable, and the loop sleeps with ``asyncio.sleep`` so other tasks run meanwhile.
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

Message = str | Callable[[], str]
RETRY_ON: tuple[type[BaseException], ...] = (subprocess.CalledProcessError,)


class WaitTimeout(AssertionError, TimeoutError):
    """A bounded wait ran out.

    An AssertionError, so that pytest reports it as a test failure, and a TimeoutError, for
    the callers (benchmarks, the control plane's start) that catch it as one.
    """


def _describe(error: BaseException) -> str:
    if isinstance(error, subprocess.CalledProcessError):
        return f"{error}: {error.stderr}"
    return repr(error)


class _Attempts:
    """The deadline and what the last attempt gave, for the message."""

    def __init__(self, timeout: float, message: Message) -> None:
        self.timeout = timeout
        self.message = message
        self.deadline = time.monotonic() + timeout
        self.last: Any = None
        self.error: BaseException | None = None

    def expired(self) -> bool:
        return time.monotonic() > self.deadline

    def failure(self) -> WaitTimeout:
        text = self.message() if callable(self.message) else self.message
        if self.error is not None:
            extra = f" (last error: {_describe(self.error)})"
        else:
            extra = f" (last: {self.last})"
        return WaitTimeout(f"timed out after {self.timeout}s waiting for {text}{extra}")


def wait_for(
    probe: Callable[[], T | None],
    timeout: float = 60,
    message: Message = "condition",
    *,
    interval: float = 0.2,
    retry_on: tuple[type[BaseException], ...] = RETRY_ON,
) -> T:
    """Call ``probe`` until it returns something truthy; return that. Bounded by ``timeout``."""
    attempts = _Attempts(timeout, message)
    while True:
        try:
            result = probe()
        except retry_on as e:
            attempts.error = e
        else:
            if result:
                return result
            attempts.last, attempts.error = result, None
        if attempts.expired():
            raise attempts.failure()
        time.sleep(interval)


async def wait_for_async(
    probe: Callable[[], Any],
    timeout: float = 60,
    message: Message = "condition",
    *,
    interval: float = 0.1,
    retry_on: tuple[type[BaseException], ...] = RETRY_ON,
) -> Any:
    """Await ``probe()`` (sync, or returning an awaitable) until truthy; return that."""
    attempts = _Attempts(timeout, message)
    while True:
        try:
            result = probe()
            if inspect.isawaitable(result):
                result = await result
        except retry_on as e:
            attempts.error = e
        else:
            if result:
                return result
            attempts.last, attempts.error = result, None
        if attempts.expired():
            raise attempts.failure()
        await asyncio.sleep(interval)
