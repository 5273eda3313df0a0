//! The durable in-process bus of embedded mode: the same publish/consume contract as Kafka
//! (keys pick partitions, offsets grow, a publish resolves once the record is durable)
//! over a SQLite file, so feedback accepted before a restart is still there after it.
//! Consumers in one process are woken as soon as a record is appended.

use crate::{BusError, Consumed, Delivered, Publisher, Record, Subscriber, TopicSpec, headers};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS bus_topics (name TEXT PRIMARY KEY, partitions BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS bus_log (topic TEXT NOT NULL, part BIGINT NOT NULL, off BIGINT NOT NULL, \
     rkey TEXT NOT NULL, payload TEXT NOT NULL, headers TEXT NOT NULL, PRIMARY KEY (topic, part, off))",
    "CREATE TABLE IF NOT EXISTS bus_commits (grp TEXT NOT NULL, topic TEXT NOT NULL, part BIGINT NOT NULL, \
     off BIGINT NOT NULL, PRIMARY KEY (grp, topic, part))",
];

/// Offsets deleted per statement by [`SqlBus::prune`].
pub const PRUNE_STEP: i64 = 5_000;

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

fn partition_of(key: &[u8], partitions: usize) -> usize {
    // FNV-1a, as the memory bus: a key always lands on the same partition.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % partitions.max(1) as u64) as usize
}

/// Cheap to clone; clones share the file and the wake-ups.
#[derive(Clone)]
pub struct SqlBus {
    pool: AnyPool,
    appended: Arc<Notify>,
}

impl std::fmt::Debug for SqlBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlBus").finish_non_exhaustive()
    }
}

impl SqlBus {
    /// Opens (creating) the bus at a `sqlite:` URL.
    pub async fn open(url: &str) -> Result<SqlBus, BusError> {
        sqlx::any::install_default_drivers();
        let url = if url.contains("mode=") { url.to_string() } else { format!("{url}?mode=rwc") };
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await
            .map_err(|e| BusError::Config(format!("opening the bus at {url}: {e}")))?;
        for stmt in SCHEMA {
            sqlx::query(stmt).execute(&pool).await.map_err(unavailable)?;
        }
        Ok(SqlBus { pool, appended: Arc::new(Notify::new()) })
    }

    /// A consumer of `topics` in `group`, starting from the group's committed offsets.
    pub fn subscribe(&self, group: &str, topics: &[&str]) -> SqlSubscriber {
        SqlSubscriber {
            bus: self.clone(),
            group: group.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            positions: HashMap::new(),
            assigned: None,
            buffer: VecDeque::new(),
        }
    }

    /// Deletes a partition's records below offset `below`, those its only reader has
    /// applied, so the file stops growing with every record ever sent. The partition's
    /// last record always stays: the next offset is counted from it. Deletes in steps of
    /// [`PRUNE_STEP`] offsets, each its own transaction, so a long backlog's pruning never
    /// holds the bus (one connection) for long; returns how many records went.
    pub async fn prune(&self, topic: &str, partition: i32, below: i64) -> Result<u64, BusError> {
        let (first, last): (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT MIN(off), MAX(off) FROM bus_log WHERE topic = $1 AND part = $2")
                .bind(topic)
                .bind(partition as i64)
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable)?;
        let (Some(first), Some(last)) = (first, last) else { return Ok(0) };
        let end = below.min(last);
        let mut pruned = 0;
        let mut from = first;
        while from < end {
            let to = end.min(from.saturating_add(PRUNE_STEP));
            pruned += sqlx::query("DELETE FROM bus_log WHERE topic = $1 AND part = $2 AND off >= $3 AND off < $4")
                .bind(topic)
                .bind(partition as i64)
                .bind(from)
                .bind(to)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?
                .rows_affected();
            from = to;
        }
        Ok(pruned)
    }

    /// The records a partition holds: (first offset, count); `None` when it holds none.
    pub async fn held(&self, topic: &str, partition: i32) -> Result<Option<(i64, i64)>, BusError> {
        let (first, count): (Option<i64>, i64) =
            sqlx::query_as("SELECT MIN(off), COUNT(*) FROM bus_log WHERE topic = $1 AND part = $2")
                .bind(topic)
                .bind(partition as i64)
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(first.map(|f| (f, count)))
    }

