//! Issue 7's loss-recovery criterion against a real Switchyard (engine and control daemon in this
//! process): with 5% random loss injected on the subscribers' downlink, and separately on the
//! publisher's uplink, at least 95% of the lost video packets are recovered by retransmission. Audio
//! has no NACK negotiated (as with browsers), so its losses are reported but not asserted.
//!
//! Each run is one publisher (1 Mbit/s VP8-like video + Opus-like audio) to two subscribers for a few
//! seconds. A control run with the load generator's NACKs off shows the injected loss is real and
//! that what is recovered is recovered by NACKs.

use std::time::Duration;

use switchyard_loadgen::feedback::LossOptions;
use switchyard_loadgen::report::Summary;
use switchyard_loadgen::run;

mod common;
use common::{one_room, start_switchyard};

fn run_with_loss(loss: LossOptions, seconds: u64) -> Summary {
    let (engine, http) = start_switchyard();
    // A grace long enough for the last losses' retransmissions (publishers keep sending uncounted
    // packets meanwhile, so a loss among the last counted packets is detected too).
    let cfg = one_room(
        http,
        Duration::from_secs(seconds),
        Duration::from_millis(1000),
    );
    let s = run::run_with(&cfg, &loss).expect("the run completes");
    eprintln!("{}", s.table());
    engine.stop();
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
    // 170 packets/s to each of 2 subscribers.
    assert!(
        s.expected >= 250 * seconds,
        "expected only {} packets",
        s.expected
    );
    assert_eq!((s.corrupt, s.srtp_errors), (0, 0));
    s
}

#[test]
fn five_percent_downlink_loss_is_recovered() {
    let s = run_with_loss(
        LossOptions {
            loss_down_pct: 5.0,
            ..LossOptions::default()
        },
        4,
    );
    let r = s.recovery.expect("a recovery section");
    let v = r.down_video;
    // About 5% of ~960 video packets: the loss is real, so the ratio below means something.
    assert!(
        v.lost >= 15,
        "only {} downlink video losses: {:?}",
        v.lost,
        r.counters
    );
    assert!(
        v.recovered_pct >= 95.0,
        "downlink video: {} of {} lost packets recovered ({:.1}%)",
        v.recovered,
        v.lost,
        v.recovered_pct
    );
    assert_eq!(r.up_video.lost, 0, "nothing was dropped on the uplink");
    let c = r.counters;
    assert!(c.down_dropped > 0 && c.nack_sent > 0, "{c:?}");
    // The server answered from its cache: the publisher was not asked (NACKs terminate at the SFU).
    assert_eq!(c.nack_received, 0, "{c:?}");
    // The server terminates RTCP: subscribers get its sender reports.
    assert!(c.sr_received > 0, "{c:?}");
}

#[test]
fn five_percent_uplink_loss_is_recovered() {
    let s = run_with_loss(
        LossOptions {
            loss_up_pct: 5.0,
            ..LossOptions::default()
        },
        4,
    );
    let r = s.recovery.expect("a recovery section");
    let v = r.up_video;
    // Each uplink loss is missing at both subscribers until the server gets the retransmission.
    assert!(
        v.lost >= 15,
        "only {} uplink video losses: {:?}",
        v.lost,
        r.counters
    );
    assert!(
        v.recovered_pct >= 95.0,
        "uplink video: {} of {} lost packets recovered ({:.1}%)",
        v.recovered,
        v.lost,
        v.recovered_pct
    );
    let c = r.counters;
    // Recovered because the server NACKed the publisher, which retransmitted.
    assert!(
        c.up_dropped > 0 && c.nack_received > 0 && c.rtx_sent > 0,
        "{c:?}"
    );
    // The server terminates RTCP: the publisher gets its receiver reports.
    assert!(c.rr_received > 0, "{c:?}");
}

#[test]
fn without_nacks_the_injected_loss_stays_lost() {
    let s = run_with_loss(
        LossOptions {
            loss_down_pct: 5.0,
            loss_up_pct: 5.0,
            feedback: Some(false),
        },
        2,
    );
    let r = s.recovery.expect("a recovery section");
    assert!(r.down_video.lost > 0 && r.up_video.lost > 0, "{r:?}");
    assert_eq!((r.down_video.recovered, r.up_video.recovered), (0, 0));
    assert!(s.lost > 0);
    assert_eq!((r.counters.nack_sent, r.counters.rtx_sent), (0, 0));
}
