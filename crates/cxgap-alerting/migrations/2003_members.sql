-- Partition assignment coordinated through the database (CXGAP_PARTITION_ASSIGNMENT=database),
-- as analytics does: each instance renews a lease here; the live instances, in id order,
-- share the signal partitions round-robin. Offsets are fenced per partition.
CREATE TABLE IF NOT EXISTS alerting_members (
    consumer_group TEXT NOT NULL,
    member_id      TEXT NOT NULL,
    heartbeat_at   BIGINT NOT NULL,
    PRIMARY KEY (consumer_group, member_id)
);
