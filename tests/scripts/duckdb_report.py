"""Run sql/report.sql in DuckDB over a copy of the batches, for the tests.

Usage: duckdb_report.py SQL_DIR ROOT REPORT_JSON

ROOT holds v1/product=.../dt=.../*.ndjson.zst. The period, product and
grace come from REPORT_JSON (telemetry-report's output), so both run the
same question. Prints one JSON object: each named query's rows, and for
each one-dimensional table the "other" row computed from the raw cells the
report did not publish (its machines counted once, in SQL).
"""
import datetime
import json
import re
import sys

import duckdb

# A statement starts at a line that is exactly "-- name: NAME"; the text
# "-- name: " also occurs inside comments (report.sql's header).
NAME_LINE = re.compile(r"^-- name: (\w+)$", re.MULTILINE)


def main():
    sql_dir, root, report_path = sys.argv[1:4]
    with open(report_path) as f:
        report = json.load(f)
    last_dt = datetime.date.fromisoformat(report["period"]["to"]) + datetime.timedelta(days=report["period"]["late_days"])
    params = {
        "{{product}}": report["product"],
        "{{from}}": report["period"]["from"],
        "{{to}}": report["period"]["to"],
        "{{last_dt}}": last_dt.isoformat(),
    }
    con = duckdb.connect()
    with open(f"{sql_dir}/duckdb_table.sql") as f:
        con.execute(f.read().replace("ROOT", root))
    with open(f"{sql_dir}/report.sql") as f:
        text = f.read()
    for key, value in params.items():
        text = text.replace(key, value)
    out = {}
    marks = list(NAME_LINE.finditer(text))
    if not marks:
        sys.exit(f"{sql_dir}/report.sql: no '-- name: NAME' lines")
    for mark, following in zip(marks, marks[1:] + [None]):
        name = mark.group(1)
        statement = text[mark.end():following.start() if following else len(text)]
        rel = con.sql(statement)
        if rel is None:  # CREATE VIEW
            continue
        rows = [dict(zip(rel.columns, row)) for row in rel.fetchall()]
        if rows:
            out[name] = rows
    out["other"] = {}
    for table, column in [("by_event", "event"), ("by_os", "os"), ("by_build", "build"), ("by_week", "week")]:
        published = [r[column] for r in report[table] if not r.get("other")]
        merged = [r[column] for r in out[table] if r[column] not in published]
        if not merged:
            continue
        expr = column if column != "week" else "CAST(CAST(date_trunc('week', day) AS DATE) AS VARCHAR)"
        events, machines = con.execute(
            f"SELECT count(*), count(DISTINCT machine) FROM report_events "
            f"WHERE event <> 'telemetry_dropped' AND {expr} IN (SELECT unnest(?))",
            [merged],
        ).fetchone()
        out["other"][table] = {"values": len(merged), "events": events, "machines": machines}
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main()
