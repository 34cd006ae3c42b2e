//! `switchyard-loadgen`: simulated WebRTC rooms against Switchyard, Janus or a raw forwarder.
//!
//! ```text
//!   tokio runtime (signaling)                 media threads (a few, each with many sockets)
//!   switchyard.rs: WebSocket /ws  --+         media.rs: epoll (mio) + timer heap,
//!   janus.rs: HTTP /janus           +--> session.rs: ICE check, DTLS ---> Endpoint --> recvmmsg/sendmmsg,
//!   raw.rs: plain RTP registration --+        (socket + SRTP contexts)      SRTP, payload checks, stats
//! ```
//!
//! [`run::run`] ramps participants up at a join rate, starts each room once all of its subscribers
//! are connected, prints one progress line per second, and returns a [`report::Summary`].
#![warn(missing_docs)]

pub mod clock;
pub mod feedback;
pub mod janus;
pub mod media;
pub mod mmsg;
pub mod payload;
pub mod procstat;
pub mod report;
pub mod run;
pub mod session;
pub mod switchyard;
