//! Switchyard's signaling (docs/signaling.md): one WebSocket per participant; a publisher offers
//! on its publish connection, a subscriber answers the server's subscribe offers.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchyard_sdp::{
    answer_subscribe_client, offer_publish_client, LocalTransport, SessionDescription,
};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::media::{Role, RoomShared, Track};
use crate::run::Shared;
use crate::session::{self, LocalSide};

/// What a description of the server lacks when it has no candidate the load generator may use.
const NO_CANDIDATE: &str =
    "candidate the load generator may use (loopback only when bound to loopback)";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn send(ws: &mut Ws, v: Value) -> anyhow::Result<()> {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .context("WebSocket send")
}

/// Reads messages until one of type `kind`; an `error` message fails.
async fn recv_type(ws: &mut Ws, kind: &str, deadline: Instant) -> anyhow::Result<Value> {
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("timed out waiting for {kind}"))?
            .ok_or_else(|| anyhow!("the server closed the WebSocket while we waited for {kind}"))?
            .context("WebSocket receive")?;
        let Message::Text(text) = msg else { continue };
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        match v.get("type").and_then(Value::as_str) {
            Some(t) if t == kind => return Ok(v),
            Some("error") => bail!("server error while waiting for {kind}: {}", v),
            _ => {}
        }
    }
}

fn local_transport(
    sh: &Shared,
    local: &LocalSide,
    version: u64,
    session_id: u64,
) -> anyhow::Result<LocalTransport> {
    Ok(LocalTransport {
        ice_ufrag: local.ufrag.clone(),
        ice_pwd: local.pwd.clone(),
        fingerprint_sha256: sh.identity.fingerprint().to_string(),
        candidate: local.addr()?,
        session_id,
        session_version: version,
    })
}

async fn join(url: &str, room: &str, name: &str, deadline: Instant) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio::time::timeout_at(deadline, tokio_tungstenite::connect_async(url))
        .await
        .map_err(|_| anyhow!("timed out connecting to {url}"))?
        .with_context(|| format!("connecting to {url}"))?;
    send(&mut ws, json!({"type": "join", "room": room, "name": name})).await?;
    recv_type(&mut ws, "joined", deadline).await?;
    Ok(ws)
}

/// Joins `room` and publishes `tracks`; returns once the publish transport is handed to the media
/// thread. The WebSocket stays open (in a task) until the run shuts down.
pub async fn publisher(
    sh: Arc<Shared>,
    url: String,
    room_name: String,
    name: String,
    tracks: Vec<Track>,
    room: Arc<RoomShared>,
    thread: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + sh.setup_timeout;
    let mut ws = join(&url, &room_name, &name, deadline).await?;
    let local = LocalSide::new(sh.bind)?;
    let lt = local_transport(&sh, &local, 1, rand::random::<u64>() >> 2)?;
    let client_tracks = crate::run::client_tracks(&tracks, &name);
    let offer =
        offer_publish_client(&client_tracks, &lt).map_err(|e| anyhow!("publish offer: {e}"))?;
    send(&mut ws, json!({"type": "publish", "sdp": offer})).await?;
    let answer = recv_type(&mut ws, "publish-answer", deadline).await?;
    let sdp = answer
        .get("sdp")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("publish-answer without sdp"))?;
    let desc = SessionDescription::parse(sdp).map_err(|e| anyhow!("publish answer: {e}"))?;
    session::connect_endpoint(
        &sh,
        local,
        &desc,
        "publish answer",
        NO_CANDIDATE,
        Role::Publisher(tracks),
        room,
        thread,
        deadline,
    )
    .await?;
    tokio::spawn(linger(sh, ws, None));
    Ok(())
}

/// Joins `room` as a subscriber: answers the server's subscribe offer, connects, hands the
/// transport over; later offers are answered in the background.
pub async fn subscriber(
    sh: Arc<Shared>,
    url: String,
    room_name: String,
    name: String,
    room: Arc<RoomShared>,
    thread: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + sh.setup_timeout;
    let mut ws = join(&url, &room_name, &name, deadline).await?;
    let local = LocalSide::new(sh.bind)?;
    let session_id = rand::random::<u64>() >> 2;
    let offer = recv_type(&mut ws, "subscribe-offer", deadline).await?;
    let (answer, version, desc) = answer_offer(&sh, &local, &offer, 1, session_id)?;
    send(
        &mut ws,
        json!({"type": "subscribe-answer", "sdp": answer, "version": version}),
    )
    .await?;
    let lt = local_transport(&sh, &local, 1, session_id)?;
    session::connect_endpoint(
        &sh,
        local,
        &desc,
        "subscribe offer",
        NO_CANDIDATE,
        Role::Subscriber,
        room,
        thread,
        deadline,
    )
    .await?;
    tokio::spawn(linger(sh, ws, Some(lt)));
    Ok(())
}

fn answer_offer(
    sh: &Shared,
    local: &LocalSide,
    offer: &Value,
    version: u64,
    session_id: u64,
) -> anyhow::Result<(String, u64, SessionDescription)> {
    let sdp = offer
        .get("sdp")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("subscribe-offer without sdp"))?;
    let v = offer
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("subscribe-offer without version"))?;
    let desc = SessionDescription::parse(sdp).map_err(|e| anyhow!("subscribe offer: {e}"))?;
    let lt = local_transport(sh, local, version, session_id)?;
    let answer =
        answer_subscribe_client(&desc, &lt).map_err(|e| anyhow!("subscribe answer: {e}"))?;
    Ok((answer, v, desc))
}

/// Keeps the signaling connection until shutdown, answering renegotiations (subscribers).
async fn linger(sh: Arc<Shared>, mut ws: Ws, mut lt: Option<LocalTransport>) {
    let mut shutdown = sh.shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            m = ws.next() => {
                let Some(Ok(Message::Text(text))) = m else {
                    if m.is_none() || matches!(m, Some(Err(_))) { return; }
                    continue;
                };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                if v.get("type").and_then(Value::as_str) != Some("subscribe-offer") { continue; }
                let Some(lt) = lt.as_mut() else { continue };
                lt.session_version += 1;
                let (Some(sdp), Some(version)) = (v.get("sdp").and_then(Value::as_str), v.get("version").and_then(Value::as_u64)) else { continue };
                let Ok(desc) = SessionDescription::parse(sdp) else { continue };
                if let Ok(answer) = answer_subscribe_client(&desc, lt) {
                    let _ = send(&mut ws, json!({"type": "subscribe-answer", "sdp": answer, "version": version})).await;
                }
            }
        }
    }
    let _ = send(&mut ws, json!({"type": "leave"})).await;
    let _ = ws.close(None).await;
}
