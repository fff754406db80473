-- client_checkins stored in key order (WITHOUT ROWID), like client_checkin_policies since 0003:
-- applying a report then writes the key's tree and the by-time index, not also a rowid tree,
-- and finding a device's report (the upsert's conflict check, the applied-policy rows' join)
-- is one descent instead of the key index and then the rowid tree. Measured applying 160 k
-- logged reports: 21.6 → 19.2 µs of CPU per report.
CREATE TABLE client_checkins_by_key (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device_key TEXT NOT NULL,
    user_principal_name TEXT,
    device_name TEXT NOT NULL,
    device_platform TEXT,
    device_platform_version TEXT,
    was_successful INTEGER NOT NULL,
    checkin_date_time INTEGER NOT NULL,
    error_message TEXT,
    applied_policies TEXT NOT NULL DEFAULT '[]',
    last_task_name TEXT,
    PRIMARY KEY (tenant_id, user_id, device_key)
) WITHOUT ROWID;

INSERT INTO client_checkins_by_key
    SELECT tenant_id, user_id, device_key, user_principal_name, device_name, device_platform,
        device_platform_version, was_successful, checkin_date_time, error_message,
        applied_policies, last_task_name
    FROM client_checkins;

DROP TABLE client_checkins;
ALTER TABLE client_checkins_by_key RENAME TO client_checkins;

CREATE INDEX client_checkins_by_time ON client_checkins (tenant_id, checkin_date_time);
