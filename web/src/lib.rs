//! Weir's top layer: the HTTP API and the `weir` binary's wiring.
//!
//! ```text
//! weir demo | weir serve --config F
//!   -> app::App::start     log (recovered), topics, hot tiers, one reader per table,
//!                          query service (its own runtime)
//!   -> http::router        POST /v1/ingest/{table} -> log append
//!                          POST /v1/sql            -> QueryService -> JSON/NDJSON/CSV/Arrow
//!                          GET  /v1/tables[/{name}] -> config + hot-tier status
//!                          GET  /v1/live  (WebSocket) -> live::connection <- TileHub
//!                          GET  /v1/internal/* -> internal (for query processes)
//!   -> server::run         serves until Ctrl-C/SIGTERM or a failed reader, then
//!                          App::shutdown (stop appends, generator, readers; flush)
//! weir serve --query-only --ingest URL,...
//!   -> query_node::QueryNode::start   store, remote::RemoteTier (polls and gathers
//!                          the ingest processes' own snapshots), query service
//!   -> query_node::router  SQL, live, tables, metrics, readyz; 409 for the rest
//! weir produce             NDJSON from a file or stdin -> POST /v1/ingest/{table}
//! ```
//!
//! Both routers take their paths and scopes from `routes::ROUTES` (the token
//! check in `auth` reads the same table) and share the handlers every process
//! serves (`serving`: SQL, live tiles). Modules import each other without a
//! circle (checked by a test below): `counters`, `live`, `routes`, `wire` and
//! `error` are leaves; `serving` sits on them; `app` and `query_node` are the two
//! kinds of process; `http`, `internal` and `metrics` serve an `app`.

pub mod accept;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod counters;
pub mod dashboard;
pub mod error;
pub mod flight;
pub mod generator;
pub mod http;
pub mod internal;
pub mod live;
pub mod metrics;
pub mod pg;
pub mod produce;
pub mod query_node;
pub mod remote;
pub mod replay;
pub mod routes;
pub mod segments;
pub mod server;
pub mod serving;
pub mod table_api;
pub mod tls;
pub mod wire;

/// The modules of this crate import each other without a circle: each file's
/// `crate::` imports, followed from every module, never lead back to it.
#[cfg(test)]
mod module_graph {
    use std::collections::{BTreeMap, BTreeSet};

    fn imports() -> BTreeMap<String, BTreeSet<String>> {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut files = vec![src.clone()];
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().to_string_lossy().to_string();
            // A file's module is its top-level module (`live/connection.rs` is `live`);
            // tests may import what they test.
            let module = rel.split(['/', '.']).next().unwrap().to_string();
            if matches!(module.as_str(), "lib" | "main") || rel.ends_with("tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.split("#[cfg(test)]").next().unwrap();
            let uses = graph.entry(module.clone()).or_default();
            for (i, _) in text.match_indices("crate::") {
                let name: String = text[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
        }
        graph
    }

    #[test]
    fn the_web_crate_s_modules_form_no_circle() {
        let graph = imports();
        assert!(graph.len() > 10, "{graph:?}");
        // Depth-first search for a back edge; the path names the circle.
        fn visit<'a>(
            m: &'a str,
            graph: &'a BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) {
            if done.contains(m) {
                return;
            }
            if let Some(at) = path.iter().position(|p| *p == m) {
                panic!("the modules import each other in a circle: {} -> {m}", path[at..].join(" -> "));
            }
            path.push(m);
            for next in graph.get(m).into_iter().flatten() {
                visit(next, graph, path, done);
            }
            path.pop();
            done.insert(m);
        }
        let mut done = BTreeSet::new();
        for m in graph.keys() {
            visit(m, &graph, &mut Vec::new(), &mut done);
        }
    }
}
