//! One partition's batch of signals (or a group of small ones, see
//! [`Processor::process_group`]) as one transaction: the offset moves (fenced), each
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
        self.process_partitions(&[(partition, records)], accept_gap).await
    }

    /// Evaluates several partitions' signals in one transaction, each partition's in offset
    /// order and its offset moving as in [`Processor::process_batch`]; a gap or a fence in
    /// any of them fails them all (nothing is written).
    ///
    /// At low rates a relay's publish spreads a few signals over every partition, and a
    /// transaction for each repeated a dozen statements for one or two signals: in a
    /// census at 1,000 events/s, alerting's per-partition transactions were more than half
    /// of the statements PostgreSQL ran, and time outside the statements themselves
    /// (protocol, parse, commit) was about 40 % of its CPU (docs/benchmarks.md).
    #[tracing::instrument(skip_all, fields(partitions = parts.len()), err)]
    pub async fn process_group(&self, parts: &[(i32, &[Consumed])]) -> Result<BatchStats, StoreError> {
        self.process_partitions(parts, false).await
    }

    async fn process_partitions(
        &self,
        parts: &[(i32, &[Consumed])],
        accept_gap: bool,
    ) -> Result<BatchStats, StoreError> {
        let c = &self.config;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let mut stats = BatchStats::default();
        // (partition, offset expected in storage, next offset) of each partition that moves.
        let mut moves = Vec::with_capacity(parts.len());
        let mut signals = Vec::new();
        let stored = store::offsets(&mut tx, &c.group, &c.topic).await?;
        for &(partition, records) in parts {
            let expected = stored.get(&partition).copied();
            let fresh = cxgap_bus::consume::fresh(partition, records, expected, accept_gap).map_err(StoreError::Gap)?;
            stats.records += records.len();
            stats.replayed += fresh.replayed;
            let Some(next) = fresh.next_offset() else { continue };
            moves.push((partition, expected, next));
            for r in fresh.records {
                match pb::Signal::decode(r.record.payload.as_slice()) {
                    Ok(s) => match invalid(&s) {
                        None => signals.push(s),
                        Some(why) => {
                            warn!(partition, offset = r.offset, signal_id = %s.signal_id, "invalid signal, {why}; skipped");
                            stats.rejected += 1;
                        }
                    },
                    Err(e) => {
                        warn!(partition, offset = r.offset, error = %e, "undecodable signal; skipped");
                        stats.rejected += 1;
                    }
                }
            }
        }
        if moves.is_empty() {
            return Ok(stats);
        }
        // What the batch's signals need is read up front, a statement per kind rather than
        // several per signal, and kept current in memory as the signals are applied in order.
        let mut unseen = store::claim_signals(&mut tx, &signals, now).await?;
        let mut rules: HashMap<String, Vec<Rule>> = HashMap::new();
        for tenant in signals
            .iter()
            .filter(|s| unseen.contains(&(s.tenant_id.clone(), s.signal_id.clone())))
            .map(|s| &s.tenant_id)
        {
            if !rules.contains_key(tenant) {
                if !self.store.tenant_known(tenant) {
                    store::ensure_tenant(&mut tx, tenant, now).await?;
                }
                rules.insert(tenant.clone(), store::rules(&mut tx, tenant).await?);
            }
        }
        let mut customers = SubjectContext::load(&mut tx, &signals, &unseen, now).await?;
        let mut risk_points = Vec::new();
        let mut changes = Vec::new();
        let mut cache = store::BatchState::default();
        for s in signals.iter().filter(|s| unseen.contains(&(s.tenant_id.clone(), s.signal_id.clone()))) {
            if let Some(pb::signal::Body::Customer(c)) = &s.body
                && let Some(t) = crate::evaluate::feedback_touchpoint(c)
            {
                cache.names_touchpoint(&s.tenant_id, t);
            }
        }
        for signal in &signals {
            // Seen before this batch, or earlier in it.
            if !unseen.remove(&(signal.tenant_id.clone(), signal.signal_id.clone())) {
                stats.duplicates += 1;
                continue;
            }
            stats.signals += 1;
            let tenant = &signal.tenant_id;
            let tenant_rules = &rules[tenant];
            let ctx = Batch {
                customers: &mut customers,
                changes: &mut changes,
                cache: &mut cache,
                repeat_ms: c.repeat_ms,
                now,
            };
            stats.notifications += apply_signal(&mut tx, tenant, tenant_rules, signal, ctx).await?;
            if let Some(pb::signal::Body::Customer(cs)) = &signal.body {
                let at = signal.emitted_at.as_ref().map_or(now, |t| t.seconds * 1000 + t.nanos as i64 / 1_000_000);
                if customers.add_risk(tenant, &cs.customer_id, at, cs.risk) {
                    risk_points.push((tenant.clone(), cs.customer_id.clone(), at, cs.risk));
                }
            }
        }
        cache.writes.flush(&mut tx).await?;
        let (keep, forget) = customers.settle(&risk_points);
        store::insert_risk(&mut tx, &keep).await?;
        store::delete_risk(&mut tx, &forget).await?;
        store::move_offsets(&mut tx, &c.group, &c.topic, &moves).await?;
        // Last before the commit: it takes the log's cursor row, which every notifying
        // transaction waits for until this one commits.
        store::log_changes(&mut tx, changes, now).await?;
        tx.commit().await.map_err(classify)?;
        self.store.tenants_stored(rules.keys());
        Ok(stats)
    }
}

