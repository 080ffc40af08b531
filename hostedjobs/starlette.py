"""Starlette glue: the readiness answer, a middleware that holds requests until ready, and
what the ASGI server says about its own shutdown."""

from __future__ import annotations

import signal
from collections.abc import Collection
from typing import Any, Protocol

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .startup import StartupState

__all__ = [
    "RETRY_AFTER_S",
    "Readiness",
    "StartupGateMiddleware",
    "health_response",
    "readiness_response",
    "server_forcing_exit",
]

RETRY_AFTER_S = 5
"""What ``Retry-After`` tells clients while the host is not ready."""


class Readiness(Protocol):
    """What readiness is read from (a `JobHost`)."""

    @property
    def ready(self) -> bool: ...
    @property
    def running(self) -> bool: ...
    @property
    def startup_state(self) -> StartupState: ...
    @property
    def failed_startup_action(self) -> tuple[str, str] | None: ...
    @property
    def running_startup_actions(self) -> tuple[str, ...]: ...


def health_response(report: dict[str, Any]) -> Response:
    """200 with the health report if it says ``healthy``, else 503 with it."""
    return JSONResponse(report, status_code=200 if report["healthy"] else 503)


def readiness_response(host: Readiness) -> Response:
    """200 ``{"status": "ready"}`` once ready, else 503 with ``Retry-After`` and the reason."""
    failed = host.failed_startup_action
    if failed is not None:
        name, error = failed
        body: dict[str, Any] = {"status": "failed", "failed_action": name, "error": error}
    elif host.ready:
        return JSONResponse({"status": "ready"})
    elif not host.running:
        body = {"status": "stopped"}
    else:
        body = {"status": "starting", "startup": str(host.startup_state)}
        if host.startup_state is StartupState.RUNNING:
            body["running_actions"] = list(host.running_startup_actions)
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


class StartupGateMiddleware:
    """Answers 503 (with ``Retry-After``) to every HTTP request until the host is ready.

    ``Middleware(StartupGateMiddleware, host=host, allow_paths=("/health",))``: the allowed
    paths (liveness probes, say) pass through at any time. Lifespan and websocket traffic
    is never held.
    """

    def __init__(self, app: ASGIApp, host: Readiness, allow_paths: Collection[str] = ()) -> None:
        self.app = app
        self.host = host
        self.allow_paths = frozenset(allow_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on once ready (or for an allowed path); else answer 503."""
        if scope["type"] != "http" or self.host.ready or scope.get("path") in self.allow_paths:
            await self.app(scope, receive, send)
            return
        await readiness_response(self.host)(scope, receive, send)


def server_forcing_exit() -> bool:
    """True once the ASGI server serving this process was told to quit without waiting.

    uvicorn sets ``force_exit`` on its `Server` when a second SIGINT (Ctrl-C) arrives during
    its shutdown; hostedjobs installs no signal handler inside a server, so it reads the flag
    from the SIGINT handler uvicorn installed (a bound method of that server). False under
    any other server, and in a ``hostedjobs worker`` process.
    """
    server = getattr(signal.getsignal(signal.SIGINT), "__self__", None)
    return getattr(server, "force_exit", False) is True
