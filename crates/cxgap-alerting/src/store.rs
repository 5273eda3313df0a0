//! Alerting state in PostgreSQL or (embedded mode) SQLite, through one code path. Every
//! change of an alert is written together with its transition, its notification (in the
//! ordered log) and the pending deliveries for its subscribers, in the caller's
//! transaction: a notification exists exactly when the change that caused it committed.

use crate::model::{AlertFacts, Rule, Silence, Subscription, Target};
use cxgap_domain::Instrument;
use cxgap_domain::alerts::{AlertState, AlertStatus, notification_id};
use cxgap_domain::rules::Severity;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AnyPool, Row};
use std::collections::BTreeMap;

mod writes;
pub(crate) use writes::AlertWrites;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("partition {partition} was fenced: its offset moved under this instance")]
    Fenced { partition: i32 },
    /// The records start beyond the stored offset: something in between was not read.
    #[error("{0}")]
    Gap(cxgap_bus::consume::Gap),
    #[error("conflicting concurrent change: {0}")]
    Conflict(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    match cxgap_runtime::db::retryable(&e) {
        Some(m) => StoreError::Conflict(m),
        None => StoreError::Unavailable(e.to_string()),
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

pub fn parse_severity(s: &str) -> Option<Severity> {
    match s {
        "info" => Some(Severity::Info),
        "warning" => Some(Severity::Warning),
        "critical" => Some(Severity::Critical),
        _ => None,
    }
}

/// An alert as the API, notifications and webhooks show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub alert_id: String,
    pub tenant_id: String,
    pub rule_id: String,
    pub kind: String,
    pub severity: Severity,
    pub state: AlertState,
    pub episode: u32,
    pub subject: String,
    pub summary: String,
    pub labels: BTreeMap<String, String>,
    pub customer_value: Option<f64>,
    pub started_at: i64,
    pub updated_at: i64,
    pub last_notified_at: i64,
    #[serde(skip)]
    pub version: i64,
}

impl Alert {
    pub fn status(&self) -> AlertStatus {
        AlertStatus {
            state: self.state,
            episode: self.episode,
            started_at: self.started_at,
            last_notified_at: self.last_notified_at,
        }
    }

    pub fn facts(&self) -> AlertFacts<'_> {
        AlertFacts {
            kind: &self.kind,
            severity: self.severity,
            labels: &self.labels,
            customer_value: self.customer_value,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub state: AlertState,
    pub at: i64,
    pub by: String,
    pub note: String,
}

/// One entry of the notification log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub seq: i64,
    pub notification_id: String,
    pub tenant_id: String,
    pub alert_id: String,
    pub state: AlertState,
    pub at: i64,
    /// The silence that muted it; empty when delivered.
    pub silenced_by: String,
    /// The JSON body webhooks receive: `{"type", "timestamp", "data": Alert}`.
    pub payload: String,
}

/// A delivery due to be tried.
#[derive(Debug, Clone, PartialEq)]
pub struct DueDelivery {
    pub notification_id: String,
    pub subscription_id: String,
    pub tenant_id: String,
    pub attempts: u32,
    pub payload: String,
    pub alert_id: String,
    pub target: Target,
    pub disabled: bool,
    /// Non-empty for a grouped webhook delivery.
    pub group_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub notification_id: String,
    pub subscription_id: String,
    pub attempts: u32,
    pub last_error: String,
    pub failed_at: i64,
}

type NotificationRow = (i64, String, String, String, String, i64, String, String);
type DueRow = (String, String, String, i64, String, String, String, String, String);

const ALERT_COLUMNS: &str = "alert_id, tenant_id, rule_id, kind, severity, subject, state, episode, summary, labels, \
     customer_value, started_at, updated_at, last_notified_at, version";

fn alert_from_row(r: &sqlx::any::AnyRow) -> Result<Alert, StoreError> {
    let s = |i: usize| r.try_get::<String, _>(i).map_err(|e| corrupt("alert", e));
    let n = |i: usize| r.try_get::<i64, _>(i).map_err(|e| corrupt("alert", e));
    Ok(Alert {
        alert_id: s(0)?,
        tenant_id: s(1)?,
        rule_id: s(2)?,
        kind: s(3)?,
        severity: parse_severity(&s(4)?).ok_or_else(|| corrupt("alert", "severity"))?,
        subject: s(5)?,
        state: AlertState::parse(&s(6)?).ok_or_else(|| corrupt("alert", "state"))?,
        episode: n(7)? as u32,
        summary: s(8)?,
        labels: serde_json::from_str(&s(9)?).map_err(|e| corrupt("alert labels", e))?,
        customer_value: r.try_get::<Option<f64>, _>(10).map_err(|e| corrupt("alert", e))?,
        started_at: n(11)?,
        updated_at: n(12)?,
        last_notified_at: n(13)?,
        version: n(14)?,
    })
}

#[derive(Clone)]
pub struct AlertStore {
    pub(crate) pool: AnyPool,
    /// Tenants this process saw stored (a committed [`ensure_tenant`]): tenants are never
    /// deleted, so a batch of a known tenant skips that statement.
    known_tenants: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl std::fmt::Debug for AlertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertStore").finish_non_exhaustive()
    }
}

