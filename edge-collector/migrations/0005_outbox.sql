-- D1 is the lake's outbox. A row is written with archived = 0; the queue consumer sets
-- it to 1 once the row's line is in an R2 object. The scheduled maintenance sweeps rows
-- still at 0 after a grace period into the lake itself (a queue message can be lost:
-- a local queue keeps them in memory, and a send can fail after the row was written),
-- and prunes only archived rows. Rows stored before this migration went through the
-- queue already and count as archived.
ALTER TABLE events ADD COLUMN archived INTEGER NOT NULL DEFAULT 1;
CREATE INDEX events_unarchived ON events (write_key, received_at) WHERE archived = 0;
