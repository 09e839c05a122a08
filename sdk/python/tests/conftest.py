"""Fixtures: the shared vectors, and a real telemetryd in a temp dir.

The daemon binary is ``TELEMETRYD_BIN``, else ``<repo>/target/debug/telemetryd``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest

HERE = Path(__file__).resolve().parent
SDK = HERE.parent
REPO = SDK.parent.parent
VECTORS = REPO / "vectors"

sys.path.insert(0, str(SDK / "src"))


def vector(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def daemon_bin() -> Path:
    return Path(os.environ.get("TELEMETRYD_BIN") or REPO / "target/debug/telemetryd")


def raw_request(sock_path: str, line: bytes, timeout: float = 5.0) -> Tuple[str, Any]:
    """One request over a plain socket, independent of the SDK."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(line)
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    obj = json.loads(buf.split(b"\n", 1)[0])
    assert obj.pop("v") == 2
    ((name, body),) = obj.items()
    return name, body


class Daemon:
    """A telemetryd on a temp socket and state dir, never the user's files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = str(root / "s.sock")
        self.state = str(root / "state")
        self.consent_file = str(root / "consent")
        self.system_consent_file = str(root / "system-consent")
        self.proc: Optional[subprocess.Popen[bytes]] = None
        (root / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
        for d in ("catalog", "empty", "home"):
            (root / d).mkdir(exist_ok=True)

    def env(self) -> Dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TELEMETRY_") and k not in ("DO_NOT_TRACK",)
        }
        env.update(
            TELEMETRY_AUTOSTART="0",
            XDG_DATA_DIRS=str(self.root / "empty"),
            HOME=str(self.root / "home"),
        )
        return env

    def start(self) -> None:
        r = self.root
        log = open(r / "daemon.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                str(daemon_bin()),
                "--socket",
                self.socket,
                "--state-dir",
                self.state,
                "--consent-file",
                self.consent_file,
                "--system-consent-file",
                self.system_consent_file,
                "--machine-id-file",
                str(r / "machine-id"),
                "--catalog-dir",
                str(r / "catalog"),
                "--upload-interval",
                "1h",
            ],  # fmt: skip
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=self.env(),
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if raw_request(self.socket, b'{"v":2,"status":{}}\n', 1.0)[0] == "status":
                    return
            except (OSError, ValueError):
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(
            f"telemetryd did not start: {(r / 'daemon.log').read_text(errors='replace')}"
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def status(self) -> Dict[str, Any]:
        name, body = raw_request(self.socket, b'{"v":2,"status":{}}\n')
        assert name == "status", body
        assert isinstance(body, dict)
        return body


@pytest.fixture
def tmp_root() -> Iterator[Path]:
    # Short: a Unix socket path has at most 107 bytes.
    d = Path(tempfile.mkdtemp(prefix="tdpy-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def sdk_env(tmp_root: Path, monkeypatch: pytest.MonkeyPatch) -> Daemon:
    """The SDK's environment pointed at tmp_root (no daemon started)."""
    d = Daemon(tmp_root)
    for k in list(os.environ):
        if k.startswith("TELEMETRY_") or k in ("DO_NOT_TRACK",):
            monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("TELEMETRY_SOCKET", d.socket)
    monkeypatch.setenv("TELEMETRY_STATE_DIR", d.state)
    monkeypatch.setenv("TELEMETRY_CONSENT_FILE", d.consent_file)
    monkeypatch.setenv("TELEMETRY_SYSTEM_CONSENT_FILE", d.system_consent_file)
    monkeypatch.setenv("TELEMETRY_AUTOSTART", "0")
    return d


@pytest.fixture
def daemon(sdk_env: Daemon) -> Iterator[Daemon]:
    """A running daemon, with the SDK's environment pointed at it."""
    if not daemon_bin().exists():
        pytest.fail(
            f"no daemon binary at {daemon_bin()}: build it (cargo build --workspace --bins) or set TELEMETRYD_BIN"
        )
    sdk_env.start()
    try:
        yield sdk_env
    finally:
        sdk_env.stop()
