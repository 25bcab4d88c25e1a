"""DuckDB peer for the upsert benchmark (`bench/src/bin/upsert.rs`).

Computes the latest record per key from the raw Parquet files an upsert table
sealed (`<store>/tables/accounts/segments/*/accounts.parquet`, which hold every
version with its `_partition` and `_offset`), with the order Weir's view uses:
event time, then log position, newest first. Each query runs `--warmup` times
untimed, then `--runs` times timed, in one connection with `--threads` threads.

Prints one JSON object on stdout:
  {"engine": "duckdb", "version": ..., "queries": {"a": {"ms": [...], "rows": n, "n": n, "balance": x}, ...}}

Usage: python3 bench/peers/upsert_peers.py --glob 'DIR/*/accounts.parquet' --probe k0050000
         [--threads 2] [--runs 10] [--warmup 2]
"""

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--glob", required=True)
    ap.add_argument("--probe", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()

    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    latest = (
        f"(SELECT * FROM read_parquet('{args.glob}') "
        f"QUALIFY row_number() OVER (PARTITION BY id ORDER BY ts DESC, _partition DESC, _offset DESC) = 1)"
    )
    queries = {
        "a": f"SELECT count(*) AS n FROM {latest}",
        "b": f"SELECT status, count(*) AS n, sum(balance) AS balance FROM {latest} GROUP BY status ORDER BY status",
        "c": f"SELECT id, status, balance FROM read_parquet('{args.glob}') WHERE id = '{args.probe}' "
        f"ORDER BY ts DESC, _partition DESC, _offset DESC LIMIT 1",
    }
    out = {}
    for qid, sql in queries.items():
        for _ in range(args.warmup):
            con.execute(sql).fetchall()
        ms = []
        rows = []
        cols = []
        for _ in range(args.runs):
            start = time.perf_counter()
            cur = con.execute(sql)
            rows = cur.fetchall()
            ms.append((time.perf_counter() - start) * 1000.0)
            cols = [d[0] for d in cur.description]
        get = lambda r, c, d: r[cols.index(c)] if c in cols else d
        out[qid] = {
            "ms": ms,
            "rows": len(rows),
            "n": int(sum(get(r, "n", 1) for r in rows)),
            "balance": float(sum(get(r, "balance", 0.0) or 0.0 for r in rows)),
        }
    print(json.dumps({"engine": "duckdb", "version": duckdb.__version__, "queries": out}))


if __name__ == "__main__":
    main()