/// Why a decoded signal cannot be evaluated, if it cannot. Analytics sends none of these,
/// but another producer on the topic could, and a value the store refuses (SQLite keeps a
/// NaN risk as NULL) would fail the batch on every retry and stop the partition.
fn invalid(s: &pb::Signal) -> Option<String> {
    if s.tenant_id.is_empty() {
        return Some("tenant_id is empty".into());
    }
    if s.signal_id.is_empty() {
        return Some("signal_id is empty".into());
    }
    // Protobuf's own range for a Timestamp (years 1–9999), which also keeps the
    // millisecond arithmetic from overflowing.
    if let Some(t) = &s.emitted_at
        && !((-62_135_596_800..=253_402_300_799).contains(&t.seconds) && (0..1_000_000_000).contains(&t.nanos))
    {
        return Some(format!("emitted_at {}s {}ns is outside the years 1 to 9999", t.seconds, t.nanos));
    }
    if let Some(pb::signal::Body::Customer(c)) = &s.body {
        if c.customer_id.is_empty() {
            return Some("customer.customer_id is empty".into());
        }
        // A NaN is in no range, so it is refused here too.
        let probability = |x: f64| (0.0..=1.0).contains(&x);
        if !probability(c.risk) {
            return Some(format!("customer.risk is {}, not a probability from 0 to 1", c.risk));
        }
        if let Some(p) = c.previous_risk
            && !probability(p)
        {
            return Some(format!("customer.previous_risk is {p}, not a probability from 0 to 1"));
        }
        if let Some(v) = c.customer_value
            && !v.is_finite()
        {
            return Some(format!("customer.customer_value is {v}, not a finite number"));
        }
    }
    None
}

/// What a batch's signals are about: customers (their alerts and risk history, read once
/// for the batch) and aggregates (their alerts, read at a subject's first signal), kept
/// current as the signals are applied.
#[derive(Default)]
struct SubjectContext {
    /// (tenant, subject) → the alerts about that customer.
    alerts: HashMap<(String, String), Vec<Alert>>,
    /// (tenant, customer) → risk points within [`RISK_HISTORY_MS`].
    history: HashMap<(String, String), Vec<(Timestamp, f64)>>,
    /// (tenant, aggregate subject) → the alerts about it and its instruments, read at the
    /// subject's first signal in the batch.
    aggregates: HashMap<(String, String), Vec<Alert>>,
}

