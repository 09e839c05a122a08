-- Schema v1. Never edit a released migration; append a new file instead.

-- Accepted events, one row each, from acceptance until their batch is in
-- the destination. `seq` orders them and names batch objects, so it must
-- never be reused: AUTOINCREMENT guarantees that even after deletes.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          BLOB    NOT NULL UNIQUE,   -- sender's UUID, the dedup key
    product     TEXT    NOT NULL,
    line        TEXT    NOT NULL,          -- the NDJSON line, exactly as uploaded
    received_us INTEGER NOT NULL,          -- daemon clock at acceptance
    batch_id    INTEGER                    -- NULL while pending, else its sealed batch
);

CREATE INDEX events_pending ON events (product, seq) WHERE batch_id IS NULL;
CREATE INDEX events_by_batch ON events (batch_id) WHERE batch_id IS NOT NULL;

-- Sealed batches: key and compressed body fixed at seal time, so a retry,
-- even after a crash, writes the same bytes to the same key.
CREATE TABLE batches (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    product   TEXT    NOT NULL,
    key       TEXT    NOT NULL UNIQUE,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    events    INTEGER NOT NULL,
    raw_bytes INTEGER NOT NULL,            -- NDJSON size before compression
    body      BLOB    NOT NULL,            -- zstd-compressed NDJSON
    sealed_us INTEGER NOT NULL
);
