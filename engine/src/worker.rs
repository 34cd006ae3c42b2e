//! A worker: one pinned thread that owns one UDP socket and a [`Forwarder`], and runs the loop
//! receive batch → process in place → send batch, between hand-offs from other workers and commands
//! from the control thread. The loop is the thin I/O shell around the sans-I/O forwarder.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use switchyard_protocol::{Event, HeaderExtIds, KeySalt, LatencySummary, TransportId, TransportInfo};
use switchyard_udp::{Pass, SendBatch, SocketId, UdpIo};

use crate::forwarder::{CommandError, Dest, Forwarder, Output, TrackSpec, TICK};
use crate::handoff::{Handoff, HandoffMesh};
use crate::latency::Latency;
use crate::stats::{Counter, DropReason, WorkerCounters};
use crate::streams::SubscriptionSpec;

/// Outgoing datagrams a worker gathers before one `sendmmsg` / io_uring submission. Large enough that a
/// stream with hundreds of subscribers fits in one batch.
pub const SEND_BATCH: usize = 1024;
/// Shared packet buffers per worker for cross-worker fan-out.
pub const POOL_SIZE: usize = 4096;
/// How long an idle worker sleeps before looking at its command queue anyway.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// A change the control thread asks a worker to make.
#[derive(Debug)]
pub enum Op {
    /// See `Request::AddTransport`.
    AddTransport { id: TransportId, ufrag: String, pwd: String },
    /// See `Request::RemoveTransport`.
    RemoveTransport { id: TransportId },
    /// See `Request::SetSrtp`.
    SetSrtp { id: TransportId, profile: u16, inbound: KeySalt, outbound: KeySalt },
    /// See `Request::ResumeSrtp`.
    ResumeSrtp { id: TransportId, indexes: Vec<(u32, u8, u64)> },
    /// See `Request::SetExtensions`.
    SetExtensions { id: TransportId, ext: HeaderExtIds },
    /// See `Request::SetSendCap`.
    SetSendCap { id: TransportId, bps: u64 },
    /// Declare a track a local transport publishes.
    AddTrack { publisher: TransportId, spec: TrackSpec },
    /// Forget a track.
    RemoveTrack { publisher: TransportId, track: u32 },
    /// Send a local publisher's track to `dest`.
    AddRoute { publisher: TransportId, track: u32, dest: Dest, limit: usize },
    /// Stop sending a track to a subscriber.
    RemoveRoute { publisher: TransportId, track: u32, subscriber: TransportId },
    /// Create a local subscriber's subscription state.
    AddSubscription { subscriber: TransportId, spec: SubscriptionSpec },
    /// Remove a local subscriber's subscription state.
    RemoveSubscription { subscriber: TransportId, publisher: TransportId, track: u32 },
    /// See `Request::SetPreferences`.
    SetPreferences { subscriber: TransportId, publisher: TransportId, track: u32, max_height: u16 },
    /// See `Request::DtlsOut`.
    DtlsOut { id: TransportId, datagram: Vec<u8> },
    /// Ask a local publisher for a keyframe of a track (through its coalescing requester).
    RequestKeyframe { publisher: TransportId, track: u32 },
    /// See `Request::BindRemote`.
    BindRemote { id: TransportId, addr: SocketAddr },
    /// Report the latency histogram.
    Latency,
    /// Report transports.
    Snapshot,
}

/// What a worker answers.
#[derive(Debug)]
pub enum Done {
    /// Carried out.
    Ok,
    /// The latency summary.
    Latency(LatencySummary),
    /// The transports.
    Snapshot(Vec<TransportInfo>),
}

/// A command and where to send its result.
pub struct Command {
    /// What to do.
    pub op: Op,
    /// One result per command.
    pub reply: Sender<Result<Done, CommandError>>,
}

/// Everything a worker thread needs; built by the engine before spawning.
pub struct Worker {
    /// Worker index.
    pub index: u16,
    /// Its socket.
    pub io: UdpIo,
    /// Its counters (shared with the control thread for reading).
    pub counters: Arc<WorkerCounters>,
    /// Commands from the control thread.
    pub commands: Receiver<Command>,
    /// Hand-off queues between all workers.
    pub mesh: Arc<HandoffMesh>,
    /// Events towards the control daemon.
    pub events: Sender<Event>,
    /// Core to pin to.
    pub core: Option<core_affinity::CoreId>,
    /// Set to stop the loop.
    pub stop: Arc<AtomicBool>,
    /// This worker's TURN server (its listener and relay sockets are extra sockets of `io`), unless
    /// TURN is off.
    pub turn: Option<crate::turn::WorkerTurn>,
}

