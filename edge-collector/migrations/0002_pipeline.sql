-- The full pipeline: profiles on events, typed quarantine reasons, the consent log and
-- daily counters.
ALTER TABLE events ADD COLUMN profile_id TEXT;
ALTER TABLE events ADD COLUMN identified INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN bot INTEGER NOT NULL DEFAULT 0;
CREATE INDEX events_profile_id ON events (profile_id);
CREATE INDEX events_user_id ON events (user_id);

ALTER TABLE quarantine ADD COLUMN anonymous_id TEXT;
ALTER TABLE quarantine ADD COLUMN reason TEXT NOT NULL DEFAULT 'unknown';
CREATE INDEX quarantine_reason ON quarantine (write_key, reason);
CREATE INDEX quarantine_anonymous_id ON quarantine (anonymous_id);

-- Append-only: who chose what, when, from where. Rows are never updated; they are
-- deleted only by an erasure request for the visitor they describe.
CREATE TABLE consent_log (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  write_key    TEXT NOT NULL,
  message_id   TEXT NOT NULL,
  anonymous_id TEXT,
  user_id      TEXT,
  categories   TEXT NOT NULL,
  source       TEXT NOT NULL,
  gpc          INTEGER NOT NULL,
  timestamp    TEXT NOT NULL,
  received_at  TEXT NOT NULL,
  UNIQUE (write_key, message_id)
);
CREATE INDEX consent_log_anonymous_id ON consent_log (anonymous_id);
CREATE INDEX consent_log_user_id ON consent_log (user_id);
CREATE TRIGGER consent_log_append_only BEFORE UPDATE ON consent_log
BEGIN
  SELECT RAISE(ABORT, 'consent_log is append-only');
END;

-- Per source and UTC day: what arrived and what became of it (refused events are only
-- counted, never stored).
CREATE TABLE daily_counts (
  write_key   TEXT NOT NULL,
  day         TEXT NOT NULL,
  received    INTEGER NOT NULL DEFAULT 0,
  accepted    INTEGER NOT NULL DEFAULT 0,
  duplicates  INTEGER NOT NULL DEFAULT 0,
  quarantined INTEGER NOT NULL DEFAULT 0,
  refused     INTEGER NOT NULL DEFAULT 0,
  identified  INTEGER NOT NULL DEFAULT 0,
  bots        INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (write_key, day)
);
