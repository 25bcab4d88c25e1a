use super::*;
use crate::decode::Decoder;

fn table(extra: &str) -> TableConfig {
    let src = format!(
        r#"
[[tables]]
name = "t"
time = {{ field = "ts" }}
{extra}
dimensions = [
  {{ name = "country", type = "string", path = "user.country" }},
  {{ name = "code", type = "string" }},
  {{ name = "region", type = "string", expr = "upper(country) || '-' || code" }},
  {{ name = "qty", type = "string" }},
]
metrics = [
  {{ name = "price", type = "float64" }},
  {{ name = "cents", type = "int64", expr = "CAST(price * 100 AS BIGINT) * CAST(qty AS BIGINT)" }},
]
"#
    );
    WeirConfig::from_toml(&src).unwrap().tables.remove(0)
}

fn run(t: &TableConfig, records: &[&str]) -> (Vec<Result<Vec<Val<'static>>, String>>, Vec<Outcome>) {
    let decoder = Decoder::new(t);
    let transforms = Transforms::new(t).unwrap().expect("the table has transforms");
    let mut decoded: Vec<_> = records.iter().map(|r| decoder.decode(r.as_bytes()).map(|d| d.into_owned())).collect();
    let outcomes = transforms.apply(&mut decoded);
    (decoded.into_iter().map(|d| d.map(|d| d.values.to_vec())).collect(), outcomes)
}

#[test]
fn derived_fields_are_computed_per_batch() {
    let t = table("");
    let (rows, outcomes) = run(
        &t,
        &[
            r#"{"ts":1,"user":{"country":"nl"},"code":"a","price":1.25,"qty":"2"}"#,
            r#"{"ts":2,"user":{"country":"de"},"code":"b","price":2,"qty":"3"}"#,
            r#"{"ts":3,"code":"c"}"#,
        ],
    );
    assert_eq!(outcomes, vec![Outcome::Keep; 3]);
    let row = rows[0].as_ref().unwrap();
    assert_eq!(row[2], Val::Str("NL-a".into()));
    assert_eq!(row[5], Val::I64(250));
    assert_eq!(rows[1].as_ref().unwrap()[5], Val::I64(600));
    // Nulls in, nulls out (SQL's rules), not errors.
    assert_eq!(rows[2].as_ref().unwrap()[2], Val::Null);
    assert_eq!(rows[2].as_ref().unwrap()[5], Val::Null);
}

#[test]
fn a_record_whose_expression_fails_is_dead_lettered_alone() {
    let t = table("");
    let (rows, _) = run(
        &t,
        &[
            r#"{"ts":1,"user":{"country":"nl"},"code":"a","price":1,"qty":"2"}"#,
            r#"{"ts":2,"user":{"country":"nl"},"code":"a","price":1,"qty":"two"}"#,
            r#"{"ts":3,"user":{"country":"nl"},"code":"a","price":1,"qty":"4"}"#,
            r#"not json"#,
        ],
    );
    assert_eq!(rows[0].as_ref().unwrap()[5], Val::I64(200));
    let reason = rows[1].as_ref().unwrap_err();
    assert!(
        reason.starts_with("derived field `cents` = `CAST(price * 100 AS BIGINT) * CAST(qty AS BIGINT)` failed:"),
        "{reason}"
    );
    assert!(reason.contains("two"), "{reason}");
    assert_eq!(rows[2].as_ref().unwrap()[5], Val::I64(400));
    assert!(rows[3].as_ref().unwrap_err().contains("invalid JSON"));
}

#[test]
fn the_filter_sees_derived_fields_and_drops_what_is_not_true() {
    let t = table(r#"filter = "region <> 'XX-x' AND cents > 100""#);
    let (rows, outcomes) = run(
        &t,
        &[
            r#"{"ts":1,"user":{"country":"nl"},"code":"a","price":1,"qty":"2"}"#,
            r#"{"ts":2,"user":{"country":"xx"},"code":"x","price":1,"qty":"2"}"#,
            r#"{"ts":3,"user":{"country":"nl"},"code":"a","price":1,"qty":"1"}"#,
            r#"{"ts":4,"code":"a","price":1,"qty":"9"}"#,
        ],
    );
    assert!(rows.iter().all(|r| r.is_ok()));
    // The last record's region is null: the filter is null, not true.
    assert_eq!(outcomes, vec![Outcome::Keep, Outcome::Filtered, Outcome::Filtered, Outcome::Filtered]);
}

#[test]
fn a_result_too_large_fails_the_record_not_the_process() {
    let src = r#"
[[tables]]
name = "t"
time = { field = "ts" }
dimensions = [
  { name = "s", type = "string" },
  { name = "n", type = "int64" },
  { name = "big", type = "string", expr = "repeat(s, n)" },
]
"#;
    let t = WeirConfig::from_toml(src).unwrap().tables.remove(0);
    let (rows, _) = run(&t, &[r#"{"ts":1,"s":"ab","n":3}"#, r#"{"ts":2,"s":"ab","n":2000000000}"#]);
    assert_eq!(rows[0].as_ref().unwrap()[2], Val::Str("ababab".into()));
    let reason = rows[1].as_ref().unwrap_err();
    assert!(reason.contains("repeat"), "{reason}");
}

#[test]
fn the_config_check_names_the_expression() {
    let check_of = |dims: &str, filter: &str| {
        let src = format!(
            "[[tables]]\nname = \"t\"\ntime = {{ field = \"ts\" }}\n{filter}\ndimensions = [{{ name = \"s\", type = \"string\" }}, {dims}]\n"
        );
        check(&WeirConfig::from_toml(&src).unwrap()).unwrap_err()
    };
    let e = check_of(r#"{ name = "d", type = "int64", expr = "nope + 1" }"#, "");
    assert_eq!(e.path, "tables[0].dimensions[1].expr");
    assert!(e.message.starts_with("derived field `d`:") && e.message.contains("nope"), "{}", e.message);
    let e = check_of(r#"{ name = "d", type = "int64", expr = "now()" }"#, "");
    assert!(e.message.contains("`now()` does not depend on the record"), "{}", e.message);
    let e = check_of(r#"{ name = "d", type = "int64", expr = "length(s)" }"#, r#"filter = "d + 1""#);
    assert_eq!(e.path, "tables[0].filter");
    assert!(e.message.contains("a filter must be true or false"), "{}", e.message);
    // Derived fields read the record's fields, not each other.
    let e = check_of(
        r#"{ name = "d", type = "int64", expr = "length(s)" }, { name = "e", type = "int64", expr = "d + 1" }"#,
        "",
    );
    assert_eq!(e.path, "tables[0].dimensions[2].expr");
}
