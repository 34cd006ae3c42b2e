use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{DecodeError, ErrorCode, Event, FrameKind, FrameReader, Reply, Request, VERSION};

/// Why a request through [`EngineClient`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    /// The engine sent something undecodable.
    #[error("undecodable frame from the engine: {0}")]
    Decode(#[from] DecodeError),
    /// The engine refused the request.
    #[error("engine refused ({code}): {message}")]
    Refused {
        /// Its error code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// No reply in time.
    #[error("no reply from the engine within {0:?}")]
    Timeout(Duration),
    /// The engine closed the connection.
    #[error("the engine closed the control connection")]
    Closed,
}

/// A blocking client of the engine's control socket, for tools and tests (the control daemon has its
/// own asynchronous one). Events that arrive while waiting for a reply are kept for
/// [`EngineClient::next_event`].
pub struct EngineClient {
    stream: UnixStream,
    reader: FrameReader,
    next_id: u32,
    events: VecDeque<Event>,
    timeout: Duration,
}

impl EngineClient {
    /// Connects and says Hello; returns the client and the engine's Hello reply.
    pub fn connect(path: &Path, client: &str, events: bool) -> Result<(EngineClient, Reply), ClientError> {
        let stream = UnixStream::connect(path)?;
        let mut c = EngineClient {
            stream,
            reader: FrameReader::new(),
            next_id: 1,
            events: VecDeque::new(),
            timeout: Duration::from_secs(5),
        };
        let hello = c.request(&Request::Hello { version: VERSION, client: client.into(), events })?;
        Ok((c, hello))
    }

    /// Sends a request and waits for its reply; an error reply becomes [`ClientError::Refused`].
    pub fn request(&mut self, req: &Request) -> Result<Reply, ClientError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.stream.write_all(&req.frame(id).encode())?;
        self.wait_reply(id)
    }

    /// Writes raw bytes to the socket (for tests of malformed frames) and waits for the reply to `id`.
    pub fn raw(&mut self, bytes: &[u8], id: u32) -> Result<Reply, ClientError> {
        self.stream.write_all(bytes)?;
        self.wait_reply(id)
    }

    fn wait_reply(&mut self, id: u32) -> Result<Reply, ClientError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            while let Some(frame) = self.reader.next_frame() {
                let frame = frame.map_err(|(_, e)| e)?;
                match frame.kind {
                    FrameKind::Event => self.events.push_back(Event::decode(&frame.body)?),
                    FrameKind::Reply if frame.id == id => {
                        return match Reply::decode(&frame.body)? {
                            Reply::Error { code, message } => Err(ClientError::Refused { code, message }),
                            r => Ok(r),
                        };
                    }
                    _ => {}
                }
            }
            self.fill(deadline)?;
        }
    }

    fn fill(&mut self, deadline: Instant) -> Result<(), ClientError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout(self.timeout));
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut buf = [0u8; 16 * 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => Err(ClientError::Closed),
            Ok(n) => {
                self.reader.feed(&buf[..n]);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Err(ClientError::Timeout(self.timeout))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The next event, waiting up to `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(Some(e));
            }
            while let Some(frame) = self.reader.next_frame() {
                let frame = frame.map_err(|(_, e)| e)?;
                if frame.kind == FrameKind::Event {
                    self.events.push_back(Event::decode(&frame.body)?);
                }
            }
            if !self.events.is_empty() {
                continue;
            }
            match self.fill(deadline) {
                Ok(()) => {}
                Err(ClientError::Timeout(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}
