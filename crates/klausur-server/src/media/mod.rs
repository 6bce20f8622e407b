//! The media plane: media workers, each a thread with its own UDP port that owns the room
//! cores placed on it, and [`MediaHandle`], the handle the rest of the server talks to them
//! through.
//!
//! Imports nothing else of the crate: it sits below the meetings, which open rooms and place
//! peers through the handle. Split the way quinn splits its crates, one module per concern,
//! each looking only down:
//!
//! - [`handle`]: starts the workers, places each room on the least-loaded one and sends a
//!   room's commands to its worker (the signaling side; no packet passes here);
//! - [`worker`]: a worker's loop (`ppoll`, receive, route, drain the rooms, send; timers and
//!   commands), the rooms' cores, and its restart after a panic;
//! - [`demux`]: which room and peer a packet belongs to (ICE ufrag, then source address);
//! - [`socket`]: the socket layer, batched receive (`recvmmsg`, kernel receive times) and
//!   batched send (`sendmmsg` with UDP GSO);
//! - [`tcp`]: ICE-TCP connections, framed as RFC 4571, routed like datagrams;
//! - [`cmd`]: what the handle and the workers say to each other.
//!
//! # One port per worker
//!
//! `media.workers` workers (default: one per core) listen on consecutive ports from
//! `media.listen` (with port 0, each on a free port of its own). A room's peers are given its
//! worker's port in their ICE candidate, so the kernel delivers their packets straight to the
//! socket of the thread that owns the room: no packet crosses a thread between arrival and
//! forwarding, and nothing on the packet path takes a lock. One shared port with
//! `SO_REUSEPORT` would need a steering rule that knows each packet's room; the kernel spreads
//! by the source's address and port, which say nothing about the room (DTLS, SRTP and TURN
//! relays carry no room), so every worker would have to hand packets to the others. Firewalls
//! open the range of ports instead of one.
//!
//! A room is placed on the worker with the fewest peers (then the fewest rooms) when it opens
//! and stays there: a meeting's participants all meet on one worker, so forwarding within a
//! meeting never leaves the thread.

pub mod cmd;
pub mod demux;
pub mod handle;
pub mod socket;
pub mod tcp;
pub mod worker;

pub use cmd::{MediaCmd, MediaStats, RoomKey};
pub use handle::{start, MediaConfig, MediaHandle, MAX_WORKERS};
pub use socket::BATCH;
#[cfg(feature = "test-hooks")]
pub use worker::install_payload_recorder;
