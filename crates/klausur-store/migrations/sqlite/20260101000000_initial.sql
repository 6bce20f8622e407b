-- klausur store, initial schema (SQLite).
-- Timestamps are unix milliseconds (UTC) in BIGINT columns; booleans are BOOLEAN.
-- Secrets (passwords, session ids, invitation tokens) only ever arrive here hashed.

CREATE TABLE users (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    username             TEXT    NOT NULL,
    -- Case-folded username (computed by the store), the key for uniqueness and look-up.
    username_key         TEXT    NOT NULL UNIQUE,
    display_name         TEXT    NOT NULL,
    role                 TEXT    NOT NULL CHECK (role IN ('admin', 'staff')),
    password_hash        TEXT    NOT NULL,
    must_change_password BOOLEAN NOT NULL,
    disabled             BOOLEAN NOT NULL DEFAULT FALSE,
    created_at           BIGINT  NOT NULL
);

CREATE TABLE sessions (
    id_hash    TEXT    NOT NULL PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE meetings (
    id           TEXT    NOT NULL PRIMARY KEY,
    title        TEXT    NOT NULL,
    starts_at    BIGINT,
    organiser_id INTEGER NOT NULL REFERENCES users (id),
    profile      TEXT    NOT NULL CHECK (profile IN ('strict', 'internal')),
    created_at   BIGINT  NOT NULL,
    ended_at     BIGINT
);
CREATE INDEX meetings_organiser_id ON meetings (organiser_id);
CREATE INDEX meetings_ended_at ON meetings (ended_at);

CREATE TABLE meeting_moderators (
    meeting_id TEXT    NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (meeting_id, user_id)
);
CREATE INDEX meeting_moderators_user_id ON meeting_moderators (user_id);

CREATE TABLE invitations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    meeting_id   TEXT    NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    token_hash   TEXT    NOT NULL UNIQUE,
    name         TEXT    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('guest', 'colleague')),
    user_id      INTEGER REFERENCES users (id),
    created_by   INTEGER NOT NULL REFERENCES users (id),
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
CREATE INDEX invitations_meeting_id ON invitations (meeting_id);
CREATE INDEX invitations_user_id ON invitations (user_id);

-- Someone a moderator removed from a meeting: a user account or an invitation.
CREATE TABLE meeting_bans (
    meeting_id   TEXT   NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    subject_kind TEXT   NOT NULL CHECK (subject_kind IN ('user', 'invitation')),
    subject_id   BIGINT NOT NULL,
    banned_by    TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (meeting_id, subject_kind, subject_id)
);
