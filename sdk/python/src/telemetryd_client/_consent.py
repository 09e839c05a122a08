"""Consent: the file format and how the layers combine, as pure functions.

A port of ``proto/src/consent.rs`` (see its module docs). Layers, most
authoritative first:

1. the system file (an administrator's ``off`` for the product or ``*``; any
   damaged line, or a file that exists but cannot be read, forces off);
2. the environment (``DO_NOT_TRACK`` / ``TELEMETRY_OPTOUT`` set to anything
   but empty or ``0`` after trimming);
3. the user file (the last valid line for the product);
4. the default: off.

Damage always means *less* collection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Union

from ._validate import valid_name

#: Modes, as written in files and on the wire.
MODES = ("off", "local", "on")

#: The opt-out environment variables.
OPT_OUT_VARS = ("DO_NOT_TRACK", "TELEMETRY_OPTOUT")

#: The header line :meth:`ConsentFile.render` writes, as Rust writes it.
HEADER = (
    '# telemetry consent, one "PRODUCT MODE TIME" per line; change it with '
    "`telemetryctl consent PRODUCT on|off|local`\n"
)

# Rust's `char::is_whitespace` (Unicode White_Space), which `split_whitespace`
# and `trim` use. Python's own `str.split()` also splits at \x1c-\x1f.
_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_WS_RUN = re.compile("[" + _WS + "]+")
_WS_CHARS = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000"
)
_VERSION = re.compile(r"\+?[0-9]+")
_FIELD_KEY = re.compile(r"[a-z][a-z0-9_]*")


class Unreadable:
    """Stands for a system file that exists but cannot be read."""

    def __repr__(self) -> str:
        return "UNREADABLE"


#: Pass as the system file's text when it exists but cannot be read.
UNREADABLE = Unreadable()

#: A system file's content: its text, ``None`` (no file) or :data:`UNREADABLE`.
SystemText = Union[str, None, Unreadable]


def rust_trim(s: str) -> str:
    """``str::trim`` as Rust has it (Unicode White_Space only)."""
    return s.strip(_WS_CHARS)


def _words(s: str) -> List[str]:
    return [w for w in _WS_RUN.split(s) if w]


def parse_mode(s: str) -> Optional[str]:
    """``on``, ``off`` or ``local`` in any (ASCII) case, else ``None``."""
    if not s.isascii():
        return None
    m = s.lower()
    return m if m in MODES else None


def _parse_version(value: str) -> Optional[int]:
    if not _VERSION.fullmatch(value):
        return None
    v = int(value)
    return v if 1 <= v <= 0xFFFFFFFF else None


def _is_field_key(key: str) -> bool:
    return key.isascii() and _FIELD_KEY.fullmatch(key) is not None


def _split_extension(line: str) -> tuple[str, str]:
    before, sep, after = line.partition("#")
    if not sep:
        return line, ""
    if after.startswith("+"):
        return before, after[1:].split("#", 1)[0]
    return before, ""


@dataclass
class Entry:
    """One parsed line of a consent file."""

    product: str
    mode: str
    since: Optional[str] = None
    last_off: Optional[str] = None
    version: Optional[int] = None


@dataclass
class ConsentFile:
    """A parsed consent file: valid entries in file order, and the 1-based
    numbers of the lines that did not parse (``0``: the file is unreadable).
    """

    entries: List[Entry] = field(default_factory=list)
    bad_lines: List[int] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> ConsentFile:
        """Parse a file's text exactly as ``ConsentFile::parse`` in Rust."""
        out = cls()
        # One byte-order mark at the very start is skipped (Windows
        # PowerShell 5.1 and older Notepad write one); anywhere else it is
        # not whitespace.
        if text.startswith("\ufeff"):
            text = text[1:]
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for i, raw in enumerate(lines):
            if raw.endswith("\r"):
                raw = raw[:-1]
            line, extension = _split_extension(raw)
            words = _words(line)
            if not words:
                continue
            if len(words) < 2:
                out.bad_lines.append(i + 1)
                continue
            product, mode_word = words[0], words[1]
            since: Optional[str] = None
            last_off: Optional[str] = None
            version: Optional[int] = None
            keyed = False
            extra = False
            for w in words[2:]:
                key, eq, value = w.partition("=")
                if eq:
                    if key == "off":
                        if last_off is None:
                            last_off = value
                        else:
                            extra = True
                    elif _is_field_key(key):
                        if key == "version":
                            version = _parse_version(value)
                    else:
                        extra = True
                    keyed = True
                elif since is None and last_off is None and not keyed:
                    since = w
                else:
                    extra = True
            # After `#+` only KEY=VALUE tokens mean anything.
            for w in _words(extension):
                key, eq, value = w.partition("=")
                if eq and key == "version":
                    version = _parse_version(value)
            valid_product = product == "*" or valid_name(product)
            mode = parse_mode(mode_word)
            if valid_product and mode is not None and not extra:
                out.entries.append(Entry(product, mode, since, last_off, version))
            else:
                out.bad_lines.append(i + 1)
        return out

    @classmethod
    def unreadable(cls) -> ConsentFile:
        """A system file that exists but cannot be read: fails closed."""
        return cls(entries=[], bad_lines=[0])

    def get(self, product: str) -> Optional[Entry]:
        """The last entry for ``product`` (exact name, not ``*``)."""
        for e in reversed(self.entries):
            if e.product == product:
                return e
        return None

    def forces_off(self, product: str) -> bool:
        """Read as the administrator's file: whether it forces ``product``
        off (an ``off`` line for it or ``*``, or any damage)."""
        if self.bad_lines:
            return True
        return any(e.product in (product, "*") and e.mode == "off" for e in self.entries)

    def set(
        self,
        product: str,
        mode: str,
        since: Optional[str],
        version: Optional[int] = None,
    ) -> None:
        """Set ``product`` to ``mode`` at ``since``, replacing its earlier
        lines. Turning it off records ``since`` as its last ``off``; other
        modes keep the earlier ``off`` time."""
        previous = self.get(product)
        previous_off = previous.last_off if previous else None
        last_off = since if mode == "off" else previous_off
        self.entries = [e for e in self.entries if e.product != product]
        self.entries.append(Entry(product, mode, since, last_off, version))

    def render(self) -> str:
        """The canonical text: the header, then the latest line of each
        product, ordered by where that line was."""
        seen: Dict[str, bool] = {}
        latest: List[Entry] = []
        for e in reversed(self.entries):
            if e.product not in seen:
                seen[e.product] = True
                latest.append(e)
        out = [HEADER]
        for e in reversed(latest):
            line = e.product + " " + e.mode
            if e.since is not None:
                line += " " + e.since
            if e.last_off is not None:
                line += " off=" + e.last_off
            if e.version is not None:
                line += " #+ version=" + str(e.version)
            out.append(line + "\n")
        return "".join(out)


