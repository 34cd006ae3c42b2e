//! The server's answer to a publish offer: which m-lines it takes, with which codec, and the
//! tracks that result.

use std::collections::HashSet;

use crate::error::Error;
use crate::ext::{self, ExtIds};
use crate::model::{Codec, Direction, Media, MediaKind, SessionDescription, Setup};
use crate::subscribe::{check_track, describe, payload_type_clash};
use crate::transport::{answer_bundle, rejected_media, remote_transport, LocalTransport};

/// One track a publisher sends, as the server accepted it.
///
/// Without simulcast, `ssrc` is the media SSRC (never the RTX one of an `FID` group) and `rids` is
/// empty. With rid-based simulcast (`a=rid` + `a=simulcast:send`), `rids` lists the layers in the
/// offer's order (lowest first, as the web client lists them) and `ssrc` is 0: the engine learns
/// each layer's SSRC from the mid and rid header extensions of its packets. `codec` is the single
/// codec the answer accepted, with the offer's payload type and fmtp and only the rtcp-fb the
/// server keeps, and `feedback` the same rtcp-fb as [`crate::FB_NACK`].. bits.
/// `stream_id`/`track_id` come from `a=msid` (or `a=ssrc ... msid:`); without either, the stream
/// is `-` (no stream) and the track `track-<ssrc>` (`track-<mid>` for simulcast). `cname` is the
/// SSRC's; a simulcast m-line, which has no `a=ssrc`, takes the cname of the offer's other SSRCs
/// (preferring one of the same stream), else the stream id. The control
/// daemon may rewrite `stream_id` (e.g. to the participant id) before offering the track to
/// subscribers, and sets `ssrc` to the subscriber's outgoing SSRC before putting the track in a
/// [`crate::SubscribeSlot`]. The load generator uses the same type, as [`crate::ClientTrack`], to
/// describe what it sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublishedTrack {
    /// The publisher's mid for the m-line.
    pub mid: String,
    /// [`MediaKind::Audio`] or [`MediaKind::Video`].
    pub kind: MediaKind,
    /// The media SSRC; 0 for a simulcast track (non-empty `rids`).
    pub ssrc: u32,
    /// The simulcast layers' rids, lowest first (at most 3); empty without simulcast.
    pub rids: Vec<String>,
    /// The accepted codec.
    pub codec: Codec,
    /// The RTCP feedback negotiated for the track (`FB_*` bits, from `codec.rtcp_fb`).
    pub feedback: u8,
    /// The MediaStream id (`-` for none).
    pub stream_id: String,
    /// The track id.
    pub track_id: String,
    /// The RTCP CNAME of the publisher's SSRC (the stream id when the offer gave none).
    pub cname: String,
}

/// What [`answer_publish`] returns: the answer and what it accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAnswer {
    /// The answer SDP (CRLF).
    pub sdp: String,
    /// The accepted tracks, in m-line order.
    pub tracks: Vec<PublishedTrack>,
    /// The header-extension ids the publisher will use (0 = not accepted).
    pub ext: ExtIds,
}

