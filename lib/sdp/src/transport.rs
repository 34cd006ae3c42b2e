//! ICE/DTLS transport parameters: reading the remote side's from a description
//! ([`remote_transport`]) and writing the local side's into one ([`LocalTransport`]).

use std::net::SocketAddr;

use crate::error::Error;
use crate::model::{Candidate, Fingerprint, Media, MediaKind, Origin, SessionDescription, Setup};

/// The ICE and DTLS parameters of a remote description, resolved over all m-lines in use.
///
/// Produced by [`remote_transport`]: media-level values win over session-level ones, and every
/// m-line in use (not rejected) must agree, since the server runs one bundled transport per
/// connection. `fingerprint` is ready for the DTLS crate: `"sha-256 AB:CD:..."`, algorithm
/// lowercase and hex uppercase, the sha-256 one when several are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTransport {
    /// The remote ICE username fragment (`a=ice-ufrag`).
    pub ice_ufrag: String,
    /// The remote ICE password (`a=ice-pwd`).
    pub ice_pwd: String,
    /// The remote certificate fingerprint, `"<algorithm> <HEX:BYTES>"`.
    pub fingerprint: String,
    /// The remote DTLS role (`a=setup`; `active` when absent, as RFC 4145 defines).
    pub setup: Setup,
}

/// Resolves the ICE/DTLS parameters of a remote description.
///
/// For each m-line in use (port not 0, or `a=bundle-only`) the media-level `a=ice-ufrag`,
/// `a=ice-pwd`, `a=fingerprint` and `a=setup` are taken, falling back to the session-level ones;
/// with no m-line in use the session-level values are used. Errors name the attribute and m-line:
/// a value missing on an m-line with no session-level fallback, or values that differ between
/// m-lines ([`Error::TransportMismatch`]). Among several fingerprints the sha-256 one is chosen.
pub fn remote_transport(sdp: &SessionDescription) -> Result<RemoteTransport, Error> {
    let in_use: Vec<(usize, &Media)> = sdp
        .media
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.is_rejected())
        .collect();
    let ice_ufrag = resolve(
        "ice-ufrag",
        &in_use,
        |m| m.ice_ufrag.clone().or_else(|| sdp.ice_ufrag.clone()),
        sdp.ice_ufrag.clone(),
    )?;
    let ice_pwd = resolve(
        "ice-pwd",
        &in_use,
        |m| m.ice_pwd.clone().or_else(|| sdp.ice_pwd.clone()),
        sdp.ice_pwd.clone(),
    )?;
    let pick = |list: &[Fingerprint]| -> Option<String> {
        list.iter()
            .find(|f| f.algorithm.eq_ignore_ascii_case("sha-256"))
            .or_else(|| list.first())
            .map(Fingerprint::normalized)
    };
    let fingerprint = resolve(
        "fingerprint",
        &in_use,
        |m| {
            if m.fingerprints.is_empty() {
                pick(&sdp.fingerprints)
            } else {
                pick(&m.fingerprints)
            }
        },
        pick(&sdp.fingerprints),
    )?;
    let setup = resolve(
        "setup",
        &in_use,
        |m| Some(m.setup.or(sdp.setup).unwrap_or(Setup::Active)),
        Some(sdp.setup.unwrap_or(Setup::Active)),
    )?;
    Ok(RemoteTransport {
        ice_ufrag,
        ice_pwd,
        fingerprint,
        setup,
    })
}

fn resolve<T: PartialEq>(
    attribute: &'static str,
    in_use: &[(usize, &Media)],
    value_of: impl Fn(&Media) -> Option<T>,
    session: Option<T>,
) -> Result<T, Error> {
    let mut found: Option<(usize, T)> = None;
    for &(index, media) in in_use {
        let Some(value) = value_of(media) else {
            return Err(Error::media(
                index,
                &media.kind,
                format!(
                    "has no a={attribute}, and there is none at session level; the server needs it to set up the ICE/DTLS transport"
                ),
            ));
        };
        match &found {
            None => found = Some((index, value)),
            Some((first, seen)) if *seen != value => {
                return Err(Error::TransportMismatch {
                    attribute,
                    first: *first,
                    other: index,
                })
            }
            Some(_) => {}
        }
    }
    match found {
        Some((_, value)) => Ok(value),
        None => session.ok_or(Error::MissingTransport { attribute }),
    }
}

/// The transport parameters the local side writes into its descriptions.
///
/// For the server: the ICE-lite credentials and the worker's UDP address of the engine transport,
/// and the daemon certificate's SHA-256 fingerprint. The load generator passes its own values when
/// it writes client offers and answers. `session_id` stays constant for the life of one peer
/// connection; `session_version` must grow with each new description on it (RFC 3264 section 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTransport {
    /// ICE username fragment (4 to 256 ICE characters).
    pub ice_ufrag: String,
    /// ICE password (22 to 256 ICE characters).
    pub ice_pwd: String,
    /// SHA-256 fingerprint of the DTLS certificate, `"AB:CD:..."` (no algorithm prefix).
    pub fingerprint_sha256: String,
    /// The single host candidate: where the transport receives UDP.
    pub candidate: SocketAddr,
    /// The `o=` session id.
    pub session_id: u64,
    /// The `o=` session version.
    pub session_version: u64,
}

