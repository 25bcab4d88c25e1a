//! One seal: detach, write the Parquet files and checkpoints, commit the manifest.

use super::compact::prune_tombstones;
use super::*;

impl Sealer {
    /// Seals what `scope` selects (or retries a seal that failed before).
    pub async fn seal(&self, scope: SealScope) -> Result<Option<SealReport>> {
        let _busy = self.busy.lock().await;
        if self.is_retired() {
            return Ok(None);
        }
        let Some(slot) = self.hot.begin_seal(scope) else { return Ok(None) };
        match self.write(&slot).await {
            Ok((m, report)) => {
                tracing::info!(
                    table = %self.table().name,
                    version = m.version,
                    segments = report.segments,
                    rows = report.rows,
                    bytes = report.bytes,
                    ms = slot.started.elapsed().as_millis() as u64,
                    "sealed"
                );
                let durable: Vec<u64> = m.resume.iter().map(|r| r.offset).collect();
                self.hot.finish_seal(m, report.bytes);
                if let Some(source) = &self.source {
                    source.durable(&durable);
                }
                Ok(Some(report))
            }
            Err(e) => {
                self.hot.seal_failed(e.to_string());
                Err(e)
            }
        }
    }

    pub(super) async fn put_file(
        &self,
        id: u64,
        relation: &str,
        batches: &[RecordBatch],
        files: &mut Vec<SegmentFile>,
        written: &mut u64,
    ) -> Result<()> {
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok(());
        }
        let rel = self.hot.relation(relation).expect("relations of this table");
        let enc = segment::encode(relation, &rel.schema, batches, rel.time_column.as_deref())?;
        let path = manifest::segment_file_path(&self.root, id, relation);
        let bytes = enc.bytes.len() as u64;
        self.store.put(&path, enc.bytes).await?;
        *written += bytes;
        files.push(SegmentFile {
            relation: relation.to_string(),
            path,
            rows: enc.rows,
            bytes,
            min_time_ms: enc.min_time_ms,
            max_time_ms: enc.max_time_ms,
        });
        Ok(())
    }

    pub(super) async fn write(&self, slot: &Sealing) -> Result<(Manifest, SealReport)> {
        let cfg = self.hot.config().clone();
        let cold = self.hot.cold();
        let prev = &cold.manifest;
        let mut next = prev.clone();
        let mut id = prev.next_segment_id;
        let now = self.clock.now_ms();
        let mut report = SealReport::default();
        let sealed_starts: HashSet<i64> = prev.segments.iter().filter_map(|s| s.start_ms).collect();
        for range in &slot.ranges {
            let mut files = Vec::new();
            self.put_file(id, &cfg.name, &range.raw, &mut files, &mut report.bytes).await?;
            for (r, batches) in cfg.rollups.iter().zip(&range.rollups) {
                self.put_file(id, &cfg.rollup_relation(&r.name), batches, &mut files, &mut report.bytes).await?;
            }
            next.segments.push(Segment {
                id,
                kind: if sealed_starts.contains(&range.start_ms) { SegmentKind::Delta } else { SegmentKind::Base },
                start_ms: Some(range.start_ms),
                end_ms: Some(range.end_ms),
                coverage: slot.coverage.clone(),
                ingested: range.raw_rows,
                late: 0,
                dead_lettered: 0,
                duplicates: 0,
                filtered: 0,
                files,
                created_ms: now,
            });
            report.rows += range.raw_rows;
            report.segments += 1;
            id += 1;
        }
        let side_rows = slot.counts.late + slot.counts.dead_lettered + slot.counts.duplicates;
        let closed: usize = slot.closed_sessions.iter().flatten().map(RecordBatch::num_rows).sum();
        if side_rows > 0 || closed > 0 || slot.counts.filtered > 0 {
            let mut files = Vec::new();
            self.put_file(id, &cfg.late_relation(), &slot.late, &mut files, &mut report.bytes).await?;
            self.put_file(id, &cfg.dead_letter_relation(), &slot.dead, &mut files, &mut report.bytes).await?;
            if cfg.dedup.is_some() {
                self.put_file(id, &cfg.duplicates_relation(), &slot.duplicates, &mut files, &mut report.bytes).await?;
            }
            for (w, batches) in cfg.sessions.iter().zip(&slot.closed_sessions) {
                self.put_file(id, &cfg.session_relation(&w.name), batches, &mut files, &mut report.bytes).await?;
            }
            next.segments.push(Segment {
                id,
                kind: SegmentKind::Side,
                start_ms: None,
                end_ms: None,
                coverage: slot.coverage.clone(),
                ingested: 0,
                late: slot.counts.late,
                dead_lettered: slot.counts.dead_lettered,
                duplicates: slot.counts.duplicates,
                filtered: slot.counts.filtered,
                files,
                created_ms: now,
            });
            report.rows += side_rows;
            report.segments += 1;
            id += 1;
        }
        // Both checkpoints of this seal share one id.
        let checkpoint_id = id;
        if slot.dedup_checkpoint.is_some() || slot.session_checkpoint.is_some() {
            id += 1;
        }
        for (kind, bytes) in [("dedup", &slot.dedup_checkpoint), ("sessions", &slot.session_checkpoint)] {
            let Some(bytes) = bytes else { continue };
            let path = manifest::checkpoint_path(&self.root, checkpoint_id, kind);
            self.store.put(&path, bytes::Bytes::from(bytes.clone())).await?;
            report.bytes += bytes.len() as u64;
            let field = if kind == "dedup" { &mut next.dedup } else { &mut next.sessions };
            if let Some(old) = field.replace(SessionCheckpoint { path, offsets: slot.coverage.clone() }) {
                next.retired.push(Retired { path: old.path, retired_ms: now });
            }
        }
        next.resume = slot.resume.clone();
        next.next_segment_id = id;
        next.committed_ms = now;
        record_schemas(&mut next, &self.hot);
        prune_tombstones(&mut next);
        let committed = manifest::commit(&self.store, &self.root, prev.version, next).await?;
        Ok((committed, report))
    }
}

/// Records every relation's current columns, keeping columns sealed before and
/// since dropped from the config (old segments still hold them).
pub(super) fn record_schemas(m: &mut Manifest, hot: &HotTable) {
    for rel in hot.relations() {
        let now: Vec<ColumnSchema> = segment::columns_of(&rel.schema);
        match m.relations.iter_mut().find(|r| r.relation == rel.name) {
            Some(r) => {
                for c in now {
                    if !r.columns.iter().any(|o| o.name == c.name) {
                        r.columns.push(c);
                    }
                }
            }
            None => m.relations.push(RelationSchema { relation: rel.name.clone(), columns: now }),
        }
    }
}
