//! The adapter between the caller's datagrams and the `dtls` crate's [`Conn`] trait.
//!
//! Inbound datagrams come from [`crate::Session::feed`] through a bounded tokio mpsc channel;
//! outbound datagrams go straight to the caller's `send` callback. Besides carrying bytes,
//! the adapter looks at record headers (never at encrypted contents) for three things the
//! `dtls` crate does not do itself:
//!
//! - discarding invalid records before the `dtls` crate sees them (see [`valid_record`]),
//!   since some of them make it abort the handshake, lose a handshake message, or panic;
//! - a fatal alert the peer sends in the clear during the handshake, so that the failure can
//!   be reported as [`crate::Error::PeerAlert`] rather than a bare "connection closed";
//! - on the server, a retransmission of the client's last flight after the handshake
//!   completed, which means our last flight (ChangeCipherSpec + Finished) was lost: the
//!   `dtls` crate stops running its handshake state machine once it has sent that flight,
//!   so the adapter resends it (RFC 6347 §4.2.4), or else the client would never finish.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;
use webrtc_util::Conn;

use crate::Role;

/// Callback that carries one outbound datagram to the peer.
pub(crate) type SendFn = Arc<dyn Fn(Vec<u8>) + Send + Sync>;

const CONTENT_CHANGE_CIPHER_SPEC: u8 = 20;
const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPLICATION_DATA: u8 = 23;
const RECORD_HEADER_LEN: usize = 13;
const ALERT_LEVEL_WARNING: u8 = 1;
const ALERT_LEVEL_FATAL: u8 = 2;
const HANDSHAKE_HEADER_LEN: usize = 12;
/// Generous bound on a handshake message (WebRTC certificates are well under 2 KiB).
const MAX_HANDSHAKE_MESSAGE_LEN: usize = 32 * 1024;
const GCM_EXPLICIT_NONCE_LEN: usize = 8;
const GCM_TAG_LEN: usize = 16;
/// The last flight is resent at most this often, however many datagrams the retransmitted
/// peer flight spans.
const MIN_RESEND_INTERVAL: Duration = Duration::from_millis(100);

/// Counters shared by a session and its adapter.
#[derive(Default)]
pub(crate) struct Counters {
    /// Inbound datagrams dropped: queue full, session gone, not DTLS, or oversized.
    pub(crate) dropped: AtomicU64,
    /// Times the server's last flight was resent after the handshake.
    pub(crate) last_flight_resends: AtomicU64,
}

#[derive(Default)]
struct Watch {
    /// The server's last flight (from its ChangeCipherSpec on), kept for resending.
    last_flight: Vec<Vec<u8>>,
    recording_last_flight: bool,
    established: bool,
    last_resend: Option<Instant>,
    /// (level, description) of the first fatal plaintext alert from the peer.
    peer_alert: Option<u8>,
}

/// A [`Conn`] over a channel of inbound datagrams and a callback for outbound ones.
pub(crate) struct DatagramConn {
    role: Role,
    inbound: tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>,
    send: SendFn,
    watch: Mutex<Watch>,
    counters: Arc<Counters>,
}

impl DatagramConn {
    pub(crate) fn new(
        role: Role,
        inbound: mpsc::Receiver<Vec<u8>>,
        send: SendFn,
        counters: Arc<Counters>,
    ) -> DatagramConn {
        DatagramConn {
            role,
            inbound: tokio::sync::Mutex::new(inbound),
            send,
            watch: Mutex::new(Watch::default()),
            counters,
        }
    }

    fn watch(&self) -> MutexGuard<'_, Watch> {
        self.watch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the handshake as complete: the recorded last flight is now final.
    pub(crate) fn set_established(&self) {
        let mut w = self.watch();
        w.established = true;
        w.recording_last_flight = false;
    }

    /// The description code of the first fatal alert the peer sent in the clear, if any.
    pub(crate) fn peer_alert(&self) -> Option<u8> {
        self.watch().peer_alert
    }