def env_opts_out(value: Optional[str]) -> bool:
    """Whether an opt-out variable's value means "opt out": anything but
    unset, empty or ``0`` after trimming."""
    if value is None:
        return False
    return rust_trim(value) not in ("", "0")


def env_opt_out_var(env: Mapping[str, str]) -> Optional[str]:
    """The first opt-out variable set in ``env``, if any."""
    for var in OPT_OUT_VARS:
        if env_opts_out(env.get(var)):
            return var
    return None


def resolve(
    product: str,
    system: SystemText,
    env: Mapping[str, str],
    user: Optional[str],
) -> tuple[str, str]:
    """Combine the layers for ``product``: ``(mode, layer)``.

    ``system`` is the system file's text, ``None`` when there is none, or
    :data:`UNREADABLE`; ``env`` the environment; ``user`` the user file's
    text or ``None``. ``layer`` is ``system``, ``environment``,
    ``user_file`` or ``default`` (the protocol's names).
    """
    if isinstance(system, Unreadable):
        return "off", "system"
    if system is not None and ConsentFile.parse(system).forces_off(product):
        return "off", "system"
    if env_opt_out_var(env) is not None:
        return "off", "environment"
    if user is not None:
        e = ConsentFile.parse(user).get(product)
        if e is not None:
            return e.mode, "user_file"
    return "off", "default"
