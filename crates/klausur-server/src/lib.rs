//! The `klausur` server: HTTP API, WebSocket signaling, meeting actors, the media worker and
//! the command line.
//!
//! Layers, from the outside in:
//! - [`api`] and [`ws`] turn requests and frames into calls; the parts return typed errors,
//!   which become replies in one place each: [`http_error`] for HTTP, [`signaling_error`] for
//!   the WebSocket's `error` messages;
//! - [`admission`] decides who comes in directly (pure rule + database facts);
//! - [`dialin`] holds telephone dial-in's server side: numbers and PINs, the gateway API, its
//!   throttle and tickets; [`sip_gateway`] is where the SIP gateway is started;
//! - [`meeting`] runs one actor per meeting that owns participants, lobby and moderation;
//! - [`media`] runs the media worker that owns the UDP socket and the sans-IO room cores
//!   (`klausur-room`);
//! - [`ca_service`] is the identity CA as a service of its own (`klausur identity-ca serve`);
//! - [`config`] parses and validates configuration once at start; [`first_request`] bounds how
//!   long a connection may take to send its first request head;
//! - [`client_addr`] says which client a request comes from (behind trusted proxies too), and
//!   [`connections`] keeps the live meeting WebSockets per client address and per session.

pub mod admission;
pub mod api;
pub mod audit;
pub mod audit_api;
pub mod auth;
pub mod ca_service;
pub mod cli;
pub mod client_addr;
pub mod config;
pub mod connections;
pub mod delivery;
pub mod dialin;
pub mod first_request;
pub mod http_error;
pub mod identity;
pub mod media;
pub mod meeting;
pub mod server;
pub mod signaling_error;
pub mod sip_gateway;
pub mod state;
pub mod storage_fault;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
pub mod web;
pub mod ws;

/// The log filter when `KLAUSUR_LOG` is not set: `info` for klausur, and only errors from the
/// media libraries. ICE (`is`), DTLS (`dimpl`) and str0m write a WARN line for odd packets
/// *before* checking who sent them (a STUN request with a MAPPED-ADDRESS attribute, say), so a
/// participant could write a line per crafted datagram into the operator's log. The media
/// worker counts what it drops instead (`MediaStats`), and `KLAUSUR_LOG` can turn them on.
pub const DEFAULT_LOG_FILTER: &str = "info,str0m=error,is=error,dimpl=error";
