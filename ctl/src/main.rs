//! `switchyardctl`: the operator's command line for a Switchyard node, over the control daemon's
//! admin API (`/api/...` on the HTTP port; loopback by default). See docs/operations.md, "Admin CLI
//! and metrics".

mod http;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::http::Base;

/// Operate a Switchyard node: list rooms, kick participants, close rooms, drain, watch stats.
#[derive(Parser)]
#[command(name = "switchyardctl", version)]
struct Cli {
    /// The control daemon's HTTP address.
    #[arg(long, global = true, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Rooms with their mode and participants (a table; `--json` for the API's JSON).
    Rooms {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove participant ID (`p7`) from ROOM: they get an error `kicked` and the others see them leave.
    Kick {
        /// Room name.
        room: String,
        /// Participant id, as `rooms` shows it.
        id: String,
    },
    /// Test aid: limit what the SFU sends participant ID (`p7`) in ROOM to KBPS kbit/s (0 lifts the
    /// limit), emulating a slow downlink; the engine drops what exceeds it.
    SendCap {
        /// Room name.
        room: String,
        /// Participant id, as `rooms` shows it.
        id: String,
        /// kbit/s; 0 removes the cap.
        kbps: u64,
    },
    /// Remove everyone from ROOM.
    Close {
        /// Room name.
        room: String,
    },
    /// Stop taking new rooms (existing rooms carry on; /readyz answers 503). `--status` only shows the state.
    Drain {
        /// Show the state without changing it.
        #[arg(long)]
        status: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take new rooms again.
    Undrain,
    /// Live engine statistics, refreshed every second with per-worker packet rates (Ctrl-C stops).
    Stats {
        /// Print once (totals, no rates) and exit.
        #[arg(long)]
        once: bool,
        /// Print the API's JSON (implies --once).
        #[arg(long)]
        json: bool,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("switchyardctl: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let api = Base::parse(&cli.url)?;
    match cli.cmd {
        Cmd::Rooms { json } => {
            let rooms = api.json("GET", "/api/rooms")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rooms)?);
            } else {
                print!("{}", rooms_table(&rooms));
            }
        }
        Cmd::Kick { room, id } => {
            api.json("POST", &format!("/api/rooms/{}/participants/{}/kick", enc(&room), enc(&id)))?;
            println!("kicked {id} from {room}");
        }
        Cmd::SendCap { room, id, kbps } => {
            let path = format!("/api/rooms/{}/participants/{}/send-cap", enc(&room), enc(&id));
            api.json_with("POST", &path, Some(&serde_json::json!({ "kbps": kbps })))?;
            if kbps == 0 {
                println!("lifted the send cap of {id} in {room}");
            } else {
                println!("capped what {id} in {room} receives to {kbps} kbit/s");
            }
        }
        Cmd::Close { room } => {
            let v = api.json("POST", &format!("/api/rooms/{}/close", enc(&room)))?;
            println!("closed {room}: {} participant(s) removed", v["removed"]);
        }
        Cmd::Drain { status, json } => {
            let v = api.json(if status { "GET" } else { "POST" }, "/api/drain")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{}", drain_line(&v));
            }
        }
        Cmd::Undrain => {
            let v = api.json("DELETE", "/api/drain")?;
            println!("{}", drain_line(&v));
        }
        Cmd::Stats { once, json, interval } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&api.json("GET", "/api/stats")?)?);
            } else if once {
                print!("{}", stats_table(&api.json("GET", "/api/stats")?, None));
            } else {
                live(&api, Duration::from_secs_f64(interval.max(0.1)))?;
            }
        }
    }
    Ok(())
}

/// Percent-encodes a path segment.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn drain_line(v: &Value) -> String {
    let state = if v["draining"].as_bool() == Some(true) { "draining (no new rooms)" } else { "not draining" };
    format!("{state}; {} room(s), {} participant(s)", v["rooms"], v["participants"])
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        format!("{}\n", s.join("  ").trim_end())
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn rooms_table(rooms: &Value) -> String {
    let empty = Vec::new();
    let rooms = rooms.as_array().unwrap_or(&empty);
    if rooms.is_empty() {
        return "no rooms\n".into();
    }
    let flag = |p: &Value, k: &str, c: char| if p[k].as_bool() == Some(true) { c } else { '-' };
    let mut rows = Vec::new();
    for r in rooms {
        let room = r["name"].as_str().unwrap_or("?").to_string();
        let mode = r["mode"].as_str().unwrap_or("?").to_string();
        for p in r["participants"].as_array().unwrap_or(&empty) {
            rows.push(vec![
                room.clone(),
                mode.clone(),
                p["id"].as_str().unwrap_or("?").to_string(),
                p["name"].as_str().unwrap_or("").to_string(),
                format!("{}{}{}", flag(p, "audio", 'a'), flag(p, "video", 'v'), flag(p, "screen", 's')),
                p["tracks"].to_string(),
                p["transports"].to_string(),
            ]);
        }
    }
    table(&["ROOM", "MODE", "ID", "NAME", "MEDIA", "TRACKS", "TRANSPORTS"], &rows)
}

