//! Embedded mode's bus retention. A Kafka topic drops old segments by age; the SQLite bus
//! would keep every record ever sent, so the data directory of a long-running embedded
//! install grew without end. Here a record goes once the service that reads it has
//! applied it, as that service's own database says (the offsets it stores with its
//! state), so nothing unread is ever deleted. The topics nothing in the process reads,
//! the alerts and the dead letters, keep their newest [`NEWEST_KEPT`] records per
//! partition, as a Kafka topic keeps its recent segments: a feed that keeps sending bad
//! records no longer grows the file without end.

use anyhow::{Context, Result};
use cxgap_alerting::store::AlertStore;
use cxgap_analytics::AnalyticsStore;
use cxgap_bus::sql::SqlBus;
use std::time::Duration;

/// How often the bus is pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Records kept per partition of the topics read outside the process (alerts, dead
/// letters).
pub const NEWEST_KEPT: i64 = 100_000;

/// The bus and the readers whose stored offsets say what may go.
pub struct Retention {
    pub bus: SqlBus,
    pub partitions: i32,
    pub analytics: AnalyticsStore,
    pub analytics_group: String,
    pub feedback_topic: String,
    pub alerting: AlertStore,
    pub alerting_group: String,
    pub signals_topic: String,
    pub alerts_topic: String,
    pub dlq_topic: String,
    /// Records kept per partition of the alerts and dead-letter topics ([`NEWEST_KEPT`]).
    pub newest_kept: i64,
}

impl Retention {
    /// One pass over the topics; returns how many records were deleted.
    pub async fn prune_once(&self) -> Result<u64> {
        let mut pruned = 0;
        let applied = self
            .analytics
            .offsets(&self.analytics_group, &self.feedback_topic)
            .await
            .context("reading analytics' offsets")?;
        for (partition, next) in applied {
            pruned += self.bus.prune(&self.feedback_topic, partition, next).await?;
        }
        for partition in 0..self.partitions {
            let next = self
                .alerting
                .next_offset(&self.alerting_group, &self.signals_topic, partition)
                .await
                .context("reading alerting's offsets")?;
            if let Some(next) = next {
                pruned += self.bus.prune(&self.signals_topic, partition, next).await?;
            }
        }
        for topic in [&self.alerts_topic, &self.dlq_topic] {
            for (partition, end) in cxgap_bus::Publisher::end_offsets(&self.bus, topic).await? {
                pruned += self.bus.prune(topic, partition, end - self.newest_kept).await?;
            }
        }
        Ok(pruned)
    }

