//! A Kafka topic as a table's source (feature `kafka`), read with rdkafka.
//!
//! Weir's manifest is the source of truth for what is ingested: the reader tells
//! the source where each partition starts (the manifest's resume points, as with
//! the embedded log), and the source assigns exactly those offsets. Restarts and
//! crashes therefore converge the same way (docs/storage.md). Once a seal makes
//! records durable, their offsets are also committed to the consumer group, so
//! Kafka's own tools show the group's lag.
//!
//! One fetcher thread owns the consumer: it polls, buffers each partition's
//! records in memory, and pauses a partition whose buffer is full (the reader
//! stops reading when the hot tier is at its budget, so the buffers fill up and
//! the partitions pause: backpressure without dropping), resuming it when the
//! reader has drained it. It also sends the offset commits. A second thread, with
//! a client of its own, refreshes the partitions' low and high offsets (asked on
//! the fetcher's connection, they would wait behind its fetches).
//!
//! Not built yet: sharing a topic's partitions between several `weir` processes
//! of one consumer group (rebalances); this source assigns every partition to
//! its process.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use weir_storage::config::KafkaConfig;
use weir_storage::log::{PartitionOffsets, ReadBatch};

use crate::source::{Assignment, Source, SourceError};

/// A partition pauses when this many bytes wait in its buffer, and resumes below
/// half of it.
pub const PAUSE_BYTES: usize = 8 << 20;

/// How often low and high offsets are refreshed and commits sent.
const REFRESH: Duration = Duration::from_millis(250);

/// How long broker requests at start may take.
const START_TIMEOUT: Duration = Duration::from_secs(15);

struct Record {
    offset: u64,
    timestamp_ms: i64,
    key: Vec<u8>,
    value: Vec<u8>,
}

#[derive(Default)]
struct Buffer {
    records: VecDeque<Record>,
    bytes: usize,
    paused: bool,
}

struct Shared {
    buffers: Vec<Mutex<Buffer>>,
    lows: Vec<AtomicU64>,
    highs: Vec<AtomicU64>,
    signal: Mutex<()>,
    arrived: Condvar,
    stop: AtomicBool,
    /// Where to start, once the reader says.
    start: Mutex<Option<Vec<u64>>>,
    /// Offsets to commit to the group.
    commit: Mutex<Option<Vec<u64>>>,
    /// A failure the reader must report (the fetcher stopped).
    failed: Mutex<Option<String>>,
    /// Records fetched so far.
    fetched: AtomicU64,
    /// Rebalances for the reader (tables with `rebalance`).
    events: Mutex<VecDeque<Assignment>>,
    /// Set while a revoke waits for the reader to seal everything.
    releasing: Mutex<bool>,
    released: Condvar,
    /// The partitions the group gave this process (none: all of them).
    assigned: Mutex<Option<Vec<bool>>>,
}

/// Consumer callbacks of a table whose partitions move between processes: a
/// revoke blocks the consumer until the reader has sealed what it read, so no
/// other process starts a partition before its records here are durable.
struct GroupContext {
    shared: Arc<Shared>,
    topic: String,
}

impl rdkafka::client::ClientContext for GroupContext {}

impl rdkafka::consumer::ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        let rdkafka::consumer::Rebalance::Revoke(tpl) = rebalance else { return };
        if tpl.count() == 0 {
            return;
        }
        let shared = &self.shared;
        *shared.releasing.lock() = true;
        shared.events.lock().push_back(Assignment::Revoke);
        shared.arrived.notify_all();
        let started = Instant::now();
        let mut releasing = shared.releasing.lock();
        while *releasing && !shared.stop.load(Ordering::SeqCst) {
            if shared.released.wait_for(&mut releasing, Duration::from_secs(5)).timed_out() {
                tracing::warn!(topic = %self.topic, waited_s = started.elapsed().as_secs(), "a rebalance waits for the table to seal what it read");
            }
        }
        drop(releasing);
        // What was fetched and not read stays in Kafka for the next owner.
        for b in &shared.buffers {
            let mut b = b.lock();
            b.records.clear();
            b.bytes = 0;
            b.paused = false;
        }
        *shared.assigned.lock() = Some(vec![false; shared.buffers.len()]);
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        let rdkafka::consumer::Rebalance::Assign(tpl) = rebalance else { return };
        let partitions: Vec<u32> = tpl.elements_for_topic(&self.topic).iter().map(|e| e.partition() as u32).collect();
        let mut assigned = vec![false; self.shared.buffers.len()];
        for &p in &partitions {
            if let Some(a) = assigned.get_mut(p as usize) {
                *a = true;
            }
        }
        *self.shared.assigned.lock() = Some(assigned);
        self.shared.events.lock().push_back(Assignment::Assign(partitions));
        self.shared.arrived.notify_all();
    }
}

