//! End-to-end tests of `Session`: two sessions wired to each other in memory, over lossy
//! links, over real UDP loopback sockets, and the failure paths.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use switchyard_dtls::{Error, Identity, Role, Session, SessionOptions, SrtpExport, SrtpProfile};

const WAIT: Duration = Duration::from_secs(10);

/// A send callback that feeds whatever is sent to the session later put in the slot.
/// It holds the target weakly, so sessions wired to each other can still be dropped.
type Slot = Arc<OnceLock<Weak<Session>>>;

fn link(
    filter: impl Fn(&[u8]) -> bool + Send + Sync + 'static,
) -> (Slot, impl Fn(Vec<u8>) + Send + Sync + 'static) {
    let slot: Slot = Arc::new(OnceLock::new());
    let target = Arc::clone(&slot);
    let send = move |datagram: Vec<u8>| {
        if !filter(&datagram) {
            return;
        }
        if let Some(session) = target.get().and_then(Weak::upgrade) {
            session.feed(datagram);
        }
    };
    (slot, send)
}

struct Pair {
    server: Arc<Session>,
    client: Arc<Session>,
}

/// A server and a client session connected through their send callbacks; `to_client` and
/// `to_server` decide which datagrams get through.
#[allow(clippy::too_many_arguments)]
fn wire(
    server_id: &Identity,
    server_expects: &str,
    server_options: SessionOptions,
    to_client: impl Fn(&[u8]) -> bool + Send + Sync + 'static,
    client_id: &Identity,
    client_expects: &str,
    client_options: SessionOptions,
    to_server: impl Fn(&[u8]) -> bool + Send + Sync + 'static,
) -> Pair {
    let (client_slot, server_send) = link(to_client);
    let (server_slot, client_send) = link(to_server);
    let server = Arc::new(Session::start_with_options(
        Role::Server,
        server_id,
        server_expects,
        server_send,
        server_options,
    ));
    let _ = server_slot.set(Arc::downgrade(&server));
    let client = Arc::new(Session::start_with_options(
        Role::Client,
        client_id,
        client_expects,
        client_send,
        client_options,
    ));
    let _ = client_slot.set(Arc::downgrade(&client));
    Pair { server, client }
}

fn all(_: &[u8]) -> bool {
    true
}

fn sdp_fingerprint(id: &Identity) -> String {
    format!("sha-256 {}", id.fingerprint())
}

fn identities() -> (Identity, Identity) {
    (
        Identity::generate().expect("server identity"),
        Identity::generate().expect("client identity"),
    )
}

async fn both(pair: &Pair) -> (Result<SrtpExport, Error>, Result<SrtpExport, Error>) {
    tokio::join!(pair.server.established(WAIT), pair.client.established(WAIT))
}

fn assert_same_keys(server: &SrtpExport, client: &SrtpExport, profile: SrtpProfile) {
    assert_eq!(server.profile_id, profile.id());
    assert_eq!(client.profile_id, profile.id());
    assert_eq!(server.keying_material.len(), profile.keying_material_len());
    assert_eq!(server.keying_material, client.keying_material);
    assert_ne!(
        server.keying_material,
        vec![0u8; server.keying_material.len()]
    );
    assert_eq!(server.client_key().len(), profile.key_len());
    assert_eq!(server.server_salt().len(), profile.salt_len());
    assert_ne!(server.client_key(), server.server_key());
}

