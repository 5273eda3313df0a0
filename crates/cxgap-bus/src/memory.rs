//! The in-process bus of embedded mode: an append-only log per topic partition in memory,
//! with the same publish/consume contract as Kafka (keys pick partitions, offsets grow,
//! consumers resume from committed offsets).

use crate::{BusError, Consumed, Delivered, Publisher, Record, Subscriber, TopicSpec};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Topic {
    partitions: Vec<Vec<Record>>,
}

#[derive(Debug, Default)]
struct Inner {
    topics: Mutex<HashMap<String, Topic>>,
    committed: Mutex<HashMap<(String, String, i32), i64>>,
    appended: Notify,
}

/// Cheap to clone; clones share the log.
#[derive(Debug, Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

fn partition_of(key: &[u8], partitions: usize) -> usize {
    // FNV-1a: stable, so a key always lands on the same partition.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % partitions as u64) as usize
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record of a topic, partition by partition (for tests and the demo).
    pub fn records(&self, topic: &str) -> Vec<Consumed> {
        let topics = self.inner.topics.lock().expect("bus lock");
        let Some(t) = topics.get(topic) else { return Vec::new() };
        t.partitions
            .iter()
            .enumerate()
            .flat_map(|(p, log)| {
                log.iter().enumerate().map(move |(o, r)| Consumed {
                    record: r.clone(),
                    partition: p as i32,
                    offset: o as i64,
                })
            })
            .collect()
    }

    /// A consumer in `group` reading `topics` from the group's committed offsets.
    pub fn subscribe(&self, group: &str, topics: &[&str]) -> MemorySubscriber {
        MemorySubscriber {
            bus: self.clone(),
            group: group.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            positions: HashMap::new(),
            assigned: None,
        }
    }
}

impl Publisher for MemoryBus {
    async fn publish(&self, records: Vec<Record>) -> Vec<Result<Delivered, BusError>> {
        let mut out = Vec::with_capacity(records.len());
        {
            let mut topics = self.inner.topics.lock().expect("bus lock");
            for r in records {
                let Some(t) = topics.get_mut(&r.topic) else {
                    out.push(Err(BusError::Rejected(format!("unknown topic {}", r.topic))));
                    continue;
                };
                let p = partition_of(&r.key, t.partitions.len());
                t.partitions[p].push(r);
                out.push(Ok(Delivered { partition: p as i32, offset: t.partitions[p].len() as i64 - 1 }));
            }
        }
        self.inner.appended.notify_waiters();
        out
    }

