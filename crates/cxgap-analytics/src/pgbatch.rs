//! The batch writes on PostgreSQL, through sqlx's native driver: a batch's rows go to the
//! server as array parameters in binary (one per key column; the cells' values as one
//! array, see `cell_upsert_sql`), and one `INSERT … SELECT … FROM UNNEST(…)` statement
//! writes them all. sqlx's `Any` driver binds no arrays; text array literals cost the
//! server their parsing: for a 1,700-cell upsert, 91–109 ms bound as text against 58–75 ms
//! in binary (measured on the ninth benchmark machine). A multi-row `VALUES` list costs
//! more still (an expression per value).

use crate::store::{OutboxSignal, StoreError, Unpublished, classify, corrupt};
use cxgap_domain::aggregate::CELL_ROW_WIDTH;
use cxgap_domain::customer::CustomerState;
use cxgap_domain::model::Segment;
use cxgap_domain::state::CellCoords;
use sqlx::PgConnection;
use std::collections::HashSet;

/// How a batch's transaction begins: with generic plans for its statements, in the same
/// round trip. Each statement has one text for any number of rows and is prepared once per
/// connection, but PostgreSQL kept planning it anew for every batch: the generic plan's
/// estimate for an array of unknown length never beat the custom plans' average, so it was
/// never chosen. Planning the cell upsert (77 value expressions, 77 assignments) took
/// about 1 ms a batch, a quarter of its time (`pg_stat_statements` with planning tracked).
/// Nothing here has a plan that depends on its parameters' values, or that goes wrong as
/// a table grows between two `ANALYZE`s: every kept statement is an insert from arrays, an
/// upsert that finds its row through its conflict key, or a lookup in the partitions'
/// offsets (a handful of rows). The customer read, whose lookups a plan made on a young
/// table would turn into scans, is not kept and is planned for each batch, generic or not
/// (see `read_customers`). `SET LOCAL` ends with the transaction, so the statements
/// outside it (the relay's, the evaluation's) plan as before: session-wide, the relay's
/// delete took a generic hash join over the outbox and ran four times slower. Measured:
/// analytics' throughput +10–23 %, the pipeline's backlog rate +19–42 %
/// (`docs/benchmarks-history.md`, 2026-11-30, fourteenth run).
pub(crate) const BEGIN: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan";

/// A cell ready to store: coordinates, segment as JSON, and the integer row.
pub(crate) type CellRow<'a> = (&'a CellCoords, &'a str, [i64; CELL_ROW_WIDTH]);

/// The most cells whose keys a batch logs; a batch of more logs only their count (see
/// migration 1007). Batches of a steady flow hold tens of cells, a backlog's hundreds or
/// more. At 512, three of five alternated throughput pairs ran the cell upsert 5–37 %
/// longer than without the log (the benchmark's backlog batches hold about 1,150 events
/// each); at 128, five pairs were a tie (10.6 against 10.8 s, `docs/benchmarks-history.md`).
pub(crate) const LOGGED_KEYS_MAX: usize = 128;

/// The additive cell upsert: one statement text for any number of rows, so it is
/// prepared once per connection. Each row is stamped with the writing transaction, and
/// the same statement logs the cells' keys with that stamp in the change log (one row; see
/// `AnalyticsStore::cells_since`): it reuses the keys' parameters and costs no round trip.
///
/// Each row is the writing partition's share of its cell (migration 1009): batches of
/// different partitions never wait on each other's cell rows.
///
/// The keys come as five arrays, unnested; the values as one array of every row's values
/// in row order, each read by its position (`$7[(i - 1) * width + k]`). `UNNEST` of one
/// array per value column made the server call a set-returning function per value, 82 per
/// row: in `EXPLAIN ANALYZE` of a 1,500-row batch that unnesting was 23–26 ms of 50–69 ms.
fn cell_upsert_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let cols: Vec<String> = (0..CELL_ROW_WIDTH).map(|i| format!("v{i}")).collect();
        let values: Vec<String> =
            (1..=CELL_ROW_WIDTH).map(|k| format!("$7[(u.i - 1) * {CELL_ROW_WIDTH} + {k}]")).collect();
        let sets: Vec<String> = cols.iter().map(|c| format!("{c} = analytics_cells.{c} + excluded.{c}")).collect();
        format!(
            "WITH logged AS (INSERT INTO analytics_cell_changes \
             (tenant_id, changed_xid, cells, days, channels, stages, touchpoints, segments, writer) \
             SELECT $1, pg_current_xact_id()::text::bigint, n, \
             CASE WHEN keyed THEN $2::bigint[] END, CASE WHEN keyed THEN $3::text[] END, \
             CASE WHEN keyed THEN $4::text[] END, CASE WHEN keyed THEN $5::text[] END, \
             CASE WHEN keyed THEN $6::text[] END, $8::bigint \
             FROM (SELECT cardinality($2::bigint[]) AS n, cardinality($2::bigint[]) <= {LOGGED_KEYS_MAX} AS keyed) AS c) \
             INSERT INTO analytics_cells (tenant_id, day, channel, stage, touchpoint, segment, {}, changed_xid, partition_id) \
             SELECT $1, u.day, u.channel, u.stage, u.touchpoint, u.segment, {}, pg_current_xact_id()::text::bigint, $9 \
             FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY \
             AS u(day, channel, stage, touchpoint, segment, i) \
             ON CONFLICT (tenant_id, day, channel, stage, touchpoint, segment, partition_id) DO UPDATE SET {}, \
             changed_xid = excluded.changed_xid",
            cols.join(", "),
            values.join(", "),
            sets.join(", ")
        )
    })
}

