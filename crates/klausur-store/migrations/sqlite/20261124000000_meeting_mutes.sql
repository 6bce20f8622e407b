-- A moderator's mute of an account or invitation in a running meeting survives a restart of the
-- server; it is lifted by a moderator or when the meeting empties.
CREATE TABLE meeting_mutes (
    meeting_id   TEXT   NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    subject_kind TEXT   NOT NULL CHECK (subject_kind IN ('user', 'invitation')),
    subject_id   BIGINT NOT NULL,
    PRIMARY KEY (meeting_id, subject_kind, subject_id)
);
