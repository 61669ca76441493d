-- How each consent choice was made, kept with it so a site can show it: the page it was
-- made on and what the record stated of the notice and the consent manager (an IAB TC,
-- GPP or US Privacy string, the manager's id and version, the notice's version and
-- address), as a JSON object (`consent_gate::evidence`). Rows from before have '{}'.
ALTER TABLE consent_log ADD COLUMN evidence TEXT NOT NULL DEFAULT '{}';
