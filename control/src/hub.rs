//! The hub: one task that owns every room, connection and transport, and carries out what clients,
//! the engine and DTLS handshakes ask for, one message at a time (no locks, no races between a join
//! and a leave). Slow work (DTLS handshakes) runs in its own tasks and reports back as messages.
//!
//! Rooms switch between the mesh (C2C, P2P: the hub only relays `peer-*` signaling between
//! participants) and the SFU as [`ModePolicy::decide`] says after every join and leave. A switch
//! starts a new room epoch and is announced with a `mode` message; leaving the SFU removes every
//! participant's engine transports, entering it waits for everyone's publish offers (docs/modes.md).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use switchyard_dtls::{Identity, Role, Session, SrtpExport};
use switchyard_engine::media::audio_level::{AudioLevel, Config as SpeakerConfig, DominantSpeaker};
use switchyard_protocol::{Event, HeaderExtIds, KeySalt, Layer, Reply, Request, TrackKind, TransportId, SRTP_RTCP_OUTBOUND};
use switchyard_sdp::{
    answer_publish, check_subscribe_answer, offer_subscribe, remote_transport, LocalTransport, MediaKind, PublishAnswer,
    SessionDescription,
};
use switchyard_srtp::{split_keying_material, Profile};
use tokio::sync::{mpsc, oneshot};

use crate::daemon::ControlConfig;
use crate::engine_link::EngineLink;
use crate::mode::{Mode, ModePolicy};
use crate::room::{Participant, Room, Track, TrackKey};
use crate::signaling::{candidate_text, ClientMsg, ParticipantInfo, ServerMsg, SignalError};
use crate::turn::TurnSettings;

/// A WebSocket connection's id.
pub type ConnId = u64;

/// What the hub is told.
pub enum HubMsg {
    /// A client connected; `tx` carries messages to it.
    Connected {
        /// Connection id.
        conn: ConnId,
        /// Outgoing messages.
        tx: mpsc::UnboundedSender<ServerMsg>,
    },
    /// A validated client message.
    Client {
        /// Connection id.
        conn: ConnId,
        /// The message.
        msg: ClientMsg,
    },
    /// The connection closed.
    Disconnected {
        /// Connection id.
        conn: ConnId,
    },
    /// An engine event.
    Engine(Event),
    /// A DTLS handshake finished.
    DtlsDone {
        /// The transport.
        transport: TransportId,
        /// Keys, or why it failed.
        result: Result<SrtpExport, switchyard_dtls::Error>,
    },
    /// A snapshot of rooms for the HTTP API.
    Rooms(oneshot::Sender<Vec<RoomSummary>>),
    /// The engine link reconnected to a (restarted, empty) engine: re-install every live transport,
    /// its SRTP keys and bound address, every subscription, and ask for keyframes.
    EngineRestarted,
    /// Operator: remove participant `id` (`p7`) from `room`; they get an error `kicked` first.
    /// Replies whether they were there.
    Kick {
        /// Room name.
        room: String,
        /// Participant id.
        id: String,
        /// Whether someone was removed.
        reply: oneshot::Sender<bool>,
    },
    /// Operator: remove everyone from `room` (each gets an error `room-closed`). Replies how many
    /// were removed, `None` when there is no such room.
    CloseRoom {
        /// Room name.
        room: String,
        /// Participants removed.
        reply: oneshot::Sender<Option<usize>>,
    },
    /// Operator: set (`Some`) or read (`None`) draining: while draining, joins that would create a
    /// room are refused with `draining`. Replies the state after the change.
    Drain {
        /// The new state, or none to read it.
        set: Option<bool>,
        /// The state.
        reply: oneshot::Sender<bool>,
    },
    /// The hub's gauges and counters for `/metrics`.
    Counters(oneshot::Sender<HubCounters>),
    /// Test aid: cap what the engine sends participant `id` of `room` (on their subscribe
    /// connection) to `bps` bit/s; 0 lifts the cap.
    SendCap {
        /// Room name.
        room: String,
        /// Participant id.
        id: String,
        /// Bits per second, 0 = none.
        bps: u64,
        /// Done, or why not.
        reply: oneshot::Sender<Result<(), SendCapError>>,
    },
}

/// Why a send cap could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendCapError {
    /// No such participant in the room.
    #[error("no participant {0} in room {1}")]
    NotFound(String, String),
    /// The participant has no subscribe connection (a mesh room, or nothing to receive yet).
    #[error("{0} has no subscribe connection (the room is not in the SFU, or there is nothing to receive yet)")]
    NoSubscribeConnection(String),
    /// The engine refused or is away.
    #[error("engine: {0}")]
    Engine(String),
}

/// A participant as the operator API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParticipantSummary {
    /// Id (`p7`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Microphone, camera, screen share on.
    pub audio: bool,
    /// Camera on.
    pub video: bool,
    /// Sharing a screen.
    pub screen: bool,
    /// Whether the client can run the mesh.
    pub mesh: bool,
    /// Tracks published through the SFU.
    pub tracks: usize,
    /// Engine transports (publish, subscribe) held.
    pub transports: usize,
}

/// A room as the operator API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoomSummary {
    /// Room name.
    pub name: String,
    /// Mode.
    pub mode: String,
    /// Epoch (changes at every mode switch).
    pub epoch: u64,
    /// Participants.
    pub participants: Vec<ParticipantSummary>,
}

/// What the hub counts, for `/metrics`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HubCounters {
    /// Rooms per mode (`sfu`, `p2p`, `c2c`), every mode present.
    pub rooms: BTreeMap<String, usize>,
    /// Participants in all rooms.
    pub participants: usize,
    /// Open WebSocket connections.
    pub connections: usize,
    /// DTLS handshakes that finished with keys.
    pub dtls_ok: u64,
    /// DTLS handshakes that failed or timed out.
    pub dtls_failed: u64,
    /// Participants removed by an operator (kick or close).
    pub kicked: u64,
    /// Whether the node is draining.
    pub draining: bool,
}

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// How long a transport may take to finish DTLS before it is removed.
    pub dtls_timeout: Duration,
    /// Most participants per room.
    pub max_participants: usize,
    /// Which mode rooms use, and the candidate filter for the mesh.
    pub modes: ModePolicy,
    /// STUN/TURN servers handed to clients (`iceServers`) with fresh credentials.
    pub turn: TurnSettings,
}

impl HubConfig {
    /// The hub's settings from the daemon's command line.
    pub fn from_control(cfg: &ControlConfig) -> HubConfig {
        HubConfig {
            dtls_timeout: Duration::from_secs(cfg.dtls_timeout_secs),
            max_participants: cfg.max_participants,
            modes: cfg.modes.clone(),
            turn: TurnSettings {
                urls: cfg.turn_urls.clone(),
                secret: cfg.turn_secret.clone(),
                ttl: Duration::from_secs(cfg.turn_ttl_secs),
            },
        }
    }
}

impl Default for HubConfig {
    /// The command line's defaults (no STUN/TURN URLs).
    fn default() -> HubConfig {
        HubConfig {
            dtls_timeout: Duration::from_secs(15),
            max_participants: 200,
            modes: ModePolicy::default(),
            turn: TurnSettings { urls: Vec::new(), secret: String::new(), ttl: Duration::from_secs(86400) },
        }
    }
}

/// What a mesh participant sends another one through the hub.
enum Relayed {
    Offer(String),
    Answer(String),
    Candidate(Option<serde_json::Value>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    Publish,
    Subscribe,
}

struct TransportState {
    conn: ConnId,
    participant: u64,
    room: String,
    leg: Leg,
    ufrag: String,
    pwd: String,
    addr: std::net::SocketAddr,
    session_id: u64,
    sdp_version: u64,
    session: Option<Arc<Session>>,
    early: Vec<Vec<u8>>,
    srtp: bool,
    /// The worker the engine placed it on: a restarted engine gets it on the same worker (same port).
    worker: u16,
    /// The address the engine last reported bound (`IceBound`), re-bound in a restarted engine.
    remote: Option<std::net::SocketAddr>,
    /// The SRTP keys exported from DTLS (profile, inbound, outbound), re-installed in a restarted engine.
    keys: Option<(u16, KeySalt, KeySalt)>,
    /// The per-SSRC SRTP counters `(ssrc, kind, index)` of the engine's last snapshot (polled every
    /// [`SRTP_INDEX_POLL`]), seeded in a restarted engine so streams whose sequence numbers wrapped
    /// go on authenticating.
    srtp_indexes: Vec<(u32, u8, u64)>,
    /// Publish transports: the header-extension ids of the latest publish answer.
    ext: Option<HeaderExtIds>,
    /// Publish transports: simulcast layer SSRCs the engine learned, `(track, layer) -> ssrc`, declared
    /// to a restarted engine (browsers stop sending the rid extension once an SSRC is acknowledged).
    learned: BTreeMap<(u32, u8), u32>,
    /// The send cap set by an operator (bit/s, 0 = none), re-applied in a restarted engine.
    send_cap: u64,
}

/// How often the hub records the engine's SRTP counters while it has SFU transports. A seeded RTP
/// index only needs to be within 2^15 packets of the truth, which a 2 s old one is.
const SRTP_INDEX_POLL: Duration = Duration::from_secs(2);

/// Added to each outbound SRTCP index before seeding it: the engine sent more SRTCP since the
/// snapshot, and an SRTCP index must never be reused (keystream reuse, and the peer would drop the
/// packets as replays). Skipping ahead is harmless.
const SRTCP_RESUME_MARGIN: u64 = 1 << 16;

struct Conn {
    tx: mpsc::UnboundedSender<ServerMsg>,
    joined: Option<(String, u64)>,
}

/// The hub's state.
pub struct Hub {
    cfg: HubConfig,
    engine: EngineLink,
    identity: Arc<Identity>,
    me: mpsc::UnboundedSender<HubMsg>,
    rooms: HashMap<String, Room>,
    conns: HashMap<ConnId, Conn>,
    transports: HashMap<TransportId, TransportState>,
    next_transport: TransportId,
    next_participant: u64,
    draining: bool,
    dtls_ok: u64,
    dtls_failed: u64,
    kicked: u64,
    /// SFU rooms' dominant-speaker detectors, fed by the engine's audio levels.
    speakers: HashMap<String, DominantSpeaker>,
    /// The clock the speaker detectors run on.
    started: Instant,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn random_token(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::rng();
    (0..len).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}

const MAX_EARLY_DTLS: usize = 32;

impl Hub {
    /// A hub programming `engine`, with `identity` for DTLS; `me` is its own inbox (for task reports).
    pub fn new(cfg: HubConfig, engine: EngineLink, identity: Arc<Identity>, me: mpsc::UnboundedSender<HubMsg>) -> Hub {
        Hub {
            cfg,
            engine,
            identity,
            me,
            rooms: HashMap::new(),
            conns: HashMap::new(),
            transports: HashMap::new(),
            next_transport: 1,
            next_participant: 1,
            draining: false,
            dtls_ok: 0,
            dtls_failed: 0,
            kicked: 0,
            speakers: HashMap::new(),
            started: Instant::now(),
        }
    }

