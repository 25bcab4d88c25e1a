//! Configuration: the server, the embedded log, the query limits and the tables.
//!
//! A config is TOML. It is parsed in two steps: serde reads the raw form (syntax and
//! type errors carry TOML's own line and column), then [`WeirConfig::from_toml`]
//! validates meaning (unknown fields referenced by a rollup, duplicate names, bad
//! durations) and reports each error with the field's dotted path and its line.
//!
//! This file holds the validated types; `raw` the serde form, `sections` the
//! checks of `[server]`'s siblings (auth, limits, log, query, storage) and
//! `table` those of one `[[tables]]` entry.

use std::collections::HashSet;
use std::fmt;
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
    /// How often an ingest process reads the table catalog for tables another
    /// process created, changed or dropped over the table API.
    pub catalog_poll: Duration,
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
            catalog_poll: Duration::from_secs(2),
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
    /// Most Postgres wire connections open at once; more are refused with
    /// SQLSTATE 53300.
    pub max_pg_connections: usize,
    /// A Postgres wire connection whose client takes longer than this to
    /// accept the bytes of a response is closed.
    pub pg_send_timeout: Duration,
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
            max_pg_connections: 256,
            pg_send_timeout: Duration::from_secs(30),
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
    /// Where the Postgres wire protocol listens (`host:port`); off when absent.
    pub pg_listen: Option<String>,
    /// Where Arrow Flight SQL listens (`host:port`); off when absent.
    pub flight_listen: Option<String>,
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
    /// A SQL boolean expression over the table's fields (derived ones
    /// included): a record for which it is not true is counted as filtered and
    /// not kept.
    pub filter: Option<String>,
    /// An upsert table: `key` is its primary key, and the table (the relation
    /// named after it) shows the latest record per key, by event time, then log
    /// offset; every version stays in `<table>_changes`.
    pub upsert: bool,
}

/// What an upsert table's relation of every version adds to its name.
pub const CHANGES_SUFFIX: &str = "_changes";

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
    /// Where the event time is in the record, when not the top-level `field`.
    pub path: Option<JsonPath>,
}

/// The longest SQL expression a table may hold (a derived field or a filter).
pub const MAX_EXPRESSION_BYTES: usize = 16 * 1024;

/// A path into a record's nested JSON: `user.geo.country`, `items[0].sku`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JsonPath(pub Vec<PathStep>);

/// One step of a [`JsonPath`]: an object's key or an array's index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathStep {
    Key(String),
    Index(usize),
}

impl JsonPath {
    /// Parses `a.b[0].c`: keys separated by dots, array indexes in brackets.
    /// A key holds any characters but `.`, `[` and `]`.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let mut steps = Vec::new();
        let mut rest = text;
        if text.is_empty() {
            return Err("a path cannot be empty".into());
        }
        if text.len() > 1024 {
            return Err("a path can be at most 1024 bytes long".into());
        }
        loop {
            let end = rest.find(['.', '[', ']']).unwrap_or(rest.len());
            let key = &rest[..end];
            if key.is_empty() {
                return Err(format!(
                    "`{text}` has an empty key; write keys separated by dots, like `user.geo.country`"
                ));
            }
            steps.push(PathStep::Key(key.to_string()));
            rest = &rest[end..];
            while let Some(after) = rest.strip_prefix('[') {
                let close = after.find(']').ok_or_else(|| format!("`{text}` has a `[` without its `]`"))?;
                let index: usize = after[..close].parse().map_err(|_| {
                    format!("`{text}`: `[{}]` is not an array index (a number from 0)", &after[..close])
                })?;
                if index > 1_000_000 {
                    return Err(format!("`{text}`: index {index} is larger than 1000000"));
                }
                steps.push(PathStep::Index(index));
                rest = &after[close + 1..];
            }
            if rest.is_empty() {
                break;
            }
            rest = rest.strip_prefix('.').ok_or_else(|| format!("`{text}`: expected `.` or `[` before `{rest}`"))?;
            if rest.is_empty() {
                return Err(format!("`{text}` ends with a dot"));
            }
        }
        if steps.len() > 32 {
            return Err(format!("`{text}` is more than 32 steps deep"));
        }
        Ok(JsonPath(steps))
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                PathStep::Key(k) if i == 0 => f.write_str(k)?,
                PathStep::Key(k) => write!(f, ".{k}")?,
                PathStep::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
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
    /// Where the value is in the record, when not the top-level key `name`.
    pub path: Option<JsonPath>,
    /// A derived field: a SQL expression over the fields read from the record
    /// (not over other derived fields), evaluated per batch by DataFusion.
    pub expr: Option<String>,
}

