//! The server's answer to a publish offer: which m-lines it takes, with which codec, and the
//! tracks that result.

use std::collections::HashSet;

use crate::error::Error;
use crate::model::{Codec, Direction, Media, MediaKind, SessionDescription, Setup};
use crate::subscribe::{check_track, describe, payload_type_clash};
use crate::transport::{answer_bundle, rejected_media, remote_transport, LocalTransport};

/// One track a publisher sends, as the server accepted it.
///
/// `ssrc` is the media SSRC (never the RTX one of an `FID` group), `codec` the single codec the
/// answer accepted, with the offer's payload type and fmtp and only the rtcp-fb the server keeps.
/// `stream_id`/`track_id` come from `a=msid` (or `a=ssrc ... msid:`); without either, the stream
/// is `-` (no stream) and the track `track-<ssrc>`. The control daemon may rewrite `stream_id`
/// (e.g. to the participant id) before offering the track to subscribers. The load generator uses
/// the same type, as [`crate::ClientTrack`], to describe what it sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublishedTrack {
    /// The publisher's mid for the m-line.
    pub mid: String,
    /// [`MediaKind::Audio`] or [`MediaKind::Video`].
    pub kind: MediaKind,
    /// The media SSRC.
    pub ssrc: u32,
    /// The accepted codec.
    pub codec: Codec,
    /// The MediaStream id (`-` for none).
    pub stream_id: String,
    /// The track id.
    pub track_id: String,
    /// The RTCP CNAME of the publisher's SSRC (the stream id when the offer gave none).
    pub cname: String,
}

/// Answers a publish offer: returns the answer SDP and the tracks accepted.
///
/// m-lines the server cannot take (no supported codec, application/datachannel, not sending,
/// port 0, not DTLS-SRTP) are rejected with port 0 but keep their place (RFC 8829). An accepted
/// m-line gets one codec (Opus for audio; VP8, else the best H264 — packetization-mode=1 with
/// profile-level-id 42e01f first — for video), `a=recvonly`, no extmaps, only the `nack`,
/// `nack pli` and `ccm fir` feedback for video, and the server's ICE-lite credentials,
/// fingerprint, `a=setup:passive` and candidate. The BUNDLE group lists only accepted mids; if
/// none are accepted the answer is still valid. Errors when an m-line the server would accept
/// lacks a mid, `a=rtcp-mux` or `a=ssrc`, when mids repeat, when two accepted m-lines send one
/// SSRC or use one payload type for different codecs, when accepted m-lines are not bundled, or
/// when the offer's transport is unusable (see [`remote_transport`]; `a=setup:passive`
/// is refused because the server is always the DTLS server).
pub fn answer_publish(
    offer: &SessionDescription,
    local: &LocalTransport,
) -> Result<(String, Vec<PublishedTrack>), Error> {
    local.validate()?;
    check_unique_mids(offer)?;
    let mut answer = local.session("switchyard");
    answer.ice_lite = true;
    let mut tracks = Vec::new();
    let mut accepted = Vec::new();
    for (index, offered) in offer.media.iter().enumerate() {
        match accept(index, offered, local)? {
            Some((media, track)) => {
                accepted.push((index, track.mid.clone()));
                tracks.push(track);
                answer.media.push(media);
            }
            None => answer.media.push(rejected_media(offered)),
        }
    }
    check_accepted_tracks(&accepted, &tracks)?;
    if !accepted.is_empty() {
        let remote = remote_transport(offer)?;
        match remote.setup {
            Setup::ActPass | Setup::Active => {}
            other => {
                return Err(Error::Setup {
                    message: format!(
                        "the offer has a=setup:{other}; the server is always the DTLS server, so a publish offer must use a=setup:actpass (or active)"
                    ),
                })
            }
        }
    }
    if let Some(mids) = answer_bundle(offer, &accepted)? {
        answer.groups.push(crate::model::Group {
            semantics: "BUNDLE".into(),
            mids,
        });
    }
    Ok((answer.to_sdp(), tracks))
}

/// Errors if two accepted m-lines send the same SSRC (the engine tells tracks apart by SSRC) or
/// use one payload type for different codecs (the engine forwards payload types unchanged, and a
/// BUNDLE group may not do that).
fn check_accepted_tracks(
    accepted: &[(usize, String)],
    tracks: &[PublishedTrack],
) -> Result<(), Error> {
    let at = |i: usize| accepted.get(i).map_or(0, |(index, _)| *index);
    let mut ssrcs = std::collections::HashMap::new();
    for (i, track) in tracks.iter().enumerate() {
        if let Some(first) = ssrcs.insert(track.ssrc, i) {
            return Err(Error::media(
                at(i),
                &track.kind,
                format!(
                    "sends SSRC {} like m-line {}; each sent track needs its own SSRC",
                    track.ssrc,
                    at(first)
                ),
            ));
        }
    }
    if let Some((first, second)) = payload_type_clash(tracks) {
        let (one, other) = (&tracks[first].codec, &tracks[second].codec);
        return Err(Error::media(
            at(second),
            &tracks[second].kind,
            format!(
                "uses payload type {} for {} but m-line {} uses it for {}; within a BUNDLE group a payload type must mean one codec",
                other.pt,
                describe(other),
                at(first),
                describe(one)
            ),
        ));
    }
    Ok(())
}

