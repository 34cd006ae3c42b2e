//! The engine's per-packet path through its public API (`Forwarder` with a fake `Output`): one SRTP
//! packet from a publisher is authenticated and decrypted, looked up by SSRC and encrypted for 1 or
//! 10 local subscribers. `client_protect` is the cost of making the input packet in each iteration
//! (the load generator's side), to subtract.
//!
//! Run: `cargo bench -p switchyard-loadgen --bench routing`

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard_engine::forwarder::{Dest, Forwarder};
use switchyard_engine::stats::WorkerCounters;
use switchyard_protocol::KeySalt;
use switchyard_srtp::{Context, Profile};

mod common;
use common::{bind, Sink, PWD};

const SSRC: u32 = 0x1234_5678;

fn keys(b: u8) -> KeySalt {
    KeySalt {
        key: vec![b; 16],
        salt: vec![b ^ 0x55; 12],
    }
}

fn setup(fanout: u16) -> (Forwarder, Sink, Context) {
    let mut fwd = Forwarder::new(0, Arc::new(WorkerCounters::default()), 1024);
    let mut out = Sink::new();
    let now = Instant::now();
    let profile = 0x0007;
    fwd.add_transport(1, "pub".into(), PWD.into(), now)
        .expect("publisher");
    bind(
        &mut fwd,
        "pub",
        SocketAddr::from(([127, 0, 0, 1], 10_000)),
        now,
        &mut out,
    );
    fwd.set_srtp(1, profile, &keys(1), &keys(2)).expect("keys");
    for i in 0..fanout {
        let id = 100 + u64::from(i);
        let ufrag = format!("sub{i}");
        fwd.add_transport(id, ufrag.clone(), PWD.into(), now)
            .expect("subscriber");
        bind(
            &mut fwd,
            &ufrag,
            SocketAddr::from(([127, 0, 0, 1], 20_000 + i)),
            now,
            &mut out,
        );
        fwd.set_srtp(id, profile, &keys(3), &keys(4 + i as u8))
            .expect("keys");
        fwd.add_route(1, SSRC, Dest::Local(id), 1000)
            .expect("route");
    }
    let client =
        Context::new(Profile::AeadAes128Gcm, &keys(1).key, &keys(1).salt).expect("client keys");
    (fwd, out, client)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("forwarder");
    let plain_len = 1200;
    let mut plain = vec![0u8; plain_len];
    plain[0] = 0x80;
    plain[1] = 96;
    plain[8..12].copy_from_slice(&SSRC.to_be_bytes());
    let mut pkt = vec![0u8; 2048];
    let from = SocketAddr::from(([127, 0, 0, 1], 10_000));
    {
        let (_, _, mut client) = setup(0);
        let mut seq = 0u16;
        g.bench_function("client_protect", |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                pkt[..plain_len].copy_from_slice(&plain);
                pkt[2..4].copy_from_slice(&seq.to_be_bytes());
                black_box(client.protect_rtp(&mut pkt, plain_len).expect("protect"))
            })
        });
    }
    for fanout in [1u16, 10] {
        let (mut fwd, mut out, mut client) = setup(fanout);
        let mut seq = 0u16;
        g.bench_function(format!("srtp_in_route_fanout_{fanout}"), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                pkt[..plain_len].copy_from_slice(&plain);
                pkt[2..4].copy_from_slice(&seq.to_be_bytes());
                let n = client.protect_rtp(&mut pkt, plain_len).expect("protect");
                fwd.handle_datagram(Instant::now(), from, &mut pkt[..n], &mut out);
            })
        });
        assert!(out.bytes > 0, "the forwarder sent nothing");
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
