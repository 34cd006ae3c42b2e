//! [`Session`]: one DTLS-SRTP association whose datagrams the caller carries.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use dtls::cipher_suite::CipherSuiteId;
use dtls::config::{ClientAuthType, Config, ExtendedMasterSecretType};
use dtls::conn::DTLSConn;
use dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use webrtc_util::{Conn, KeyingMaterialExporter};

use crate::conn::{Counters, DatagramConn, SendFn};
use crate::error::alert_name;
use crate::identity::{fingerprint_of, RemoteFingerprint};
use crate::{Error, Identity};

/// The RFC 5764 §4.2 exporter label for DTLS-SRTP keys.
const SRTP_EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";
/// SNI the client puts in its ClientHello (the `dtls` crate sends one whatever we do; peers ignore it).
const CLIENT_SERVER_NAME: &str = "switchyard";
/// How long [`Session::close`] waits for close_notify to be handed to `send`.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Largest application-data record drained after the handshake (the dtls crate's own limit).
const APP_DATA_BUF: usize = 8192;

/// Which side of the DTLS handshake this session plays.
///
/// With ICE-lite the control daemon answers every offer with `a=setup:passive` and is the DTLS
/// [`Role::Server`]; the load generator and tests play [`Role::Client`] (`a=setup:active`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Waits for the peer's ClientHello and requires a client certificate.
    Server,
    /// Sends the ClientHello.
    Client,
}

/// An SRTP protection profile (RFC 5764 §4.1.2, RFC 7714) that a session can negotiate.
///
/// Only the two profiles browsers offer are supported. The key and salt lengths give the size
/// and layout of the exported keying material (see [`SrtpExport`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// SRTP_AEAD_AES_128_GCM (0x0007, RFC 7714): 16-byte key, 12-byte salt.
    AeadAes128Gcm,
    /// SRTP_AES128_CM_HMAC_SHA1_80 (0x0001, RFC 5764): 16-byte key, 14-byte salt.
    Aes128CmHmacSha1_80,
}

impl SrtpProfile {
    /// The RFC 5764 / RFC 7714 profile identifier (0x0007 or 0x0001).
    pub fn id(self) -> u16 {
        match self {
            SrtpProfile::AeadAes128Gcm => 0x0007,
            SrtpProfile::Aes128CmHmacSha1_80 => 0x0001,
        }
    }

    /// The profile with identifier `id`, if it is one this crate supports.
    pub fn from_id(id: u16) -> Option<SrtpProfile> {
        match id {
            0x0007 => Some(SrtpProfile::AeadAes128Gcm),
            0x0001 => Some(SrtpProfile::Aes128CmHmacSha1_80),
            _ => None,
        }
    }

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        16
    }

    /// Master salt length in bytes.
    pub fn salt_len(self) -> usize {
        match self {
            SrtpProfile::AeadAes128Gcm => 12,
            SrtpProfile::Aes128CmHmacSha1_80 => 14,
        }
    }

    /// Length of the exported keying material: `2 * (key_len + salt_len)`.
    pub fn keying_material_len(self) -> usize {
        2 * (self.key_len() + self.salt_len())
    }

    fn to_dtls(self) -> SrtpProtectionProfile {
        match self {
            SrtpProfile::AeadAes128Gcm => SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProfile::Aes128CmHmacSha1_80 => SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        }
    }
}

/// Result of a handshake: the negotiated SRTP protection profile (RFC 5764 id: 0x0001 AES_CM_128_HMAC_SHA1_80, 0x0007 AEAD_AES_128_GCM) and the exported keying material (2*(key+salt) bytes, RFC 5764 §4.2 layout: client key, server key, client salt, server salt).
///
/// The client key and salt protect what the DTLS client sends, the server ones what the server
/// sends; the accessor methods cut the material accordingly. `peer_fingerprint` is the SHA-256
/// fingerprint of the certificate the peer actually presented (it matched the expected one).
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpExport {
    /// RFC 5764 profile id: 0x0001 or 0x0007.
    pub profile_id: u16,
    /// `client_key | server_key | client_salt | server_salt`.
    pub keying_material: Vec<u8>,
    /// "AB:CD:..." SHA-256 fingerprint of the peer's certificate.
    pub peer_fingerprint: String,
}

impl SrtpExport {
    /// The negotiated profile (always `Some` for an export made by this crate).
    pub fn profile(&self) -> Option<SrtpProfile> {
        SrtpProfile::from_id(self.profile_id)
    }

