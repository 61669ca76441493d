-- The identity graph's layouts each source has used (`IDENTITY_SHARDS`: objects per
-- graph). A changed count starts another graph; erasure visits every layout recorded
-- here, so a person is erased from the graphs of the counts used before too.
CREATE TABLE identity_layouts (
  write_key TEXT NOT NULL,
  shards    INTEGER NOT NULL,
  PRIMARY KEY (write_key, shards)
);
