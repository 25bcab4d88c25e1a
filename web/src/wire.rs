//! The internal API's wire format between processes (what an ingest process
//! tells a query process): the JSON catalog, and the Arrow IPC snapshot with its
//! metadata. `internal.rs` serves it; `remote.rs` reads it.
//! Query processes are `weir serve --query-only` (`query_node.rs`,
//! docs/operations.md).
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/internal/relations` | JSON [`NodeCatalog`]: this process, its tables with their version, assignment count and own counts, and each relation with its Arrow schema |
//! | `GET /v1/internal/hot/{relation}` | an Arrow IPC stream: this process's own hot batches of the relation, with [`SnapshotMeta`] (its own sealed files, the version) as JSON in the schema's metadata under [`SNAPSHOT_KEY`] |
//!
//! Both need the `internal` scope. The snapshot is [`HotTable::own_snapshot`]: the
//! hot batches and this process's own sealed files taken under the table's lock,
//! so a seal is seen before or after, never half. Other processes' files are
//! listed apart, by node (`peers`), for the query process to serve those of
//! nodes that are gone. Every document carries [`FORMAT`]; a query process
//! refuses another.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use weir_ingest::hot::{Counts, HotTable};
use weir_storage::hot::{ColdFile, Relation, RelationKind};

use crate::error::ApiError;

/// The version of the documents below.
pub const FORMAT: u32 = 1;
/// The schema metadata key of a snapshot stream's [`SnapshotMeta`].
pub const SNAPSHOT_KEY: &str = "weir.snapshot";
/// The content type of a snapshot stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// `GET /v1/internal/relations`: what one process serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeCatalog {
    pub format: u32,
    /// `server.node_id`, if set (tables whose Kafka partitions move between
    /// processes keep their files under it).
    pub node_id: Option<String>,
    /// Unique per process start: a restart is a new instance.
    pub instance: String,
    /// The object store its sealed files are on (the query process reads them
    /// from its own, which must be the same).
    pub store: String,
    pub tables: Vec<TableEntry>,
}

/// One table of a [`NodeCatalog`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableEntry {
    pub name: String,
    pub partitions: u32,
    /// [`HotTable::version`]: changes whenever a snapshot may have changed.
    pub version: u64,
    /// [`HotTable::assignments`]: partitions assigned to this process so far.
    pub assignments: u64,
    /// What this process took: its own sealed counts plus its memory.
    pub counts: Counts,
    /// The other processes' sealed counts, as this process last read them.
    pub peers: Vec<PeerCounts>,
    pub relations: Vec<RelationEntry>,
}

/// Another process's sealed counts of a table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerCounts {
    pub node: String,
    pub manifest_version: u64,
    pub counts: Counts,
}

/// One relation of a [`TableEntry`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RelationEntry {
    pub name: String,
    /// raw, rollup, session, dead_letter, late or duplicates.
    pub kind: String,
    /// The rollup's or session window's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    pub time_column: Option<String>,
    /// The Arrow schema as an IPC stream with no batches, hex-encoded.
    pub schema: String,
    /// A rollup's definition (its granularity, dimensions and aggregations), for
    /// the query process's rollup routing; absent from older processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollup: Option<weir_storage::config::RollupConfig>,
}

/// The metadata of a snapshot stream (`GET /v1/internal/hot/{relation}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotMeta {
    pub format: u32,
    pub node_id: Option<String>,
    pub instance: String,
    pub table: String,
    pub relation: String,
    /// The table's version and assignment count when the snapshot was taken.
    pub version: u64,
    pub assignments: u64,
    /// This process's own sealed files of the relation, taken with the batches.
    pub cold: Vec<ColdFile>,
    /// The other processes' files, as this process last read their manifests.
    pub peers: Vec<PeerFiles>,
}

/// Another process's sealed files of a relation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerFiles {
    pub node: String,
    pub manifest_version: u64,
    pub files: Vec<ColdFile>,
}

impl RelationEntry {
    fn of(r: &Relation) -> RelationEntry {
        let (kind, part) = match &r.kind {
            RelationKind::Raw => ("raw", None),
            RelationKind::Rollup { rollup, .. } => ("rollup", Some(rollup.clone())),
            RelationKind::Session { session } => ("session", Some(session.clone())),
            RelationKind::DeadLetter => ("dead_letter", None),
            RelationKind::Late => ("late", None),
            RelationKind::Duplicates => ("duplicates", None),
            RelationKind::Upsert { key } => ("upsert", Some(key.clone())),
        };
        RelationEntry {
            name: r.name.clone(),
            kind: kind.to_string(),
            part,
            time_column: r.time_column.clone(),
            schema: hex(&schema_bytes(&r.schema)),
            rollup: match &r.kind {
                RelationKind::Rollup { spec, .. } => spec.as_deref().cloned(),
                _ => None,
            },
        }
    }