    fn part(&self, index: usize) -> &[u8] {
        let Some(p) = self.profile() else { return &[] };
        let (k, s) = (p.key_len(), p.salt_len());
        let range = match index {
            0 => 0..k,
            1 => k..2 * k,
            2 => 2 * k..2 * k + s,
            _ => 2 * k + s..2 * k + 2 * s,
        };
        self.keying_material.get(range).unwrap_or(&[])
    }

    /// The SRTP master key of the DTLS client's outbound media.
    pub fn client_key(&self) -> &[u8] {
        self.part(0)
    }

    /// The SRTP master key of the DTLS server's outbound media.
    pub fn server_key(&self) -> &[u8] {
        self.part(1)
    }

    /// The SRTP master salt of the DTLS client's outbound media.
    pub fn client_salt(&self) -> &[u8] {
        self.part(2)
    }

    /// The SRTP master salt of the DTLS server's outbound media.
    pub fn server_salt(&self) -> &[u8] {
        self.part(3)
    }
}

impl std::fmt::Debug for SrtpExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SrtpExport")
            .field("profile_id", &format_args!("{:#06x}", self.profile_id))
            .field("keying_material_len", &self.keying_material.len())
            .field("peer_fingerprint", &self.peer_fingerprint)
            .finish()
    }
}

/// Tunables of a [`Session`]; `SessionOptions::default()` is what the control daemon uses.
///
/// The defaults offer both SRTP profiles, AEAD_AES_128_GCM first (as browsers do), use a
/// 1200-byte MTU for handshake datagrams and queue up to 64 inbound datagrams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionOptions {
    /// SRTP profiles to offer (client) or accept (server), most preferred first. Must not be empty.
    pub srtp_profiles: Vec<SrtpProfile>,
    /// Largest datagram DTLS sends; handshake messages are fragmented to fit.
    pub mtu: usize,
    /// Inbound datagrams queued before [`Session::feed`] starts dropping.
    pub queue_capacity: usize,
    /// First handshake retransmission interval.
    pub retransmit_interval: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            srtp_profiles: vec![SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80],
            mtu: 1200,
            queue_capacity: 64,
            retransmit_interval: Duration::from_secs(1),
        }
    }
}

/// What [`Session::established`] and [`Session::is_closed`] read.
#[derive(Clone, Default)]
struct Status {
    handshake: Option<Result<SrtpExport, Error>>,
    closed: bool,
}

