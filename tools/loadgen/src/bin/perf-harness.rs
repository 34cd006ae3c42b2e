//! `perf-harness`: Switchyard's performance run. Starts each server itself, drives it with the load
//! generator (in this process), and prints one table: the plain UDP baseline, Switchyard with each
//! I/O backend and Janus's VideoRoom at fan-out 1, 10 and 100, then the largest number of
//! subscribers each holds (binary search, under 0.5% loss and p99 < 20 ms), plus the SRTP, STUN
//! and routing micro-benchmarks and a CPU profile of the engine. Writes the same as JSON and
//! updates perf/RESULTS.md. Run it through `bash perf/run.sh`, which builds the release binaries.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use serde::Serialize;
use switchyard_loadgen::media::MediaParams;
use switchyard_loadgen::procstat;
use switchyard_loadgen::report::Summary;
use switchyard_loadgen::run::{self, Config, Target};

/// Packets a second one publisher sends at 1 Mbit/s VP8-like video (30 fps) plus 32 kbit/s Opus.
const STANDARD: MediaParams = MediaParams {
    video_bitrate: 1_000_000,
    fps: 30,
    packet_size: 1200,
    audio_bitrate: 32_000,
};
const LOSS_LIMIT_PCT: f64 = 0.5;
const P99_LIMIT_MS: f64 = 20.0;

#[derive(Parser, Debug, Clone)]
#[command(
    version,
    about = "Switchyard's performance harness (see docs/load-testing.md)"
)]
struct Args {
    /// Directory with the release binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Seconds of steady state per run.
    #[arg(long, default_value_t = 6.0)]
    duration: f64,
    /// Forwarded packets per second aimed at in the fixed-load runs (fan-out 1, 10, 100).
    #[arg(long, default_value_t = 34_000.0)]
    fixed_pps: f64,
    /// Largest number of subscribers the capacity search tries.
    #[arg(long, default_value_t = 3000)]
    max_subs: u32,
    /// Fan-out of the rooms in the capacity search.
    #[arg(long, default_value_t = 10)]
    capacity_fanout: u32,
    /// Participants joining per second.
    #[arg(long, default_value_t = 150.0)]
    join_rate: f64,
    /// Engine worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// The engine's --recv-coalesce-us (default: the engine's own, 1000).
    #[arg(long, value_name = "MICROSECONDS")]
    recv_coalesce_us: Option<u64>,
    /// Load generator media threads.
    #[arg(long, default_value_t = 2)]
    loadgen_threads: usize,
    /// The load generator receives each datagram separately (no UDP_GRO), so the loopback cuts
    /// the servers' GSO trains apart at their expense (see docs/load-testing.md).
    #[arg(long)]
    loadgen_no_udp_gro: bool,
    /// Small loads and short runs (for trying the harness out).
    #[arg(long)]
    quick: bool,
    /// Skip the criterion micro-benchmarks.
    #[arg(long)]
    skip_bench: bool,
    /// Skip Janus.
    #[arg(long)]
    skip_janus: bool,
    /// Skip the capacity searches.
    #[arg(long)]
    skip_capacity: bool,
    /// Skip the CPU profile.
    #[arg(long)]
    skip_profile: bool,
    /// Only these servers (baseline, switchyard-uring, switchyard-mmsg, janus); repeatable.
    #[arg(long = "only")]
    only: Vec<String>,
    /// Fixed-load fan-outs to run (repeatable; default 1, 10 and 100).
    #[arg(long = "fanout")]
    fanouts: Vec<u32>,
    /// Rounds of the fan-out 1 fixed load. Each round runs every server once, one after the
    /// other, so each is compared with the baseline measured minutes apart at most; the verdict
    /// takes the median of the rounds' ratios.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Where the JSON results go.
    #[arg(long, default_value = "perf/results")]
    out_dir: PathBuf,
    /// Markdown file whose generated section is replaced with this run's results.
    #[arg(long, default_value = "perf/RESULTS.md")]
    results_md: PathBuf,
    /// Do not touch the results Markdown.
    #[arg(long)]
    no_results_md: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum ServerKind {
    Baseline,
    SwitchyardUring,
    SwitchyardMmsg,
    Janus,
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            ServerKind::Baseline => "baseline",
            ServerKind::SwitchyardUring => "switchyard-uring",
            ServerKind::SwitchyardMmsg => "switchyard-mmsg",
            ServerKind::Janus => "janus",
        }
    }

    /// The logs its processes write in `target/perf-logs` (without `.log`): its only process's,
    /// or the engine's then the control daemon's.
    fn logs(self) -> &'static [&'static str] {
        match self {
            ServerKind::Baseline => &["baseline"],
            ServerKind::SwitchyardUring => &["engine-uring", "control-uring"],
            ServerKind::SwitchyardMmsg => &["engine-mmsg", "control-mmsg"],
            ServerKind::Janus => &["janus"],
        }
    }
}

/// A started server: its processes (name, child) and how to reach it.
struct Server {
    kind: ServerKind,
    procs: Vec<(String, Child)>,
    target: Target,
    bind: std::net::IpAddr,
    idle_rss_mib: f64,
    socket: Option<PathBuf>,
}

