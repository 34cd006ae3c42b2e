//! `switchyard-control`: the control daemon, talking to a `switchyard-engine` over its socket.

use clap::Parser;
use switchyard_control::daemon::{self, ControlConfig};

/// Switchyard's control daemon: signaling, rooms, SDP, DTLS and the web client.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    control: ControlConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    daemon::init_logging();
    daemon::run(Args::parse().control).await
}
