-- Clean events: one row per (write key, messageId). The primary key makes delivery
-- idempotent: a retried event is answered `duplicate` and stored once.
CREATE TABLE events (
  write_key    TEXT NOT NULL,
  message_id   TEXT NOT NULL,
  type         TEXT NOT NULL,
  event        TEXT,
  anonymous_id TEXT,
  user_id      TEXT,
  timestamp    TEXT NOT NULL,
  received_at  TEXT NOT NULL,
  payload      TEXT NOT NULL,
  PRIMARY KEY (write_key, message_id)
);
CREATE INDEX events_anonymous_id ON events (anonymous_id);
CREATE INDEX events_event ON events (event);

-- Events that could not be accepted, with typed reasons and the payload as received, so
-- they can be fixed and replayed.
CREATE TABLE quarantine (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  write_key   TEXT NOT NULL,
  message_id  TEXT,
  reasons     TEXT NOT NULL,
  payload     TEXT NOT NULL,
  received_at TEXT NOT NULL
);