    /// Looks at the record headers of an inbound datagram; returns the datagrams to resend.
    fn inspect_inbound(&self, datagram: &[u8]) -> Option<Vec<Vec<u8>>> {
        let mut peer_retransmits_handshake = false;
        let mut fatal_alert = None;
        for record in records(datagram) {
            match (record.content_type, record.epoch, record.body) {
                (CONTENT_HANDSHAKE, 0, _) => peer_retransmits_handshake = true,
                (CONTENT_ALERT, 0, &[ALERT_LEVEL_FATAL, code]) => {
                    fatal_alert.get_or_insert(code);
                }
                _ => {}
            }
        }
        let mut w = self.watch();
        if w.peer_alert.is_none() {
            w.peer_alert = fatal_alert;
        }
        if self.role != Role::Server
            || !w.established
            || !peer_retransmits_handshake
            || w.last_flight.is_empty()
        {
            return None;
        }
        let now = Instant::now();
        if w.last_resend
            .is_some_and(|t| now.duration_since(t) < MIN_RESEND_INTERVAL)
        {
            return None;
        }
        w.last_resend = Some(now);
        Some(w.last_flight.clone())
    }

    fn inspect_outbound(&self, datagram: &[u8]) {
        if self.role != Role::Server {
            return;
        }
        let mut w = self.watch();
        if w.established {
            return;
        }
        if datagram.first() == Some(&CONTENT_CHANGE_CIPHER_SPEC) {
            w.last_flight.clear();
            w.recording_last_flight = true;
        }
        if w.recording_last_flight {
            w.last_flight.push(datagram.to_vec());
        }
    }
}

/// RFC 7983: a DTLS record starts with a byte in 20..=63.
pub(crate) fn is_dtls(datagram: &[u8]) -> bool {
    matches!(datagram.first(), Some(20..=63))
}

/// Whether a record may be handed to the dtls crate.
///
/// RFC 6347 §4.1.2.7: invalid records SHOULD be silently discarded. The dtls crate does not
/// always: it answers some (unknown content type, application data in epoch 0) with a fatal
/// alert that ends the handshake, echoes warning alerts back, lets a stray handshake fragment
/// take the place of the real message with the same sequence number, and panics on an
/// encrypted record too short for its AEAD tag. So records are checked here first:
///
/// - version DTLS 1.0 or 1.2, epoch 0 (plaintext) or 1 (encrypted; no renegotiation);
/// - epoch 0: handshake records whose messages are well-formed fragments of a type the peer
///   may send to us; ChangeCipherSpec `[1]`; alerts that are fatal or close_notify, and only
///   until the handshake completes (after it only encrypted alerts may end the association);
///   never application data;
/// - epoch 1: room for the AES-GCM explicit nonce and tag (the only cipher suite offered).
fn valid_record(role: Role, record: &Record<'_>, established: bool) -> bool {
    if !matches!(record.version, [0xfe, 0xfd] | [0xfe, 0xff]) {
        return false;
    }
    match (record.content_type, record.epoch) {
        (CONTENT_HANDSHAKE, 0) => valid_handshake_fragments(role, record.body),
        (CONTENT_CHANGE_CIPHER_SPEC, 0) => !established && record.body == [1],
        (CONTENT_ALERT, 0) => {
            !established
                && matches!(
                    record.body,
                    [ALERT_LEVEL_FATAL, _] | [ALERT_LEVEL_WARNING, 0]
                )
        }
        (CONTENT_HANDSHAKE | CONTENT_ALERT | CONTENT_APPLICATION_DATA, 1) => {
            record.body.len() >= GCM_EXPLICIT_NONCE_LEN + GCM_TAG_LEN
        }
        _ => false,
    }
}

