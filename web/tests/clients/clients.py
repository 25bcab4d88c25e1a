"""Real clients against a real `weir demo`: psql, psycopg, SQLAlchemy, the SQL
Grafana's PostgreSQL data source sends, and ADBC's Flight SQL driver. Every
answer is compared with the HTTP API's answer to the same SQL.

Run by web/tests/clients/run.sh (which installs the clients); WEIR_BIN names the
binary. Prints `ℹ pass N` / `ℹ fail N` for test.sh's summary.
"""

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import traceback
import urllib.request

import adbc_driver_flightsql.dbapi as flightsql
import psycopg
import pyarrow
import pyarrow.ipc
import sqlalchemy

WEIR = os.environ["WEIR_BIN"]
T0 = 1_795_000_000  # seconds


class Weir:
    """A running `weir`, its HTTP base URL and its Postgres address."""

    def __init__(self, args):
        self.proc = subprocess.Popen(
            [WEIR, *args],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "WEIR_LOG": "warn"},
        )
        first = self.proc.stdout.readline()
        assert first.startswith("weir listening on "), first
        self.base = first.removeprefix("weir listening on ").strip()
        self.pg = self.flight = None
        while True:
            line = self.proc.stdout.readline()
            if line.startswith("  postgres:     postgres://"):
                self.pg = line.split("@", 1)[1].split("/", 1)[0]
            elif line.startswith("  flight sql:   "):
                self.flight = line.split(":", 1)[1].strip()
            else:
                break
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)

    def http(self, path, body=None, content_type="application/json"):
        req = urllib.request.Request(self.base + path, data=body, method="POST" if body is not None else "GET")
        if body is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read()

    def sql(self, sql):
        """The HTTP API's rows, as lists in the result's column order."""
        csv_head = self.http("/v1/sql", json.dumps({"sql": sql, "format": "csv"}).encode()).decode().splitlines()
        columns = csv_head[0].split(",") if csv_head else []
        rows = json.loads(self.http("/v1/sql", json.dumps({"sql": sql, "format": "json"}).encode()))
        return [[r[c] for c in columns] for r in rows]

    def dsn(self, password=None):
        auth = f"weir:{password}" if password else "weir"
        return f"postgresql://{auth}@{self.pg}/weir"


