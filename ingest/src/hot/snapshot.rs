//! Snapshots of a table's relations: memory, the sealing slot and the sealed
//! files, taken under one lock.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use weir_storage::hot::{ColdFile, HotError, RelationKind, Snapshot};

use super::HotTable;
use super::columns::RowBuffer;

/// Which buffer a relation reads.
#[derive(Clone, Copy)]
enum Source {
    Raw,
    Late,
    Dead,
    Dups,
    Rollup(usize),
    Session(usize),
    /// An upsert table's every version: its rows in time and its late rows.
    Versions,
}

impl HotTable {
    fn source_of(&self, relation: &str) -> Option<(Source, SchemaRef)> {
        let rel = self.relations.iter().find(|r| r.name == relation)?;
        let src = match &rel.kind {
            RelationKind::Raw => Source::Raw,
            RelationKind::Late => Source::Late,
            RelationKind::DeadLetter => Source::Dead,
            RelationKind::Duplicates => Source::Dups,
            RelationKind::Rollup { rollup, .. } => {
                Source::Rollup(self.config.rollups.iter().position(|r| &r.name == rollup)?)
            }
            RelationKind::Session { session } => {
                Source::Session(self.config.sessions.iter().position(|w| &w.name == session)?)
            }
            RelationKind::Upsert { .. } => Source::Versions,
        };
        Some((src, rel.schema.clone()))
    }

    /// A consistent snapshot of one of this table's relations: memory and sealed
    /// files (this process's and its peers'), taken together.
    pub fn snapshot(&self, relation: &str) -> Result<Snapshot, HotError> {
        let (mut snapshot, own) = self.take(relation)?;
        let peer_files: Vec<ColdFile> = own.peers.iter().flat_map(|p| p.files.iter().cloned()).collect();
        snapshot.cold.extend(peer_files);
        Ok(snapshot)
    }

    /// This process's own part of a relation, for a query process that gathers
    /// every ingest process's (docs/operations.md): the hot batches and only
    /// this process's sealed files, taken under one lock (a seal is seen before
    /// or after, never half), with the table's version and assignment count at
    /// that moment; the peers' files are listed apart, by node.
    pub fn own_snapshot(&self, relation: &str) -> Result<OwnSnapshot, HotError> {
        let (snapshot, mut own) = self.take(relation)?;
        own.snapshot = snapshot;
        Ok(own)
    }

    pub(super) fn take(&self, relation: &str) -> Result<(Snapshot, OwnSnapshot), HotError> {
        let (src, schema) = self.source_of(relation).ok_or_else(|| HotError::UnknownRelation(relation.to_string()))?;
        let mut s = self.state.lock();
        let mut batches: Vec<RecordBatch> = match src {
            Source::Raw => s.raw.values().flat_map(RowBuffer::snapshot).collect(),
            Source::Late => s.late.snapshot(),
            Source::Dead => s.dead.snapshot(),
            Source::Dups => s.duplicates.snapshot(),
            Source::Rollup(i) => s.rollups[i].snapshot(),
            Source::Session(i) => s.sessions[i].snapshot(),
            Source::Versions => {
                let mut all: Vec<RecordBatch> = s.raw.values().flat_map(RowBuffer::snapshot).collect();
                all.extend(s.late.snapshot().iter().map(|b| versions(b, &schema)));
                all
            }
        };
        if let Some(slot) = &s.sealing {
            match src {
                Source::Raw => batches.extend(slot.ranges.iter().flat_map(|r| r.raw.iter().cloned())),
                Source::Late => batches.extend(slot.late.iter().cloned()),
                Source::Dead => batches.extend(slot.dead.iter().cloned()),
                Source::Dups => batches.extend(slot.duplicates.iter().cloned()),
                Source::Rollup(i) => batches.extend(slot.ranges.iter().flat_map(|r| r.rollups[i].iter().cloned())),
                Source::Session(i) => batches.extend(slot.closed_sessions[i].iter().cloned()),
                Source::Versions => {
                    batches.extend(slot.ranges.iter().flat_map(|r| r.raw.iter().cloned()));
                    batches.extend(slot.late.iter().map(|b| versions(b, &schema)));
                }
            }
        }
        // An upsert table's versions are also in its late relation's files.
        let late = matches!(src, Source::Versions).then(|| self.config.late_relation());
        let files = |m: &weir_storage::manifest::Manifest| -> Vec<ColdFile> {
            let also = late.as_deref().into_iter().flat_map(|l| m.files(l));
            m.files(relation).chain(also).map(cold_file).collect()
        };
        let cold = files(&s.cold.manifest);
        let peers = s
            .peers
            .iter()
            .map(|(node, m)| PeerFiles { node: node.clone(), manifest_version: m.version, files: files(m) })
            .collect();
        let own = OwnSnapshot {
            snapshot: Snapshot { schema: schema.clone(), batches: Vec::new(), cold: Vec::new() },
            version: self.version(),
            assignments: s.assignments,
            peers,
        };
        Ok((Snapshot { schema, batches, cold }, own))
    }
}

fn cold_file(f: &weir_storage::manifest::SegmentFile) -> ColdFile {
    ColdFile {
        path: f.path.clone(),
        bytes: f.bytes,
        rows: f.rows,
        min_time_ms: f.min_time_ms,
        max_time_ms: f.max_time_ms,
    }
}

/// One process's own part of a relation ([`HotTable::own_snapshot`]).
#[derive(Debug, Clone)]
pub struct OwnSnapshot {
    /// The hot batches and this process's own sealed files.
    pub snapshot: Snapshot,
    /// The table's version ([`HotTable::version`]) when it was taken.
    pub version: u64,
    /// The table's assignment count ([`HotTable::assignments`]) when it was taken.
    pub assignments: u64,
    /// The sealed files of the other processes sharing the table's partitions,
    /// as this process last read their manifests.
    pub peers: Vec<PeerFiles>,
}

/// Another process's sealed files of a relation, from its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFiles {
    pub node: String,
    pub manifest_version: u64,
    pub files: Vec<ColdFile>,
}

/// A late batch of an upsert table as versions: its columns but the last
/// (`_watermark`), which the versions do not carry.
fn versions(late: &RecordBatch, schema: &SchemaRef) -> RecordBatch {
    let columns = late.columns()[..schema.fields().len()].to_vec();
    RecordBatch::try_new(schema.clone(), columns).expect("a late batch holds the versions' columns, then `_watermark`")
}
