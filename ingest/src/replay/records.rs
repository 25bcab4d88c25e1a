//! A job's stored records: `job.json` under the job's root, the jobs of a table,
//! `derived/<into>.json` for tables built with `--into`, creating a job and
//! cancelling one no process runs.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weir_storage::config::is_identifier;
use weir_storage::log::Topic;
use weir_storage::manifest;
use weir_storage::store::Store;

use super::switch::delete_under;
use super::*;

pub(super) fn job_path(table: &str, id: u64) -> String {
    format!("{}/{JOB_FILE}", manifest::replay_root(table, id))
}

/// Where a table built by `--into` is recorded, so a server serves it at start.
pub fn derived_path(table: &str) -> String {
    format!("derived/{table}.json")
}

/// A table built by `--into`, as recorded under `derived/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Derived {
    pub name: String,
    /// The table whose log and config it was built from.
    pub source: String,
    pub job: u64,
}

/// The tables built by `--into` that the store holds.
pub async fn derived_tables(store: &Store) -> Result<Vec<Derived>> {
    let mut out = Vec::new();
    for meta in store.list("derived").await? {
        let path = meta.location.to_string();
        let bytes = store.get(&path).await?;
        let d: Derived = serde_json::from_slice(&bytes)
            .map_err(|e| ReplayError::Invalid(format!("`{path}` is not a derived-table record: {e}")))?;
        out.push(d);
    }
    Ok(out)
}

/// Every job of `table` the store records, oldest first.
pub async fn jobs(store: &Store, table: &str) -> Result<Vec<JobRecord>> {
    let mut out = Vec::new();
    for meta in store.list(&format!("{}/replays", manifest::table_root(table))).await? {
        let path = meta.location.to_string();
        if !path.ends_with(&format!("/{JOB_FILE}")) {
            continue;
        }
        let bytes = store.get(&path).await?;
        let r: JobRecord = serde_json::from_slice(&bytes)
            .map_err(|e| ReplayError::Invalid(format!("`{path}` is not a replay job record: {e}")))?;
        out.push(r);
    }
    out.sort_by_key(|r| r.id);
    Ok(out)
}

pub(super) async fn save(store: &Store, record: &JobRecord) -> Result<()> {
    let bytes = Bytes::from(serde_json::to_vec_pretty(record).expect("a job record serializes"));
    store.put(&job_path(&record.table, record.id), bytes).await?;
    Ok(())
}

/// Checks a request against the log and the store and records a new job, or
/// returns the unfinished job of the same request (to resume it). `taken` says
/// whether a name is already a table of the server; `definition`, a new
/// definition of the table to build with and switch in (in place only).
pub async fn create(
    store: &Store,
    topic: &Topic,
    source: &TableConfig,
    request: ReplayRequest,
    definition: Option<String>,
    taken: &(dyn Fn(&str) -> bool + Sync),
    now_ms: i64,
) -> Result<(JobRecord, bool)> {
    let table = &source.name;
    let invalid = |m: String| Err(ReplayError::Invalid(m));
    let existing = jobs(store, table).await?;
    if let Some(open) = existing.iter().find(|j| !j.state.finished()) {
        if open.request == request && open.definition == definition {
            return Ok((open.clone(), true));
        }
        return Err(ReplayError::Busy { table: table.clone(), job: open.id, detail: describe(&open.request) });
    }
    let parts = topic.partitions();
    if let Some(p) = request.partition
        && p >= parts
    {
        return invalid(format!("table `{table}` has partitions 0 to {}; there is no partition {p}", parts - 1));
    }
    match &request.into {
        None if request.partition.is_some() || request.to_offset.is_some() => {
            return invalid(format!(
                "a replay that replaces `{table}` reads every partition up to the live head; --partition and --to-offset need --into NEW_TABLE"
            ));
        }
        Some(name) if !is_identifier(name) => {
            return invalid(format!(
                "`{name}` is not a valid table name: use lowercase letters, digits and _, starting with a letter"
            ));
        }
        Some(name) if taken(name) || name == table => {
            return invalid(format!("a table named `{name}` exists already; --into needs a new name"));
        }
        Some(name) if manifest::load(store, &manifest::table_root(name)).await?.is_some() => {
            return invalid(format!("the store already holds a table `{name}`; --into needs a new name"));
        }
        _ => {}
    }
    let mut from = Vec::with_capacity(parts as usize);
    let mut to = Vec::with_capacity(parts as usize);
    for p in 0..parts {
        let held = topic.offsets(p);
        if request.partition.is_some_and(|only| only != p) {
            // Not replayed: nothing is read there.
            from.push(held.low);
            to.push(held.low);
            continue;
        }
        let start = request.from_offset;
        if start < held.low {
            return Err(ReplayError::Retention { table: table.clone(), partition: p, offset: start, oldest: held.low });
        }
        if start > held.high {
            return invalid(format!(
                "partition {p} of table `{table}` holds offsets {} to {}; --from-offset {start} is past its end",
                held.low,
                held.high.saturating_sub(1)
            ));
        }
        let end = match request.to_offset {
            Some(t) if t <= start => {
                return invalid(format!("--to-offset {t} must be greater than --from-offset {start}"));
            }
            Some(t) if t > held.high => {
                return invalid(format!(
                    "partition {p} of table `{table}` ends at offset {}; --to-offset {t} is past its end",
                    held.high
                ));
            }
            Some(t) => t,
            None => held.high,
        };
        from.push(start);
        to.push(end);
    }
    let id = existing.last().map_or(1, |j| j.id + 1);
    let record = JobRecord {
        id,
        table: table.clone(),
        to: request.into.as_ref().map(|_| to),
        request,
        from,
        created_ms: now_ms,
        state: JobState::Running,
        error: None,
        finished_ms: None,
        read: 0,
        counts: Counts::default(),
        definition,
    };
    let bytes = Bytes::from(serde_json::to_vec_pretty(&record).expect("a job record serializes"));
    if !store.create(&job_path(table, id), bytes).await? {
        return Err(ReplayError::Invalid(format!(
            "another process created replay job {id} of `{table}` at the same moment; try again"
        )));
    }
    Ok((record, false))
}

/// Marks a recorded job cancelled and deletes what it built, when no process
/// runs it (standalone `--cancel`).
pub async fn cancel_stored(store: &Store, table: &str, id: u64, now_ms: i64) -> Result<JobRecord> {
    let mut record = jobs(store, table)
        .await?
        .into_iter()
        .find(|j| j.id == id)
        .ok_or_else(|| ReplayError::Invalid(format!("table `{table}` has no replay job {id}")))?;
    if record.state.finished() {
        return Err(ReplayError::Finished { table: table.to_string(), job: id, state: record.state });
    }
    delete_under(store, &record.root(), |p| !p.ends_with(JOB_FILE)).await?;
    record.state = JobState::Cancelled;
    record.finished_ms = Some(now_ms);
    save(store, &record).await?;
    Ok(record)
}
