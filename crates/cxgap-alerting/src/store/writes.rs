//! A batch's alert writes, held back until the batch has decided all of its changes and
//! then written a statement per kind. Written one at a time they cost two round trips per
//! alert change (the alert, then its transition): measured in a latency run at 1,200
//! events/s, alerting's batches did 7 ms of work in a 47 ms median and spent the rest
//! waiting on PostgreSQL, with about one alert change in five events. Held, in alternated
//! runs at that load, the latency's p99 fell from 814 to 474 ms and alerting's mean batch
//! from 62 to 50 ms (medians of five; `docs/benchmarks-history.md`).
//!
//! Held back, the writes are invisible to the batch's own reads, so every read of alerts
//! inside a batch goes through [`AlertWrites::overlay`], and the transitions' numbers are
//! taken from the stored maximum plus their place in the statement.

use super::{Alert, StoreError, classify, corrupt, placeholders, severity_str};
use cxgap_domain::alerts::AlertState;
use sqlx::{AnyConnection, Row};
use std::collections::{BTreeSet, HashMap};

/// Rows per statement: 15 parameters an alert keeps a chunk well under SQLite's 32,766.
const CHUNK: usize = 500;

#[derive(Debug, Default)]
pub(crate) struct AlertWrites {
    /// Alert id → the alert as it now stands, and the version the database holds (0: the
    /// alert is not stored yet).
    alerts: HashMap<String, (Alert, i64)>,
    /// (tenant, subject) → ids of held alerts, for the overlay of reads by subject.
    by_subject: HashMap<(String, String), BTreeSet<String>>,
    /// In the order of the changes: (alert id, at, state, by whom, note).
    transitions: Vec<(String, i64, AlertState, String, String)>,
}

impl AlertWrites {
    /// Holds the alert's new state and advances its version, as a write would.
    pub(crate) fn stage(&mut self, a: &mut Alert, new: bool) {
        let stored = if new { 0 } else { a.version };
        a.version += 1;
        match self.alerts.get_mut(&a.alert_id) {
            Some(held) => held.0 = a.clone(),
            None => {
                self.by_subject.entry((a.tenant_id.clone(), a.subject.clone())).or_default().insert(a.alert_id.clone());
                self.alerts.insert(a.alert_id.clone(), (a.clone(), stored));
            }
        }
    }

    /// Holds a transition of an alert staged before it.
    pub(crate) fn transition(&mut self, a: &Alert, at: i64, by: &str, note: &str) {
        self.transitions.push((a.alert_id.clone(), at, a.state, by.to_string(), note.to_string()));
    }

    /// The held alerts of a tenant about a subject.
    pub(crate) fn held<'a>(&'a self, tenant: &str, subject: &str) -> impl Iterator<Item = &'a Alert> + 'a {
        let ids = self.by_subject.get(&(tenant.to_string(), subject.to_string()));
        ids.into_iter().flatten().map(|id| &self.alerts[id].0)
    }

    /// Stored alerts of a tenant about `subjects`, as the batch's held writes left them:
    /// a held alert replaces its stored row, and held alerts not stored yet are added.
    pub(crate) fn overlay(&self, tenant: &str, subjects: &[String], stored: Vec<Alert>) -> Vec<Alert> {
        let mut out: Vec<Alert> = stored.into_iter().filter(|a| !self.alerts.contains_key(&a.alert_id)).collect();
        out.extend(subjects.iter().flat_map(|s| self.held(tenant, s)).cloned());
        out
    }

    /// Writes the held alerts and transitions. An alert changed by someone else since the
    /// batch read it fails the batch with a conflict, as a write at the time would have.
    pub(crate) async fn flush(self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        let (new, changed): (Vec<_>, Vec<_>) = self.alerts.into_values().partition(|(_, stored)| *stored == 0);
        for chunk in new.chunks(CHUNK) {
            insert_alerts(conn, chunk).await?;
        }
        for chunk in changed.chunks(CHUNK) {
            update_alerts(conn, chunk).await?;
        }
        for chunk in self.transitions.chunks(CHUNK) {
            // Each chunk's statement sees the chunks before it, so places count within it.
            let mut place: HashMap<&str, i64> = HashMap::new();
            let chunk: Vec<_> = chunk
                .iter()
                .map(|t| {
                    let n = place.entry(&t.0).or_default();
                    *n += 1;
                    (t, *n)
                })
                .collect();
            let values: Vec<String> = (0..chunk.len()).map(|r| format!("({})", placeholders(1 + r * 6, 6))).collect();
            // A transition's number is the alert's stored maximum plus its place among the
            // chunk's transitions of that alert; the subquery reads the table as it stood
            // before the statement, on PostgreSQL and SQLite alike.
            let sql = format!(
                "INSERT INTO alerting_transitions (alert_id, at, seq, state, by_whom, note) \
                 SELECT v.column1, v.column2, (SELECT COALESCE(MAX(t.seq), 0) FROM alerting_transitions t \
                 WHERE t.alert_id = v.column1) + v.column3, v.column4, v.column5, v.column6 FROM (VALUES {}) AS v",
                values.join(", ")
            );
            // Unprepared: the list's length varies from batch to batch.
            let mut q = sqlx::query(&sql).persistent(false);
            for ((id, at, state, by, note), n) in &chunk {
                q = q.bind(id).bind(*at).bind(*n).bind(state.as_str()).bind(by).bind(note);
            }
            q.execute(&mut *conn).await.map_err(classify)?;
        }
        Ok(())
    }
}

