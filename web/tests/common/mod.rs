//! Helpers for end-to-end tests: spawn the real `weir` binary, talk HTTP to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod cards;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod moto;

pub const BIN: &str = env!("CARGO_BIN_EXE_weir");

/// A running `weir` process.
pub struct Weir {
    pub child: Child,
    pub base: String,
    pub addr: String,
    /// Where it listens for Postgres clients (`host:port`), if it does.
    pub pg: Option<String>,
    /// Its Flight SQL URL (`grpc://host:port`), if it serves it.
    pub flight: Option<String>,
}

impl Weir {
    /// Starts `weir ARGS...` and waits for its "listening on" line.
    pub fn start(args: &[&str]) -> Weir {
        Self::start_with_env(args, &[])
    }

    /// Like [`Weir::start`], with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Weir {
        let mut child = Command::new(BIN)
            .args(args)
            .env("WEIR_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning weir");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines.next().expect("weir exited before listening").unwrap();
            if let Some(url) = line.strip_prefix("weir listening on ") {
                break url.trim().to_string();
            }
        };
        // The banner's next lines name the Postgres and Flight SQL addresses,
        // when there are.
        let (mut pg, mut flight) = (None, None);
        for line in lines.by_ref() {
            let line = line.unwrap_or_default();
            if let Some(rest) = line.strip_prefix("  postgres:     postgres://") {
                pg = rest.split_once('@').and_then(|(_, rest)| rest.split_once('/')).map(|(a, _)| a.to_string());
            } else if let Some(rest) = line.strip_prefix("  flight sql:   ") {
                flight = Some(rest.trim().to_string());
            } else {
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let addr = base.trim_start_matches("http://").to_string();
        Weir { child, base, addr, pg, flight }
    }

    /// Starts `weir serve` on a config written by [`write_config`].
    pub fn serve(dir: &Path, body: &str) -> Weir {
        let cfg = write_config(dir, body);
        Self::start(&["serve", "--config", cfg.to_str().unwrap()])
    }

    pub fn demo(data_dir: &Path) -> Weir {
        Self::start(&["demo", "--rate", "0", "--listen", "127.0.0.1:0", "--data-dir", data_dir.to_str().unwrap()])
    }

    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Response {
        request(&self.addr, method, path, body)
    }

    pub fn get_json(&self, path: &str) -> Value {
        let r = self.request("GET", path, b"");
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    pub fn ingest(&self, table: &str, lines: &[String]) -> Value {
        let body = lines.join("\n");
        let r = self.request("POST", &format!("/v1/ingest/{table}"), body.as_bytes());
        assert_eq!(r.status, 200, "ingest: {}", r.text());
        r.json()
    }

    /// Runs SQL as written and returns the rows as JSON objects: a query over a
    /// raw table reads the raw rows, not a rollup (`route_rollups: false`), so
    /// that the tests of exact raw rows keep testing them; routing has its own
    /// suite (`tests/routing.rs`).
    pub fn sql(&self, sql: &str) -> Vec<Value> {
        let body = serde_json::json!({ "sql": sql, "route_rollups": false }).to_string();
        let r = self.request("POST", "/v1/sql", body.as_bytes());
        assert_eq!(r.status, 200, "{sql}: {}", r.text());
        r.json().as_array().expect("json format is an array").clone()
    }

    /// Runs SQL as a client does (rollup routing on), in `format`.
    pub fn sql_raw(&self, sql: &str, format: &str) -> Response {
        let body = serde_json::json!({ "sql": sql, "format": format }).to_string();
        self.request("POST", "/v1/sql", body.as_bytes())
    }

    /// Waits until the table has taken every record of its log.
    pub fn wait_caught_up(&self, table: &str, expect_total: u64) -> Value {
        self.wait_caught_up_within(table, expect_total, Duration::from_secs(30))
    }

    /// Like [`Weir::wait_caught_up`], waiting at most `within`.
    #[allow(dead_code)]
    pub fn wait_caught_up_within(&self, table: &str, expect_total: u64, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let t = self.get_json(&format!("/v1/tables/{table}"));
            let c = &t["counts"];
            let total = c["ingested"].as_u64().unwrap()
                + c["late"].as_u64().unwrap()
                + c["dead_lettered"].as_u64().unwrap()
                + c["duplicates"].as_u64().unwrap_or(0)
                + c["filtered"].as_u64().unwrap_or(0);
            if total == expect_total && t["lag"].as_u64() == Some(0) {
                return t;
            }
            assert!(total <= expect_total, "more records than produced: {t}");
            assert!(Instant::now() < deadline, "not caught up after {within:?}: {t}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "weir did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        self.kill();
    }
}

/// This package's directory (`web/`), as cargo tells the running test. Not
/// `env!`: that is fixed at build time, and a build cache shared by checkouts
/// at other paths keeps an unchanged test binary that names another checkout.
pub fn package_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("run the tests with cargo, which sets CARGO_MANIFEST_DIR"),
    )
}

/// Starts a server that takes its port on its command line (moto, tansu) on a
/// free port of 127.0.0.1 and waits until it listens there. A free port is
/// found by binding port 0 and letting it go, so another test's server can take
/// it in between: a child that has exited, or is gone a moment after the port
/// answers (the answer was someone else's), is started again on another port.
pub fn start_on_free_port(what: &str, wait: Duration, mut spawn: impl FnMut(u16) -> Child) -> (Child, u16) {
    let mut exits = Vec::new();
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = spawn(port);
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                exits.push(format!("port {port}: {status}"));
                break;
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                std::thread::sleep(Duration::from_millis(300));
                match child.try_wait().unwrap() {
                    None => return (child, port),
                    Some(status) => {
                        exits.push(format!("port {port}: {status}"));
                        break;
                    }
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("{what} did not listen on port {port} within {wait:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("{what} exited at start five times: {}", exits.join("; "));
}

/// Writes `dir/weir.toml`: a `[server]` section listening on a free port with its
/// data under `dir/data`, then `body` (keys before its first header are
/// `[server]` keys). Returns the file's path.
pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    let cfg = dir.join("weir.toml");
    let server = format!("[server]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\n", dir.join("data").display());
    std::fs::write(&cfg, server + body).expect("writing weir.toml");
    cfg
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Like [`request`], but `None` when no HTTP answer comes back.
pub fn try_request(addr: &str, method: &str, path: &str, body: &[u8]) -> Option<Response> {
    let addr = addr.to_string();
    let (method, path, body) = (method.to_string(), path.to_string(), body.to_vec());
    std::thread::spawn(move || std::panic::catch_unwind(|| request(&addr, &method, &path, &body)).ok())
        .join()
        .ok()
        .flatten()
}

/// A minimal HTTP/1.1 client: one request per connection.
pub fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> Response {
    request_as(addr, method, path, body, None)
}

/// [`request`] with `Authorization: Bearer <token>`.
pub fn request_as(addr: &str, method: &str, path: &str, body: &[u8], token: Option<&str>) -> Response {
    request_typed(addr, method, path, body, token, "application/json")
}

/// [`request_as`] with the body sent as `content_type`.
pub fn request_typed(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
    content_type: &str,
) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status: u16 = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut buf = &rest[..];
        loop {
            let nl = buf.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&buf[..nl]).unwrap().trim(), 16).unwrap();
            buf = &buf[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&buf[..size]);
            buf = &buf[size + 2..];
        }
        rest = out;
    }
    Response { status, headers, body: rest }
}
