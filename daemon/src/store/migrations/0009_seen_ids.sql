-- Deduplication by generations of accepted ids (schema v9).
--
-- An event's id used to be deduplicated by the events table's UNIQUE
-- index while it was stored, then copied into uploaded_ids (with an index
-- on its age) when its batch was uploaded: every event cost two more
-- b-tree inserts at upload, three b-tree deletes with its row, and two
-- more when its id aged out. Now an id is written once, when its event is
-- accepted, into the current generation of seen ids; a generation becomes
-- the previous one when it is a dedup window old, and the previous one is
-- emptied then (a whole-table delete, no index on age). An id is
-- remembered for at least the window after its event was accepted, at
-- most twice that, whatever happened to the event since.
CREATE TABLE seen_ids_a (id BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE seen_ids_b (id BLOB PRIMARY KEY) WITHOUT ROWID;
-- Which generation is current, and since when: one row.
CREATE TABLE seen_generation (
    one      INTEGER PRIMARY KEY CHECK (one = 1),
    current  TEXT    NOT NULL CHECK (current IN ('a', 'b')),
    since_us INTEGER NOT NULL
);
-- Uploaded ids keep their place in the window as the previous
-- generation; stored events' ids start the current one (its start, the
-- migration's time, is set by the store when it first opens at v9).
INSERT INTO seen_ids_b (id) SELECT id FROM uploaded_ids;
INSERT OR IGNORE INTO seen_ids_a (id) SELECT id FROM events;
INSERT INTO seen_generation (one, current, since_us) VALUES (1, 'a', 0);
DROP TABLE uploaded_ids;

-- The events table without its UNIQUE index on id (a table rebuild: a
-- constraint cannot be dropped), keeping seq's high-water mark so no seq
-- is ever reused.
CREATE TABLE events_v9 (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          BLOB    NOT NULL,          -- sender's UUID (deduplicated by seen_ids_*)
    product     TEXT    NOT NULL,
    line        TEXT    NOT NULL,          -- the NDJSON line, exactly as uploaded
    received_us INTEGER NOT NULL,          -- daemon clock at acceptance
    batch_id    INTEGER,                   -- unused since v8; always NULL
    local_only  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO events_v9 (seq, id, product, line, received_us, batch_id, local_only)
    SELECT seq, id, product, line, received_us, batch_id, local_only FROM events;
DELETE FROM sqlite_sequence WHERE name = 'events_v9';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'events_v9', seq FROM sqlite_sequence WHERE name = 'events';
DROP TABLE events;
ALTER TABLE events_v9 RENAME TO events;
CREATE INDEX events_pending ON events (product, seq) WHERE batch_id IS NULL AND local_only = 0;
CREATE INDEX events_local ON events (product, seq) WHERE local_only = 1;
