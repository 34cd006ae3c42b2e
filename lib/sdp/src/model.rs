//! The in-memory form of a session description: what [`SessionDescription::parse`] produces and
//! [`SessionDescription::to_sdp`] writes.
//!
//! The model keeps what WebRTC signaling needs as typed fields and everything else as raw lines,
//! so a parsed description written back differs only in line order and in the few normalisations
//! documented on each field.

use std::fmt;
use std::net::SocketAddr;

/// A whole session description (RFC 8866): the session section and its m-lines.
///
/// Session-level transport attributes (`a=ice-ufrag`, `a=ice-pwd`, `a=fingerprint`, `a=setup`) are
/// kept here as given; m-line values override them (see [`crate::remote_transport`], which
/// resolves the two). Lines the model has no field for are kept verbatim in `other_lines` and
/// `other_attributes` and written back after the known ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionDescription {
    /// The `o=` line.
    pub origin: Origin,
    /// The `s=` line's value (`-` in WebRTC).
    pub session_name: String,
    /// The `t=` line's value (`0 0` in WebRTC).
    pub timing: String,
    /// `a=ice-lite` is present: the side that wrote it only answers ICE checks.
    pub ice_lite: bool,
    /// Session-level `a=ice-ufrag`.
    pub ice_ufrag: Option<String>,
    /// Session-level `a=ice-pwd`.
    pub ice_pwd: Option<String>,
    /// Session-level `a=ice-options` value (e.g. `trickle`).
    pub ice_options: Option<String>,
    /// Session-level `a=fingerprint` lines, in order (Firefox puts its only one here).
    pub fingerprints: Vec<Fingerprint>,
    /// Session-level `a=setup`.
    pub setup: Option<Setup>,
    /// `a=group` lines (`BUNDLE` in WebRTC), in order.
    pub groups: Vec<Group>,
    /// The `a=msid-semantic` value, trimmed (`WMS`, `WMS *`, `WMS stream-id`).
    pub msid_semantic: Option<String>,
    /// Session-level lines other than `v=`, `o=`, `s=`, `t=` and `a=`, verbatim (`c=IN IP4 ...`).
    pub other_lines: Vec<String>,
    /// Session-level attributes the model has no field for, verbatim without `a=`
    /// (`extmap-allow-mixed`, a session-level `sendrecv`, ...).
    pub other_attributes: Vec<String>,
    /// The m-lines, in order.
    pub media: Vec<Media>,
}

impl SessionDescription {
    /// The mids of the first `a=group:BUNDLE` line, or `None` if the description bundles nothing.
    ///
    /// WebRTC endpoints write at most one BUNDLE group; the server supports exactly one transport
    /// per connection, so later groups are ignored by this crate's checks.
    pub fn bundle(&self) -> Option<&[String]> {
        self.groups
            .iter()
            .find(|g| g.semantics.eq_ignore_ascii_case("BUNDLE"))
            .map(|g| g.mids.as_slice())
    }
}

/// The `o=` line: `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`.
///
/// Identifiers are kept as the strings given (browsers write 19-digit numbers; other producers
/// have been seen writing longer ones), so parsing never fails on their size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// User name, `-` in WebRTC.
    pub username: String,
    /// Session id, constant for the life of the session.
    pub session_id: String,
    /// Session version, incremented by each new offer or answer.
    pub session_version: String,
    /// Network type, `IN`.
    pub net_type: String,
    /// Address type, `IP4` or `IP6`.
    pub addr_type: String,
    /// Unicast address (meaningless in WebRTC, usually `127.0.0.1` or `0.0.0.0`).
    pub address: String,
}

impl Default for Origin {
    fn default() -> Self {
        Origin {
            username: "-".into(),
            session_id: "0".into(),
            session_version: "0".into(),
            net_type: "IN".into(),
            addr_type: "IP4".into(),
            address: "127.0.0.1".into(),
        }
    }
}

