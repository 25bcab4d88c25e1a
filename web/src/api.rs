//! The public JSON documents of the HTTP API, as types: what `GET /v1/tables`,
//! `GET /v1/tables/{name}`, `POST /v1/ingest/{table}`, `POST .../seal`,
//! `POST .../compact`, `GET .../segments` and the replay routes answer
//! (docs/api.md, docs/openapi.json); `weir replay` and `weir segments` print them. The ingest and
//! storage crates' own status types are converted into these at the edge, so
//! changing one of them does not change the API by accident.

use serde::{Deserialize, Serialize};
use weir_ingest::hot::{ColdStatus, SealStats};
use weir_storage::config::{AggFn, TableConfig};

/// Records a table took from its log, by where they went.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    pub ingested: u64,
    pub late: u64,
    pub dead_lettered: u64,
    /// Repeated deliveries of an event id (tables with dedup).
    pub duplicates: u64,
    /// Records the table's filter dropped (tables with a filter).
    #[serde(default)]
    pub filtered: u64,
}

impl From<weir_ingest::hot::Counts> for Counts {
    fn from(c: weir_ingest::hot::Counts) -> Counts {
        Counts {
            ingested: c.ingested,
            late: c.late,
            dead_lettered: c.dead_lettered,
            duplicates: c.duplicates,
            filtered: c.filtered,
        }
    }
}

/// `GET /v1/tables`.
#[derive(Debug, Clone, Serialize)]
pub struct TableList {
    pub tables: Vec<TableSummary>,
}

/// One table in a list: built from the config, or by a replay `--into`.
#[derive(Debug, Clone, Serialize)]
pub struct TableSummary {
    pub name: String,
    pub partitions: u32,
    pub relations: Vec<String>,
    pub counts: Counts,
    /// `config` (the TOML config defines it) or `api` (the table API did);
    /// absent for a table a replay built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defined_by: Option<&'static str>,
    /// Set for a table a replay built (`--into`): read-only, no reader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derived: Option<DerivedFrom>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold: Option<Cold>,
}

/// Where a table built by a replay `--into` came from.
#[derive(Debug, Clone, Serialize)]
pub struct DerivedFrom {
    pub source: String,
    pub job: u64,
    pub replay: Option<ReplayOrigin>,
}

/// Where a version of a table built by a replay came from.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayOrigin {
    pub job: u64,
    /// The table whose log it read.
    pub source: String,
    /// Per partition: the first offset read, and the bound it stopped at (none:
    /// it went on as the live table).
    pub from: Vec<u64>,
    pub to: Option<Vec<u64>>,
    pub switched_ms: i64,
}

impl From<&weir_storage::manifest::ReplayOrigin> for ReplayOrigin {
    fn from(r: &weir_storage::manifest::ReplayOrigin) -> ReplayOrigin {
        ReplayOrigin {
            job: r.job,
            source: r.source.clone(),
            from: r.from.clone(),
            to: r.to.clone(),
            switched_ms: r.switched_ms,
        }
    }
}

/// The sealed side of a table, summed over its manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Cold {
    pub manifest_version: u64,
    pub segments: u64,
    pub bytes: u64,
    pub counts: Counts,
    /// Per partition, where a restart would resume reading.
    pub resume_offsets: Vec<u64>,
}

impl From<&ColdStatus> for Cold {
    fn from(c: &ColdStatus) -> Cold {
        Cold {
            manifest_version: c.manifest_version,
            segments: c.segments,
            bytes: c.bytes,
            counts: c.counts.into(),
            resume_offsets: c.resume_offsets.clone(),
        }
    }
}

