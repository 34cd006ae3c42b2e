//! `switchyard`: the engine and the control daemon in one process, with defaults that work on one
//! machine. Operators run the two daemons separately under systemd; this is the quick start.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use switchyard_control::config::AllInOneFile;
use switchyard_control::daemon::{self, ControlConfig};
use switchyard_engine::config;
use switchyard_engine::{Engine, EngineConfig};

/// Switchyard all-in-one: a WebRTC SFU with its web client.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration file (the daemons' file: [control], [modes], [turn], and [engine] bind, port_base,
    /// workers, io, pin, socket_buffer); command-line flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    control: ControlConfig,
    /// Address the engine's workers bind and advertise to browsers.
    #[arg(long, default_value = "127.0.0.1")]
    media_addr: IpAddr,
    /// Engine worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// First UDP media port (worker i uses port + i); 0 lets the kernel choose.
    #[arg(long, default_value_t = 0)]
    media_port: u16,
    /// UDP port of the built-in TURN/STUN server (0: the kernel picks one); clients get
    /// `turn:<media-addr>:<port>` with fresh credentials unless --turn-url is given.
    #[arg(long, default_value_t = 3478)]
    turn_port: u16,
    /// Run without the built-in TURN/STUN server.
    #[arg(long)]
    no_turn: bool,
}

fn main() -> anyhow::Result<()> {
    daemon::init_logging();
    let mut file = AllInOneFile::default();
    let mut args: Args = config::parse_args(|path| {
        file = config::load(path)?;
        Ok(file.all_in_one_flags())
    })?;
    let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    if args.control.engine_socket == std::path::Path::new("/run/switchyard/engine.sock") {
        args.control.engine_socket = runtime_dir.join(format!("switchyard-{}.sock", std::process::id()));
    }
    let mut cfg = EngineConfig {
        bind: args.media_addr,
        port_base: args.media_port,
        socket: args.control.engine_socket.clone(),
        ..Default::default()
    };
    if let Some(w) = args.workers {
        cfg.workers = w;
    }
    file.apply_engine(&mut cfg);
    if !args.no_turn && cfg.turn.is_none() {
        cfg.turn = Some(switchyard_engine::turn::TurnConfig {
            port: args.turn_port,
            secret: args.control.turn_secret.clone(),
            ..Default::default()
        });
    }
    let engine = Engine::start(&cfg).context("starting the engine")?;
    if let Some(turn) = engine.turn {
        if args.control.turn_urls.is_empty() {
            args.control.turn_urls = vec![format!("stun:{turn}"), format!("turn:{turn}?transport=udp")];
        }
        tracing::info!(%turn, "TURN/STUN server listening");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = rt.block_on(async {
        tokio::select! {
            r = daemon::run(args.control) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    });
    engine.stop();
    result
}
