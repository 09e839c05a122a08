"""Run sql/report.sql in DuckDB, or sql/report.spark.sql in Apache Spark,
over a copy of the batches, for the tests.

Usage: sql_report.py duckdb|spark SQL_DIR ROOT REPORT_JSON CATALOG_SQL

ROOT holds v1/product=.../dt=.../*.ndjson.zst. The period, product and
grace come from REPORT_JSON (telemetry-report's output), so both run the
same question; CATALOG_SQL is `telemetry-report catalog-sql` in the
engine's dialect. Prints one JSON object: each named query's rows, and for
each table with an "other" row in the report, that row computed from the
raw cells the report did not publish (its machines counted once, in SQL).
"""
import datetime
import time
import json
import re
import sys

# A statement starts at a line that is exactly "-- name: NAME"; the text
# "-- name: " also occurs inside comments (report.sql's header).
NAME_LINE = re.compile(r"^-- name: (\w+)$", re.MULTILINE)


def strip_comments(text):
    return "\n".join(line for line in text.split("\n") if not line.lstrip().startswith("--"))


def is_create(statement):
    return strip_comments(statement).lstrip().upper().startswith("CREATE")


class DuckDb:
    table_file = "duckdb_table.sql"
    report_file = "report.sql"
    week = "CAST(CAST(date_trunc('week', day) AS DATE) AS VARCHAR)"

    def __init__(self):
        import duckdb

        self.con = duckdb.connect()

    def prepare(self):
        pass

    def run(self, statement):
        rel = self.con.sql(statement)
        if rel is None:  # CREATE VIEW
            return None
        return [dict(zip(rel.columns, row)) for row in rel.fetchall()]


class Spark:
    table_file = "spark_table.sql"
    report_file = "report.spark.sql"
    week = "CAST(CAST(date_trunc('week', day) AS DATE) AS STRING)"

    def __init__(self):
        from pyspark.sql import SparkSession

        self.spark = (
            SparkSession.builder.master("local[2]")
            .appName("telemetry-report-sql")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            # A test-sized quarter: the default 200 shuffle partitions
            # would cost more than the work.
            .config("spark.sql.shuffle.partitions", "4")
            .getOrCreate()
        )
        self.spark.sparkContext.setLogLevel("ERROR")

    def prepare(self):
        # Every statement would read telemetry_raw again: thousands of
        # small objects listed and opened per query. A test-sized quarter
        # is read once and kept in memory; a cluster reads the bucket.
        self.spark.sql("CACHE TABLE telemetry_raw")

    def run(self, statement):
        frame = self.spark.sql(statement)
        if is_create(statement):
            return None
        return [r.asDict() for r in frame.collect()]


def literal_list(values):
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)


def main():
    engine_name, sql_dir, root, report_path, catalog_path = sys.argv[1:6]
    engine = {"duckdb": DuckDb, "spark": Spark}[engine_name]()
    with open(report_path) as f:
        report = json.load(f)
    last_dt = datetime.date.fromisoformat(report["period"]["to"]) + datetime.timedelta(days=report["period"]["late_days"])
    params = {
        "{{product}}": report["product"],
        "{{from}}": report["period"]["from"],
        "{{to}}": report["period"]["to"],
        "{{last_dt}}": last_dt.isoformat(),
    }
    with open(f"{sql_dir}/{engine.table_file}") as f:
        engine.run(f.read().replace("ROOT", root).strip().rstrip(";"))
    engine.prepare()
    with open(catalog_path) as f:
        engine.run(f.read().strip().rstrip(";"))
    with open(f"{sql_dir}/{engine.report_file}") as f:
        text = f.read()
    for key, value in params.items():
        text = text.replace(key, value)
    out = {}
    marks = list(NAME_LINE.finditer(text))
    if not marks:
        sys.exit(f"{sql_dir}/{engine.report_file}: no '-- name: NAME' lines")
    for mark, following in zip(marks, marks[1:] + [None]):
        name = mark.group(1)
        statement = text[mark.end() : following.start() if following else len(text)].strip().rstrip(";")
        started = time.monotonic()
        rows = engine.run(statement)
        print(f"{name}: {time.monotonic() - started:.1f} s", file=sys.stderr)
        if rows:
            out[name] = rows
    out["other"] = {}
    for table, column in [("by_event", "event"), ("by_os", "os"), ("by_build", "build"), ("by_week", "week")]:
        published = [r[column] for r in report[table] if not r.get("other")]
        merged = [r[column] for r in out[table] if r[column] not in published]
        if not merged:
            continue
        expr = column if column != "week" else engine.week
        [row] = engine.run(
            "SELECT count(*) AS events, count(DISTINCT machine) AS machines FROM report_events "
            f"WHERE event <> 'telemetry_dropped' AND {expr} IN ({literal_list(merged)})"
        )
        out["other"][table] = {"values": len(merged), **row}
    # The value tables' other rows, per event and key.
    out["other"]["data"] = []
    for d in report.get("data", []):
        published = [r["value"] for r in d["values"] if not r.get("other")]
        merged = [
            r["value"]
            for r in out.get("data_values", [])
            if r["event"] == d["event"] and r["data_key"] == d["key"] and r["value"] not in published
        ]
        if not merged:
            continue
        [row] = engine.run(
            "SELECT count(*) AS events, count(DISTINCT machine) AS machines FROM report_data_lines "
            f"WHERE event = {literal_list([d['event']])} AND data_key = {literal_list([d['key']])} "
            f"AND label IN ({literal_list(merged)})"
        )
        out["other"]["data"].append({"event": d["event"], "key": d["key"], "values": len(merged), **row})
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main()
