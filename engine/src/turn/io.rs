//! The glue between a worker loop and its [`TurnServer`]: the TURN listener and the relay sockets
//! are extra sockets of the worker's `UdpIo`, and the server's output goes into the worker's send
//! batch.
//!
//! Everything happens inside the worker's receive callback except what needs the `UdpIo` itself
//! (borrowed by the receive call then): an Allocate request is copied aside and answered in
//! [`WorkerTurn::poll`], right after the batch, when a relay socket can be bound; sockets of
//! allocations that ended are closed in [`WorkerTurn::close_relays`] after the batch that might
//! still name them was sent.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Instant;

use switchyard_udp::{Config, SendBatch, SocketId, UdpIo};

use super::server::{Relay, RelayWant, TurnOutput, TurnServer};
use super::shared::TurnShared;
use crate::stats::{DropReason, WorkerCounters};

/// Ports tried per Allocate before answering 508 (the range may be mostly in use).
const MAX_PORT_TRIES: usize = 256;
/// Kernel buffer of a relay socket: one allocation carries one call's media.
const RELAY_BUFFER: usize = 256 << 10;
/// Allocate requests set aside per receive batch (a batch holds at most 1024 datagrams).
const MAX_DEFERRED: usize = 1024;

/// Binds the TURN listener of every worker on `bind:port` with `SO_REUSEPORT`, so the kernel
/// spreads clients over the workers by 5-tuple hash (and keeps each client on one). Port 0: the
/// kernel picks one for the first worker and the others join it. Fails if another process
/// already listens there (checked first with a plain bind, so a second engine cannot silently join
/// the group and take half the clients). Returns each worker's listener id and the address.
pub fn bind_listeners(ios: &mut [UdpIo], bind: IpAddr, port: u16, buffer: usize) -> io::Result<(Vec<SocketId>, SocketAddr)> {
    let mut addr = SocketAddr::new(bind, port);
    if port != 0 {
        drop(UdpSocket::bind(addr)?);
    }
    let cfg = Config { recv_buffer_bytes: buffer, send_buffer_bytes: buffer, reuse_port: true, ..Config::default() };
    let mut ids = Vec::with_capacity(ios.len());
    for io in ios.iter_mut() {
        match io.add_socket(addr, &cfg).and_then(|id| Ok((id, io.socket_addr(id)?))) {
            Ok((id, a)) => {
                addr = a;
                ids.push(id);
            }
            Err(e) => {
                // Leave no half-bound group behind.
                for (io, id) in ios.iter_mut().zip(ids) {
                    io.remove_socket(id);
                }
                return Err(e);
            }
        }
    }
    Ok((ids, addr))
}

/// One worker's TURN server and the state its I/O needs.
pub struct WorkerTurn {
    server: TurnServer,
    shared: Arc<TurnShared>,
    listener: SocketId,
    counters: Arc<WorkerCounters>,
    deferred: Vec<(Instant, SocketAddr, Vec<u8>)>,
    closing: Vec<SocketId>,
    relay_cfg: Config,
}

impl std::fmt::Debug for WorkerTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerTurn").field("server", &self.server).field("listener", &self.listener).finish()
    }
}

/// [`TurnOutput`] into a worker's send batch; relay sockets can be opened only when `io` is given.
struct BatchOut<'a> {
    batch: &'a mut SendBatch,
    received: &'a mut Vec<Instant>,
    now: Instant,
    closing: &'a mut Vec<SocketId>,
    io: Option<&'a mut UdpIo>,
    shared: &'a TurnShared,
    relay_cfg: &'a Config,
}

impl TurnOutput for BatchOut<'_> {
    #[inline]
    fn send<F: FnOnce(&mut [u8]) -> Option<usize>>(&mut self, via: SocketId, to: SocketAddr, fill: F) -> bool {
        let mut filled = false;
        let queued = self.batch.push_with_via(via, to, |b| {
            let n = fill(b);
            filled = n.is_some();
            n
        });
        if queued && filled {
            self.received.push(self.now);
        }
        queued && filled
    }

    fn open_relay(&mut self, want: RelayWant) -> Option<Relay> {
        let io = self.io.as_deref_mut()?;
        let shared = self.shared;
        let ip = shared.relay_ip;
        let relay = |io: &mut UdpIo, id: SocketId, reservation| match io.socket_addr(id) {
            Ok(addr) => Some(Relay { id, addr, reservation }),
            Err(_) => {
                io.remove_socket(id);
                None
            }
        };
        if let RelayWant::Reserved(token) = want {
            let socket = shared.take_reservation(&token, self.now)?;
            let id = io
                .adopt_socket(socket)
                .inspect_err(|e| tracing::warn!(error = %e, "cannot use a reserved TURN relay socket"))
                .ok()?;
            return relay(io, id, None);
        }
        let (even, reserve_next) = match want {
            RelayWant::Even { reserve_next } => (true, reserve_next),
            _ => (false, false),
        };
        let last = shared.cfg.relay_ports.1;
        // With R, the next port must be in the range too.
        let candidates = shared.relay_port_candidates(even).filter(|&p| !reserve_next || p < last);
        for port in candidates.take(MAX_PORT_TRIES) {
            let id = match io.add_socket(SocketAddr::new(ip, port), self.relay_cfg) {
                Ok(id) => id,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => {
                    tracing::warn!(error = %e, port, "cannot bind a TURN relay socket");
                    return None;
                }
            };
            if !reserve_next {
                return relay(io, id, None);
            }
            // EVEN-PORT with R: hold port + 1 as well, for the Allocate that brings the token.
            match port.checked_add(1).map(|next| UdpSocket::bind(SocketAddr::new(ip, next))) {
                Some(Ok(held)) => {
                    let token = shared.new_token();
                    shared.reserve(token, held, self.now);
                    return relay(io, id, Some(token));
                }
                _ => {
                    io.remove_socket(id);
                }
            }
        }
        None
    }

    fn close_relay(&mut self, id: SocketId) {
        self.closing.push(id);
    }
}