impl Server {
    fn pids(&self) -> Vec<(String, u32)> {
        self.procs
            .iter()
            .map(|(n, c)| (n.clone(), c.id()))
            .collect()
    }

    /// The process doing the forwarding (CPU and memory are charged to it).
    fn media_pid(&self) -> u32 {
        self.procs.first().map(|(_, c)| c.id()).unwrap_or(0)
    }

    fn stop(mut self) {
        for (_, c) in self.procs.iter_mut().rev() {
            // SAFETY: kill(2) on a child we started and have not reaped.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        for (_, c) in self.procs.iter_mut() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(s) = &self.socket {
            let _ = std::fs::remove_file(s);
        }
    }
}

fn log_file(name: &str) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all("target/perf-logs")?;
    Ok(std::fs::File::create(format!(
        "target/perf-logs/{name}.log"
    ))?)
}

fn wait_tcp(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not start listening on {addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts a server; if it does not come up, keeps its logs as `<log>-failed.log` (the next start
/// overwrites the logs) and tries once more after a pause.
fn start(kind: ServerKind, a: &Args) -> anyhow::Result<Server> {
    match start_once(kind, a) {
        Ok(s) => Ok(s),
        Err(e) => {
            for name in kind.logs() {
                let log = format!("target/perf-logs/{name}.log");
                let _ = std::fs::copy(&log, format!("target/perf-logs/{name}-failed.log"));
            }
            eprintln!("{}: {e:#} (logs kept in target/perf-logs/*-failed.log); trying again", kind.name());
            std::thread::sleep(Duration::from_secs(2));
            start_once(kind, a)
        }
    }
}

fn start_once(kind: ServerKind, a: &Args) -> anyhow::Result<Server> {
    let bin = |n: &str| a.bin_dir.join(n);
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut s = match kind {
        ServerKind::Baseline => {
            let port = 41_000;
            let child = Command::new(bin("switchyard-baseline"))
                .args([
                    "--port",
                    &port.to_string(),
                    "--workers",
                    &a.workers.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(log_file(kind.logs()[0])?)
                .spawn()
                .context("starting switchyard-baseline")?;
            std::thread::sleep(Duration::from_millis(300));
            let addrs = (0..a.workers)
                .map(|i| SocketAddr::from(([127, 0, 0, 1], port + i as u16)))
                .collect();
            Server {
                kind,
                procs: vec![("baseline".into(), child)],
                target: Target::Raw(addrs),
                bind: loopback,
                idle_rss_mib: 0.0,
                socket: None,
            }
        }
        ServerKind::SwitchyardUring | ServerKind::SwitchyardMmsg => {
            let io = if kind == ServerKind::SwitchyardUring {
                "uring"
            } else {
                "mmsg"
            };
            let socket =
                std::env::temp_dir().join(format!("switchyard-perf-{}.sock", std::process::id()));
            let _ = std::fs::remove_file(&socket);
            let mut engine = Command::new(bin("switchyard-engine"));
            engine
                .args(["--workers", &a.workers.to_string(), "--io", io, "--socket"])
                .arg(&socket);
            if let Some(us) = a.recv_coalesce_us {
                engine.args(["--recv-coalesce-us", &us.to_string()]);
            }
            let engine = engine
                .stdout(Stdio::null())
                .stderr(log_file(kind.logs()[0])?)
                .spawn()
                .context("starting switchyard-engine")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while !socket.exists() {
                if Instant::now() > deadline {
                    bail!("the engine did not create {}", socket.display());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let port = free_tcp_port()?;
            let http = format!("127.0.0.1:{port}");
            let control = Command::new(bin("switchyard-control"))
                .args([
                    "--http",
                    &http,
                    "--sfu-only",
                    "--max-participants",
                    "1000",
                    "--dtls-timeout-secs",
                    "30",
                    "--engine-socket",
                ])
                .arg(&socket)
                .stdout(Stdio::null())
                .stderr(log_file(kind.logs()[1])?)
                .spawn()
                .context("starting switchyard-control")?;
            let s = Server {
                kind,
                procs: vec![("engine".into(), engine), ("control".into(), control)],
                target: Target::Switchyard(format!("ws://{http}/ws")),
                bind: loopback,
                idle_rss_mib: 0.0,
                socket: Some(socket),
            };
            if let Err(e) = wait_tcp(http.parse()?, "switchyard-control") {
                s.stop();
                return Err(e);
            }
            s
        }
        ServerKind::Janus => {
            janus_network()?;
            let child = Command::new("janus")
                .args(["-F", "perf/janus", "-r", "20000-40000", "--ice-lite"])
                .stdout(log_file(kind.logs()[0])?)
                .stderr(Stdio::null())
                .spawn()
                .context("starting janus (apt-get install janus)")?;
            let s = Server {
                kind,
                procs: vec![("janus".into(), child)],
                target: Target::Janus("http://127.0.0.1:8088/janus".into()),
                bind: std::net::IpAddr::from([127, 0, 0, 3]),
                idle_rss_mib: 0.0,
                socket: None,
            };
            if let Err(e) = wait_tcp("127.0.0.1:8088".parse()?, "janus") {
                s.stop();
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(300));
            s
        }
    };
    s.idle_rss_mib = s
        .procs
        .first()
        .and_then(|(_, c)| procstat::rss_mib(c.id()))
        .unwrap_or(0.0);
    Ok(s)
}

/// Janus gathers no candidates on loopback interfaces and sends through the interface of its
/// candidate (IP_UNICAST_IF), so it gets a veth pair of its own: 127.0.0.2 on syjanus0 for Janus,
/// 127.0.0.3 on syjanus1 for the load generator, routed to each other. Every address stays in
/// 127.0.0.0/8 on this machine.
fn janus_network() -> anyhow::Result<()> {
    let ip = |args: &str| {
        Command::new("ip")
            .args(args.split_whitespace())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !ip("link show syjanus0") {
        if !ip("link add syjanus0 type veth peer name syjanus1") {
            bail!("cannot create the veth pair for Janus (needs root and `ip`)");
        }
        ip("addr add 127.0.0.2/32 dev syjanus0");
        ip("addr add 127.0.0.3/32 dev syjanus1");
        ip("link set syjanus0 up");
        ip("link set syjanus1 up");
        ip("route add 127.0.0.3/32 dev syjanus0");
    }
    for (k, v) in [
        ("net.ipv4.conf.syjanus0.route_localnet", "1"),
        ("net.ipv4.conf.syjanus1.route_localnet", "1"),
        ("net.ipv4.conf.syjanus0.accept_local", "1"),
        ("net.ipv4.conf.syjanus1.accept_local", "1"),
        ("net.ipv4.conf.syjanus0.rp_filter", "0"),
        ("net.ipv4.conf.syjanus1.rp_filter", "0"),
    ] {
        let _ = std::fs::write(format!("/proc/sys/{}", k.replace('.', "/")), v);
    }
    Ok(())
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
struct RunResult {
    server: ServerKind,
    fanout: u32,
    /// Which round of this fan-out (0-based; fan-out 1 runs `--rounds` times).
    round: u32,
    rooms: u32,
    subscribers: u64,
    /// Packets the server forwarded per second (what subscribers received).
    forwarded_pps: f64,
    /// Cores the server used (all its processes).
    server_cores: f64,
    /// Cores the forwarding process used (engine, baseline, janus).
    media_cores: f64,
    loadgen_cores: f64,
    pps_per_core: f64,
    loss_pct: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    /// Server CPU per subscriber, millicores.
    millicores_per_sub: f64,
    /// Server memory per subscriber (RSS at load minus idle), KiB.
    rss_kib_per_sub: f64,
    /// Times per second the forwarding process's threads went to sleep and were woken again
    /// (voluntary context switches, all threads) over the steady state.
    wakeups_per_s: f64,
    ok: bool,
    summary: Summary,
}

fn run_load(
    server: &Server,
    a: &Args,
    rooms: u32,
    fanout: u32,
    duration: f64,
) -> anyhow::Result<RunResult> {
    let cfg = Config {
        target: server.target.clone(),
        rooms,
        publishers: 1,
        subscribers: fanout,
        join_rate: a.join_rate,
        max_pending: 64,
        duration: Duration::from_secs_f64(duration),
        grace: Duration::from_millis(500),
        warmup_timeout: Duration::from_secs(5),
        setup_timeout: Duration::from_secs(30),
        media: STANDARD,
        threads: a.loadgen_threads,
        bind: server.bind,
        progress: true,
        room_prefix: format!("perf-{}", server.kind.name()),
        watch: server.pids(),
        udp_gro: !a.loadgen_no_udp_gro,
    };
    eprintln!(
        "--- {} : {rooms} room(s) x (1 publisher + {fanout} subscribers), {duration} s ---",
        server.kind.name()
    );
    let media_pid = server.media_pid();
    let sampler = WakeSampler::start(media_pid);
    let s = run::run(&cfg);
    let samples = sampler.stop();
    let s = s?;
    // The steady state ended `grace` before run() returned and lasted `measured_s`.
    let end = samples.last().map(|x| x.0).unwrap_or(0.0) - cfg.grace.as_secs_f64();
    let wakeups_per_s = wake_rate(&samples, end - s.measured_s, end);
    let proc_of = |pid: u32| s.processes.iter().find(|p| p.pid == pid);
    let media_cores = proc_of(media_pid).map_or(0.0, |p| p.cpu_cores);
    let server_cores: f64 = s
        .processes
        .iter()
        .filter(|p| p.name != "loadgen")
        .map(|p| p.cpu_cores)
        .sum();
    let loadgen_cores = s
        .processes
        .iter()
        .find(|p| p.name == "loadgen")
        .map_or(0.0, |p| p.cpu_cores);
    let rss = proc_of(media_pid).map_or(0.0, |p| p.rss_mib);
    let subs = s.subscribers_connected.max(1);
    let failed = s.setup_failures > 0;
    let ok =
        !failed && s.expected > 0 && s.loss_pct < LOSS_LIMIT_PCT && s.latency_ms.p99 < P99_LIMIT_MS;
    let r = RunResult {
        server: server.kind,
        fanout,
        round: 0,
        rooms,
        subscribers: s.subscribers_connected,
        forwarded_pps: s.rx_pps,
        server_cores,
        media_cores,
        loadgen_cores,
        pps_per_core: if media_cores > 0.0 {
            s.rx_pps / media_cores
        } else {
            0.0
        },
        loss_pct: s.loss_pct,
        p50_ms: s.latency_ms.p50,
        p99_ms: s.latency_ms.p99,
        p999_ms: s.latency_ms.p999,
        millicores_per_sub: media_cores * 1000.0 / subs as f64,
        rss_kib_per_sub: ((rss - server.idle_rss_mib).max(0.0) * 1024.0) / subs as f64,
        wakeups_per_s,
        ok,
        summary: s,
    };
    eprintln!(
        "    => {:.0} pkt/s forwarded, {:.2} cores ({:.0} pkt/s/core), loss {:.3}%, p99 {:.2} ms, {}",
        r.forwarded_pps,
        r.media_cores,
        r.pps_per_core,
        r.loss_pct,
        r.p99_ms,
        if r.ok { "ok" } else { "NOT ok" }
    );
    for f in &r.summary.failure_samples {
        eprintln!("    failure: {f}");
    }
    Ok(r)
}

/// Samples (seconds since start, voluntary context switches of all threads) of one process every
/// 100 ms on a thread of its own, until stopped.
struct WakeSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(f64, u64)>>,
}

impl WakeSampler {
    fn start(pid: u32) -> WakeSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut v = Vec::new();
            loop {
                if let Some(n) = voluntary_switches(pid) {
                    v.push((t0.elapsed().as_secs_f64(), n));
                }
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return v;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        WakeSampler { stop, handle }
    }

    fn stop(self) -> Vec<(f64, u64)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// Sum of `voluntary_ctxt_switches` over the threads of `pid`.
fn voluntary_switches(pid: u32) -> Option<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        if let Some(n) = status
            .lines()
            .find(|l| l.starts_with("voluntary_ctxt_switches:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<u64>().ok())
        {
            total += n;
        }
    }
    Some(total)
}

/// Switches per second between the samples nearest to `from` and `to`.
fn wake_rate(samples: &[(f64, u64)], from: f64, to: f64) -> f64 {
    let near = |t: f64| {
        samples
            .iter()
            .min_by(|a, b| (a.0 - t).abs().total_cmp(&(b.0 - t).abs()))
            .copied()
    };
    match (near(from), near(to)) {
        (Some(a), Some(b)) if b.0 > a.0 => b.1.saturating_sub(a.1) as f64 / (b.0 - a.0),
        _ => 0.0,
    }
}

/// The capacity search's outcome.
#[derive(Debug, Clone, Serialize)]
struct Capacity {
    server: ServerKind,
    fanout: u32,
    /// The largest load that held (None: not even the smallest).
    held: Option<RunResult>,
    /// The smallest load that failed, if one was found.
    failed_at: Option<u64>,
    /// Every (subscribers, ok, loss %, p99 ms) tried.
    tried: Vec<(u64, bool, f64, f64)>,
    subs_per_core: f64,
}

fn capacity(kind: ServerKind, a: &Args) -> anyhow::Result<Capacity> {
    let f = a.capacity_fanout.max(1);
    let max_rooms = (a.max_subs / f).max(1);
    let mut lo: Option<(u32, RunResult)> = None;
    let mut hi: Option<u32> = None;
    let mut rooms = if a.quick { 2 } else { (200 / f).max(1) };
    let mut tried = Vec::new();
    let duration = if a.quick {
        2.0
    } else {
        (a.duration * 0.7).max(3.0)
    };
    for _ in 0..if a.quick { 3 } else { 8 } {
        let server = start(kind, a)?;
        let r = run_load(&server, a, rooms, f, duration);
        server.stop();
        let r = r?;
        tried.push((r.subscribers, r.ok, r.loss_pct, r.p99_ms));
        if r.ok {
            lo = Some((rooms, r));
        } else {
            hi = Some(rooms);
        }
        let l = lo.as_ref().map_or(0, |(n, _)| *n);
        let next = match hi {
            None => (rooms * 2).min(max_rooms),
            Some(h) => (l + h) / 2,
        };
        // Stop when the bracket is within 10% (or one room), or the top is reached.
        let settled = hi.is_some_and(|h| h - l <= (l / 10).max(1));
        if settled || next == rooms || next == 0 || (hi.is_none() && rooms >= max_rooms) {
            break;
        }
        rooms = next;
    }
    let held = lo.map(|(_, r)| r);
    let subs_per_core = held.as_ref().map_or(0.0, |r| {
        if r.media_cores > 0.0 {
            r.subscribers as f64 / r.media_cores
        } else {
            0.0
        }
    });
    Ok(Capacity {
        server: kind,
        fanout: f,
        held,
        failed_at: hi.map(|h| u64::from(h * f)),
        tried,
        subs_per_core,
    })
}

#[derive(Debug, Clone, Serialize)]
struct Bench {
    name: String,
    /// Median time per iteration, nanoseconds.
    ns: f64,
}

fn run_benches(a: &Args) -> Vec<Bench> {
    let mut out = Vec::new();
    let warm = if a.quick { "0.5" } else { "1" };
    let measure = if a.quick { "1" } else { "2" };
    for (pkg, bench) in [
        ("switchyard-srtp", "srtp"),
        ("switchyard-stun", "stun"),
        ("switchyard-loadgen", "routing"),
    ] {
        eprintln!("--- cargo bench -p {pkg} --bench {bench} ---");
        let o = Command::new("cargo")
            .args([
                "bench",
                "-p",
                pkg,
                "--bench",
                bench,
                "--",
                "--warm-up-time",
                warm,
                "--measurement-time",
                measure,
                "--noplot",
            ])
            .stderr(Stdio::inherit())
            .output();
        let Ok(o) = o else { continue };
        let text = String::from_utf8_lossy(&o.stdout);
        out.extend(parse_criterion(&text));
    }
    out
}

/// Reads criterion's `name  time: [low mid high]` lines (the name may be on the line before).
fn parse_criterion(text: &str) -> Vec<Bench> {
    let mut v = Vec::new();
    let mut last_name = String::new();
    for line in text.lines() {
        if let Some(i) = line.find("time:") {
            let name = line[..i].trim();
            let name = if name.is_empty() {
                last_name.clone()
            } else {
                name.to_string()
            };
            let inner = line[i + 5..]
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let parts: Vec<&str> = inner.split_whitespace().collect();
            if parts.len() >= 4 {
                let (val, unit) = (parts[2], parts[3]);
                if let Ok(x) = val.parse::<f64>() {
                    let ns = match unit {
                        "ps" => x / 1000.0,
                        "ns" => x,
                        "µs" | "us" => x * 1e3,
                        "ms" => x * 1e6,
                        "s" => x * 1e9,
                        _ => continue,
                    };
                    v.push(Bench { name, ns });
                }
            }
        } else if !line.starts_with(' ') && !line.trim().is_empty() && !line.contains(':') {
            last_name = line.trim().to_string();
        }
    }
    v
}

#[derive(Debug, Clone, Serialize)]
struct Profile {
    /// Which server was profiled.
    server: ServerKind,
    /// Whether hardware counters work (`perf stat -e instructions true`).
    hardware_counters: bool,
    /// What was sampled.
    event: String,
    /// Share of samples per binary (`perf report --sort dso`).
    by_dso: String,
    /// Share of samples per thread (`perf report --sort comm`).
    by_thread: String,
    /// `perf report --stdio` top symbols, or why there is none.
    report: String,
}

fn hardware_counters() -> bool {
    Command::new("perf")
        .args(["stat", "-x,", "-e", "instructions", "true"])
        .output()
        .map(|o| {
            let e = String::from_utf8_lossy(&o.stderr);
            o.status.success() && !e.contains("not supported") && !e.contains("not counted")
        })
        .unwrap_or(false)
}

fn perf_report(data: &Path, args: &[&str], limit: usize) -> Result<String, String> {
    let o = Command::new("perf")
        .args(["report", "--stdio", "-i"])
        .arg(data)
        .args(args)
        .output()
        .map_err(|e| format!("perf report: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "perf report failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
        ));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .take(limit)
        .collect::<Vec<_>>()
        .join("\n"))
}

fn profile_engine(a: &Args, kind: ServerKind, fanout: u32, rooms: u32) -> Profile {
    let hw = hardware_counters();
    let event = if hw { "cycles" } else { "cpu-clock" };
    let fail = |why: String| Profile {
        server: kind,
        hardware_counters: hw,
        event: event.into(),
        by_dso: String::new(),
        by_thread: String::new(),
        report: why,
    };
    let Ok(server) = start(kind, a) else {
        return fail("could not start Switchyard".into());
    };
    let data = PathBuf::from(format!("target/perf-logs/{}.perf.data", kind.name()));
    // Only media forwarding: start once everyone has joined and connected (joins at `join_rate`,
    // plus a few seconds for the last handshakes), record for most of the steady state.
    let ramp = rooms as f64 * (fanout + 1) as f64 / a.join_rate + 4.0;
    let secs = (a.duration * 0.8).max(1.0);
    let pid = server.media_pid().to_string();
    let recorder = std::thread::spawn({
        let data = data.clone();
        let event = event.to_string();
        move || {
            std::thread::sleep(Duration::from_secs_f64(ramp));
            Command::new("perf")
                .args(["record", "-e", &event, "-g", "-F", "999", "-o"])
                .arg(&data)
                .args(["-p", &pid, "--", "sleep", &format!("{secs:.1}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        }
    });
    let _ = run_load(&server, a, rooms, fanout, a.duration + ramp.min(10.0));
    let recorded = recorder.join().unwrap_or(false);
    server.stop();
    if !recorded {
        return fail("`perf record` failed".into());
    }
    let by_dso = perf_report(
        &data,
        &[
            "--no-children",
            "-g",
            "none",
            "--sort",
            "dso",
            "--percent-limit",
            "0.5",
        ],
        12,
    );
    let by_thread = perf_report(
        &data,
        &[
            "--no-children",
            "-g",
            "none",
            "--sort",
            "comm",
            "--percent-limit",
            "0.5",
        ],
        12,
    )
    .unwrap_or_default();
    let symbols = perf_report(
        &data,
        &[
            "--no-children",
            "--sort",
            "dso,sym",
            "--percent-limit",
            "0.7",
            "-g",
            "none",
        ],
        32,
    );
    match (by_dso, symbols) {
        (Ok(d), Ok(s)) => Profile {
            server: kind,
            hardware_counters: hw,
            event: event.into(),
            by_dso: d,
            by_thread,
            report: s,
        },
        (Err(e), _) | (_, Err(e)) => fail(e),
    }
}

#[derive(Debug, Clone, Serialize)]
struct Machine {
    cores: usize,
    kernel: String,
    cpu: String,
    date: String,
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Machine {
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        kernel,
        cpu,
        date,
    }
}

#[derive(Debug, Clone, Serialize)]
struct Results {
    machine: Machine,
    media: MediaParams,
    fixed: Vec<RunResult>,
    capacity: Vec<Capacity>,
    benches: Vec<Bench>,
    profiles: Vec<Profile>,
    verdicts: Vec<String>,
    table: String,
}

fn main() -> anyhow::Result<()> {
    let mut a = Args::parse();
    if a.quick {
        a.duration = a.duration.min(2.0);
        a.fixed_pps = a.fixed_pps.min(4000.0);
        a.max_subs = a.max_subs.min(200);
    }
    // One harness at a time: two would share the cores and the servers' ports.
    std::fs::create_dir_all("target/perf-logs")?;
    let lock = std::fs::File::create("target/perf-logs/harness.lock")?;
    // SAFETY: flock on a descriptor we own; the lock lives as long as `lock`.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&lock),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } != 0
    {
        bail!("another perf-harness is running (target/perf-logs/harness.lock)");
    }
    let m = machine();
    eprintln!(
        "perf-harness on {} cores, kernel {}, {}",
        m.cores, m.kernel, m.cpu
    );
    let mut kinds = vec![
        ServerKind::Baseline,
        ServerKind::SwitchyardUring,
        ServerKind::SwitchyardMmsg,
    ];
    if !a.skip_janus {
        kinds.push(ServerKind::Janus);
    }
    if !a.only.is_empty() {
        kinds.retain(|k| a.only.iter().any(|o| o == k.name()));
    }
    let benches = if a.skip_bench {
        Vec::new()
    } else {
        run_benches(&a)
    };
    let pps_per_pub = STANDARD.packets_per_second();
    let fanouts = if a.fanouts.is_empty() {
        vec![1u32, 10, 100]
    } else {
        a.fanouts.clone()
    };
    // Servers interleaved within each fan-out (and round), so that every server is measured
    // close in time to the baseline it is compared with on this shared machine.
    let mut fixed = Vec::new();
    for &fanout in &fanouts {
        let rounds = if fanout == 1 { a.rounds.max(1) } else { 1 };
        for round in 0..rounds {
            for &kind in &kinds {
                let rooms =
                    ((a.fixed_pps / (pps_per_pub * f64::from(fanout))).round() as u32).max(1);
                match start(kind, &a) {
                    Ok(server) => {
                        let r = run_load(&server, &a, rooms, fanout, a.duration);
                        server.stop();
                        match r {
                            Ok(mut r) => {
                                r.round = round;
                                fixed.push(r)
                            }
                            Err(e) => eprintln!("{} fan-out {fanout}: {e:#}", kind.name()),
                        }
                    }
                    Err(e) => eprintln!("{}: {e:#}", kind.name()),
                }
            }
        }
    }
    let mut caps = Vec::new();
    if !a.skip_capacity {
        for &kind in &kinds {
            match capacity(kind, &a) {
                Ok(c) => caps.push(c),
                Err(e) => eprintln!("{} capacity: {e:#}", kind.name()),
            }
        }
    }
    let mut profiles = Vec::new();
    if !a.skip_profile {
        let rooms = ((a.fixed_pps / pps_per_pub).round() as u32).max(1);
        for kind in [ServerKind::SwitchyardMmsg, ServerKind::SwitchyardUring] {
            if kinds.contains(&kind) {
                profiles.push(profile_engine(&a, kind, 1, rooms));
            }
        }
    }
    let (table, verdicts) = render(&m, &fixed, &caps, &benches, &run_settings(&a));
    println!("{table}");
    for v in &verdicts {
        println!("{v}");
    }
    let results = Results {
        machine: m,
        media: STANDARD,
        fixed,
        capacity: caps,
        benches,
        profiles,
        verdicts,
        table,
    };
    std::fs::create_dir_all(&a.out_dir)?;
    let json = serde_json::to_string_pretty(&results)?;
    std::fs::write(a.out_dir.join("latest.json"), &json)?;
    eprintln!("wrote {}", a.out_dir.join("latest.json").display());
    if !a.no_results_md {
        write_results_md(&a.results_md, &results)?;
        eprintln!("updated {}", a.results_md.display());
    }
    Ok(())
}

fn find(fixed: &[RunResult], kind: ServerKind, fanout: u32, round: u32) -> Option<&RunResult> {
    fixed
        .iter()
        .find(|r| r.server == kind && r.fanout == fanout && r.round == round)
}

/// Median of a non-empty list.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The engine's and the load generator's settings the rows ran with, for the report.
fn run_settings(a: &Args) -> String {
    let coalesce = a.recv_coalesce_us.map_or("its default (1 ms)".to_string(), |us| format!("--recv-coalesce-us {us}"));
    let gro = if a.loadgen_no_udp_gro {
        "datagram by datagram (--loadgen-no-udp-gro: the loopback cuts GSO trains at the sender's expense)"
    } else {
        "with UDP GRO (a server's GSO train arrives whole, as a NIC with segmentation offload would send it)"
    };
    format!(
        "Switchyard engine: {} worker(s), receive coalescing {coalesce}\nLoad generator: {} media thread(s), participants receive {gro}",
        a.workers, a.loadgen_threads
    )
}

fn render(
    m: &Machine,
    fixed: &[RunResult],
    caps: &[Capacity],
    benches: &[Bench],
    settings: &str,
) -> (String, Vec<String>) {
    let mut t = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        t,
        "Machine: {} cores ({}), Linux {}, {}",
        m.cores, m.cpu, m.kernel, m.date
    );
    let _ = writeln!(t, "Load: rooms of 1 publisher (1 Mbit/s VP8-like video at 30 fps in <= 1200 B packets + 32 kbit/s Opus-like audio = {:.0} pkt/s) and N subscribers", STANDARD.packets_per_second());
    let _ = writeln!(t, "{settings}");
    let _ = writeln!(t);
    let _ = writeln!(t, "Fixed load: each row is one fresh server; x baseline and x Janus compare with the baseline and Janus runs of the same fan-out and round (servers run one after the other within a round).");
    let _ = writeln!(t);
    let _ = writeln!(t, "| server | fan-out | round | rooms | subs | fwd pkt/s | server cores | pkt/s per core | x baseline | x Janus | p50 ms | p99 ms | p99.9 ms | loss % | mcores/sub | RSS KiB/sub | wake-ups/s | loadgen cores |");
    let _ = writeln!(
        t,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in fixed {
        let base = find(fixed, ServerKind::Baseline, r.fanout, r.round)
            .map(|b| b.pps_per_core)
            .filter(|x| *x > 0.0);
        let janus = find(fixed, ServerKind::Janus, r.fanout, r.round)
            .map(|b| b.pps_per_core)
            .filter(|x| *x > 0.0);
        let ratio =
            |d: Option<f64>| d.map_or("-".to_string(), |d| format!("{:.2}", r.pps_per_core / d));
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.0} | {} | {} | {:.2} | {:.2} | {:.2} | {:.3} | {:.2} | {:.1} | {} | {:.2} |",
            r.server.name(),
            r.fanout,
            r.round + 1,
            r.rooms,
            r.subscribers,
            r.forwarded_pps,
            r.media_cores,
            r.pps_per_core,
            ratio(base),
            ratio(janus),
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.loss_pct,
            r.millicores_per_sub,
            r.rss_kib_per_sub,
            // 0: the sampler saw no switch over the window (not measured).
            if r.wakeups_per_s > 0.0 {
                format!("{:.0}", r.wakeups_per_s)
            } else {
                "-".to_string()
            },
            r.loadgen_cores
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "Capacity: most subscribers held (rooms of 1 + {} at the load above) with loss < {LOSS_LIMIT_PCT}% and p99 < {P99_LIMIT_MS} ms", caps.first().map_or(10, |c| c.fanout));
    let _ = writeln!(t);
    let _ = writeln!(t, "| server | subs held | first failing | fwd pkt/s | server cores | pkt/s per core | subs per core | x Janus | p50 ms | p99 ms | p99.9 ms | loss % | mcores/sub | RSS KiB/sub | loadgen cores | tried (subs:ok) |");
    let _ = writeln!(
        t,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    let janus_cap = caps
        .iter()
        .find(|c| c.server == ServerKind::Janus)
        .map(|c| c.subs_per_core)
        .filter(|x| *x > 0.0);
    for c in caps {
        let tried: Vec<String> = c
            .tried
            .iter()
            .map(|(s, ok, _, _)| format!("{s}:{}", if *ok { "ok" } else { "x" }))
            .collect();
        match &c.held {
            Some(r) => {
                let _ = writeln!(
                    t,
                    "| {} | {} | {} | {:.0} | {:.2} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.3} | {:.2} | {:.1} | {:.2} | {} |",
                    c.server.name(),
                    r.subscribers,
                    c.failed_at.map_or("-".into(), |f| f.to_string()),
                    r.forwarded_pps,
                    r.media_cores,
                    r.pps_per_core,
                    c.subs_per_core,
                    janus_cap.map_or("-".into(), |j| format!("{:.2}", c.subs_per_core / j)),
                    r.p50_ms,
                    r.p99_ms,
                    r.p999_ms,
                    r.loss_pct,
                    r.millicores_per_sub,
                    r.rss_kib_per_sub,
                    r.loadgen_cores,
                    tried.join(" ")
                );
            }
            None => {
                let _ = writeln!(
                    t,
                    "| {} | none | {} | - | - | - | - | - | - | - | - | - | - | - | - | {} |",
                    c.server.name(),
                    c.failed_at.map_or("-".into(), |f| f.to_string()),
                    tried.join(" ")
                );
            }
        }
    }
    if !benches.is_empty() {
        let _ = writeln!(t);
        let _ = writeln!(t, "| micro-benchmark | median |");
        let _ = writeln!(t, "|---|---:|");
        for b in benches {
            let v = if b.ns >= 1000.0 {
                format!("{:.2} µs", b.ns / 1000.0)
            } else {
                format!("{:.1} ns", b.ns)
            };
            let _ = writeln!(t, "| {} | {v} |", b.name);
        }
    }
    let mut verdicts = Vec::new();
    for kind in [ServerKind::SwitchyardUring, ServerKind::SwitchyardMmsg] {
        // (ratio, ours, baseline's) per round that has both.
        let rounds: Vec<(f64, f64, f64)> = fixed
            .iter()
            .filter(|r| r.server == kind && r.fanout == 1)
            .filter_map(|s| {
                let b = find(fixed, ServerKind::Baseline, 1, s.round)?.pps_per_core;
                (b > 0.0).then(|| (s.pps_per_core / b, s.pps_per_core, b))
            })
            .collect();
        if rounds.is_empty() {
            continue;
        }
        let ratio = median(rounds.iter().map(|r| r.0).collect());
        let each: Vec<String> = rounds
            .iter()
            .map(|(x, s, b)| format!("{x:.2}x ({s:.0} vs {b:.0})"))
            .collect();
        let at_least = rounds.iter().filter(|r| r.0 >= 1.0).count();
        verdicts.push(format!(
            "Target SRTP forwarding at fan-out 1 >= baseline pkt/s per core ({}): {} (median of {} round(s) {:.2}x, {} of them at 1x or above; per round, pkt/s per core vs the baseline's: {})",
            kind.name(),
            if ratio >= 1.0 { "MET" } else { "NOT MET" },
            rounds.len(),
            ratio,
            at_least,
            each.join(", ")
        ));
    }
    if let Some(j) = janus_cap {
        for c in caps.iter().filter(|c| {
            matches!(
                c.server,
                ServerKind::SwitchyardUring | ServerKind::SwitchyardMmsg
            )
        }) {
            let x = c.subs_per_core / j;
            verdicts.push(format!(
                "Target >= 3x Janus's subscribers per core ({}): {} ({:.0} vs {:.0} subscribers per core, {:.2}x)",
                c.server.name(),
                if x >= 3.0 { "MET" } else { "NOT MET" },
                c.subs_per_core,
                j,
                x
            ));
        }
    }
    (t, verdicts)
}

const BEGIN: &str = "<!-- BEGIN perf-harness output -->";
const END: &str = "<!-- END perf-harness output -->";

fn write_results_md(path: &Path, r: &Results) -> anyhow::Result<()> {
    let mut gen = String::new();
    gen.push_str(BEGIN);
    gen.push_str("\n\n");
    gen.push_str(&r.table);
    gen.push('\n');
    for v in &r.verdicts {
        gen.push_str(&format!("- {v}\n"));
    }
    for p in &r.profiles {
        gen.push_str(&format!(
            "\nEngine profile, {} at fan-out 1 (`perf record -e {} -g` on switchyard-engine over the steady state of a separate fixed-load run at fan-out 1, after every participant has joined; hardware counters {}). By binary:\n\n```\n{}\n```\n\nBy thread:\n\n```\n{}\n```\n\nTop symbols:\n\n```\n{}\n```\n",
            p.server.name(),
            p.event,
            if p.hardware_counters { "available" } else { "not supported on this machine (`perf stat -e instructions true` reports <not supported>), so it samples the cpu-clock software event" },
            p.by_dso,
            p.by_thread,
            p.report
        ));
    }
    gen.push_str("\nRaw figures: `perf/results/latest.json`.\n\n");
    gen.push_str(END);
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if e > b => format!("{}{}{}", &old[..b], gen, &old[e + END.len()..]),
        _ => format!("{old}\n{gen}\n"),
    };
    let mut f = std::fs::File::create(path)?;
    f.write_all(new.as_bytes())?;
    Ok(())
}