fn labels_json(a: &Alert) -> Result<String, StoreError> {
    serde_json::to_string(&a.labels).map_err(|e| corrupt("labels", e))
}

/// NULL_F64_WORKAROUND: sqlx 0.8's Any driver sends a NULL `f64` as a `float4` parameter
/// (its Real/Double null mappings are swapped), and a prepared statement keeps the
/// parameter types of its first execution on that connection. A connection whose first
/// alert had no customer value then failed every later one that had one ("incorrect binary
/// data format in bind parameter 11") until it was closed: after a database restart this
/// stalled alerting for good. Statements binding an optional float are therefore not
/// prepared; each execution declares its own parameter types (a column of `float4` NULLs
/// and `float8` values resolves to `float8`).
async fn insert_alerts(conn: &mut AnyConnection, alerts: &[(Alert, i64)]) -> Result<(), StoreError> {
    let values: Vec<String> = (0..alerts.len()).map(|r| format!("({})", placeholders(1 + r * 15, 15))).collect();
    let sql = format!(
        "INSERT INTO alerting_alerts (alert_id, tenant_id, rule_id, kind, subject, {STATE_COLUMNS}) VALUES {}",
        values.join(", ")
    );
    // Unprepared: the list's length varies, and NULL_F64_WORKAROUND.
    let mut q = sqlx::query(&sql).persistent(false);
    for (a, _) in alerts {
        q = bind_state(q.bind(&a.alert_id).bind(&a.tenant_id).bind(&a.rule_id).bind(&a.kind).bind(&a.subject), a)?;
    }
    q.execute(&mut *conn).await.map_err(classify)?;
    Ok(())
}

/// What a change of an alert writes, in [`bind_state`]'s order.
const STATE_COLUMNS: &str =
    "severity, state, episode, summary, labels, customer_value, started_at, updated_at, last_notified_at, version";

