"""Per-event cost of the Python SDK against a real telemetryd (not a test).

Starts a daemon in a temp dir (``TELEMETRYD_BIN``, else
``<repo>/target/debug/telemetryd``; its default sync=full), opts ``cfdev``
in, then times N acknowledged emits and N no-wait emits, each a whole
``Client.emit`` call (consent check, connect, write, and for acked the
commit and reply). Prints one JSON line:

    {"client":"python","acked_p50_us":..,"acked_p99_us":..,"nowait_p50_us":..}

Run from sdk/python: ``python3 bench.py [N]`` (default 2000).
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
from typing import List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "src"))

from telemetryd_client import Client  # noqa: E402


def percentile(samples: List[float], p: float) -> int:
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(len(s) * p))] * 1e6)


def wait_for_socket(path: str, proc: subprocess.Popen, log: Path) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1)
                s.connect(path)
                s.sendall(b'{"v":2,"status":{}}\n')
                if s.recv(65536).startswith(b'{"v":2,"status"'):
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    sys.exit(f"telemetryd did not start: {log.read_text(errors='replace')}")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    binary = os.environ.get("TELEMETRYD_BIN") or str(HERE.parent.parent / "target/debug/telemetryd")
    root = Path(tempfile.mkdtemp(prefix="tdbench-"))
    proc = None
    try:
        (root / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
        for d in ("catalog", "empty", "home"):
            (root / d).mkdir()
        sock, state = str(root / "s.sock"), str(root / "state")
        consent, system = str(root / "consent"), str(root / "system-consent")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
        env.pop("DO_NOT_TRACK", None)
        env.update(
            TELEMETRY_AUTOSTART="0", XDG_DATA_DIRS=str(root / "empty"), HOME=str(root / "home")
        )
        log = root / "daemon.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [
                    binary,
                    "--socket",
                    sock,
                    "--state-dir",
                    state,
                    "--consent-file",
                    consent,
                    "--system-consent-file",
                    system,
                    "--machine-id-file",
                    str(root / "machine-id"),
                    "--catalog-dir",
                    str(root / "catalog"),
                    "--upload-interval",
                    "1h",
                ],  # fmt: skip
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
            )
        wait_for_socket(sock, proc, log)
        os.environ.pop("DO_NOT_TRACK", None)
        os.environ.pop("TELEMETRY_OPTOUT", None)
        os.environ["TELEMETRY_AUTOSTART"] = "0"
        client = Client(
            "cfdev",
            "1.2.0",
            timeout=5.0,
            socket=sock,
            state_dir=state,
            consent_file=consent,
            system_consent_file=system,
        )
        change = client.set_consent("on")
        if not change.daemon_notified:
            sys.exit(f"could not opt in: {change}")
        acked: List[float] = []
        nowait: List[float] = []
        for emit, samples, want in (
            (client.emit, acked, "acknowledged"),
            (client.emit_no_wait, nowait, "queued"),
        ):
            for i in range(n + n // 10):
                t0 = time.perf_counter()
                out = emit("app_created", {"buildpack": "go"})
                took = time.perf_counter() - t0
                if out.status != want:
                    sys.exit(f"emit: {out}")
                if i >= n // 10:  # the first tenth warms up
                    samples.append(took)
        print(
            json.dumps(
                {
                    "client": "python",
                    "acked_p50_us": percentile(acked, 0.50),
                    "acked_p99_us": percentile(acked, 0.99),
                    "nowait_p50_us": percentile(nowait, 0.50),
                    "nowait_p99_us": percentile(nowait, 0.99),
                    "events": n,
                    "python": sys.version.split()[0],
                },
                separators=(",", ":"),
            )
        )
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
