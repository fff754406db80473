-- client_checkin_policies keyed by device first: (tenant, user, device, configuration).
--
-- Replacing a device's report deletes the applied-policy rows of its previous report by
-- (tenant, user, device). With the 0002 key, which leads with configuration_id, that delete
-- could use only the tenant_id prefix and scanned all of the tenant's applied-policy rows on
-- every check-in. Keyed by device, the delete is a key range, and one report's rows (one per
-- configuration it applied) sit together in the key's index. The per-configuration views keep
-- their index, by time.
ALTER TABLE client_checkin_policies DROP CONSTRAINT client_checkin_policies_pkey;
ALTER TABLE client_checkin_policies
    ADD PRIMARY KEY (tenant_id, user_id, device_key, configuration_id);
