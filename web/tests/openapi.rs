//! docs/openapi.json documents exactly the routes the server serves, with their
//! methods. (`deploy/validate.sh` checks the document against the OpenAPI 3.1
//! schema with openapi-spec-validator.)

mod common;

use std::collections::BTreeSet;

use serde_json::Value;

/// (path, method) of every route an ingest process serves: the paths of
/// `weir_web::routes::ROUTES`, the methods of each endpoint's line in
/// `http::router` (`Endpoint::X => get(..).post(..)`).
fn served() -> BTreeSet<(String, String)> {
    let src = std::fs::read_to_string(common::package_dir().join("src/http.rs")).unwrap();
    let mut out = BTreeSet::new();
    for route in weir_web::routes::ROUTES {
        let arm = format!("Endpoint::{:?} =>", route.endpoint);
        let line = src.lines().map(str::trim).find(|l| l.starts_with(&arm));
        let rest = line.unwrap_or_else(|| panic!("http::router serves no {arm}"));
        for method in ["get", "post", "put", "delete"] {
            if rest.contains(&format!("{method}(")) {
                out.insert((route.path.to_string(), method.to_string()));
            }
        }
    }
    out
}

#[test]
fn the_openapi_document_lists_every_route_and_only_those() {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(common::package_dir().join("../docs/openapi.json")).unwrap())
            .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} has responses");
            documented.insert((path.clone(), method.clone()));
        }
    }
    let served = served();
    assert!(served.len() >= 12, "{served:?}");
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    assert!(extra.is_empty(), "documented but not served: {extra:?}");
}

/// Checks `value` against the object schema `name` of docs/openapi.json: every
/// required property is there, and every property it has is documented.
fn check_documented(doc: &Value, name: &str, value: &Value) {
    let schema = &doc["components"]["schemas"][name];
    let documented = schema["properties"].as_object().unwrap_or_else(|| panic!("{name} lists its properties"));
    let got = value.as_object().unwrap_or_else(|| panic!("{name}: {value}"));
    for key in schema["required"].as_array().into_iter().flatten() {
        assert!(got.contains_key(key.as_str().unwrap()), "{name}: required `{key}` missing from {value}");
    }
    let undocumented: Vec<&String> = got.keys().filter(|k| !documented.contains_key(*k)).collect();
    assert!(undocumented.is_empty(), "{name}: {undocumented:?} answered but not documented");
}

/// What the real binary answers matches the documented schemas, both ways
/// (the answers are typed in src/api.rs; this keeps the document true).
#[test]
fn the_table_documents_answered_are_the_documented_ones() {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(common::package_dir().join("../docs/openapi.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = common::Weir::demo(dir.path());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let line = format!(
        r#"{{"ts": {now}, "card": "c1", "merchant": "m", "category": "food", "amount": 1.5, "country": "FR"}}"#
    );
    let appended = w.ingest("transactions", &[line]);
    check_documented(&doc, "Appended", &appended);
    w.wait_caught_up("transactions", 1);
    let table = w.get_json("/v1/tables/transactions");
    check_documented(&doc, "TableStatus", &table);
    check_documented(&doc, "Counts", &table["counts"]);
    let list = w.get_json("/v1/tables");
    for t in list["tables"].as_array().unwrap() {
        check_documented(&doc, "TableSummary", t);
    }
}
