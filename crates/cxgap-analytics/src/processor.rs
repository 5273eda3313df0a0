//! Turns one partition's batch of consumed records (or a group of small ones from several
//! partitions) into one storage transaction. Records below the stored offset were already
//! applied (redelivery after a crash or rebalance) and are skipped; events whose id was
//! already applied are skipped; what is left becomes cell deltas and updated customers,
//! written with the new offsets atomically. Records that cannot be processed go to the
//! dead-letter topic with the reason — never dropped silently.

use crate::signals::{SignalHub, customer_signal, day_of_ms};
use crate::store::{AnalyticsStore, StoreError, TenantWrite};
use cxgap_bus::{Consumed, Publisher, Record, headers};
use cxgap_domain::report::RiskView;
use cxgap_domain::{FeedbackEvent, GapState, InternalAssessment, Timestamp};
use cxgap_proto::{common as pb, convert};
use prost::Message;
use std::collections::BTreeMap;
use tracing::{debug, warn};

pub const FEEDBACK_SCHEMA: &str = "cxgap.common.v1.FeedbackEvent";
pub const ASSESSMENT_SCHEMA: &str = "cxgap.common.v1.InternalAssessment";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorConfig {
    pub group: String,
    pub topic: String,
    pub dlq_topic: String,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    pub records: usize,
    /// Below the stored offset: applied by an earlier run.
    pub replayed: usize,
    pub applied: usize,
    /// Event ids applied before (retries, redelivery from another partition).
    pub duplicates: usize,
    pub dead_lettered: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("dead-letter topic unavailable: {0}")]
    DeadLetter(String),
    /// The records start beyond the stored offset: something in between was not read.
    #[error("{0}")]
    Gap(cxgap_bus::consume::Gap),
}

enum Decoded {
    Feedback(String, FeedbackEvent),
    Assessment(String, InternalAssessment),
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Decodes a record, or says why it cannot be processed.
fn decode(r: &Record) -> Result<Decoded, String> {
    let schema = r.header(headers::SCHEMA).map(|s| String::from_utf8_lossy(s).into_owned());
    let header_tenant = r.header(headers::TENANT).map(|s| String::from_utf8_lossy(s).into_owned());
    // Validation here uses a clock far ahead: ingest already checked "not in the future"
    // against its own clock, and replaying old records must not reject them.
    let far = Timestamp(i64::MAX / 4);
    let (tenant, decoded) = match schema.as_deref() {
        Some(FEEDBACK_SCHEMA) | None => {
            let mut e = pb::FeedbackEvent::decode(r.payload.as_slice())
                .map_err(|e| format!("undecodable FeedbackEvent: {e}"))?;
            // The conversion ignores the message's tenant, so it is taken, not copied.
            let tenant = std::mem::take(&mut e.tenant_id);
            let ev = convert::feedback_from_pb(e, far).map_err(|v| format!("invalid FeedbackEvent: {v}"))?;
            (tenant.clone(), Decoded::Feedback(tenant, ev))
        }
        Some(ASSESSMENT_SCHEMA) => {
            let a = pb::InternalAssessment::decode(r.payload.as_slice())
                .map_err(|e| format!("undecodable InternalAssessment: {e}"))?;
            let tenant = a.tenant_id.clone();
            let a = convert::assessment_from_pb(&a, far).map_err(|v| format!("invalid InternalAssessment: {v}"))?;
            (tenant.clone(), Decoded::Assessment(tenant, a))
        }
        Some(other) => return Err(format!("unknown schema {other:?}")),
    };
    if tenant.is_empty() {
        return Err("record has no tenant".into());
    }
    if header_tenant.is_some_and(|h| h != tenant) {
        return Err("tenant header and payload disagree".into());
    }
    Ok(decoded)
}

#[derive(Debug, Clone)]
pub struct Processor<P> {
    pub store: AnalyticsStore,
    pub config: ProcessorConfig,
    pub dlq: P,
    pub signals: SignalHub,
}

impl<P: Publisher> Processor<P> {
    pub fn new(store: AnalyticsStore, config: ProcessorConfig, dlq: P) -> Self {
        Processor { store, config, dlq, signals: SignalHub::default() }
    }

