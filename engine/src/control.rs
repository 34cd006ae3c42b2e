//! The engine's end of the control socket: accepts connections from the control daemon (and tools),
//! decodes requests, turns them into worker commands, and pushes worker events back.
//!
//! Each connection gets its own thread (there are one or two). The control thread keeps the
//! engine-wide view that no single worker has: which worker holds which transport, and every
//! subscription, so that removing a transport also removes the routes other workers hold for it.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use switchyard_protocol::{
    EngineStats, ErrorCode, Event, FrameKind, FrameReader, Reply, Request, TrackKind, TransportId, WorkerInfo,
    WorkerStats, VERSION,
};
use switchyard_udp::Waker;

use crate::forwarder::{CommandError, Dest, TrackSpec};
use crate::streams::SubscriptionSpec;
use crate::stats::WorkerCounters;
use crate::worker::{Command, Done, Op};

/// Most subscribers one stream may have on one engine.
pub const MAX_SUBSCRIBERS_PER_STREAM: usize = 1000;
const WORKER_REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// The control thread's handle on one worker.
pub struct WorkerHandle {
    /// Where it listens.
    pub info: WorkerInfo,
    /// Its command queue.
    pub commands: Sender<Command>,
    /// Wakes it so it sees a command at once.
    pub waker: Waker,
    /// Its counters.
    pub counters: Arc<WorkerCounters>,
}

/// A track as the control daemon declared it (what a subscription to it needs to know).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TrackDecl {
    kind: TrackKind,
    clock_rate: u32,
    layers: u8,
}

#[derive(Default)]
struct Registry {
    /// transport -> worker
    transports: HashMap<TransportId, u16>,
    /// (publisher, track) -> its declaration
    tracks: HashMap<(TransportId, u32), TrackDecl>,
    /// (publisher, track, subscriber)
    subscriptions: HashSet<(TransportId, u32, TransportId)>,
}

type EventTarget = Arc<Mutex<UnixStream>>;

/// State shared by the connection threads.
pub struct ControlState {
    workers: Vec<WorkerHandle>,
    io: String,
    registry: Mutex<Registry>,
    event_target: Mutex<Option<EventTarget>>,
    /// Every open control connection by a serial number, so stopping the engine can close them.
    clients: Mutex<(u64, HashMap<u64, UnixStream>)>,
}

