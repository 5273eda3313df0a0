//! The transport-independent core of ingest: validated events become records on the
//! feedback topic, and the caller hears OK only after the broker acknowledged them.
//! Nothing invalid is published; a failed publish is UNAVAILABLE, never a silent accept.

use crate::error::IngestError;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use cxgap_bus::{BusError, Publisher, Record, headers};
use cxgap_domain::{FeedbackEvent, InternalAssessment, Timestamp, Violations};
use cxgap_proto::convert;
use prost::Message;
use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::{debug, warn};

pub const FEEDBACK_SCHEMA: &str = "cxgap.common.v1.FeedbackEvent";
pub const ASSESSMENT_SCHEMA: &str = "cxgap.common.v1.InternalAssessment";
pub const SCHEMA_VERSION: &str = "1";

/// Recently accepted (tenant, event id) pairs, so a client's retry is answered
/// "duplicate" without publishing again. Bounded and per process: a retry that reaches
/// another replica, or comes after eviction, is published again and deduplicated by
/// analytics, which keys its state on the event id.
///
/// Pairs are kept as a 128-bit keyed hash (`PairHasher`: two SipHash-1-3 with random keys), not as
/// strings: no allocation per event on the hot path, 16 bytes an entry, and a collision
/// (which would answer a new event "duplicate") is as likely as 2^-90 over a full set, and
/// cannot be aimed at, the keys being secret and new in every process.
#[derive(Debug)]
struct RecentIds {
    set: HashSet<u128, BuildHasherDefault<rustc_hash::FxHasher>>,
    order: VecDeque<u128>,
    capacity: usize,
}

/// The keyed 128-bit hash of a (tenant, event id) pair; outside the lock, so requests
/// hash side by side.
#[derive(Debug, Default)]
struct PairHasher(RandomState, RandomState);

