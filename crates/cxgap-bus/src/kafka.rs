//! The bus over a Kafka-protocol broker, with rdkafka (librdkafka).
//!
//! The producer is idempotent with `acks=all`, so a record acknowledged once is on the
//! topic once, and a publish resolves only after that acknowledgement. A full local queue
//! is backpressure (wait and retry until the delivery deadline), never a drop. Blocking
//! librdkafka calls (metadata, flush) run off the async runtime.

use crate::{BusError, Consumed, Delivered, Publisher, Record, Subscriber, TopicSpec, headers};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port,host:port`
    pub brokers: String,
    /// How long a record may wait for the broker's acknowledgement before the publish
    /// fails as unavailable (librdkafka `message.timeout.ms`).
    pub delivery_timeout: Duration,
    /// How long a consumer-group member may be silent before its partitions move to the
    /// others (librdkafka `session.timeout.ms`): the takeover delay after a crash.
    pub session_timeout: Duration,
    /// The longest a consumer's fetch waits at the broker for records (librdkafka
    /// `fetch.wait.max.ms`); see [`KafkaConfig::consumer_client`].
    pub fetch_wait: Duration,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, ...).
    pub extra: Vec<(String, String)>,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            delivery_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(45),
            fetch_wait: Self::FETCH_WAIT,
            extra: Vec::new(),
        }
    }

    fn client(&self) -> ClientConfig {
        self.client_with(&[])
    }

    /// By default consumers ask the broker to answer a fetch within 10 ms even when it has
    /// nothing (librdkafka's default is 500 ms): a broker that does not answer a waiting
    /// fetch as soon as records arrive (tansu) adds up to that much per hop to the
    /// accepted-to-alert latency. 25 ms measured a p50 of 95–145 ms at 400 events/s, 10 ms
    /// 68–86 ms, side by side. Idle consumers cost a hundred fetches a second each, which
    /// Apache Kafka, answering as soon as records arrive, does not need.
    pub const FETCH_WAIT: Duration = Duration::from_millis(10);

    /// The settings every consumer of this configuration starts from: the brokers, the
    /// fetch wait, then `extra`. Public so that a baseline (the bench's bare consumer)
    /// asks the broker what the services' consumers ask.
    pub fn consumer_client(&self) -> ClientConfig {
        let wait = self.fetch_wait.as_millis().max(1).to_string();
        self.client_with(&[("fetch.wait.max.ms", wait.as_str())])
    }

    /// `defaults` first, so that settings given in `extra` win.
    fn client_with(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

fn classify(e: &KafkaError) -> BusError {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::TopicAuthorizationFailed,
        ) => BusError::Rejected(e.to_string()),
        _ => BusError::Unavailable(e.to_string()),
    }
}

/// The producer in use and how many times it has been replaced.
type Current = (u64, ThreadedProducer<Deliveries>);

/// What the broker answered for each record of one publish call, by position.
type Answers = Vec<Option<Result<Delivered, KafkaError>>>;

/// A publish call waiting for its records' delivery reports.
struct Call {
    answers: Answers,
    left: usize,
    done: tokio::sync::oneshot::Sender<Answers>,
}

/// Bits of a record's delivery opaque that hold its position in its call; the rest hold
/// the call's number.
const POSITION_BITS: u32 = 24;
const _: () = assert!(usize::BITS == 64, "a delivery opaque holds a call number and a position");

/// Routes each record's delivery report to its publish call, which waits on one channel
/// and is woken once, when its last record is answered. rdkafka's `FutureProducer`
/// allocates a channel and a boxed sender per record and wakes the caller for each (a
/// tenth of gRPC ingest's CPU went to allocation, freeing and wake-ups per record).
#[derive(Default)]
struct Deliveries {
    calls: std::sync::Mutex<(u64, HashMap<u64, Call>)>,
}

impl Deliveries {
    /// Registers a call of `n` records: its number and where its answers arrive. Number 0
    /// is an empty call's, never registered, so forgetting one touches no other call.
    fn open(&self, n: usize) -> (u64, tokio::sync::oneshot::Receiver<Answers>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if n == 0 {
            let _ = tx.send(Vec::new());
            return (0, rx);
        }
        let mut calls = self.calls.lock().expect("deliveries lock");
        let (next, open) = &mut *calls;
        let id = (*next).max(1);
        *next = (id + 1) & ((1u64 << (usize::BITS - POSITION_BITS)) - 1);
        open.insert(id, Call { answers: vec![None; n], left: n, done: tx });
        (id, rx)
    }

    fn opaque(call: u64, position: usize) -> usize {
        ((call as usize) << POSITION_BITS) | position
    }

    /// Records one record's answer; the call's last answer hands them all to the caller.
    fn answer(&self, call: u64, position: usize, answer: Result<Delivered, KafkaError>) {
        let mut calls = self.calls.lock().expect("deliveries lock");
        let Some(c) = calls.1.get_mut(&call) else {
            return; // the caller gave up waiting (see `publish`)
        };
        if let Some(slot) = c.answers.get_mut(position).filter(|a| a.is_none()) {
            *slot = Some(answer);
            c.left -= 1;
        }
        if c.left == 0
            && let Some(c) = calls.1.remove(&call)
        {
            drop(calls);
            let _ = c.done.send(c.answers);
        }
    }

    /// Forgets a call whose caller stopped waiting: answers that come later are dropped.
    fn close(&self, call: u64) {
        self.calls.lock().expect("deliveries lock").1.remove(&call);
    }
}

/// Forgets its call when dropped: a publish abandoned halfway (its caller went away while
/// it waited for room in the local queue) leaves records that will never be reported, and
/// its call would otherwise wait for them forever. Harmless after the call completed.
struct Forget<'a>(&'a Deliveries, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.close(self.1);
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let answer = match result {
            Ok(m) => Ok(Delivered { partition: m.partition(), offset: m.offset() }),
            Err((e, _)) => Err(e.clone()),
        };
        let mask = (1usize << POSITION_BITS) - 1;
        self.answer((opaque >> POSITION_BITS) as u64, opaque & mask, answer);
    }
}

#[derive(Clone)]
pub struct KafkaPublisher {
    producer: Arc<RwLock<Current>>,
    /// When the producer was last replaced, to bound replacements during an outage.
    replaced_at: Arc<std::sync::Mutex<Instant>>,
    config: KafkaConfig,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher").field("brokers", &self.config.brokers).finish()
    }
}

/// Errors after which this producer instance should be replaced. Seen in practice: when
/// in-flight records time out (broker stopped), the epoch bump that follows can be answered
/// ProducerFenced and the instance is dead for good; after a broker restart, a producer
/// holding the old broker's producer id only times out. Timeouts also happen during a plain
/// outage, so replacements are rate-limited by the caller.
fn needs_new_producer(e: &KafkaError, producer: &ThreadedProducer<Deliveries>) -> bool {
    producer.client().fatal_error().is_some()
        || matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::Fatal
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::UnknownProducerId
                    | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    | RDKafkaErrorCode::MessageTimedOut
            )
        )
}

impl KafkaPublisher {
    pub fn new(config: KafkaConfig) -> Result<Self, BusError> {
        let producer = Self::create(&config)?;
        Ok(KafkaPublisher {
            producer: Arc::new(RwLock::new((0, producer))),
            replaced_at: Arc::new(std::sync::Mutex::new(Instant::now())),
            config,
        })
    }

    fn create(config: &KafkaConfig) -> Result<ThreadedProducer<Deliveries>, BusError> {
        config
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", config.delivery_timeout.as_millis().to_string())
            .set("linger.ms", "5")
            .create_with_context(Deliveries::default())
            .map_err(|e| BusError::Config(e.to_string()))
    }

    fn current(&self) -> Current {
        self.producer.read().expect("producer lock").clone()
    }

    /// Replaces a producer that hit a fatal error with a fresh one (new producer id).
    /// Records it failed were reported as failed, so callers retry them; nothing that
    /// was acknowledged is affected.
    fn replace(&self, generation: u64, e: &KafkaError) {
        let mut slot = self.producer.write().expect("producer lock");
        if slot.0 != generation {
            return; // another task already replaced it
        }
        let mut at = self.replaced_at.lock().expect("replace lock");
        let fatal = slot.1.client().fatal_error().is_some();
        if !fatal && at.elapsed() < self.config.delivery_timeout {
            return;
        }
        *at = Instant::now();
        match Self::create(&self.config) {
            Ok(p) => {
                warn!(error = %e, generation = generation + 1, "producer hit a fatal error; replaced it");
                *slot = (generation + 1, p);
            }
            Err(err) => warn!(error = %err, "could not replace the failed producer"),
        }
    }

    fn admin(&self) -> Result<AdminClient<DefaultClientContext>, BusError> {
        self.config.client().create().map_err(|e| BusError::Config(e.to_string()))
    }
}

fn owned_headers(headers: &[(Cow<'static, str>, Vec<u8>)]) -> OwnedHeaders {
    headers.iter().fold(OwnedHeaders::new_with_capacity(headers.len()), |h, (k, v)| {
        h.insert(Header { key: k, value: Some(v.as_slice()) })
    })
}

impl Publisher for KafkaPublisher {
    async fn publish(&self, records: Vec<Record>) -> Vec<Result<Delivered, BusError>> {
        const MAX: usize = 1 << POSITION_BITS;
        if records.len() > MAX {
            let e = format!("a publish holds at most {MAX} records; this one had {}", records.len());
            return records.iter().map(|_| Err(BusError::Rejected(e.clone()))).collect();
        }
        let (generation, producer) = self.current();
        let deliveries = producer.context().clone();
        let deadline = Instant::now() + self.config.delivery_timeout;
        let (call, answers) = deliveries.open(records.len());
        let _forget = Forget(&deliveries, call);
        for (position, r) in records.iter().enumerate() {
            let mut br = BaseRecord::with_opaque_to(&r.topic, Deliveries::opaque(call, position))
                .key(&r.key)
                .payload(&r.payload)
                .headers(owned_headers(&r.headers));
            loop {
                match producer.send(br) {
                    Ok(()) => break,
                    Err((e @ KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // Backpressure: the local queue drains as the broker acknowledges.
                        if Instant::now() >= deadline {
                            deliveries.answer(call, position, Err(e));
                            break;
                        }
                        br = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        deliveries.answer(call, position, Err(e));
                        break;
                    }
                }
            }
        }
        // librdkafka reports every record it took within `message.timeout.ms`; the margin
        // only guards against a report that never comes.
        let margin = self.config.delivery_timeout + Duration::from_secs(30);
        let answers = match tokio::time::timeout_at((deadline + margin).into(), answers).await {
            Ok(Ok(a)) => a,
            _ => {
                // `_forget` drops the call: reports that come later are ignored.
                warn!(records = records.len(), "delivery reports did not arrive; the records count as failed");
                vec![None; records.len()]
            }
        };
        let mut fatal: Option<KafkaError> = None;
        let out = answers
            .into_iter()
            .map(|a| match a {
                Some(Ok(d)) => Ok(d),
                Some(Err(e)) => {
                    if needs_new_producer(&e, &producer) {
                        fatal.get_or_insert(e.clone());
                    }
                    Err(match e {
                        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                            BusError::Unavailable("producer queue stayed full".into())
                        }
                        e => classify(&e),
                    })
                }
                None => Err(BusError::Unavailable("no delivery report from the producer".into())),
            })
            .collect();
        if let Some(e) = fatal {
            self.replace(generation, &e);
        }
        out
    }

    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), BusError> {
        let admin = self.admin()?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(t.replication)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(self.config.delivery_timeout));
        let results = admin.create_topics(new.iter(), &opts).await.map_err(|e| classify(&e))?;
        for r in results {
            match r {
                Ok(name) => debug!(topic = %name, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(BusError::Unavailable(format!("creating topic {name}: {code}"))),
            }
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), BusError> {
        let producer = self.current().1;
        let timeout = Duration::from_secs(2);
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, timeout).map(|_| ()))
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<(i32, i64)>, BusError> {
        let producer = self.current().1;
        let topic = topic.to_string();
        let timeout = Duration::from_secs(5);
        tokio::task::spawn_blocking(move || {
            let client = producer.client();
            let md = client.fetch_metadata(Some(&topic), timeout).map_err(|e| classify(&e))?;
            let partitions: Vec<i32> = md.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
            partitions
                .into_iter()
                .map(|p| {
                    client.fetch_watermarks(&topic, p, timeout).map(|(_, high)| (p, high)).map_err(|e| classify(&e))
                })
                .collect()
        })
        .await
        .map_err(|e| BusError::Unavailable(e.to_string()))?
    }

    async fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        let producer = self.current().1;
        let left = tokio::task::spawn_blocking(move || {
            let r = producer.flush(timeout);
            (r, producer.in_flight_count())
        })
        .await
        .map_err(|e| BusError::Unavailable(e.to_string()))?;
        match left {
            (Ok(()), 0) => Ok(()),
            (r, n) => {
                warn!(in_flight = n, error = ?r.err(), "producer flush left records unacknowledged");
                Err(BusError::Unavailable(format!("{n} records still unacknowledged after flush")))
            }
        }
    }
}

/// A consumer-group member. Offsets are committed only when the caller says the work is
/// durable (`enable.auto.commit=false`).
pub struct KafkaSubscriber {
    consumer: StreamConsumer,
}

impl std::fmt::Debug for KafkaSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSubscriber").finish_non_exhaustive()
    }
}

impl KafkaSubscriber {
    pub fn new(config: &KafkaConfig, group: &str, topics: &[&str]) -> Result<Self, BusError> {
        let consumer: StreamConsumer = config
            .consumer_client()
            .set("group.id", group)
            .set("session.timeout.ms", config.session_timeout.as_millis().to_string())
            .set("heartbeat.interval.ms", (config.session_timeout.as_millis() / 3).max(100).to_string())
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create()
            .map_err(|e| BusError::Config(e.to_string()))?;
        consumer.subscribe(topics).map_err(|e| classify(&e))?;
        Ok(KafkaSubscriber { consumer })
    }

    /// A consumer that joins no group: partitions come only through `assign`.
    pub fn unassigned(config: &KafkaConfig, group: &str) -> Result<Self, BusError> {
        let consumer: StreamConsumer = config
            .consumer_client()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create()
            .map_err(|e| BusError::Config(e.to_string()))?;
        Ok(KafkaSubscriber { consumer })
    }
}

impl Subscriber for KafkaSubscriber {
    async fn next(&mut self) -> Result<Consumed, BusError> {
        let m = self.consumer.recv().await.map_err(|e| classify(&e))?;
        let headers = m
            .headers()
            .map(|h| h.iter().map(|x| (headers::name(x.key), x.value.unwrap_or_default().to_vec())).collect())
            .unwrap_or_default();
        Ok(Consumed {
            record: Record {
                topic: m.topic().to_string(),
                key: m.key().unwrap_or_default().to_vec(),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
            },
            partition: m.partition(),
            offset: m.offset(),
        })
    }

    fn commit(&mut self, topic: &str, partition: i32, offset: i64) -> Result<(), BusError> {
        let mut tpl = TopicPartitionList::new();
        // Kafka commits the next offset to read.
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset + 1)).map_err(|e| classify(&e))?;
        self.consumer.commit(&tpl, CommitMode::Async).map_err(|e| classify(&e))
    }

    fn assign(&mut self, topic: &str, partitions: &[(i32, i64)]) -> Result<(), BusError> {
        let mut tpl = TopicPartitionList::new();
        for (p, offset) in partitions {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*offset)).map_err(|e| classify(&e))?;
        }
        self.consumer.assign(&tpl).map_err(|e| classify(&e))
    }

    fn seek(&mut self, topic: &str, partition: i32, offset: i64) -> Result<(), BusError> {
        self.consumer.seek(topic, partition, Offset::Offset(offset), Duration::from_secs(10)).map_err(|e| classify(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;

    #[tokio::test]
    async fn delivery_reports_reach_their_own_call_in_any_order() {
        let d = Deliveries::default();
        let (a, ra) = d.open(3);
        let (b, rb) = d.open(2);
        assert_ne!(a, b);
        let at = |partition, offset| Ok(Delivered { partition, offset });
        // Interleaved and out of order, as the producer's thread reports partition by partition.
        d.answer(b, 1, at(1, 7));
        d.answer(a, 2, at(0, 12));
        d.answer(a, 0, at(0, 10));
        d.answer(a, 0, at(9, 9)); // a second report for one record changes nothing
        d.answer(b, 0, Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)));
        let b_answers = rb.await.expect("b is complete");
        assert_eq!(b_answers[1], Some(at(1, 7)));
        assert!(matches!(b_answers[0], Some(Err(_))));
        d.answer(a, 1, at(1, 3));
        assert_eq!(ra.await.expect("a is complete"), vec![Some(at(0, 10)), Some(at(1, 3)), Some(at(0, 12))]);
        assert!(d.calls.lock().unwrap().1.is_empty(), "complete calls are forgotten");

        // A call whose caller stopped waiting ignores late reports; an empty one is done at once.
        let (c, _rc) = d.open(1);
        d.close(c);
        d.answer(c, 0, at(0, 1));
        assert!(d.calls.lock().unwrap().1.is_empty());
        // A publish dropped halfway forgets its call.
        let (e, _re) = d.open(2);
        drop(Forget(&d, e));
        assert!(d.calls.lock().unwrap().1.is_empty(), "an abandoned call is not kept");
        assert_eq!(d.open(0).1.await.unwrap(), Vec::new());
        // Forgetting an empty call leaves every other call alone, the first one included.
        let fresh = Deliveries::default();
        let (f, rf) = fresh.open(1);
        let (empty, _) = fresh.open(0);
        assert_ne!(f, empty);
        drop(Forget(&fresh, empty));
        fresh.answer(f, 0, at(2, 4));
        assert_eq!(rf.await.expect("f is complete"), vec![Some(at(2, 4))]);
        // Call numbers and positions survive the round trip through the opaque.
        let opaque = Deliveries::opaque(a, 5);
        assert_eq!(((opaque >> POSITION_BITS) as u64, opaque & ((1 << POSITION_BITS) - 1)), (a, 5));
    }

    #[tokio::test]
    async fn concurrent_publishes_each_get_their_own_acknowledgements() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 3, 1).unwrap();
        let publisher = KafkaPublisher::new(KafkaConfig::new(cluster.bootstrap_servers())).unwrap();
        let calls = (0..8).map(|c| {
            let publisher = publisher.clone();
            tokio::spawn(async move {
                let recs: Vec<Record> = (0..150)
                    .map(|i| Record {
                        topic: "t".into(),
                        key: format!("k{}", i % 7).into_bytes(),
                        payload: format!("{c}-{i}").into_bytes(),
                        headers: vec![],
                    })
                    .collect();
                publisher.publish(recs).await
            })
        });
        let mut seen = std::collections::HashSet::new();
        for call in calls {
            let acks = call.await.unwrap();
            assert_eq!(acks.len(), 150);
            for a in acks {
                let d = a.expect("acknowledged");
                assert!(seen.insert((d.partition, d.offset)), "one position per record: {d:?}");
            }
        }
        assert_eq!(seen.len(), 1200);
    }

    #[tokio::test]
    async fn publishes_and_reads_back_through_the_mock_cluster() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 2, 1).unwrap();
        let config = KafkaConfig::new(cluster.bootstrap_servers());
        let publisher = KafkaPublisher::new(config.clone()).unwrap();
        publisher.check().await.unwrap();
        let recs: Vec<Record> = (0..20)
            .map(|i| Record {
                topic: "t".into(),
                key: format!("k{}", i % 3).into_bytes(),
                payload: format!("p{i}").into_bytes(),
                headers: vec![(headers::ID.into(), format!("id-{i}").into_bytes())],
            })
            .collect();
        let acks = publisher.publish(recs.clone()).await;
        assert!(acks.iter().all(Result::is_ok), "{acks:?}");
        publisher.flush(Duration::from_secs(5)).await.unwrap();

        let mut sub = KafkaSubscriber::new(&config, "g", &["t"]).unwrap();
        let mut got = Vec::new();
        while got.len() < recs.len() {
            let c = tokio::time::timeout(Duration::from_secs(20), sub.next()).await.expect("records arrive").unwrap();
            sub.commit("t", c.partition, c.offset).unwrap();
            got.push(c.record);
        }
        got.sort_by(|a, b| a.payload.cmp(&b.payload));
        let mut want = recs;
        want.sort_by(|a, b| a.payload.cmp(&b.payload));
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_unavailable_not_accepted() {
        let mut config = KafkaConfig::new("127.0.0.1:1");
        config.delivery_timeout = Duration::from_millis(500);
        let publisher = KafkaPublisher::new(config).unwrap();
        let r = publisher
            .publish(vec![Record { topic: "t".into(), key: b"k".to_vec(), payload: b"p".to_vec(), headers: vec![] }])
            .await;
        assert!(matches!(r[0], Err(BusError::Unavailable(_))), "{r:?}");
        assert!(publisher.check().await.is_err());
    }
}
