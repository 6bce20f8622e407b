//! Storage of klausur: user accounts, login sessions, meetings with their moderators,
//! personal invitations and the bans moderators impose.
//!
//! # Contract
//!
//! * **What is stored.** Users (username, display name, role, password hash, flags), login
//!   sessions (bound to a user, with a CSRF token and an expiry), meetings (title, optional
//!   start, organiser, [`SecurityProfile`](klausur_proto::SecurityProfile), end, whether a
//!   moderator locked it while it runs), the extra
//!   moderators of a meeting, invitations (one per invitee, with expiry, revocation and last
//!   use) and bans (a user or an invitation removed from a meeting by a moderator). For
//!   telephone dial-in: a meeting's dial-in number (unique among meetings) and the keyed hash
//!   of each invitee's phone PIN (unique within the meeting).
//! * **No secrets in the clear.** Passwords, session ids, invitation tokens and phone PINs
//!   reach the store only as hashes: the *caller* hashes them (argon2id for passwords, a
//!   cryptographic digest for session ids and tokens, a keyed hash for phone PINs) and looks
//!   rows up by the hash. The store never sees, logs or
//!   returns a secret in the clear. Hash fields are skipped when a type is serialised.
//! * **Time.** Timestamps are [`chrono::DateTime<Utc>`](chrono::DateTime) stored as integer
//!   unix milliseconds: anything finer than a millisecond is dropped on the way in. Operations
//!   that depend on the current time (session expiry, purging) take `now`/`at`/`cutoff`
//!   explicitly, so callers and tests control the clock; only `created_at` fields are stamped
//!   by the store itself.
//! * **Usernames** are unique regardless of case (compared after Unicode lower-casing) and keep
//!   the spelling they were created with.
//! * **Errors.** A write that would break a uniqueness rule (username taken, meeting id, token
//!   hash, dial-in number or phone PIN reused) is [`StoreError::Conflict`] (for the last two,
//!   [`StoreError::is_dial_in_number_taken`] and [`StoreError::is_phone_pin_taken`] say so: the
//!   caller draws another); an update of, or a reference to, a row that does
//!   not exist is [`StoreError::NotFound`]; look-ups return `Ok(None)` instead. A write the
//!   database cannot take (volume full, read-only, failing disk) is
//!   [`StoreError::Unwritable`] with its [`StorageFault`]: the database rolled it back,
//!   nothing is half-written. A database that cannot be reached right now (PostgreSQL down,
//!   restarting, or not answering within the pool's acquire timeout of a few seconds) is
//!   [`StoreError::Unavailable`], for reads and writes alike; the store connects again on its
//!   own once the server answers. Everything else is [`StoreError::Database`] or, on open,
//!   [`StoreError::Migrate`].
//! * **Authorisation is the caller's.** The store answers questions (`is_moderator`,
//!   `is_banned`, `colleague_invited`, the `disabled` flag of a session's user) but enforces
//!   none of them.
//!
//! # Backends
//!
//! SQLite ([`Store::open_sqlite`], [`Store::open_sqlite_memory`]): one file, no server, the
//! default. PostgreSQL ([`Store::open_postgres`] with a `postgres://` URL): for deployments
//! whose operators run it already, and for several nodes sharing one database. Both keep the
//! contract above alike, and one test suite (`tests/store.rs`, `tests/audit.rs`) runs against
//! each on a real engine. Every query is written once (`$n` placeholders, `RETURNING`,
//! `ON CONFLICT`, `EXISTS`, `COALESCE`); the few statements where the dialects differ (how
//! audit writers are serialised, the substring search) come from the backend's dialect in
//! `src/store.rs`. Each engine has its migrations (`migrations/sqlite`, `migrations/postgres`,
//! the same schema), embedded in the binary and run on open; running them again is a no-op.
//! Differences an operator may notice: SQLite-only maintenance ([`Store::checkpoint`],
//! [`Store::integrity_problems`]) does nothing on PostgreSQL; PostgreSQL refuses text with a
//! NUL character (a [`StoreError::Database`]), which SQLite stores.

pub mod audit;
mod error;
mod model;
mod store;

pub use audit::{Anchor, AuditActor, AuditRecord, NewAuditRecord};
pub use error::{StorageFault, StoreError};
pub use model::{
    BanSubject, GuestPass, Invitation, InvitationKind, Meeting, NewGuestPass, NewInvitation,
    PhonePin, Role, Session, User,
};
pub use store::{postgres_url_summary, AuditFilter, Store, AUDIT_PAGE_MAX};

/// Result type of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
