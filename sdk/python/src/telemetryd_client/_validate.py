"""The event checks of ``proto/src/validate.rs``, run before anything is sent
so that a host's mistake is reported precisely (the daemon checks again)."""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Optional

MAX_NAME_LEN = 64
MAX_BUILD_LEN = 64
MAX_DATA_ENTRIES = 32
MAX_STRING_LEN = 256
MIN_TIMESTAMP_US = 946_684_800_000_000
MAX_TIMESTAMP_US = 253_402_300_799_000_000
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_BUILD = re.compile(r"[A-Za-z0-9._+-]+")
# Rust's `char::is_control`: the Unicode Cc category.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def valid_name(value: str) -> bool:
    """Whether ``value`` is a valid event, product or data-key name: 1-64
    characters from ``a-z``, ``0-9`` and ``_``, starting with a letter."""
    return len(value) <= MAX_NAME_LEN and value.isascii() and _NAME.fullmatch(value) is not None


def shown(value: Any) -> str:
    """``value`` for a message, in bounded time: a ``str`` quoted and cut to
    80 characters; anything else by its type's name only, never its
    ``repr`` (which may be huge, slow or raise: a host's ``__repr__``, a
    list of ten million items)."""
    if isinstance(value, str):
        # Of a plain str: a subclass's own slicing is not run.
        head = str.__getitem__(value, slice(0, 81))
        if len(head) <= 80:
            return _quoted(head)
        return _quoted(head[:77]) + "..."
    return f"({_a(type(value).__name__[:80])})"


def _a(noun: str) -> str:
    """``noun`` with its indefinite article (``an int``, ``a str``)."""
    return ("an " if noun[:1].lower() in "aeiou" and noun else "a ") + noun


def _quoted(text: str) -> str:
    """``text`` in double quotes, as the daemon and the other SDKs quote
    names, control characters escaped; other characters as they are unless
    they could not be printed as UTF-8 (a lone surrogate): then escaped."""
    out = json.dumps(text, ensure_ascii=False)
    try:
        out.encode("utf-8")
    except UnicodeEncodeError:
        out = json.dumps(text)
    return out


def check_name(what: str, value: Any) -> Optional[str]:
    """Why ``value`` is not a valid name for ``what``, or ``None``."""
    if isinstance(value, str) and valid_name(value):
        return None
    return (
        f"{what} {shown(value)} is not a valid name: use 1-{MAX_NAME_LEN} "
        "characters from a-z, 0-9 and _, starting with a letter"
    )


def check_build(value: Any) -> Optional[str]:
    """Why ``value`` is not a valid build string, or ``None``."""
    if (
        isinstance(value, str)
        and len(value) <= MAX_BUILD_LEN
        and value.isascii()
        and _BUILD.fullmatch(value) is not None
    ):
        return None
    return (
        f"build {shown(value)} is not valid: use 1-{MAX_BUILD_LEN} characters "
        "from A-Z, a-z, 0-9 and . _ + -"
    )


def copy_data(data: Any) -> Any:
    """A mapping's entries read once, into a dict: the one to check and to
    send. A host's ``Mapping`` need not give the same values twice (one was
    checked, then another, ``nan``, sent) nor end (an ``__iter__`` that never
    does held ``emit`` past its budget), so no more than
    :data:`MAX_DATA_ENTRIES` + 1 entries are read (one more says there are
    too many). Anything but a mapping is returned as it is, for
    :func:`check_event` to refuse."""
    if not isinstance(data, Mapping):
        return data
    out = {}
    for key, value in data.items():
        out[key] = value
        if len(out) > MAX_DATA_ENTRIES:
            break
    return out


def check_event(
    product: Any, event: Any, build: Any, timestamp_us: int, data: Any
) -> Optional[str]:
    """Why this event would be refused as ``invalid``, or ``None``."""
    why = check_name("event", event) or check_name("product", product)
    if why:
        return why
    why = check_build(build)
    if why:
        return why
    if not MIN_TIMESTAMP_US <= timestamp_us <= MAX_TIMESTAMP_US:
        return f"timestamp {timestamp_us} µs is outside 2000-01-01..9999-12-31"
    if not isinstance(data, Mapping):
        return f"data must be a mapping of names to str, int or bool, not {type(data).__name__}"
    if len(data) > MAX_DATA_ENTRIES:
        # As the Node SDK says it: a copy (copy_data) stops at one more.
        return f"data has more than {MAX_DATA_ENTRIES} entries, the maximum"
    for key, value in data.items():
        why = check_name("data key", key)
        if why:
            return why
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if not I64_MIN <= value <= I64_MAX:
                return (
                    f"data value for {shown(key)} is out of range: whole numbers are 64-bit signed"
                )
            continue
        if isinstance(value, str):
            # UTF-8 has at least a byte per character: a long one is refused
            # before anything encodes or scans it (200 MB would take 0.1 s).
            if len(value) > MAX_STRING_LEN:
                return (
                    f"data value for {shown(key)} is more than the maximum of "
                    f"{MAX_STRING_LEN} bytes"
                )
            try:
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError:
                return f"data value for {shown(key)} is not valid UTF-8 text"
            if size > MAX_STRING_LEN:
                return (
                    f"data value for {shown(key)} is {size} bytes, "
                    f"more than the maximum of {MAX_STRING_LEN}"
                )
            if _CONTROL.search(value):
                return f"data value for {shown(key)} has control characters (printable text only)"

            continue
        return (
            f"data value for {shown(key)} is {_a(type(value).__name__)}: "
            "use a str, an int (64-bit) or a bool"
        )
    return None
