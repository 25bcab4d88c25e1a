//! Compaction of small segments, expiry by retention, and the log's retention
//! bounded by what is sealed.

use super::*;

impl Sealer {
    /// Merges the segments of one range (or the side segments) that has at least
    /// `compact_min_segments` of them. Returns whether it compacted something.
    pub async fn compact_one(&self) -> Result<bool> {
        self.compact_with(self.compact_min_segments, false).await
    }

    /// Compacts every range with at least two segments, open ranges included (an
    /// operator's request). Returns how many ranges it compacted.
    pub async fn compact_all(&self) -> Result<usize> {
        let mut n = 0;
        while self.compact_with(2, true).await? {
            n += 1;
        }
        Ok(n)
    }

    pub(super) async fn compact_with(&self, min_segments: usize, open_too: bool) -> Result<bool> {
        let _busy = self.busy.lock().await;
        if self.is_retired() {
            return Ok(false);
        }
        let cold = self.hot.cold();
        let prev = &cold.manifest;
        let watermark = self.hot.status().watermark.table_ms;
        let mut groups: BTreeMap<Option<i64>, Vec<&Segment>> = BTreeMap::new();
        for s in &prev.segments {
            groups.entry(s.start_ms).or_default().push(s);
        }
        let pick = groups.into_iter().find(|(start, segs)| {
            let closed = match start {
                Some(st) => open_too || watermark.is_some_and(|wm| st + self.table().segment_granularity_ms <= wm),
                None => true,
            };
            closed && segs.len() >= min_segments
        });
        let Some((start, segs)) = pick else { return Ok(false) };
        let cfg = self.hot.config().clone();
        let id = prev.next_segment_id;
        let now = self.clock.now_ms();
        let mut files = Vec::new();
        let mut written = 0u64;
        let mut relations: Vec<String> = Vec::new();
        for s in &segs {
            for f in &s.files {
                if !relations.contains(&f.relation) {
                    relations.push(f.relation.clone());
                }
            }
        }
        for relation in &relations {
            let Some(rel) = self.hot.relation(relation).cloned() else {
                // A relation no longer configured: its files are not carried over.
                continue;
            };
            let mut batches = Vec::new();
            for f in segs.iter().flat_map(|s| s.files.iter()).filter(|f| &f.relation == relation) {
                let bytes = self.store.get(&f.path).await?;
                let (_, read) = segment::decode(&f.path, bytes)?;
                for b in &read {
                    batches.push(segment::conform(b, &rel.schema).map_err(|detail| SealError::Merge {
                        table: cfg.name.clone(),
                        detail: format!("{}: {detail}", f.path),
                    })?);
                }
            }
            let rollup = cfg.rollups.iter().find(|r| cfg.rollup_relation(&r.name) == *relation);
            let merged = match (rollup, start) {
                (Some(r), Some(st)) => {
                    let mut state = Rollup::new(&cfg, r);
                    for b in &batches {
                        state.merge_batch(b).map_err(|detail| SealError::Merge {
                            table: cfg.name.clone(),
                            detail: format!("`{relation}`: {detail}"),
                        })?;
                    }
                    state.take_range(st, st + cfg.segment_granularity_ms).0
                }
                // An upsert table keeps only the latest version of each key
                // among the merged segments: a version dropped here has a later
                // one that stays, so the latest per key is the same.
                _ if cfg.upsert && *relation == cfg.name => latest_per_key(&cfg, &batches).map_err(|detail| {
                    SealError::Merge { table: cfg.name.clone(), detail: format!("`{relation}`: {detail}") }
                })?,
                _ => batches,
            };
            self.put_file(id, relation, &merged, &mut files, &mut written).await?;
        }
        let mut coverage = vec![0u64; prev.partitions as usize];
        for s in &segs {
            for (a, b) in coverage.iter_mut().zip(&s.coverage) {
                *a = (*a).max(*b);
            }
        }
        let merged = Segment {
            id,
            kind: if start.is_some() { SegmentKind::Compacted } else { SegmentKind::Side },
            start_ms: start,
            end_ms: segs[0].end_ms,
            coverage,
            ingested: segs.iter().map(|s| s.ingested).sum(),
            late: segs.iter().map(|s| s.late).sum(),
            dead_lettered: segs.iter().map(|s| s.dead_lettered).sum(),
            duplicates: segs.iter().map(|s| s.duplicates).sum(),
            filtered: segs.iter().map(|s| s.filtered).sum(),
            files,
            created_ms: now,
        };
        let ids: HashSet<u64> = segs.iter().map(|s| s.id).collect();
        let mut next = prev.clone();
        for s in next.segments.iter().filter(|s| ids.contains(&s.id)) {
            next.retired.extend(s.files.iter().map(|f| Retired { path: f.path.clone(), retired_ms: now }));
        }
        next.segments.retain(|s| !ids.contains(&s.id));
        let at = next.segments.iter().position(|s| s.start_ms > start).unwrap_or(next.segments.len());
        next.segments.insert(at, merged);
        next.next_segment_id = id + 1;
        next.committed_ms = now;
        let committed = manifest::commit(&self.store, &self.root, prev.version, next).await?;
        tracing::info!(table = %cfg.name, range = ?start, merged = ids.len(), bytes = written, "compacted");
        self.hot.install_manifest(committed, true);
        Ok(true)
    }

