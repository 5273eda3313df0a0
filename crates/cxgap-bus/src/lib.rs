//! The event backbone seam. Every service publishes and consumes through [`Publisher`]
//! and [`Subscriber`]; [`kafka`] implements them over a Kafka-protocol broker (rdkafka),
//! [`memory`] in-process for embedded mode. A publish resolves only once the record is
//! durable on the broker (`acks=all`), so "accepted" always means "on the topic".

pub mod consume;
pub mod kafka;
pub mod membership;
pub mod memory;
pub mod sql;

use std::borrow::Cow;
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

    /// A header name read off the wire: one of ours is borrowed, not allocated per record.
    pub fn name(k: &str) -> std::borrow::Cow<'static, str> {
        match [ID, SCHEMA, SCHEMA_VERSION, TENANT, REASON].into_iter().find(|n| *n == k) {
            Some(n) => n.into(),
            None => k.to_string().into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    /// Names are mostly the constants of [`headers`]: borrowed, not allocated per record.
    pub headers: Vec<(Cow<'static, str>, Vec<u8>)>,
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

    /// Reads `partition` of `topic` from `offset` on; records already fetched for it are
    /// dropped. The partition must be assigned (by the group or by `assign`).
    fn seek(&mut self, topic: &str, partition: i32, offset: i64) -> Result<(), BusError>;
}

/// Where to re-read a partition from when the broker delivered records beyond the offset
/// the database says is next (a gap). A broker may return fetches from the first record
/// batch at or after the requested offset instead of the batch containing it (tansu 0.6
/// does), so resuming mid-batch would silently skip records: rewind by a growing window
/// and let the processor skip what it has already applied. A gap that persists although
/// records before it were read, or after rewinding to the start, is genuinely in the log
/// (compaction, retention, transaction markers) and is accepted.
#[derive(Debug, Default)]
pub struct Rewinds {
    /// partition → (the stored offset the gap is at, the window last used).
    open: std::collections::HashMap<i32, (i64, i64)>,
}

/// What to do about a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapAction {
    /// Seek the partition to this offset and drop the batch in hand.
    Rewind(i64),
    /// The gap is in the log itself: process the batch as it is.
    Accept,
}

impl Rewinds {
    const FIRST_WINDOW: i64 = 256;

    /// A batch of `partition` starts beyond `expected`; `replayed` says whether it also
    /// held records before `expected` (read contiguously up to the gap).
    pub fn on_gap(&mut self, partition: i32, expected: i64, replayed: bool) -> GapAction {
        if replayed {
            self.open.remove(&partition);
            return GapAction::Accept;
        }
        let window = match self.open.get(&partition) {
            Some((at, w)) if *at == expected => {
                if *w >= expected {
                    self.open.remove(&partition);
                    return GapAction::Accept;
                }
                w.saturating_mul(4)
            }
            _ => Self::FIRST_WINDOW,
        };
        self.open.insert(partition, (expected, window));
        GapAction::Rewind((expected - window).max(0))
    }

    /// Whether a rewind of `partition` is under way (its batches are applied alone).
    pub fn rewinding(&self, partition: i32) -> bool {
        self.open.contains_key(&partition)
    }

    /// The partition continued where the database said: any rewind is over.
    pub fn resolved(&mut self, partition: i32) {
        self.open.remove(&partition);
    }
}

#[cfg(test)]
mod header_tests {
    use super::headers;
    use std::borrow::Cow;

    #[test]
    fn our_header_names_are_borrowed_others_kept_as_read() {
        for n in [headers::ID, headers::SCHEMA, headers::SCHEMA_VERSION, headers::TENANT, headers::REASON] {
            assert!(matches!(headers::name(n), Cow::Borrowed(b) if b == n), "{n}");
        }
        assert!(matches!(headers::name("traceparent"), Cow::Owned(o) if o == "traceparent"));
        assert!(matches!(headers::name("cxgap-id "), Cow::Owned(_)), "only an exact name is ours");
    }
}

#[cfg(test)]
mod rewind_tests {
    use super::*;

    #[test]
    fn rewinds_grow_until_the_start_then_accept() {
        let mut r = Rewinds::default();
        assert_eq!(r.on_gap(0, 1000, false), GapAction::Rewind(744));
        assert_eq!(r.on_gap(0, 1000, false), GapAction::Rewind(0), "window 1024 reaches the start");
        assert_eq!(r.on_gap(0, 1000, false), GapAction::Accept, "nothing before it: the log starts later");
        assert_eq!(r.on_gap(1, 50, false), GapAction::Rewind(0));
        r.resolved(1);
        assert_eq!(r.on_gap(1, 70, false), GapAction::Rewind(0), "a new gap starts over");
        assert_eq!(r.on_gap(2, 5000, true), GapAction::Accept, "records before the gap were read: it is real");
    }
}
