//! Configuration: the server, the embedded log, the query limits and the tables.
//!
//! A config is TOML. It is parsed in two steps: serde reads the raw form (syntax and
//! type errors carry TOML's own line and column), then [`WeirConfig::from_toml`]
//! validates meaning (unknown fields referenced by a rollup, duplicate names, bad
//! durations) and reports each error with the field's dotted path and its line.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::sketch::{DEFAULT_PRECISION, MAX_PRECISION, MIN_PRECISION};

/// A configuration error: what is wrong, where (a dotted path), and on which line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending field, e.g. `tables[0].rollups[1].dimensions`.
    pub path: String,
    /// 1-based line in the source, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "config error at line {line}, `{}`: {}", self.path, self.message),
            None => write!(f, "config error in `{}`: {}", self.path, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The whole configuration of a `weir` process.
#[derive(Debug, Clone)]
pub struct WeirConfig {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub query: QueryConfig,
    pub storage: StorageConfig,
    pub tables: Vec<TableConfig>,
}

/// Where sealed segments go: object storage.
#[derive(Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// `s3://bucket/prefix`, or `file:///path`; `None` means `<data_dir>/cold`.
    pub url: Option<String>,
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`); else `AWS_ENDPOINT_URL`
    /// or AWS itself.
    pub endpoint: Option<String>,
    /// Else `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// Else `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// Else `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// An object store request that takes longer is abandoned and retried.
    pub request_timeout: Duration,
    /// Compact a closed time range once it has this many segments.
    pub compact_min_segments: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            request_timeout: Duration::from_secs(30),
            compact_min_segments: 4,
        }
    }
}

impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// What a token may do. `Admin` implies the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Query,
    Ingest,
    /// `/v1/internal/*`: what query processes read from ingest processes (every
    /// table's hot rows). Kept apart from `query`, the scope a browser dashboard
    /// holds.
    Internal,
    Admin,
}

/// One API token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// A name for logs; never the secret.
    pub name: String,
    pub secret: String,
    pub scopes: Vec<Scope>,
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig").field("name", &self.name).field("scopes", &self.scopes).finish_non_exhaustive()
    }
}

/// Request limits; each refusal names the limit and its value
/// (docs/operations.md, "Limits and what they protect").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Largest request body (ingest or SQL), in bytes.
    pub max_body_bytes: usize,
    /// Most records one ingest request may carry.
    pub max_records_per_request: usize,
    /// Most live (WebSocket) connections open at once.
    pub max_live_connections: usize,
    /// Most tiles one live connection may subscribe to.
    pub max_tiles_per_connection: usize,
    /// Most distinct live tiles the process evaluates (identical tiles count once).
    pub max_live_tiles: usize,
    /// Largest result of one live tile, in bytes of its JSON rows.
    pub max_tile_bytes: usize,
    /// Most bytes of messages one live connection may have queued for a client
    /// that does not read; its tiles then wait and later send only their latest state.
    pub max_live_queued_bytes: usize,
    /// A live connection whose client takes longer than this to accept a
    /// message is closed.
    pub live_send_timeout: Duration,
    /// Most HTTP connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// How long a client has to send a request's headers.
    pub header_timeout: Duration,
    /// How long a client has to send a request's body.
    pub body_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 64 << 20,
            max_records_per_request: 500_000,
            max_live_connections: 4096,
            max_tiles_per_connection: 64,
            max_live_tiles: 1024,
            max_tile_bytes: 8 << 20,
            max_live_queued_bytes: 16 << 20,
            live_send_timeout: Duration::from_secs(30),
            max_connections: 8192,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
        }
    }
}

/// API tokens. With none, the API is open (fine on 127.0.0.1, as the demo runs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: String,
    pub data_dir: PathBuf,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<TlsConfig>,
    /// This process's name among the processes sharing a Kafka topic's
    /// partitions (tables with `kafka.rebalance`): its sealed segments go under
    /// `tables/<table>/nodes/<node_id>/`.
    pub node_id: Option<String>,
    /// Run as a query process: no log, no readers, no sealers; SQL and live
    /// tiles over the cold tier and the hot data of `ingest_nodes`.
    pub query_only: bool,
    /// The ingest processes a query process asks for their hot data (base
    /// URLs, `http://host:port`).
    pub ingest_nodes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// When appended log records are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every append call, before it returns: survives a power loss.
    Always,
    /// At most this long after an append (a background flusher): a power loss may
    /// lose that window; a process crash loses nothing (the OS holds the pages).
    Interval(Duration),
    /// Left to the OS.
    Never,
}

/// How long log segments are kept. Whole closed segments are deleted, oldest first,
/// and never above the floor the owner gives (records not yet durable elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// Per partition, delete the oldest closed segments while the partition is larger.
    pub max_bytes: Option<u64>,
    /// Delete closed segments whose newest record is older than this.
    pub max_age: Option<Duration>,
}

/// The embedded log's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// A partition rolls to a new segment file past this size.
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    pub retention: RetentionPolicy,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 << 20,
            fsync: FsyncPolicy::Interval(Duration::from_millis(100)),
            retention: RetentionPolicy::default(),
        }
    }
}

/// Limits of SQL queries (docs/operations.md, "Limits and what they protect").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryConfig {
    /// Longest a query may take, waiting for its turn included.
    pub timeout: Duration,
    /// Memory one query may hold: operators' state, function results, its
    /// collected result.
    pub memory_limit_bytes: usize,
    /// Memory all queries and live-tile evaluations together may hold.
    pub total_memory_bytes: usize,
    /// Queries (and live-tile evaluations) running at once.
    pub max_concurrent: usize,
    /// Queries waiting for their turn; one more is refused at once.
    pub max_queued: usize,
    /// Longest SQL text.
    pub max_sql_bytes: usize,
    /// Most rows a result may have.
    pub max_result_rows: usize,
    /// Largest encoded result (JSON, NDJSON, CSV or Arrow), in bytes.
    pub max_result_bytes: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: Duration::from_secs(30),
            memory_limit_bytes: 512 << 20,
            total_memory_bytes: 2 << 30,
            max_concurrent: 8,
            max_queued: 256,
            max_sql_bytes: 1 << 20,
            max_result_rows: 10_000_000,
            max_result_bytes: 512 << 20,
        }
    }
}

