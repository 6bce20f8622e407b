//! The [`Store`] and its queries.
//!
//! Every query is written once, with `$n` placeholders in the SQL both engines speak, and run
//! through [`on_pool!`], which expands the body once per backend (SQLite, PostgreSQL). Where the
//! dialects really differ, the statement comes from the backend's [`Dialect`], which says why.
//! Each backend has its migrations directory (`migrations/sqlite`, `migrations/postgres`) with
//! the same schema; a change to the schema is a new migration in both.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use klausur_proto::SecurityProfile;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, PgPool, SqlitePool};

use crate::error::{DIAL_IN_NUMBER_TAKEN, PHONE_PIN_TAKEN};
use crate::model::{parse_profile, profile_str};
use crate::{
    BanSubject, GuestPass, Invitation, InvitationKind, Meeting, NewGuestPass, NewInvitation,
    PhonePin, Role, Session, StoreError, User,
};

type Result<T, E = StoreError> = std::result::Result<T, E>;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections a PostgreSQL store keeps open at most.
const POSTGRES_MAX_CONNECTIONS: u32 = 10;
/// How long a query waits for a free (or new) PostgreSQL connection before it fails with
/// [`StoreError::Unavailable`]. While the server is down the pool retries the connection until
/// then, so this is how long a request takes to be refused: short, so that users get a clear
/// answer instead of a request that hangs, long enough for a server that restarts quickly (or
/// a pool that is busy for a moment) not to refuse anything.
const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// An operation this store refuses to do (its engine does not do it, or the input does not
/// allow it): `why` says which.
fn refused(why: String) -> StoreError {
    StoreError::Database(sqlx::Error::Configuration(why.into()))
}

/// The database behind a [`Store`].
#[derive(Debug, Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's pool (expanded once per backend).
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

/// The statements that differ between the engines; everything else is shared.
struct Dialect {
    /// Starts a transaction that writes the audit trail (one writer at a time).
    begin_audit_write: &'static str,
    /// Run first in that transaction, if the engine needs it to serialise the writers.
    lock_audit: Option<&'static str>,
    /// The function `f(haystack, needle)` giving the 1-based position of `needle` in
    /// `haystack`, 0 if it is not there.
    position: &'static str,
}

/// SQLite: `BEGIN IMMEDIATE` takes the database's write lock at once (a plain `BEGIN` would
/// take it at the first write, after the read of the chain's end, and two writers could chain
/// to the same record). Its position function is `instr`.
const SQLITE: Dialect = Dialect {
    begin_audit_write: "BEGIN IMMEDIATE",
    lock_audit: None,
    position: "instr",
};

/// PostgreSQL: rows are locked, not the database, so audit writers lock the trail's table in a
/// mode that conflicts with itself but not with readers (`EXCLUSIVE`); under READ COMMITTED the
/// read of the chain's end that follows sees the previous writer's commit. PostgreSQL has no
/// `instr`; `strpos` takes the same arguments.
const POSTGRES: Dialect = Dialect {
    begin_audit_write: "BEGIN",
    lock_audit: Some("LOCK TABLE audit_records IN EXCLUSIVE MODE"),
    position: "strpos",
};

mod audit;
mod copy;
pub use audit::{AuditFilter, AUDIT_PAGE_MAX};

/// Handle to the database. Cheap to clone (it shares the connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

const USER_COLUMNS: &str =
    "id, username, display_name, role, password_hash, must_change_password, disabled, created_at";
const SESSION_COLUMNS: &str = "id_hash, user_id, csrf_token, created_at, expires_at";
const MEETING_COLUMNS: &str =
    "id, title, starts_at, organiser_id, profile, created_at, ended_at, dial_in_number";
const GUEST_PASS_COLUMNS: &str = "id, meeting_id, display_name, admitted_by, admitter_kind, \
     admitter_id, moderator, muted, created_at, expires_at";
const INVITATION_COLUMNS: &str = "id, meeting_id, token_hash, name, kind, user_id, created_by, \
     created_at, expires_at, revoked_at, last_used_at, phone_pin_hash";

