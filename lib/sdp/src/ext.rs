//! RTP header extensions (RFC 8285) and RTCP feedback the server negotiates: the URIs, the ids a
//! publish answer accepted ([`ExtIds`]) and the feedback bits of a track ([`feedback`]).

use crate::model::{Direction, Extmap, MediaKind};

/// `urn:ietf:params:rtp-hdrext:sdes:mid` (RFC 8843): the m-line a packet belongs to.
pub const URI_MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
/// `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id` (RFC 8852): the simulcast layer (rid).
pub const URI_RID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
/// `urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id` (RFC 8852): the layer an RTX packet repairs.
pub const URI_REPAIRED_RID: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
/// `urn:ietf:params:rtp-hdrext:ssrc-audio-level` (RFC 6464): the level of an audio packet.
pub const URI_AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// Transport-wide sequence numbers for transport-wide congestion control (TWCC).
pub const URI_TWCC: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// The header-extension ids ([`ExtIds`]) the load generator's publish offers
/// ([`crate::offer_publish_client`]) use; the same ids Chrome uses.
pub const CLIENT_EXT_IDS: ExtIds = ExtIds {
    mid: 4,
    rid: 10,
    repaired_rid: 11,
    audio_level: 1,
    twcc: 3,
};

/// The ids the engine writes into RTP it sends to subscribers, and so the ids every subscribe
/// offer declares: `1` ssrc-audio-level (audio m-lines), `3` transport-wide-cc (all m-lines).
pub const SUBSCRIBE_EXT_AUDIO_LEVEL: u8 = 1;
/// See [`SUBSCRIBE_EXT_AUDIO_LEVEL`].
pub const SUBSCRIBE_EXT_TWCC: u8 = 3;

/// RTCP feedback bits of [`crate::PublishedTrack::feedback`] (the same values as the control
/// protocol's `FB_*`): generic NACK (`a=rtcp-fb:<pt> nack`).
pub const FB_NACK: u8 = 1;
/// Picture loss indication (`nack pli`).
pub const FB_PLI: u8 = 2;
/// Full intra request (`ccm fir`).
pub const FB_FIR: u8 = 4;
/// Transport-wide congestion control feedback (`transport-cc`).
pub const FB_TWCC: u8 = 8;
/// Receiver estimated maximum bitrate (`goog-remb`); never set on publish (the answer declines it).
pub const FB_REMB: u8 = 16;

/// The header-extension ids a publisher uses in the RTP it sends, as the publish answer accepted
/// them (the offer's ids, echoed). 0 means the extension was not accepted (not offered, offered
/// with an id outside 1-14, or offered only for the other direction).
///
/// One set per publish connection: every bundled m-line uses the same id for an extension (the
/// answer refuses offers where they differ). The control daemon passes it to the engine
/// (`SetExtensions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ExtIds {
    /// `urn:ietf:params:rtp-hdrext:sdes:mid`.
    pub mid: u8,
    /// `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id`.
    pub rid: u8,
    /// `urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id`.
    pub repaired_rid: u8,
    /// `urn:ietf:params:rtp-hdrext:ssrc-audio-level`.
    pub audio_level: u8,
    /// Transport-wide-cc (`http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01`).
    pub twcc: u8,
}

impl ExtIds {
    /// The field for `uri`, if the server negotiates that extension.
    pub(crate) fn slot(&mut self, uri: &str) -> Option<&mut u8> {
        Some(match uri {
            URI_MID => &mut self.mid,
            URI_RID => &mut self.rid,
            URI_REPAIRED_RID => &mut self.repaired_rid,
            URI_AUDIO_LEVEL => &mut self.audio_level,
            URI_TWCC => &mut self.twcc,
            _ => return None,
        })
    }

    /// `(uri, id)` for every non-zero id.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&'static str, u8)> {
        [
            (URI_AUDIO_LEVEL, self.audio_level),
            (URI_TWCC, self.twcc),
            (URI_MID, self.mid),
            (URI_RID, self.rid),
            (URI_REPAIRED_RID, self.repaired_rid),
        ]
        .into_iter()
        .filter(|(_, id)| *id != 0)
    }
}

/// Whether the server takes header extension `uri` on an m-line of `kind` (audio level only on
/// audio).
pub(crate) fn negotiated(kind: &MediaKind, uri: &str) -> bool {
    match uri {
        URI_AUDIO_LEVEL => *kind == MediaKind::Audio,
        URI_MID | URI_RID | URI_REPAIRED_RID | URI_TWCC => true,
        _ => false,
    }
}

/// The extmap an answerer that only receives puts against an offered one it accepts, or `None`
/// when the offerer does not send the extension (`/recvonly`, `/inactive`) or its id is not a
/// one-byte id (1-14). The id is the offer's; extension attributes are not echoed.
pub(crate) fn answer_extmap(offered: &Extmap) -> Option<Extmap> {
    if !(1..=14).contains(&offered.id) {
        return None;
    }
    let direction = match offered.direction {
        None => None,
        Some(d) if d.sends() => Some(Direction::RecvOnly),
        Some(_) => return None,
    };
    Some(Extmap {
        id: offered.id,
        direction,
        uri: offered.uri.clone(),
        attributes: None,
    })
}

/// The [`FB_NACK`].. bits of a list of `a=rtcp-fb` values (compared ignoring ASCII case).
pub fn feedback(rtcp_fb: &[String]) -> u8 {
    rtcp_fb.iter().fold(0, |bits, fb| {
        bits | match fb.to_ascii_lowercase().as_str() {
            "nack" => FB_NACK,
            "nack pli" => FB_PLI,
            "ccm fir" => FB_FIR,
            "transport-cc" => FB_TWCC,
            "goog-remb" => FB_REMB,
            _ => 0,
        }
    })
}

/// An extmap line without direction or attributes.
pub(crate) fn extmap(id: u8, uri: &str) -> Extmap {
    Extmap {
        id: id.into(),
        direction: None,
        uri: uri.to_string(),
        attributes: None,
    }
}
