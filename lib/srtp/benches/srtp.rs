//! protect + unprotect of one RTP packet, switchyard-srtp (in place) against
//! webrtc-srtp 0.17 (allocating `Bytes` per call), for both profiles at a
//! typical video size (1200 B) and a typical audio size (112 B).
//!
//! `gcm_seal_open` compares the AES-GCM implementations under the GCM profile
//! on the payload alone: `ring` (what `switchyard-srtp` uses up to 2 KiB) and
//! RustCrypto `aes-gcm` 0.10 (what it used before, and still uses above 2 KiB).
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

/// Seal then open one payload with a 12-byte RTP header as AAD.
fn bench_gcm(c: &mut Criterion) {
    use aes_gcm::aead::AeadInPlace;
    use aes_gcm::KeyInit;
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};

    let aad = [0x80u8, 111, 0, 0, 0, 0, 0x12, 0x34, 0xca, 0xfe, 0xba, 0xbe];
    let iv = [0x3cu8; 12];
    for size in [1188usize, 100] {
        let mut group = c.benchmark_group(format!("gcm_seal_open/{size}B"));
        group.throughput(Throughput::Bytes(size as u64));
        let mut data = vec![0x77u8; size];

        let ring_key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &KEY).expect("key"));
        group.bench_function("ring", |b| {
            b.iter(|| {
                let tag = ring_key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(iv),
                        Aad::from(&aad),
                        &mut data,
                    )
                    .expect("seal");
                ring_key
                    .open_in_place_separate_tag(
                        Nonce::assume_unique_for_key(iv),
                        Aad::from(&aad),
                        tag,
                        &mut data,
                        0..,
                    )
                    .expect("open");
                black_box(&data);
            })
        });

        let rc = aes_gcm::Aes128Gcm::new(&KEY.into());
        group.bench_function("aes-gcm", |b| {
            b.iter(|| {
                let tag = rc
                    .encrypt_in_place_detached((&iv).into(), &aad, &mut data)
                    .expect("seal");
                rc.decrypt_in_place_detached((&iv).into(), &aad, &mut data, &tag)
                    .expect("open");
                black_box(&data);
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench, bench_gcm);
criterion_main!(benches);