/// A Kafka topic, every partition assigned to this process.
pub struct KafkaSource {
    topic: String,
    shared: Arc<Shared>,
    /// The fetcher and the offsets watcher.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn consumer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // Offsets come from the manifest; an offset the topic no longer holds is
        // an error, never a silent jump.
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", "20")
        .set("client.id", "weir");
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// A client that only reads metadata and offsets.
fn metadata_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers).set("client.id", "weir-offsets");
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

fn kafka_err(what: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::Kafka(format!("{what}: {e}"))
}

impl KafkaSource {
    /// Connects, reads the topic's partitions and their offsets, and starts the
    /// fetcher (which waits for [`Source::start`] before fetching).
    pub fn open(cfg: &KafkaConfig) -> Result<Arc<KafkaSource>, SourceError> {
        let consumer: BaseConsumer =
            consumer_config(cfg).create().map_err(|e| kafka_err("creating the consumer", e))?;
        let md = consumer.fetch_metadata(Some(&cfg.topic), START_TIMEOUT).map_err(|e| {
            kafka_err(&format!("reading the metadata of topic `{}` from {}", cfg.topic, cfg.bootstrap_servers), e)
        })?;
        let topic_md =
            md.topics().iter().find(|t| t.name() == cfg.topic).ok_or_else(|| {
                SourceError::Kafka(format!("topic `{}` is not on {}", cfg.topic, cfg.bootstrap_servers))
            })?;
        if let Some(e) = topic_md.error() {
            return Err(SourceError::Kafka(format!("topic `{}`: {e:?}", cfg.topic)));
        }
        let partitions = topic_md.partitions().len() as u32;
        if partitions == 0 {
            return Err(SourceError::Kafka(format!("topic `{}` has no partitions", cfg.topic)));
        }
        let shared = Arc::new(Shared {
            buffers: (0..partitions).map(|_| Mutex::new(Buffer::default())).collect(),
            lows: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            highs: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            signal: Mutex::new(()),
            arrived: Condvar::new(),
            stop: AtomicBool::new(false),
            start: Mutex::new(None),
            commit: Mutex::new(None),
            failed: Mutex::new(None),
            fetched: AtomicU64::new(0),
            events: Mutex::new(VecDeque::new()),
            releasing: Mutex::new(false),
            released: Condvar::new(),
            assigned: Mutex::new(None),
        });
        // Low and high offsets come from a client of their own, so that asking
        // for them never waits behind the fetcher's long-polling fetches.
        let watcher: BaseConsumer =
            metadata_config(cfg).create().map_err(|e| kafka_err("creating a metadata client", e))?;
        refresh_offsets(&watcher, &cfg.topic, &shared).map_err(|e| kafka_err("reading the topic's offsets", e))?;
        let (s, topic) = (shared.clone(), cfg.topic.clone());
        let fetcher = if cfg.rebalance {
            // The group assigns the partitions; offsets not committed yet start
            // at the earliest, and the reader skips what it does not need.
            drop(consumer);
            let mut c = consumer_config(cfg);
            c.set("auto.offset.reset", "earliest");
            let context = GroupContext { shared: shared.clone(), topic: cfg.topic.clone() };
            let grouped: BaseConsumer<GroupContext> =
                c.create_with_context(context).map_err(|e| kafka_err("creating the group consumer", e))?;
            *shared.assigned.lock() = Some(vec![false; partitions as usize]);
            std::thread::Builder::new().name(format!("kafka-{}", cfg.topic)).spawn(move || {
                if let Err(e) = grouped.subscribe(&[&topic]) {
                    *s.failed.lock() = Some(format!("subscribing to `{topic}`: {e}"));
                    return;
                }
                fetch(grouped, &topic, &s, false)
            })
        } else {
            std::thread::Builder::new()
                .name(format!("kafka-{}", cfg.topic))
                .spawn(move || fetch(consumer, &topic, &s, true))
        }
        .map_err(|e| kafka_err("starting the fetcher thread", e))?;
        let (s, topic) = (shared.clone(), cfg.topic.clone());
        let offsets = std::thread::Builder::new()
            .name(format!("kafka-offsets-{}", cfg.topic))
            .spawn(move || {
                while !s.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(REFRESH);
                    if let Err(e) = refresh_offsets(&watcher, &topic, &s) {
                        tracing::warn!(topic, error = %e, "could not refresh the topic's offsets");
                    }
                }
            })
            .map_err(|e| kafka_err("starting the offsets thread", e))?;
        Ok(Arc::new(KafkaSource { topic: cfg.topic.clone(), shared, threads: Mutex::new(vec![fetcher, offsets]) }))
    }

    /// Records fetched from Kafka so far (for throughput).
    pub fn fetched(&self) -> u64 {
        self.shared.fetched.load(Ordering::Relaxed)
    }

    /// Per partition: whether it is paused (its buffer is full), and the bytes
    /// waiting in its buffer.
    pub fn buffers(&self) -> Vec<(bool, usize)> {
        self.shared
            .buffers
            .iter()
            .map(|b| {
                let b = b.lock();
                (b.paused, b.bytes)
            })
            .collect()
    }
}

