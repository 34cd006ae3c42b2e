//! `switchyard-control`: Switchyard's control daemon.
//!
//! ```text
//!  browser ──WebSocket /ws──> http.rs ──HubMsg──> hub.rs (one task: rooms, transports, DTLS sessions)
//!                                                   │   room.rs: who subscribes to what (sans-I/O)
//!                                                   │   switchyard-sdp: answers and offers
//!                                                   │   switchyard-dtls: handshakes over punted records
//!                                                   v
//!                                        engine_link.rs ──Unix socket──> switchyard-engine
//! ```
//!
//! A room runs browser to browser (C2C, P2P mesh: the hub only relays offers, answers and candidates)
//! or through the SFU, chosen by `mode.rs` as people join and leave. In SFU mode each browser holds two
//! peer connections to the server (publish and subscribe, see docs/signaling.md); each is an engine
//! transport. The hub creates transports, answers publish
//! offers, offers every other participant's tracks on the subscribe connection, runs DTLS over the
//! records the engine punts up, installs the exported SRTP keys, and tells the engine who subscribes
//! to which SSRC.

pub mod config;
pub mod daemon;
pub mod engine_link;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod mode;
pub mod notify;
pub mod room;
pub mod signaling;
pub mod turn;
