//! Analytics state in PostgreSQL or (embedded mode) SQLite, through one code path. A batch
//! is written in one transaction: the partition's offset moves first, fenced by its
//! expected value, then cell deltas (additive upserts that commute across instances),
//! customers, assessments and processed event ids. Either all of it lands or none does.

use crate::pgbatch::{self, CellRow};
use cxgap_domain::aggregate::{CELL_ROW_WIDTH, CellAgg};
use cxgap_domain::customer::{CustomerState, stable_hash};
use cxgap_domain::model::Segment;
use cxgap_domain::state::CellCoords;
use cxgap_domain::{Channel, Day, GapState, InternalAssessment, JourneyStage};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, PgPool, Row};
use std::collections::{HashMap, HashSet};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another instance moved this partition's offset: this one no longer owns it.
    #[error("partition {partition} was fenced: its offset moved under this instance")]
    Fenced { partition: i32 },
    /// A concurrent write of the same key; retrying the batch resolves it.
    #[error("conflicting concurrent write: {0}")]
    Conflict(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("{0}")]
    Overflow(String),
}

/// The one place database errors are classified (SQLSTATE / SQLite extended codes).
pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    match cxgap_runtime::db::retryable(&e) {
        Some(m) => StoreError::Conflict(m),
        None => StoreError::Unavailable(e.to_string()),
    }
}

/// What one tenant's part of a batch writes.
#[derive(Debug, Default, Clone)]
pub struct TenantWrite {
    pub tenant: String,
    pub processed: Vec<String>,
    pub cells: Vec<(CellCoords, CellAgg)>,
    pub customers: Vec<(String, CustomerState<Segment>)>,
    pub assessments: Vec<InternalAssessment>,
    pub signals: Vec<OutboxSignal>,
}

/// A signal for the outbox: the encoded `cxgap.signals.v1.Signal` and what the relay and
/// the risk history need without decoding it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxSignal {
    pub id: String,
    pub tenant: String,
    /// "customer" or "aggregate".
    pub kind: &'static str,
    /// The customer id, or "kind:subject:window" of an aggregate.
    pub subject: String,
    pub key: String,
    pub risk: Option<f64>,
    pub payload: Vec<u8>,
}

/// An outbox row waiting for the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpublished {
    /// When it was decided (ms since the epoch; for a customer signal, when its batch
    /// began): the outbox's order, with the id.
    pub created_at: i64,
    pub id: String,
    pub tenant: String,
    pub key: String,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct BatchWrite {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// The stored next offset this batch continues from (`None`: nothing stored yet).
    pub expected: Option<i64>,
    pub next: i64,
    pub now_ms: i64,
    pub tenants: Vec<TenantWrite>,
}

#[derive(Clone)]
pub struct AnalyticsStore {
    pool: AnyPool,
    /// On PostgreSQL, batch transactions and the outbox's writes go through the native
    /// driver, which binds arrays (see [`crate::pgbatch`]); SQLite has no arrays.
    pg: Option<PgPool>,
    /// This instance, in the change log's rows of its batches (migration 1008): its
    /// evaluation reads back only the cells other instances changed.
    writer: i64,
}

impl std::fmt::Debug for AnalyticsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnalyticsStore").finish_non_exhaustive()
    }
}

/// Rows per multi-row cell upsert on SQLite: 83 parameters each stays under its bind limit
/// of 32,766 (PostgreSQL takes the rows as arrays, see [`crate::pgbatch`]).
const CELL_ROWS_PER_STATEMENT: usize = 300;
const CELL_PARAMS: usize = 6 + CELL_ROW_WIDTH;

/// `INSERT … VALUES (…), (…) ON CONFLICT … DO UPDATE SET v = v + excluded.v` for `rows`
/// cells. A batch's cells are unique per key, as one statement requires.
fn cell_upsert_sql(rows: usize) -> String {
    let cols: Vec<String> = (0..CELL_ROW_WIDTH).map(|i| format!("v{i}")).collect();
    let values: Vec<String> =
        (0..rows).map(|r| format!("({})", placeholders(1 + r * CELL_PARAMS, CELL_PARAMS))).collect();
    let sets: Vec<String> = cols.iter().map(|c| format!("{c} = analytics_cells.{c} + excluded.{c}")).collect();
    format!(
        "INSERT INTO analytics_cells (tenant_id, day, channel, stage, touchpoint, segment, {}) VALUES {} \
         ON CONFLICT (tenant_id, day, channel, stage, touchpoint, segment) DO UPDATE SET {}",
        cols.join(", "),
        values.join(", "),
        sets.join(", ")
    )
}

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// A signal's encoded payload as the outbox stores it (a text column on both backends).
pub(crate) fn payload_text(sg: &OutboxSignal) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(&sg.payload)
}

