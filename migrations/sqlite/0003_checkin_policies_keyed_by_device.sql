-- client_checkin_policies keyed by device first: (tenant, user, device, configuration).
--
-- Replacing a device's report deletes the applied-policy rows of its previous report by
-- (tenant, user, device). With the 0002 key, which leads with configuration_id, that delete
-- could use only the tenant_id prefix and scanned all of the tenant's applied-policy rows on
-- every check-in. Keyed by device, the delete is a key range, and one report's rows (one per
-- configuration it applied) sit together, so a check-in dirties one page of the key instead of
-- one per configuration. WITHOUT ROWID: the table is stored in key order, with no separate
-- rowid tree. The per-configuration views keep their index, by time.
CREATE TABLE client_checkin_policies_by_device (
    tenant_id TEXT NOT NULL,
    configuration_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device_key TEXT NOT NULL,
    was_successful INTEGER NOT NULL,
    checkin_date_time INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_id, device_key, configuration_id)
) WITHOUT ROWID;

INSERT INTO client_checkin_policies_by_device
    (tenant_id, configuration_id, user_id, device_key, was_successful, checkin_date_time)
    SELECT tenant_id, configuration_id, user_id, device_key, was_successful, checkin_date_time
    FROM client_checkin_policies;

DROP TABLE client_checkin_policies;
ALTER TABLE client_checkin_policies_by_device RENAME TO client_checkin_policies;

CREATE INDEX client_checkin_policies_by_time
    ON client_checkin_policies (tenant_id, configuration_id, checkin_date_time);
