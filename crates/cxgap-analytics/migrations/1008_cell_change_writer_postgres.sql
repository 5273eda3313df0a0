-- PostgreSQL only, as the log itself (migration 1007). Which analytics instance wrote a
-- change: an instance applies its own batches' cell deltas to the window it keeps in
-- memory when they commit, so its aggregate evaluation reads back from the database only
-- the cells other instances changed. Reading its own changes back was most of the
-- evaluation's cost, and its periodic burst doubled the pipeline's latency p99 under load
-- (docs/benchmarks.md). NULL (rows written before this column) counts as another writer.
ALTER TABLE analytics_cell_changes ADD COLUMN writer BIGINT;
