"""Against the real telemetryd: emit, no-wait, refusals, spooling, consent."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

from conftest import Daemon, daemon_bin
from telemetryd_client import Client, ConsentFile, _transport


def require_daemon_bin() -> None:
    """Fail, as the ``daemon`` fixture does, rather than skip: a missing
    binary is a broken setup, and a skipped test proves nothing."""
    if not daemon_bin().exists():
        pytest.fail(
            f"no daemon binary at {daemon_bin()}: build it (cargo build --workspace --bins) or set TELEMETRYD_BIN"
        )


def client(**kw: Any) -> Client:
    kw.setdefault("timeout", 2.0)  # generous: CI machines stall
    return Client(product="cfdev", build="1.2.0", **kw)


def wait_for(what: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def spool_files(d: Daemon) -> list:
    spool = Path(d.state) / "spool"
    return sorted(spool.glob("events-*.d/*")) if spool.exists() else []


def pending(d: Daemon) -> int:
    return int(d.status()["pending_events"])


def test_consent_off_does_nothing(daemon: Daemon) -> None:
    c = client()
    assert c.consent().mode == "off" and c.consent().layer == "default"
    t0 = time.monotonic()
    for emit in (c.emit, c.emit_no_wait):
        out = emit("start_begin")
        assert out.status == "off" and out.layer == "default", out
    assert time.monotonic() - t0 < 0.05
    status = daemon.status()
    assert status["pending_events"] == 0
    assert status["refusals"] == [], "the daemon was contacted"
    assert not (Path(daemon.state) / "spool").exists()
    assert not Path(daemon.consent_file).exists()


def test_environment_opt_out_wins(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    c = client()
    assert c.set_consent("on").status == "recorded"
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    out = c.emit("start_begin")
    assert (out.status, out.layer) == ("off", "environment")
    assert pending(daemon) == 0


def test_set_consent_on_then_emit_is_acknowledged(daemon: Daemon) -> None:
    c = client()
    change = c.set_consent("on")
    assert change.status == "recorded", change
    assert change.daemon_notified, change
    assert change.effective is not None and change.effective.mode == "on"
    text = Path(daemon.consent_file).read_text()
    assert text.startswith("# telemetry consent")
    assert text.splitlines()[1].startswith("cfdev on 20")
    assert stat.S_IMODE(os.stat(daemon.consent_file).st_mode) == 0o600
    assert c.consent().mode == "on" and c.consent().layer == "user_file"

    out = c.emit("app_created", {"buildpack": "go"})
    assert out.status == "acknowledged", out
    assert (out.accepted, out.duplicates) == (1, 0)
    out = c.emit("start_end", {"duration_s": 12, "success": True})
    assert out.status == "acknowledged", out
    assert pending(daemon) == 2
    ctl = Path(daemon_bin()).with_name("telemetryctl")
    if ctl.exists():
        shown = subprocess.run(
            [str(ctl), "--socket", daemon.socket, "show"],
            capture_output=True,
            text=True,
            env=daemon.env(),
            timeout=10,
        )
        assert '"buildpack":"go"' in shown.stdout.replace(" ", ""), shown


def test_no_wait_reaches_the_daemon(daemon: Daemon) -> None:
    c = client()
    c.set_consent("on")
    for _ in range(3):
        out = c.emit_no_wait("stop")
        assert out.status == "queued", out
    wait_for(lambda: pending(daemon) == 3)


def test_refused_not_in_catalogue_is_not_spooled(daemon: Daemon) -> None:
    c = client()
    c.set_consent("on")
    out = c.emit("no_such_event")
    assert (out.status, out.code) == ("refused", "not_in_catalogue"), out
    out = c.emit("app_created", {"buildpack": "cobol"})
    assert (out.status, out.code) == ("refused", "not_in_catalogue"), out
    assert spool_files(daemon) == []
    assert pending(daemon) == 0


def test_local_checks_report_host_mistakes(daemon: Daemon) -> None:
    c = client()
    c.set_consent("on")
    for event, data in [
        ("Bad-Name", None),
        ("stop", {"Key": 1}),
        ("stop", {"k": 1.5}),
        ("stop", {"k": None}),
        ("stop", {"k": 2**63}),
        ("stop", {"k": "x" * 257}),
        ("stop", {"k": "a\nb"}),
        ("stop", {f"k{i}": i for i in range(33)}),
        ("stop", ["not", "a", "map"]),
    ]:
        out = c.emit(event, data)  # type: ignore[arg-type]
        assert (out.status, out.code) == ("refused", "invalid"), (event, data, out)
    out = Client("cfdev", build="/home/alice/bin", timeout=2).emit("stop")
    assert (out.status, out.code) == ("refused", "invalid") and "build" in out.detail
    assert spool_files(daemon) == [] and pending(daemon) == 0


def test_status(daemon: Daemon) -> None:
    s = client().status()
    assert "error" not in s, s
    assert s["pending_events"] == 0
    assert isinstance(s["daemon_version"], str)
    assert s["consent_file"] == daemon.consent_file


def test_set_consent_off_notifies_the_daemon(daemon: Daemon) -> None:
    c = client()
    c.set_consent("on")
    assert c.emit("stop").status == "acknowledged"
    change = c.set_consent("off")
    assert change.status == "recorded" and change.daemon_notified, change
    line = Path(daemon.consent_file).read_text().splitlines()[1]
    product, mode, since, off = line.split()[:4]
    assert (product, mode) == ("cfdev", "off") and off == "off=" + since
    cfdev = [p for p in daemon.status()["consent"] if p["product"] == "cfdev"]
    assert cfdev and cfdev[0]["mode"] == "off", cfdev
    # Turning on again keeps the last off time.
    c.set_consent("local")
    line = Path(daemon.consent_file).read_text().splitlines()[1]
    assert line.split()[1] == "local" and "off=" + since in line


def test_daemon_down_spools_and_a_daemon_takes_it_in(sdk_env: Daemon) -> None:
    require_daemon_bin()
    c = client()
    assert c.set_consent("on").status == "recorded"  # no daemon: file only
    t0 = time.monotonic()
    out = c.emit("app_created", {"buildpack": "go"})
    assert time.monotonic() - t0 < 0.5
    assert out.status == "spooled", out
    assert out.spool_file is not None and out.event_id is not None
    spool = Path(out.spool_file)
    from telemetryd_client import spool_dir

    assert str(spool.parent) == spool_dir(sdk_env.state, sdk_env.socket)
    assert spool.name == out.event_id + ".json"
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600
    assert stat.S_IMODE(spool.parent.stat().st_mode) == 0o700
    line = spool.read_bytes()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    msg = json.loads(line)
    assert msg["v"] == 2 and msg["emit"]["ack"] is False
    (ev,) = msg["emit"]["events"]
    assert ev["id"] == out.event_id and ev["data"] == {"buildpack": "go"}
    assert ev["product"] == "cfdev" and ev["build"] == "1.2.0"
    assert out2_spooled(c)
    assert len(spool_files(sdk_env)) == 2

    sdk_env.start()
    try:
        wait_for(lambda: pending(sdk_env) == 2)
        wait_for(lambda: spool_files(sdk_env) == [])
    finally:
        sdk_env.stop()


def out2_spooled(c: Client) -> bool:
    return c.emit_no_wait("stop").status == "spooled"


def test_full_spool_drops(sdk_env: Daemon) -> None:
    c = client()
    c.set_consent("on")
    from telemetryd_client import spool_dir

    d = Path(spool_dir(sdk_env.state, sdk_env.socket))
    d.mkdir(parents=True)
    for i in range(1000):
        (d / f"x{i}.json").write_text("")
    out = c.emit("stop")
    assert out.status == "dropped", out
    assert len(list(d.iterdir())) == 1000


@pytest.fixture
def silent_server(sdk_env: Daemon) -> Iterator[Daemon]:
    """A socket that accepts and reads but never answers."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sdk_env.socket)
    srv.listen(16)
    held = []
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                held.append(conn)
            except OSError:
                pass

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        yield sdk_env
    finally:
        stop.set()
        th.join()
        for conn in held:
            conn.close()
        srv.close()