impl AlertStore {
    /// Connects with the default pool size ([`cxgap_runtime::db::pool_size`]).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_pool(url, cxgap_runtime::db::pool_size(url)).await
    }

    /// Connects with at most `pool_size` connections.
    pub async fn connect_with_pool(url: &str, pool_size: u32) -> Result<Self, StoreError> {
        static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
        let pool = cxgap_runtime::db::connect(url, pool_size, &MIGRATIONS).await.map_err(|e| match e {
            cxgap_runtime::db::DbError::Unavailable(m) => StoreError::Unavailable(m),
            cxgap_runtime::db::DbError::Migration(m) => StoreError::Migration(m),
        })?;
        Ok(AlertStore { pool, known_tenants: Default::default() })
    }

    pub(crate) fn tenant_known(&self, tenant: &str) -> bool {
        self.known_tenants.lock().expect("tenants lock").contains(tenant)
    }

    /// Call only once the transaction that ensured them committed.
    pub(crate) fn tenants_stored<'a>(&self, tenants: impl IntoIterator<Item = &'a String>) {
        self.known_tenants.lock().expect("tenants lock").extend(tenants.into_iter().cloned());
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(classify)
    }

    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        self.pool.begin().await.map_err(classify)
    }

    // ----- rules -----

    pub async fn rules(&self, tenant: &str) -> Result<Vec<Rule>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(classify)?;
        rules(&mut conn, tenant).await
    }

    pub async fn put_rule(&self, tenant: &str, rule: &Rule, now: i64) -> Result<(), StoreError> {
        rule.validate().map_err(StoreError::Invalid)?;
        let mut tx = self.begin().await?;
        ensure_tenant(&mut tx, tenant, now).await?;
        sqlx::query(
            "INSERT INTO alerting_rules (tenant_id, rule_id, rule, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, rule_id) DO UPDATE SET rule = excluded.rule, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(&rule.id)
        .bind(serde_json::to_string(rule).map_err(|e| corrupt("rule", e))?)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)
    }

    pub async fn delete_rule(&self, tenant: &str, rule_id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM alerting_rules WHERE tenant_id = $1 AND rule_id = $2")
            .bind(tenant)
            .bind(rule_id)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(r.rows_affected() > 0)
    }

    // ----- alerts -----

    pub async fn alert(&self, tenant: &str, alert_id: &str) -> Result<Option<Alert>, StoreError> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerting_alerts WHERE tenant_id = $1 AND alert_id = $2");
        let row = sqlx::query(&sql).bind(tenant).bind(alert_id).fetch_optional(&self.pool).await.map_err(classify)?;
        row.as_ref().map(alert_from_row).transpose()
    }

    /// Alerts of a tenant, newest change first, after `before` (exclusive; for paging).
    pub async fn alerts(
        &self,
        tenant: &str,
        states: &[AlertState],
        limit: usize,
        before: Option<(i64, String)>,
    ) -> Result<Vec<Alert>, StoreError> {
        let (at, id) = before.unwrap_or((i64::MAX, String::new()));
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerting_alerts WHERE tenant_id = $1 \
             AND (updated_at < $2 OR (updated_at = $2 AND alert_id > $3)) \
             ORDER BY updated_at DESC, alert_id LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant)
            .bind(at)
            .bind(id)
            .bind((limit * 4 + 16) as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        let mut out = Vec::new();
        for r in &rows {
            let a = alert_from_row(r)?;
            if states.is_empty() || states.contains(&a.state) {
                out.push(a);
            }
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    pub async fn history(&self, alert_id: &str) -> Result<Vec<Transition>, StoreError> {
        let rows: Vec<(String, i64, String, String)> = sqlx::query_as(
            "SELECT state, at, by_whom, note FROM alerting_transitions WHERE alert_id = $1 ORDER BY seq",
        )
        .bind(alert_id)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(|(s, at, by, note)| {
                Ok(Transition { state: AlertState::parse(&s).ok_or_else(|| corrupt("transition", &s))?, at, by, note })
            })
            .collect()
    }

    /// A person acknowledges or resolves an alert; notifies subscribers like any change.
    pub async fn act(
        &self,
        tenant: &str,
        alert_id: &str,
        to: AlertState,
        by: &str,
        note: &str,
        now: i64,
    ) -> Result<Alert, StoreError> {
        let mut tx = self.begin().await?;
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerting_alerts WHERE tenant_id = $1 AND alert_id = $2");
        let row = sqlx::query(&sql).bind(tenant).bind(alert_id).fetch_optional(&mut *tx).await.map_err(classify)?;
        let mut alert = match row.as_ref().map(alert_from_row).transpose()? {
            Some(a) => a,
            None => return Err(StoreError::NotFound(format!("alert {alert_id:?}"))),
        };
        let status = match to {
            AlertState::Acknowledged => cxgap_domain::alerts::acknowledge(&alert.status(), now),
            AlertState::Resolved => cxgap_domain::alerts::resolve(&alert.status(), now),
            AlertState::Firing => return Err(StoreError::Invalid("an alert fires only by its rule".into())),
        }
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
        alert.state = status.state;
        alert.last_notified_at = status.last_notified_at;
        alert.updated_at = now;
        let mut batch = BatchState::default();
        batch.writes.stage(&mut alert, false);
        let pending = prepare_change(&mut tx, &alert, by, note, now, &mut batch).await?;
        batch.writes.flush(&mut tx).await?;
        log_changes(&mut tx, vec![pending], now).await?;
        tx.commit().await.map_err(classify)?;
        Ok(alert)
    }

    // ----- silences -----

    pub async fn put_silence(&self, tenant: &str, s: &Silence) -> Result<(), StoreError> {
        s.validate().map_err(StoreError::Invalid)?;
        sqlx::query(
            "INSERT INTO alerting_silences (tenant_id, silence_id, silence, ends_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, silence_id) DO UPDATE SET silence = excluded.silence, ends_at = excluded.ends_at",
        )
        .bind(tenant)
        .bind(&s.id)
        .bind(serde_json::to_string(s).map_err(|e| corrupt("silence", e))?)
        .bind(s.ends_at)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(classify)
    }

    pub async fn silences(&self, tenant: &str, active_at: Option<i64>) -> Result<Vec<Silence>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(classify)?;
        silences(&mut conn, tenant, active_at).await
    }

    // ----- subscriptions -----

    pub async fn put_subscription(&self, tenant: &str, s: &Subscription, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO alerting_subscriptions (tenant_id, subscription_id, subscription, disabled_reason, created_at) \
             VALUES ($1, $2, $3, '', $4) ON CONFLICT (tenant_id, subscription_id) DO UPDATE SET \
             subscription = excluded.subscription, disabled_reason = ''",
        )
        .bind(tenant)
        .bind(&s.id)
        .bind(serde_json::to_string(s).map_err(|e| corrupt("subscription", e))?)
        .bind(now)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(classify)
    }

    pub async fn delete_subscription(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM alerting_subscriptions WHERE tenant_id = $1 AND subscription_id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(r.rows_affected() > 0)
    }

    /// Subscriptions with the reason each is disabled (empty when active).
    pub async fn subscriptions(&self, tenant: &str) -> Result<Vec<(Subscription, String)>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(classify)?;
        subscriptions(&mut conn, tenant).await
    }

    pub async fn subscription(&self, tenant: &str, id: &str) -> Result<Option<(Subscription, String)>, StoreError> {
        Ok(self.subscriptions(tenant).await?.into_iter().find(|(s, _)| s.id == id))
    }

    pub async fn disable_subscription(&self, tenant: &str, id: &str, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE alerting_subscriptions SET disabled_reason = $1 WHERE tenant_id = $2 AND subscription_id = $3",
        )
        .bind(reason)
        .bind(tenant)
        .bind(id)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(classify)
    }

    // ----- the notification log -----

    /// Notifications after `after_seq`, oldest first.
    pub async fn notifications_after(
        &self,
        tenant: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        let rows: Vec<NotificationRow> = sqlx::query_as(
            "SELECT seq, notification_id, tenant_id, alert_id, state, at, silenced_by, payload \
             FROM alerting_notifications WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(tenant)
        .bind(after_seq)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(|(seq, notification_id, tenant_id, alert_id, state, at, silenced_by, payload)| {
                Ok(Notification {
                    seq,
                    notification_id,
                    tenant_id,
                    alert_id,
                    state: AlertState::parse(&state).ok_or_else(|| corrupt("notification", &state))?,
                    at,
                    silenced_by,
                    payload,
                })
            })
            .collect()
    }

    /// The newest position of the log (where a subscriber "from now" starts).
    pub async fn last_seq(&self) -> Result<i64, StoreError> {
        let (seq,): (i64,) = sqlx::query_as("SELECT seq FROM alerting_cursor WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        Ok(seq)
    }

    // ----- deliveries -----

    /// Deliveries due at `now`, oldest first.
    pub async fn due(&self, now: i64, limit: usize) -> Result<Vec<DueDelivery>, StoreError> {
        let rows: Vec<DueRow> = sqlx::query_as(
            "SELECT d.notification_id, d.subscription_id, d.tenant_id, d.attempts, n.payload, n.alert_id, \
             s.subscription, s.disabled_reason, d.group_key \
             FROM alerting_deliveries d \
             JOIN alerting_notifications n ON n.notification_id = d.notification_id \
             JOIN alerting_subscriptions s ON s.tenant_id = d.tenant_id AND s.subscription_id = d.subscription_id \
             WHERE d.status = 'pending' AND d.next_at <= $1 ORDER BY d.next_at, n.seq LIMIT $2",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(
                |(
                    notification_id,
                    subscription_id,
                    tenant_id,
                    attempts,
                    payload,
                    alert_id,
                    sub,
                    disabled,
                    group_key,
                )| {
                    let sub: Subscription = serde_json::from_str(&sub).map_err(|e| corrupt("subscription", e))?;
                    Ok(DueDelivery {
                        notification_id,
                        subscription_id,
                        tenant_id,
                        attempts: attempts as u32,
                        payload,
                        alert_id,
                        target: sub.target,
                        disabled: !disabled.is_empty(),
                        group_key,
                    })
                },
            )
            .collect()
    }

    /// Records an attempt's outcome: delivered, retry at `next_at`, or dead.
    pub async fn attempted(
        &self,
        d: &DueDelivery,
        status: &str,
        next_at: i64,
        error: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE alerting_deliveries SET status = $1, attempts = attempts + 1, next_at = $2, last_error = $3, \
             updated_at = $4 WHERE notification_id = $5 AND subscription_id = $6 AND status = 'pending'",
        )
        .bind(status)
        .bind(next_at)
        .bind(error)
        .bind(now)
        .bind(&d.notification_id)
        .bind(&d.subscription_id)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(classify)
    }

    pub async fn dead_letters(&self, tenant: &str, subscription: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let rows: Vec<(String, String, i64, String, i64)> = sqlx::query_as(
            "SELECT notification_id, subscription_id, attempts, last_error, updated_at FROM alerting_deliveries \
             WHERE tenant_id = $1 AND status = 'dead' AND ($2 = '' OR subscription_id = $2) ORDER BY updated_at",
        )
        .bind(tenant)
        .bind(subscription.unwrap_or(""))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|(notification_id, subscription_id, attempts, last_error, failed_at)| DeadLetter {
                notification_id,
                subscription_id,
                attempts: attempts as u32,
                last_error,
                failed_at,
            })
            .collect())
    }

    /// Puts dead deliveries of a notification back in the queue, due now.
    pub async fn replay(&self, tenant: &str, notification_id: &str, now: i64) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE alerting_deliveries SET status = 'pending', attempts = 0, next_at = $1, updated_at = $1 \
             WHERE tenant_id = $2 AND notification_id = $3 AND status = 'dead'",
        )
        .bind(now)
        .bind(tenant)
        .bind(notification_id)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(r.rows_affected())
    }

    /// The batch a grouped delivery leaves in: the batch it was sealed into, or a new one
    /// sealing every unsealed delivery of its group that is due. `None` when the delivery
    /// is no longer pending (another pass sent it).
    pub async fn seal_batch(&self, d: &DueDelivery, now: i64) -> Result<Option<String>, StoreError> {
        let mut tx = self.begin().await?;
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT status, batch_id FROM alerting_deliveries WHERE notification_id = $1 AND subscription_id = $2",
        )
        .bind(&d.notification_id)
        .bind(&d.subscription_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let batch = match row {
            Some((status, _)) if status != "pending" => None,
            None => None,
            Some((_, batch)) if !batch.is_empty() => Some(batch),
            Some(_) => {
                let ids: Vec<(String,)> = sqlx::query_as(
                    "SELECT d.notification_id FROM alerting_deliveries d \
                     JOIN alerting_notifications n ON n.notification_id = d.notification_id \
                     WHERE d.tenant_id = $1 AND d.subscription_id = $2 AND d.group_key = $3 AND d.status = 'pending' \
                     AND d.batch_id = '' AND d.next_at <= $4 ORDER BY n.seq",
                )
                .bind(&d.tenant_id)
                .bind(&d.subscription_id)
                .bind(&d.group_key)
                .bind(now)
                .fetch_all(&mut *tx)
                .await
                .map_err(classify)?;
                let mut ids: Vec<String> = ids.into_iter().map(|r| r.0).collect();
                if !ids.contains(&d.notification_id) {
                    ids.push(d.notification_id.clone());
                }
                let joined = ids.join("\n");
                let batch = format!("grp_{:016x}", cxgap_domain::customer::stable_hash(joined.as_bytes()));
                for chunk in ids.chunks(500) {
                    let sql = format!(
                        "UPDATE alerting_deliveries SET batch_id = $1 WHERE subscription_id = $2 AND tenant_id = $3 \
                         AND batch_id = '' AND notification_id IN ({})",
                        (0..chunk.len()).map(|i| format!("${}", i + 4)).collect::<Vec<_>>().join(", ")
                    );
                    let mut q =
                        sqlx::query(&sql).persistent(false).bind(&batch).bind(&d.subscription_id).bind(&d.tenant_id);
                    for id in chunk {
                        q = q.bind(id);
                    }
                    q.execute(&mut *tx).await.map_err(classify)?;
                }
                Some(batch)
            }
        };
        tx.commit().await.map_err(classify)?;
        Ok(batch)
    }

    /// The pending deliveries of a batch with their notification payloads, in log order.
    pub async fn batch(
        &self,
        tenant: &str,
        subscription: &str,
        batch: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        sqlx::query_as(
            "SELECT d.notification_id, n.payload FROM alerting_deliveries d \
             JOIN alerting_notifications n ON n.notification_id = d.notification_id \
             WHERE d.tenant_id = $1 AND d.subscription_id = $2 AND d.batch_id = $3 AND d.status = 'pending' \
             ORDER BY n.seq",
        )
        .bind(tenant)
        .bind(subscription)
        .bind(batch)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)
    }

    /// Records an attempt's outcome for every delivery of a batch; a delivered batch
    /// starts its group's interval.
    pub async fn attempted_batch(
        &self,
        d: &DueDelivery,
        batch: &str,
        status: &str,
        next_at: i64,
        error: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE alerting_deliveries SET status = $1, attempts = attempts + 1, next_at = $2, last_error = $3, \
             updated_at = $4 WHERE tenant_id = $5 AND subscription_id = $6 AND batch_id = $7 AND status = 'pending'",
        )
        .bind(status)
        .bind(next_at)
        .bind(error)
        .bind(now)
        .bind(&d.tenant_id)
        .bind(&d.subscription_id)
        .bind(batch)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        if status == "delivered" {
            sqlx::query(
                "INSERT INTO alerting_groups (tenant_id, subscription_id, group_key, last_sent_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant_id, subscription_id, group_key) DO UPDATE SET last_sent_at = excluded.last_sent_at",
            )
            .bind(&d.tenant_id)
            .bind(&d.subscription_id)
            .bind(&d.group_key)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    /// Delivery counts by status (for tests and metrics).
    pub async fn delivery_counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM alerting_deliveries GROUP BY status")
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
        Ok(rows.into_iter().collect())
    }

    /// Alerts by state, for the gauge.
    pub async fn alert_counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT state, COUNT(*) FROM alerting_alerts GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        Ok(rows.into_iter().collect())
    }

    /// Forgets risk points older than `before_ms`: no evaluation reads them any more.
    pub async fn prune_risk(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.delete_before("DELETE FROM alerting_risk WHERE at < $1", before_ms).await
    }

    pub async fn prune_seen(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.delete_before("DELETE FROM alerting_signals_seen WHERE seen_at < $1", before_ms).await
    }

    async fn delete_before(&self, sql: &'static str, before_ms: i64) -> Result<u64, StoreError> {
        sqlx::query(sql).bind(before_ms).execute(&self.pool).await.map(|r| r.rows_affected()).map_err(classify)
    }
}

