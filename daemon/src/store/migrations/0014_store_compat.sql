-- Which telemetryd may serve this store (schema v14). Each build that
-- migrates or opens a store at its own schema writes the oldest schema
-- version whose builds can serve it (`OLDEST_READER` in store/mod.rs), so a
-- build from v14 on can serve a store a newer vendor's telemetryd migrated,
-- once that newer binary is gone, as long as every migration since declared
-- that older code can live with it. Builds before v14 never read it.
CREATE TABLE store_compat (
    only INTEGER PRIMARY KEY CHECK (only = 1),
    oldest_reader INTEGER NOT NULL
);
