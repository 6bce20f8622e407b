//! The `klausur` server: HTTP API, WebSocket signaling, meeting actors, the media worker and
//! the command line.
//!
//! # Layers
//!
//! The modules form layers that only look down: a module imports from the layers below it and
//! never from one above (`tests/server/layers.rs` checks it). From the top:
//!
//! ```text
//! main.rs, cli        the command line: serve, administration, identity-ca, sip-gateway
//! server, ca_service  wiring: start the server (listeners, housekeeping, the in-process
//!                     gateway), or the identity CA as an HTTP service of its own
//! http/               router, API handlers, WebSocket upgrade, static files, client address,
//!                     first-request timeout, the one HTTP error mapping, test-only routes
//! state               the shared state handed to every handler (wires the layers below)
//! cluster             this node among several: heartbeat, placement of joins, meeting leases
//! dialin/             dial-in rules (numbers, PINs, throttle, tickets, verdicts), SIP gateway start
//! identity/           credential issuance, the remote CA's client and protocol, guest limits
//! connections         live meeting WebSockets per client address and per session
//! meeting/            the meeting actor, the registry, MLS delivery ordering, participant ids,
//!                     the one WebSocket error mapping
//! metrics             the monitoring endpoint's token, counters and text format (server and
//!                     remote SIP gateway)
//! media/              the media worker and its handle
//! admission           who comes in directly (pure rule + database facts), invitation guesses
//! auth, audit, budget, names, storage_fault, error_text
//!                     passwords and tokens, the audit trail, per-address budgets, text rules,
//!                     storage failures, an error's text for the operator
//! config              validated configuration (imports nothing else of the crate)
//! ```
//!
//! - [`http::api`] and [`http::ws`] turn requests and frames into calls; the parts return typed
//!   errors, which become replies in one place each: [`http::http_error`] for HTTP,
//!   [`meeting::signaling_error`] for the WebSocket's `error` messages;
//! - [`admission`] decides who comes in directly (pure rule + database facts);
//! - [`dialin`] holds telephone dial-in's server side: numbers and PINs, its throttle and
//!   tickets; [`dialin::sip_gateway`] is where the SIP gateway is started; its HTTP API is
//!   [`http::dialin_api`];
//! - [`meeting`] runs one actor per meeting that owns participants, lobby and moderation;
//! - [`media`] runs the media worker that owns the UDP socket and the sans-IO room cores
//!   (`klausur-room`);
//! - [`identity`] issues credentials (its routes are [`http::identity_api`]);
//!   [`ca_service`] is the identity CA as a service of its own (`klausur identity-ca serve`);
//! - [`config`] parses and validates configuration once at start; [`http::first_request`]
//!   bounds how long a connection may take to send its first request head;
//! - [`http::client_addr`] says which client a request comes from (behind trusted proxies too),
//!   and [`connections`] keeps the live meeting WebSockets per client address and per session.

pub mod admission;
pub mod audit;
pub mod auth;
pub mod budget;
pub mod ca_service;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod dialin;
pub mod error_text;
pub mod http;
pub mod identity;
pub mod media;
pub mod meeting;
pub mod metrics;
pub mod names;
pub mod server;
pub mod state;
pub mod storage_fault;
pub mod turn;

/// The log filter when `KLAUSUR_LOG` is not set: `info` for klausur, and only errors from the
/// media libraries. ICE (`is`), DTLS (`dimpl`) and str0m write a WARN line for odd packets
/// *before* checking who sent them (a STUN request with a MAPPED-ADDRESS attribute, say), so a
/// participant could write a line per crafted datagram into the operator's log. The media
/// worker counts what it drops instead (`MediaStats`), and `KLAUSUR_LOG` can turn them on.
pub const DEFAULT_LOG_FILTER: &str = "info,str0m=error,is=error,dimpl=error";
