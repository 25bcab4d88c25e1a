//! Committing what a replay built: the manifest that switches it in (retiring
//! the old version), the in-place switch under the live sealer's lock, the
//! sealed finish standalone or `--into`, and the clean-up after.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_storage::manifest::{self, Manifest, ReplayOrigin, Retired};
use weir_storage::store::Store;

use super::drive::Staging;
use super::jobs::{Job, ReplayEnv};
use super::records::derived_path;
use super::*;
use crate::hot::{HotTable, SealScope};
use crate::pipeline::ReaderHandle;
use crate::seal::{Sealer, SealerHandle, seal_all};

/// The manifest that publishes what a replay built as `record.target()`'s
/// current version, retiring everything `prev` listed.
fn switched(prev: &Manifest, built: &Manifest, record: &JobRecord, now_ms: i64) -> Manifest {
    let mut next = built.clone();
    next.table = record.target().to_string();
    let mut retired = prev.retired.clone();
    let old_files = prev.segments.iter().flat_map(|s| s.files.iter()).map(|f| f.path.clone());
    let old_checkpoints = prev.sessions.iter().chain(prev.dedup.iter()).map(|c| c.path.clone());
    retired.extend(old_files.chain(old_checkpoints).map(|path| Retired { path, retired_ms: now_ms }));
    retired.extend(built.retired.iter().cloned());
    next.retired = retired;
    next.next_segment_id = prev.next_segment_id.max(built.next_segment_id);
    next.origin = record.from.clone();
    next.replay = Some(ReplayOrigin {
        job: record.id,
        source: record.table.clone(),
        from: record.from.clone(),
        to: record.to.clone(),
        switched_ms: now_ms,
    });
    next.committed_ms = now_ms;
    next.definition = record.definition.clone().or_else(|| prev.definition.clone());
    next
}

/// Standalone, or into a new table: everything is read; seal it all and commit
/// the target's manifest.
pub(super) async fn finish_sealed(job: &Job, env: &ReplayEnv, record: &JobRecord, staging: &mut Staging) -> Result<()> {
    job.status.lock().state = JobState::Switching;
    let (_, sealer) = staging.halt()?;
    if let Some(s) = &sealer {
        seal_all(s, Instant::now() + Duration::from_secs(60)).await?;
    }
    job.status.lock().counts = staging.hot.counts();
    let root = manifest::table_root(record.target());
    let prev = manifest::load(&env.store, &root).await?.unwrap_or_else(|| {
        let c = staging.hot.config();
        Manifest::empty(&c.name, c.partitions, c.segment_granularity_ms)
    });
    let built = staging.hot.cold().manifest.clone();
    let next = switched(&prev, &built, record, env.clock.now_ms());
    let committed = manifest::commit(&env.store, &root, prev.version, next).await?;
    record_definition(env, record).await;
    publish_derived(env, record).await?;
    cleanup(&env.store, &staging.root, &committed).await?;
    Ok(())
}

/// Once a job with a new definition committed it: the store's catalog says so
/// too. A failure here is repaired at the next start, which takes the
/// definition from the manifest.
async fn record_definition(env: &ReplayEnv, record: &JobRecord) {
    let Some(definition) = &record.definition else { return };
    if let Err(e) = weir_storage::catalog::put(&env.store, &record.table, definition).await {
        tracing::warn!(table = %record.table, error = %e, "could not write the new definition to the catalog; the next start takes it from the manifest");
    }
}

/// For `--into`, once its manifest is committed: records the new table under
/// `derived/` (so a server serves it at every start) and serves it now.
pub(super) async fn publish_derived(env: &ReplayEnv, record: &JobRecord) -> Result<()> {
    let Some(into) = &record.request.into else { return Ok(()) };
    let d = Derived { name: into.clone(), source: record.table.clone(), job: record.id };
    let bytes = Bytes::from(serde_json::to_vec_pretty(&d).expect("a derived record serializes"));
    env.store.put(&derived_path(into), bytes).await?;
    env.host.publish(&d);
    Ok(())
}

