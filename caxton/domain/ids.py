"""Random, prefixed identifiers: `agent_`, `msg_`, `conv_`, `trace_`."""

from __future__ import annotations

import secrets

# 64 random bits: collisions stay negligible for billions of ids, and ids stay short to type.
_ID_BYTES = 8


def new_id(prefix: str) -> str:
    """Return `prefix_` followed by 16 random hex digits."""
    return f"{prefix}_{secrets.token_hex(_ID_BYTES)}"


def agent_id() -> str:
    return new_id("agent")


def message_id() -> str:
    return new_id("msg")


def conversation_id() -> str:
    return new_id("conv")


def trace_id() -> str:
    return new_id("trace")
