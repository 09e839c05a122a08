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

from ._paths import MAX_DROPS_BYTES, MAX_SPOOL_FILES, spool_drops_file


class SpoolFull(Exception):
    """The spool directory already holds its maximum of entries."""


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


def _count_at_least(path: str, limit: int) -> bool:
    n = 0
    with os.scandir(path) as it:
        for _ in it:
            n += 1
            if n >= limit:
                return True
    return False


def note_drop(directory: str, product: str) -> None:
    """Note one event of ``product`` dropped because the spool ``directory``
    is full, for the daemon to count: the product's name and a newline, in
    one append (no lock) to :func:`spool_drops_file`, created ``0600``,
    while that file is under :data:`MAX_DROPS_BYTES`. Best effort: a drop
    that cannot be noted is still a drop, so every error is ignored."""
    try:
        # Non-blocking, and only a regular file: a FIFO there must not hold
        # the host.
        fd = open_regular(
            spool_drops_file(directory), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
        )
    except (OSError, ValueError):
        return
    try:
        if os.fstat(fd).st_size < MAX_DROPS_BYTES:
            os.write(fd, f"{product}\n".encode())
    except (OSError, ValueError):
        pass
    finally:
        os.close(fd)


def write(directory: str, name: str, line: bytes, product: str) -> str:
    """Spool ``line`` (an event of ``product``) as ``directory/<name>.json``;
    returns its path.

    Raises :class:`SpoolFull` when the directory is full (having noted the
    drop), ``OSError`` when it cannot be written.
    """
    make_dirs(directory)
    if _count_at_least(directory, MAX_SPOOL_FILES):
        note_drop(directory, product)
        raise SpoolFull(f"the spool {directory} already holds {MAX_SPOOL_FILES} files")
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
    return final
