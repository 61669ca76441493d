-- The lake: R2 is every source's system of record; D1 keeps a hot window. Each row
-- keeps the fingerprint of its content, so the store tells a retry (same content) from
-- another visitor's reuse of the messageId (dedup shards by visitor and cannot see it).
-- Rows stored before this migration have none and count as the same content.
ALTER TABLE events ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
-- The retention prune walks the window's edge by this index.
CREATE INDEX events_received_at ON events (write_key, received_at);
CREATE INDEX quarantine_received_at ON quarantine (write_key, received_at);
-- What the scheduled maintenance found: the last prune per source and the database's
-- size against its limit. One row per (write key, kind); the admin API shows them.
CREATE TABLE health (
  write_key TEXT NOT NULL,
  kind      TEXT NOT NULL,
  at        TEXT NOT NULL,
  detail    TEXT NOT NULL,
  PRIMARY KEY (write_key, kind)
);
