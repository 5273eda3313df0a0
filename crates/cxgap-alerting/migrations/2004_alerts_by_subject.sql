-- Each signal loads the alerts about its subject: by (tenant, subject), not a scan of
-- every alert of the tenant.
CREATE INDEX IF NOT EXISTS alerting_alerts_by_subject ON alerting_alerts (tenant_id, subject);
