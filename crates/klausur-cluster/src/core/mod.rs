//! The sans-IO core: names, node descriptions and loads, the placement rule, the lease's time
//! rules and state machine, and the keys and values in Redis. No Redis, no clock, no async:
//! time is an argument, results are values.

pub mod codec;
pub mod ids;
pub mod lease;
pub mod node;
pub mod placement;
