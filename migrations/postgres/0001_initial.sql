-- Every key leads with tenant_id so the schema distributes by tenant (Citus: distribute every
-- table by tenant_id; see docs/scaling.md). Same version numbers as migrations/sqlite.

-- The per-tenant officeConfiguration singleton. Its row is also the tenant's write lock
-- (SELECT ... FOR UPDATE).
CREATE TABLE office_configurations (
    tenant_id TEXT NOT NULL PRIMARY KEY,
    id TEXT NOT NULL,
    tenant_checkin_statuses TEXT NOT NULL DEFAULT '[]',
    tenant_user_checkin_summary TEXT NOT NULL DEFAULT '{}',
    version BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE client_configurations (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    odata_type TEXT NOT NULL,
    display_name TEXT,
    description TEXT,
    priority INTEGER NOT NULL,
    policy_payload BYTEA,
    user_preference_payload BYTEA,
    checkin_statuses TEXT NOT NULL DEFAULT '[]',
    user_checkin_summary TEXT NOT NULL DEFAULT '{}',
    -- microseconds since the Unix epoch, UTC
    last_modified_date_time BIGINT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE INDEX client_configurations_by_priority ON client_configurations (tenant_id, priority, id);

CREATE TABLE client_configuration_assignments (
    tenant_id TEXT NOT NULL,
    configuration_id TEXT NOT NULL,
    id TEXT NOT NULL,
    position BIGINT NOT NULL,
    target_type TEXT NOT NULL,
    group_id TEXT,
    version BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, configuration_id, id),
    FOREIGN KEY (tenant_id, configuration_id)
        REFERENCES client_configurations (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX client_configuration_assignments_by_group
    ON client_configuration_assignments (tenant_id, group_id);
