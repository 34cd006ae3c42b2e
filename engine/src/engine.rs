//! Starting and stopping the engine: bind one socket per worker, spawn the pinned workers, and serve
//! the control socket. Used by the `switchyard-engine` binary and by tests that run it in-process.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Sender};
use switchyard_protocol::WorkerInfo;
use switchyard_udp::{IoKind, UdpIo};

use crate::control::{self, ControlState, WorkerHandle};
use crate::handoff::HandoffMesh;
use crate::stats::WorkerCounters;
use crate::worker::{Command, Op, Worker};

/// Events buffered towards the control daemon before the engine starts dropping them.
const EVENT_QUEUE: usize = 65_536;
/// Hand-off queue capacity between each ordered pair of workers.
const HANDOFF_QUEUE: usize = 4096;

/// How to run the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Number of workers (default: one per core).
    pub workers: usize,
    /// Address the workers bind (and advertise as their ICE candidate).
    pub bind: IpAddr,
    /// First UDP port: worker i binds `port_base + i`; 0 lets the kernel choose each port.
    pub port_base: u16,
    /// I/O backend, or `None` to probe (io_uring, else mmsg).
    pub io: Option<IoKind>,
    /// Control socket path.
    pub socket: PathBuf,
    /// Pin each worker to a core.
    pub pin: bool,
    /// Socket receive/send buffer size in bytes.
    pub socket_buffer: usize,
    /// How long a worker whose socket is empty waits for more datagrams before waking (fewer
    /// wake-ups and bigger batches, for up to this much added latency); zero wakes at once.
    pub recv_coalesce: Duration,
    /// The TURN server (`turn/`), or `None` for none (the default here; the binary's default is on).
    pub turn: Option<crate::turn::TurnConfig>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            bind: IpAddr::from([127, 0, 0, 1]),
            port_base: 0,
            io: None,
            socket: PathBuf::from("/run/switchyard/engine.sock"),
            pin: true,
            socket_buffer: 4 << 20,
            recv_coalesce: switchyard_udp::DEFAULT_RECV_COALESCE,
            turn: None,
        }
    }
}

/// A running engine.
pub struct Engine {
    /// Where each worker listens.
    pub workers: Vec<WorkerInfo>,
    /// The I/O backend in use.
    pub io: IoKind,
    /// The control socket path.
    pub socket: PathBuf,
    /// Where the TURN server (and its STUN binding service) listens, if it runs.
    pub turn: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    wakers: Vec<switchyard_udp::Waker>,
    probe: WorkerProbe,
    control: Arc<ControlState>,
}

/// Asks every worker loop whether it is turning, for the systemd watchdog: a worker that has died or
/// is stuck does not answer. Cloneable and independent of the [`Engine`]'s lifetime.
#[derive(Clone)]
pub struct WorkerProbe {
    workers: Vec<(Sender<Command>, switchyard_udp::Waker)>,
}

