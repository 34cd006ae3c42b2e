//! `switchyard-engine`: runs the data plane until SIGINT/SIGTERM.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use switchyard_engine::{Engine, EngineConfig};
use switchyard_udp::IoKind;

/// Switchyard's data plane: forwards SRTP between WebRTC transports, programmed by switchyard-control.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
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
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut cfg = EngineConfig { bind: args.bind, port_base: args.port_base, io: args.io, socket: args.socket, pin: !args.no_pin, ..Default::default() };
    if let Some(w) = args.workers {
        cfg.workers = w;
    }
    // Block SIGINT/SIGTERM before any thread starts so every thread inherits the mask and the main
    // thread alone receives them through sigwait.
    let signals = block_signals();
    let engine = Engine::start(&cfg).context("starting the engine")?;
    for w in &engine.workers {
        tracing::info!(worker = w.index, addr = %w.addr, core = ?w.core, "worker listening");
    }
    wait_for_signal(&signals);
    tracing::info!("stopping");
    engine.stop();
    Ok(())
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