fn counter(w: &Value, name: &str) -> u64 {
    w["counters"][name].as_u64().unwrap_or(0)
}

/// Per-worker figures; with `prev` (the previous snapshot and the seconds since), packet rates.
fn stats_table(s: &Value, prev: Option<(&Value, f64)>) -> String {
    let empty = Vec::new();
    let workers = s["workers"].as_array().unwrap_or(&empty);
    let before: BTreeMap<u64, &Value> = prev
        .map(|(p, _)| p["workers"].as_array().unwrap_or(&empty).iter().map(|w| (w["index"].as_u64().unwrap_or(0), w)).collect())
        .unwrap_or_default();
    let rate = |w: &Value, name: &str| -> String {
        let (Some((_, secs)), Some(b)) = (prev, before.get(&w["index"].as_u64().unwrap_or(0))) else { return "-".into() };
        format!("{:.0}", counter(w, name).saturating_sub(counter(b, name)) as f64 / secs)
    };
    let mut rows = Vec::new();
    for w in workers {
        rows.push(vec![
            w["index"].to_string(),
            w["transports"].to_string(),
            rate(w, "rx_packets"),
            rate(w, "tx_packets"),
            rate(w, "rtp_forwarded"),
            counter(w, "rx_packets").to_string(),
            counter(w, "rtp_forwarded").to_string(),
            w["drops"].as_object().map_or(0, |d| d.values().filter_map(Value::as_u64).sum::<u64>()).to_string(),
            format!("{:.1}", w["latency"]["p99_ns"].as_f64().unwrap_or(0.0) / 1000.0),
        ]);
    }
    let mut out = format!("io: {}  workers: {}\n", s["io"].as_str().unwrap_or("?"), workers.len());
    out.push_str(&table(&["WORKER", "TRANSPORTS", "RX/S", "TX/S", "FWD/S", "RX", "FWD", "DROPS", "P99(us)"], &rows));
    out
}

fn live(api: &Base, every: Duration) -> anyhow::Result<()> {
    let mut prev: Option<(Value, Instant)> = None;
    loop {
        let now = Instant::now();
        let s = api.json("GET", "/api/stats")?;
        let text = stats_table(&s, prev.as_ref().map(|(p, t)| (p, now.duration_since(*t).as_secs_f64().max(1e-3))));
        // Clear the screen and redraw at the top.
        print!("\x1b[2J\x1b[H{}  (every {:.1}s; Ctrl-C stops)\n{text}", api.show(), every.as_secs_f64());
        std::io::stdout().flush()?;
        prev = Some((s, now));
        std::thread::sleep(every.saturating_sub(now.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rates_come_from_deltas() {
        let a = json!({"io": "epoll", "workers": [{"index": 0, "transports": 2, "counters": {"rx_packets": 100, "tx_packets": 10, "rtp_forwarded": 50}, "drops": {"x": 1}, "latency": {"p99_ns": 2500}}]});
        let b = json!({"io": "epoll", "workers": [{"index": 0, "transports": 2, "counters": {"rx_packets": 300, "tx_packets": 30, "rtp_forwarded": 150}, "drops": {"x": 2}, "latency": {"p99_ns": 2500}}]});
        let t = stats_table(&b, Some((&a, 2.0)));
        let row = t.lines().nth(2).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells, ["0", "2", "100", "10", "50", "300", "150", "2", "2.5"], "{t}");
        assert!(stats_table(&b, None).lines().nth(2).unwrap().contains(" - "));
    }

    #[test]
    fn rooms_table_lists_participants() {
        let rooms = json!([{"name": "r", "mode": "sfu", "epoch": 1, "participants": [
            {"id": "p1", "name": "Ada", "audio": true, "video": false, "screen": false, "mesh": false, "tracks": 2, "transports": 2}]}]);
        let t = rooms_table(&rooms);
        assert!(t.starts_with("ROOM"), "{t}");
        assert_eq!(t.lines().nth(1).unwrap().split_whitespace().collect::<Vec<_>>(), ["r", "sfu", "p1", "Ada", "a--", "2", "2"]);
        assert_eq!(rooms_table(&json!([])), "no rooms\n");
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
    }
}