def test_budget_is_kept_against_a_silent_server(silent_server: Daemon) -> None:
    c = Client("cfdev", "1.2.0", timeout=0.1)
    assert c.set_consent("on").status == "recorded"
    for _ in range(3):
        t0 = time.monotonic()
        out = c.emit("stop")
        took = time.monotonic() - t0
        assert out.status == "spooled", out
        assert took < 0.1 + 0.075, took
    t0 = time.monotonic()
    s = c.status()
    assert time.monotonic() - t0 < 0.15
    assert s["error"]["code"] == "timed_out"
    t0 = time.monotonic()
    change = c.set_consent("off")
    assert time.monotonic() - t0 < 0.3
    assert change.status == "recorded" and not change.daemon_notified
    # A daemon runs here (it just did not answer): not told it will start.
    assert "did not confirm it" in change.detail, change.detail
    assert "when it starts" not in change.detail, change.detail
    assert len(spool_files(silent_server)) == 3


def test_set_consent_with_no_daemon_says_the_clis_read_the_file(sdk_env: Daemon) -> None:
    change = Client("cfdev", "1.2.0", timeout=0.1).set_consent("on")
    assert change.status == "recorded" and not change.daemon_notified
    assert change.detail.startswith("no telemetryd is running"), change.detail


def test_emit_data_round_trips(daemon: Daemon) -> None:
    c = client()
    c.set_consent("on")
    data: Dict[str, Any] = {"duration_s": 86400, "success": False}
    assert c.emit("start_end", data).status == "acknowledged"


