-- Telephone dial-in. A meeting created with dial-in has a number callers type in: 8 random
-- digits, unique among meetings (drawn by the caller of the store, drawn again on a collision).
-- An invitation of such a meeting has a personal phone PIN, stored only as
-- HMAC-SHA256(pin_key, meeting_id || ':' || pin) in hex, under a key the server keeps outside the
-- database: a copy of the database alone does not let anyone try PINs offline. Unique within its
-- meeting. Both columns are NULL without dial-in.
ALTER TABLE meetings ADD COLUMN dial_in_number TEXT;
CREATE UNIQUE INDEX meetings_dial_in_number ON meetings (dial_in_number);
ALTER TABLE invitations ADD COLUMN phone_pin_hash TEXT;
CREATE UNIQUE INDEX invitations_meeting_phone_pin ON invitations (meeting_id, phone_pin_hash);
