//! A job's loop ([`drive`]): the staging side (the new version's hot table,
//! reader and sealer), progress, cancel and stop, and the finish.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::jobs::{End, Job, ReplayEnv};
use super::switch::{cleanup, delete_under, finish_sealed, publish_derived, switch};
use super::*;
use crate::hot::{Counts, HotTable};
use crate::pipeline::{ReaderHandle, TableReader};
use crate::seal::{Sealer, SealerHandle, seal_all};

/// The staging side of a job: the new version's hot table, reader and sealer.
pub(super) struct Staging {
    pub(super) hot: Arc<HotTable>,
    pub(super) reader: Option<ReaderHandle>,
    pub(super) sealer: Option<SealerHandle>,
    pub(super) root: String,
}

impl Staging {
    async fn open(env: &ReplayEnv, record: &JobRecord) -> Result<Staging> {
        let cfg = Arc::new(record.config(&env.config)?);
        let root = record.root();
        let hot = Arc::new(HotTable::new(cfg));
        Sealer::recover_at(&hot, &env.store, &root, &record.from).await?;
        let mut reader = TableReader::new(hot.clone(), env.topic.clone(), env.clock.clone())?;
        if let Some(to) = &record.to {
            reader = reader.with_until(to.clone());
        }
        let sealer = Sealer::new(hot.clone(), env.store.clone(), env.clock.clone(), env.compact_min_segments)
            .at_root(root.clone());
        Ok(Staging {
            reader: Some(ReaderHandle::spawn(reader)?),
            sealer: Some(SealerHandle::spawn(sealer)?),
            hot,
            root,
        })
    }

    pub(super) fn positions(&self) -> Vec<u64> {
        self.hot.next_offsets()
    }

    /// Stops reading and background sealing; returns the reader and the sealer.
    pub(super) fn halt(&mut self) -> Result<(Option<TableReader>, Option<Arc<Sealer>>)> {
        let reader = match self.reader.take() {
            Some(r) => Some(r.stop_and_take()?),
            None => None,
        };
        Ok((reader, self.sealer.take().map(SealerHandle::stop)))
    }

    pub(super) fn resume(&mut self, reader: Option<TableReader>, sealer: Option<Arc<Sealer>>) -> Result<()> {
        if let Some(r) = reader {
            self.reader = Some(ReaderHandle::spawn(r)?);
        }
        if let Some(s) = sealer {
            self.sealer = Some(SealerHandle::spawn(s)?);
        }
        Ok(())
    }
}

/// Rate over a sliding window of (instant, records read) samples.
struct Rate(std::collections::VecDeque<(Instant, u64)>);

impl Rate {
    fn observe(&mut self, read: u64) -> f64 {
        let now = Instant::now();
        self.0.push_back((now, read));
        while self.0.len() > 2 && now.duration_since(self.0[0].0) > Duration::from_secs(3) {
            self.0.pop_front();
        }
        let (t0, r0) = self.0[0];
        let dt = now.duration_since(t0).as_secs_f64();
        if dt > 0.0 { (read - r0) as f64 / dt } else { 0.0 }
    }
}

/// A job's loop: every 20 ms it publishes its progress, holds the live log at
/// what it has not sealed, and once caught up seals or switches in.
pub(super) async fn drive(job: &Job, env: &ReplayEnv, record: &JobRecord) -> Result<End> {
    let target_root = manifest::table_root(record.target());
    // A crash after the switch's commit and before the record said so.
    if let Some(m) = manifest::load(&env.store, &target_root).await?
        && m.replay.as_ref().is_some_and(|r| r.job == record.id && r.source == record.table)
    {
        publish_derived(env, record).await?;
        cleanup(&env.store, &record.root(), &m).await?;
        return Ok(End::Done);
    }
    let staging = Staging::open(env, record).await?;
    let live = match record.request.into {
        None => env.host.live(&record.table),
        Some(_) => None,
    };
    let mut d = Driver { job, env, record, staging, live, rate: Rate(Default::default()) };
    tracing::info!(table = %record.table, job = record.id, request = %describe(&record.request), "replay running");
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (position, target) = d.progress();
        d.check_reader()?;
        if let Some(end) = d.interrupted(&position).await? {
            return Ok(end);
        }
        if !d.caught_up(&position, &target) {
            continue;
        }
        if let Some((position, counts)) = d.finish().await? {
            d.done(position, counts);
            return Ok(End::Done);
        }
    }
}

/// The state of one run of [`drive`].
struct Driver<'a> {
    job: &'a Job,
    env: &'a ReplayEnv,
    record: &'a JobRecord,
    staging: Staging,
    /// The live table and its sealer, for an in-place replay in a server.
    live: Option<(Arc<HotTable>, Arc<Sealer>)>,
    rate: Rate,
}

