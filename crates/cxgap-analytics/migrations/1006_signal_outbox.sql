-- The outbox proper, apart from the signals: a row per signal not yet published, with what
-- the relay sends, written in the batch's transaction with the signal and deleted once
-- the broker acknowledged it. A `published` flag on the signals made every publish
-- rewrite the signal's row and its two index entries (the flag was in the unpublished
-- index's predicate, so no update could be HOT); on PostgreSQL that update cost more than
-- inserting the signal did. The signals, the risk history, are now only ever inserted
-- and pruned, and keep no payload: nothing reads a payload after it was sent. Keyed in
-- publishing order, so the relay reads the oldest rows first without sorting the outbox,
-- however long it grew.
CREATE TABLE IF NOT EXISTS analytics_outbox (
    created_at BIGINT NOT NULL,
    signal_id  TEXT NOT NULL,
    tenant_id  TEXT NOT NULL,
    msg_key    TEXT NOT NULL,
    payload    TEXT NOT NULL,
    PRIMARY KEY (created_at, signal_id)
);
INSERT INTO analytics_outbox (created_at, signal_id, tenant_id, msg_key, payload)
    SELECT created_at, signal_id, tenant_id, msg_key, payload FROM analytics_signals WHERE published = 0;
DROP INDEX IF EXISTS analytics_signals_unpublished;
ALTER TABLE analytics_signals DROP COLUMN published;
ALTER TABLE analytics_signals DROP COLUMN payload;