    /// Handles messages until every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<HubMsg>) {
        self.skip_engine_ids().await;
        let mut restarts = self.engine.restarts();
        let mut poll = tokio::time::interval(SRTP_INDEX_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg).await,
                    None => return,
                },
                Ok(()) = restarts.changed() => self.handle(HubMsg::EngineRestarted).await,
                _ = poll.tick() => self.poll_srtp_indexes().await,
            }
        }
    }

    /// Records every transport's SRTP counters from an engine snapshot (only while SFU transports
    /// exist), for [`Hub::engine_restarted`].
    async fn poll_srtp_indexes(&mut self) {
        if !self.transports.values().any(|t| t.keys.is_some()) {
            return;
        }
        if let Ok(Reply::Snapshot(ts)) = self.engine.request(Request::Snapshot).await {
            for info in ts {
                if let Some(t) = self.transports.get_mut(&info.transport) {
                    if info.srtp {
                        t.srtp_indexes = info.srtp_indexes;
                    }
                    for (track, layers) in info.tracks {
                        for (layer, ssrc) in layers.into_iter().filter(|&(_, ssrc)| ssrc != 0) {
                            t.learned.insert((track, layer), ssrc);
                        }
                    }
                }
            }
        }
    }

    /// A control daemon that starts while the engine still carries calls of its predecessor leaves
    /// them alone: its transport ids start above every id the engine holds.
    async fn skip_engine_ids(&mut self) {
        if let Ok(Reply::Snapshot(ts)) = self.engine.request(Request::Snapshot).await {
            if let Some(max) = ts.iter().map(|t| t.transport).max() {
                tracing::info!(transports = ts.len(), "the engine carries transports of an earlier control daemon; leaving them alone");
                self.next_transport = self.next_transport.max(max + 1);
            }
        }
    }

    async fn handle(&mut self, msg: HubMsg) {
        match msg {
            HubMsg::Connected { conn, tx } => {
                self.conns.insert(conn, Conn { tx, joined: None });
            }
            HubMsg::Disconnected { conn } => {
                self.leave(conn).await;
                self.conns.remove(&conn);
            }
            HubMsg::Client { conn, msg } => {
                let kind = client_kind(&msg);
                if let Err(e) = self.client(conn, msg).await {
                    self.send(conn, e.about(kind).to_msg());
                }
            }
            HubMsg::Engine(Event::DtlsIn { transport, datagram }) => {
                if let Some(t) = self.transports.get_mut(&transport) {
                    match &t.session {
                        Some(s) => s.feed(datagram),
                        None if t.early.len() < MAX_EARLY_DTLS => t.early.push(datagram),
                        None => {}
                    }
                }
            }
            HubMsg::Engine(Event::IceBound { transport, addr }) => {
                tracing::debug!(transport, %addr, "ICE bound");
                if let Some(t) = self.transports.get_mut(&transport) {
                    t.remote = Some(addr);
                }
            }
            HubMsg::Engine(Event::SsrcLearned { transport, track, layer, ssrc }) => {
                tracing::debug!(transport, track, layer, ssrc, "simulcast layer SSRC learned");
                if let Some(t) = self.transports.get_mut(&transport) {
                    t.learned.insert((track, layer), ssrc);
                }
            }
            HubMsg::Engine(Event::AudioLevels { levels }) => self.audio_levels(levels),
            HubMsg::EngineRestarted => self.engine_restarted().await,
            HubMsg::DtlsDone { transport, result } => self.dtls_done(transport, result).await,
            HubMsg::Rooms(reply) => {
                let mut v: Vec<RoomSummary> = self
                    .rooms
                    .iter()
                    .map(|(name, r)| RoomSummary {
                        name: name.clone(),
                        mode: r.mode.to_string(),
                        epoch: r.epoch,
                        participants: r
                            .participants
                            .values()
                            .map(|p| ParticipantSummary {
                                id: p.id.clone(),
                                name: p.name.clone(),
                                audio: p.audio,
                                video: p.video,
                                screen: p.screen,
                                mesh: p.mesh,
                                tracks: p.tracks.len(),
                                transports: [p.publish, p.sub.transport].iter().flatten().count(),
                            })
                            .collect(),
                    })
                    .collect();
                v.sort_by(|a, b| a.name.cmp(&b.name));
                let _ = reply.send(v);
            }
            HubMsg::Kick { room, id, reply } => {
                let conn = id.strip_prefix('p').and_then(|n| n.parse::<u64>().ok()).and_then(|pid| self.conn_of(&room, pid));
                if let Some(conn) = conn {
                    tracing::info!(%room, participant = %id, "kicked by an operator");
                    self.send(conn, SignalError::new("kicked", "an operator removed you from the room").to_msg());
                    self.leave(conn).await;
                    self.kicked += 1;
                }
                let _ = reply.send(conn.is_some());
            }
            HubMsg::CloseRoom { room, reply } => {
                let conns: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.joined.as_ref().is_some_and(|(r, _)| *r == room))
                    .map(|(id, _)| *id)
                    .collect();
                let existed = self.rooms.contains_key(&room);
                tracing::info!(%room, participants = conns.len(), "closed by an operator");
                for &conn in &conns {
                    self.send(conn, SignalError::new("room-closed", "an operator closed the room").to_msg());
                    self.leave(conn).await;
                    self.kicked += 1;
                }
                let _ = reply.send(existed.then_some(conns.len()));
            }
            HubMsg::Drain { set, reply } => {
                if let Some(on) = set {
                    if on != self.draining {
                        tracing::info!(draining = on, rooms = self.rooms.len(), "drain");
                    }
                    self.draining = on;
                }
                let _ = reply.send(self.draining);
            }
            HubMsg::Counters(reply) => {
                let mut rooms: BTreeMap<String, usize> =
                    [Mode::Sfu, Mode::P2p, Mode::C2c].iter().map(|m| (m.to_string(), 0)).collect();
                for r in self.rooms.values() {
                    *rooms.entry(r.mode.to_string()).or_default() += 1;
                }
                let _ = reply.send(HubCounters {
                    rooms,
                    participants: self.rooms.values().map(|r| r.participants.len()).sum(),
                    connections: self.conns.len(),
                    dtls_ok: self.dtls_ok,
                    dtls_failed: self.dtls_failed,
                    kicked: self.kicked,
                    draining: self.draining,
                });
            }
            HubMsg::SendCap { room, id, bps, reply } => {
                let _ = reply.send(self.send_cap(&room, &id, bps).await);
            }
        }
    }

    async fn send_cap(&mut self, room: &str, id: &str, bps: u64) -> Result<(), SendCapError> {
        let pid = id.strip_prefix('p').and_then(|n| n.parse::<u64>().ok());
        let Some(p) = pid.and_then(|pid| self.participant(room, pid)) else {
            return Err(SendCapError::NotFound(id.to_string(), room.to_string()));
        };
        let Some(transport) = p.sub.transport else { return Err(SendCapError::NoSubscribeConnection(id.to_string())) };
        if let Some(t) = self.transports.get_mut(&transport) {
            t.send_cap = bps;
        }
        tracing::info!(%room, participant = %id, transport, bps, "send cap");
        self.engine.request(Request::SetSendCap { transport, bps }).await.map(|_| ()).map_err(|e| SendCapError::Engine(e.to_string()))
    }

    /// Feeds the engine's audio levels to each SFU room's dominant-speaker detector and announces
    /// changes to the room.
    fn audio_levels(&mut self, levels: Vec<(TransportId, u32, u8)>) {
        let now = self.started.elapsed().as_millis() as u64;
        let mut touched = BTreeSet::new();
        for (transport, _track, level) in levels {
            let Some(t) = self.transports.get(&transport).filter(|t| t.leg == Leg::Publish) else { continue };
            let Ok(speaker) = u32::try_from(t.participant) else { continue };
            let Some(r) = self.rooms.get(&t.room).filter(|r| r.mode == Mode::Sfu) else { continue };
            if !r.participants.contains_key(&t.participant) {
                continue;
            }
            let capacity = self.cfg.max_participants;
            let detector =
                self.speakers.entry(t.room.clone()).or_insert_with(|| DominantSpeaker::new(capacity, SpeakerConfig::default()));
            let level = level.min(127);
            detector.add(speaker, AudioLevel { voice: level < 127, level }, now);
            touched.insert(t.room.clone());
        }
        for room in touched {
            let Some(detector) = self.speakers.get_mut(&room) else { continue };
            let (current, changed) = detector.update(now);
            if changed {
                tracing::debug!(%room, speaker = ?current, "active speaker");
                self.broadcast(&room, &ServerMsg::ActiveSpeaker { id: current.map(|n| format!("p{n}")) }, None);
            }
        }
    }

    fn send(&self, conn: ConnId, msg: ServerMsg) {
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.tx.send(msg);
        }
    }

    fn conn_of(&self, room: &str, participant: u64) -> Option<ConnId> {
        self.conns.iter().find(|(_, c)| c.joined.as_ref() == Some(&(room.to_string(), participant))).map(|(id, _)| *id)
    }

    fn broadcast(&self, room: &str, msg: &ServerMsg, except: Option<ConnId>) {
        for (id, c) in &self.conns {
            if Some(*id) != except && c.joined.as_ref().is_some_and(|(r, _)| r == room) {
                let _ = c.tx.send(msg.clone());
            }
        }
    }

    fn info(p: &Participant) -> ParticipantInfo {
        ParticipantInfo { id: p.id.clone(), name: p.name.clone(), audio: p.audio, video: p.video, screen: p.screen }
    }

    async fn client(&mut self, conn: ConnId, msg: ClientMsg) -> Result<(), SignalError> {
        let joined = self.conns.get(&conn).and_then(|c| c.joined.clone());
        match (msg, joined) {
            (ClientMsg::Join { room, name, mesh, .. }, None) => {
                self.join(conn, room.clone(), name, mesh).await?;
                // The newcomer is offered everything already published.
                self.renegotiate(&room).await;
                Ok(())
            }
            (ClientMsg::Join { .. }, Some(_)) => Err(SignalError::new("out-of-order", "already joined; send leave first")),
            (_, None) => Err(SignalError::new("out-of-order", "send join first")),
            (ClientMsg::Publish { sdp, epoch }, Some((room, pid))) => {
                if self.stale(&room, epoch, "publish") {
                    return Ok(());
                }
                self.require_sfu(&room)?;
                self.publish(conn, &room, pid, &sdp).await
            }
            (ClientMsg::SubscribeAnswer { sdp, version, epoch }, Some((room, pid))) => {
                if self.stale(&room, epoch, "subscribe-answer") {
                    return Ok(());
                }
                self.require_sfu(&room)?;
                self.subscribe_answer(&room, pid, &sdp, version).await
            }
            (ClientMsg::PeerOffer { to, sdp, epoch }, Some((room, pid))) => {
                self.relay(&room, pid, &to, epoch, Relayed::Offer(sdp))
            }
            (ClientMsg::PeerAnswer { to, sdp, epoch }, Some((room, pid))) => {
                self.relay(&room, pid, &to, epoch, Relayed::Answer(sdp))
            }
            (ClientMsg::PeerCandidate { to, candidate, epoch }, Some((room, pid))) => {
                self.relay(&room, pid, &to, epoch, Relayed::Candidate(candidate))
            }
            (ClientMsg::Candidate { .. }, Some(_)) => Ok(()),
            (ClientMsg::Chat { text }, Some((room, pid))) => {
                let name = self.participant(&room, pid).map(|p| p.name.clone()).unwrap_or_default();
                let msg = ServerMsg::Chat { from: format!("p{pid}"), name, text, ts: now_ms() };
                self.broadcast(&room, &msg, None);
                Ok(())
            }
            (ClientMsg::MediaState { audio, video, screen }, Some((room, pid))) => {
                if let Some(p) = self.rooms.get_mut(&room).and_then(|r| r.participants.get_mut(&pid)) {
                    p.audio = audio;
                    p.video = video;
                    p.screen = screen;
                }
                let msg = ServerMsg::MediaState { participant: format!("p{pid}"), audio, video, screen };
                self.broadcast(&room, &msg, Some(conn));
                Ok(())
            }
            (ClientMsg::VideoSize { stream, max_height, epoch }, Some((room, pid))) => {
                if self.stale(&room, epoch, "video-size") {
                    return Ok(());
                }
                self.require_sfu(&room)?;
                self.video_size(&room, pid, &stream, max_height).await
            }
            (ClientMsg::Leave, Some(_)) => {
                self.leave(conn).await;
                Ok(())
            }
        }
    }

    /// A subscriber shows `stream`'s video at `max_height` pixels: the engine's layer choice for it
    /// must not exceed that (kept for subscriptions made later and for a restarted engine).
    async fn video_size(&mut self, room: &str, pid: u64, stream: &str, max_height: u32) -> Result<(), SignalError> {
        let height = u16::try_from(max_height).unwrap_or(u16::MAX);
        let p = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.participants.get_mut(&pid))
            .ok_or_else(|| SignalError::new("not-found", "participant not found"))?;
        let keys = p.sub.set_preference(stream, height);
        if keys.is_empty() {
            return Err(SignalError::new("not-found", format!("no video of stream {stream} is offered to you")));
        }
        let Some(subscriber) = p.sub.transport else { return Ok(()) };
        let installed: Vec<TrackKey> = keys.into_iter().filter(|k| p.sub.installed.contains_key(k)).collect();
        for (publisher, track) in installed {
            let req = Request::SetPreferences { publisher, track, subscriber, max_height: height };
            if let Err(e) = self.engine.request(req).await {
                tracing::warn!(publisher, track, subscriber, error = %e, "engine refused a video size");
            }
        }
        Ok(())
    }

    fn participant(&self, room: &str, pid: u64) -> Option<&Participant> {
        self.rooms.get(room).and_then(|r| r.participants.get(&pid))
    }

    fn ice_servers(&self, pid: u64) -> Vec<serde_json::Value> {
        crate::turn::ice_servers(&self.cfg.turn, &format!("p{pid}"), SystemTime::now())
    }

    /// Sends everyone in `room` its mode, size and epoch; with `fresh`, new STUN/TURN credentials too.
    fn announce_mode(&self, room: &str, fresh: bool) {
        let Some(r) = self.rooms.get(room) else { return };
        for c in self.conns.values() {
            let Some((_, pid)) = c.joined.as_ref().filter(|(name, _)| name == room) else { continue };
            let _ = c.tx.send(ServerMsg::Mode {
                mode: r.mode.to_string(),
                participants: r.participants.len(),
                epoch: r.epoch,
                ice_servers: fresh.then(|| self.ice_servers(*pid)),
            });
        }
    }

    /// Puts `room` in the mode the policy asks for after a join or leave; returns whether the
    /// topology changed (a new epoch). Leaving the SFU removes everyone's engine transports.
    async fn apply_policy(&mut self, room: &str) -> bool {
        let policy = &self.cfg.modes;
        let Some(r) = self.rooms.get_mut(room) else { return false };
        let (before, epoch) = (r.mode, r.epoch);
        let target = policy.decide(room, Some(r.mode), r.participants.len(), r.mesh_capable());
        let gone = r.switch(target);
        let switched = r.epoch != epoch;
        if before != target {
            tracing::info!(%room, from = %before, to = %target, participants = r.participants.len(), epoch = r.epoch, "mode");
        }
        if target != Mode::Sfu {
            // The mesh's clients detect the speaker themselves; a later SFU starts afresh.
            self.speakers.remove(room);
        }
        for t in gone {
            self.remove_transport(t).await;
        }
        switched
    }

    /// Whether a message carries an epoch the room has left (it is then dropped without a reply:
    /// it was meant for the topology the sender has not yet heard is gone).
    fn stale(&self, room: &str, epoch: Option<u64>, kind: &str) -> bool {
        let current = self.rooms.get(room).map(|r| r.epoch);
        let stale = epoch.is_some() && epoch != current;
        if stale {
            tracing::debug!(%room, ?epoch, ?current, kind, "dropping a message from an earlier epoch");
        }
        stale
    }

    fn require_sfu(&self, room: &str) -> Result<(), SignalError> {
        match self.rooms.get(room).map(|r| r.mode) {
            Some(m) if m.is_mesh() => Err(SignalError::new("out-of-order", format!("the room is in {m} mode, not sfu"))),
            _ => Ok(()),
        }
    }

    /// Passes a mesh participant's offer, answer or candidate on to `to` (candidates outside the
    /// allowed networks are dropped, also from inside SDPs).
    fn relay(&mut self, room: &str, pid: u64, to: &str, epoch: Option<u64>, what: Relayed) -> Result<(), SignalError> {
        if self.stale(room, epoch, "peer") {
            return Ok(());
        }
        let Some(r) = self.rooms.get(room) else { return Ok(()) };
        if !r.mode.is_mesh() {
            return Err(SignalError::new("out-of-order", format!("peer messages are for the mesh; the room is in {} mode", r.mode)));
        }
        let target = to.strip_prefix('p').and_then(|n| n.parse::<u64>().ok());
        if target == Some(pid) {
            return Err(SignalError::new("bad-message", "a peer message cannot be sent to yourself"));
        }
        let Some(target) = target.filter(|t| r.participants.contains_key(t)) else {
            // They may have just left: nothing to tell the sender that `participant-left` will not.
            tracing::debug!(%room, participant = pid, to, "peer message for someone not in the room");
            return Ok(());
        };
        let policy = &self.cfg.modes;
        let from = format!("p{pid}");
        let msg = match what {
            Relayed::Offer(sdp) => ServerMsg::PeerOffer { from, sdp: policy.filter_sdp(&sdp) },
            Relayed::Answer(sdp) => ServerMsg::PeerAnswer { from, sdp: policy.filter_sdp(&sdp) },
            Relayed::Candidate(candidate) => {
                if !policy.allows_candidate(candidate_text(candidate.as_ref()).unwrap_or_default()) {
                    tracing::debug!(%room, participant = pid, "candidate outside the allowed networks dropped");
                    return Ok(());
                }
                ServerMsg::PeerCandidate { from, candidate: candidate.unwrap_or_default() }
            }
        };
        if let Some(conn) = self.conn_of(room, target) {
            self.send(conn, msg);
        }
        Ok(())
    }

    async fn join(&mut self, conn: ConnId, room: String, name: String, mesh: bool) -> Result<(), SignalError> {
        let policy = &self.cfg.modes;
        if !policy.admits(&room, mesh) {
            let pinned = policy.pinned(&room).unwrap_or(Mode::P2p);
            return Err(SignalError::new(
                "unsupported",
                format!("room {room} is pinned to {pinned}, which needs a client that can run the mesh"),
            ));
        }
        if self.draining && !self.rooms.contains_key(&room) {
            return Err(SignalError::new("draining", "this node is draining: it takes no new rooms"));
        }
        let r = self.rooms.entry(room.clone()).or_insert_with(|| Room::new(policy.decide(&room, None, 1, mesh)));
        if r.participants.len() >= self.cfg.max_participants {
            return Err(SignalError::new("room-full", format!("room {room} has {} participants", r.participants.len())));
        }
        let pid = self.next_participant;
        self.next_participant += 1;
        let others: Vec<ParticipantInfo> = r.participants.values().map(Self::info).collect();
        let mut p = Participant::new(format!("p{pid}"), name);
        p.mesh = mesh;
        let info = Self::info(&p);
        r.participants.insert(pid, p);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.joined = Some((room.clone(), pid));
        }
        tracing::info!(%room, participant = pid, mesh, "joined");
        let switched = self.apply_policy(&room).await;
        let Some(r) = self.rooms.get(&room) else { return Ok(()) };
        self.send(
            conn,
            ServerMsg::Joined {
                room: room.clone(),
                participant: format!("p{pid}"),
                mode: r.mode.to_string(),
                epoch: r.epoch,
                participants: others,
                ice_servers: self.ice_servers(pid),
            },
        );
        // After a switch the others hear about it before the newcomer, so they build the new
        // topology (with the newcomer in it) rather than wire the newcomer into the old one.
        if switched {
            self.announce_mode(&room, true);
        }
        self.broadcast(&room, &ServerMsg::ParticipantJoined { participant: info }, Some(conn));
        if !switched {
            self.announce_mode(&room, false);
        }
        if let Some(current) = self.speakers.get(&room).and_then(DominantSpeaker::current) {
            self.send(conn, ServerMsg::ActiveSpeaker { id: Some(format!("p{current}")) });
        }
        Ok(())
    }

    async fn leave(&mut self, conn: ConnId) {
        let Some((room, pid)) = self.conns.get_mut(&conn).and_then(|c| c.joined.take()) else { return };
        let Some(p) = self.rooms.get_mut(&room).and_then(|r| r.participants.remove(&pid)) else { return };
        tracing::info!(%room, participant = pid, "left");
        for t in [p.publish, p.sub.transport].into_iter().flatten() {
            self.remove_transport(t).await;
        }
        let count = self.rooms.get(&room).map_or(0, |r| r.participants.len());
        if count == 0 {
            self.rooms.remove(&room);
            self.speakers.remove(&room);
            return;
        }
        let switched = self.apply_policy(&room).await;
        self.broadcast(&room, &ServerMsg::ParticipantLeft { id: p.id.clone() }, None);
        self.announce_mode(&room, switched);
        let mut was_speaking = false;
        if let (Some(detector), Ok(speaker)) = (self.speakers.get_mut(&room), u32::try_from(pid)) {
            was_speaking = detector.current() == Some(speaker);
            detector.remove(speaker);
        }
        if was_speaking {
            self.broadcast(&room, &ServerMsg::ActiveSpeaker { id: None }, None);
        }
        self.renegotiate(&room).await;
    }

    /// The engine restarted and holds nothing: re-installs every transport on its worker with its ICE
    /// credentials, bound address and SRTP keys, every subscription, and asks video publishers for
    /// keyframes, so calls resume without new ICE or DTLS handshakes (the peers never notice more than
    /// the packets lost while the engine was down). Participants and rooms are untouched.
    async fn engine_restarted(&mut self) {
        let started = std::time::Instant::now();
        let mut ids: Vec<TransportId> = self.transports.keys().copied().collect();
        ids.sort_unstable();
        let (mut restored, mut failed) = (0usize, 0usize);
        for id in ids {
            let Some(t) = self.transports.get(&id) else { continue };
            let (keys, remote, old_addr) = (t.keys.clone(), t.remote, t.addr);
            let indexes: Vec<(u32, u8, u64)> = t
                .srtp_indexes
                .iter()
                .map(|&(ssrc, kind, index)| {
                    let index = if kind == SRTP_RTCP_OUTBOUND { (index + SRTCP_RESUME_MARGIN).min(1 << 31) } else { index };
                    (ssrc, kind, index)
                })
                .collect();
            let add = Request::AddTransport { transport: id, worker: Some(t.worker), ufrag: t.ufrag.clone(), pwd: t.pwd.clone() };
            match self.engine.request(add).await {
                Ok(Reply::TransportAdded { addr, .. }) if addr != old_addr => {
                    tracing::error!(transport = id, %old_addr, %addr, "transport re-installed on another address: its peer cannot reach it");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(transport = id, error = %e, "could not re-install transport");
                    failed += 1;
                    continue;
                }
            }
            if let Some(addr) = remote {
                if let Err(e) = self.engine.request(Request::BindRemote { transport: id, addr }).await {
                    tracing::warn!(transport = id, %addr, error = %e, "could not re-bind the remote address");
                }
            }
            if let Some((profile, inbound, outbound)) = keys {
                if let Err(e) = self.engine.request(Request::SetSrtp { transport: id, profile, inbound, outbound }).await {
                    tracing::warn!(transport = id, error = %e, "could not re-install SRTP keys");
                } else if !indexes.is_empty() {
                    let streams = indexes.len();
                    if let Err(e) = self.engine.request(Request::ResumeSrtp { transport: id, indexes }).await {
                        tracing::warn!(transport = id, error = %e, "could not resume SRTP counters");
                    } else {
                        tracing::debug!(transport = id, streams, "SRTP counters resumed");
                    }
                }
            }
            restored += 1;
        }
        // Publishers' extension ids and tracks (with the simulcast SSRCs learned so far), before
        // anyone subscribes to them.
        let mut declare = Vec::new();
        for r in self.rooms.values() {
            for p in r.participants.values() {
                let Some(publisher) = p.publish else { continue };
                let Some(t) = self.transports.get(&publisher) else { continue };
                declare.push((publisher, t.ext, p.tracks.iter().map(|tr| add_track(publisher, tr, &t.learned)).collect::<Vec<_>>()));
            }
        }
        for (publisher, ext, tracks) in declare {
            if let Some(ext) = ext {
                if let Err(e) = self.engine.request(Request::SetExtensions { transport: publisher, ext }).await {
                    tracing::warn!(publisher, error = %e, "could not re-declare header extensions");
                }
            }
            for req in tracks {
                if let Err(e) = self.engine.request(req).await {
                    tracing::warn!(publisher, error = %e, "could not re-declare a track");
                }
            }
        }
        let mut subs = Vec::new();
        for r in self.rooms.values() {
            for p in r.participants.values() {
                let Some(sub) = p.sub.transport else { continue };
                subs.extend(p.sub.installed.iter().map(|(&key, &inst)| (key, sub, inst, p.sub.prefs.get(&key).copied())));
            }
        }
        let mut subscribed = 0usize;
        let mut keyframes = BTreeSet::new();
        for ((publisher, track), subscriber, inst, pref) in subs {
            if let Err(e) = self.engine.request(subscribe(publisher, track, subscriber, inst.out_ssrc)).await {
                tracing::warn!(publisher, track, subscriber, error = %e, "could not re-install subscription");
                continue;
            }
            subscribed += 1;
            if let Some(max_height) = pref {
                let _ = self.engine.request(Request::SetPreferences { publisher, track, subscriber, max_height }).await;
            }
            if inst.video && self.transports.get(&subscriber).is_some_and(|t| t.keys.is_some()) {
                keyframes.insert((publisher, track));
            }
        }
        let caps: Vec<(TransportId, u64)> = self.transports.iter().filter(|(_, t)| t.send_cap > 0).map(|(&id, t)| (id, t.send_cap)).collect();
        for (transport, bps) in caps {
            let _ = self.engine.request(Request::SetSendCap { transport, bps }).await;
        }
        for (publisher, track) in keyframes {
            let _ = self.engine.request(Request::RequestKeyframe { publisher, track }).await;
        }
        tracing::info!(
            transports = restored,
            failed,
            subscriptions = subscribed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "engine restarted: state re-installed"
        );
    }

    async fn remove_transport(&mut self, id: TransportId) {
        self.transports.remove(&id);
        if let Err(e) = self.engine.request(Request::RemoveTransport { transport: id }).await {
            tracing::warn!(transport = id, error = %e, "engine could not remove transport");
        }
    }

    async fn new_transport(&mut self, conn: ConnId, room: &str, pid: u64, leg: Leg) -> Result<TransportId, SignalError> {
        let id = self.next_transport;
        self.next_transport += 1;
        let ufrag = random_token(8);
        let pwd = random_token(24);
        let reply = self
            .engine
            .request(Request::AddTransport { transport: id, worker: None, ufrag: ufrag.clone(), pwd: pwd.clone() })
            .await
            .map_err(|e| SignalError::new("internal", format!("engine: {e}")))?;
        let Reply::TransportAdded { addr, worker } = reply else {
            return Err(SignalError::new("internal", "engine gave an unexpected reply to AddTransport"));
        };
        self.transports.insert(
            id,
            TransportState {
                conn,
                participant: pid,
                room: room.to_string(),
                leg,
                ufrag,
                pwd,
                addr,
                session_id: rand::rng().random_range(1..u64::MAX / 2),
                sdp_version: 0,
                session: None,
                early: Vec::new(),
                srtp: false,
                worker,
                remote: None,
                keys: None,
                srtp_indexes: Vec::new(),
                ext: None,
                learned: BTreeMap::new(),
                send_cap: 0,
            },
        );
        Ok(id)
    }

    fn local(&mut self, id: TransportId) -> Option<LocalTransport> {
        let t = self.transports.get_mut(&id)?;
        t.sdp_version += 1;
        Some(LocalTransport {
            ice_ufrag: t.ufrag.clone(),
            ice_pwd: t.pwd.clone(),
            fingerprint_sha256: self.identity.fingerprint().to_string(),
            candidate: t.addr,
            session_id: t.session_id,
            session_version: t.sdp_version,
        })
    }

    /// Starts the DTLS server for a transport once the peer's fingerprint is known.
    fn start_dtls(&mut self, id: TransportId, remote_fingerprint: &str) {
        let Some(t) = self.transports.get_mut(&id) else { return };
        if t.session.is_some() {
            return;
        }
        let engine = self.engine.clone();
        let session = Arc::new(Session::start(Role::Server, &self.identity, remote_fingerprint, move |datagram| {
            engine.send(Request::DtlsOut { transport: id, datagram });
        }));
        for d in t.early.drain(..) {
            session.feed(d);
        }
        t.session = Some(Arc::clone(&session));
        let me = self.me.clone();
        let timeout = self.cfg.dtls_timeout;
        tokio::spawn(async move {
            let result = session.established(timeout).await;
            let _ = me.send(HubMsg::DtlsDone { transport: id, result });
        });
    }

    async fn dtls_done(&mut self, id: TransportId, result: Result<SrtpExport, switchyard_dtls::Error>) {
        let Some(t) = self.transports.get(&id) else { return };
        let (conn, room, pid, leg) = (t.conn, t.room.clone(), t.participant, t.leg);
        match &result {
            Ok(_) => self.dtls_ok += 1,
            Err(_) => self.dtls_failed += 1,
        }
        let export = match result {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(transport = id, error = %e, "DTLS failed; removing the transport");
                self.send(conn, SignalError::new("internal", format!("DTLS handshake failed: {e}")).to_msg());
                self.remove_transport(id).await;
                if let Some(p) = self.rooms.get_mut(&room).and_then(|r| r.participants.get_mut(&pid)) {
                    match leg {
                        Leg::Publish => {
                            p.publish = None;
                            p.tracks.clear();
                        }
                        Leg::Subscribe => p.sub = Default::default(),
                    }
                }
                self.renegotiate(&room).await;
                return;
            }
        };
        let installed = Profile::from_rfc5764_id(export.profile_id)
            .ok_or_else(|| format!("unsupported SRTP profile {:#06x}", export.profile_id))
            .and_then(|p| split_keying_material(p, &export.keying_material).map_err(|e| e.to_string()).map(|k| (p, k)));
        let (profile, (client, server)) = match installed {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(transport = id, error = %e, "cannot use the DTLS keys");
                return;
            }
        };
        let req = Request::SetSrtp {
            transport: id,
            profile: profile.rfc5764_id(),
            inbound: KeySalt { key: client.key, salt: client.salt },
            outbound: KeySalt { key: server.key, salt: server.salt },
        };
        if let (Some(t), Request::SetSrtp { profile, inbound, outbound, .. }) = (self.transports.get_mut(&id), &req) {
            // Kept for a restarted engine (also when this request fails because the engine is away).
            t.keys = Some((*profile, inbound.clone(), outbound.clone()));
        }
        if let Err(e) = self.engine.request(req).await {
            tracing::warn!(transport = id, error = %e, "engine refused SRTP keys");
            return;
        }
        if let Some(t) = self.transports.get_mut(&id) {
            t.srtp = true;
        }
        tracing::info!(transport = id, participant = pid, ?leg, "media connected");
        if leg == Leg::Subscribe {
            // The subscriber can decode only from a keyframe: ask every video publisher it receives.
            let videos: Vec<TrackKey> = self
                .participant(&room, pid)
                .map(|p| p.sub.installed.iter().filter(|(_, i)| i.video).map(|(k, _)| *k).collect())
                .unwrap_or_default();
            for (publisher, track) in videos {
                let _ = self.engine.request(Request::RequestKeyframe { publisher, track }).await;
            }
        }
    }

    async fn publish(&mut self, conn: ConnId, room: &str, pid: u64, sdp: &str) -> Result<(), SignalError> {
        let offer = SessionDescription::parse(sdp).map_err(|e| SignalError::new("sdp", e.to_string()))?;
        let remote = remote_transport(&offer).map_err(|e| SignalError::new("sdp", e.to_string()))?;
        let existing = self.participant(room, pid).and_then(|p| p.publish);
        let id = match existing {
            Some(id) => id,
            None => self.new_transport(conn, room, pid, Leg::Publish).await?,
        };
        let local = self.local(id).ok_or_else(|| SignalError::new("internal", "transport vanished"))?;
        let PublishAnswer { sdp: answer, mut tracks, ext } = match answer_publish(&offer, &local) {
            Ok(v) => v,
            Err(e) => {
                if existing.is_none() {
                    self.remove_transport(id).await;
                }
                return Err(SignalError::new("sdp", e.to_string()));
            }
        };
        self.start_dtls(id, &remote.fingerprint);
        let owner = format!("p{pid}");
        for t in &mut tracks {
            // Each participant's streams are labelled with their id so subscribers can place them.
            t.stream_id = format!("{owner}~{}", t.stream_id).chars().take(64).collect();
        }
        let (added, gone) = match self.rooms.get_mut(room).and_then(|r| r.participants.get_mut(&pid)) {
            Some(p) => {
                p.publish = Some(id);
                p.set_tracks(tracks)
            }
            None => (Vec::new(), Vec::new()),
        };
        // The engine learns the header-extension ids and the tracks (a simulcast track's layers by
        // rid) before the answer goes out, so it can bind the first packets.
        let ext = HeaderExtIds { mid: ext.mid, rid: ext.rid, repaired_rid: ext.repaired_rid, audio_level: ext.audio_level, twcc: ext.twcc };
        let mut learned = BTreeMap::new();
        if let Some(t) = self.transports.get_mut(&id) {
            t.ext = Some(ext);
            t.learned.retain(|(track, _), _| !gone.contains(track));
            learned = t.learned.clone();
        }
        if let Err(e) = self.engine.request(Request::SetExtensions { transport: id, ext }).await {
            tracing::warn!(transport = id, error = %e, "engine refused header extensions");
        }
        for track in gone {
            if let Err(e) = self.engine.request(Request::RemoveTrack { publisher: id, track }).await {
                tracing::warn!(transport = id, track, error = %e, "engine could not remove a track");
            }
        }
        for t in &added {
            if let Err(e) = self.engine.request(add_track(id, t, &learned)).await {
                tracing::warn!(transport = id, track = t.id, error = %e, "engine refused a track");
            }
        }
        self.send(conn, ServerMsg::PublishAnswer { sdp: answer });
        self.renegotiate(room).await;
        Ok(())
    }

    /// Re-derives everyone's subscribe slots and sends the offers that are due.
    async fn renegotiate(&mut self, room: &str) {
        let changed = match self.rooms.get_mut(room) {
            Some(r) if r.mode == Mode::Sfu => r.reconcile_all(),
            _ => return,
        };
        for pid in changed {
            if let Err(e) = self.offer(room, pid).await {
                tracing::warn!(%room, participant = pid, error = %e.message, "could not renegotiate");
            }
        }
    }

    async fn offer(&mut self, room: &str, pid: u64) -> Result<(), SignalError> {
        let Some(conn) = self.conn_of(room, pid) else { return Ok(()) };
        let needs_transport = self
            .participant(room, pid)
            .is_some_and(|p| p.sub.transport.is_none() && p.sub.slots.iter().any(|s| s.track.is_some()));
        if needs_transport {
            let id = self.new_transport(conn, room, pid, Leg::Subscribe).await?;
            if let Some(p) = self.rooms.get_mut(room).and_then(|r| r.participants.get_mut(&pid)) {
                p.sub.transport = Some(id);
            }
        }
        let Some(p) = self.rooms.get_mut(room).and_then(|r| r.participants.get_mut(&pid)) else { return Ok(()) };
        let Some(transport) = p.sub.transport else { return Ok(()) };
        let Some((version, slots)) = p.sub.take_offer() else { return Ok(()) };
        let mut streams = BTreeMap::new();
        for s in slots.iter().filter_map(|s| s.track.as_ref()) {
            let owner = s.stream_id.split('~').next().unwrap_or_default().to_string();
            streams.insert(s.stream_id.clone(), owner);
        }
        let local = self.local(transport).ok_or_else(|| SignalError::new("internal", "transport vanished"))?;
        let sdp = match offer_subscribe(&slots, &local) {
            Ok(sdp) => sdp,
            Err(e) => {
                // Do not leave the participant waiting for an answer to an offer never sent.
                if let Some(p) = self.rooms.get_mut(room).and_then(|r| r.participants.get_mut(&pid)) {
                    p.sub.abandon_offer();
                }
                return Err(SignalError::new("internal", e.to_string()));
            }
        };
        self.send(conn, ServerMsg::SubscribeOffer { sdp, version, streams });
        Ok(())
    }

    async fn subscribe_answer(&mut self, room: &str, pid: u64, sdp: &str, version: u64) -> Result<(), SignalError> {
        let answer = SessionDescription::parse(sdp).map_err(|e| SignalError::new("sdp", e.to_string()))?;
        let p = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.participants.get_mut(&pid))
            .ok_or_else(|| SignalError::new("not-found", "participant not found"))?;
        let slots = p
            .sub
            .outstanding()
            .ok_or_else(|| SignalError::new("out-of-order", "no subscribe offer is awaiting an answer"))?
            .to_vec();
        let remote = check_subscribe_answer(&slots, &answer).map_err(|e| SignalError::new("sdp", e.to_string()))?;
        let diff = p.sub.accept_answer(version).map_err(|e| SignalError::new("out-of-order", e))?;
        let prefs = p.sub.prefs.clone();
        let Some(sub) = p.sub.transport else { return Ok(()) };
        self.start_dtls(sub, &remote.fingerprint);
        let ready = self.transports.get(&sub).is_some_and(|t| t.srtp);
        for (publisher, track) in diff.remove {
            // The engine has already dropped it if the publisher removed the track.
            let _ = self.engine.request(Request::Unsubscribe { publisher, track, subscriber: sub }).await;
        }
        for ((publisher, track), inst) in diff.add {
            if let Err(e) = self.engine.request(subscribe(publisher, track, sub, inst.out_ssrc)).await {
                tracing::warn!(publisher, track, subscriber = sub, error = %e, "subscribe failed");
                continue;
            }
            if let Some(&max_height) = prefs.get(&(publisher, track)) {
                let _ = self.engine.request(Request::SetPreferences { publisher, track, subscriber: sub, max_height }).await;
            }
            if inst.video && ready {
                let _ = self.engine.request(Request::RequestKeyframe { publisher, track }).await;
            }
        }
        // Changes that arrived while this offer was out.
        self.offer(room, pid).await
    }
}

