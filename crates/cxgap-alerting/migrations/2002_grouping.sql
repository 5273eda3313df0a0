-- Grouping of webhook deliveries (per subscription, by label values): deliveries of one
-- group wait together and leave as one request, sealed into a batch on the first attempt
-- so every retry sends the same batch under the same id.
ALTER TABLE alerting_deliveries ADD COLUMN group_key TEXT NOT NULL DEFAULT '';
ALTER TABLE alerting_deliveries ADD COLUMN batch_id TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS alerting_deliveries_group ON alerting_deliveries (tenant_id, subscription_id, group_key, status);

-- When each group last left, so the next batch waits for the group interval.
CREATE TABLE IF NOT EXISTS alerting_groups (
    tenant_id       TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    group_key       TEXT NOT NULL,
    last_sent_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id, group_key)
);