/// What the table's sealer has done since the process started.
#[derive(Debug, Clone, Serialize)]
pub struct Sealing {
    pub seals: u64,
    pub rows_sealed: u64,
    pub bytes_written: u64,
    pub last_seal_ms: Option<u64>,
    pub seal_ms_total: u64,
    pub compactions: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

impl From<&SealStats> for Sealing {
    fn from(s: &SealStats) -> Sealing {
        Sealing {
            seals: s.seals,
            rows_sealed: s.rows_sealed,
            bytes_written: s.bytes_written,
            last_seal_ms: s.last_seal_ms,
            seal_ms_total: s.seal_ms_total,
            compactions: s.compactions,
            failures: s.failures,
            last_error: s.last_error.clone(),
        }
    }
}

/// `GET /v1/tables/{name}` on an ingest process.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub name: String,
    /// `config` or `api` (see [`TableSummary::defined_by`]).
    pub defined_by: &'static str,
    /// The definition the table API holds (TOML), for a table of the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// The replay building a new version with a changed definition, while
    /// it runs (`PUT /v1/tables/{name}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changing: Option<u64>,
    pub partitions: u32,
    pub key: Option<String>,
    /// `key` is a primary key: the table shows the latest record per key.
    pub upsert: bool,
    pub time: TimeSpec,
    pub segment_granularity_ms: i64,
    pub allowed_lateness_ms: i64,
    pub schema: Vec<Column>,
    pub rollups: Vec<Rollup>,
    pub sessions: Vec<Session>,
    pub relations: Relations,
    /// The table watermark, RFC 3339, and in ms since the epoch.
    pub watermark: Option<String>,
    pub watermark_ms: Option<i64>,
    pub offsets: Vec<PartitionOffsets>,
    pub source: Source,
    pub records_per_s: f64,
    /// Records in the log (or topic), summed over partitions.
    pub produced: u64,
    /// Records of this process's partitions not ingested yet.
    pub lag: u64,
    /// A version built by a replay from offset N holds nothing below N:
    /// produced = before_origin + counts + lag.
    pub before_origin: u64,
    pub replay: Option<ReplayOrigin>,
    pub hot: Hot,
    pub cold: Cold,
    pub seal: Sealing,
    pub store: String,
    pub counts: Counts,
}

/// `PUT /v1/tables/{name}`: the replay that builds and switches in the new
/// definition, or none when nothing changed.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    pub table: String,
    pub changed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<Replay>,
}

/// `DELETE /v1/tables/{name}`.
#[derive(Debug, Clone, Serialize)]
pub struct Dropped {
    pub table: String,
    pub dropped: bool,
}

/// The event-time field and the formats it is read in.
#[derive(Debug, Clone, Serialize)]
pub struct TimeSpec {
    pub field: String,
    pub formats: Vec<String>,
}

/// A column of a relation's Arrow schema.
#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
}