/// Whether a plaintext handshake record holds only well-formed fragments of messages that
/// the peer may send to this role.
fn valid_handshake_fragments(role: Role, mut body: &[u8]) -> bool {
    let u24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
    if body.is_empty() {
        return false;
    }
    while !body.is_empty() {
        if body.len() < HANDSHAKE_HEADER_LEN {
            return false;
        }
        let msg_type = body[0];
        let length = u24(&body[1..4]);
        let fragment_offset = u24(&body[6..9]);
        let fragment_length = u24(&body[9..12]);
        let from_peer = match role {
            // ClientHello, Certificate, CertificateVerify, ClientKeyExchange
            Role::Server => matches!(msg_type, 1 | 11 | 15 | 16),
            // ServerHello, HelloVerifyRequest, Certificate, ServerKeyExchange,
            // CertificateRequest, ServerHelloDone
            Role::Client => matches!(msg_type, 2 | 3 | 11..=14),
        };
        if !from_peer
            || length > MAX_HANDSHAKE_MESSAGE_LEN
            || fragment_offset + fragment_length > length
            || HANDSHAKE_HEADER_LEN + fragment_length > body.len()
        {
            return false;
        }
        body = &body[HANDSHAKE_HEADER_LEN + fragment_length..];
    }
    true
}

/// Keeps the valid records of a datagram (in most cases the datagram itself, untouched);
/// `None` if none is left.
fn sanitize(role: Role, datagram: Vec<u8>, established: bool) -> Option<Vec<u8>> {
    if !is_dtls(&datagram) {
        return None;
    }
    let mut total = 0;
    let mut all_valid = true;
    for record in records(&datagram) {
        total += record.raw.len();
        all_valid &= valid_record(role, &record, established);
    }
    if all_valid && total == datagram.len() {
        return Some(datagram);
    }
    let kept: Vec<u8> = records(&datagram)
        .filter(|r| valid_record(role, r, established))
        .flat_map(|r| r.raw.iter().copied())
        .collect();
    (!kept.is_empty()).then_some(kept)
}

struct Record<'a> {
    content_type: u8,
    version: [u8; 2],
    epoch: u16,
    body: &'a [u8],
    /// Header and body.
    raw: &'a [u8],
}

/// The DTLS records of a datagram, as far as their headers are well formed.
fn records(mut datagram: &[u8]) -> impl Iterator<Item = Record<'_>> {
    std::iter::from_fn(move || {
        if datagram.len() < RECORD_HEADER_LEN {
            return None;
        }
        let content_type = datagram[0];
        let epoch = u16::from_be_bytes([datagram[3], datagram[4]]);
        let len = usize::from(u16::from_be_bytes([datagram[11], datagram[12]]));
        let end = RECORD_HEADER_LEN.checked_add(len)?;
        let body = datagram.get(RECORD_HEADER_LEN..end)?;
        let raw = &datagram[..end];
        datagram = &datagram[end..];
        Some(Record {
            content_type,
            version: [raw[1], raw[2]],
            epoch,
            body,
            raw,
        })
    })
}

fn unspecified_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
}

#[async_trait]
impl Conn for DatagramConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other(
            "connect is not applicable to a caller-carried DTLS transport".into(),
        ))
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        let mut inbound = self.inbound.lock().await;
        loop {
            let Some(datagram) = inbound.recv().await else {
                // The session is gone. Returning an error here would make the dtls reader
                // task spin (it retries on errors); it is stopped by dropping the DTLSConn.
                return std::future::pending().await;
            };
            let established = self.watch().established;
            let datagram = match sanitize(self.role, datagram, established) {
                Some(d) if d.len() <= buf.len() => d,
                _ => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            if let Some(flight) = self.inspect_inbound(&datagram) {
                self.counters
                    .last_flight_resends
                    .fetch_add(1, Ordering::Relaxed);
                for d in flight {
                    (self.send)(d);
                }
            }
            buf[..datagram.len()].copy_from_slice(&datagram);
            return Ok(datagram.len());
        }
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let n = self.recv(buf).await?;
        Ok((n, unspecified_addr()))
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inspect_outbound(buf);
        (self.send)(buf.to_vec());
        Ok(buf.len())
    }

    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> webrtc_util::Result<usize> {
        self.send(buf).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(unspecified_addr())
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_record_headers() {
        // alert(fatal, bad_certificate) at epoch 0, then a truncated handshake record.
        let mut d = vec![21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 2, 42];
        d.extend_from_slice(&[22, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 2, 0, 50, 1]);
        let recs: Vec<_> = records(&d).collect();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].content_type, 21);
        assert_eq!(recs[0].epoch, 0);
        assert_eq!(recs[0].body, &[2, 42]);
        assert!(records(&[22, 1, 2]).next().is_none());
        assert!(is_dtls(&[20]) && is_dtls(&[63]) && !is_dtls(&[0, 1]) && !is_dtls(&[128]));
        assert!(!is_dtls(&[]));
    }
}

