"""Where the daemon and its files are, as pure functions of an environment
map, a uid and an OS name (``proto/src/paths.rs``; ``vectors/paths.json``).

Overrides are checked first: ``TELEMETRY_SOCKET``, ``TELEMETRY_STATE_DIR``,
``TELEMETRY_CONSENT_FILE``, ``TELEMETRY_SYSTEM_CONSENT_FILE``. Empty
variables count as unset.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, Optional

SOCKET_FILE = "telemetryd.sock"
SYSTEM_CONSENT_FILE = "/etc/telemetry/consent"
#: Most entries a writer leaves in a spool directory.
MAX_SPOOL_FILES = 1000
#: Largest drop file (:func:`spool_drops_file`) a writer appends to; past
#: it, drops are no longer noted.
MAX_DROPS_BYTES = 64 * 1024


def _get(env: Mapping[str, str], key: str) -> Optional[str]:
    value = env.get(key)
    return value if value else None


def _join(*parts: str) -> str:
    return os.path.join(*parts)


def current_os() -> str:
    """``macos`` on macOS, else ``linux`` (what the path rules distinguish)."""
    return "macos" if sys.platform == "darwin" else "linux"


def current_uid() -> int:
    """This process's user id."""
    return os.getuid()


def default_socket(env: Mapping[str, str], uid: int, os_name: str) -> str:
    """The daemon's default socket, ignoring ``TELEMETRY_SOCKET``."""
    runtime = _get(env, "XDG_RUNTIME_DIR")
    if runtime:
        return _join(runtime, "telemetry", SOCKET_FILE)
    home = _get(env, "HOME")
    if os_name == "macos" and home:
        return _join(home, "Library/Application Support/telemetry", SOCKET_FILE)
    tmp = _get(env, "TMPDIR") or "/tmp"
    return _join(tmp, f"telemetry-{uid}", SOCKET_FILE)


def socket_path(env: Mapping[str, str], uid: int, os_name: str) -> str:
    """``TELEMETRY_SOCKET``, else the default socket."""
    return _get(env, "TELEMETRY_SOCKET") or default_socket(env, uid, os_name)


def state_dir(env: Mapping[str, str], uid: int) -> str:
    """``TELEMETRY_STATE_DIR``, else ``$XDG_STATE_HOME/telemetry``, else
    ``$HOME/.local/state/telemetry``, else a per-user temporary dir."""
    explicit = _get(env, "TELEMETRY_STATE_DIR")
    if explicit:
        return explicit
    xdg = _get(env, "XDG_STATE_HOME")
    if xdg:
        return _join(xdg, "telemetry")
    home = _get(env, "HOME")
    if home:
        return _join(home, ".local/state/telemetry")
    return _join(_get(env, "TMPDIR") or "/tmp", f"telemetry-{uid}", "state")


def consent_file(env: Mapping[str, str], uid: int) -> str:
    """The user's consent file: ``TELEMETRY_CONSENT_FILE``, else
    ``STATE_DIR/consent``."""
    return _get(env, "TELEMETRY_CONSENT_FILE") or _join(state_dir(env, uid), "consent")


def system_consent_file(env: Mapping[str, str]) -> str:
    """The administrator's file: ``TELEMETRY_SYSTEM_CONSENT_FILE``, else
    ``/etc/telemetry/consent``."""
    return _get(env, "TELEMETRY_SYSTEM_CONSENT_FILE") or SYSTEM_CONSENT_FILE


def socket_hash(socket: str) -> int:
    """FNV-1a 64 of the socket path's bytes."""
    h = 0xCBF29CE484222325
    for b in os.fsencode(socket):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def spool_dir(state: str, socket: str) -> str:
    """The portable spool for the daemon on ``socket``:
    ``STATE/spool/events-<16 hex>.d``."""
    return _join(state, "spool", f"events-{socket_hash(socket):016x}.d")


def spool_drops_file(spool: str) -> str:
    """Where writers note the events they dropped because the spool was
    full, for the daemon to count (its status: ``counters.spool_full_drops``):
    the spool's path with the extension ``drops``, as Rust's
    ``Path::with_extension`` makes it, so ``STATE/spool/events-<16 hex>.drops``
    beside the :func:`spool_dir`. One line per dropped event: its product."""
    slash = spool.rfind("/")
    head, name = spool[: slash + 1], spool[slash + 1 :]
    if name in ("", ".", ".."):
        return spool  # no file name to give an extension
    dot = name.rfind(".")
    if dot > 0:
        name = name[:dot]
    return f"{head}{name}.drops"