// ----- inside a transaction -----

/// Installs the default rules the first time a tenant is seen.
pub(crate) async fn ensure_tenant(conn: &mut AnyConnection, tenant: &str, now: i64) -> Result<bool, StoreError> {
    let r = sqlx::query("INSERT INTO alerting_tenants (tenant_id, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(tenant)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    if r.rows_affected() == 0 {
        return Ok(false);
    }
    for rule in crate::model::default_rules() {
        sqlx::query(
            "INSERT INTO alerting_rules (tenant_id, rule_id, rule, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(&rule.id)
        .bind(serde_json::to_string(&rule).map_err(|e| corrupt("rule", e))?)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    }
    Ok(true)
}

pub(crate) async fn rules(conn: &mut AnyConnection, tenant: &str) -> Result<Vec<Rule>, StoreError> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT rule FROM alerting_rules WHERE tenant_id = $1 ORDER BY rule_id")
        .bind(tenant)
        .fetch_all(&mut *conn)
        .await
        .map_err(classify)?;
    rows.into_iter().map(|(j,)| serde_json::from_str(&j).map_err(|e| corrupt("rule", e))).collect()
}

pub(crate) async fn silences(
    conn: &mut AnyConnection,
    tenant: &str,
    active_at: Option<i64>,
) -> Result<Vec<Silence>, StoreError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT silence FROM alerting_silences WHERE tenant_id = $1 AND ends_at > $2 ORDER BY silence_id",
    )
    .bind(tenant)
    .bind(active_at.unwrap_or(i64::MIN))
    .fetch_all(&mut *conn)
    .await
    .map_err(classify)?;
    rows.into_iter().map(|(j,)| serde_json::from_str(&j).map_err(|e| corrupt("silence", e))).collect()
}