    /// Prunes at start (what a previous run applied) and every [`PRUNE_EVERY`] until `stop`.
    /// A failed pass is logged and tried again at the next: retention never stops the
    /// services.
    pub async fn run(self, stop: cxgap_runtime::Shutdown) -> Result<()> {
        loop {
            match self.prune_once().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(records = n, "pruned applied records from the bus"),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "pruning the bus failed; trying again later"),
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(PRUNE_EVERY) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxgap_bus::{Publisher, Record, TopicSpec};

    fn rec(topic: &str, i: usize) -> Record {
        Record { topic: topic.into(), key: format!("k{i}").into_bytes(), payload: vec![1], headers: vec![] }
    }

    /// Each topic is pruned up to what its reader's database says it applied, and no
    /// further; a partition its reader has no offset for keeps everything.
    #[tokio::test]
    async fn records_go_once_their_reader_has_applied_them() {
        let dir = tempfile::tempdir().unwrap();
        let url = |f: &str| format!("sqlite:{}", dir.path().join(f).display());
        let bus = SqlBus::open(&url("bus.db")).await.unwrap();
        let topics = ["feedback", "signals", "alerts", "dlq"];
        bus.ensure_topics(&topics.map(|t| TopicSpec { name: t.into(), partitions: 2, replication: 1 })).await.unwrap();
        for t in topics {
            assert!(bus.publish((0..40).map(|i| rec(t, i)).collect()).await.iter().all(|r| r.is_ok()));
        }
        let ends = |t: &'static str| {
            let bus = bus.clone();
            async move { bus.end_offsets(t).await.unwrap() }
        };
        let (feedback_ends, signal_ends) = (ends("feedback").await, ends("signals").await);
        assert!(feedback_ends.iter().chain(&signal_ends).all(|(_, e)| *e > 3), "{feedback_ends:?} {signal_ends:?}");
        let analytics = AnalyticsStore::connect(&url("analytics.db")).await.unwrap();
        let alerting = AlertStore::connect(&url("alerting.db")).await.unwrap();
        // Analytics applied partition 0 up to 3 and partition 1 whole; alerting applied
        // partition 1 up to 2 and has no offset for partition 0.
        let offsets = |db: &str, table: &str, rows: Vec<(i32, i64)>| {
            let (db, table) = (url(db), table.to_string());
            async move {
                let pool = sqlx::AnyPool::connect(&db).await.unwrap();
                for (p, next) in rows {
                    sqlx::query(&format!(
                        "INSERT INTO {table} (consumer_group, topic, partition_id, next_offset) VALUES ('g', $1, $2, $3)"
                    ))
                    .bind(if table.starts_with("analytics") { "feedback" } else { "signals" })
                    .bind(p as i64)
                    .bind(next)
                    .execute(&pool)
                    .await
                    .unwrap();
                }
            }
        };
        sqlx::any::install_default_drivers();
        offsets("analytics.db", "analytics_offsets", vec![(0, 3), (1, feedback_ends[1].1)]).await;
        offsets("alerting.db", "alerting_offsets", vec![(1, 2)]).await;
        let retention = Retention {
            bus: bus.clone(),
            partitions: 2,
            analytics,
            analytics_group: "g".into(),
            feedback_topic: "feedback".into(),
            alerting,
            alerting_group: "g".into(),
            signals_topic: "signals".into(),
            alerts_topic: "alerts".into(),
            dlq_topic: "dlq".into(),
            newest_kept: 100,
        };
        let pruned = retention.prune_once().await.unwrap();
        let f1 = feedback_ends[1].1;
        assert_eq!(pruned, 3 + (f1 - 1) as u64 + 2);
        assert_eq!(bus.held("feedback", 0).await.unwrap(), Some((3, feedback_ends[0].1 - 3)));
        // Applied whole: the last record stays, it holds the next offset.
        assert_eq!(bus.held("feedback", 1).await.unwrap(), Some((f1 - 1, 1)));
        assert_eq!(bus.held("signals", 0).await.unwrap(), Some((0, signal_ends[0].1)));
        assert_eq!(bus.held("signals", 1).await.unwrap(), Some((2, signal_ends[1].1 - 2)));
        // The alerts and dead letters are below their cap; the next pass has nothing to do.
        for t in ["alerts", "dlq"] {
            for (p, end) in ends(t).await {
                assert_eq!(bus.held(t, p).await.unwrap(), Some((0, end)));
            }
        }
        assert_eq!(retention.prune_once().await.unwrap(), 0);
        // Past the cap, each partition of either keeps its newest records, nothing else.
        let held = |t: &'static str| {
            let bus = bus.clone();
            async move {
                let mut n = 0;
                for (p, end) in bus.end_offsets(t).await.unwrap() {
                    let (first, count) = bus.held(t, p).await.unwrap().unwrap();
                    assert_eq!(first + count, end, "{t}/{p}: the newest records stay");
                    n += count;
                }
                n
            }
        };
        for t in ["alerts", "dlq"] {
            assert!(bus.publish((0..300).map(|i| rec(t, i)).collect()).await.iter().all(|r| r.is_ok()));
            assert_eq!(held(t).await, 340);
        }
        retention.prune_once().await.unwrap();
        for t in ["alerts", "dlq"] {
            let parts = bus.end_offsets(t).await.unwrap();
            assert!(parts.iter().all(|(_, end)| *end > 100), "{parts:?}");
            assert_eq!(held(t).await, 100 * parts.len() as i64, "{t}");
        }
    }
}