/// Replaces the live version with the replay's and returns where the replay's
/// reader stood, or returns `Ok(None)` to try again later (a seal of the replay
/// failed, the live reader is not running, the replay could not reach the live
/// position in time).
pub(super) async fn switch(
    env: &ReplayEnv,
    record: &JobRecord,
    staging: &mut Staging,
    live_hot: &Arc<HotTable>,
    live_sealer: &Arc<Sealer>,
) -> Result<Option<Vec<u64>>> {
    // No seal of the replay in flight: one that failed before is retried now.
    let sealer = staging.sealer.take().map(SealerHandle::stop);
    if staging.hot.status().sealing
        && let Some(s) = &sealer
        && let Err(e) = s.seal(SealScope::Due).await
    {
        tracing::warn!(table = %record.table, job = record.id, error = %e, "a seal of the replay failed; switching later");
        staging.resume(None, sealer)?;
        return Ok(None);
    }
    // No seal of the live table either, until the switch is done.
    let _exclusive = live_sealer.exclusive().await;
    let Some(live_handle) = env.host.take_reader(&record.table) else {
        staging.resume(None, sealer)?;
        return Ok(None);
    };
    let live_reader = live_handle.stop_and_take()?;
    let wanted = live_reader.positions().to_vec();
    let deadline = Instant::now() + SWITCH_WAIT;
    while staging.positions().iter().zip(&wanted).any(|(p, w)| p < w) {
        if Instant::now() >= deadline {
            env.host.put_reader(ReaderHandle::spawn(live_reader)?);
            staging.resume(None, sealer)?;
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (reader, _) = staging.halt()?;
    let mut reader = reader.expect("the replay's reader runs until the switch");
    let position = reader.positions().to_vec();
    let prev = live_hot.cold().manifest.clone();
    let built = staging.hot.cold().manifest.clone();
    let next = switched(&prev, &built, record, env.clock.now_ms());
    let committed = match manifest::commit(&env.store, &manifest::table_root(&record.table), prev.version, next).await {
        Ok(m) => m,
        Err(e) => {
            env.host.put_reader(ReaderHandle::spawn(live_reader)?);
            staging.resume(Some(reader), sealer)?;
            return Err(e.into());
        }
    };
    let old_sealer = match &record.definition {
        // A new definition: the replay's table, with its own config and
        // relations, replaces the live one; a sealer of its own takes over.
        Some(_) => {
            live_sealer.retire();
            record_definition(env, record).await;
            staging.hot.install_manifest(committed.clone(), false);
            env.host.replace(staging.hot.clone(), ReaderHandle::spawn(reader)?)
        }
        None => {
            live_hot.adopt(&staging.hot, committed.clone());
            reader.rebind(live_hot.clone());
            env.host.put_reader(ReaderHandle::spawn(reader)?);
            None
        }
    };
    drop(live_reader);
    drop(_exclusive);
    // Its thread may be waiting for the lock released just above: retired, it
    // does nothing more.
    drop(old_sealer.map(SealerHandle::stop));
    cleanup(&env.store, &staging.root, &committed).await?;
    Ok(Some(position))
}

/// After a commit that took a replay's segments: deletes the replay's manifest
/// versions and any of its files the committed manifest does not name.
pub(super) async fn cleanup(store: &Store, root: &str, committed: &Manifest) -> Result<()> {
    let mut named: std::collections::HashSet<&str> =
        committed.segments.iter().flat_map(|s| s.files.iter()).map(|f| f.path.as_str()).collect();
    named.extend(committed.retired.iter().map(|r| r.path.as_str()));
    named.extend(committed.sessions.iter().chain(committed.dedup.iter()).map(|c| c.path.as_str()));
    delete_under(store, root, |p| !p.ends_with(JOB_FILE) && !named.contains(p)).await
}

pub(super) async fn delete_under(store: &Store, root: &str, pick: impl Fn(&str) -> bool) -> Result<()> {
    for meta in store.list(root).await? {
        let path = meta.location.to_string();
        if pick(&path) {
            store.delete(&path).await?;
        }
    }
    Ok(())
}
