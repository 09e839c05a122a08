-- Consent bound to the catalogue version (schema v5).

-- The event names of a product's manifest at the version the user's
-- decision was given for, recorded when the daemon first acts on that
-- decision: after an upgrade the old manifest is gone, and only these
-- events may be uploaded until the user decides for the newer version.
-- Version 0 is a decision that records no version (written before versions
-- existed, or by an older telemetryctl); it is forgotten when the decision
-- changes.
CREATE TABLE consented_events (
    product     TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    events      TEXT    NOT NULL,   -- event names, one per line, sorted
    recorded_us INTEGER NOT NULL,
    PRIMARY KEY (product, version)
) WITHOUT ROWID;
