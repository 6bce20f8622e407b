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
    /// Any other failure of the database, including rows the store cannot decode.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Applying the embedded migrations failed on open.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    /// Maps constraint violations onto [`StoreError::Conflict`] (unique) and
    /// [`StoreError::NotFound`] (foreign key); everything else is [`StoreError::Database`].
    fn from(e: sqlx::Error) -> Self {
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
