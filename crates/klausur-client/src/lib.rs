//! A native klausur meeting participant: what a browser does in a meeting, in Rust, for the
//! dial-in gateway and the benchmark.
//!
//! - [`group`]: the client rules of the MLS delivery-service protocol (who commits when), on
//!   [`klausur_e2ee::Member`]; sans-IO, time is an argument.
//! - [`offer`]: the offer/answer bookkeeping of an always-offering participant.
//! - [`session`]: one participant's session, sans-IO: signaling, a str0m `Rtc` in frame mode,
//!   SFrame-encrypted audio keyed by the group.
//! - [`driver`]: the tokio task that does a session's I/O (WebSocket, UDP, HTTP credentials).
//!   Over `https://` its HTTP requests and its WebSocket share one TLS trust setting
//!   ([`driver::ClientOptions::tls`]): the web roots, or with [`driver::tls_config`] also the
//!   certificates of an operator's PEM file (a server with a certificate from an
//!   organisation's own CA).

pub mod driver;
pub mod group;
pub mod offer;
pub mod session;

/// The TLS library of [`driver::TlsConfig`], for owners that build or inspect one.
pub use rustls;
