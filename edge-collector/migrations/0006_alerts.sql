-- Data-quality alerts (edge-collector/src/alerts.rs), one per source, kind, subject and
-- day judged: the hourly maintenance recomputes them and a webhook hears of new ones only.
CREATE TABLE alerts (
  id        INTEGER PRIMARY KEY AUTOINCREMENT,
  write_key TEXT NOT NULL,
  kind      TEXT NOT NULL,
  subject   TEXT NOT NULL,
  day       TEXT NOT NULL,
  since     TEXT NOT NULL,
  detail    TEXT NOT NULL,
  at        TEXT NOT NULL,
  delivered TEXT,
  UNIQUE (write_key, kind, subject, day)
);
CREATE INDEX alerts_source_day ON alerts (write_key, day);
