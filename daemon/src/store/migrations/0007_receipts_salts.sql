-- Upload receipts and per-product ID salts (schema v7).

-- One row per object uploaded (or found already there), written in the
-- same transaction that deletes its batch: what was sent, where, and the
-- SHA-256 of the exact bytes, for `telemetryctl receipts`. Bounded: the
-- oldest rows are dropped past a fixed count, and only the newest bodies
-- (the compressed batch, so `receipts --events` can print its lines) are
-- kept, within a fixed total size.
CREATE TABLE receipts (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    product       TEXT    NOT NULL,
    destination   TEXT    NOT NULL,   -- as status names it; never credentials
    key           TEXT    NOT NULL,
    sha256        TEXT    NOT NULL,   -- lowercase hex of the object's bytes
    bytes         INTEGER NOT NULL,
    events        INTEGER NOT NULL,
    uploaded_us   INTEGER NOT NULL,
    already_there INTEGER NOT NULL,
    body          BLOB                -- NULL once dropped to stay in bounds
);
CREATE INDEX receipts_by_key ON receipts (key);

-- A product the user asked to forget (`telemetryctl forget`) gets a new
-- random salt, and its anonymous ID becomes
-- SHA-256("telemetryd/v1\0" ++ identity ++ "\0" ++ product ++ "\0" ++ salt).
-- No row: the original ID, without a salt.
CREATE TABLE id_salts (
    product  TEXT PRIMARY KEY,
    salt     TEXT    NOT NULL,   -- 32 hex digits
    since_us INTEGER NOT NULL
) WITHOUT ROWID;
