//! Signals to alerting (`cxgap.signals.v1`). Customer signals are decided inside the batch
//! that changed the customer and stored with it; aggregate signals are decided by a
//! periodic evaluation of the tenants that batches touched, which keeps each tenant's window
//! of cells in memory and, on PostgreSQL, refreshes it with what changed since its last
//! read: this instance's batches hand their cell deltas over as they commit, and only the
//! cells other instances changed are read back, by key from the batches' change log when
//! they are few, otherwise by the cells' stamps (the window grows with the data; reading
//! it whole took up to 1.8 s of every 2.4 s in a long benchmark run, and reading back every
//! changed cell still doubled the pipeline's latency p99 under load). Both go through the outbox in the store, and [`relay`] publishes
//! them.

use crate::store::{AnalyticsStore, OutboxSignal};
use cxgap_bus::{Publisher, Record, headers};
use cxgap_domain::aggregate::CellAgg;
use cxgap_domain::report::{CustomerRisk, PerceptionGap, Window, stage_perception_gaps};
use cxgap_domain::risk::RiskModel;
use cxgap_domain::signals::{AggregateFigures, SubjectKind, aggregate_figures, aggregate_signal_id};
use cxgap_domain::state::CellCoords;
use cxgap_domain::stats::Estimate;
use cxgap_domain::{Day, FeedbackEvent, GapState, Timestamp};
use cxgap_proto::{common as cpb, convert, signals as pb};
use cxgap_runtime::Shutdown;
use prometheus_client::metrics::histogram::Histogram;
use prost::Message;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{debug, warn};

pub const SIGNAL_SCHEMA: &str = "cxgap.signals.v1.Signal";
pub const STAGE_GAP_WINDOW_DAYS: u32 = 90;
use cxgap_domain::signals::AGGREGATE_WINDOW_DAYS as AGGREGATE_WINDOWS;

/// Drivers a customer signal carries, largest contribution first: enough to explain an
/// alert; the full list is one query away.
pub const SIGNAL_DRIVERS: usize = 5;

type StageGaps = [Option<f64>; 9];

/// Cells and their sums: whole, or what one batch added to each.
pub type Cells = Vec<(CellCoords, CellAgg)>;

/// What batches and the background tasks share about signals.
#[derive(Debug, Clone, Default)]
pub struct SignalHub {
    pub model: RiskModel,
    /// Per tenant, the stage perception gaps the risk model uses, refreshed by the
    /// aggregate evaluation (a batch sees only its own customers, not all cells).
    stage_gaps: Arc<RwLock<HashMap<String, StageGaps>>>,
    /// Tenants whose figures changed since the last aggregate evaluation.
    dirty: Arc<Mutex<BTreeSet<String>>>,
    /// Wakes the relay when the outbox has something new.
    pub wake: Arc<Notify>,
    /// Per tenant, the window's cells as the last evaluation left them, refreshed with the
    /// cells changed since (PostgreSQL only; see [`AnalyticsStore::cells_since`]).
    kept: Arc<Mutex<HashMap<String, KeptCells>>>,
    /// Per tenant whose cells are kept, the cell deltas of this instance's batches that
    /// committed since the last evaluation took them: they reach the kept cells from here,
    /// not from a read of the database.
    pending: Arc<Mutex<HashMap<String, Cells>>>,
    /// Held for reading by a batch from its commit until its deltas are in `pending`, and
    /// for writing by the evaluation while it takes its snapshot and the deltas.
    pub gate: Arc<tokio::sync::RwLock<()>>,
}

/// A tenant's cells kept between evaluations.
#[derive(Debug)]
struct KeptCells {
    /// The window's first day when read: when it moves, the next read is whole again so
    /// the days that left the window leave memory too.
    from: Day,
    mark: i64,
    state: GapState,
}

impl SignalHub {
    pub fn new(model: RiskModel) -> Self {
        SignalHub { model, ..Default::default() }
    }

    pub fn stage_gaps(&self, tenant: &str) -> StageGaps {
        self.stage_gaps.read().expect("stage gaps lock").get(tenant).copied().unwrap_or_default()
    }

    pub fn committed(&self, tenants: impl IntoIterator<Item = String>) {
        self.dirty.lock().expect("dirty lock").extend(tenants);
        self.wake.notify_one();
    }

