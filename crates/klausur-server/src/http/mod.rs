//! The HTTP layer: everything that turns a request or a WebSocket frame into a call on the
//! layers below, and a typed error back into a reply.
//!
//! Owns the router ([`api`]), the request extractors ([`extract`]), the API handlers ([`api`], [`audit_api`], [`identity_api`],
//! [`dialin_api`], [`metrics_api`]), the WebSocket upgrade and frame loop ([`ws`]), the web client's static
//! files ([`web`]), the client address behind proxies ([`client_addr`]), the first-request
//! timeout ([`first_request`]), the one mapping of errors to replies ([`http_error`]) and, in
//! test builds, the test-only routes (`test_hooks`).
//!
//! May call everything below it (`state`, `meeting`, `media`, `identity`, `dialin`,
//! `admission`, `auth`, `audit`, `connections`, `config`, `storage_fault`, `metrics`); nothing below
//! imports from here. Only the top (`server`, `ca_service`, `cli`) does.

pub mod api;
pub mod audit_api;
pub mod client_addr;
pub mod dialin_api;
pub mod extract;
pub mod first_request;
pub mod http_error;
pub mod identity_api;
pub mod metrics_api;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
pub mod web;
pub mod ws;
