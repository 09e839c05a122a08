-- Ids of uploaded events, kept for a while after their rows are deleted, so
-- a client that resends an event (say after a timeout) does not get it
-- uploaded twice. Pruned after the dedup window.
CREATE TABLE uploaded_ids (
    id          BLOB    PRIMARY KEY,
    uploaded_us INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX uploaded_ids_age ON uploaded_ids (uploaded_us);
