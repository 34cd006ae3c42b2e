//! The HTTP side of the control daemon: the web client's static files, the `/ws` signaling endpoint,
//! health checks, the operator API and Prometheus metrics — all on one port.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use switchyard_protocol::{Reply, Request};
use tokio::sync::{mpsc, oneshot};

use crate::engine_link::EngineLink;
use crate::hub::{ConnId, HubCounters, HubMsg, SendCapError};
use crate::metrics;
use crate::signaling::{parse_client, SignalError, MAX_MESSAGE};

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STYLE_CSS: &str = include_str!("../web/style.css");

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The hub's inbox.
    pub hub: mpsc::UnboundedSender<HubMsg>,
    /// The engine, for stats.
    pub engine: EngineLink,
    /// Connection id source.
    pub next_conn: Arc<AtomicU64>,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML) }))
        .route("/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS) }))
        .route("/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE_CSS) }))
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/rooms", get(rooms))
        .route("/api/stats", get(stats))
        .route("/api/rooms/{room}/participants/{id}/kick", post(kick))
        .route("/api/rooms/{room}/participants/{id}/send-cap", post(send_cap))
        .route("/api/rooms/{room}/close", post(close_room))
        .route("/api/drain", get(drain_state).post(drain).delete(undrain))
        .route("/api/undrain", post(undrain))
        .route("/metrics", get(prometheus))
        .with_state(state)
}

async fn rooms(State(s): State<AppState>) -> Response {
    let (tx, rx) = oneshot::channel();
    if s.hub.send(HubMsg::Rooms(tx)).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "hub stopped").into_response();
    }
    match rx.await {
        Ok(v) => Json(v).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "hub stopped").into_response(),
    }
}

/// Asks the hub something; 503 if it has stopped.
async fn ask<T>(s: &AppState, msg: impl FnOnce(oneshot::Sender<T>) -> HubMsg) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    let stopped = || (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"error": "hub stopped"}))).into_response();
    if s.hub.send(msg(tx)).is_err() {
        return Err(stopped());
    }
    rx.await.map_err(|_| stopped())
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": what}))).into_response()
}

/// `POST /api/rooms/{room}/participants/{id}/kick`: the participant gets an error `kicked` and is
/// removed as if they had left (their WebSocket stays open; they may join again).
async fn kick(State(s): State<AppState>, Path((room, id)): Path<(String, String)>) -> Response {
    match ask(&s, |reply| HubMsg::Kick { room: room.clone(), id: id.clone(), reply }).await {
        Ok(true) => Json(serde_json::json!({"kicked": id, "room": room})).into_response(),
        Ok(false) => not_found(format!("no participant {id} in room {room}")),
        Err(r) => r,
    }
}

/// The `kbps` of a send-cap body `{"kbps": N}` (N a non-negative integer, 0 = no cap).
fn parse_kbps(body: &[u8]) -> Result<u64, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("the body must be JSON {{\"kbps\": N}}: {e}"))?;
    match v.as_object().map(|o| (o.len(), o.get("kbps"))) {
        Some((1, Some(k))) => k.as_u64().filter(|&k| k <= u64::MAX / 1000).ok_or_else(|| "kbps must be a non-negative integer".into()),
        _ => Err("the body must be {\"kbps\": N} (kbit/s, 0 lifts the cap)".into()),
    }
}

/// `POST /api/rooms/{room}/participants/{id}/send-cap` with `{"kbps": N}`: a test aid that makes the
/// engine police what it sends the participant's subscribe connection to N kbit/s (0 lifts it).
async fn send_cap(State(s): State<AppState>, Path((room, id)): Path<(String, String)>, body: axum::body::Bytes) -> Response {
    let kbps = match parse_kbps(&body) {
        Ok(k) => k,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": e}))).into_response(),
    };
    match ask(&s, |reply| HubMsg::SendCap { room: room.clone(), id: id.clone(), bps: kbps * 1000, reply }).await {
        Ok(Ok(())) => Json(serde_json::json!({"room": room, "id": id, "kbps": kbps})).into_response(),
        Ok(Err(e @ SendCapError::NotFound(..))) => not_found(e.to_string()),
        Ok(Err(e @ SendCapError::NoSubscribeConnection(_))) => {
            (StatusCode::CONFLICT, Json(serde_json::json!({"error": e.to_string()}))).into_response()
        }
        Ok(Err(e @ SendCapError::Engine(_))) => (StatusCode::BAD_GATEWAY, Json(serde_json::json!({"error": e.to_string()}))).into_response(),
        Err(r) => r,
    }
}

/// `POST /api/rooms/{room}/close`: everyone gets an error `room-closed` and is removed.
async fn close_room(State(s): State<AppState>, Path(room): Path<String>) -> Response {
    match ask(&s, |reply| HubMsg::CloseRoom { room: room.clone(), reply }).await {
        Ok(Some(n)) => Json(serde_json::json!({"closed": room, "removed": n})).into_response(),
        Ok(None) => not_found(format!("no room {room}")),
        Err(r) => r,
    }
}

