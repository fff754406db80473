-- client_checkin_policies keyed (tenant, configuration, time, user, device), with no other
-- index: the key is the per-configuration views' order, and an applied report's rows are
-- found by their exact keys.
--
-- Applying a report used to write two index entries per applied-policy row (the device-first
-- key of 0003 and the by-time index). Replacing a device's report now deletes the previous
-- report's rows by their exact keys, which the stored report gives (its time and
-- `applied_policies`), before the new one is stored (applying is serialized by an advisory
-- lock, so no other transaction changes a stored report in between); the device-first key is
-- no longer needed, and the by-time index becomes the key. See decision 11 in
-- docs/decisions.md.
DROP INDEX client_checkin_policies_by_time;
ALTER TABLE client_checkin_policies DROP CONSTRAINT client_checkin_policies_pkey;
ALTER TABLE client_checkin_policies
    ADD PRIMARY KEY (tenant_id, configuration_id, checkin_date_time, user_id, device_key);
