"""Start-up checks of the Redis server: will it keep the queue's jobs, and may we use it?

`check_server` runs once when the host connects. It refuses, with one error listing every
problem and its fix, a server that would lose jobs silently or fail half-way through an
operation:

- an eviction policy other than ``noeviction`` (``volatile-*`` too: job records carry
  TTLs): under memory pressure Redis deletes queued jobs, which then vanish or fail as
  expired, with no error anywhere (accept it with ``accept={"eviction"}``);
- a replica: writes fail, or are lost at the next sync;
- a Redis Cluster node reached with a plain URL (``redis+cluster://`` keeps every key of
  the queue in one slot, so its scripts and transactions run on one node; with it, the
  ACL probes below use keys of that slot);
- ``durability="replicated"`` on a primary with no connected replica (every write would
  fail);
- a server older than 6.2 (commands the scripts and the store use);
- an ACL user missing a permission hostedjobs needs: a command (scripts' inner commands
  included), a key pattern of the queue, or its events channel. A script that writes and
  then hits a forbidden ``PUBLISH`` fails half-way; the error names what is missing and the
  ``ACL SETUSER`` line that adds it.

It warns (logs only) when nothing persists the data (no AOF, no RDB save points), unless
``accept={"persistence"}``. The settings are read with ``CONFIG GET`` and, where that is
forbidden (managed Redis, ACL), from ``INFO``; the role from ``ROLE`` too (a user may be
allowed it and not INFO). Permissions are probed by queueing one
harmless call of each command, on the queue's own keys and channel, in a ``MULTI`` that is
then discarded: Redis checks the ACL of each as it queues it, and runs none of them. All of
it costs two round trips.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.exceptions import NoPermissionError, RedisError, ResponseError

from ..exceptions import RedisConfigurationError
from .client import RedisClient
from .layout import KeyLayout

__all__ = [
    "MIN_VERSION",
    "REQUIRED_COMMANDS",
    "RISKS",
    "Risk",
    "ServerFacts",
    "acl_rule",
    "check_server",
    "judge",
]

logger = logging.getLogger("hostedjobs.redis")

Risk = Literal["eviction", "persistence"]
"""A risk a user may accept: ``"eviction"`` (the server may evict keys under memory
pressure) or ``"persistence"`` (the server persists nothing)."""
RISKS: tuple[Risk, ...] = ("eviction", "persistence")

MIN_VERSION = (6, 2)
"""The oldest Redis hostedjobs runs on (ZMSCORE, fractional BLPOP timeouts, ``&`` ACL rules)."""

_PROBE = "hostedjobs-preflight"
"""The id of the probe keys (never written: the probes are discarded)."""


def _command_probes(key: str, channel: str) -> dict[str, tuple[Any, ...]]:
    """Each command hostedjobs sends (its scripts' inner commands included), by ACL name,
    with arguments Redis accepts for it."""
    return {
        "ping": ("PING",),
        "time": ("TIME",),
        "get": ("GET", key),
        "mget": ("MGET", key),
        "exists": ("EXISTS", key),
        "hget": ("HGET", key, "f"),
        "hmget": ("HMGET", key, "f"),
        "hexists": ("HEXISTS", key, "f"),
        "hgetall": ("HGETALL", key),
        "hlen": ("HLEN", key),
        "lrange": ("LRANGE", key, 0, 0),
        "smembers": ("SMEMBERS", key),
        "sismember": ("SISMEMBER", key, "m"),
        "smismember": ("SMISMEMBER", key, "m"),
        "zcard": ("ZCARD", key),
        "zcount": ("ZCOUNT", key, 0, 1),
        "zscore": ("ZSCORE", key, "m"),
        "zmscore": ("ZMSCORE", key, "m"),
        "zrange": ("ZRANGE", key, 0, 1),
        "zrangebyscore": ("ZRANGEBYSCORE", key, 0, 1),
        "zrevrange": ("ZREVRANGE", key, 0, 1),
        "zrevrangebyscore": ("ZREVRANGEBYSCORE", key, 1, 0),
        "hset": ("HSET", key, "f", "x"),
        "hincrby": ("HINCRBY", key, "f", 1),
        "incr": ("INCR", key),
        "pttl": ("PTTL", key),
        "hsetnx": ("HSETNX", key, "f", "x"),
        "hdel": ("HDEL", key, "f"),
        "sadd": ("SADD", key, "m"),
        "srem": ("SREM", key, "m"),
        "lpush": ("LPUSH", key, "x"),
        "ltrim": ("LTRIM", key, 0, 0),
        "blpop": ("BLPOP", key, 1),
        "zadd": ("ZADD", key, 1, "m"),
        "zrem": ("ZREM", key, "m"),
        "zremrangebyrank": ("ZREMRANGEBYRANK", key, 0, 0),
        "zremrangebyscore": ("ZREMRANGEBYSCORE", key, 0, 1),
        "set": ("SET", key, "x"),
        "mset": ("MSET", key, "x"),
        "expire": ("EXPIRE", key, 1),
        "pexpire": ("PEXPIRE", key, 1),
        "del": ("DEL", key),
        "evalsha": ("EVALSHA", "0" * 40, 0),
        "script|load": ("SCRIPT", "LOAD", "return 0"),
        "publish": ("PUBLISH", channel, "x"),
        "subscribe": ("SUBSCRIBE", channel),
        "unsubscribe": ("UNSUBSCRIBE", channel),
    }


REQUIRED_COMMANDS: tuple[str, ...] = (
    *_command_probes("k", "c"),
    "multi",
    "exec",
    "discard",
)
"""Every command hostedjobs sends, by its ACL name (``script|load`` for SCRIPT LOAD)."""

_OPTIONAL_COMMANDS = ("info", "select", "wait", "role")
"""Not required, but granted by the recommended ACL rule: ``INFO`` lets these checks read
the server's settings; ``SELECT`` picks a database other than 0; ``WAIT`` is needed by
``durability="replicated"``; ``ROLE`` tells a replica (here, and on each new connection of
a ``redis+sentinel://`` client)."""


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


@dataclass(frozen=True, slots=True)
class _KeyFamily:
    """Keys of one kind: the ACL pattern that covers them, and one to probe them with."""

    pattern: str
    key: str
    write: tuple[Any, ...]
    """A write to ``key`` that would change nothing even if it ran."""


def _key_families(keys: KeyLayout) -> list[_KeyFamily]:
    patterns = KeyLayout(_glob_escape(keys.queue), keys.hash_tag)
    own = f"{keys.namespace}:{_PROBE}"
    families = [
        _KeyFamily(patterns.waiting, keys.waiting, ("ZREM", keys.waiting, _PROBE)),
        _KeyFamily(patterns.wake, keys.wake, ("LTRIM", keys.wake, 0, -1)),
        *(
            _KeyFamily(pattern, key, ("DEL", key))
            for pattern, key in (
                (patterns.worker_wake("*"), keys.worker_wake(_PROBE)),
                (patterns.job("*"), keys.job(_PROBE)),
                (patterns.lock("*"), keys.lock(_PROBE)),
                (patterns.result("*"), keys.result(_PROBE)),
            )
        ),
        _KeyFamily(patterns.abort, keys.abort, ("ZREM", keys.abort, _PROBE)),
        _KeyFamily(patterns.meta("*"), keys.meta(_PROBE), ("DEL", keys.meta(_PROBE))),
        _KeyFamily(f"{patterns.namespace}:*", own, ("DEL", own)),
    ]
    # The namespace pattern covers every key under it (all of them, hash-tagged).
    covered = f"{patterns.namespace}:"
    return [f for f in families if f.key == own or not f.pattern.startswith(covered)]


def acl_rule(keys: KeyLayout, user: str = "default") -> str:
    """The ``ACL SETUSER`` line giving ``user`` what hostedjobs needs on the queue of
    ``keys``, and nothing else (add ``on >PASSWORD`` for a new user)."""
    patterns = " ".join(f"~{family.pattern}" for family in _key_families(keys))
    # A redis+cluster:// client asks which node serves the queue's slot.
    cluster = ("cluster|slots",) if keys.hash_tag else ()
    needed = (*REQUIRED_COMMANDS, *_OPTIONAL_COMMANDS, *cluster)
    commands = " ".join(f"+{command}" for command in needed)
    channels = f"&{_glob_escape(keys.events)} &{_glob_escape(keys.control)}"
    return f"ACL SETUSER {user} resetkeys resetchannels {patterns} {channels} -@all {commands}"


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What the checks read about a server; None where it could not be read."""

    version: tuple[int, ...] | None = None
    role: str | None = None
    primary: str | None = None
    """``host:port`` of a replica's primary."""
    cluster: bool | None = None
    replicas: int | None = None
    """How many replicas are connected to it (a primary's ``connected_slaves``)."""
    eviction_policy: str | None = None
    maxmemory: int | None = None
    appendonly: bool | None = None
    save: str | None = None
    """RDB save points (``CONFIG GET save``); empty: none."""

    @classmethod
    def read(cls, config: Mapping[str, Any], info: Mapping[str, Any] | None) -> ServerFacts:
        """From ``CONFIG GET`` answers (``{name: value}``, unreadable ones left out) and
        ``INFO`` (None if forbidden)."""
        info = info or {}
        version = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", str(info.get("redis_version", "")))
        policy = config.get("maxmemory-policy", info.get("maxmemory_policy"))
        appendonly = config.get("appendonly")
        if appendonly is None and "aof_enabled" in info:
            appendonly = "yes" if int(info["aof_enabled"]) else "no"
        role = str(info["role"]) if "role" in info else None
        # A Sentinel answers INFO too (Valkey names the field server_mode).
        if "sentinel" in (info.get("redis_mode"), info.get("server_mode")):
            role = "sentinel"
        primary = None
        if "master_host" in info:
            primary = f"{info['master_host']}:{info.get('master_port', '?')}"
        return cls(
            version=tuple(int(part) for part in version.groups() if part) if version else None,
            role=role,
            primary=primary,
            cluster=bool(int(info["cluster_enabled"])) if "cluster_enabled" in info else None,
            replicas=int(info["connected_slaves"]) if "connected_slaves" in info else None,
            eviction_policy=str(policy) if policy is not None else None,
            maxmemory=int(info["maxmemory"]) if "maxmemory" in info else None,
            appendonly=None if appendonly is None else str(appendonly) == "yes",
            save=str(config["save"]) if "save" in config else None,
        )


def judge(
    facts: ServerFacts,
    accept: Collection[str] = (),
    *,
    hash_tag: bool = False,
    replicas: int = 0,
) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` about a server's settings: problems refuse the start, warnings
    are logged. ``hash_tag``: the queue's keys share one slot (`KeyLayout`), as cluster mode
    needs. ``replicas``: how many replicas each write must reach
    (``durability="replicated"``)."""
    problems: list[str] = []
    warnings: list[str] = []
    if replicas and facts.role != "slave" and (facts.replicas or 0) < replicas:
        connected = "an unknown number of" if facts.replicas is None else str(facts.replicas)
        problems.append(
            f'durability="replicated" needs {replicas} connected replica(s) and it has '
            f"{connected}: every write would fail with NotReplicatedError. Start a replica "
            '(replicaof), or use durability="primary"'
        )
    if facts.version is not None and facts.version[:2] < MIN_VERSION:
        version = _version(facts.version)
        problems.append(
            f"it runs Redis {version}; hostedjobs needs {_version(MIN_VERSION)} or newer: "
            "upgrade it"
        )
    if facts.role == "slave":
        problems.append(
            f"it is a replica (of {facts.primary or 'another server'}): writes fail, or are "
            "lost at its next sync; point the URL at the primary"
        )
    if facts.cluster and not hash_tag:
        problems.append(
            "it is a Redis Cluster node: use a redis+cluster://host:port,host:port,... URL "
            "naming the cluster's nodes (hostedjobs then keeps each queue's keys in one slot)"
        )
    policy = facts.eviction_policy
    if "eviction" not in accept:
        if policy is None:
            warnings.append(
                "cannot read its maxmemory-policy (CONFIG GET and INFO are both forbidden to "
                "this user): make sure it is noeviction, or Redis may evict queued jobs; "
                'JobHost(accept_risks={"eviction"}) silences this'
            )
        elif policy != "noeviction":
            limit = f" ({facts.maxmemory} bytes)" if facts.maxmemory else ""
            problems.append(
                f"its maxmemory-policy is {policy}: when it reaches maxmemory{limit} Redis "
                "deletes keys, queued jobs' records among them (they carry TTLs, so volatile-* "
                "policies take them too), and those jobs vanish or fail as expired with no "
                "error anywhere. Set it to noeviction (CONFIG SET maxmemory-policy noeviction, "
                "and in redis.conf) so a full Redis refuses new jobs loudly instead, or accept "
                'the risk: JobHost(accept_risks={"eviction"})'
            )
    if "persistence" not in accept and facts.appendonly is False and facts.save == "":
        warnings.append(
            "it persists nothing (appendonly no, no RDB save points): a restart loses every "
            "queued and scheduled job. Turn on AOF (appendonly yes, appendfsync everysec), or "
            'JobHost(accept_risks={"persistence"}) silences this'
        )
    return problems, warnings


@dataclass(slots=True)
class _Missing:
    """The permissions the probes found missing, by kind."""

    commands: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    """Commands the server does not know (too old a Redis, or renamed)."""
    unchecked: bool = False
    """MULTI or DISCARD is forbidden: nothing else could be probed without running it."""

    def problems(self, keys: KeyLayout, user: str, *, version_known: bool) -> list[str]:
        """What to tell the user, each with its fix."""
        found: list[str] = []
        if self.unknown and not version_known:
            found.append(
                f"it does not know the commands {', '.join(self.unknown)}: it is older than "
                f"Redis {_version(MIN_VERSION)}, or they are renamed or disabled"
            )
        if self.unchecked:
            found.append(
                f"the ACL user {user!r} may not run {', '.join(self.commands)}, which hostedjobs "
                f"needs (its other permissions could not be checked). The rule hostedjobs "
                f"needs: {acl_rule(keys, user)}"
            )
        elif self.commands or self.patterns or self.channels:
            kinds = [
                f"{kind} {', '.join(names)}"
                for kind, names in (
                    ("commands", self.commands),
                    ("keys", self.patterns),
                    ("channel", self.channels),
                )
                if names
            ]
            grant = [
                *(f"+{command}" for command in self.commands),
                *(f"~{pattern}" for pattern in self.patterns),
                *(f"&{channel}" for channel in self.channels),
            ]
            found.append(
                f"the ACL user {user!r} lacks permissions hostedjobs needs ({'; '.join(kinds)}): "
                "a script would fail half-way, after its first writes. Grant them with: "
                f"ACL SETUSER {user} {' '.join(grant)}"
            )
        return found


def _version(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def _noperm(reply: Any) -> bool:
    return isinstance(reply, NoPermissionError)


async def _watched(client: RedisClient) -> str:
    """``" (name at host:port, ...)"``: the primaries a Sentinel watches, or ``""``."""
    try:
        masters = await client.sentinel_masters()  # type: ignore[no-untyped-call]
    except (RedisError, OSError):
        return ""
    if not isinstance(masters, dict) or not masters:
        return ""
    named = ", ".join(
        f"{name} at {state.get('ip')}:{state.get('port')}" for name, state in masters.items()
    )
    return f" ({named})"


def _with_role(facts: ServerFacts, role: Any) -> ServerFacts:
    """``facts`` with the role ``ROLE`` answered (``[b"slave", host, port, ...]`` for a
    replica), which an ACL user may run where INFO is forbidden; unchanged if refused."""
    if not isinstance(role, list) or not role or facts.role == "sentinel":
        return facts
    name = role[0].decode() if isinstance(role[0], bytes) else str(role[0])
    if name == "slave" and len(role) >= 3:
        host = role[1].decode() if isinstance(role[1], bytes) else str(role[1])
        return dataclasses.replace(facts, role=name, primary=f"{host}:{role[2]}")
    return dataclasses.replace(facts, role=name)


async def _read_server(client: RedisClient) -> tuple[ServerFacts, _Missing]:
    """The server's settings, and whether MULTI, EXEC and DISCARD are allowed (the probes
    rely on them), in one round trip."""
    async with client.pipeline(transaction=False) as pipe:
        for name in ("maxmemory-policy", "appendonly", "save"):
            pipe.config_get(name)
        pipe.info()
        pipe.execute_command("ROLE")
        pipe.execute_command("MULTI")
        pipe.execute_command("EXEC")
        # Closes the MULTI if EXEC was refused (else: an error, harmlessly).
        pipe.execute_command("DISCARD")
        *configs, info, role, multi, exec_, discard = await pipe.execute(raise_on_error=False)
    config: dict[str, Any] = {}
    for answer in configs:
        if isinstance(answer, dict):
            config.update({str(name): value for name, value in answer.items()})
    facts = _with_role(ServerFacts.read(config, info if isinstance(info, dict) else None), role)
    missing = _Missing()
    for name, reply in (("multi", multi), ("exec", exec_), ("discard", discard)):
        if _noperm(reply):
            missing.commands.append(name)
    if _noperm(discard):
        await client.connection_pool.disconnect()  # a MULTI may be left open
    missing.unchecked = _noperm(multi) or _noperm(discard)
    return facts, missing


async def _probe(client: RedisClient, keys: KeyLayout, missing: _Missing, *, wait: bool) -> None:
    """Queue one harmless call of each command (and ``WAIT`` if ``wait``), and a read and a
    write of each key family, in a MULTI that is then discarded; add what Redis refused to
    ``missing``."""
    commands = _command_probes(f"{keys.namespace}:{_PROBE}", keys.events)
    if wait:
        commands["wait"] = ("WAIT", 0, 1)
    families = _key_families(keys)
    probes = [
        *commands.values(),
        *(probe for family in families for probe in (("GET", family.key), family.write)),
    ]
    async with client.pipeline(transaction=False) as pipe:
        pipe.execute_command("MULTI")
        for name, *args in probes:
            # Named in bytes: redis-py then parses no reply (each is QUEUED, or an error).
            pipe.execute_command(name.encode(), *args)
        pipe.execute_command("DISCARD")
        _, *replies, discarded = await pipe.execute(raise_on_error=False)
    if isinstance(discarded, Exception):
        await client.connection_pool.disconnect()  # the MULTI may still be open
    channel = _glob_escape(keys.events)
    for name, reply in zip(commands, replies, strict=False):
        text = str(reply).lower()
        if _noperm(reply) and "channel" in text:
            if channel not in missing.channels:
                missing.channels.append(channel)
        elif _noperm(reply) and "key" not in text:
            if name not in missing.commands:
                missing.commands.append(name)
        elif (
            isinstance(reply, ResponseError)
            and "unknown command" in text
            and name not in missing.unknown
        ):
            missing.unknown.append(name)
    key_replies = replies[len(commands) :]
    for index, family in enumerate(families):
        pair = key_replies[2 * index : 2 * index + 2]
        if any(_noperm(reply) and "key" in str(reply).lower() for reply in pair):
            missing.patterns.append(family.pattern)


async def check_server(
    client: RedisClient,
    keys: KeyLayout,
    *,
    accept: Collection[str] = (),
    replicas: int = 0,
    shards: Sequence[KeyLayout] = (),
) -> None:
    """Check that the server behind ``client`` can safely hold the queue of ``keys``
    (and the other ``shards`` of a sharded queue on the same server: their permissions).

    Raises `RedisConfigurationError` listing every problem and how to fix it (see the module
    docstring); logs warnings (``hostedjobs.redis``) for risks that do not stop the start.
    ``accept`` holds the `RISKS` the user accepts. Raises `RedisUnavailableError` if Redis
    fails meanwhile.
    """
    facts, missing = await _read_server(client)
    if facts.role == "sentinel":
        raise RedisConfigurationError(
            f"Redis at {client.target} is a Sentinel, not a Redis server: it holds no data. "
            f"Point the URL at the primary it watches{await _watched(client)}"
        )
    if not missing.unchecked:
        await _probe(client, keys, missing, wait=bool(replicas))
        for shard in shards:
            await _probe(client, shard, missing, wait=False)
    problems, warnings = judge(facts, accept, hash_tag=keys.hash_tag, replicas=replicas)
    user = str(client.connection_pool.connection_kwargs.get("username") or "default")
    problems += missing.problems(keys, user, version_known=facts.version is not None)
    for warning in warnings:
        logger.warning("Redis at %s: %s", client.target, warning)
    if problems:
        listed = "\n".join(f"- {problem}" for problem in problems)
        raise RedisConfigurationError(
            f"Redis at {client.target} cannot safely hold queue {keys.queue!r}:\n{listed}"
        )