pub(crate) async fn subscriptions(
    conn: &mut AnyConnection,
    tenant: &str,
) -> Result<Vec<(Subscription, String)>, StoreError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT subscription, disabled_reason FROM alerting_subscriptions WHERE tenant_id = $1 ORDER BY subscription_id",
    )
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await
    .map_err(classify)?;
    rows.into_iter().map(|(j, d)| Ok((serde_json::from_str(&j).map_err(|e| corrupt("subscription", e))?, d))).collect()
}

/// The subjects of an aggregate signal's alerts: its own and its instruments'
/// (`subject:instrument`, as perception-gap rules name them). They are read by exact
/// subject, through the (tenant, subject) index: a prefix match cannot use it under
/// PostgreSQL's default collation and scanned every alert of the tenant for each signal
/// (3.3 ms a signal at 1,000 events/s, growing with the alerts), and it returned the
/// alerts of a touchpoint "a:b" with those of "a".
pub(crate) fn aggregate_subjects(subject: &str) -> Vec<String> {
    std::iter::once(subject.to_string()).chain(Instrument::all().map(|i| format!("{subject}:{}", i.name()))).collect()
}

/// `SELECT columns FROM table WHERE filter AND key IN (keys)`, the keys bound from
/// parameter `$first` on. On PostgreSQL it is one key lookup per value, whatever the
/// statistics say: with an `IN` list and the statistics of a young table (a few rows where
/// it held thousands) the planner read the tenant's whole key range and filtered, 2.5–4.8
/// ms a call for the risk history, the most expensive statement of a latency run. `OFFSET
/// 0` keeps the lateral subquery from being flattened into a join that could do the same.
/// The keys go to PostgreSQL as one JSON array, so the statement's text is the same for
/// any number of keys and is prepared once per connection: as a list of parameters, every
/// batch's read was parsed and planned anew (planning alone was 0.8 s of a 20 s latency
/// step at 1,800 events/s, `pg_stat_statements`). A kept plan is made again whenever
/// the table's statistics change, and autovacuum analyzes a table each time about a
/// tenth of it changed, so a plan made while a table was young (a scan of its few rows)
/// is replaced as the table grows, not kept. SQLite's planner uses the key for the list.
fn keyed_select(
    conn: &AnyConnection,
    (columns, table, filter, key): (&str, &str, &str, &str),
    first: usize,
    keys: &[String],
) -> Keyed {
    if conn.backend_name() == "PostgreSQL" {
        Keyed {
            sql: format!(
                "SELECT r.* FROM json_array_elements_text(${first}::json) AS u(k) CROSS JOIN LATERAL \
                 (SELECT {columns} FROM {table} WHERE {filter} AND {key} = u.k OFFSET 0) AS r"
            ),
            binds: vec![serde_json::Value::from(keys).to_string()],
            prepared: true,
        }
    } else {
        Keyed {
            sql: format!(
                "SELECT {columns} FROM {table} WHERE {filter} AND {key} IN ({})",
                placeholders(first, keys.len())
            ),
            binds: keys.to_vec(),
            // The list's length varies from batch to batch.
            prepared: false,
        }
    }
}

