"""The :class:`Client` a host CLI uses, and the values it returns."""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

from . import _autostart, _paths, _spool, _transport, _trust

if sys.platform != "win32":
    # Not on Windows: importing this module must not fail there (the host
    # imports it unconditionally); recording consent refuses instead.
    import fcntl
from ._consent import (
    UNREADABLE,
    ConsentFile,
    SystemText,
    env_opt_out_var,
    parse_mode,
    resolve,
)
from ._protocol import (
    FINAL_CODES,
    WireEvent,
    consent_changed_line,
    emit_line,
    now_us,
    status_line,
    uuid7,
)
from ._validate import check_build, check_event, check_name, copy_data, shown

#: The default time budget of one call, in seconds.
DEFAULT_TIMEOUT = 0.1

#: The longest time budget a call takes, in seconds (a day, as the Rust and
#: Node clients): a longer one, or infinity, is a long wait, not an error.
MAX_TIMEOUT = 24 * 3600.0

ACKNOWLEDGED = "acknowledged"
QUEUED = "queued"
SPOOLED = "spooled"
DROPPED = "dropped"
REFUSED = "refused"
OFF = "off"
FAILED = "failed"
RECORDED = "recorded"
NOT_APPLIED = "not_applied"

#: How long past its budget a call may wait for its turn to write the spool,
#: in seconds: after that its event is dropped (and noted), so that a burst
#: of calls that gave up on a hung daemon together does not outlive the
#: budget writing their files one after another.
SPOOL_GRACE = 0.005

#: The variable that gives the build when ``build`` is not given (as for
#: ``telemetry-emit``).
BUILD_VAR = "TELEMETRY_BUILD"


@dataclass(frozen=True)
class Outcome:
    """What became of an event.

    ``status`` is one of:

    - ``acknowledged``: the daemon committed it to disk (``accepted`` /
      ``duplicates`` say how it counted it);
    - ``queued``: written to the daemon without waiting (:meth:`Client.emit_no_wait`);
    - ``spooled``: the daemon could not be reached in time (or answered a
      retryable error); the event waits in ``spool_file`` for the daemon to
      take it in. Do not send it again;
    - ``dropped``: it had to be spooled but the spool is full;
    - ``refused``: the daemon (or the local checks, code ``invalid``) will
      never take it: ``code`` and ``detail`` say why;
    - ``off``: consent is off; nothing was done. ``layer`` says who decided;
    - ``failed``: something else went wrong (``detail`` says what).
    """

    status: str
    detail: str = ""
    code: Optional[str] = None
    layer: Optional[str] = None
    event_id: Optional[str] = None
    accepted: int = 0
    duplicates: int = 0
    spool_file: Optional[str] = None

    @property
    def delivered(self) -> bool:
        """Whether the event reached the daemon or the spool."""
        return self.status in (ACKNOWLEDGED, QUEUED, SPOOLED)


@dataclass(frozen=True)
class ConsentState:
    """A product's effective consent: ``mode`` (``on``, ``local`` or
    ``off``) and the ``layer`` that decided it (``system``,
    ``environment``, ``user_file`` or ``default``). ``detail`` is set when
    the files could not be looked at (then the mode is ``off``), or when the
    user's consent file was not believed, as another user could have
    written it (then it counts as undecided)."""

    mode: str
    layer: str
    detail: str = ""


@dataclass(frozen=True)
class ConsentChange:
    """What :meth:`Client.set_consent` did.

    ``status`` is one of:

    - ``recorded``: the user's file now holds ``mode``. ``daemon_notified``
      says whether a running daemon applied it at once (otherwise it does at
      its next start);
    - ``not_applied``: the file was written, but the running daemon reads
      consent from another file (``daemon_file``), so it did not apply the
      decision and keeps the one it had (after an ``off``, it goes on
      uploading); ``detail`` names both files and the fix, as
      ``telemetryctl consent`` says it (exit 3);
    - ``refused``: a bad argument (``code`` ``invalid``: the mode or the
      product name), ``detail`` says which; nothing changed;
    - ``failed``: ``detail`` says why; nothing changed.

    ``effective`` is the product's consent afterwards as this client's files
    say, which the system file or the environment may still keep ``off``.
    """

    status: str
    mode: Optional[str] = None
    file: Optional[str] = None
    daemon_notified: bool = False
    effective: Optional[ConsentState] = None
    detail: str = ""
    code: Optional[str] = None
    daemon_file: Optional[str] = None


