//! The engine's TURN server checked against an independent client: coturn's `turnutils_uclient`
//! (Debian package `coturn`), with `turnutils_peer` as the peer. The engine binary runs with two
//! workers; the client allocates with REST credentials (minted here exactly as switchyard-control
//! does, and also by uclient itself from the shared secret with `-W`), binds channels (or uses
//! Send/Data indications with `-s`), and round-trips datagrams through the relay to the echoing
//! peer; every run must report `Total lost packets 0`. A wrong password and an expired username
//! must make the client fail (the server answers 401), and the engine's counters must agree.
//!
//! Skips loudly (a message on the terminal, not in captured output) when coturn's tools are not
//! installed, and fails instead when `CI` is set: `.ci/run` installs coturn.

mod turn_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_protocol::{EngineClient, Request};
use turn_support::{counter, mint, Client};

const SECRET: &str = "coturn-interop-secret";
const MESSAGES: u32 = 50;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Writes straight to the terminal: libtest captures `eprintln!` of passing tests, and a skip must
/// not go unnoticed.
fn loud(msg: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "\n*** {msg} ***\n");
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs a coturn tool to completion (at most `limit`), returning (success, stdout + stderr).
fn run(cmd: &Path, args: &[&str], limit: Duration) -> (bool, String) {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", cmd.display()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut out);
    }
    if status.is_none() {
        out.push_str("\n[killed: time limit]\n");
    }
    (status.is_some_and(|s| s.success()), out)
}

/// The figures of uclient's summary: (messages sent, messages received, lost packets).
fn summary(out: &str) -> Option<(u64, u64, u64)> {
    let mut sent_recv = None;
    let mut lost = None;
    for line in out.lines() {
        // "start_mclient: tot_send_msgs=50, tot_recv_msgs=50" (the final, total line)
        if let Some(i) = line.find("start_mclient: tot_send_msgs=") {
            let rest = &line[i + "start_mclient: tot_send_msgs=".len()..];
            let (s, r) = rest.split_once(", tot_recv_msgs=")?;
            sent_recv = Some((s.trim().parse().ok()?, r.trim().parse().ok()?));
        }
        // "Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)"
        if let Some(i) = line.find("Total lost packets ") {
            lost = line[i + "Total lost packets ".len()..].split_whitespace().next()?.parse().ok();
        }
    }
    let (s, r) = sent_recv?;
    Some((s, r, lost?))
}

fn summary_lines(out: &str) -> String {
    out.lines()
        .filter(|l| l.contains("tot_send_msgs=") && !l.contains("msz=") || l.contains("Total lost") || l.contains("round trip") || l.contains("ERROR"))
        .map(|l| format!("    {l}\n"))
        .collect()
}

