//! `switchyard-loadgen`: simulated WebRTC rooms against Switchyard, Janus or a raw forwarder.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use switchyard_loadgen::feedback::LossOptions;
use switchyard_loadgen::media::MediaParams;
use switchyard_loadgen::run::{self, Config, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Server {
    /// Switchyard's WebSocket signaling (URL: ws://HOST:PORT/ws).
    Switchyard,
    /// Janus's VideoRoom over its HTTP API (URL: http://HOST:8088/janus).
    Janus,
    /// A raw RTP forwarder such as switchyard-baseline (URL: HOST:PORT[,HOST:PORT...]).
    Raw,
}

/// Simulates rooms of WebRTC publishers and subscribers and measures what the server forwards.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Server kind.
    #[arg(long, value_enum, default_value = "switchyard")]
    server: Server,
    /// Where it listens (default: ws://127.0.0.1:8080/ws, http://127.0.0.1:8088/janus, 127.0.0.1:40000).
    #[arg(long)]
    url: Option<String>,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    rooms: u32,
    /// Publishers per room.
    #[arg(long, default_value_t = 1)]
    publishers: u32,
    /// Subscribers per room.
    #[arg(long, default_value_t = 1)]
    subscribers: u32,
    /// Participants joining per second.
    #[arg(long, default_value_t = 50.0)]
    join_rate: f64,
    /// Most participant set-ups in flight at once.
    #[arg(long, default_value_t = 64)]
    max_pending: usize,
    /// Seconds of steady state once every room started.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to wait for the last packets after senders stop.
    #[arg(long, default_value_t = 0.5)]
    grace: f64,
    /// Seconds a room waits for every subscriber to see every stream before it starts counting anyway.
    #[arg(long, default_value_t = 5.0)]
    warmup_timeout: f64,
    /// Seconds one participant may take to connect.
    #[arg(long, default_value_t = 20.0)]
    setup_timeout: f64,
    /// Video bits per second per publisher (0: no video).
    #[arg(long, default_value_t = 1_000_000)]
    video_bitrate: u64,
    /// Video frames per second (each frame is a burst of packets).
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Largest RTP packet in bytes (before SRTP).
    #[arg(long, default_value_t = 1200)]
    packet_size: usize,
    /// Audio bits per second per publisher, one packet per 20 ms (0: no audio).
    #[arg(long, default_value_t = 32_000)]
    audio_bitrate: u64,
    /// Media threads (each owns many sockets).
    #[arg(long)]
    threads: Option<usize>,
    /// Address the load generator's sockets bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Percent of received RTP packets each subscriber drops at random (emulated downlink loss).
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = percent)]
    loss_down: f64,
    /// Percent of RTP packets each publisher drops at random instead of sending (emulated uplink
    /// loss; they still count as sent and can be retransmitted).
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = percent)]
    loss_up: f64,
    /// NACKs, retransmissions and RTCP reports even without injected loss (on by default with
    /// --loss-down / --loss-up).
    #[arg(long, conflicts_with = "no_nack")]
    nack: bool,
    /// No NACKs, retransmissions or RTCP reports, even with injected loss.
    #[arg(long)]
    no_nack: bool,
    /// Receive each datagram separately: no UDP_GRO on the participants' sockets, so the kernel
    /// cuts a server's GSO trains apart on delivery (see docs/load-testing.md).
    #[arg(long)]
    no_udp_gro: bool,
    /// Report CPU and memory of this process too: NAME=PID (repeatable).
    #[arg(long = "watch-pid", value_name = "NAME=PID")]
    watch: Vec<String>,
    /// Print the summary as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

fn percent(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err("a percentage from 0 to 100".into())
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let target = match a.server {
        Server::Switchyard => Target::Switchyard(
            a.url
                .clone()
                .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into()),
        ),
        Server::Janus => Target::Janus(
            a.url
                .clone()
                .unwrap_or_else(|| "http://127.0.0.1:8088/janus".into()),
        ),
        Server::Raw => {
            let list = a.url.clone().unwrap_or_else(|| "127.0.0.1:40000".into());
            let addrs = list
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<SocketAddr>()
                        .with_context(|| format!("raw forwarder address {s:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Target::Raw(addrs)
        }
    };
    let mut watch = Vec::new();
    for w in &a.watch {
        let (name, pid) = w.split_once('=').context("--watch-pid takes NAME=PID")?;
        watch.push((
            name.to_string(),
            pid.parse().context("--watch-pid: PID is a number")?,
        ));
    }
    let mut cfg = Config {
        target,
        rooms: a.rooms,
        publishers: a.publishers,
        subscribers: a.subscribers,
        join_rate: a.join_rate,
        max_pending: a.max_pending,
        duration: Duration::from_secs_f64(a.duration),
        grace: Duration::from_secs_f64(a.grace),
        warmup_timeout: Duration::from_secs_f64(a.warmup_timeout),
        setup_timeout: Duration::from_secs_f64(a.setup_timeout),
        media: MediaParams {
            video_bitrate: a.video_bitrate,
            fps: a.fps.max(1),
            packet_size: a.packet_size,
            audio_bitrate: a.audio_bitrate,
        },
        bind: a.bind,
        progress: !a.quiet,
        watch,
        udp_gro: !a.no_udp_gro,
        ..Config::default()
    };
    if let Some(t) = a.threads {
        cfg.threads = t.max(1);
    }
    let loss = LossOptions {
        loss_down_pct: a.loss_down,
        loss_up_pct: a.loss_up,
        feedback: if a.nack {
            Some(true)
        } else if a.no_nack {
            Some(false)
        } else {
            None
        },
    };
    let summary = run::run_with(&cfg, &loss)?;
    if a.json {
        eprint!("{}", summary.table());
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.table());
    }
    Ok(())
}
