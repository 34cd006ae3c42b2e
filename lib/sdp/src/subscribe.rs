//! The server's offers on a subscribe connection and the check of the browser's answers.

use std::collections::{HashMap, HashSet};

use crate::error::Error;
use crate::ext;
use crate::model::{
    Codec, Direction, Group, Media, MediaKind, SessionDescription, Setup, SsrcInfo,
};
use crate::publish::PublishedTrack;
use crate::transport::{
    check_text, check_token, remote_transport, LocalTransport, RemoteTransport,
};

/// One m-line slot of a subscribe connection.
///
/// Mids are stable for the life of the connection: a slot whose track left stays as an `a=inactive`
/// m-line (with the bundle's port, since port 0 would remove it from the BUNDLE group) and may be
/// reused later for a new track of the same kind by giving it a new `track`. The caller keeps the
/// slot list and offers all of it every time, in the same order, appending new slots at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeSlot {
    /// The m-line's mid in the subscribe connection (not the publisher's mid).
    pub mid: String,
    /// [`MediaKind::Audio`] or [`MediaKind::Video`]; fixed for the slot's life.
    pub kind: MediaKind,
    /// The track forwarded on this slot, or `None` for an inactive slot.
    pub track: Option<PublishedTrack>,
}

/// Builds the server's offer for a subscribe connection.
///
/// One m-line per slot, in order: a slot with a track is `a=sendonly` with the publisher's codec
/// (same payload type and fmtp), one SSRC, `track.ssrc` (for a forwarded track the control daemon
/// sets it to the engine's outgoing SSRC for this subscriber; a simulcast track's 0 is refused):
/// `a=ssrc:<ssrc> cname:<cname>`, `a=ssrc:<ssrc> msid:<stream> <track>` and
/// `a=msid:<stream> <track>`, and no rids (the subscriber receives one stream whatever layer is
/// forwarded); an empty slot is `a=inactive` with a placeholder codec (Opus or VP8, reusing a
/// payload type other slots already give that codec). Every m-line declares the header extensions
/// the engine writes, `a=extmap:1 ssrc-audio-level` (audio) and `a=extmap:3 transport-wide-cc`,
/// and the feedback the engine handles: rtcp-fb `nack`, `nack pli`, `ccm fir`, `transport-cc`,
/// `goog-remb` for video, `transport-cc` for audio (in place of the publisher's). Session:
/// `a=ice-lite`, `a=group:BUNDLE` over all slots; every m-line has the server's ICE credentials,
/// fingerprint, `a=setup:actpass`, rtcp-mux, candidate and end-of-candidates.
///
/// Errors if `slots` is empty, mids repeat or are not tokens, a slot is not audio/video or holds
/// a track of the other kind, two slots forward the same SSRC, a track's SSRC is 0, a value would
/// break the SDP syntax, or two slots use one payload type for different codecs (browsers refuse
/// that within a BUNDLE group, and the engine cannot rewrite payload types).
pub fn offer_subscribe(slots: &[SubscribeSlot], local: &LocalTransport) -> Result<String, Error> {
    if slots.is_empty() {
        return Err(Error::invalid(
            "offer_subscribe needs at least one slot; with nothing to forward, send no subscribe offer",
        ));
    }
    local.validate()?;
    let mut mids = HashSet::new();
    let mut ssrcs = HashMap::new();
    for slot in slots {
        check_token("subscribe slot mid", &slot.mid)?;
        if !mids.insert(slot.mid.as_str()) {
            return Err(Error::invalid(format!(
                "two subscribe slots have mid {}; mids must be unique within a connection",
                slot.mid
            )));
        }
        if !matches!(slot.kind, MediaKind::Audio | MediaKind::Video) {
            return Err(Error::invalid(format!(
                "subscribe slot {} is {}; only audio and video can be forwarded",
                slot.mid, slot.kind
            )));
        }
        if let Some(track) = &slot.track {
            check_track(&format!("subscribe slot {}", slot.mid), &slot.kind, track)?;
            if track.ssrc == 0 {
                return Err(Error::invalid(format!(
                    "subscribe slot {}: the track's SSRC is 0 (a simulcast track has no single SSRC); set track.ssrc to the outgoing SSRC the engine uses for this subscriber (the Subscribe's out_ssrc)",
                    slot.mid
                )));
            }
            if let Some(other) = ssrcs.insert(track.ssrc, slot.mid.as_str()) {
                return Err(Error::invalid(format!(
                    "subscribe slots {other} and {} both forward SSRC {}; each track may be in one slot only",
                    slot.mid, track.ssrc
                )));
            }
        }
    }
    check_payload_types(slots)?;

    let mut sdp = local.session("switchyard");
    sdp.ice_lite = true;
    sdp.msid_semantic = Some("WMS".into());
    sdp.groups.push(Group {
        semantics: "BUNDLE".into(),
        mids: slots.iter().map(|s| s.mid.clone()).collect(),
    });
    for slot in slots {
        let mut media = match &slot.track {
            Some(track) => sending_media(local, &slot.mid, track, Setup::ActPass),
            None => {
                let mut media = local.media(slot.kind.clone(), &slot.mid, Setup::ActPass);
                media.direction = Direction::Inactive;
                media.codecs = vec![placeholder_codec(&slot.kind, slots)];
                media
            }
        };
        // What the engine writes and answers on the subscribe leg, whatever the publisher
        // negotiated: it terminates feedback and rewrites header extensions.
        if slot.kind == MediaKind::Audio {
            media.extmaps = vec![ext::extmap(
                ext::SUBSCRIBE_EXT_AUDIO_LEVEL,
                ext::URI_AUDIO_LEVEL,
            )];
        }
        media
            .extmaps
            .push(ext::extmap(ext::SUBSCRIBE_EXT_TWCC, ext::URI_TWCC));
        for codec in &mut media.codecs {
            codec.rtcp_fb = subscribe_feedback(&slot.kind);
        }
        sdp.media.push(media);
    }
    Ok(sdp.to_sdp())
}

