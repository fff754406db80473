-- The check-in log's shards (decision 11 in docs/decisions.md): on SQLite, check-in batches
-- are appended to log files of their own next to this database (cirrus-checkin-log-N.sqlite3,
-- each with its own writer), so applying the log to the view tables here never holds up an
-- acknowledgement. What has been applied from each shard is recorded here, in the same
-- transaction as the apply itself, so a crash between applying and trimming the shard
-- applies nothing twice. The client_checkin_log table of this database stays: a batch that
-- must end a Graph PATCH's override is logged here instead, atomically with that change.
CREATE TABLE client_checkin_log_shards (
    shard INTEGER PRIMARY KEY,
    -- the last sequence number of the shard's log applied to client_checkins
    applied_seq INTEGER NOT NULL
);
