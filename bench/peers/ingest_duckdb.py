"""DuckDB peer for the ingest benchmark.

Reads the same NDJSON events the Weir benchmark ingested and computes the same
per-minute rollup (count, sum, min, max of amount and an approximate distinct count
of cards, grouped by category and country) in one query, on one thread. Prints the
seconds it took as `seconds=<float>` and the rows as `rows=<int>`.

Usage: python3 bench/peers/ingest_duckdb.py EVENTS.ndjson
"""

import sys
import time

import duckdb


def main() -> None:
    path = sys.argv[1]
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.execute("SET TimeZone = 'UTC'")
    sql = f"""
    WITH events AS (
      SELECT
        CASE WHEN ts LIKE '%T%' THEN TRY_CAST(ts AS TIMESTAMPTZ)
             ELSE to_timestamp(TRY_CAST(ts AS BIGINT) / 1000.0) END AS ts,
        card_id, category, country, amount
      FROM read_json('{path}', format = 'newline_delimited', ignore_errors = true,
        columns = {{ts: 'VARCHAR', card_id: 'VARCHAR', merchant: 'VARCHAR', category: 'VARCHAR',
                   country: 'VARCHAR', device: 'VARCHAR', status: 'VARCHAR', amount: 'DOUBLE'}})
    )
    , valid AS (
      SELECT * FROM events WHERE ts IS NOT NULL AND card_id IS NOT NULL AND amount IS NOT NULL
    )
    SELECT epoch_ms(date_trunc('minute', ts)) AS bucket, category, country, count(*) AS events,
           sum(amount), min(amount), max(amount), approx_count_distinct(card_id)
    FROM valid GROUP BY ALL
    """
    start = time.perf_counter()
    rows = con.execute(sql).fetchall()
    elapsed = time.perf_counter() - start
    print(f"seconds={elapsed:.4f}")
    print(f"rows={len(rows)}")
    print(f"events={sum(r[3] for r in rows)}")


if __name__ == "__main__":
    main()
