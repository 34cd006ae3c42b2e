//! Wiring: connect to the engine, start the hub and the HTTP server. Shared by `switchyard-control`
//! (engine in its own process) and `switchyard` (engine started in-process).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use switchyard_dtls::Identity;
use tokio::sync::mpsc;

use crate::engine_link::EngineLink;
use crate::http::{router, AppState};
use crate::hub::{Hub, HubConfig, HubMsg};

/// Control daemon settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlConfig {
    /// HTTP address: web client, /ws signaling, /metrics, /api.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// The engine's control socket.
    #[arg(long, default_value = "/run/switchyard/engine.sock")]
    pub engine_socket: PathBuf,
    /// DTLS certificate and key (PEM); created on first start. Without it, a fresh identity per start.
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// Seconds a transport may take to complete DTLS before it is removed from the engine.
    #[arg(long, default_value_t = 15)]
    pub dtls_timeout_secs: u64,
    /// Most participants in one room.
    #[arg(long, default_value_t = 200)]
    pub max_participants: usize,
    /// Room mode thresholds.
    #[command(flatten)]
    pub modes: crate::mode::ModePolicy,
    /// `stun:`/`turn:` URLs handed to clients with fresh credentials (repeatable); empty: none.
    #[arg(long = "turn-url")]
    pub turn_urls: Vec<String>,
    /// Shared secret for TURN REST API credentials (the engine's TURN server checks them with it).
    #[arg(long, default_value = "switchyard-dev-secret", env = "SWITCHYARD_TURN_SECRET")]
    pub turn_secret: String,
    /// Lifetime of minted TURN credentials, seconds.
    #[arg(long, default_value_t = 86400)]
    pub turn_ttl_secs: u64,
}

/// Runs the control daemon until SIGTERM or SIGINT (then it stops accepting connections and returns,
/// see `notify`), or until the HTTP server fails.
pub async fn run(cfg: ControlConfig) -> anyhow::Result<()> {
    let identity = match &cfg.identity {
        Some(path) => Identity::load_or_create(path).with_context(|| format!("DTLS identity {}", path.display()))?,
        None => Identity::generate().context("generating the DTLS certificate")?,
    };
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let engine = EngineLink::connect(&cfg.engine_socket, events_tx)
        .await
        .with_context(|| format!("connecting to the engine at {}", cfg.engine_socket.display()))?;
    tracing::info!(io = %engine.io, workers = engine.workers.len(), "connected to the engine");

    let (hub_tx, hub_rx) = mpsc::unbounded_channel();
    let hub = Hub::new(
        HubConfig { dtls_timeout: Duration::from_secs(cfg.dtls_timeout_secs), ..HubConfig::from_control(&cfg) },
        engine.clone(),
        Arc::new(identity),
        hub_tx.clone(),
    );
    tokio::spawn(hub.run(hub_rx));
    let pump = hub_tx.clone();
    tokio::spawn(async move {
        while let Some(ev) = events_rx.recv().await {
            if pump.send(HubMsg::Engine(ev)).is_err() {
                break;
            }
        }
    });

    let state = AppState { hub: hub_tx, engine, next_conn: Arc::new(AtomicU64::new(1)) };
    let listener = tokio::net::TcpListener::bind(cfg.http).await.with_context(|| format!("binding {}", cfg.http))?;
    let url = format!("http://{}/", listener.local_addr().unwrap_or(cfg.http));
    tracing::info!(%url, "web client ready");
    println!("Switchyard is running: open {url}");
    let status = format!("serving {url}; engine: {} workers ({})", state.engine.workers.len(), state.engine.io);
    let shutdown = crate::notify::shutdown_signal();
    let _watchdog = crate::notify::ready(&status, state.hub.clone());
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server")?;
    Ok(())
}

/// Logs to stderr (journald under systemd), filtered by RUST_LOG (default info).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