/// One `a=group:<semantics> <mid>...` line.
///
/// In WebRTC the only group is `BUNDLE`: every listed m-line shares the transport of the first one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The group semantics, e.g. `BUNDLE` or `LS`.
    pub semantics: String,
    /// The mids in the group, in order (the first is the tagged m-line).
    pub mids: Vec<String>,
}

/// The media type of an m-line (`m=audio`, `m=video`, `m=application`, anything else).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// `audio`.
    Audio,
    /// `video`.
    Video,
    /// `application`: the data channel (SCTP over DTLS) in WebRTC.
    Application,
    /// Any other media type, as written (`text`, `message`, ...).
    Other(String),
}

impl MediaKind {
    /// Reads an m-line's media field; unknown names become [`MediaKind::Other`].
    pub fn from_name(name: &str) -> Self {
        match name {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            "application" => MediaKind::Application,
            other => MediaKind::Other(other.to_string()),
        }
    }

    /// The name written on the m-line.
    pub fn as_str(&self) -> &str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            MediaKind::Application => "application",
            MediaKind::Other(name) => name,
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The media direction attribute of an m-line, from the writer's point of view.
///
/// A `sendonly` offer is answered `recvonly`, `sendrecv` by `recvonly` when the answerer only
/// receives, and `inactive` by `inactive` ([`Direction::answer_receiving`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// `a=sendrecv`, also the meaning of no direction attribute at all.
    #[default]
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// Reads a direction attribute name (`sendrecv`, `sendonly`, `recvonly`, `inactive`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Whether the writer of this attribute sends media on the m-line.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the writer of this attribute receives media on the m-line.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction an answerer that only receives puts against this offered direction:
    /// `recvonly` if the offerer sends, `inactive` otherwise (RFC 3264 section 6.1).
    pub fn answer_receiving(self) -> Self {
        if self.sends() {
            Direction::RecvOnly
        } else {
            Direction::Inactive
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The DTLS role attribute `a=setup` (RFC 4145, RFC 8842).
///
/// The offerer writes `actpass`; the answerer picks `active` (it starts the DTLS handshake, as the
/// DTLS client) or `passive` (DTLS server). Switchyard is always the DTLS server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setup {
    /// `active`: this side is the DTLS client.
    Active,
    /// `passive`: this side is the DTLS server.
    Passive,
    /// `actpass`: either; only valid in offers.
    ActPass,
    /// `holdconn`: no connection yet (not used by WebRTC).
    HoldConn,
}

impl Setup {
    /// Reads an `a=setup` value.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "active" => Some(Setup::Active),
            "passive" => Some(Setup::Passive),
            "actpass" => Some(Setup::ActPass),
            "holdconn" => Some(Setup::HoldConn),
            _ => None,
        }
    }

    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Setup::Active => "active",
            Setup::Passive => "passive",
            Setup::ActPass => "actpass",
            Setup::HoldConn => "holdconn",
        }
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `a=fingerprint:<hash-function> <value>` line (RFC 8122): the hash of the writer's DTLS
/// certificate.
///
/// Both parts are kept as written; [`Fingerprint::normalized`] gives the form the DTLS crate
/// compares (lowercase algorithm, uppercase hex), and `Display` writes `algorithm value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// The hash function, e.g. `sha-256`.
    pub algorithm: String,
    /// Colon-separated hex bytes, e.g. `AB:CD:...`.
    pub value: String,
}

impl Fingerprint {
    /// `"sha-256 AB:CD:..."` with the algorithm lowercased and the hex uppercased.
    pub fn normalized(&self) -> String {
        format!(
            "{} {}",
            self.algorithm.to_ascii_lowercase(),
            self.value.to_ascii_uppercase()
        )
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algorithm, self.value)
    }
}