/// Keeps a connection in `ControlState::clients` while its thread runs.
struct Registered<'a>(&'a ControlState, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock(&self.0.clients).1.remove(&self.1);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection thread must not take the engine down with it: the data is still consistent
    // because every update is a single insert or remove.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ControlState {
    /// Control state over the spawned workers.
    pub fn new(workers: Vec<WorkerHandle>, io: String) -> ControlState {
        ControlState { workers, io, registry: Mutex::default(), event_target: Mutex::default(), clients: Mutex::default() }
    }

    /// Closes every control connection (the engine is stopping): clients see the socket close, as
    /// they would if the process exited.
    pub fn close_clients(&self) {
        for (_, c) in lock(&self.clients).1.drain() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn worker(&self, w: u16) -> Result<&WorkerHandle, CommandError> {
        self.workers
            .get(w as usize)
            .ok_or_else(|| (ErrorCode::UnknownWorker, format!("no worker {w}; the engine has {}", self.workers.len())))
    }

    fn run(&self, w: u16, op: Op) -> Result<Done, CommandError> {
        let worker = self.worker(w)?;
        let (tx, rx) = bounded(1);
        worker
            .commands
            .send(Command { op, reply: tx })
            .map_err(|_| (ErrorCode::Internal, format!("worker {w} has stopped")))?;
        worker.waker.wake();
        rx.recv_timeout(WORKER_REPLY_TIMEOUT)
            .map_err(|_| (ErrorCode::Internal, format!("worker {w} did not answer")))?
    }

    fn worker_of(&self, id: TransportId) -> Result<u16, CommandError> {
        lock(&self.registry)
            .transports
            .get(&id)
            .copied()
            .ok_or_else(|| (ErrorCode::UnknownTransport, format!("no transport {id}")))
    }

    /// Carries out one request (after Hello).
    pub fn handle(&self, req: Request) -> Reply {
        match self.handle_inner(req) {
            Ok(r) => r,
            Err((code, message)) => Reply::Error { code, message },
        }
    }

    fn handle_inner(&self, req: Request) -> Result<Reply, CommandError> {
        match req {
            Request::Hello { .. } => Err((ErrorCode::Invalid, "Hello was already received on this connection".into())),
            Request::AddTransport { transport, worker, ufrag, pwd } => {
                let w = match worker {
                    Some(w) => {
                        self.worker(w)?;
                        w
                    }
                    None => self.least_loaded(),
                };
                if lock(&self.registry).transports.contains_key(&transport) {
                    return Err((ErrorCode::Duplicate, format!("transport {transport} already exists")));
                }
                self.run(w, Op::AddTransport { id: transport, ufrag, pwd })?;
                lock(&self.registry).transports.insert(transport, w);
                Ok(Reply::TransportAdded { worker: w, addr: self.worker(w)?.info.addr })
            }
            Request::RemoveTransport { transport } => {
                let w = self.worker_of(transport)?;
                let subs: Vec<_> = lock(&self.registry)
                    .subscriptions
                    .iter()
                    .filter(|(p, _, s)| *p == transport || *s == transport)
                    .copied()
                    .collect();
                for (p, track, s) in subs {
                    self.unsubscribe(p, track, s)?;
                }
                self.run(w, Op::RemoveTransport { id: transport })?;
                let mut reg = lock(&self.registry);
                reg.transports.remove(&transport);
                reg.tracks.retain(|(p, _), _| *p != transport);
                Ok(Reply::Ok)
            }
            Request::SetSrtp { transport, profile, inbound, outbound } => {
                let w = self.worker_of(transport)?;
                self.run(w, Op::SetSrtp { id: transport, profile, inbound, outbound })?;
                Ok(Reply::Ok)
            }
            Request::ResumeSrtp { transport, indexes } => {
                let w = self.worker_of(transport)?;
                self.run(w, Op::ResumeSrtp { id: transport, indexes })?;
                Ok(Reply::Ok)
            }
            Request::SetExtensions { transport, ext } => {
                let w = self.worker_of(transport)?;
                self.run(w, Op::SetExtensions { id: transport, ext })?;
                Ok(Reply::Ok)
            }
            Request::SetPreferences { publisher, track, subscriber, max_height } => {
                let sw = self.worker_of(subscriber)?;
                self.run(sw, Op::SetPreferences { subscriber, publisher, track, max_height })?;
                Ok(Reply::Ok)
            }
            Request::SetSendCap { transport, bps } => {
                let w = self.worker_of(transport)?;
                self.run(w, Op::SetSendCap { id: transport, bps })?;
                Ok(Reply::Ok)
            }
            Request::AddTrack { publisher, track, kind, mid, clock_rate, payload_type, feedback, layers } => {
                let w = self.worker_of(publisher)?;
                let decl = TrackDecl { kind, clock_rate, layers: layers.len() as u8 };
                let spec = TrackSpec { track, kind, mid, clock_rate, payload_type, feedback, layers };
                self.run(w, Op::AddTrack { publisher, spec })?;
                lock(&self.registry).tracks.insert((publisher, track), decl);
                Ok(Reply::Ok)
            }
            Request::RemoveTrack { publisher, track } => {
                let w = self.worker_of(publisher)?;
                self.track(publisher, track)?;
                let subs: Vec<_> = lock(&self.registry)
                    .subscriptions
                    .iter()
                    .filter(|(p, t, _)| *p == publisher && *t == track)
                    .copied()
                    .collect();
                for (p, t, s) in subs {
                    self.unsubscribe(p, t, s)?;
                }
                self.run(w, Op::RemoveTrack { publisher, track })?;
                lock(&self.registry).tracks.remove(&(publisher, track));
                Ok(Reply::Ok)
            }
            Request::Subscribe { publisher, track, subscriber, out_ssrc, out_rtx_ssrc, rtx_payload_type } => {
                if publisher == subscriber {
                    return Err((ErrorCode::Invalid, "a transport cannot subscribe to its own stream".into()));
                }
                let pw = self.worker_of(publisher)?;
                let sw = self.worker_of(subscriber)?;
                let decl = self.track(publisher, track)?;
                let dest = if pw == sw { Dest::Local(subscriber) } else { Dest::Remote { worker: sw, transport: subscriber } };
                let up = if pw == sw { Dest::Local(publisher) } else { Dest::Remote { worker: pw, transport: publisher } };
                let spec = SubscriptionSpec {
                    publisher,
                    publisher_at: up,
                    track,
                    kind: decl.kind,
                    clock_rate: decl.clock_rate,
                    layers: decl.layers,
                    out_ssrc,
                    out_rtx_ssrc,
                    rtx_payload_type,
                };
                // The subscriber's state first, so the first routed packet finds it.
                self.run(sw, Op::AddSubscription { subscriber, spec })?;
                if let Err(e) = self.run(pw, Op::AddRoute { publisher, track, dest, limit: MAX_SUBSCRIBERS_PER_STREAM }) {
                    // Undo so a failed subscribe changes nothing.
                    let _ = self.run(sw, Op::RemoveSubscription { subscriber, publisher, track });
                    return Err(e);
                }
                lock(&self.registry).subscriptions.insert((publisher, track, subscriber));
                Ok(Reply::Ok)
            }
            Request::Unsubscribe { publisher, track, subscriber } => {
                self.unsubscribe(publisher, track, subscriber)?;
                Ok(Reply::Ok)
            }
            Request::DtlsOut { transport, datagram } => {
                let w = self.worker_of(transport)?;
                self.run(w, Op::DtlsOut { id: transport, datagram })?;
                Ok(Reply::Ok)
            }
            Request::RequestKeyframe { publisher, track } => {
                let w = self.worker_of(publisher)?;
                self.track(publisher, track)?;
                self.run(w, Op::RequestKeyframe { publisher, track })?;
                Ok(Reply::Ok)
            }
            Request::BindRemote { transport, addr } => {
                let w = self.worker_of(transport)?;
                self.run(w, Op::BindRemote { id: transport, addr })?;
                Ok(Reply::Ok)
            }
            Request::Stats => Ok(Reply::Stats(self.stats())),
            Request::Snapshot => {
                let mut all = Vec::new();
                for w in 0..self.workers.len() as u16 {
                    if let Done::Snapshot(mut v) = self.run(w, Op::Snapshot)? {
                        all.append(&mut v);
                    }
                }
                all.sort_by_key(|t| t.transport);
                Ok(Reply::Snapshot(all))
            }
        }
    }

    fn track(&self, publisher: TransportId, track: u32) -> Result<TrackDecl, CommandError> {
        lock(&self.registry)
            .tracks
            .get(&(publisher, track))
            .copied()
            .ok_or_else(|| (ErrorCode::UnknownTrack, format!("no track {track} on transport {publisher}")))
    }

    fn unsubscribe(&self, publisher: TransportId, track: u32, subscriber: TransportId) -> Result<(), CommandError> {
        let pw = self.worker_of(publisher)?;
        let sw = self.worker_of(subscriber)?;
        self.run(pw, Op::RemoveRoute { publisher, track, subscriber })?;
        self.run(sw, Op::RemoveSubscription { subscriber, publisher, track })?;
        lock(&self.registry).subscriptions.remove(&(publisher, track, subscriber));
        Ok(())
    }

    fn least_loaded(&self) -> u16 {
        let reg = lock(&self.registry);
        let mut load = vec![0usize; self.workers.len()];
        for w in reg.transports.values() {
            if let Some(l) = load.get_mut(*w as usize) {
                *l += 1;
            }
        }
        load.iter().enumerate().min_by_key(|(_, l)| **l).map(|(i, _)| i as u16).unwrap_or(0)
    }

    /// Counters and latency of every worker.
    pub fn stats(&self) -> EngineStats {
        let reg = lock(&self.registry);
        let mut per_worker = vec![0u32; self.workers.len()];
        for w in reg.transports.values() {
            if let Some(c) = per_worker.get_mut(*w as usize) {
                *c += 1;
            }
        }
        drop(reg);
        let workers = self
            .workers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let latency = match self.run(i as u16, Op::Latency) {
                    Ok(Done::Latency(l)) => l,
                    _ => Default::default(),
                };
                WorkerStats {
                    index: i as u16,
                    transports: per_worker[i],
                    counters: h.counters.counters_named(),
                    drops: h.counters.drops_named(),
                    latency,
                }
            })
            .collect();
        EngineStats { io: self.io.clone(), workers }
    }

    fn hello_reply(&self) -> Reply {
        Reply::Hello {
            version: VERSION,
            io: self.io.clone(),
            workers: self.workers.iter().map(|w| w.info.clone()).collect(),
            pid: std::process::id(),
        }
    }
}