def transactions():
    out = []
    for i in range(600):
        ts = dt.datetime.fromtimestamp(T0 + i, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append(
            json.dumps(
                {
                    "ts": ts,
                    "card_id": f"card-{i % 97:03}",
                    "merchant": f"m{i % 5}",
                    "category": ["grocery", "fuel", "travel", "online"][i % 4],
                    "country": ["DE", "FR", "US"][i % 3],
                    "status": "approved",
                    "amount": (i % 37) * 0.25 + 1.0,
                }
            )
        )
    return "\n".join(out).encode()


def normal(v):
    """A value as the HTTP API's JSON writes it: timestamps as RFC 3339 in UTC."""
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + (
            f".{v.microsecond:06}".rstrip("0") if v.microsecond else ""
        ) + "Z"
    if isinstance(v, float) and v.is_integer():
        return v
    return v


def same(pg_rows, http_rows, what):
    got = [[normal(v) for v in r] for r in pg_rows]
    want = [[normal(v) for v in r] for r in http_rows]
    assert got == want, f"{what}:\n  postgres: {got[:5]}\n  http:     {want[:5]}"
    assert want, f"{what}: no rows"


ROLLUP = (
    "SELECT category, sum(events) AS events, sum(amount_sum) AS amount "
    "FROM transactions_per_minute GROUP BY category ORDER BY category"
)


def test_psql_runs_a_rollup_query(w):
    out = subprocess.run(
        ["psql", w.dsn(), "-X", "-A", "-t", "-F", "|", "-c", ROLLUP], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    rows = [line.split("|") for line in out.stdout.splitlines() if line]
    got = [[c, int(e), float(a)] for c, e, a in rows]
    same(got, w.sql(ROLLUP), "psql")


def test_psql_describes_a_table(w):
    for command in [r"\d transactions", r"\dt"]:
        out = subprocess.run(["psql", w.dsn(), "-X", "-c", command], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and not out.stderr, f"{command}: {out.stderr}"
        assert "transactions" in out.stdout, f"{command}: {out.stdout}"
        if command == r"\d transactions":
            for column, kind in [("card_id", "text"), ("amount", "double precision"), ("ts", "timestamp")]:
                line = next((l for l in out.stdout.splitlines() if l.strip().startswith(column + " ")), "")
                assert kind in line, f"{column} is not {kind}: {out.stdout}"


def test_psycopg_parameters_text_and_binary(w):
    sql = "SELECT card_id, count(*) AS n, sum(amount) AS total FROM transactions WHERE category = %s AND amount > %s GROUP BY card_id ORDER BY card_id"
    literal = sql.replace("%s", "'fuel'", 1).replace("%s", "2.5", 1)
    want = w.sql(literal)
    with psycopg.connect(w.dsn(), autocommit=True) as conn:
        for binary in (False, True):
            with conn.cursor(binary=binary) as cur:
                cur.execute(sql, ("fuel", 2.5))
                same(cur.fetchall(), want, f"psycopg binary={binary}")
        # Timestamps with a zone come back as aware datetimes, equal to the API's.
        with conn.cursor() as cur:
            q = "SELECT bucket, category, country, events FROM transactions_per_minute ORDER BY bucket, category, country LIMIT 10"
            cur.execute(q)
            rows = cur.fetchall()
            assert rows[0][0].tzinfo is not None, rows[0]
            same(rows, w.sql(q), "psycopg timestamps")
    # A transaction, as psycopg opens one by default.
    with psycopg.connect(w.dsn()) as conn:
        assert conn.execute("SELECT count(*) FROM transactions").fetchone()[0] == 600
        conn.rollback()


def test_psycopg_errors_name_the_problem(w):
    with psycopg.connect(w.dsn(), autocommit=True) as conn:
        try:
            conn.execute("DELETE FROM transactions")
            raise AssertionError("DELETE ran")
        except psycopg.errors.ReadOnlySqlTransaction as e:
            assert "DELETE" in str(e), e
        try:
            conn.execute("SELECT * FROM missing_table")
            raise AssertionError("ran")
        except psycopg.errors.UndefinedTable as e:
            assert "missing_table" in str(e), e
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_bad_token_is_refused(tmp):
    cfg = os.path.join(tmp, "weir.toml")
    with open(cfg, "w") as f:
        f.write(
            f'[server]\nlisten = "127.0.0.1:0"\npg_listen = "127.0.0.1:0"\ndata_dir = "{tmp}/tokens"\n'
            '[auth]\ntokens = [{ name = "d", token = "s3cret-of-16-bytes", scopes = ["query"] }]\n'
        )
    t = Weir(["serve", "--config", cfg])
    try:
        with psycopg.connect(t.dsn("s3cret-of-16-bytes"), autocommit=True) as conn:
            assert conn.execute("SELECT 40 + 2").fetchone() == (42,)
        try:
            psycopg.connect(t.dsn("wrong"))
            raise AssertionError("a wrong token was let in")
        except psycopg.OperationalError as e:
            assert "password authentication failed" in str(e), e
    finally:
        t.stop()


def test_sqlalchemy_reflects_the_tables_and_queries(w):
    engine = sqlalchemy.create_engine(f"postgresql+psycopg://weir@{w.pg}/weir")
    inspector = sqlalchemy.inspect(engine)
    tables = inspector.get_table_names()
    assert "transactions" in tables and "transactions_per_minute" in tables, tables
    assert inspector.has_table("transactions") and not inspector.has_table("nope")
    # Column reflection: the same columns, in the same order, as the HTTP
    # API's schema of the table, with their types.
    http_columns = [r[0] for r in w.sql("SELECT column_name FROM information_schema.columns WHERE table_name = 'transactions' ORDER BY ordinal_position")]
    columns = inspector.get_columns("transactions")
    assert [c["name"] for c in columns] == http_columns, (columns, http_columns)
    types = {c["name"]: c["type"] for c in columns}
    assert isinstance(types["ts"], sqlalchemy.TIMESTAMP) and types["ts"].timezone, types
    assert isinstance(types["amount"], sqlalchemy.Float) and isinstance(types["country"], sqlalchemy.Text), types
    assert inspector.get_pk_constraint("transactions")["constrained_columns"] == []
    assert inspector.get_indexes("transactions") == [] and inspector.get_foreign_keys("transactions") == []
    # A table loaded by reflection, then queried.
    table = sqlalchemy.Table("transactions", sqlalchemy.MetaData(), autoload_with=engine)
    assert [c.name for c in table.columns] == http_columns
    query = (
        sqlalchemy.select(table.c.country, sqlalchemy.func.count().label("n"), sqlalchemy.func.sum(table.c.amount))
        .where(table.c.amount > 2.0)
        .group_by(table.c.country)
        .order_by(table.c.country)
    )
    with engine.connect() as conn:
        rows = [list(r) for r in conn.execute(query)]
    same(
        rows,
        w.sql(
            "SELECT country, count(*) AS n, sum(amount) FROM transactions WHERE amount > 2.0 GROUP BY country ORDER BY country"
        ),
        "sqlalchemy",
    )
    engine.dispose()


def test_a_grafana_time_series_query(w):
    # Grafana's PostgreSQL data source expands $__timeGroupAlias(ts, 1m) and
    # $__timeFilter(ts) into this, then sends it as it is.
    frm = dt.datetime.fromtimestamp(T0 + 60, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    to = dt.datetime.fromtimestamp(T0 + 420, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    sql = (
        'SELECT floor(extract(epoch from ts)/60)*60 AS "time", category AS metric, sum(amount) AS value '
        f"FROM transactions WHERE ts BETWEEN '{frm}' AND '{to}' GROUP BY 1, 2 ORDER BY 1, 2"
    )
    with psycopg.connect(w.dsn(), autocommit=True) as conn:
        rows = conn.execute(sql).fetchall()
    same(rows, w.sql(sql), "grafana")
    assert len({r[0] for r in rows}) == 7, rows


def test_adbc_fetches_arrow_tables_equal_to_the_http_api(w):
    sql = "SELECT category, country, sum(events) AS events, sum(amount_sum) AS amount FROM transactions_per_minute GROUP BY category, country ORDER BY category, country"
    with flightsql.connect(w.flight) as conn, conn.cursor() as cur:
        cur.execute(sql)
        table = cur.fetch_arrow_table()
        http = pyarrow.ipc.open_stream(w.http("/v1/sql", json.dumps({"sql": sql, "format": "arrow"}).encode())).read_all()
        assert table.num_rows == 12, table
        assert table.equals(http), f"{table}\n{http}"
        # A parameterized query, bound through a prepared statement.
        cur.execute("SELECT count(*) AS n FROM transactions WHERE category = $1", parameters=("travel",))
        assert cur.fetchone() == (150,)
        # The catalog, through ADBC's metadata call.
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        tables = [t["table_name"] for c in objects for s in c["catalog_db_schemas"] for t in s["db_schema_tables"]]
        assert "transactions" in tables, tables


def main():
    tests = [(name, f) for name, f in globals().items() if name.startswith("test_")]
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        w = Weir(["demo", "--rate", "0", "--listen", "127.0.0.1:0", "--pg-listen", "127.0.0.1:0", "--data-dir", f"{tmp}/demo"])
        try:
            w.http("/v1/ingest/transactions", transactions(), "application/x-ndjson")
            for _ in range(300):
                if json.loads(w.http("/v1/tables/transactions"))["counts"]["ingested"] == 600:
                    break
                threading.Event().wait(0.05)
            for name, f in tests:
                try:
                    f(tmp) if name == "test_a_bad_token_is_refused" else f(w)
                    print(f"✔ {name}")
                    passed += 1
                except Exception:
                    print(f"✖ {name}")
                    traceback.print_exc()
                    failed += 1
        finally:
            w.stop()
    print(f"ℹ pass {passed}")
    print(f"ℹ fail {failed}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
