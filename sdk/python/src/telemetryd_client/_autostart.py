"""Starting ``telemetryd`` when nothing serves the socket, as
``client/src/autostart.rs`` does (see its module docs): only after an emit
was spooled because connecting failed with ``ENOENT``/``ECONNREFUSED``; the
binary is ``TELEMETRY_DAEMON``, else the client's ``daemon`` option (the
``telemetryd`` a vendor ships with their CLI: where the Rust clients and the
Go SDK look beside the running executable, which is the interpreter here),
else ``telemetryd`` on ``PATH``;
``TELEMETRY_AUTOSTART=0|false|no|off`` turns it off; at most once per 10 s
per state dir (a timestamp in ``STATE_DIR/autostart.stamp``, under a
non-blocking ``flock``); detached (its own session, via an ``sh`` that
exits at once, so the host never has a child to reap), stdin ``/dev/null``,
output appended to ``STATE_DIR/telemetryd.log``, no cloud credentials in
its environment.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from typing import Dict, Mapping, Optional

from ._spool import make_dirs, open_regular

if sys.platform != "win32":
    # Not on Windows, where this module must still import (see start).
    import fcntl

INTERVAL_MS = 10_000
STAMP_FILE = "autostart.stamp"
LOG_FILE = "telemetryd.log"

_PREFIXES = (
    "AWS_",
    "AZURE_",
    "GOOGLE_",
    "GCLOUD_",
    "CLOUDSDK_",
    "ALIBABA_CLOUD_",
    "OCI_",
    "DIGITALOCEAN_",
)
_SUFFIXES = (
    "_TOKEN",
    "_SECRET",
    "_SECRET_KEY",
    "_ACCESS_KEY",
    "_API_KEY",
    "_PASSWORD",
    "_CREDENTIALS",
    "_PAT",
    "_AUTHTOKEN",
)
_NAMES = frozenset(
    {
        "DATABASE_URL",
        "SSH_AUTH_SOCK",
        "NOTIFY_SOCKET",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "WATCHDOG_PID",
        "WATCHDOG_USEC",
    }
)


def scrubbed(name: str) -> bool:
    """Whether the daemon must not inherit the variable ``name``."""
    upper = name.upper()
    if upper.startswith("TELEMETRY_"):
        return False
    return upper.startswith(_PREFIXES) or upper.endswith(_SUFFIXES) or upper in _NAMES


def disabled(value: Optional[str]) -> bool:
    """``TELEMETRY_AUTOSTART``: ``0``, ``false``, ``no`` or ``off`` disable."""
    return value is not None and value.strip().lower() in ("0", "false", "no", "off")


def _is_executable(path: str) -> bool:
    """A regular file with an execute bit (``client/src/autostart.rs``
    ``is_executable``)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(st.st_mode) and st.st_mode & 0o111 != 0


def find_daemon(env: Mapping[str, str], shipped: Optional[str] = None) -> Optional[str]:
    """``TELEMETRY_DAEMON``, else ``shipped`` (the client's ``daemon``
    option) if it is an absolute path to an executable file, else ``telemetryd`` on ``PATH``:
    the order of ``client/src/autostart.rs``, ``shipped`` standing for
    "beside the running executable"."""
    explicit = env.get("TELEMETRY_DAEMON")
    if explicit:
        return explicit
    # Only an absolute path: a relative one would be looked up from the
    # working directory, where a cloned repository could plant a binary.
    if shipped and os.path.isabs(shipped) and _is_executable(shipped):
        return shipped
    return shutil.which("telemetryd", path=env.get("PATH") or os.defpath)


def daemon_env(env: Mapping[str, str]) -> Dict[str, str]:
    """``env`` without what the daemon must not inherit."""
    out = {k: v for k, v in env.items() if not scrubbed(k)}
    out["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null"
    out["AWS_CONFIG_FILE"] = "/dev/null"
    out["AWS_EC2_METADATA_DISABLED"] = "true"
    return out


def _wait_quietly(child: subprocess.Popen[bytes]) -> None:
    try:
        child.wait()
    except Exception:
        pass


def _reap_later(child: subprocess.Popen[bytes]) -> None:
    """Reap ``child`` when it exits, in a daemon thread (which the host
    never waits for). Not by dropping it: a ``Popen`` dropped while its child
    runs warns "subprocess N is still running", printed into the host under
    ``-W default``, ``-X dev`` or pytest. Where no thread can be started,
    it is marked done, so that nothing is printed (init reaps it once this
    process exits)."""
    try:
        threading.Thread(
            target=_wait_quietly, args=(child,), name="telemetryd-autostart-reaper", daemon=True
        ).start()
    except Exception:
        child.returncode = -1


def start(
    socket_path: str,
    state_dir: str,
    env: Mapping[str, str],
    deadline: Optional[float] = None,
    shipped: Optional[str] = None,
) -> str:
    """Start the daemon detached unless disabled, not found or started
    recently. Returns ``spawned``, ``disabled``, ``not_found`` or
    ``recently``; raises ``OSError`` when a file or the spawn fails.
    ``shipped`` is the client's ``daemon`` option (see :func:`find_daemon`).
    Waits for the ``sh`` that starts it only until ``deadline`` (a
    ``time.monotonic()`` value; the host's budget), not past it."""
    if disabled(env.get("TELEMETRY_AUTOSTART")):
        return "disabled"
    if sys.platform == "win32":
        # No detached start without fork and sh; the service starts it.
        return "disabled"
    daemon = find_daemon(env, shipped)
    if not daemon:
        return "not_found"
    make_dirs(state_dir)
    # The stamp and the log are opened non-blocking and must be regular
    # files: a FIFO in their place fails at once instead of holding the host.
    fd = open_regular(os.path.join(state_dir, STAMP_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return "recently"
        now = time.time_ns() // 1_000_000
        text = os.read(fd, 64).decode("ascii", "replace").strip()
        if text.isdigit():
            last = int(text)
            # A stamp in the future (clock set back) holds nobody off.
            if last <= now and now - last < INTERVAL_MS:
                return "recently"
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(now).encode("ascii"))
        log = open_regular(
            os.path.join(state_dir, LOG_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
        )
        try:
            # `sh` starts the daemon in the background and exits: the daemon
            # is adopted by init, in the session `sh` led.
            child = subprocess.Popen(
                [
                    "/bin/sh",
                    "-c",
                    'exec "$@" &',
                    "sh",
                    daemon,
                    "--autostarted",
                    "--socket",
                    socket_path,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                close_fds=True,
                start_new_session=True,
                env=daemon_env(env),
            )
            # `sh` exits as soon as it has started the daemon; reap it, but
            # not past the host's budget: one still running then is reaped
            # by a daemon thread.
            left = 5.0 if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                child.wait(timeout=left)
            except subprocess.TimeoutExpired:
                _reap_later(child)
        finally:
            os.close(log)
        return "spawned"
    finally:
        os.close(fd)
