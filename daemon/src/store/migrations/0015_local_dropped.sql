-- Events kept on this machine only (`local`) that a full store dropped,
-- per product (schema v15). Never sealed or uploaded: nothing of a local
-- product leaves, so this count is for `status` alone, kept across
-- restarts (an autostarted daemon exits when idle, and the count with it
-- otherwise). A table no older build reads: OLDEST_READER stays.
CREATE TABLE local_dropped (
    product TEXT PRIMARY KEY,
    events INTEGER NOT NULL
);
