-- Alerting state. Portable SQL (PostgreSQL, and SQLite in embedded mode). Signals are
-- consumed like analytics consumes feedback: each batch's alert changes, notifications,
-- pending deliveries, seen signal ids and the partition's next offset commit together, so
-- a crash between "alert decided" and "alert delivered" loses nothing: the delivery rows
-- are already there when the process comes back.

CREATE TABLE IF NOT EXISTS alerting_offsets (
    consumer_group TEXT NOT NULL,
    topic          TEXT NOT NULL,
    partition_id   BIGINT NOT NULL,
    next_offset    BIGINT NOT NULL,
    PRIMARY KEY (consumer_group, topic, partition_id)
);

-- Signal ids already evaluated (analytics may publish a signal more than once).
CREATE TABLE IF NOT EXISTS alerting_signals_seen (
    tenant_id TEXT NOT NULL,
    signal_id TEXT NOT NULL,
    seen_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, signal_id)
);
CREATE INDEX IF NOT EXISTS alerting_signals_seen_age ON alerting_signals_seen (seen_at);

-- Tenants whose default rules were installed (once: deleting them later sticks).
CREATE TABLE IF NOT EXISTS alerting_tenants (
    tenant_id  TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS alerting_rules (
    tenant_id  TEXT NOT NULL,
    rule_id    TEXT NOT NULL,
    rule       TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, rule_id)
);

-- Risk points per customer, for risk-jump rules.
CREATE TABLE IF NOT EXISTS alerting_risk (
    tenant_id   TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    at          BIGINT NOT NULL,
    risk        DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, at)
);

-- One row per alert (fingerprint); `version` guards concurrent changes (consumer and API).
CREATE TABLE IF NOT EXISTS alerting_alerts (
    alert_id         TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    rule_id          TEXT NOT NULL,
    kind             TEXT NOT NULL,
    severity         TEXT NOT NULL,
    subject          TEXT NOT NULL,
    state            TEXT NOT NULL,
    episode          BIGINT NOT NULL,
    summary          TEXT NOT NULL,
    labels           TEXT NOT NULL,
    customer_value   DOUBLE PRECISION,
    started_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    last_notified_at BIGINT NOT NULL,
    version          BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerting_alerts_by_tenant ON alerting_alerts (tenant_id, state, updated_at);

CREATE TABLE IF NOT EXISTS alerting_transitions (
    alert_id TEXT NOT NULL,
    at       BIGINT NOT NULL,
    seq      BIGINT NOT NULL,
    state    TEXT NOT NULL,
    by_whom  TEXT NOT NULL,
    note     TEXT NOT NULL,
    PRIMARY KEY (alert_id, seq)
);

-- The notification log, in commit order: `seq` comes from the single cursor row, whose
-- update serialises writers, so a reader resuming after seq N never skips one.
CREATE TABLE IF NOT EXISTS alerting_cursor (
    id  INTEGER PRIMARY KEY,
    seq BIGINT NOT NULL
);
INSERT INTO alerting_cursor (id, seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS alerting_notifications (
    seq             BIGINT PRIMARY KEY,
    notification_id TEXT NOT NULL UNIQUE,
    tenant_id       TEXT NOT NULL,
    alert_id        TEXT NOT NULL,
    state           TEXT NOT NULL,
    at              BIGINT NOT NULL,
    silenced_by     TEXT NOT NULL,
    payload         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerting_notifications_by_tenant ON alerting_notifications (tenant_id, seq);

CREATE TABLE IF NOT EXISTS alerting_subscriptions (
    tenant_id       TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    subscription    TEXT NOT NULL,
    disabled_reason TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id)
);

-- The delivery outbox: one row per notification and webhook or Kafka subscription.
CREATE TABLE IF NOT EXISTS alerting_deliveries (
    notification_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    tenant_id       TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_at         BIGINT NOT NULL,
    last_error      TEXT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (notification_id, subscription_id)
);
CREATE INDEX IF NOT EXISTS alerting_deliveries_due ON alerting_deliveries (next_at) WHERE status = 'pending';

CREATE TABLE IF NOT EXISTS alerting_silences (
    tenant_id  TEXT NOT NULL,
    silence_id TEXT NOT NULL,
    silence    TEXT NOT NULL,
    ends_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, silence_id)
);
