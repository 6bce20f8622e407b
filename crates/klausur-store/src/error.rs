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
        }
        StoreError::Database(e)
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