def test_autostart_when_nothing_serves(sdk_env: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    require_daemon_bin()
    r = sdk_env.root
    pid_file = r / "daemon.pid"
    wrapper = r / "telemetryd-wrapper"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"echo $$ > {pid_file}\n"
        f"export HOME={r / 'home'} XDG_DATA_DIRS={r / 'empty'}\n"
        "unset DO_NOT_TRACK TELEMETRY_OPTOUT\n"
        f'exec {daemon_bin()} "$@" --state-dir {sdk_env.state} --consent-file {sdk_env.consent_file}'
        f" --system-consent-file {sdk_env.system_consent_file} --machine-id-file {r / 'machine-id'}"
        f" --catalog-dir {r / 'catalog'} --upload-interval 1h\n"
    )
    wrapper.chmod(0o755)
    c = client()
    c.set_consent("on")
    monkeypatch.delenv("TELEMETRY_AUTOSTART")
    monkeypatch.setenv("TELEMETRY_DAEMON", str(wrapper))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak")
    try:
        out = c.emit("stop")
        assert out.status == "spooled", out
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
        pid = int(pid_file.read_text())
        env = Path(f"/proc/{pid}/environ")
        if env.exists():
            wait_for(lambda: b"must-not-leak" not in env.read_bytes())
        wait_for(lambda: Path(sdk_env.socket).exists())
        wait_for(lambda: "error" not in c.status() and pending(sdk_env) == 1)
        wait_for(lambda: spool_files(sdk_env) == [])
        # Rate-limited: a second miss within 10 s starts nothing more (the
        # stamp is what says so; a miss against another socket would try).
        stamp = Path(sdk_env.state) / "autostart.stamp"
        assert stamp.exists()
        before = stamp.read_text()
        from telemetryd_client import _autostart

        nobody = str(sdk_env.root / "nobody.sock")
        assert _autostart.start(nobody, sdk_env.state, dict(os.environ)) == "recently"
        assert stamp.read_text() == before, "no second start within 10 s"
        log = Path(sdk_env.state) / "telemetryd.log"
        assert log.exists() and stat.S_IMODE(log.stat().st_mode) == 0o600
    finally:
        if pid_file.exists() and pid_file.read_text().strip():
            pid = int(pid_file.read_text())
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
            wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid))


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