/// SQLite: multi-row `INSERT … ON CONFLICT DO NOTHING … RETURNING`, within its bind
/// limit (a signal id already stored is the same signal, decided again), and the new ones
/// into the outbox. PostgreSQL: [`pgbatch::insert_signals`].
async fn insert_signals(
    conn: &mut sqlx::AnyConnection,
    signals: &[OutboxSignal],
    now_ms: i64,
) -> Result<u64, StoreError> {
    let mut inserted = 0;
    for chunk in signals.chunks(500) {
        let values: Vec<String> = (0..chunk.len()).map(|r| format!("({})", placeholders(1 + r * 7, 7))).collect();
        let sql = format!(
            "INSERT INTO analytics_signals (signal_id, tenant_id, kind, subject, msg_key, created_at, risk) \
             VALUES {} ON CONFLICT (signal_id) DO NOTHING RETURNING signal_id",
            values.join(", ")
        );
        let mut q = sqlx::query_scalar::<_, String>(&sql).persistent(false);
        for sg in chunk {
            q = q
                .bind(&sg.id)
                .bind(&sg.tenant)
                .bind(sg.kind)
                .bind(&sg.subject)
                .bind(&sg.key)
                .bind(now_ms)
                .bind(sg.risk);
        }
        let new: HashSet<String> = q.fetch_all(&mut *conn).await.map_err(classify)?.into_iter().collect();
        let new: Vec<&OutboxSignal> = chunk.iter().filter(|sg| new.contains(&sg.id)).collect();
        if new.is_empty() {
            continue;
        }
        let sql = format!(
            "INSERT INTO analytics_outbox (created_at, signal_id, tenant_id, msg_key, payload) VALUES {}",
            (0..new.len()).map(|r| format!("($1, {})", placeholders(2 + r * 4, 4))).collect::<Vec<_>>().join(", ")
        );
        let mut q = sqlx::query(&sql).persistent(false).bind(now_ms);
        for sg in &new {
            q = q.bind(&sg.id).bind(&sg.tenant).bind(&sg.key).bind(payload_text(sg));
        }
        q.execute(&mut *conn).await.map_err(classify)?;
        inserted += new.len() as u64;
    }
    Ok(inserted)
}

async fn read_customers(
    conn: &mut sqlx::AnyConnection,
    tenant: &str,
    ids: &[String],
) -> Result<Vec<(String, CustomerState<Segment>)>, StoreError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let sql = format!(
            "SELECT customer_id, state FROM analytics_customers WHERE tenant_id = $1 AND customer_id IN ({})",
            placeholders(2, chunk.len())
        );
        let mut q = sqlx::query_as::<_, (String, String)>(&sql).persistent(false).bind(tenant);
        for id in chunk {
            q = q.bind(id);
        }
        for (id, json) in q.fetch_all(&mut *conn).await.map_err(classify)? {
            out.push((id, serde_json::from_str(&json).map_err(|e| corrupt("customer state", e))?));
        }
    }
    Ok(out)
}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// Changed cells are read by their keys while the changes logged since the mark name at
/// most this fraction (one in this many) of the cells kept; above it the window is
/// filtered by the cells' stamps (see [`AnalyticsStore::cells_since`]).
pub const KEYED_READ_SHARE: i64 = 16;

/// What [`AnalyticsStore::cells_since`] read.
#[derive(Debug)]
pub struct CellRead {
    pub cells: Vec<(CellCoords, CellAgg)>,
    /// Where the next read continues (`None`: this backend has no marks).
    pub mark: Option<i64>,
    /// Every cell of the window, not only the changed ones.
    pub whole: bool,
    /// The changed cells were found through the change log, by their keys.
    pub keyed: bool,
}

/// Which of the window's cells a read takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Changed {
    All,
    /// None: no other instance logged a change since the mark.
    Nothing,
    /// Those stamped with a transaction from this mark on.
    Stamped(i64),
    /// Those the change log names for transactions from this mark on, by key, but for
    /// the rows of this writer.
    Logged(i64, i64),
}

/// A tenant's cells from `from_day` on, those `changed` says (see
/// [`AnalyticsStore::cells_since`]).
async fn read_cells(
    conn: &mut sqlx::AnyConnection,
    tenant: &str,
    from_day: i64,
    changed: Changed,
) -> Result<Vec<(CellCoords, CellAgg)>, StoreError> {
    let cols: Vec<String> = (0..CELL_ROW_WIDTH).map(|i| format!("v{i}")).collect();
    let window = format!(
        "SELECT day, channel, stage, touchpoint, segment, {} FROM analytics_cells WHERE tenant_id = $1 AND day >= $2",
        cols.join(", ")
    );
    let (sql, since) = match changed {
        Changed::Nothing => return Ok(Vec::new()),
        Changed::All => (window, None),
        // Every partition's row of a cell any of whose rows changed: the cell's whole sums.
        // It scans the window twice where the stamps alone took one scan: 387 against
        // 122 ms over 165,000 rows (`docs/benchmarks.md`, thirty-fourth run). Taken only
        // after other instances' large or many changes, or from a mark below the log's
        // pruning floor.
        Changed::Stamped(since) => (
            format!(
                "{window} AND EXISTS (SELECT 1 FROM analytics_cells d WHERE d.tenant_id = $1 \
                 AND d.day = analytics_cells.day AND d.channel = analytics_cells.channel \
                 AND d.stage = analytics_cells.stage AND d.touchpoint = analytics_cells.touchpoint \
                 AND d.segment = analytics_cells.segment AND d.changed_xid >= $3)"
            ),
            Some(since),
        ),
        // A cell changed by several batches is read once; `OFFSET 0` keeps each a lookup by
        // the key, whatever the statistics of the young log say.
        Changed::Logged(since, _) => (
            format!(
                "SELECT c.day, c.channel, c.stage, c.touchpoint, c.segment, {} FROM \
                 (SELECT DISTINCT u.day, u.channel, u.stage, u.touchpoint, u.segment \
                  FROM analytics_cell_changes l CROSS JOIN LATERAL \
                  UNNEST(l.days, l.channels, l.stages, l.touchpoints, l.segments) AS u(day, channel, stage, touchpoint, segment) \
                  WHERE l.tenant_id = $1 AND l.changed_xid >= $3 AND l.writer IS DISTINCT FROM $4 \
                  AND u.day >= $2) AS k \
                 CROSS JOIN LATERAL (SELECT * FROM analytics_cells c WHERE c.tenant_id = $1 AND c.day = k.day \
                  AND c.channel = k.channel AND c.stage = k.stage AND c.touchpoint = k.touchpoint \
                  AND c.segment = k.segment OFFSET 0) AS c",
                cols.iter().map(|c| format!("c.{c}")).collect::<Vec<_>>().join(", ")
            ),
            Some(since),
        ),
    };
    let mut q = sqlx::query(&sql).bind(tenant).bind(from_day);
    if let Some(since) = since {
        q = q.bind(since);
    }
    if let Changed::Logged(_, writer) = changed {
        q = q.bind(writer);
    }
    let rows: Vec<AnyRow> = q.fetch_all(conn).await.map_err(classify)?;
    rows.iter().map(decode_cell).collect()
}