/// A keyed select's statement and the parameters that carry its keys.
struct Keyed {
    sql: String,
    binds: Vec<String>,
    prepared: bool,
}

/// Alerts about any of `subjects` (exact subjects, as for customers).
pub(crate) async fn alerts_about_subjects(
    conn: &mut AnyConnection,
    tenant: &str,
    subjects: &[String],
) -> Result<Vec<Alert>, StoreError> {
    let mut out = Vec::new();
    for chunk in subjects.chunks(500) {
        let k = keyed_select(conn, (ALERT_COLUMNS, "alerting_alerts", "tenant_id = $1", "subject"), 2, chunk);
        let mut q = sqlx::query(&k.sql).persistent(k.prepared).bind(tenant);
        for b in &k.binds {
            q = q.bind(b);
        }
        for row in q.fetch_all(&mut *conn).await.map_err(classify)? {
            out.push(alert_from_row(&row)?);
        }
    }
    Ok(out)
}

/// Risk points of these customers since `since`: (customer, at, risk).
pub(crate) async fn risk_history(
    conn: &mut AnyConnection,
    tenant: &str,
    customers: &[String],
    since: i64,
) -> Result<Vec<(String, i64, f64)>, StoreError> {
    let mut out = Vec::new();
    for chunk in customers.chunks(500) {
        let what = ("customer_id, at, risk", "alerting_risk", "tenant_id = $1 AND at >= $2", "customer_id");
        let k = keyed_select(conn, what, 3, chunk);
        let mut q = sqlx::query_as::<_, (String, i64, f64)>(&k.sql).persistent(k.prepared).bind(tenant).bind(since);
        for b in &k.binds {
            q = q.bind(b);
        }
        out.extend(q.fetch_all(&mut *conn).await.map_err(classify)?);
    }
    Ok(out)
}