impl WorkerTurn {
    /// The TURN server of a worker whose listener is `listener` (see [`bind_listeners`]).
    pub fn new(shared: Arc<TurnShared>, counters: Arc<WorkerCounters>, listener: SocketId) -> WorkerTurn {
        WorkerTurn {
            server: TurnServer::new(Arc::clone(&shared), Arc::clone(&counters), listener),
            shared,
            listener,
            counters,
            deferred: Vec::new(),
            closing: Vec::new(),
            relay_cfg: Config { recv_buffer_bytes: RELAY_BUFFER, send_buffer_bytes: RELAY_BUFFER, ..Config::default() },
        }
    }

    /// The sans-I/O server.
    pub fn server(&self) -> &TurnServer {
        &self.server
    }

    /// Handles a datagram that arrived on extra socket `via` (the listener or a relay socket),
    /// inside the worker's receive callback; replies and relayed data go into `batch`.
    #[inline]
    pub fn on_datagram(
        &mut self,
        now: Instant,
        via: SocketId,
        from: SocketAddr,
        buf: &[u8],
        batch: &mut SendBatch,
        received: &mut Vec<Instant>,
    ) {
        let WorkerTurn { server, shared, listener, counters, deferred, closing, relay_cfg } = self;
        if via == *listener && TurnServer::is_allocate(buf) {
            if deferred.len() < MAX_DEFERRED {
                deferred.push((now, from, buf.to_vec()));
            } else {
                counters.drop_one(DropReason::SendBatchFull);
            }
            return;
        }
        let mut out = BatchOut { batch, received, now, closing, io: None, shared, relay_cfg };
        if via == *listener {
            server.handle_client(now, from, buf, &mut out);
        } else {
            server.handle_peer(now, via, from, buf, &mut out);
        }
    }

    /// After a receive batch (and its flush): answers the Allocate requests set aside, binding
    /// relay sockets into `io`, and sweeps expired state. Leaves replies in `batch`.
    pub fn poll(&mut self, now: Instant, io: &mut UdpIo, batch: &mut SendBatch, received: &mut Vec<Instant>) {
        let WorkerTurn { server, shared, counters, deferred, closing, relay_cfg, .. } = self;
        let mut out = BatchOut { batch, received, now, closing, io: Some(io), shared, relay_cfg };
        for (at, from, request) in deferred.drain(..) {
            if out.batch.is_full() {
                counters.drop_one(DropReason::SendBatchFull);
                continue;
            }
            server.handle_client(at, from, &request, &mut out);
        }
        server.tick(now, &mut out);
    }

    /// Whether relay sockets wait to be closed.
    pub fn has_closing(&self) -> bool {
        !self.closing.is_empty()
    }

    /// Closes the relay sockets of allocations that ended (call after the batch was sent).
    pub fn close_relays(&mut self, io: &mut UdpIo) {
        for id in self.closing.drain(..) {
            io.remove_socket(id);
        }
    }
}

/// The TURN server's start-up state: shared state and each worker's listener.
#[derive(Debug)]
pub struct Started {
    /// Shared by the workers' servers.
    pub shared: Arc<TurnShared>,
    /// Worker i's listener socket.
    pub listeners: Vec<SocketId>,
    /// Where the TURN server listens.
    pub addr: SocketAddr,
}

impl Started {
    /// Worker `i`'s TURN server.
    pub fn worker(&self, i: usize, counters: &Arc<WorkerCounters>) -> WorkerTurn {
        let listener = self.listeners.get(i).copied().unwrap_or(SocketId::PRIMARY);
        WorkerTurn::new(Arc::clone(&self.shared), Arc::clone(counters), listener)
    }
}

/// Checks the configuration and binds every worker's TURN listener (see [`bind_listeners`]).
pub fn start(ios: &mut [UdpIo], bind: IpAddr, cfg: &super::TurnConfig, buffer: usize) -> Result<Started, crate::StartError> {
    if bind.is_unspecified() {
        return Err(crate::StartError::Config(format!(
            "the TURN server advertises --bind ({bind}) as its relayed address: give a concrete address, or --no-turn"
        )));
    }
    if cfg.relay_ports.0 == 0 || cfg.relay_ports.0 > cfg.relay_ports.1 {
        return Err(crate::StartError::Config(format!("invalid TURN relay port range {:?}", cfg.relay_ports)));
    }
    if cfg.realm.is_empty() || cfg.secret.is_empty() {
        return Err(crate::StartError::Config("the TURN realm and secret must not be empty".into()));
    }
    let (listeners, addr) = bind_listeners(ios, bind, cfg.port, buffer)
        .map_err(|source| crate::StartError::Bind { worker: 0, addr: SocketAddr::new(bind, cfg.port), source })?;
    let mut own_ports: Vec<u16> = ios.iter().filter_map(|io| io.local_addr().ok()).map(|a| a.port()).collect();
    own_ports.push(addr.port());
    let shared = Arc::new(TurnShared::new(cfg.clone(), bind).with_own_ports(own_ports));
    tracing::info!(%addr, relay_ports = ?cfg.relay_ports, realm = %cfg.realm, "TURN server listening");
    if cfg.secret == super::DEFAULT_SECRET {
        tracing::warn!("TURN uses the built-in development secret: set --turn-secret (or SWITCHYARD_TURN_SECRET) in production");
    }
    Ok(Started { shared, listeners, addr })
}
