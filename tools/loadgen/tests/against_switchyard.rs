//! The load generator against a real Switchyard (engine and control daemon started in this
//! process): one publisher to two subscribers for five seconds, every packet received and verified.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use clap::Parser;
use switchyard_control::daemon::{self, ControlConfig};
use switchyard_engine::{Engine, EngineConfig};
use switchyard_loadgen::media::MediaParams;
use switchyard_loadgen::run::{self, Config, Target};

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

fn start_switchyard() -> (Engine, SocketAddr) {
    let socket = std::env::temp_dir().join(format!("loadgen-test-{}.sock", std::process::id()));
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

#[test]
fn one_publisher_two_subscribers_every_packet_arrives_verified() {
    let (engine, http) = start_switchyard();
    let cfg = Config {
        target: Target::Switchyard(format!("ws://{http}/ws")),
        rooms: 1,
        publishers: 1,
        subscribers: 2,
        duration: Duration::from_secs(5),
        grace: Duration::from_millis(700),
        threads: 2,
        progress: false,
        media: MediaParams {
            video_bitrate: 1_000_000,
            fps: 30,
            packet_size: 1200,
            audio_bitrate: 32_000,
        },
        ..Config::default()
    };
    let s = run::run(&cfg).expect("the run completes");
    eprintln!("{}", s.table());
    assert_eq!(
        (
            s.publishers_connected,
            s.subscribers_connected,
            s.setup_failures
        ),
        (1, 2, 0),
        "{:?}",
        s.failure_samples
    );
    // 170 packets/s for 5 s to each of 2 subscribers.
    assert!(s.expected >= 1500, "expected only {} packets", s.expected);
    assert_eq!(s.received, s.expected, "lost {} packets", s.lost);
    assert_eq!(s.lost, 0);
    assert_eq!(
        (s.corrupt, s.srtp_errors, s.duplicates, s.tx_failed),
        (0, 0, 0, 0)
    );
    assert!(
        s.latency_ms.p50 > 0.0 && s.latency_ms.p50 < 50.0,
        "{:?}",
        s.latency_ms
    );
    assert!(s.progress.len() >= 5, "one progress line per second");
    engine.stop();
}
