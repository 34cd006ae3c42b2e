//! `switchyard-engine`: Switchyard's data plane.
//!
//! ```text
//!            control daemon (switchyard-control)
//!                   |  Unix socket, switchyard-protocol frames
//!                   v
//!   control thread  (control.rs: requests -> worker commands, events <- workers)
//!        |  commands (channel + wake-up)
//!        v
//!   worker 0 ... worker N-1        one pinned thread per core, each with its own UDP port
//!     worker.rs: recv batch -> Forwarder -> send batch          (switchyard-udp: io_uring | mmsg)
//!     forwarder.rs: demux -> STUN (ICE-lite) | DTLS punt | SRTP decrypt once -> route by SSRC
//!        |  subscribers on other workers: shared plaintext over lock-free queues (handoff.rs)
//!        v
//!     each subscriber's worker encrypts into its own send buffer
//! ```
//!
//! The per-packet logic (`forwarder`) is sans-I/O: tests drive it with byte slices and a fake output.
//! The control daemon never blocks a worker: it only enqueues commands, and workers only enqueue events.
#![warn(unreachable_pub)]

pub mod config;
pub mod control;
pub mod demux;
pub mod engine;
pub mod forwarder;
pub mod handoff;
pub mod latency;
pub mod media;
pub mod pool;
pub mod rtp;
pub mod slots;
pub mod stats;
pub mod streams;
pub mod transport;
pub mod turn;
pub mod worker;

pub use engine::{Engine, EngineConfig, StartError, WorkerProbe};
