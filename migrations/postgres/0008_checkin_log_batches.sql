-- One check-in log row per group-committed batch (decision 11 in docs/decisions.md): the
-- batch's reports as one array per column, in report order. One row per report cost a heap
-- tuple and a primary-key entry each to append, and a delete and a dead tuple each to take
-- (psql, 8,192 reports in batches of 32: appending 31 -> 22 ms, taking 25 -> 17 ms).
-- Numbered from the same sequence as client_checkin_log, whose rows (appended before this
-- migration, or by an instance still running the previous version during a rolling upgrade)
-- are applied too, in one order.
CREATE TABLE client_checkin_log_batches (
    seq BIGINT PRIMARY KEY DEFAULT nextval('client_checkin_log_seq_seq'),
    -- the reports in the batch (the arrays' length), so a run is measured without reading them
    reports INT NOT NULL,
    tenant_id TEXT[] NOT NULL,
    user_id TEXT[] NOT NULL,
    device_key TEXT[] NOT NULL,
    user_principal_name TEXT[] NOT NULL,
    device_name TEXT[] NOT NULL,
    device_platform TEXT[] NOT NULL,
    device_platform_version TEXT[] NOT NULL,
    was_successful BOOLEAN[] NOT NULL,
    checkin_date_time BIGINT[] NOT NULL,
    error_message TEXT[] NOT NULL,
    applied_policies TEXT[] NOT NULL,
    last_task_name TEXT[] NOT NULL
);
