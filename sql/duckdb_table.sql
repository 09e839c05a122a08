-- DuckDB: the same table over a local copy of the bucket (or the daemon's
-- outbox directory), e.g. after `aws s3 sync s3://BUCKET/PREFIX/ copy/`.
-- Replace ROOT with that directory (the one holding v1/). The tests run
-- report.sql on this view and compare with telemetry-report.
-- `data` is a map of text: every key a line sent, numbers and booleans as
-- written (70, true); report.sql checks them against the catalogue.
CREATE OR REPLACE VIEW telemetry_raw AS
SELECT *
FROM read_json(
  'ROOT/v1/product=*/dt=*/*.ndjson.zst',
  format = 'newline_delimited',
  compression = 'zstd',
  hive_partitioning = true,
  hive_types = {'product': 'VARCHAR', 'dt': 'VARCHAR'},
  columns = {
    id: 'VARCHAR',
    event: 'VARCHAR',
    build: 'VARCHAR',
    "timestamp": 'VARCHAR',
    machine: 'VARCHAR',
    os: 'VARCHAR',
    arch: 'VARCHAR',
    data: 'MAP(VARCHAR, VARCHAR)'
  }
);
