//! One WebSocket connection: a reader loop for client messages, one forwarder task
//! per subscribed tile, and a writer task that owns the socket's sending half.
//!
//! Everything sent goes through one bounded outbox: at most [`OUTBOX`] messages
//! and `limits.max_live_queued_bytes` bytes (a message holds permits for its
//! bytes until it is written), so a connection holds at most that plus one
//! message per forwarder. A client that does not read fills its socket, then the
//! outbox; its forwarders wait and, when they can send again, send only the
//! latest state of their tile (a snapshot with the updates skipped). The hub and
//! other connections never wait for it. A client that accepts nothing for
//! `limits.live_send_timeout` is disconnected.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use weir_query::live::{Push, Subscription, TileHub, TileSpec};
use weir_storage::config::LimitsConfig;

use super::protocol::{self, ClientMessage};

/// Messages a connection may have waiting for its socket.
pub const OUTBOX: usize = 16;
/// A connection from which nothing (not even a pong) arrived for this many
/// heartbeats is closed.
const SILENT_HEARTBEATS: u32 = 3;

/// Serves one connection until the client leaves, goes silent, or the socket fails.
pub async fn serve(socket: WebSocket, hub: TileHub, heartbeat: Duration, limits: &LimitsConfig) {
    let (sink, mut stream) = socket.split();
    let (tx, rx) = mpsc::channel::<Queued>(OUTBOX);
    let outbox = Outbox {
        tx,
        bytes: Arc::new(Semaphore::new(limits.max_live_queued_bytes)),
        max_bytes: limits.max_live_queued_bytes,
    };
    let mut writer = tokio::spawn(write(sink, rx, heartbeat, limits.live_send_timeout));
    let mut conn = Connection { hub, outbox, tiles: HashMap::new(), max_tiles: limits.max_tiles_per_connection };
    if conn.send(protocol::hello(heartbeat.as_millis())).await {
        read(&mut conn, &mut stream, &mut writer, heartbeat * SILENT_HEARTBEATS).await;
    }
    // Stop the forwarders, then let the writer send what is queued and close; a
    // client that does not read gets one heartbeat period for that.
    drop(conn);
    if tokio::time::timeout(heartbeat, &mut writer).await.is_err() {
        writer.abort();
    }
}

/// A message waiting for the socket, with the permits for its bytes.
type Queued = (Message, OwnedSemaphorePermit);

/// The sending side of a connection's outbox.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::Sender<Queued>,
    /// One permit per byte that may be queued.
    bytes: Arc<Semaphore>,
    max_bytes: usize,
}

impl Outbox {
    /// Queues `text` once its bytes fit (a message larger than the whole
    /// allowance waits for all of it); false once the writer is gone.
    async fn send(&self, text: String) -> bool {
        let n = u32::try_from(text.len().min(self.max_bytes)).unwrap_or(u32::MAX);
        let Ok(permit) = Arc::clone(&self.bytes).acquire_many_owned(n).await else { return false };
        self.tx.send((Message::Text(text.into()), permit)).await.is_ok()
    }
}

struct Connection {
    hub: TileHub,
    outbox: Outbox,
    /// Tile id -> its forwarder.
    tiles: HashMap<String, Forwarder>,
    /// `limits.max_tiles_per_connection`.
    max_tiles: usize,
}

/// A forwarder task, aborted when dropped.
struct Forwarder(JoinHandle<()>);

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn read(
    conn: &mut Connection,
    stream: &mut SplitStream<WebSocket>,
    writer: &mut JoinHandle<()>,
    silence: Duration,
) {
    loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout(silence, stream.next()) => frame,
            _ = &mut *writer => return, // the socket failed
        };
        let text = match frame {
            Err(_) => {
                tracing::debug!("closing a silent live connection");
                return;
            }
            Ok(None | Some(Err(_))) => return,
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(Message::Close(_)))) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(Message::Binary(_)))) => {
                let reply = protocol::error(None, "send JSON text frames; binary frames are not part of the protocol");
                if !conn.send(reply).await {
                    return;
                }
                continue;
            }
        };
        let reply = match protocol::parse(text.as_str()) {
            Ok(message) => conn.handle(message).await,
            Err(message) => Some(protocol::error(None, &message)),
        };
        if let Some(reply) = reply
            && !conn.send(reply).await
        {
            return;
        }
    }
}

impl Connection {
    /// Queues a message; false once the writer is gone.
    async fn send(&self, text: String) -> bool {
        self.outbox.send(text).await
    }