#[test]
fn coturn_uclient_relays_through_the_engine() {
    let (Some(uclient), Some(peer_tool)) = (tool("turnutils_uclient"), tool("turnutils_peer")) else {
        let msg = "SKIPPED turn_coturn: coturn's turnutils_uclient / turnutils_peer are not installed (apt-get install coturn)";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}; CI must run this test");
        }
        loud(msg);
        return;
    };

    // The engine binary: 2 workers, TURN on a free port, relays from a private range.
    let turn_port = free_udp_port();
    let socket = std::env::temp_dir().join(format!("switchyard-turn-coturn-{}.sock", std::process::id()));
    let engine = Proc(
        Command::new(env!("CARGO_BIN_EXE_switchyard-engine"))
            .args(["--workers", "2", "--bind", "127.0.0.1", "--no-pin", "--socket"])
            .arg(&socket)
            .args(["--turn-port", &turn_port.to_string(), "--relay-ports", "46000-46199", "--turn-realm", "switchyard"])
            .args(["--turn-max-allocations-per-user", "50"])
            .env("SWITCHYARD_TURN_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn engine"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "engine did not create its control socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut ctl, _) = EngineClient::connect(&socket, "turn-coturn-test", false).unwrap();
    let server = SocketAddr::from(([127, 0, 0, 1], turn_port));

    // The peer: coturn's UDP echo server.
    let peer_port = free_udp_port();
    let _peer = Proc(
        Command::new(&peer_tool)
            .args(["-p", &peer_port.to_string(), "-L", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn turnutils_peer"),
    );
    std::thread::sleep(Duration::from_millis(300));

    let (username, password) = mint(SECRET, "alice", 3600);
    let port = turn_port.to_string();
    let peer = peer_port.to_string();
    let n = MESSAGES.to_string();
    let common = ["-p", port.as_str(), "-e", "127.0.0.1", "-r", peer.as_str(), "-n", n.as_str()];
    // (what, extra flags, datagrams each direction)
    let scenarios: [(&str, Vec<&str>, u64); 5] = [
        ("channels, credentials minted like switchyard-control", vec!["-u", &username, "-w", &password, "-c"], 1),
        ("channels, uclient mints from the shared secret (-W)", vec!["-W", SECRET, "-u", "bob", "-c"], 1),
        ("Send/Data indications (-s)", vec!["-u", &username, "-w", &password, "-c", "-s"], 1),
        ("RTP+RTCP pair: EVEN-PORT + RESERVATION-TOKEN", vec!["-u", &username, "-w", &password], 2),
        ("client to client through two allocations (-y)", vec!["-u", &username, "-w", &password, "-c", "-y"], 2),
    ];
    let mut report = String::from("turnutils_uclient against switchyard-engine's TURN server:\n");
    for (what, flags, streams) in &scenarios {
        let mut args: Vec<&str> = common.to_vec();
        args.extend(flags.iter().copied());
        args.push("127.0.0.1");
        let (ok, out) = run(&uclient, &args, Duration::from_secs(60));
        let s = summary(&out);
        report.push_str(&format!("  {what}: exit {}\n{}", if ok { "ok" } else { "FAILED" }, summary_lines(&out)));
        assert!(ok, "{what}: uclient failed:\n{out}");
        let (sent, received, lost) = s.unwrap_or_else(|| panic!("{what}: no summary in uclient's output:\n{out}"));
        assert_eq!(sent, u64::from(MESSAGES) * streams, "{what}:\n{out}");
        assert_eq!((received, lost), (sent, 0), "{what}: lost packets:\n{out}");
    }

    // Refusals: a wrong password and an expired (correctly signed) username.
    let stats = ctl.request(&Request::Stats).unwrap();
    let failures_before = counter(&stats, "turn_auth_failures", false);
    let allocations_before = counter(&stats, "turn_allocations", false);
    let (expired, expired_pw) = mint(SECRET, "alice", -60);
    for (what, u, p) in [("wrong password", username.as_str(), "wrong-password"), ("expired username", &expired, &expired_pw)] {
        let mut args: Vec<&str> = common.to_vec();
        args.extend(["-u", u, "-w", p, "-c", "-n", "3", "127.0.0.1"]);
        let (ok, out) = run(&uclient, &args, Duration::from_secs(60));
        report.push_str(&format!("  {what}: exit {}\n{}", if ok { "ok" } else { "error (as it must)" }, summary_lines(&out)));
        assert!(!ok, "{what}: uclient succeeded:\n{out}");
        assert!(out.contains("Cannot complete Allocation"), "{what}:\n{out}");
        assert!(summary(&out).is_none(), "{what}: data flowed:\n{out}");
        // What the server answered: 401 (seen with our own client, uclient does not print it).
        let mut c = Client::new(server, u, p);
        let e = c.allocate(None).unwrap_err();
        assert_eq!(e.0, 401, "{what}: {e:?}");
        report.push_str(&format!("    server answer: {} {}\n", e.0, e.1));
    }
    let stats = ctl.request(&Request::Stats).unwrap();
    assert!(counter(&stats, "turn_auth_failures", false) > failures_before, "auth failures counted");
    assert_eq!(counter(&stats, "turn_allocations", false), allocations_before, "nothing allocated for bad credentials");
    let names = [
        "turn_allocations",
        "turn_allocations_closed",
        "turn_relayed_to_peer",
        "turn_relayed_to_client",
        "turn_auth_failures",
        "turn_bindings",
    ];
    report.push_str("  engine counters:");
    for name in names {
        report.push_str(&format!(" {name}={}", counter(&stats, name, false)));
    }
    report.push_str(&format!(
        " turn_malformed={} turn_no_permission={}\n",
        counter(&stats, "turn_malformed", true),
        counter(&stats, "turn_no_permission", true)
    ));
    let relayed = counter(&stats, "turn_relayed_to_peer", false);
    assert!(relayed >= u64::from(MESSAGES) * 7, "relayed {relayed}");
    assert_eq!(counter(&stats, "turn_malformed", true), 0, "coturn sent nothing we could not parse");
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{report}");
    drop(ctl);
    drop(engine);
    let _ = std::fs::remove_file(&socket);
}