fn bind_state<'q>(q: AnyQuery<'q>, a: &'q Alert) -> Result<AnyQuery<'q>, StoreError> {
    Ok(q.bind(severity_str(a.severity))
        .bind(a.state.as_str())
        .bind(a.episode as i64)
        .bind(&a.summary)
        .bind(labels_json(a)?)
        .bind(a.customer_value)
        .bind(a.started_at)
        .bind(a.updated_at)
        .bind(a.last_notified_at)
        .bind(a.version))
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Updates alerts guarded by the versions the batch read; all of them or a conflict.
async fn update_alerts(conn: &mut AnyConnection, alerts: &[(Alert, i64)]) -> Result<(), StoreError> {
    let values: Vec<String> = (0..alerts.len()).map(|r| format!("({})", placeholders(1 + r * 12, 12))).collect();
    let sql = format!(
        "UPDATE alerting_alerts SET severity = v.column3, state = v.column4, episode = v.column5, \
         summary = v.column6, labels = v.column7, customer_value = v.column8, started_at = v.column9, \
         updated_at = v.column10, last_notified_at = v.column11, version = v.column12 \
         FROM (VALUES {}) AS v WHERE alerting_alerts.alert_id = v.column1 AND alerting_alerts.version = v.column2 \
         RETURNING alerting_alerts.alert_id",
        values.join(", ")
    );
    // Unprepared: see insert_alerts.
    let mut q = sqlx::query(&sql).persistent(false);
    for (a, stored) in alerts {
        q = bind_state(q.bind(&a.alert_id).bind(*stored), a)?;
    }
    let updated: Vec<String> = q
        .fetch_all(&mut *conn)
        .await
        .map_err(classify)?
        .iter()
        .map(|r| r.try_get(0).map_err(|e| corrupt("updated alert id", e)))
        .collect::<Result<_, _>>()?;
    if updated.len() != alerts.len() {
        let updated: BTreeSet<String> = updated.into_iter().collect();
        let stale: Vec<&str> =
            alerts.iter().map(|(a, _)| a.alert_id.as_str()).filter(|id| !updated.contains(*id)).collect();
        return Err(StoreError::Conflict(format!("alerts changed concurrently: {}", stale.join(", "))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AlertStore;
    use cxgap_domain::rules::Severity;

    fn alert(id: &str, subject: &str) -> Alert {
        Alert {
            alert_id: id.into(),
            tenant_id: "t".into(),
            rule_id: "r".into(),
            kind: "risk_threshold".into(),
            severity: Severity::Warning,
            state: AlertState::Firing,
            episode: 1,
            subject: subject.into(),
            summary: "s".into(),
            labels: Default::default(),
            customer_value: None,
            started_at: 1,
            updated_at: 1,
            last_notified_at: 1,
            version: 0,
        }
    }

    #[test]
    fn reads_see_the_held_state_of_an_alert_and_the_held_alerts_not_stored_yet() {
        let mut w = AlertWrites::default();
        let mut stored = alert("a", "touchpoint:web");
        stored.version = 3;
        let mut changed = stored.clone();
        changed.state = AlertState::Resolved;
        w.stage(&mut changed, false);
        w.stage(&mut alert("b", "touchpoint:web"), true);
        w.stage(&mut alert("c", "touchpoint:app"), true);
        let seen = w.overlay("t", &["touchpoint:web".into()], vec![stored, alert("d", "touchpoint:web")]);
        let mut seen: Vec<(&str, AlertState, i64)> =
            seen.iter().map(|a| (a.alert_id.as_str(), a.state, a.version)).collect();
        seen.sort_by_key(|s| s.0);
        assert_eq!(
            seen,
            [("a", AlertState::Resolved, 4), ("b", AlertState::Firing, 1), ("d", AlertState::Firing, 0)],
            "c is about another subject"
        );
        assert!(w.overlay("u", &["touchpoint:web".into()], vec![]).is_empty(), "another tenant's");
    }

    /// The first alert a connection writes has no customer value, the next ones have one:
    /// what every connection opened after a database restart may meet. Each write is its
    /// own batch, so that each statement's parameters are typed by one alert alone.
    #[tokio::test]
    async fn alerts_with_and_without_a_customer_value_share_a_connection() {
        let db = cxgap_testkit::TestDb::new().await.unwrap();
        let store = AlertStore::connect(&db.url).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        let write = |a: &mut Alert, new: bool| {
            let mut w = AlertWrites::default();
            w.stage(a, new);
            w
        };
        for (i, value) in [None, Some(25_000.0), None, Some(0.5)].into_iter().enumerate() {
            let mut a = Alert { customer_value: value, ..alert(&format!("a{i}"), "customer:c") };
            write(&mut a, true).flush(&mut conn).await.unwrap_or_else(|e| panic!("insert {i} ({value:?}): {e}"));
            a.customer_value = if value.is_some() { None } else { Some(7.0) };
            write(&mut a, false).flush(&mut conn).await.unwrap_or_else(|e| panic!("update {i}: {e}"));
        }
        let values: Vec<Option<f64>> =
            sqlx::query_scalar("SELECT customer_value FROM alerting_alerts ORDER BY alert_id")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        assert_eq!(values, vec![Some(7.0), None, Some(7.0), None]);
    }

    /// Runs a test on each backend.
    macro_rules! on_both {
        ($($name:ident),* $(,)?) => {
            mod sqlite {
                $(#[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite:{}", dir.path().join("a.db").display());
                    super::$name(super::AlertStore::connect(&url).await.unwrap()).await;
                })*
            }
            mod postgres {
                $(#[tokio::test]
                async fn $name() {
                    let db = cxgap_testkit::TestDb::new().await.unwrap();
                    super::$name(super::AlertStore::connect(&db.url).await.unwrap()).await;
                })*
            }
        };
    }

    on_both!(
        an_alert_changed_twice_in_each_of_two_batches_keeps_its_version_and_transition_order,
        transitions_beyond_one_statement_are_numbered_without_gaps,
        a_held_change_of_an_alert_changed_since_it_was_read_is_a_conflict_naming_it,
    );

    /// Two batches each change one alert twice: the versions and the transitions' numbers
    /// go on from what is stored.
    async fn an_alert_changed_twice_in_each_of_two_batches_keeps_its_version_and_transition_order(store: AlertStore) {
        let mut conn = store.pool.acquire().await.unwrap();
        let mut a = alert("a", "customer:c");
        for (batch, first_new) in [(0, true), (1, false)] {
            let mut w = AlertWrites::default();
            for (i, state) in [AlertState::Firing, AlertState::Resolved].into_iter().enumerate() {
                a.state = state;
                w.stage(&mut a, first_new && i == 0);
                w.transition(&a, batch * 10 + i as i64, "rule", &format!("batch {batch}"));
            }
            w.flush(&mut conn).await.unwrap();
        }
        assert_eq!(a.version, 4);
        drop(conn); // SQLite's pool holds one connection
        let stored = store.alert("t", "a").await.unwrap().unwrap();
        assert_eq!((stored.version, stored.state), (4, AlertState::Resolved));
        let history: Vec<(i64, AlertState)> =
            store.history("a").await.unwrap().iter().map(|t| (t.at, t.state)).collect();
        assert_eq!(
            history,
            [(0, AlertState::Firing), (1, AlertState::Resolved), (10, AlertState::Firing), (11, AlertState::Resolved)]
        );
    }

    /// More transitions of one alert than a statement takes: numbered 1, 2, … across the
    /// statements, without gaps.
    async fn transitions_beyond_one_statement_are_numbered_without_gaps(store: AlertStore) {
        let mut conn = store.pool.acquire().await.unwrap();
        let mut a = alert("a", "customer:c");
        let mut w = AlertWrites::default();
        w.stage(&mut a, true);
        for at in 0..CHUNK as i64 + 2 {
            w.transition(&a, at, "rule", "");
        }
        w.flush(&mut conn).await.unwrap();
        let seqs: Vec<i64> =
            sqlx::query_scalar("SELECT seq FROM alerting_transitions ORDER BY at").fetch_all(&mut *conn).await.unwrap();
        assert_eq!(seqs, (1..=CHUNK as i64 + 2).collect::<Vec<_>>());
    }

    async fn a_held_change_of_an_alert_changed_since_it_was_read_is_a_conflict_naming_it(store: AlertStore) {
        let mut conn = store.pool.acquire().await.unwrap();
        let (mut a, mut b) = (alert("a", "customer:c"), alert("b", "customer:d"));
        let mut w = AlertWrites::default();
        w.stage(&mut a, true);
        w.stage(&mut b, true);
        w.flush(&mut conn).await.unwrap();
        let mut stale = a.clone();
        let mut w = AlertWrites::default();
        w.stage(&mut a, false);
        w.flush(&mut conn).await.unwrap();
        let mut w = AlertWrites::default();
        w.stage(&mut stale, false);
        w.stage(&mut b, false);
        let e = w.flush(&mut conn).await.unwrap_err();
        assert!(matches!(&e, StoreError::Conflict(m) if m.ends_with(": a")), "{e}");
    }
}