@dataclass(frozen=True)
class PromptResult:
    """What :meth:`Client.prompt` did: ``status`` is ``asked`` (``mode`` is
    the answer, recorded as ``change`` says), ``already_decided``,
    ``forced_off`` (system file or environment), ``not_a_terminal``,
    ``no_answer``, ``refused`` (``code`` ``invalid``: the product name) or
    ``failed``."""

    status: str
    mode: Optional[str] = None
    change: Optional[ConsentChange] = None
    detail: str = ""
    code: Optional[str] = None


class Paths(NamedTuple):
    """The files and socket a client uses."""

    socket: str
    state_dir: str
    consent_file: str
    system_consent_file: str


def generic_prompt(product: str) -> str:
    """The question telemetryctl asks when the vendor wrote none."""
    return (
        f"{product} would like to collect anonymous usage telemetry to learn which features are used.\n"
        "Each event holds: the event name, a little catalogued data, a UTC timestamp, an anonymous\n"
        "machine ID (a SHA-256 hash, never your machine's real ID), your OS and the version.\n"
        "No names, paths, IP addresses or host names are collected."
    )


def how_to_change(product: str) -> str:
    """Always shown after the question: how to change the answer later."""
    return (
        f"Change your mind at any time: `telemetryctl consent {product} off` (or `local`: keep it on\n"
        "this machine only); see exactly what is kept: `telemetryctl show`."
    )


#: The most a consent file may hold (``platform/src/fs.rs`` MAX_SMALL_TEXT).
MAX_SMALL_TEXT = 1 << 20


def read_small_text(path: str) -> str:
    """A consent file's text, read as the daemon and the shim read it
    (``platform/src/fs.rs`` ``read_small_text``): strict UTF-8 with nothing
    removed or translated (a byte-order mark stays: the parser skips one at
    the start;
    a lone ``\\r`` is no line end), at most 1 MiB (a link to ``/dev/zero``
    must not fill memory), opened non-blocking so that a FIFO in its place
    cannot hold the host: with no writer it reads as empty, and one whose
    writer has sent nothing raises ``BlockingIOError``."""
    data = _read_at_most(path, MAX_SMALL_TEXT + 1)
    if len(data) > MAX_SMALL_TEXT:
        raise ValueError(f"{path} is larger than {MAX_SMALL_TEXT} bytes")
    return data.decode("utf-8")