    /// Processes records of one partition, in offset order, as one transaction.
    pub async fn process(&self, partition: i32, records: &[Consumed]) -> Result<BatchStats, ProcessError> {
        self.process_batch(partition, records, false).await
    }

    /// [`Processor::process`]; with `accept_gap`, a gap before the first record is accepted
    /// as being in the log itself (the consumer rewound and found nothing before it).
    #[tracing::instrument(skip_all, fields(partition, records = records.len()), err)]
    pub async fn process_batch(
        &self,
        partition: i32,
        records: &[Consumed],
        accept_gap: bool,
    ) -> Result<BatchStats, ProcessError> {
        self.apply(&[(partition, records)], accept_gap).await
    }

    /// Several partitions' batches (each in offset order) as one transaction, each
    /// partition's offset moving as in [`Processor::process`]: a gap or a fence in any of
    /// them refuses them all. Records of one customer share a partition, so the result is
    /// the same as applying the partitions one after another.
    #[tracing::instrument(skip_all, fields(partitions = parts.len()), err)]
    pub async fn process_group(&self, parts: &[(i32, &[Consumed])]) -> Result<BatchStats, ProcessError> {
        self.apply(parts, false).await
    }

    async fn apply(&self, parts: &[(i32, &[Consumed])], accept_gap: bool) -> Result<BatchStats, ProcessError> {
        let c = &self.config;
        let mut stats = BatchStats::default();
        // (partition, stored offset, next offset) of each partition with records to apply.
        let mut moves = Vec::with_capacity(parts.len());
        let mut fresh: Vec<(i32, &Consumed)> = Vec::new();
        // A group's stored offsets in one read, not one per partition.
        let stored: Option<BTreeMap<i32, i64>> = match parts {
            [_] => None,
            _ => Some(self.store.offsets(&c.group, &c.topic).await?.into_iter().collect()),
        };
        for &(partition, records) in parts {
            let expected = match &stored {
                Some(all) => all.get(&partition).copied(),
                None => self.store.next_offset(&c.group, &c.topic, partition).await?,
            };
            let f = cxgap_bus::consume::fresh(partition, records, expected, accept_gap).map_err(ProcessError::Gap)?;
            stats.records += records.len();
            stats.replayed += f.replayed;
            if let Some(next) = f.next_offset() {
                moves.push((partition, expected, next));
                fresh.extend(f.records.into_iter().map(|r| (partition, r)));
            }
        }
        let Some((&(partition, expected, next), more)) = moves.split_first() else {
            return Ok(stats);
        };
        let mut by_tenant: BTreeMap<String, (Vec<FeedbackEvent>, Vec<InternalAssessment>)> = BTreeMap::new();
        let mut dead = Vec::new();
        for (partition, r) in fresh {
            match decode(&r.record) {
                Ok(Decoded::Feedback(t, ev)) => by_tenant.entry(t).or_default().0.push(ev),
                Ok(Decoded::Assessment(t, a)) => by_tenant.entry(t).or_default().1.push(a),
                Err(reason) => {
                    warn!(partition, offset = r.offset, %reason, "dead-lettering a record");
                    let mut rec = r.record.clone();
                    rec.topic = c.dlq_topic.clone();
                    rec.headers.push((headers::REASON.into(), reason.into_bytes()));
                    rec.headers
                        .push(("cxgap-source".into(), format!("{}/{}/{}", c.topic, partition, r.offset).into_bytes()));
                    dead.push(rec);
                }
            }
        }
        // Dead letters first: if this crashes before the commit, the batch is replayed and
        // the same record is dead-lettered again (at least once, never lost).
        if !dead.is_empty() {
            stats.dead_lettered = dead.len();
            for r in self.dlq.publish(dead).await {
                r.map_err(|e| ProcessError::DeadLetter(e.to_string()))?;
            }
        }
        let now = now_ms();
        let today = day_of_ms(now);
        // The offset moves first: a batch another instance already applied is refused
        // before any work is done on it.
        let mut tx = self.store.begin_batch(&c.group, &c.topic, partition, expected, next, now).await?;
        tx.move_offsets(&c.group, &c.topic, more).await?;
        let mut changed = Vec::new();
        let mut deltas = Vec::new();
        for (tenant, (events, assessments)) in by_tenant {
            let mut ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
            ids.sort();
            ids.dedup();
            let claimed = tx.claim(&tenant, &ids).await?;
            let mut customer_ids: Vec<String> =
                events.iter().filter(|e| claimed.contains(&e.event_id)).map(|e| e.customer_id.clone()).collect();
            customer_ids.sort();
            customer_ids.dedup();
            let mut delta = GapState::with_capacity(events.len());
            for (id, state) in tx.customers(&tenant, &customer_ids).await? {
                delta.put_customer(&id, state);
            }
            let gaps = self.signals.stage_gaps(&tenant);
            let model = self.signals.model;
            let before: std::collections::HashMap<&str, f64> = {
                let view = RiskView::with_stage_gaps(&delta, &model, today, gaps);
                customer_ids.iter().filter_map(|id| view.customer(id).map(|r| (id.as_str(), r.risk))).collect()
            };
            let mut processed = Vec::new();
            // Claimed by an earlier batch (a retry, a redelivery from another partition).
            stats.duplicates += events.iter().filter(|e| !claimed.contains(&e.event_id)).count();
            delta.apply_all(events.iter().filter(|e| claimed.contains(&e.event_id)), |e, applied| match applied {
                cxgap_domain::Applied::New => {
                    stats.applied += 1;
                    processed.push(e.event_id.clone());
                }
                // The same id twice in this batch.
                cxgap_domain::Applied::Duplicate => stats.duplicates += 1,
            });
            let applied: std::collections::HashSet<&str> = processed.iter().map(String::as_str).collect();
            let touched: std::collections::HashSet<&str> = events
                .iter()
                .filter(|e| applied.contains(e.event_id.as_str()))
                .map(|e| e.customer_id.as_str())
                .collect();
            let mut signals = Vec::with_capacity(touched.len());
            {
                let view = RiskView::with_stage_gaps(&delta, &model, today, gaps);
                let mut feedback: BTreeMap<&str, Vec<&FeedbackEvent>> = BTreeMap::new();
                for e in events.iter().filter(|e| applied.contains(e.event_id.as_str())) {
                    feedback.entry(e.customer_id.as_str()).or_default().push(e);
                }
                for (id, notes) in feedback {
                    if let Some(r) = view.customer(id) {
                        signals.push(customer_signal(&tenant, &r, before.get(id).copied(), &notes, today, now));
                    }
                }
            }
            if !processed.is_empty() || !assessments.is_empty() {
                changed.push(tenant.clone());
            }
            let writes = delta.into_writes();
            let write = TenantWrite {
                tenant,
                processed,
                cells: writes.cells,
                customers: writes.customers.into_iter().filter(|(id, _)| touched.contains(id.as_str())).collect(),
                assessments,
                signals,
            };
            tx.write(&write).await?;
            deltas.push((write.tenant, write.cells));
        }
        // The cells reach the aggregate evaluation's kept window from here (see
        // `SignalHub::gate`).
        let gate = self.signals.gate.read().await;
        match tx.commit().await {
            Ok(()) => self.signals.committed_cells(deltas),
            Err(e) => {
                self.signals.unsure(deltas.into_iter().map(|(tenant, _)| tenant));
                return Err(e.into());
            }
        }
        drop(gate);
        self.signals.committed(changed);
        debug!(?stats, partitions = moves.len(), "batch committed");
        Ok(stats)
    }
}
