//! Several klausur nodes on one Redis (issue 22, section 3): which nodes are alive and how
//! busy they are, and on which node each meeting runs.
//!
//! This crate owns the cluster's state in Redis and nothing else: node keys (a heartbeat with
//! a TTL, carrying the node's URL, media addresses and load) and one lease per running meeting
//! (an atomic `SET NX PX` naming the owning node, renewed while the meeting runs, expiring
//! with a dead node). It does not run meetings, relay signaling or redirect browsers; the
//! server does that with what this crate tells it. docs/cluster.md has the design.
//!
//! * [`core`] is sans-IO: ids, [`Node`] and [`Load`], [`choose_node`], the time rules
//!   ([`Timing`]) and the per-meeting [`LeaseTimer`] state machine, and the keys and values
//!   ([`core::codec`]), versioned JSON whose reader refuses what klausur did not write.
//!   No Redis, no clock, no async; time is an argument.
//! * [`driver`] is the Redis side: [`Cluster`] connects one node, publishes its heartbeat,
//!   lists live nodes, places, acquires, adopts, renews and releases leases. A Redis that
//!   cannot be reached is always [`Error::Unavailable`]; nothing read from Redis can panic.
//!
//! # Contract for the server that uses it
//!
//! * Call [`Cluster::heartbeat`] every [`Timing::heartbeat_every`] (and when the load changed
//!   much), [`Cluster::leave`] on an orderly shutdown.
//! * To open a meeting: [`Cluster::place`]. If the owner is this node, serve it (with the
//!   lease from the placement, or [`Cluster::adopt`] if another node placed it here); if it is
//!   another node, send the participant there.
//! * While serving: a [`LeaseTimer`] per meeting; [`LeaseTimer::poll`] says when to
//!   [`Cluster::renew_result`], and [`LeaseAction::Stop`] means stop serving the meeting now.
//!   When it ends: [`Cluster::release`].
//!
//! Single-node `klausur serve` (SQLite, no Redis) does not use this crate.

pub mod core;
pub mod driver;

pub use crate::core::codec::{DecodeError, Keys, LeaseRecord, NodeRecord};
pub use crate::core::ids::{IdError, MeetingId, NodeId};
pub use crate::core::lease::{
    LeaseAction, LeaseTimer, LossReason, RenewResult, Timing, TimingError,
};
pub use crate::core::node::{Load, Node, NodeError};
pub use crate::core::placement::choose_node;
pub use crate::driver::{check_url, Cluster, Error, Lease, Placement, Settings, UrlError};
