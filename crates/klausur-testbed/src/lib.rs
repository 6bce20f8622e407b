//! Throwaway engines for klausur's tests and its benchmark, each started by the calling process
//! on 127.0.0.1 and gone when it ends (a watchdog beside each engine kills it when the process
//! ends in any way, a SIGKILL included):
//!
//! - [`postgres`]: Debian's PostgreSQL as a throwaway cluster, a database per test (and the
//!   SQLite engines the store's tests run beside it);
//! - [`redis`]: Debian's `redis-server` without persistence, one per test, which a test may
//!   stop and start again on the same port.
//!
//! Without the engine installed a caller fails with how to install it (`./scripts/setup.sh
//! --with-browser`); nothing is ever skipped. Not part of any server build.

pub mod postgres;
pub mod redis;
