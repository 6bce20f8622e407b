-- A moderator's lock of a running meeting survives a restart of the server; it is lifted by a
-- moderator or when the meeting empties.
ALTER TABLE meetings ADD COLUMN locked INTEGER NOT NULL DEFAULT 0;
