"""What a CLI vendor meets, alike in the three SDKs and the shim: the build
when none is given, the telemetryd shipped with the CLI, a consent file the
daemon does not read, and a product name that is not one."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from conftest import Daemon, raw_request
from telemetryd_client import Client

RULE = "use 1-64 characters from a-z, 0-9 and _, starting with a letter"


def stored_builds(d: Daemon) -> Dict[str, str]:
    """Event id to build, of what the daemon stored for cfdev."""
    name, body = raw_request(d.socket, b'{"v":2,"show":{"product":"cfdev","after_seq":0}}\n')
    assert name == "events", body
    lines = [json.loads(e["line"]) for e in body["events"]]
    return {e["id"]: e["build"] for e in lines}


def test_no_build_is_telemetry_build_else_unknown_as_the_shim(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit build, else a non-empty TELEMETRY_BUILD, else "unknown"
    (TELEMETRY_BUILD was ignored)."""
    assert Client("cfdev", timeout=2.0).set_consent("on").status == "recorded"
    want: Dict[str, str] = {}
    cases: List[tuple] = [
        (None, None, "unknown"),
        (None, "", "unknown"),
        ("", "2.0.1", "2.0.1"),
        (None, "2.0.1", "2.0.1"),
        ("1.2.0", "2.0.1", "1.2.0"),
    ]
    for build, var, expected in cases:
        if var is None:
            monkeypatch.delenv("TELEMETRY_BUILD", raising=False)
        else:
            monkeypatch.setenv("TELEMETRY_BUILD", var)
        c = Client("cfdev", build, timeout=2.0)
        assert c.build == expected, (build, var)
        out = c.emit("stop")
        assert out.status == "acknowledged", (build, var, out)
        assert out.event_id is not None
        want[out.event_id] = expected
    stored = stored_builds(daemon)
    assert {k: stored.get(k) for k in want} == want
    # An invalid build is refused as before; one from the variable says so.
    out = Client("cfdev", "/home/alice", timeout=2.0).emit("stop")
    assert (out.status, out.code) == ("refused", "invalid")
    assert out.detail.startswith('build "/home/alice" is not valid'), out
    monkeypatch.setenv("TELEMETRY_BUILD", "1.0 beta")
    out = Client("cfdev", timeout=2.0).emit("stop")
    assert (out.status, out.code) == ("refused", "invalid")
    assert out.detail.startswith('build "1.0 beta" is not valid'), out
    assert out.detail.endswith("(from TELEMETRY_BUILD)"), out


def test_set_consent_to_another_file_than_the_daemons_is_not_applied(daemon: Daemon) -> None:
    """Written, as telemetryctl does, but reported as not applied, naming
    both files (it was "recorded" with a note while the daemon kept on)."""
    assert Client("cfdev", timeout=2.0).set_consent("on").daemon_notified
    other = str(daemon.root / "elsewhere" / "consent")
    change = Client("cfdev", timeout=2.0, consent_file=other).set_consent("off")
    assert change.status == "not_applied", change
    assert not change.daemon_notified
    assert (change.file, change.daemon_file) == (other, daemon.consent_file)
    assert change.detail == (
        f"telemetryd reads consent from {daemon.consent_file}, but this program wrote {other}; "
        f"set TELEMETRY_CONSENT_FILE={daemon.consent_file} (for this program, telemetryctl "
        "and telemetry-emit) so they agree, then try again"
    )
    assert "\ncfdev off " in Path(other).read_text()
    cfdev = [p for p in daemon.status()["consent"] if p["product"] == "cfdev"]
    assert cfdev[0]["mode"] == "on", cfdev
    # The daemon's own file, spelt with a "." and a double slash: applied.
    same = Client("cfdev", timeout=2.0, consent_file=f"{daemon.root}/.//consent")
    change = same.set_consent("off")
    assert (change.status, change.daemon_notified) == ("recorded", True), change
    # Reached through a linked directory, it is the same file too.
    link = daemon.root / "linked"
    link.symlink_to(daemon.root)
    change = Client("cfdev", timeout=2.0, consent_file=str(link / "consent")).set_consent("local")
    assert (change.status, change.daemon_notified) == ("recorded", True), change