/// Declares a published track to the engine: one layer with the SDP's SSRC, or one layer per rid
/// (lowest first) with the SSRC learned so far, 0 when not yet known.
fn add_track(publisher: TransportId, t: &Track, learned: &BTreeMap<(u32, u8), u32>) -> Request {
    let p = &t.published;
    let kind = if p.kind == MediaKind::Video { TrackKind::Video } else { TrackKind::Audio };
    let layers = if p.rids.is_empty() {
        vec![Layer { rid: String::new(), ssrc: p.ssrc }]
    } else {
        p.rids
            .iter()
            .enumerate()
            .map(|(i, rid)| Layer {
                rid: rid.clone(),
                ssrc: u8::try_from(i).ok().and_then(|l| learned.get(&(t.id, l))).copied().unwrap_or(0),
            })
            .collect()
    };
    Request::AddTrack {
        publisher,
        track: t.id,
        kind,
        mid: p.mid.clone(),
        clock_rate: p.codec.clock_rate,
        payload_type: p.codec.pt,
        feedback: p.feedback,
        layers,
    }
}

/// Forwards a track to a subscriber as one stream on `out_ssrc` (no RTX: retransmissions go on it).
fn subscribe(publisher: TransportId, track: u32, subscriber: TransportId, out_ssrc: u32) -> Request {
    Request::Subscribe { publisher, track, subscriber, out_ssrc, out_rtx_ssrc: 0, rtx_payload_type: 0 }
}