impl SubjectContext {
    async fn load(
        conn: &mut AnyConnection,
        signals: &[pb::Signal],
        unseen: &std::collections::HashSet<(String, String)>,
        now: i64,
    ) -> Result<SubjectContext, StoreError> {
        let mut by_tenant: HashMap<&str, Vec<String>> = HashMap::new();
        for s in signals.iter().filter(|s| unseen.contains(&(s.tenant_id.clone(), s.signal_id.clone()))) {
            if let Some(pb::signal::Body::Customer(c)) = &s.body {
                by_tenant.entry(&s.tenant_id).or_default().push(c.customer_id.clone());
            }
        }
        let mut ctx = SubjectContext::default();
        for (tenant, mut ids) in by_tenant {
            ids.sort();
            ids.dedup();
            let subjects: Vec<String> = ids.iter().map(|id| format!("customer:{id}")).collect();
            for subject in &subjects {
                ctx.alerts.insert((tenant.to_string(), subject.clone()), Vec::new());
            }
            for a in store::alerts_about_subjects(conn, tenant, &subjects).await? {
                ctx.alerts.entry((tenant.to_string(), a.subject.clone())).or_default().push(a);
            }
            for id in &ids {
                ctx.history.insert((tenant.to_string(), id.clone()), Vec::new());
            }
            for (id, at, risk) in store::risk_history(conn, tenant, &ids, now - RISK_HISTORY_MS).await? {
                ctx.history.entry((tenant.to_string(), id)).or_default().push((Timestamp(at), risk));
            }
        }
        Ok(ctx)
    }

    /// The batch's new risk points worth storing, and the stored ones to forget: of each
    /// customer's points (stored and new), only those that can still be a window's lowest
    /// ([`cxgap_domain::rules::window_low_candidates`]) stay, so the history a batch reads
    /// stays short however much feedback a customer gives. Those of the last
    /// [`RISK_LATENESS_MS`](cxgap_domain::rules::RISK_LATENESS_MS) all stay, so a signal
    /// emitted up to that much before the latest (an analytics instance whose clock is
    /// behind its predecessor's) is judged as from every point.
    fn settle(&self, new: &[(String, String, i64, f64)]) -> RiskChanges {
        let fresh: std::collections::HashSet<(&str, &str, i64)> =
            new.iter().map(|(t, c, at, _)| (t.as_str(), c.as_str(), *at)).collect();
        let mut keep = Vec::new();
        let mut forget = Vec::new();
        let touched: std::collections::BTreeSet<(&str, &str)> =
            new.iter().map(|(t, c, _, _)| (t.as_str(), c.as_str())).collect();
        for (tenant, customer) in touched {
            let points = &self.history[&(tenant.to_string(), customer.to_string())];
            let kept: std::collections::HashSet<Timestamp> =
                cxgap_domain::rules::window_low_candidates(points, cxgap_domain::rules::RISK_LATENESS_MS)
                    .into_iter()
                    .collect();
            for &(at, risk) in points {
                match (fresh.contains(&(tenant, customer, at.0)), kept.contains(&at)) {
                    (true, true) => keep.push((tenant.to_string(), customer.to_string(), at.0, risk)),
                    (false, false) => forget.push((tenant.to_string(), customer.to_string(), at.0)),
                    _ => {}
                }
            }
        }
        (keep, forget)
    }

    /// Adds a risk point unless one is stored at that instant (the table's key); returns
    /// whether it is new.
    fn add_risk(&mut self, tenant: &str, customer: &str, at: i64, risk: f64) -> bool {
        let points = self.history.entry((tenant.to_string(), customer.to_string())).or_default();
        if points.iter().any(|(t, _)| t.0 == at) {
            return false;
        }
        points.push((Timestamp(at), risk));
        true
    }
}

/// Risk points to store (tenant, customer, at, risk) and to forget (tenant, customer, at).
type RiskChanges = (Vec<(String, String, i64, f64)>, Vec<(String, String, i64)>);

