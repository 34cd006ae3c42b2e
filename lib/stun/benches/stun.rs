//! Per-packet cost of answering a typical ICE connectivity check on the
//! ICE-lite server: parse, verify FINGERPRINT and MESSAGE-INTEGRITY, write
//! the success response. Also the client side cost of writing a check.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard_stun::{is_stun, split_username, write_binding_success, BindingRequest, Message};

const PASSWORD: &[u8] = b"asd88fgpdd777uzjYhagZg";

/// A check as a browser sends it: 8+4 byte ufrags, controlling, nominating.
fn browser_check(out: &mut [u8]) -> usize {
    BindingRequest {
        transaction_id: *b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c",
        username: b"Sw1tchYd:fJ3k",
        password: PASSWORD,
        priority: 1_853_824_767,
        use_candidate: true,
        controlling: Some(0x1234_5678_9abc_def0),
        controlled: None,
    }
    .write(out)
    .expect("check fits")
}

fn bench(c: &mut Criterion) {
    let mut req = [0u8; 256];
    let n = browser_check(&mut req);
    let req = &req[..n];
    let mapped: SocketAddr = "198.51.100.7:61000".parse().unwrap();

    let mut g = c.benchmark_group("stun");
    g.throughput(Throughput::Elements(1));

    g.bench_function("parse", |b| {
        b.iter(|| Message::parse(black_box(req)).unwrap().username().is_some())
    });

    let msg = Message::parse(req).unwrap();
    g.bench_function("verify_fingerprint", |b| {
        b.iter(|| black_box(&msg).verify_fingerprint())
    });
    g.bench_function("verify_integrity", |b| {
        b.iter(|| black_box(&msg).verify_integrity(black_box(PASSWORD)))
    });

    let mut out = [0u8; 128];
    g.bench_function("write_success", |b| {
        b.iter(|| {
            write_binding_success(&mut out, black_box(&msg), black_box(mapped), PASSWORD).unwrap()
        })
    });

    // The whole server path for one inbound check.
    g.bench_function("answer_check", |b| {
        b.iter(|| {
            let pkt = black_box(req);
            assert!(is_stun(pkt));
            let msg = Message::parse(pkt).unwrap();
            let (_server, _client) = split_username(msg.username().unwrap()).unwrap();
            assert!(msg.verify_fingerprint() && msg.verify_integrity(PASSWORD));
            write_binding_success(&mut out, &msg, mapped, PASSWORD).unwrap()
        })
    });

    let mut client_out = [0u8; 256];
    g.bench_function("write_check", |b| {
        b.iter(|| browser_check(black_box(&mut client_out)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
