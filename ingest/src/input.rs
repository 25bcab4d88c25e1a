//! A table's input: where its reader reads (the [`Source`]) and where appends to
//! it go (the embedded log's topic, or a producer to its Kafka topic). HTTP
//! ingest, the demo generator and `weir produce` all append through [`Input`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use weir_storage::config::TableConfig;
use weir_storage::log::{NewRecord, Topic};

use crate::decode::partition_key;
use crate::source::Source;

/// A table's source, and where its appends go.
#[derive(Clone)]
pub struct Input {
    pub table: String,
    pub source: Arc<dyn Source>,
    /// The embedded log's topic, for a table that reads the log.
    pub log: Option<Arc<Topic>>,
    /// The producer to the table's Kafka topic, for a table that reads Kafka.
    #[cfg(feature = "kafka")]
    pub kafka: Option<Arc<crate::kafka::KafkaSink>>,
}

/// What an append took: per partition, the offsets its records got.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Appended {
    pub table: String,
    pub appended: usize,
    pub partitions: Vec<PartitionAppend>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionAppend {
    pub partition: u32,
    pub first_offset: u64,
    pub last_offset: u64,
    pub records: usize,
}

/// Why an append took nothing.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("{count} records in one request; limits.max_records_per_request is {max}")]
    TooManyRecords { count: usize, max: usize },
    /// Record `record` (1-based) is over the log's record limit.
    #[error("record {record} of the request: {detail}; nothing was appended")]
    RecordTooLarge { record: usize, detail: String },
    #[error("appending to the log failed: {0}")]
    Log(#[from] weir_storage::log::Error),
    #[error("appending to `{table}`: {detail}")]
    Kafka { table: String, detail: String },
}

/// The non-blank lines of an NDJSON body (a trailing `\r` dropped), at most `max`.
pub fn ndjson_lines(body: &[u8], max: usize) -> Result<Vec<&[u8]>, AppendError> {
    let lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    if lines.len() > max {
        return Err(AppendError::TooManyRecords { count: lines.len(), max });
    }
    Ok(lines)
}

/// The keys and values routed to one partition.
type Routed<'a> = (Vec<Vec<u8>>, Vec<&'a [u8]>);

