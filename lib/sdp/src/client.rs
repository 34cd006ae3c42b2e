//! The client side, for the load generator: a publish offer as a browser would write it, and the
//! answer to the server's subscribe offer.

use std::collections::HashSet;

use crate::error::Error;
use crate::ext;
use crate::model::{Group, MediaKind, SessionDescription, Setup};
use crate::publish::check_unique_mids;
use crate::subscribe::{check_track, sending_media};
use crate::transport::{answer_bundle, rejected_media, remote_transport, LocalTransport};

/// One track the load generator sends: the same shape as a track the server accepted.
///
/// `mid` is the m-line's mid in the client's publish offer; `codec` is offered as the only codec of
/// its m-line, so the server must support it (Opus, VP8 or H264).
pub type ClientTrack = crate::publish::PublishedTrack;

/// Writes a client's publish offer: one `a=sendonly` m-line per track, in order, each with its one
/// codec, `a=msid`, `a=ssrc` cname/msid lines, the client's ICE credentials, fingerprint,
/// `a=setup:actpass`, rtcp-mux, host candidate and end-of-candidates; BUNDLE over all of them.
///
/// Like a browser, it offers the header extensions the server accepts, with the ids of
/// [`crate::CLIENT_EXT_IDS`] (Chrome's): `1` ssrc-audio-level (audio), `3` transport-wide-cc,
/// `4` sdes:mid, and on video `10` rtp-stream-id and `11` repaired-rtp-stream-id; and the codec's
/// rtcp-fb followed by whichever of `nack`, `nack pli`, `ccm fir`, `transport-cc` (video) or
/// `transport-cc` (audio) it lacks, so the server's answer keeps NACK, PLI/FIR and TWCC. A track
/// with `rids` is offered as rid simulcast (`a=rid:<rid> send` per layer, `a=simulcast:send`, no
/// `a=ssrc`). `feedback` is not read.
///
/// Errors if `tracks` is empty, a mid or SSRC (of a track without rids) repeats, a track is not
/// audio/video, has more than 3 rids or an invalid one, or a value would break the SDP syntax.
pub fn offer_publish_client(
    tracks: &[ClientTrack],
    local: &LocalTransport,
) -> Result<String, Error> {
    if tracks.is_empty() {
        return Err(Error::invalid(
            "offer_publish_client needs at least one track to publish",
        ));
    }
    local.validate()?;
    let mut mids = HashSet::new();
    let mut ssrcs = HashSet::new();
    for track in tracks {
        crate::transport::check_token("client track mid", &track.mid)?;
        if !matches!(track.kind, MediaKind::Audio | MediaKind::Video) {
            return Err(Error::invalid(format!(
                "client track {} is {}; only audio and video can be published",
                track.mid, track.kind
            )));
        }
        check_track(&format!("client track {}", track.mid), &track.kind, track)?;
        if track.rids.len() > crate::simulcast::MAX_LAYERS
            || track.rids.iter().any(|r| !crate::simulcast::valid_rid(r))
        {
            return Err(Error::invalid(format!(
                "client track {} has rids {:?}; at most 3, each 1 to 16 characters of A-Z, a-z, 0-9, '-', '_'",
                track.mid, track.rids
            )));
        }
        let new_ssrc = !track.rids.is_empty() || ssrcs.insert(track.ssrc);
        if !mids.insert(track.mid.as_str()) || !new_ssrc {
            return Err(Error::invalid(format!(
                "client track {} repeats a mid or SSRC ({}) of an earlier track",
                track.mid, track.ssrc
            )));
        }
    }
    let mut sdp = local.session("-");
    sdp.msid_semantic = Some("WMS".into());
    sdp.groups.push(Group {
        semantics: "BUNDLE".into(),
        mids: tracks.iter().map(|t| t.mid.clone()).collect(),
    });
    for track in tracks {
        let mut media = sending_media(local, &track.mid, track, Setup::ActPass);
        let ids = ext::CLIENT_EXT_IDS;
        media.extmaps = ids
            .entries()
            .filter(|(uri, _)| ext::negotiated(&track.kind, uri))
            .filter(|(uri, _)| {
                track.kind == MediaKind::Video
                    || (*uri != ext::URI_RID && *uri != ext::URI_REPAIRED_RID)
            })
            .map(|(uri, id)| ext::extmap(id, uri))
            .collect();
        let wanted: &[&str] = if track.kind == MediaKind::Video {
            &["nack", "nack pli", "ccm fir", "transport-cc"]
        } else {
            &["transport-cc"]
        };
        for codec in &mut media.codecs {
            for fb in wanted {
                if !codec.rtcp_fb.iter().any(|f| f.eq_ignore_ascii_case(fb)) {
                    codec.rtcp_fb.push(fb.to_string());
                }
            }
        }
        if !track.rids.is_empty() {
            media.ssrcs.clear();
            media.rids = track.rids.iter().map(|r| format!("{r} send")).collect();
            media.simulcast = Some(format!("send {}", track.rids.join(";")));
        }
        sdp.media.push(media);
    }
    Ok(sdp.to_sdp())
}

