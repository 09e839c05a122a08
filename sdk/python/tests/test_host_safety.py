"""The host comes first: nothing raises, nothing hangs, the prompt never
blocks a non-interactive host; and the prompt on a real terminal."""

from __future__ import annotations

import io
import os
import pty
import select
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, List

import pytest

import telemetryd_client as t
from conftest import SDK, Daemon
from telemetryd_client import Client

GARBAGE: List[Any] = [
    "",
    None,
    0,
    -1,
    1.5,
    float("nan"),
    b"bytes",
    "x" * 100_000,
    "\x00",
    "\ud800",
    "é",
    ["list"],
    {"a": object()},
    object(),
]


def every_call(c: Client) -> None:
    for g in GARBAGE:
        for r in (
            c.emit(g),
            c.emit("stop", g),
            c.emit_no_wait(g, g),
            c.emit("stop", {"k": g}),
            c.emit("stop", {g: 1} if isinstance(g, (str, int, bytes, float)) else {}),
        ):
            assert isinstance(r, t.Outcome)
            assert r.status in ("off", "refused", "failed", "spooled", "acknowledged", "dropped")
        assert isinstance(c.set_consent(g), t.ConsentChange)
        assert isinstance(t.parse_kv(g), (tuple, type(None)))
    assert isinstance(c.consent(), t.ConsentState)
    assert isinstance(c.status(), dict)
    assert isinstance(c.prompt(), t.PromptResult)
    assert isinstance(c.emit("stop", {f"k{i}": "v" * 10_000 for i in range(1000)}), t.Outcome)


def test_garbage_never_raises(sdk_env: Daemon) -> None:
    for product in [*GARBAGE, "cfdev"]:
        for build in (None, "", "1.2.0", "../../x"):
            every_call(Client(product, build, timeout=0.05))  # type: ignore[arg-type]
    for timeout in (None, -1, 0, "soon", float("inf"), float("nan")):
        c = Client("cfdev", "1", timeout=timeout)  # type: ignore[arg-type]
        assert 0 < c.timeout <= 24 * 3600
        assert c.emit("stop").status == "off"
    # The cap is the Rust and Node clients' own: a day.
    assert Client("cfdev", "1", timeout=1e12).timeout == 24 * 3600


def test_garbage_never_raises_with_consent_on(sdk_env: Daemon) -> None:
    assert Client("cfdev", "1.2.0").set_consent("on").status == "recorded"
    every_call(Client("cfdev", "1.2.0", timeout=0.05))