    async fn ensure_topics(&self, specs: &[TopicSpec]) -> Result<(), BusError> {
        let mut topics = self.inner.topics.lock().expect("bus lock");
        for s in specs {
            if s.partitions < 1 {
                return Err(BusError::Config(format!("topic {} needs at least one partition", s.name)));
            }
            topics
                .entry(s.name.clone())
                .or_insert_with(|| Topic { partitions: vec![Vec::new(); s.partitions as usize] });
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), BusError> {
        Ok(())
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<(i32, i64)>, BusError> {
        let topics = self.inner.topics.lock().expect("bus lock");
        Ok(topics
            .get(topic)
            .map(|t| t.partitions.iter().enumerate().map(|(p, log)| (p as i32, log.len() as i64)).collect())
            .unwrap_or_default())
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), BusError> {
        Ok(())
    }
}

#[derive(Debug)]
pub struct MemorySubscriber {
    bus: MemoryBus,
    group: String,
    topics: Vec<String>,
    positions: HashMap<(String, i32), i64>,
    /// Set by `assign`: only these partitions are read.
    assigned: Option<std::collections::HashSet<(String, i32)>>,
}

impl MemorySubscriber {
    fn poll_once(&mut self) -> Option<Consumed> {
        let topics = self.bus.inner.topics.lock().expect("bus lock");
        let committed = self.bus.inner.committed.lock().expect("bus lock");
        for name in &self.topics {
            let Some(t) = topics.get(name) else { continue };
            for (p, log) in t.partitions.iter().enumerate() {
                let key = (name.clone(), p as i32);
                if self.assigned.as_ref().is_some_and(|a| !a.contains(&key)) {
                    continue;
                }
                let pos = *self.positions.entry(key.clone()).or_insert_with(|| {
                    committed.get(&(self.group.clone(), name.clone(), p as i32)).map_or(0, |o| o + 1)
                });
                if let Some(r) = log.get(pos as usize) {
                    self.positions.insert(key, pos + 1);
                    return Some(Consumed { record: r.clone(), partition: p as i32, offset: pos });
                }
            }
        }
        None
    }
}

impl Subscriber for MemorySubscriber {
    async fn next(&mut self) -> Result<Consumed, BusError> {
        loop {
            // Register for the wake-up before looking, so a publish in between is not missed.
            let inner = self.bus.inner.clone();
            let notified = inner.appended.notified();
            if let Some(c) = self.poll_once() {
                return Ok(c);
            }
            notified.await;
        }
    }

    fn commit(&mut self, topic: &str, partition: i32, offset: i64) -> Result<(), BusError> {
        let mut committed = self.bus.inner.committed.lock().expect("bus lock");
        committed.insert((self.group.clone(), topic.to_string(), partition), offset);
        Ok(())
    }

    fn assign(&mut self, topic: &str, partitions: &[(i32, i64)]) -> Result<(), BusError> {
        self.assigned = Some(partitions.iter().map(|(p, _)| (topic.to_string(), *p)).collect());
        for (p, offset) in partitions {
            self.positions.insert((topic.to_string(), *p), *offset);
        }
        // Wake a pending `next` so it looks at the new assignment.
        self.bus.inner.appended.notify_waiters();
        Ok(())
    }

    fn seek(&mut self, topic: &str, partition: i32, offset: i64) -> Result<(), BusError> {
        self.positions.insert((topic.to_string(), partition), offset);
        self.bus.inner.appended.notify_waiters();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, payload: &str) -> Record {
        Record { topic: "t".into(), key: key.into(), payload: payload.into(), headers: vec![] }
    }

    #[tokio::test]
    async fn keys_keep_order_per_partition_and_consumers_resume() {
        let bus = MemoryBus::new();
        bus.ensure_topics(&[TopicSpec { name: "t".into(), partitions: 3, replication: 1 }]).await.unwrap();
        let acks = bus.publish(vec![rec("a", "1"), rec("a", "2"), rec("b", "3")]).await;
        assert!(acks.iter().all(Result::is_ok));
        assert_eq!(acks[0].as_ref().unwrap().partition, acks[1].as_ref().unwrap().partition);
        assert_eq!(acks[1].as_ref().unwrap().offset, acks[0].as_ref().unwrap().offset + 1);

        let mut sub = bus.subscribe("g", &["t"]);
        let first = sub.next().await.unwrap();
        sub.commit("t", first.partition, first.offset).unwrap();
        let mut again = bus.subscribe("g", &["t"]);
        let mut seen = vec![];
        for _ in 0..2 {
            seen.push(again.next().await.unwrap().record.payload);
        }
        assert!(!seen.contains(&first.record.payload), "a committed record is not redelivered");
        assert!(bus.publish(vec![Record { topic: "nope".into(), ..rec("a", "x") }]).await[0].is_err(), "unknown topic");
    }

    #[tokio::test]
    async fn next_waits_for_a_publish() {
        let bus = MemoryBus::new();
        bus.ensure_topics(&[TopicSpec { name: "t".into(), partitions: 1, replication: 1 }]).await.unwrap();
        let mut sub = bus.subscribe("g", &["t"]);
        let b = bus.clone();
        let waiter = tokio::spawn(async move { sub.next().await.unwrap().record.payload });
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.publish(vec![rec("k", "late")]).await;
        assert_eq!(waiter.await.unwrap(), b"late");
    }
}
