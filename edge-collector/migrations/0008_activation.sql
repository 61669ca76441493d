-- Activation (edge-collector/src/activation.rs): segment membership, the changes it
-- records, the source's RFM cut points, and the delivery log of the destinations.
CREATE TABLE segment_members (
  write_key  TEXT NOT NULL,
  segment    TEXT NOT NULL,
  profile_id TEXT NOT NULL,
  since      TEXT NOT NULL,
  PRIMARY KEY (write_key, segment, profile_id)
);
CREATE INDEX segment_members_profile ON segment_members (write_key, profile_id);

CREATE TABLE segment_changes (
  write_key  TEXT NOT NULL,
  message_id TEXT NOT NULL,
  segment    TEXT NOT NULL,
  profile_id TEXT NOT NULL,
  change     TEXT NOT NULL,
  at         TEXT NOT NULL,
  PRIMARY KEY (write_key, message_id)
);
CREATE INDEX segment_changes_at ON segment_changes (write_key, at);
CREATE INDEX segment_changes_profile ON segment_changes (write_key, profile_id);

-- Segments declared through the admin API (PUT /admin/v1/segments): they replace the
-- list SOURCES gives for the source.
CREATE TABLE segment_definitions (
  write_key  TEXT PRIMARY KEY,
  segments   TEXT NOT NULL,
  updated_at TEXT NOT NULL
);

CREATE TABLE rfm_cuts (
  write_key   TEXT PRIMARY KEY,
  cuts        TEXT NOT NULL,
  computed_at TEXT NOT NULL,
  -- The daily rescoring's progress through the source's profiles.
  cursor      TEXT NOT NULL DEFAULT ''
);

-- One line per destination and event. `job` (the queued job: the event and the
-- profile's hashes) is kept until the line is final, so the maintenance can queue again
-- what a crash left unqueued; it is cleared then.
CREATE TABLE deliveries (
  write_key   TEXT NOT NULL,
  destination TEXT NOT NULL,
  message_id  TEXT NOT NULL,
  profile_id  TEXT,
  status      TEXT NOT NULL,
  reason      TEXT,
  attempts    INTEGER NOT NULL DEFAULT 0,
  http_status INTEGER,
  updated_at  TEXT NOT NULL,
  job         TEXT,
  PRIMARY KEY (write_key, destination, message_id)
);
CREATE INDEX deliveries_recent ON deliveries (write_key, updated_at);
CREATE INDEX deliveries_profile ON deliveries (write_key, profile_id);
CREATE INDEX deliveries_pending ON deliveries (status, updated_at);
