"""The script-key checker (tests/script_keys.py): its MONITOR parser, and the checker on Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from tests.script_keys import (
    MonitorLine,
    ScriptCall,
    ScriptKeyWatch,
    group_script_calls,
    inner_commands_follow_their_call,
    parse_monitor_line,
    script_bodies,
    split_args,
    summarize,
    undeclared_keys,
)

SHA = "9dc046d21f2ce47f1c7a42c7aa6db8fa4cd7899d"
BODY = b"redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', ARGV[2] .. 'x')"

# Captured from redis-server 7.0 (redis-py clients): a script loaded after NOSCRIPT, a
# transaction and a plain pipeline each carrying script calls, quotes, backslashes, newlines
# and bytes that are not UTF-8.
CAPTURED = [
    b'+1796034753.132310 [0 127.0.0.1:54998] "MULTI"',
    b'1796034753.132337 [0 127.0.0.1:54998] "SET" "plain" "v"',
    b'1796034753.132342 [0 127.0.0.1:54998] "EVALSHA" "' + SHA.encode() + b'" "1" "k\\"1" '
    b'"a b\\\\c\\n\\x00\\xc3\\xbf" "pre"',
    b'1796034753.132357 [0 127.0.0.1:54998] "EXEC"',
    b'1796034753.133025 [0 127.0.0.1:54998] "SCRIPT" "LOAD" "' + BODY + b'"',
    b'1796034753.133297 [0 127.0.0.1:54998] "EVALSHA" "' + SHA.encode() + b'" "1" "k\\"1" '
    b'"\\x00\\xff\\t\\"" "pre"',
    b'1796034753.133325 [0 lua] "SET" "k\\"1" "\\x00\\xff\\t\\""',
    b'1796034753.133339 [0 lua] "GET" "prex"',
    b'1796034753.133535 [0 127.0.0.1:54998] "GET" "x"',
    b'1796034753.133539 [0 127.0.0.1:54998] "EVALSHA" "' + SHA.encode() + b'" "1" "k2" "v" "p2"',
    b'1796034753.133549 [0 lua] "SET" "k2" "v"',
    b'1796034753.133551 [0 lua] "GET" "p2x"\r\n',
    b'1796034760.403373 [0 127.0.0.1:58118] "MULTI"',
    b'1796034760.403402 [0 127.0.0.1:58118] "EVALSHA" "' + SHA.encode() + b'" "1" "k3" "v" "p3"',
    b'1796034760.403445 [0 lua] "SET" "k3" "v"',
    b'1796034760.403452 [0 lua] "GET" "p3x"',
    b'1796034760.403473 [0 127.0.0.1:58118] "GET" "after"',
    b'1796034760.403474 [0 127.0.0.1:58118] "EXEC"',
]


def _lines(raw: list[bytes]) -> list[MonitorLine]:
    lines = [parse_monitor_line(r) for r in raw]
    assert all(line is not None for line in lines)
    return [line for line in lines if line is not None]


def test_split_args_undoes_monitors_quoting() -> None:
    """Escaped quotes and backslashes, control characters and \\xHH bytes come back as sent;
    a space inside quotes does not split an argument."""
    assert split_args(b'"SET" "k\\"1" "a b\\\\c\\n\\r\\t\\a\\b\\x00\\xff" ""') == (
        b"SET",
        b'k"1',
        b"a b\\c\n\r\t\a\b\x00\xff",
        b"",
    )
    for bad in (b'"unterminated', b"bare", b'"bad\\q"', b'"a""b"', b'"x\\x4"'):
        with pytest.raises(ValueError, match=r"."):
            split_args(bad)


def test_parse_monitor_line_reads_time_db_source_and_args() -> None:
    """Clients by address (IPv4, IPv6, unix socket) or ``lua``; replies without a command
    (MONITOR's own ``OK``) are no line."""
    line = parse_monitor_line(CAPTURED[2])
    assert line is not None
    assert (line.time, line.db, line.source) == (1796034753.132342, 0, "127.0.0.1:54998")
    assert line.args == (b"EVALSHA", SHA.encode(), b"1", b'k"1', b"a b\\c\n\x00\xc3\xbf", b"pre")
    assert line.is_script_call and not line.from_script
    inner = parse_monitor_line(b'1.5 [3 lua] "get" "x y"')
    assert inner is not None
    assert (inner.db, inner.name, inner.args, inner.from_script) == (
        3,
        b"GET",
        (b"get", b"x y"),
        True,
    )
    assert not inner.is_script_call
    ipv6 = parse_monitor_line(b'2.0 [0 [::1]:6000] "evalsha_ro" "ab" "0"')
    assert ipv6 is not None and ipv6.source == "[::1]:6000" and ipv6.is_script_call
    unix = parse_monitor_line(b'2.0 [0 unix:/tmp/redis.sock] "PING"')
    assert unix is not None and unix.source == "unix:/tmp/redis.sock"
    assert parse_monitor_line(b"+OK\r\n") is None
    assert parse_monitor_line("OK") is None


def test_inner_commands_are_grouped_with_their_call() -> None:
    """A script call's commands follow it, inside a transaction or a pipeline too; commands
    around them (and a call that ran nothing) are not mixed in."""
    calls = group_script_calls(_lines(CAPTURED))
    assert [(c.call.args[3] if c.call else None, len(c.inner)) for c in calls] == [
        (b'k"1', 0),  # NOSCRIPT inside the transaction: ran nothing
        (b'k"1', 2),
        (b"k2", 2),
        (b"k3", 2),
    ]
    assert [line.args for line in calls[1].inner] == [
        (b"SET", b'k"1', b'\x00\xff\t"'),
        (b"GET", b"prex"),
    ]
    assert calls[2].declared_keys == (b"k2",)


def test_inner_commands_that_come_before_their_call_are_grouped_too() -> None:
    """Should a Redis show a script's commands after running it (before the call's line), the
    grouping turns round; commands with no call seen are kept, with no declared keys."""
    raw = [
        b'1.0 [0 lua] "GET" "orphan"',
        b'1.1 [0 127.0.0.1:1] "PING"',
        b'1.2 [0 lua] "SET" "k1" "v"',
        b'1.3 [0 127.0.0.1:1] "EVAL" "return 1" "1" "k1"',
        b'1.4 [0 lua] "GET" "k2"',
        b'1.5 [0 127.0.0.1:1] "FCALL" "f" "2" "k2" "k3" "arg"',
    ]
    calls = group_script_calls(_lines(raw), inner_after_call=False)
    assert [(c.call.name if c.call else None, c.declared_keys, len(c.inner)) for c in calls] == [
        (None, (), 1),
        (b"EVAL", (b"k1",), 1),
        (b"FCALL", (b"k2", b"k3"), 1),
    ]
    assert calls[0].label().startswith("(commands of a script call")
    assert calls[2].label() == "FCALL f"


def test_the_order_is_told_from_the_probe() -> None:
    """The probe call (declaring its key and running EXISTS on it) shows which way round."""
    probe = b'1.0 [0 127.0.0.1:1] "EVAL" "return redis.call(\'EXISTS\', KEYS[1])" "1" "p"'
    inner = b'1.1 [0 lua] "EXISTS" "p"'
    assert inner_commands_follow_their_call(_lines([probe, inner]), b"p") is True
    assert inner_commands_follow_their_call(_lines([inner, probe]), b"p") is False
    with pytest.raises(RuntimeError, match="did not show the probe"):
        inner_commands_follow_their_call(_lines([inner]), b"p")
    with pytest.raises(RuntimeError, match="does not show scripts' commands"):
        inner_commands_follow_their_call(_lines([probe]), b"p")


def test_undeclared_keys_are_those_missing_from_the_calls_keys() -> None:
    """Only keys outside KEYS are reported, named with the script's sha and first line."""
    lines = _lines(CAPTURED)
    calls = group_script_calls(lines)
    keys_of = {
        line.args: {b"SET": (line.args[1],), b"GET": (line.args[1],)}[line.name]
        for call in calls
        for line in call.inner
    }
    findings = undeclared_keys(calls, keys_of, script_bodies(lines))
    assert [(f.command[0], f.key) for f in findings] == [
        (b"GET", b"prex"),
        (b"GET", b"p2x"),
        (b"GET", b"p3x"),
    ]
    assert findings[0].script == f"EVALSHA {SHA[:12]} ({BODY.decode()[:60]})"
    assert findings[1].declared == (b"k2",)
    assert "3 x" in summarize(findings)
    eval_call = ScriptCall(parse_monitor_line(b'1.0 [0 a:1] "EVAL" "-- c\\nreturn 1" "0"'), ())
    assert eval_call.label().endswith("(return 1)")


async def test_the_watch_finds_keys_built_inside_scripts(redis_url: str, queue_name: str) -> None:
    """On a real Redis: a key built from ARGV is found (binary and quoted names too), in a
    script called alone, in a transaction and in a pipeline; declared keys, keyless commands
    (PUBLISH, TIME) and commands outside scripts are not reported."""
    client = aioredis.Redis.from_url(redis_url)
    declared = f"{queue_name}:declared".encode()
    built_prefix = f'{queue_name}:built "q" \\'.encode()
    script = client.register_script(
        "redis.call('SET', KEYS[1], ARGV[1])\n"
        "redis.call('PUBLISH', 'channel', 'hello')\n"
        "redis.call('TIME')\n"
        "return redis.call('EXISTS', ARGV[2] .. ARGV[3])"
    )
    try:
        async with ScriptKeyWatch(redis_url, flush_scripts=True) as watch:
            await client.set(f"{queue_name}:plain", "x")
            await script(keys=[declared], args=["v", built_prefix, b"\xff\x00"])
            async with client.pipeline(transaction=True) as pipe:
                pipe.get(f"{queue_name}:other")
                pipe.evalsha(script.sha, 1, declared, "v", built_prefix, b"2")
                await pipe.execute()
            async with client.pipeline(transaction=False) as pipe:
                pipe.evalsha(script.sha, 1, declared, "v", built_prefix, b"3")
                pipe.get(f"{queue_name}:other")
                await pipe.execute()
    finally:
        await client.aclose()
    assert [(f.command[0].upper(), f.key) for f in watch.findings] == [
        (b"EXISTS", built_prefix + b"\xff\x00"),
        (b"EXISTS", built_prefix + b"2"),
        (b"EXISTS", built_prefix + b"3"),
    ]
    assert all(f.declared == (declared,) for f in watch.findings)
    # The cache was flushed, so the script was loaded in view: findings quote its first line.
    assert all(
        f.script == f"EVALSHA {script.sha[:12]} (redis.call('SET', KEYS[1], ARGV[1]))"
        for f in watch.findings
    ), watch.findings
