"""Graceful shutdown: runs get a grace period to finish, which a second signal cuts short."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["Grace"]

F = TypeVar("F", bound="asyncio.Future[Any]")


class Grace:
    """The grace period of one shutdown, shared by everything that runs jobs."""

    def __init__(self) -> None:
        self._hurry = asyncio.Event()

    def hurry(self) -> None:
        """End the grace now: whoever waits for runs stops waiting and cancels them."""
        self._hurry.set()

    @property
    def hurried(self) -> bool:
        """True once `hurry` was called."""
        return self._hurry.is_set()

    async def wait(self, runs: Iterable[F], grace_s: float) -> set[F]:
        """Wait until ``runs`` are done, ``grace_s`` seconds pass, or `hurry` is called;
        returns the runs still going."""
        pending = {run for run in runs if not run.done()}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while pending and not self.hurried and (left := deadline - loop.time()) > 0:
            hurried: asyncio.Future[Any] = loop.create_task(self._hurry.wait())
            waiting: set[asyncio.Future[Any]] = {*pending, hurried}
            try:
                await asyncio.wait(waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                hurried.cancel()
            pending = {run for run in pending if not run.done()}
        return pending