    fn take_dirty(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.dirty.lock().expect("dirty lock"))
    }

    /// A committed batch's cell deltas, per tenant; call with [`Self::gate`] held for
    /// reading since before the commit. Kept only for tenants whose cells are kept.
    pub fn committed_cells(&self, cells: impl IntoIterator<Item = (String, Cells)>) {
        let mut pending = self.pending.lock().expect("pending cells lock");
        for (tenant, deltas) in cells {
            if let Some(p) = pending.get_mut(&tenant) {
                p.extend(deltas);
            }
        }
    }

    /// A batch whose commit may or may not have happened: the tenants' kept cells are no
    /// longer known to be current, so their next evaluation reads them whole.
    pub fn unsure(&self, tenants: impl IntoIterator<Item = String>) {
        let mut pending = self.pending.lock().expect("pending cells lock");
        for tenant in tenants {
            pending.remove(&tenant);
        }
    }

    /// At an evaluation's snapshot: the deltas committed since the last one (`None` when
    /// the tenant was not followed), and from now on the tenant's deltas are collected.
    fn take_pending(&self, tenant: &str) -> Option<Cells> {
        self.pending.lock().expect("pending cells lock").insert(tenant.to_string(), Vec::new())
    }

    /// A tenant's kept window, its first day and its cells sorted, as the last evaluation
    /// left them: what tests compare with the stored cells.
    pub fn kept_cells(&self, tenant: &str) -> Option<(Day, Cells)> {
        self.kept.lock().expect("kept cells lock").get(tenant).map(|k| (k.from, k.state.snapshot().cells))
    }

    fn forget_pending(&self, tenant: &str) {
        self.pending.lock().expect("pending cells lock").remove(tenant);
    }
}

pub fn day_of_ms(ms: i64) -> Day {
    Timestamp(ms).day()
}

fn estimate(e: &Estimate) -> cpb::Estimate {
    cpb::Estimate { value: e.value, n: e.n, lower: e.lower, upper: e.upper }
}

fn date(d: Day) -> cpb::Date {
    let (year, month, day) = d.ymd();
    cpb::Date { year, month, day }
}

fn encode(id: &str, tenant: &str, now_ms: i64, body: pb::signal::Body) -> Vec<u8> {
    pb::Signal {
        signal_id: id.to_string(),
        tenant_id: tenant.to_string(),
        emitted_at: Some(convert::timestamp_to_pb(Timestamp(now_ms))),
        body: Some(body),
    }
    .encode_to_vec()
}

fn note(e: &FeedbackEvent) -> pb::FeedbackNote {
    let comment = e.comment.as_deref().unwrap_or_default();
    pb::FeedbackNote {
        event_id: e.event_id.clone(),
        occurred_at: Some(convert::timestamp_to_pb(e.occurred_at)),
        channel: convert::channel_to_pb(e.channel),
        journey_stage: convert::stage_to_pb(e.journey_stage),
        touchpoint: e.touchpoint.clone().unwrap_or_default(),
        nps: e.nps.map(u32::from),
        sentiment: e.comment.as_deref().map(cxgap_domain::sentiment::compound),
        comment: comment.chars().take(500).collect(),
        sla_breached: e.operational.sla_breached(),
    }
}

/// The signal for a customer whose risk was just reassessed after `feedback`.
pub fn customer_signal(
    tenant: &str,
    r: &CustomerRisk,
    previous_risk: Option<f64>,
    feedback: &[&FeedbackEvent],
    as_of: Day,
    now_ms: i64,
) -> OutboxSignal {
    let newest = feedback.iter().max_by(|a, b| (a.occurred_at, &a.event_id).cmp(&(b.occurred_at, &b.event_id)));
    let id = cxgap_domain::signals::customer_signal_id(
        tenant,
        &r.customer_id,
        r.events,
        newest.map_or("", |e| e.event_id.as_str()),
        as_of,
    );
    let mut notes: Vec<&FeedbackEvent> = feedback.to_vec();
    notes.sort_by(|a, b| (a.occurred_at, &a.event_id).cmp(&(b.occurred_at, &b.event_id)));
    let body = pb::signal::Body::Customer(pb::CustomerRiskChanged {
        customer_id: r.customer_id.clone(),
        risk: r.risk,
        previous_risk,
        health: r.health,
        drivers: r
            .drivers
            .iter()
            .take(SIGNAL_DRIVERS)
            .map(|d| pb::Driver { feature: d.feature.to_string(), value: d.value, contribution: d.contribution })
            .collect(),
        segment: r.attributes.0.iter().cloned().collect(),
        customer_value: r.customer_value,
        last_seen: Some(convert::timestamp_to_pb(r.last_seen)),
        events: r.events,
        feedback: notes.into_iter().map(note).collect(),
    });
    OutboxSignal {
        payload: encode(&id, tenant, now_ms, body),
        tenant: tenant.to_string(),
        kind: "customer",
        subject: r.customer_id.clone(),
        key: format!("{tenant}/{}", r.customer_id),
        risk: Some(r.risk),
        id,
    }
}