fn client_kind(msg: &ClientMsg) -> &'static str {
    match msg {
        ClientMsg::Join { .. } => "join",
        ClientMsg::Publish { .. } => "publish",
        ClientMsg::SubscribeAnswer { .. } => "subscribe-answer",
        ClientMsg::PeerOffer { .. } => "peer-offer",
        ClientMsg::PeerAnswer { .. } => "peer-answer",
        ClientMsg::PeerCandidate { .. } => "peer-candidate",
        ClientMsg::Candidate { .. } => "candidate",
        ClientMsg::Chat { .. } => "chat",
        ClientMsg::MediaState { .. } => "media-state",
        ClientMsg::VideoSize { .. } => "video-size",
        ClientMsg::Leave => "leave",
    }
}

#[cfg(test)]
mod tests {
    //! The hub against a real engine (in-process, one worker) with fake WebSocket connections.

    use super::*;
    use crate::signaling::parse_client;
    use serde_json::Value;
    use switchyard_engine::{Engine, EngineConfig};

    const CHROME_OFFER: &str = include_str!("../../lib/sdp/tests/fixtures/chrome_offer.sdp");

    /// Chrome's offer with the camera sent as three simulcast layers (rids q, h, f; no a=ssrc).
    fn simulcast_offer() -> String {
        let nl = if CHROME_OFFER.contains("\r\n") { "\r\n" } else { "\n" };
        let mut out = String::new();
        let mut in_video = false;
        for line in CHROME_OFFER.split_inclusive('\n') {
            if line.starts_with("m=") {
                if in_video {
                    out.push_str(&format!("a=rid:q send{nl}a=rid:h send{nl}a=rid:f send{nl}a=simulcast:send q;h;f{nl}"));
                }
                in_video = line.starts_with("m=video");
            }
            if in_video && (line.starts_with("a=ssrc:") || line.starts_with("a=ssrc-group:")) {
                continue;
            }
            out.push_str(line);
        }
        out
    }

