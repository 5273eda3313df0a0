-- The signal outbox. A customer's signal is written in the same transaction as the batch
-- that caused it, so a signal exists exactly when its cause was committed; the relay
-- publishes unpublished rows to cxgap.signals.v1 and marks them. Ids are content hashes:
-- recomputing unchanged figures inserts nothing. Customer signals double as the risk
-- history, kept for the retention period.
CREATE TABLE IF NOT EXISTS analytics_signals (
    signal_id  TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    msg_key    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    risk       DOUBLE PRECISION,
    payload    TEXT NOT NULL,
    published  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS analytics_signals_unpublished ON analytics_signals (created_at) WHERE published = 0;
CREATE INDEX IF NOT EXISTS analytics_signals_history ON analytics_signals (tenant_id, kind, subject, created_at);
