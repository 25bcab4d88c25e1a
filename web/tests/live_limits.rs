//! Live connections under tokens and limits: the real binary, a real WebSocket client.

mod common;

use common::Weir;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

async fn next_json<S>(ws: &mut S) -> Value
where
    S: StreamExt<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(20), ws.next())
            .await
            .expect("a message")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

fn status_of(e: WsError) -> u16 {
    match e {
        WsError::Http(resp) => resp.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_connections_need_the_query_scope_and_respect_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let weir = Weir::serve(
        dir.path(),
        "[limits]\nmax_live_connections = 1\nmax_tiles_per_connection = 1\n[auth]\ntokens = [\n  { name = \"reader\", token = \"reader-secret-0123456789\", scopes = [\"query\"] },\n  { name = \"writer\", token = \"writer-secret-0123456789\", scopes = [\"ingest\"] },\n]\n[[tables]]\nname = \"t\"\ntime = { field = \"ts\" }\ndimensions = [{ name = \"k\", type = \"string\" }]\n",
    );
    let url = |token: Option<&str>| match token {
        Some(t) => format!("ws://{}/v1/live?token={t}", weir.addr),
        None => format!("ws://{}/v1/live", weir.addr),
    };
    let Err(refused) = tokio_tungstenite::connect_async(url(None)).await else { panic!("no token is refused") };
    assert_eq!(status_of(refused), 401);
    let Err(refused) = tokio_tungstenite::connect_async(url(Some("nope-nope-nope-nope"))).await else {
        panic!("refused")
    };
    assert_eq!(status_of(refused), 401);
    let Err(refused) = tokio_tungstenite::connect_async(url(Some("writer-secret-0123456789"))).await else {
        panic!("under-scoped")
    };
    assert_eq!(status_of(refused), 403);

    let (mut ws, _) = tokio_tungstenite::connect_async(url(Some("reader-secret-0123456789"))).await.expect("connect");
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    ws.send(Message::text(json!({"op": "subscribe", "id": "a", "sql": "SELECT count(*) AS n FROM t"}).to_string()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");
    ws.send(Message::text(json!({"op": "subscribe", "id": "b", "sql": "SELECT 1 AS one"}).to_string())).await.unwrap();
    let e = next_json(&mut ws).await;
    assert_eq!((e["type"].as_str(), e["id"].as_str()), (Some("error"), Some("b")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("limits.max_tiles_per_connection"), "{e}");

    // A second connection while one is open goes over max_live_connections.
    let Err(refused) = tokio_tungstenite::connect_async(url(Some("reader-secret-0123456789"))).await else {
        panic!("over the limit")
    };
    assert_eq!(status_of(refused), 503);
    // The first connection still works.
    ws.send(Message::text(json!({"op": "ping"}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "pong");
}