impl LocalTransport {
    /// Checks the values against what browsers enforce when they read them: ICE characters
    /// (`A-Z a-z 0-9 + /`), a ufrag of 4 to 256 and a password of 22 to 256 of them (RFC 8839
    /// section 5.4), and a fingerprint of 32 colon-separated hex bytes.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let ice = |what: &str, value: &str, min: usize| {
            let ok = (min..=256).contains(&value.len())
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
            if ok {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "{what} {value:?} must be {min} to 256 ICE characters (A-Z, a-z, 0-9, '+', '/'); browsers refuse anything else"
                )))
            }
        };
        ice("LocalTransport.ice_ufrag", &self.ice_ufrag, 4)?;
        ice("LocalTransport.ice_pwd", &self.ice_pwd, 22)?;
        let bytes: Vec<&str> = self.fingerprint_sha256.split(':').collect();
        if bytes.len() != 32
            || !bytes
                .iter()
                .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(Error::invalid(format!(
                "LocalTransport.fingerprint_sha256 {:?} must be 32 colon-separated hex bytes (\"AB:CD:...\"), without the \"sha-256\" prefix",
                self.fingerprint_sha256
            )));
        }
        Ok(())
    }

    fn addr_type(&self) -> &'static str {
        if self.candidate.is_ipv4() {
            "IP4"
        } else {
            "IP6"
        }
    }

    /// A session section with this transport's origin and nothing else.
    pub(crate) fn session(&self, username: &str) -> SessionDescription {
        SessionDescription {
            origin: Origin {
                username: username.into(),
                session_id: self.session_id.to_string(),
                session_version: self.session_version.to_string(),
                net_type: "IN".into(),
                addr_type: self.addr_type().into(),
                address: self.candidate.ip().to_string(),
            },
            session_name: "-".into(),
            timing: "0 0".into(),
            ..SessionDescription::default()
        }
    }

    /// An accepted m-line carrying this transport: the candidate's port and address, ICE
    /// credentials, fingerprint, `setup`, rtcp-mux, the candidate and end-of-candidates.
    pub(crate) fn media(&self, kind: MediaKind, mid: &str, setup: Setup) -> Media {
        let mut media = Media::new(kind);
        media.port = self.candidate.port();
        media.connection = Some(format!("IN {} {}", self.addr_type(), self.candidate.ip()));
        media.ice_ufrag = Some(self.ice_ufrag.clone());
        media.ice_pwd = Some(self.ice_pwd.clone());
        media.fingerprints = vec![Fingerprint {
            algorithm: "sha-256".into(),
            value: self.fingerprint_sha256.clone(),
        }];
        media.setup = Some(setup);
        media.mid = Some(mid.to_string());
        media.rtcp_mux = true;
        media.candidates = vec![Candidate::host(self.candidate)];
        media.end_of_candidates = true;
        media
    }
}

/// An answer's m-line rejecting `offered`: port 0, same proto and format list, same mid,
/// `a=inactive`, no transport attributes (RFC 8829 section 5.3.1).
pub(crate) fn rejected_media(offered: &Media) -> Media {
    let mut media = Media::new(offered.kind.clone());
    media.proto = offered.proto.clone();
    media.formats = if offered.formats.is_empty() {
        vec!["0".into()]
    } else {
        offered.formats.clone()
    };
    media.connection = Some("IN IP4 0.0.0.0".into());
    media.mid = offered.mid.clone();
    media.direction = crate::model::Direction::Inactive;
    media
}

/// The BUNDLE group of an answer accepting `accepted` mids of `offer`: errors if the offer does not
/// bundle them all (a single accepted m-line needs no group). Returns the mids in the offer's group
/// order, or `None` for no group line.
pub(crate) fn answer_bundle(
    offer: &SessionDescription,
    accepted: &[(usize, String)],
) -> Result<Option<Vec<String>>, Error> {
    let Some(group) = offer.bundle() else {
        return match accepted {
            [] | [_] => Ok(None),
            _ => Err(Error::Bundle {
                message: format!(
                    "the offer has no a=group:BUNDLE but {} m-lines to accept; the server carries all media of a connection on one transport, so the offer must bundle them (bundlePolicy \"max-bundle\" or \"balanced\")",
                    accepted.len()
                ),
            }),
        };
    };
    if let Some((index, mid)) = accepted.iter().find(|(_, mid)| !group.contains(mid)) {
        return Err(Error::Bundle {
            message: format!(
                "m-line {index} (mid {mid}) is not in the offer's a=group:BUNDLE; the server carries all media of a connection on one transport, so every m-line must be bundled"
            ),
        });
    }
    if accepted.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        group
            .iter()
            .filter(|mid| accepted.iter().any(|(_, m)| m == *mid))
            .cloned()
            .collect(),
    ))
}

/// Errors unless `value` is non-empty printable ASCII without spaces (an SDP token: mids, ICE
/// credentials, msid ids).
pub(crate) fn check_token(what: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(format!(
            "{what} {value:?} must be a non-empty string of printable ASCII without spaces"
        )));
    }
    Ok(())
}

/// Errors if `value` contains a line break or other control character (free text such as a cname
/// or an fmtp line, which would otherwise inject SDP lines).
pub(crate) fn check_text(what: &str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() || value.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{what} {value:?} must be non-empty and contain no line breaks or control characters"
        )));
    }
    Ok(())
}