#[cfg(test)]
mod sanitize_tests {
    use super::*;

    fn record(content_type: u8, epoch: u16, body: &[u8]) -> Vec<u8> {
        let mut d = vec![content_type, 0xfe, 0xfd];
        d.extend_from_slice(&epoch.to_be_bytes());
        d.extend_from_slice(&[0, 0, 0, 0, 0, 7]);
        d.extend_from_slice(&(body.len() as u16).to_be_bytes());
        d.extend_from_slice(body);
        d
    }

    fn handshake(msg_type: u8, length: u32, offset: u32, fragment: &[u8]) -> Vec<u8> {
        let mut b = vec![msg_type];
        b.extend_from_slice(&length.to_be_bytes()[1..]);
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&offset.to_be_bytes()[1..]);
        b.extend_from_slice(&(fragment.len() as u32).to_be_bytes()[1..]);
        b.extend_from_slice(fragment);
        b
    }

    #[test]
    fn keeps_valid_records_and_drops_invalid_ones() {
        let client_hello = record(22, 0, &handshake(1, 4, 0, &[1, 2, 3, 4]));
        let ccs = record(20, 0, &[1]);
        let finished = record(22, 1, &[0; 40]);
        let mut flight = client_hello.clone();
        flight.extend_from_slice(&ccs);
        flight.extend_from_slice(&finished);
        // Valid datagrams pass untouched.
        assert_eq!(sanitize(Role::Server, flight.clone(), false), Some(flight));
        // A ClientHello is not something a client receives.
        assert_eq!(sanitize(Role::Client, client_hello.clone(), false), None);
        // Invalid records are cut out, valid ones kept.
        let mut mixed = record(23, 0, b"plaintext application data");
        mixed.extend_from_slice(&client_hello);
        mixed.extend_from_slice(&record(99, 0, &[1, 2]));
        mixed.extend_from_slice(&record(22, 1, &[0; 10])); // too short for AES-GCM
        mixed.extend_from_slice(&record(22, 2, &[0; 40])); // epoch 2
        mixed.extend_from_slice(&record(22, 0, &handshake(1, 4, 2, &[1, 2, 3]))); // past its length
        mixed.extend_from_slice(&[22, 0xfe, 0xfd, 0]); // truncated header
        assert_eq!(
            sanitize(Role::Server, mixed, false),
            Some(client_hello.clone())
        );
        // Alerts in the clear: fatal ones and close_notify, before the handshake completes only.
        let fatal = record(21, 0, &[2, 42]);
        assert_eq!(
            sanitize(Role::Client, fatal.clone(), false),
            Some(fatal.clone())
        );
        assert_eq!(sanitize(Role::Client, fatal, true), None);
        assert_eq!(sanitize(Role::Client, record(21, 0, &[1, 10]), false), None);
        assert_eq!(
            sanitize(Role::Client, record(21, 0, &[2, 42, 0]), false),
            None
        );
        let close = record(21, 0, &[1, 0]);
        assert_eq!(sanitize(Role::Client, close.clone(), false), Some(close));
        // ChangeCipherSpec in the clear, during the handshake only.
        assert_eq!(sanitize(Role::Server, ccs, true), None);
        assert_eq!(sanitize(Role::Server, record(20, 1, &[1]), false), None);
        // A handshake message of an absurd length.
        let huge = record(22, 0, &handshake(1, 1 << 20, 0, &[0; 8]));
        assert_eq!(sanitize(Role::Server, huge, false), None);
        // Wrong version.
        let mut v = client_hello;
        v[2] = 0xfe;
        assert_eq!(sanitize(Role::Server, v, false), None);
        // Not DTLS at all.
        assert_eq!(sanitize(Role::Server, vec![0x80, 0, 0, 0], false), None);
    }
}
