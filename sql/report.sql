-- The aggregates of `telemetry-report`, in SQL that runs unchanged on
-- Athena (engine v3), Trino and DuckDB over the `telemetry_raw` table
-- (athena_table.sql, trino_table.sql, duckdb_table.sql). Apache Spark's
-- dialect differs in a few words: report.spark.sql is this file for Spark,
-- statement for statement (keep the two in step; the tests run both).
--
-- The value tables (data_*) need the product's catalogue as the view
-- report_catalog: run the output of
--   telemetry-report catalog-sql --product cfdev      (or --catalog FILE)
-- first. It lists every allowed value and bin, so the SQL counts exactly
-- what telemetry-report counts without re-deriving anything.
--
-- Parameters, replaced textually before running:
--   {{product}}  the product, e.g. cfdev
--   {{from}}     first day of the period, e.g. 2026-10-01
--   {{to}}       last day of the period, e.g. 2026-12-31
--   {{last_dt}}  last dt= partition to read: {{to}} plus the grace days
--                (telemetry-report --late-days, default 14), e.g. 2027-01-14
--
-- Statements are separated by `-- name: NAME` lines. The results are the
-- raw cells, before the k rule: they are for the maintainers, not for
-- publishing. Publish only what telemetry-report's rule allows (report/
-- SCHEMA.md): drop every cell with machines < k, merge dropped values of a
-- one-dimensional table into one "other" row (growing it from the smallest
-- rows until it reaches k machines), and never select `machine` itself.
--
-- Semantics, identical to telemetry-report: an event belongs to the period
-- when the UTC day of its timestamp is in it; lines with the same id are
-- one event (replayed batches); weeks start on Monday; telemetry_dropped
-- lines are counters, not events; every line of a machine with a
-- telemetry_forget marker in the partitions read is left out.
--
-- Value tables, identical to telemetry-report (report/src/data.rs): each
-- event of a catalogued event name counts once in each of its counted
-- keys' tables (enum, bool, int; strings are checked, never counted),
-- under the entry's value or bin, or '(none)' when it did not send the key
-- or its line has any entry the catalogue does not allow (such lines are
-- also counted in data_left_out). Percentiles are nearest rank over the
-- events with a valid value: the bin of the value at position
-- ceil(p * n / 100) in ascending order, which no approximate percentile
-- function reproduces.
-- Two differences: the table definitions read data as text, so a quoted
-- "70" where the catalogue has an int (or "true" for a bool: a daemon on
-- another catalogue version, where the key was a string, or a hand-made
-- object) is allowed here and left out by telemetry-report; and a
-- string's max_len is checked in characters here, in bytes there. Lines
-- telemetry-report refuses as damaged (an id not in canonical form, a
-- machine over 256 bytes, an event, build or os over 64 or outside a
-- daemon's charset, a dropped count over 2^40, a product that is not its
-- partition's or none, a timestamp not in UTC as YYYY-MM-DDTHH:MM:SS[.f]Z)
-- stop it, or with --skip-damaged leave their object out, while this SQL
-- counts them: compare only runs over data that telemetry-report read whole.
-- And with a catalogue telemetry-report names in by_event only the events
-- it lists (any other goes into other); this SQL names every event.

-- name: report_events
-- One row per event of the period (replayed lines are one event).
CREATE OR REPLACE VIEW report_events AS
SELECT
  id,
  arbitrary(event)   AS event,
  arbitrary(build)   AS build,
  arbitrary(os)      AS os,
  arbitrary(machine) AS machine,
  arbitrary(day)     AS day
FROM (
  SELECT
    id, event, build, os, machine,
    CAST(substr("timestamp", 1, 10) AS DATE) AS day
  FROM telemetry_raw
  WHERE product = '{{product}}'
    AND dt BETWEEN '{{from}}' AND '{{last_dt}}'
    AND substr("timestamp", 1, 10) BETWEEN '{{from}}' AND '{{to}}'
    -- Machines whose users asked to be forgotten: a telemetry_forget
    -- marker anywhere in the partitions read leaves out all their lines.
    AND machine NOT IN (
      SELECT machine FROM telemetry_raw
      WHERE product = '{{product}}'
        AND dt BETWEEN '{{from}}' AND '{{last_dt}}'
        AND event = 'telemetry_forget'
        AND machine IS NOT NULL
    )
) AS period_lines
GROUP BY id;

-- name: report_entries
-- Every data entry of the period's lines, one row each (replayed lines
-- are identical, so DISTINCT keeps one).
CREATE OR REPLACE VIEW report_entries AS
SELECT DISTINCT r.id, d.data_key, r.data[d.data_key] AS value
FROM telemetry_raw AS r
CROSS JOIN UNNEST(map_keys(r.data)) AS d (data_key)
WHERE r.product = '{{product}}'
  AND r.dt BETWEEN '{{from}}' AND '{{last_dt}}'
  AND substr(r."timestamp", 1, 10) BETWEEN '{{from}}' AND '{{to}}';

-- name: report_checked
-- Each entry with the catalogue row that allows it: kind is NULL when
-- none does (a key the event does not list, a value or type it does not
-- allow). An int is allowed only when written as an integer.
CREATE OR REPLACE VIEW report_checked AS
SELECT x.id, e.event, x.data_key, x.value, c.kind, c.label
FROM report_entries AS x
JOIN report_events AS e ON e.id = x.id
LEFT JOIN report_catalog AS c
  ON c.event_name = e.event
  AND c.data_key = x.data_key
  AND (
    (c.kind IN ('enum', 'bool') AND x.value = c.label)
    OR (c.kind = 'int'
      AND CAST(TRY_CAST(x.value AS BIGINT) AS VARCHAR) = x.value
      AND (c.min_value IS NULL OR TRY_CAST(x.value AS BIGINT) >= c.min_value)
      AND (c.max_value IS NULL OR TRY_CAST(x.value AS BIGINT) <= c.max_value)
      AND (c.lo IS NULL OR TRY_CAST(x.value AS BIGINT) >= c.lo)
      AND (c.hi IS NULL OR TRY_CAST(x.value AS BIGINT) < c.hi))
    OR (c.kind = 'string' AND length(x.value) <= c.max_len)
  );

