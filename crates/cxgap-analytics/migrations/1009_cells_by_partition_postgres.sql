-- PostgreSQL only, as the cells' other storage settings (SQLite takes one writer at a
-- time, so its batches never wait on each other's rows). A cell's sums are kept as one
-- row per feedback partition that wrote to it, and a read adds a cell's rows up (a
-- cell's row holds additive sums, so any split of them adds up to the same cell).
-- With one row per cell, batches of different partitions that touched a common cell
-- queued on its row lock: the second waited, holding the rows it had already locked,
-- until the first committed. With a day's feedback touching the same few thousand
-- cells, that made the partitions' batches take turns wherever they ran; in the
-- benchmark about half of the cell upsert's sampled time was such a wait, and analytics
-- read 12 % more events a second with a row per partition, in each of four alternated
-- pairs (`docs/benchmarks.md`, 2026-12-02, thirty-fourth run). A partition's batches run
-- one at a time, so its rows have one writer. Rows written before this migration stay
-- as partition 0's.
ALTER TABLE analytics_cells ADD COLUMN partition_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE analytics_cells DROP CONSTRAINT analytics_cells_pkey;
ALTER TABLE analytics_cells ADD PRIMARY KEY (tenant_id, day, channel, stage, touchpoint, segment, partition_id);