/// A running DTLS association whose datagrams are carried by the caller.
///
/// [`Session::start`] spawns the association on the current tokio runtime; the caller hands in
/// what arrives from the peer with [`Session::feed`] and learns the result with
/// [`Session::established`]. After the handshake the association keeps running — answering a
/// retransmitted client Finished, noticing the peer's close_notify — until [`Session::close`]
/// (which sends close_notify) or drop (which does not, but still stops every task it spawned).
pub struct Session {
    role: Role,
    inbound: mpsc::Sender<Vec<u8>>,
    status: watch::Receiver<Status>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Session {
    /// Starts a handshake in `role`. Every datagram DTLS wants to send is passed to `send` (the control daemon forwards it
    /// to the engine; the client side writes it to a socket). The peer's certificate must match `remote_fingerprint`
    /// (the "sha-256 AB:CD.." value from its SDP; compare case-insensitively; reject other hash algorithms we don't support with a clear error).
    ///
    /// Must be called within a tokio runtime (with time enabled). It never fails itself: an
    /// unusable fingerprint, a missing runtime or a bad option is reported by
    /// [`Session::established`]. `send` is called from the session's tasks and must not block.
    pub fn start(
        role: Role,
        identity: &Identity,
        remote_fingerprint: &str,
        send: impl Fn(Vec<u8>) + Send + Sync + 'static,
    ) -> Session {
        Session::start_with_options(
            role,
            identity,
            remote_fingerprint,
            send,
            SessionOptions::default(),
        )
    }

    /// [`Session::start`] with explicit [`SessionOptions`] (e.g. to force one SRTP profile in a test
    /// or the load generator).
    pub fn start_with_options(
        role: Role,
        identity: &Identity,
        remote_fingerprint: &str,
        send: impl Fn(Vec<u8>) + Send + Sync + 'static,
        options: SessionOptions,
    ) -> Session {
        let (inbound_tx, inbound_rx) = mpsc::channel(options.queue_capacity.max(1));
        let (status_tx, status_rx) = watch::channel(Status::default());
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        let mut session = Session {
            role,
            inbound: inbound_tx,
            status: status_rx,
            shutdown: Some(shutdown_tx),
            task: None,
            counters: Arc::clone(&counters),
        };
        let fail = |e: Error| {
            status_tx.send_replace(Status {
                handshake: Some(Err(e)),
                closed: true,
            });
        };
        let expected = match RemoteFingerprint::parse(remote_fingerprint) {
            Ok(f) => f,
            Err(e) => {
                fail(e);
                return session;
            }
        };
        if options.srtp_profiles.is_empty() {
            fail(Error::NoSrtpProfile);
            return session;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            fail(Error::NoRuntime);
            return session;
        };
        install_crypto_provider();

        let conn = Arc::new(DatagramConn::new(
            role,
            inbound_rx,
            Arc::new(send) as SendFn,
            counters,
        ));
        let mismatch = Arc::new(Mutex::new(None));
        let config = dtls_config(role, identity, expected, &options, Arc::clone(&mismatch));
        session.task = Some(runtime.spawn(drive(
            role,
            config,
            conn,
            expected,
            mismatch,
            status_tx,
            shutdown_rx,
        )));
        session
    }

    /// Feeds one datagram received from the peer (never blocks; drops with a count if the session is gone or its queue is full).
    ///
    /// Datagrams that are not DTLS (first byte outside 20..=63, RFC 7983) are dropped and
    /// counted too; see [`Session::dropped`].
    pub fn feed(&self, datagram: impl Into<Vec<u8>>) {
        let datagram = datagram.into();
        if !crate::conn::is_dtls(&datagram) || self.inbound.try_send(datagram).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Completes when the handshake succeeds or fails (or `timeout` passes): wrong fingerprint, no shared SRTP profile, timeout all give distinct Error variants.
    ///
    /// It can be awaited any number of times, from any number of tasks; once the handshake has
    /// finished every call returns the same result at once. [`Error::Timeout`] only bounds this
    /// wait: the handshake goes on, and the caller that gives up drops or closes the session.
    pub async fn established(&self, timeout: Duration) -> Result<SrtpExport, Error> {
        let mut status = self.status.clone();
        let wait = async {
            match status.wait_for(|s| s.handshake.is_some()).await {
                Ok(s) => s.handshake.clone().unwrap_or(Err(Error::Closed)),
                // The task ended without a verdict (it was aborted): closed.
                Err(_) => Err(Error::Closed),
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout),
        }
    }

    /// Sends close_notify (if the handshake completed), then stops the session's tasks.
    /// Waits at most a second for the DTLS stack; after that the tasks are aborted anyway.
    pub async fn close(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(CLOSE_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    /// The role this session plays.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the association has ended: handshake failure, the peer's close_notify or fatal
    /// alert, or [`Session::close`].
    pub fn is_closed(&self) -> bool {
        self.status.borrow().closed || self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Inbound datagrams dropped so far: queue full, session ended, not DTLS, or oversized.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Times the server resent its last handshake flight because the client retransmitted its
    /// own (our Finished was lost on the way).
    pub fn last_flight_resends(&self) -> u64 {
        self.counters.last_flight_resends.load(Ordering::Relaxed)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Aborting the driver drops the DTLSConn, which stops the dtls crate's reader and
        // writer tasks (they end when its channels close).
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("closed", &self.is_closed())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// dtls builds rustls certificate verifiers (even with `insecure_skip_verify`), which need a
/// process-wide CryptoProvider; with more than one rustls backend compiled in, none is chosen
/// automatically. Installing ring's is a no-op if the process already installed one.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

type MismatchSlot = Arc<Mutex<Option<Error>>>;

fn dtls_config(
    role: Role,
    identity: &Identity,
    expected: RemoteFingerprint,
    options: &SessionOptions,
    mismatch: MismatchSlot,
) -> Config {
    let verify = move |certs: &[Vec<u8>],
                       _chains: &[rustls::pki_types::CertificateDer<'static>]| {
        let verdict = match certs.first() {
            None => Err(Error::NoPeerCertificate),
            Some(der) if expected.matches(der) => Ok(()),
            Some(der) => Err(Error::FingerprintMismatch {
                expected: expected.to_colon_hex(),
                got: fingerprint_of(der),
            }),
        };
        verdict.map_err(|e| {
            let text = e.to_string();
            *mismatch.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            dtls::Error::Other(text)
        })
    };
    Config {
        certificates: vec![identity.dtls_certificate()],
        // What every browser offers; the adapter's record checks assume AES-GCM.
        cipher_suites: vec![CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256],
        srtp_protection_profiles: options.srtp_profiles.iter().map(|p| p.to_dtls()).collect(),
        extended_master_secret: ExtendedMasterSecretType::Require,
        client_auth: match role {
            Role::Server => ClientAuthType::RequireAnyClientCert,
            Role::Client => ClientAuthType::NoClientCert,
        },
        // No CA chains in WebRTC: the certificate is checked against the SDP fingerprint only.
        insecure_skip_verify: true,
        verify_peer_certificate: Some(Arc::new(verify)),
        server_name: match role {
            Role::Client => CLIENT_SERVER_NAME.to_string(),
            Role::Server => String::new(),
        },
        mtu: options.mtu,
        flight_interval: options.retransmit_interval,
        ..Config::default()
    }
}

/// Runs one association: the handshake, then the post-handshake lifetime until shutdown.
async fn drive(
    role: Role,
    config: Config,
    conn: Arc<DatagramConn>,
    expected: RemoteFingerprint,
    mismatch: MismatchSlot,
    status: watch::Sender<Status>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let finish = |handshake: Result<SrtpExport, Error>, closed: bool| {
        status.send_modify(|s| {
            if s.handshake.is_none() {
                s.handshake = Some(handshake);
            }
            s.closed |= closed;
        });
    };
    let dyn_conn: Arc<dyn Conn + Send + Sync> = Arc::clone(&conn) as Arc<dyn Conn + Send + Sync>;
    let handshake = DTLSConn::new(dyn_conn, config, role == Role::Client, None);
    let result = tokio::select! {
        r = handshake => r,
        _ = &mut shutdown => {
            finish(Err(Error::Closed), true);
            return;
        }
    };
    let dtls = match result {
        Ok(dtls) => dtls,
        Err(e) => {
            let slot = mismatch.lock().unwrap_or_else(|p| p.into_inner()).take();
            finish(Err(slot.unwrap_or_else(|| map_error(e, &conn))), true);
            return;
        }
    };
    match export(&dtls, expected).await {
        Ok(export) => {
            conn.set_established();
            finish(Ok(export), false);
        }
        Err(e) => {
            finish(Err(e), true);
            let _ = tokio::time::timeout(CLOSE_GRACE, dtls.close()).await;
            return;
        }
    }

    // Keep the association alive. Application data is not expected on a DTLS-SRTP-only
    // association; it is read and discarded so that the dtls reader never stalls on it.
    let mut buf = vec![0u8; APP_DATA_BUF];
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                let _ = tokio::time::timeout(CLOSE_GRACE, dtls.close()).await;
                break;
            }
            r = dtls.read(&mut buf, None) => {
                if r.is_err() {
                    // close_notify or a fatal alert from the peer: the dtls reader has ended.
                    break;
                }
            }
        }
    }
    finish(Err(Error::Closed), true);
}

async fn export(dtls: &DTLSConn, expected: RemoteFingerprint) -> Result<SrtpExport, Error> {
    let profile = SrtpProfile::from_id(dtls.selected_srtpprotection_profile() as u16)
        .ok_or(Error::NoSrtpProfile)?;
    let state = dtls.connection_state().await;
    // The verify callback already checked this; check again in case the dtls crate skipped it.
    let der = state
        .peer_certificates
        .first()
        .ok_or(Error::NoPeerCertificate)?;
    let peer_fingerprint = fingerprint_of(der);
    if !expected.matches(der) {
        return Err(Error::FingerprintMismatch {
            expected: expected.to_colon_hex(),
            got: peer_fingerprint,
        });
    }
    let keying_material = state
        .export_keying_material(SRTP_EXPORTER_LABEL, &[], profile.keying_material_len())
        .await
        .map_err(|e| Error::Export(e.to_string()))?;
    Ok(SrtpExport {
        profile_id: profile.id(),
        keying_material,
        peer_fingerprint,
    })
}

fn map_error(e: dtls::Error, conn: &DatagramConn) -> Error {
    use dtls::Error as D;
    match e {
        D::ErrClientNoMatchingSrtpProfile
        | D::ErrServerNoMatchingSrtpProfile
        | D::ErrRequestedButNoSrtpExtension => Error::NoSrtpProfile,
        D::ErrClientRequiredButNoServerEms | D::ErrServerRequiredButNoClientEms => {
            Error::NoExtendedMasterSecret
        }
        D::ErrClientCertificateRequired | D::ErrCertificateVerifyNoCertificate => {
            Error::NoPeerCertificate
        }
        other => match conn.peer_alert() {
            Some(code) => Error::PeerAlert {
                code,
                name: alert_name(code),
            },
            None => Error::Handshake(other.to_string()),
        },
    }
}
