-- Apache Spark: the raw batches as a temporary view, read in place.
--
-- Replace ROOT with where v1/ is: a local copy of the bucket (or the
-- daemon's outbox directory), or the bucket itself, s3://BUCKET/PREFIX on
-- EMR and Databricks, s3a://BUCKET/PREFIX with Hadoop's S3A connector
-- elsewhere (Dataproc, a laptop). Spark discovers the product= and dt=
-- partitions from the paths and prunes them by report.spark.sql's WHERE.
-- The .ndjson.zst objects are read by the zstd codec the file name
-- selects: Spark 4.2 and later carry it (older ones need Hadoop's native
-- library built with zstd, as EMR's is).
--
-- `data` is read as text per key: numbers and booleans as they are written
-- (70, true). The `product` field inside each line is not declared: the
-- partition column of the same name and value stands for it.
CREATE OR REPLACE TEMPORARY VIEW telemetry_raw (
  id          STRING,
  event       STRING,
  build       STRING,
  `timestamp` STRING,
  machine     STRING,
  os          STRING,
  arch        STRING,
  data        MAP<STRING, STRING>,
  product     STRING,
  dt          STRING
)
USING json
OPTIONS (path 'ROOT/v1');
