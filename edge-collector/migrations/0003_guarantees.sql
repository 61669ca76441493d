-- Guarantees: idempotent quarantine rows that erasure can find by any identifier and a
-- replay can decide as the first pass did; a consent log that refuses DELETE except for
-- the subjects of a running erasure job; resumable erasure jobs with receipts; and
-- tombstones that stop events still queued for R2 from being archived after erasure.
ALTER TABLE quarantine ADD COLUMN user_id TEXT;
ALTER TABLE quarantine ADD COLUMN qkey TEXT;
ALTER TABLE quarantine ADD COLUMN subjects TEXT NOT NULL DEFAULT '[]';
ALTER TABLE quarantine ADD COLUMN edge TEXT NOT NULL DEFAULT '{}';
CREATE UNIQUE INDEX quarantine_qkey ON quarantine (qkey);
CREATE INDEX quarantine_user_id ON quarantine (user_id);

-- A running erasure: its subjects (identifier values and profile ids) until it finishes.
CREATE TABLE erasure_jobs (
  write_key   TEXT NOT NULL,
  profile_id  TEXT NOT NULL,
  job         TEXT NOT NULL,
  started_at  TEXT NOT NULL,
  PRIMARY KEY (write_key, profile_id)
);
CREATE TABLE erasure_subjects (
  write_key TEXT NOT NULL,
  value     TEXT NOT NULL,
  PRIMARY KEY (write_key, value)
);
-- What was erased, when and how much: the proof that the request was honoured. No
-- identifier but the (random) profile id.
CREATE TABLE erasure_receipts (
  write_key   TEXT NOT NULL,
  profile_id  TEXT NOT NULL,
  finished_at TEXT NOT NULL,
  deleted     TEXT NOT NULL,
  PRIMARY KEY (write_key, profile_id)
);
-- A digest of (write key, identifier) for erased identifiers, for the queue consumer:
-- it drops a queued event received before the erasure, never a later one.
CREATE TABLE erasure_tombstones (
  digest     TEXT PRIMARY KEY,
  erased_at  TEXT NOT NULL,
  expires_at TEXT NOT NULL
);

CREATE TRIGGER consent_log_delete_only_by_erasure BEFORE DELETE ON consent_log
WHEN NOT EXISTS (
  SELECT 1 FROM erasure_subjects s WHERE s.write_key = OLD.write_key
    AND (s.value = OLD.anonymous_id OR s.value = OLD.user_id))
BEGIN
  SELECT RAISE(ABORT, 'consent_log rows are deleted only by erasure');
END;