impl Column {
    pub fn of(schema: &arrow::datatypes::Schema) -> Vec<Column> {
        schema
            .fields()
            .iter()
            .map(|f| Column { name: f.name().clone(), data_type: f.data_type().to_string(), nullable: f.is_nullable() })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Rollup {
    pub name: String,
    pub relation: String,
    pub granularity_ms: i64,
    pub dimensions: Vec<String>,
    pub aggregations: Vec<Aggregation>,
    /// Groups held in memory.
    pub groups: u64,
    pub schema: Vec<Column>,
}

/// One aggregation of a rollup or session window.
#[derive(Debug, Clone, Serialize)]
pub struct Aggregation {
    pub name: String,
    #[serde(rename = "fn")]
    pub func: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<u8>,
}

impl Aggregation {
    pub fn of(a: &weir_storage::config::Aggregation) -> Aggregation {
        let (func, field, precision) = match &a.func {
            AggFn::Count => ("count", None, None),
            AggFn::Sum { field } => ("sum", Some(field.clone()), None),
            AggFn::Min { field } => ("min", Some(field.clone()), None),
            AggFn::Max { field } => ("max", Some(field.clone()), None),
            AggFn::Hll { field, precision } => ("hll", Some(field.clone()), Some(*precision)),
        };
        Aggregation { name: a.name.clone(), func, field, precision }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub name: String,
    pub relation: String,
    pub key: String,
    pub gap_ms: i64,
    /// Sessions open, and closed ones in memory.
    pub open: u64,
    pub closed: u64,
    pub schema: Vec<Column>,
}

/// The relations every table has, by role.
#[derive(Debug, Clone, Serialize)]
pub struct Relations {
    pub raw: String,
    pub late: String,
    pub dead_letter: String,
    /// An upsert table's every version (`raw` shows the latest per key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<String>,
}

/// One partition of the table's log or topic.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionOffsets {
    pub partition: u32,
    pub low: u64,
    pub high: u64,
    pub ingested_up_to: u64,
    pub lag: u64,
    /// Whether this process reads it (Kafka tables shared with `rebalance`).
    pub assigned: bool,
    pub watermark: Option<String>,
    pub idle: bool,
}

/// Where the table reads from.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    Kafka { topic: String, bootstrap_servers: String, group_id: String },
    Log { topic: String },
}

impl Source {
    pub fn of(cfg: &TableConfig) -> Source {
        match &cfg.kafka {
            Some(k) => Source::Kafka {
                topic: k.topic.clone(),
                bootstrap_servers: k.bootstrap_servers.clone(),
                group_id: k.group_id.clone(),
            },
            None => Source::Log { topic: cfg.topic().to_string() },
        }
    }
}

/// What the table holds in memory.
#[derive(Debug, Clone, Serialize)]
pub struct Hot {
    pub raw_rows: u64,
    pub raw_bytes: usize,
    pub rollup_bytes: usize,
    pub session_bytes: usize,
    pub late_rows: u64,
    pub dead_letter_rows: u64,
    pub bytes: usize,
    pub budget_bytes: u64,
    pub backpressured: bool,
    /// Whether a seal is being written now.
    pub sealing: bool,
}

/// `POST /v1/tables/{name}/seal`.
#[derive(Debug, Clone, Serialize)]
pub struct Sealed {
    pub table: String,
    pub segments: usize,
    pub rows: u64,
    pub bytes: u64,
}

/// `POST /v1/tables/{name}/compact`.
#[derive(Debug, Clone, Serialize)]
pub struct Compacted {
    pub table: String,
    pub ranges_compacted: usize,
}

/// `POST /v1/ingest/{table}`: what was appended, per partition.
#[derive(Debug, Clone, Serialize)]
pub struct Appended {
    pub table: String,
    pub appended: usize,
    pub partitions: Vec<PartitionAppend>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionAppend {
    pub partition: u32,
    pub first_offset: u64,
    pub last_offset: u64,
    pub records: usize,
}

impl From<weir_ingest::input::Appended> for Appended {
    fn from(a: weir_ingest::input::Appended) -> Appended {
        Appended {
            table: a.table,
            appended: a.appended,
            partitions: a
                .partitions
                .into_iter()
                .map(|p| PartitionAppend {
                    partition: p.partition,
                    first_offset: p.first_offset,
                    last_offset: p.last_offset,
                    records: p.records,
                })
                .collect(),
        }
    }
}

/// `GET /v1/tables` on a query process.
#[derive(Debug, Clone, Serialize)]
pub struct QueryTableList {
    pub tables: Vec<TableSummary>,
    pub query_process: bool,
    pub ingest_nodes: Vec<crate::remote::NodeStatus>,
}

/// `GET /v1/tables/{name}` on a query process: the ingest processes' own counts
/// summed, plus the sealed counts of nodes that no longer run.
#[derive(Debug, Clone, Serialize)]
pub struct QueryTable {
    pub name: String,
    pub partitions: u32,
    pub relations: Vec<String>,
    pub counts: Counts,
    pub query_process: bool,
    pub ingest_nodes: Vec<IngestNodeTable>,
    pub stopped_nodes: Vec<String>,
    pub store: String,
}

/// One ingest process's part of a table, as a query process last polled it.
#[derive(Debug, Clone, Serialize)]
pub struct IngestNodeTable {
    pub url: String,
    pub node_id: Option<String>,
    pub answering: bool,
    pub error: Option<String>,
    pub version: u64,
    pub counts: Counts,
}

/// A replay job and its progress (`GET /v1/tables/{name}/replays[/{id}]`, the
/// answers to starting and cancelling one), as the API and `weir replay` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Replay {
    pub id: u64,
    pub table: String,
    pub into: Option<String>,
    pub request: ReplayAsked,
    pub state: ReplayState,
    pub error: Option<String>,
    /// Per partition: where it started, where it is, and where it is going (the
    /// live head, or the bound).
    pub from: Vec<u64>,
    pub position: Vec<u64>,
    pub target: Vec<u64>,
    /// Records read so far, and still to read.
    pub read: u64,
    pub remaining: u64,
    pub events_per_s: f64,
    /// Seconds left at the current rate.
    pub eta_s: Option<f64>,
    /// What the new version holds so far.
    pub counts: Counts,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
}

/// What the operator asked a replay for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplayAsked {
    pub from_offset: u64,
    pub partition: Option<u32>,
    pub to_offset: Option<u64>,
    pub into: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReplayState {
    /// Reading the log (or waiting to be resumed after a stop).
    Running,
    /// Replacing the live version.
    Switching,
    Done,
    Cancelled,
    Failed,
}

impl ReplayState {
    pub fn finished(self) -> bool {
        matches!(self, ReplayState::Done | ReplayState::Cancelled | ReplayState::Failed)
    }
}

impl From<&weir_ingest::replay::ReplayStatus> for Replay {
    fn from(s: &weir_ingest::replay::ReplayStatus) -> Replay {
        use weir_ingest::replay::JobState;
        let r = &s.request;
        Replay {
            id: s.id,
            table: s.table.clone(),
            into: s.into.clone(),
            request: ReplayAsked {
                from_offset: r.from_offset,
                partition: r.partition,
                to_offset: r.to_offset,
                into: r.into.clone(),
            },
            state: match s.state {
                JobState::Running => ReplayState::Running,
                JobState::Switching => ReplayState::Switching,
                JobState::Done => ReplayState::Done,
                JobState::Cancelled => ReplayState::Cancelled,
                JobState::Failed => ReplayState::Failed,
            },
            error: s.error.clone(),
            from: s.from.clone(),
            position: s.position.clone(),
            target: s.target.clone(),
            read: s.read,
            remaining: s.remaining,
            events_per_s: s.events_per_s,
            eta_s: s.eta_s,
            counts: s.counts.into(),
            created_ms: s.created_ms,
            finished_ms: s.finished_ms,
        }
    }
}

impl From<&weir_ingest::replay::JobRecord> for Replay {
    fn from(r: &weir_ingest::replay::JobRecord) -> Replay {
        Replay::from(&weir_ingest::replay::ReplayStatus::of(r))
    }
}

/// `GET /v1/tables/{name}/replays`.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayList {
    pub table: String,
    pub replays: Vec<Replay>,
}

