-- Athena: the raw batches as a table, read in place (no copy, no ETL).
--
-- Replace BUCKET and PREFIX (drop "PREFIX/" when the daemons upload without
-- a prefix). Objects are NDJSON compressed with zstd; Athena (engine v3)
-- recognises the .zst extension. Partition projection means there is no
-- MSCK REPAIR / crawler to run: every query must name the product
-- (product = '...') and should bound dt, which is what report.sql does.
--
-- `data` is a map of text: every key a line sent, numbers and booleans as
-- written (70, true); report.sql checks them against the catalogue.
--
-- The `product` field inside each line is not declared: the partition
-- column of the same name and value stands for it.
CREATE EXTERNAL TABLE IF NOT EXISTS telemetry_raw (
  id          string,
  event       string,
  build       string,
  `timestamp` string,
  machine     string,
  os          string,
  arch        string,
  data        map<string,string>
)
PARTITIONED BY (product string, dt string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://BUCKET/PREFIX/v1/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.product.type' = 'injected',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2024-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://BUCKET/PREFIX/v1/product=${product}/dt=${dt}/'
);