    async fn partitions(&self, topic: &str) -> Result<Option<i64>, BusError> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT partitions FROM bus_topics WHERE name = $1")
            .bind(topic)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| r.0))
    }
}

impl Publisher for SqlBus {
    async fn publish(&self, records: Vec<Record>) -> Vec<Result<Delivered, BusError>> {
        let n = records.len();
        let result: Result<Vec<Result<Delivered, BusError>>, BusError> = async {
            let mut tx = self.pool.begin().await.map_err(unavailable)?;
            let mut parts: HashMap<String, Option<i64>> = HashMap::new();
            let mut out = Vec::with_capacity(n);
            for r in &records {
                if !parts.contains_key(&r.topic) {
                    let p: Option<(i64,)> = sqlx::query_as("SELECT partitions FROM bus_topics WHERE name = $1")
                        .bind(&r.topic)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                    parts.insert(r.topic.clone(), p.map(|x| x.0));
                }
                let Some(count) = parts[&r.topic] else {
                    out.push(Err(BusError::Rejected(format!("unknown topic {}", r.topic))));
                    continue;
                };
                let part = partition_of(&r.key, count as usize) as i64;
                let (next,): (i64,) =
                    sqlx::query_as("SELECT COALESCE(MAX(off), -1) + 1 FROM bus_log WHERE topic = $1 AND part = $2")
                        .bind(&r.topic)
                        .bind(part)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                let headers: Vec<(String, String)> =
                    r.headers.iter().map(|(k, v)| (k.to_string(), STANDARD.encode(v))).collect();
                sqlx::query(
                    "INSERT INTO bus_log (topic, part, off, rkey, payload, headers) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&r.topic)
                .bind(part)
                .bind(next)
                .bind(STANDARD.encode(&r.key))
                .bind(STANDARD.encode(&r.payload))
                .bind(serde_json::to_string(&headers).map_err(unavailable)?)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                out.push(Ok(Delivered { partition: part as i32, offset: next }));
            }
            tx.commit().await.map_err(unavailable)?;
            Ok(out)
        }
        .await;
        self.appended.notify_waiters();
        match result {
            Ok(out) => out,
            Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
        }
    }

    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), BusError> {
        for t in topics {
            sqlx::query("INSERT INTO bus_topics (name, partitions) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(&t.name)
                .bind(t.partitions as i64)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), BusError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(unavailable)
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), BusError> {
        Ok(())
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<(i32, i64)>, BusError> {
        let Some(count) = self.partitions(topic).await? else { return Ok(Vec::new()) };
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT part, MAX(off) + 1 FROM bus_log WHERE topic = $1 GROUP BY part")
                .bind(topic)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        let ends: HashMap<i64, i64> = rows.into_iter().collect();
        Ok((0..count).map(|p| (p as i32, ends.get(&p).copied().unwrap_or(0))).collect())
    }
}

#[derive(Debug)]
pub struct SqlSubscriber {
    bus: SqlBus,
    group: String,
    topics: Vec<String>,
    positions: HashMap<(String, i32), i64>,
    assigned: Option<HashSet<(String, i32)>>,
    buffer: VecDeque<Consumed>,
}

type LogRow = (i64, String, String, String);

impl SqlSubscriber {
    async fn fill(&mut self) -> Result<(), BusError> {
        for topic in self.topics.clone() {
            let Some(count) = self.bus.partitions(&topic).await? else { continue };
            for part in 0..count as i32 {
                let key = (topic.clone(), part);
                if self.assigned.as_ref().is_some_and(|a| !a.contains(&key)) {
                    continue;
                }
                let pos = match self.positions.get(&key) {
                    Some(p) => *p,
                    None => {
                        let c: Option<(i64,)> =
                            sqlx::query_as("SELECT off FROM bus_commits WHERE grp = $1 AND topic = $2 AND part = $3")
                                .bind(&self.group)
                                .bind(&topic)
                                .bind(part as i64)
                                .fetch_optional(&self.bus.pool)
                                .await
                                .map_err(unavailable)?;
                        c.map_or(0, |c| c.0 + 1)
                    }
                };
                let rows: Vec<LogRow> = sqlx::query_as(
                    "SELECT off, rkey, payload, headers FROM bus_log WHERE topic = $1 AND part = $2 AND off >= $3 \
                     ORDER BY off LIMIT 500",
                )
                .bind(&topic)
                .bind(part as i64)
                .bind(pos)
                .fetch_all(&self.bus.pool)
                .await
                .map_err(unavailable)?;
                let mut next = pos;
                for (off, k, p, h) in rows {
                    let headers: Vec<(String, String)> = serde_json::from_str(&h).map_err(unavailable)?;
                    let decode = |s: &str| STANDARD.decode(s).map_err(unavailable);
                    self.buffer.push_back(Consumed {
                        record: Record {
                            topic: topic.clone(),
                            key: decode(&k)?,
                            payload: decode(&p)?,
                            headers: headers
                                .into_iter()
                                .map(|(k, v)| Ok((headers::name(&k), decode(&v)?)))
                                .collect::<Result<_, BusError>>()?,
                        },
                        partition: part,
                        offset: off,
                    });
                    next = off + 1;
                }
                self.positions.insert(key, next);
            }
        }
        Ok(())
    }
}

impl Subscriber for SqlSubscriber {
    async fn next(&mut self) -> Result<Consumed, BusError> {
        loop {
            if let Some(c) = self.buffer.pop_front() {
                return Ok(c);
            }
            // Register for the wake-up before looking, so an append in between is not missed.
            let appended = self.bus.appended.clone();
            let woken = appended.notified();
            self.fill().await?;
            if self.buffer.is_empty() {
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }

    fn commit(&mut self, topic: &str, partition: i32, offset: i64) -> Result<(), BusError> {
        // A hint only (the services keep their offsets with their state): written in the
        // background so the consume path never waits on it.
        let (pool, group, topic) = (self.bus.pool.clone(), self.group.clone(), topic.to_string());
        tokio::spawn(async move {
            let _ = sqlx::query(
                "INSERT INTO bus_commits (grp, topic, part, off) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (grp, topic, part) DO UPDATE SET off = excluded.off",
            )
            .bind(group)
            .bind(topic)
            .bind(partition as i64)
            .bind(offset)
            .execute(&pool)
            .await;
        });
        Ok(())
    }

    fn assign(&mut self, topic: &str, partitions: &[(i32, i64)]) -> Result<(), BusError> {
        let set: HashSet<(String, i32)> = partitions.iter().map(|(p, _)| (topic.to_string(), *p)).collect();
        self.buffer.retain(|c| set.contains(&(c.record.topic.clone(), c.partition)));
        for (p, offset) in partitions {
            self.buffer.retain(|c| !(c.partition == *p && c.record.topic == topic));
            self.positions.insert((topic.to_string(), *p), *offset);
        }
        self.assigned = Some(set);
        Ok(())
    }

    fn seek(&mut self, topic: &str, partition: i32, offset: i64) -> Result<(), BusError> {
        self.buffer.retain(|c| !(c.partition == partition && c.record.topic == topic));
        self.positions.insert((topic.to_string(), partition), offset);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, payload: &str) -> Record {
        Record {
            topic: "t".into(),
            key: key.into(),
            payload: payload.into(),
            headers: vec![("cxgap-id".into(), payload.as_bytes().to_vec())],
        }
    }

    #[tokio::test]
    async fn records_survive_reopening_and_consumers_resume() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("bus.db").display());
        let bus = SqlBus::open(&url).await.unwrap();
        bus.ensure_topics(&[TopicSpec { name: "t".into(), partitions: 3, replication: 1 }]).await.unwrap();
        let sent = bus.publish((0..30).map(|i| rec(&format!("k{}", i % 7), &format!("v{i}"))).collect()).await;
        assert!(sent.iter().all(|r| r.is_ok()));
        let bad = bus.publish(vec![Record { topic: "nope".into(), ..rec("k", "v") }]).await;
        assert!(matches!(&bad[0], Err(BusError::Rejected(m)) if m.contains("nope")));
        let mut sub = bus.subscribe("g", &["t"]);
        let mut seen = Vec::new();
        for _ in 0..10 {
            let c = sub.next().await.unwrap();
            sub.commit("t", c.partition, c.offset).unwrap();
            seen.push(c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // the commit hints land
        drop(sub);
        drop(bus);
        // Reopened: everything is still there; the group resumes after its commits.
        let bus = SqlBus::open(&url).await.unwrap();
        let ends: i64 = bus.end_offsets("t").await.unwrap().iter().map(|(_, e)| e).sum();
        assert_eq!(ends, 30);
        let mut sub = bus.subscribe("g", &["t"]);
        let mut rest = Vec::new();
        while rest.len() + seen.len() < 30 {
            rest.push(tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap());
        }
        let mut all: Vec<String> =
            seen.iter().chain(&rest).map(|c| String::from_utf8(c.record.payload.clone()).unwrap()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 30, "every record exactly once across the restart");
        // Same key, same partition, in order.
        let k0: Vec<&Consumed> = rest.iter().chain(&seen).filter(|c| c.record.key == b"k0").collect();
        assert!(k0.windows(2).all(|w| w[0].partition == w[1].partition));
        // Assignment reads only what it is given, from where it is told.
        let mut one = bus.subscribe("h", &["t"]);
        one.assign("t", &[(1, 0)]).unwrap();
        let c = one.next().await.unwrap();
        assert_eq!((c.partition, c.offset), (1, 0));
        // A consumer waiting for news is woken by a publish (sooner than its 500 ms poll).
        bus.ensure_topics(&[TopicSpec { name: "u".into(), partitions: 1, replication: 1 }]).await.unwrap();
        let mut s = bus.subscribe("late", &["u"]);
        let publisher = bus.clone();
        let (got, _) = tokio::join!(tokio::time::timeout(Duration::from_millis(400), s.next()), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            publisher.publish(vec![Record { topic: "u".into(), ..rec("k", "news") }]).await
        });
        assert_eq!(got.unwrap().unwrap().record.payload, b"news");
    }

    /// Pruning deletes below the offset asked and never the partition's last record, so
    /// offsets go on from where they were and a reader behind the pruned range reads on
    /// from what is left; steps of [`PRUNE_STEP`] delete exactly the range.
    #[tokio::test]
    async fn pruning_keeps_offsets_growing_and_the_unread_records() {
        let dir = tempfile::tempdir().unwrap();
        let bus = SqlBus::open(&format!("sqlite:{}", dir.path().join("bus.db").display())).await.unwrap();
        bus.ensure_topics(&[TopicSpec { name: "t".into(), partitions: 1, replication: 1 }]).await.unwrap();
        let n = PRUNE_STEP * 2 + 10;
        for chunk in (0..n).collect::<Vec<_>>().chunks(2_000) {
            let sent = bus.publish(chunk.iter().map(|i| rec("k", &format!("v{i}"))).collect()).await;
            assert!(sent.iter().all(|r| r.is_ok()));
        }
        assert_eq!(bus.prune("t", 0, -5).await.unwrap(), 0);
        assert_eq!(bus.prune("nope", 0, 10).await.unwrap(), 0);
        // Over two steps' worth at once, exactly the range below.
        let below = PRUNE_STEP + 7;
        assert_eq!(bus.prune("t", 0, below).await.unwrap(), below as u64);
        assert_eq!(bus.held("t", 0).await.unwrap(), Some((below, n - below)));
        // A reader from an offset already pruned reads on from the first record held.
        let mut late = bus.subscribe("late", &["t"]);
        late.assign("t", &[(0, 3)]).unwrap();
        let c = late.next().await.unwrap();
        assert_eq!((c.offset, c.record.payload.clone()), (below, format!("v{below}").into_bytes()));
        // Asked to prune past the end, the last record stays and holds the next offset.
        assert_eq!(bus.prune("t", 0, i64::MAX).await.unwrap(), (n - below - 1) as u64);
        assert_eq!(bus.held("t", 0).await.unwrap(), Some((n - 1, 1)));
        assert_eq!(bus.end_offsets("t").await.unwrap(), [(0, n)]);
        let next = bus.publish(vec![rec("k", "after")]).await;
        assert_eq!(next[0].as_ref().unwrap().offset, n);
    }
}
