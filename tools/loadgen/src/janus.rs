//! Janus's VideoRoom plugin over its HTTP API (`/janus`): one Janus session per room, one plugin
//! handle per participant, asynchronous events (JSEP answers and offers) taken from the session's
//! long poll and routed by handle id.
//!
//! Publisher: attach `janus.plugin.videoroom`, `joinandconfigure` as a publisher with our JSEP
//! offer, wait for the `joined` event with Janus's answer (its feed id and `a=setup:active`: Janus
//! is the DTLS client then). Subscriber: attach, `join` as a subscriber to every feed of the room,
//! wait for the `attached` event with Janus's offer, answer with `start`. Media then goes through
//! the same ICE/DTLS/SRTP code as for Switchyard.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde_json::{json, Value};
use switchyard_sdp::{
    answer_subscribe_client, offer_publish_client, LocalTransport, SessionDescription,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::media::{Role, RoomShared, Track};
use crate::run::{Config, Shared};
use crate::session::{self, LocalSide};

/// What a Janus description lacks when it offers no candidate the load generator can reach.
const NO_CANDIDATE: &str = "loopback candidate: configure Janus to gather on a 127.0.0.0/8 address (see docs/load-testing.md)";

/// A minimal HTTP/1.1 client: one connection per request (`Connection: close`), JSON in and out.
async fn http(
    url: &str,
    method: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// URLs are supported: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(authority)
            .await
            .with_context(|| format!("connecting to {authority}"))?;
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
            payload.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await?;
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| anyhow!("malformed HTTP response"))?;
        let head = String::from_utf8_lossy(&resp[..split]).to_ascii_lowercase();
        let status_ok = head.starts_with("http/1.1 200") || head.starts_with("http/1.0 200");
        let mut body = resp[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            body = dechunk(&body).ok_or_else(|| anyhow!("malformed chunked body"))?;
        }
        if !status_ok {
            bail!(
                "HTTP {}: {}",
                head.lines().next().unwrap_or(""),
                String::from_utf8_lossy(&body)
            );
        }
        serde_json::from_slice::<Value>(&body).context("Janus sent something that is not JSON")
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow!("HTTP {method} {url} timed out"))?
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

fn transaction() -> String {
    format!("lg{:016x}", rand::random::<u64>())
}

fn janus_ok(v: &Value, what: &str) -> anyhow::Result<()> {
    match v.get("janus").and_then(Value::as_str) {
        Some("success") | Some("ack") => Ok(()),
        _ => bail!("Janus refused {what}: {v}"),
    }
}

/// One VideoRoom room on Janus, with the Janus session that carries its participants.
pub struct Room {
    base: String,
    session: u64,
    room: u64,
    handles: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Value>>>>,
    timeout: Duration,
}

static NEXT_ROOM: AtomicU64 = AtomicU64::new(0);