fn perception(g: &PerceptionGap) -> pb::PerceptionFigure {
    pb::PerceptionFigure {
        instrument: g.instrument.name().to_string(),
        journey_stage: g.journey_stage.map_or(0, convert::stage_to_pb),
        internal: g.internal,
        customer: g.customer.as_ref().map(estimate),
        gap: g.gap.as_ref().map(estimate),
    }
}

/// The signal for one subject's window figures; `None` when an accumulator no longer fits
/// the row form (a sum of squares beyond 64 bits), which is logged.
pub fn aggregate_signal(tenant: &str, f: &AggregateFigures, now_ms: i64) -> Option<OutboxSignal> {
    let (Some(current), Some(previous)) = (f.current.to_row(), f.previous.to_row()) else {
        warn!(subject = %f.subject, "figures too large for a signal; skipped");
        return None;
    };
    let id = aggregate_signal_id(tenant, f);
    let kind = match f.kind {
        SubjectKind::Touchpoint => pb::SubjectKind::Touchpoint,
        SubjectKind::JourneyStage => pb::SubjectKind::JourneyStage,
        SubjectKind::Channel => pb::SubjectKind::Channel,
        SubjectKind::Segment => pb::SubjectKind::Segment,
    };
    let body = pb::signal::Body::Aggregate(pb::AggregateChanged {
        subject_kind: kind as i32,
        subject: f.subject.clone(),
        window_days: f.window_days,
        as_of: Some(date(f.as_of)),
        current: current.to_vec(),
        previous: previous.to_vec(),
        perception: f.perception.iter().map(perception).collect(),
    });
    let subject = format!("{}:{}:{}d", f.kind.as_str(), f.subject, f.window_days);
    Some(OutboxSignal {
        payload: encode(&id, tenant, now_ms, body),
        tenant: tenant.to_string(),
        kind: "aggregate",
        key: format!("{tenant}/{}:{}", f.kind.as_str(), f.subject),
        subject,
        risk: None,
        id,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Recomputes the figures of the tenants batches touched: the stage perception gaps the
/// risk model uses, and the aggregate signals (stored only when their content is new).
/// Returns how many new signals were stored.
pub async fn evaluate_dirty(store: &AnalyticsStore, hub: &SignalHub) -> Result<usize, crate::store::StoreError> {
    let tenants: Vec<String> = hub.take_dirty().into_iter().collect();
    let mut stored = 0;
    for (i, tenant) in tenants.iter().enumerate() {
        match evaluate_tenant(store, hub, tenant).await {
            Ok(n) => stored += n,
            Err(e) => {
                // Not lost: this tenant and the ones not reached are evaluated next time.
                hub.committed(tenants[i..].iter().cloned());
                return Err(e);
            }
        }
    }
    if stored > 0 {
        hub.wake.notify_one();
    }
    Ok(stored)
}

async fn evaluate_tenant(
    store: &AnalyticsStore,
    hub: &SignalHub,
    tenant: &str,
) -> Result<usize, crate::store::StoreError> {
    let started = std::time::Instant::now();
    let Some(last) = store.last_day(tenant).await? else { return Ok(0) };
    // Event time, as the offline report uses; never ahead of today.
    let as_of = last.min(day_of_ms(now_ms()));
    let reach = STAGE_GAP_WINDOW_DAYS.max(2 * AGGREGATE_WINDOWS.iter().max().copied().unwrap_or(30));
    let from = as_of.plus_days(1 - reach as i32);
    // Taken out while reading, so a failed read leaves nothing half refreshed behind.
    let kept = hub.kept.lock().expect("kept cells lock").remove(tenant).filter(|k| k.from == from);
    let (read, pending) = match store
        .cells_since(
            tenant,
            from,
            kept.as_ref().map(|k| k.mark),
            kept.as_ref().map_or(0, |k| k.state.cell_count()),
            &hub.gate,
            || hub.take_pending(tenant),
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            hub.forget_pending(tenant);
            return Err(e);
        }
    };
    let mut state = match kept {
        Some(k) if !read.whole => k.state,
        _ => GapState::new(),
    };
    for (coords, agg) in &read.cells {
        state.set_cell(coords, agg);
    }
    // This instance's batches that committed before the snapshot: a cell just read holds
    // their deltas already, and a whole read holds them all.
    if !read.whole {
        let read_now: HashSet<&CellCoords> = read.cells.iter().map(|(c, _)| c).collect();
        for (coords, delta) in pending.iter().flatten() {
            if coords.0 >= from && !read_now.contains(coords) {
                state.merge_cell(coords, delta);
            }
        }
    }
    // Few rows; a replaced assessment is superseded as in memory (latest wins).
    for a in store.assessments(tenant).await? {
        state.apply_assessment(&a);
    }
    let gaps = stage_perception_gaps(&state, Window::Days(STAGE_GAP_WINDOW_DAYS), as_of);
    hub.stage_gaps.write().expect("stage gaps lock").insert(tenant.to_string(), gaps);
    let now = now_ms();
    let signals: Vec<OutboxSignal> = aggregate_figures(&state, as_of, &AGGREGATE_WINDOWS)
        .iter()
        .filter_map(|f| aggregate_signal(tenant, f, now))
        .collect();
    let stored = store.add_signals(&signals, now).await? as usize;
    debug!(
        tenant,
        cells_read = read.cells.len(),
        own_deltas = pending.as_ref().map_or(0, Vec::len),
        whole = read.whole,
        keyed = read.keyed,
        cells = state.cell_count(),
        stored,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "tenant evaluated"
    );
    match read.mark {
        Some(mark) => {
            hub.kept.lock().expect("kept cells lock").insert(tenant.to_string(), KeptCells { from, mark, state });
        }
        None => hub.forget_pending(tenant),
    }
    Ok(stored)
}

/// Evaluation rounds between two prunings of the change log: at the default interval of
/// 2 s, a minute. A tenant evaluated less often than that is read by the cells' stamps
/// next time.
const ROUNDS_PER_LOG_PRUNE: u32 = 30;

/// Evaluation rounds between two sweeps of every stored tenant (see [`sweep`]): at the
/// default interval of 2 s, five minutes.
const ROUNDS_PER_SWEEP: u32 = 150;

/// Marks every tenant with stored figures for the next evaluation, not only those this
/// instance's batches touched. Which tenants are due lives in memory, so without this an
/// instance that stopped between a batch's commit and the evaluation after it (up to an
/// interval) took those tenants' aggregate signals with it until their next batch, and
/// an instance that started used no stage gaps in its customers' risk until its own
/// batches had touched the tenant and an evaluation had run. So at start-up, before the
/// first batch, and every [`ROUNDS_PER_SWEEP`] rounds after it (for tenants whose
/// batches went through an instance that stopped for good). Evaluating an unchanged
/// tenant stores nothing: a figure's signal id is its content's.
pub async fn sweep(store: &AnalyticsStore, hub: &SignalHub) -> Result<usize, crate::store::StoreError> {
    let tenants = store.tenants().await?;
    let n = tenants.len();
    hub.dirty.lock().expect("dirty lock").extend(tenants);
    Ok(n)
}

/// What an instance does before its first batch: [`sweep`], then one evaluation, so that
/// its batches see every tenant's stage gaps and what a stopped instance left undecided is
/// decided. A failure is logged, not fatal: the evaluation loop sweeps again at its first
/// round.
pub async fn start(store: &AnalyticsStore, hub: &SignalHub) -> bool {
    let started = std::time::Instant::now();
    let tenants = match sweep(store, hub).await {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "listing the stored tenants at start-up failed; the first evaluation round retries");
            return false;
        }
    };
    match evaluate_dirty(store, hub).await {
        Ok(stored) => {
            tracing::info!(
                tenants,
                signals = stored,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "every stored tenant evaluated before the first batch"
            );
            true
        }
        Err(e) => {
            warn!(error = %e, "the start-up evaluation failed; the first evaluation round retries");
            false
        }
    }
}