impl KafkaSource {
    fn stop_fetcher(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.stop_fetcher();
    }
}

/// The offsets a consumer group has committed, per partition (none where it has
/// committed nothing): what Kafka's tools compute the group's lag from.
pub fn group_offsets(cfg: &KafkaConfig, partitions: u32) -> Result<Vec<Option<u64>>, SourceError> {
    let consumer: BaseConsumer = consumer_config(cfg).create().map_err(|e| kafka_err("creating a consumer", e))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(&cfg.topic, p as i32);
    }
    let got =
        consumer.committed_offsets(tpl, START_TIMEOUT).map_err(|e| kafka_err("reading the group's offsets", e))?;
    Ok((0..partitions)
        .map(|p| match got.find_partition(&cfg.topic, p as i32).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o >= 0 => Some(o as u64),
            _ => None,
        })
        .collect())
}

fn refresh_offsets(consumer: &BaseConsumer, topic: &str, shared: &Shared) -> Result<(), rdkafka::error::KafkaError> {
    for p in 0..shared.buffers.len() {
        let (low, high) = consumer.fetch_watermarks(topic, p as i32, START_TIMEOUT)?;
        shared.lows[p].store(low.max(0) as u64, Ordering::Relaxed);
        shared.highs[p].store(high.max(0) as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// The offsets to commit: every partition's, or only the assigned ones' when the
/// group assigns them (another process commits the others).
fn commit_list(topic: &str, offsets: &[u64], assigned: &Option<Vec<bool>>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (p, &o) in offsets.iter().enumerate() {
        if assigned.as_ref().is_none_or(|a| a.get(p).copied().unwrap_or(false)) {
            let _ = tpl.add_partition_offset(topic, p as i32, Offset::Offset(o as i64));
        }
    }
    tpl
}

fn one(topic: &str, p: usize) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, p as i32);
    tpl
}

/// The fetcher thread: assign at the reader's start, poll into the buffers,
/// pause and resume, refresh offsets, commit.
fn fetch<C: rdkafka::consumer::ConsumerContext>(consumer: BaseConsumer<C>, topic: &str, shared: &Shared, assign: bool) {
    let fail = |what: String| {
        tracing::error!(topic, error = %what, "the Kafka fetcher stopped");
        *shared.failed.lock() = Some(what);
        shared.arrived.notify_all();
    };
    if assign {
        let start = loop {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            if let Some(s) = shared.start.lock().take() {
                break s;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut tpl = TopicPartitionList::new();
        for (p, &offset) in start.iter().enumerate() {
            if let Err(e) = tpl.add_partition_offset(topic, p as i32, Offset::Offset(offset as i64)) {
                return fail(format!("assigning partition {p} at offset {offset}: {e}"));
            }
        }
        if let Err(e) = consumer.assign(&tpl) {
            return fail(format!("assigning the partitions: {e}"));
        }
    }
    let mut refreshed = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(m)) => {
                let p = m.partition() as usize;
                let Some(buf) = shared.buffers.get(p) else { continue };
                let rec = Record {
                    offset: m.offset() as u64,
                    timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
                    key: m.key().unwrap_or_default().to_vec(),
                    value: m.payload().unwrap_or_default().to_vec(),
                };
                let mut b = buf.lock();
                b.bytes += rec.key.len() + rec.value.len() + 32;
                b.records.push_back(rec);
                if !b.paused && b.bytes >= PAUSE_BYTES {
                    match consumer.pause(&one(topic, p)) {
                        Ok(()) => b.paused = true,
                        Err(e) => tracing::warn!(topic, partition = p, error = %e, "could not pause a partition"),
                    }
                }
                drop(b);
                shared.fetched.fetch_add(1, Ordering::Relaxed);
                let _g = shared.signal.lock();
                shared.arrived.notify_all();
            }
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OffsetOutOfRange,
            ))) => {
                return fail("an offset the table needs is no longer held by the topic (retention deleted it before it was sealed)".into());
            }
            Some(Err(e)) => tracing::warn!(topic, error = %e, "Kafka consumer error; retrying"),
            None => {}
        }
        for (p, buf) in shared.buffers.iter().enumerate() {
            let mut b = buf.lock();
            if b.paused && b.bytes < PAUSE_BYTES / 2 {
                match consumer.resume(&one(topic, p)) {
                    Ok(()) => b.paused = false,
                    Err(e) => tracing::warn!(topic, partition = p, error = %e, "could not resume a partition"),
                }
            }
        }
        if refreshed.elapsed() >= REFRESH {
            refreshed = Instant::now();
            if let Some(offsets) = shared.commit.lock().take() {
                let tpl = commit_list(topic, &offsets, &shared.assigned.lock());
                if tpl.count() == 0 {
                    continue;
                }
                if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                    tracing::warn!(topic, error = %e, "could not commit offsets to the consumer group");
                }
            }
        }
    }
    // Last commit, synchronously, on the way out.
    if let Some(offsets) = shared.commit.lock().take() {
        let tpl = commit_list(topic, &offsets, &shared.assigned.lock());
        if tpl.count() > 0 {
            let _ = consumer.commit(&tpl, CommitMode::Sync);
        }
    }
}

