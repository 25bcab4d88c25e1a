//! Arrow Flight SQL, end to end: the real `weir` binary and `arrow-flight`'s
//! Flight SQL client. Every answer is compared with the HTTP API's Arrow
//! answer to the same SQL, batch for batch in content.
//!
//! ADBC (`adbc-driver-flightsql`) is tested by `tests/clients/run.sh`.

mod common;

use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, RecordBatch, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetTables, SqlInfo};
use common::Weir;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn client(w: &Weir) -> FlightSqlServiceClient<Channel> {
    let url = w.flight.clone().expect("the process serves Flight SQL").replace("grpc://", "http://");
    let channel = Endpoint::from_shared(url).unwrap().connect().await.unwrap();
    FlightSqlServiceClient::new(channel)
}

/// Every batch of every endpoint of `info`, concatenated.
async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Result<RecordBatch, String> {
    let schema = Arc::new(info.clone().try_decode_schema().map_err(|e| e.to_string())?);
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("a ticket");
        let stream = client.do_get(ticket).await.map_err(|e| e.to_string())?;
        batches.extend(stream.try_collect::<Vec<_>>().await.map_err(|e| e.to_string())?);
    }
    concat_batches(&schema, &batches).map_err(|e| e.to_string())
}

/// The HTTP API's answer in Arrow IPC, concatenated.
fn http_arrow(w: &Weir, sql: &str) -> RecordBatch {
    let r = w.sql_raw(sql, "arrow");
    assert_eq!(r.status, 200, "{sql}: {}", r.text());
    let reader = arrow::ipc::reader::StreamReader::try_new(r.body.as_slice(), None).unwrap();
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    concat_batches(&schema, &batches).unwrap()
}

fn transactions() -> Vec<String> {
    (0..600)
        .map(|i| {
            format!(
                r#"{{"ts":{},"card_id":"card-{:03}","merchant":"m{}","category":"{}","country":"{}","status":"approved","amount":{}}}"#,
                1_795_000_000_000i64 + i * 1000,
                i % 97,
                i % 5,
                ["grocery", "fuel", "travel", "online"][i as usize % 4],
                ["DE", "FR", "US"][i as usize % 3],
                (i % 37) as f64 * 0.25 + 1.0
            )
        })
        .collect()
}

#[test]
fn statements_and_prepared_statements_answer_as_the_http_api() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::demo(dir.path());
    w.ingest("transactions", &transactions());
    w.wait_caught_up("transactions", 600);
    rt().block_on(async {
        let mut c = client(&w).await;
        for sql in [
            "SELECT category, sum(events) AS events, sum(amount_sum) AS amount FROM transactions_per_minute \
             GROUP BY category ORDER BY category",
            "SELECT ts, card_id, amount FROM transactions ORDER BY ts, card_id",
            "SELECT bucket, category, country, distinct_cards FROM transactions_per_minute \
             ORDER BY bucket, category, country",
        ] {
            let info = c.execute(sql.to_string(), None).await.unwrap();
            let got = fetch(&mut c, info).await.unwrap();
            let want = http_arrow(&w, sql);
            assert!(want.num_rows() > 0, "{sql}");
            assert_eq!(got.columns(), want.columns(), "{sql}");
        }

        // A prepared statement with a parameter, bound by DoPut.
        let sql = "SELECT card_id, sum(amount) AS total FROM transactions WHERE country = $1 \
                   GROUP BY card_id ORDER BY card_id";
        let mut prepared = c.prepare(sql.to_string(), None).await.unwrap();
        let params = prepared.parameter_schema().unwrap().clone();
        assert_eq!(params.fields().len(), 1);
        let schema = Arc::new(Schema::new(vec![Field::new("$1", DataType::Utf8, true)]));
        let values = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["FR"]))]).unwrap();
        prepared.set_parameters(values).unwrap();
        let info = prepared.execute().await.unwrap();
        let got = fetch(&mut c, info).await.unwrap();
        let want = http_arrow(&w, &sql.replace("$1", "'FR'"));
        assert_eq!(got.columns(), want.columns());
        let totals: &Float64Array = got.column(1).as_primitive();
        assert!(totals.len() > 10 && totals.null_count() == 0);
        prepared.close().await.unwrap();

        // Metadata: tables with their schemas, and what the server is.
        let info = c
            .get_tables(CommandGetTables {
                catalog: None,
                db_schema_filter_pattern: None,
                table_name_filter_pattern: Some("transactions%".into()),
                table_types: vec![],
                include_schema: true,
            })
            .await
            .unwrap();
        let tables = fetch(&mut c, info).await.unwrap();
        let names: Vec<&str> =
            tables.column_by_name("table_name").unwrap().as_string::<i32>().iter().flatten().collect();
        assert!(names.contains(&"transactions") && names.contains(&"transactions_per_minute"), "{names:?}");
        let info = c.get_sql_info(vec![SqlInfo::FlightSqlServerName, SqlInfo::FlightSqlServerReadOnly]).await.unwrap();
        let infos = fetch(&mut c, info).await.unwrap();
        assert_eq!(infos.num_rows(), 2);
        let info = c.get_catalogs().await.unwrap();
        let catalogs = fetch(&mut c, info).await.unwrap();
        assert_eq!(catalogs.column(0).as_string::<i32>().value(0), "weir");

        // Refusals are statuses with Weir's message, and the service goes on.
        let e = c.execute("DROP TABLE transactions".into(), None).await.unwrap_err().to_string();
        assert!(e.contains("PermissionDenied") || e.contains("not allowed"), "{e}");
        let e = c.execute("SELECT nope FROM transactions".into(), None).await.unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        let huge = format!("SELECT '{}'", "x".repeat(80 << 20));
        let e = c.execute(huge, None).await.unwrap_err().to_string();
        assert!(e.to_lowercase().contains("message") || e.contains("large"), "{e}");
        let info = c.execute("SELECT 1 AS one".into(), None).await.unwrap();
        assert_eq!(fetch(&mut c, info).await.unwrap().num_rows(), 1);
    });
    let metrics = w.request("GET", "/metrics", b"").text();
    assert!(metrics.contains("weir_flight_queries_total{outcome=\"ok\"}"), "{metrics}");
}