/// A table: its schema, event time, lateness, partitioning and rollups.
#[derive(Debug, Clone, PartialEq)]
pub struct TableConfig {
    pub name: String,
    /// Partitions of the table's log topic.
    pub partitions: u32,
    /// The field whose value routes a record to a partition (one key, one partition).
    pub key: Option<String>,
    pub time: TimeConfig,
    pub dimensions: Vec<FieldConfig>,
    pub metrics: Vec<FieldConfig>,
    /// How far behind the newest event time an event may arrive and still count.
    pub allowed_lateness_ms: i64,
    /// How far ahead of its record's log timestamp (the time it was appended, or
    /// the Kafka message timestamp) an event time may be; a record further ahead
    /// is dead-lettered, so one bad clock cannot move the watermark past every
    /// later event. Records without a log timestamp (0 or below) are not checked.
    pub max_future_ms: i64,
    /// The time range of a bucket (and, with the cold tier, of a segment).
    pub segment_granularity_ms: i64,
    /// A partition that delivered nothing for this long no longer holds the table's
    /// watermark back.
    pub idle_timeout_ms: i64,
    /// The hot tier's byte budget for this table.
    pub hot_budget_bytes: u64,
    /// Sealed segments whose time range ended longer ago than this are deleted.
    pub retention_ms: Option<i64>,
    /// Drop repeated deliveries of one event: same id within a window.
    pub dedup: Option<DedupConfig>,
    pub unknown_fields: UnknownFields,
    pub rollups: Vec<RollupConfig>,
    pub sessions: Vec<SessionConfig>,
    /// Read from this Kafka topic instead of the embedded log.
    pub kafka: Option<KafkaConfig>,
    /// Message values are Avro instead of JSON (Kafka tables only).
    pub avro: Option<AvroConfig>,
}

/// Avro message values (`[tables.avro]`): binary datums written with `schema`,
/// or Confluent's wire format (a zero byte, a 4-byte big-endian schema id, the
/// datum) with the writer schemas by id in `confluent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvroConfig {
    pub schema: Option<String>,
    pub confluent: std::collections::BTreeMap<u32, String>,
}

/// A Kafka topic as a table's source (`[tables.kafka]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub topic: String,
    /// The consumer group offsets are committed to (default `weir-<table>`).
    pub group_id: String,
    /// Further librdkafka settings, e.g. `security.protocol`, `sasl.mechanism`,
    /// `sasl.username`, `ssl.ca.location`.
    pub properties: std::collections::BTreeMap<String, String>,
    /// Whether the table's `partitions` was left out, to be the topic's count.
    pub partitions_from_topic: bool,
    /// Share the topic's partitions with the other `weir` processes of the
    /// consumer group: the group assigns them, and they move on rebalances.
    pub rebalance: bool,
}

/// A session window: per key, events no more than `gap_ms` apart form one session;
/// a session closes when its partition's watermark passes its last event + gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub name: String,
    /// The dimension whose value identifies whose session it is.
    pub key: String,
    pub gap_ms: i64,
    pub aggregations: Vec<Aggregation>,
}

/// Deduplication: a record whose `field` value was already seen in the same log
/// partition, by an event at most `window_ms` apart in event time, is a duplicate:
/// counted and kept in `<table>_duplicates`, not in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupConfig {
    pub field: String,
    pub window_ms: i64,
}

/// What to do with JSON fields the schema does not declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnknownFields {
    #[default]
    Ignore,
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeConfig {
    pub field: String,
    pub formats: Vec<TimeFormat>,
}

