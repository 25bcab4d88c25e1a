//! `weir segments`: what a table has sealed, read from its manifest.
//!
//! Reads the newest manifest straight from the object store, so it works with or
//! without a running server (manifest versions are immutable: reading one while a
//! server commits the next is safe). The same listing is served at
//! `GET /v1/tables/{name}/segments`.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use weir_ingest::time::format_ms;
use weir_storage::config::WeirConfig;
use weir_storage::manifest::{self, Manifest, SegmentKind};
use weir_storage::store::Store;

use crate::api::{NodeManifest, NodeSegments, Segments};

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// A manifest as a table for a terminal.
pub fn to_text(m: &Manifest, store: &str) -> String {
    let mut out = String::new();
    let _ =
        writeln!(out, "table {} in {store}: manifest version {}, {} segment(s)", m.table, m.version, m.segments.len());
    let _ = writeln!(
        out,
        "{:<6} {:<9} {:<45} {:>10} {:>8} {:>8} {:>10}  coverage (offsets below, per partition)",
        "id", "kind", "time range (UTC)", "rows", "late", "dead", "bytes"
    );
    for s in &m.segments {
        let range = match (s.start_ms, s.end_ms) {
            (Some(a), Some(b)) => format!("{} .. {}", format_ms(a), format_ms(b)),
            _ => "(late rows, dead letters, sessions)".to_string(),
        };
        let kind = match s.kind {
            SegmentKind::Base => "base",
            SegmentKind::Delta => "delta",
            SegmentKind::Compacted => "compacted",
            SegmentKind::Side => "side",
        };
        let coverage: Vec<String> = s.coverage.iter().enumerate().map(|(p, o)| format!("p{p}<{o}")).collect();
        let _ = writeln!(
            out,
            "{:<6} {:<9} {:<45} {:>10} {:>8} {:>8} {:>10}  {}",
            s.id,
            kind,
            range,
            s.ingested,
            s.late,
            s.dead_lettered,
            human_bytes(s.bytes()),
            coverage.join(" ")
        );
    }
    if let Some(r) = &m.replay {
        let from: Vec<String> = r.from.iter().enumerate().map(|(p, o)| format!("p{p}={o}")).collect();
        let _ = writeln!(
            out,
            "built by replay {} of `{}` from offsets {}, switched in {}",
            r.job,
            r.source,
            from.join(" "),
            format_ms(r.switched_ms)
        );
    }
    let resume: Vec<String> = m.resume.iter().enumerate().map(|(p, r)| format!("p{p}={}", r.offset)).collect();
    let _ = writeln!(out, "a restart resumes reading at: {}", resume.join(" "));
    out
}

/// The config a command without a server works from: the file's, or the demo's,
/// with the overrides; it must name `table`.
pub(crate) fn local_config(
    table: &str,
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
) -> anyhow::Result<WeirConfig> {
    let mut cfg = match &config {
        Some(path) => {
            let src = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            WeirConfig::from_toml(&src).with_context(|| format!("in {}", path.display()))?
        }
        None => WeirConfig::from_toml(weir_ingest::generator::DEMO_CONFIG).context("the built-in demo config")?,
    };
    if let Some(d) = data_dir {
        cfg.server.data_dir = d;
    }
    if let Some(url) = store {
        cfg.storage.url = Some(url);
    }
    if cfg.table(table).is_none() {
        let names: Vec<&str> = cfg.tables.iter().map(|t| t.name.as_str()).collect();
        anyhow::bail!("no table `{table}` in the config; its tables are: {}", names.join(", "));
    }
    Ok(cfg)
}

/// Runs `weir segments`.
pub fn run(
    table: &str,
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    as_json: bool,
) -> anyhow::Result<()> {
    let cfg = local_config(table, config, data_dir, store)?;
    let store = Store::open(&cfg.storage, &cfg.server.data_dir).context("opening the object store")?;
    let url = store.url().to_string();
    let name = table.to_string();
    if cfg.table(table).and_then(|t| t.kafka.as_ref()).is_some_and(|k| k.rebalance) {
        // Each process sharing the table's partitions keeps its own manifest.
        let nodes = weir_storage::runtime::block_on(async move { manifest::load_nodes(&store, &name).await })?;
        if nodes.is_empty() {
            println!("table `{table}` shares its Kafka partitions between processes; none has sealed anything yet");
        }
        let mut all = Vec::new();
        for (node, m) in &nodes {
            if as_json {
                all.push(NodeManifest { node: node.clone(), manifest: Segments::of(m, &url) });
            } else {
                println!("node `{node}`:");
                print!("{}", to_text(m, &url));
            }
        }
        if as_json {
            println!("{}", serde_json::to_string_pretty(&NodeSegments { table: table.to_string(), nodes: all })?);
        }
        return Ok(());
    }
    let loaded =
        weir_storage::runtime::block_on(async move { manifest::load(&store, &manifest::table_root(&name)).await })?;
    let m = loaded.unwrap_or_else(|| {
        let t = cfg.table(table).expect("checked above");
        Manifest::empty(&t.name, t.partitions, t.segment_granularity_ms)
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&Segments::of(&m, &url))?);
    } else {
        print!("{}", to_text(&m, &url));
    }
    Ok(())
}

/// Asks a running server to seal (`action` = "seal") or compact a table now, and
/// prints its answer.
pub fn request(server: &str, table: &str, action: &str, token: Option<&str>) -> anyhow::Result<()> {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let uri = crate::produce::endpoint(server, &format!("/v1/tables/{table}/{action}"))?;
    let rt = weir_storage::runtime::own_thread()?;
    let v = rt
        .block_on(async {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            crate::produce::answer(&client, hyper::Request::post(uri), token, Bytes::new()).await
        })
        .with_context(|| format!("{action} `{table}`"))?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
