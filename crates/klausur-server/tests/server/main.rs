//! The server crate's integration tests in one test binary: each module is what was one test
//! file, and its documentation says what it covers. One binary is linked instead of one per
//! file, and the harness runs the tests of every module side by side. So a test here must not
//! depend on having the process to itself (no process-global log subscriber, environment
//! variable, working directory or fixed port; no counting of the process's threads or files),
//! and a port for a program to listen on comes from [`process::free_port`] (or
//! [`process::free_port_block`]), which hands each test ports of its own.
//!
//! Run one module's tests with `cargo test -p klausur-server --test server <module>::`.
//!
//! Test targets of their own beside this one: `media_faults` (needs the feature `test-hooks`),
//! `log_privacy` (installs the process-global log subscriber) and `log_flood` (captures its own
//! thread's log, but whether an event is written at all is decided by the tracing library's
//! process-wide state, which every thread of the process shares).

// An in-process server; shared with the test targets of their own.
#[path = "../common/mod.rs"]
mod common;
// Child processes of the `klausur` binary.
mod process;

mod access_rules;
mod api_authz;
mod audit;
mod audit_cli;
mod ca_service_hostile;
mod cli;
mod client_address;
mod cluster;
mod connection_limits;
mod content_security_policy;
mod deploy;
mod dialin;
mod dialin_calls;
mod dialin_cli;
mod dialin_remote_tls;
mod dialin_tls;
mod drain;
mod dual_stack;
mod e2ee_delivery;
mod guest_credential_budget;
mod http_headers;
mod ice_tcp;
mod identity;
mod identity_cli;
mod identity_remote;
mod initial_password;
mod invitation_guessing;
mod layers;
mod lobby_limits;
mod login_limits;
mod media_workers;
mod metrics;
mod names;
mod native_client;
mod origin_and_links;
mod password_pool;
mod postgres;
mod session_end;
mod signaling;
mod signaling_authz;
mod slow_clients;
mod storage_faults;
