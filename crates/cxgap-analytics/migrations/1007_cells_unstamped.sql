-- The cells no longer carry the transaction that last changed them: the aggregate
-- evaluation finds changed cells through the change log (migration 1008) instead of
-- filtering the tenant's whole window by this stamp, a read whose cost grew with the window
-- (170 ms every 2 s on the benchmark's data) rather than with what changed. An instance of
-- an older version still writing the stamp fails its batches after this migration, and
-- they are retried by the new version; nothing is applied twice or lost.
ALTER TABLE analytics_cells DROP COLUMN changed_xid;