/// Appends a batch of records, or says why it could not.
pub type Append = Box<dyn FnMut(&[NewRecord<'_>]) -> Result<(), String> + Send>;

impl Input {
    pub fn log(table: &str, topic: Arc<Topic>) -> Input {
        Input {
            table: table.to_string(),
            source: topic.clone(),
            log: Some(topic),
            #[cfg(feature = "kafka")]
            kafka: None,
        }
    }

    /// Connects to the table's Kafka topic; a table that leaves `partitions` out
    /// takes the topic's count.
    #[cfg(feature = "kafka")]
    pub fn kafka(t: &mut TableConfig) -> Result<Input, String> {
        use crate::kafka::{KafkaSink, KafkaSource};
        let k = t.kafka.clone().expect("a Kafka table");
        let source = KafkaSource::open(&k).map_err(|e| format!("table `{}`: connecting to Kafka: {e}", t.name))?;
        let n = source.partitions();
        if k.partitions_from_topic {
            t.partitions = n;
        } else if t.partitions != n {
            return Err(format!(
                "table `{}` declares {} partitions, and its Kafka topic `{}` has {n}: make them equal, or leave `partitions` out",
                t.name, t.partitions, k.topic
            ));
        }
        let sink = KafkaSink::open(&k).map_err(|e| format!("table `{}`: creating the Kafka producer: {e}", t.name))?;
        Ok(Input { table: t.name.clone(), source, log: None, kafka: Some(Arc::new(sink)) })
    }

    #[cfg(not(feature = "kafka"))]
    pub fn kafka(t: &mut TableConfig) -> Result<Input, String> {
        Err(format!(
            "table `{}` reads a Kafka topic, and this `weir` was built without Kafka support: build it with `cargo build --release --features weir-web/kafka` (needs cmake and the libcurl4-openssl-dev headers)",
            t.name
        ))
    }

    /// Whether appends go to a Kafka topic (through [`Input::produce`]) rather
    /// than the embedded log (through [`Input::append`]).
    pub fn is_kafka(&self) -> bool {
        self.log.is_none()
    }

    /// Appends NDJSON `lines` to the table's log, each routed by its key field
    /// (`cfg.key`) when it has one, else by its bytes, so that one key always
    /// lands in one partition. Every record is checked before any is written: a
    /// refused append leaves nothing behind for its retry to duplicate. Blocking
    /// (the log's writes and, per its policy, fsyncs).
    pub fn append(&self, cfg: &TableConfig, lines: &[&[u8]], now_ms: i64) -> Result<Appended, AppendError> {
        let topic = self.log.as_ref().expect("a table that does not read Kafka reads the log");
        let mut per_partition: BTreeMap<u32, Routed<'_>> = BTreeMap::new();
        for (i, line) in lines.iter().enumerate() {
            let key = cfg.key.as_deref().and_then(|k| partition_key(line, k));
            let size_check = [NewRecord { key: key.as_deref().unwrap_or_default(), timestamp_ms: now_ms, value: line }];
            if let Err(e) = Topic::check_sizes(&size_check) {
                return Err(AppendError::RecordTooLarge { record: i + 1, detail: e.to_string() });
            }
            let p = topic.partition_for_key(key.as_deref().unwrap_or(line));
            let e = per_partition.entry(p).or_default();
            e.0.push(key.unwrap_or_default());
            e.1.push(line);
        }
        let mut partitions = Vec::new();
        for (p, (keys, values)) in &per_partition {
            let recs: Vec<NewRecord> =
                keys.iter().zip(values).map(|(k, v)| NewRecord { key: k, timestamp_ms: now_ms, value: v }).collect();
            let first = topic.append_to(*p, &recs)?;
            partitions.push(PartitionAppend {
                partition: *p,
                first_offset: first,
                last_offset: first + recs.len() as u64 - 1,
                records: recs.len(),
            });
        }
        Ok(Appended { table: cfg.name.clone(), appended: lines.len(), partitions })
    }

    /// Produces NDJSON `lines` to the table's Kafka topic (keyed by the table's
    /// key field, so that Kafka's partitioner routes them) and waits for the
    /// acknowledgements.
    #[cfg(feature = "kafka")]
    pub async fn produce(&self, cfg: &TableConfig, lines: &[&[u8]], now_ms: i64) -> Result<Appended, AppendError> {
        let sink = self.kafka.as_ref().expect("a table that reads Kafka has a producer");
        let keys: Vec<Vec<u8>> =
            lines.iter().map(|l| cfg.key.as_deref().and_then(|k| partition_key(l, k)).unwrap_or_default()).collect();
        let records: Vec<(&[u8], &[u8])> = keys.iter().map(Vec::as_slice).zip(lines.iter().copied()).collect();
        let acks = sink
            .send(&records, now_ms)
            .await
            .map_err(|e| AppendError::Kafka { table: cfg.name.clone(), detail: e.to_string() })?;
        let mut per_partition: BTreeMap<u32, (u64, u64, usize)> = BTreeMap::new();
        for (p, offset) in acks {
            let e = per_partition.entry(p).or_insert((offset, offset, 0));
            e.0 = e.0.min(offset);
            e.1 = e.1.max(offset);
            e.2 += 1;
        }
        let partitions = per_partition
            .into_iter()
            .map(|(partition, (first_offset, last_offset, records))| PartitionAppend {
                partition,
                first_offset,
                last_offset,
                records,
            })
            .collect();
        Ok(Appended { table: cfg.name.clone(), appended: lines.len(), partitions })
    }

    /// Appends through this input from a thread of one's own (the demo
    /// generator): to the log's topic, or, waiting for each batch, to Kafka.
    pub fn appender(&self) -> Option<Append> {
        if let Some(topic) = self.log.clone() {
            return Some(Box::new(move |recs: &[NewRecord<'_>]| {
                topic.append(recs).map(drop).map_err(|e| e.to_string())
            }));
        }
        #[cfg(feature = "kafka")]
        if let Some(sink) = self.kafka.clone() {
            let rt = weir_storage::runtime::own_thread().ok()?;
            return Some(Box::new(move |recs: &[NewRecord<'_>]| {
                let pairs: Vec<(&[u8], &[u8])> = recs.iter().map(|r| (r.key, r.value)).collect();
                let ts = recs.first().map_or(0, |r| r.timestamp_ms);
                rt.block_on(sink.send(&pairs, ts)).map(drop).map_err(|e| e.to_string())
            }));
        }
        None
    }
}
