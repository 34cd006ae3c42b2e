//! protect + unprotect of one RTP packet, switchyard-srtp (in place) against
//! webrtc-srtp 0.17 (allocating `Bytes` per call), for both profiles at a
//! typical video size (1200 B) and a typical audio size (112 B).
//!
//! Run: `cargo bench -p switchyard-srtp --bench srtp`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard_srtp::{Context, Profile};
use webrtc_srtp::context::Context as RefContext;
use webrtc_srtp::protection_profile::ProtectionProfile;

const KEY: [u8; 16] = [0x5a; 16];
const SALT: [u8; 14] = [0xa5; 14];

fn packet(len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 111, 0, 0, 0, 0, 0x12, 0x34, 0xca, 0xfe, 0xba, 0xbe];
    p.resize(len, 0x77);
    p
}

fn bench(c: &mut Criterion) {
    for (profile, ref_profile, name) in [
        (
            Profile::Aes128CmHmacSha1_80,
            ProtectionProfile::Aes128CmHmacSha1_80,
            "aes_cm_hmac_sha1_80",
        ),
        (
            Profile::AeadAes128Gcm,
            ProtectionProfile::AeadAes128Gcm,
            "aead_aes_128_gcm",
        ),
    ] {
        let salt = &SALT[..profile.salt_len()];
        for size in [1200usize, 112] {
            let mut group = c.benchmark_group(format!("rtp_protect_unprotect/{name}/{size}B"));
            group.throughput(Throughput::Bytes(size as u64));

            let plain = packet(size);
            let mut tx = Context::new(profile, &KEY, salt).expect("key");
            let mut rx = Context::new(profile, &KEY, salt).expect("key");
            let mut buf = vec![0u8; size + profile.rtp_overhead()];
            let mut seq = 0u16;
            group.bench_function("switchyard", |b| {
                b.iter(|| {
                    // Fresh plaintext each time, as the SFU copies into a pooled buffer.
                    buf[..size].copy_from_slice(&plain);
                    seq = seq.wrapping_add(1);
                    buf[2..4].copy_from_slice(&seq.to_be_bytes());
                    let n = tx.protect_rtp(&mut buf, size).expect("protect");
                    let m = rx.unprotect_rtp(&mut buf[..n]).expect("unprotect");
                    black_box(m)
                })
            });

            let mut tx = RefContext::new(&KEY, salt, ref_profile, None, None).expect("key");
            let mut rx = RefContext::new(&KEY, salt, ref_profile, None, None).expect("key");
            let mut plain = plain.clone();
            let mut seq = 0u16;
            group.bench_function("webrtc-srtp", |b| {
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    plain[2..4].copy_from_slice(&seq.to_be_bytes());
                    let enc = tx.encrypt_rtp(&plain).expect("encrypt");
                    let dec = rx.decrypt_rtp(&enc).expect("decrypt");
                    black_box(dec.len())
                })
            });
            group.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
