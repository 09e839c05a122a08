"""Who serves the socket: where XDG_RUNTIME_DIR is unset it is under
/tmp/telemetry-<uid>, and another user who made that directory first must
not receive events, nor one who linked it to a directory of theirs. Needs
root to listen as another user (CI runs as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from telemetryd_client import Client

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0,
    reason="listening as another uid needs root on Linux (CI runs as root)",
)

# Bound under another name and renamed once listening: the socket's path
# appears only when a connect can succeed.
LISTENER = (
    "import os,socket,sys,time\n"
    "s=socket.socket(socket.AF_UNIX)\n"
    "s.bind(sys.argv[1]+'.new')\n"
    "s.listen(16)\n"
    "os.rename(sys.argv[1]+'.new',sys.argv[1])\n"
    "time.sleep(30)"
)


def mkdir(path: Path, mode: int, uid: int) -> None:
    path.mkdir(exist_ok=True)
    os.chmod(path, mode)
    os.chown(path, uid, uid)


@pytest.fixture
def base() -> Iterator[Path]:
    # Not pytest's tmp_path: its parent is private to root, so the other
    # user could not reach the socket.
    path = Path(tempfile.mkdtemp(prefix="telemetry-peer-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def status_error_from_nobody(directory: Path, via: Path, base: Path) -> str:
    """The status error of a client whose socket, reached through ``via``,
    a Python listener serves as uid 65534 (never answering) in
    ``directory``."""
    sock = directory / "telemetryd.sock"
    # A Python other users can run (a pyenv shim under /root is not).
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    proc = subprocess.Popen([python, "-c", LISTENER, str(sock)], user=65534, group=65534)
    try:
        end = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < end, "the other user's listener did not start"
            time.sleep(0.01)
        c = Client("cfdev", "1", 0.3, socket=str(via / sock.name), state_dir=str(base / "state"))
        err = c.status().get("error")
    finally:
        proc.kill()
        proc.wait()
    assert err is not None, "an answer from a listener that never answers"
    return str(err["message"])


def test_another_users_socket_in_a_directory_they_made_is_refused(base: Path) -> None:
    tmp = base / "tmp"
    mkdir(tmp, 0o1777, 0)
    squat = tmp / "telemetry-0"
    mkdir(squat, 0o755, 65534)
    message = status_error_from_nobody(squat, squat, base)
    assert "served by uid 65534" in message, message


def test_a_link_to_another_users_directory_is_refused(base: Path) -> None:
    tmp = base / "tmp"
    mkdir(tmp, 0o1777, 0)
    theirs = base / "them"
    mkdir(theirs, 0o755, 65534)
    linked = tmp / "telemetry-1"
    linked.symlink_to(theirs)
    message = status_error_from_nobody(theirs, linked, base)
    assert "served by uid 65534" in message, message
