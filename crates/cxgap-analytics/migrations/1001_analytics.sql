-- Analytics state. Portable SQL: the same migration runs on PostgreSQL and on the SQLite
-- file of embedded mode. Written only in one transaction per consumed batch, together
-- with the partition's next offset, so a crash never loses or double-counts an event.

-- Where each partition's processing stands; the fence against a zombie instance.
CREATE TABLE IF NOT EXISTS analytics_offsets (
    consumer_group TEXT NOT NULL,
    topic          TEXT NOT NULL,
    partition_id   BIGINT NOT NULL,
    next_offset    BIGINT NOT NULL,
    PRIMARY KEY (consumer_group, topic, partition_id)
);

-- Event ids already applied, kept for the dedup window.
CREATE TABLE IF NOT EXISTS analytics_processed (
    tenant_id    TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX IF NOT EXISTS analytics_processed_by_time ON analytics_processed (processed_at);

-- Aggregate cells: one row per tenant, day, channel, stage, touchpoint and segment. The
-- v columns are CellAgg::to_row; batches add their deltas column-wise.
CREATE TABLE IF NOT EXISTS analytics_cells (
    tenant_id  TEXT NOT NULL,
    day        BIGINT NOT NULL,
    channel    TEXT NOT NULL,
    stage      TEXT NOT NULL,
    touchpoint TEXT NOT NULL,
    segment    TEXT NOT NULL,
    v0 BIGINT NOT NULL,
    v1 BIGINT NOT NULL,
    v2 BIGINT NOT NULL,
    v3 BIGINT NOT NULL,
    v4 BIGINT NOT NULL,
    v5 BIGINT NOT NULL,
    v6 BIGINT NOT NULL,
    v7 BIGINT NOT NULL,
    v8 BIGINT NOT NULL,
    v9 BIGINT NOT NULL,
    v10 BIGINT NOT NULL,
    v11 BIGINT NOT NULL,
    v12 BIGINT NOT NULL,
    v13 BIGINT NOT NULL,
    v14 BIGINT NOT NULL,
    v15 BIGINT NOT NULL,
    v16 BIGINT NOT NULL,
    v17 BIGINT NOT NULL,
    v18 BIGINT NOT NULL,
    v19 BIGINT NOT NULL,
    v20 BIGINT NOT NULL,
    v21 BIGINT NOT NULL,
    v22 BIGINT NOT NULL,
    v23 BIGINT NOT NULL,
    v24 BIGINT NOT NULL,
    v25 BIGINT NOT NULL,
    v26 BIGINT NOT NULL,
    v27 BIGINT NOT NULL,
    v28 BIGINT NOT NULL,
    v29 BIGINT NOT NULL,
    v30 BIGINT NOT NULL,
    v31 BIGINT NOT NULL,
    v32 BIGINT NOT NULL,
    v33 BIGINT NOT NULL,
    v34 BIGINT NOT NULL,
    v35 BIGINT NOT NULL,
    v36 BIGINT NOT NULL,
    v37 BIGINT NOT NULL,
    v38 BIGINT NOT NULL,
    v39 BIGINT NOT NULL,
    v40 BIGINT NOT NULL,
    v41 BIGINT NOT NULL,
    v42 BIGINT NOT NULL,
    v43 BIGINT NOT NULL,
    v44 BIGINT NOT NULL,
    v45 BIGINT NOT NULL,
    v46 BIGINT NOT NULL,
    v47 BIGINT NOT NULL,
    v48 BIGINT NOT NULL,
    v49 BIGINT NOT NULL,
    v50 BIGINT NOT NULL,
    v51 BIGINT NOT NULL,
    v52 BIGINT NOT NULL,
    v53 BIGINT NOT NULL,
    v54 BIGINT NOT NULL,
    v55 BIGINT NOT NULL,
    v56 BIGINT NOT NULL,
    v57 BIGINT NOT NULL,
    v58 BIGINT NOT NULL,
    v59 BIGINT NOT NULL,
    v60 BIGINT NOT NULL,
    v61 BIGINT NOT NULL,
    v62 BIGINT NOT NULL,
    v63 BIGINT NOT NULL,
    v64 BIGINT NOT NULL,
    v65 BIGINT NOT NULL,
    v66 BIGINT NOT NULL,
    v67 BIGINT NOT NULL,
    v68 BIGINT NOT NULL,
    v69 BIGINT NOT NULL,
    v70 BIGINT NOT NULL,
    v71 BIGINT NOT NULL,
    v72 BIGINT NOT NULL,
    v73 BIGINT NOT NULL,
    v74 BIGINT NOT NULL,
    v75 BIGINT NOT NULL,
    v76 BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, day, channel, stage, touchpoint, segment)
);

-- Per-customer state (JSON of CustomerState), written by the partition's owner only.
CREATE TABLE IF NOT EXISTS analytics_customers (
    tenant_id   TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    state       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
);

-- Management's latest assessment per touchpoint, stage, instrument and assessor.
CREATE TABLE IF NOT EXISTS analytics_assessments (
    tenant_id   TEXT NOT NULL,
    touchpoint  TEXT NOT NULL,
    stage       TEXT NOT NULL,
    instrument  TEXT NOT NULL,
    assessor    TEXT NOT NULL,
    assessed_at BIGINT NOT NULL,
    id_hash     TEXT NOT NULL,
    assessment  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, touchpoint, stage, instrument, assessor)
);