impl Source for KafkaSource {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn partitions(&self) -> u32 {
        self.shared.buffers.len() as u32
    }

    fn offsets(&self, partition: u32) -> PartitionOffsets {
        let p = partition as usize;
        match (self.shared.lows.get(p), self.shared.highs.get(p)) {
            (Some(l), Some(h)) => PartitionOffsets { low: l.load(Ordering::Relaxed), high: h.load(Ordering::Relaxed) },
            _ => PartitionOffsets { low: 0, high: 0 },
        }
    }

    fn start(&self, next: &[u64]) -> Result<(), SourceError> {
        *self.shared.start.lock() = Some(next.to_vec());
        Ok(())
    }

    fn read_into(&self, partition: u32, from: u64, max_bytes: usize, batch: &mut ReadBatch) -> Result<(), SourceError> {
        batch.begin(partition, from);
        if let Some(why) = self.shared.failed.lock().clone() {
            return Err(SourceError::Kafka(why));
        }
        let Some(buf) = self.shared.buffers.get(partition as usize) else {
            return Err(SourceError::Kafka(format!("topic `{}` has no partition {partition}", self.topic)));
        };
        let mut b = buf.lock();
        let mut bytes = 0;
        while bytes < max_bytes {
            let Some(r) = b.records.pop_front() else { break };
            b.bytes -= r.key.len() + r.value.len() + 32;
            if r.offset < from {
                continue;
            }
            bytes += r.key.len() + r.value.len() + 32;
            batch.push(r.offset, r.timestamp_ms, &r.key, &r.value);
        }
        Ok(())
    }

