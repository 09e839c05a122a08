-- Destinations per product (schema v6).

-- Where a sealed batch goes, fixed when it is sealed: the canonical JSON of
-- the destination its product's manifest named (`{"auth":"anonymous",...}`
-- or `{"auth":"broker","url":...}`), or NULL for the daemon's own
-- destination (the operator's [s3] settings, else the outbox), which is
-- what every batch sealed before this migration was for.
ALTER TABLE batches ADD COLUMN destination TEXT;
CREATE INDEX batches_by_destination ON batches (destination, id);

-- Products whose vendor retired them (HTTP 410 from their destination): a
-- remote off switch. Nothing more is uploaded for them; what was pending
-- is dropped and counted here.
CREATE TABLE retired (
    product     TEXT    PRIMARY KEY,
    destination TEXT    NOT NULL,   -- how status names the destination that said so
    message     TEXT    NOT NULL,   -- what it said
    dropped     INTEGER NOT NULL,   -- events dropped for it since
    since_us    INTEGER NOT NULL
) WITHOUT ROWID;