/// Answers the server's subscribe offer as a browser would: every audio/video DTLS-SRTP m-line
/// the offer sends on is accepted `a=recvonly` with all its offered codecs and their rtcp-fb (an
/// `a=inactive` one is answered `a=inactive`), and the offered extmaps the server uses (audio
/// level, transport-wide-cc, mid, rid, repaired rid) echoed with their ids; everything else is
/// rejected with port 0; `a=setup:active`, the client's ICE credentials, fingerprint and candidate,
/// BUNDLE over the accepted mids.
///
/// Errors if mids repeat, an accepted m-line lacks a mid or `a=rtcp-mux`, the accepted m-lines are
/// not bundled, or the offer's transport is unusable (missing credentials, or an `a=setup` other
/// than `actpass`/`passive`, which would leave the client unable to be the DTLS client).
pub fn answer_subscribe_client(
    offer: &SessionDescription,
    local: &LocalTransport,
) -> Result<String, Error> {
    local.validate()?;
    check_unique_mids(offer)?;
    let mut answer = local.session("-");
    let mut accepted = Vec::new();
    for (index, offered) in offer.media.iter().enumerate() {
        let usable = matches!(offered.kind, MediaKind::Audio | MediaKind::Video)
            && !offered.is_rejected()
            && offered.is_srtp()
            && !offered.codecs.is_empty();
        if !usable {
            answer.media.push(rejected_media(offered));
            continue;
        }
        let Some(mid) = &offered.mid else {
            return Err(Error::media(index, &offered.kind, "has no a=mid"));
        };
        if !offered.rtcp_mux {
            return Err(Error::media(index, &offered.kind, "has no a=rtcp-mux"));
        }
        let mut media = local.media(offered.kind.clone(), mid, Setup::Active);
        media.proto = offered.proto.clone();
        media.direction = offered.direction.answer_receiving();
        media.codecs = offered.codecs.clone();
        media.extmaps = offered
            .extmaps
            .iter()
            .filter(|m| ext::negotiated(&offered.kind, &m.uri))
            .filter_map(ext::answer_extmap)
            .collect();
        answer.media.push(media);
        accepted.push((index, mid.clone()));
    }
    if !accepted.is_empty() {
        let remote = remote_transport(offer)?;
        if !matches!(remote.setup, Setup::ActPass | Setup::Passive) {
            return Err(Error::Setup {
                message: format!(
                    "the subscribe offer has a=setup:{}; the client must be able to take the DTLS client role (actpass or passive)",
                    remote.setup
                ),
            });
        }
    }
    if let Some(mids) = answer_bundle(offer, &accepted)? {
        answer.groups.push(Group {
            semantics: "BUNDLE".into(),
            mids,
        });
    }
    Ok(answer.to_sdp())
}
