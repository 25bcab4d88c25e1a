//! Replay: a table re-derived from its log, from any offset (Kappa backfill).
//!
//! A replay job builds a new version of a table beside the live one, with the
//! table's current config: its own hot tier, reader and sealer, writing under its
//! own root on the store (`tables/<table>/replays/<job>/`, see
//! [`manifest::replay_root`]). The live table keeps ingesting and serving
//! meanwhile. The job's record (`job.json` there) and its manifest make it
//! resumable: after a crash or a stop it recovers like any table (resume points,
//! coverage, checkpoints) and goes on.
//!
//! - **In place** (no `into`): once the new version has caught up with the live
//!   head, it is switched in. Under the live sealer's exclusive lock, the live
//!   reader stops, the replay reads at least as far, the live manifest commits a
//!   version listing the replay's segments and retiring the old ones (one atomic
//!   create-if-absent put), and the live hot table adopts the replay's in-memory
//!   state in one locked step ([`HotTable::adopt`]): a query sees the old version
//!   or the new one, whole. The replay's reader then goes on as the live reader.
//!   Without a server (standalone), the replay reads to the log's head, seals
//!   everything, and commits the live manifest the same way.
//! - **Into a new table** (`into`): the replay reads up to its bounds (`to`, or
//!   the head when the job was created), seals everything, and commits the new
//!   table's first manifest under `tables/<into>/`; the server then serves it,
//!   read-only, and finds it again at start through `derived/<into>.json`.
//!
//! Deterministic: lateness, dedup and sessions are decided per partition from the
//! log alone, sums are exact and sketches canonical, so the same log gives the
//! same aggregates, late rows and dead letters, however the job was interrupted.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_storage::config::TableConfig;
use weir_storage::manifest::{self, ManifestError};
use weir_storage::store::StoreError;

use crate::hot::Counts;
use crate::seal::SealError;

mod drive;
mod jobs;
mod records;
mod switch;

pub use self::jobs::{Job, ReplayEnv, ReplayHost, ReplayStatus, Replays, Standalone};
pub use self::records::{Derived, cancel_stored, create, derived_path, derived_tables, jobs};

/// The job record's file name under the job's root.
pub const JOB_FILE: &str = "job.json";

/// An in-place replay switches in once every partition is at most this many
/// records behind the live head (the switch itself then reads the rest).
pub const CAUGHT_UP_RECORDS: u64 = 20_000;

/// How long a switch waits for the replay to reach the stopped live reader.
const SWITCH_WAIT: Duration = Duration::from_secs(30);

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// The first offset read, in every partition (or only in `partition`).
    pub from_offset: u64,
    /// Replay only this partition (needs `into`).
    #[serde(default)]
    pub partition: Option<u32>,
    /// Stop before this offset (needs `into`).
    #[serde(default)]
    pub to_offset: Option<u64>,
    /// Build this new table instead of replacing the live one.
    #[serde(default)]
    pub into: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Reading the log (or waiting to be resumed after a stop).
    Running,
    /// Replacing the live version.
    Switching,
    Done,
    Cancelled,
    Failed,
}

impl JobState {
    pub fn finished(self) -> bool {
        matches!(self, JobState::Done | JobState::Cancelled | JobState::Failed)
    }
}

/// A replay job as stored in its `job.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: u64,
    /// The table whose log is read and whose config is used.
    pub table: String,
    pub request: ReplayRequest,
    /// Per partition, the first offset read.
    pub from: Vec<u64>,
    /// Per partition, the offset reading stops before (into a new table only).
    pub to: Option<Vec<u64>>,
    pub created_ms: i64,
    pub state: JobState,
    pub error: Option<String>,
    pub finished_ms: Option<i64>,
    /// Records read and what the new version held, as of the job's last stop.
    #[serde(default)]
    pub read: u64,
    #[serde(default)]
    pub counts: Counts,
    /// A new definition of the table (TOML) that this job builds with and
    /// switches in, when the table API changed it; none: the table's current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
}

impl JobRecord {
    /// Where the job's record, manifest and files live.
    pub fn root(&self) -> String {
        manifest::replay_root(&self.table, self.id)
    }

    /// The table the job builds.
    pub fn target(&self) -> &str {
        self.request.into.as_deref().unwrap_or(&self.table)
    }

    /// The config the job builds with: its new definition, or the source
    /// table's, renamed for `into`.
    pub fn config(&self, source: &TableConfig) -> Result<TableConfig> {
        let mut cfg = match &self.definition {
            Some(d) => {
                TableConfig::from_definition(d, weir_storage::config::DefinitionFormat::Toml)
                    .map_err(|e| ReplayError::Invalid(format!("the new definition of `{}`: {e}", self.table)))?
                    .0
            }
            None => source.clone(),
        };
        cfg.name = self.target().to_string();
        Ok(cfg)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Ingest(#[from] crate::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A request that cannot run; the message names what is wrong.
    #[error("{0}")]
    Invalid(String),
    #[error(
        "partition {partition} of table `{table}` no longer holds offset {offset}: the oldest offset still held there is {oldest} (log retention deleted the rest); replay from offset {oldest} or later"
    )]
    Retention { table: String, partition: u32, offset: u64, oldest: u64 },
    #[error(
        "table `{table}` has an unfinished replay, job {job} ({detail}); follow it with `weir replay --table {table} --follow {job}`, or cancel it with `weir replay --table {table} --cancel {job}`"
    )]
    Busy { table: String, job: u64, detail: String },
    #[error("job `{job}` of table `{table}` is {state:?}: nothing to do")]
    Finished { table: String, job: u64, state: JobState },
}

pub type Result<T, E = ReplayError> = std::result::Result<T, E>;

pub(super) fn describe(r: &ReplayRequest) -> String {
    let mut s = format!("from offset {}", r.from_offset);
    if let Some(p) = r.partition {
        s.push_str(&format!(" of partition {p}"));
    }
    if let Some(t) = r.to_offset {
        s.push_str(&format!(" to offset {t}"));
    }
    if let Some(i) = &r.into {
        s.push_str(&format!(" into `{i}`"));
    }
    s
}

#[cfg(test)]
mod tests;