impl FieldConfig {
    /// Whether the record itself holds this field's value (it is not derived).
    pub fn is_read(&self) -> bool {
        self.expr.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RollupConfig {
    pub name: String,
    /// The tumbling window.
    pub granularity_ms: i64,
    pub dimensions: Vec<String>,
    pub aggregations: Vec<Aggregation>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Aggregation {
    /// The output column's name.
    pub name: String,
    pub func: AggFn,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "fn", rename_all = "snake_case")]
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

    /// Every SQL relation the table defines: itself, its late rows and dead
    /// letters, its duplicates (with dedup), its rollups and session windows.
    pub fn relation_names(&self) -> Vec<String> {
        let mut names = vec![self.name.clone(), self.dead_letter_relation(), self.late_relation()];
        if self.dedup.is_some() {
            names.push(self.duplicates_relation());
        }
        names.extend(self.rollups.iter().map(|r| self.rollup_relation(&r.name)));
        names.extend(self.sessions.iter().map(|w| self.session_relation(&w.name)));
        if self.upsert {
            names.push(self.changes_relation());
        }
        names
    }

    /// Every version of every key of an upsert table.
    pub fn changes_relation(&self) -> String {
        format!("{}{CHANGES_SUFFIX}", self.name)
    }

    /// Parses and validates one table definition as the table API takes it:
    /// what a config's `[[tables]]` entry holds, as TOML or as JSON of the same
    /// shape. The checks and messages are the config parser's; paths start at
    /// the table (`rollups[0].dimensions[1]` where a config says
    /// `tables[0].rollups[0].dimensions[1]`). Returns the table and its
    /// definition as TOML (what the store keeps).
    pub fn from_definition(text: &str, format: DefinitionFormat) -> Result<(TableConfig, String), ConfigError> {
        let (toml_text, lines) = match format {
            DefinitionFormat::Toml => (text.to_string(), true),
            DefinitionFormat::Json => (json_to_toml(text)?, false),
        };
        let raw: RawTable = toml::from_str(&toml_text).map_err(|e| {
            let line = e.span().filter(|_| lines).map(|s| Ctx { src: &toml_text }.line(&s));
            ConfigError { path: "(definition)".into(), line, message: e.message().to_string() }
        })?;
        let table = validate_table(&Ctx { src: &toml_text }, "", raw).map_err(|e| match lines {
            true => e,
            false => ConfigError { line: None, ..e },
        })?;
        Ok((table, toml_text))
    }

    /// The topic holding this table's records: its Kafka topic, or its topic of
    /// the embedded log (the table's name).
    pub fn topic(&self) -> &str {
        self.kafka.as_ref().map_or(&self.name, |k| &k.topic)
    }
}

/// How a table definition sent to the table API is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefinitionFormat {
    Toml,
    Json,
}

/// A JSON table definition as TOML text: the same keys and values (JSON has no
/// dates; `null` is refused, since TOML cannot say it: leave the key out).
fn json_to_toml(text: &str) -> Result<String, ConfigError> {
    fn convert(v: serde_json::Value, path: &str) -> Result<toml::Value, ConfigError> {
        let bad = |message: String| ConfigError {
            path: if path.is_empty() { "(definition)".into() } else { path.to_string() },
            line: None,
            message,
        };
        Ok(match v {
            serde_json::Value::Null => return Err(bad("`null` is not a value here: leave the key out".into())),
            serde_json::Value::Bool(b) => toml::Value::Boolean(b),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => toml::Value::Integer(i),
                (None, Some(f)) if n.is_f64() => toml::Value::Float(f),
                _ => return Err(bad(format!("{n} is too large a number"))),
            },
            serde_json::Value::String(s) => toml::Value::String(s),
            serde_json::Value::Array(items) => toml::Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| convert(v, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(map) => {
                let mut t = toml::map::Map::new();
                for (k, v) in map {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    t.insert(k, convert(v, &p)?);
                }
                toml::Value::Table(t)
            }
        })
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ConfigError {
        path: "(definition)".into(),
        line: Some(e.line()),
        message: format!("not JSON: {e}"),
    })?;
    if !value.is_object() {
        return Err(ConfigError {
            path: "(definition)".into(),
            line: None,
            message: "a table definition is a JSON object, like a config's [[tables]] entry".into(),
        });
    }
    let table = convert(value, "")?;
    toml::to_string(&table).map_err(|e| ConfigError {
        path: "(definition)".into(),
        line: None,
        message: format!("cannot be written as TOML: {e}"),
    })
}

/// A definition the catalog holds (TOML) as JSON of the same shape, the table
/// API's other form: what SQL DDL edits to add or drop a rollup.
pub fn definition_as_json(toml_text: &str) -> Result<serde_json::Value, ConfigError> {
    toml::from_str(toml_text).map_err(|e| ConfigError {
        path: "(definition)".into(),
        line: None,
        message: format!("the stored definition is not TOML: {}", e.message()),
    })
}

/// Shortest secret accepted, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;

mod raw;
mod sections;
mod table;

use raw::{RawConfig, RawTable};
use sections::{Ctx, validate_auth, validate_limits, validate_log, validate_query, validate_storage};
use table::validate_table;

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
            pg_listen: raw.server.pg_listen,
            flight_listen: raw.server.flight_listen,
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
            let table = validate_table(&ctx, &format!("tables[{i}]."), t.into_inner())?;
            for n in table.relation_names() {
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

#[cfg(test)]
mod tests;