/// Stores risk points (tenant, customer, at, risk); a point already stored at that
/// instant stays.
pub(crate) async fn insert_risk(
    conn: &mut AnyConnection,
    points: &[(String, String, i64, f64)],
) -> Result<(), StoreError> {
    for chunk in points.chunks(500) {
        let values: Vec<String> = (0..chunk.len()).map(|r| format!("({})", placeholders(1 + r * 4, 4))).collect();
        let sql = format!(
            "INSERT INTO alerting_risk (tenant_id, customer_id, at, risk) VALUES {} ON CONFLICT DO NOTHING",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for (tenant, customer, at, risk) in chunk {
            q = q.bind(tenant).bind(customer).bind(*at).bind(*risk);
        }
        q.execute(&mut *conn).await.map_err(classify)?;
    }
    Ok(())
}

/// Forgets risk points (tenant, customer, at).
pub(crate) async fn delete_risk(conn: &mut AnyConnection, points: &[(String, String, i64)]) -> Result<(), StoreError> {
    for chunk in points.chunks(500) {
        let rows: Vec<String> = (0..chunk.len()).map(|r| format!("({})", placeholders(1 + r * 3, 3))).collect();
        let sql =
            format!("DELETE FROM alerting_risk WHERE (tenant_id, customer_id, at) IN (VALUES {})", rows.join(", "));
        let mut q = sqlx::query(&sql).persistent(false);
        for (tenant, customer, at) in chunk {
            q = q.bind(tenant).bind(customer).bind(*at);
        }
        q.execute(&mut *conn).await.map_err(classify)?;
    }
    Ok(())
}

/// Marks signals as seen and returns the (tenant, signal id) pairs not seen before.
pub(crate) async fn claim_signals(
    conn: &mut AnyConnection,
    signals: &[cxgap_proto::signals::Signal],
    now: i64,
) -> Result<std::collections::HashSet<(String, String)>, StoreError> {
    let mut unseen = std::collections::HashSet::with_capacity(signals.len());
    for chunk in signals.chunks(500) {
        let values: Vec<String> = (0..chunk.len()).map(|r| format!("(${}, ${}, $1)", 2 + r * 2, 3 + r * 2)).collect();
        let sql = format!(
            "INSERT INTO alerting_signals_seen (tenant_id, signal_id, seen_at) VALUES {} \
             ON CONFLICT DO NOTHING RETURNING tenant_id, signal_id",
            values.join(", ")
        );
        let mut q = sqlx::query_as::<_, (String, String)>(&sql).persistent(false).bind(now);
        for s in chunk {
            q = q.bind(&s.tenant_id).bind(&s.signal_id);
        }
        unseen.extend(q.fetch_all(&mut *conn).await.map_err(classify)?);
    }
    Ok(unseen)
}

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// What a batch carries from one alert change to the next (a batch is one instant, `now`):
/// what deciding notifications reads once per batch rather than once per change (tenants'
/// active silences, and the open alerts about touchpoints, which inhibit customer alerts
/// at those touchpoints: those of every touchpoint the batch's signals name, in one
/// statement, when the first is needed), and the alert writes it holds back until it
/// ends. Measured: with a read per change, the touchpoint read was the most frequent
/// statement of a latency run (7,200 calls, 0.08–0.55 ms each as its plan varied), while a
/// batch touches a handful of touchpoints.
#[derive(Debug, Default)]
pub(crate) struct BatchState {
    silences: std::collections::HashMap<String, Vec<Silence>>,
    /// (tenant, touchpoint subject) → its open alerts (id, severity), by id; kept current
    /// as the batch changes alerts about the touchpoint.
    touchpoints: std::collections::HashMap<(String, String), Vec<(String, String)>>,
    /// Tenant → the touchpoint subjects the batch's customer signals name: when one must
    /// be read, all of them are, in one statement.
    named_touchpoints: std::collections::HashMap<String, std::collections::BTreeSet<String>>,
    pub(crate) writes: AlertWrites,
}

impl BatchState {
    /// A touchpoint the batch's signals name (the `touchpoint` label of a customer alert).
    pub(crate) fn names_touchpoint(&mut self, tenant: &str, touchpoint: &str) {
        self.named_touchpoints.entry(tenant.to_string()).or_default().insert(format!("touchpoint:{touchpoint}"));
    }
}

/// An alert's change with its transition held, and its notification not yet in the log.
#[derive(Debug)]
pub(crate) struct PendingChange {
    alert: Alert,
    notification: Notification,
}

/// Holds the transition of an alert's change (the caller staged the alert in
/// `cache.writes`) and decides its notification (silenced or inhibited or not);
/// [`log_changes`] puts it in the log, after [`AlertWrites::flush`].
pub(crate) async fn prepare_change(
    conn: &mut AnyConnection,
    a: &Alert,
    by: &str,
    note: &str,
    now: i64,
    cache: &mut BatchState,
) -> Result<PendingChange, StoreError> {
    if a.subject.starts_with("touchpoint:")
        && let Some(open) = cache.touchpoints.get_mut(&(a.tenant_id.clone(), a.subject.clone()))
    {
        keep_open(open, a);
    }
    cache.writes.transition(a, now, by, note);
    if !cache.silences.contains_key(&a.tenant_id) {
        let active = silences(conn, &a.tenant_id, Some(now)).await?;
        cache.silences.insert(a.tenant_id.clone(), active);
    }
    let mut silenced_by =
        cache.silences[&a.tenant_id].iter().find(|s| s.mutes(&a.labels, now)).map(|s| s.id.clone()).unwrap_or_default();
    if silenced_by.is_empty() {
        silenced_by = if a.state == AlertState::Acknowledged {
            firing_inhibition(conn, a).await?
        } else {
            inhibitor(conn, a, cache).await?.map(|id| format!("inhibited:{id}")).unwrap_or_default()
        };
    }
    let id = notification_id(&a.alert_id, a.episode, a.state, now);
    let payload = serde_json::json!({
        "type": format!("alert.{}", a.state.as_str()),
        "timestamp": crate::time_rfc3339(now),
        "notification_id": id,
        "data": a,
    })
    .to_string();
    let n = Notification {
        seq: 0,
        notification_id: id,
        tenant_id: a.tenant_id.clone(),
        alert_id: a.alert_id.clone(),
        state: a.state,
        at: now,
        silenced_by,
        payload,
    };
    Ok(PendingChange { alert: a.clone(), notification: n })
}

/// Appends changes to the notification log, in order, with their pending deliveries.
/// The log's position comes from the single cursor row, whose update serialises writers
/// until they commit (so a reader resuming after seq N never skips one). Every notifying
/// transaction waits for that row, so it is taken last, for all of the batch's changes at
/// once, after the deliveries are decided and written (they name the notification, not
/// its position); then one statement writes the log rows. The caller commits right after.
pub(crate) async fn log_changes(
    conn: &mut AnyConnection,
    changes: Vec<PendingChange>,
    now: i64,
) -> Result<Vec<Notification>, StoreError> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    // A tenant's subscriptions, read once for all of the batch's changes.
    let mut subscribers: std::collections::HashMap<String, Vec<(Subscription, String)>> = Default::default();
    for PendingChange { alert: a, notification: n } in &changes {
        if !n.silenced_by.is_empty() {
            continue;
        }
        if !subscribers.contains_key(&a.tenant_id) {
            let subs = subscriptions(conn, &a.tenant_id).await?;
            subscribers.insert(a.tenant_id.clone(), subs);
        }
        for (sub, disabled) in &subscribers[&a.tenant_id] {
            if !disabled.is_empty() || matches!(sub.target, Target::GrpcStream) || !sub.filter.accepts(&a.facts()) {
                continue;
            }
            let (group_key, next_at) = match (&sub.grouping, &sub.target) {
                (Some(g), Target::Webhook { .. }) => {
                    let key = g.key(&a.labels);
                    (key.clone(), group_due(conn, &a.tenant_id, &sub.id, &key, g, now).await?)
                }
                _ => (String::new(), now),
            };
            sqlx::query(
                "INSERT INTO alerting_deliveries (notification_id, subscription_id, tenant_id, status, attempts, \
                 next_at, last_error, updated_at, group_key) VALUES ($1, $2, $3, 'pending', 0, $4, '', $5, $6)",
            )
            .bind(&n.notification_id)
            .bind(&sub.id)
            .bind(&a.tenant_id)
            .bind(next_at)
            .bind(now)
            .bind(group_key)
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
        }
    }
    let (last,): (i64,) = sqlx::query_as("UPDATE alerting_cursor SET seq = seq + $1 WHERE id = 1 RETURNING seq")
        .bind(changes.len() as i64)
        .fetch_one(&mut *conn)
        .await
        .map_err(classify)?;
    let first = last - changes.len() as i64 + 1;
    let logged: Vec<Notification> = changes
        .into_iter()
        .enumerate()
        .map(|(i, c)| Notification { seq: first + i as i64, ..c.notification })
        .collect();
    for chunk in logged.chunks(500) {
        let values: Vec<String> = (0..chunk.len()).map(|r| format!("({})", placeholders(1 + r * 8, 8))).collect();
        let sql = format!(
            "INSERT INTO alerting_notifications (seq, notification_id, tenant_id, alert_id, state, at, silenced_by, \
             payload) VALUES {}",
            values.join(", ")
        );
        // Unprepared: the list's length varies from batch to batch.
        let mut q = sqlx::query(&sql).persistent(false);
        for n in chunk {
            q = q
                .bind(n.seq)
                .bind(&n.notification_id)
                .bind(&n.tenant_id)
                .bind(&n.alert_id)
                .bind(n.state.as_str())
                .bind(n.at)
                .bind(&n.silenced_by)
                .bind(&n.payload);
        }
        q.execute(&mut *conn).await.map_err(classify)?;
    }
    Ok(logged)
}

/// When a new notification of a group may leave: with the group's open batch if one is
/// waiting; otherwise after the group wait, and not before the group interval since the
/// group's last request.
async fn group_due(
    conn: &mut AnyConnection,
    tenant: &str,
    subscription: &str,
    key: &str,
    g: &crate::model::Grouping,
    now: i64,
) -> Result<i64, StoreError> {
    let (open,): (Option<i64>,) = sqlx::query_as(
        "SELECT MIN(next_at) FROM alerting_deliveries WHERE tenant_id = $1 AND subscription_id = $2 \
         AND group_key = $3 AND status = 'pending' AND batch_id = '' AND attempts = 0",
    )
    .bind(tenant)
    .bind(subscription)
    .bind(key)
    .fetch_one(&mut *conn)
    .await
    .map_err(classify)?;
    if let Some(at) = open {
        return Ok(at);
    }
    let last: Option<(i64,)> = sqlx::query_as(
        "SELECT last_sent_at FROM alerting_groups WHERE tenant_id = $1 AND subscription_id = $2 AND group_key = $3",
    )
    .bind(tenant)
    .bind(subscription)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(match last {
        Some((sent,)) => (now + g.wait_ms).max(sent + g.interval_ms),
        None => now + g.wait_ms,
    })
}