def test_autostart_is_rate_limited_and_can_be_disabled(tmp_root: Path) -> None:
    from telemetryd_client import _autostart

    env = {"TELEMETRY_DAEMON": "/bin/true", "PATH": "/usr/bin:/bin"}
    state = str(tmp_root / "st")
    assert _autostart.start(str(tmp_root / "s.sock"), state, env) == "spawned"
    assert _autostart.start(str(tmp_root / "s.sock"), state, env) == "recently"
    for off in ("0", "false", "NO", " off "):
        assert _autostart.start("s", state, dict(env, TELEMETRY_AUTOSTART=off)) == "disabled"
    assert _autostart.start("s", state, {"PATH": str(tmp_root)}) == "not_found"
    assert _autostart.scrubbed("AWS_PROFILE") and _autostart.scrubbed("GITHUB_TOKEN")
    for name in ("GH_PAT", "npm_config__authToken", "DATABASE_URL"):
        assert _autostart.scrubbed(name), name
    assert not _autostart.scrubbed("TELEMETRY_SECRET") and not _autostart.scrubbed("HOME")


def test_an_unreadable_consent_file_is_kept_aside_and_the_decision_recorded(
    sdk_env: Daemon,
) -> None:
    consent = Path(sdk_env.consent_file)
    # Each: the old bytes (not UTF-8, or over 1 MiB: the other product's line
    # must not be lost), and what ``other`` reads as after (as the Rust
    # writer's test): what can still be read is kept, a line with a bad byte
    # is not, nor anything past the first MiB.
    for old, other in [
        (b"other on 2026-12-01T00:00:00Z\n\xff\nbr\xffken on\n", "on"),
        (b"#" * ((1 << 20) + 1), None),
    ]:
        consent.write_bytes(old)
        change = Client(product="cfdev", build="1.2.0", timeout=0.1).set_consent("off")
        assert change.status == "recorded", change
        kept = [p for p in consent.parent.iterdir() if p.name.startswith("consent.unreadable-")]
        assert len(kept) == 1, kept
        assert kept[0].read_bytes() == old
        assert str(kept[0]) in change.detail
        text = consent.read_text()
        assert "\ncfdev off " in text
        parsed = ConsentFile.parse(text)
        cfdev, got = parsed.get("cfdev"), parsed.get("other")
        assert cfdev is not None and cfdev.mode == "off", text
        assert (got and got.mode) == other, text
        assert "\ufffd" not in text and "ken" not in text, text
        kept[0].unlink()
    # A directory in its place is refused and left where it is (moving it
    # aside moved /tmp, as root, for TELEMETRY_CONSENT_FILE=/tmp).
    consent.unlink()
    consent.mkdir(mode=0o700)
    change = Client(product="cfdev", build="1.2.0", timeout=0.1).set_consent("on")
    assert change.status == "failed" and "is a directory" in change.detail, change
    assert consent.is_dir()


