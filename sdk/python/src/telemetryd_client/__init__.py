"""Record usage events for a CLI with the local ``telemetryd`` daemon.

Standard library only. Speaks the daemon's JSON-lines protocol over its
Unix socket. Consent is checked first, from the files and the environment,
without contacting the daemon: when it is off nothing else happens (no
connection, no file, no process). No function raises into the host or
prints (except :meth:`Client.prompt`, which asks on stderr), and each call
stays within its time budget (0.1 s by default)::

    from telemetryd_client import Client

    telemetry = Client(product="cfdev", build="1.2.0")
    outcome = telemetry.emit("app_created", {"buildpack": "go"})
    # outcome.status: acknowledged, queued, spooled, dropped, refused, off or failed

The pure parts (consent resolution, paths, the protocol's lines, ``KEY=VALUE``
parsing) are exported too, for tools and tests.
"""

from __future__ import annotations

from ._client import (
    DEFAULT_TIMEOUT,
    Client,
    ConsentChange,
    ConsentState,
    Outcome,
    Paths,
    PromptResult,
    generic_prompt,
    how_to_change,
)
from ._consent import UNREADABLE, ConsentFile, Entry, env_opts_out, resolve
from ._paths import (
    consent_file,
    socket_hash,
    socket_path,
    spool_dir,
    spool_drops_file,
    state_dir,
    system_consent_file,
)
from ._protocol import (
    FINAL_CODES,
    MAX_LINE_LEN,
    PROTOCOL_VERSION,
    DataValue,
    ProtocolError,
    WireEvent,
    consent_changed_line,
    decode_reply,
    emit_line,
    parse_kv,
    request_line,
    status_line,
    uuid7,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TIMEOUT",
    "FINAL_CODES",
    "MAX_LINE_LEN",
    "PROTOCOL_VERSION",
    "UNREADABLE",
    "Client",
    "ConsentChange",
    "ConsentFile",
    "ConsentState",
    "DataValue",
    "Entry",
    "Outcome",
    "Paths",
    "PromptResult",
    "ProtocolError",
    "WireEvent",
    "consent_changed_line",
    "consent_file",
    "decode_reply",
    "emit_line",
    "env_opts_out",
    "generic_prompt",
    "how_to_change",
    "parse_kv",
    "request_line",
    "resolve",
    "socket_hash",
    "socket_path",
    "spool_dir",
    "spool_drops_file",
    "state_dir",
    "status_line",
    "system_consent_file",
    "uuid7",
]