impl PairHasher {
    fn key(&self, tenant: &str, event_id: &str) -> u128 {
        let (a, b) = (self.0.hash_one((tenant, event_id)), self.1.hash_one((tenant, event_id)));
        ((a as u128) << 64) | b as u128
    }
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        RecentIds { set: HashSet::default(), order: VecDeque::new(), capacity }
    }

    fn contains(&self, k: u128) -> bool {
        self.set.contains(&k)
    }

    fn insert(&mut self, k: u128) {
        if self.set.insert(k) {
            self.order.push_back(k);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// Per-event counters summed over a request, so the metric families (a lock and a label
/// lookup each) are touched once per (channel, result), not once per event.
#[derive(Default)]
struct Tally(Vec<(&'static str, &'static str, u64)>);

impl Tally {
    fn add(&mut self, channel: &'static str, result: &'static str) {
        match self.0.iter_mut().find(|(c, r, _)| *c == channel && *r == result) {
            Some((_, _, n)) => *n += 1,
            None => self.0.push((channel, result, 1)),
        }
    }

    fn record(self, metrics: &Metrics) {
        for (channel, result, n) in self.0 {
            metrics.event(channel, result, n);
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub index: usize,
    pub event_id: String,
    pub violations: Violations,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub accepted: u32,
    pub duplicates: u32,
    /// Event ids answered as duplicates (already accepted recently).
    pub duplicate_ids: Vec<String>,
    pub rejected: Vec<Rejection>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_batch_events: usize,
    pub max_event_bytes: usize,
}

pub struct Ingestor<P> {
    publisher: Arc<P>,
    topic: String,
    limits: Limits,
    rate: RateLimiter,
    recent: Mutex<RecentIds>,
    pairs: PairHasher,
    pub metrics: Metrics,
}

impl<P> std::fmt::Debug for Ingestor<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor").field("topic", &self.topic).finish_non_exhaustive()
    }
}

pub fn now() -> Timestamp {
    Timestamp(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
}

fn bus_error(e: &BusError) -> IngestError {
    match e {
        BusError::Rejected(m) => IngestError::TooLarge(format!("the broker refused the record: {m}")),
        BusError::Unavailable(m) | BusError::Config(m) => {
            IngestError::Unavailable(format!("event backbone unavailable, nothing was accepted: {m}"))
        }
    }
}

impl<P: Publisher> Ingestor<P> {
    pub fn new(publisher: Arc<P>, topic: String, limits: Limits, rate: RateLimiter, metrics: Metrics) -> Self {
        Ingestor {
            publisher,
            topic,
            limits,
            rate,
            recent: Mutex::new(RecentIds::new(200_000)),
            pairs: PairHasher::default(),
            metrics,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn publisher(&self) -> &Arc<P> {
        &self.publisher
    }

    /// The record for an accepted event; takes the event, whose strings move into the payload.
    fn record(&self, tenant: &str, ev: FeedbackEvent, received: Timestamp) -> (Record, usize) {
        let key = format!("{tenant}/{}", ev.customer_id).into_bytes();
        let id = ev.event_id.as_bytes().to_vec();
        let payload = convert::feedback_into_pb(ev, tenant, received).encode_to_vec();
        let size = payload.len();
        let record = Record {
            topic: self.topic.clone(),
            key,
            payload,
            headers: vec![
                (headers::ID.into(), id),
                (headers::SCHEMA.into(), FEEDBACK_SCHEMA.into()),
                (headers::SCHEMA_VERSION.into(), SCHEMA_VERSION.into()),
                (headers::TENANT.into(), tenant.as_bytes().to_vec()),
            ],
        };
        (record, size)
    }

    /// Submits events already decoded and validated by the transport (`Err` = invalid).
    /// `atomic`: one invalid event rejects the whole request and nothing is published.
    #[tracing::instrument(skip_all, fields(tenant = %tenant, events = items.len()), err)]
    pub async fn submit(
        &self,
        tenant: &str,
        items: Vec<(String, Result<FeedbackEvent, Violations>)>,
        atomic: bool,
    ) -> Result<Outcome, IngestError> {
        if items.len() > self.limits.max_batch_events {
            return Err(IngestError::TooLarge(format!(
                "batch of {} events exceeds the limit of {}",
                items.len(),
                self.limits.max_batch_events
            )));
        }
        let received = now();
        let mut out = Outcome::default();
        let mut tally = Tally::default();
        let mut candidates: Vec<(Record, String, &'static str, u128)> = Vec::new();
        let mut in_request: HashSet<u128, BuildHasherDefault<rustc_hash::FxHasher>> = HashSet::default();
        for (index, (event_id, item)) in items.into_iter().enumerate() {
            let ev = match item {
                Ok(ev) => ev,
                Err(violations) => {
                    out.rejected.push(Rejection { index, event_id, violations });
                    continue;
                }
            };
            let channel = ev.channel.as_str();
            let key = self.pairs.key(tenant, &ev.event_id);
            let (record, size) = self.record(tenant, ev, received);
            if size > self.limits.max_event_bytes {
                let mut v = Violations::default();
                v.push(
                    "event",
                    format!("encoded size {size} bytes exceeds the limit of {}", self.limits.max_event_bytes),
                );
                out.rejected.push(Rejection { index, event_id, violations: v });
                continue;
            }
            if !in_request.insert(key) {
                out.duplicates += 1;
                out.duplicate_ids.push(event_id);
                tally.add(channel, "duplicate");
                continue;
            }
            candidates.push((record, event_id, channel, key));
        }
        let (recently, to_publish): (Vec<_>, Vec<_>) = {
            let recent = self.recent.lock().expect("recent lock");
            candidates.into_iter().partition(|c| recent.contains(c.3))
        };
        for (_, event_id, channel, _) in recently {
            out.duplicates += 1;
            out.duplicate_ids.push(event_id);
            tally.add(channel, "duplicate");
        }
        if !out.rejected.is_empty() {
            for r in &out.rejected {
                tally.add("unknown", "invalid");
                debug!(event_id = %r.event_id, violations = %r.violations, "rejected event");
            }
            if atomic {
                tally.record(&self.metrics);
                let mut all = Violations::default();
                for r in &out.rejected {
                    for v in r.violations.iter() {
                        all.push(format!("events[{}].{}", r.index, v.field), v.description.clone());
                    }
                }
                return Err(IngestError::invalid(all));
            }
        }
        if to_publish.is_empty() {
            tally.record(&self.metrics);
            return Ok(out);
        }
        if let Err(retry_after) = self.rate.acquire(tenant, to_publish.len(), Instant::now()) {
            for (_, _, ch, _) in &to_publish {
                tally.add(ch, "rate_limited");
            }
            tally.record(&self.metrics);
            return Err(IngestError::RateLimited { retry_after });
        }
        let started = Instant::now();
        let (records, meta): (Vec<Record>, Vec<(String, &'static str, u128)>) =
            to_publish.into_iter().map(|(r, id, ch, key)| (r, (id, ch, key))).unzip();
        let results = self.publisher.publish(records).await;
        self.metrics.produce_seconds.observe(started.elapsed().as_secs_f64());
        let mut first_error = None;
        let mut landed = Vec::with_capacity(results.len());
        for (r, (event_id, channel, key)) in results.iter().zip(meta) {
            match r {
                Ok(d) => {
                    debug!(event_id = %event_id, partition = d.partition, offset = d.offset, "published");
                    out.accepted += 1;
                    tally.add(channel, "accepted");
                    landed.push(key);
                }
                Err(e) => {
                    tally.add(channel, "unavailable");
                    warn!(event_id = %event_id, error = %e, "publish failed");
                    first_error.get_or_insert_with(|| bus_error(e));
                }
            }
        }
        {
            let mut recent = self.recent.lock().expect("recent lock");
            for key in landed {
                recent.insert(key);
            }
        }
        tally.record(&self.metrics);
        // Partial success is still a failure for the caller: it retries the whole request,
        // and the events that did land are answered as duplicates.
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// One event: invalid input is an error, not a rejection entry.
    #[tracing::instrument(skip_all, fields(tenant = %tenant, event_id = %event_id), err)]
    pub async fn submit_one(
        &self,
        tenant: &str,
        event_id: String,
        item: Result<FeedbackEvent, Violations>,
    ) -> Result<bool, IngestError> {
        let out = self.submit(tenant, vec![(event_id, item)], false).await?;
        if let Some(r) = out.rejected.into_iter().next() {
            if r.violations.iter().any(|v| v.field == "event" && v.description.contains("encoded size")) {
                return Err(IngestError::TooLarge(r.violations.to_string()));
            }
            return Err(IngestError::invalid(r.violations));
        }
        Ok(out.duplicates > 0)
    }

    pub async fn submit_assessment(&self, tenant: &str, a: InternalAssessment) -> Result<(), IngestError> {
        if let Err(retry_after) = self.rate.acquire(tenant, 1, Instant::now()) {
            return Err(IngestError::RateLimited { retry_after });
        }
        let record = Record {
            topic: self.topic.clone(),
            key: format!("{tenant}/_assessment/{}", a.touchpoint).into_bytes(),
            payload: convert::assessment_to_pb(&a, tenant).encode_to_vec(),
            headers: vec![
                (headers::ID.into(), a.assessment_id.clone().into_bytes()),
                (headers::SCHEMA.into(), ASSESSMENT_SCHEMA.into()),
                (headers::SCHEMA_VERSION.into(), SCHEMA_VERSION.into()),
                (headers::TENANT.into(), tenant.as_bytes().to_vec()),
            ],
        };
        match self.publisher.publish(vec![record]).await.pop() {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(bus_error(&e)),
            None => Err(IngestError::Internal("publisher returned no result".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_tell_tenants_apart_and_forget_the_oldest() {
        let (mut r, h) = (RecentIds::new(2), PairHasher::default());
        let (a, b, c) = (h.key("t1", "e1"), h.key("t2", "e1"), h.key("t1", "e2"));
        assert_eq!(a, h.key("t1", "e1"), "the same pair, the same key");
        assert!(a != b && a != c && b != c);
        // ("t1e", "1") is not ("t1", "e1"): the pair is hashed as a pair.
        assert_ne!(a, h.key("t1e", "1"));
        r.insert(a);
        r.insert(b);
        assert!(r.contains(a) && r.contains(b) && !r.contains(c));
        r.insert(c);
        assert!(!r.contains(a), "the oldest is evicted at capacity");
        assert!(r.contains(b) && r.contains(c));
    }

    #[test]
    fn tally_sums_per_channel_and_result() {
        let mut t = Tally::default();
        for (c, r) in [("web", "accepted"), ("web", "accepted"), ("email", "accepted"), ("web", "duplicate")] {
            t.add(c, r);
        }
        assert_eq!(t.0, vec![("web", "accepted", 2), ("email", "accepted", 1), ("web", "duplicate", 1)]);
    }
}
