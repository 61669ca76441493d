-- Attribution (edge-collector/src/attribution.rs): each conversion's credit per model,
-- click window, channel and campaign, replaced whenever it is computed again (a new
-- conversion, a merge, an unmerge); erased with the profile; pruned with the hot window.
CREATE TABLE conversion_credits (
  write_key   TEXT NOT NULL,
  message_id  TEXT NOT NULL,
  profile_id  TEXT NOT NULL,
  at          TEXT NOT NULL,
  model       TEXT NOT NULL,
  window_days INTEGER NOT NULL,
  channel     TEXT NOT NULL,
  source      TEXT,
  medium      TEXT,
  campaign    TEXT,
  credit      REAL NOT NULL,
  revenue     REAL NOT NULL,
  currency    TEXT
);
CREATE INDEX conversion_credits_profile ON conversion_credits (write_key, profile_id);
CREATE INDEX conversion_credits_message ON conversion_credits (write_key, message_id);
CREATE INDEX conversion_credits_report ON conversion_credits (write_key, model, window_days, at);

-- Imported costs, converted to the source's report currency at import; a row for the
-- same day, source, medium and campaign replaces the earlier one.
CREATE TABLE costs (
  write_key TEXT NOT NULL,
  day       TEXT NOT NULL,
  source    TEXT NOT NULL,
  medium    TEXT NOT NULL,
  campaign  TEXT NOT NULL,
  cost      REAL NOT NULL,
  PRIMARY KEY (write_key, day, source, medium, campaign)
);

-- The exchange rates given with the latest cost import (report-currency units per unit
-- of each currency), also used for revenue sent in another currency.
CREATE TABLE cost_rates (
  write_key TEXT NOT NULL,
  currency  TEXT NOT NULL,
  rate      REAL NOT NULL,
  PRIMARY KEY (write_key, currency)
);