    /// Answers a subscribe offer the way a browser would.
    fn answer(offer: &str) -> String {
        let desc = SessionDescription::parse(offer).unwrap();
        let local = LocalTransport {
            ice_ufrag: "abcd".into(),
            ice_pwd: "abcdefghijklmnopqrstuvwx".into(),
            fingerprint_sha256: vec!["AB"; 32].join(":"),
            candidate: "127.0.0.1:9".parse().unwrap(),
            session_id: 1,
            session_version: 1,
        };
        switchyard_sdp::answer_subscribe_client(&desc, &local).unwrap()
    }

    /// The `a=ssrc` values of the video m-lines of an SDP.
    fn video_ssrcs(sdp: &str) -> Vec<u32> {
        let mut v = Vec::new();
        let mut video = false;
        for line in sdp.lines() {
            if line.starts_with("m=") {
                video = line.starts_with("m=video");
            } else if let Some(rest) = line.strip_prefix("a=ssrc:").filter(|_| video) {
                let ssrc: u32 = rest.split(' ').next().unwrap().parse().unwrap();
                if !v.contains(&ssrc) {
                    v.push(ssrc);
                }
            }
        }
        v
    }
    const LOOPBACK_CANDIDATE: &str = "a=candidate:9 1 udp 2122260223 127.0.0.1 50000 typ host generation 0";