    /// Drops segments past the table's retention and deletes files retired longer
    /// than [`RETIRE_GRACE`] ago. Returns whether it changed the manifest.
    pub async fn expire(&self) -> Result<bool> {
        let _busy = self.busy.lock().await;
        if self.is_retired() {
            return Ok(false);
        }
        let cold = self.hot.cold();
        let prev = &cold.manifest;
        let now = self.clock.now_ms();
        let mut next = prev.clone();
        if let Some(retention) = self.table().retention_ms {
            let horizon = now - retention;
            let expired = |s: &Segment| match s.end_ms {
                Some(end) => end <= horizon,
                None => !s.files.is_empty() && s.files.iter().all(|f| f.max_time_ms.is_some_and(|t| t < horizon)),
            };
            for s in prev.segments.iter().filter(|s| expired(s)) {
                next.retired.extend(s.files.iter().map(|f| Retired { path: f.path.clone(), retired_ms: now }));
                next.tombstones.push(Tombstone { start_ms: s.start_ms, coverage: s.coverage.clone() });
                next.expired.0 += s.ingested;
                next.expired.1 += s.late;
                next.expired.2 += s.dead_lettered;
                next.expired_duplicates += s.duplicates;
                next.expired_filtered += s.filtered;
            }
            next.segments.retain(|s| !expired(s));
        }
        let grace = RETIRE_GRACE.as_millis() as i64;
        let (due, keep): (Vec<Retired>, Vec<Retired>) =
            next.retired.drain(..).partition(|r| r.retired_ms + grace <= now);
        next.retired = keep;
        prune_tombstones(&mut next);
        if next == *prev {
            return Ok(false);
        }
        next.committed_ms = now;
        let committed = manifest::commit(&self.store, &self.root, prev.version, next).await?;
        self.hot.install_manifest(committed, false);
        // Deleted only once no manifest names them.
        for r in due {
            self.store.delete(&r.path).await?;
        }
        Ok(true)
    }

    /// Applies the log's retention below the committed resume points; returns the
    /// bytes deleted.
    pub fn enforce_log_retention(&self) -> Result<u64, weir_storage::log::Error> {
        let Some(topic) = &self.log else { return Ok(0) };
        let cold = self.hot.cold();
        if cold.manifest.version == 0 {
            return Ok(0);
        }
        let mut floor: Vec<u64> = cold.manifest.resume.iter().map(|r| r.offset).collect();
        if let Some(hold) = &*self.log_hold.lock() {
            for (f, h) in floor.iter_mut().zip(hold) {
                *f = (*f).min(*h);
            }
        }
        topic.enforce_retention(self.clock.now_ms(), &floor)
    }
}

/// Drops tombstones that no restart can reach: every partition resumes above them.
pub(super) fn prune_tombstones(m: &mut Manifest) {
    let resume: Vec<u64> = m.resume.iter().map(|r| r.offset).collect();
    m.tombstones.retain(|t| t.coverage.iter().zip(&resume).any(|(c, r)| r < c));
}

/// Of an upsert table's versions, only the latest of each key: by event time,
/// then `_partition`, then `_offset`. The rows kept stay in their order.
pub(crate) fn latest_per_key(cfg: &TableConfig, batches: &[RecordBatch]) -> Result<Vec<RecordBatch>, String> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType};
    use arrow::row::{RowConverter, SortField};

    let Some(first) = batches.first() else { return Ok(Vec::new()) };
    let key = cfg.key.as_deref().ok_or("an upsert table has a key")?;
    let schema = first.schema();
    let all = arrow::compute::concat_batches(&schema, batches).map_err(|e| e.to_string())?;
    let column = |name: &str| all.column_by_name(name).ok_or_else(|| format!("no column `{name}`"));
    let keys = column(key)?;
    let time = column(&cfg.time.field)?
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or("the time column is not a timestamp")?;
    let [partition, offset] = weir_storage::hot::LOG_COLUMNS;
    let partition = column(partition)?.as_primitive_opt::<Int32Type>().ok_or("the partition is not int32")?;
    let offset = column(offset)?.as_primitive_opt::<Int64Type>().ok_or("the offset is not int64")?;
    let converter = RowConverter::new(vec![SortField::new(keys.data_type().clone())]).map_err(|e| e.to_string())?;
    let rows = converter.convert_columns(std::slice::from_ref(keys)).map_err(|e| e.to_string())?;
    let version = |i: usize| (time.value(i), partition.value(i), offset.value(i));
    let mut latest: std::collections::HashMap<arrow::row::Row<'_>, usize> = std::collections::HashMap::new();
    for i in 0..all.num_rows() {
        latest
            .entry(rows.row(i))
            .and_modify(|kept| {
                if version(i) > version(*kept) {
                    *kept = i
                }
            })
            .or_insert(i);
    }
    let mut keep: Vec<u32> = latest.into_values().map(|i| i as u32).collect();
    keep.sort_unstable();
    let taken =
        arrow::compute::take_record_batch(&all, &arrow::array::UInt32Array::from(keep)).map_err(|e| e.to_string())?;
    Ok(vec![taken])
}
