-- A guest a moderator let in from the lobby gets a pass: a secret (stored only as its hash) that
-- brings the same browser tab back into the running meeting after a broken connection or a
-- restart of the server, under the same name and role, without waiting in the lobby again.
-- Deleted when the guest leaves on purpose or the meeting empties; `expires_at` is moved to a
-- short grace period whenever the holder's connection goes.
CREATE TABLE guest_passes (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    meeting_id    TEXT    NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    token_hash    TEXT    NOT NULL UNIQUE,
    display_name  TEXT    NOT NULL,
    -- The name of the moderator who admitted the guest, as shown in the participant list.
    admitted_by   TEXT    NOT NULL,
    -- That moderator's account or invitation, if any: their client adds the guest to the
    -- encrypted group again.
    admitter_kind TEXT    CHECK (admitter_kind IN ('user', 'invitation')),
    admitter_id   BIGINT,
    moderator     BOOLEAN NOT NULL DEFAULT FALSE,
    muted         BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL
);
CREATE INDEX guest_passes_meeting_id ON guest_passes (meeting_id);
