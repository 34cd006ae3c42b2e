//! The control daemon's asynchronous client of the engine's control socket: requests are multiplexed
//! by id (each awaits its own reply) and events are delivered on a channel.
//!
//! The link outlives the engine process: when the connection closes (the engine stopped or crashed),
//! every request in flight and every request made while the engine is away fails at once with
//! [`LinkError::Closed`], and the link reconnects to the same socket path with backoff (50 ms doubling
//! to 0.5 s), says Hello again and bumps [`EngineLink::restarts`], so the hub can re-install what it
//! holds in the new engine (docs/operations.md, "Restarts").

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_protocol::{Event, FrameKind, FrameReader, Reply, Request, WorkerInfo, VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};

/// Why a request to the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The engine answered with an error.
    #[error("engine refused: {0}")]
    Refused(String),
    /// The connection to the engine is gone.
    #[error("the engine connection is closed")]
    Closed,
    /// Connecting or writing failed.
    #[error("engine socket: {0}")]
    Io(#[from] std::io::Error),
    /// The engine speaks another protocol version or answered Hello oddly.
    #[error("engine handshake: {0}")]
    Handshake(String),
}

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Reply>>>>;
type Queued = (Request, oneshot::Sender<Reply>);

/// First and longest wait between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Id of the Hello request on each connection (the writer numbers the others from 1).
const HELLO_ID: u32 = u32::MAX;

/// A connection to the engine.
#[derive(Clone)]
pub struct EngineLink {
    requests: mpsc::UnboundedSender<Queued>,
    /// The engine's workers and their UDP addresses (from the first Hello).
    pub workers: Vec<WorkerInfo>,
    /// The engine's I/O backend.
    pub io: String,
    restarts: watch::Receiver<u64>,
    connected: watch::Receiver<bool>,
}

/// A greeted connection: the halves, the reader with any bytes past the Hello reply, and the reply.
struct Greeted {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    reader: FrameReader,
    workers: Vec<WorkerInfo>,
    io: String,
    pid: u32,
}

/// Connects and says Hello (asking for events); events arriving before the reply are delivered.
async fn greet(path: &Path, events: &mpsc::UnboundedSender<Event>) -> Result<Greeted, LinkError> {
    let stream = UnixStream::connect(path).await?;
    let (mut rd, mut wr) = stream.into_split();
    let hello = Request::Hello { version: VERSION, client: "switchyard-control".into(), events: true };
    wr.write_all(&hello.frame(HELLO_ID).encode()).await?;
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 64 * 1024];
    let read = async {
        loop {
            while let Some(frame) = reader.next_frame() {
                let Ok(frame) = frame else { continue };
                match frame.kind {
                    FrameKind::Reply if frame.id == HELLO_ID => {
                        return Reply::decode(&frame.body).map_err(|e| LinkError::Handshake(e.to_string()));
                    }
                    FrameKind::Event => {
                        if let Ok(ev) = Event::decode(&frame.body) {
                            let _ = events.send(ev);
                        }
                    }
                    _ => {}
                }
            }
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                return Err(LinkError::Closed);
            }
            reader.feed(&buf[..n]);
        }
    };
    let reply = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| LinkError::Handshake("no Hello reply within 5 s".into()))??;
    match reply {
        Reply::Hello { version, io, workers, pid } if version == VERSION => Ok(Greeted { rd, wr, reader, workers, io, pid }),
        Reply::Error { code, message } => Err(LinkError::Handshake(format!("{code}: {message}"))),
        other => Err(LinkError::Handshake(format!("unexpected Hello reply: {other:?}"))),
    }
}

/// Reads frames until the connection closes: replies go to their waiters, events to `events`.
async fn read_loop(mut rd: OwnedReadHalf, mut reader: FrameReader, pending: Pending, events: mpsc::UnboundedSender<Event>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(frame) = reader.next_frame() {
            let Ok(frame) = frame else {
                tracing::warn!("undecodable frame from the engine");
                continue;
            };
            match frame.kind {
                FrameKind::Reply => {
                    let waiter = pending.lock().ok().and_then(|mut p| p.remove(&frame.id));
                    match (Reply::decode(&frame.body), waiter) {
                        (Ok(r), Some(w)) => {
                            let _ = w.send(r);
                        }
                        (Err(e), _) => tracing::warn!(error = %e, "undecodable reply from the engine"),
                        (Ok(_), None) => {}
                    }
                }
                FrameKind::Event => match Event::decode(&frame.body) {
                    Ok(ev) => {
                        let _ = events.send(ev);
                    }
                    Err(e) => tracing::warn!(error = %e, "undecodable event from the engine"),
                },
                FrameKind::Request => {}
            }
        }
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => reader.feed(&buf[..n]),
        }
    }
}

/// Owns the connection: writes requests while connected, fails them while not, and reconnects.
struct Supervisor {
    path: PathBuf,
    events: mpsc::UnboundedSender<Event>,
    requests: mpsc::UnboundedReceiver<Queued>,
    restarts: watch::Sender<u64>,
    connected: watch::Sender<bool>,
    workers: Vec<WorkerInfo>,
    pid: u32,
}

