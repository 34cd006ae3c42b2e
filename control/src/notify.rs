//! The control daemon as a systemd `Type=notify` service (`sd_notify(3)` through `switchyard-notify`):
//! `READY=1` once it is connected to the engine and serving HTTP, `WATCHDOG=1` every `WatchdogSec/2`
//! for as long as the hub answers, `STOPPING=1` on SIGTERM or SIGINT. Outside systemd all of this is
//! skipped.
//!
//! The watchdog asks the hub, not the engine: a control daemon whose engine is away stays up and
//! says so on `/readyz` (restarting it would not bring the engine back), but one whose hub task is
//! stuck is restarted.

use std::time::Duration;

use switchyard_notify::{Notifier, Watchdog};
use tokio::sync::{mpsc, oneshot};

use crate::hub::HubMsg;

fn notifier() -> Option<Notifier> {
    Notifier::from_env().inspect_err(|e| tracing::warn!(error = %e, "NOTIFY_SOCKET unusable")).ok()?
}

fn send(result: std::io::Result<()>) {
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Sends `READY=1` and starts the watchdog (when the unit has one). Keep the returned value for as
/// long as the daemon runs; dropping it stops the pings. Call from within the tokio runtime.
pub fn ready(status: &str, hub: mpsc::UnboundedSender<HubMsg>) -> Option<Watchdog> {
    let n = notifier()?;
    send(n.ready(status));
    let period = switchyard_notify::watchdog_period()?;
    let rt = tokio::runtime::Handle::current();
    Watchdog::spawn(n, period, move || {
        let alive = rt.block_on(hub_answers(&hub, period / 2));
        if !alive {
            tracing::error!("the hub did not answer: not feeding the systemd watchdog");
        }
        alive
    })
    .inspect_err(|e| tracing::error!(error = %e, "cannot start the watchdog thread"))
    .ok()
}

async fn hub_answers(hub: &mpsc::UnboundedSender<HubMsg>, within: Duration) -> bool {
    let (tx, rx) = oneshot::channel();
    hub.send(HubMsg::Rooms(tx)).is_ok() && matches!(tokio::time::timeout(within, rx).await, Ok(Ok(_)))
}

/// Listens for SIGTERM (systemctl stop) and SIGINT from now on, and returns a future that resolves on
/// either, after telling systemd the daemon is stopping. Call it before `READY=1` so that a stop
/// right after start-up is not lost; pass the future to the HTTP server as its graceful-shutdown
/// signal: it stops accepting, and `run` returns.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind: SignalKind, name: &'static str| {
        signal(kind).inspect_err(move |e| tracing::warn!(error = %e, "cannot listen for {name}")).ok()
    };
    let (mut term, mut int) = (listen(SignalKind::terminate(), "SIGTERM"), listen(SignalKind::interrupt(), "SIGINT"));
    async move {
        tokio::select! {
            () = received(term.as_mut()) => {}
            () = received(int.as_mut()) => {}
        }
        tracing::info!("stopping");
        if let Some(n) = notifier() {
            send(n.stopping("stopping: no new connections"));
        }
    }
}

async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