def test_bad_socket_paths(sdk_env: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    Client("cfdev", "1").set_consent("on")
    for bad in ("/nonexistent/dir/s.sock", "/" + "x" * 300, "rel\x00ative", "/dev/null", "/"):
        c = Client("cfdev", "1.2.0", timeout=0.05, socket=bad)
        t0 = time.monotonic()
        out = c.emit("stop")
        assert time.monotonic() - t0 < 0.5
        assert out.status in ("spooled", "failed"), (bad, out)
        assert "error" in c.status()
    # Unusable state dir: spooling fails, reported, not raised.
    c = Client("cfdev", "1.2.0", timeout=0.05, state_dir="/dev/null/state")
    out = c.emit("stop")
    assert out.status == "failed" and "spool" in out.detail, out


def test_unwritable_consent_file_is_reported(sdk_env: Daemon) -> None:
    c = Client("cfdev", "1", consent_file="/dev/null/consent")
    change = c.set_consent("on")
    assert change.status == "failed" and "/dev/null/consent" in change.detail


def test_unreadable_system_file_forces_off(sdk_env: Daemon) -> None:
    Client("cfdev", "1").set_consent("on")
    os.mkdir(sdk_env.system_consent_file)  # exists, cannot be read as a file
    assert Client("cfdev", "1").consent() == t.ConsentState("off", "system")
    os.rmdir(sdk_env.system_consent_file)
    Path(sdk_env.system_consent_file).write_text("* off\n")
    assert Client("cfdev", "1").emit("stop").layer == "system"


def test_prompt_not_a_terminal_returns_at_once(
    sdk_env: Daemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    t0 = time.monotonic()
    r = Client("cfdev", "1").prompt()
    assert time.monotonic() - t0 < 0.05
    assert r.status == "not_a_terminal", r
    assert not Path(sdk_env.consent_file).exists()
    assert capsys.readouterr() == ("", "")
    # Real pipes, in a child: same.
    code = "import telemetryd_client as t; print(t.Client('cfdev','1').prompt().status)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        input="y\n",
        capture_output=True,
        text=True,
        timeout=20,
        env=dict(os.environ, PYTHONPATH=str(SDK / "src")),
    )
    assert (out.stdout, out.stderr) == ("not_a_terminal\n", "")
    assert not Path(sdk_env.consent_file).exists()


def test_prompt_skips_decided_and_forced(sdk_env: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    assert Client("cfdev", "1").prompt().status == "forced_off"
    monkeypatch.delenv("DO_NOT_TRACK")
    Client("cfdev", "1").set_consent("off")
    assert Client("cfdev", "1").prompt().status == "already_decided"


def _prompt_on_a_pty(answer: bytes, text: str = "") -> tuple[str, str]:
    code = (
        "import sys, telemetryd_client as t\n"
        f"r = t.Client('cfdev', '1', timeout=1).prompt({text!r} or None)\n"
        "print(r.status, r.mode, r.change and r.change.status, file=open('/dev/tty', 'w'))\n"
    )
    pid, fd = pty.fork()
    if pid == 0:  # child: stdin, stdout, stderr are the pty
        env = dict(os.environ, PYTHONPATH=str(SDK / "src"))
        os.execve(sys.executable, [sys.executable, "-c", code], env)
    seen = b""
    sent = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        if not sent and b"[y/N] " in seen:
            os.write(fd, answer)
            sent = True
    os.waitpid(pid, 0)
    os.close(fd)
    text_out = seen.decode(errors="replace").replace("\r\n", "\n")
    return text_out, text_out.strip().splitlines()[-1]


def test_prompt_on_a_terminal_records_the_answer(sdk_env: Daemon) -> None:
    screen, last = _prompt_on_a_pty(b"Yes\n")
    assert "cfdev would like to collect anonymous usage telemetry" in screen
    assert "telemetryctl consent cfdev off" in screen
    assert "Enable anonymous telemetry for cfdev? [y/N] " in screen
    assert last == "asked on recorded"
    assert Client("cfdev", "1").consent() == t.ConsentState("on", "user_file")


def test_prompt_default_is_no(sdk_env: Daemon) -> None:
    screen, last = _prompt_on_a_pty(b"\n", text="Help us improve cfdev?")
    assert "Help us improve cfdev?" in screen and "anonymous usage" not in screen
    assert last == "asked off recorded"
    assert Client("cfdev", "1").consent() == t.ConsentState("off", "user_file")


def test_imports_and_never_raises_where_there_is_no_fcntl(sdk_env: Daemon) -> None:
    # Windows has no fcntl; the host imports the SDK unconditionally, so
    # the import must work there and every call still return a value.
    code = (
        "import sys; sys.platform = 'win32'; sys.modules['fcntl'] = None\n"
        "import telemetryd_client as t\n"
        "c = t.Client('cfdev', '1')\n"
        "change = c.set_consent('on')\n"
        "print(type(change).__name__, change.status)\n"
        "print(type(c.emit('stop')).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=20,
        env=dict(os.environ, PYTHONPATH=str(SDK / "src")),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ConsentChange failed\nOutcome\n", out.stdout
    assert not Path(sdk_env.consent_file).exists()


def test_autostart_waits_for_its_shell_only_within_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `sh` that starts the daemon normally exits at once; one that
    does not (a loaded machine, a stopped process) must not hold the host
    past its budget."""
    from telemetryd_client import _autostart

    real = subprocess.Popen
    started: List[Any] = []

    def slow_shell(args: Any, **kw: Any) -> Any:
        # A real child that outlives the budget, in the shell's place.
        child = real(["sleep", "10"], **kw)
        started.append(child)
        return child

    monkeypatch.setattr(_autostart.subprocess, "Popen", slow_shell)
    env = {"TELEMETRY_DAEMON": "/bin/true", "PATH": "/usr/bin:/bin"}
    t0 = time.monotonic()
    got = _autostart.start(str(tmp_path / "s.sock"), str(tmp_path / "st"), env, t0 + 0.2)
    took = time.monotonic() - t0
    for child in started:
        child.kill()
        child.wait()
    assert got == "spawned"
    assert took < 2.0, f"waited {took:.1f} s for the shell, past a 0.2 s budget"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_in_a_consent_files_place_does_not_hold_the_host(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no writer a FIFO reads as empty at once; with a writer that sends
    nothing, a system file counts as unreadable (off) at once."""
    for var in ("DO_NOT_TRACK", "TELEMETRY_OPTOUT"):
        monkeypatch.delenv(var, raising=False)
    user, system = str(tmp_path / "consent"), str(tmp_path / "system-consent")
    for p in (user, system):
        os.mkfifo(p)
    c = Client("cfdev", consent_file=user, system_consent_file=system)

    def consent() -> Any:
        got: List[Any] = []
        th = threading.Thread(target=lambda: got.append(c.consent()), daemon=True)
        th.start()
        th.join(10)
        assert got, "consent() still blocked on a FIFO after 10 s"
        return (got[0].mode, got[0].layer)

    assert consent() == ("off", "default")
    # A writer that never writes (read-write, so this open does not wait).
    w = os.open(system, os.O_RDWR)
    try:
        assert consent() == ("off", "system")
    finally:
        os.close(w)


def test_a_node_writers_lock_is_waited_for_unless_stale(tmp_path: Any) -> None:
    """A flock writer waits while a live Node writer holds its lock, gives
    up at its deadline, and ignores a lock left by one that died."""
    from telemetryd_client import _client

    path = str(tmp_path / "consent")
    node = tmp_path / _client.NODE_LOCK
    node.write_text("4242\n")
    with pytest.raises(OSError):
        _client._record(path, "cfdev", "off", None, time.monotonic() + 0.2)
    done: List[bool] = []

    def record() -> None:
        _client._record(path, "cfdev", "off", None, time.monotonic() + 10)
        done.append(True)

    th = threading.Thread(target=record, daemon=True)
    th.start()
    time.sleep(0.3)
    assert not done, "went ahead while a Node writer held its lock"
    node.unlink()
    th.join(10)
    assert done
    # Left by a writer that died 11 s ago: not waited for.
    node.write_text("4242\n")
    old = time.time() - 11
    os.utime(node, (old, old))
    _client._record(path, "cfdev", "on", None, time.monotonic() + 1)
    assert "cfdev on" in (tmp_path / "consent").read_text()


def _within(seconds: float, fn: Any) -> Any:
    """``fn()`` in a daemon thread: ``("ok", value)`` or ``("raised", exc)``;
    fails if it is still running after ``seconds`` (a blocking open or read
    would otherwise hold the whole test run)."""
    got: List[Any] = []

    def run() -> None:
        try:
            got.append(("ok", fn()))
        except BaseException as e:
            got.append(("raised", e))

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(seconds)
    assert got, f"still running after {seconds} s"
    return got[0]


def _nothing_in(fifo_fd: int) -> bool:
    """Whether nothing was written into a FIFO opened non-blocking."""
    try:
        return os.read(fifo_fd, 64) == b""
    except BlockingIOError:
        return True


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("name", ["telemetryd.log", "autostart.stamp"])
def test_a_fifo_in_the_state_dir_fails_autostart_at_once(tmp_path: Path, name: str) -> None:
    """A FIFO as the daemon's log or as an old stamp: refused at once, with
    no reader (the write-only open fails) or with one (not a regular file)."""
    from telemetryd_client import _autostart

    state = tmp_path / "state"
    state.mkdir()
    fifo = state / name
    os.mkfifo(fifo)
    old = time.time() - 3600
    os.utime(fifo, (old, old))
    env = {"TELEMETRY_DAEMON": "/bin/true", "PATH": "/usr/bin:/bin"}

    def start() -> Any:
        return _autostart.start(str(tmp_path / "s.sock"), str(state), env, time.monotonic() + 0.1)

    t0 = time.monotonic()
    kind, value = _within(5, start)
    assert kind == "raised" and isinstance(value, OSError), (kind, value)
    assert time.monotonic() - t0 < 1
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if name != "autostart.stamp":
            # The stamp written beside the FIFO log holds nobody off.
            (state / "autostart.stamp").write_text("")
        kind, value = _within(5, start)
        assert kind == "raised" and isinstance(value, OSError), (kind, value)
        assert _nothing_in(reader), "something was written into the FIFO"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO is left alone"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_as_a_full_spools_drop_file_drops_at_once(sdk_env: Daemon) -> None:
    from telemetryd_client import _paths, spool_dir, spool_drops_file

    assert Client("cfdev", "1").set_consent("on").status == "recorded"
    directory = spool_dir(sdk_env.state, sdk_env.socket)
    os.makedirs(directory)
    # Full of entries: directories, quicker to make than files.
    for i in range(_paths.MAX_SPOOL_FILES):
        os.mkdir(os.path.join(directory, f"{i:016x}"))
    drops = spool_drops_file(directory)
    os.mkfifo(drops)
    kind, out = _within(5, lambda: Client("cfdev", "1", timeout=0.1).emit("stop"))
    assert kind == "ok" and out.status == "dropped", out
    reader = os.open(drops, os.O_RDONLY | os.O_NONBLOCK)
    try:
        kind, out = _within(5, lambda: Client("cfdev", "1", timeout=0.1).emit("stop"))
        assert kind == "ok" and out.status == "dropped", out
        assert _nothing_in(reader), "something was written into the FIFO"
    finally:
        os.close(reader)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_as_the_consent_lock_fails_set_consent_at_once(tmp_path: Path) -> None:
    lock = tmp_path / ".consent.lock"
    os.mkfifo(lock)
    c = Client("cfdev", "1", consent_file=str(tmp_path / "consent"), autostart=False)
    kind, change = _within(5, lambda: c.set_consent("on"))
    assert kind == "ok" and change.status == "failed", change
    reader = os.open(lock, os.O_RDONLY | os.O_NONBLOCK)
    try:
        kind, change = _within(5, lambda: c.set_consent("on"))
        assert kind == "ok" and change.status == "failed", change
        assert _nothing_in(reader), "something was written into the FIFO"
    finally:
        os.close(reader)
    assert not (tmp_path / "consent").exists()


class _Hostile:
    """Whatever is asked of it raises (or, for ``repr``, is huge)."""

    def __bool__(self) -> bool:
        raise ZeroDivisionError

    def __float__(self) -> float:
        raise RuntimeError("float")

    def __repr__(self) -> str:
        raise RuntimeError("repr")


def test_the_constructor_never_raises() -> None:
    """Bad values mean the defaults; a number too large for a float is as
    large as it gets (a day), as infinity is."""
    assert Client("cfdev", "1", timeout=10**400).timeout == 24 * 3600
    assert Client("cfdev", "1", timeout=-(10**400)).timeout == 0.1
    assert Client("cfdev", "1", timeout=_Hostile()).timeout == 0.1  # type: ignore[arg-type]
    c = Client("cfdev", "1", autostart=_Hostile())  # type: ignore[arg-type]
    assert c._autostart is True
    assert repr(Client(_Hostile(), _Hostile())) == (  # type: ignore[arg-type]
        "Client(product=(a _Hostile), build=(a _Hostile), timeout=0.1)"
    )


def test_a_shell_outliving_the_budget_is_reaped_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Popen dropped while its child runs warns "subprocess N is still
    running" (printed under -W default, -X dev, pytest): the shell still
    running when the budget ends is reaped later, quietly."""
    import gc
    import warnings

    from telemetryd_client import _autostart

    real = subprocess.Popen
    pids: List[int] = []

    def slow_shell(args: Any, **kw: Any) -> Any:
        child = real(["sleep", "0.2"], **kw)
        pids.append(child.pid)
        return child

    monkeypatch.setattr(_autostart.subprocess, "Popen", slow_shell)
    env = {"TELEMETRY_DAEMON": "/bin/true", "PATH": "/usr/bin:/bin"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _autostart.start(
            str(tmp_path / "s.sock"), str(tmp_path / "st"), env, time.monotonic() + 0.02
        )
        gc.collect()
    assert got == "spawned"
    assert [str(w.message) for w in caught] == []
    # And reaped once it exits (a zombie still answers kill 0).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pids[0], 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    else:
        pytest.fail("the shell was never reaped")


def test_a_bad_value_is_described_without_its_repr(sdk_env: Daemon) -> None:
    """Messages name a bad value's type, or quote at most 80 characters of
    a str: never a repr, which may raise, be huge or slow."""
    assert Client("cfdev", "1").set_consent("on").status == "recorded"
    calls: List[str] = []

    class Loud:
        def __repr__(self) -> str:
            calls.append("repr")
            return "x" * 1_000_000

    class LoudStr(str):
        def __repr__(self) -> str:
            calls.append("repr")
            return "x"

        def __getitem__(self, i: Any) -> str:
            calls.append("getitem")
            return "x"

    c = Client("cfdev", "1")
    out = c.emit(Loud())  # type: ignore[arg-type]
    assert out.status == "refused" and "event (a Loud) is not a valid name" in out.detail, out
    out = c.emit(LoudStr("Not A Name"))
    assert out.status == "refused" and 'event "Not A Name" is not' in out.detail, out
    out = c.emit([1] * 1_000_000)  # type: ignore[arg-type]
    assert "event (a list) is not" in out.detail, out
    out = c.emit(object())  # type: ignore[arg-type]
    assert "event (an object) is not" in out.detail, out
    out = c.emit("stop", {"k": object()})  # type: ignore[dict-item]
    assert 'data value for "k" is an object: use a str' in out.detail, out
    out = c.emit("x" * 1_000_000)
    assert out.detail.startswith('event "' + "x" * 77 + '"... is not'), out
    out = c.emit("stop", {"k": "x" * 1_000_000})
    assert "is more than the maximum of 256 bytes" in out.detail, out
    out = c.emit("stop", {LoudStr("key"): 1 << 70})
    assert 'data value for "key" is out of range' in out.detail, out
    assert c.set_consent(Loud()).status == "refused"  # type: ignore[arg-type]
    assert "mode (a Loud) is not on" in c.set_consent(Loud()).detail  # type: ignore[arg-type]
    assert "product (a Loud) is not a valid name" in Client(Loud(), "1").emit("stop").detail  # type: ignore[arg-type]
    assert calls == []