impl Room {
    /// Creates a Janus session, starts its long poll and creates a VideoRoom room.
    pub async fn create(base: &str, id: u32, cfg: &Config) -> anyhow::Result<Room> {
        let timeout = cfg.setup_timeout;
        let base = base.trim_end_matches('/').to_string();
        let v = http(
            &base,
            "POST",
            Some(&json!({"janus": "create", "transaction": transaction()})),
            timeout,
        )
        .await?;
        janus_ok(&v, "create session")?;
        let session = v
            .pointer("/data/id")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("no session id: {v}"))?;
        let room_id = 1_000_000
            + u64::from(rand::random::<u32>() % 1_000_000) * 1000
            + u64::from(id % 1000)
            + NEXT_ROOM.fetch_add(1, Ordering::Relaxed);
        let r = Room {
            base,
            session,
            room: room_id,
            handles: Arc::new(Mutex::new(HashMap::new())),
            timeout,
        };
        tokio::spawn(poll_events(
            format!("{}/{}", r.base, r.session),
            Arc::clone(&r.handles),
            cfg_shutdown(),
        ));
        let (h, _rx) = r.attach().await?;
        let body = json!({
            "request": "create",
            "room": room_id,
            "publishers": cfg.publishers.max(1) + 1,
            "is_private": true,
            "bitrate": 0,
            "audiocodec": "opus",
            "videocodec": "vp8",
            "notify_joining": false,
        });
        let v = r.message(h, body, None).await?;
        let created = v
            .pointer("/plugindata/data/videoroom")
            .and_then(Value::as_str);
        if created != Some("created") {
            bail!("Janus did not create room {room_id}: {v}");
        }
        Ok(r)
    }

    async fn attach(&self) -> anyhow::Result<(u64, mpsc::UnboundedReceiver<Value>)> {
        let url = format!("{}/{}", self.base, self.session);
        let v = http(&url, "POST", Some(&json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": transaction()})), self.timeout).await?;
        janus_ok(&v, "attach")?;
        let h = v
            .pointer("/data/id")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("no handle id: {v}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut m) = self.handles.lock() {
            m.insert(h, tx);
        }
        Ok((h, rx))
    }

    async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/{}/{}", self.base, self.session, handle);
        let mut msg = json!({"janus": "message", "transaction": transaction(), "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        let v = http(&url, "POST", Some(&msg), self.timeout).await?;
        janus_ok(&v, "message")?;
        Ok(v)
    }

    /// Joins as a publisher of `tracks`; returns the feed id once media is handed to the thread.
    pub async fn publisher(
        &self,
        sh: Arc<Shared>,
        who: String,
        tracks: Vec<Track>,
        room: Arc<RoomShared>,
        thread: usize,
    ) -> anyhow::Result<u64> {
        let deadline = Instant::now() + sh.setup_timeout;
        let (h, mut events) = self.attach().await?;
        let local = LocalSide::new(sh.bind)?;
        let lt = LocalTransport {
            ice_ufrag: local.ufrag.clone(),
            ice_pwd: local.pwd.clone(),
            fingerprint_sha256: sh.identity.fingerprint().to_string(),
            candidate: local.addr()?,
            session_id: rand::random::<u64>() >> 2,
            session_version: 1,
        };
        let offer = offer_publish_client(&crate::run::client_tracks(&tracks, &who), &lt)
            .map_err(|e| anyhow!("publish offer: {e}"))?;
        let body = json!({"request": "joinandconfigure", "room": self.room, "ptype": "publisher", "display": who, "audio": true, "video": true});
        self.message(h, body, Some(json!({"type": "offer", "sdp": offer})))
            .await?;
        let (event, sdp) = wait_jsep(&mut events, deadline, "the publisher's answer").await?;
        let feed = event
            .pointer("/plugindata/data/id")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("no feed id in {event}"))?;
        let desc = SessionDescription::parse(&sdp).map_err(|e| anyhow!("Janus answer: {e}"))?;
        session::connect_endpoint(
            &sh,
            local,
            &desc,
            "Janus answer",
            NO_CANDIDATE,
            Role::Publisher(tracks),
            room,
            thread,
            deadline,
        )
        .await?;
        Ok(feed)
    }

    /// Joins as a subscriber of `feeds`.
    pub async fn subscriber(
        &self,
        sh: Arc<Shared>,
        who: String,
        feeds: &[u64],
        room: Arc<RoomShared>,
        thread: usize,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + sh.setup_timeout;
        let (h, mut events) = self.attach().await?;
        let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
        let body = json!({"request": "join", "room": self.room, "ptype": "subscriber", "streams": streams, "display": who});
        self.message(h, body, None).await?;
        let (_, sdp) = wait_jsep(&mut events, deadline, "the subscriber offer").await?;
        let desc = SessionDescription::parse(&sdp).map_err(|e| anyhow!("Janus offer: {e}"))?;
        let local = LocalSide::new(sh.bind)?;
        let lt = LocalTransport {
            ice_ufrag: local.ufrag.clone(),
            ice_pwd: local.pwd.clone(),
            fingerprint_sha256: sh.identity.fingerprint().to_string(),
            candidate: local.addr()?,
            session_id: rand::random::<u64>() >> 2,
            session_version: 1,
        };
        let answer =
            answer_subscribe_client(&desc, &lt).map_err(|e| anyhow!("subscribe answer: {e}"))?;
        self.message(
            h,
            json!({"request": "start", "room": self.room}),
            Some(json!({"type": "answer", "sdp": answer})),
        )
        .await?;
        session::connect_endpoint(
            &sh,
            local,
            &desc,
            "Janus offer",
            NO_CANDIDATE,
            Role::Subscriber,
            room,
            thread,
            deadline,
        )
        .await?;
        Ok(())
    }
}

async fn wait_jsep(
    events: &mut mpsc::UnboundedReceiver<Value>,
    deadline: Instant,
    what: &str,
) -> anyhow::Result<(Value, String)> {
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| anyhow!("timed out waiting for {what}"))?
            .ok_or_else(|| anyhow!("Janus session ended while waiting for {what}"))?;
        if let Some(err) = ev.pointer("/plugindata/data/error") {
            bail!("Janus VideoRoom error while waiting for {what}: {err}");
        }
        if let Some(sdp) = ev.pointer("/jsep/sdp").and_then(Value::as_str) {
            return Ok((ev.clone(), sdp.to_string()));
        }
    }
}

static SHUTDOWN: Mutex<Option<tokio::sync::watch::Receiver<bool>>> = Mutex::new(None);

/// Registers the run's shutdown signal for the Janus long polls.
pub fn set_shutdown(rx: tokio::sync::watch::Receiver<bool>) {
    if let Ok(mut s) = SHUTDOWN.lock() {
        *s = Some(rx);
    }
}

fn cfg_shutdown() -> Option<tokio::sync::watch::Receiver<bool>> {
    SHUTDOWN.lock().ok().and_then(|s| s.clone())
}

/// Long-polls a Janus session and routes each event to its handle; destroys the session at shutdown.
async fn poll_events(
    url: String,
    handles: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Value>>>>,
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
) {
    let poll_url = format!("{url}?maxev=50");
    let mut shutdown = shutdown;
    loop {
        let get = http(&poll_url, "GET", None, Duration::from_secs(40));
        let r = match shutdown.as_mut() {
            Some(s) => tokio::select! {
                r = get => r,
                _ = s.changed() => break,
            },
            None => get.await,
        };
        match r {
            Ok(Value::Array(evs)) => {
                for ev in evs {
                    dispatch(&handles, ev);
                }
            }
            Ok(ev) => dispatch(&handles, ev),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let _ = http(
        &url,
        "POST",
        Some(&json!({"janus": "destroy", "transaction": transaction()})),
        Duration::from_secs(2),
    )
    .await;
}

fn dispatch(handles: &Mutex<HashMap<u64, mpsc::UnboundedSender<Value>>>, ev: Value) {
    let Some(sender) = ev.get("sender").and_then(Value::as_u64) else {
        return;
    };
    if let Ok(m) = handles.lock() {
        if let Some(tx) = m.get(&sender) {
            let _ = tx.send(ev);
        }
    }
}
