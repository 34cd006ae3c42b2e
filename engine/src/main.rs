//! `switchyard-engine`: runs the data plane until SIGINT/SIGTERM.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use switchyard_engine::config::{self, EngineFile};
use switchyard_engine::{Engine, EngineConfig};
use switchyard_notify::{Notifier, Watchdog};
use switchyard_udp::IoKind;

/// Switchyard's data plane: forwards SRTP between WebRTC transports, programmed by switchyard-control.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration file: its [engine] and [turn] keys are the defaults of the flags of the same name.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Worker threads, each pinned to a core with its own UDP port (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// I/O backend: uring or mmsg (default: probe, io_uring when the kernel allows it).
    #[arg(long)]
    io: Option<IoKind>,
    /// Address the workers bind and advertise in ICE candidates.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// First UDP port (worker i uses port-base + i); 0 lets the kernel pick.
    #[arg(long, default_value_t = 0)]
    port_base: u16,
    /// Control socket path.
    #[arg(long, default_value = "/run/switchyard/engine.sock")]
    socket: PathBuf,
    /// Do not pin workers to cores.
    #[arg(long)]
    no_pin: bool,
    /// UDP receive and send buffer per worker socket in bytes, 0 for the system default (default: 4 MiB;
    /// above net.core.rmem_max/wmem_max only with CAP_NET_ADMIN).
    #[arg(long, value_name = "BYTES")]
    socket_buffer: Option<usize>,
    /// How long a worker that found its socket empty waits for more datagrams before it wakes, in
    /// microseconds, 0 to wake at once (default: 1000). Fewer wake-ups and larger batches cost less
    /// CPU per packet, for up to this much added latency.
    #[arg(long, value_name = "MICROSECONDS", value_parser = clap::value_parser!(u64).range(0..=switchyard_engine::config::MAX_RECV_COALESCE_US as u64))]
    recv_coalesce_us: Option<u64>,
    /// TURN server flags (--turn-port, --turn-secret, --turn-realm, --relay-ports, --no-turn, ...).
    #[command(flatten)]
    turn: switchyard_engine::turn::TurnArgs,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args: Args = config::parse_args(|path| Ok(config::load::<EngineFile>(path)?.flags()))?;
    let mut cfg = EngineConfig { bind: args.bind, port_base: args.port_base, io: args.io, socket: args.socket, pin: !args.no_pin, ..Default::default() };
    if let Some(w) = args.workers {
        cfg.workers = w;
    }
    if let Some(b) = args.socket_buffer {
        cfg.socket_buffer = b;
    }
    if let Some(us) = args.recv_coalesce_us {
        cfg.recv_coalesce = Duration::from_micros(us);
    }
    cfg.turn = args.turn.config();
    // Block SIGINT/SIGTERM before any thread starts so every thread inherits the mask and the main
    // thread alone receives them through sigwait.
    let signals = block_signals();
    let engine = Engine::start(&cfg).context("starting the engine")?;
    for w in &engine.workers {
        tracing::info!(worker = w.index, addr = %w.addr, core = ?w.core, "worker listening");
    }
    if let Some(addr) = engine.turn {
        tracing::info!(%addr, "TURN listening");
    }
    anyhow::ensure!(engine.probe().alive(Duration::from_secs(5)), "a worker did not start");
    let watchdog = notify_ready(&engine);
    wait_for_signal(&signals);
    tracing::info!("stopping");
    drop(watchdog);
    notify(|n| n.stopping("stopping: draining workers"));
    engine.stop();
    Ok(())
}

/// Sends to systemd's notification socket, when there is one (Type=notify units).
fn notify(send: impl FnOnce(&Notifier) -> std::io::Result<()>) -> Option<Notifier> {
    let n = Notifier::from_env().inspect_err(|e| tracing::warn!(error = %e, "NOTIFY_SOCKET unusable")).ok()??;
    if let Err(e) = send(&n) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
    Some(n)
}

/// READY=1 now that every worker answers, then WATCHDOG=1 every WatchdogSec/2 for as long as they all
/// still answer: a dead or stuck worker gets the engine restarted.
fn notify_ready(engine: &Engine) -> Option<Watchdog> {
    let status = format!("forwarding on {} workers ({})", engine.workers.len(), engine.io);
    let notifier = notify(|n| n.ready(&status))?;
    let period = switchyard_notify::watchdog_period()?;
    let probe = engine.probe();
    Watchdog::spawn(notifier, period, move || {
        let alive = probe.alive(period / 2);
        if !alive {
            tracing::error!("a worker did not answer: not feeding the systemd watchdog");
        }
        alive
    })
        .inspect_err(|e| tracing::error!(error = %e, "cannot start the watchdog thread"))
        .ok()
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set calls on a local sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal(set: &libc::sigset_t) {
    let mut sig = 0;
    // SAFETY: `set` is an initialised sigset_t; sigwait writes the signal number into `sig`.
    unsafe {
        libc::sigwait(set, &mut sig);
    }
}