/// What a table has sealed, from its manifest (`GET /v1/tables/{name}/segments`,
/// `weir segments --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Segments {
    pub table: String,
    pub store: String,
    pub manifest_version: u64,
    /// When the manifest was committed (none before the first seal).
    pub committed: Option<String>,
    pub resume_offsets: Vec<u64>,
    pub segments: Vec<Segment>,
    pub retired_files: usize,
    pub origin_offsets: Vec<u64>,
    pub replay: Option<ReplayOrigin>,
}

/// One sealed segment.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    pub id: u64,
    /// `base`, `delta`, `compacted` or `side`.
    pub kind: &'static str,
    pub start: Option<String>,
    pub end: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub rows: SegmentRows,
    pub bytes: u64,
    pub coverage: Vec<u64>,
    pub files: Vec<SegmentFile>,
    pub created: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SegmentRows {
    pub ingested: u64,
    pub late: u64,
    pub dead_lettered: u64,
}

/// One Parquet file of a segment: one relation's rows.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentFile {
    pub relation: String,
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub min_time_ms: Option<i64>,
    pub max_time_ms: Option<i64>,
}

impl Segments {
    pub fn of(m: &weir_storage::manifest::Manifest, store: &str) -> Segments {
        use weir_ingest::time::format_ms;
        use weir_storage::manifest::SegmentKind;
        let segments = m
            .segments
            .iter()
            .map(|s| Segment {
                id: s.id,
                kind: match s.kind {
                    SegmentKind::Base => "base",
                    SegmentKind::Delta => "delta",
                    SegmentKind::Compacted => "compacted",
                    SegmentKind::Side => "side",
                },
                start: s.start_ms.map(format_ms),
                end: s.end_ms.map(format_ms),
                start_ms: s.start_ms,
                end_ms: s.end_ms,
                rows: SegmentRows { ingested: s.ingested, late: s.late, dead_lettered: s.dead_lettered },
                bytes: s.bytes(),
                coverage: s.coverage.clone(),
                files: s
                    .files
                    .iter()
                    .map(|f| SegmentFile {
                        relation: f.relation.clone(),
                        path: f.path.clone(),
                        rows: f.rows,
                        bytes: f.bytes,
                        min_time_ms: f.min_time_ms,
                        max_time_ms: f.max_time_ms,
                    })
                    .collect(),
                created: format_ms(s.created_ms),
            })
            .collect();
        Segments {
            table: m.table.clone(),
            store: store.to_string(),
            manifest_version: m.version,
            committed: (m.version > 0).then(|| format_ms(m.committed_ms)),
            resume_offsets: m.resume.iter().map(|r| r.offset).collect(),
            segments,
            retired_files: m.retired.len(),
            origin_offsets: m.origin.clone(),
            replay: m.replay.as_ref().map(Into::into),
        }
    }
}

/// `weir segments --json` for a table whose partitions several processes share:
/// each node's manifest.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSegments {
    pub table: String,
    pub nodes: Vec<NodeManifest>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeManifest {
    pub node: String,
    pub manifest: Segments,
}