/// The rtcp-fb every subscribe m-line offers: `nack`, `nack pli`, `ccm fir`, `transport-cc`,
/// `goog-remb` for video, `transport-cc` for audio.
fn subscribe_feedback(kind: &MediaKind) -> Vec<String> {
    let list: &[&str] = if *kind == MediaKind::Video {
        &["nack", "nack pli", "ccm fir", "transport-cc", "goog-remb"]
    } else {
        &["transport-cc"]
    };
    list.iter().map(|s| s.to_string()).collect()
}

/// Checks that a track's values can be written into SDP as given and match the slot's kind.
pub(crate) fn check_track(
    what: &str,
    kind: &MediaKind,
    track: &PublishedTrack,
) -> Result<(), Error> {
    if track.kind != *kind {
        return Err(Error::invalid(format!(
            "{what} is {kind} but its track (SSRC {}) is {}",
            track.ssrc, track.kind
        )));
    }
    let codec = &track.codec;
    if codec.pt > 127 {
        return Err(Error::invalid(format!(
            "{what}: payload type {} is above 127",
            codec.pt
        )));
    }
    check_token(&format!("{what}: codec name"), &codec.name)?;
    if let Some(fmtp) = &codec.fmtp {
        check_text(&format!("{what}: fmtp"), fmtp)?;
    }
    for fb in &codec.rtcp_fb {
        check_text(&format!("{what}: rtcp-fb"), fb)?;
    }
    for rid in &track.rids {
        check_token(&format!("{what}: rid"), rid)?;
    }
    check_token(&format!("{what}: stream id"), &track.stream_id)?;
    check_token(&format!("{what}: track id"), &track.track_id)?;
    check_text(&format!("{what}: cname"), &track.cname)
}