/// An acknowledgement is told to whoever was told the alert fired, and to nobody else:
/// it is muted by inhibition exactly when the alert's latest firing notification was, not
/// by whether a touchpoint alert happens to be open at the moment of the click (which
/// told subscribers of a firing and never of its acknowledgement, or the reverse).
async fn firing_inhibition(conn: &mut AnyConnection, a: &Alert) -> Result<String, StoreError> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT silenced_by FROM alerting_notifications WHERE alert_id = $1 AND state = 'firing' \
         ORDER BY seq DESC LIMIT 1",
    )
    .bind(&a.alert_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(row.map(|(s,)| s).filter(|s| s.starts_with("inhibited:")).unwrap_or_default())
}

/// Inhibition: a customer's alert about feedback at a touchpoint is muted while that
/// touchpoint has an open alert of at least the same severity — the touchpoint-wide alert
/// already explains it, and one page beats fifty.
async fn inhibitor(conn: &mut AnyConnection, a: &Alert, cache: &mut BatchState) -> Result<Option<String>, StoreError> {
    let Some(touchpoint) = a.labels.get("touchpoint").filter(|_| a.subject.starts_with("customer:")) else {
        return Ok(None);
    };
    if a.state == AlertState::Resolved {
        return Ok(None); // a resolution is always told
    }
    let key = (a.tenant_id.clone(), format!("touchpoint:{touchpoint}"));
    if !cache.touchpoints.contains_key(&key) {
        let mut subjects: Vec<String> = cache
            .named_touchpoints
            .get(&key.0)
            .into_iter()
            .flatten()
            .filter(|s| !cache.touchpoints.contains_key(&(key.0.clone(), s.to_string())))
            .cloned()
            .collect();
        if !subjects.contains(&key.1) {
            subjects.push(key.1.clone());
        }
        let what = (
            "subject, alert_id, severity",
            "alerting_alerts",
            "tenant_id = $1 AND state IN ('firing', 'acknowledged')",
            "subject",
        );
        let k = keyed_select(conn, what, 2, &subjects);
        let mut q = sqlx::query_as::<_, (String, String, String)>(&k.sql).persistent(k.prepared).bind(&key.0);
        for b in &k.binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&mut *conn).await.map_err(classify)?;
        for subject in subjects {
            let mut open: Vec<(String, String)> =
                rows.iter().filter(|r| r.0 == subject).map(|r| (r.1.clone(), r.2.clone())).collect();
            open.sort();
            for held in cache.writes.held(&key.0, &subject) {
                keep_open(&mut open, held);
            }
            cache.touchpoints.insert((key.0.clone(), subject), open);
        }
    }
    let open = &cache.touchpoints[&key];
    Ok(open.iter().find(|(_, sev)| parse_severity(sev).is_some_and(|s| s >= a.severity)).map(|(id, _)| id.clone()))
}

/// Brings a list of open alerts (id, severity), by id, up to date with an alert's change.
fn keep_open(open: &mut Vec<(String, String)>, a: &Alert) {
    open.retain(|(id, _)| id != &a.alert_id);
    if a.state.is_open() {
        open.push((a.alert_id.clone(), severity_str(a.severity).to_string()));
        open.sort();
    }
}

/// A consumer group's stored next offsets of a topic's partitions, all of them: a row per
/// partition, so one prepared statement serves a batch of any partitions (a group of
/// partitions read theirs a statement each before, 2026-12-01).
pub(crate) async fn offsets(
    conn: &mut AnyConnection,
    group: &str,
    topic: &str,
) -> Result<std::collections::HashMap<i32, i64>, StoreError> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT partition_id, next_offset FROM alerting_offsets WHERE consumer_group = $1 AND topic = $2",
    )
    .bind(group)
    .bind(topic)
    .fetch_all(&mut *conn)
    .await
    .map_err(classify)?;
    rows.into_iter()
        .map(|(p, next)| {
            let p = i32::try_from(p)
                .map_err(|_| corrupt("alerting_offsets.partition_id", format!("{p} is no partition")))?;
            Ok((p, next))
        })
        .collect()
}

/// Moves partitions' offsets (partition, stored offset read before, or none if there was
/// none; next offset), a statement for the stored ones and one for the new. Each is guarded
/// by what was read: a partition whose offset moved (or was first stored) meanwhile is
/// fenced, and the caller's transaction then fails with nothing of its batch written.
/// Each partition moves at most once: in one `UPDATE … FROM (VALUES …)` a partition listed
/// twice would match once, and one of its moves would be lost without a fence.
pub(crate) async fn move_offsets(
    conn: &mut AnyConnection,
    group: &str,
    topic: &str,
    moves: &[(i32, Option<i64>, i64)],
) -> Result<(), StoreError> {
    let mut partitions: Vec<i32> = moves.iter().map(|m| m.0).collect();
    partitions.sort_unstable();
    if let Some(w) = partitions.windows(2).find(|w| w[0] == w[1]) {
        return Err(StoreError::Invalid(format!("partition {} moves twice in one batch", w[0])));
    }
    let stored: Vec<_> = moves.iter().filter_map(|&(p, e, next)| e.map(|e| (p, e, next))).collect();
    let new: Vec<_> = moves.iter().filter(|m| m.1.is_none()).map(|&(p, _, next)| (p, next)).collect();
    let mut moved = std::collections::HashSet::with_capacity(moves.len());
    // The statements' text varies only with the number of partitions, which the topic
    // bounds, so they are prepared.
    if !stored.is_empty() {
        let values: Vec<String> = (0..stored.len()).map(|r| format!("({})", placeholders(3 + r * 3, 3))).collect();
        let sql = format!(
            "UPDATE alerting_offsets SET next_offset = v.column3 FROM (VALUES {}) AS v \
             WHERE alerting_offsets.consumer_group = $1 AND alerting_offsets.topic = $2 \
             AND alerting_offsets.partition_id = v.column1 AND alerting_offsets.next_offset = v.column2 \
             RETURNING alerting_offsets.partition_id",
            values.join(", ")
        );
        let mut q = sqlx::query_as::<_, (i64,)>(&sql).bind(group).bind(topic);
        for (p, expected, next) in &stored {
            q = q.bind(*p as i64).bind(*expected).bind(*next);
        }
        moved.extend(q.fetch_all(&mut *conn).await.map_err(classify)?.into_iter().map(|r| r.0));
    }
    if !new.is_empty() {
        let values: Vec<String> = (0..new.len()).map(|r| format!("({})", placeholders(3 + r * 2, 2))).collect();
        // `WHERE true`: SQLite otherwise reads the `ON` of `ON CONFLICT` as a join's.
        let sql = format!(
            "INSERT INTO alerting_offsets (consumer_group, topic, partition_id, next_offset) \
             SELECT $1, $2, v.column1, v.column2 FROM (VALUES {}) AS v WHERE true \
             ON CONFLICT DO NOTHING RETURNING partition_id",
            values.join(", ")
        );
        let mut q = sqlx::query_as::<_, (i64,)>(&sql).bind(group).bind(topic);
        for (p, next) in &new {
            q = q.bind(*p as i64).bind(*next);
        }
        moved.extend(q.fetch_all(&mut *conn).await.map_err(classify)?.into_iter().map(|r| r.0));
    }
    match moves.iter().find(|m| !moved.contains(&(m.0 as i64))) {
        Some(&(partition, ..)) => Err(StoreError::Fenced { partition }),
        None => Ok(()),
    }
}