async fn drain_reply(s: &AppState, set: Option<bool>) -> Response {
    match ask(s, |reply| HubMsg::Drain { set, reply }).await {
        Ok(draining) => match ask(s, HubMsg::Counters).await {
            Ok(c) => Json(serde_json::json!({
                "draining": draining,
                "rooms": c.rooms.values().sum::<usize>(),
                "participants": c.participants,
            }))
            .into_response(),
            Err(r) => r,
        },
        Err(r) => r,
    }
}

/// `GET /api/drain`: `{draining, rooms, participants}`.
async fn drain_state(State(s): State<AppState>) -> Response {
    drain_reply(&s, None).await
}

/// `POST /api/drain`: no new rooms from now on; existing rooms carry on; `/readyz` says 503.
async fn drain(State(s): State<AppState>) -> Response {
    drain_reply(&s, Some(true)).await
}

/// `DELETE /api/drain` or `POST /api/undrain`: back to normal.
async fn undrain(State(s): State<AppState>) -> Response {
    drain_reply(&s, Some(false)).await
}

async fn engine_stats(engine: &EngineLink) -> Result<switchyard_protocol::EngineStats, Response> {
    match engine.request(Request::Stats).await {
        Ok(Reply::Stats(s)) => Ok(s),
        Ok(_) => Err((StatusCode::BAD_GATEWAY, "unexpected engine reply").into_response()),
        Err(e) => Err((StatusCode::BAD_GATEWAY, format!("engine: {e}")).into_response()),
    }
}

/// Ready when the engine is connected and answers Stats within 2 s; 503 with the reason otherwise
/// (for load balancers and probes: `/healthz` only says the process is up).
async fn readyz(State(s): State<AppState>) -> Response {
    match ask(&s, |reply| HubMsg::Drain { set: None, reply }).await {
        Ok(true) => return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response(),
        Ok(false) => {}
        Err(mut r) => {
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return r;
        }
    }
    match tokio::time::timeout(std::time::Duration::from_secs(2), engine_stats(&s.engine)).await {
        Ok(Ok(_)) => "ready\n".into_response(),
        Ok(Err(mut r)) => {
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "engine: no Stats reply within 2 s").into_response(),
    }
}

async fn stats(State(s): State<AppState>) -> Response {
    match engine_stats(&s.engine).await {
        Ok(st) => Json(metrics::stats_json(&st)).into_response(),
        Err(r) => r,
    }
}

/// Prometheus text: the hub's rooms, participants, connections and DTLS counts, then the engine's
/// counters (left out, with `switchyard_engine_up 0`, when the engine does not answer).
async fn prometheus(State(s): State<AppState>) -> Response {
    let hub: HubCounters = match ask(&s, HubMsg::Counters).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let engine =
        tokio::time::timeout(std::time::Duration::from_secs(2), engine_stats(&s.engine)).await.ok().and_then(Result::ok);
    let mut body = metrics::render_hub(&hub);
    body.push_str(&metrics::render_engine_up(engine.is_some()));
    if let Some(st) = engine {
        body.push_str(&metrics::render(&st));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn ws_upgrade(ws: WebSocketUpgrade, State(s): State<AppState>) -> Response {
    ws.max_message_size(MAX_MESSAGE * 2).on_upgrade(move |socket| connection(socket, s))
}

async fn connection(socket: WebSocket, s: AppState) {
    let conn: ConnId = s.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel();
    if s.hub.send(HubMsg::Connected { conn, tx: tx.clone() }).is_err() {
        return;
    }
    let (mut sink, mut stream) = socket.split();
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if sink.send(Message::Text(msg.to_json().into())).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(frame)) = stream.next().await {
        match frame {
            Message::Text(text) => match parse_client(text.as_str()) {
                Ok(msg) => {
                    if s.hub.send(HubMsg::Client { conn, msg }).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(e.to_msg());
                }
            },
            Message::Binary(_) => {
                let _ = tx.send(SignalError::new("bad-message", "binary frames are not part of the protocol").to_msg());
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    let _ = s.hub.send(HubMsg::Disconnected { conn });
    drop(tx);
    writer.abort();
}

#[cfg(test)]
mod tests {
    use super::parse_kbps;

    #[test]
    fn send_cap_bodies_are_checked() {
        assert_eq!(parse_kbps(br#"{"kbps": 250}"#), Ok(250));
        assert_eq!(parse_kbps(br#"{"kbps":0}"#), Ok(0));
        for bad in [&b""[..], b"250", b"{}", br#"{"kbps":-1}"#, br#"{"kbps":2.5}"#, br#"{"kbps":"250"}"#, br#"{"kbps":1,"x":2}"#, b"{not json"] {
            assert!(parse_kbps(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse_kbps(br#"{"kbps":18446744073709551615}"#).is_err(), "kbit/s that overflow bit/s");
    }
}