    fn wait_any(&self, _next: &[u64], timeout: Duration) -> bool {
        let ready = || {
            self.shared.buffers.iter().any(|b| !b.lock().records.is_empty())
                || self.shared.failed.lock().is_some()
                || !self.shared.events.lock().is_empty()
        };
        if ready() {
            return true;
        }
        let mut g = self.shared.signal.lock();
        let _ = self.shared.arrived.wait_for(&mut g, timeout);
        drop(g);
        ready()
    }

    fn durable(&self, offsets: &[u64]) {
        *self.shared.commit.lock() = Some(offsets.to_vec());
    }

    fn close(&self) {
        self.stop_fetcher();
    }

    fn assignment(&self) -> Option<Assignment> {
        self.shared.events.lock().pop_front()
    }

    fn released(&self) {
        *self.shared.releasing.lock() = false;
        self.shared.released.notify_all();
    }
}

/// A producer to a table's Kafka topic: the HTTP ingest endpoint and the demo
/// generator append through it when the table reads Kafka.
pub struct KafkaSink {
    producer: rdkafka::producer::FutureProducer,
    topic: String,
}

impl KafkaSink {
    pub fn open(cfg: &KafkaConfig) -> Result<KafkaSink, SourceError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &cfg.bootstrap_servers)
            .set("client.id", "weir-producer")
            .set("linger.ms", "5")
            .set("acks", "all");
        for (k, v) in &cfg.properties {
            c.set(k, v);
        }
        let producer = c.create().map_err(|e| kafka_err("creating the producer", e))?;
        Ok(KafkaSink { producer, topic: cfg.topic.clone() })
    }

    /// Produces every record (Kafka's partitioner routes it by its key) and waits
    /// for all acknowledgements; returns each record's (partition, offset).
    pub async fn send(&self, records: &[(&[u8], &[u8])], timestamp_ms: i64) -> Result<Vec<(u32, u64)>, SourceError> {
        use rdkafka::producer::FutureRecord;
        let mut pending = Vec::with_capacity(records.len());
        for (key, value) in records {
            let mut r = FutureRecord::to(&self.topic).payload(*value).timestamp(timestamp_ms);
            if !key.is_empty() {
                r = r.key(*key);
            }
            let fut = self
                .producer
                .send_result(r)
                .map_err(|(e, _)| kafka_err(&format!("producing to `{}`", self.topic), e))?;
            pending.push(fut);
        }
        let mut out = Vec::with_capacity(pending.len());
        for fut in pending {
            match fut.await {
                Ok(Ok(d)) => out.push((d.partition as u32, d.offset as u64)),
                Ok(Err((e, _))) => return Err(kafka_err(&format!("producing to `{}`", self.topic), e)),
                Err(_) => {
                    return Err(SourceError::Kafka(format!(
                        "producing to `{}`: the delivery was cancelled",
                        self.topic
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// Creates `topic` with `partitions` partitions unless it exists (the demo's
/// topic, and tests). Returns whether it created it.
pub async fn ensure_topic(cfg: &KafkaConfig, partitions: u32) -> Result<bool, SourceError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers);
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = c.create().map_err(|e| kafka_err("creating an admin client", e))?;
    let md = admin
        .inner()
        .fetch_metadata(Some(&cfg.topic), START_TIMEOUT)
        .map_err(|e| kafka_err(&format!("reading the metadata of {}", cfg.bootstrap_servers), e))?;
    if md.topics().iter().any(|t| t.name() == cfg.topic && t.error().is_none() && !t.partitions().is_empty()) {
        return Ok(false);
    }
    let topic = NewTopic::new(&cfg.topic, partitions as i32, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&topic], &AdminOptions::new().operation_timeout(Some(START_TIMEOUT)))
        .await
        .map_err(|e| kafka_err(&format!("creating topic `{}`", cfg.topic), e))?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => return Ok(false),
            Err((name, code)) => return Err(SourceError::Kafka(format!("creating topic `{name}`: {code}"))),
        }
    }
    Ok(true)
}
