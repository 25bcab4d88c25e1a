//! The raw (serde) form of a config: the TOML's shape, before its meaning is
//! checked. Syntax and type errors carry TOML's own line and column.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{FieldType, Scope, TimeFormat, UnknownFields};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) auth: RawAuth,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) query: RawQuery,
    #[serde(default)]
    pub(super) storage: RawStorage,
    #[serde(default)]
    pub(super) tables: Vec<Spanned<RawTable>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) pg_listen: Option<String>,
    pub(super) flight_listen: Option<String>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) tls_cert: Option<Spanned<PathBuf>>,
    pub(super) tls_key: Option<Spanned<PathBuf>>,
    pub(super) node_id: Option<Spanned<String>>,
    pub(super) query_only: Option<bool>,
    pub(super) ingest_nodes: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_body_bytes: Option<Spanned<usize>>,
    pub(super) max_records_per_request: Option<Spanned<usize>>,
    pub(super) max_live_connections: Option<Spanned<usize>>,
    pub(super) max_tiles_per_connection: Option<Spanned<usize>>,
    pub(super) max_live_tiles: Option<Spanned<usize>>,
    pub(super) max_tile_bytes: Option<Spanned<usize>>,
    pub(super) max_live_queued_bytes: Option<Spanned<usize>>,
    pub(super) live_send_timeout: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<usize>>,
    pub(super) max_pg_connections: Option<Spanned<usize>>,
    pub(super) pg_send_timeout: Option<Spanned<String>>,
    pub(super) header_timeout: Option<Spanned<String>>,
    pub(super) body_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    #[serde(default)]
    pub(super) tokens: Vec<Spanned<RawToken>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    pub(super) name: Spanned<String>,
    pub(super) token: Option<Spanned<String>>,
    pub(super) token_env: Option<Spanned<String>>,
    pub(super) scopes: Spanned<Vec<Scope>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) segment_bytes: Option<Spanned<u64>>,
    pub(super) fsync: Option<Spanned<String>>,
    pub(super) fsync_interval: Option<Spanned<String>>,
    pub(super) retention_bytes: Option<u64>,
    pub(super) retention_age: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQuery {
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) memory_limit_bytes: Option<Spanned<u64>>,
    pub(super) total_memory_bytes: Option<Spanned<u64>>,
    pub(super) max_concurrent: Option<Spanned<usize>>,
    pub(super) max_queued: Option<Spanned<usize>>,
    pub(super) max_sql_bytes: Option<Spanned<usize>>,
    pub(super) max_result_rows: Option<Spanned<usize>>,
    pub(super) max_result_bytes: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDedup {
    pub(super) field: Spanned<String>,
    pub(super) window: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub(super) url: Option<Spanned<String>>,
    pub(super) endpoint: Option<Spanned<String>>,
    pub(super) region: Option<String>,
    pub(super) access_key_id: Option<String>,
    pub(super) secret_access_key: Option<String>,
    pub(super) secret_access_key_env: Option<Spanned<String>>,
    pub(super) request_timeout: Option<Spanned<String>>,
    pub(super) compact_min_segments: Option<Spanned<usize>>,
    pub(super) catalog_poll: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTable {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) partitions: Option<Spanned<u32>>,
    pub(super) key: Option<Spanned<String>>,
    pub(super) time: Spanned<RawTime>,
    #[serde(default)]
    pub(super) dimensions: Vec<Spanned<RawField>>,
    #[serde(default)]
    pub(super) metrics: Vec<Spanned<RawField>>,
    pub(super) allowed_lateness: Option<Spanned<String>>,
    pub(super) max_future: Option<Spanned<String>>,
    pub(super) segment_granularity: Option<Spanned<String>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) hot_budget_bytes: Option<Spanned<u64>>,
    pub(super) retention: Option<Spanned<String>>,
    pub(super) dedup: Option<Spanned<RawDedup>>,
    #[serde(default)]
    pub(super) unknown_fields: UnknownFields,
    #[serde(default)]
    pub(super) rollups: Vec<Spanned<RawRollup>>,
    #[serde(default)]
    pub(super) sessions: Vec<Spanned<RawSession>>,
    pub(super) kafka: Option<Spanned<RawKafka>>,
    pub(super) avro: Option<Spanned<RawAvro>>,
    pub(super) filter: Option<Spanned<String>>,
    pub(super) upsert: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAvro {
    pub(super) schema: Option<String>,
    #[serde(default)]
    pub(super) confluent: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKafka {
    pub(super) bootstrap_servers: Spanned<String>,
    pub(super) topic: Option<Spanned<String>>,
    pub(super) group_id: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) properties: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub(super) rebalance: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSession {
    pub(super) name: Spanned<String>,
    pub(super) key: Spanned<String>,
    pub(super) gap: Spanned<String>,
    pub(super) aggregations: Vec<Spanned<RawAgg>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTime {
    pub(super) field: Spanned<String>,
    #[serde(default)]
    pub(super) formats: Option<Vec<TimeFormat>>,
    pub(super) path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawField {
    pub(super) name: Spanned<String>,
    #[serde(rename = "type")]
    pub(super) ty: FieldType,
    #[serde(default)]
    pub(super) required: bool,
    pub(super) path: Option<Spanned<String>>,
    pub(super) expr: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollup {
    pub(super) name: Spanned<String>,
    pub(super) granularity: Spanned<String>,
    #[serde(default)]
    pub(super) dimensions: Vec<Spanned<String>>,
    pub(super) aggregations: Vec<Spanned<RawAgg>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgg {
    pub(super) name: Spanned<String>,
    #[serde(rename = "fn")]
    pub(super) func: Spanned<String>,
    pub(super) field: Option<Spanned<String>>,
    pub(super) precision: Option<Spanned<u8>>,
}
