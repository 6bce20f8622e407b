//! The audit trail's queries: append (one writer at a time, chained to the last record),
//! filtered reads for administrators, ascending pages for verification and export, and
//! deletion by the retention period (recorded in the trail itself).

use chrono::{DateTime, Utc};

use super::{the_row, Backend, Result, Store};
use crate::audit::{
    record_hash, Anchor, AuditActor, AuditRecord, Head, NewAuditRecord, Verdict, Verifier, GENESIS,
};
use crate::StoreError;

const COLUMNS: &str = "seq, at, kind, actor_kind, actor_id, actor_name, meeting_id, source, \
     details, prev_hash, hash";

/// Appends `$new` (a [`NewAuditRecord`]) at `$at` inside `$tx`, a `&mut` transaction begun as
/// the dialect's `begin_audit_write` says: chained to the last record, or to the retention
/// anchor when none is left, or to [`GENESIS`]. Evaluates to the [`AuditRecord`]; `?` returns
/// errors from the enclosing function. A macro, not a function, because the transaction's type
/// is the engine's: it is written once and expanded once per engine inside `on_pool!`.
macro_rules! append_in {
    ($tx:expr, $new:expr, $at:expr) => {{
        let tx = $tx;
        let new: NewAuditRecord = $new;
        let details_text = serde_json::to_string(&new.details)
            .map_err(|e| StoreError::corrupt(format!("audit details: {e}")))?;
        let last: Option<(i64, i64, String)> =
            sqlx::query_as("SELECT seq, at, hash FROM audit_records ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut **tx)
                .await?;
        let (prev_seq, prev_at, prev_hash) = match last {
            Some(last) => last,
            None => {
                let anchor: Option<(i64, String)> =
                    sqlx::query_as("SELECT seq, hash FROM audit_anchor WHERE id = 1")
                        .fetch_optional(&mut **tx)
                        .await?;
                match anchor {
                    Some((seq, hash)) => (seq, i64::MIN, hash),
                    None => (0, i64::MIN, GENESIS.to_owned()),
                }
            }
        };
        let r = chained(
            new,
            details_text,
            prev_seq.saturating_add(1),
            $at,
            prev_at,
            prev_hash,
        )?;
        let rows: Vec<(i64,)> = sqlx::query_as(&format!(
            "INSERT INTO audit_records ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING seq"
        ))
        .bind(r.seq)
        .bind(r.at.timestamp_millis())
        .bind(&r.kind)
        .bind(&r.actor.kind)
        .bind(r.actor.id.as_deref())
        .bind(r.actor.name.as_deref())
        .bind(r.meeting_id.as_deref())
        .bind(r.source.as_deref())
        .bind(&r.details_text)
        .bind(&r.prev_hash)
        .bind(&r.hash)
        .fetch_all(&mut **tx)
        .await?;
        the_row(rows)?;
        r
    }};
}

/// Which records [`Store::audit_records`] returns (newest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// A kind (`lobby.admitted`) or a family of kinds (`lobby` matches `lobby.*`).
    pub kind: Option<String>,
    pub meeting_id: Option<String>,
    /// Text found in the actor's name or id, the kind, the meeting id or the details
    /// (case-insensitive for ASCII).
    pub text: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only records numbered below this (the next page after a page ending at it).
    pub before_seq: Option<i64>,
    /// At most this many records (at most [`AUDIT_PAGE_MAX`] and one more, which tells a
    /// reader that pages whether another page follows).
    pub limit: u32,
}

/// The most records one read returns.
pub const AUDIT_PAGE_MAX: u32 = 1000;

impl Store {
    /// Appends a record to the audit trail at time `at` and returns it with its number and
    /// hashes. Appends are serialised by the database (SQLite: an immediate transaction;
    /// PostgreSQL: a lock on the trail's table), so the chain stays linear even with several
    /// processes (or nodes) on one database. A time earlier than the last
    /// record's (a clock stepped back) is raised to it, so the trail stays in time order.
    pub async fn append_audit(
        &self,
        new: NewAuditRecord,
        at: DateTime<Utc>,
    ) -> Result<AuditRecord> {
        let dialect = self.dialect();
        on_pool!(self, |pool| {
            let mut tx = pool.begin_with(dialect.begin_audit_write).await?;
            if let Some(lock) = dialect.lock_audit {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            let record = append_in!(&mut tx, new, at);
            tx.commit().await?;
            Ok(record)
        })
    }

    /// Records matching `filter`, newest first.
    pub async fn audit_records(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_records WHERE \
             ($1 IS NULL OR kind = $1 OR substr(kind, 1, length($1) + 1) = $1 || '.') \
             AND ($2 IS NULL OR meeting_id = $2) \
             AND ($3 IS NULL OR {position}(lower(coalesce(actor_name, '') || ' ' || \
                  coalesce(actor_id, '') || ' ' || kind || ' ' || coalesce(meeting_id, '') || \
                  ' ' || details), lower($3)) > 0) \
             AND ($4 IS NULL OR at >= $4) AND ($5 IS NULL OR at < $5) \
             AND ($6 IS NULL OR seq < $6) \
             ORDER BY seq DESC LIMIT $7",
            position = self.dialect().position
        );
        let limit = filter.limit.min(AUDIT_PAGE_MAX + 1);
        let rows: Vec<Row> = on_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(filter.kind.as_deref())
                .bind(filter.meeting_id.as_deref())
                .bind(filter.text.as_deref())
                .bind(filter.since.map(|t| t.timestamp_millis()))
                .bind(filter.until.map(|t| t.timestamp_millis()))
                .bind(filter.before_seq)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(AuditRecord::try_from).collect()
    }

