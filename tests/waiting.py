"""Waiting for conditions, so that tests hold on a loaded machine.

A test waits for what it expects to happen, with a deadline generous enough for a machine
busy with other work, instead of sleeping a fixed time and then asserting. Only a check that
something did *not* happen may need a fixed window; each such window says so where it is.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

DEADLINE_S = 60.0
"""How long a test waits for a condition before it fails: far beyond any expected wait."""


def _describe(what: str | Callable[[], object], last: object) -> str:
    detail = what() if callable(what) else what
    return f"{detail or 'condition'} not met in time; last value: {last!r}"


@overload
async def eventually(
    condition: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str | Callable[[], object] = ...,
) -> T: ...


@overload
async def eventually(
    condition: Callable[[], T | None],
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str | Callable[[], object] = ...,
) -> T: ...


async def eventually(
    condition: Callable[[], Any],
    *,
    timeout: float = DEADLINE_S,
    interval: float = 0.02,
    what: str | Callable[[], object] = "",
) -> Any:
    """Wait until ``condition()`` (a function or a coroutine function) returns a truthy value.

    Returns that value (never None); fails the test with ``what`` (a text or a function giving
    one) and the last value after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(_describe(what, value))
        await asyncio.sleep(interval)


def eventually_sync(
    condition: Callable[[], T | None],
    *,
    timeout: float = DEADLINE_S,
    interval: float = 0.05,
    what: str | Callable[[], object] = "",
) -> T:
    """`eventually` for code outside an event loop: polls with ``time.sleep``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(_describe(what, value))
        time.sleep(interval)
