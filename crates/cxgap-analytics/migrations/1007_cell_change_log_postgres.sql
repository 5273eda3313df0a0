-- PostgreSQL only (SQLite, one writer in embedded mode, reads the window whole). Which
-- cells each batch changed: one row per tenant per batch, stamped with the batch's
-- transaction like the cells it wrote (migration 1004), holding the changed cells' keys
-- as arrays. When few cells changed since its last read, the aggregate evaluation reads
-- the rows stamped at or after the oldest transaction that read could not see (its
-- snapshot xmin), whatever order they committed in, and then only those cells, by their
-- key: its cost follows the changes, not the size of the window. `cells` is how many keys
-- the row holds: when the rows since a mark name a large part of the window, the
-- evaluation filters the window by the cells' stamps instead, as before. A batch of many
-- cells (a backlog's) logs its count without the keys (NULL arrays), which also sends the
-- evaluation to the stamps: writing the keys of such batches cost about 5 % of analytics'
-- throughput, for reads that would not use them.
CREATE TABLE analytics_cell_changes (
    tenant_id   TEXT     NOT NULL,
    changed_xid BIGINT   NOT NULL,
    cells       INTEGER  NOT NULL,
    days        BIGINT[],
    channels    TEXT[],
    stages      TEXT[],
    touchpoints TEXT[],
    segments    TEXT[]
);
CREATE INDEX analytics_cell_changes_by_tenant ON analytics_cell_changes (tenant_id, changed_xid);
-- The log is pruned below a transaction id that only grows. A read from a mark below it
-- could miss pruned changes, so it filters the window by the cells' stamps instead.
CREATE TABLE analytics_cell_changes_pruned (
    only_row  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    below_xid BIGINT  NOT NULL
);
INSERT INTO analytics_cell_changes_pruned (below_xid) VALUES (0);