def _read_at_most(path: str, limit: int) -> bytes:
    """The first ``limit`` bytes of ``path`` (fewer if it is shorter), opened
    non-blocking (see :func:`read_small_text`)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        chunks: List[bytes] = []
        size = 0
        while size < limit:
            chunk = os.read(fd, limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


#: The lock a Node writer of the consent file holds (Node has no flock): a
#: file made by exclusive creation. It makes that file, then waits for the
#: flock on ``.consent.lock`` to be free; a flock writer takes the flock,
#: then waits for this file to go. In that order two writers can never both
#: go ahead (``client/src/consent.rs`` NODE_LOCK).
NODE_LOCK = ".consent.node-lock"


def _node_lock_held(directory: str) -> bool:
    """Whether a live Node writer holds ``directory``'s :data:`NODE_LOCK`: it
    exists and was made within the last 10 s (one older died)."""
    try:
        made = os.stat(os.path.join(directory, NODE_LOCK)).st_mtime
    except OSError:
        return False
    return abs(time.time() - made) < 10


def _read_system(path: str) -> SystemText:
    try:
        return read_small_text(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # Exists but cannot be read: fail closed.
        return UNREADABLE


def _read_user(path: str) -> Tuple[Optional[str], str]:
    """The user's file; unreadable counts as missing (undecided, so off), and
    so does one another user could have written: then why, else ``""`` (see
    :func:`_trust.consent_not_believed`)."""
    why = _trust.consent_not_believed(path)
    if why:
        return None, why
    try:
        return read_small_text(path), ""
    except (OSError, ValueError):
        return None, ""


def _rfc3339_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _timeout_of(value: Any) -> float:
    """The budget for a ``timeout=``: a positive number, at most
    :data:`MAX_TIMEOUT`; anything else means :data:`DEFAULT_TIMEOUT`."""
    try:
        t = float(value)
    except OverflowError:
        # An int past a float's range: as large as it gets, if positive.
        try:
            return MAX_TIMEOUT if value > 0 else DEFAULT_TIMEOUT
        except Exception:
            return DEFAULT_TIMEOUT
    except Exception:
        # Not a number, or a __float__ that raises.
        return DEFAULT_TIMEOUT
    if t != t or t <= 0:  # NaN or not positive
        return DEFAULT_TIMEOUT
    return min(t, MAX_TIMEOUT)


def _flag(value: Any, default: bool) -> bool:
    """``bool(value)``, or ``default`` when that raises."""
    try:
        return bool(value)
    except Exception:
        return default


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _path_components(path: str) -> List[str]:
    """``path``'s components as Rust's ``Path::components`` has them on Unix:
    repeated and trailing separators and any ``.`` but a leading one do not
    count; nothing is resolved."""
    out = ["/"] if path.startswith("/") else []
    for i, part in enumerate(path.split("/")):
        if part == "" or (part == "." and (i > 0 or out)):
            continue
        out.append(part)
    return out


def _same_path(a: str, b: str) -> bool:
    """Whether two paths name the same file as ``telemetryctl`` compares
    them: equal component by component (Rust's ``Path`` equality), else the
    same file on disk reached another way (a linked directory). A file that
    cannot be looked at is not taken for the same."""
    if _path_components(a) == _path_components(b):
        return True
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _given_build(build: Any) -> Optional[Any]:
    """``build`` unless it is not given (``None`` or empty)."""
    if build is None or (isinstance(build, str) and str.__len__(build) == 0):
        return None
    return build


class Client:
    """Records usage events for one product with the local ``telemetryd``.

    ``product`` is the catalogue's product name (``cfdev``), ``build`` the
    host CLI's version (when not given or empty: ``TELEMETRY_BUILD`` if it is
    set and not empty when the client is made, else ``unknown``, as for
    ``telemetry-emit``), ``timeout`` the budget of each call in seconds
    (default 0.1). ``socket``, ``state_dir``, ``consent_file`` and
    ``system_consent_file`` override the environment
    (``TELEMETRY_SOCKET``, ``TELEMETRY_STATE_DIR``, ``TELEMETRY_CONSENT_FILE``,
    ``TELEMETRY_SYSTEM_CONSENT_FILE``) and the defaults. ``autostart=False``
    never starts a daemon (``TELEMETRY_AUTOSTART=0`` does the same).
    ``daemon`` is the ``telemetryd`` to start when nothing serves the socket
    (the one shipped with the CLI): used when it is an executable file and
    ``TELEMETRY_DAEMON`` is not set; else ``telemetryd`` on ``PATH``.

    No method raises (short of ``KeyboardInterrupt``/``SystemExit``) or
    prints (except :meth:`prompt`, on stderr); none blocks past its budget
    (except :meth:`prompt` while the user answers).
    """

    def __init__(
        self,
        product: str,
        build: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        socket: Optional[str] = None,
        state_dir: Optional[str] = None,
        consent_file: Optional[str] = None,
        system_consent_file: Optional[str] = None,
        autostart: bool = True,
        daemon: Optional[str] = None,
    ) -> None:
        # Emits past 16 at once (from threads) wait their turn within their
        # budget rather than open connections past the daemon's limit.
        self._slots = _transport.Slots()
        self.product = product
        # As telemetry-emit: an explicit build (checked as given), else a
        # non-empty TELEMETRY_BUILD, else "unknown".
        given = _given_build(build)
        from_env = None if given is not None else os.environ.get(BUILD_VAR) or None
        self.build: str = given if given is not None else from_env or "unknown"
        self._build_from_env = from_env is not None
        self.timeout = _timeout_of(timeout)
        self._socket = socket
        self._state_dir = state_dir
        self._consent_file = consent_file
        self._system_consent_file = system_consent_file
        self._autostart = _flag(autostart, True)
        # A plain str's length and copy: a subclass's own (whose __len__
        # may raise) is not run, as the constructor never raises.
        self._daemon = (
            str.__str__(daemon) if isinstance(daemon, str) and str.__len__(daemon) else None
        )

    def __repr__(self) -> str:
        return f"Client(product={shown(self.product)}, build={shown(self.build)}, timeout={self.timeout!r})"

    # -- where things are --------------------------------------------------

    def paths(self) -> Paths:
        """The socket and files this client uses, from its options, the
        environment and the defaults. (Raises only on a broken environment;
        the other methods catch that.)"""
        env = os.environ
        uid = _paths.current_uid()
        state = self._state_dir or _paths.state_dir(env, uid)
        consent = (
            self._consent_file
            or env.get("TELEMETRY_CONSENT_FILE")
            or os.path.join(state, "consent")
        )
        return Paths(
            socket=self._socket or _paths.socket_path(env, uid, _paths.current_os()),
            state_dir=state,
            consent_file=consent,
            system_consent_file=self._system_consent_file or _paths.system_consent_file(env),
        )

    # -- consent -----------------------------------------------------------

    def _consent(self, p: Paths) -> ConsentState:
        # Not str() of anything else: that is its repr, of any size (no
        # product is named by a non-str: off, unless a `*` line says on).
        product = str.__str__(self.product) if isinstance(self.product, str) else ""
        user, why = _read_user(p.consent_file)
        mode, layer = resolve(product, _read_system(p.system_consent_file), os.environ, user)
        return ConsentState(mode, layer, why)

    def consent(self) -> ConsentState:
        """The product's consent from the files and the environment, without
        contacting the daemon."""
        try:
            return self._consent(self.paths())
        except Exception as e:
            return ConsentState("off", "default", f"cannot read consent: {_describe(e)}")

    # -- emitting ----------------------------------------------------------

    def emit(self, event: str, data: Optional[Mapping[str, Any]] = None) -> Outcome:
        """Record ``event`` with ``data`` (names to ``str``, ``int`` or
        ``bool``) and wait, within the budget, until the daemon has
        committed it; spool it when the daemon cannot take it now."""
        return self._emit(event, data, ack=True)

    def emit_no_wait(self, event: str, data: Optional[Mapping[str, Any]] = None) -> Outcome:
        """Like :meth:`emit`, but return as soon as the event is written to
        the daemon (``queued``), without waiting for the commit."""
        return self._emit(event, data, ack=False)

    def _emit(self, event: Any, data: Any, ack: bool) -> Outcome:
        try:
            deadline = time.monotonic() + self.timeout
            # Before consent: nobody can have consented for a name that is
            # not a product's, and "off" would pass the host's typo off as
            # the user's no.
            why = check_name("product", self.product)
            if why:
                return Outcome(REFUSED, why, code="invalid")
            p = self.paths()
            state = self._consent(p)
            if state.mode == "off":
                why = f"consent for {shown(self.product)} is off ({state.layer})"
                return Outcome(
                    OFF,
                    f"{why}: {state.detail}" if state.detail else why,
                    layer=state.layer,
                )
            # Read once: what is checked is what is sent.
            data = copy_data({} if data is None else data)
            ts = now_us()
            why = check_event(self.product, event, self.build, ts, data)
            if why:
                if self._build_from_env and why == check_build(self.build):
                    why = f"{why} (from {BUILD_VAR})"
                return Outcome(REFUSED, why, code="invalid")
            ev = WireEvent(uuid7(), event, self.product, self.build, ts, data)
            try:
                if ack:
                    name, body = _transport.request(
                        p.socket, emit_line([ev], True), deadline, self._slots
                    )
                else:
                    _transport.send_only(p.socket, emit_line([ev], False), deadline, self._slots)
                    return Outcome(QUEUED, event_id=ev.id)
            except _transport.TransportError as e:
                return self._spool(ev, p, e.why, e.nothing_serves, deadline)
            if name == "ack":
                counts = _ack_counts(body)
                if isinstance(counts, str):
                    return self._spool(
                        ev, p, f"cannot read telemetryd's reply: {counts}", False, deadline
                    )
                return Outcome(
                    ACKNOWLEDGED, event_id=ev.id, accepted=counts[0], duplicates=counts[1]
                )
            body = body if isinstance(body, dict) else {}
            if name == "error":
                code = str(body.get("code", "unknown"))
                message = str(body.get("message", ""))
                if code in FINAL_CODES:
                    return Outcome(REFUSED, message, code=code, event_id=ev.id)
                return self._spool(
                    ev, p, f"telemetryd answered {code}: {message}", False, deadline, code
                )
            return self._spool(ev, p, f"unexpected reply {name!r} from telemetryd", False, deadline)
        except Exception as e:
            return Outcome(FAILED, _describe(e))

    def _spool(
        self,
        ev: WireEvent,
        p: Paths,
        reason: str,
        nothing_serves: bool,
        deadline: float,
        code: Optional[str] = None,
    ) -> Outcome:
        directory = _paths.spool_dir(p.state_dir, p.socket)
        try:
            path = _spool.write(
                directory,
                ev.id,
                emit_line([ev], False),
                ev.product,
                deadline + SPOOL_GRACE,
                state=p.state_dir,
            )
            out = Outcome(SPOOLED, reason, code=code, event_id=ev.id, spool_file=path)
        except _spool.SpoolFull as e:
            out = Outcome(DROPPED, f"{reason}; {e}", code=code, event_id=ev.id)
        except (OSError, ValueError) as e:
            out = Outcome(FAILED, f"{reason}; spooling failed: {e}", code=code, event_id=ev.id)
        # Whatever became of the event: with the spool full (or not
        # writable), the daemon is what would empty it.
        # Not once the budget is spent: the host comes first (as the Rust
        # client; the next call starts it).
        if nothing_serves and self._autostart and time.monotonic() < deadline:
            try:
                # With this client's paths (options may have set them), so
                # the daemon takes in the spool and reads the consent files
                # this client used, as the Go SDK does.
                env = dict(os.environ)
                env.update(
                    TELEMETRY_STATE_DIR=p.state_dir,
                    TELEMETRY_CONSENT_FILE=p.consent_file,
                    TELEMETRY_SYSTEM_CONSENT_FILE=p.system_consent_file,
                )
                _autostart.start(p.socket, p.state_dir, env, deadline, self._daemon)
            except Exception:
                pass
        return out

    # -- status ------------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        """The daemon's status report (``StatusReport`` as a dict: e.g.
        ``pending_events``, ``consent``). When it cannot be had, a dict with
        only ``error``: ``{"code": ..., "message": ...}``."""
        try:
            deadline = time.monotonic() + self.timeout
            try:
                name, body = _transport.request(self.paths().socket, status_line(), deadline)
            except _transport.TransportError as e:
                code = (
                    "timed_out" if e.timed_out else "unreachable" if e.stage == "connect" else "io"
                )
                return {"error": {"code": code, "message": e.why}}
            if name == "status" and isinstance(body, dict):
                return body
            if name == "error" and isinstance(body, dict):
                return {
                    "error": {"code": str(body.get("code")), "message": str(body.get("message"))}
                }
            return {"error": {"code": "unexpected", "message": f"unexpected reply {name!r}"}}
        except Exception as e:
            return {"error": {"code": "failed", "message": _describe(e)}}

    # -- changing consent --------------------------------------------------

    def set_consent(self, mode: str) -> ConsentChange:
        """Record the user's decision (``on``, ``off`` or ``local``) in their
        consent file, as ``telemetryctl consent`` does, then tell a running
        daemon (within the budget). For a CLI's own ``telemetry --on/--off``
        command: anything but ``recorded`` means the decision is not in force
        (see :class:`ConsentChange`; ``not_applied``: the running daemon reads
        another consent file)."""
        try:
            return self._set_consent(mode, time.monotonic() + self.timeout)
        except Exception as e:
            return ConsentChange(FAILED, detail=_describe(e))

    def _set_consent(self, mode_word: Any, deadline: float) -> ConsentChange:
        mode = parse_mode(mode_word) if isinstance(mode_word, str) else None
        if mode is None:
            # Refused, as a bad argument to emit is (and as in the Node SDK).
            return ConsentChange(
                REFUSED, detail=f"mode {shown(mode_word)} is not on, off or local", code="invalid"
            )
        why = check_name("product", self.product)
        if why:
            return ConsentChange(REFUSED, mode=mode, detail=why, code="invalid")
        p = self.paths()
        version = None
        if mode != "off":
            # Half the budget at most: the notice after the write needs
            # the rest (as the Go and Node SDKs).
            now = time.monotonic()
            version = self._manifest_version(p.socket, now + (deadline - now) / 2)
        try:
            # A decision must not be lost to a short budget: wait at least a
            # second for another writer to finish (as the Go SDK does; the
            # Rust client waits as long as it takes).
            kept = _record(
                p.consent_file, self.product, mode, version, max(deadline, time.monotonic() + 1.0)
            )
        except (OSError, ValueError) as e:
            return ConsentChange(
                FAILED,
                mode=mode,
                file=p.consent_file,
                detail=f"cannot write the consent file {p.consent_file}: {e}",
            )
        notified = False
        daemon_file: Optional[str] = None
        notes: List[str] = []
        if kept is not None:
            notes.append(
                f"{p.consent_file} could not be read, so it was kept as {kept} "
                "and a new one holds this decision"
            )
        build = self.build if check_build(self.build) is None else "unknown"
        try:
            name, body = _transport.request(
                p.socket, consent_changed_line(self.product, build), deadline
            )
            if name == "consent_applied":
                reported = body.get("file") if isinstance(body, dict) else None
                if (
                    isinstance(reported, str)
                    and reported
                    and not _same_path(reported, p.consent_file)
                ):
                    # Written, but the running daemon reads another file: it
                    # keeps the decision it had, as telemetryctl fails.
                    daemon_file = reported
                    notes.insert(
                        0,
                        f"telemetryd reads consent from {reported}, but this program wrote "
                        f"{p.consent_file}; set TELEMETRY_CONSENT_FILE={reported} (for this "
                        "program, telemetryctl and telemetry-emit) so they agree, then try again",
                    )
                else:
                    notified = True
            elif name == "error" and isinstance(body, dict):
                notes.append(
                    f"telemetryd did not apply it yet: {body.get('code')}: {body.get('message')}"
                )
        except _transport.TransportError as e:
            if e.nothing_serves:
                notes.append(
                    "no telemetryd is running: every CLI reads this decision from the file "
                    "before it sends, and telemetryd applies it when it starts"
                )
            else:
                # A daemon that runs but did not answer applies it when it
                # next reads the file (at its next commit, or a reload).
                notes.append(
                    f"telemetryd did not confirm it ({e.why}); it follows the file "
                    "before it stores anything more"
                )
        return ConsentChange(
            RECORDED if daemon_file is None else NOT_APPLIED,
            mode=mode,
            file=p.consent_file,
            daemon_notified=notified,
            effective=self._consent(p),
            detail="; ".join(notes),
            daemon_file=daemon_file,
        )

    def _manifest_version(self, socket: str, deadline: float) -> Optional[int]:
        """The product's catalogue version from a running daemon, if any:
        the decision is recorded as given for it."""
        try:
            name, body = _transport.request(socket, status_line(), deadline)
        except _transport.TransportError:
            return None
        if name != "status" or not isinstance(body, dict):
            return None
        for c in body.get("consent") or []:
            if (
                isinstance(c, dict)
                and c.get("product") == self.product
                and not c.get("manifest_error")
            ):
                v = c.get("version")
                if isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 0xFFFFFFFF:
                    return v
        return None

    # -- the prompt --------------------------------------------------------

    def prompt(self, text: Optional[str] = None) -> PromptResult:
        """Ask the user once, on a terminal, whether to enable telemetry
        (default No), and record the answer.

        Asks only when stdin and stderr are terminals, the user's file has
        no decision for the product, and neither the system file nor the
        environment forces it off; otherwise returns at once, having
        printed and recorded nothing. ``text`` replaces the generic
        question; how to change the answer later is always added.
        """
        try:
            why = check_name("product", self.product)
            if why:
                return PromptResult(REFUSED, detail=why, code="invalid")
            p = self.paths()
            user, _ = _read_user(p.consent_file)
            if user is not None and ConsentFile.parse(user).get(self.product) is not None:
                return PromptResult("already_decided")
            state = self._consent(p)
            if state.layer in ("system", "environment"):
                return PromptResult("forced_off", detail=f"decided by the {state.layer}")
            if not (_is_tty(sys.stdin) and _is_tty(sys.stderr)):
                return PromptResult("not_a_terminal", detail="stdin or stderr is not a terminal")
            question = (
                text if isinstance(text, str) and text.strip() else generic_prompt(self.product)
            )
            question = "".join(c for c in question if c in "\n\t" or c.isprintable())
            err = sys.stderr
            err.write(
                f"{question.rstrip()}\n{how_to_change(self.product)}\n\n"
                f"Enable anonymous telemetry for {self.product}? [y/N] "
            )
            err.flush()
            try:
                answer = sys.stdin.readline()
            except (OSError, ValueError) as e:
                return PromptResult("no_answer", detail=str(e))
            yes = answer.strip().lower() in ("y", "yes")
            mode = "on" if yes else "off"
            change = self._set_consent(mode, time.monotonic() + self.timeout)
            return PromptResult("asked", mode=mode, change=change, detail=change.detail)
        except Exception as e:
            return PromptResult(FAILED, detail=_describe(e))


def _is_tty(stream: Any) -> bool:
    try:
        return stream is not None and bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


#: The largest count an ``ack`` carries (a u32 in the protocol).
MAX_COUNT = 0xFFFFFFFF


def _ack_counts(body: Any) -> Union[Tuple[int, int], str]:
    """``(accepted, duplicates)`` of an ``ack`` reply, read as the Go SDK
    reads them: each a whole number from 0 to 2^32-1 (missing or null: 0);
    else why not. A reply that cannot be read is not taken for a commit
    (the event is spooled)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        return "the ack is not an object"
    out = []
    for k in ("accepted", "duplicates"):
        v = body.get(k)
        if v is None:
            v = 0
        if not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT):
            return f"the ack's {k} is not a whole number from 0 to {MAX_COUNT}"
        out.append(v)
    return out[0], out[1]