    /// Acts on a client message; returns the reply, if any.
    async fn handle(&mut self, message: ClientMessage) -> Option<String> {
        match message {
            ClientMessage::Ping => Some(protocol::pong()),
            ClientMessage::Unsubscribe { id } => match self.tiles.remove(&id) {
                Some(mut forwarder) => {
                    // Wait until the forwarder is gone, so nothing for `id` can be
                    // queued after `unsubscribed`.
                    forwarder.0.abort();
                    let _ = (&mut forwarder.0).await;
                    Some(protocol::unsubscribed(&id))
                }
                None => Some(protocol::error(None, &format!("no tile `{id}` on this connection to unsubscribe"))),
            },
            ClientMessage::Subscribe { id, sql, max_rate_hz, key } => {
                if self.tiles.contains_key(&id) {
                    let message =
                        format!("tile id `{id}` is already subscribed on this connection; unsubscribe it first");
                    return Some(protocol::error(None, &message));
                }
                if self.tiles.len() >= self.max_tiles {
                    let message = format!(
                        "this connection already has {} tiles, limits.max_tiles_per_connection: unsubscribe one or open another connection",
                        self.max_tiles
                    );
                    return Some(protocol::error(Some(&id), &message));
                }
                match self.hub.subscribe(TileSpec { sql, key }, max_rate_hz).await {
                    Ok(sub) => {
                        let task = tokio::spawn(forward(id.clone(), sub, self.outbox.clone()));
                        self.tiles.insert(id, Forwarder(task));
                        None
                    }
                    Err(e) => Some(protocol::error(Some(&id), &e.to_string())),
                }
            }
        }
    }
}

/// Sends a tile's changes to the outbox, at most `max_rate_hz` times a second,
/// always from the latest state.
async fn forward(id: String, mut sub: Subscription, outbox: Outbox) {
    // The hub accepts rates from MIN_RATE_HZ up; a longer period is no harm.
    let period = Duration::try_from_secs_f64(1.0 / sub.rate_hz()).unwrap_or(Duration::MAX);
    let mut last_push: Option<Instant> = None;
    loop {
        sub.changed().await;
        if let Some(at) = last_push {
            tokio::time::sleep_until(at + period).await;
        }
        for push in sub.pending() {
            let text = match push {
                Push::Error(failure) => protocol::error(Some(&id), &failure.message),
                Push::Snapshot { published, skipped } => {
                    last_push = Some(Instant::now());
                    protocol::snapshot(&id, &published, skipped)
                }
                Push::Update(published) => {
                    last_push = Some(Instant::now());
                    // `pending` gives updates only for results with a diff.
                    protocol::update(&id, &published).unwrap_or_else(|| protocol::snapshot(&id, &published, 0))
                }
            };
            if !outbox.send(text).await {
                return;
            }
        }
    }
}

/// Writes queued messages to the socket, batching what is already queued into one
/// flush; sends a heartbeat and a ping after `heartbeat` without anything to send.
/// Ends (closing the connection) when the socket fails or when the client takes
/// longer than `send_timeout` to accept what is written.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Queued>,
    heartbeat: Duration,
    send_timeout: Duration,
) {
    loop {
        let batch = match tokio::time::timeout(heartbeat, rx.recv()).await {
            Ok(Some(first)) => {
                let mut batch = vec![first];
                while batch.len() < OUTBOX {
                    let Ok(more) = rx.try_recv() else { break };
                    batch.push(more);
                }
                batch
            }
            Ok(None) => {
                let _ = tokio::time::timeout(send_timeout, sink.send(Message::Close(None))).await;
                return;
            }
            Err(_idle) => {
                let beat = [Message::Text(protocol::heartbeat().into()), Message::Ping(Default::default())];
                if !written(&mut sink, beat.into_iter(), send_timeout).await {
                    return;
                }
                continue;
            }
        };
        // The permits go back once the batch is written (or the writer ends).
        let (messages, _permits): (Vec<Message>, Vec<OwnedSemaphorePermit>) = batch.into_iter().unzip();
        if !written(&mut sink, messages.into_iter(), send_timeout).await {
            return;
        }
    }
}

/// Feeds `messages` and flushes them within `timeout`; false when the socket
/// failed or the client did not take them in time.
async fn written(
    sink: &mut SplitSink<WebSocket, Message>,
    messages: impl Iterator<Item = Message>,
    timeout: Duration,
) -> bool {
    let send = async {
        for m in messages {
            sink.feed(m).await?;
        }
        sink.flush().await
    };
    match tokio::time::timeout(timeout, send).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::debug!(?timeout, "closing a live connection whose client does not read");
            false
        }
    }
}
