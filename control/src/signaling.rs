//! The WebSocket signaling messages (docs/signaling.md): parsing and validating what clients send,
//! and the messages the server sends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Largest signaling message accepted (an SDP offer with many tracks is ~20 KiB).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// A message from a client, validated.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ClientMsg {
    /// Join a room.
    Join {
        /// Room name.
        room: String,
        /// Display name.
        name: String,
        /// Optional access token.
        #[serde(default)]
        token: Option<String>,
        /// The client can run the mesh modes (C2C, P2P: one peer connection per other participant
        /// and the `peer-*` messages). Without it the room stays in the SFU while the client is in it.
        #[serde(default)]
        mesh: bool,
    },
    /// An offer on the publish connection.
    Publish {
        /// The offer.
        sdp: String,
        /// The room epoch the offer belongs to (from `joined` / `mode`); an old one is ignored.
        #[serde(default)]
        epoch: Option<u64>,
    },
    /// The answer to a subscribe offer.
    SubscribeAnswer {
        /// The answer.
        sdp: String,
        /// The offer version it answers.
        version: u64,
        /// The room epoch (see `Publish`).
        #[serde(default)]
        epoch: Option<u64>,
    },
    /// Mesh: an offer for the peer connection with participant `to`.
    PeerOffer {
        /// The other participant's id.
        to: String,
        /// The offer.
        sdp: String,
        /// The room epoch (see `Publish`).
        #[serde(default)]
        epoch: Option<u64>,
    },
    /// Mesh: the answer to `to`'s offer.
    PeerAnswer {
        /// The other participant's id.
        to: String,
        /// The answer.
        sdp: String,
        /// The room epoch (see `Publish`).
        #[serde(default)]
        epoch: Option<u64>,
    },
    /// Mesh: an ICE candidate for the peer connection with `to`.
    PeerCandidate {
        /// The other participant's id.
        to: String,
        /// `RTCIceCandidateInit` (`{candidate, sdpMid, sdpMLineIndex, usernameFragment}`), a candidate
        /// string, or null (end of candidates).
        #[serde(default)]
        candidate: Option<serde_json::Value>,
        /// The room epoch (see `Publish`).
        #[serde(default)]
        epoch: Option<u64>,
    },
    /// An ICE candidate (ignored in SFU mode: the server is ICE-lite).
    Candidate {
        /// `publish` or `subscribe`.
        pc: String,
        /// The candidate, or null at the end.
        #[serde(default)]
        candidate: Option<serde_json::Value>,
    },
    /// A chat message.
    Chat {
        /// The text.
        text: String,
    },
    /// The sender's microphone / camera / screen state.
    MediaState {
        /// Microphone on.
        audio: bool,
        /// Camera on.
        video: bool,
        /// Sharing a screen.
        #[serde(default)]
        screen: bool,
    },
    /// SFU: the size the client shows a remote video at, so the server forwards a simulcast layer
    /// no larger than needed.
    VideoSize {
        /// The msid stream id of the video (a key of `subscribe-offer.streams`).
        stream: String,
        /// The tile's height in device pixels (1-65535; 65535 = no limit).
        #[serde(rename = "maxHeight")]
        max_height: u32,
        /// The room epoch (see `Publish`).
        #[serde(default)]
        epoch: Option<u64>,
    },
    /// Leave the room.
    Leave,
}

/// Why a client message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalError {
    /// The error code (docs/signaling.md).
    pub code: &'static str,
    /// What was wrong.
    pub message: String,
    /// The type of the message that caused it, when known.
    pub reference: Option<String>,
}

impl SignalError {
    /// An error with a code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> SignalError {
        SignalError { code, message: message.into(), reference: None }
    }

    /// The same error, naming the message type that caused it.
    pub fn about(mut self, reference: &str) -> SignalError {
        self.reference = Some(reference.to_string());
        self
    }

    /// As a server message.
    pub fn to_msg(&self) -> ServerMsg {
        ServerMsg::Error { code: self.code.to_string(), message: self.message.clone(), reference: self.reference.clone() }
    }
}

fn valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The candidate line of a `peer-candidate`'s `candidate` field: `Some("")` for null (end of
/// candidates), `None` when the field has neither a string nor an object with a string `candidate`.
pub fn candidate_text(candidate: Option<&serde_json::Value>) -> Option<&str> {
    match candidate {
        None | Some(serde_json::Value::Null) => Some(""),
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Object(o)) => match o.get("candidate") {
            Some(serde_json::Value::String(s)) => Some(s),
            None | Some(serde_json::Value::Null) => Some(""),
            Some(_) => None,
        },
        Some(_) => None,
    }
}

