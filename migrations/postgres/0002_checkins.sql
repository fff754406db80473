-- Office client check-ins (DESIGN §3): the latest report per (user, device), and which
-- configurations each of those reports applied. Keys lead with tenant_id.

CREATE TABLE client_checkins (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    -- deviceName folded to lower case: Windows device names are case-insensitive
    device_key TEXT NOT NULL,
    user_principal_name TEXT,
    device_name TEXT NOT NULL,
    device_platform TEXT,
    device_platform_version TEXT,
    was_successful BOOLEAN NOT NULL,
    -- microseconds since the Unix epoch, UTC (server clock)
    checkin_date_time BIGINT NOT NULL,
    error_message TEXT,
    applied_policies TEXT NOT NULL DEFAULT '[]',
    last_task_name TEXT,
    PRIMARY KEY (tenant_id, user_id, device_key)
);

CREATE INDEX client_checkins_by_time ON client_checkins (tenant_id, checkin_date_time);

-- One row per (latest report, configuration it applied); time and outcome copied so the
-- per-configuration summary needs no join.
CREATE TABLE client_checkin_policies (
    tenant_id TEXT NOT NULL,
    configuration_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device_key TEXT NOT NULL,
    was_successful BOOLEAN NOT NULL,
    checkin_date_time BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, configuration_id, user_id, device_key)
);

CREATE INDEX client_checkin_policies_by_time
    ON client_checkin_policies (tenant_id, configuration_id, checkin_date_time);

-- A Graph PATCH of the check-in properties shows the patched values until the next check-in
-- in that scope clears this flag (DESIGN §3).
ALTER TABLE office_configurations ADD COLUMN checkin_override BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE client_configurations ADD COLUMN checkin_override BOOLEAN NOT NULL DEFAULT FALSE;
