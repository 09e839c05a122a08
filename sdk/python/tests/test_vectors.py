"""Every case of the shared vectors (``vectors/*.json`` at the repo's top)."""

from __future__ import annotations

import json
import re
from typing import Any, Dict

import pytest

import telemetryd_client as t
from conftest import vector
from telemetryd_client import _paths

CONSENT = vector("consent.json")["cases"]
KV = vector("kv.json")["cases"]
PATHS = vector("paths.json")
PROTOCOL = vector("protocol.json")


@pytest.mark.parametrize("case", CONSENT, ids=[c["name"] for c in CONSENT])
def test_consent(case: Dict[str, Any]) -> None:
    system = case["system"]
    if isinstance(system, dict):
        assert system == {"unreadable": True}
        system = t.UNREADABLE
    assert t.resolve(case["product"], system, case["env"], case["user"]) == (
        case["mode"],
        case["layer"],
    )


@pytest.mark.parametrize("case", KV, ids=[c["arg"] or "(empty)" for c in KV])
def test_kv(case: Dict[str, Any]) -> None:
    got = t.parse_kv(case["arg"])
    if case.get("error"):
        assert got is None
        return
    assert got is not None
    key, value = got
    assert key == case["key"]
    assert value == case["value"]
    assert type(value) is type(case["value"])


@pytest.mark.parametrize("case", PATHS["cases"], ids=[c["name"] for c in PATHS["cases"]])
def test_paths(case: Dict[str, Any]) -> None:
    env, uid, os_name = case["env"], case["uid"], case["os"]
    sock = t.socket_path(env, uid, os_name)
    state = t.state_dir(env, uid)
    assert sock == case["socket"]
    assert state == case["state_dir"]
    assert t.consent_file(env, uid) == case["consent_file"]
    assert t.spool_dir(state, sock) == case["spool_dir"]
    assert t.system_consent_file(env) == "/etc/telemetry/consent"


def test_path_overrides_come_first() -> None:
    env = {
        "TELEMETRY_SOCKET": "/s",
        "TELEMETRY_STATE_DIR": "/st",
        "TELEMETRY_CONSENT_FILE": "/c",
        "TELEMETRY_SYSTEM_CONSENT_FILE": "/sys",
        "XDG_RUNTIME_DIR": "/run/user/1",
        "HOME": "/h",
    }
    assert t.socket_path(env, 1, "linux") == "/s"
    assert t.state_dir(env, 1) == "/st"
    assert t.consent_file(env, 1) == "/c"
    assert t.system_consent_file(env) == "/sys"
    assert t.consent_file({"TELEMETRY_STATE_DIR": "/st"}, 1) == "/st/consent"
    assert _paths.default_socket({}, 5, "linux") == "/tmp/telemetry-5/telemetryd.sock"


def test_spool_example_line_is_what_the_sdk_writes() -> None:
    spool = PATHS["spool"]
    assert spool["max_files"] == _paths.MAX_SPOOL_FILES
    ev = t.WireEvent(
        id="0190f5c2-7b1e-7000-8000-000000000001",
        event="app_created",
        product="cfdev",
        build="1.2.0",
        timestamp_us=1700000000000001,
        data={"buildpack": "go"},
    )
    assert t.emit_line([ev], False) == spool["example_line"].encode() + b"\n"
    assert spool["example_file"] == ev.id + ".json"


REQUESTS = [m for m in PROTOCOL["messages"] if m["kind"] == "request"]
RESPONSES = [m for m in PROTOCOL["messages"] if m["kind"] == "response"]


def _encode(name: str, body: Dict[str, Any]) -> bytes:
    """Encode a vector's request with the SDK's own functions."""
    if name == "emit":
        events = [t.WireEvent(**e) for e in body["events"]]
        return t.emit_line(events, body["ack"])
    if name == "status":
        return t.status_line()
    if name == "consent_changed":
        return t.consent_changed_line(body["product"], body["build"])
    return t.request_line(name, body)


@pytest.mark.parametrize("msg", REQUESTS, ids=[m["name"] for m in REQUESTS])
def test_protocol_requests(msg: Dict[str, Any]) -> None:
    expected = json.loads(msg["json"])
    assert expected.pop("v") == t.PROTOCOL_VERSION == PROTOCOL["protocol_version"]
    ((name, body),) = expected.items()
    line = _encode(name, body)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == json.loads(msg["json"])