impl Supervisor {
    async fn run(mut self, mut conn: Greeted) {
        loop {
            if !self.serve(conn).await {
                return;
            }
            let _ = self.connected.send(false);
            tracing::warn!(socket = %self.path.display(), "engine connection closed; reconnecting");
            conn = match self.reconnect().await {
                Some(c) => c,
                None => return,
            };
            let _ = self.connected.send(true);
            if conn.workers.iter().map(|w| w.addr).ne(self.workers.iter().map(|w| w.addr)) {
                tracing::error!(
                    before = ?self.workers.iter().map(|w| w.addr).collect::<Vec<_>>(),
                    now = ?conn.workers.iter().map(|w| w.addr).collect::<Vec<_>>(),
                    "the engine came back with other worker addresses (run it with a fixed --port-base): calls in progress cannot resume"
                );
            }
            tracing::info!(old_pid = self.pid, pid = conn.pid, workers = conn.workers.len(), "reconnected to the engine");
            self.pid = conn.pid;
            self.workers = conn.workers.clone();
            self.restarts.send_modify(|n| *n += 1);
        }
    }

    /// Carries requests over one connection until it closes (true) or every link handle is gone (false).
    async fn serve(&mut self, conn: Greeted) -> bool {
        let Greeted { rd, mut wr, reader, .. } = conn;
        let pending: Pending = Arc::default();
        let mut reading = tokio::spawn(read_loop(rd, reader, Arc::clone(&pending), self.events.clone()));
        let mut next_id: u32 = 1;
        let alive = loop {
            tokio::select! {
                _ = &mut reading => break true,
                req = self.requests.recv() => {
                    let Some((req, reply)) = req else { break false };
                    let id = next_id;
                    next_id = next_id.wrapping_add(1).max(1);
                    if next_id == HELLO_ID {
                        next_id = 1;
                    }
                    if let Ok(mut p) = pending.lock() {
                        p.insert(id, reply);
                    }
                    if wr.write_all(&req.frame(id).encode()).await.is_err() {
                        break true;
                    }
                }
            }
        };
        reading.abort();
        // Dropping the waiters fails their requests with `Closed`.
        if let Ok(mut p) = pending.lock() {
            p.clear();
        }
        alive
    }

    /// Retries the socket with backoff, failing every request made meanwhile; None once the link is dropped.
    async fn reconnect(&mut self) -> Option<Greeted> {
        let mut wait = BACKOFF_MIN;
        let mut attempts = 0u32;
        loop {
            match greet(&self.path, &self.events).await {
                Ok(c) => return Some(c),
                Err(e) => {
                    attempts += 1;
                    if attempts == 1 || attempts.is_multiple_of(30) {
                        tracing::warn!(error = %e, attempts, "engine not reachable yet");
                    }
                }
            }
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    req = self.requests.recv() => match req {
                        // Dropping the reply sender fails the request with `Closed` at once.
                        Some(_) => {}
                        None => return None,
                    },
                }
            }
            wait = (wait * 2).min(BACKOFF_MAX);
        }
    }
}

impl EngineLink {
    /// Connects, says Hello (asking for events) and starts the task that carries requests and
    /// reconnects when the engine goes away. Fails if the first connection fails.
    pub async fn connect(path: &Path, events: mpsc::UnboundedSender<Event>) -> Result<EngineLink, LinkError> {
        let conn = greet(path, &events).await?;
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let (restarts_tx, restarts) = watch::channel(0);
        let (connected_tx, connected) = watch::channel(true);
        let link = EngineLink { requests: req_tx, workers: conn.workers.clone(), io: conn.io.clone(), restarts, connected };
        let sup = Supervisor {
            path: path.to_path_buf(),
            events,
            requests: req_rx,
            restarts: restarts_tx,
            connected: connected_tx,
            workers: conn.workers.clone(),
            pid: conn.pid,
        };
        tokio::spawn(sup.run(conn));
        Ok(link)
    }

    /// Sends a request and awaits its reply; an engine error reply becomes `Refused`.
    pub async fn request(&self, req: Request) -> Result<Reply, LinkError> {
        let (tx, rx) = oneshot::channel();
        self.requests.send((req, tx)).map_err(|_| LinkError::Closed)?;
        match rx.await.map_err(|_| LinkError::Closed)? {
            Reply::Error { code, message } => Err(LinkError::Refused(format!("{code}: {message}"))),
            r => Ok(r),
        }
    }

    /// Sends a request without waiting for the reply (DTLS datagrams: ordering is kept by the single
    /// writer task, and a failure is the engine's to count).
    pub fn send(&self, req: Request) {
        let (tx, _rx) = oneshot::channel();
        let _ = self.requests.send((req, tx));
    }

    /// Counts reconnections to a (restarted) engine: changes each time the link has said Hello to a
    /// new connection, which then holds nothing the control daemon installed before.
    pub fn restarts(&self) -> watch::Receiver<u64> {
        self.restarts.clone()
    }

    /// Whether the engine is connected now.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }
}