/// Takes a session out of its Arc (to `close` it), once no send callback holds it upgraded.
async fn sole(mut session: Arc<Session>) -> Session {
    let deadline = Instant::now() + WAIT;
    loop {
        match Arc::try_unwrap(session) {
            Ok(s) => return s,
            Err(shared) => session = shared,
        }
        assert!(Instant::now() < deadline, "session still shared");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_in_memory_exports_the_same_keys() {
    let (server_id, client_id) = identities();
    let started = Instant::now();
    let pair = wire(
        &server_id,
        &sdp_fingerprint(&client_id),
        SessionOptions::default(),
        all,
        &client_id,
        // The fingerprint comparison is case-insensitive.
        &format!("SHA-256 {}", server_id.fingerprint().to_lowercase()),
        SessionOptions::default(),
        all,
    );
    let (server, client) = both(&pair).await;
    let elapsed = started.elapsed();
    let server = server.expect("server handshake");
    let client = client.expect("client handshake");
    println!("in-memory DTLS-SRTP handshake (both sides established): {elapsed:?}");

    // AEAD_AES_128_GCM is preferred when both offer it.
    assert_same_keys(&server, &client, SrtpProfile::AeadAes128Gcm);
    assert_eq!(server.keying_material.len(), 56);
    // Each side saw the other's certificate.
    assert_eq!(server.peer_fingerprint, client_id.fingerprint());
    assert_eq!(client.peer_fingerprint, server_id.fingerprint());
    assert!(!pair.server.is_closed() && !pair.client.is_closed());
    // Repeated calls give the same result at once.
    assert_eq!(pair.server.established(Duration::ZERO).await, Ok(server));

    // The association stays up after the handshake; closing the server sends close_notify,
    // which ends the client's association too.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!pair.client.is_closed());
    let Pair { server, client } = pair;
    let server = sole(server).await;
    server.close().await;
    wait_until("the client to see close_notify", || client.is_closed()).await;
    // The handshake result is kept after the close.
    assert!(client.established(Duration::ZERO).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_time() {
    // Sequential handshakes, both sides in this process: the figure is reported, not asserted.
    let (server_id, client_id) = identities();
    const N: u32 = 20;
    let mut total = Duration::ZERO;
    let mut best = Duration::MAX;
    for _ in 0..N {
        let started = Instant::now();
        let pair = wire(
            &server_id,
            &sdp_fingerprint(&client_id),
            SessionOptions::default(),
            all,
            &client_id,
            &sdp_fingerprint(&server_id),
            SessionOptions::default(),
            all,
        );
        let (server, client) = both(&pair).await;
        let elapsed = started.elapsed();
        assert_eq!(
            server.expect("server").keying_material,
            client.expect("client").keying_material
        );
        total += elapsed;
        best = best.min(elapsed);
    }
    println!(
        "DTLS-SRTP handshake, server + client in one process, {N} runs: mean {:?}, best {:?}",
        total / N,
        best
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aes_cm_profile_when_the_client_offers_only_it() {
    let (server_id, client_id) = identities();
    let client_options = SessionOptions {
        srtp_profiles: vec![SrtpProfile::Aes128CmHmacSha1_80],
        ..SessionOptions::default()
    };
    let pair = wire(
        &server_id,
        &sdp_fingerprint(&client_id),
        SessionOptions::default(),
        all,
        &client_id,
        &sdp_fingerprint(&server_id),
        client_options,
        all,
    );
    let (server, client) = both(&pair).await;
    let (server, client) = (server.expect("server"), client.expect("client"));
    assert_same_keys(&server, &client, SrtpProfile::Aes128CmHmacSha1_80);
    assert_eq!(server.keying_material.len(), 60);
    assert_eq!(server.profile_id, 0x0001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_shared_srtp_profile() {
    let (server_id, client_id) = identities();
    let pair = wire(
        &server_id,
        &sdp_fingerprint(&client_id),
        SessionOptions {
            srtp_profiles: vec![SrtpProfile::AeadAes128Gcm],
            ..SessionOptions::default()
        },
        all,
        &client_id,
        &sdp_fingerprint(&server_id),
        SessionOptions {
            srtp_profiles: vec![SrtpProfile::Aes128CmHmacSha1_80],
            ..SessionOptions::default()
        },
        all,
    );
    let (server, client) = both(&pair).await;
    assert_eq!(server, Err(Error::NoSrtpProfile));
    // The server aborts with insufficient_security, which the client reports as such.
    assert_eq!(
        client,
        Err(Error::PeerAlert {
            code: 71,
            name: "insufficient_security"
        })
    );
    assert!(pair.server.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_fingerprint_on_the_server_side() {
    let (server_id, client_id) = identities();
    let stranger = Identity::generate().expect("identity");
    let pair = wire(
        &server_id,
        &sdp_fingerprint(&stranger),
        SessionOptions::default(),
        all,
        &client_id,
        &sdp_fingerprint(&server_id),
        SessionOptions::default(),
        all,
    );
    let (server, client) = both(&pair).await;
    assert_eq!(
        server,
        Err(Error::FingerprintMismatch {
            expected: stranger.fingerprint().to_string(),
            got: client_id.fingerprint().to_string(),
        })
    );
    assert_eq!(
        client,
        Err(Error::PeerAlert {
            code: 42,
            name: "bad_certificate"
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_fingerprint_on_the_client_side() {
    let (server_id, client_id) = identities();
    let stranger = Identity::generate().expect("identity");
    let pair = wire(
        &server_id,
        &sdp_fingerprint(&client_id),
        SessionOptions::default(),
        all,
        &client_id,
        &sdp_fingerprint(&stranger),
        SessionOptions::default(),
        all,
    );
    let (server, client) = both(&pair).await;
    assert_eq!(
        client,
        Err(Error::FingerprintMismatch {
            expected: stranger.fingerprint().to_string(),
            got: server_id.fingerprint().to_string(),
        })
    );
    assert_eq!(
        server,
        Err(Error::PeerAlert {
            code: 42,
            name: "bad_certificate"
        })
    );
}

#[tokio::test]
async fn unusable_remote_fingerprints_are_reported() {
    let id = Identity::generate().expect("identity");
    let sha1 = Session::start(
        Role::Server,
        &id,
        "sha-1 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01",
        |_| {},
    );
    assert_eq!(
        sha1.established(WAIT).await,
        Err(Error::UnsupportedFingerprintAlgorithm("sha-1".into()))
    );
    assert!(sha1.is_closed());
    let short = Session::start(Role::Client, &id, "sha-256 AB:CD", |_| {});
    assert!(matches!(
        short.established(WAIT).await,
        Err(Error::InvalidFingerprint(_))
    ));
}

#[test]
fn start_outside_a_runtime_is_reported() {
    let id = Identity::generate().expect("identity");
    let session = Session::start(Role::Client, &id, id.fingerprint(), |_| {});
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    assert_eq!(
        rt.block_on(session.established(WAIT)),
        Err(Error::NoRuntime)
    );
}

/// A client that sends its first ClientHello and then nothing: the server times out, and once
/// the sessions are dropped or closed no task of theirs is left on the runtime.
#[test]
fn silent_client_times_out_and_leaves_no_tasks() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let baseline = rt.metrics().num_alive_tasks();
    let metrics = rt.metrics();
    rt.block_on(async move {
        let (server_id, client_id) = identities();
        for close_explicitly in [false, true] {
            let sent = Arc::new(AtomicUsize::new(0));
            let sent2 = Arc::clone(&sent);
            let pair = wire(
                &server_id,
                &sdp_fingerprint(&client_id),
                SessionOptions::default(),
                all,
                &client_id,
                &sdp_fingerprint(&server_id),
                SessionOptions::default(),
                move |_| sent2.fetch_add(1, Ordering::SeqCst) == 0,
            );
            assert!(
                metrics.num_alive_tasks() > baseline,
                "sessions run as tasks"
            );
            let started = Instant::now();
            let server = pair.server.established(Duration::from_secs(2)).await;
            assert_eq!(server, Err(Error::Timeout));
            assert!(started.elapsed() >= Duration::from_secs(2));
            // The client did retransmit (and was cut off), and the handshake is still pending.
            assert!(sent.load(Ordering::SeqCst) > 1);
            assert_eq!(
                pair.client.established(Duration::ZERO).await,
                Err(Error::Timeout)
            );

            let Pair { server, client } = pair;
            if close_explicitly {
                let server = sole(server).await;
                let client = sole(client).await;
                server.close().await;
                client.close().await;
            } else {
                drop(server);
                drop(client);
            }
            wait_until("the sessions' tasks to end", || {
                metrics.num_alive_tasks() == baseline
            })
            .await;
        }
    });
}

/// Established sessions dropped without close also leave no task behind.
#[test]
fn dropping_established_sessions_leaves_no_tasks() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let baseline = rt.metrics().num_alive_tasks();
    let metrics = rt.metrics();
    rt.block_on(async move {
        let (server_id, client_id) = identities();
        let pair = wire(
            &server_id,
            &sdp_fingerprint(&client_id),
            SessionOptions::default(),
            all,
            &client_id,
            &sdp_fingerprint(&server_id),
            SessionOptions::default(),
            all,
        );
        let (server, client) = both(&pair).await;
        assert!(server.is_ok() && client.is_ok());
        drop(pair);
        wait_until("the sessions' tasks to end", || {
            metrics.num_alive_tasks() == baseline
        })
        .await;
    });
}

/// A tiny deterministic PRNG (xorshift64*), so that garbage is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Up to `max - 1` random bytes.
    fn some_bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max) as usize;
        self.bytes(n)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Garbage of many shapes: random bytes, non-DTLS bytes, DTLS record headers with random or
/// lying lengths, random handshake fragments, alerts and ChangeCipherSpecs at odd epochs.
fn garbage(rng: &mut Rng) -> Vec<u8> {
    match rng.below(8) {
        0 => Vec::new(),
        1 => rng.some_bytes(1500),
        2 => {
            let mut d = vec![0x80];
            d.extend_from_slice(&rng.some_bytes(200));
            // RTP-like, not DTLS
            d
        }
        _ => {
            let mut d = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let content_type =
                    [20u8, 21, 22, 23, 24 + rng.below(40) as u8][rng.below(5) as usize];
                let epoch = [0u16, 0, 1, 2, rng.next() as u16][rng.below(5) as usize];
                let body = if content_type == 22 && rng.below(2) == 0 {
                    // A handshake header (type, length, message_seq, fragment offset/length).
                    let mut b =
                        vec![[1u8, 2, 3, 11, 12, 13, 14, 15, 16, 20][rng.below(10) as usize]];
                    b.extend_from_slice(&rng.bytes(11));
                    b.extend_from_slice(&rng.some_bytes(300));
                    b
                } else {
                    rng.some_bytes(100)
                };
                let claimed = if rng.below(4) == 0 {
                    rng.next() as u16
                } else {
                    body.len() as u16
                };
                d.push(content_type);
                d.extend_from_slice(&[0xfe, 0xfd]);
                d.extend_from_slice(&epoch.to_be_bytes());
                d.extend_from_slice(&rng.bytes(6));
                d.extend_from_slice(&claimed.to_be_bytes());
                d.extend_from_slice(&body);
            }
            if rng.below(4) == 0 {
                let cut = rng.below(d.len() as u64 + 1) as usize;
                d.truncate(cut);
            }
            d
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_neither_panics_nor_prevents_a_handshake() {
    let (server_id, client_id) = identities();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..3 {
        // Garbage before the client starts, fed to the server.
        let (client_slot, server_send) = link(all);
        let (server_slot, client_send) = link(all);
        let server = Arc::new(Session::start(
            Role::Server,
            &server_id,
            &sdp_fingerprint(&client_id),
            server_send,
        ));
        let _ = server_slot.set(Arc::downgrade(&server));
        for _ in 0..200 {
            server.feed(garbage(&mut rng));
            if rng.below(20) == 0 {
                tokio::task::yield_now().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let client = Arc::new(Session::start(
            Role::Client,
            &client_id,
            &sdp_fingerprint(&server_id),
            client_send,
        ));
        let _ = client_slot.set(Arc::downgrade(&client));
        let client_started = Instant::now();
        // Garbage interleaved with the handshake, to both sides. The burst can fill a
        // session's inbound queue so that a real handshake datagram is dropped; the
        // handshake then recovers by retransmission (about a second later).
        for _ in 0..50 {
            server.feed(garbage(&mut rng));
            client.feed(garbage(&mut rng));
            tokio::task::yield_now().await;
        }
        let (s, c) = tokio::join!(server.established(WAIT), client.established(WAIT));
        println!(
            "garbage round {round}: handshake done in {:?}, server dropped {} datagrams",
            client_started.elapsed(),
            server.dropped()
        );
        let (s, c) = (
            s.unwrap_or_else(|e| panic!("round {round}: server: {e}")),
            c.unwrap_or_else(|e| panic!("round {round}: client: {e}")),
        );
        assert_eq!(s.keying_material, c.keying_material);
        assert!(
            server.dropped() > 0,
            "non-DTLS and empty datagrams are counted"
        );
        // Garbage after the handshake does not end the association.
        for _ in 0..200 {
            server.feed(garbage(&mut rng));
            client.feed(garbage(&mut rng));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !server.is_closed() && !client.is_closed(),
            "round {round}: closed by garbage"
        );
    }
}

/// The server's last flight (ChangeCipherSpec + Finished) is lost once: the client
/// retransmits its flight and the server resends its last flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_server_finished_is_resent() {
    let (server_id, client_id) = identities();
    let options = SessionOptions {
        retransmit_interval: Duration::from_millis(200),
        ..SessionOptions::default()
    };
    let dropped_ccs = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::clone(&dropped_ccs);
    let pair = wire(
        &server_id,
        &sdp_fingerprint(&client_id),
        options.clone(),
        // 20 = ChangeCipherSpec: the first datagram of the server's last flight.
        move |d| !(d.first() == Some(&20) && dropped.fetch_add(1, Ordering::SeqCst) == 0),
        &client_id,
        &sdp_fingerprint(&server_id),
        options,
        all,
    );
    let (server, client) = both(&pair).await;
    let (server, client) = (server.expect("server"), client.expect("client"));
    assert_eq!(server.keying_material, client.keying_material);
    assert!(dropped_ccs.load(Ordering::SeqCst) >= 1);
    assert!(pair.server.last_flight_resends() >= 1);
}

/// The first datagram in each direction is lost: the handshake recovers by retransmission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_datagrams_lost_in_both_directions() {
    let (server_id, client_id) = identities();
    let options = SessionOptions {
        retransmit_interval: Duration::from_millis(200),
        ..SessionOptions::default()
    };
    let (a, b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let pair = wire(
        &server_id,
        &sdp_fingerprint(&client_id),
        options.clone(),
        move |_| a.fetch_add(1, Ordering::SeqCst) != 0,
        &client_id,
        &sdp_fingerprint(&server_id),
        options,
        move |_| b.fetch_add(1, Ordering::SeqCst) != 0,
    );
    let (server, client) = both(&pair).await;
    assert_eq!(
        server.expect("server").keying_material,
        client.expect("client").keying_material
    );
}

/// Over real UDP loopback sockets: the client session's datagrams go through one socket and
/// the server session reads them from another, as the engine + control daemon would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_over_udp_loopback() {
    use tokio::net::UdpSocket;

    let (server_id, client_id) = identities();
    let server_sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind server"));
    let client_sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind client"));
    let server_addr = server_sock.local_addr().expect("server addr");
    let client_addr = client_sock.local_addr().expect("client addr");

    let started = Instant::now();
    let sock = Arc::clone(&server_sock);
    let server = Arc::new(Session::start(
        Role::Server,
        &server_id,
        &sdp_fingerprint(&client_id),
        move |d| {
            let _ = sock.try_send_to(&d, client_addr);
        },
    ));
    let sock = Arc::clone(&client_sock);
    let client = Arc::new(Session::start(
        Role::Client,
        &client_id,
        &sdp_fingerprint(&server_id),
        move |d| {
            let _ = sock.try_send_to(&d, server_addr);
        },
    ));

    // One reader per socket, feeding its session (only datagrams from the expected peer).
    fn reader(
        sock: Arc<UdpSocket>,
        peer: std::net::SocketAddr,
        session: Weak<Session>,
    ) -> tokio::task::JoinHandle<usize> {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut datagrams = 0;
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let Some(session) = session.upgrade() else {
                    break;
                };
                if from == peer {
                    datagrams += 1;
                    session.feed(&buf[..n]);
                }
            }
            datagrams
        })
    }
    let server_reader = reader(
        Arc::clone(&server_sock),
        client_addr,
        Arc::downgrade(&server),
    );
    let client_reader = reader(
        Arc::clone(&client_sock),
        server_addr,
        Arc::downgrade(&client),
    );

    let (s, c) = tokio::join!(server.established(WAIT), client.established(WAIT));
    let elapsed = started.elapsed();
    let (s, c) = (s.expect("server over UDP"), c.expect("client over UDP"));
    println!("DTLS-SRTP handshake over UDP loopback: {elapsed:?}");
    assert_same_keys(&s, &c, SrtpProfile::AeadAes128Gcm);
    assert_eq!(s.peer_fingerprint, client_id.fingerprint());
    assert_eq!(c.peer_fingerprint, server_id.fingerprint());

    // close_notify travels over the socket too.
    let server = sole(server).await;
    server.close().await;
    wait_until("the client to see close_notify over UDP", || {
        client.is_closed()
    })
    .await;
    server_reader.abort();
    client_reader.abort();
    let _ = server_reader.await;
    let _ = client_reader.await;
}
