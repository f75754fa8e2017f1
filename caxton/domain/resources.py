"""Resource strings: memory sizes (`50MB`, `512KB`, `64Mi`), CPU millicores, durations."""

from __future__ import annotations

import re

# Decimal units follow SI (`MB` = 10**6) and binary ones IEC (`Mi` = 2**20), as Kubernetes does.
_MEMORY_UNITS = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9,
    "K": 10**3, "M": 10**6, "G": 10**9,
    "KI": 2**10, "MI": 2**20, "GI": 2**30,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30,
}
# Numbers are limited to 15 digits before the point, so float() stays exact enough and finite.
_MEMORY = re.compile(r"^\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)\s*([A-Za-z]*)\s*$")
_CPU = re.compile(r"^\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)\s*(m?)\s*$")
_DURATION = re.compile(r"^\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)\s*(ms|s|m)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")
_RATE_PERIODS = {
    "s": 1.0, "sec": 1.0, "second": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0,
    "h": 3600.0, "hour": 3600.0,
}


def parse_memory(text: object) -> int:
    """Return the size in bytes; raise ValueError naming the unit or value that is wrong."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"expected a size such as \"50MB\", got {type(text).__name__}")
    match = _MEMORY.match(str(text))
    if not match:
        raise ValueError(f"invalid size {text!r}: use a number and a unit such as 50MB or 64Mi")
    number, unit = match.groups()
    factor = _MEMORY_UNITS.get(unit.upper())
    if factor is None:
        raise ValueError(f"unknown memory unit {unit!r} in {text!r}: use B, KB, MB, GB, Ki, Mi or Gi")
    size = int(float(number) * factor)
    if size <= 0:
        raise ValueError(f"size {text!r} must be above zero")
    return size


def parse_cpu(text: object) -> int:
    """Return millicores: `100m` is 100, `0.5` and `"1"` are 500 and 1000 (cores)."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"expected millicores such as \"100m\", got {type(text).__name__}")
    match = _CPU.match(str(text))
    if not match:
        raise ValueError(f"invalid CPU {text!r}: use millicores such as 100m, or cores such as 0.5")
    number, milli = match.groups()
    millicores = int(float(number)) if milli else int(float(number) * 1000)
    if millicores <= 0:
        raise ValueError(f"CPU {text!r} must be at least 1m")
    return millicores


def parse_duration(text: object) -> float:
    """Return seconds from `500ms`, `5s`, `2m` or a bare number of seconds."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"expected a duration such as \"5s\", got {type(text).__name__}")
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"invalid duration {text!r}: use 500ms, 5s, 2m or a number of seconds")
    number, unit = match.groups()
    seconds = float(number) * _DURATION_UNITS[unit]
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be above zero")
    return seconds


def parse_rate(text: object) -> tuple[int, float]:
    """Return (requests, period in seconds) from `10/min`, `1000/s` or `500/hour`."""
    if not isinstance(text, str):
        raise ValueError(f"expected a rate such as \"10/min\", got {type(text).__name__}")
    match = _RATE.match(text.lower())
    if not match or match.group(2) not in _RATE_PERIODS:
        raise ValueError(f"invalid rate {text!r}: use a count per s, min or hour, such as 10/min")
    count = int(match.group(1))
    if count <= 0:
        raise ValueError(f"rate {text!r} must allow at least one request")
    return count, _RATE_PERIODS[match.group(2)]


def format_memory(size: int) -> str:
    """Format bytes in the largest decimal unit that keeps one decimal: `25MB`, `1.5GB`."""
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f}{unit}" if value == int(value) or value >= 100 else f"{value:.1f}{unit}"
    return f"{size}B"


def format_memory_exact(size: int) -> str:
    """Format bytes so that `parse_memory` gives back the same number: `64Mi`, `50MB`, `1000`."""
    for unit, factor in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def format_cpu(millicores: float) -> str:
    return f"{round(millicores)}m"