/// Moves stored offsets (partition, expected, next) in one statement; returns the
/// partitions that moved (one whose offset was not at `expected` did not).
pub(crate) async fn move_offsets(
    conn: &mut PgConnection,
    group: &str,
    topic: &str,
    moves: &[(i32, i64, i64)],
) -> Result<Vec<i32>, StoreError> {
    let rows = sqlx::query_as::<_, (i64,)>(
        "UPDATE analytics_offsets o SET next_offset = u.next \
         FROM UNNEST($3::bigint[], $4::bigint[], $5::bigint[]) AS u(partition_id, expected, next) \
         WHERE o.consumer_group = $1 AND o.topic = $2 AND o.partition_id = u.partition_id \
         AND o.next_offset = u.expected RETURNING o.partition_id",
    )
    .bind(group)
    .bind(topic)
    .bind(moves.iter().map(|m| i64::from(m.0)).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| m.1).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| m.2).collect::<Vec<_>>())
    .fetch_all(conn)
    .await
    .map_err(classify)?;
    Ok(rows.into_iter().map(|r| r.0 as i32).collect())
}

/// Records `ids` as processed and returns the ones that were not before (see
/// `PartitionTx::claim`).
pub(crate) async fn claim(
    conn: &mut PgConnection,
    tenant: &str,
    ids: &[String],
    now_ms: i64,
) -> Result<HashSet<String>, StoreError> {
    let rows = sqlx::query_as::<_, (String,)>(
        "INSERT INTO analytics_processed (tenant_id, event_id, processed_at) \
         SELECT $1, id, $2 FROM UNNEST($3::text[]) AS u(id) \
         ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING event_id",
    )
    .bind(tenant)
    .bind(now_ms)
    .bind(ids)
    .fetch_all(conn)
    .await
    .map_err(classify)?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

pub(crate) async fn read_customers(
    conn: &mut PgConnection,
    tenant: &str,
    ids: &[String],
) -> Result<Vec<(String, CustomerState<Segment>)>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // One key lookup per customer, whatever the statistics say: with `= ANY($2)` and the
    // statistics of a young table the planner read the tenant's whole key range and
    // filtered (`OFFSET 0` keeps the lateral subquery from being flattened into a join
    // that could do the same). Not a cached prepared statement: a generic plan chosen
    // while the table was small would stay as it grows.
    let rows = sqlx::query_as::<_, (String, String)>(
        "SELECT r.customer_id, r.state FROM UNNEST($2::text[]) AS u(k) CROSS JOIN LATERAL \
         (SELECT customer_id, state FROM analytics_customers WHERE tenant_id = $1 AND customer_id = u.k OFFSET 0) AS r",
    )
    .persistent(false)
    .bind(tenant)
    .bind(ids)
    .fetch_all(conn)
    .await
    .map_err(classify)?;
    rows.into_iter()
        .map(|(id, json)| Ok((id, serde_json::from_str(&json).map_err(|e| corrupt("customer state", e))?)))
        .collect()
}

