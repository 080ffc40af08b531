"""Durations: every option that takes one accepts a `timedelta` or a number of seconds."""

from __future__ import annotations

from datetime import timedelta

from .exceptions import ConfigurationError

__all__ = ["Seconds", "as_timedelta", "seconds"]

Seconds = timedelta | float | int
"""A duration: a `timedelta`, or seconds as an int or float."""


def seconds(name: str, value: Seconds, *, positive: bool = False) -> float:
    """``value`` in seconds (a float). Raises `ConfigurationError`, naming the option
    ``name``, for anything but a timedelta or a number (booleans included), and for a
    negative duration (or zero, with ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, timedelta | float | int):
        raise ConfigurationError(
            f"{name} must be a timedelta or a number of seconds, got {value!r}"
        )
    result = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if result != result or result in (float("inf"), float("-inf")):
        raise ConfigurationError(f"{name} must be a finite duration, got {value!r}")
    if result < 0 or (positive and result == 0):
        raise ConfigurationError(
            f"{name} must be {'positive' if positive else '>= 0'}, got {value!r}"
        )
    return result


def as_timedelta(name: str, value: Seconds, *, positive: bool = False) -> timedelta:
    """``value`` as a `timedelta`, checked as `seconds` checks it."""
    checked = seconds(name, value, positive=positive)
    return value if isinstance(value, timedelta) else timedelta(seconds=checked)
