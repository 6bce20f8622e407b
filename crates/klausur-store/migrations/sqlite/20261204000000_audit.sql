-- The audit trail: append-only, hash-chained records of security events (see src/audit.rs).
-- `seq` numbers the records without gaps; each row holds the hash of the row before
-- (`prev_hash`) and its own (`hash`). `at` is unix milliseconds. `details` is a JSON object's
-- text, hashed as stored. Rows are only ever inserted, and deleted from the oldest end by the
-- retention period, which records the last deleted row in `audit_anchor` (at most one row).
CREATE TABLE audit_records (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT,
    actor_name TEXT,
    meeting_id TEXT,
    source TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_records_at ON audit_records (at);
CREATE INDEX audit_records_meeting ON audit_records (meeting_id, seq);
CREATE INDEX audit_records_kind ON audit_records (kind, seq);

CREATE TABLE audit_anchor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
);
