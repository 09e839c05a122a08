-- The aggregates of `telemetry-report`, in SQL that runs unchanged on
-- Athena (engine v3), Trino and DuckDB over the `telemetry_raw` table
-- (athena_table.sql, trino_table.sql, duckdb_table.sql).
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
-- lines are counters, not events.

-- name: report_events
CREATE OR REPLACE VIEW report_events AS
SELECT
  id,
  arbitrary(event)   AS event,
  arbitrary(build)   AS build,
  arbitrary(os)      AS os,
  arbitrary(machine) AS machine,
  arbitrary(day)     AS day,
  arbitrary(dropped) AS dropped
FROM (
  SELECT
    id, event, build, os, machine,
    CAST(substr("timestamp", 1, 10) AS DATE) AS day,
    data."count" AS dropped
  FROM telemetry_raw
  WHERE product = '{{product}}'
    AND dt BETWEEN '{{from}}' AND '{{last_dt}}'
    AND substr("timestamp", 1, 10) BETWEEN '{{from}}' AND '{{to}}'
) AS period_lines
GROUP BY id;

-- name: duplicates
SELECT count(*) - count(DISTINCT id) AS duplicates
FROM telemetry_raw
WHERE product = '{{product}}'
  AND dt BETWEEN '{{from}}' AND '{{last_dt}}'
  AND substr("timestamp", 1, 10) BETWEEN '{{from}}' AND '{{to}}';

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
  coalesce(sum(dropped), 0) AS events,
  count(*) AS reports,
  count(DISTINCT machine) AS machines
FROM report_events
WHERE event = 'telemetry_dropped';