impl AlertStore {
    /// The partition-assignment leases (table `alerting_members`).
    pub fn leases(&self) -> cxgap_bus::membership::SqlLeases {
        cxgap_bus::membership::SqlLeases { pool: self.pool.clone(), table: "alerting_members" }
    }

    /// The next offset to apply of a partition, if any batch of it was committed.
    pub async fn next_offset(&self, group: &str, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT next_offset FROM alerting_offsets WHERE consumer_group = $1 AND topic = $2 AND partition_id = $3",
        )
        .bind(group)
        .bind(topic)
        .bind(partition as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        Ok(row.map(|r| r.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets stored and moved several partitions at a time; one partition's stale
    /// expectation (moved, or first stored, by someone else) fences the whole move.
    async fn offsets_move_together_or_not_at_all(url: &str) {
        let store = AlertStore::connect(url).await.unwrap();
        let read = |store: &AlertStore| {
            let pool = store.pool.clone();
            async move {
                let mut conn = pool.acquire().await.unwrap();
                let mut o: Vec<(i32, i64)> = offsets(&mut conn, "g", "signals").await.unwrap().into_iter().collect();
                o.sort();
                o
            }
        };
        let mut tx = store.begin().await.unwrap();
        move_offsets(&mut tx, "g", "signals", &[(0, None, 5), (1, None, 3)]).await.unwrap();
        // Another group's and another topic's rows are not read as this group's.
        move_offsets(&mut tx, "h", "signals", &[(0, None, 50)]).await.unwrap();
        move_offsets(&mut tx, "g", "other", &[(2, None, 60)]).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(read(&store).await, [(0, 5), (1, 3)]);

        let mut tx = store.begin().await.unwrap();
        move_offsets(&mut tx, "g", "signals", &[(0, Some(5), 7), (1, Some(3), 4), (2, None, 1)]).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(read(&store).await, [(0, 7), (1, 4), (2, 1)]);

        for (moves, fenced) in [
            (vec![(0, Some(7), 9), (1, Some(3), 9)], 1),
            (vec![(0, Some(7), 9), (2, None, 9)], 2),
            (vec![(3, None, 9), (0, Some(6), 9)], 0),
        ] {
            let mut tx = store.begin().await.unwrap();
            let e = move_offsets(&mut tx, "g", "signals", &moves).await.unwrap_err();
            assert!(matches!(e, StoreError::Fenced { partition } if partition == fenced), "{moves:?}: {e}");
            drop(tx);
            assert_eq!(read(&store).await, [(0, 7), (1, 4), (2, 1)], "{moves:?}");
        }
        let mut tx = store.begin().await.unwrap();
        let e = move_offsets(&mut tx, "g", "signals", &[(0, Some(7), 8), (0, Some(7), 9)]).await.unwrap_err();
        assert!(matches!(&e, StoreError::Invalid(m) if m.contains("partition 0 moves twice")), "{e}");
    }

    #[tokio::test]
    async fn offsets_move_together_or_not_at_all_on_postgres() {
        let db = cxgap_testkit::TestDb::new().await.unwrap();
        offsets_move_together_or_not_at_all(&db.url).await;
    }

    #[tokio::test]
    async fn offsets_move_together_or_not_at_all_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        offsets_move_together_or_not_at_all(&format!("sqlite:{}", dir.path().join("a.db").display())).await;
    }

    /// Keys that JSON must carry unchanged, and lists of several lengths, some keys absent.
    async fn keyed_reads_find_exactly_their_keys(store: &AlertStore) -> sqlx::pool::PoolConnection<sqlx::Any> {
        let ids: Vec<String> = ["plain", "quote\"d", "back\\slash", "ünï\u{1F600}", "comma, [x]", "", "null"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut conn = store.pool.acquire().await.unwrap();
        let points: Vec<(String, String, i64, f64)> = ids
            .iter()
            .enumerate()
            .map(|(i, c)| ("acme".into(), c.clone(), 1_000 + i as i64, i as f64 / 10.0))
            .collect();
        insert_risk(&mut conn, &points).await.unwrap();
        insert_risk(&mut conn, &[("other".into(), "plain".into(), 5_000, 0.9)]).await.unwrap();
        for n in [1, 3, ids.len()] {
            let mut asked: Vec<String> = ids[..n].to_vec();
            asked.push("absent".into());
            let mut got = risk_history(&mut conn, "acme", &asked, 0).await.unwrap();
            got.sort_by_key(|p| p.1);
            let want: Vec<(String, i64, f64)> = points[..n].iter().map(|(_, c, at, r)| (c.clone(), *at, *r)).collect();
            assert_eq!(got, want, "{n} keys");
        }
        assert!(risk_history(&mut conn, "acme", &ids, 1_003).await.unwrap().iter().all(|p| p.1 >= 1_003));
        conn
    }

    #[tokio::test]
    async fn keyed_reads_on_postgres_are_one_prepared_statement_for_any_number_of_keys() {
        let db = cxgap_testkit::TestDb::new().await.unwrap();
        let store = AlertStore::connect(&db.url).await.unwrap();
        let mut conn = keyed_reads_find_exactly_their_keys(&store).await;
        let (statements, runs): (i64, i64) = sqlx::query_as(
            "SELECT count(*), COALESCE(sum(generic_plans + custom_plans), 0)::bigint FROM pg_prepared_statements \
             WHERE statement LIKE $1",
        )
        // A parameter: the pattern written into this statement would match it too.
        .bind("%FROM alerting_risk%")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!(statements, 1, "one statement text for lists of 2, 4 and 8 keys");
        assert!(runs >= 4);
    }

    #[tokio::test]
    async fn keyed_reads_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = AlertStore::connect(&format!("sqlite:{}", dir.path().join("a.db").display())).await.unwrap();
        keyed_reads_find_exactly_their_keys(&store).await;
    }
}
