"""Whether a file or directory could be another local user's to change (as
``untrusted`` and ``untrusted_dir`` in ``platform/src/fs.rs``): a state
directory such as the default ``/tmp/telemetry-UID/state`` (no ``HOME``)
that another user made first would let them plant the consent file this
user's clients decide by and read the events spooled there. POSIX only: on
Windows nothing is checked (as before).
"""

from __future__ import annotations

import os
import stat
import sys
from typing import Optional, Tuple


def _checkable() -> bool:
    return sys.platform != "win32" and hasattr(os, "geteuid")


def _parent(path: str) -> Optional[str]:
    """The directory holding ``path``, as Rust's ``Path::parent`` has it:
    none for ``/`` and for a relative path of one component."""
    p = os.path.normpath(path)
    d = os.path.dirname(p)
    if d == p or os.sep not in p:
        return None
    return d


def _not_the_users(st: os.stat_result) -> Optional[str]:
    """Why another user could change the file ``st`` describes (its target,
    if a link), as the end of a sentence naming it; ``None`` if no one else
    could: it belongs to neither root nor this process's user, or every user
    may write it (a sticky directory aside, as ``/tmp``)."""
    me = os.geteuid()
    sticky_dir = stat.S_ISDIR(st.st_mode) and bool(st.st_mode & stat.S_ISVTX)
    if st.st_uid not in (0, me):
        return (
            f"belongs to uid {st.st_uid}, neither root nor this process's user "
            f"(uid {me}), so another user could change it"
        )
    if st.st_mode & 0o002 and not sticky_dir:
        return "is writable by every user"
    return None


def _checked(what: str, path: str) -> Optional[str]:
    """:func:`_not_the_users` as a clause naming ``path`` as ``what``; what
    cannot be checked is not trusted."""
    try:
        why = _not_the_users(os.stat(path))
    except (OSError, ValueError) as e:
        why = f"cannot be checked: {e}"
    return f"the {what} {path} {why}" if why else None


def _dir_itself(directory: str) -> Tuple[bool, Optional[str]]:
    """Whether ``directory`` exists, and why another user could change it or
    create files in it: it fails :func:`_not_the_users`, or every user may
    write it, sticky or not (another user could still create the files this
    user has not made yet)."""
    try:
        st = os.stat(directory)
    except (OSError, ValueError):
        return False, None
    why = _not_the_users(st)
    if why is None and st.st_mode & 0o002:
        why = "is writable by every user"
    return True, None if why is None else f"the directory {directory} {why}"


def untrusted(path: str) -> Optional[str]:
    """Why another user could have written the file at ``path``: it, or the
    directory holding it, fails :func:`_not_the_users`; ``None`` when
    neither does."""
    if not _checkable():
        return None
    parent = _parent(path)
    return _checked("file", path) or (None if parent is None else _checked("directory", parent))


def _untrusted_dirs(*dirs: Optional[str]) -> Optional[str]:
    """:func:`untrusted_dir` for each of ``dirs`` (``None``: left out), each
    the directory holding the one before it: one look at each, and at the
    directory holding the last that exists."""
    last = None
    for d in dirs:
        if d is None:
            continue
        exists, why = _dir_itself(d)
        if why:
            return why
        if exists:
            last = d
    parent = None if last is None else _parent(last)
    return None if parent is None else _checked("directory", parent)


def untrusted_dir(directory: str) -> Optional[str]:
    """:func:`untrusted` for a directory (``None`` when it does not exist
    yet: it is then made by this user): it belongs to another user or is
    writable by every user, sticky or not (another user could still create
    the files this user has not made yet), or the directory holding it fails
    :func:`_not_the_users`."""
    if not _checkable():
        return None
    return _untrusted_dirs(directory)


def consent_not_believed(path: str) -> Optional[str]:
    """Why the user's consent file at ``path`` must not be believed, as a
    sentence naming it: it exists, and it or the directory holding it could
    be another user's (:func:`untrusted`, :func:`untrusted_dir`); ``None``
    when it may be believed or is missing. Another user who made the
    default state directory first could otherwise opt this user in. As the
    Rust client's ``consent::foreign``."""
    if not _checkable():
        return None
    try:
        os.lstat(path)
    except (OSError, ValueError):
        return None
    # The directory's own check covers untrusted()'s look at it.
    why = _checked("file", path) or _untrusted_dirs(_parent(path))
    if not why:
        return None
    return (
        f"the consent file {path} cannot be read ({why}: it is not believed, "
        "as someone else could have written it)"
    )


def untrusted_spool(directory: str, state: Optional[str] = None) -> Optional[str]:
    """Why events must not be spooled into the spool ``directory`` (made):
    it, the directory holding it (``STATE_DIR/spool``) or the state
    directory ``state`` (``None``: not checked) could be another user's
    (:func:`untrusted_dir` of each), who could read the events or swap the
    directories; ``None`` when none could."""
    if not _checkable():
        return None
    why = _untrusted_dirs(directory, _parent(directory), state)
    return None if why is None else f"{why}, so another user could read the events spooled there"
