"""Who may act on the dashboard: the ``auth`` callable, CSRF tokens, and safe headers.

Reading is open to whoever reaches the mount (protect it with the app's own middleware);
actions need ``auth`` to return True for the request and a form token matching the
browser's cookie (double submit), so another site cannot make a signed-in browser act.
"""

from __future__ import annotations

import hmac
import inspect
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "SECURITY_HEADERS", "AuthCheck", "Guard"]

AuthCheck = Callable[[Request], bool | Awaitable[bool]]
"""``auth=``: True if this request may run, delete and retry jobs."""

CSRF_COOKIE = "hostedjobs_csrf"
CSRF_FIELD = "csrf_token"

SECURITY_HEADERS = {
    # Scripts and styles come only from the dashboard's own static files: even markup that
    # slipped past escaping could not run a script or inline handler.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Guard:
    """Decides whether a request may act, and hands out and checks CSRF tokens."""

    def __init__(self, auth: AuthCheck | None) -> None:
        self.auth = auth

    @property
    def read_only(self) -> bool:
        """True when no ``auth`` was given: nobody may act."""
        return self.auth is None

    async def may_act(self, request: Request) -> bool:
        """True if ``auth`` allows this request to run, delete and retry jobs."""
        if self.auth is None:
            return False
        allowed = self.auth(request)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        return allowed is True

    @staticmethod
    def token(request: Request) -> str:
        """The browser's CSRF token (a new one if it has none yet; see `set_cookie`)."""
        existing = request.cookies.get(CSRF_COOKIE, "")
        if len(existing) == 64:
            return existing
        token: str | None = getattr(request.state, "csrf_token", None)
        if token is None:
            token = request.state.csrf_token = secrets.token_hex(32)
        return token

    @staticmethod
    def set_cookie(request: Request, response: Response) -> None:
        """Store the token handed out by `token` for this request, if it was new."""
        token = getattr(request.state, "csrf_token", None)
        if token is not None:
            response.set_cookie(
                CSRF_COOKIE,
                token,
                path=(request.scope.get("root_path") or "") + "/",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )

    @staticmethod
    def csrf_ok(request: Request, submitted: str) -> bool:
        """True if the form's token matches the cookie and the request is same-origin."""
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if len(cookie) != 64 or not hmac.compare_digest(cookie, submitted):
            return False
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return origin is None
        return urlsplit(origin).netloc == request.headers.get("host", "")