    /// Up to `limit` records numbered above `after_seq`, oldest first (verification and export
    /// read the trail in such pages).
    pub async fn audit_after(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditRecord>> {
        let sql =
            format!("SELECT {COLUMNS} FROM audit_records WHERE seq > $1 ORDER BY seq LIMIT $2");
        let rows: Vec<Row> = on_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(after_seq)
                .bind(i64::from(limit.min(AUDIT_PAGE_MAX)))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(AuditRecord::try_from).collect()
    }

    /// The last record the retention period deleted, if it ever deleted one.
    pub async fn audit_anchor(&self) -> Result<Option<Anchor>> {
        let row: Option<(i64, String)> = on_pool!(self, |pool| {
            sqlx::query_as("SELECT seq, hash FROM audit_anchor WHERE id = 1")
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(seq, hash)| Anchor { seq, hash }))
    }

    /// Verifies the whole trail, page by page, from the anchor on (see
    /// [`Verifier`](crate::audit::Verifier)), optionally against a head noted earlier.
    pub async fn verify_audit(&self, head: Option<Head>) -> Result<Verdict> {
        let anchor = self.audit_anchor().await?;
        let mut verifier = Verifier::new(anchor.as_ref(), head);
        let mut after = i64::MIN;
        loop {
            let page = self.audit_after(after, AUDIT_PAGE_MAX).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in &page {
                verifier.push(r);
            }
        }
        Ok(verifier.finish())
    }

    /// Deletes the records older than `cutoff` and, in the same transaction, moves the anchor
    /// to the last one deleted and appends a record of kind `audit.deleted` (by `actor`, at
    /// `at`) that names how many were deleted and the anchor. Returns how many were deleted
    /// (nothing is appended when none were).
    pub async fn purge_audit_before(
        &self,
        cutoff: DateTime<Utc>,
        at: DateTime<Utc>,
        actor: AuditActor,
    ) -> Result<u64> {
        let cutoff_ms = cutoff.timestamp_millis();
        let dialect = self.dialect();
        on_pool!(self, |pool| {
            let mut tx = pool.begin_with(dialect.begin_audit_write).await?;
            if let Some(lock) = dialect.lock_audit {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            let through: Option<(i64, String)> = sqlx::query_as(
                "SELECT seq, hash FROM audit_records WHERE at < $1 ORDER BY seq DESC LIMIT 1",
            )
            .bind(cutoff_ms)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((through_seq, through_hash)) = through else {
                return Ok(0);
            };
            let deleted = sqlx::query("DELETE FROM audit_records WHERE seq <= $1")
                .bind(through_seq)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(
                "INSERT INTO audit_anchor (id, seq, hash) VALUES (1, $1, $2) \
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            )
            .bind(through_seq)
            .bind(&through_hash)
            .execute(&mut *tx)
            .await?;
            let new = NewAuditRecord {
                kind: "audit.deleted".into(),
                actor,
                meeting_id: None,
                source: None,
                details: serde_json::json!({
                    "deleted": deleted,
                    "older_than": cutoff.to_rfc3339(),
                    "through_seq": through_seq,
                    "through_hash": through_hash,
                }),
            };
            append_in!(&mut tx, new, at);
            tx.commit().await?;
            Ok(deleted)
        })
    }
}

/// The record numbered `seq` after a record of time `prev_at_ms` and hash `prev_hash`.
fn chained(
    new: NewAuditRecord,
    details_text: String,
    seq: i64,
    at: DateTime<Utc>,
    prev_at_ms: i64,
    prev_hash: String,
) -> Result<AuditRecord> {
    let at_ms = at.timestamp_millis().max(prev_at_ms);
    let at = DateTime::from_timestamp_millis(at_ms)
        .ok_or_else(|| StoreError::corrupt(format!("timestamp out of range: {at_ms}")))?;
    let hash = record_hash(
        seq,
        at_ms,
        &new.kind,
        &new.actor,
        new.meeting_id.as_deref(),
        new.source.as_deref(),
        &details_text,
        &prev_hash,
    );
    Ok(AuditRecord {
        seq,
        at,
        kind: new.kind,
        actor: new.actor,
        meeting_id: new.meeting_id,
        source: new.source,
        details_text,
        prev_hash,
        hash,
    })
}

/// A row as stored.
#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    at: i64,
    kind: String,
    actor_kind: String,
    actor_id: Option<String>,
    actor_name: Option<String>,
    meeting_id: Option<String>,
    source: Option<String>,
    details: String,
    prev_hash: String,
    hash: String,
}

impl TryFrom<Row> for AuditRecord {
    type Error = StoreError;
    fn try_from(r: Row) -> Result<AuditRecord> {
        Ok(AuditRecord {
            seq: r.seq,
            at: DateTime::from_timestamp_millis(r.at)
                .ok_or_else(|| StoreError::corrupt(format!("timestamp out of range: {}", r.at)))?,
            kind: r.kind,
            actor: AuditActor {
                kind: r.actor_kind,
                id: r.actor_id,
                name: r.actor_name,
            },
            meeting_id: r.meeting_id,
            source: r.source,
            details_text: r.details,
            prev_hash: r.prev_hash,
            hash: r.hash,
        })
    }
}