/// Accepted encodings of event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// A string such as `2026-11-21T10:00:00.123Z` or `...+01:00` (a zone is required).
    Rfc3339,
    /// An integer number of milliseconds since the Unix epoch.
    EpochMillis,
    /// An integer number of seconds since the Unix epoch.
    EpochSeconds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Int64,
    Float64,
    Bool,
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldType::String => "string",
            FieldType::Int64 => "int64",
            FieldType::Float64 => "float64",
            FieldType::Bool => "bool",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldConfig {
    pub name: String,
    pub ty: FieldType,
    /// A record without this field (or with null) is dead-lettered.
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupConfig {
    pub name: String,
    /// The tumbling window.
    pub granularity_ms: i64,
    pub dimensions: Vec<String>,
    pub aggregations: Vec<Aggregation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregation {
    /// The output column's name.
    pub name: String,
    pub func: AggFn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggFn {
    Count,
    Sum {
        field: String,
    },
    Min {
        field: String,
    },
    Max {
        field: String,
    },
    /// A HyperLogLog++ distinct-count sketch of a field's values.
    Hll {
        field: String,
        precision: u8,
    },
}

impl TableConfig {
    /// Every declared field (dimensions first, then metrics).
    pub fn fields(&self) -> impl Iterator<Item = &FieldConfig> {
        self.dimensions.iter().chain(self.metrics.iter())
    }

    pub fn field(&self, name: &str) -> Option<&FieldConfig> {
        self.fields().find(|f| f.name == name)
    }

    /// The SQL name of a rollup's relation.
    pub fn rollup_relation(&self, rollup: &str) -> String {
        format!("{}_{}", self.name, rollup)
    }

    /// The SQL name of a session window's relation.
    pub fn session_relation(&self, session: &str) -> String {
        format!("{}_{}", self.name, session)
    }

    pub fn dead_letter_relation(&self) -> String {
        format!("{}_dead_letter", self.name)
    }

    pub fn duplicates_relation(&self) -> String {
        format!("{}_duplicates", self.name)
    }

    pub fn late_relation(&self) -> String {
        format!("{}_late", self.name)
    }

    /// The topic holding this table's records: its Kafka topic, or its topic of
    /// the embedded log (the table's name).
    pub fn topic(&self) -> &str {
        self.kafka.as_ref().map_or(&self.name, |k| &k.topic)
    }
}

// ---------------------------------------------------------------------------------
// Raw (serde) form.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    query: RawQuery,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    tables: Vec<Spanned<RawTable>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    tls_cert: Option<Spanned<PathBuf>>,
    tls_key: Option<Spanned<PathBuf>>,
    node_id: Option<Spanned<String>>,
    query_only: Option<bool>,
    ingest_nodes: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<Spanned<usize>>,
    max_records_per_request: Option<Spanned<usize>>,
    max_live_connections: Option<Spanned<usize>>,
    max_tiles_per_connection: Option<Spanned<usize>>,
    max_live_tiles: Option<Spanned<usize>>,
    max_tile_bytes: Option<Spanned<usize>>,
    max_live_queued_bytes: Option<Spanned<usize>>,
    live_send_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<usize>>,
    header_timeout: Option<Spanned<String>>,
    body_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    tokens: Vec<Spanned<RawToken>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: Spanned<String>,
    token: Option<Spanned<String>>,
    token_env: Option<Spanned<String>>,
    scopes: Spanned<Vec<Scope>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    segment_bytes: Option<Spanned<u64>>,
    fsync: Option<Spanned<String>>,
    fsync_interval: Option<Spanned<String>>,
    retention_bytes: Option<u64>,
    retention_age: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawQuery {
    timeout: Option<Spanned<String>>,
    memory_limit_bytes: Option<Spanned<u64>>,
    total_memory_bytes: Option<Spanned<u64>>,
    max_concurrent: Option<Spanned<usize>>,
    max_queued: Option<Spanned<usize>>,
    max_sql_bytes: Option<Spanned<usize>>,
    max_result_rows: Option<Spanned<usize>>,
    max_result_bytes: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDedup {
    field: Spanned<String>,
    window: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    url: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    secret_access_key_env: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    compact_min_segments: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    name: Spanned<String>,
    #[serde(default)]
    partitions: Option<Spanned<u32>>,
    key: Option<Spanned<String>>,
    time: Spanned<RawTime>,
    #[serde(default)]
    dimensions: Vec<Spanned<RawField>>,
    #[serde(default)]
    metrics: Vec<Spanned<RawField>>,
    allowed_lateness: Option<Spanned<String>>,
    max_future: Option<Spanned<String>>,
    segment_granularity: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    hot_budget_bytes: Option<Spanned<u64>>,
    retention: Option<Spanned<String>>,
    dedup: Option<Spanned<RawDedup>>,
    #[serde(default)]
    unknown_fields: UnknownFields,
    #[serde(default)]
    rollups: Vec<Spanned<RawRollup>>,
    #[serde(default)]
    sessions: Vec<Spanned<RawSession>>,
    kafka: Option<Spanned<RawKafka>>,
    avro: Option<Spanned<RawAvro>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAvro {
    schema: Option<String>,
    #[serde(default)]
    confluent: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    bootstrap_servers: Spanned<String>,
    topic: Option<Spanned<String>>,
    group_id: Option<Spanned<String>>,
    #[serde(default)]
    properties: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    rebalance: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    name: Spanned<String>,
    key: Spanned<String>,
    gap: Spanned<String>,
    aggregations: Vec<Spanned<RawAgg>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTime {
    field: Spanned<String>,
    #[serde(default)]
    formats: Option<Vec<TimeFormat>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: Spanned<String>,
    #[serde(rename = "type")]
    ty: FieldType,
    #[serde(default)]
    required: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollup {
    name: Spanned<String>,
    granularity: Spanned<String>,
    #[serde(default)]
    dimensions: Vec<Spanned<String>>,
    aggregations: Vec<Spanned<RawAgg>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgg {
    name: Spanned<String>,
    #[serde(rename = "fn")]
    func: Spanned<String>,
    field: Option<Spanned<String>>,
    precision: Option<Spanned<u8>>,
}

// ---------------------------------------------------------------------------------
// Validation.

struct Ctx<'a> {
    src: &'a str,
}

impl Ctx<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        self.src[..span.start.min(self.src.len())].bytes().filter(|b| *b == b'\n').count() + 1
    }

    fn err(&self, path: impl Into<String>, span: &Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError { path: path.into(), line: Some(self.line(span)), message: message.into() }
    }

    fn duration(&self, path: &str, value: &Spanned<String>) -> Result<Duration, ConfigError> {
        parse_duration(value.get_ref()).map_err(|m| self.err(path, &value.span(), m))
    }
}

/// Parses `250ms`, `30s`, `5m`, `1h`, `7d` (an integer and a unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 =
        num.parse().map_err(|_| format!("`{text}` is not a duration: expected a whole number and a unit, like 5m"))?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!("`{text}`: unknown duration unit `{other}` (use ms, s, m, h or d)"));
        }
    };
    n.checked_mul(ms).map(Duration::from_millis).ok_or_else(|| format!("`{text}` is too long a duration"))
}

/// Whether `name` may name a table, field or rollup: lowercase letters, digits and
/// `_`, starting with a letter or `_`.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Checks an ingest process's base URL (`http://host:port`, nothing after it).
pub fn check_node_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "`{url}`: an ingest process's URL starts with http:// (a query process speaks plain HTTP to them)"
        ));
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || host.contains('?') || host.contains('#') || host.contains('@') {
        return Err(format!("`{url}`: give the base URL only, like http://ingest-1:8080"));
    }
    Ok(())
}

