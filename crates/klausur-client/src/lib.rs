//! A native klausur meeting participant: what a browser does in a meeting, in Rust, for the
//! dial-in gateway and the benchmark.
//!
//! - [`group`]: the client rules of the MLS delivery-service protocol (who commits when), on
//!   [`klausur_e2ee::Member`]; sans-IO, time is an argument.
//! - [`offer`]: the offer/answer bookkeeping of an always-offering participant.
//! - [`session`]: one participant's session, sans-IO: signaling, a str0m `Rtc` in frame mode,
//!   SFrame-encrypted audio keyed by the group.
//! - [`driver`]: the tokio task that does a session's I/O (WebSocket, UDP, HTTP credentials).

pub mod driver;
pub mod group;
pub mod offer;
pub mod session;