    struct Rig {
        engine: Option<Engine>,
        link: EngineLink,
        hub: mpsc::UnboundedSender<HubMsg>,
        next_conn: ConnId,
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            if let Some(e) = self.engine.take() {
                e.stop();
            }
        }
    }

    struct Client {
        conn: ConnId,
        hub: mpsc::UnboundedSender<HubMsg>,
        rx: mpsc::UnboundedReceiver<ServerMsg>,
    }

    async fn rig(modes: ModePolicy) -> Rig {
        let socket = std::env::temp_dir().join(format!("sy-hub-{}-{}.sock", std::process::id(), rand::random::<u64>()));
        let engine = Engine::start(&EngineConfig { workers: 1, pin: false, socket: socket.clone(), ..Default::default() })
            .expect("engine starts");
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let link = EngineLink::connect(&socket, events_tx).await.expect("engine link");
        let (hub, inbox) = mpsc::unbounded_channel();
        let cfg = HubConfig {
            modes,
            turn: TurnSettings {
                urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
                secret: "s3cret".into(),
                ttl: Duration::from_secs(600),
            },
            ..HubConfig::default()
        };
        let identity = Arc::new(Identity::generate().expect("identity"));
        tokio::spawn(Hub::new(cfg, link.clone(), identity, hub.clone()).run(inbox));
        let pump = hub.clone();
        tokio::spawn(async move {
            while let Some(ev) = events_rx.recv().await {
                if pump.send(HubMsg::Engine(ev)).is_err() {
                    break;
                }
            }
        });
        Rig { engine: Some(engine), link, hub, next_conn: 1 }
    }

    impl Rig {
        fn connect(&mut self) -> Client {
            let (tx, rx) = mpsc::unbounded_channel();
            let conn = self.next_conn;
            self.next_conn += 1;
            self.hub.send(HubMsg::Connected { conn, tx }).unwrap();
            Client { conn, hub: self.hub.clone(), rx }
        }

        /// Joins `room`; returns the client and its `joined` message.
        async fn join(&mut self, room: &str, name: &str, mesh: bool) -> (Client, Value) {
            let mut c = self.connect();
            c.send(serde_json::json!({"type": "join", "room": room, "name": name, "mesh": mesh}));
            let joined = c.next().await;
            assert_eq!(joined["type"], "joined", "{joined}");
            (c, joined)
        }

        async fn transports(&self) -> usize {
            match self.link.request(Request::Stats).await.unwrap() {
                Reply::Stats(s) => s.workers.iter().map(|w| w.transports as usize).sum(),
                other => panic!("{other:?}"),
            }
        }

        /// Waits until the hub has handled everything sent before.
        async fn settle(&self) {
            let (tx, rx) = oneshot::channel();
            self.hub.send(HubMsg::Rooms(tx)).unwrap();
            rx.await.unwrap();
        }
    }

    impl Client {
        fn send(&self, msg: Value) {
            let msg = parse_client(&msg.to_string()).unwrap();
            self.hub.send(HubMsg::Client { conn: self.conn, msg }).unwrap();
        }

        async fn next(&mut self) -> Value {
            let m = tokio::time::timeout(Duration::from_secs(5), self.rx.recv()).await.expect("a message").unwrap();
            serde_json::to_value(m).unwrap()
        }

        /// Nothing more was sent to this client (call after `Rig::settle`).
        fn quiet(&mut self) {
            if let Ok(m) = self.rx.try_recv() {
                panic!("unexpected message {}", m.to_json());
            }
        }
    }

    fn loopback_only() -> ModePolicy {
        ModePolicy { allowed_candidate_nets: vec!["127.0.0.0/8".parse().unwrap()], ..ModePolicy::default() }
    }

    #[tokio::test]
    async fn mesh_signaling_is_relayed_within_the_pair_and_filtered() {
        let mut rig = rig(loopback_only()).await;
        let (mut a, joined) = rig.join("duo", "Ada", true).await;
        assert_eq!((joined["mode"].as_str(), joined["epoch"].as_u64()), (Some("c2c"), Some(1)));
        let ice = &joined["iceServers"][0];
        assert_eq!(ice["urls"][0], "turn:127.0.0.1:3478?transport=udp");
        assert!(ice["username"].as_str().unwrap().ends_with(":p1"), "{ice}");
        assert_eq!(ice["credential"].as_str().unwrap().len(), 28);
        assert_eq!(a.next().await["type"], "mode");
        let (mut b, joined) = rig.join("duo", "Grace", true).await;
        assert_eq!(joined["participants"][0]["id"], "p1");
        assert_eq!(b.next().await["participants"], 2);
        assert_eq!(a.next().await["type"], "participant-joined");
        let mode = a.next().await;
        assert_eq!((mode["mode"].as_str(), mode["participants"].as_u64(), mode["epoch"].as_u64()), (Some("c2c"), Some(2), Some(1)));
        assert!(mode.get("iceServers").is_none(), "no new credentials without a switch");

        // An offer reaches the other participant without candidates outside 127.0.0.0/8.
        let sdp = CHROME_OFFER.replacen("a=ice-ufrag", &format!("{LOOPBACK_CANDIDATE}\r\na=ice-ufrag"), 1);
        a.send(serde_json::json!({"type": "peer-offer", "to": "p2", "sdp": sdp, "epoch": 1}));
        let got = b.next().await;
        assert_eq!((got["type"].as_str(), got["from"].as_str()), (Some("peer-offer"), Some("p1")));
        let relayed = got["sdp"].as_str().unwrap();
        assert_eq!(relayed.matches("a=candidate:").count(), 1, "{relayed}");
        assert!(relayed.contains(LOOPBACK_CANDIDATE));
        let expected: String =
            sdp.split_inclusive('\n').filter(|l| !l.starts_with("a=candidate:") || l.contains("127.0.0.1")).collect();
        assert_eq!(relayed, expected, "only the candidate lines outside 127.0.0.0/8 are removed");
        b.send(serde_json::json!({"type": "peer-answer", "to": "p1", "sdp": "v=0\r\n", "epoch": 1}));
        assert_eq!(a.next().await["type"], "peer-answer");

        // Candidates: loopback and end-of-candidates pass, others are dropped.
        for c in [
            serde_json::json!({"candidate": "candidate:1 1 udp 2122260223 10.1.2.3 5000 typ host", "sdpMid": "0"}),
            serde_json::json!({"candidate": "candidate:2 1 udp 2122260223 abc.local 5000 typ host", "sdpMid": "0"}),
            serde_json::json!({"candidate": "candidate:3 1 udp 2122260223 127.0.0.1 5000 typ host", "sdpMid": "0"}),
            Value::Null,
        ] {
            b.send(serde_json::json!({"type": "peer-candidate", "to": "p1", "candidate": c, "epoch": 1}));
        }
        let got = a.next().await;
        assert_eq!((got["from"].as_str(), got["candidate"]["candidate"].as_str().map(|c| c.contains("127.0.0.1"))), (Some("p2"), Some(true)));
        assert_eq!(a.next().await["candidate"], Value::Null);

        // Stale epochs and departed recipients are dropped silently; yourself and SFU messages are errors.
        a.send(serde_json::json!({"type": "peer-offer", "to": "p2", "sdp": "v=0\r\n", "epoch": 0}));
        a.send(serde_json::json!({"type": "peer-offer", "to": "p99", "sdp": "v=0\r\n"}));
        a.send(serde_json::json!({"type": "peer-offer", "to": "p1", "sdp": "v=0\r\n"}));
        let err = a.next().await;
        assert_eq!((err["code"].as_str(), err["ref"].as_str()), (Some("bad-message"), Some("peer-offer")));
        a.send(serde_json::json!({"type": "publish", "sdp": CHROME_OFFER}));
        let err = a.next().await;
        assert_eq!((err["code"].as_str(), err["ref"].as_str()), (Some("out-of-order"), Some("publish")));
        rig.settle().await;
        a.quiet();
        b.quiet();
        assert_eq!(rig.transports().await, 0);
    }

    #[tokio::test]
    async fn switching_to_the_sfu_and_back_announces_epochs_and_removes_transports() {
        let mut rig = rig(ModePolicy { p2p_max: 2, hysteresis: 0, ..ModePolicy::default() }).await;
        let (mut a, _) = rig.join("r", "Ada", true).await;
        let (mut b, _) = rig.join("r", "Grace", true).await;
        rig.settle().await;
        while a.rx.try_recv().is_ok() || b.rx.try_recv().is_ok() {}

        // The third joiner moves the room to the SFU: the others hear `mode` (a new epoch, fresh
        // credentials) before `participant-joined`.
        let (mut c, joined) = rig.join("r", "Linus", true).await;
        assert_eq!((joined["mode"].as_str(), joined["epoch"].as_u64()), (Some("sfu"), Some(2)));
        for x in [&mut a, &mut b] {
            let mode = x.next().await;
            assert_eq!((mode["mode"].as_str(), mode["epoch"].as_u64(), mode["participants"].as_u64()), (Some("sfu"), Some(2), Some(3)));
            assert!(mode["iceServers"][0]["username"].is_string(), "{mode}");
            assert_eq!(x.next().await["type"], "participant-joined");
        }
        assert_eq!(c.next().await["epoch"], 2);

        // Everyone publishes; a publish from the old epoch is dropped.
        a.send(serde_json::json!({"type": "publish", "sdp": CHROME_OFFER, "epoch": 1}));
        rig.settle().await;
        a.quiet();
        for x in [&mut a, &mut b, &mut c] {
            x.send(serde_json::json!({"type": "publish", "sdp": CHROME_OFFER, "epoch": 2}));
        }
        for x in [&mut a, &mut b, &mut c] {
            loop {
                let m = x.next().await;
                if m["type"] == "publish-answer" {
                    break;
                }
                assert_eq!(m["type"], "subscribe-offer", "{m}");
            }
        }
        rig.settle().await;
        assert_eq!(rig.transports().await, 6, "a publish and a subscribe transport each");

        // One leaves: back to the mesh, every engine transport removed.
        c.send(serde_json::json!({"type": "leave"}));
        for x in [&mut a, &mut b] {
            let mut m = x.next().await;
            while m["type"] == "subscribe-offer" {
                m = x.next().await;
            }
            assert_eq!(m["type"], "participant-left", "{m}");
            let mode = x.next().await;
            assert_eq!((mode["mode"].as_str(), mode["epoch"].as_u64()), (Some("c2c"), Some(3)));
        }
        rig.settle().await;
        assert_eq!(rig.transports().await, 0);
        a.send(serde_json::json!({"type": "subscribe-answer", "sdp": "v=0\r\n", "version": 1, "epoch": 2}));
        b.send(serde_json::json!({"type": "peer-offer", "to": "p1", "sdp": "v=0\r\n", "epoch": 3}));
        assert_eq!(a.next().await["type"], "peer-offer");
        rig.settle().await;
        a.quiet();
        b.quiet();
    }

    #[tokio::test]
    async fn sfu_only_clients_keep_rooms_in_the_sfu_and_cannot_join_pinned_meshes() {
        let mut rig = rig(ModePolicy { pinned: vec!["duo=p2p".parse().unwrap()], ..ModePolicy::default() }).await;
        let mut bot = rig.connect();
        bot.send(serde_json::json!({"type": "join", "room": "duo", "name": "bot"}));
        let err = bot.next().await;
        assert_eq!((err["code"].as_str(), err["ref"].as_str()), (Some("unsupported"), Some("join")));
        let (_, joined) = rig.join("duo", "Ada", true).await;
        assert_eq!(joined["mode"], "p2p", "pinned, whatever the size");

        let (mut bot, joined) = rig.join("open", "bot", false).await;
        assert_eq!(joined["mode"], "sfu");
        let (mut ada, joined) = rig.join("open", "Ada", true).await;
        assert_eq!((joined["mode"].as_str(), joined["epoch"].as_u64()), (Some("sfu"), Some(1)));
        bot.send(serde_json::json!({"type": "leave"}));
        assert_eq!(ada.next().await["type"], "mode");
        assert_eq!(ada.next().await["type"], "participant-left");
        let mode = ada.next().await;
        assert_eq!((mode["mode"].as_str(), mode["epoch"].as_u64()), (Some("c2c"), Some(2)));
        let _ = bot.rx.try_recv();
    }

    async fn ask<T>(rig: &Rig, msg: impl FnOnce(oneshot::Sender<T>) -> HubMsg) -> T {
        let (tx, rx) = oneshot::channel();
        rig.hub.send(msg(tx)).unwrap();
        rx.await.unwrap()
    }

    #[tokio::test]
    async fn operators_kick_close_and_drain() {
        let mut rig = rig(ModePolicy { sfu_only: true, ..ModePolicy::default() }).await;
        let (mut a, _) = rig.join("r", "Ada", false).await;
        let (mut b, joined) = rig.join("r", "Grace", false).await;
        let pb = joined["participant"].as_str().unwrap().to_string();
        rig.settle().await;
        while a.rx.try_recv().is_ok() || b.rx.try_recv().is_ok() {}

        // Kick: the participant hears `kicked`, the other sees them leave; unknown ids are refused.
        assert!(ask(&rig, |reply| HubMsg::Kick { room: "r".into(), id: pb.clone(), reply }).await);
        assert_eq!(b.next().await["code"], "kicked");
        assert_eq!(a.next().await["type"], "participant-left");
        assert!(!ask(&rig, |reply| HubMsg::Kick { room: "r".into(), id: pb.clone(), reply }).await);
        let rooms = ask(&rig, HubMsg::Rooms).await;
        assert_eq!(rooms[0].participants.len(), 1);
        let c = ask(&rig, HubMsg::Counters).await;
        assert_eq!((c.rooms["sfu"], c.rooms["c2c"], c.participants, c.connections, c.kicked), (1, 0, 1, 2, 1));

        // Drain: no new rooms, the existing one still takes joins.
        assert!(ask(&rig, |reply| HubMsg::Drain { set: Some(true), reply }).await);
        b.send(serde_json::json!({"type": "join", "room": "new", "name": "Grace"}));
        let err = b.next().await;
        assert_eq!((err["code"].as_str(), err["ref"].as_str()), (Some("draining"), Some("join")));
        b.send(serde_json::json!({"type": "join", "room": "r", "name": "Grace"}));
        assert_eq!(b.next().await["type"], "joined");

        // Close: everyone hears `room-closed`; the room is gone.
        assert_eq!(ask(&rig, |reply| HubMsg::CloseRoom { room: "r".into(), reply }).await, Some(2));
        for x in [&mut a, &mut b] {
            let mut m = x.next().await;
            while m["type"] != "error" {
                m = x.next().await;
            }
            assert_eq!(m["code"], "room-closed");
        }
        assert!(ask(&rig, HubMsg::Rooms).await.is_empty());
        assert_eq!(ask(&rig, |reply| HubMsg::CloseRoom { room: "r".into(), reply }).await, None);
        assert!(!ask(&rig, |reply| HubMsg::Drain { set: Some(false), reply }).await);
    }

    async fn engine_transports(link: &EngineLink) -> Option<Vec<(TransportId, u16, String)>> {
        match link.request(Request::Snapshot).await {
            Ok(Reply::Snapshot(ts)) => Some(ts.into_iter().map(|t| (t.transport, t.worker, t.ufrag)).collect()),
            _ => None,
        }
    }

    type Declared = Vec<(TransportId, Vec<u32>, Vec<(u32, TransportId)>)>;

    /// Per engine transport: the tracks it publishes and its subscriptions `(track, subscriber)`.
    async fn engine_tracks(link: &EngineLink) -> Option<Declared> {
        match link.request(Request::Snapshot).await {
            Ok(Reply::Snapshot(ts)) => {
                let mut v: Declared = ts
                    .into_iter()
                    .map(|t| {
                        let mut tracks: Vec<u32> = t.tracks.iter().map(|(id, _)| *id).collect();
                        let mut subs = t.subscriptions;
                        tracks.sort_unstable();
                        subs.sort_unstable();
                        (t.transport, tracks, subs)
                    })
                    .collect();
                v.sort();
                Some(v)
            }
            _ => None,
        }
    }

    /// Publishes `offer` for each client in turn and answers every subscribe offer, until each has
    /// a publish answer and no offer is outstanding; returns the last subscribe offer each received.
    async fn publish_and_subscribe(rig: &Rig, clients: &mut [&mut Client], offer: &str) -> Vec<Option<Value>> {
        for c in clients.iter_mut() {
            c.send(serde_json::json!({"type": "publish", "sdp": offer}));
            rig.settle().await;
        }
        let mut last = vec![None; clients.len()];
        for _ in 0..10 {
            rig.settle().await;
            let mut any = false;
            for (i, c) in clients.iter_mut().enumerate() {
                while let Ok(m) = c.rx.try_recv() {
                    let m = serde_json::to_value(m).unwrap();
                    if m["type"] == "subscribe-offer" {
                        any = true;
                        let sdp = answer(m["sdp"].as_str().unwrap());
                        c.send(serde_json::json!({"type": "subscribe-answer", "sdp": sdp, "version": m["version"]}));
                        last[i] = Some(m);
                    } else {
                        assert_ne!(m["type"], "error", "{m}");
                    }
                }
            }
            if !any {
                break;
            }
        }
        last
    }

    #[tokio::test]
    async fn simulcast_tracks_are_declared_by_rid_and_reach_each_subscriber_on_its_own_ssrc() {
        let mut rig = rig(ModePolicy { sfu_only: true, ..ModePolicy::default() }).await;
        let (mut a, _) = rig.join("r", "Ada", false).await;
        let (mut b, _) = rig.join("r", "Grace", false).await;
        let (mut c, _) = rig.join("r", "Linus", false).await;
        rig.settle().await;
        while a.rx.try_recv().is_ok() || b.rx.try_recv().is_ok() || c.rx.try_recv().is_ok() {}
        // Ada's camera is simulcast; Grace and Linus publish plain tracks.
        a.send(serde_json::json!({"type": "publish", "sdp": simulcast_offer()}));
        rig.settle().await;
        let offers = publish_and_subscribe(&rig, &mut [&mut b, &mut c], CHROME_OFFER).await;
        let _ = publish_and_subscribe(&rig, &mut [&mut a], &simulcast_offer()).await;
        rig.settle().await;
        let mut seen = Vec::new();
        for offer in offers.iter().map(|o| o.as_ref().expect("a subscribe offer")) {
            let sdp = offer["sdp"].as_str().unwrap();
            assert!(!sdp.contains("a=rid:") && !sdp.contains("a=simulcast"), "no simulcast toward subscribers: {sdp}");
            let ssrcs = video_ssrcs(sdp);
            assert!(ssrcs.contains(&2231627014), "a plain video keeps the publisher's SSRC: {ssrcs:?}");
            let fresh: Vec<u32> = ssrcs.into_iter().filter(|&s| s != 2231627014 && s != 632943048).collect();
            assert_eq!(fresh.len(), 1, "Ada's simulcast camera arrives on one SSRC of the subscriber's: {fresh:?}");
            assert_ne!(fresh[0], 0);
            seen.push(fresh[0]);
        }
        assert_ne!(seen[0], seen[1], "each subscriber has its own SSRC for Ada's camera");
        // The engine knows every published track and both subscribers take Ada's two tracks.
        let declared = engine_tracks(&rig.link).await.unwrap();
        let publishers: Vec<_> = declared.iter().filter(|t| !t.1.is_empty()).collect();
        assert_eq!(publishers.len(), 3, "{declared:?}");
        assert!(publishers.iter().all(|t| t.1 == vec![1, 2]), "audio and video each: {declared:?}");
        let ada = publishers.iter().find(|t| t.2.len() == 4).unwrap_or_else(|| panic!("Ada's tracks go to two subscribers: {declared:?}"));
        assert_eq!(ada.2.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 1, 2, 2]);
    }

    #[tokio::test]
    async fn video_size_names_an_offered_video_and_is_refused_otherwise() {
        let mut rig = rig(ModePolicy { sfu_only: true, ..ModePolicy::default() }).await;
        let (mut a, _) = rig.join("r", "Ada", false).await;
        let (mut b, _) = rig.join("r", "Grace", false).await;
        rig.settle().await;
        while a.rx.try_recv().is_ok() || b.rx.try_recv().is_ok() {}
        a.send(serde_json::json!({"type": "publish", "sdp": simulcast_offer()}));
        rig.settle().await;
        let offers = publish_and_subscribe(&rig, &mut [&mut b], CHROME_OFFER).await;
        let offer = offers[0].as_ref().expect("Grace is offered Ada's tracks");
        let stream = offer["streams"].as_object().unwrap().keys().next().unwrap().clone();
        assert!(stream.starts_with("p1~"), "{stream}");
        // Before and after the answer, for the stream offered: accepted silently.
        b.send(serde_json::json!({"type": "video-size", "stream": stream, "maxHeight": 180}));
        b.send(serde_json::json!({"type": "video-size", "stream": stream, "maxHeight": 65535, "epoch": 1}));
        rig.settle().await;
        b.quiet();
        // A stream Grace was not offered, and her own.
        for s in ["p9~nothing", "p2~3d5b8e2a-6f1c-4b7e-9a0d-2c8f1e4b7a6d"] {
            b.send(serde_json::json!({"type": "video-size", "stream": s, "maxHeight": 360}));
            let err = b.next().await;
            assert_eq!((err["code"].as_str(), err["ref"].as_str()), (Some("not-found"), Some("video-size")), "{err}");
        }
        // An old epoch is dropped silently.
        b.send(serde_json::json!({"type": "video-size", "stream": "p9~nothing", "maxHeight": 360, "epoch": 0}));
        rig.settle().await;
        b.quiet();
    }

    #[tokio::test]
    async fn the_loudest_publisher_is_announced_as_the_active_speaker() {
        let mut rig = rig(ModePolicy { sfu_only: true, ..ModePolicy::default() }).await;
        let (mut a, _) = rig.join("r", "Ada", false).await;
        let (mut b, _) = rig.join("r", "Grace", false).await;
        let (mut other, _) = rig.join("elsewhere", "Linus", false).await;
        rig.settle().await;
        let _ = publish_and_subscribe(&rig, &mut [&mut a, &mut b], CHROME_OFFER).await;
        let _ = publish_and_subscribe(&rig, &mut [&mut other], CHROME_OFFER).await;
        rig.settle().await;
        // Transports are numbered in creation order: Ada's publish (1), Grace's subscribe (2),
        // Grace's publish (3), Ada's subscribe (4), Linus's publish (5).
        let declared = engine_tracks(&rig.link).await.unwrap();
        let publishers: Vec<TransportId> = declared.iter().filter(|t| !t.1.is_empty()).map(|t| t.0).collect();
        assert_eq!(publishers, vec![1, 3, 5], "{declared:?}");
        let (ada, grace, linus) = (1, 3, 5);

        // Levels as the engine reports them every 200 ms (here every 50 ms, for 1.5 s).
        async fn levels(rig: &Rig, of: &[(TransportId, u8)]) {
            for _ in 0..30 {
                let levels = of.iter().map(|&(t, l)| (t, 1, l)).collect();
                rig.hub.send(HubMsg::Engine(Event::AudioLevels { levels })).unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            rig.settle().await;
        }
        async fn speaker(c: &mut Client) -> Option<Value> {
            let mut last = None;
            while let Ok(m) = c.rx.try_recv() {
                let m = serde_json::to_value(m).unwrap();
                if m["type"] == "active-speaker" {
                    last = Some(m["id"].clone());
                }
            }
            last
        }
        // Linus, alone in another room, talks loudest: Ada talks in this room.
        levels(&rig, &[(ada, 20), (grace, 127), (linus, 5)]).await;
        assert_eq!(speaker(&mut a).await, Some(Value::from("p1")));
        assert_eq!(speaker(&mut b).await, Some(Value::from("p1")));
        assert_eq!(speaker(&mut other).await, Some(Value::from("p3")), "rooms are separate");
        // Ada stops, Grace talks.
        levels(&rig, &[(ada, 127), (grace, 30)]).await;
        assert_eq!(speaker(&mut a).await, Some(Value::from("p2")));
        assert_eq!(speaker(&mut b).await, Some(Value::from("p2")));
        // Silence changes nothing; a newcomer hears who is speaking.
        levels(&rig, &[(ada, 127), (grace, 127)]).await;
        assert_eq!(speaker(&mut a).await, None);
        let (mut c, _) = rig.join("r", "Margaret", false).await;
        rig.settle().await;
        let mut got = None;
        while let Ok(m) = c.rx.try_recv() {
            let m = serde_json::to_value(m).unwrap();
            if m["type"] == "active-speaker" {
                got = Some(m["id"].clone());
            }
        }
        assert_eq!(got, Some(Value::from("p2")));
        // The speaker leaves: nobody is speaking.
        b.send(serde_json::json!({"type": "leave"}));
        rig.settle().await;
        assert_eq!(speaker(&mut a).await, Some(Value::Null));
    }

    #[tokio::test]
    async fn send_caps_go_to_the_participants_subscribe_transport() {
        let mut rig = rig(ModePolicy { sfu_only: true, ..ModePolicy::default() }).await;
        let (a, _) = rig.join("r", "Ada", false).await;
        let (_b, joined) = rig.join("r", "Grace", false).await;
        let grace = joined["participant"].as_str().unwrap().to_string();
        a.send(serde_json::json!({"type": "publish", "sdp": CHROME_OFFER}));
        rig.settle().await;
        let cap = |id: &str, room: &str, bps| {
            let (id, room) = (id.to_string(), room.to_string());
            move |reply| HubMsg::SendCap { room, id, bps, reply }
        };
        assert_eq!(ask(&rig, cap(&grace, "r", 250_000)).await, Ok(()));
        assert_eq!(ask(&rig, cap(&grace, "r", 0)).await, Ok(()));
        assert!(matches!(ask(&rig, cap("p1", "r", 250_000)).await, Err(SendCapError::NoSubscribeConnection(_))), "Ada receives nothing yet");
        assert!(matches!(ask(&rig, cap("p9", "r", 1)).await, Err(SendCapError::NotFound(..))));
        assert!(matches!(ask(&rig, cap(&grace, "other", 1)).await, Err(SendCapError::NotFound(..))));
        assert!(matches!(ask(&rig, cap("bogus", "r", 1)).await, Err(SendCapError::NotFound(..))));
    }

    #[tokio::test]
    async fn an_engine_restart_reinstalls_every_transport_and_keeps_everyone_in_the_room() {
        let mut rig = rig(ModePolicy::default()).await;
        let (mut a, _) = rig.join("r", "Ada", false).await;
        let (mut b, _) = rig.join("r", "Grace", false).await;
        a.send(serde_json::json!({"type": "publish", "sdp": simulcast_offer()}));
        rig.settle().await;
        let _ = publish_and_subscribe(&rig, &mut [&mut b], CHROME_OFFER).await;
        let _ = publish_and_subscribe(&rig, &mut [&mut a], &simulcast_offer()).await;
        rig.settle().await;
        let before = engine_transports(&rig.link).await.unwrap();
        assert_eq!(before.len(), 4, "a publish and a subscribe transport each: {before:?}");
        let tracks_before = engine_tracks(&rig.link).await.unwrap();
        assert_eq!(tracks_before.iter().map(|t| t.2.len()).sum::<usize>(), 4, "two tracks each way: {tracks_before:?}");

        let engine = rig.engine.take().unwrap();
        let (socket, port) = (engine.socket.clone(), engine.workers[0].addr.port());
        engine.stop();
        // While the engine is away requests fail at once, and the hub carries on.
        assert!(rig.link.request(Request::Stats).await.is_err());
        a.send(serde_json::json!({"type": "chat", "text": "still here"}));
        for x in [&mut a, &mut b] {
            let mut m = x.next().await;
            while m["type"] != "chat" {
                m = x.next().await;
            }
            assert_eq!(m["text"], "still here");
        }

        // A new engine on the same socket and port: the hub re-installs the same transports.
        let cfg = EngineConfig { workers: 1, pin: false, socket, port_base: port, ..Default::default() };
        rig.engine = Some(Engine::start(&cfg).expect("engine restarts"));
        let mut after = None;
        for _ in 0..100 {
            after = engine_transports(&rig.link).await.filter(|t| t.len() == before.len());
            if after.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(after.as_ref(), Some(&before));
        // ...with the same tracks (simulcast included) and subscriptions.
        let mut tracks_after = None;
        for _ in 0..100 {
            tracks_after = engine_tracks(&rig.link).await.filter(|t| *t == tracks_before);
            if tracks_after.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(tracks_after.as_ref(), Some(&tracks_before));
        rig.settle().await;
        assert_eq!(ask(&rig, HubMsg::Rooms).await[0].participants.len(), 2);
    }
}