impl WeirConfig {
    /// Parses and validates a TOML config.
    pub fn from_toml(src: &str) -> Result<WeirConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(src).map_err(|e| {
            let line = e.span().map(|s| Ctx { src }.line(&s));
            ConfigError { path: "(file)".into(), line, message: e.message().to_string() }
        })?;
        let ctx = Ctx { src };
        let tls = match (raw.server.tls_cert, raw.server.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig { cert: cert.into_inner(), key: key.into_inner() }),
            (None, None) => None,
            (Some(one), None) | (None, Some(one)) => {
                return Err(ctx.err("server", &one.span(), "give both tls_cert and tls_key, or neither"));
            }
        };
        if let Some(n) = &raw.server.node_id
            && !is_identifier(n.get_ref())
        {
            return Err(ctx.err(
                "server.node_id",
                &n.span(),
                "use lowercase letters, digits and _, starting with a letter",
            ));
        }
        let ingest_nodes = match raw.server.ingest_nodes {
            Some(nodes) => {
                if let Some(bad) = nodes.get_ref().iter().find(|u| check_node_url(u).is_err()) {
                    let why = check_node_url(bad).unwrap_err();
                    return Err(ctx.err("server.ingest_nodes", &nodes.span(), why));
                }
                nodes.into_inner()
            }
            None => Vec::new(),
        };
        let query_only = raw.server.query_only.unwrap_or(false);
        let server = ServerConfig {
            listen: raw.server.listen.unwrap_or_else(|| "127.0.0.1:8080".into()),
            data_dir: raw.server.data_dir.unwrap_or_else(|| PathBuf::from("weir-data")),
            tls,
            node_id: raw.server.node_id.map(Spanned::into_inner),
            query_only,
            ingest_nodes,
        };
        let auth = validate_auth(&ctx, raw.auth)?;
        let limits = validate_limits(&ctx, raw.limits)?;
        let log = validate_log(&ctx, raw.log)?;
        let query = validate_query(&ctx, raw.query)?;
        let storage = validate_storage(&ctx, raw.storage)?;
        let mut tables = Vec::new();
        let mut relation_names = HashSet::new();
        for (i, t) in raw.tables.into_iter().enumerate() {
            let span = t.span();
            let table = validate_table(&ctx, i, t.into_inner())?;
            let mut names = vec![table.name.clone(), table.dead_letter_relation(), table.late_relation()];
            if table.dedup.is_some() {
                names.push(table.duplicates_relation());
            }
            names.extend(table.rollups.iter().map(|r| table.rollup_relation(&r.name)));
            names.extend(table.sessions.iter().map(|w| table.session_relation(&w.name)));
            for n in names {
                if !relation_names.insert(n.clone()) {
                    return Err(ctx.err(
                        format!("tables[{i}]"),
                        &span,
                        format!("the SQL relation `{n}` would be defined twice; rename a table or rollup"),
                    ));
                }
            }
            tables.push(table);
        }
        Ok(WeirConfig { server, auth, limits, log, query, storage, tables })
    }

    pub fn table(&self, name: &str) -> Option<&TableConfig> {
        self.tables.iter().find(|t| t.name == name)
    }
}

fn validate_limits(ctx: &Ctx, raw: RawLimits) -> Result<LimitsConfig, ConfigError> {
    let mut l = LimitsConfig::default();
    for (value, slot, name) in [
        (raw.max_body_bytes, &mut l.max_body_bytes, "max_body_bytes"),
        (raw.max_records_per_request, &mut l.max_records_per_request, "max_records_per_request"),
        (raw.max_live_connections, &mut l.max_live_connections, "max_live_connections"),
        (raw.max_tiles_per_connection, &mut l.max_tiles_per_connection, "max_tiles_per_connection"),
        (raw.max_live_tiles, &mut l.max_live_tiles, "max_live_tiles"),
        (raw.max_tile_bytes, &mut l.max_tile_bytes, "max_tile_bytes"),
        (raw.max_live_queued_bytes, &mut l.max_live_queued_bytes, "max_live_queued_bytes"),
        (raw.max_connections, &mut l.max_connections, "max_connections"),
    ] {
        if let Some(v) = value {
            if *v.get_ref() == 0 {
                return Err(ctx.err(format!("limits.{name}"), &v.span(), "must be at least 1"));
            }
            *slot = *v.get_ref();
        }
    }
    for (value, slot, name) in [
        (&raw.live_send_timeout, &mut l.live_send_timeout, "live_send_timeout"),
        (&raw.header_timeout, &mut l.header_timeout, "header_timeout"),
        (&raw.body_timeout, &mut l.body_timeout, "body_timeout"),
    ] {
        if let Some(v) = value {
            let path = format!("limits.{name}");
            *slot = ctx.duration(&path, v)?;
            if slot.is_zero() {
                return Err(ctx.err(path, &v.span(), "must be longer than zero"));
            }
        }
    }
    Ok(l)
}

/// Shortest secret accepted, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;

fn validate_auth(ctx: &Ctx, raw: RawAuth) -> Result<AuthConfig, ConfigError> {
    let mut tokens = Vec::new();
    let mut names = HashSet::new();
    for (i, t) in raw.tokens.into_iter().enumerate() {
        let p = format!("auth.tokens[{i}]");
        let span = t.span();
        let t = t.into_inner();
        let name = t.name.get_ref().clone();
        if !names.insert(name.clone()) {
            return Err(ctx.err(format!("{p}.name"), &t.name.span(), format!("token name `{name}` is used twice")));
        }
        let secret = match (&t.token, &t.token_env) {
            (Some(s), None) => s.get_ref().clone(),
            (None, Some(var)) => std::env::var(var.get_ref()).map_err(|_| {
                ctx.err(
                    format!("{p}.token_env"),
                    &var.span(),
                    format!("environment variable `{}` is not set", var.get_ref()),
                )
            })?,
            _ => return Err(ctx.err(p, &span, "give exactly one of `token` and `token_env`")),
        };
        if secret.len() < MIN_TOKEN_BYTES {
            return Err(ctx.err(
                format!("{p}.token"),
                &span,
                format!("token `{name}` is shorter than {MIN_TOKEN_BYTES} bytes; use a long random secret"),
            ));
        }
        if t.scopes.get_ref().is_empty() {
            return Err(ctx.err(
                format!("{p}.scopes"),
                &t.scopes.span(),
                "give at least one scope: query, ingest or admin",
            ));
        }
        let mut scopes = t.scopes.into_inner();
        scopes.sort();
        scopes.dedup();
        tokens.push(TokenConfig { name, secret, scopes });
    }
    Ok(AuthConfig { tokens })
}

