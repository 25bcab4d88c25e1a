//! Recovery from the store (the manifest, checkpoints, resume points) and the
//! view of the other processes sharing the table's partitions.

use super::*;

impl Sealer {
    /// Loads the table's newest manifest and session checkpoint into `hot`,
    /// refuses a config its segments cannot serve, and deletes what a crash left
    /// uncommitted and what was retired. Call before the table's reader starts.
    pub async fn recover(hot: &HotTable, store: &Store) -> Result<()> {
        Self::recover_at(hot, store, &manifest::table_root(&hot.config().name), &[]).await
    }

    /// [`Sealer::recover`] from the manifest under `root`. A table with no
    /// manifest there yet starts at `origin` (per partition; empty: the log's
    /// oldest record).
    pub async fn recover_at(hot: &HotTable, store: &Store, root: &str, origin: &[u64]) -> Result<()> {
        let cfg = hot.config();
        let name = cfg.name.clone();
        let incompatible = |detail: String| SealError::Incompatible { table: name.clone(), detail };
        let m = manifest::load(store, root).await?.unwrap_or_else(|| {
            let mut m = Manifest::empty(&cfg.name, cfg.partitions, cfg.segment_granularity_ms);
            m.origin = origin.to_vec();
            m
        });
        if m.partitions != cfg.partitions {
            return Err(incompatible(format!(
                "it was sealed with {} partitions and the config now has {}; the log's offsets are per partition, so keep {} or replay into a new table",
                m.partitions, cfg.partitions, m.partitions
            )));
        }
        if m.segment_granularity_ms != cfg.segment_granularity_ms {
            return Err(incompatible(format!(
                "it was sealed with segment_granularity {} ms and the config now says {} ms; keep it, or replay into a new table",
                m.segment_granularity_ms, cfg.segment_granularity_ms
            )));
        }
        for rel in hot.relations() {
            if let Some(old) = m.relation_schema(&rel.name)
                && let Some(why) = segment::incompatibility(&rel.name, &old.columns, &rel.schema)
            {
                return Err(incompatible(why));
            }
        }
        let checkpoint = match &m.sessions {
            Some(c) => Some(store.get(&c.path).await?),
            None => None,
        };
        let dedup = match &m.dedup {
            Some(c) => Some(store.get(&c.path).await?),
            None => None,
        };
        // Files of seals that never committed, and files retired before the stop.
        let mut leftovers = Vec::new();
        for prefix in [format!("{root}/segments"), format!("{root}/checkpoints")] {
            for meta in store.list(&prefix).await? {
                let path = meta.location.to_string();
                let id = manifest::segment_id_of(root, &path).or_else(|| checkpoint_id(&path));
                if id.is_some_and(|id| id >= m.next_segment_id) {
                    leftovers.push(path);
                }
            }
        }
        leftovers.extend(m.retired.iter().map(|r| r.path.clone()));
        for path in &leftovers {
            store.delete(path).await?;
        }
        if !leftovers.is_empty() {
            tracing::info!(table = %cfg.name, files = leftovers.len(), "deleted uncommitted and retired files");
        }
        hot.recover(m, checkpoint.as_deref(), dedup.as_deref()).map_err(incompatible)?;
        Ok(())
    }

    /// Loads the other nodes' newest manifests and serves their segments.
    pub(super) async fn refresh_peers(&self) -> Result<Vec<Manifest>> {
        let own = self.node.as_deref().unwrap_or_default();
        let peers: Vec<(String, Manifest)> = manifest::load_nodes(&self.store, &self.table().name)
            .await?
            .into_iter()
            .filter(|(node, _)| node != own)
            .collect();
        self.hot.set_peers(peers.clone());
        Ok(peers.into_iter().map(|(_, m)| m).collect())
    }

    /// Loads every node's newest manifest, serves the others' segments, and
    /// returns the merged view a rebalanced reader starts from: each partition
    /// resumes at the greatest resume point any node recorded (the last owner's),
    /// and every node's segments and tombstones count for coverage.
    pub async fn group_view(&self) -> Result<Manifest> {
        let mut view = self.hot.cold().manifest.clone();
        for m in self.refresh_peers().await? {
            for (mine, theirs) in view.resume.iter_mut().zip(&m.resume) {
                if theirs.offset > mine.offset {
                    *mine = *theirs;
                }
            }
            view.segments.extend(m.segments);
            view.tombstones.extend(m.tombstones);
        }
        Ok(view)
    }
}

pub(super) fn checkpoint_id(path: &str) -> Option<u64> {
    path.rsplit('/').next()?.split('.').next()?.parse().ok()
}
