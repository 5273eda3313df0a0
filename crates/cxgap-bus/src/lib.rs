//! The event backbone seam. Every service publishes and consumes through [`Publisher`]
//! and [`Subscriber`]; [`kafka`] implements them over a Kafka-protocol broker (rdkafka),
//! [`memory`] in-process for embedded mode. A publish resolves only once the record is
//! durable on the broker (`acks=all`), so "accepted" always means "on the topic".

pub mod kafka;
pub mod memory;
pub mod sql;

use std::future::Future;
use std::time::Duration;

/// Standard headers every cxgap record carries.
pub mod headers {
    /// The record's own id (event id, signal id, alert notification id).
    pub const ID: &str = "cxgap-id";
    /// Fully qualified protobuf message name of the payload.
    pub const SCHEMA: &str = "cxgap-schema";
    /// Major version of that schema.
    pub const SCHEMA_VERSION: &str = "cxgap-schema-version";
    pub const TENANT: &str = "cxgap-tenant";
    /// Why a record went to a dead-letter topic.
    pub const REASON: &str = "cxgap-reason";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
    }
}

/// Where the broker stored a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The broker could not be reached or did not acknowledge in time: retry later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused this record (e.g. too large): retrying will not help.
    #[error("record rejected by the broker: {0}")]
    Rejected(String),
    #[error("bus configuration: {0}")]
    Config(String),
}

/// A topic to create at start-up when missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
}

pub trait Publisher: Send + Sync + 'static {
    /// Publishes records and resolves when each is acknowledged or failed, in order.
    fn publish(&self, records: Vec<Record>) -> impl Future<Output = Vec<Result<Delivered, BusError>>> + Send;

    /// Creates the topics that are missing.
    fn ensure_topics(&self, topics: &[TopicSpec]) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Whether the broker answers now (for readiness).
    fn check(&self) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Waits for everything in flight to be acknowledged, up to `timeout`.
    fn flush(&self, timeout: Duration) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Each partition's end (the offset its next record will get), for consumer lag.
    fn end_offsets(&self, topic: &str) -> impl Future<Output = Result<Vec<(i32, i64)>, BusError>> + Send;
}

/// A record as consumed, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub record: Record,
    pub partition: i32,
    pub offset: i64,
}

pub trait Subscriber: Send + 'static {
    /// The next record, waiting for one to arrive.
    fn next(&mut self) -> impl Future<Output = Result<Consumed, BusError>> + Send;

    /// Marks everything up to and including `offset` of `partition` as processed.
    fn commit(&mut self, topic: &str, partition: i32, offset: i64) -> Result<(), BusError>;

    /// Reads exactly these partitions of `topic` from these offsets from now on, instead of
    /// what the broker's group protocol assigns (for assignment coordinated elsewhere).
    fn assign(&mut self, topic: &str, partitions: &[(i32, i64)]) -> Result<(), BusError>;
}