/// An m-line sending `track` under `mid`: the codec, the SSRC with cname and msid, `a=msid`.
pub(crate) fn sending_media(
    local: &LocalTransport,
    mid: &str,
    track: &PublishedTrack,
    setup: Setup,
) -> Media {
    let mut media = local.media(track.kind.clone(), mid, setup);
    media.direction = Direction::SendOnly;
    media.codecs = vec![track.codec.clone()];
    media.msid = Some((track.stream_id.clone(), track.track_id.clone()));
    media.ssrcs = vec![SsrcInfo {
        ssrc: track.ssrc,
        cname: Some(track.cname.clone()),
        msid_stream: Some(track.stream_id.clone()),
        msid_track: Some(track.track_id.clone()),
    }];
    media
}

/// What must be equal for two m-lines of one BUNDLE group to share a payload type: media type,
/// encoding name, clock rate, channels and fmtp parameters (compared as a set, as browsers do).
type CodecIdentity = (MediaKind, String, u32, Option<u8>, Vec<String>);

fn codec_identity(kind: &MediaKind, c: &Codec) -> CodecIdentity {
    let mut params: Vec<String> = c
        .fmtp
        .as_deref()
        .unwrap_or("")
        .split(';')
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty())
        .collect();
    params.sort();
    (
        kind.clone(),
        c.name.to_ascii_lowercase(),
        c.clock_rate,
        c.channels,
        params,
    )
}

/// The first pair of positions whose tracks use one payload type for different codecs.
pub(crate) fn payload_type_clash<'a>(
    tracks: impl IntoIterator<Item = &'a PublishedTrack>,
) -> Option<(usize, usize)> {
    let mut seen: HashMap<u8, (usize, CodecIdentity)> = HashMap::new();
    for (i, track) in tracks.into_iter().enumerate() {
        let identity = codec_identity(&track.kind, &track.codec);
        match seen.get(&track.codec.pt) {
            Some((first, other)) if *other != identity => return Some((*first, i)),
            Some(_) => {}
            None => {
                seen.insert(track.codec.pt, (i, identity));
            }
        }
    }
    None
}

/// `name/clock fmtp` for messages.
pub(crate) fn describe(codec: &Codec) -> String {
    match &codec.fmtp {
        Some(fmtp) => format!("{}/{} {fmtp}", codec.name, codec.clock_rate),
        None => format!("{}/{}", codec.name, codec.clock_rate),
    }
}

fn check_payload_types(slots: &[SubscribeSlot]) -> Result<(), Error> {
    let with_tracks: Vec<(&SubscribeSlot, &PublishedTrack)> = slots
        .iter()
        .filter_map(|s| Some((s, s.track.as_ref()?)))
        .collect();
    let Some((a, b)) = payload_type_clash(with_tracks.iter().map(|(_, t)| *t)) else {
        return Ok(());
    };
    let ((first, one), (second, other)) = (with_tracks[a], with_tracks[b]);
    Err(Error::invalid(format!(
        "subscribe slots {} and {} both use payload type {} but for different codecs ({} vs {}); the engine forwards payload types unchanged and browsers refuse one payload type for two codecs in a BUNDLE group, so these tracks cannot share a subscribe connection",
        first.mid,
        second.mid,
        one.codec.pt,
        describe(&one.codec),
        describe(&other.codec)
    )))
}

/// The codec an inactive slot lists: the codec of that name another slot of the same kind uses,
/// else a default one on a payload type no other slot uses.
fn placeholder_codec(kind: &MediaKind, slots: &[SubscribeSlot]) -> Codec {
    let (name, clock_rate, channels, fmtp, default_pt) = match kind {
        MediaKind::Audio => (
            "opus",
            48000,
            Some(2),
            Some("minptime=10;useinbandfec=1"),
            111,
        ),
        _ => ("VP8", 90000, None, None, 96),
    };
    let tracks = || slots.iter().filter_map(|s| s.track.as_ref());
    if let Some(track) = tracks().find(|t| t.kind == *kind && t.codec.is(name)) {
        return track.codec.clone();
    }
    let used: HashSet<u8> = tracks().map(|t| t.codec.pt).collect();
    let pt = std::iter::once(default_pt)
        .chain(96..=127)
        .chain(35..=63)
        .find(|pt| !used.contains(pt))
        .unwrap_or(default_pt);
    Codec {
        pt,
        name: name.into(),
        clock_rate,
        channels,
        fmtp: fmtp.map(str::to_string),
        rtcp_fb: if *kind == MediaKind::Video {
            vec!["nack".into(), "nack pli".into(), "ccm fir".into()]
        } else {
            Vec::new()
        },
    }
}