fn validate_log(ctx: &Ctx, raw: RawLog) -> Result<LogConfig, ConfigError> {
    let mut log = LogConfig::default();
    if let Some(b) = raw.segment_bytes {
        if *b.get_ref() < 4096 {
            return Err(ctx.err("log.segment_bytes", &b.span(), "must be at least 4096"));
        }
        log.segment_bytes = *b.get_ref();
    }
    let interval = match &raw.fsync_interval {
        Some(v) => ctx.duration("log.fsync_interval", v)?,
        None => Duration::from_millis(100),
    };
    if let Some(f) = raw.fsync {
        log.fsync = match f.get_ref().as_str() {
            "always" => FsyncPolicy::Always,
            "interval" => FsyncPolicy::Interval(interval),
            "never" => FsyncPolicy::Never,
            other => {
                return Err(ctx.err(
                    "log.fsync",
                    &f.span(),
                    format!("unknown fsync policy `{other}` (use always, interval or never)"),
                ));
            }
        };
    } else {
        log.fsync = FsyncPolicy::Interval(interval);
    }
    log.retention.max_bytes = raw.retention_bytes;
    if let Some(a) = &raw.retention_age {
        log.retention.max_age = Some(ctx.duration("log.retention_age", a)?);
    }
    Ok(log)
}

fn validate_query(ctx: &Ctx, raw: RawQuery) -> Result<QueryConfig, ConfigError> {
    let mut q = QueryConfig::default();
    if let Some(t) = &raw.timeout {
        q.timeout = ctx.duration("query.timeout", t)?;
        if q.timeout.is_zero() {
            return Err(ctx.err("query.timeout", &t.span(), "must be longer than zero"));
        }
    }
    if let Some(m) = raw.memory_limit_bytes {
        if *m.get_ref() < (1 << 20) {
            return Err(ctx.err("query.memory_limit_bytes", &m.span(), "must be at least 1048576 (1 MiB)"));
        }
        q.memory_limit_bytes = *m.get_ref() as usize;
    }
    match raw.total_memory_bytes {
        Some(m) if (*m.get_ref() as usize) < q.memory_limit_bytes => {
            return Err(ctx.err(
                "query.total_memory_bytes",
                &m.span(),
                format!("must be at least query.memory_limit_bytes ({})", q.memory_limit_bytes),
            ));
        }
        Some(m) => q.total_memory_bytes = *m.get_ref() as usize,
        // The default holds four queries at their limit.
        None => q.total_memory_bytes = q.total_memory_bytes.max(4 * q.memory_limit_bytes),
    }
    for (value, slot, name, min) in [
        (raw.max_concurrent, &mut q.max_concurrent, "max_concurrent", 1),
        (raw.max_queued, &mut q.max_queued, "max_queued", 0),
        (raw.max_sql_bytes, &mut q.max_sql_bytes, "max_sql_bytes", 1),
        (raw.max_result_rows, &mut q.max_result_rows, "max_result_rows", 1),
        (raw.max_result_bytes, &mut q.max_result_bytes, "max_result_bytes", 1),
    ] {
        if let Some(v) = value {
            if *v.get_ref() < min {
                return Err(ctx.err(format!("query.{name}"), &v.span(), format!("must be at least {min}")));
            }
            *slot = *v.get_ref();
        }
    }
    Ok(q)
}

fn validate_storage(ctx: &Ctx, raw: RawStorage) -> Result<StorageConfig, ConfigError> {
    let mut s = StorageConfig::default();
    if let Some(url) = &raw.url {
        let u = url.get_ref();
        let ok = u.strip_prefix("s3://").is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
            || u.strip_prefix("file://").is_some_and(|rest| rest.starts_with('/'));
        if !ok {
            return Err(ctx.err(
                "storage.url",
                &url.span(),
                format!("`{u}` is not s3://bucket/prefix or file:///absolute/path"),
            ));
        }
        s.url = Some(u.clone());
    }
    if let Some(e) = &raw.endpoint {
        let v = e.get_ref();
        if !(v.starts_with("http://") || v.starts_with("https://")) {
            return Err(ctx.err("storage.endpoint", &e.span(), format!("`{v}` must start with http:// or https://")));
        }
        s.endpoint = Some(v.clone());
    }
    s.region = raw.region;
    s.access_key_id = raw.access_key_id;
    s.secret_access_key = match (raw.secret_access_key, raw.secret_access_key_env) {
        (Some(v), None) => Some(v),
        (None, Some(var)) => Some(std::env::var(var.get_ref()).map_err(|_| {
            ctx.err(
                "storage.secret_access_key_env",
                &var.span(),
                format!("environment variable `{}` is not set", var.get_ref()),
            )
        })?),
        (None, None) => None,
        (Some(_), Some(var)) => {
            return Err(ctx.err(
                "storage",
                &var.span(),
                "give at most one of secret_access_key and secret_access_key_env",
            ));
        }
    };
    if let Some(t) = &raw.request_timeout {
        s.request_timeout = ctx.duration("storage.request_timeout", t)?;
        if s.request_timeout.is_zero() {
            return Err(ctx.err("storage.request_timeout", &t.span(), "must be longer than zero"));
        }
    }
    if let Some(n) = raw.compact_min_segments {
        if *n.get_ref() < 2 {
            return Err(ctx.err("storage.compact_min_segments", &n.span(), "must be at least 2"));
        }
        s.compact_min_segments = *n.get_ref();
    }
    Ok(s)
}

