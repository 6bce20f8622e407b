//! What the server says when the database cannot be written (a full volume, a read-only file or
//! directory, a failing disk: [`klausur_store::StoreError::Unwritable`]) or cannot be reached
//! at all (PostgreSQL down or restarting: [`klausur_store::StoreError::Unavailable`]).
//!
//! - **The user** gets a clear answer instead of "internal error": HTTP 503 with the code
//!   `storage_unavailable` and [`USER_MESSAGE`] for a write the storage cannot take, the code
//!   `database_unavailable` and [`UNREACHABLE_MESSAGE`] for any request (read or write) while
//!   the database cannot be reached, or the signaling error of the same code. The change did
//!   not happen (the database rolled it back, or never saw it), so trying again later is safe.
//! - **The operator** gets one ERROR line in the log naming the cause and what to do (on the
//!   engine the state is in: the data directory's volume for SQLite, the database server for
//!   PostgreSQL, which the line names by database, host and port, never the password), at most
//!   every [`REPORT_EVERY`] per kind while it lasts (with the number of requests refused since
//!   the last line), so a full disk or a stopped database does not also flood the log.
//!
//! The server keeps running and serves every meeting it can (while the storage is only
//! unwritable, reads keep working). Once the operator freed space, made the database writable
//! or PostgreSQL answers again, requests work again without a restart: the store's pool
//! replaces the connections the restart broke. When a database that could not be reached
//! answers again, the operator gets one line saying so, with how long it was away and how many
//! requests were refused meanwhile ([`watch_outage`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use klausur_store::{StorageFault, StoreError};

/// What a user is told when a change cannot be saved.
pub const USER_MESSAGE: &str = "The server cannot save changes right now (its storage is not \
     writable). Nothing was changed; please try again later. The operators have been told.";

/// What a user is told when the database cannot be reached (for a read or a write).
pub const UNREACHABLE_MESSAGE: &str = "The server cannot reach its database right now. Nothing \
     was changed; please try again in a moment. The operators have been told.";

/// How often the operator is told at most while the fault lasts.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Rate-limits the operator's lines about one kind of fault: at most one every
/// [`REPORT_EVERY`], counting the refusals in between.
struct Throttle {
    /// Milliseconds since [`epoch`] of the last report, plus one (0: never reported).
    last: AtomicU64,
    /// Requests refused since the last report.
    since: AtomicU64,
}

impl Throttle {
    const fn new() -> Self {
        Throttle {
            last: AtomicU64::new(0),
            since: AtomicU64::new(0),
        }
    }

    /// Counts a refusal; if a line is due, the number of refusals it reports.
    fn due(&self) -> Option<u64> {
        let now = u64::try_from(epoch().elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        self.due_at(now)
    }

    /// As new: the next refusal is reported at once.
    fn reset(&self) {
        self.last.store(0, Ordering::Relaxed);
        self.since.store(0, Ordering::Relaxed);
    }

    /// [`Throttle::due`] at `now` (milliseconds since [`epoch`], plus one).
    fn due_at(&self, now: u64) -> Option<u64> {
        let refused = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= REPORT_EVERY.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.since.store(0, Ordering::Relaxed);
            return Some(refused);
        }
        None
    }
}

/// Writes refused because the storage cannot take them.
static UNWRITABLE: Throttle = Throttle::new();
/// Requests refused because the database cannot be reached.
static UNREACHABLE: Throttle = Throttle::new();

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Whether the state is in PostgreSQL (set where the store is opened): the remedies differ.
static ON_POSTGRES: AtomicBool = AtomicBool::new(false);
/// Which PostgreSQL database (`database "x" at host:port`, never the password), for the log.
static POSTGRES_DATABASE: Mutex<String> = Mutex::new(String::new());

/// The PostgreSQL database's summary set by [`set_postgres`] (empty on SQLite).
fn postgres_database() -> String {
    POSTGRES_DATABASE
        .lock()
        .map(|name| name.clone())
        .unwrap_or_default()
}

/// Tells [`remedy`] and [`report_unreachable`] which engine the store runs on: PostgreSQL with
/// the database's summary ([`klausur_store::postgres_url_summary`]), or SQLite (`None`). The
/// server opens one store per process.
pub fn set_postgres(summary: Option<&str>) {
    ON_POSTGRES.store(summary.is_some(), Ordering::Relaxed);
    if let Ok(mut name) = POSTGRES_DATABASE.lock() {
        *name = summary.unwrap_or_default().to_owned();
    }
}