/// Answers a publish offer: returns the answer SDP, the tracks accepted and the header-extension
/// ids accepted.
///
/// m-lines the server cannot take (no supported codec, application/datachannel, not sending,
/// port 0, not DTLS-SRTP) are rejected with port 0 but keep their place (RFC 8829). An accepted
/// m-line gets one codec (Opus for audio; VP8, else the best H264 — packetization-mode=1 with
/// profile-level-id 42e01f first — for video; so no RTX, RED or FEC: libwebrtc then retransmits
/// on the media SSRC), `a=recvonly`, and the server's ICE-lite credentials, fingerprint,
/// `a=setup:passive` and candidate.
///
/// Header extensions: of the offered extmaps, the answer echoes (with the offer's ids, which must
/// be one-byte ids 1-14) `sdes:mid`, `sdes:rtp-stream-id`, `sdes:repaired-rtp-stream-id`,
/// transport-wide-cc and, on audio, `ssrc-audio-level`, and declines the rest; [`ExtIds`] says
/// which ids were accepted. RTCP feedback: video keeps `nack`, `nack pli`, `ccm fir` and
/// `transport-cc`, audio keeps `transport-cc`, in the offer's order; `transport-cc` only when the
/// m-line's transport-wide-cc extmap was accepted; `goog-remb` and anything else is declined.
///
/// Simulcast: an m-line with `a=simulcast:send q;h;f` and `a=rid:<rid> send` lines (parameters
/// such as `max-width` allowed; `~` paused layers kept, without the `~`; at most 3 layers, the
/// offer's order kept) is answered `a=rid:<rid> recv` per layer and `a=simulcast:recv q;h;f`. It
/// needs no `a=ssrc` (any given are ignored) but must have the mid and rid extmaps accepted.
///
/// The BUNDLE group lists only accepted mids; if none are accepted the answer is still valid.
/// Errors when an m-line the server would accept lacks a mid, `a=rtcp-mux`, or `a=ssrc` (unless
/// simulcast), has malformed simulcast lines or simulcast without the mid/rid extmaps, when mids
/// repeat, when two accepted m-lines send one SSRC, use one payload type for different codecs or
/// one extension with different ids (or one id for different extensions), when accepted m-lines
/// are not bundled, or when the offer's transport is unusable (see [`remote_transport`];
/// `a=setup:passive` is refused because the server is always the DTLS server).
pub fn answer_publish(
    offer: &SessionDescription,
    local: &LocalTransport,
) -> Result<PublishAnswer, Error> {
    local.validate()?;
    check_unique_mids(offer)?;
    let mut answer = local.session("switchyard");
    answer.ice_lite = true;
    let mut tracks = Vec::new();
    let mut accepted = Vec::new();
    let mut ext = ExtIds::default();
    // For each accepted extension id, the m-line and URI that first used it.
    let mut ext_seen: Vec<(usize, u16, String)> = Vec::new();
    for (index, offered) in offer.media.iter().enumerate() {
        match accept(offer, index, offered, local)? {
            Some((media, track)) => {
                merge_ext(index, &media, &mut ext, &mut ext_seen)?;
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
    Ok(PublishAnswer {
        sdp: answer.to_sdp(),
        tracks,
        ext,
    })
}

/// Adds an accepted m-line's extmaps to the connection's [`ExtIds`]; errors if an extension
/// already has another id, or an id already means another extension (one RTP stream set per
/// BUNDLE transport, RFC 8843 section 9.2).
fn merge_ext(
    index: usize,
    media: &Media,
    ext: &mut ExtIds,
    seen: &mut Vec<(usize, u16, String)>,
) -> Result<(), Error> {
    for map in &media.extmaps {
        if let Some((first, _, uri)) = seen
            .iter()
            .find(|(_, id, uri)| *id == map.id && *uri != map.uri)
        {
            return Err(Error::media(
                index,
                &media.kind,
                format!(
                    "uses extmap id {} for {} but m-line {first} uses it for {uri}; within a BUNDLE group an id must mean one header extension",
                    map.id, map.uri
                ),
            ));
        }
        let Some(slot) = ext.slot(&map.uri) else {
            continue;
        };
        let id = u8::try_from(map.id).unwrap_or(0);
        if *slot != 0 && *slot != id {
            let first = seen
                .iter()
                .find(|(_, _, uri)| *uri == map.uri)
                .map_or(0, |(i, _, _)| *i);
            return Err(Error::media(
                index,
                &media.kind,
                format!(
                    "uses extmap id {} for {} but m-line {first} uses id {}; the server needs one id per header extension across the BUNDLE group",
                    map.id, map.uri, slot
                ),
            ));
        }
        *slot = id;
        seen.push((index, map.id, map.uri.clone()));
    }
    Ok(())
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
    for (i, track) in tracks.iter().enumerate().filter(|(_, t)| t.rids.is_empty()) {
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

/// The rtcp-fb values the server keeps for a codec of `kind`: `nack`, `nack pli`, `ccm fir`
/// (video) and `transport-cc` (when `twcc`), in the offer's order, lowercase, without repeats.
fn kept_feedback(kind: &MediaKind, offered: &[String], twcc: bool) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    for fb in offered {
        let normal = fb.to_ascii_lowercase();
        let keep = match normal.as_str() {
            "nack" | "nack pli" | "ccm fir" => *kind == MediaKind::Video,
            "transport-cc" => twcc,
            _ => false,
        };
        if keep && !kept.contains(&normal) {
            kept.push(normal);
        }
    }
    kept
}

fn accept(
    offer: &SessionDescription,
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
    // Header extensions: the ones the server uses, once per URI, with the offer's ids.
    let mut extmaps: Vec<crate::model::Extmap> = Vec::new();
    for map in &offered.extmaps {
        if !ext::negotiated(kind, &map.uri) || extmaps.iter().any(|m| m.uri == map.uri) {
            continue;
        }
        if let Some(answer) = ext::answer_extmap(map) {
            if extmaps.iter().all(|m| m.id != answer.id) {
                extmaps.push(answer);
            }
        }
    }
    let has = |uri: &str| extmaps.iter().any(|m| m.uri == uri);
    let rids = crate::simulcast::send_rids(index, offered)?;
    let layers_identifiable = has(ext::URI_MID) && has(ext::URI_RID);
    if !rids.is_empty() && !layers_identifiable {
        return Err(Error::media(
            index,
            kind,
            format!(
                "offers simulcast (a=simulcast:{}) without both the {} and {} header extensions (a=extmap with an id from 1 to 14); the server tells simulcast layers apart by them",
                offered.simulcast.as_deref().unwrap_or_default(),
                ext::URI_MID,
                ext::URI_RID
            ),
        ));
    }
    let ssrc = if rids.is_empty() {
        let Some(ssrc) = offered.primary_ssrc() else {
            let why = if offered.rids.is_empty() {
                ""
            } else {
                " (it has a=rid lines but no a=simulcast:send list)"
            };
            return Err(Error::media(
                index,
                kind,
                format!(
                    "offer has no a=ssrc line{why}; the server needs the SSRC of each sent track"
                ),
            ));
        };
        if ssrc == 0 {
            return Err(Error::media(
                index,
                kind,
                "sends SSRC 0, which the server reserves (it means \"not known yet\"); use another SSRC",
            ));
        }
        ssrc
    } else {
        0
    };
    let info = offered.primary_ssrc().and_then(|s| offered.ssrc_info(s));
    let (stream_id, track_id) = match (&offered.msid, info) {
        (Some((stream, track)), _) if !stream.is_empty() => (stream.clone(), track.clone()),
        (_, Some(info)) if info.msid_stream.is_some() => (
            info.msid_stream.clone().unwrap_or_default(),
            info.msid_track.clone().unwrap_or_default(),
        ),
        _ => ("-".to_string(), String::new()),
    };
    let track_id = match (track_id.is_empty(), rids.is_empty()) {
        (false, _) => track_id,
        (true, true) => format!("track-{ssrc}"),
        (true, false) => format!("track-{mid}"),
    };
    // A simulcast m-line has no a=ssrc and so no cname of its own: take the one the endpoint
    // gives its other SSRCs (one per connection in browsers), so subscribers keep lip sync.
    let cname = info
        .and_then(|i| i.cname.clone())
        .or_else(|| {
            let all = || offer.media.iter().flat_map(|m| &m.ssrcs);
            all()
                .filter(|s| s.msid_stream.as_deref() == Some(stream_id.as_str()))
                .chain(all())
                .find_map(|s| s.cname.clone())
        })
        .unwrap_or_else(|| stream_id.clone());
    let rtcp_fb = kept_feedback(kind, &chosen.rtcp_fb, has(ext::URI_TWCC));
    let feedback = ext::feedback(&rtcp_fb);
    let codec = Codec {
        rtcp_fb,
        ..chosen.clone()
    };
    let track = PublishedTrack {
        mid: mid.clone(),
        kind: kind.clone(),
        ssrc,
        rids,
        codec: codec.clone(),
        feedback,
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
    media.extmaps = extmaps;
    media.codecs = vec![codec];
    if !track.rids.is_empty() {
        media.rids = track.rids.iter().map(|r| format!("{r} recv")).collect();
        media.simulcast = Some(format!("recv {}", track.rids.join(";")));
    }
    Ok(Some((media, track)))
}