/// Checks a browser's answer to a subscribe offer built from `offer_slots`, and returns the
/// browser's transport parameters.
///
/// The answer must have the same m-lines (count, mids, kinds) in the same order; each m-line it
/// accepts must be `a=recvonly` or `a=inactive` (`a=inactive` for an inactive slot), have
/// `a=rtcp-mux`, and be in its BUNDLE group; and it must choose `a=setup:active` (the server is
/// the DTLS server). m-lines the answer rejects (port 0: the browser cannot decode that codec) are
/// allowed; the caller can find them with [`Media::is_rejected`] and stop forwarding to them.
pub fn check_subscribe_answer(
    offer_slots: &[SubscribeSlot],
    answer: &SessionDescription,
) -> Result<RemoteTransport, Error> {
    if answer.media.len() != offer_slots.len() {
        return Err(Error::AnswerMismatch {
            message: format!(
                "the answer has {} m-lines but the subscribe offer has {}; answer the latest subscribe-offer",
                answer.media.len(),
                offer_slots.len()
            ),
        });
    }
    let mut accepted = Vec::new();
    for (index, (slot, media)) in offer_slots.iter().zip(&answer.media).enumerate() {
        if media.mid.as_deref() != Some(slot.mid.as_str()) || media.kind != slot.kind {
            return Err(Error::AnswerMismatch {
                message: format!(
                    "m-line {index} of the answer is {} with mid {} where the subscribe offer has {} with mid {}; answer the latest subscribe-offer without reordering m-lines",
                    media.kind,
                    media.mid.as_deref().unwrap_or("(none)"),
                    slot.kind,
                    slot.mid
                ),
            });
        }
        if media.is_rejected() {
            continue;
        }
        let allowed = if slot.track.is_some() {
            matches!(media.direction, Direction::RecvOnly | Direction::Inactive)
        } else {
            media.direction == Direction::Inactive
        };
        if !allowed {
            let offered = if slot.track.is_some() {
                "sendonly"
            } else {
                "inactive"
            };
            return Err(Error::media(
                index,
                &media.kind,
                format!(
                    "the answer has a={} against the offer's a={offered}; a browser answering a server offer only receives (recvonly or inactive)",
                    media.direction
                ),
            ));
        }
        if !media.rtcp_mux {
            return Err(Error::media(
                index,
                &media.kind,
                "the answer has no a=rtcp-mux; the server requires RTP and RTCP on one port",
            ));
        }
        accepted.push((index, slot.mid.clone()));
    }
    let group = answer.bundle();
    if group.is_some() || accepted.len() > 1 {
        let group = group.unwrap_or(&[]);
        if let Some((index, mid)) = accepted.iter().find(|(_, mid)| !group.contains(mid)) {
            return Err(Error::Bundle {
                message: format!(
                    "m-line {index} (mid {mid}) is not in the answer's a=group:BUNDLE; the server carries all media of a connection on one transport"
                ),
            });
        }
    }
    let remote = remote_transport(answer)?;
    match remote.setup {
        Setup::Active => Ok(remote),
        Setup::Passive => Err(Error::Setup {
            message: "the answer has a=setup:passive; the server is always the DTLS server, so the answer must use a=setup:active".into(),
        }),
        other => Err(Error::Setup {
            message: format!(
                "the answer has a=setup:{other}, which an answer may not use; it must be a=setup:active (the server is the DTLS server)"
            ),
        }),
    }
}
