//! The load generator against a real Switchyard (engine and control daemon started in this
//! process): one publisher to two subscribers for five seconds, every packet received and verified.

use std::time::Duration;

use switchyard_loadgen::run;

mod common;
use common::{one_room, start_switchyard};

#[test]
fn one_publisher_two_subscribers_every_packet_arrives_verified() {
    let (engine, http) = start_switchyard();
    let cfg = one_room(http, Duration::from_secs(5), Duration::from_millis(700));
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
    // Each new subscription asks the publisher for a keyframe; the publisher answers with one (a
    // VP8 keyframe header the engine recognises), so the engine stops asking: a handful of requests
    // in 5 s, not one a second per subscription.
    assert!(s.keyframe_requests >= 1, "the engine asked for a keyframe");
    assert!(s.keyframes_sent >= 2, "the first frame and at least one answer: {}", s.keyframes_sent);
    assert!(s.keyframe_requests <= 4, "{} keyframe requests in 5 s", s.keyframe_requests);
    engine.stop();
}