-- name: report_data_lines
-- One row per event and counted key of its event name: the value's label
-- (value, true/false, bin) or '(none)', and an int's value when allowed.
CREATE OR REPLACE VIEW report_data_lines AS
SELECT
  e.id, e.event, e.machine, k.data_key,
  CASE WHEN bad.id IS NULL AND v.label IS NOT NULL THEN v.label ELSE '(none)' END AS label,
  CASE WHEN bad.id IS NULL AND v.kind = 'int' THEN TRY_CAST(v.value AS BIGINT) END AS int_value
FROM report_events AS e
JOIN (
  SELECT DISTINCT event_name, data_key FROM report_catalog WHERE kind <> 'string'
) AS k ON k.event_name = e.event
LEFT JOIN (
  SELECT DISTINCT id FROM report_checked WHERE kind IS NULL
) AS bad ON bad.id = e.id
LEFT JOIN report_checked AS v ON v.id = e.id AND v.data_key = k.data_key
WHERE e.event <> 'telemetry_dropped';

-- name: duplicates
SELECT count(*) - count(DISTINCT id) AS duplicates
FROM telemetry_raw
WHERE product = '{{product}}'
  AND dt BETWEEN '{{from}}' AND '{{last_dt}}'
  AND substr("timestamp", 1, 10) BETWEEN '{{from}}' AND '{{to}}'
  AND machine NOT IN (
    SELECT machine FROM telemetry_raw
    WHERE product = '{{product}}'
      AND dt BETWEEN '{{from}}' AND '{{last_dt}}'
      AND event = 'telemetry_forget'
      AND machine IS NOT NULL
  );

-- name: totals
SELECT count(*) AS events, count(DISTINCT machine) AS machines
FROM report_events
WHERE event <> 'telemetry_dropped';

-- name: by_event
SELECT event, count(*) AS events, count(DISTINCT machine) AS machines
FROM report_events
WHERE event <> 'telemetry_dropped'
GROUP BY event
ORDER BY event;

-- name: by_os
SELECT os, count(*) AS events, count(DISTINCT machine) AS machines
FROM report_events
WHERE event <> 'telemetry_dropped'
GROUP BY os
ORDER BY os;

-- name: by_build
SELECT build, count(*) AS events, count(DISTINCT machine) AS machines
FROM report_events
WHERE event <> 'telemetry_dropped'
GROUP BY build
ORDER BY build;

-- name: by_week
SELECT
  CAST(CAST(date_trunc('week', day) AS DATE) AS VARCHAR) AS week,
  count(*) AS events,
  count(DISTINCT machine) AS machines
FROM report_events
WHERE event <> 'telemetry_dropped'
GROUP BY 1
ORDER BY 1;

-- name: by_event_week
SELECT
  event,
  CAST(CAST(date_trunc('week', day) AS DATE) AS VARCHAR) AS week,
  count(*) AS events,
  count(DISTINCT machine) AS machines
FROM report_events
WHERE event <> 'telemetry_dropped'
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: dropped
SELECT
  coalesce(sum(TRY_CAST(x.value AS BIGINT)), 0) AS events,
  count(*) AS reports,
  count(DISTINCT e.machine) AS machines
FROM report_events AS e
LEFT JOIN report_entries AS x ON x.id = e.id AND x.data_key = 'count'
WHERE e.event = 'telemetry_dropped';

-- name: data_values
-- report.json's data[].values, before the k rule.
SELECT
  event, data_key, label AS value,
  count(*) AS events,
  count(DISTINCT machine) AS machines
FROM report_data_lines
GROUP BY event, data_key, label
ORDER BY 1, 2, 3;

-- name: data_percentiles
-- report.json's data[].percentiles (publish only where machines >= k): the
-- bin each nearest-rank percentile falls in, never its value (one event's,
-- so one machine's); publish as 'other' a bin that is not a published row
-- of the key's table, after the k rule and the growing of 'other' to k
-- (a bin of k or more machines can be merged too).
SELECT
  event, data_key,
  max(n) AS events,
  count(DISTINCT machine) AS machines,
  min(CASE WHEN rn = ceil(50 * n / 100.0) THEN label END) AS p50,
  min(CASE WHEN rn = ceil(90 * n / 100.0) THEN label END) AS p90,
  min(CASE WHEN rn = ceil(99 * n / 100.0) THEN label END) AS p99
FROM (
  SELECT
    event, data_key, machine, int_value, label,
    count(*) OVER (PARTITION BY event, data_key) AS n,
    row_number() OVER (PARTITION BY event, data_key ORDER BY int_value) AS rn
  FROM report_data_lines
  WHERE int_value IS NOT NULL
) AS ranked
GROUP BY event, data_key
ORDER BY 1, 2;

-- name: data_left_out
-- Lines whose data the catalogue does not allow: left out of every value
-- table (telemetry-report prints this count).
SELECT count(DISTINCT id) AS lines
FROM report_checked
WHERE kind IS NULL AND event <> 'telemetry_dropped';
