//! The manifest: the one record of what a table has sealed.
//!
//! Each table has a sequence of manifest versions on the object store,
//! `tables/<table>/manifest/v<version>.json`. A commit writes version n+1 with a
//! create-if-absent put, so a commit is atomic (a reader sees version n or n+1,
//! whole) and a second writer cannot publish the same version. The newest version is
//! the state; older versions are kept for a while to read history, then deleted.
//!
//! A manifest lists the segments (which files, which time range, which log offsets
//! they cover), where ingest resumes after a restart, and the relation schemas the
//! segments were written with, so that a config change that would make old segments
//! unreadable is refused.
//!
//! # Exactly once
//! A segment of a time range `[start, end)` holds, for every partition `p`, every
//! event of that range with a log offset below `coverage[p]`, minus those already
//! in an earlier segment of the range. After a restart ingest reads each partition
//! from `resume[p]` and skips an event if a segment of its range covers its offset
//! (see [`Manifest::covered`]); late and dead-lettered records are held by side
//! segments, covered the same way by [`Manifest::side_covered`].

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;

/// Manifest versions kept besides the newest.
pub const KEEP_VERSIONS: u64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("manifest `{path}` is not valid: {detail}")]
    Corrupt { path: String, detail: String },
    #[error("manifest `{path}` has format {found}; this build reads format {FORMAT}")]
    Format { path: String, found: u32 },
    #[error("manifest version {version} of table `{table}` already exists: another process writes this table")]
    Conflict { table: String, version: u64 },
}

/// What a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentKind {
    /// The first seal of a time range.
    Base,
    /// A later seal of a range already sealed: events that arrived after it.
    Delta,
    /// Several segments of one range merged into one.
    Compacted,
    /// Late rows, dead letters and closed sessions, which belong to no range.
    Side,
}

/// One Parquet file of a segment: one relation's rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentFile {
    /// The SQL relation whose rows it holds.
    pub relation: String,
    /// Path on the store.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// Least and greatest value of the relation's time column.
    pub min_time_ms: Option<i64>,
    pub max_time_ms: Option<i64>,
}

/// A sealed, immutable segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub id: u64,
    pub kind: SegmentKind,
    /// The time range `[start_ms, end_ms)`; none for side segments.
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// Per partition: every event of this range (side: every late or dead record)
    /// below this offset is sealed, in this segment or an earlier one.
    pub coverage: Vec<u64>,
    /// Counts of the records it holds (raw rows; late; dead letters).
    pub ingested: u64,
    pub late: u64,
    pub dead_lettered: u64,
    /// Repeated deliveries held (side segments of tables with dedup).
    #[serde(default)]
    pub duplicates: u64,
    /// Records a table's filter dropped (side segments): counted, not held.
    #[serde(default)]
    pub filtered: u64,
    pub files: Vec<SegmentFile>,
    pub created_ms: i64,
}

impl Segment {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    pub fn rows(&self, relation: &str) -> u64 {
        self.files.iter().filter(|f| f.relation == relation).map(|f| f.rows).sum()
    }
}

/// Where ingest resumes reading one partition, with the watermark state there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ResumePoint {
    pub offset: u64,
    /// The greatest event time of an accepted record before `offset`.
    pub max_event_ms: Option<i64>,
}

/// Open session windows as of a cut of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCheckpoint {
    pub path: String,
    /// Per partition, the offset the sessions state reflects everything below.
    pub offsets: Vec<u64>,
}

/// A column as sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSchema {
    pub name: String,
    /// Arrow's name of the type, e.g. `Utf8`, `Int64`.
    pub data_type: String,
    pub nullable: bool,
}

/// A relation's columns as its segments were written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationSchema {
    pub relation: String,
    pub columns: Vec<ColumnSchema>,
}

/// A file no longer referenced, deleted once no running query can still read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    pub path: String,
    pub retired_ms: i64,
}

/// The coverage of segments deleted by retention, kept while a restart could still
/// re-read their records, so that it skips them instead of ingesting them again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The range start; none for side segments.
    pub start_ms: Option<i64>,
    pub coverage: Vec<u64>,
}

