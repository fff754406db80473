-- client_checkin_policies keyed (tenant, configuration, time, user, device), with no other
-- index: the key is the per-configuration views' order, and an applied report's rows are
-- found by their exact keys.
--
-- Applying a report used to write each applied-policy row twice (the device-first key of
-- 0003 and the by-time index). Replacing a device's report now deletes the previous report's
-- rows by their exact keys, which the stored report gives (its time and `applied_policies`),
-- before the new one is stored; the device-first key is no longer needed, and the by-time
-- index becomes the key. Measured applying 160 k logged reports of new devices in runs of
-- 8,192: 20.3 → 10.6 µs of CPU per report (with half of them replacing a stored report:
-- 42.7 → 29.4 µs). See decision 11 in docs/decisions.md.
CREATE TABLE client_checkin_policies_keyed (
    tenant_id TEXT NOT NULL,
    configuration_id TEXT NOT NULL,
    checkin_date_time INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    device_key TEXT NOT NULL,
    was_successful INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, configuration_id, checkin_date_time, user_id, device_key)
) WITHOUT ROWID;

INSERT INTO client_checkin_policies_keyed
    (tenant_id, configuration_id, checkin_date_time, user_id, device_key, was_successful)
    SELECT tenant_id, configuration_id, checkin_date_time, user_id, device_key, was_successful
    FROM client_checkin_policies;

DROP TABLE client_checkin_policies;
ALTER TABLE client_checkin_policies_keyed RENAME TO client_checkin_policies;
