"""Events dropped because the spool is full are noted in the spool's drop
file (``spool_drops_file`` in ``proto/src/paths.rs``), which the daemon
counts (status: ``counters.spool_full_drops``)."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from conftest import Daemon, daemon_bin
from telemetryd_client import Client, _paths, _spool, socket_hash, spool_dir, spool_drops_file

EVENT_LINE = b'{"v":2,"emit":{"events":[],"ack":false}}\n'


def fill_spool(d: Path) -> None:
    """Put MAX_SPOOL_FILES entries in ``d``, so that it is full."""
    d.mkdir(parents=True, exist_ok=True)
    for i in range(_paths.MAX_SPOOL_FILES):
        (d / f"{i:016x}.json").write_text("")


@pytest.mark.parametrize(
    ("spool", "want"),
    [
        ("/st/spool/events-0123456789abcdef.d", "/st/spool/events-0123456789abcdef.drops"),
        ("/st/spool/events-0123456789abcdef.spool", "/st/spool/events-0123456789abcdef.drops"),
        ("/st/spool/plain", "/st/spool/plain.drops"),
        ("/st/a.b/.hidden", "/st/a.b/.hidden.drops"),
        ("rel.d", "rel.drops"),
    ],
)
def test_the_drop_file_is_the_spool_with_the_extension_drops(spool: str, want: str) -> None:
    assert spool_drops_file(spool) == want


def test_the_drop_file_is_beside_the_spool_dir() -> None:
    assert _paths.MAX_DROPS_BYTES == 65536
    got = spool_drops_file(spool_dir("/st", "/s.sock"))
    assert got == f"/st/spool/events-{socket_hash('/s.sock'):016x}.drops"


def test_a_full_spool_notes_each_drop_until_max_drops_bytes(tmp_path: Path) -> None:
    d = tmp_path / "spool" / "events-0123456789abcdef.d"
    fill_spool(d)
    drops = Path(spool_drops_file(str(d)))
    assert drops == d.parent / "events-0123456789abcdef.drops"

    for product in ("cfdev", "other"):
        with pytest.raises(_spool.SpoolFull):
            _spool.write(str(d), "x", EVENT_LINE, product)
    assert drops.read_bytes() == b"cfdev\nother\n"
    assert stat.S_IMODE(drops.stat().st_mode) == 0o600
    assert len(list(d.iterdir())) == _paths.MAX_SPOOL_FILES

    # Just under the limit: one more line, even if it crosses it.
    under = b"x" * (_paths.MAX_DROPS_BYTES - 2) + b"\n"
    drops.write_bytes(under)
    with pytest.raises(_spool.SpoolFull):
        _spool.write(str(d), "x", EVENT_LINE, "cfdev")
    assert drops.read_bytes() == under + b"cfdev\n"

    # At or past it: nothing more, and still a drop.
    for size in (_paths.MAX_DROPS_BYTES, _paths.MAX_DROPS_BYTES + 5):
        drops.write_bytes(b"y" * size)
        with pytest.raises(_spool.SpoolFull):
            _spool.write(str(d), "x", EVENT_LINE, "cfdev")
        assert drops.stat().st_size == size, f"{size} bytes: appended to"

    # The drop file cannot be written (a directory in its place): the event
    # is dropped all the same, and nothing else is raised.
    drops.unlink()
    drops.mkdir()
    with pytest.raises(_spool.SpoolFull):
        _spool.write(str(d), "x", EVENT_LINE, "cfdev")


def test_the_daemon_counts_the_drops_when_it_takes_in_the_spool(sdk_env: Daemon) -> None:
    if not daemon_bin().exists():
        pytest.fail(
            f"no daemon binary at {daemon_bin()}: build it (cargo build --workspace --bins) or set TELEMETRYD_BIN"
        )
    c = Client(product="cfdev", build="1.2.0", timeout=0.1)
    assert c.set_consent("on").status == "recorded"  # no daemon: file only
    d = Path(spool_dir(sdk_env.state, sdk_env.socket))
    fill_spool(d)
    drops = Path(sdk_env.state) / "spool" / f"events-{socket_hash(sdk_env.socket):016x}.drops"
    assert spool_drops_file(str(d)) == str(drops)

    t0 = time.monotonic()
    out = c.emit("stop")
    assert out.status == "dropped", out
    out = c.emit_no_wait("stop")
    assert out.status == "dropped", out
    assert time.monotonic() - t0 < 0.5
    assert drops.read_bytes() == b"cfdev\ncfdev\n"
    assert stat.S_IMODE(drops.stat().st_mode) == 0o600

    sdk_env.start()
    try:
        deadline = time.monotonic() + 15
        while sdk_env.status()["counters"]["spool_full_drops"] != [["cfdev", 2]]:
            assert time.monotonic() < deadline, sdk_env.status()["counters"]
            time.sleep(0.01)
        deadline = time.monotonic() + 5
        while drops.exists():
            assert time.monotonic() < deadline, "the drop file was not removed"
            time.sleep(0.01)
    finally:
        sdk_env.stop()


def fake_daemon(sdk_env: Daemon, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Autostart on, running a stand-in that writes its environment to the
    file returned (whole, once it exists)."""
    marker = sdk_env.root / "started"
    wrapper = sdk_env.root / "telemetryd-wrapper"
    wrapper.write_text(f"#!/bin/sh\nenv > {marker}.tmp && mv {marker}.tmp {marker}\n")
    wrapper.chmod(0o755)
    monkeypatch.delenv("TELEMETRY_AUTOSTART")
    monkeypatch.setenv("TELEMETRY_DAEMON", str(wrapper))
    return marker


def wait_started(marker: Path) -> None:
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline, "the daemon was not started"
        time.sleep(0.01)


def test_a_full_spool_still_starts_the_daemon(
    sdk_env: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event is dropped, but the daemon is what empties the spool: it is
    started all the same."""
    marker = fake_daemon(sdk_env, monkeypatch)
    c = Client("cfdev", "1.2.0", timeout=1.0)
    c.set_consent("on")
    fill_spool(Path(spool_dir(sdk_env.state, sdk_env.socket)))
    out = c.emit("stop")
    assert out.status == "dropped", out
    wait_started(marker)


def test_the_daemon_is_given_the_paths_this_client_used(
    sdk_env: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state dir given as an option (not in the environment) is where the
    event is spooled, so the daemon started must be told it."""
    marker = fake_daemon(sdk_env, monkeypatch)
    state = str(sdk_env.root / "other-state")
    c = Client("cfdev", "1.2.0", timeout=1.0, state_dir=state)
    c.set_consent("on")
    assert c.emit("stop").status == "spooled"
    wait_started(marker)
    env = marker.read_text().splitlines()
    assert f"TELEMETRY_STATE_DIR={state}" in env
    assert f"TELEMETRY_CONSENT_FILE={sdk_env.consent_file}" in env
