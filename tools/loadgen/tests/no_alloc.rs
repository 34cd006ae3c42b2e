//! The media thread allocates nothing per packet, loss recovery included: a publisher and a subscriber
//! wired to each other over SRTP (the subscriber's NACKs go straight to the publisher) with 5% loss
//! injected on both legs; once both are running, a second of sending, receiving, dropping, NACKing,
//! retransmitting and reporting must not touch the heap. Counted by a global allocator over the whole
//! process (this test is the only one in its binary and the test thread only sleeps meanwhile).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_loadgen::feedback::LossOptions;
use switchyard_loadgen::media::{
    self, Control, Endpoint, Keepalive, Live, MediaParams, Role, RoomShared, Track,
};
use switchyard_loadgen::payload::{KIND_AUDIO, KIND_VIDEO};
use switchyard_srtp::{Context, Profile};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds GlobalAlloc's contract, which System shares.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn ctx(key: u8) -> Context {
    let p = Profile::Aes128CmHmacSha1_80;
    Context::new(p, &vec![key; p.key_len()], &vec![key ^ 0x5a; p.salt_len()]).expect("keys")
}

#[test]
fn media_thread_steady_state_does_not_allocate() {
    let control = Arc::new(Control::default());
    let live = Arc::new(Live::default());
    let interval = Arc::new(Mutex::new(media::new_histogram()));
    let params = MediaParams {
        video_bitrate: 1_000_000,
        fps: 30,
        packet_size: 1200,
        audio_bitrate: 32_000,
    };
    let loss = LossOptions {
        loss_down_pct: 5.0,
        loss_up_pct: 5.0,
        feedback: None,
    };
    let t = media::spawn_with(
        0,
        params,
        loss,
        true,
        Arc::clone(&control),
        Arc::clone(&live),
        interval,
    )
    .expect("media thread");
    let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    let room = Arc::new(RoomShared {
        id: 1,
        ..Default::default()
    });
    room.subscribers.store(1, Ordering::Relaxed);
    room.streams_per_subscriber.store(2, Ordering::Relaxed);
    let (aa, ba) = (a.local_addr().expect("addr"), b.local_addr().expect("addr"));
    t.add(Endpoint {
        socket: b,
        remote: aa,
        tx: Some(ctx(2)),
        rx: Some(ctx(1)),
        role: Role::Subscriber,
        room: Arc::clone(&room),
        keepalive: Keepalive::None,
        dtls: None,
    });
    t.add(Endpoint {
        socket: a,
        remote: ba,
        tx: Some(ctx(1)),
        rx: Some(ctx(2)),
        role: Role::Publisher(vec![
            Track {
                ssrc: 31,
                pt: 111,
                kind: KIND_AUDIO,
            },
            Track {
                ssrc: 32,
                pt: 96,
                kind: KIND_VIDEO,
            },
        ]),
        room: Arc::clone(&room),
        keepalive: Keepalive::None,
        dtls: None,
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while room.ready.load(Ordering::Relaxed) < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    room.started.store(true, Ordering::Relaxed);
    // Warm up: streams appear, rings fill, the first reports and NACKs go out.
    std::thread::sleep(Duration::from_millis(1500));
    let received0 = live.received.load(Ordering::Relaxed);
    let before = ALLOCS.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1200));
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    let received = live.received.load(Ordering::Relaxed) - received0;
    control.stop_sending.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    control.exit.store(true, Ordering::Relaxed);
    let r = t.join().expect("report");
    // The window saw real traffic, loss and recovery (not a thread that had stopped).
    assert!(received > 150, "only {received} packets in the window");
    assert!(r.fb.down_dropped > 0 && r.fb.up_dropped > 0, "{:?}", r.fb);
    assert!(r.fb.nack_sent > 0 && r.fb.rtx_sent > 0, "{:?}", r.fb);
    assert!(r.fb.sr_sent > 0 && r.fb.rr_sent > 0, "{:?}", r.fb);
    assert_eq!(
        allocs, 0,
        "{allocs} heap allocations while {received} packets were handled"
    );
}
