//! Engine statistics as Prometheus text and as JSON for the operator API.

use std::fmt::Write as _;

use switchyard_protocol::EngineStats;

use crate::hub::HubCounters;

/// Prometheus exposition of what the hub counts: rooms by mode, participants, WebSocket
/// connections, DTLS handshakes by result, operator removals, draining.
pub fn render_hub(h: &HubCounters) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP switchyard_rooms Rooms, by mode.");
    let _ = writeln!(out, "# TYPE switchyard_rooms gauge");
    for (mode, n) in &h.rooms {
        let _ = writeln!(out, "switchyard_rooms{{mode=\"{mode}\"}} {n}");
    }
    let gauges = [
        ("participants", "Participants in all rooms.", h.participants as u64),
        ("websocket_connections", "Open signaling WebSocket connections.", h.connections as u64),
        ("draining", "1 while the node is draining (no new rooms).", u64::from(h.draining)),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP switchyard_{name} {help}");
        let _ = writeln!(out, "# TYPE switchyard_{name} gauge");
        let _ = writeln!(out, "switchyard_{name} {v}");
    }
    let _ = writeln!(out, "# HELP switchyard_dtls_handshakes_total DTLS handshakes with clients, by result.");
    let _ = writeln!(out, "# TYPE switchyard_dtls_handshakes_total counter");
    let _ = writeln!(out, "switchyard_dtls_handshakes_total{{result=\"ok\"}} {}", h.dtls_ok);
    let _ = writeln!(out, "switchyard_dtls_handshakes_total{{result=\"failed\"}} {}", h.dtls_failed);
    let _ = writeln!(out, "# HELP switchyard_participants_removed_total Participants removed by an operator (kick, close).");
    let _ = writeln!(out, "# TYPE switchyard_participants_removed_total counter");
    let _ = writeln!(out, "switchyard_participants_removed_total {}", h.kicked);
    out
}

/// `switchyard_engine_up`: whether the engine answered the Stats request for this scrape.
pub fn render_engine_up(up: bool) -> String {
    format!(
        "# HELP switchyard_engine_up 1 when the engine answered this scrape.\n# TYPE switchyard_engine_up gauge\nswitchyard_engine_up {}\n",
        u8::from(up)
    )
}

/// Prometheus exposition of the engine's per-worker counters, drops and latency histogram.
pub fn render(s: &EngineStats) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP switchyard_engine_info The engine's I/O backend.");
    let _ = writeln!(out, "# TYPE switchyard_engine_info gauge");
    let _ = writeln!(out, "switchyard_engine_info{{io=\"{}\"}} 1", s.io);
    let _ = writeln!(out, "# HELP switchyard_engine_transports Transports per worker.");
    let _ = writeln!(out, "# TYPE switchyard_engine_transports gauge");
    for w in &s.workers {
        let _ = writeln!(out, "switchyard_engine_transports{{worker=\"{}\"}} {}", w.index, w.transports);
    }
    let names: Vec<&str> = s.workers.first().map(|w| w.counters.iter().map(|(k, _)| k.as_str()).collect()).unwrap_or_default();
    for name in names {
        let _ = writeln!(out, "# HELP switchyard_engine_{name}_total Engine counter {name}, per worker.");
        let _ = writeln!(out, "# TYPE switchyard_engine_{name}_total counter");
        for w in &s.workers {
            let v = w.counters.iter().find(|(k, _)| k == name).map_or(0, |(_, v)| *v);
            let _ = writeln!(out, "switchyard_engine_{name}_total{{worker=\"{}\"}} {v}", w.index);
        }
    }
    let _ = writeln!(out, "# HELP switchyard_engine_drops_total Datagrams dropped, by reason.");
    let _ = writeln!(out, "# TYPE switchyard_engine_drops_total counter");
    for w in &s.workers {
        for (reason, v) in &w.drops {
            let _ = writeln!(out, "switchyard_engine_drops_total{{worker=\"{}\",reason=\"{reason}\"}} {v}", w.index);
        }
    }
    let _ = writeln!(out, "# HELP switchyard_engine_forwarding_latency_seconds Receive-to-send time inside the engine.");
    let _ = writeln!(out, "# TYPE switchyard_engine_forwarding_latency_seconds histogram");
    for w in &s.workers {
        let l = &w.latency;
        for (le, c) in &l.buckets {
            let _ = writeln!(
                out,
                "switchyard_engine_forwarding_latency_seconds_bucket{{worker=\"{}\",le=\"{}\"}} {c}",
                w.index,
                *le as f64 / 1e9
            );
        }
        let _ = writeln!(out, "switchyard_engine_forwarding_latency_seconds_bucket{{worker=\"{}\",le=\"+Inf\"}} {}", w.index, l.count);
        let _ = writeln!(out, "switchyard_engine_forwarding_latency_seconds_sum{{worker=\"{}\"}} {}", w.index, l.sum_ns as f64 / 1e9);
        let _ = writeln!(out, "switchyard_engine_forwarding_latency_seconds_count{{worker=\"{}\"}} {}", w.index, l.count);
    }
    out
}

/// The same figures as JSON: `{io, workers: [{index, transports, counters: {..}, drops: {..}, latency: {..}}], totals: {..}}`.
pub fn stats_json(s: &EngineStats) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let mut totals = Map::new();
    let workers: Vec<Value> = s
        .workers
        .iter()
        .map(|w| {
            let mut counters = Map::new();
            for (k, v) in &w.counters {
                counters.insert(k.clone(), json!(v));
                let t = totals.get(k).and_then(Value::as_u64).unwrap_or(0);
                totals.insert(k.clone(), json!(t + v));
            }
            let drops: Map<String, Value> = w.drops.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            json!({
                "index": w.index,
                "transports": w.transports,
                "counters": counters,
                "drops": drops,
                "latency": {"count": w.latency.count, "p50_ns": w.latency.p50_ns, "p99_ns": w.latency.p99_ns,
                            "p999_ns": w.latency.p999_ns, "max_ns": w.latency.max_ns},
            })
        })
        .collect();
    json!({"io": s.io, "workers": workers, "totals": totals})
}
