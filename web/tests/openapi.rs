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
