"""Where hostedjobs' log records go when the application configured nothing for them.

Under a plain ``uvicorn app:app`` only uvicorn's own loggers have handlers: records of any
other logger reach Python's last-resort handler, which drops everything below WARNING, so
the host's start line and a handler's ``ctx.logger.info`` vanish. While a host runs,
`visible` lends the ``hostedjobs`` logger the server's handlers and level (uvicorn's, so
the lines look like its own and ``--log-level`` applies), or else one on stderr at INFO.
It does nothing once the application has a say: a handler on ``hostedjobs`` or any logger
above it (``logging.basicConfig``, ``dictConfig``, pytest's capture), or a level set on
``hostedjobs``.
"""

from __future__ import annotations

__all__ = ["visible"]

import contextlib
import logging
import threading
from collections.abc import Iterator

_SERVER_LOGGERS = ("uvicorn.error", "hypercorn.error", "gunicorn.error")
_FORMAT = "%(levelname)s:     %(name)s: %(message)s"

_lock = threading.Lock()
_users = 0
_lent: list[logging.Handler] = []


def _server_logging() -> tuple[list[logging.Handler], int] | None:
    """The handlers a server's error logger writes to (its own or its parents') and its
    level, or None when no server logs here."""
    for name in _SERVER_LOGGERS:
        server = logging.getLogger(name)
        node: logging.Logger | None = server
        while node is not None and node is not logging.root:
            if node.handlers:
                return list(node.handlers), server.getEffectiveLevel()
            node = node.parent if node.propagate else None
    return None


def _configured(package: logging.Logger) -> bool:
    return package.level != logging.NOTSET or package.hasHandlers()


@contextlib.contextmanager
def visible() -> Iterator[None]:
    """Show ``hostedjobs`` records at INFO while the block runs, if nothing else would.

    Nested and concurrent uses (several hosts in one process) share one loan, given back
    when the last one ends."""
    global _users
    package = logging.getLogger("hostedjobs")
    with _lock:
        joined = _users > 0 or not _configured(package)
        if joined and _users == 0:
            server = _server_logging()
            if server is None:
                fallback = logging.StreamHandler()
                fallback.setFormatter(logging.Formatter(_FORMAT))
                server = [fallback], logging.INFO
            handlers, level = server
            _lent.extend(handlers)
            for handler in handlers:
                package.addHandler(handler)
            # The server's level: uvicorn --log-level warning quiets these lines too.
            package.setLevel(level)
        _users += joined
    try:
        yield
    finally:
        if joined:
            with _lock:
                _users -= 1
                if _users == 0:
                    for handler in _lent:
                        package.removeHandler(handler)
                    _lent.clear()
                    package.setLevel(logging.NOTSET)
