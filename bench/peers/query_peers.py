"""DuckDB and chDB peers for the query benchmark.

Runs the dashboard queries of `bench/src/bin/query.rs` against the raw Parquet files
that Weir sealed (the raw relation's segment files, `<store>/tables/transactions/
segments/*/transactions.parquet`), scanning raw events because the peers have no
rollup. Each query runs `--warmup` times untimed, then `--runs` times timed, in one
process and one connection per engine, with `--threads` threads.

Prints one JSON object on stdout:
  {"engine": ..., "version": ..., "threads": n,
   "queries": {"a": {"ms": [..samples..], "first_ms": x, "rows": n, "events": n, "amount": x}, ...}}
`events` sums the count column of the answer; `amount` sums the amount column (a)
or the distinct-card estimates (c); both are there to check that every engine
computed the same answer.

Usage: python3 bench/peers/query_peers.py --engine duckdb|chdb --glob 'DIR/*/transactions.parquet'
         --from-ms MS --to-ms MS [--threads 2] [--runs 20] [--warmup 2]
"""

import argparse
import json
import sys
import time


def queries(engine: str, glob: str, from_ms: int, to_ms: int) -> dict:
    """The raw-data equivalent of each Weir rollup query, in each engine's dialect."""
    if engine == "duckdb":
        # time_bucket, not date_trunc: the files' `ts` is a TIMESTAMP WITH TIME ZONE,
        # which date_trunc truncates through ICU calendars, 2 to 3 times slower.
        src = f"read_parquet('{glob}')"
        return {
            # (a) events and amount per hour and category, everything.
            "a": f"SELECT time_bucket(INTERVAL '1 hour', ts) AS h, category, count(*) AS events, sum(amount) AS amount "
            f"FROM {src} GROUP BY 1, 2 ORDER BY 1, 2",
            # (b) events per minute over the last hour.
            "b": f"SELECT time_bucket(INTERVAL '1 minute', ts) AS m, count(*) AS events FROM {src} "
            f"WHERE ts >= to_timestamp({from_ms} / 1000) AND ts < to_timestamp({to_ms} / 1000) "
            f"GROUP BY 1 ORDER BY 1",
            # (c) distinct cards per hour (approximate, HyperLogLog).
            "c": f"SELECT time_bucket(INTERVAL '1 hour', ts) AS h, approx_count_distinct(card_id) AS cards "
            f"FROM {src} GROUP BY 1 ORDER BY 1",
        }
    src = f"file('{glob}', Parquet)"
    return {
        "a": f"SELECT toStartOfHour(ts) AS h, category, count() AS events, sum(amount) AS amount "
        f"FROM {src} GROUP BY h, category ORDER BY h, category",
        "b": f"SELECT toStartOfMinute(ts) AS m, count() AS events FROM {src} "
        f"WHERE ts >= fromUnixTimestamp64Milli(toInt64({from_ms}), 'UTC') "
        f"AND ts < fromUnixTimestamp64Milli(toInt64({to_ms}), 'UTC') GROUP BY m ORDER BY m",
        "c": f"SELECT toStartOfHour(ts) AS h, uniq(card_id) AS cards FROM {src} GROUP BY h ORDER BY h",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=["duckdb", "chdb"], required=True)
    ap.add_argument("--glob", required=True)
    ap.add_argument("--from-ms", type=int, required=True)
    ap.add_argument("--to-ms", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()

    if args.engine == "duckdb":
        import duckdb

        con = duckdb.connect()
        con.execute(f"SET threads = {args.threads}")
        con.execute("SET TimeZone = 'UTC'")
        version = duckdb.__version__

        def run(sql: str) -> list:
            # Arrow, not Python objects: fetchall() would convert every timestamp
            # with time zone through pytz. Rows are built from the numeric columns.
            t = con.sql(sql).to_arrow_table()
            cols = [c.to_pylist() if i > 0 else [None] * t.num_rows for i, c in enumerate(t.columns)]
            return list(zip(*cols))

    else:
        import chdb
        from chdb import session

        sess = session.Session()
        version = chdb.__version__
        settings = f" SETTINGS max_threads = {args.threads}, session_timezone = 'UTC'"

        def run(sql: str) -> list:
            out = sess.query(sql + settings, "JSONCompact")
            return json.loads(out.bytes())["data"]

    result = {"engine": args.engine, "version": version, "threads": args.threads, "queries": {}}
    for name, sql in queries(args.engine, args.glob, args.from_ms, args.to_ms).items():
        first_ms = None
        for _ in range(args.warmup):
            start = time.perf_counter()
            run(sql)
            if first_ms is None:
                first_ms = (time.perf_counter() - start) * 1000.0
        samples = []
        rows = []
        for _ in range(args.runs):
            start = time.perf_counter()
            rows = run(sql)
            samples.append((time.perf_counter() - start) * 1000.0)
        # Column 2 (a) or 1 (b) is the event count; the last column of (a) is the
        # amount, of (c) the distinct-card estimate.
        events = sum(int(r[2 if name == "a" else 1]) for r in rows) if name in ("a", "b") else 0
        amount = sum(float(r[-1]) for r in rows) if name in ("a", "c") else 0.0
        result["queries"][name] = {"ms": samples, "first_ms": first_ms, "rows": len(rows), "events": events, "amount": amount}
        print(f"{args.engine} {name}: median {sorted(samples)[len(samples) // 2]:.1f} ms", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