fn validate_table(ctx: &Ctx, i: usize, raw: RawTable) -> Result<TableConfig, ConfigError> {
    let p = format!("tables[{i}]");
    let name = raw.name.get_ref().clone();
    if !is_identifier(&name) {
        return Err(ctx.err(
            format!("{p}.name"),
            &raw.name.span(),
            format!("`{name}` is not a valid table name: use lowercase letters, digits and _, starting with a letter"),
        ));
    }
    let partitions = match &raw.partitions {
        Some(n) if *n.get_ref() == 0 || *n.get_ref() > 1024 => {
            return Err(ctx.err(format!("{p}.partitions"), &n.span(), "must be between 1 and 1024"));
        }
        Some(n) => *n.get_ref(),
        None => 1,
    };

    let mut seen = HashSet::new();
    let mut fields =
        |list: Vec<Spanned<RawField>>, what: &str, metric: bool| -> Result<Vec<FieldConfig>, ConfigError> {
            let mut out = Vec::new();
            for (j, f) in list.into_iter().enumerate() {
                let fp = format!("{p}.{what}[{j}]");
                let span = f.span();
                let f = f.into_inner();
                let fname = f.name.get_ref().clone();
                if !is_identifier(&fname) {
                    return Err(ctx.err(
                        format!("{fp}.name"),
                        &f.name.span(),
                        format!("`{fname}` is not a valid field name"),
                    ));
                }
                if !seen.insert(fname.clone()) {
                    return Err(ctx.err(
                        format!("{fp}.name"),
                        &f.name.span(),
                        format!("field `{fname}` is declared twice"),
                    ));
                }
                if metric && !matches!(f.ty, FieldType::Int64 | FieldType::Float64) {
                    return Err(ctx.err(fp, &span, format!("metric `{fname}` must be int64 or float64, not {}", f.ty)));
                }
                out.push(FieldConfig { name: fname, ty: f.ty, required: f.required });
            }
            Ok(out)
        };
    let dimensions = fields(raw.dimensions, "dimensions", false)?;
    let metrics = fields(raw.metrics, "metrics", true)?;
    let has = |n: &str| dimensions.iter().chain(metrics.iter()).find(|f| f.name == n).cloned();

    let time_span = raw.time.span();
    let time_raw = raw.time.into_inner();
    let time_field = time_raw.field.get_ref().clone();
    if has(&time_field).is_some() {
        return Err(ctx.err(
            format!("{p}.time.field"),
            &time_raw.field.span(),
            format!("`{time_field}` is the event-time field; do not declare it as a dimension or metric too"),
        ));
    }
    if !is_identifier(&time_field) {
        return Err(ctx.err(
            format!("{p}.time.field"),
            &time_raw.field.span(),
            format!("`{time_field}` is not a valid field name"),
        ));
    }
    let formats = time_raw.formats.unwrap_or_else(|| vec![TimeFormat::Rfc3339, TimeFormat::EpochMillis]);
    if formats.is_empty() {
        return Err(ctx.err(format!("{p}.time.formats"), &time_span, "give at least one time format"));
    }
    if formats.contains(&TimeFormat::EpochMillis) && formats.contains(&TimeFormat::EpochSeconds) {
        return Err(ctx.err(
            format!("{p}.time.formats"),
            &time_span,
            "epoch_millis and epoch_seconds cannot both be accepted: an integer would be ambiguous",
        ));
    }

    let key = match raw.key {
        Some(k) => {
            let kname = k.get_ref().clone();
            match has(&kname) {
                Some(f) if f.ty == FieldType::String || f.ty == FieldType::Int64 => Some(kname),
                Some(f) => {
                    return Err(ctx.err(
                        format!("{p}.key"),
                        &k.span(),
                        format!("key field `{kname}` is {}, it must be string or int64", f.ty),
                    ));
                }
                None => {
                    return Err(ctx.err(
                        format!("{p}.key"),
                        &k.span(),
                        format!("key field `{kname}` is not a declared dimension"),
                    ));
                }
            }
        }
        None => None,
    };

    let dur = |v: &Option<Spanned<String>>, what: &str, default: Duration| -> Result<i64, ConfigError> {
        match v {
            Some(v) => Ok(ctx.duration(&format!("{p}.{what}"), v)?.as_millis() as i64),
            None => Ok(default.as_millis() as i64),
        }
    };
    let allowed_lateness_ms = dur(&raw.allowed_lateness, "allowed_lateness", Duration::from_secs(300))?;
    let max_future_ms = dur(&raw.max_future, "max_future", Duration::from_secs(300))?;
    let segment_granularity_ms = dur(&raw.segment_granularity, "segment_granularity", Duration::from_secs(3600))?;
    let idle_timeout_ms = dur(&raw.idle_timeout, "idle_timeout", Duration::from_secs(30))?;
    if segment_granularity_ms <= 0
        || 86_400_000 % segment_granularity_ms != 0 && segment_granularity_ms % 86_400_000 != 0
    {
        let s = raw.segment_granularity.as_ref().map(|s| s.span()).unwrap_or(time_span.clone());
        return Err(ctx.err(
            format!("{p}.segment_granularity"),
            &s,
            "must divide a day evenly (like 1m, 15m, 1h) or be whole days",
        ));
    }
    let hot_budget_bytes = match raw.hot_budget_bytes {
        Some(b) if *b.get_ref() < (1 << 20) => {
            return Err(ctx.err(format!("{p}.hot_budget_bytes"), &b.span(), "must be at least 1048576 (1 MiB)"));
        }
        Some(b) => *b.get_ref(),
        None => 1 << 30,
    };

    let retention_ms = match &raw.retention {
        Some(r) => {
            let ms = ctx.duration(&format!("{p}.retention"), r)?.as_millis() as i64;
            if ms < segment_granularity_ms {
                return Err(ctx.err(
                    format!("{p}.retention"),
                    &r.span(),
                    "must be at least the table's segment_granularity",
                ));
            }
            Some(ms)
        }
        None => None,
    };

    let dedup = match raw.dedup {
        Some(d) => {
            let d = d.into_inner();
            let fname = d.field.get_ref().clone();
            match dimensions.iter().find(|f| f.name == fname) {
                Some(f) if matches!(f.ty, FieldType::String | FieldType::Int64) => {}
                Some(f) => {
                    return Err(ctx.err(
                        format!("{p}.dedup.field"),
                        &d.field.span(),
                        format!("`{fname}` is {}; an event id must be string or int64", f.ty),
                    ));
                }
                None => {
                    return Err(ctx.err(
                        format!("{p}.dedup.field"),
                        &d.field.span(),
                        format!("`{fname}` is not a dimension of table `{name}`"),
                    ));
                }
            }
            let window_ms = ctx.duration(&format!("{p}.dedup.window"), &d.window)?.as_millis() as i64;
            if window_ms <= 0 {
                return Err(ctx.err(format!("{p}.dedup.window"), &d.window.span(), "must be longer than zero"));
            }
            Some(DedupConfig { field: fname, window_ms })
        }
        None => None,
    };

    let mut rollups = Vec::new();
    let mut rollup_names = HashSet::new();
    for (j, r) in raw.rollups.into_iter().enumerate() {
        let rp = format!("{p}.rollups[{j}]");
        let r = r.into_inner();
        let rname = r.name.get_ref().clone();
        if !is_identifier(&rname) {
            return Err(ctx.err(format!("{rp}.name"), &r.name.span(), format!("`{rname}` is not a valid rollup name")));
        }
        if !rollup_names.insert(rname.clone()) {
            return Err(ctx.err(format!("{rp}.name"), &r.name.span(), format!("rollup `{rname}` is declared twice")));
        }
        let granularity_ms = ctx.duration(&format!("{rp}.granularity"), &r.granularity)?.as_millis() as i64;
        if granularity_ms <= 0 || segment_granularity_ms % granularity_ms != 0 {
            return Err(ctx.err(
                format!("{rp}.granularity"),
                &r.granularity.span(),
                "must be longer than zero and divide the table's segment_granularity evenly",
            ));
        }
        let mut dims = Vec::new();
        for (k, d) in r.dimensions.iter().enumerate() {
            let dname = d.get_ref();
            match has(dname) {
                Some(f) if dimensions.iter().any(|x| x.name == *dname) => {
                    if f.ty == FieldType::Float64 {
                        return Err(ctx.err(
                            format!("{rp}.dimensions[{k}]"),
                            &d.span(),
                            format!("`{dname}` is float64; a rollup groups by string, int64 or bool dimensions"),
                        ));
                    }
                    if dims.contains(&f.name) {
                        return Err(ctx.err(
                            format!("{rp}.dimensions[{k}]"),
                            &d.span(),
                            format!("dimension `{dname}` is listed twice"),
                        ));
                    }
                    dims.push(f.name)
                }
                _ => {
                    return Err(ctx.err(
                        format!("{rp}.dimensions[{k}]"),
                        &d.span(),
                        format!("`{dname}` is not a dimension of table `{name}`"),
                    ));
                }
            }
        }
        let mut out_names: HashSet<String> = dims.iter().cloned().collect();
        out_names.insert("bucket".into());
        let aggregations = validate_aggregations(ctx, &rp, &rname, &name, r.aggregations, &mut out_names, &has)?;
        if aggregations.is_empty() {
            return Err(ctx.err(
                format!("{rp}.aggregations"),
                &r.name.span(),
                "a rollup needs at least one aggregation",
            ));
        }
        rollups.push(RollupConfig { name: rname, granularity_ms, dimensions: dims, aggregations });
    }

    let mut sessions = Vec::new();
    for (j, w) in raw.sessions.into_iter().enumerate() {
        let wp = format!("{p}.sessions[{j}]");
        let w = w.into_inner();
        let wname = w.name.get_ref().clone();
        if !is_identifier(&wname) {
            return Err(ctx.err(
                format!("{wp}.name"),
                &w.name.span(),
                format!("`{wname}` is not a valid session window name"),
            ));
        }
        if !rollup_names.insert(wname.clone()) {
            return Err(ctx.err(
                format!("{wp}.name"),
                &w.name.span(),
                format!("`{wname}` is already the name of a rollup or session window"),
            ));
        }
        let kname = w.key.get_ref().clone();
        match dimensions.iter().find(|d| d.name == kname) {
            Some(d) if d.ty != FieldType::Float64 => {}
            Some(_) => {
                return Err(ctx.err(
                    format!("{wp}.key"),
                    &w.key.span(),
                    format!("`{kname}` is float64; a session key must be string, int64 or bool"),
                ));
            }
            None => {
                return Err(ctx.err(
                    format!("{wp}.key"),
                    &w.key.span(),
                    format!("`{kname}` is not a dimension of table `{name}`"),
                ));
            }
        }
        let gap_ms = ctx.duration(&format!("{wp}.gap"), &w.gap)?.as_millis() as i64;
        if gap_ms <= 0 {
            return Err(ctx.err(format!("{wp}.gap"), &w.gap.span(), "must be longer than zero"));
        }
        let mut out_names: HashSet<String> =
            [kname.clone(), "session_start".into(), "session_end".into(), "closed".into()].into_iter().collect();
        let aggregations = validate_aggregations(ctx, &wp, &wname, &name, w.aggregations, &mut out_names, &has)?;
        if aggregations.is_empty() {
            return Err(ctx.err(
                format!("{wp}.aggregations"),
                &w.name.span(),
                "a session window needs at least one aggregation",
            ));
        }
        sessions.push(SessionConfig { name: wname, key: kname, gap_ms, aggregations });
    }

    let kafka = match raw.kafka {
        Some(k) => {
            let span = k.span();
            let k = k.into_inner();
            let servers = k.bootstrap_servers.get_ref().trim().to_string();
            if servers.is_empty() {
                return Err(ctx.err(
                    format!("{p}.kafka.bootstrap_servers"),
                    &k.bootstrap_servers.span(),
                    "name at least one broker, like `127.0.0.1:9092`",
                ));
            }
            for key in
                ["group.id", "bootstrap.servers", "enable.auto.commit", "auto.offset.reset", "enable.auto.offset.store"]
            {
                if k.properties.contains_key(key) {
                    return Err(ctx.err(
                        format!("{p}.kafka.properties"),
                        &span,
                        format!("`{key}` is set by Weir (offsets come from its manifest); remove it"),
                    ));
                }
            }
            if k.rebalance
                && k.properties.get("partition.assignment.strategy").is_some_and(|v| v.contains("cooperative"))
            {
                return Err(ctx.err(
                    format!("{p}.kafka.properties"),
                    &span,
                    "`rebalance` works with the eager assignment strategies (range, roundrobin); cooperative-sticky is not supported",
                ));
            }
            let topic = k.topic.map_or_else(|| name.clone(), |t| t.into_inner());
            if topic.is_empty() {
                return Err(ctx.err(format!("{p}.kafka.topic"), &span, "must not be empty"));
            }
            Some(KafkaConfig {
                bootstrap_servers: servers,
                topic,
                group_id: k.group_id.map_or_else(|| format!("weir-{name}"), |g| g.into_inner()),
                properties: k.properties,
                partitions_from_topic: raw.partitions.is_none(),
                rebalance: k.rebalance,
            })
        }
        None => None,
    };

    if kafka.as_ref().is_some_and(|k| k.rebalance) && (!sessions.is_empty() || dedup.is_some()) {
        return Err(ctx.err(
            format!("{p}.kafka.rebalance"),
            &raw.name.span(),
            "a table whose partitions move between processes cannot have session windows or dedup yet (their state would have to move too)",
        ));
    }
    let avro = match raw.avro {
        Some(a) => {
            let span = a.span();
            let a = a.into_inner();
            if kafka.is_none() {
                return Err(ctx.err(
                    format!("{p}.avro"),
                    &span,
                    "Avro values need a Kafka source (`[tables.kafka]`); the embedded log takes JSON",
                ));
            }
            let mut confluent = std::collections::BTreeMap::new();
            for (id, schema) in a.confluent {
                let n: u32 = id.parse().map_err(|_| {
                    ctx.err(format!("{p}.avro.confluent"), &span, format!("`{id}` is not a schema id (a number)"))
                })?;
                confluent.insert(n, schema);
            }
            match (&a.schema, confluent.is_empty()) {
                (Some(_), false) => {
                    return Err(ctx.err(
                        format!("{p}.avro"),
                        &span,
                        "give either `schema` (plain binary datums) or `confluent` (schemas by id), not both",
                    ));
                }
                (None, true) => {
                    return Err(ctx.err(
                        format!("{p}.avro"),
                        &span,
                        "give the writer schema: `schema`, or `confluent` with the schemas by id",
                    ));
                }
                _ => {}
            }
            Some(AvroConfig { schema: a.schema, confluent })
        }
        None => None,
    };

    Ok(TableConfig {
        avro,
        kafka,
        name,
        partitions,
        key,
        time: TimeConfig { field: time_field, formats },
        dimensions,
        metrics,
        allowed_lateness_ms,
        max_future_ms,
        segment_granularity_ms,
        idle_timeout_ms,
        hot_budget_bytes,
        retention_ms,
        dedup,
        unknown_fields: raw.unknown_fields,
        rollups,
        sessions,
    })
}

