//! The messages of the live protocol, version 1 (docs/live.md): client messages
//! parsed with errors a client can act on, server messages encoded as JSON text.
//! Tile results are encoded once per publish by the hub and spliced in here.

use serde::Deserialize;
use serde_json::{Value, json};
use weir_query::live::{DEFAULT_RATE_HZ, Published};

/// The protocol version every server message carries as `"v"`.
pub const PROTOCOL: u32 = 1;
/// The longest tile id.
pub const MAX_ID_CHARS: usize = 256;

/// A message from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Subscribe { id: String, sql: String, max_rate_hz: f64, key: Option<Vec<String>> },
    Unsubscribe { id: String },
    Ping,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribe {
    #[allow(dead_code)]
    op: String,
    id: String,
    sql: String,
    max_rate_hz: Option<f64>,
    key: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Unsubscribe {
    #[allow(dead_code)]
    op: String,
    id: String,
}

const OPS: &str = "subscribe, unsubscribe or ping";

/// Parses one text frame. The error is the message of an id-less `error` reply.
pub fn parse(text: &str) -> Result<ClientMessage, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("the message is not JSON: {e}"))?;
    let op = match value.get("op") {
        Some(Value::String(op)) => op.clone(),
        _ => return Err(format!("a message is a JSON object with an \"op\": {OPS}")),
    };
    let message = match op.as_str() {
        "subscribe" => {
            let s: Subscribe = serde_json::from_value(value).map_err(|e| format!("bad subscribe: {e}"))?;
            ClientMessage::Subscribe {
                id: check_id(s.id)?,
                sql: s.sql,
                max_rate_hz: s.max_rate_hz.unwrap_or(DEFAULT_RATE_HZ),
                key: s.key,
            }
        }
        "unsubscribe" => {
            let u: Unsubscribe = serde_json::from_value(value).map_err(|e| format!("bad unsubscribe: {e}"))?;
            ClientMessage::Unsubscribe { id: check_id(u.id)? }
        }
        "ping" => ClientMessage::Ping,
        other => return Err(format!("unknown op `{other}`: use {OPS}")),
    };
    Ok(message)
}

fn check_id(id: String) -> Result<String, String> {
    if id.is_empty() || id.chars().count() > MAX_ID_CHARS {
        return Err(format!("a tile id is a string of 1 to {MAX_ID_CHARS} characters"));
    }
    Ok(id)
}

pub fn hello(heartbeat_ms: u128) -> String {
    json!({ "v": PROTOCOL, "type": "hello", "protocol": PROTOCOL, "heartbeat_ms": heartbeat_ms }).to_string()
}

pub fn pong() -> String {
    json!({ "v": PROTOCOL, "type": "pong" }).to_string()
}

pub fn heartbeat() -> String {
    json!({ "v": PROTOCOL, "type": "heartbeat" }).to_string()
}

pub fn unsubscribed(id: &str) -> String {
    json!({ "v": PROTOCOL, "type": "unsubscribed", "id": id }).to_string()
}

/// An error about tile `id`, or about a message the server could not read.
pub fn error(id: Option<&str>, message: &str) -> String {
    match id {
        Some(id) => json!({ "v": PROTOCOL, "type": "error", "id": id, "message": message }),
        None => json!({ "v": PROTOCOL, "type": "error", "message": message }),
    }
    .to_string()
}

pub fn snapshot(id: &str, published: &Published, skipped: u64) -> String {
    format!(
        r#"{{"v":{PROTOCOL},"type":"snapshot","id":{},{},"skipped":{skipped}}}"#,
        Value::from(id),
        published.snapshot_fields()
    )
}