@pytest.mark.parametrize("product", ["ACME", "", "my-cli"])
def test_an_invalid_product_is_refused_not_off(sdk_env: Daemon, product: str) -> None:
    """A typo in the product name is the host's mistake, refused with the
    rule, not "off (default)", which reads as the user's no."""
    Path(sdk_env.consent_file).write_text("cfdev on\n")
    c = Client(product, "1.0", timeout=1.0)
    want = f"product {json.dumps(product)} is not a valid name: {RULE}"
    for out in (c.emit("stop"), c.emit_no_wait("stop")):
        assert (out.status, out.code, out.detail) == ("refused", "invalid", want)
    change = c.set_consent("on")
    assert (change.status, change.code, change.detail) == ("refused", "invalid", want)
    prompted = c.prompt()
    assert (prompted.status, prompted.code, prompted.detail) == ("refused", "invalid", want)
    assert sorted(p.name for p in sdk_env.root.iterdir()) == [
        "catalog",
        "consent",
        "empty",
        "home",
        "machine-id",
    ]


def test_an_invalid_mode_is_refused_as_in_node(sdk_env: Daemon) -> None:
    """As a bad argument to emit is, and as the Node SDK says it (it was
    "failed", which reads as the SDK's own trouble)."""
    change = Client("cfdev", "1.0").set_consent("bogus")
    assert (change.status, change.code) == ("refused", "invalid"), change
    assert change.detail == 'mode "bogus" is not on, off or local'
    assert not Path(sdk_env.consent_file).exists()


def test_the_daemon_option_comes_after_telemetry_daemon_and_before_path(
    sdk_env: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The telemetryd a vendor ships with the CLI, named by ``daemon=``, is
    what autostart runs (where the Go SDK and the Rust clients look beside
    the running executable, which is the interpreter here)."""
    root = sdk_env.root
    marker = root / "started"

    def fake(name: str) -> str:
        path = root / name / "telemetryd"
        path.parent.mkdir()
        # Shell builtins only: PATH holds just the fake "onpath".
        path.write_text(f'#!/bin/sh\necho {name} "$@" > {marker}\n')
        path.chmod(0o755)
        return str(path)

    shipped, named = fake("shipped"), fake("named")
    fake("onpath")
    monkeypatch.setenv("PATH", str(root / "onpath"))
    monkeypatch.delenv("TELEMETRY_AUTOSTART")
    Path(sdk_env.consent_file).write_text("cfdev on\n")

    def started(daemon: Optional[str]) -> str:
        shutil.rmtree(sdk_env.state, ignore_errors=True)  # no rate limit from the last one
        if marker.exists():
            marker.unlink()
        assert Client("cfdev", "1.0", timeout=1.0, daemon=daemon).emit("stop").status == "spooled"
        deadline = time.monotonic() + 10
        while not (marker.exists() and marker.read_text().endswith("\n")):
            assert time.monotonic() < deadline, "no daemon started"
            time.sleep(0.01)
        return marker.read_text().strip()

    assert started(shipped) == f"shipped --autostarted --socket {sdk_env.socket}"
    monkeypatch.setenv("TELEMETRY_DAEMON", named)
    assert started(shipped).startswith("named ")
    monkeypatch.delenv("TELEMETRY_DAEMON")
    # Not an executable file: PATH, as the Rust clients treat one beside them.
    Path(shipped).chmod(0o644)
    assert started(shipped).startswith("onpath ")
    assert started(str(root / "shipped")).startswith("onpath "), "a directory"
    assert started(None).startswith("onpath ")
    # A relative path would be looked up from the working directory, where
    # a cloned repository could plant one: never used.
    Path(shipped).chmod(0o755)
    monkeypatch.chdir(root)
    assert started("shipped/telemetryd").startswith("onpath "), "a relative path"
    assert started(shipped).startswith("shipped "), "the same file, named absolutely"


def test_a_bad_string_value_says_which_fault_it_has() -> None:
    """Too long and control characters are told apart, as the daemon does."""
    from telemetryd_client._validate import check_event

    now = int(time.time() * 1_000_000)
    long = check_event("cfdev", "ran", "1.0", now, {"k": "\u00e9" * 200})
    assert long == 'data value for "k" is 400 bytes, more than the maximum of 256'
    longer = check_event("cfdev", "ran", "1.0", now, {"k": "x" * 257})
    assert longer == 'data value for "k" is more than the maximum of 256 bytes'
    ctrl = check_event("cfdev", "ran", "1.0", now, {"k": "a\nb"})
    assert ctrl == 'data value for "k" has control characters (printable text only)'