pub(crate) async fn write_cells(
    conn: &mut PgConnection,
    tenant: &str,
    cells: &[CellRow<'_>],
    writer: i64,
    partition: i32,
) -> Result<(), StoreError> {
    if cells.is_empty() {
        return Ok(());
    }
    let q = sqlx::query(cell_upsert_sql())
        .bind(tenant)
        .bind(cells.iter().map(|(c, _, _)| c.0.0 as i64).collect::<Vec<_>>())
        .bind(cells.iter().map(|(c, _, _)| c.1.as_str()).collect::<Vec<_>>())
        .bind(cells.iter().map(|(c, _, _)| c.2.as_str()).collect::<Vec<_>>())
        .bind(cells.iter().map(|(c, _, _)| c.3.as_deref().unwrap_or_default()).collect::<Vec<_>>())
        .bind(cells.iter().map(|(_, segment, _)| *segment).collect::<Vec<_>>())
        .bind(cells.iter().flat_map(|(_, _, row)| row.iter().copied()).collect::<Vec<i64>>())
        .bind(writer)
        .bind(partition);
    q.execute(conn).await.map_err(classify)?;
    Ok(())
}

pub(crate) async fn write_customers(
    conn: &mut PgConnection,
    tenant: &str,
    customers: &[(&String, String)],
    now_ms: i64,
) -> Result<(), StoreError> {
    if customers.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO analytics_customers (tenant_id, customer_id, state, updated_at) \
         SELECT $1, id, state, $2 FROM UNNEST($3::text[], $4::text[]) AS u(id, state) \
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(now_ms)
    .bind(customers.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
    .bind(customers.iter().map(|(_, state)| state.as_str()).collect::<Vec<_>>())
    .execute(conn)
    .await
    .map_err(classify)?;
    Ok(())
}

/// `INSERT … ON CONFLICT DO NOTHING`: a signal id already stored is the same signal,
/// decided again (published or still in the outbox). The new ones, and only they, go into
/// the outbox with their payload, in the same statement. Returns how many were new.
pub(crate) async fn insert_signals(
    conn: &mut PgConnection,
    signals: &[OutboxSignal],
    now_ms: i64,
) -> Result<u64, StoreError> {
    if signals.is_empty() {
        return Ok(0);
    }
    let r = sqlx::query(
        "WITH u AS (SELECT * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::float8[], $8::text[]) AS u(id, tenant, kind, subject, msg_key, risk, payload)), \
         new AS (INSERT INTO analytics_signals (signal_id, tenant_id, kind, subject, msg_key, created_at, risk) \
         SELECT id, tenant, kind, subject, msg_key, $1, risk FROM u \
         ON CONFLICT (signal_id) DO NOTHING RETURNING signal_id) \
         INSERT INTO analytics_outbox (created_at, signal_id, tenant_id, msg_key, payload) \
         SELECT $1, u.id, u.tenant, u.msg_key, u.payload FROM u JOIN new ON new.signal_id = u.id",
    )
    .bind(now_ms)
    .bind(signals.iter().map(|s| s.id.as_str()).collect::<Vec<_>>())
    .bind(signals.iter().map(|s| s.tenant.as_str()).collect::<Vec<_>>())
    .bind(signals.iter().map(|s| s.kind).collect::<Vec<_>>())
    .bind(signals.iter().map(|s| s.subject.as_str()).collect::<Vec<_>>())
    .bind(signals.iter().map(|s| s.key.as_str()).collect::<Vec<_>>())
    .bind(signals.iter().map(|s| s.risk).collect::<Vec<_>>())
    .bind(signals.iter().map(crate::store::payload_text).collect::<Vec<_>>())
    .execute(conn)
    .await
    .map_err(classify)?;
    Ok(r.rows_affected())
}

/// Takes published signals out of the outbox, by its key; one prepared statement for
/// any number of rows.
pub(crate) async fn mark_published(conn: &mut PgConnection, done: &[&Unpublished]) -> Result<(), StoreError> {
    if done.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM analytics_outbox o USING UNNEST($1::bigint[], $2::text[]) AS u(created_at, signal_id) \
         WHERE o.created_at = u.created_at AND o.signal_id = u.signal_id",
    )
    .bind(done.iter().map(|u| u.created_at).collect::<Vec<_>>())
    .bind(done.iter().map(|u| u.id.as_str()).collect::<Vec<_>>())
    .execute(conn)
    .await
    .map_err(classify)?;
    Ok(())
}