impl Driver<'_> {
    /// Publishes where the replay is and where it goes, and holds the live log
    /// at what the replay has not sealed yet; returns (position, target).
    fn progress(&mut self) -> (Vec<u64>, Vec<u64>) {
        let (record, staging) = (self.record, &self.staging);
        let position = staging.positions();
        let target: Vec<u64> = match &record.to {
            Some(to) => to.clone(),
            None => (0..self.env.topic.partitions()).map(|p| self.env.topic.offsets(p).high).collect(),
        };
        let read: u64 = position.iter().zip(&record.from).map(|(p, f)| p.saturating_sub(*f)).sum();
        let remaining: u64 = target.iter().zip(&position).map(|(t, p)| t.saturating_sub(*p)).sum();
        let eps = self.rate.observe(read);
        {
            let mut s = self.job.status.lock();
            s.position = position.clone();
            s.target = target.clone();
            s.read = read;
            s.remaining = remaining;
            s.events_per_s = eps;
            s.eta_s = (eps > 0.0).then(|| remaining as f64 / eps);
            s.counts = staging.hot.counts();
        }
        if let Some((_, live_sealer)) = &self.live {
            let built = staging.hot.cold();
            let hold = if built.manifest.version == 0 {
                record.from.clone()
            } else {
                built.manifest.resume.iter().map(|r| r.offset).collect()
            };
            live_sealer.hold_log(Some(hold));
        }
        (position, target)
    }

    /// Fails the job if the replay's reader ended.
    fn check_reader(&mut self) -> Result<()> {
        if self.staging.reader.as_ref().is_some_and(ReaderHandle::is_finished) {
            let mut reader = self.staging.reader.take().expect("checked above");
            reader.join()?;
            return Err(ReplayError::Invalid("the replay's reader stopped".into()));
        }
        Ok(())
    }

    /// Ends the job if it was cancelled (deleting what it built) or stopped
    /// (sealing what it read, to resume at the next start).
    async fn interrupted(&mut self, position: &[u64]) -> Result<Option<End>> {
        let (job, record) = (self.job, self.record);
        if job.cancel.load(Ordering::SeqCst) {
            self.staging.halt()?;
            release(&self.live);
            delete_under(&self.env.store, &self.staging.root, |p| !p.ends_with(JOB_FILE)).await?;
            tracing::info!(table = %record.table, job = record.id, "replay cancelled");
            return Ok(Some(End::Cancelled));
        }
        if job.stop.load(Ordering::SeqCst) {
            let (_, sealer) = self.staging.halt()?;
            if let Some(s) = sealer {
                seal_all(&s, Instant::now() + Duration::from_secs(20)).await?;
            }
            release(&self.live);
            tracing::info!(table = %record.table, job = record.id, position = ?position, "replay stopped; it resumes at the next start");
            return Ok(Some(End::Stopped));
        }
        Ok(None)
    }

    /// Whether the replay is far enough to finish: at its bound, at the log's
    /// head, or (in place, in a server) close enough to the live head to switch.
    fn caught_up(&self, position: &[u64], target: &[u64]) -> bool {
        match (&self.record.to, &self.live) {
            (Some(to), _) => position.iter().zip(to).all(|(p, t)| p >= t),
            (None, Some(_)) => target.iter().zip(position).all(|(t, p)| t.saturating_sub(*p) <= CAUGHT_UP_RECORDS),
            (None, None) => target.iter().zip(position).all(|(t, p)| p >= t),
        }
    }

    /// Seals and commits the new version, or switches it in; returns where it
    /// ended up and what it holds, or `None` to try again later.
    async fn finish(&mut self) -> Result<Option<(Vec<u64>, Counts)>> {
        let (job, env, record) = (self.job, self.env, self.record);
        Ok(match (&record.request.into, &self.live) {
            (Some(_), _) | (None, None) => {
                finish_sealed(job, env, record, &mut self.staging).await?;
                Some((self.staging.positions(), self.staging.hot.counts()))
            }
            (None, Some((live_hot, live_sealer))) => {
                job.status.lock().state = JobState::Switching;
                let switched = switch(env, record, &mut self.staging, live_hot, live_sealer).await;
                job.status.lock().state = JobState::Running;
                match switched {
                    Ok(at) => at.map(|position| (position, live_hot.counts())),
                    Err(e) => {
                        tracing::warn!(table = %record.table, job = record.id, error = %e, "the switch failed; retrying");
                        None
                    }
                }
            }
        })
    }

    /// Records the job done at `position`, holding `counts`.
    fn done(&self, position: Vec<u64>, counts: Counts) {
        let record = self.record;
        let mut s = self.job.status.lock();
        s.read = position.iter().zip(&record.from).map(|(p, f)| p.saturating_sub(*f)).sum();
        s.remaining = 0;
        s.eta_s = None;
        s.target = position.clone();
        s.position = position;
        s.counts = counts;
        // Done as soon as the new version is committed and served; tearing
        // down the job's state comes after.
        s.state = JobState::Done;
        s.finished_ms = Some(self.env.clock.now_ms());
        drop(s);
        release(&self.live);
        tracing::info!(table = %record.table, job = record.id, into = record.target(), "replay switched in");
    }
}

pub(super) fn release(live: &Option<(Arc<HotTable>, Arc<Sealer>)>) {
    if let Some((_, s)) = live {
        s.hold_log(None);
    }
}
