//! The gateway's I/O: the SIP endpoint towards the trunk ([`sip`]), the server's dial-in API
//! ([`api`]), one task per answered call ([`caller`]: RTP, voice menu, the caller's meeting
//! client) and one audio bus per meeting with callers ([`bus`]).
//!
//! [`Gateway::start`] starts it all from a [`GatewayConfig`]; `klausur serve` runs it in its
//! own process when dial-in is configured, `klausur sip-gateway` on a host of its own. Either
//! way the gateway reaches the server only over HTTP and WebSocket, like a browser; over
//! `https://` the dial-in API and every caller's meeting client trust the same certificates
//! (`GatewayConfig::server_tls`: the web roots, or also an operator's own CA).

#[cfg(feature = "bridge")]
pub mod api;
#[cfg(feature = "bridge")]
pub mod bus;
#[cfg(feature = "bridge")]
pub mod caller;
#[cfg(feature = "bridge")]
mod gateway;
pub mod sip;

#[cfg(feature = "bridge")]
pub use gateway::{Gateway, GatewayConfig, GatewayError, RunningGateway};