/// One RTP payload format of an m-line: its `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` lines together.
///
/// Static payload types without an `a=rtpmap` (0 PCMU, 8 PCMA, 9 G722, ...) get their RFC 3551
/// names when parsed. `a=rtcp-fb:* ...` wildcard lines are copied into every codec of the m-line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Codec {
    /// The RTP payload type (0-127).
    pub pt: u8,
    /// Encoding name as written (`opus`, `VP8`, `H264`, `rtx`, ...); compare case-insensitively.
    pub name: String,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Channel count, audio only (`opus/48000/2` has `Some(2)`).
    pub channels: Option<u8>,
    /// The `a=fmtp` parameters, verbatim (`minptime=10;useinbandfec=1`).
    pub fmtp: Option<String>,
    /// The `a=rtcp-fb` values, in order, without the payload type (`nack`, `nack pli`, `ccm fir`,
    /// `transport-cc`, ...).
    pub rtcp_fb: Vec<String>,
}

impl Codec {
    /// Whether the encoding name is `name`, ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The value of one `key=value` parameter of the fmtp line (keys compared ignoring case).
    pub fn fmtp_param(&self, key: &str) -> Option<&str> {
        self.fmtp.as_deref()?.split(';').find_map(|param| {
            let (k, v) = param.split_once('=')?;
            k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
        })
    }

    /// Whether this is a resilience format rather than a media codec: RTX, RED, ULPFEC, FlexFEC
    /// (and comfort noise / DTMF, which carry no media of their own).
    pub fn is_auxiliary(&self) -> bool {
        [
            "rtx",
            "red",
            "ulpfec",
            "flexfec-03",
            "flexfec",
            "cn",
            "telephone-event",
        ]
        .iter()
        .any(|n| self.is(n))
    }
}

/// What the `a=ssrc:<ssrc> <attribute>` lines say about one SSRC (RFC 5576).
///
/// Only `cname` and `msid` are kept; Chrome's legacy `mslabel`/`label` attributes are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SsrcInfo {
    /// The synchronisation source.
    pub ssrc: u32,
    /// `cname:` value: ties the SSRCs of one endpoint together for lip sync.
    pub cname: Option<String>,
    /// First part of `msid:`: the MediaStream id.
    pub msid_stream: Option<String>,
    /// Second part of `msid:`: the track id.
    pub msid_track: Option<String>,
}

impl SsrcInfo {
    /// An SSRC with no attributes yet.
    pub fn new(ssrc: u32) -> Self {
        SsrcInfo {
            ssrc,
            cname: None,
            msid_stream: None,
            msid_track: None,
        }
    }
}

/// One `a=ssrc-group:<semantics> <ssrc>...` line: `FID` pairs a media SSRC with its RTX SSRC,
/// `SIM` lists simulcast layers, `FEC-FR` a media SSRC with its FEC SSRC.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SsrcGroup {
    /// `FID`, `SIM`, `FEC-FR`, ...
    pub semantics: String,
    /// The SSRCs in order; for `FID` and `FEC-FR` the first is the media SSRC.
    pub ssrcs: Vec<u32>,
}

/// One `a=extmap:<id>[/<direction>] <uri> [<attributes>]` line (RFC 8285): an RTP header
/// extension and the id its packets use for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Extmap {
    /// The local identifier (1-14 one-byte, up to 255 two-byte).
    pub id: u16,
    /// The optional direction restriction.
    pub direction: Option<Direction>,
    /// The extension URI.
    pub uri: String,
    /// Extension attributes after the URI, verbatim.
    pub attributes: Option<String>,
}

/// One `a=candidate:` line (RFC 8839): a transport address an ICE agent can be reached at.
///
/// `address` stays a string because browsers hide host addresses behind mDNS names
/// (`abcd.local`); [`Candidate::socket_addr`] gives the address when it is an IP literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// Foundation: candidates with equal foundations share a base and server.
    pub foundation: String,
    /// Component id: 1 for RTP (the only one with rtcp-mux).
    pub component: u32,
    /// Transport protocol as written: `udp`/`UDP`, `tcp`.
    pub transport: String,
    /// ICE priority.
    pub priority: u32,
    /// IP literal or mDNS hostname.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Candidate type after `typ`: `host`, `srflx`, `prflx`, `relay`.
    pub typ: String,
    /// The tokens after the type (`raddr 1.2.3.4 rport 5 generation 0 network-id 1 ...`).
    pub extensions: Vec<String>,
}