#[test]
fn calls_need_a_token_with_the_query_scope() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::serve(
        dir.path(),
        "flight_listen = \"127.0.0.1:0\"\n[auth]\ntokens = [\n\
         { name = \"d\", token = \"query-secret-of-16-bytes\", scopes = [\"query\"] },\n\
         { name = \"p\", token = \"ingest-secret-of-16-bytes\", scopes = [\"ingest\"] },\n]\n",
    );
    rt().block_on(async {
        let mut c = client(&w).await;
        let e = c.execute("SELECT 1".into(), None).await.unwrap_err().to_string();
        assert!(e.contains("Unauthenticated") || e.contains("token"), "{e}");
        c.set_token("ingest-secret-of-16-bytes".into());
        let e = c.execute("SELECT 1".into(), None).await.unwrap_err().to_string();
        assert!(e.contains("query` scope"), "{e}");
        // The handshake: Basic auth whose password is the token.
        let mut c = client(&w).await;
        assert!(c.handshake("weir", "wrong-token-of-16-bytes").await.is_err());
        c.handshake("weir", "query-secret-of-16-bytes").await.unwrap();
        let info = c.execute("SELECT 40 + 2 AS answer".into(), None).await.unwrap();
        let got = fetch(&mut c, info).await.unwrap();
        assert_eq!(got.num_rows(), 1);
    });
}

#[test]
fn a_client_that_stops_reading_is_cut_off_at_the_query_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::serve(dir.path(), "flight_listen = \"127.0.0.1:0\"\n[query]\ntimeout = \"2s\"\n");
    rt().block_on(async {
        let mut c = client(&w).await;
        let sql = "SELECT v, repeat('x', 1000) AS x FROM generate_series(1, 2000000) AS t(v)";
        let info = c.execute(sql.into(), None).await.unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        // Take the stream and read nothing from it.
        let stalled = c.do_get(ticket).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let metrics = w.request("GET", "/metrics", b"").text();
            if metrics.contains("weir_flight_queries_total{outcome=\"error\"} 1")
                && metrics.contains("weir_query_running 0")
            {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the stalled stream was not ended: {metrics}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        drop(stalled);
        // The service goes on.
        let mut c = client(&w).await;
        let info = c.execute("SELECT 1 AS one".into(), None).await.unwrap();
        assert_eq!(fetch(&mut c, info).await.unwrap().num_rows(), 1);
    });
}