/// Accepts connections until `stop` is set.
pub fn serve(listener: UnixListener, state: Arc<ControlState>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        match conn {
            Ok(stream) => {
                let state = Arc::clone(&state);
                let spawned = std::thread::Builder::new()
                    .name("engine-ctl-conn".into())
                    .spawn(move || connection(stream, state));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "could not start a control connection thread");
                }
            }
            Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
        }
    }
}

/// Forwards worker events to the connection that asked for them; drops them while there is none.
pub fn forward_events(events: Receiver<Event>, state: Arc<ControlState>) {
    for ev in events {
        let target = lock(&state.event_target).clone();
        if let Some(t) = target {
            let bytes = ev.frame().encode();
            if lock(&t).write_all(&bytes).is_err() {
                let mut cur = lock(&state.event_target);
                if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, &t)) {
                    *cur = None;
                }
            }
        }
    }
}

fn connection(stream: UnixStream, state: Arc<ControlState>) {
    let writer = match stream.try_clone() {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => {
            tracing::warn!(error = %e, "control connection: could not clone the socket");
            return;
        }
    };
    let _registered = stream.try_clone().ok().map(|c| {
        let mut clients = lock(&state.clients);
        clients.0 += 1;
        let id = clients.0;
        clients.1.insert(id, c);
        Registered(&state, id)
    });
    let mut stream = stream;
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut greeted = false;
    let send = |reply: Reply, id: u32| -> bool { lock(&writer).write_all(&reply.frame(id).encode()).is_ok() };
    loop {
        let n = match stream.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        reader.feed(&buf[..n]);
        while let Some(frame) = reader.next_frame() {
            let (id, reply) = match frame {
                Err((id, e)) => (id, Reply::error(ErrorCode::BadFrame, e.to_string())),
                Ok(f) if f.kind != FrameKind::Request => {
                    (f.id, Reply::error(ErrorCode::BadFrame, "the engine only accepts requests"))
                }
                Ok(f) => match Request::decode(&f.body) {
                    Err(e @ switchyard_protocol::DecodeError::UnknownTag { .. }) => {
                        (f.id, Reply::error(ErrorCode::UnknownMessage, e.to_string()))
                    }
                    Err(e) => (f.id, Reply::error(ErrorCode::BadFrame, e.to_string())),
                    Ok(Request::Hello { version, client, events }) if !greeted => {
                        if version != VERSION {
                            (
                                f.id,
                                Reply::error(
                                    ErrorCode::VersionMismatch,
                                    format!("engine speaks control protocol {VERSION}, {client} speaks {version}"),
                                ),
                            )
                        } else {
                            greeted = true;
                            tracing::info!(%client, events, "control client connected");
                            if events {
                                *lock(&state.event_target) = Some(Arc::clone(&writer));
                            }
                            (f.id, state.hello_reply())
                        }
                    }
                    Ok(_) if !greeted => (f.id, Reply::error(ErrorCode::HelloFirst, "send Hello first")),
                    Ok(req) => (f.id, state.handle(req)),
                },
            };
            if !send(reply, id) {
                return;
            }
        }
    }
    let mut cur = lock(&state.event_target);
    if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, &writer)) {
        *cur = None;
    }
}
