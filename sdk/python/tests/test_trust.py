"""A state directory another user made first (the default without HOME,
``/tmp/telemetry-UID/state``, left open to all): its consent file is not
believed, no event is spooled there and no decision recorded."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

import telemetryd_client as t
from conftest import Daemon
from telemetryd_client import Client
from telemetryd_client._trust import untrusted_dir

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="no owners or mode bits to check on Windows"
)

ON = "cfdev on 2026-12-01T00:00:00Z\n"


def squatted(root: Path, open_to_all: Optional[str]) -> Tuple[Path, Path]:
    """``root/telemetry-X/state`` holding a consent file with ``cfdev on``,
    with ``open_to_all`` (``telemetry-X`` or ``telemetry-X/state``; ``None``:
    none) open to every user, as another user who made it first would leave
    it. Returns the state dir and the consent file."""
    state = root / "telemetry-X" / "state"
    state.mkdir(mode=0o700, parents=True)
    consent = state / "consent"
    consent.write_text(ON)
    os.chmod(consent, 0o600)
    if open_to_all:
        os.chmod(root / open_to_all, 0o777)
    return state, consent


def client(state: Path, consent: Path) -> Client:
    return Client("cfdev", "1", state_dir=str(state), consent_file=str(consent), autostart=False)


def files_under(state: Path) -> List[str]:
    """The files under ``state`` but the consent file."""
    return sorted(str(p) for p in state.rglob("*") if not p.is_dir() and p.name != "consent")


@pytest.fixture
def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks that root skips (it has stricter ones) made as for any
    other user."""
    if os.geteuid() == 0:
        monkeypatch.setattr(os, "geteuid", lambda: 12345)


@pytest.mark.parametrize("open_to_all", ["telemetry-X", "telemetry-X/state"])
def test_a_state_dir_another_user_could_write_is_not_trusted(
    sdk_env: Daemon, tmp_root: Path, not_root: None, open_to_all: str
) -> None:
    state, consent = squatted(tmp_root, open_to_all)
    c = client(state, consent)
    st = c.consent()
    assert (st.mode, st.layer) == ("off", "default")
    assert "not believed" in st.detail
    assert f"the directory {tmp_root / open_to_all} is writable by every user" in st.detail
    off = c.emit("stop")
    assert off.status == "off" and "not believed" in off.detail, off

    # With consent from a file of the user's own, the event is not spooled
    # where the other user could read it.
    own = tmp_root / "own-consent"
    own.write_text(ON)
    mine = client(state, own)
    for r in (mine.emit("stop"), mine.emit_no_wait("stop")):
        assert r.status == "failed", r
        assert "writable by every user" in r.detail, r
    assert files_under(state) == []

    change = c.set_consent("off")
    assert change.status == "failed", change
    assert "writable by every user" in change.detail, change
    assert "TELEMETRY_STATE_DIR" in change.detail, change
    assert consent.read_text() == ON


def test_the_same_state_dir_made_by_the_user_is_trusted(
    sdk_env: Daemon, tmp_root: Path, not_root: None
) -> None:
    state, consent = squatted(tmp_root, None)
    c = client(state, consent)
    assert c.consent() == t.ConsentState("on", "user_file")
    r = c.emit("stop")
    assert r.status == "spooled", r
    assert files_under(state) == [r.spool_file]
    assert c.set_consent("off").status == "recorded"
    assert c.consent() == t.ConsentState("off", "user_file")
    # Sticky above (as /tmp) is fine; a sticky directory itself is not.
    os.chmod(tmp_root, 0o1777)
    assert untrusted_dir(str(tmp_root / "telemetry-X")) is None
    assert "writable by every user" in (untrusted_dir(str(tmp_root)) or "")
