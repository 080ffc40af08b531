"""Storage: the only code that talks to Redis.

`Store` names every operation (enqueue, peek and claim, renew, commit, delete, cancel,
retry, fire a tick, read status and indexes, heartbeats); `KeyLayout` builds every key; the
Lua scripts are ``lua/*.lua``, each declaring its KEYS and ARGV; `open_redis` connects, with
a client (``client``) that bounds every call and raises `RedisUnavailableError`; ``preflight``
checks the server once at start-up.
"""

from .connection import REDIS_URL_ENV, open_redis, redacted, resolve_redis_url
from .layout import KeyLayout
from .store import (
    Admission,
    Claimed,
    Finished,
    LeaseLostError,
    Peeked,
    Requeued,
    Store,
    StoredJob,
    StoredWorker,
)

__all__ = [
    "REDIS_URL_ENV",
    "Admission",
    "Claimed",
    "Finished",
    "KeyLayout",
    "LeaseLostError",
    "Peeked",
    "Requeued",
    "Store",
    "StoredJob",
    "StoredWorker",
    "open_redis",
    "redacted",
    "resolve_redis_url",
]