/// What applying a batch's signals carries from one signal to the next.
struct Batch<'a> {
    customers: &'a mut SubjectContext,
    /// Alert changes whose notifications go into the log when the batch ends.
    changes: &'a mut Vec<store::PendingChange>,
    cache: &'a mut store::BatchState,
    repeat_ms: i64,
    now: i64,
}

/// Evaluates one signal and applies the lifecycle to every alert it speaks about.
async fn apply_signal(
    conn: &mut AnyConnection,
    tenant: &str,
    rules: &[Rule],
    signal: &pb::Signal,
    batch: Batch<'_>,
) -> Result<usize, StoreError> {
    let Batch { customers, changes, cache, repeat_ms, now } = batch;
    let (subject, customer) = match &signal.body {
        Some(pb::signal::Body::Customer(c)) => (format!("customer:{}", c.customer_id), Some(c)),
        Some(pb::signal::Body::Aggregate(a)) => {
            let Some(kind) = crate::evaluate::subject_kind(a.subject_kind) else { return Ok(0) };
            (format!("{kind}:{}", a.subject), None)
        }
        None => return Ok(0),
    };
    let key = (tenant.to_string(), subject.clone());
    let (subjects, stored, history) = match customer {
        Some(c) => (
            vec![subject.clone()],
            customers.alerts.remove(&key).unwrap_or_default(),
            customers.history.get(&(tenant.to_string(), c.customer_id.clone())).cloned().unwrap_or_default(),
        ),
        None => {
            let subjects = store::aggregate_subjects(&subject);
            let stored = match customers.aggregates.remove(&key) {
                Some(alerts) => alerts,
                None => store::alerts_about_subjects(conn, tenant, &subjects).await?,
            };
            (subjects, stored, Vec::new())
        }
    };
    // The batch's own changes are held until it ends, so whatever was read before they
    // were made sees them through the overlay.
    let alerts = cache.writes.overlay(tenant, &subjects, stored);
    let mut existing: HashMap<String, Alert> = alerts.into_iter().map(|a| (a.alert_id.clone(), a)).collect();
    let known = Known {
        open: existing.values().filter(|a| a.state.is_open()).map(|a| (a.rule_id.clone(), a.subject.clone())).collect(),
        history,
    };
    let mut notified = 0;
    for e in evaluate(rules, signal, &known) {
        let id = fingerprint(tenant, &e.rule_id, &e.subject);
        let (did_notify, after) =
            apply(conn, tenant, &e, existing.remove(&id), (changes, cache), repeat_ms, now).await?;
        notified += did_notify as usize;
        if let Some(a) = after {
            existing.insert(id, a);
        }
    }
    let alerts = existing.into_values().filter(|a| subjects.contains(&a.subject)).collect();
    match customer {
        Some(_) => customers.alerts.insert(key, alerts),
        None => customers.aggregates.insert(key, alerts),
    };
    Ok(notified)
}

/// One verdict on one alert: the lifecycle step, then the write and notification if it
/// changed anything subscribers hear about. Returns whether it notified, and the alert as it
/// now stands.
async fn apply(
    conn: &mut AnyConnection,
    tenant: &str,
    e: &Evaluation,
    current: Option<Alert>,
    (changes, cache): (&mut Vec<store::PendingChange>, &mut store::BatchState),
    repeat_ms: i64,
    now: i64,
) -> Result<(bool, Option<Alert>), StoreError> {
    let (change, status) = on_verdict(current.as_ref().map(|a| a.status()).as_ref(), e.verdict.firing, now, repeat_ms);
    let Some(status) = status else { return Ok((false, current)) };
    if change == Change::Unchanged {
        return Ok((false, current));
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
    cache.writes.stage(&mut alert, new);
    let note = match change {
        Change::Fired => "condition holds",
        Change::Repeated => "still firing (repeat interval)",
        Change::AutoResolved => "condition cleared",
        Change::Unchanged => "",
    };
    changes.push(store::prepare_change(conn, &alert, "rule", note, now, cache).await?);
    Ok((true, Some(alert)))
}