/// What the operator should do about `fault`, for the engine this process's store runs on.
pub fn remedy(fault: StorageFault) -> &'static str {
    remedy_for(fault, ON_POSTGRES.load(Ordering::Relaxed))
}

/// What the operator should do about `fault` on PostgreSQL (`postgres`) or SQLite.
pub fn remedy_for(fault: StorageFault, postgres: bool) -> &'static str {
    if postgres {
        return match fault {
            StorageFault::Full => "free space on the PostgreSQL server's data volume (see its log)",
            StorageFault::ReadOnly => {
                "the PostgreSQL database accepts no writes (a standby, or \
                 default_transaction_read_only): point klausur at the primary, or make it \
                 writable"
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

/// Writes refused because the storage cannot take them, and requests refused because the
/// database cannot be reached, since the start (for monitoring: [`refused_totals`]).
static REFUSED_UNWRITABLE: AtomicU64 = AtomicU64::new(0);
static REFUSED_UNREACHABLE: AtomicU64 = AtomicU64::new(0);

/// Since the start: writes refused because the storage could not take them, and requests
/// refused because the database could not be reached.
pub fn refused_totals() -> (u64, u64) {
    (
        REFUSED_UNWRITABLE.load(Ordering::Relaxed),
        REFUSED_UNREACHABLE.load(Ordering::Relaxed),
    )
}

/// Whether the database answers, as far as this process knows: false from the first request
/// refused because it could not be reached until [`watch_outage`] finds it answering again.
pub fn database_reachable() -> bool {
    OUTAGE.lock().map(|o| o.is_none()).unwrap_or(true)
}

/// Tells the operator that a write was refused because of `fault` (rate-limited, see the
/// module docs).
pub fn report(fault: StorageFault, error: &dyn std::fmt::Display) {
    REFUSED_UNWRITABLE.fetch_add(1, Ordering::Relaxed);
    if let Some(refused) = UNWRITABLE.due() {
        tracing::error!(
            refused_writes = refused,
            "the database cannot be written ({fault}): {error}; {}. Users are told to try \
             again later; nothing was half-written",
            remedy(fault)
        );
    }
}

/// When the database was first found unreachable in the outage now going on, and the requests
/// refused since; `None` while it answers.
static OUTAGE: Mutex<Option<(Instant, u64)>> = Mutex::new(None);

/// How often [`watch_outage`] asks a database that could not be reached whether it answers.
pub const OUTAGE_POLL: Duration = Duration::from_secs(1);

/// Counts a refusal in the current outage, which starts now if none is going on.
fn count_in_outage() {
    if let Ok(mut outage) = OUTAGE.lock() {
        outage.get_or_insert((Instant::now(), 0)).1 += 1;
    }
}

/// Watches for the end of an outage, for as long as the server runs: while one is going on,
/// asks `store` every [`OUTAGE_POLL`] whether it answers, and once it does tells the operator
/// (one line: how long it was away, how many requests were refused).
pub async fn watch_outage(store: klausur_store::Store) {
    loop {
        tokio::time::sleep(OUTAGE_POLL).await;
        let going_on = OUTAGE.lock().map(|o| o.is_some()).unwrap_or(false);
        if going_on && store.ping().await.is_ok() {
            if let Some((since, refused)) = OUTAGE.lock().ok().and_then(|mut o| o.take()) {
                let database = postgres_database();
                tracing::info!(
                    refused_requests = refused,
                    "{}",
                    answered_line(
                        ON_POSTGRES.load(Ordering::Relaxed),
                        &database,
                        since.elapsed(),
                        refused
                    )
                );
                // The next outage is reported at once, not only after the interval.
                UNREACHABLE.reset();
            }
        }
    }
}

/// The operator's line about a database that answers again after `away`, `refused` requests
/// having been refused meanwhile.
fn answered_line(postgres: bool, database: &str, away: Duration, refused: u64) -> String {
    let what = match postgres {
        true => format!("the PostgreSQL {database}"),
        false => "the SQLite database in the data directory".to_owned(),
    };
    format!(
        "{what} answers again, after {:.1} s; {refused} request{} refused meanwhile (nothing \
         of them was changed)",
        away.as_secs_f64(),
        if refused == 1 { " was" } else { "s were" }
    )
}

/// Tells the operator that a request was refused because the database cannot be reached
/// (rate-limited, see the module docs).
pub fn report_unreachable(error: &dyn std::fmt::Display) {
    REFUSED_UNREACHABLE.fetch_add(1, Ordering::Relaxed);
    count_in_outage();
    if let Some(refused) = UNREACHABLE.due() {
        let postgres = ON_POSTGRES.load(Ordering::Relaxed);
        let database = postgres_database();
        tracing::error!(
            refused_requests = refused,
            "{}",
            unreachable_line(postgres, &database, error)
        );
    }
}

/// The operator's line about a database that cannot be reached: on PostgreSQL `database` (its
/// summary), on SQLite the data directory's file.
fn unreachable_line(postgres: bool, database: &str, error: &dyn std::fmt::Display) -> String {
    if postgres {
        format!(
            "the PostgreSQL {database} cannot be reached ({error}): check that PostgreSQL is \
             running and reachable from this host (its log says why it stopped or is \
             restarting). Meanwhile users are told to try again in a moment and nothing is \
             changed; klausur connects again on its own once it answers, no restart needed"
        )
    } else {
        format!(
            "the SQLite database in the data directory did not answer in time ({error}): check \
             whether another process keeps it busy (a backup, a copy) and the system log. \
             Meanwhile users are told to try again in a moment and nothing is changed"
        )
    }
}

/// A store failure the meeting `meeting` met in the background (`what`, for example "lock state
/// not stored"): the meeting goes on with what it holds in memory; a storage fault or a
/// database that cannot be reached is reported as above, any other failure as a warning.
pub fn not_stored(meeting: &str, what: &str, e: &StoreError) {
    match e {
        StoreError::Unwritable(fault, cause) => report(*fault, cause),
        StoreError::Unavailable(cause) => report_unreachable(cause),
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
            for text in [sqlite, postgres] {
                assert!(!text.contains("  "), "a run of spaces: {text:?}");
            }
        }
        assert!(remedy_for(StorageFault::Full, false).contains("data directory"));
    }

    #[test]
    fn the_unreachable_line_names_the_database_and_what_to_do() {
        let summary = klausur_store::postgres_url_summary(
            "postgres://klausur:s3cret@db.example:5432/klausur",
        )
        .expect("summary");
        let line = unreachable_line(true, &summary, &"pool timed out");
        assert!(line.contains(&summary), "{line}");
        assert!(line.contains("db.example:5432"), "{line}");
        assert!(!line.contains("s3cret"), "{line}");
        assert!(line.contains("check that PostgreSQL is running"), "{line}");
        assert!(line.contains("no restart needed"), "{line}");
        let line = unreachable_line(false, "", &"pool timed out");
        assert!(!line.contains("PostgreSQL"), "{line}");
        assert!(line.contains("data directory"), "{line}");
    }

    #[test]
    fn the_line_after_an_outage_says_how_long_and_how_many_were_refused() {
        let line = answered_line(
            true,
            "database \"k\" at db.example:5432 as user \"k\"",
            Duration::from_millis(7_340),
            12,
        );
        assert!(
            line.contains("PostgreSQL database \"k\" at db.example:5432"),
            "{line}"
        );
        assert!(line.contains("answers again, after 7.3 s"), "{line}");
        assert!(line.contains("12 requests were refused"), "{line}");
        let line = answered_line(false, "", Duration::from_secs(2), 1);
        assert!(line.contains("SQLite"), "{line}");
        assert!(line.contains("1 request was refused"), "{line}");
    }

    #[test]
    fn a_lasting_fault_is_reported_once_per_interval_with_the_refusals_counted() {
        let every = REPORT_EVERY.as_millis() as u64;
        let throttle = Throttle::new();
        assert_eq!(throttle.due_at(1), Some(1), "the first refusal is reported");
        assert_eq!(throttle.due_at(2), None);
        assert_eq!(throttle.due_at(every), None);
        // Once the interval has passed, the next line counts the refusals since the last.
        assert_eq!(throttle.due_at(1 + every), Some(3));
        assert_eq!(throttle.due_at(2 + every), None);
    }
}
