//! Errors of the store.

/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row to update, or a row an insert refers to (user, meeting), does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule would be broken (username taken, meeting id or token hash reused).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be written right now: its volume is full, it or its directory is
    /// read-only (on PostgreSQL: the server is), or the disk fails. The write did not happen
    /// (the database rolled the transaction back); reads may still work, and writes work again
    /// once the operator fixed the cause.
    #[error("the database cannot be written ({0}): {1}")]
    Unwritable(StorageFault, #[source] sqlx::Error),
    /// The database cannot be reached right now: the PostgreSQL server refuses connections,
    /// closed the connection, is shutting down or starting up, or no connection could be had
    /// within the pool's acquire timeout. Neither reads nor writes
    /// work meanwhile; the pool connects again on its own once the server answers. A write
    /// refused so did not happen, except in the one case no client can tell apart: the
    /// connection broke while the server was committing it.
    #[error("the database cannot be reached: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Any other failure of the database, including rows the store cannot decode.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Applying the embedded migrations failed on open.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    /// Maps constraint violations onto [`StoreError::Conflict`] (unique) and
    /// [`StoreError::NotFound`] (foreign key), a database that cannot take writes onto
    /// [`StoreError::Unwritable`], one that cannot be reached onto [`StoreError::Unavailable`];
    /// everything else is [`StoreError::Database`]. The one place where the engines' error
    /// codes are read.
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            return StoreError::Unavailable(e);
        }
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                let what = db
                    .constraint()
                    .map_or_else(|| db.message().to_owned(), str::to_owned);
                return StoreError::Conflict(what);
            }
            if db.is_foreign_key_violation() {
                return StoreError::NotFound;
            }
            let fault = if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLite's primary result code is the low byte of the extended one.
                let primary = db
                    .code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .map(|c| c & 0xff);
                match primary {
                    Some(SQLITE_FULL) => Some(StorageFault::Full),
                    Some(SQLITE_READONLY) => Some(StorageFault::ReadOnly),
                    Some(SQLITE_IOERR) => Some(StorageFault::Io),
                    _ => None,
                }
            } else {
                // PostgreSQL's SQLSTATE codes are text, not numbers to mask.
                match db.code().as_deref() {
                    Some(PG_DISK_FULL) => Some(StorageFault::Full),
                    Some(PG_READ_ONLY_SQL_TRANSACTION) => Some(StorageFault::ReadOnly),
                    Some(PG_IO_ERROR) => Some(StorageFault::Io),
                    _ => None,
                }
            };
            if let Some(fault) = fault {
                return StoreError::Unwritable(fault, e);
            }
        }
        if let sqlx::Error::Io(io) = &e {
            if io.kind() == std::io::ErrorKind::StorageFull {
                return StoreError::Unwritable(StorageFault::Full, e);
            }
        }
        StoreError::Database(e)
    }
}

// SQLite's primary result codes (sqlite3.h).
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;

// PostgreSQL's SQLSTATE codes (Appendix A of its manual): a full volume, a server in read-only
// mode (a standby, `default_transaction_read_only`), a failing disk.
const PG_DISK_FULL: &str = "53100";
const PG_READ_ONLY_SQL_TRANSACTION: &str = "25006";
const PG_IO_ERROR: &str = "58030";

// PostgreSQL's SQLSTATE codes of a server that is going away or not there yet: the class of
// connection exceptions, and a shutdown (`pg_ctl stop`, the administrator's
// `pg_terminate_backend` included), a crash of another backend, a server still starting up or
// recovering.
const PG_CLASS_CONNECTION_EXCEPTION: &str = "08";
const PG_ADMIN_SHUTDOWN: &str = "57P01";
const PG_CRASH_SHUTDOWN: &str = "57P02";
const PG_CANNOT_CONNECT_NOW: &str = "57P03";

/// Whether `e` says the database cannot be reached right now (a [`StoreError::Unavailable`]),
/// rather than that it refused this one statement:
///
/// - no connection within the pool's acquire timeout (`PoolTimedOut`: the pool retries a
///   refused connection until then), on PostgreSQL a server that is down or overloaded, on
///   SQLite a database whose connections all stayed busy that long;
/// - a network error of the connection to PostgreSQL: refused, reset, aborted, closed
///   mid-reply (EOF, broken pipe), timed out, no route, or no unix socket (the server removed
///   it when it stopped). SQLite reports no errors of these kinds;
/// - PostgreSQL's SQLSTATE class 08 (connection exception) and 57P01, 57P02, 57P03 (shutting
///   down, crashed, starting up).
///
/// A full volume (`StorageFull`, 53100) is not among them: that is [`StoreError::Unwritable`].
pub(crate) fn is_unavailable(e: &sqlx::Error) -> bool {
    use std::io::ErrorKind as K;
    match e {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Io(io) => matches!(
            io.kind(),
            K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::NotConnected
                | K::BrokenPipe
                | K::UnexpectedEof
                | K::TimedOut
                | K::NotFound
                | K::AddrNotAvailable
                | K::HostUnreachable
                | K::NetworkUnreachable
                | K::NetworkDown
        ),
        sqlx::Error::Database(db)
            if db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some() =>
        {
            db.code().is_some_and(|c| pg_code_unavailable(&c))
        }
        _ => false,
    }
}

