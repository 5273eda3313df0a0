-- Partition assignment coordinated through the database (CXGAP_PARTITION_ASSIGNMENT=database):
-- each instance renews a lease here; the live instances, in id order, share the partitions
-- round-robin. Offsets are fenced per partition, so a moment of overlap during a handover
-- never applies a record twice.
CREATE TABLE IF NOT EXISTS analytics_members (
    consumer_group TEXT NOT NULL,
    member_id      TEXT NOT NULL,
    heartbeat_at   BIGINT NOT NULL,
    PRIMARY KEY (consumer_group, member_id)
);
