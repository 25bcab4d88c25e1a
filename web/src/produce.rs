//! `weir produce`: NDJSON from a file or standard input, appended to a table's log
//! through the server's ingest endpoint, in batches.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub fn run(server: &str, table: &str, file: Option<&Path>, batch: usize, token: Option<&str>) -> anyhow::Result<()> {
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    let input: Box<dyn Read> = match file {
        Some(p) if p != Path::new("-") => {
            Box::new(std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?)
        }
        _ => Box::new(std::io::stdin()),
    };
    let uri = endpoint(server, &format!("/v1/ingest/{table}"))?;
    let rt = weir_storage::runtime::own_thread()?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut reader = BufReader::new(input);
    let mut appended: u64 = 0;
    let mut line = Vec::new();
    let mut body = Vec::new();
    let mut in_body = 0;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).context("reading the input")?;
        if n > 0 && !line.iter().all(u8::is_ascii_whitespace) {
            body.extend_from_slice(&line);
            if !line.ends_with(b"\n") {
                body.push(b'\n');
            }
            in_body += 1;
        }
        if (n == 0 && in_body > 0) || in_body >= batch {
            let sent = rt
                .block_on(post(&client, &uri, token, std::mem::take(&mut body)))
                .with_context(|| format!("after {appended} records were appended"))?;
            appended += sent;
            in_body = 0;
        }
        if n == 0 {
            break;
        }
    }
    println!("appended {appended} records to table `{table}`");
    Ok(())
}

async fn post<C>(
    client: &Client<C, Full<Bytes>>,
    uri: &hyper::Uri,
    token: Option<&str>,
    body: Vec<u8>,
) -> anyhow::Result<u64>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let req = hyper::Request::post(uri.clone()).header("content-type", "application/x-ndjson");
    let v = answer(client, req, token, Bytes::from(body)).await?;
    v["appended"].as_u64().context("the server's answer has no `appended` count")
}

/// `server` (an http:// base URL) joined with `path`.
pub(crate) fn endpoint(server: &str, path: &str) -> anyhow::Result<hyper::Uri> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let uri: hyper::Uri = url.parse().with_context(|| format!("`{url}` is not a valid URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("--server must be an http:// URL, got `{server}`");
    }
    Ok(uri)
}

/// Sends a request (with the bearer token, if any) and returns its JSON answer; a
/// status other than success becomes an error carrying the server's message.
pub(crate) async fn answer<C>(
    client: &Client<C, Full<Bytes>>,
    req: hyper::http::request::Builder,
    token: Option<&str>,
    body: Bytes,
) -> anyhow::Result<serde_json::Value>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let uri = req.uri_ref().cloned().unwrap_or_default();
    let req = match token {
        Some(t) => req.header("authorization", format!("Bearer {t}")),
        None => req,
    };
    let resp = client
        .request(req.body(Full::new(body))?)
        .await
        .with_context(|| format!("sending to {uri}: is the server running?"))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let msg = v["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into());
        bail!("the server refused ({status}): {msg}");
    }
    Ok(v)
}