    /// The relation this entry describes, of table `table`.
    pub fn relation(&self, table: &str) -> Result<Relation, String> {
        let part =
            || self.part.clone().ok_or_else(|| format!("relation `{}` of kind {} names no part", self.name, self.kind));
        let kind = match self.kind.as_str() {
            "raw" => RelationKind::Raw,
            "rollup" => RelationKind::Rollup { rollup: part()?, spec: self.rollup.clone().map(Arc::new) },
            "session" => RelationKind::Session { session: part()? },
            "dead_letter" => RelationKind::DeadLetter,
            "late" => RelationKind::Late,
            "duplicates" => RelationKind::Duplicates,
            "upsert" => RelationKind::Upsert { key: part()? },
            other => return Err(format!("relation `{}` has an unknown kind `{other}`", self.name)),
        };
        let bytes = unhex(&self.schema).ok_or_else(|| format!("relation `{}`: its schema is not hex", self.name))?;
        let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| format!("relation `{}`: its schema does not decode: {e}", self.name))?;
        Ok(Relation {
            name: self.name.clone(),
            table: table.to_string(),
            kind,
            schema: reader.schema(),
            time_column: self.time_column.clone(),
        })
    }
}

/// A schema as an Arrow IPC stream with no batches.
fn schema_bytes(schema: &Schema) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new(&mut out, schema).expect("a schema encodes");
    w.finish().expect("a schema encodes");
    drop(w);
    out
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes().chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

/// One table's entry: its version, assignments, own counts, peers and relations.
pub fn table_entry(t: &HotTable) -> TableEntry {
    TableEntry {
        name: t.config().name.clone(),
        partitions: t.config().partitions,
        version: t.version(),
        assignments: t.assignments(),
        counts: t.own_counts(),
        peers: t
            .peers()
            .iter()
            .map(|(node, m)| PeerCounts { node: node.clone(), manifest_version: m.version, counts: Counts::sealed(m) })
            .collect(),
        relations: t.relations().iter().map(RelationEntry::of).collect(),
    }
}

pub fn encode_snapshot(
    table: &HotTable,
    relation: &str,
    node_id: Option<String>,
    instance: String,
) -> Result<Vec<u8>, ApiError> {
    let own = table.own_snapshot(relation).map_err(|e| ApiError::not_found(e.to_string()))?;
    let meta = SnapshotMeta {
        format: FORMAT,
        node_id,
        instance,
        table: table.config().name.clone(),
        relation: relation.to_string(),
        version: own.version,
        assignments: own.assignments,
        cold: own.snapshot.cold,
        peers: own
            .peers
            .into_iter()
            .map(|p| PeerFiles { node: p.node, manifest_version: p.manifest_version, files: p.files })
            .collect(),
    };
    let json = serde_json::to_string(&meta).map_err(|e| ApiError::internal("encoding a snapshot's metadata", e))?;
    let mut metadata = own.snapshot.schema.metadata().clone();
    metadata.insert(SNAPSHOT_KEY.to_string(), json);
    let schema: SchemaRef = Arc::new(Schema::new_with_metadata(own.snapshot.schema.fields().clone(), metadata));
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new(&mut out, &schema).map_err(|e| ApiError::internal("encoding a snapshot", e))?;
    for b in own.snapshot.batches.iter().filter(|b| b.num_rows() > 0) {
        let b = RecordBatch::try_new(schema.clone(), b.columns().to_vec())
            .map_err(|e| ApiError::internal("a hot batch does not fit its relation's schema", e))?;
        w.write(&b).map_err(|e| ApiError::internal("encoding a snapshot", e))?;
    }
    w.finish().map_err(|e| ApiError::internal("encoding a snapshot", e))?;
    drop(w);
    Ok(out)
}

