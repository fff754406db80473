-- The check-in log: a check-in is acknowledged once its row here is durable (DESIGN §4,
-- decision 11 in docs/decisions.md). Rows are appended in commit order to the end of one
-- tree (seq is the rowid), so a batch of reports fills a few consecutive pages instead of
-- dirtying a page per report in each keyed table and index; writing those tables
-- (client_checkins, client_checkin_policies) happens later, in large batches, and every read
-- of the check-in views first applies what is pending, so the views always include every
-- acknowledged report.
CREATE TABLE client_checkin_log (
    seq INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    -- as in client_checkins: deviceName folded to lower case (by the server, not by SQL)
    device_key TEXT NOT NULL,
    user_principal_name TEXT,
    device_name TEXT NOT NULL,
    device_platform TEXT,
    device_platform_version TEXT,
    was_successful INTEGER NOT NULL,
    checkin_date_time INTEGER NOT NULL,
    error_message TEXT,
    applied_policies TEXT NOT NULL,
    last_task_name TEXT
);