impl Candidate {
    /// The ICE priority of a host candidate for component 1 with the highest local preference
    /// (RFC 8445 section 5.1.2.1: type preference 126), as the server's only candidate uses.
    pub const HOST_PRIORITY: u32 = (126 << 24) | (65535 << 8) | (256 - 1);

    /// The server's single host UDP candidate for `addr`.
    pub fn host(addr: SocketAddr) -> Self {
        Candidate {
            foundation: "1".into(),
            component: 1,
            transport: "udp".into(),
            priority: Self::HOST_PRIORITY,
            address: addr.ip().to_string(),
            port: addr.port(),
            typ: "host".into(),
            extensions: Vec::new(),
        }
    }

    /// The address as a socket address, or `None` for an mDNS hostname or an unparsable address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip = self.address.parse().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for Candidate {
    /// The value after `a=candidate:`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {} typ {}",
            self.foundation,
            self.component,
            self.transport,
            self.priority,
            self.address,
            self.port,
            self.typ
        )?;
        for token in &self.extensions {
            write!(f, " {token}")?;
        }
        Ok(())
    }
}

/// One m-line (media section) and its attributes.
///
/// `direction` is resolved when parsing: the m-line's own direction attribute, else a session-level
/// one, else `sendrecv`; it is always written. For RTP m-lines the format list written on the
/// `m=` line comes from `codecs` (payload types without an `a=rtpmap` that are not static are
/// dropped); `formats` is written only when `codecs` is empty (data channels, rejected m-lines).
/// `rids`, `simulcast` and unknown attributes are kept raw so they survive a round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// The media type.
    pub kind: MediaKind,
    /// The port; 0 marks a rejected (or bundle-only) m-line.
    pub port: u16,
    /// The transport protocol, e.g. `UDP/TLS/RTP/SAVPF` or `UDP/DTLS/SCTP`.
    pub proto: String,
    /// The format list of the `m=` line as given (payload type numbers, or `webrtc-datachannel`).
    pub formats: Vec<String>,
    /// The `c=` line's value (`IN IP4 0.0.0.0`), if any.
    pub connection: Option<String>,
    /// Other non-attribute lines of the section (`b=AS:...`), verbatim.
    pub other_lines: Vec<String>,
    /// `a=mid`: the m-line's identifier, required by unified plan and BUNDLE.
    pub mid: Option<String>,
    /// The media direction (see the type's doc for how it is resolved).
    pub direction: Direction,
    /// The RTP payload formats in preference order (the `m=` line's order).
    pub codecs: Vec<Codec>,
    /// The SSRCs described by `a=ssrc` lines, in order of first appearance.
    pub ssrcs: Vec<SsrcInfo>,
    /// The `a=ssrc-group` lines.
    pub ssrc_groups: Vec<SsrcGroup>,
    /// `a=msid:<stream> <track>`; a missing track id is an empty string.
    pub msid: Option<(String, String)>,
    /// Media-level `a=ice-ufrag`.
    pub ice_ufrag: Option<String>,
    /// Media-level `a=ice-pwd`.
    pub ice_pwd: Option<String>,
    /// Media-level `a=ice-options` value.
    pub ice_options: Option<String>,
    /// Media-level `a=fingerprint` lines.
    pub fingerprints: Vec<Fingerprint>,
    /// Media-level `a=setup`.
    pub setup: Option<Setup>,
    /// `a=rtcp-mux`: RTP and RTCP share the port (required by the server).
    pub rtcp_mux: bool,
    /// `a=rtcp-rsize`: reduced-size RTCP is allowed.
    pub rtcp_rsize: bool,
    /// `a=bundle-only`: port 0 does not mean rejected.
    pub bundle_only: bool,
    /// The `a=extmap` lines.
    pub extmaps: Vec<Extmap>,
    /// The `a=candidate` lines.
    pub candidates: Vec<Candidate>,
    /// `a=end-of-candidates` is present.
    pub end_of_candidates: bool,
    /// The `a=rid` values, verbatim (`h send`, `l send max-width=320`...).
    pub rids: Vec<String>,
    /// The `a=simulcast` value, verbatim.
    pub simulcast: Option<String>,
    /// Attributes the model has no field for, verbatim without `a=` (`rtcp:9 IN IP4 0.0.0.0`,
    /// `sctp-port:5000`, ...).
    pub other_attributes: Vec<String>,
}

