//! What the server says when the database cannot be written (a full volume, a read-only file or
//! directory, a failing disk: [`klausur_store::StoreError::Unwritable`]).
//!
//! - **The user** gets a clear answer instead of "internal error": HTTP 503 with the code
//!   `storage_unavailable` and [`USER_MESSAGE`], or the signaling error of the same code. The
//!   write did not happen (the database rolled it back), so trying again later is safe.
//! - **The operator** gets one ERROR line in the log naming the cause and what to do (on the
//!   engine the state is in: the data directory's volume for SQLite, the database server for
//!   PostgreSQL), at most
//!   every [`REPORT_EVERY`] while it lasts (with the number of writes refused since the last
//!   line), so a full disk does not also flood the log.
//!
//! Reads keep working; the server keeps running and serves every meeting it can. Once the
//! operator freed space or made the database writable, writes work again without a restart.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use klausur_store::{StorageFault, StoreError};

/// What a user is told when a change cannot be saved.
pub const USER_MESSAGE: &str = "The server cannot save changes right now (its storage is not \
     writable). Nothing was changed; please try again later. The operators have been told.";

/// How often the operator is told at most while the fault lasts.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Milliseconds since [`epoch`] of the last report, plus one (0: never reported).
static LAST_REPORT: AtomicU64 = AtomicU64::new(0);
/// Writes refused since the last report.
static SINCE_REPORT: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Whether the state is in PostgreSQL (set where the store is opened): the remedies differ.
static ON_POSTGRES: AtomicBool = AtomicBool::new(false);

/// Tells [`remedy`] which engine the store runs on (the server opens one store per process).
pub fn set_postgres(on: bool) {
    ON_POSTGRES.store(on, Ordering::Relaxed);
}

/// What the operator should do about `fault`, for the engine this process's store runs on.
pub fn remedy(fault: StorageFault) -> &'static str {
    remedy_for(fault, ON_POSTGRES.load(Ordering::Relaxed))
}

/// What the operator should do about `fault` on PostgreSQL (`postgres`) or SQLite.
pub fn remedy_for(fault: StorageFault, postgres: bool) -> &'static str {
    if postgres {
        return match fault {
            StorageFault::Full => {
                "free space on the PostgreSQL server's data volume (see its log)"
            }
            StorageFault::ReadOnly => {
                "the PostgreSQL database accepts no writes (a standby, or                  default_transaction_read_only): point klausur at the primary, or make it                  writable"
            }
            StorageFault::Io => "check the PostgreSQL server's log and its disk",
        };
    }
    match fault {
        StorageFault::Full => "free space on the volume of the data directory",
        StorageFault::ReadOnly => {
            "make the database file, its -wal and -shm files and the data directory writable \
             for the server's user (or remount the volume read-write)"
        }
        // SQLite reports a full volume as an I/O error where it cannot grow its shared-memory
        // file, so both causes are named.
        StorageFault::Io => {
            "free space on the volume of the data directory if it is full, else check the disk \
             and the system log for I/O errors"
        }
    }
}

/// Tells the operator that a write was refused because of `fault` (rate-limited, see the
/// module docs).
pub fn report(fault: StorageFault, error: &dyn std::fmt::Display) {
    let now = u64::try_from(epoch().elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let refused = SINCE_REPORT.fetch_add(1, Ordering::Relaxed) + 1;
    let last = LAST_REPORT.load(Ordering::Relaxed);
    let due = last == 0 || now.saturating_sub(last) >= REPORT_EVERY.as_millis() as u64;
    if due
        && LAST_REPORT
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        SINCE_REPORT.store(0, Ordering::Relaxed);
        tracing::error!(
            refused_writes = refused,
            "the database cannot be written ({fault}): {error}; {}. Users are told to try \
             again later; nothing was half-written",
            remedy(fault)
        );
    }
}

/// A write of the meeting `meeting` that failed (`what`, for example "lock state not stored"):
/// the meeting goes on with what it holds in memory; a storage fault is reported as above, any
/// other failure as a warning.
pub fn not_stored(meeting: &str, what: &str, e: &StoreError) {
    match e {
        StoreError::Unwritable(fault, cause) => report(*fault, cause),
        other => tracing::warn!(meeting, "{what}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remedy_names_the_engine_the_state_is_in() {
        for fault in [StorageFault::Full, StorageFault::ReadOnly, StorageFault::Io] {
            let sqlite = remedy_for(fault, false);
            let postgres = remedy_for(fault, true);
            assert!(!sqlite.contains("PostgreSQL"), "{sqlite}");
            assert!(postgres.contains("PostgreSQL"), "{postgres}");
            assert!(!postgres.contains("data directory"), "{postgres}");
        }
        assert!(remedy_for(StorageFault::Full, false).contains("data directory"));
    }
}