/// Whether PostgreSQL's SQLSTATE `code` says the server is going away or not there yet.
fn pg_code_unavailable(code: &str) -> bool {
    code.starts_with(PG_CLASS_CONNECTION_EXCEPTION)
        || [PG_ADMIN_SHUTDOWN, PG_CRASH_SHUTDOWN, PG_CANNOT_CONNECT_NOW].contains(&code)
}

/// Why the database cannot be written ([`StoreError::Unwritable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFault {
    /// The volume holding the database is full (SQLITE_FULL, ENOSPC; PostgreSQL's 53100).
    Full,
    /// The database file or its directory is read-only (SQLITE_READONLY); on PostgreSQL, the
    /// server or transaction is read-only (25006).
    ReadOnly,
    /// Reading or writing the disk failed (SQLITE_IOERR, PostgreSQL's 58030; also a full
    /// volume where SQLite cannot grow its shared-memory file).
    Io,
}

impl std::fmt::Display for StorageFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageFault::Full => "its volume is full",
            StorageFault::ReadOnly => "it is read-only",
            StorageFault::Io => "reading or writing its disk fails",
        })
    }
}

/// The [`StoreError::Conflict`] message of a dial-in number already in use.
pub(crate) const DIAL_IN_NUMBER_TAKEN: &str = "dial-in number taken";
/// The [`StoreError::Conflict`] message of a phone PIN already in use in the meeting.
pub(crate) const PHONE_PIN_TAKEN: &str = "phone PIN taken in this meeting";

impl StoreError {
    /// The dial-in number is another meeting's: draw another one.
    pub fn is_dial_in_number_taken(&self) -> bool {
        matches!(self, StoreError::Conflict(m) if m == DIAL_IN_NUMBER_TAKEN)
    }

    /// The phone PIN (its hash) is another invitation's of the same meeting: draw another one.
    pub fn is_phone_pin_taken(&self) -> bool {
        matches!(self, StoreError::Conflict(m) if m == PHONE_PIN_TAKEN)
    }

    /// A row in the database that the store cannot turn into its types.
    pub(crate) fn corrupt(what: String) -> Self {
        StoreError::Database(sqlx::Error::Decode(what.into()))
    }

    /// Replaces the message of a [`StoreError::Conflict`] with one meant for the caller.
    pub(crate) fn conflict_as(self, what: &str) -> Self {
        match self {
            StoreError::Conflict(_) => StoreError::Conflict(what.to_owned()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error as IoError, ErrorKind};

    fn io(kind: ErrorKind) -> sqlx::Error {
        sqlx::Error::Io(IoError::new(kind, "test"))
    }

    #[test]
    fn a_database_that_cannot_be_reached_is_told_apart_from_other_failures() {
        // The network errors of a PostgreSQL connection that is refused, broken or gone.
        for kind in [
            ErrorKind::ConnectionRefused,
            ErrorKind::ConnectionReset,
            ErrorKind::ConnectionAborted,
            ErrorKind::NotConnected,
            ErrorKind::BrokenPipe,
            ErrorKind::UnexpectedEof,
            ErrorKind::TimedOut,
            ErrorKind::NotFound,
            ErrorKind::HostUnreachable,
            ErrorKind::NetworkUnreachable,
        ] {
            let e = StoreError::from(io(kind));
            assert!(matches!(e, StoreError::Unavailable(_)), "{kind:?}: {e:?}");
        }
        let e = StoreError::from(sqlx::Error::PoolTimedOut);
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");

        // Negative control: other I/O errors, a full volume, a closed pool, a row that does
        // not decode and a refused configuration are not.
        for kind in [
            ErrorKind::InvalidData,
            ErrorKind::PermissionDenied,
            ErrorKind::OutOfMemory,
        ] {
            let e = StoreError::from(io(kind));
            assert!(matches!(e, StoreError::Database(_)), "{kind:?}: {e:?}");
        }
        let e = StoreError::from(io(ErrorKind::StorageFull));
        assert!(
            matches!(e, StoreError::Unwritable(StorageFault::Full, _)),
            "{e:?}"
        );
        for other in [
            sqlx::Error::PoolClosed,
            sqlx::Error::RowNotFound,
            sqlx::Error::Decode("bad".into()),
            sqlx::Error::Configuration("bad".into()),
            sqlx::Error::Protocol("bad".into()),
        ] {
            let e = StoreError::from(other);
            assert!(matches!(e, StoreError::Database(_)), "{e:?}");
        }
    }

    #[test]
    fn postgres_codes_of_a_server_going_away_or_not_there_yet_mean_unavailable() {
        for code in [
            "08000", // connection_exception
            "08003", // connection_does_not_exist
            "08006", // connection_failure
            "08001", // sqlclient_unable_to_establish_sqlconnection
            "57P01", // admin_shutdown
            "57P02", // crash_shutdown
            "57P03", // cannot_connect_now
        ] {
            assert!(pg_code_unavailable(code), "{code}");
        }
        // Negative control: a full disk, a read-only server, a failing disk, a unique or
        // foreign key violation, a statement cancelled, a dropped database, a syntax error.
        for code in [
            PG_DISK_FULL,
            PG_READ_ONLY_SQL_TRANSACTION,
            PG_IO_ERROR,
            "23505",
            "23503",
            "57014",
            "57P04",
            "42601",
        ] {
            assert!(!pg_code_unavailable(code), "{code}");
        }
    }
}
