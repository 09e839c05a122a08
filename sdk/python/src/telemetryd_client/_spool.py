"""The portable spool (``vectors/paths.json`` "spool"; ``spool_dir_for`` in
``proto/src/paths.rs``): one file per emit, which the daemon takes in when
it runs.

The directory is made ``0700`` (parents too); the line is written to
``.<id>.tmp``, created exclusively ``0600``, then renamed to ``<id>.json``,
so the daemon (which reads only ``*.json``) never sees half a line. A
directory already holding :data:`MAX_SPOOL_FILES` entries means the spool is
full: the event is dropped, and the drop noted in the spool's drop file
(:func:`note_drop`) for the daemon to count.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from typing import Dict, Optional

from ._paths import MAX_DROPS_BYTES, MAX_SPOOL_FILES, spool_drops_file
from ._trust import untrusted_spool


class SpoolFull(Exception):
    """The spool directory already holds its maximum of entries (the event
    is dropped, and noted)."""


class SpoolBusy(SpoolFull):
    """This process's other writes held the spool until past the time given
    (the event is dropped, and noted)."""


#: How long a count of a spool directory's entries is trusted by the writes
#: that waited while another wrote, in seconds: in a burst, reading 1,000
#: names before every write would cost more than the write. A write that
#: finds the spool free counts again.
RECOUNT = 0.1


class _Gate:
    """One process's turn at one spool directory. Writes take turns so that
    the count is checked and the file written as one step: without it,
    threads spooling at once each saw 999 files and each wrote one (1,400
    files after 2,000 emits). Dropped events are noted by one thread at a
    time, each append taking all those waiting (2,000 threads each opening
    the drop file outlived their budget)."""

    def __init__(self) -> None:
        self.turn = threading.Lock()
        self.n = 0
        self.counted = float("-inf")
        self.drops_lock = threading.Lock()
        self.drops: Dict[str, int] = {}
        self.noting = False


_gates: Dict[str, _Gate] = {}
_gates_lock = threading.Lock()


def _forget_gates() -> None:
    # A forked child: a turn taken by a thread that is not in it would never
    # be given back.
    global _gates_lock
    _gates.clear()
    _gates_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_gates)


def _gate(directory: str) -> _Gate:
    with _gates_lock:
        g = _gates.get(directory)
        if g is None:
            g = _gates[directory] = _Gate()
        return g


def make_dirs(path: str, mode: int = 0o700) -> None:
    """``mkdir -p`` giving every directory it creates ``mode`` (as Rust's
    ``DirBuilder::recursive(true).mode(..)``; Python's ``makedirs`` applies
    it to the last one only)."""
    missing = []
    p = os.path.abspath(path)
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            if not os.path.isdir(d):
                raise


def open_regular(path: str, flags: int, mode: int = 0o600) -> int:
    """``os.open(path, flags | O_NONBLOCK | O_CLOEXEC, mode)``, refusing
    (closing it, raising ``OSError``) anything but a regular file. A FIFO in
    its place never holds the host: opened for writing with no reader it
    fails at once (``ENXIO``), and one that opens is refused before
    anything reads or writes it. A link is not followed (``O_NOFOLLOW``):
    one another user planted (a lock file's, in a directory they may write)
    would have it create or open any file, as root ``/etc/nologin``."""
    extra = (
        getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    )
    fd = os.open(path, flags | extra, mode)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _count(path: str, limit: int) -> int:
    """``path``'s entries, counted up to ``limit``."""
    n = 0
    with os.scandir(path) as it:
        for _ in it:
            n += 1
            if n >= limit:
                break
    return n


def note_drop(directory: str, product: str, count: int = 1) -> None:
    """Note ``count`` events of ``product`` dropped because the spool
    ``directory`` is full, for the daemon to count: the product's name and a
    newline each, in one append (no lock) to :func:`spool_drops_file`, created ``0600``,
    while that file is under :data:`MAX_DROPS_BYTES`. Best effort: a drop
    that cannot be noted is still a drop, so every error is ignored."""
    drops = spool_drops_file(directory)
    try:
        # A drop noted by a thread that gave up waiting while the one holding
        # the turn had not yet made the spool's directory (a burst from
        # hundreds of threads) must not be lost.
        make_dirs(os.path.dirname(drops))
        # Not beside a spool another user could read (see untrusted_spool).
        if untrusted_spool(directory):
            return
        # Non-blocking, and only a regular file: a FIFO there must not hold
        # the host.
        fd = open_regular(drops, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except (OSError, ValueError):
        return
    try:
        if os.fstat(fd).st_size < MAX_DROPS_BYTES:
            os.write(fd, f"{product}\n".encode() * count)
    except (OSError, ValueError):
        pass
    finally:
        os.close(fd)


def _note_drops(directory: str, g: _Gate, product: str) -> None:
    """:func:`note_drop`, or left to the thread noting others, which takes
    this one too before it returns."""
    with g.drops_lock:
        g.drops[product] = g.drops.get(product, 0) + 1
        if g.noting:
            return
        g.noting = True
    try:
        while True:
            with g.drops_lock:
                batch, g.drops = g.drops, {}
                if not batch:
                    g.noting = False
                    return
            for p, k in batch.items():
                note_drop(directory, p, k)
    except BaseException:
        with g.drops_lock:
            g.noting = False
        raise


def write(
    directory: str,
    name: str,
    line: bytes,
    product: str,
    until: Optional[float] = None,
    state: Optional[str] = None,
) -> str:
    """Spool ``line`` (an event of ``product``) as ``directory/<name>.json``;
    returns its path. Waits for this process's other writes to the same
    directory until ``until`` (``time.monotonic()``; ``None``: as long as
    they take).

    Raises :class:`SpoolFull` when the directory is full, :class:`SpoolBusy`
    when the wait ran out (having noted the drop), ``OSError`` when it
    cannot be written, or when it, the directory holding it or the state
    directory ``state`` (``None``: not checked) could be another user's
    (:func:`untrusted_spool`).
    """
    g = _gate(directory)
    waited = False
    if not g.turn.acquire(blocking=False):
        waited = True
        if until is None:
            got = g.turn.acquire()
        else:
            left = until - time.monotonic()
            got = left > 0 and g.turn.acquire(timeout=left)
        if not got:
            _note_drops(directory, g, product)
            raise SpoolBusy(
                f"the spool {directory} was busy with this program's other events "
                "until past the budget"
            )
    try:
        path = _write(g, directory, name, line, waited, state)
    finally:
        g.turn.release()
    if path is None:
        _note_drops(directory, g, product)
        raise SpoolFull(f"the spool {directory} already holds {MAX_SPOOL_FILES} files")
    return path


def _write(
    g: _Gate, directory: str, name: str, line: bytes, waited: bool, state: Optional[str]
) -> Optional[str]:
    """:func:`write` holding the turn (after waiting for it if ``waited``):
    ``None`` when the spool is full."""
    make_dirs(directory)
    # Not into a directory another user made or can write (the default
    # /tmp/telemetry-UID/state without HOME, made first by someone else):
    # they could read the events. An error, not full: nothing is noted there.
    theirs = untrusted_spool(directory, state)
    if theirs:
        raise OSError(theirs)
    if not waited or time.monotonic() - g.counted > RECOUNT:
        g.n = _count(directory, MAX_SPOOL_FILES)
        g.counted = time.monotonic()
    if g.n >= MAX_SPOOL_FILES:
        return None
    tmp = os.path.join(directory, f".{name}.tmp")
    final = os.path.join(directory, f"{name}.json")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        view = memoryview(line)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, final)
    g.n += 1
    return final
