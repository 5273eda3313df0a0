//! One partition's batch of signals as one transaction: the offset moves (fenced), each
//! new signal is evaluated against its tenant's rules, alerts change by the lifecycle
//! rules, and every change writes its notification and pending deliveries. Signals seen
//! before (analytics republishing after a crash) are skipped by id.

use crate::evaluate::{Context, Evaluation, evaluate};
use crate::model::Rule;
use crate::store::{self, Alert, AlertStore, StoreError, classify};
use cxgap_bus::Consumed;
use cxgap_domain::Timestamp;
use cxgap_domain::alerts::{Change, on_verdict};
use cxgap_domain::rules::fingerprint;
use cxgap_proto::signals as pb;
use prost::Message;
use sqlx::AnyConnection;
use std::collections::HashMap;
use tracing::warn;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorConfig {
    pub group: String,
    pub topic: String,
    /// How long a firing, unacknowledged alert waits before notifying again.
    pub repeat_ms: i64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    pub records: usize,
    pub replayed: usize,
    pub signals: usize,
    pub duplicates: usize,
    pub rejected: usize,
    pub notifications: usize,
}

/// How far back risk points are kept for risk-jump rules.
pub const RISK_HISTORY_MS: i64 = 30 * 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

struct Known {
    open: Vec<(String, String)>,
    history: Vec<(Timestamp, f64)>,
}

impl Context for Known {
    fn is_open(&self, rule_id: &str, subject: &str) -> bool {
        self.open.iter().any(|(r, s)| r == rule_id && s == subject)
    }

    fn risk_history(&self, _customer: &str) -> Vec<(Timestamp, f64)> {
        self.history.clone()
    }
}

#[derive(Debug, Clone)]
pub struct Processor {
    pub store: AlertStore,
    pub config: ProcessorConfig,
}

impl Processor {
    pub async fn process(&self, partition: i32, records: &[Consumed]) -> Result<BatchStats, StoreError> {
        self.process_batch(partition, records, false).await
    }

