//! `switchyard-control`: the control daemon, talking to a `switchyard-engine` over its socket.

use std::path::PathBuf;

use clap::Parser;
use switchyard_control::config::ControlFile;
use switchyard_control::daemon::{self, ControlConfig};
use switchyard_engine::config;

/// Switchyard's control daemon: signaling, rooms, SDP, DTLS and the web client.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration file: its [control], [modes] and [turn] keys are the defaults of the flags of the
    /// same name.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    control: ControlConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    daemon::init_logging();
    let args: Args = config::parse_args(|path| Ok(config::load::<ControlFile>(path)?.control_flags()))?;
    daemon::run(args.control).await
}