/// Errors if two m-lines share a mid: the answer (and BUNDLE) could not tell them apart.
pub(crate) fn check_unique_mids(sdp: &SessionDescription) -> Result<(), Error> {
    let mut seen = HashSet::new();
    for (index, media) in sdp.media.iter().enumerate() {
        if let Some(mid) = &media.mid {
            if !seen.insert(mid.as_str()) {
                return Err(Error::media(
                    index,
                    &media.kind,
                    format!("repeats a=mid:{mid}; every m-line needs its own mid"),
                ));
            }
        }
    }
    Ok(())
}

/// The codec the server takes from an offered m-line, if any.
pub(crate) fn choose_codec<'a>(kind: &MediaKind, codecs: &'a [Codec]) -> Option<&'a Codec> {
    match kind {
        MediaKind::Audio => codecs
            .iter()
            .find(|c| c.is("opus") && c.clock_rate == 48000),
        MediaKind::Video => codecs
            .iter()
            .find(|c| c.is("VP8") && c.clock_rate == 90000)
            .or_else(|| {
                let score = |c: &Codec| {
                    let mode1 = c.fmtp_param("packetization-mode") == Some("1");
                    let baseline = c
                        .fmtp_param("profile-level-id")
                        .is_some_and(|p| p.eq_ignore_ascii_case("42e01f"));
                    u8::from(mode1) * 2 + u8::from(baseline)
                };
                let mut best: Option<&Codec> = None;
                for c in codecs
                    .iter()
                    .filter(|c| c.is("H264") && c.clock_rate == 90000)
                {
                    if best.is_none_or(|b| score(c) > score(b)) {
                        best = Some(c);
                    }
                }
                best
            }),
        _ => None,
    }
}

/// The rtcp-fb values the server keeps for a codec of `kind`.
fn kept_feedback(kind: &MediaKind, offered: &[String]) -> Vec<String> {
    if *kind != MediaKind::Video {
        return Vec::new();
    }
    let mut kept: Vec<String> = Vec::new();
    for fb in offered {
        let normal = fb.to_ascii_lowercase();
        if ["nack", "nack pli", "ccm fir"].contains(&normal.as_str()) && !kept.contains(&normal) {
            kept.push(normal);
        }
    }
    kept
}

fn accept(
    index: usize,
    offered: &Media,
    local: &LocalTransport,
) -> Result<Option<(Media, PublishedTrack)>, Error> {
    let kind = &offered.kind;
    if !matches!(kind, MediaKind::Audio | MediaKind::Video)
        || offered.is_rejected()
        || !offered.is_srtp()
        || !offered.direction.sends()
    {
        return Ok(None);
    }
    let Some(chosen) = choose_codec(kind, &offered.codecs) else {
        return Ok(None);
    };
    let Some(mid) = offered.mid.clone() else {
        return Err(Error::media(
            index,
            kind,
            "has no a=mid; the server needs unified-plan offers with a mid on every m-line",
        ));
    };
    if !offered.rtcp_mux {
        return Err(Error::media(
            index,
            kind,
            "has no a=rtcp-mux; the server requires RTP and RTCP on one port (rtcpMuxPolicy \"require\")",
        ));
    }
    let Some(ssrc) = offered.primary_ssrc() else {
        let why = if offered.rids.is_empty() {
            ""
        } else {
            " (it uses rid-based simulcast, which the server does not support)"
        };
        return Err(Error::media(
            index,
            kind,
            format!("offer has no a=ssrc line{why}; the server needs the SSRC of each sent track"),
        ));
    };
    let info = offered.ssrc_info(ssrc);
    let (stream_id, track_id) = match (&offered.msid, info) {
        (Some((stream, track)), _) if !stream.is_empty() => (stream.clone(), track.clone()),
        (_, Some(info)) if info.msid_stream.is_some() => (
            info.msid_stream.clone().unwrap_or_default(),
            info.msid_track.clone().unwrap_or_default(),
        ),
        _ => ("-".to_string(), String::new()),
    };
    let track_id = if track_id.is_empty() {
        format!("track-{ssrc}")
    } else {
        track_id
    };
    let cname = info
        .and_then(|i| i.cname.clone())
        .unwrap_or_else(|| stream_id.clone());
    let codec = Codec {
        rtcp_fb: kept_feedback(kind, &chosen.rtcp_fb),
        ..chosen.clone()
    };
    let track = PublishedTrack {
        mid: mid.clone(),
        kind: kind.clone(),
        ssrc,
        codec: codec.clone(),
        stream_id,
        track_id,
        cname,
    };
    // Whatever is accepted here must be writable into subscribe offers later.
    crate::transport::check_token("a=mid", &mid)
        .and_then(|()| check_track("the track", kind, &track))
        .map_err(|e| Error::media(index, kind, e.to_string()))?;
    let mut media = local.media(kind.clone(), &mid, Setup::Passive);
    media.proto = offered.proto.clone();
    media.direction = Direction::RecvOnly;
    media.codecs = vec![codec];
    Ok(Some((media, track)))
}
