//! Partition assignment through the database, for brokers whose group protocol cannot be
//! relied on to move a crashed member's partitions (and for operators who want the
//! assignment where the offsets already are). Each instance renews a lease; the live
//! instances, ordered by id, take the partitions round-robin; a lease not renewed within
//! the session timeout lapses and its partitions move. Handovers may overlap for a moment:
//! the per-partition offset fence in the store makes the late writer back off, so no
//! record is applied twice.

use crate::Publisher;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where the leases live: a table in the service's own database.
pub trait LeaseStore: Send + Sync + 'static {
    /// Renews (or takes) `member`'s lease at `now_ms`.
    fn heartbeat(&self, group: &str, member: &str, now_ms: i64) -> impl Future<Output = Result<(), String>> + Send;
    /// Members whose lease was renewed at or after `since_ms`; lapsed leases are removed.
    fn live_members(&self, group: &str, since_ms: i64) -> impl Future<Output = Result<Vec<String>, String>> + Send;
    fn leave(&self, group: &str, member: &str) -> impl Future<Output = Result<(), String>> + Send;
}

/// Leases in a table `(consumer_group, member_id, heartbeat_at)` with that primary key,
/// which each service creates in its own migrations.
#[derive(Debug, Clone)]
pub struct SqlLeases {
    pub pool: sqlx::AnyPool,
    pub table: &'static str,
}

impl LeaseStore for SqlLeases {
    async fn heartbeat(&self, group: &str, member: &str, now_ms: i64) -> Result<(), String> {
        let sql = format!(
            "INSERT INTO {} (consumer_group, member_id, heartbeat_at) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer_group, member_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            self.table
        );
        sqlx::query(&sql).bind(group).bind(member).bind(now_ms).execute(&self.pool).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn live_members(&self, group: &str, since_ms: i64) -> Result<Vec<String>, String> {
        let lapsed = format!("DELETE FROM {} WHERE consumer_group = $1 AND heartbeat_at < $2", self.table);
        sqlx::query(&lapsed).bind(group).bind(since_ms).execute(&self.pool).await.map_err(|e| e.to_string())?;
        let live = format!("SELECT member_id FROM {} WHERE consumer_group = $1 ORDER BY member_id", self.table);
        let rows: Vec<(String,)> =
            sqlx::query_as(&live).bind(group).fetch_all(&self.pool).await.map_err(|e| e.to_string())?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    async fn leave(&self, group: &str, member: &str) -> Result<(), String> {
        let sql = format!("DELETE FROM {} WHERE consumer_group = $1 AND member_id = $2", self.table);
        sqlx::query(&sql).bind(group).bind(member).execute(&self.pool).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// The partitions member `me` owns when `live` (any order) share `partitions`.
pub fn share(partitions: &[i32], live: &[String], me: &str) -> Vec<i32> {
    let mut members: Vec<&str> = live.iter().map(String::as_str).collect();
    members.sort_unstable();
    members.dedup();
    let Some(rank) = members.iter().position(|m| *m == me) else { return Vec::new() };
    let mut ps = partitions.to_vec();
    ps.sort_unstable();
    ps.into_iter().enumerate().filter(|(i, _)| i % members.len() == rank).map(|(_, p)| p).collect()
}

pub fn member_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "cxgap".into());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{host}-{}-{nanos:08x}", std::process::id())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug, Clone)]
pub struct Lease {
    pub group: String,
    pub topic: String,
    pub member: String,
    pub session: Duration,
}

/// Renews the lease every quarter session and publishes this member's partitions on
/// `mine` whenever they change; gives the lease up on shutdown so others take over at once.
pub async fn run<L: LeaseStore, P: Publisher>(
    store: L,
    bus: P,
    lease: Lease,
    mine: watch::Sender<Option<Vec<i32>>>,
    shutdown: CancellationToken,
) {
    let tick = (lease.session / 4).max(Duration::from_millis(100));
    loop {
        match renew(&store, &bus, &lease).await {
            Ok(partitions) => {
                mine.send_if_modified(|cur| {
                    if cur.as_ref() == Some(&partitions) {
                        return false;
                    }
                    info!(member = %lease.member, ?partitions, "partition assignment changed");
                    *cur = Some(partitions);
                    true
                });
            }
            Err(e) => warn!(error = %e, "lease renewal failed; keeping the current assignment"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
        }
    }
    if let Err(e) = store.leave(&lease.group, &lease.member).await {
        warn!(error = %e, "could not give the lease up; it lapses after the session timeout");
    }
}

async fn renew<L: LeaseStore, P: Publisher>(store: &L, bus: &P, lease: &Lease) -> Result<Vec<i32>, String> {
    let now = now_ms();
    store.heartbeat(&lease.group, &lease.member, now).await?;
    let live = store.live_members(&lease.group, now - lease.session.as_millis() as i64).await?;
    let partitions: Vec<i32> =
        bus.end_offsets(&lease.topic).await.map_err(|e| e.to_string())?.into_iter().map(|(p, _)| p).collect();
    if partitions.is_empty() {
        return Err(format!("topic {} has no partitions (yet)", lease.topic));
    }
    Ok(share(&partitions, &live, &lease.member))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_members_share_every_partition_once() {
        let ps: Vec<i32> = (0..12).collect();
        let live: Vec<String> = ["b", "a", "c"].iter().map(|s| s.to_string()).collect();
        let mut all: Vec<i32> = live.iter().flat_map(|m| share(&ps, &live, m)).collect();
        all.sort_unstable();
        assert_eq!(all, ps);
        assert_eq!(share(&ps, &live, "a"), vec![0, 3, 6, 9]);
        assert!(share(&ps, &live, "zombie").is_empty());
        assert_eq!(share(&ps, &live[..1], "b"), ps, "a lone member takes everything");
    }
}
