-- Which transaction last changed a cell, so the aggregate evaluation can read only the
-- cells that changed since its last read instead of the whole window every time. On
-- PostgreSQL a batch stamps the rows it upserts with pg_current_xact_id(); the
-- evaluation reads the rows stamped at or after the oldest transaction its previous read
-- could not see (that read's snapshot xmin), which covers every commit since, whatever
-- order they came in. Not indexed: an index would end HOT updates of the cells, and the
-- read filters the tenant's window rows without sending them. SQLite (embedded mode, one
-- writer) leaves it at 0 and reads the window whole.
ALTER TABLE analytics_cells ADD COLUMN changed_xid BIGINT NOT NULL DEFAULT 0;