impl Store {
    /// Opens (creating if missing) the SQLite database at `path` in WAL mode with foreign keys
    /// enforced, and applies the embedded migrations.
    pub async fn open_sqlite(path: &Path) -> Result<Store> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Self::from_sqlite_pool(pool).await
    }

    /// Opens a fresh, private in-memory SQLite database (for tests). It lives as long as the
    /// store (one connection that is never recycled).
    pub async fn open_sqlite_memory() -> Result<Store> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Self::from_sqlite_pool(pool).await
    }

    async fn from_sqlite_pool(pool: SqlitePool) -> Result<Store> {
        SQLITE_MIGRATIONS.run(&pool).await?;
        Ok(Store {
            backend: Backend::Sqlite(pool),
        })
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://user:password@host:port/db`,
    /// or a unix socket directory as `postgres:///db?host=/run/postgresql`; the `PG*`
    /// environment variables and `~/.pgpass` fill in what the URL leaves out) and applies the
    /// embedded migrations. The database and its role must exist; the role must be allowed
    /// to create tables in it. A URL that does not parse, or a server that cannot be reached
    /// or refuses the login, is an error at once, naming the cause (never the password).
    ///
    /// Once open, the store outlives the server's restarts: while PostgreSQL cannot be
    /// reached, every operation fails within a few seconds with [`StoreError::Unavailable`]
    /// (and changes nothing); once it answers again, operations succeed.
    pub async fn open_postgres(url: &str) -> Result<Store> {
        let options = PgConnectOptions::from_str(url)?;
        // One connection first: its error says what is wrong (refused, no such database, wrong
        // password), where the pool would retry until its timeout and say only that.
        options.connect().await?.close().await?;
        // Connections are made on demand and checked before each use (a ping), so after the
        // server restarted, the broken ones are dropped and new ones made: the store works
        // again on its own once the server answers, without a restart of klausur.
        let pool = PgPoolOptions::new()
            .max_connections(POSTGRES_MAX_CONNECTIONS)
            .acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT)
            .test_before_acquire(true)
            .connect_lazy_with(options);
        POSTGRES_MIGRATIONS.run(&pool).await?;
        Ok(Store {
            backend: Backend::Postgres(pool),
        })
    }

    /// The statements of this store's engine that differ from the other's.
    fn dialect(&self) -> &'static Dialect {
        match self.backend {
            Backend::Sqlite(_) => &SQLITE,
            Backend::Postgres(_) => &POSTGRES,
        }
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }

    // ----- users -----

    /// Creates an account. [`StoreError::Conflict`] if the username is taken in any case.
    pub async fn create_user(
        &self,
        username: &str,
        display_name: &str,
        password_hash: &str,
        role: Role,
        must_change_password: bool,
    ) -> Result<User> {
        let sql = format!(
            "INSERT INTO users (username, username_key, display_name, role, password_hash, \
             must_change_password, disabled, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {USER_COLUMNS}"
        );
        let row: rows::User = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(username)
            .bind(username_key(username))
            .bind(display_name)
            .bind(role.as_str())
            .bind(password_hash)
            .bind(must_change_password)
            .bind(false)
            .bind(now_ms())
            .fetch_all(pool)
            .await
            .and_then(the_row))
        .map_err(|e| StoreError::from(e).conflict_as("username taken"))?;
        row.try_into()
    }

    /// The account with this id.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row: Option<rows::User> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// The account with this username, in any case.
    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username_key = $1");
        let key = username_key(username);
        let row: Option<rows::User> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(&key)
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// All accounts, by username.
    pub async fn list_users(&self) -> Result<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY username_key");
        let rows: Vec<rows::User> =
            on_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Replaces the password hash. [`StoreError::NotFound`] if there is no such user.
    pub async fn set_password(
        &self,
        user_id: i64,
        password_hash: &str,
        must_change_password: bool,
    ) -> Result<()> {
        let sql = "UPDATE users SET password_hash = $2, must_change_password = $3 WHERE id = $1";
        let done = on_pool!(self, |pool| sqlx::query(sql)
            .bind(user_id)
            .bind(password_hash)
            .bind(must_change_password)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        found(done)
    }

    /// A user's own password change, in one transaction: the new hash (no longer to be
    /// changed), and every session of the user but `keep_session` (the one that knew the old
    /// password) ended. Either all of it is stored or none. [`StoreError::NotFound`] if there is
    /// no such user.
    pub async fn change_password(
        &self,
        user_id: i64,
        password_hash: &str,
        keep_session: &str,
    ) -> Result<()> {
        let update = "UPDATE users SET password_hash = $2, must_change_password = $3 WHERE id = $1";
        let others = "DELETE FROM sessions WHERE user_id = $1 AND id_hash <> $2";
        let updated = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(update)
                .bind(user_id)
                .bind(password_hash)
                .bind(false)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                0
            } else {
                sqlx::query(others)
                    .bind(user_id)
                    .bind(keep_session)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                done.rows_affected()
            }
        });
        found(updated)
    }

    /// Disables or re-enables an account. [`StoreError::NotFound`] if there is no such user.
    /// Does not end the user's sessions: see [`Store::delete_sessions_of_user`].
    pub async fn set_user_disabled(&self, user_id: i64, disabled: bool) -> Result<()> {
        let sql = "UPDATE users SET disabled = $2 WHERE id = $1";
        let done = on_pool!(self, |pool| sqlx::query(sql)
            .bind(user_id)
            .bind(disabled)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        found(done)
    }

    /// How many administrators are not disabled.
    pub async fn count_admins(&self) -> Result<i64> {
        let sql = "SELECT COUNT(*) FROM users WHERE role = $1 AND disabled = $2";
        let n: i64 = on_pool!(self, |pool| sqlx::query_scalar(sql)
            .bind(Role::Admin.as_str())
            .bind(false)
            .fetch_one(pool)
            .await)?;
        Ok(n)
    }

    // ----- sessions -----

    /// Stores a session for `user_id`. [`StoreError::NotFound`] if there is no such user,
    /// [`StoreError::Conflict`] if the id hash is already in use.
    pub async fn create_session(
        &self,
        id_hash: &str,
        user_id: i64,
        csrf_token: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<Session> {
        let sql = format!(
            "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {SESSION_COLUMNS}"
        );
        let row: rows::Session = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(id_hash)
            .bind(user_id)
            .bind(csrf_token)
            .bind(now_ms())
            .bind(expires_at.timestamp_millis())
            .fetch_all(pool)
            .await
            .and_then(the_row))
        .map_err(|e| StoreError::from(e).conflict_as("session id in use"))?;
        row.try_into()
    }

    /// The session with this id hash and its user, if it has not expired at `now`
    /// (`expires_at > now`). The caller checks [`User::disabled`].
    pub async fn session_with_user(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(Session, User)>> {
        let sql = "SELECT s.id_hash, s.user_id, s.csrf_token, s.created_at AS s_created_at, \
             s.expires_at, u.username, u.display_name, u.role, u.password_hash, \
             u.must_change_password, u.disabled, u.created_at AS u_created_at \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id_hash = $1 AND s.expires_at > $2";
        let row: Option<rows::SessionUser> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(id_hash)
            .bind(now.timestamp_millis())
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// Ends a session (no error if there is none).
    pub async fn delete_session(&self, id_hash: &str) -> Result<()> {
        let sql = "DELETE FROM sessions WHERE id_hash = $1";
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(id_hash)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        Ok(())
    }

    /// Ends every session of a user (no error if there are none).
    pub async fn delete_sessions_of_user(&self, user_id: i64) -> Result<()> {
        let sql = "DELETE FROM sessions WHERE user_id = $1";
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(user_id)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        Ok(())
    }

    /// Deletes the sessions expired at `now` (`expires_at <= now`); returns how many.
    pub async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
        let sql = "DELETE FROM sessions WHERE expires_at <= $1";
        let done = on_pool!(self, |pool| sqlx::query(sql)
            .bind(now.timestamp_millis())
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        Ok(done)
    }

    // ----- meetings -----

    /// Creates a meeting. [`StoreError::Conflict`] if the id is taken, [`StoreError::NotFound`]
    /// if there is no such organiser.
    pub async fn create_meeting(
        &self,
        id: &str,
        title: &str,
        starts_at: Option<DateTime<Utc>>,
        organiser_id: i64,
        profile: SecurityProfile,
    ) -> Result<Meeting> {
        self.insert_meeting(id, title, starts_at, organiser_id, profile, None)
            .await
    }

    /// Creates a meeting that telephone callers reach with `dial_in_number` (the caller draws
    /// it). [`StoreError::Conflict`] if the id is taken or the number is another meeting's (then
    /// [`StoreError::is_dial_in_number_taken`]: draw another), [`StoreError::NotFound`] if
    /// there is no such organiser.
    pub async fn create_meeting_with_dial_in_number(
        &self,
        id: &str,
        title: &str,
        starts_at: Option<DateTime<Utc>>,
        organiser_id: i64,
        profile: SecurityProfile,
        dial_in_number: &str,
    ) -> Result<Meeting> {
        self.insert_meeting(
            id,
            title,
            starts_at,
            organiser_id,
            profile,
            Some(dial_in_number),
        )
        .await
    }

    async fn insert_meeting(
        &self,
        id: &str,
        title: &str,
        starts_at: Option<DateTime<Utc>>,
        organiser_id: i64,
        profile: SecurityProfile,
        dial_in_number: Option<&str>,
    ) -> Result<Meeting> {
        let sql = format!(
            "INSERT INTO meetings (id, title, starts_at, organiser_id, profile, created_at, \
             ended_at, dial_in_number) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7) \
             RETURNING {MEETING_COLUMNS}"
        );
        let inserted: Result<rows::Meeting, sqlx::Error> =
            on_pool!(self, |pool| sqlx::query_as(&sql)
                .bind(id)
                .bind(title)
                .bind(starts_at.map(|t| t.timestamp_millis()))
                .bind(organiser_id)
                .bind(profile_str(profile))
                .bind(now_ms())
                .bind(dial_in_number)
                .fetch_all(pool)
                .await
                .and_then(the_row));
        match inserted.map_err(StoreError::from) {
            Ok(row) => row.try_into(),
            // Which rule was broken: the id is the primary key; anything else is the number.
            Err(StoreError::Conflict(_)) => {
                if dial_in_number.is_some() && self.meeting(id).await?.is_none() {
                    Err(StoreError::Conflict(DIAL_IN_NUMBER_TAKEN.to_owned()))
                } else {
                    Err(StoreError::Conflict("meeting id taken".to_owned()))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The meeting telephone callers reach with this dial-in number, ended or not.
    pub async fn meeting_by_dial_in_number(&self, number: &str) -> Result<Option<Meeting>> {
        let sql = format!("SELECT {MEETING_COLUMNS} FROM meetings WHERE dial_in_number = $1");
        let row: Option<rows::Meeting> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(number)
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// The meeting with this id.
    pub async fn meeting(&self, id: &str) -> Result<Option<Meeting>> {
        let sql = format!("SELECT {MEETING_COLUMNS} FROM meetings WHERE id = $1");
        let row: Option<rows::Meeting> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// The meetings `user_id` organises or moderates, newest first.
    pub async fn list_meetings_for(&self, user_id: i64) -> Result<Vec<Meeting>> {
        let sql = format!(
            "SELECT {MEETING_COLUMNS} FROM meetings m \
             WHERE m.organiser_id = $1 OR EXISTS (SELECT 1 FROM meeting_moderators mm \
             WHERE mm.meeting_id = m.id AND mm.user_id = $1) \
             ORDER BY m.created_at DESC, m.id"
        );
        let rows: Vec<rows::Meeting> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(user_id)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// The schema migrations applied to this database, oldest first: (version, description).
    /// Opening a store applies those it lacks, so this lists every migration of this release
    /// (and of a later one, if a newer klausur opened it before).
    pub async fn applied_migrations(&self) -> Result<Vec<(i64, String)>> {
        let sql = "SELECT version, description FROM _sqlx_migrations WHERE success \
                   ORDER BY version";
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, (i64, String)>(
            sql
        )
        .fetch_all(pool)
        .await)?)
    }

    /// Writes a consistent copy of the whole SQLite database to `dest` (`VACUUM INTO`: one
    /// read transaction, so the server may keep running and writing meanwhile; the copy is
    /// compacted and has no write-ahead log). `dest` must not exist. Restoring is copying the
    /// file back as `klausur.sqlite3` into an empty data directory (or over the old one, with
    /// the server stopped). On PostgreSQL this is an error that names the engine's own tools
    /// (`pg_dump` / `pg_restore`, docs/operations.md).
    pub async fn backup_sqlite(&self, dest: &Path) -> Result<()> {
        let Backend::Sqlite(pool) = &self.backend else {
            return Err(refused(
                "a PostgreSQL store is backed up with pg_dump (docs/operations.md, Backup)".into(),
            ));
        };
        let Some(dest) = dest.to_str() else {
            return Err(refused(format!(
                "the backup path {} is not valid UTF-8",
                dest.display()
            )));
        };
        sqlx::query("VACUUM INTO $1")
            .bind(dest)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Copies the write-ahead log into the database file and empties it
    /// (`PRAGMA wal_checkpoint(TRUNCATE)`, waiting up to the busy timeout for readers and
    /// writers). SQLite's own checkpoints after commits were seen never to reset the log while
    /// the pool's connections take turns, so it grew by every write until the disk was full; the
    /// server calls this periodically. Returns whether the log is now empty (false: a reader was
    /// still using it; the next call tries again). A no-op for a database without a log, and on
    /// PostgreSQL, which checkpoints and recycles its own write-ahead log (returns true).
    pub async fn checkpoint(&self) -> Result<bool> {
        let Backend::Sqlite(pool) = &self.backend else {
            return Ok(true);
        };
        let row: (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(pool)
            .await?;
        Ok(row.0 == 0)
    }

    /// Whether the database answers now (one trivial query): `Ok` if it does, else why not
    /// ([`StoreError::Unavailable`] while PostgreSQL cannot be reached).
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// SQLite's check of the whole database file (`PRAGMA integrity_check`): the problems it
    /// finds, none for a sound database. On PostgreSQL there is no such check from a client
    /// without extensions (its operator has `pg_amcheck` and data checksums): none are reported.
    pub async fn integrity_problems(&self) -> Result<Vec<String>> {
        let Backend::Sqlite(pool) = &self.backend else {
            return Ok(Vec::new());
        };
        let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(pool)
            .await?;
        Ok(rows.into_iter().filter(|r| r != "ok").collect())
    }

    /// Every meeting, newest first.
    pub async fn list_all_meetings(&self) -> Result<Vec<Meeting>> {
        let sql = format!("SELECT {MEETING_COLUMNS} FROM meetings ORDER BY created_at DESC, id");
        let rows: Vec<rows::Meeting> =
            on_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Makes `user_id` a moderator of the meeting (no error if they already are).
    /// [`StoreError::NotFound`] if the meeting or the user does not exist.
    pub async fn add_moderator(&self, meeting_id: &str, user_id: i64) -> Result<()> {
        let sql = "INSERT INTO meeting_moderators (meeting_id, user_id) VALUES ($1, $2) \
                   ON CONFLICT DO NOTHING";
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(meeting_id)
            .bind(user_id)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        Ok(())
    }

    /// Removes `user_id` from the meeting's moderators (no error if they were not one).
    /// The organiser stays a moderator regardless.
    pub async fn remove_moderator(&self, meeting_id: &str, user_id: i64) -> Result<()> {
        let sql = "DELETE FROM meeting_moderators WHERE meeting_id = $1 AND user_id = $2";
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(meeting_id)
            .bind(user_id)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        Ok(())
    }

    /// The moderators added to the meeting, by username. The organiser is not listed (unless
    /// added explicitly) but is a moderator all the same: see [`Store::is_moderator`].
    pub async fn moderators(&self, meeting_id: &str) -> Result<Vec<User>> {
        let sql = "SELECT u.id, u.username, u.display_name, u.role, u.password_hash, \
                   u.must_change_password, u.disabled, u.created_at \
                   FROM meeting_moderators mm JOIN users u ON u.id = mm.user_id \
                   WHERE mm.meeting_id = $1 ORDER BY u.username_key";
        let rows: Vec<rows::User> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(meeting_id)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Whether `user_id` organises or moderates the meeting (false if there is no meeting).
    pub async fn is_moderator(&self, meeting_id: &str, user_id: i64) -> Result<bool> {
        let sql = "SELECT EXISTS (SELECT 1 FROM meetings WHERE id = $1 AND organiser_id = $2) \
                   OR EXISTS (SELECT 1 FROM meeting_moderators \
                   WHERE meeting_id = $1 AND user_id = $2)";
        let yes: bool = on_pool!(self, |pool| sqlx::query_scalar(sql)
            .bind(meeting_id)
            .bind(user_id)
            .fetch_one(pool)
            .await)?;
        Ok(yes)
    }

    /// Records that the meeting ended at `at`. [`StoreError::NotFound`] if there is no meeting.
    pub async fn set_meeting_ended(&self, meeting_id: &str, at: DateTime<Utc>) -> Result<()> {
        let sql = "UPDATE meetings SET ended_at = $2 WHERE id = $1";
        let done = on_pool!(self, |pool| sqlx::query(sql)
            .bind(meeting_id)
            .bind(at.timestamp_millis())
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        found(done)
    }

    /// Records whether a moderator locked the running meeting, so that a restart keeps the lock.
    /// [`StoreError::NotFound`] if there is no meeting.
    pub async fn set_meeting_locked(&self, meeting_id: &str, locked: bool) -> Result<()> {
        let sql = "UPDATE meetings SET locked = $2 WHERE id = $1";
        let done = on_pool!(self, |pool| sqlx::query(sql)
            .bind(meeting_id)
            .bind(locked)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        found(done)
    }

    /// Whether the meeting is locked (see [`Store::set_meeting_locked`]); false if there is no
    /// meeting.
    pub async fn meeting_locked(&self, meeting_id: &str) -> Result<bool> {
        let sql = "SELECT COALESCE((SELECT locked FROM meetings WHERE id = $1), FALSE)";
        let locked: bool = on_pool!(self, |pool| sqlx::query_scalar(sql)
            .bind(meeting_id)
            .fetch_one(pool)
            .await)?;
        Ok(locked)
    }

    // ----- invitations -----

    /// Stores an invitation. [`StoreError::Conflict`] if the token hash is already in use or
    /// the phone PIN hash is another invitation's of the same meeting (then
    /// [`StoreError::is_phone_pin_taken`]: draw another PIN), [`StoreError::NotFound`] if the
    /// meeting or a referenced user does not exist.
    pub async fn create_invitation(&self, new: NewInvitation) -> Result<Invitation> {
        let sql = format!(
            "INSERT INTO invitations (meeting_id, token_hash, name, kind, user_id, created_by, \
             created_at, expires_at, revoked_at, last_used_at, phone_pin_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, $9) \
             RETURNING {INVITATION_COLUMNS}"
        );
        let inserted: Result<rows::Invitation, sqlx::Error> =
            on_pool!(self, |pool| sqlx::query_as(&sql)
                .bind(&new.meeting_id)
                .bind(&new.token_hash)
                .bind(&new.name)
                .bind(new.kind.as_str())
                .bind(new.user_id)
                .bind(new.created_by)
                .bind(now_ms())
                .bind(new.expires_at.timestamp_millis())
                .bind(&new.phone_pin_hash)
                .fetch_all(pool)
                .await
                .and_then(the_row));
        match inserted.map_err(StoreError::from) {
            Ok(row) => row.try_into(),
            // Which rule was broken: the token hash is unique everywhere; else it is the PIN.
            Err(StoreError::Conflict(_)) => {
                if new.phone_pin_hash.is_some()
                    && self
                        .invitation_by_token_hash(&new.token_hash)
                        .await?
                        .is_none()
                {
                    Err(StoreError::Conflict(PHONE_PIN_TAKEN.to_owned()))
                } else {
                    Err(StoreError::Conflict("token hash in use".to_owned()))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The phone PINs (as stored: their keyed hashes) of the meeting's invitations that admit a
    /// caller at `now`: not revoked and not expired (`expires_at > now`). Whether the meeting
    /// itself is open to callers (its start, its end, its profile) is the caller's to check.
    pub async fn valid_phone_pins(
        &self,
        meeting_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<PhonePin>> {
        let sql = "SELECT id, phone_pin_hash FROM invitations WHERE meeting_id = $1 \
                   AND phone_pin_hash IS NOT NULL AND revoked_at IS NULL AND expires_at > $2 \
                   ORDER BY id";
        let rows: Vec<(i64, String)> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(meeting_id)
            .bind(now.timestamp_millis())
            .fetch_all(pool)
            .await)?;
        Ok(rows
            .into_iter()
            .map(|(invitation_id, pin_hash)| PhonePin {
                invitation_id,
                pin_hash,
            })
            .collect())
    }

    /// The invitation whose token has this hash, revoked or expired ones included: the caller
    /// checks [`Invitation::revoked_at`] and [`Invitation::expires_at`].
    pub async fn invitation_by_token_hash(&self, token_hash: &str) -> Result<Option<Invitation>> {
        let sql = format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE token_hash = $1");
        let row: Option<rows::Invitation> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(token_hash)
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// The invitation with this id.
    pub async fn invitation(&self, id: i64) -> Result<Option<Invitation>> {
        let sql = format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE id = $1");
        let row: Option<rows::Invitation> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// The meeting's invitations, oldest first.
    pub async fn list_invitations(&self, meeting_id: &str) -> Result<Vec<Invitation>> {
        let sql = format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations WHERE meeting_id = $1 \
             ORDER BY created_at, id"
        );
        let rows: Vec<rows::Invitation> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(meeting_id)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Revokes invitation `id` of the meeting at `at`; revoking again keeps the first time.
    /// [`StoreError::NotFound`] if the meeting has no such invitation.
    pub async fn revoke_invitation(
        &self,
        meeting_id: &str,
        id: i64,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let sql = "UPDATE invitations SET revoked_at = COALESCE(revoked_at, $3) \
                   WHERE id = $1 AND meeting_id = $2";
        let done = on_pool!(self, |pool| sqlx::query(sql)
            .bind(id)
            .bind(meeting_id)
            .bind(at.timestamp_millis())
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        found(done)
    }

    /// Records that the invitation was used at `at`. [`StoreError::NotFound`] if there is none.
    pub async fn mark_invitation_used(&self, id: i64, at: DateTime<Utc>) -> Result<()> {
        let sql = "UPDATE invitations SET last_used_at = $2 WHERE id = $1";
        let done = on_pool!(self, |pool| sqlx::query(sql)
            .bind(id)
            .bind(at.timestamp_millis())
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        found(done)
    }

    /// Whether the meeting has a colleague invitation for `user_id` that is not revoked
    /// (expiry is not considered).
    pub async fn colleague_invited(&self, meeting_id: &str, user_id: i64) -> Result<bool> {
        let sql = "SELECT EXISTS (SELECT 1 FROM invitations WHERE meeting_id = $1 \
                   AND user_id = $2 AND kind = $3 AND revoked_at IS NULL)";
        let yes: bool = on_pool!(self, |pool| sqlx::query_scalar(sql)
            .bind(meeting_id)
            .bind(user_id)
            .bind(InvitationKind::Colleague.as_str())
            .fetch_one(pool)
            .await)?;
        Ok(yes)
    }

    // ----- bans -----

    /// Bans `subject` from the meeting (no error, and no change, if already banned).
    /// `by_user_label` names who did it, for display. [`StoreError::NotFound`] if there is no
    /// such meeting.
    pub async fn add_ban(
        &self,
        meeting_id: &str,
        subject: BanSubject,
        by_user_label: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let (kind, id) = subject.parts();
        let sql = "INSERT INTO meeting_bans (meeting_id, subject_kind, subject_id, banned_by, \
                   created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(meeting_id)
            .bind(kind)
            .bind(id)
            .bind(by_user_label)
            .bind(at.timestamp_millis())
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        Ok(())
    }

    /// Lifts a ban (no error if there was none).
    pub async fn remove_ban(&self, meeting_id: &str, subject: BanSubject) -> Result<()> {
        let sql = "DELETE FROM meeting_bans \
                   WHERE meeting_id = $1 AND subject_kind = $2 AND subject_id = $3";
        self.execute_for_subject(sql, meeting_id, subject).await
    }

    /// Runs `sql` with `$1` the meeting and `$2`, `$3` the subject's kind and id.
    async fn execute_for_subject(
        &self,
        sql: &str,
        meeting_id: &str,
        subject: BanSubject,
    ) -> Result<()> {
        let (kind, id) = subject.parts();
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(meeting_id)
            .bind(kind)
            .bind(id)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        Ok(())
    }

    /// Makes the holder of an invitation a moderator of its meeting, or not any more (a guest a
    /// moderator promoted during the meeting). [`StoreError::NotFound`] if there is no such
    /// invitation.
    pub async fn set_invitation_moderator(
        &self,
        invitation_id: i64,
        moderator: bool,
    ) -> Result<()> {
        let sql = "UPDATE invitations SET moderator = $2 WHERE id = $1";
        let done = on_pool!(self, |pool| sqlx::query(sql)
            .bind(invitation_id)
            .bind(moderator)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        found(done)
    }

    /// Whether the holder of the invitation moderates its meeting (false if there is none).
    pub async fn invitation_is_moderator(&self, invitation_id: i64) -> Result<bool> {
        let sql = "SELECT COALESCE((SELECT moderator FROM invitations WHERE id = $1), FALSE)";
        let yes: bool = on_pool!(self, |pool| sqlx::query_scalar(sql)
            .bind(invitation_id)
            .fetch_one(pool)
            .await)?;
        Ok(yes)
    }

    // ----- mutes -----

    /// Records that a moderator muted `subject` in the meeting, or lifted that (no error, and no
    /// change, if it already was so). The meeting's actor reads these back when it starts, so a
    /// mute survives a restart of the server.
    pub async fn set_muted(
        &self,
        meeting_id: &str,
        subject: BanSubject,
        muted: bool,
    ) -> Result<()> {
        let sql = if muted {
            "INSERT INTO meeting_mutes (meeting_id, subject_kind, subject_id) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM meeting_mutes \
             WHERE meeting_id = $1 AND subject_kind = $2 AND subject_id = $3"
        };
        self.execute_for_subject(sql, meeting_id, subject).await
    }

    /// The accounts and invitations muted in the meeting (see [`Store::set_muted`]).
    pub async fn muted(&self, meeting_id: &str) -> Result<Vec<BanSubject>> {
        let sql = "SELECT subject_kind, subject_id FROM meeting_mutes WHERE meeting_id = $1 \
                   ORDER BY subject_kind, subject_id";
        let rows: Vec<(String, i64)> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(meeting_id)
            .fetch_all(pool)
            .await)?;
        rows.into_iter()
            .map(|(kind, id)| {
                BanSubject::from_parts(&kind, id).ok_or_else(|| {
                    StoreError::corrupt(format!("unknown mute subject kind {kind:?}"))
                })
            })
            .collect()
    }

    /// Lifts every mute of the meeting (it emptied).
    pub async fn clear_mutes(&self, meeting_id: &str) -> Result<()> {
        self.execute_for_meeting(
            "DELETE FROM meeting_mutes WHERE meeting_id = $1",
            meeting_id,
        )
        .await
    }

    /// Runs `sql`, whose one parameter is the meeting id.
    async fn execute_for_meeting(&self, sql: &str, meeting_id: &str) -> Result<()> {
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(meeting_id)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        Ok(())
    }

    /// Whether `subject` is banned from the meeting.
    pub async fn is_banned(&self, meeting_id: &str, subject: BanSubject) -> Result<bool> {
        let (kind, id) = subject.parts();
        let sql = "SELECT EXISTS (SELECT 1 FROM meeting_bans \
                   WHERE meeting_id = $1 AND subject_kind = $2 AND subject_id = $3)";
        let yes: bool = on_pool!(self, |pool| sqlx::query_scalar(sql)
            .bind(meeting_id)
            .bind(kind)
            .bind(id)
            .fetch_one(pool)
            .await)?;
        Ok(yes)
    }

    // ----- guest passes -----

    /// Stores a lobby guest's pass back into the running meeting and returns its id. The token
    /// is the guest's secret: only its hash comes here.
    pub async fn create_guest_pass(&self, p: &NewGuestPass) -> Result<i64> {
        let (kind, id) = p.admitter.map(BanSubject::parts).unzip();
        let sql = "INSERT INTO guest_passes (meeting_id, token_hash, display_name, admitted_by, \
                   admitter_kind, admitter_id, created_at, expires_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id";
        let id: i64 = on_pool!(self, |pool| sqlx::query_scalar(sql)
            .bind(&p.meeting_id)
            .bind(&p.token_hash)
            .bind(&p.display_name)
            .bind(&p.admitted_by)
            .bind(kind)
            .bind(id)
            .bind(now_ms())
            .bind(p.expires_at.timestamp_millis())
            .fetch_all(pool)
            .await
            .and_then(the_row))?;
        Ok(id)
    }

    /// The guest pass with this token hash, expired or not.
    pub async fn guest_pass_by_token_hash(&self, token_hash: &str) -> Result<Option<GuestPass>> {
        let sql = format!("SELECT {GUEST_PASS_COLUMNS} FROM guest_passes WHERE token_hash = $1");
        let row: Option<rows::GuestPass> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(token_hash)
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// Moves a pass's expiry (a connection came or went). [`StoreError::NotFound`] if it is gone.
    pub async fn set_guest_pass_expiry(&self, id: i64, expires_at: DateTime<Utc>) -> Result<()> {
        self.update_guest_pass("expires_at", id, expires_at.timestamp_millis())
            .await
    }

    /// Whether the pass holder moderates the meeting (a moderator made them one).
    pub async fn set_guest_pass_moderator(&self, id: i64, moderator: bool) -> Result<()> {
        self.update_guest_pass("moderator", id, moderator).await
    }

    /// Whether a moderator muted the pass holder.
    pub async fn set_guest_pass_muted(&self, id: i64, muted: bool) -> Result<()> {
        self.update_guest_pass("muted", id, muted).await
    }

    async fn update_guest_pass<T>(&self, column: &'static str, id: i64, value: T) -> Result<()>
    where
        T: Send
            + for<'q> sqlx::Encode<'q, sqlx::Sqlite>
            + sqlx::Type<sqlx::Sqlite>
            + for<'q> sqlx::Encode<'q, sqlx::Postgres>
            + sqlx::Type<sqlx::Postgres>,
    {
        let sql = format!("UPDATE guest_passes SET {column} = $2 WHERE id = $1");
        let done = on_pool!(self, |pool| sqlx::query(&sql)
            .bind(id)
            .bind(value)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        found(done)
    }

    /// Deletes a pass (its holder left on purpose or was removed). No error if it is gone.
    pub async fn delete_guest_pass(&self, id: i64) -> Result<()> {
        on_pool!(self, |pool| sqlx::query(
            "DELETE FROM guest_passes WHERE id = $1"
        )
        .bind(id)
        .execute(pool)
        .await
        .map(|d| d.rows_affected()))?;
        Ok(())
    }

    /// Deletes every pass of the meeting (it emptied).
    pub async fn clear_guest_passes(&self, meeting_id: &str) -> Result<()> {
        self.execute_for_meeting("DELETE FROM guest_passes WHERE meeting_id = $1", meeting_id)
            .await
    }

    // ----- retention -----

    /// Deletes the meetings that ended before `cutoff`, with their invitations, moderators and
    /// bans, in one transaction; returns how many meetings were deleted.
    pub async fn purge_ended_meetings_before(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        const ENDED: &str = "SELECT id FROM meetings WHERE ended_at IS NOT NULL AND ended_at < $1";
        let children = [
            format!("DELETE FROM meeting_bans WHERE meeting_id IN ({ENDED})"),
            format!("DELETE FROM meeting_mutes WHERE meeting_id IN ({ENDED})"),
            format!("DELETE FROM guest_passes WHERE meeting_id IN ({ENDED})"),
            format!("DELETE FROM meeting_moderators WHERE meeting_id IN ({ENDED})"),
            format!("DELETE FROM invitations WHERE meeting_id IN ({ENDED})"),
        ];
        let meetings = "DELETE FROM meetings WHERE ended_at IS NOT NULL AND ended_at < $1";
        let cutoff = cutoff.timestamp_millis();
        let deleted = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for sql in &children {
                sqlx::query(sql).bind(cutoff).execute(&mut *tx).await?;
            }
            let done = sqlx::query(meetings).bind(cutoff).execute(&mut *tx).await?;
            tx.commit().await?;
            done.rows_affected()
        });
        Ok(deleted)
    }
}

/// What a PostgreSQL URL for [`Store::open_postgres`] points at, for messages and logs: the
/// database, the host and port (or socket directory) and the user, never the password. If it
/// is not a `postgres://` or `postgresql://` URL or does not parse: why, for the operator.
pub fn postgres_url_summary(url: &str) -> std::result::Result<String, String> {
    let scheme_ok = ["postgres://", "postgresql://"].iter().any(|scheme| {
        url.get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
    });
    if !scheme_ok {
        return Err("not a PostgreSQL URL: it must start with postgres:// or postgresql://".into());
    }
    let o = PgConnectOptions::from_str(url).map_err(|e| match e {
        sqlx::Error::Configuration(why) => format!("not a valid PostgreSQL URL: {why}"),
        other => format!("not a valid PostgreSQL URL: {other}"),
    })?;
    let place = match o.get_socket() {
        Some(dir) => format!("socket directory {}", dir.display()),
        None => format!("{}:{}", o.get_host(), o.get_port()),
    };
    let database = o.get_database().unwrap_or(o.get_username());
    Ok(format!(
        "database {database:?} at {place} as user {:?}",
        o.get_username()
    ))
}

/// The key usernames are unique and looked up by.
fn username_key(username: &str) -> String {
    username.to_lowercase()
}

/// The one row of an `INSERT ... RETURNING` fetched with `fetch_all`. Such a statement is run to
/// its end, never with `fetch_one`: SQLite commits an autocommit statement when it ends, and
/// `fetch_one` stops at the first row and leaves the end to a reset whose error is dropped, so a
/// commit that fails (a full disk) looked like success and the row was lost.
fn the_row<T>(rows: Vec<T>) -> std::result::Result<T, sqlx::Error> {
    rows.into_iter().next().ok_or(sqlx::Error::RowNotFound)
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn found(rows_affected: u64) -> Result<()> {
    if rows_affected == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// Rows as stored, and their conversion into the public types.
mod rows {
    use chrono::{DateTime, Utc};

    use super::{parse_profile, InvitationKind, Role, StoreError};

    fn time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
        DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| StoreError::corrupt(format!("timestamp out of range: {ms}")))
    }

    fn opt_time(ms: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
        ms.map(time).transpose()
    }

    fn role(s: &str) -> Result<Role, StoreError> {
        Role::parse(s).ok_or_else(|| StoreError::corrupt(format!("unknown role {s:?}")))
    }

    #[derive(sqlx::FromRow)]
    pub(super) struct User {
        id: i64,
        username: String,
        display_name: String,
        role: String,
        password_hash: String,
        must_change_password: bool,
        disabled: bool,
        created_at: i64,
    }

    impl TryFrom<User> for crate::User {
        type Error = StoreError;
        fn try_from(r: User) -> Result<Self, StoreError> {
            Ok(crate::User {
                id: r.id,
                role: role(&r.role)?,
                username: r.username,
                display_name: r.display_name,
                password_hash: r.password_hash,
                must_change_password: r.must_change_password,
                disabled: r.disabled,
                created_at: time(r.created_at)?,
            })
        }
    }

    #[derive(sqlx::FromRow)]
    pub(super) struct Session {
        id_hash: String,
        user_id: i64,
        csrf_token: String,
        created_at: i64,
        expires_at: i64,
    }

    impl TryFrom<Session> for crate::Session {
        type Error = StoreError;
        fn try_from(r: Session) -> Result<Self, StoreError> {
            Ok(crate::Session {
                id_hash: r.id_hash,
                user_id: r.user_id,
                csrf_token: r.csrf_token,
                created_at: time(r.created_at)?,
                expires_at: time(r.expires_at)?,
            })
        }
    }

    #[derive(sqlx::FromRow)]
    pub(super) struct SessionUser {
        id_hash: String,
        user_id: i64,
        csrf_token: String,
        s_created_at: i64,
        expires_at: i64,
        username: String,
        display_name: String,
        role: String,
        password_hash: String,
        must_change_password: bool,
        disabled: bool,
        u_created_at: i64,
    }

    impl TryFrom<SessionUser> for (crate::Session, crate::User) {
        type Error = StoreError;
        fn try_from(r: SessionUser) -> Result<Self, StoreError> {
            let user = crate::User {
                id: r.user_id,
                role: role(&r.role)?,
                username: r.username,
                display_name: r.display_name,
                password_hash: r.password_hash,
                must_change_password: r.must_change_password,
                disabled: r.disabled,
                created_at: time(r.u_created_at)?,
            };
            let session = crate::Session {
                id_hash: r.id_hash,
                user_id: r.user_id,
                csrf_token: r.csrf_token,
                created_at: time(r.s_created_at)?,
                expires_at: time(r.expires_at)?,
            };
            Ok((session, user))
        }
    }

    #[derive(sqlx::FromRow)]
    pub(super) struct Meeting {
        id: String,
        title: String,
        starts_at: Option<i64>,
        organiser_id: i64,
        profile: String,
        created_at: i64,
        ended_at: Option<i64>,
        dial_in_number: Option<String>,
    }

    impl TryFrom<Meeting> for crate::Meeting {
        type Error = StoreError;
        fn try_from(r: Meeting) -> Result<Self, StoreError> {
            let profile = parse_profile(&r.profile).ok_or_else(|| {
                StoreError::corrupt(format!("unknown security profile {:?}", r.profile))
            })?;
            Ok(crate::Meeting {
                id: r.id,
                title: r.title,
                starts_at: opt_time(r.starts_at)?,
                organiser_id: r.organiser_id,
                profile,
                created_at: time(r.created_at)?,
                ended_at: opt_time(r.ended_at)?,
                dial_in_number: r.dial_in_number,
            })
        }
    }

    #[derive(sqlx::FromRow)]
    pub(super) struct Invitation {
        id: i64,
        meeting_id: String,
        token_hash: String,
        name: String,
        kind: String,
        user_id: Option<i64>,
        created_by: i64,
        created_at: i64,
        expires_at: i64,
        revoked_at: Option<i64>,
        last_used_at: Option<i64>,
        phone_pin_hash: Option<String>,
    }

    impl TryFrom<Invitation> for crate::Invitation {
        type Error = StoreError;
        fn try_from(r: Invitation) -> Result<Self, StoreError> {
            let kind = InvitationKind::parse(&r.kind).ok_or_else(|| {
                StoreError::corrupt(format!("unknown invitation kind {:?}", r.kind))
            })?;
            Ok(crate::Invitation {
                id: r.id,
                meeting_id: r.meeting_id,
                token_hash: r.token_hash,
                name: r.name,
                kind,
                user_id: r.user_id,
                created_by: r.created_by,
                created_at: time(r.created_at)?,
                expires_at: time(r.expires_at)?,
                revoked_at: opt_time(r.revoked_at)?,
                last_used_at: opt_time(r.last_used_at)?,
                phone_pin_hash: r.phone_pin_hash,
            })
        }
    }

    #[derive(sqlx::FromRow)]
    pub(super) struct GuestPass {
        id: i64,
        meeting_id: String,
        display_name: String,
        admitted_by: String,
        admitter_kind: Option<String>,
        admitter_id: Option<i64>,
        moderator: bool,
        muted: bool,
        created_at: i64,
        expires_at: i64,
    }

    impl TryFrom<GuestPass> for crate::GuestPass {
        type Error = StoreError;
        fn try_from(r: GuestPass) -> Result<Self, StoreError> {
            let admitter = match (r.admitter_kind, r.admitter_id) {
                (Some(kind), Some(id)) => {
                    Some(crate::BanSubject::from_parts(&kind, id).ok_or_else(|| {
                        StoreError::corrupt(format!("unknown admitter kind {kind:?}"))
                    })?)
                }
                _ => None,
            };
            Ok(crate::GuestPass {
                id: r.id,
                meeting_id: r.meeting_id,
                display_name: r.display_name,
                admitted_by: r.admitted_by,
                admitter,
                moderator: r.moderator,
                muted: r.muted,
                created_at: time(r.created_at)?,
                expires_at: time(r.expires_at)?,
            })
        }
    }
}
