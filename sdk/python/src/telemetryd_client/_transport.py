"""One request over the daemon's Unix socket, every step bounded by a
monotonic deadline: a non-blocking connect (a full listen backlog fails at
once instead of sleeping), then a write and a read each with the time left.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
import threading
import time
from typing import Any, Optional, Tuple

from ._protocol import MAX_LINE_LEN, ProtocolError, decode_reply

# Never let a write to a closed socket raise SIGPIPE in a host that restored
# the default handler.
_SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)
_SO_NOSIGPIPE = 0x1022  # macOS, where MSG_NOSIGNAL does not exist


class TransportError(Exception):
    """A request that got no reply.

    ``stage`` is ``connect`` (nothing was sent), ``write``, ``read`` or
    ``protocol``; ``timed_out`` says the budget ran out; ``nothing_serves``
    that no process owns the socket (``ENOENT`` / ``ECONNREFUSED``).
    """

    def __init__(
        self,
        stage: str,
        why: str,
        timed_out: bool = False,
        nothing_serves: bool = False,
    ) -> None:
        super().__init__(why)
        self.stage = stage
        self.why = why
        self.timed_out = timed_out
        self.nothing_serves = nothing_serves


def _left(deadline: float) -> float:
    return deadline - time.monotonic()


def _check_server(sock: socket.socket, path: str) -> None:
    """Refuse a socket served by neither this user nor root (a socket a
    service manager made, as the machine-wide daemon's is, is root's).
    Where XDG_RUNTIME_DIR is unset the socket is under /tmp/telemetry-<uid>,
    and another user who made that directory first (or a link there) must
    not receive our events. As the Rust client does; Linux only (the
    standard library reads the peer with SO_PEERCRED there)."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None or not sys.platform.startswith("linux"):
        return
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("iII"))
        _pid, peer, _gid = struct.unpack("iII", raw)
    except OSError as e:
        raise TransportError("connect", f"cannot tell who serves {path}: {e}") from None
    me = os.geteuid()
    if peer in (me, 0):
        return
    raise TransportError(
        "connect",
        f"the socket {path} is served by uid {peer}, neither this user (uid {me}) "
        "nor root: not telemetryd's",
    )


def connect(path: str, deadline: float) -> socket.socket:
    """Connect to the Unix socket at ``path`` without waiting."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if _SEND_FLAGS == 0 and sys.platform == "darwin":
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_NOSIGPIPE, 1)
            except OSError:
                pass
        sock.setblocking(False)
        try:
            sock.connect(path)
        except (BlockingIOError, InterruptedError):
            # A Unix stream connect completes or fails on the spot; this is
            # a full backlog: the daemon is too busy to take us now.
            raise TransportError(
                "connect", f"telemetryd at {path} is too busy to accept a connection"
            ) from None
        except OSError as e:
            nothing = e.errno in (errno.ENOENT, errno.ECONNREFUSED)
            raise TransportError(
                "connect",
                f"telemetryd is not reachable at {path}: {e.strerror or e}",
                nothing_serves=nothing,
            ) from None
        except (ValueError, TypeError) as e:
            raise TransportError("connect", f"bad socket path {path!r}: {e}") from None
        _check_server(sock, path)
        if _left(deadline) <= 0:
            raise TransportError("connect", "the time budget ran out", timed_out=True)
        return sock
    except BaseException:
        sock.close()
        raise


def send(sock: socket.socket, data: bytes, deadline: float) -> None:
    """Write all of ``data`` before ``deadline``."""
    left = _left(deadline)
    if left <= 0:
        raise TransportError("write", "the time budget ran out", timed_out=True)
    try:
        sock.settimeout(left)
        sock.sendall(data, _SEND_FLAGS)
    except socket.timeout:
        raise TransportError(
            "write", "telemetryd did not take the request in time", timed_out=True
        ) from None
    except OSError as e:
        raise TransportError("write", f"writing to telemetryd failed: {e}") from None


def read_line(sock: socket.socket, deadline: float) -> bytes:
    """Read one line (without its newline) before ``deadline``."""
    buf = bytearray()
    while True:
        left = _left(deadline)
        if left <= 0:
            raise TransportError(
                "read", "telemetryd did not answer within the time budget", timed_out=True
            )
        try:
            sock.settimeout(left)
            chunk = sock.recv(65536)
        except socket.timeout:
            raise TransportError(
                "read", "telemetryd did not answer within the time budget", timed_out=True
            ) from None
        except InterruptedError:
            continue
        except OSError as e:
            raise TransportError("read", f"reading from telemetryd failed: {e}") from None
        if not chunk:
            raise TransportError("read", "telemetryd closed the connection without a reply")
        start = len(buf)
        buf += chunk
        nl = buf.find(b"\n", start)
        if nl >= 0:
            return bytes(buf[:nl])
        if len(buf) > MAX_LINE_LEN:
            raise TransportError("protocol", "telemetryd's reply line is over the limit")


# Connections one client opens to the daemon at once, at most. Each emit
# opens one; a CLI emitting from hundreds of threads would otherwise pass
# the daemon's connection limit (512 by default), be refused ``busy``, and
# spool (past 1,000 files, drop) what it sent. The rest wait their turn
# for half their budget at most, then spool.
MAX_IN_FLIGHT = 16


class Slots:
    """One client's connection slots (see ``MAX_IN_FLIGHT``).

    A forked child gets new ones: the threads that held slots at the fork
    are not in it and would never give them back, so every emit of the
    child would wait out its budget and spool.
    """

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._free = threading.BoundedSemaphore(MAX_IN_FLIGHT)

    def take(self, path: str, deadline: float) -> threading.BoundedSemaphore:
        """Wait for a slot for half the time left before ``deadline`` at
        most, keeping the rest to spool in (in a burst against a hung daemon
        every waiter gives up at once, and their files are written one after
        another); give it back to what this returns."""
        if self._pid != os.getpid():
            # No lock: one held by another thread at the fork would stay
            # held in the child. Two threads racing here each make a set,
            # and each gives its slot back to the set it took it from.
            self._free = threading.BoundedSemaphore(MAX_IN_FLIGHT)
            self._pid = os.getpid()
        free = self._free
        if not free.acquire(timeout=max(0.0, deadline - time.monotonic()) / 2):
            raise TransportError(
                "connect",
                f"this client's {MAX_IN_FLIGHT} connections to telemetryd at {path} were busy for half the budget",
                timed_out=True,
            )
        return free


def request(
    path: str, line: bytes, deadline: float, slots: Optional[Slots] = None
) -> Tuple[str, Any]:
    """Send one request line and read its reply: ``(variant, body)``."""
    taken = slots.take(path, deadline) if slots is not None else None
    try:
        sock = connect(path, deadline)
        try:
            send(sock, line, deadline)
            reply = read_line(sock, deadline)
        finally:
            sock.close()
    finally:
        if taken is not None:
            taken.release()
    try:
        return decode_reply(reply)
    except ProtocolError as e:
        raise TransportError("protocol", f"unexpected reply from telemetryd: {e}") from None


def send_only(path: str, line: bytes, deadline: float, slots: Optional[Slots] = None) -> None:
    """Send one request line and close without reading the reply."""
    taken = slots.take(path, deadline) if slots is not None else None
    try:
        sock = connect(path, deadline)
        try:
            send(sock, line, deadline)
        finally:
            sock.close()
    finally:
        if taken is not None:
            taken.release()
