//! The control daemon's asynchronous client of the engine's control socket: requests are multiplexed
//! by id (each awaits its own reply) and events are delivered on a channel.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use switchyard_protocol::{Event, FrameKind, FrameReader, Reply, Request, WorkerInfo, VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

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

/// A connection to the engine.
#[derive(Clone)]
pub struct EngineLink {
    requests: mpsc::UnboundedSender<(Request, oneshot::Sender<Reply>)>,
    /// The engine's workers and their UDP addresses.
    pub workers: Vec<WorkerInfo>,
    /// The engine's I/O backend.
    pub io: String,
}

impl EngineLink {
    /// Connects, says Hello (asking for events) and starts the reader and writer tasks.
    pub async fn connect(path: &Path, events: mpsc::UnboundedSender<Event>) -> Result<EngineLink, LinkError> {
        let stream = UnixStream::connect(path).await?;
        let (mut rd, mut wr) = stream.into_split();
        let pending: Pending = Arc::default();
        let (req_tx, mut req_rx) = mpsc::unbounded_channel::<(Request, oneshot::Sender<Reply>)>();

        let writer_pending = Arc::clone(&pending);
        tokio::spawn(async move {
            let mut next_id: u32 = 1;
            while let Some((req, reply)) = req_rx.recv().await {
                let id = next_id;
                next_id = next_id.wrapping_add(1).max(1);
                if let Ok(mut p) = writer_pending.lock() {
                    p.insert(id, reply);
                }
                if wr.write_all(&req.frame(id).encode()).await.is_err() {
                    break;
                }
            }
        });

        let reader_pending = Arc::clone(&pending);
        tokio::spawn(async move {
            let mut reader = FrameReader::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                reader.feed(&buf[..n]);
                while let Some(frame) = reader.next_frame() {
                    let Ok(frame) = frame else {
                        tracing::warn!("undecodable frame from the engine");
                        continue;
                    };
                    match frame.kind {
                        FrameKind::Reply => {
                            let waiter = reader_pending.lock().ok().and_then(|mut p| p.remove(&frame.id));
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
            }
            tracing::warn!("engine connection closed");
            if let Ok(mut p) = reader_pending.lock() {
                p.clear();
            }
        });

        let mut link = EngineLink { requests: req_tx, workers: Vec::new(), io: String::new() };
        match link.request(Request::Hello { version: VERSION, client: "switchyard-control".into(), events: true }).await? {
            Reply::Hello { version, io, workers, .. } if version == VERSION => {
                link.workers = workers;
                link.io = io;
                Ok(link)
            }
            other => Err(LinkError::Handshake(format!("unexpected Hello reply: {other:?}"))),
        }
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
}