def _record(
    path: str,
    product: str,
    mode: str,
    version: Optional[int],
    deadline: float,
) -> Optional[str]:
    """Rewrite the user's consent file with ``product``'s new line, as
    ``record_version`` in ``client/src/consent.rs`` does: dir ``0700``,
    serialized by ``flock`` on ``DIR/.consent.lock``, canonical form, a temp
    file in the same dir (the old file's mode, else ``0600``), fsync,
    rename. A file that cannot be read is renamed to
    ``<file>.unreadable-<unix ms>-<pid>`` first, and the lines that can still
    be read from it are kept (not UTF-8 or over 1 MiB: those of its first MiB
    that parse with the bad bytes replaced); returns that path, if so."""
    if sys.platform == "win32":
        raise OSError("recording consent from Python is not supported on Windows")
    lock_dir = directory = os.path.dirname(os.path.abspath(path))
    _only_roots_directories(_existing(directory))
    _spool.make_dirs(directory)
    _only_roots_directories(directory)
    # Root's directories were checked just above, more strictly.
    theirs = None if os.geteuid() == 0 else _trust.untrusted_dir(directory)
    if theirs:
        raise OSError(
            f"{theirs}, so a decision written there could be changed by them; "
            "set HOME, XDG_STATE_HOME or TELEMETRY_STATE_DIR to a directory of your own"
        )
    # Non-blocking, a regular file only: a FIFO there must not hold the host.
    lock = _spool.open_regular(
        os.path.join(lock_dir, ".consent.lock"), os.O_WRONLY | os.O_CREAT, 0o600
    )
    try:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if not _node_lock_held(lock_dir):
                    break
                # A live Node writer holds its own lock: let it finish.
                fcntl.flock(lock, fcntl.LOCK_UN)
            except BlockingIOError:
                pass
            if time.monotonic() >= deadline:
                raise OSError(
                    f"another process holds {lock_dir}/.consent.lock; try again"
                ) from None
            time.sleep(0.002)
        # Under the lock, so what is looked at is what is written.
        _refuse_unless_a_file(path)
        try:
            perm = os.stat(path).st_mode & 0o777
        except OSError:
            perm = 0o600
        kept = None
        try:
            file = ConsentFile.parse(read_small_text(path))
        except FileNotFoundError:
            file = ConsentFile()
        except (OSError, ValueError) as e:
            # Exists but cannot be read: keep it beside the new one rather
            # than lose the other products' lines (as the Rust writer).
            # What can still be read is kept too: a stray byte must not turn
            # every other product's decision into "undecided", which the
            # daemon would apply as an off (deleting what it stored and
            # telling each vendor). Not UTF-8 or too long (ValueError): the
            # lines that parse from the first MiB read with the bad bytes
            # replaced (a line with one in its product or mode does not
            # parse). No permission: nothing.
            file = _salvage(path) if isinstance(e, ValueError) else ConsentFile()
            base = f"{path}.unreadable-{int(time.time() * 1000)}-{os.getpid()}"
            # Never over one kept before in the same millisecond: a rename
            # would replace it.
            kept, n = base, 2
            while os.path.lexists(kept):
                kept, n = f"{base}-{n}", n + 1
            os.rename(path, kept)
            # Its mode (no read permission) is not passed on.
            perm = (perm | 0o600) & 0o666
        file.set(product, mode, _rfc3339_now(), version)
        tmp = os.path.join(directory, f".consent.{os.getpid()}.tmp")
        # A new file only: one left by a writer that died is removed first
        # (removing a link removes the link), and whatever another user put
        # in its place, a link to their file say, is never opened.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(tmp, flags, perm)
        except FileExistsError:
            os.unlink(tmp)
            fd = os.open(tmp, flags, perm)
        try:
            os.fchmod(fd, perm)  # the umask may have narrowed it
            data = file.render().encode("utf-8")
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        # The rename is only durable once the directory is: an "off" the
        # user was told is recorded must survive a power cut (as the Rust
        # writer's).
        _sync_dir(directory)
        return kept
    finally:
        os.close(lock)  # releases the lock


