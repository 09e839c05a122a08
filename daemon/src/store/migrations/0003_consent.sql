-- Consent (schema v3).

-- Events recorded in `local` mode stay on this machine: never sealed, never
-- uploaded, shown by `telemetryctl show`, removed by purge.
ALTER TABLE events ADD COLUMN local_only INTEGER NOT NULL DEFAULT 0;
-- Events stored before consent existed were never consented to upload:
-- keep them local (the user can see them with show and delete them).
UPDATE events SET local_only = 1, batch_id = NULL;
DELETE FROM batches;
DROP INDEX events_pending;
CREATE INDEX events_pending ON events (product, seq) WHERE batch_id IS NULL AND local_only = 0;
CREATE INDEX events_local ON events (product, seq) WHERE local_only = 1;

-- The batch holding the final `telemetry_off` event of a product the user
-- turned off: the one batch that may still be uploaded for it.
ALTER TABLE batches ADD COLUMN final INTEGER NOT NULL DEFAULT 0;

-- The user's consent decision the store last acted on, per product, so a
-- change made while the daemon was down is applied at the next start.
CREATE TABLE consent_applied (
    product    TEXT    PRIMARY KEY,
    mode       TEXT    NOT NULL,   -- off | local | on
    off_marker TEXT,               -- the user file's last `off=` time acted on
    since_us   INTEGER NOT NULL
) WITHOUT ROWID;