fn valid_room(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Parses and validates one text frame from a client.
pub fn parse_client(text: &str) -> Result<ClientMsg, SignalError> {
    if text.len() > MAX_MESSAGE {
        return Err(SignalError::new("too-large", format!("message of {} bytes exceeds {MAX_MESSAGE}", text.len())));
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| SignalError::new("bad-json", format!("not JSON: {e}")))?;
    let Some(kind) = value.get("type").and_then(|t| t.as_str()).map(str::to_string) else {
        return Err(SignalError::new("bad-message", "missing string field `type`"));
    };
    let msg: ClientMsg =
        serde_json::from_value(value).map_err(|e| SignalError::new("bad-message", format!("{kind}: {e}")).about(&kind))?;
    let bad = |m: &str| Err(SignalError::new("bad-message", format!("{kind}: {m}")).about(&kind));
    match &msg {
        ClientMsg::Join { room, name, .. } => {
            if !valid_room(room) {
                return bad("room must be 1-64 characters of letters, digits, '-', '_' or '.'");
            }
            if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
                return bad("name must be 1-64 printable characters");
            }
        }
        ClientMsg::Publish { sdp, .. } | ClientMsg::SubscribeAnswer { sdp, .. } => {
            if !sdp.starts_with("v=0") {
                return bad("sdp must be a session description starting with v=0");
            }
        }
        ClientMsg::PeerOffer { to, sdp, .. } | ClientMsg::PeerAnswer { to, sdp, .. } => {
            if !valid_id(to) {
                return bad("to must be a participant id");
            }
            if !sdp.starts_with("v=0") {
                return bad("sdp must be a session description starting with v=0");
            }
        }
        ClientMsg::PeerCandidate { to, candidate, .. } => {
            if !valid_id(to) {
                return bad("to must be a participant id");
            }
            if candidate_text(candidate.as_ref()).is_none() {
                return bad("candidate must be null, a string or an object with a string `candidate`");
            }
        }
        ClientMsg::Candidate { pc, .. } => {
            if pc != "publish" && pc != "subscribe" {
                return bad("pc must be \"publish\" or \"subscribe\"");
            }
        }
        ClientMsg::Chat { text } => {
            if text.trim().is_empty() || text.chars().count() > 2000 {
                return bad("text must be 1-2000 characters");
            }
        }
        ClientMsg::VideoSize { stream, max_height, .. } => {
            if stream.is_empty() || stream.chars().count() > 64 || stream.chars().any(char::is_control) {
                return bad("stream must be the 1-64 character msid stream id of a received video");
            }
            if !(1..=u32::from(u16::MAX)).contains(max_height) {
                return bad("maxHeight must be an integer from 1 to 65535");
            }
        }
        ClientMsg::MediaState { .. } | ClientMsg::Leave => {}
    }
    Ok(msg)
}