def _salvage(path: str) -> ConsentFile:
    """The decisions that can be read from a consent file that is not text,
    as the Rust writer's ``salvage``: its first :data:`MAX_SMALL_TEXT` bytes,
    each bad sequence read as U+FFFD, parsed as usual; a line that does not
    parse is left out. Only what parses is kept, never the bad lines
    themselves. ``path`` is a regular file (checked by the caller, under the
    lock)."""
    try:
        data = _read_at_most(path, MAX_SMALL_TEXT)
    except (OSError, ValueError):
        return ConsentFile()
    file = ConsentFile.parse(data.decode("utf-8", errors="replace"))
    file.bad_lines = []
    return file


def _refuse_unless_a_file(path: str) -> None:
    """Raise, with nothing written, unless what stands at the consent file's
    ``path`` is nothing yet or a regular file, and, for root, root's. A link
    is refused, not followed: one another user planted (in a directory they
    may write, or at the end of a chain of links) would lead the writer,
    root above all, to overwrite whatever it points to. A directory, FIFO,
    device or socket is refused: a consent file of ``/dev/null`` was
    replaced, ``/tmp`` would have been moved aside. As the Rust client."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        what = "a link (name the file itself)"
    elif stat.S_ISDIR(mode):
        what = "a directory"
    elif stat.S_ISFIFO(mode):
        what = "a FIFO"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        what = "a device"
    elif stat.S_ISSOCK(mode):
        what = "a socket"
    elif not stat.S_ISREG(mode):
        what = "not a regular file"
    elif os.geteuid() == 0 and st.st_uid != 0:
        what = f"owned by uid {st.st_uid}, and root writes only root's files"
    else:
        return
    raise OSError(
        f"{path} is {what}, not a consent file to write: nothing was written; "
        "point TELEMETRY_CONSENT_FILE at a regular file"
    )


def _existing(directory: str) -> str:
    """``directory``, or its nearest ancestor that exists (checked before
    any of it is made)."""
    while not os.path.lexists(directory) and os.path.dirname(directory) != directory:
        directory = os.path.dirname(directory)
    return directory


def _only_roots_directories(directory: str) -> None:
    """For root, raise unless every directory on the way to ``directory``, as
    named and as resolved, is root's and writable by nobody else (a sticky
    one aside, as ``/tmp``): another user who made ``/tmp/telemetry-0``
    first (root's default with no ``HOME``), or whose home ``sudo -E`` kept,
    could otherwise lead root's write anywhere through a link in a directory
    of theirs. As the Rust client."""
    if os.geteuid() != 0:
        return
    named = os.path.abspath(directory)
    for start in (named, os.path.realpath(named)):
        d = start
        while True:
            st = os.lstat(d)
            why = ""
            if st.st_uid != 0:
                why = f"is owned by uid {st.st_uid}"
            elif (
                not stat.S_ISLNK(st.st_mode)
                and st.st_mode & 0o022
                and not st.st_mode & stat.S_ISVTX
            ):
                why = "may be written by other users"
            if why:
                raise OSError(
                    f"{d} {why}: root writes a consent file only where no other user can "
                    "redirect it; nothing was written; set TELEMETRY_CONSENT_FILE (or HOME) "
                    "to a place of root's"
                )
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent


def _sync_dir(directory: str) -> None:
    """fsync ``directory`` where the platform can (not on Windows, where a
    directory cannot be opened this way; its renames are durable anyway)."""
    if os.name == "nt":
        return
    fd = os.open(
        directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
    )
    try:
        os.fsync(fd)
    except OSError as e:
        # A file system that cannot sync a directory (some FUSE, 9p and
        # vboxsf mounts) says EINVAL or ENOTSUP: the rename stands.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


__all__ = [
    "Client",
    "ConsentChange",
    "ConsentState",
    "Outcome",
    "Paths",
    "PromptResult",
    "env_opt_out_var",
]