/// Runs [`evaluate_dirty`] every `interval` until shutdown, and prunes the cell change log
/// every [`ROUNDS_PER_LOG_PRUNE`] rounds below the mark of the pruning before.
/// Sweeps (see [`sweep`]) every [`ROUNDS_PER_SWEEP`] rounds, and at the round after a
/// sweep that failed: the first round when `swept` is false (the start-up sweep failed).
pub async fn evaluate_loop(store: AnalyticsStore, hub: SignalHub, interval: Duration, shutdown: Shutdown, swept: bool) {
    let mut prune_below = 0;
    let mut round = 0u32;
    let mut sweep_due = !swept;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        round = round.wrapping_add(1);
        if sweep_due || round.is_multiple_of(ROUNDS_PER_SWEEP) {
            match sweep(&store, &hub).await {
                Ok(n) => {
                    debug!(tenants = n, "every stored tenant marked for evaluation");
                    sweep_due = false;
                }
                Err(e) => {
                    warn!(error = %e, "listing the stored tenants failed; the next round retries");
                    sweep_due = true;
                }
            }
        }
        if round % ROUNDS_PER_LOG_PRUNE == 1 {
            match store.prune_cell_changes(prune_below).await {
                Ok((pruned, mark)) => {
                    debug!(pruned, "cell change log pruned");
                    prune_below = mark;
                }
                Err(e) => warn!(error = %e, "pruning the cell change log failed; will retry"),
            }
        }
        match evaluate_dirty(&store, &hub).await {
            Ok(n) if n > 0 => debug!(signals = n, "aggregate signals decided"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "aggregate evaluation failed; will retry"),
        }
    }
}