/// Each cell once, its partitions' rows added up (PostgreSQL keeps a row per writing
/// partition, migration 1009).
fn whole_cells(rows: Vec<(CellCoords, CellAgg)>) -> Vec<(CellCoords, CellAgg)> {
    let mut cells: HashMap<CellCoords, CellAgg> = HashMap::with_capacity(rows.len());
    for (coords, agg) in rows {
        match cells.entry(coords) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().merge(&agg),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(agg);
            }
        }
    }
    cells.into_iter().collect()
}

/// A writer id for this instance's change-log rows: random, so instances that start
/// together still differ (two sharing one by chance, about one in 2⁶⁴, would each skip
/// the other's changes until the window moves).
fn writer_id() -> i64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::process::id().hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    h.finish() as i64
}

fn decode_cell(r: &AnyRow) -> Result<(CellCoords, CellAgg), StoreError> {
    let get_s = |i: usize| r.try_get::<String, _>(i).map_err(|e| corrupt("cell", e));
    let day: i64 = r.try_get(0).map_err(|e| corrupt("cell day", e))?;
    let channel = Channel::parse(&get_s(1)?).ok_or_else(|| corrupt("cell", "unknown channel"))?;
    let stage = JourneyStage::parse(&get_s(2)?).ok_or_else(|| corrupt("cell", "unknown stage"))?;
    let touchpoint = Some(get_s(3)?).filter(|t| !t.is_empty()).map(Into::into);
    let attributes: Segment = serde_json::from_str(&get_s(4)?).map_err(|e| corrupt("segment", e))?;
    let mut row = [0i64; CELL_ROW_WIDTH];
    for (i, v) in row.iter_mut().enumerate() {
        *v = r.try_get(5 + i).map_err(|e| corrupt("cell value", e))?;
    }
    Ok(((Day(day as i32), channel, stage, touchpoint, attributes), CellAgg::from_row(&row)))
}