/// One version of a table's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub table: String,
    pub version: u64,
    pub committed_ms: i64,
    pub partitions: u32,
    pub segment_granularity_ms: i64,
    /// Per partition, where ingest resumes after a restart.
    pub resume: Vec<ResumePoint>,
    pub sessions: Option<SessionCheckpoint>,
    /// The dedup state (ids seen) as of the same cut, for tables with dedup.
    #[serde(default)]
    pub dedup: Option<SessionCheckpoint>,
    pub segments: Vec<Segment>,
    pub relations: Vec<RelationSchema>,
    pub retired: Vec<Retired>,
    #[serde(default)]
    pub tombstones: Vec<Tombstone>,
    /// Records of segments deleted by retention: (ingested, late, dead-lettered).
    /// Counted in [`Manifest::counts`], which only grows.
    #[serde(default)]
    pub expired: (u64, u64, u64),
    #[serde(default)]
    pub expired_duplicates: u64,
    #[serde(default)]
    pub expired_filtered: u64,
    /// The id the next segment gets; files of higher ids are uncommitted leftovers.
    pub next_segment_id: u64,
    /// Per partition, the offset this version of the table was built from (a
    /// replay's `--from-offset`); empty: from the oldest record the log held.
    /// Records below it are in no relation of this version.
    #[serde(default)]
    pub origin: Vec<u64>,
    /// The replay that built this version, if one did.
    #[serde(default)]
    pub replay: Option<ReplayOrigin>,
    /// The table definition (TOML) this version was built with, when a change
    /// made over the table API switched it in: the store's catalog is written
    /// after this commit, so after a crash between the two this one wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
}

/// Where a version of a table built by a replay came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayOrigin {
    /// The replay job's id (its objects are under [`replay_root`]).
    pub job: u64,
    /// The table whose log it read.
    pub source: String,
    /// Per partition, the first offset read and the bound it stopped at (none:
    /// it caught up with the live head and went on as the live table).
    pub from: Vec<u64>,
    pub to: Option<Vec<u64>>,
    /// When it was switched in.
    pub switched_ms: i64,
}

impl Manifest {
    /// The state of a table that has sealed nothing.
    pub fn empty(table: &str, partitions: u32, segment_granularity_ms: i64) -> Manifest {
        Manifest {
            format: FORMAT,
            table: table.to_string(),
            version: 0,
            committed_ms: 0,
            partitions,
            segment_granularity_ms,
            resume: vec![ResumePoint::default(); partitions as usize],
            sessions: None,
            dedup: None,
            segments: Vec::new(),
            relations: Vec::new(),
            retired: Vec::new(),
            tombstones: Vec::new(),
            expired: (0, 0, 0),
            expired_duplicates: 0,
            expired_filtered: 0,
            next_segment_id: 1,
            origin: Vec::new(),
            replay: None,
            definition: None,
        }
    }

    /// Per time range start, the elementwise greatest coverage of its segments.
    pub fn coverage_index(&self) -> BTreeMap<i64, Vec<u64>> {
        let mut out: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
        let ranged = self.segments.iter().map(|s| (s.start_ms, &s.coverage));
        let dropped = self.tombstones.iter().map(|t| (t.start_ms, &t.coverage));
        for (start, coverage) in ranged.chain(dropped) {
            if let Some(start) = start {
                let c = out.entry(start).or_insert_with(|| vec![0; coverage.len()]);
                for (a, b) in c.iter_mut().zip(coverage) {
                    *a = (*a).max(*b);
                }
            }
        }
        out
    }

    /// The elementwise greatest coverage of the side segments.
    pub fn side_coverage(&self) -> Vec<u64> {
        let mut c = vec![0; self.partitions as usize];
        let side = self.segments.iter().filter(|s| s.kind == SegmentKind::Side).map(|s| &s.coverage);
        let dropped = self.tombstones.iter().filter(|t| t.start_ms.is_none()).map(|t| &t.coverage);
        for coverage in side.chain(dropped) {
            for (a, b) in c.iter_mut().zip(coverage) {
                *a = (*a).max(*b);
            }
        }
        c
    }

    /// Everything ever sealed, expired segments included: (ingested, late,
    /// dead-lettered).
    pub fn counts(&self) -> (u64, u64, u64) {
        self.segments.iter().fold(self.expired, |(i, l, d), s| (i + s.ingested, l + s.late, d + s.dead_lettered))
    }

    /// Every duplicate ever sealed, expired segments included.
    pub fn duplicates(&self) -> u64 {
        self.segments.iter().map(|s| s.duplicates).sum::<u64>() + self.expired_duplicates
    }

    /// Every record a filter dropped and a seal counted, expired segments included.
    pub fn filtered(&self) -> u64 {
        self.segments.iter().map(|s| s.filtered).sum::<u64>() + self.expired_filtered
    }

    /// Every file of one relation.
    pub fn files<'a>(&'a self, relation: &'a str) -> impl Iterator<Item = &'a SegmentFile> + 'a {
        self.segments.iter().flat_map(|s| s.files.iter()).filter(move |f| f.relation == relation)
    }

    /// Per partition, the offset this version starts from (0 when it was built
    /// from the log's start).
    pub fn origin(&self, partition: usize) -> u64 {
        self.origin.get(partition).copied().unwrap_or(0)
    }

    pub fn relation_schema(&self, relation: &str) -> Option<&RelationSchema> {
        self.relations.iter().find(|r| r.relation == relation)
    }
}