/// Publishes the outbox in order of creation; a row is marked published only after the
/// broker acknowledged it, so a crash republishes (same id) rather than loses. Each
/// acknowledged signal's time since it was created (its batch's start, or its evaluation
/// round's) goes to `delay`.
pub async fn relay<P: Publisher>(
    store: &AnalyticsStore,
    publisher: &P,
    topic: &str,
    batch: usize,
    delay: Option<&Histogram>,
) -> Result<usize, String> {
    let rows = store.unpublished(batch).await.map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Ok(0);
    }
    let records: Vec<Record> = rows
        .iter()
        .map(|r| Record {
            topic: topic.to_string(),
            key: r.key.clone().into_bytes(),
            payload: r.payload.clone(),
            headers: vec![
                (headers::ID.into(), r.id.clone().into_bytes()),
                (headers::SCHEMA.into(), SIGNAL_SCHEMA.as_bytes().to_vec()),
                (headers::SCHEMA_VERSION.into(), b"1".to_vec()),
                (headers::TENANT.into(), r.tenant.clone().into_bytes()),
            ],
        })
        .collect();
    let results = publisher.publish(records).await;
    let acknowledged = now_ms();
    let mut done = Vec::with_capacity(rows.len());
    let mut failed = None;
    for (row, r) in rows.iter().zip(results) {
        match r {
            Ok(_) => {
                // Another instance's clock may be ahead of this one's: never below zero.
                if let Some(h) = delay {
                    h.observe((acknowledged - row.created_at).max(0) as f64 / 1e3);
                }
                done.push(row)
            }
            Err(e) => {
                failed.get_or_insert(e.to_string());
            }
        }
    }
    store.mark_published(&done).await.map_err(|e| e.to_string())?;
    match failed {
        Some(e) => Err(format!("publishing signals: {e}")),
        None => Ok(done.len()),
    }
}

/// Runs [`relay`] whenever woken (and at least every second) until shutdown, then once
/// more so signals of the last batch leave before the process does.
pub async fn relay_loop<P: Publisher>(
    store: AnalyticsStore,
    publisher: P,
    topic: String,
    hub: SignalHub,
    delay: Histogram,
    shutdown: Shutdown,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match relay(&store, &publisher, &topic, 500, Some(&delay)).await {
            Ok(n) if n > 0 => {
                backoff = Duration::from_millis(100);
                continue;
            }
            Ok(_) => backoff = Duration::from_millis(100),
            Err(e) => {
                warn!(error = %e, "signal relay failed; will retry");
                backoff = (backoff * 2).min(Duration::from_secs(5));
                tokio::time::sleep(backoff).await;
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = hub.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    if let Err(e) = relay(&store, &publisher, &topic, 10_000, Some(&delay)).await {
        warn!(error = %e, "signals left in the outbox at shutdown; they go out on the next start");
    }
}
