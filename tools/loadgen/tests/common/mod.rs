//! Starts a real Switchyard in this process: the engine (two workers) and the control daemon
//! (`--sfu-only`) on a free HTTP port.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use switchyard_control::daemon::{self, ControlConfig};
use switchyard_engine::{Engine, EngineConfig};
use switchyard_loadgen::media::MediaParams;
use switchyard_loadgen::run::{Config, Target};

#[derive(Parser)]
struct ControlArgs {
    #[command(flatten)]
    control: ControlConfig,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

/// The engine (stop it with `Engine::stop`) and the control daemon's HTTP address.
pub fn start_switchyard() -> (Engine, SocketAddr) {
    static N: AtomicU32 = AtomicU32::new(0);
    let socket = std::env::temp_dir().join(format!(
        "loadgen-test-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&socket);
    let cfg = EngineConfig {
        workers: 2,
        pin: false,
        socket: socket.clone(),
        ..Default::default()
    };
    let engine = Engine::start(&cfg).expect("engine starts");
    let http: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let base = [
        "control",
        "--http",
        &http.to_string(),
        "--engine-socket",
        socket.to_str().expect("utf-8 path"),
        "--dtls-timeout-secs",
        "10",
    ];
    // Every room in the SFU: with hybrid modes a small room could otherwise go browser to browser.
    let with_sfu_only: Vec<&str> = base.iter().copied().chain(["--sfu-only"]).collect();
    let args = ControlArgs::try_parse_from(&with_sfu_only)
        .or_else(|_| ControlArgs::try_parse_from(base))
        .expect("control arguments");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let _ = rt.block_on(daemon::run(args.control));
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(http).is_err() {
        assert!(
            Instant::now() < deadline,
            "the control daemon did not start listening on {http}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (engine, http)
}

/// One room on the Switchyard at `http`: one publisher (1 Mbit/s video in 1200-byte packets at 30 fps,
/// plus 32 kbit/s audio) to two subscribers, on two media threads, for `duration` and then `grace`.
pub fn one_room(http: SocketAddr, duration: Duration, grace: Duration) -> Config {
    Config {
        target: Target::Switchyard(format!("ws://{http}/ws")),
        rooms: 1,
        publishers: 1,
        subscribers: 2,
        duration,
        grace,
        threads: 2,
        progress: false,
        media: MediaParams {
            video_bitrate: 1_000_000,
            fps: 30,
            packet_size: 1200,
            audio_bitrate: 32_000,
        },
        ..Config::default()
    }
}