def test_only_a_regular_file_is_written(
    sdk_env: Daemon, tmp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FIFO, device, socket, directory or link in the consent file's place
    is refused and left as it was (``/dev/null`` must never be replaced; a
    link is not followed, whoever planted it)."""
    fifo = tmp_root / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_root / "sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    real = tmp_root / "real"
    real.write_text("other on\n")
    try:
        folder = tmp_root / "projects"
        folder.mkdir()
        link = tmp_root / "link"
        link.symlink_to(real)
        for path, what in (
            (str(fifo), "a FIFO"),
            ("/dev/null", "a device"),
            (str(sock_path), "a socket"),
            (str(folder), "a directory"),
            (str(link), "a link (name the file itself)"),
        ):
            before = os.lstat(path)
            monkeypatch.setenv("TELEMETRY_CONSENT_FILE", path)
            change = Client(product="cfdev", build="1", timeout=0.1).set_consent("on")
            assert change.status == "failed", change
            assert what in change.detail and "nothing was written" in change.detail, change
            after = os.lstat(path)
            assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode), path
    finally:
        listener.close()
    assert real.read_text() == "other on\n"


def test_one_client_opens_at_most_16_connections_at_once(sdk_env: Daemon) -> None:
    """40 emits from as many threads against a server that takes 50 ms per
    answer: at most 16 connections are open at any moment (the others wait
    their turn within their budget), and every one is acknowledged. Past
    the daemon's connection limit, the surplus would be refused busy."""
    Path(sdk_env.consent_file).parent.mkdir(parents=True, exist_ok=True)
    Path(sdk_env.consent_file).write_text("cfdev on\n")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sdk_env.socket)
    srv.listen(64)
    lock = threading.Lock()
    counts = {"open": 0, "peak": 0}

    def handle(conn: socket.socket) -> None:
        with lock:
            counts["open"] += 1
            counts["peak"] = max(counts["peak"], counts["open"])
        conn.recv(65536)
        time.sleep(0.05)
        # Counted as closed before the answer: the client lets go of its
        # slot only after reading it, so no next connection is counted
        # beside this one while it closes.
        with lock:
            counts["open"] -= 1
        conn.sendall(b'{"v":2,"ack":{"accepted":1,"duplicates":0}}\n')
        conn.recv(1)  # until the client closes
        conn.close()

    def serve() -> None:
        srv.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.settimeout(None)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    stop = threading.Event()
    server = threading.Thread(target=serve, daemon=True)
    server.start()
    c = Client(product="cfdev", build="1.2.0", timeout=10.0)
    outs: List[str] = []
    try:
        threads = [
            threading.Thread(target=lambda: outs.append(c.emit("stop").status)) for _ in range(40)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        stop.set()
        server.join()
        srv.close()
    assert outs == ["acknowledged"] * 40, outs
    assert 1 < counts["peak"] <= 16, counts


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_gets_connection_slots_of_its_own() -> None:
    """Every slot taken in the parent (as by 16 threads mid-emit) when it
    forks: those threads are not in the child and never give theirs back,
    so the child must not wait for them (each of its emits would wait out
    its budget and spool)."""
    slots = _transport.Slots()
    for _ in range(_transport.MAX_IN_FLIGHT):
        slots.take("/nowhere", time.monotonic() + 1.0)
    pid = os.fork()
    if pid == 0:  # the child: a slot at once, and then its own 16
        try:
            for _ in range(_transport.MAX_IN_FLIGHT):
                slots.take("/nowhere", time.monotonic() + 0.5)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert (
        os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    ), "the child waited for its parent's slots"
    # The parent's are still all taken.
    with pytest.raises(
        _transport.TransportError, match="connections to telemetryd at /nowhere were busy"
    ):
        slots.take("/nowhere", time.monotonic() + 0.01)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another user")
def test_root_writes_no_other_users_file_nor_in_their_directories(
    sdk_env: Daemon, tmp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root writes only its own file, in directories only root may change,
    and never opens a lock or temp file another user put in place."""

    def set_to(path: Path) -> Any:
        monkeypatch.setenv("TELEMETRY_CONSENT_FILE", str(path))
        return Client(product="cfdev", build="1", timeout=0.1).set_consent("off")

    theirs = tmp_root / "theirs"
    theirs.write_text("secret\n")
    os.lchown(theirs, 65534, 65534)
    change = set_to(theirs)
    assert change.status == "failed" and "owned by uid 65534" in change.detail, change
    their_dir = tmp_root / "their-dir"
    their_dir.mkdir()
    os.lchown(their_dir, 65534, 65534)
    roots = tmp_root / "roots"
    roots.mkdir()
    (their_dir / "state").symlink_to(roots)
    for path in (
        their_dir / "consent",
        their_dir / "state" / "consent",
        their_dir / "new" / "consent",
    ):
        change = set_to(path)
        assert change.status == "failed" and "is owned by uid 65534" in change.detail, change
    assert list(roots.iterdir()) == []
    assert not (their_dir / "new").exists(), "nothing made in their directory"
    open_dir = tmp_root / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    change = set_to(open_dir / "consent")
    assert change.status == "failed" and "may be written by other users" in change.detail
    # A lock or temp file planted as a link is not followed.
    mine = tmp_root / "mine"
    mine.mkdir()
    nologin = tmp_root / "nologin"
    (mine / ".consent.lock").symlink_to(nologin)
    assert set_to(mine / "consent").status == "failed"
    assert not nologin.exists()
    (mine / ".consent.lock").unlink()
    tmp = mine / f".consent.{os.getpid()}.tmp"
    tmp.symlink_to(theirs)
    assert set_to(mine / "consent").status == "recorded"
    assert theirs.read_text() == "secret\n"
    assert not tmp.is_symlink()