struct Sink<'a> {
    batch: &'a mut SendBatch,
    received: &'a mut Vec<Instant>,
    mesh: &'a HandoffMesh,
    me: usize,
    to_wake: &'a mut [bool],
    events: &'a Sender<Event>,
}

impl Output for Sink<'_> {
    #[inline]
    fn send<F: FnOnce(&mut [u8]) -> Option<usize>>(&mut self, to: SocketAddr, received: Instant, fill: F) -> bool {
        if self.batch.push_with(to, fill) {
            self.received.push(received);
            true
        } else {
            false
        }
    }

    #[inline]
    fn handoff(&mut self, worker: u16, h: Handoff) -> Result<(), Handoff> {
        let w = worker as usize;
        self.mesh.push(self.me, w, h)?;
        if let Some(flag) = self.to_wake.get_mut(w) {
            *flag = true;
        }
        Ok(())
    }

    fn event(&mut self, ev: Event) -> bool {
        match self.events.try_send(ev) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

impl Worker {
    /// Runs the loop until `stop` is set.
    pub fn run(self) {
        let Worker { index, mut io, counters, commands, mesh, events, core, stop, mut turn } = self;
        if let Some(core) = core {
            if !core_affinity::set_for_current(core) {
                tracing::warn!(worker = index, core = core.id, "could not pin worker to its core");
            }
        }
        let me = index as usize;
        let mut fwd = Forwarder::new(index, Arc::clone(&counters), POOL_SIZE);
        let mut batch = SendBatch::new(SEND_BATCH);
        let mut received: Vec<Instant> = Vec::with_capacity(SEND_BATCH);
        let mut to_wake = vec![false; mesh.workers()];
        let mut latency = Latency::new();
        let mut handoff_start = 0usize;
        let mut last_fanout = 0usize;
        let mut last_tick = Instant::now();
        tracing::info!(worker = index, io = %io.kind(), addr = ?io.local_addr().ok(), "worker started");

        while !stop.load(Ordering::Relaxed) {
            let mut sink = Sink {
                batch: &mut batch,
                received: &mut received,
                mesh: &mesh,
                me,
                to_wake: &mut to_wake,
                events: &events,
            };
            // Commands first: they are rare and a subscriber added now should see the next packet.
            while let Ok(cmd) = commands.try_recv() {
                let result = match cmd.op {
                    Op::Latency => Ok(Done::Latency(latency.summary())),
                    Op::Snapshot => Ok(Done::Snapshot(fwd.snapshot())),
                    op => apply(&mut fwd, op, &mut sink).map(|()| Done::Ok),
                };
                // The control thread may have given up waiting; nothing to do then.
                let _ = cmd.reply.send(result);
            }
            // Packets other workers decrypted for our subscribers.
            while let Some(h) = mesh.pop(me, &mut handoff_start) {
                if sink.batch.is_full() {
                    flush(&mut io, &mut sink, &counters, &mut latency);
                }
                fwd.handle_handoff(h, &mut sink);
            }
            // Periodic media work (NACKs, reports, keyframe repeats, layer choice) while streams exist.
            let streams = fwd.has_streams();
            if streams {
                let t = Instant::now();
                if t.saturating_duration_since(last_tick) >= TICK {
                    last_tick = t;
                    if SEND_BATCH - sink.batch.len() < SEND_BATCH / 4 {
                        flush(&mut io, &mut sink, &counters, &mut latency);
                    }
                    fwd.tick(t, &mut sink);
                }
            }
            if !sink.batch.is_empty() {
                flush(&mut io, &mut sink, &counters, &mut latency);
            }

            io.prepare_sleep();
            let timeout = if mesh.pending(me) || !commands.is_empty() {
                Duration::ZERO
            } else if streams {
                // Wake for the next tick; no extra wake-ups while nothing exists.
                TICK.saturating_sub(Instant::now().saturating_duration_since(last_tick)).min(IDLE_WAIT)
            } else {
                IDLE_WAIT
            };
            let mut now: Option<Instant> = None;
            // Receive no more datagrams than the send batch can take copies of: with fan-out F, a
            // batch of SEND_BATCH / F. The rest wait in the socket for the next turn of the loop.
            let fanout = fwd.max_fanout().max(1);
            if fanout != last_fanout {
                io.set_recv_limit((SEND_BATCH / fanout).max(1));
                last_fanout = fanout;
            }
            let reserve = fanout;
            let res = io.recv_look_ahead(Some(timeout), |buf, from, via, pass| {
                if pass == Pass::Ahead {
                    // The whole batch first: its cache misses overlap (see Forwarder::prefetch_batch).
                    return fwd.look_ahead(&from, buf);
                }
                fwd.prefetch_batch();
                let t = *now.get_or_insert_with(Instant::now);
                if SEND_BATCH - sink.batch.len() < reserve {
                    // Only when the batch already held hand-offs or answers: counted, never silent.
                    counters.drop_one(DropReason::SendBatchFull);
                    return;
                }
                // TURN: the only extra sockets are the TURN listener and relay sockets.
                if via != SocketId::PRIMARY {
                    if let Some(turn) = turn.as_mut() {
                        turn.on_datagram(t, via, from, buf, sink.batch, sink.received);
                    }
                    return;
                }
                fwd.handle_datagram(t, from, buf, &mut sink);
            });
            if let Err(e) = res {
                tracing::warn!(worker = index, error = %e, "receive failed");
            }
            wake_peers(&mesh, sink.to_wake);
            if !sink.batch.is_empty() {
                flush(&mut io, &mut sink, &counters, &mut latency);
            }
            // TURN: Allocates (they bind relay sockets into `io`), expiry, closing relay sockets.
            if let Some(turn) = turn.as_mut() {
                turn.poll(Instant::now(), &mut io, sink.batch, sink.received);
                if !sink.batch.is_empty() {
                    flush(&mut io, &mut sink, &counters, &mut latency);
                }
                turn.close_relays(&mut io);
            }
        }
        tracing::info!(worker = index, "worker stopped");
    }
}

fn wake_peers(mesh: &HandoffMesh, to_wake: &mut [bool]) {
    for (w, flag) in to_wake.iter_mut().enumerate() {
        if *flag {
            *flag = false;
            mesh.wake(w);
        }
    }
}

fn flush(io: &mut UdpIo, sink: &mut Sink<'_>, counters: &WorkerCounters, latency: &mut Latency) {
    let mut bytes = 0u64;
    for i in 0..sink.batch.len() {
        if let Some((_, d)) = sink.batch.get(i) {
            bytes += d.len() as u64;
        }
    }
    let n = sink.batch.len();
    match io.send(sink.batch) {
        Ok(report) => {
            counters.add(Counter::TxPackets, report.sent as u64);
            counters.add(Counter::TxBytes, bytes);
            for _ in 0..report.failed {
                counters.drop_one(DropReason::SendFailed);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "send failed");
            for _ in 0..n {
                counters.drop_one(DropReason::SendFailed);
            }
        }
    }
    let now = Instant::now();
    for r in sink.received.iter() {
        latency.record(now.saturating_duration_since(*r));
    }
    sink.received.clear();
    sink.batch.clear();
}

fn apply(fwd: &mut Forwarder, op: Op, out: &mut Sink<'_>) -> Result<(), CommandError> {
    let now = Instant::now();
    match op {
        Op::AddTransport { id, ufrag, pwd } => fwd.add_transport(id, ufrag, pwd, now),
        Op::RemoveTransport { id } => fwd.remove_transport(id),
        Op::SetSrtp { id, profile, inbound, outbound } => fwd.set_srtp(id, profile, &inbound, &outbound),
        Op::ResumeSrtp { id, indexes } => fwd.resume_srtp(id, &indexes),
        Op::SetExtensions { id, ext } => fwd.set_extensions(id, ext),
        Op::SetSendCap { id, bps } => fwd.set_send_cap(id, bps, now),
        Op::AddTrack { publisher, spec } => fwd.add_track(publisher, spec, now),
        Op::RemoveTrack { publisher, track } => fwd.remove_track(publisher, track),
        Op::AddRoute { publisher, track, dest, limit } => fwd.add_route(publisher, track, dest, limit),
        Op::RemoveRoute { publisher, track, subscriber } => fwd.remove_route(publisher, track, subscriber),
        Op::AddSubscription { subscriber, spec } => {
            if out.batch.is_full() {
                return Err((switchyard_protocol::ErrorCode::Internal, "send batch full".into()));
            }
            fwd.add_subscription(subscriber, spec, now, out)
        }
        Op::RemoveSubscription { subscriber, publisher, track } => fwd.remove_subscription(subscriber, publisher, track),
        Op::SetPreferences { subscriber, publisher, track, max_height } => {
            fwd.set_preferences(subscriber, publisher, track, max_height)
        }
        Op::DtlsOut { id, datagram } => {
            if out.batch.is_full() {
                return Err((switchyard_protocol::ErrorCode::Internal, "send batch full".into()));
            }
            fwd.dtls_out(id, &datagram, now, out)
        }
        Op::RequestKeyframe { publisher, track } => {
            if out.batch.is_full() {
                return Err((switchyard_protocol::ErrorCode::Internal, "send batch full".into()));
            }
            fwd.request_keyframe(publisher, track, now, out)
        }
        Op::BindRemote { id, addr } => fwd.bind_remote(id, addr),
        Op::Latency | Op::Snapshot => Ok(()),
    }
}