    /// Evaluates one partition's signals, in offset order, in one transaction with the
    /// partition's next offset; with `accept_gap`, a gap before the first record is
    /// accepted as being in the log itself.
    #[tracing::instrument(skip_all, fields(partition, records = records.len()), err)]
    pub async fn process_batch(
        &self,
        partition: i32,
        records: &[Consumed],
        accept_gap: bool,
    ) -> Result<BatchStats, StoreError> {
        let c = &self.config;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let expected: Option<(i64,)> = sqlx::query_as(
            "SELECT next_offset FROM alerting_offsets WHERE consumer_group = $1 AND topic = $2 AND partition_id = $3",
        )
        .bind(&c.group)
        .bind(&c.topic)
        .bind(partition as i64)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let expected = expected.map(|r| r.0);
        let fresh = cxgap_bus::consume::fresh(partition, records, expected, accept_gap).map_err(StoreError::Gap)?;
        let mut stats = BatchStats { records: records.len(), replayed: fresh.replayed, ..Default::default() };
        let Some(next) = fresh.next_offset() else { return Ok(stats) };
        let mut rules: HashMap<String, Vec<Rule>> = HashMap::new();
        for r in fresh.records {
            let signal = match pb::Signal::decode(r.record.payload.as_slice()) {
                Ok(s) if !s.tenant_id.is_empty() && !s.signal_id.is_empty() => s,
                Ok(_) => {
                    warn!(partition, offset = r.offset, "signal without tenant or id; skipped");
                    stats.rejected += 1;
                    continue;
                }
                Err(e) => {
                    warn!(partition, offset = r.offset, error = %e, "undecodable signal; skipped");
                    stats.rejected += 1;
                    continue;
                }
            };
            let seen = sqlx::query(
                "INSERT INTO alerting_signals_seen (tenant_id, signal_id, seen_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&signal.tenant_id)
            .bind(&signal.signal_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            if seen.rows_affected() == 0 {
                stats.duplicates += 1;
                continue;
            }
            stats.signals += 1;
            let tenant = signal.tenant_id.clone();
            if store::ensure_tenant(&mut tx, &tenant, now).await? {
                rules.remove(&tenant);
            }
            if !rules.contains_key(&tenant) {
                let loaded = store::rules(&mut tx, &tenant).await?;
                rules.insert(tenant.clone(), loaded);
            }
            let tenant_rules = &rules[&tenant];
            stats.notifications += apply_signal(&mut tx, &tenant, tenant_rules, &signal, c.repeat_ms, now).await?;
        }
        let moved = match expected {
            None => sqlx::query(
                "INSERT INTO alerting_offsets (consumer_group, topic, partition_id, next_offset) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&c.group)
            .bind(&c.topic)
            .bind(partition as i64)
            .bind(next)
            .execute(&mut *tx)
            .await
            .map_err(classify)?,
            Some(e) => sqlx::query(
                "UPDATE alerting_offsets SET next_offset = $1 WHERE consumer_group = $2 AND topic = $3 \
                 AND partition_id = $4 AND next_offset = $5",
            )
            .bind(next)
            .bind(&c.group)
            .bind(&c.topic)
            .bind(partition as i64)
            .bind(e)
            .execute(&mut *tx)
            .await
            .map_err(classify)?,
        };
        if moved.rows_affected() != 1 {
            return Err(StoreError::Fenced { partition });
        }
        tx.commit().await.map_err(classify)?;
        Ok(stats)
    }
}

/// Evaluates one signal and applies the lifecycle to every alert it speaks about.
async fn apply_signal(
    conn: &mut AnyConnection,
    tenant: &str,
    rules: &[Rule],
    signal: &pb::Signal,
    repeat_ms: i64,
    now: i64,
) -> Result<usize, StoreError> {
    let (subject, customer) = match &signal.body {
        Some(pb::signal::Body::Customer(c)) => (format!("customer:{}", c.customer_id), Some(c)),
        Some(pb::signal::Body::Aggregate(a)) => {
            let Some(kind) = crate::evaluate::subject_kind(a.subject_kind) else { return Ok(0) };
            (format!("{kind}:{}", a.subject), None)
        }
        None => return Ok(0),
    };
    let mut existing: HashMap<String, Alert> = store::alerts_about(conn, tenant, &subject, customer.is_none())
        .await?
        .into_iter()
        .map(|a| (a.alert_id.clone(), a))
        .collect();
    let history: Vec<(Timestamp, f64)> = match customer {
        Some(c) => {
            let rows: Vec<(i64, f64)> = sqlx::query_as(
                "SELECT at, risk FROM alerting_risk WHERE tenant_id = $1 AND customer_id = $2 AND at >= $3",
            )
            .bind(tenant)
            .bind(&c.customer_id)
            .bind(now - RISK_HISTORY_MS)
            .fetch_all(&mut *conn)
            .await
            .map_err(classify)?;
            rows.into_iter().map(|(at, r)| (Timestamp(at), r)).collect()
        }
        None => Vec::new(),
    };
    let known = Known {
        open: existing.values().filter(|a| a.state.is_open()).map(|a| (a.rule_id.clone(), a.subject.clone())).collect(),
        history,
    };
    let mut notified = 0;
    for e in evaluate(rules, signal, &known) {
        notified +=
            apply(conn, tenant, &e, existing.remove(&fingerprint(tenant, &e.rule_id, &e.subject)), repeat_ms, now)
                .await? as usize;
    }
    if let Some(c) = customer {
        let at = signal.emitted_at.as_ref().map_or(now, |t| t.seconds * 1000 + t.nanos as i64 / 1_000_000);
        sqlx::query(
            "INSERT INTO alerting_risk (tenant_id, customer_id, at, risk) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(&c.customer_id)
        .bind(at)
        .bind(c.risk)
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    }
    Ok(notified)
}

/// One verdict on one alert: the lifecycle step, then the write and notification if it
/// changed anything subscribers hear about. Returns whether it notified.
async fn apply(
    conn: &mut AnyConnection,
    tenant: &str,
    e: &Evaluation,
    current: Option<Alert>,
    repeat_ms: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let (change, status) = on_verdict(current.as_ref().map(|a| a.status()).as_ref(), e.verdict.firing, now, repeat_ms);
    let Some(status) = status else { return Ok(false) };
    if change == Change::Unchanged {
        return Ok(false);
    }
    let new = current.is_none();
    let mut alert = current.unwrap_or_else(|| Alert {
        alert_id: fingerprint(tenant, &e.rule_id, &e.subject),
        tenant_id: tenant.to_string(),
        rule_id: e.rule_id.clone(),
        kind: e.kind.to_string(),
        severity: e.severity,
        state: status.state,
        episode: status.episode,
        subject: e.subject.clone(),
        summary: String::new(),
        labels: e.labels.clone(),
        customer_value: e.customer_value,
        started_at: status.started_at,
        updated_at: now,
        last_notified_at: status.last_notified_at,
        version: 0,
    });
    alert.state = status.state;
    alert.episode = status.episode;
    alert.started_at = status.started_at;
    alert.last_notified_at = status.last_notified_at;
    alert.updated_at = now;
    alert.summary = format!("{}: {}", e.rule_name, e.verdict.summary);
    alert.labels = e.labels.clone();
    alert.severity = e.severity;
    if e.customer_value.is_some() {
        alert.customer_value = e.customer_value;
    }
    store::save_alert(conn, &mut alert, new).await?;
    let note = match change {
        Change::Fired => "condition holds",
        Change::Repeated => "still firing (repeat interval)",
        Change::AutoResolved => "condition cleared",
        Change::Unchanged => "",
    };
    store::record_change(conn, &alert, "rule", note, now).await?;
    Ok(true)
}