/// Where a table's objects live on the store: `tables/<table>`. Every path below
/// is under a root: the table's own, or a replay's while it builds a new version.
pub fn table_root(table: &str) -> String {
    format!("tables/{table}")
}

/// The root of replay job `job` of `table`, beside the live version.
pub fn replay_root(table: &str, job: u64) -> String {
    format!("tables/{table}/replays/{job:06}")
}

/// The root of one process's segments of a table whose Kafka partitions move
/// between processes (`kafka.rebalance`): each process keeps its own manifest.
pub fn node_root(table: &str, node: &str) -> String {
    format!("tables/{table}/nodes/{node}")
}

/// The newest manifest of every process that has sealed part of `table` under
/// [`node_root`], by node id. Lists only the node directories and each node's
/// manifest versions, not their segments.
pub async fn load_nodes(store: &Store, table: &str) -> Result<Vec<(String, Manifest)>, ManifestError> {
    let mut out = Vec::new();
    for node in store.list_dirs(&format!("tables/{table}/nodes")).await? {
        let root = node_root(table, &node);
        if let Some(m) = load(store, &root).await? {
            out.push((node, m));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

pub fn manifest_path(root: &str, version: u64) -> String {
    format!("{root}/manifest/v{version:020}.json")
}

pub fn segment_dir(root: &str, id: u64) -> String {
    format!("{root}/segments/{id:012}")
}

pub fn segment_file_path(root: &str, id: u64, relation: &str) -> String {
    format!("{}/{relation}.parquet", segment_dir(root, id))
}

/// The segment id of a path under `<root>/segments/`, if it is one.
pub fn segment_id_of(root: &str, path: &str) -> Option<u64> {
    let rest = path.strip_prefix(&format!("{root}/segments/"))?;
    rest.split('/').next()?.parse().ok()
}

/// A checkpoint file: `kind` is `sessions` or `dedup`.
pub fn checkpoint_path(root: &str, id: u64, kind: &str) -> String {
    format!("{root}/checkpoints/{id:012}.{kind}")
}

fn version_of(path: &str) -> Option<u64> {
    let name = path.rsplit('/').next()?;
    name.strip_prefix('v')?.strip_suffix(".json")?.parse().ok()
}

/// Reads the newest manifest under `root` (see [`table_root`]); `None` if there
/// is none yet.
pub async fn load(store: &Store, root: &str) -> Result<Option<Manifest>, ManifestError> {
    let objects = store.list(&format!("{root}/manifest")).await?;
    let newest = objects.iter().filter_map(|o| version_of(o.location.as_ref())).max();
    let Some(version) = newest else { return Ok(None) };
    load_version(store, root, version).await.map(Some)
}

/// Reads one manifest version under `root`.
pub async fn load_version(store: &Store, root: &str, version: u64) -> Result<Manifest, ManifestError> {
    let path = manifest_path(root, version);
    let bytes = store.get(&path).await?;
    parse(&path, &bytes)
}

fn parse(path: &str, bytes: &[u8]) -> Result<Manifest, ManifestError> {
    #[derive(Deserialize)]
    struct Head {
        format: u32,
    }
    let head: Head = serde_json::from_slice(bytes)
        .map_err(|e| ManifestError::Corrupt { path: path.to_string(), detail: e.to_string() })?;
    if head.format != FORMAT {
        return Err(ManifestError::Format { path: path.to_string(), found: head.format });
    }
    serde_json::from_slice(bytes).map_err(|e| ManifestError::Corrupt { path: path.to_string(), detail: e.to_string() })
}

/// Publishes `next` as the version after `prev`. Atomic: it either becomes the
/// newest version whole or, if that version exists already, fails with
/// [`ManifestError::Conflict`]. A create whose answer was lost and which is retried
/// finds its own manifest, and succeeds.
pub async fn commit(
    store: &Store,
    root: &str,
    prev_version: u64,
    mut next: Manifest,
) -> Result<Manifest, ManifestError> {
    next.format = FORMAT;
    next.version = prev_version + 1;
    let path = manifest_path(root, next.version);
    let bytes = Bytes::from(serde_json::to_vec_pretty(&next).expect("a manifest serializes"));
    if !store.create(&path, bytes.clone()).await? {
        let found = store.get(&path).await?;
        if found != bytes {
            return Err(ManifestError::Conflict { table: next.table.clone(), version: next.version });
        }
    }
    if next.version > KEEP_VERSIONS + 1 {
        let old = next.version - KEEP_VERSIONS - 1;
        if let Err(e) = store.delete(&manifest_path(root, old)).await {
            tracing::warn!(table = %next.table, version = old, error = %e, "could not delete an old manifest version");
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests;
