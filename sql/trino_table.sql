-- Trino (Hive connector): the raw batches as an external table.
--
-- Replace BUCKET and PREFIX, and `hive.telemetry` with your catalog and
-- schema. The Hive connector reads NDJSON (format JSON) and picks the zstd
-- codec from the .zst extension. Register new partitions after uploads
-- (e.g. before each report) with the CALL below.
-- `data` is a map of text: every key a line sent, numbers and booleans as
-- written (70, true); report.sql checks them against the catalogue.
CREATE TABLE IF NOT EXISTS hive.telemetry.telemetry_raw (
  id          varchar,
  event       varchar,
  build       varchar,
  "timestamp" varchar,
  machine     varchar,
  os          varchar,
  arch        varchar,
  data        map(varchar, varchar),
  product     varchar,
  dt          varchar
)
WITH (
  format = 'JSON',
  external_location = 's3://BUCKET/PREFIX/v1/',
  partitioned_by = ARRAY['product', 'dt']
);

CALL hive.system.sync_partition_metadata('telemetry', 'telemetry_raw', 'ADD');
