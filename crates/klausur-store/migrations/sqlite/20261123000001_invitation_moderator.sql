-- A guest a moderator made moderator during a meeting stays one when they come back with the
-- same invitation (a reconnect, a restart of the server). Staff moderators are in
-- meeting_moderators.
ALTER TABLE invitations ADD COLUMN moderator INTEGER NOT NULL DEFAULT 0;