/// A snapshot stream read back: its metadata and batches (with the relation's
/// schema, without the metadata key).
pub fn decode_snapshot(bytes: bytes::Bytes) -> Result<(SnapshotMeta, Vec<RecordBatch>), String> {
    let reader =
        StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(|e| format!("not an Arrow stream: {e}"))?;
    let schema = reader.schema();
    let json =
        schema.metadata().get(SNAPSHOT_KEY).ok_or_else(|| format!("the stream has no `{SNAPSHOT_KEY}` metadata"))?;
    let meta: SnapshotMeta = serde_json::from_str(json).map_err(|e| format!("its `{SNAPSHOT_KEY}` metadata: {e}"))?;
    if meta.format != FORMAT {
        return Err(format!(
            "snapshot format {} (this process reads {FORMAT}): run the same Weir version everywhere",
            meta.format
        ));
    }
    let mut plain = schema.metadata().clone();
    plain.remove(SNAPSHOT_KEY);
    let plain: SchemaRef = Arc::new(Schema::new_with_metadata(schema.fields().clone(), plain));
    let batches = reader
        .map(|b| {
            b.and_then(|b| RecordBatch::try_new(plain.clone(), b.columns().to_vec()))
                .map_err(|e| format!("a batch does not decode: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((meta, batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, TimeUnit};

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn a_relation_entry_carries_its_schema_and_kind() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("bucket", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
            Field::new("events", DataType::Int64, false),
            Field::new("country", DataType::Utf8, true),
        ]));
        let r = Relation {
            name: "t_per_minute".into(),
            table: "t".into(),
            kind: RelationKind::Rollup {
                rollup: "per_minute".into(),
                // What routing needs on a query process.
                spec: Some(Arc::new(weir_storage::config::RollupConfig {
                    name: "per_minute".into(),
                    granularity_ms: 60_000,
                    dimensions: vec!["country".into()],
                    aggregations: vec![weir_storage::config::Aggregation {
                        name: "events".into(),
                        func: weir_storage::config::AggFn::Count,
                    }],
                })),
            },
            schema: schema.clone(),
            time_column: Some("bucket".into()),
        };
        let entry = RelationEntry::of(&r);
        let json = serde_json::to_string(&entry).unwrap();
        let back: RelationEntry = serde_json::from_str(&json).unwrap();
        let r2 = back.relation("t").unwrap();
        assert_eq!(r2.schema, schema);
        assert_eq!(r2.kind, r.kind);
        assert_eq!(r2.time_column.as_deref(), Some("bucket"));
        let mut bad = back.clone();
        bad.kind = "view".into();
        assert!(bad.relation("t").unwrap_err().contains("unknown kind `view`"));
    }

    #[test]
    fn a_snapshot_stream_round_trips_with_its_metadata() {
        let schema =
            Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false), Field::new("s", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![1, 2])), Arc::new(StringArray::from(vec![Some("a"), None]))],
        )
        .unwrap();
        let meta = SnapshotMeta {
            format: FORMAT,
            node_id: Some("ingest_1".into()),
            instance: "abc".into(),
            table: "t".into(),
            relation: "t".into(),
            version: 7,
            assignments: 2,
            cold: vec![ColdFile {
                path: "tables/t/x.parquet".into(),
                bytes: 10,
                rows: 2,
                min_time_ms: Some(1),
                max_time_ms: None,
            }],
            peers: vec![PeerFiles { node: "ingest_2".into(), manifest_version: 3, files: vec![] }],
        };
        let mut md = std::collections::HashMap::new();
        md.insert(SNAPSHOT_KEY.to_string(), serde_json::to_string(&meta).unwrap());
        let with_meta = Arc::new(Schema::new_with_metadata(schema.fields().clone(), md));
        let mut out = Vec::new();
        let mut w = StreamWriter::try_new(&mut out, &with_meta).unwrap();
        w.write(&RecordBatch::try_new(with_meta.clone(), batch.columns().to_vec()).unwrap()).unwrap();
        w.finish().unwrap();
        drop(w);
        let (back, batches) = decode_snapshot(bytes::Bytes::from(out)).unwrap();
        assert_eq!(back, meta);
        assert_eq!(batches, vec![batch]);
        let mut other = meta;
        other.format = FORMAT + 1;
        let mut md = std::collections::HashMap::new();
        md.insert(SNAPSHOT_KEY.to_string(), serde_json::to_string(&other).unwrap());
        let mut out = Vec::new();
        StreamWriter::try_new(&mut out, &Schema::new_with_metadata(schema.fields().clone(), md))
            .unwrap()
            .finish()
            .unwrap();
        assert!(decode_snapshot(bytes::Bytes::from(out)).unwrap_err().contains("run the same Weir version"));
    }
}