/// A participant as other clients see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParticipantInfo {
    /// Participant id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Microphone on.
    pub audio: bool,
    /// Camera on.
    pub video: bool,
    /// Sharing a screen.
    pub screen: bool,
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMsg {
    /// The join succeeded.
    Joined {
        /// Room name.
        room: String,
        /// The joiner's id.
        participant: String,
        /// The room's mode.
        mode: String,
        /// The room's epoch: it changes whenever the room switches between the mesh and the SFU.
        epoch: u64,
        /// Everyone already there.
        participants: Vec<ParticipantInfo>,
        /// STUN/TURN servers for the client's peer connections.
        #[serde(rename = "iceServers")]
        ice_servers: Vec<serde_json::Value>,
    },
    /// Someone joined.
    ParticipantJoined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Someone left.
    ParticipantLeft {
        /// Their id.
        id: String,
    },
    /// The answer to a publish offer.
    PublishAnswer {
        /// The answer.
        sdp: String,
    },
    /// A new offer on the subscribe connection.
    SubscribeOffer {
        /// The offer.
        sdp: String,
        /// Its version (echoed in the answer).
        version: u64,
        /// msid stream id -> participant id.
        streams: BTreeMap<String, String>,
    },
    /// A participant's media state changed.
    MediaState {
        /// Who.
        participant: String,
        /// Microphone on.
        audio: bool,
        /// Camera on.
        video: bool,
        /// Sharing a screen.
        screen: bool,
    },
    /// A chat message.
    Chat {
        /// Sender id.
        from: String,
        /// Sender name.
        name: String,
        /// The text.
        text: String,
        /// Milliseconds since the Unix epoch.
        ts: u64,
    },
    /// The room's mode or size changed.
    Mode {
        /// `sfu`, `p2p` or `c2c`.
        mode: String,
        /// Participants in the room.
        participants: usize,
        /// The room's epoch: a new one means the topology changed (mesh <-> SFU) and the client
        /// rebuilds its peer connections.
        epoch: u64,
        /// Fresh STUN/TURN credentials, sent with a new epoch.
        #[serde(rename = "iceServers", skip_serializing_if = "Option::is_none")]
        ice_servers: Option<Vec<serde_json::Value>>,
    },
    /// Mesh: an offer from participant `from`.
    PeerOffer {
        /// Who offers.
        from: String,
        /// The offer.
        sdp: String,
    },
    /// Mesh: an answer from `from`.
    PeerAnswer {
        /// Who answers.
        from: String,
        /// The answer.
        sdp: String,
    },
    /// Mesh: an ICE candidate from `from` (as they sent it; null at the end).
    PeerCandidate {
        /// Whose candidate.
        from: String,
        /// The candidate.
        candidate: serde_json::Value,
    },
    /// The room's active speaker changed (SFU: from the audio levels the publishers send).
    ActiveSpeaker {
        /// The participant id, or null when nobody is.
        id: Option<String>,
    },
    /// A message was refused.
    Error {
        /// Error code.
        code: String,
        /// What was wrong.
        message: String,
        /// The type of the message that caused it.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
}

impl ServerMsg {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| "{\"type\":\"error\",\"code\":\"internal\"}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_messages_parse() {
        assert_eq!(
            parse_client(r#"{"type":"join","room":"a-b.c_1","name":"Ada"}"#).unwrap(),
            ClientMsg::Join { room: "a-b.c_1".into(), name: "Ada".into(), token: None, mesh: false }
        );
        assert_eq!(parse_client(r#"{"type":"leave"}"#).unwrap(), ClientMsg::Leave);
        assert!(matches!(
            parse_client(r#"{"type":"subscribe-answer","sdp":"v=0\r\n","version":3}"#).unwrap(),
            ClientMsg::SubscribeAnswer { version: 3, .. }
        ));
    }

    #[test]
    fn bad_messages_name_what_was_wrong() {
        let e = parse_client("{not json").unwrap_err();
        assert_eq!(e.code, "bad-json");
        let e = parse_client(r#"{"type":"publish"}"#).unwrap_err();
        assert_eq!((e.code, e.reference.as_deref()), ("bad-message", Some("publish")));
        assert!(e.message.contains("sdp"), "{}", e.message);
        let e = parse_client(r#"{"type":"fly"}"#).unwrap_err();
        assert!(e.message.contains("fly"), "{}", e.message);
        let e = parse_client(r#"{"type":"join","room":"no spaces","name":"x"}"#).unwrap_err();
        assert!(e.message.contains("room"), "{}", e.message);
        let e = parse_client(r#"{"type":"join","room":"r","name":"x","extra":1}"#).unwrap_err();
        assert!(e.message.contains("extra"), "{}", e.message);
        let big = format!(r#"{{"type":"chat","text":"{}"}}"#, "x".repeat(MAX_MESSAGE));
        assert_eq!(parse_client(&big).unwrap_err().code, "too-large");
        assert_eq!(parse_client(r#"{"type":"publish","sdp":"hello"}"#).unwrap_err().code, "bad-message");
        assert_eq!(parse_client(r#"[1,2]"#).unwrap_err().code, "bad-message");
    }

    #[test]
    fn server_messages_use_the_documented_names() {
        let m = ServerMsg::Error { code: "out-of-order".into(), message: "join first".into(), reference: Some("publish".into()) };
        assert_eq!(m.to_json(), r#"{"type":"error","code":"out-of-order","message":"join first","ref":"publish"}"#);
        let m = ServerMsg::ParticipantLeft { id: "p1".into() };
        assert_eq!(m.to_json(), r#"{"type":"participant-left","id":"p1"}"#);
        let m = ServerMsg::Mode { mode: "p2p".into(), participants: 3, epoch: 2, ice_servers: None };
        assert_eq!(m.to_json(), r#"{"type":"mode","mode":"p2p","participants":3,"epoch":2}"#);
        let m = ServerMsg::PeerOffer { from: "p1".into(), sdp: "v=0\r\n".into() };
        assert_eq!(m.to_json(), r#"{"type":"peer-offer","from":"p1","sdp":"v=0\r\n"}"#);
        let m = ServerMsg::PeerCandidate { from: "p2".into(), candidate: serde_json::Value::Null };
        assert_eq!(m.to_json(), r#"{"type":"peer-candidate","from":"p2","candidate":null}"#);
        let m = ServerMsg::ActiveSpeaker { id: Some("p3".into()) };
        assert_eq!(m.to_json(), r#"{"type":"active-speaker","id":"p3"}"#);
        assert_eq!(ServerMsg::ActiveSpeaker { id: None }.to_json(), r#"{"type":"active-speaker","id":null}"#);
    }

    #[test]
    fn video_size_is_validated() {
        assert_eq!(
            parse_client(r#"{"type":"video-size","stream":"p1~cam","maxHeight":360}"#).unwrap(),
            ClientMsg::VideoSize { stream: "p1~cam".into(), max_height: 360, epoch: None }
        );
        assert!(matches!(
            parse_client(r#"{"type":"video-size","stream":"p1~cam","maxHeight":65535,"epoch":3}"#).unwrap(),
            ClientMsg::VideoSize { max_height: 65535, epoch: Some(3), .. }
        ));
        let long = format!(r#"{{"type":"video-size","stream":"{}","maxHeight":360}}"#, "x".repeat(65));
        for (bad, word) in [
            (r#"{"type":"video-size","stream":"p1~cam"}"#, "maxHeight"),
            (r#"{"type":"video-size","maxHeight":360}"#, "stream"),
            (r#"{"type":"video-size","stream":"","maxHeight":360}"#, "stream"),
            (long.as_str(), "stream"),
            (r#"{"type":"video-size","stream":"a\u0007b","maxHeight":360}"#, "stream"),
            (r#"{"type":"video-size","stream":"p1~cam","maxHeight":0}"#, "maxHeight"),
            (r#"{"type":"video-size","stream":"p1~cam","maxHeight":65536}"#, "maxHeight"),
            (r#"{"type":"video-size","stream":"p1~cam","maxHeight":-1}"#, "invalid value"),
            (r#"{"type":"video-size","stream":"p1~cam","maxHeight":360.5}"#, "invalid type"),
            (r#"{"type":"video-size","stream":"p1~cam","maxHeight":"360"}"#, "invalid type"),
            (r#"{"type":"video-size","stream":7,"maxHeight":360}"#, "invalid type"),
        ] {
            let e = parse_client(bad).unwrap_err();
            assert_eq!((e.code, e.reference.as_deref()), ("bad-message", Some("video-size")), "{bad}");
            assert!(e.message.contains(word), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn mesh_messages_parse_and_are_validated() {
        assert_eq!(
            parse_client(r#"{"type":"join","room":"r","name":"Ada","mesh":true}"#).unwrap(),
            ClientMsg::Join { room: "r".into(), name: "Ada".into(), token: None, mesh: true }
        );
        assert_eq!(
            parse_client(r#"{"type":"peer-offer","to":"p2","sdp":"v=0\r\n","epoch":4}"#).unwrap(),
            ClientMsg::PeerOffer { to: "p2".into(), sdp: "v=0\r\n".into(), epoch: Some(4) }
        );
        assert!(matches!(
            parse_client(r#"{"type":"peer-answer","to":"p1","sdp":"v=0\r\n"}"#).unwrap(),
            ClientMsg::PeerAnswer { epoch: None, .. }
        ));
        for ok in [
            r#"{"type":"peer-candidate","to":"p1","candidate":null}"#,
            r#"{"type":"peer-candidate","to":"p1"}"#,
            r#"{"type":"peer-candidate","to":"p1","candidate":"candidate:1 1 udp 1 127.0.0.1 5 typ host"}"#,
            r#"{"type":"peer-candidate","to":"p1","candidate":{"candidate":"","sdpMid":"0","sdpMLineIndex":0}}"#,
        ] {
            assert!(parse_client(ok).is_ok(), "{ok}");
        }
        for (bad, word) in [
            (r#"{"type":"peer-candidate","to":"p1","candidate":{"candidate":5}}"#, "candidate"),
            (r#"{"type":"peer-candidate","to":"p1","candidate":7}"#, "candidate"),
            (r#"{"type":"peer-offer","to":"","sdp":"v=0"}"#, "to"),
            (r#"{"type":"peer-offer","to":"p 1","sdp":"v=0"}"#, "to"),
            (r#"{"type":"peer-answer","to":"p1","sdp":"hello"}"#, "sdp"),
            (r#"{"type":"peer-offer","sdp":"v=0"}"#, "to"),
        ] {
            let e = parse_client(bad).unwrap_err();
            assert_eq!(e.code, "bad-message", "{bad}");
            assert!(e.message.contains(word), "{bad}: {}", e.message);
        }
        let v = serde_json::json!({"candidate": "candidate:x", "sdpMid": "0"});
        assert_eq!(candidate_text(Some(&v)), Some("candidate:x"));
        assert_eq!(candidate_text(None), Some(""));
    }
}