@pytest.mark.parametrize("msg", RESPONSES, ids=[m["name"] for m in RESPONSES])
def test_protocol_responses(msg: Dict[str, Any]) -> None:
    name, body = t.decode_reply(msg["json"])
    expected = json.loads(msg["json"])
    assert name in expected and body == expected[name]
    # Unknown keys inside a message must not break it.
    grown = dict(expected)
    if isinstance(grown[name], dict):
        grown[name] = dict(grown[name], some_future_field=[1, 2])
        assert t.decode_reply(json.dumps(grown))[1]["some_future_field"] == [1, 2]


def test_bad_replies_are_protocol_errors() -> None:
    for bad in ["", "nope", "[]", '{"status":{}}', '{"v":3,"status":{}}', '{"v":2}',
                '{"v":2,"a":{},"b":{}}', '{"v":true,"status":{}}',
                # Nested past the parser's recursion limit (RecursionError,
                # not ValueError): as unreadable as bad JSON, so the event is
                # spooled rather than lost.
                '{"v":2,"ack":' + "[" * 10_000 + "]" * 10_000 + "}"]:  # fmt: skip
        with pytest.raises(t.ProtocolError):
            t.decode_reply(bad)


def test_uuid7_shape() -> None:
    ids = {t.uuid7() for _ in range(1000)}
    assert len(ids) == 1000
    for u in list(ids)[:50]:
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", u
        )
    import time

    ms = int(t.uuid7().replace("-", "")[:12], 16)
    assert abs(ms - time.time() * 1000) < 5000


def test_consent_file_render_round_trips() -> None:
    f = t.ConsentFile.parse("a on\nb local\na off\n")
    f.set("b", "on", "t1")
    f.set("c", "off", "t2", None)
    f.set("c", "on", "t3", 3)
    text = f.render()
    assert text.startswith("# telemetry consent")
    assert "c on t3 off=t2 #+ version=3\n" in text
    again = t.ConsentFile.parse(text)
    assert again.bad_lines == []
    assert [(e.product, e.mode) for e in again.entries] == [("a", "off"), ("b", "on"), ("c", "on")]


def test_consent_parser_edge_cases_from_rust() -> None:
    f = t.ConsentFile.parse(
        "a on t off=t0 colour=blue #+ version=4 future=x\n"
        "b on #+ version=0\n"
        "c on t #+ version=seven # a note version=9\n"
        "d on t #+version=2\n"
        "e on # version=5\n"
        "f on t Version=2\n"
        "g on t off=1 off=2\n"
    )
    assert f.bad_lines == [6, 7]

    def v(p: str) -> Any:
        e = f.get(p)
        assert e is not None
        return e.version

    assert (v("a"), v("b"), v("c"), v("d"), v("e")) == (4, None, None, 2, None)
    g = t.ConsentFile.parse(
        "# c\n\ncfdev on 2026-01-01T00:00:00Z\ncfdev maybe\nBad on\nx on y z\nq On\n"
    )
    assert len(g.entries) == 2 and g.bad_lines == [4, 5, 6]


def test_env_opt_out_values() -> None:
    for v in ["1", "true", "yes", "false", "anything"]:
        assert t.env_opts_out(v)
    for w in [None, "", "0", " 0 "]:
        assert not t.env_opts_out(w)


CONSENT_FILES = vector("consent-files.json")["cases"]


@pytest.mark.parametrize("case", CONSENT_FILES, ids=[c["name"] for c in CONSENT_FILES])
def test_consent_files(
    case: Dict[str, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("DO_NOT_TRACK", "TELEMETRY_OPTOUT"):
        monkeypatch.delenv(var, raising=False)
    user, system = tmp_path / "consent", tmp_path / "system-consent"
    for key, path in (("user", user), ("system", system)):
        f = case[key]
        if f is not None:
            path.write_bytes(bytes.fromhex(f["hex"]) + b"#" * f.get("pad", 0))
    c = t.Client("cfdev", consent_file=str(user), system_consent_file=str(system))
    got = c.consent()
    assert (got.mode, got.layer) == (case["mode"], case["layer"])