impl AnalyticsStore {
    /// Connects with the default pool size ([`cxgap_runtime::db::pool_size`]).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_pool(url, cxgap_runtime::db::pool_size(url)).await
    }

    /// Connects with at most `pool_size` connections in each of the store's two pools.
    pub async fn connect_with_pool(url: &str, pool_size: u32) -> Result<Self, StoreError> {
        static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
        let pool = cxgap_runtime::db::connect(url, pool_size, &MIGRATIONS).await.map_err(|e| match e {
            cxgap_runtime::db::DbError::Unavailable(m) => StoreError::Unavailable(m),
            cxgap_runtime::db::DbError::Migration(m) => StoreError::Migration(m),
        })?;
        // Lazy: its connections open with the first batch. Sized as the `Any` pool, whose
        // size bounds the consumer's concurrency (`crate::consumer::limits`).
        let pg = if url.starts_with("postgres") {
            let options = sqlx::postgres::PgPoolOptions::new()
                .max_connections(pool_size.max(1))
                .acquire_timeout(std::time::Duration::from_secs(10));
            Some(options.connect_lazy(url).map_err(|e| StoreError::Unavailable(e.to_string()))?)
        } else {
            None
        };
        Ok(AnalyticsStore { pool, pg, writer: writer_id() })
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(classify)
    }

    pub async fn next_offset(&self, group: &str, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT next_offset FROM analytics_offsets WHERE consumer_group = $1 AND topic = $2 AND partition_id = $3",
        )
        .bind(group)
        .bind(topic)
        .bind(partition as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        Ok(row.map(|r| r.0))
    }

    /// Every partition's stored next offset for a group and topic.
    pub async fn offsets(&self, group: &str, topic: &str) -> Result<Vec<(i32, i64)>, StoreError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT partition_id, next_offset FROM analytics_offsets WHERE consumer_group = $1 AND topic = $2 \
             ORDER BY partition_id",
        )
        .bind(group)
        .bind(topic)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows.into_iter().map(|(p, o)| (p as i32, o)).collect())
    }

    /// Which of `ids` this tenant has already applied.
    pub async fn processed(&self, tenant: &str, ids: &[String]) -> Result<HashSet<String>, StoreError> {
        let mut seen = HashSet::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT event_id FROM analytics_processed WHERE tenant_id = $1 AND event_id IN ({})",
                placeholders(2, chunk.len())
            );
            // Not a cached prepared statement: PostgreSQL would switch it to a generic plan
            // chosen while the table was small (a sequential scan), and the dedup lookup
            // would slow down as the table grows (200 ms per batch at 50k ids, measured).
            let mut q = sqlx::query_as::<_, (String,)>(&sql).persistent(false).bind(tenant);
            for id in chunk {
                q = q.bind(id);
            }
            seen.extend(q.fetch_all(&self.pool).await.map_err(classify)?.into_iter().map(|r| r.0));
        }
        Ok(seen)
    }

    pub async fn customers(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<Vec<(String, CustomerState<Segment>)>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(classify)?;
        read_customers(&mut conn, tenant, ids).await
    }

    /// Writes a batch atomically; `Fenced` if the partition's offset is not `expected`.
    pub async fn commit(&self, b: &BatchWrite) -> Result<(), StoreError> {
        let mut tx = self.begin_batch(&b.group, &b.topic, b.partition, b.expected, b.next, b.now_ms).await?;
        for t in &b.tenants {
            tx.claim(&t.tenant, &t.processed).await?;
            tx.write(t).await?;
        }
        tx.commit().await
    }

    /// Opens a partition batch's transaction and moves the partition's stored offset from
    /// `expected` to `next` in it; `Fenced` if the offset is not at `expected` (another
    /// instance applied the records). Nothing is visible until [`PartitionTx::commit`].
    pub async fn begin_batch(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        expected: Option<i64>,
        next: i64,
        now_ms: i64,
    ) -> Result<PartitionTx, StoreError> {
        let tx = match &self.pg {
            Some(pg) => Tx::Pg(pg.begin_with(pgbatch::BEGIN).await.map_err(classify)?),
            None => Tx::Any(self.pool.begin().await.map_err(classify)?),
        };
        let mut tx = PartitionTx { tx, now_ms, writer: self.writer, partition };
        tx.move_offset(group, topic, partition, expected, next).await?;
        Ok(tx)
    }

    /// Stores signals decided outside a batch (aggregate figures), in one transaction;
    /// returns how many were new.
    pub async fn add_signals(&self, signals: &[OutboxSignal], now_ms: i64) -> Result<u64, StoreError> {
        if let Some(pg) = &self.pg {
            // One statement: atomic without a transaction of its own.
            let mut conn = pg.acquire().await.map_err(classify)?;
            return pgbatch::insert_signals(&mut conn, signals, now_ms).await;
        }
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let n = insert_signals(&mut tx, signals, now_ms).await?;
        tx.commit().await.map_err(classify)?;
        Ok(n)
    }

    /// The oldest signals not yet published, oldest first.
    pub async fn unpublished(&self, limit: usize) -> Result<Vec<Unpublished>, StoreError> {
        use base64::Engine as _;
        let rows: Vec<(i64, String, String, String, String)> = sqlx::query_as(
            "SELECT created_at, signal_id, tenant_id, msg_key, payload FROM analytics_outbox \
             ORDER BY created_at, signal_id LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(|(created_at, id, tenant, key, payload)| {
                let payload = base64::engine::general_purpose::STANDARD
                    .decode(payload)
                    .map_err(|e| corrupt("signal payload", e))?;
                Ok(Unpublished { created_at, id, tenant, key, payload })
            })
            .collect()
    }

    /// Takes these signals out of the outbox: the broker has them.
    pub async fn mark_published(&self, done: &[&Unpublished]) -> Result<(), StoreError> {
        if let Some(pg) = &self.pg {
            let mut conn = pg.acquire().await.map_err(classify)?;
            return pgbatch::mark_published(&mut conn, done).await;
        }
        for chunk in done.chunks(400) {
            let sql = format!(
                "DELETE FROM analytics_outbox WHERE (created_at, signal_id) IN (VALUES {})",
                (0..chunk.len()).map(|r| format!("(${}, ${})", 2 * r + 1, 2 * r + 2)).collect::<Vec<_>>().join(", ")
            );
            let mut q = sqlx::query(&sql).persistent(false);
            for u in chunk {
                q = q.bind(u.created_at).bind(&u.id);
            }
            q.execute(&self.pool).await.map_err(classify)?;
        }
        Ok(())
    }

    /// A customer's risk over time, oldest first: (decided at, ms since the epoch; risk).
    pub async fn risk_history(
        &self,
        tenant: &str,
        customer: &str,
        limit: usize,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        let rows: Vec<(i64, f64)> = sqlx::query_as(
            "SELECT created_at, risk FROM analytics_signals \
             WHERE tenant_id = $1 AND kind = 'customer' AND subject = $2 AND risk IS NOT NULL \
             ORDER BY created_at DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(customer)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows.into_iter().rev().collect())
    }

    /// Forgets published signals older than `before_ms` (their retention); one still in the
    /// outbox stays until it is published.
    pub async fn prune_signals(&self, before_ms: i64) -> Result<u64, StoreError> {
        sqlx::query(
            "DELETE FROM analytics_signals WHERE created_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM analytics_outbox o WHERE o.created_at = analytics_signals.created_at \
             AND o.signal_id = analytics_signals.signal_id)",
        )
        .bind(before_ms)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(classify)
    }

    /// The latest event day a tenant has figures for.
    pub async fn last_day(&self, tenant: &str) -> Result<Option<Day>, StoreError> {
        let row: (Option<i64>,) = sqlx::query_as("SELECT MAX(day) FROM analytics_cells WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        Ok(row.0.map(|d| Day(d as i32)))
    }

    /// Every tenant with figures, in order. One index probe per tenant (a loose index scan
    /// on the cells' key, which starts with the tenant) instead of a scan of every cell.
    pub async fn tenants(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "WITH RECURSIVE t(id) AS ( \
               SELECT MIN(tenant_id) FROM analytics_cells \
               UNION ALL \
               SELECT (SELECT MIN(tenant_id) FROM analytics_cells WHERE tenant_id > t.id) FROM t \
               WHERE t.id IS NOT NULL) \
             SELECT id FROM t WHERE id IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows.into_iter().map(|(t,)| t).collect())
    }

    /// The partition-assignment leases (table `analytics_members`).
    pub fn leases(&self) -> cxgap_bus::membership::SqlLeases {
        cxgap_bus::membership::SqlLeases { pool: self.pool.clone(), table: "analytics_members" }
    }

    /// Forgets processed ids older than `before_ms` (the dedup window).
    pub async fn prune_processed(&self, before_ms: i64) -> Result<u64, StoreError> {
        sqlx::query("DELETE FROM analytics_processed WHERE processed_at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(classify)
    }

    /// The cells of `tenant` from `from_day` on that another instance changed since
    /// `since`, a mark from an earlier read (all of them when `None`), for a state kept
    /// between reads; this instance's own changes reach that state from memory.
    ///
    /// On PostgreSQL the read is one snapshot (a read-only repeatable-read transaction),
    /// and its mark is that snapshot's xmin: every transaction the read could not see has
    /// an id at least that. The snapshot is taken under `gate`'s write lock, and
    /// `at_snapshot` runs there too: a batch of this instance holds the read lock from its
    /// commit until it has handed its cells over, so what `at_snapshot` takes is exactly
    /// this instance's batches that committed before the snapshot and were not yet taken.
    /// It returns `None` when the caller's kept state is not current (it was not
    /// following the tenant), and the read is whole.
    ///
    /// A batch stamps the cells it writes with its transaction (migration 1004) and logs
    /// their keys with that stamp and its writer (migrations 1007, 1008), so the next read
    /// from that mark finds every cell another instance changed since, in whatever order
    /// the batches committed:
    /// - not at all, when no other instance logged a change since the mark (one instance:
    ///   the usual case), and the read costs two small queries;
    /// - by key, from the log: its cost follows the changes, not the window. Taken while
    ///   the log's rows since the mark name at most 1/[`KEYED_READ_SHARE`] of the `kept`
    ///   cells: a key lookup costs about as much as filtering 20–30 cells of the window
    ///   (2,000 lookups 22–41 ms whatever the window, 324,000 cells filtered 162 ms,
    ///   `docs/benchmarks-history.md`);
    /// - otherwise, after another instance's batch too large to log its keys (more than
    ///   `LOGGED_KEYS_MAX` cells), or when the mark is below the log's pruning floor (see
    ///   [`Self::prune_cell_changes`]), by filtering the window on the stamps, which the
    ///   server does without sending the unchanged cells; this read takes this instance's
    ///   changed cells too.
    ///
    /// Each cell comes once, with its whole sums as of the snapshot (all its partitions'
    /// rows added up; [`GapState::set_cell`]); a cell read twice is harmless. SQLite gives
    /// no mark and every read is whole.
    pub async fn cells_since<T>(
        &self,
        tenant: &str,
        from_day: Day,
        since: Option<i64>,
        kept: usize,
        gate: &tokio::sync::RwLock<()>,
        at_snapshot: impl FnOnce() -> Option<T>,
    ) -> Result<(CellRead, Option<T>), StoreError> {
        if self.pg.is_none() {
            let mut conn = self.pool.acquire().await.map_err(classify)?;
            let taken = {
                let _gate = gate.write().await;
                at_snapshot()
            };
            let cells = read_cells(&mut conn, tenant, from_day.0 as i64, Changed::All).await?;
            return Ok((CellRead { cells, mark: None, whole: true, keyed: false }, taken));
        }
        let mut tx =
            self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await.map_err(classify)?;
        // The snapshot is taken by this statement, while no batch of this instance is
        // between its commit and handing its cells over (see `at_snapshot`).
        let gate = gate.write().await;
        let (mark, floor): (i64, i64) = sqlx::query_as(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint, \
             (SELECT below_xid FROM analytics_cell_changes_pruned)",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        let taken = at_snapshot();
        drop(gate);
        let changed = match since {
            None => Changed::All,
            Some(_) if taken.is_none() => Changed::All,
            Some(since) if since < floor => Changed::Stamped(since),
            Some(since) => {
                // Counted with repeats (a cell changed by several batches): it errs towards
                // the stamps.
                let (logged, unkeyed): (i64, bool) = sqlx::query_as(
                    "SELECT COALESCE(sum(cells), 0)::bigint, COALESCE(bool_or(days IS NULL), false) \
                     FROM analytics_cell_changes WHERE tenant_id = $1 AND changed_xid >= $2 \
                     AND writer IS DISTINCT FROM $3",
                )
                .bind(tenant)
                .bind(since)
                .bind(self.writer)
                .fetch_one(&mut *tx)
                .await
                .map_err(classify)?;
                if logged == 0 {
                    Changed::Nothing
                } else if unkeyed || logged.saturating_mul(KEYED_READ_SHARE) > i64::try_from(kept).unwrap_or(i64::MAX) {
                    Changed::Stamped(since)
                } else {
                    Changed::Logged(since, self.writer)
                }
            }
        };
        let cells = whole_cells(read_cells(&mut tx, tenant, from_day.0 as i64, changed).await?);
        tx.commit().await.map_err(classify)?;
        Ok((
            CellRead {
                cells,
                mark: Some(mark),
                whole: changed == Changed::All,
                keyed: matches!(changed, Changed::Logged(..) | Changed::Nothing),
            },
            taken,
        ))
    }

    /// Forgets the change log's rows of transactions below `below`, a mark this returned
    /// before (0: forget nothing), and returns a new mark for the next call. Reads from a
    /// mark below `below` filter the window by the cells' stamps from then on. Called with
    /// the mark of the previous call, a minute or so apart, it keeps one to two minutes of
    /// the log, while evaluations every few seconds read by key. SQLite keeps no log.
    pub async fn prune_cell_changes(&self, below: i64) -> Result<(u64, i64), StoreError> {
        if self.pg.is_none() {
            return Ok((0, 0));
        }
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let mut pruned = 0;
        if below > 0 {
            // One transaction: a read sees the new floor exactly when it would miss the
            // deleted rows.
            sqlx::query("UPDATE analytics_cell_changes_pruned SET below_xid = GREATEST(below_xid, $1)")
                .bind(below)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            pruned = sqlx::query("DELETE FROM analytics_cell_changes WHERE changed_xid < $1")
                .bind(below)
                .execute(&mut *tx)
                .await
                .map_err(classify)?
                .rows_affected();
        }
        let (mark,): (i64,) = sqlx::query_as("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok((pruned, mark))
    }

    /// A tenant's stored internal assessments (each assessor's latest per key).
    pub async fn assessments(&self, tenant: &str) -> Result<Vec<InternalAssessment>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT assessment FROM analytics_assessments WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter().map(|(json,)| serde_json::from_str(json).map_err(|e| corrupt("assessment", e))).collect()
    }

    /// A tenant's state from storage: cells from `from_day` on (all when `None`),
    /// assessments, and customers when asked for.
    pub async fn load(&self, tenant: &str, from_day: Option<Day>, customers: bool) -> Result<GapState, StoreError> {
        let mut state = GapState::new();
        // The connection goes back before the reads below (SQLite's pool holds one).
        let cells = {
            let mut conn = self.pool.acquire().await.map_err(classify)?;
            read_cells(&mut conn, tenant, from_day.map_or(i64::MIN, |d| d.0 as i64), Changed::All).await?
        };
        for (coords, agg) in cells {
            state.merge_cell(&coords, &agg);
        }
        for a in self.assessments(tenant).await? {
            state.apply_assessment(&a);
        }
        if customers {
            let rows: Vec<(String, String)> =
                sqlx::query_as("SELECT customer_id, state FROM analytics_customers WHERE tenant_id = $1")
                    .bind(tenant)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(classify)?;
            for (id, json) in rows {
                let c: CustomerState<Segment> = serde_json::from_str(&json).map_err(|e| corrupt("customer", e))?;
                state.put_customer(&id, c);
            }
        }
        Ok(state)
    }
}

/// A partition batch's open transaction (see [`AnalyticsStore::begin_batch`]).
#[derive(Debug)]
pub struct PartitionTx {
    tx: Tx,
    now_ms: i64,
    writer: i64,
    /// The partition whose share of the cells this batch adds to (see
    /// `pgbatch::write_cells`): a group's first.
    partition: i32,
}

#[derive(Debug)]
enum Tx {
    Pg(sqlx::Transaction<'static, sqlx::Postgres>),
    /// SQLite (embedded mode).
    Any(sqlx::Transaction<'static, sqlx::Any>),
}

/// Runs one statement whose text and binds serve both drivers (the query expression is
/// typed once per arm), and gives its row count.
macro_rules! execute {
    ($tx:expr, $query:expr) => {
        match $tx {
            Tx::Pg(tx) => $query.execute(&mut **tx).await.map(|r| r.rows_affected()),
            Tx::Any(tx) => $query.execute(&mut **tx).await.map(|r| r.rows_affected()),
        }
    };
}

const INSERT_OFFSET: &str =
    "INSERT INTO analytics_offsets (consumer_group, topic, partition_id, next_offset) VALUES ($1, $2, $3, $4)";
const MOVE_OFFSET: &str = "UPDATE analytics_offsets SET next_offset = $1 \
     WHERE consumer_group = $2 AND topic = $3 AND partition_id = $4 AND next_offset = $5";
/// Latest wins, by (assessed_at, id hash): the same rule as in memory.
const UPSERT_ASSESSMENT: &str = "INSERT INTO analytics_assessments \
     (tenant_id, touchpoint, stage, instrument, assessor, assessed_at, id_hash, assessment) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (tenant_id, touchpoint, stage, instrument, assessor) DO UPDATE SET \
     assessed_at = excluded.assessed_at, id_hash = excluded.id_hash, assessment = excluded.assessment \
     WHERE excluded.assessed_at > analytics_assessments.assessed_at \
     OR (excluded.assessed_at = analytics_assessments.assessed_at \
         AND excluded.id_hash > analytics_assessments.id_hash)";

impl PartitionTx {
    /// Moves another partition's stored offset from `expected` to `next` in this
    /// transaction (a group of partition batches); `Fenced` as in
    /// [`AnalyticsStore::begin_batch`].
    pub async fn move_offset(
        &mut self,
        group: &str,
        topic: &str,
        partition: i32,
        expected: Option<i64>,
        next: i64,
    ) -> Result<(), StoreError> {
        let fenced = StoreError::Fenced { partition };
        let moved = match expected {
            None => execute!(
                &mut self.tx,
                sqlx::query(INSERT_OFFSET).bind(group).bind(topic).bind(partition as i64).bind(next)
            ),
            Some(expected) => execute!(
                &mut self.tx,
                sqlx::query(MOVE_OFFSET).bind(next).bind(group).bind(topic).bind(partition as i64).bind(expected)
            ),
        };
        match moved.map_err(classify) {
            Ok(1) => Ok(()),
            // No row at `expected`, or (first batch) a row someone else inserted.
            Ok(_) | Err(StoreError::Conflict(_)) => Err(fenced),
            Err(e) => Err(e),
        }
    }

    /// Moves other partitions' stored offsets in this transaction, each from `expected` to
    /// `next` (a group of partition batches); `Fenced`, naming the first partition whose
    /// offset was not at `expected`, as in [`AnalyticsStore::begin_batch`]. On PostgreSQL
    /// the partitions already stored move in one statement: a group spans up to every
    /// partition, and with a read and a move each, the offsets were more than half of the
    /// statements of a latency run.
    pub async fn move_offsets(
        &mut self,
        group: &str,
        topic: &str,
        moves: &[(i32, Option<i64>, i64)],
    ) -> Result<(), StoreError> {
        let stored: Vec<(i32, i64, i64)> = moves.iter().filter_map(|&(p, e, n)| Some((p, e?, n))).collect();
        let together = match &mut self.tx {
            Tx::Pg(tx) if stored.len() > 1 => Some(pgbatch::move_offsets(tx, group, topic, &stored).await?),
            _ => None,
        };
        for &(partition, expected, next) in moves {
            match &together {
                Some(moved) if expected.is_some() => {
                    if !moved.contains(&partition) {
                        return Err(StoreError::Fenced { partition });
                    }
                }
                _ => self.move_offset(group, topic, partition, expected, next).await?,
            }
        }
        Ok(())
    }

    /// Records `ids` as processed for `tenant` and returns the ones that were not before.
    /// One statement both deduplicates and remembers: an id claimed by a transaction that
    /// has not committed yet (another partition's batch) waits for it, then counts as
    /// processed or not as that transaction ended.
    pub async fn claim(&mut self, tenant: &str, ids: &[String]) -> Result<HashSet<String>, StoreError> {
        // A tenant with only assessments in the batch: no round trip for nothing.
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let tx = match &mut self.tx {
            Tx::Pg(tx) => return pgbatch::claim(tx, tenant, ids, self.now_ms).await,
            Tx::Any(tx) => tx,
        };
        let mut claimed = HashSet::with_capacity(ids.len());
        for chunk in ids.chunks(300) {
            let values: Vec<String> = (0..chunk.len()).map(|i| format!("($1, ${}, $2)", i + 3)).collect();
            let sql = format!(
                "INSERT INTO analytics_processed (tenant_id, event_id, processed_at) VALUES {} \
                 ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING event_id",
                values.join(", ")
            );
            let mut q = sqlx::query_as::<_, (String,)>(&sql).bind(tenant).bind(self.now_ms);
            for id in chunk {
                q = q.bind(id);
            }
            claimed.extend(q.fetch_all(&mut **tx).await.map_err(classify)?.into_iter().map(|r| r.0));
        }
        Ok(claimed)
    }

    /// Stored states of these customers, read inside the transaction.
    pub async fn customers(
        &mut self,
        tenant: &str,
        ids: &[String],
    ) -> Result<Vec<(String, CustomerState<Segment>)>, StoreError> {
        match &mut self.tx {
            Tx::Pg(tx) => pgbatch::read_customers(tx, tenant, ids).await,
            Tx::Any(tx) => read_customers(tx, tenant, ids).await,
        }
    }

    /// Writes a tenant's cells, customers, assessments and signals (its processed ids are
    /// written by [`PartitionTx::claim`]).
    pub async fn write(&mut self, t: &TenantWrite) -> Result<(), StoreError> {
        let now_ms = self.now_ms;
        // Each segment's JSON once: a batch's cells share the state's copy of their segment
        // (see `Segment`), and a few segments hold most cells. Keyed by that copy's address,
        // which stays taken while `t` holds the cells.
        let mut segments: HashMap<usize, String> = HashMap::new();
        for (coords, _) in &t.cells {
            if let std::collections::hash_map::Entry::Vacant(e) = segments.entry(coords.4.address()) {
                e.insert(serde_json::to_string(&coords.4).map_err(|e| corrupt("segment", e))?);
            }
        }
        let mut cells = Vec::with_capacity(t.cells.len());
        for (coords, agg) in &t.cells {
            let row =
                agg.to_row().ok_or_else(|| StoreError::Overflow("a cell's sum of squares exceeds 64 bits".into()))?;
            cells.push((coords, segments[&coords.4.address()].as_str(), row));
        }
        let mut customers = Vec::with_capacity(t.customers.len());
        for (id, state) in &t.customers {
            customers.push((id, serde_json::to_string(state).map_err(|e| corrupt("customer state", e))?));
        }
        match &mut self.tx {
            Tx::Pg(tx) => {
                pgbatch::write_cells(tx, &t.tenant, &cells, self.writer, self.partition).await?;
                pgbatch::write_customers(tx, &t.tenant, &customers, now_ms).await?;
            }
            Tx::Any(tx) => write_values(tx, &t.tenant, &cells, &customers, now_ms).await?,
        }
        for a in &t.assessments {
            let json = serde_json::to_string(a).map_err(|e| corrupt("assessment", e))?;
            let id_hash = format!("{:016x}", stable_hash(a.assessment_id.as_bytes()));
            execute!(
                &mut self.tx,
                sqlx::query(UPSERT_ASSESSMENT)
                    .bind(&t.tenant)
                    .bind(&a.touchpoint)
                    .bind(a.journey_stage.map_or("", |s| s.as_str()))
                    .bind(a.instrument.name())
                    .bind(&a.assessor)
                    .bind(a.assessed_at.0)
                    .bind(&id_hash)
                    .bind(&json)
            )
            .map_err(classify)?;
        }
        match &mut self.tx {
            Tx::Pg(tx) => pgbatch::insert_signals(tx, &t.signals, now_ms).await?,
            Tx::Any(tx) => insert_signals(tx, &t.signals, now_ms).await?,
        };
        Ok(())
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self.tx {
            Tx::Pg(tx) => tx.commit().await,
            Tx::Any(tx) => tx.commit().await,
        }
        .map_err(classify)
    }
}

/// SQLite: a tenant's cells and customers in multi-row `VALUES` statements, within its
/// bind limit.
async fn write_values(
    tx: &mut sqlx::AnyConnection,
    tenant: &str,
    cells: &[CellRow<'_>],
    customers: &[(&String, String)],
    now_ms: i64,
) -> Result<(), StoreError> {
    for chunk in cells.chunks(CELL_ROWS_PER_STATEMENT) {
        let sql = cell_upsert_sql(chunk.len());
        let mut q = sqlx::query(&sql);
        for ((day, channel, stage, touchpoint, _), segment, row) in chunk {
            q = q
                .bind(tenant)
                .bind(day.0 as i64)
                .bind(channel.as_str())
                .bind(stage.as_str())
                .bind(touchpoint.as_deref().unwrap_or_default())
                .bind(*segment);
            for v in row {
                q = q.bind(*v);
            }
        }
        q.execute(&mut *tx).await.map_err(classify)?;
    }
    for chunk in customers.chunks(1000) {
        let values: Vec<String> = (0..chunk.len()).map(|r| format!("({})", placeholders(1 + r * 4, 4))).collect();
        let sql = format!(
            "INSERT INTO analytics_customers (tenant_id, customer_id, state, updated_at) VALUES {} \
             ON CONFLICT (tenant_id, customer_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for (id, state) in chunk {
            q = q.bind(tenant).bind(*id).bind(state).bind(now_ms);
        }
        q.execute(&mut *tx).await.map_err(classify)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxgap_domain::{Channel, FeedbackDraft, GapState, JourneyStage, Timestamp, Violations};

    fn cells(n: usize) -> Vec<(CellCoords, CellAgg)> {
        let mut s = GapState::new();
        for i in 0..n {
            let e = FeedbackDraft {
                event_id: format!("e{i}"),
                customer_id: format!("c{i}"),
                channel: Some(Channel::ALL[i % 10]),
                journey_stage: Some(JourneyStage::ALL[i % 9]),
                occurred_at: Some(Timestamp(i as i64 * 86_400_000)),
                nps: Some((i % 11) as i64),
                ..Default::default()
            }
            .validate(Timestamp(i64::MAX / 4), Violations::default())
            .expect("valid event");
            s.apply(&e);
        }
        s.snapshot().cells
    }

    /// The cell upsert is planned once per connection, not once per batch (see
    /// `pgbatch::BEGIN`), and only inside a batch's transaction.
    #[tokio::test]
    async fn a_batch_plans_its_statements_generically_and_only_inside_its_transaction() {
        let db = cxgap_testkit::TestDb::new().await.expect("test database");
        let store = AnalyticsStore::connect(&db.url).await.expect("store");
        let pg = store.pg.clone().expect("a PostgreSQL store has a native pool");
        // Batches of different sizes: custom plans would be made for each.
        for (i, n) in [3usize, 40, 7, 25, 11, 2, 30].into_iter().enumerate() {
            let expected = (i > 0).then_some(i as i64);
            let mut tx = store.begin_batch("g", "feedback", 0, expected, i as i64 + 1, 0).await.expect("begin");
            let write = TenantWrite { tenant: "acme".into(), cells: cells(n), ..Default::default() };
            tx.write(&write).await.expect("write");
            let Tx::Pg(conn) = &mut tx.tx else { panic!("PostgreSQL batches use the native driver") };
            let (mode,): (String,) =
                sqlx::query_as("SELECT current_setting('plan_cache_mode')").fetch_one(&mut **conn).await.expect("mode");
            assert_eq!(mode, "force_generic_plan");
            let (generic, custom): (i64, i64) = sqlx::query_as(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements \
                 WHERE statement LIKE 'WITH logged AS (INSERT INTO analytics_cell_changes%'",
            )
            .fetch_one(&mut **conn)
            .await
            .expect("the cell upsert is prepared on this connection");
            assert_eq!(custom, 0, "batch {i}: the cell upsert was planned for its parameters");
            assert!(generic >= 1);
            tx.commit().await.expect("commit");
        }
        let mut conn = pg.acquire().await.expect("connection");
        let (mode,): (String,) =
            sqlx::query_as("SELECT current_setting('plan_cache_mode')").fetch_one(&mut *conn).await.expect("mode");
        assert_eq!(mode, "auto", "outside a batch the server's setting holds");
    }
}