/// Validates the aggregations of a rollup or session window; `out_names` holds the
/// output columns already taken.
fn validate_aggregations(
    ctx: &Ctx,
    rp: &str,
    rname: &str,
    name: &str,
    raw: Vec<Spanned<RawAgg>>,
    out_names: &mut HashSet<String>,
    has: &dyn Fn(&str) -> Option<FieldConfig>,
) -> Result<Vec<Aggregation>, ConfigError> {
    let mut aggregations = Vec::new();
    for (k, a) in raw.into_iter().enumerate() {
        let ap = format!("{rp}.aggregations[{k}]");
        let aspan = a.span();
        let a = a.into_inner();
        let aname = a.name.get_ref().clone();
        if !is_identifier(&aname) {
            return Err(ctx.err(format!("{ap}.name"), &a.name.span(), format!("`{aname}` is not a valid column name")));
        }
        if !out_names.insert(aname.clone()) {
            return Err(ctx.err(
                format!("{ap}.name"),
                &a.name.span(),
                format!("column `{aname}` appears twice in `{rname}`"),
            ));
        }
        let need_field = |numeric: bool| -> Result<String, ConfigError> {
            let f = a.field.as_ref().ok_or_else(|| {
                ctx.err(format!("{ap}.field"), &aspan, format!("`{}` needs a `field`", a.func.get_ref()))
            })?;
            let fname = f.get_ref();
            match has(fname) {
                Some(fc) if numeric && !matches!(fc.ty, FieldType::Int64 | FieldType::Float64) => Err(ctx.err(
                    format!("{ap}.field"),
                    &f.span(),
                    format!("`{fname}` is {}, `{}` needs a numeric field", fc.ty, a.func.get_ref()),
                )),
                Some(fc) => Ok(fc.name),
                None => Err(ctx.err(
                    format!("{ap}.field"),
                    &f.span(),
                    format!("`{fname}` is not a field of table `{name}`"),
                )),
            }
        };
        let func = match a.func.get_ref().as_str() {
            "count" => AggFn::Count,
            "sum" => AggFn::Sum { field: need_field(true)? },
            "min" => AggFn::Min { field: need_field(true)? },
            "max" => AggFn::Max { field: need_field(true)? },
            "hll" | "distinct" => {
                let precision = match &a.precision {
                    Some(pr) if !(MIN_PRECISION..=MAX_PRECISION).contains(pr.get_ref()) => {
                        return Err(ctx.err(
                            format!("{ap}.precision"),
                            &pr.span(),
                            format!("precision must be between {MIN_PRECISION} and {MAX_PRECISION}"),
                        ));
                    }
                    Some(pr) => *pr.get_ref(),
                    None => DEFAULT_PRECISION,
                };
                AggFn::Hll { field: need_field(false)?, precision }
            }
            other => {
                return Err(ctx.err(
                    format!("{ap}.fn"),
                    &a.func.span(),
                    format!("unknown aggregation `{other}` (use count, sum, min, max or hll)"),
                ));
            }
        };
        aggregations.push(Aggregation { name: aname, func });
    }
    Ok(aggregations)
}

#[cfg(test)]
mod tests;