impl WorkerProbe {
    /// True when every worker answered a no-op command (a latency summary) within `timeout`.
    pub fn alive(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (tx, rx) = bounded(self.workers.len());
        for (commands, waker) in &self.workers {
            if commands.send(Command { op: Op::Latency, reply: tx.clone() }).is_err() {
                return false;
            }
            waker.wake();
        }
        (0..self.workers.len()).all(|_| matches!(rx.recv_deadline(deadline), Ok(Ok(_))))
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A worker socket could not be bound.
    #[error("cannot bind worker {worker} UDP socket on {addr}: {source}")]
    Bind {
        /// Worker index.
        worker: usize,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The control socket could not be created.
    #[error("cannot create the control socket {path}: {source}")]
    ControlSocket {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A thread could not be spawned.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

fn bind_control(path: &Path) -> Result<UnixListener, StartError> {
    let err = |source| StartError::ControlSocket { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
    }
    // A socket file left by a previous run would make bind fail; nobody listens on it any more.
    if path.exists() {
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(listener)
}

impl Engine {
    /// Binds sockets, spawns workers and the control server, and returns once everything listens.
    pub fn start(cfg: &EngineConfig) -> Result<Engine, StartError> {
        if cfg.workers == 0 || cfg.workers > 1024 {
            return Err(StartError::Config(format!("workers must be 1..=1024, not {}", cfg.workers)));
        }
        let udp_cfg = switchyard_udp::Config {
            recv_buffer_bytes: cfg.socket_buffer,
            send_buffer_bytes: cfg.socket_buffer,
            recv_coalesce: cfg.recv_coalesce,
            ..Default::default()
        };
        let mut ios = Vec::with_capacity(cfg.workers);
        let mut kind = None;
        for i in 0..cfg.workers {
            let port = if cfg.port_base == 0 { 0 } else { cfg.port_base.saturating_add(i as u16) };
            let addr = SocketAddr::new(cfg.bind, port);
            let (io, fallback) = UdpIo::bind(addr, cfg.io.or(kind), &udp_cfg)
                .map_err(|source| StartError::Bind { worker: i, addr, source })?;
            if let Some(reason) = fallback {
                tracing::warn!(%reason, "io_uring unavailable: using recvmmsg/sendmmsg");
            }
            kind = Some(io.kind());
            ios.push(io);
        }
        let io_kind = kind.unwrap_or(IoKind::Mmsg);
        tracing::info!(io = %io_kind, workers = cfg.workers, "I/O backend selected");
        // TURN is an extra, not a reason to leave media unserved: a TURN set-up that fails (port in
        // use, no concrete --bind) is logged and the engine runs without it (`Engine::turn` is None).
        let turn = cfg.turn.as_ref().and_then(|tc| {
            crate::turn::io::start(&mut ios, cfg.bind, tc, cfg.socket_buffer)
                .inspect_err(|e| tracing::error!(error = %e, "TURN server not started"))
                .ok()
        });

        let cores = if cfg.pin { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
        let wakers: Vec<_> = ios.iter().map(|io| io.waker()).collect();
        let mesh = Arc::new(HandoffMesh::new(wakers.clone(), HANDOFF_QUEUE));
        let stop = Arc::new(AtomicBool::new(false));
        let (ev_tx, ev_rx) = bounded(EVENT_QUEUE);
        let mut handles = Vec::new();
        let mut probe = WorkerProbe { workers: Vec::new() };
        let mut threads = Vec::new();
        let mut infos = Vec::new();
        for (i, io) in ios.into_iter().enumerate() {
            let addr = io.local_addr().map_err(|source| StartError::Bind { worker: i, addr: SocketAddr::new(cfg.bind, 0), source })?;
            let core = if cores.is_empty() { None } else { Some(cores[i % cores.len()]) };
            let info = WorkerInfo { index: i as u16, addr, core: core.map(|c| c.id as u16) };
            let counters = Arc::new(WorkerCounters::default());
            let (cmd_tx, cmd_rx) = unbounded();
            probe.workers.push((cmd_tx.clone(), io.waker()));
            handles.push(WorkerHandle {
                info: info.clone(),
                commands: cmd_tx,
                waker: io.waker(),
                counters: Arc::clone(&counters),
            });
            infos.push(info);
            let worker_turn = turn.as_ref().map(|t| t.worker(i, &counters));
            let worker = Worker {
                index: i as u16,
                io,
                counters,
                commands: cmd_rx,
                mesh: Arc::clone(&mesh),
                events: ev_tx.clone(),
                core,
                stop: Arc::clone(&stop),
                turn: worker_turn,
            };
            let t = std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || worker.run())
                .map_err(StartError::Thread)?;
            threads.push(t);
        }
        drop(ev_tx);

        let listener = bind_control(&cfg.socket)?;
        let state = Arc::new(ControlState::new(handles, io_kind.to_string()));
        {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("engine-ctl".into())
                .spawn(move || control::serve(listener, state, stop))
                .map_err(StartError::Thread)?;
        }
        let control = Arc::clone(&state);
        std::thread::Builder::new()
            .name("engine-events".into())
            .spawn(move || control::forward_events(ev_rx, state))
            .map_err(StartError::Thread)?;
        tracing::info!(socket = %cfg.socket.display(), "control socket listening");
        let turn = turn.map(|t| t.addr);
        Ok(Engine { workers: infos, io: io_kind, socket: cfg.socket.clone(), turn, stop, threads, wakers, probe, control })
    }

    /// A probe of the worker loops (see [`WorkerProbe`]).
    pub fn probe(&self) -> WorkerProbe {
        self.probe.clone()
    }

    /// Stops the workers and waits for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in &self.wakers {
            w.wake();
        }
        for t in self.threads {
            let _ = t.join();
        }
        self.control.close_clients();
        let _ = std::fs::remove_file(&self.socket);
    }
}
