use super::*;
use weir_storage::config::WeirConfig;

fn table(extra: &str) -> TableConfig {
    let src = format!(
        r#"
[[tables]]
name = "t"
{extra}
time = {{ field = "ts" }}
dimensions = [
  {{ name = "card_id", type = "string", required = true }},
  {{ name = "n", type = "int64" }},
  {{ name = "flag", type = "bool" }},
]
metrics = [{{ name = "amount", type = "float64", required = true }}]
"#
    );
    WeirConfig::from_toml(&src).unwrap().tables.remove(0)
}

#[test]
fn a_good_record_decodes_with_borrowed_strings() {
    let d = Decoder::new(&table(""));
    let rec = br#"{"ts":"1970-01-01T00:00:01Z","card_id":"c1","amount":12,"extra":[1,{"a":2}],"flag":true}"#;
    let out = d.decode(rec).unwrap();
    assert_eq!(out.ts_ms, 1000);
    assert_eq!(out.values.to_vec(), vec![Val::Str("c1".into()), Val::Null, Val::Bool(true), Val::F64(12.0)]);
    assert!(matches!(out.values[0], Val::Str(Cow::Borrowed(_))));
    let esc = d.decode(br#"{"ts":5,"card_id":"a\"b","amount":1.5,"n":-3}"#).unwrap();
    assert_eq!(esc.values[0], Val::Str("a\"b".into()));
    assert_eq!(esc.values[1], Val::I64(-3));
}

#[test]
fn every_bad_record_gets_a_reason_naming_the_problem() {
    let d = Decoder::new(&table(""));
    let cases: &[(&[u8], &str)] = &[
        (b"{\"ts\":1,\"card_id\":\"c\",", "invalid JSON"),
        (b"not json", "invalid JSON"),
        (b"[1,2]", "expected a JSON object, got an array"),
        (b"\"str\"", "expected a JSON object, got a string"),
        (br#"{"card_id":"c","amount":1}"#, "missing event time field `ts`"),
        (br#"{"ts":"noon","card_id":"c","amount":1}"#, "field `ts`: `noon` is not an RFC 3339"),
        (br#"{"ts":1,"amount":1}"#, "missing required field `card_id`"),
        (br#"{"ts":1,"card_id":null,"amount":1}"#, "missing required field `card_id`"),
        (
            br#"{"ts":1,"card_id":"c","amount":"12.5"}"#,
            "field `amount`: expected a number (float64), got string \"12.5\"",
        ),
        (br#"{"ts":1,"card_id":7,"amount":1}"#, "field `card_id`: expected a string, got number 7"),
        (br#"{"ts":1,"card_id":"c","amount":1,"n":1.5}"#, "field `n`: expected an integer (int64), got number 1.5"),
        (br#"{"ts":1,"card_id":"c","amount":1,"n":18446744073709551615}"#, "does not fit in int64"),
        (br#"{"ts":1,"card_id":"c","card_id":"d","amount":1}"#, "field `card_id` appears twice"),
        (br#"{"ts":1,"card_id":"c","amount":1} trailing"#, "invalid JSON"),
        (br#"{"ts":-1,"card_id":"c","amount":1}"#, "outside 1970"),
        (b"\xff\xfe", "invalid JSON"),
    ];
    for (rec, want) in cases {
        let err = d.decode(rec).expect_err(&String::from_utf8_lossy(rec));
        assert!(err.contains(want), "record {:?}: reason {err:?} lacks {want:?}", String::from_utf8_lossy(rec));
    }
}

#[test]
fn unknown_fields_can_be_refused() {
    let d = Decoder::new(&table("unknown_fields = \"reject\""));
    let err = d.decode(br#"{"ts":1,"card_id":"c","amount":1,"colour":"red"}"#).unwrap_err();
    assert_eq!(err, "field `colour` is not declared by the table");
}

#[test]
fn partition_keys() {
    assert_eq!(partition_key(br#"{"a":1,"card_id":"c9"}"#, "card_id"), Some(b"c9".to_vec()));
    assert_eq!(partition_key(br#"{"card_id":42}"#, "card_id"), Some(b"42".to_vec()));
    assert_eq!(partition_key(br#"{"a":1}"#, "card_id"), None);
    assert_eq!(partition_key(b"garbage", "card_id"), None);
}

#[test]
fn deep_nesting_decodes_or_is_a_reason_never_a_stack_overflow() {
    let d = Decoder::new(&table(""));
    for depth in [200, 10_000, 1_000_000] {
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            // Nested in a field the table ignores, and in one it reads.
            let ignored = format!(r#"{{"ts":1,"card_id":"c","amount":1,"extra":{nested}}}"#);
            match d.decode(ignored.as_bytes()) {
                Ok(out) => assert_eq!(out.ts_ms, 1),
                Err(reason) => assert!(!reason.is_empty()),
            }
            let read = format!(r#"{{"ts":1,"card_id":{nested},"amount":1}}"#);
            let reason = d.decode(read.as_bytes()).err().unwrap_or_else(|| panic!("depth {depth} as card_id"));
            assert!(reason.contains("card_id") || reason.contains("recursion"), "{reason}");
        }
    }
}

fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(".{0,8}", inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    /// Records of any shape, with the table's fields of any type, decode or
    /// name their error; never panic.
    #[test]
    fn records_of_any_shape_never_panic(
        ts in json_value(), card in json_value(), amount in json_value(), extra in json_value(),
    ) {
        let d = Decoder::new(&table(""));
        let rec = serde_json::json!({"ts": ts, "card_id": card, "amount": amount, "extra": extra}).to_string();
        let _ = d.decode(rec.as_bytes());
        let _ = partition_key(rec.as_bytes(), "card_id");
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
        let d = Decoder::new(&table(""));
        let _ = d.decode(&bytes);
        let _ = partition_key(&bytes, "card_id");
    }
}

fn nested() -> TableConfig {
    let src = r#"
[[tables]]
name = "t"
time = { field = "ts", path = "meta.at" }
dimensions = [
  { name = "country", type = "string", path = "user.geo.country" },
  { name = "first_sku", type = "string", path = "items[0].sku", required = true },
  { name = "second_qty", type = "int64", path = "items[1].qty" },
  { name = "kind", type = "string" },
]
metrics = [{ name = "price", type = "float64", path = "order.price" }]
"#;
    WeirConfig::from_toml(src).unwrap().tables.remove(0)
}

#[test]
fn paths_read_nested_objects_and_arrays() {
    let d = Decoder::new(&nested());
    let rec = br#"{"kind":"buy","user":{"id":7,"geo":{"country":"NL","city":"Delft"}},
        "items":[{"sku":"a1","qty":2},{"sku":"b2","qty":5},{"sku":"c3"}],
        "order":{"price":9.5,"lines":[1,2]},"meta":{"at":"1970-01-01T00:00:02Z"}}"#;
    let out = d.decode(rec).unwrap();
    assert_eq!(out.ts_ms, 2000);
    assert_eq!(
        out.values.to_vec(),
        vec![Val::Str("NL".into()), Val::Str("a1".into()), Val::I64(5), Val::Str("buy".into()), Val::F64(9.5)]
    );
    // A branch that is missing, null or not an object leaves its fields missing.
    let out = d.decode(br#"{"meta":{"at":1},"user":null,"items":[{"sku":"x"}],"order":"n/a"}"#).unwrap();
    assert_eq!(out.values.to_vec(), vec![Val::Null, Val::Str("x".into()), Val::Null, Val::Null, Val::Null]);
}

#[test]
fn bad_nested_values_are_named_with_their_path() {
    let d = Decoder::new(&nested());
    let cases: &[(&[u8], &str)] = &[
        (br#"{"meta":{"at":1},"items":[]}"#, "missing required field `first_sku` (at `items[0].sku`)"),
        (
            br#"{"meta":{"at":1},"items":[{"sku":3}]}"#,
            "field `first_sku` (at `items[0].sku`): expected a string, got number 3",
        ),
        (br#"{"items":[{"sku":"a"}]}"#, "missing event time field `ts` (at `meta.at`)"),
        (br#"{"meta":{"at":1,"at":2},"items":[{"sku":"a"}]}"#, "field `at` appears twice"),
        (br#"{"meta":{"at":1},"items":[{"sku":"a"}],"user":{"geo":{"country":{"a":1}}}}"#, "got an object"),
    ];
    for (rec, want) in cases {
        let err = d.decode(rec).unwrap_err();
        assert!(err.contains(want), "{}: {err}", String::from_utf8_lossy(rec));
    }
    // Deep nesting off the declared paths is skipped without recursion.
    let deep = format!(
        r#"{{"meta":{{"at":1}},"items":[{{"sku":"a"}}],"user":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(d.decode(deep.as_bytes()).unwrap().values[1], Val::Str("a".into()));
}