impl Media {
    /// An empty m-line of `kind`: no formats, port 0, `UDP/TLS/RTP/SAVPF`, `sendrecv`.
    pub fn new(kind: MediaKind) -> Self {
        Media {
            kind,
            port: 0,
            proto: "UDP/TLS/RTP/SAVPF".into(),
            formats: Vec::new(),
            connection: None,
            other_lines: Vec::new(),
            mid: None,
            direction: Direction::SendRecv,
            codecs: Vec::new(),
            ssrcs: Vec::new(),
            ssrc_groups: Vec::new(),
            msid: None,
            ice_ufrag: None,
            ice_pwd: None,
            ice_options: None,
            fingerprints: Vec::new(),
            setup: None,
            rtcp_mux: false,
            rtcp_rsize: false,
            bundle_only: false,
            extmaps: Vec::new(),
            candidates: Vec::new(),
            end_of_candidates: false,
            rids: Vec::new(),
            simulcast: None,
            other_attributes: Vec::new(),
        }
    }

    /// Whether the m-line is rejected or removed: port 0 without `a=bundle-only`.
    pub fn is_rejected(&self) -> bool {
        self.port == 0 && !self.bundle_only
    }

    /// Whether the m-line carries RTP secured by DTLS-SRTP (`.../RTP/SAVPF` or `.../RTP/SAVP`).
    pub fn is_srtp(&self) -> bool {
        let proto = self.proto.to_ascii_uppercase();
        proto.ends_with("RTP/SAVPF") || proto.ends_with("RTP/SAVP")
    }

    /// The codec with payload type `pt`.
    pub fn codec(&self, pt: u8) -> Option<&Codec> {
        self.codecs.iter().find(|c| c.pt == pt)
    }

    /// What the `a=ssrc` lines say about `ssrc`.
    pub fn ssrc_info(&self, ssrc: u32) -> Option<&SsrcInfo> {
        self.ssrcs.iter().find(|s| s.ssrc == ssrc)
    }

    /// The SSRC the media itself is sent with: the first SSRC that is not the repair stream of an
    /// `FID` or `FEC-FR` group (so the RTX SSRC is never chosen). With an `a=ssrc-group:SIM` it is
    /// the first (lowest) simulcast layer. `None` without `a=ssrc` lines.
    pub fn primary_ssrc(&self) -> Option<u32> {
        if let Some(sim) = self
            .ssrc_groups
            .iter()
            .find(|g| g.semantics.eq_ignore_ascii_case("SIM"))
        {
            if let Some(&first) = sim.ssrcs.first() {
                return Some(first);
            }
        }
        let is_repair = |ssrc: u32| {
            self.ssrc_groups.iter().any(|g| {
                (g.semantics.eq_ignore_ascii_case("FID")
                    || g.semantics.eq_ignore_ascii_case("FEC-FR"))
                    && g.ssrcs.iter().skip(1).any(|&s| s == ssrc)
            })
        };
        self.ssrcs
            .iter()
            .map(|s| s.ssrc)
            .find(|&ssrc| !is_repair(ssrc))
    }
}