/// The update to `published` from the result before it; `None` when it has no diff.
pub fn update(id: &str, published: &Published) -> Option<String> {
    let fields = published.update_fields()?;
    Some(format!(r#"{{"v":{PROTOCOL},"type":"update","id":{},{fields}}}"#, Value::from(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Any text is a message or a named error; never a panic.
        #[test]
        fn any_text_parses_or_is_named(text in ".{0,200}") {
            if let Err(e) = parse(&text) {
                proptest::prop_assert!(!e.is_empty());
            }
        }

        /// Messages of the right shape with fields of any JSON type or size: a
        /// subscribe that parses keeps its id within bounds.
        #[test]
        fn fields_of_any_type_parse_or_are_named(
            op in proptest::prop_oneof![proptest::strategy::Just("subscribe".to_string()), ".{0,12}"],
            id_len in 0usize..400,
            rate in proptest::num::f64::ANY,
            key_is_text in proptest::bool::ANY,
            depth in 0usize..300,
        ) {
            let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let key = if key_is_text { "\"k\"".to_string() } else { nested };
            let rate = if rate.is_finite() { rate.to_string() } else { "1e999".to_string() };
            let text = format!(
                r#"{{"op":{},"id":"{}","sql":"SELECT 1","max_rate_hz":{rate},"key":{key}}}"#,
                serde_json::Value::from(op.clone()),
                "x".repeat(id_len)
            );
            if let Ok(ClientMessage::Subscribe { id, .. }) = parse(&text) {
                proptest::prop_assert!(!id.is_empty() && id.chars().count() <= MAX_ID_CHARS);
            }
        }
    }

    #[test]
    fn client_messages_parse_with_defaults() {
        assert_eq!(
            parse(r#"{"op":"subscribe","id":"t1","sql":"SELECT 1"}"#),
            Ok(ClientMessage::Subscribe { id: "t1".into(), sql: "SELECT 1".into(), max_rate_hz: 10.0, key: None })
        );
        assert_eq!(
            parse(r#"{"op":"subscribe","id":"t1","sql":"SELECT 1","max_rate_hz":2.5,"key":["a"]}"#),
            Ok(ClientMessage::Subscribe {
                id: "t1".into(),
                sql: "SELECT 1".into(),
                max_rate_hz: 2.5,
                key: Some(vec!["a".into()])
            })
        );
        assert_eq!(parse(r#"{"op":"unsubscribe","id":"t1"}"#), Ok(ClientMessage::Unsubscribe { id: "t1".into() }));
        assert_eq!(parse(r#"{"op":"ping"}"#), Ok(ClientMessage::Ping));
    }

    #[test]
    fn unreadable_messages_say_what_is_wrong() {
        let cases = [
            ("nope", "the message is not JSON: expected ident at line 1 column 2"),
            ("[1]", r#"a message is a JSON object with an "op": subscribe, unsubscribe or ping"#),
            (r#"{"op":"stats"}"#, "unknown op `stats`: use subscribe, unsubscribe or ping"),
            (r#"{"op":"subscribe","sql":"SELECT 1"}"#, "bad subscribe: missing field `id`"),
            (r#"{"op":"unsubscribe"}"#, "bad unsubscribe: missing field `id`"),
            (r#"{"op":"subscribe","id":"","sql":"SELECT 1"}"#, "a tile id is a string of 1 to 256 characters"),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Err(expected.to_string()), "{text}");
        }
        let typo = parse(r#"{"op":"subscribe","id":"t","sql":"SELECT 1","max_rate":1}"#).unwrap_err();
        assert!(typo.starts_with("bad subscribe: unknown field `max_rate`"), "{typo}");
    }

    #[test]
    fn server_messages_are_pinned() {
        assert_eq!(hello(15000), r#"{"heartbeat_ms":15000,"protocol":1,"type":"hello","v":1}"#);
        assert_eq!(pong(), r#"{"type":"pong","v":1}"#);
        assert_eq!(heartbeat(), r#"{"type":"heartbeat","v":1}"#);
        assert_eq!(unsubscribed("t1"), r#"{"id":"t1","type":"unsubscribed","v":1}"#);
        assert_eq!(error(Some("t1"), "bad"), r#"{"id":"t1","message":"bad","type":"error","v":1}"#);
        assert_eq!(error(None, "bad"), r#"{"message":"bad","type":"error","v":1}"#);
    }
}
