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
    },
    /// An offer on the publish connection.
    Publish {
        /// The offer.
        sdp: String,
    },
    /// The answer to a subscribe offer.
    SubscribeAnswer {
        /// The answer.
        sdp: String,
        /// The offer version it answers.
        version: u64,
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
        ClientMsg::Publish { sdp } | ClientMsg::SubscribeAnswer { sdp, .. } => {
            if !sdp.starts_with("v=0") {
                return bad("sdp must be a session description starting with v=0");
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
            ClientMsg::Join { room: "a-b.c_1".into(), name: "Ada".into(), token: None }
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
    }
}
