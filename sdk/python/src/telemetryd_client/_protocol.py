"""The JSON-lines protocol (``proto/src/lib.rs``, "JSON lines"): events,
requests as lines, replies decoded, UUIDv7 ids and ``KEY=VALUE`` parsing.
No I/O here."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Union

#: Written as ``"v"`` in every line.
PROTOCOL_VERSION = 2
#: Longest line accepted in either direction, newline included.
MAX_LINE_LEN = 131_072

#: A value in an event's ``data``.
DataValue = Union[str, int, bool]

#: Error codes after which an emit is not retried (nor spooled).
FINAL_CODES = frozenset(
    {
        "consent_off",
        "invalid",
        "not_in_catalogue",
        "permission_denied",
        "malformed",
        "frame_too_large",
    }
)

_INT = re.compile(r"[+-]?[0-9]+")


def uuid7() -> str:
    """A fresh UUIDv7 as a lowercase hyphenated string: 48-bit Unix time in
    ms, version 7, variant ``10``, the rest random (``os.urandom``)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)
    value = ((ms & 0xFFFFFFFFFFFF) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def now_us() -> int:
    """Now, in microseconds since the Unix epoch."""
    return time.time_ns() // 1000


@dataclass(frozen=True)
class WireEvent:
    """One event as a client sends it (the daemon adds the machine id, OS
    and architecture)."""

    id: str
    event: str
    product: str
    build: str
    timestamp_us: int
    data: Mapping[str, DataValue] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        """The event as a JSON object."""
        return {
            "build": self.build,
            "data": dict(self.data),
            "event": self.event,
            "id": self.id,
            "product": self.product,
            "timestamp_us": self.timestamp_us,
        }


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def request_line(name: str, fields: Optional[Mapping[str, Any]] = None) -> bytes:
    """Any request as one line: ``{"v":2,"<name>":<fields>}`` and a newline
    (``"v"`` first, keys sorted, as ``vectors/paths.json``'s spool line)."""
    body = _dump(dict(fields or {}))
    return f'{{"v":{PROTOCOL_VERSION},{_dump(name)}:{body}}}\n'.encode()


def emit_line(events: list[WireEvent], ack: bool) -> bytes:
    """An ``emit`` request line."""
    return request_line("emit", {"ack": ack, "events": [e.to_json() for e in events]})


def status_line() -> bytes:
    """A ``status`` request line."""
    return request_line("status")


def consent_changed_line(product: str, build: str) -> bytes:
    """A ``consent_changed`` request line."""
    return request_line("consent_changed", {"build": build, "product": product})


class ProtocolError(Exception):
    """A reply line that is not a valid message."""


def decode_reply(line: Union[bytes, str]) -> Tuple[str, Any]:
    """Decode one reply line into ``(variant, body)``: e.g. ``("ack",
    {"accepted": 1, "duplicates": 0})`` or ``("status", {...})``. Raises
    :class:`ProtocolError` for anything else."""
    if len(line) > MAX_LINE_LEN:
        raise ProtocolError(f"reply line of {len(line)} bytes is over the limit")
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise ProtocolError(f"reply is not JSON: {e}") from None
    except RecursionError:
        # Nested too deep for the parser: as unreadable as bad JSON, so the
        # event is spooled, not lost.
        raise ProtocolError("reply is nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError("reply is not a JSON object")
    v = obj.pop("v", None)
    if v != PROTOCOL_VERSION or isinstance(v, bool):
        raise ProtocolError(f"reply has protocol version {v!r}, expected {PROTOCOL_VERSION}")
    if len(obj) != 1:
        raise ProtocolError(f'reply has {sorted(obj)} beside "v", expected one message')
    ((name, body),) = obj.items()
    return name, body


def parse_kv(arg: str) -> Optional[Tuple[str, DataValue]]:
    """Parse a ``KEY=VALUE`` string into a typed data entry ``(key, value)``,
    as ``telemetry-emit`` does (``vectors/kv.json``); ``None`` when it has
    no ``=`` (or is not a string). Never raises.

    Split at the first ``=``; ``true``/``false`` become booleans, a whole
    number that fits 64 bits signed an int, anything else text.
    ``KEY:=VALUE`` (``:=`` before any ``=``) forces text. Keys are not
    checked here (:meth:`Client.emit` checks them).
    """
    if not isinstance(arg, str):
        return None
    key, sep, value = arg.partition(":=")
    if sep and "=" not in key:
        return key, value
    key, sep, value = arg.partition("=")
    if not sep:
        return None
    if value == "true":
        return key, True
    if value == "false":
        return key, False
    if value.isascii() and _INT.fullmatch(value):
        n = int(value)
        if -(2**63) <= n < 2**63:
            return key, n
    return key, value
