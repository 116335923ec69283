//! ClickHouse: migrations at start, the latest stored rows for merging, and batch inserts.
//!
//! The client runs with validation off: validation needs `RowBinaryWithNamesAndTypes`, which
//! ClickHouse 18.16 lacks, so rows travel as positional `RowBinary` and the Rust structs in
//! [`crate::rows`] must list columns in table order (a test against a real server checks it).

use std::collections::HashMap;
use std::time::Duration;

use schemas::config::{ClickHouseConfig, Compression};
use schemas::sql::{MIGRATIONS, MIGRATIONS_TABLE};

use crate::keys::{CartKey, LineKey};
use crate::rows::{AlertRow, ContactRow, OrderRow};

mod center;
mod personal;

pub use center::{AckRow, AlertDay, AlertQuery, OrdersDay};
pub use personal::ErasureRow;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ClickHouse at {url}: {op}: {source}")]
    ClickHouse {
        url: String,
        op: String,
        #[source]
        source: clickhouse::error::Error,
    },
}

/// A ClickHouse call that gives up after `[clickhouse] timeout` (a transient error, retried):
/// the client has no timeouts of its own, and a server that stopped answering mid-call would
/// hold the sink forever.
trait Timed<T>: std::future::Future<Output = Result<T, clickhouse::error::Error>> + Sized {
    fn timed_by(self, after: Duration) -> impl std::future::Future<Output = Result<T, clickhouse::error::Error>> {
        async move { tokio::time::timeout(after, self).await.unwrap_or(Err(clickhouse::error::Error::TimedOut)) }
    }
}

impl<T, F: std::future::Future<Output = Result<T, clickhouse::error::Error>>> Timed<T> for F {}

/// Ids per query in lookups by id: a query stays far below ClickHouse's 256 KB `max_query_size`
/// however many ids a batch needs (5,000 alert ids in one query passed it).
const IDS_PER_QUERY: usize = 1000;

impl StoreError {
    /// True when waiting may cure it: ClickHouse unreachable, a connection cut, a timeout.
    /// False for what waiting cannot cure (wrong password, unknown table, bad SQL).
    pub fn is_transient(&self) -> bool {
        let StoreError::ClickHouse { source, .. } = self;
        match source {
            clickhouse::error::Error::TimedOut => true,
            // A certificate the client does not trust is a network error that waiting cannot cure.
            clickhouse::error::Error::Network(e) => !error_chain(e.as_ref()).contains("certificate"),
            _ => false,
        }
    }

    /// A bounded label for `retries_total{cause}`.
    pub fn cause(&self) -> &'static str {
        let StoreError::ClickHouse { source, .. } = self;
        match source {
            clickhouse::error::Error::TimedOut => "clickhouse_timeout",
            clickhouse::error::Error::Network(_) => "clickhouse_network",
            _ => "clickhouse_error",
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A key of [`Store::active_lines`].
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
pub struct ActiveLine {
    shop_id: String,
    order_no: u64,
}

/// `(shop_id, <column>) IN ((?, n), …)` and the shops to bind in order. ClickHouse 18.16 narrows
/// a tuple `IN` by the key `(shop_id, <column>)` to the granules of the keys asked for; one
/// `shop_id IN (…) AND <column> IN (…)` over many shops reads every granule of those shops in the
/// numbers' range. Measured at 10,000,000 lines, 595 recent lines of 96 shops: 186 marks and
/// 1.86 s, as a tuple `IN` 98 marks (docs/sql.md).
fn key_tuples<'a>(pairs: impl Iterator<Item = (&'a str, u64)>, column: &str) -> (String, Vec<&'a str>) {
    let mut keys: Vec<(&str, u64)> = pairs.collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return ("0".to_owned(), Vec::new());
    }
    let list = keys.iter().map(|(_, n)| format!("(?,{n})")).collect::<Vec<_>>().join(",");
    (format!("(shop_id, {column}) IN ({list})"), keys.into_iter().map(|(s, _)| s).collect())
}

#[derive(Clone)]
pub struct Store {
    client: clickhouse::Client,
    /// Without a database: for `CREATE DATABASE`.
    server: clickhouse::Client,
    url: String,
    database: String,
    timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).field("database", &self.database).finish_non_exhaustive()
    }
}

/// A row of `oms_expectations`: an OMS edit and whether Qoo10 shows it yet.
#[derive(Debug, Clone, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct ExpectationRow {
    pub shop_id: String,
    pub edit_key: String,
    pub edit_id: String,
    /// The edit message (JSON).
    pub edit: String,
    /// `pending` or `matched`.
    pub state: String,
    pub made_at: u32,
    pub version: u64,
}

/// A row of `commands`: the latest result of a write-back command.
#[derive(Debug, Clone, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct CommandRow {
    pub command_id: String,
    pub shop_id: String,
    pub order_no: u64,
    pub action: String,
    pub state: String,
    pub qoo10_result_code: Option<i64>,
    pub reason: String,
    pub reason_ja: String,
    pub requested_at: u32,
    pub updated_at: u32,
    /// The result's time (µs): a later result of the same command replaces an earlier one.
    pub version: u64,
}

impl CommandRow {
    pub fn from_result(r: &schemas::command::CommandResult) -> CommandRow {
        let secs = |t: chrono::DateTime<chrono::Utc>| u32::try_from(t.timestamp()).unwrap_or(0);
        CommandRow {
            command_id: r.command_id.clone(),
            shop_id: r.shop_id.clone(),
            order_no: r.order_no,
            action: r.action.clone(),
            state: r.state.as_str().into(),
            qoo10_result_code: r.qoo10_result_code,
            reason: r.reason.clone(),
            reason_ja: r.reason_ja.clone(),
            requested_at: secs(r.requested_at),
            updated_at: secs(r.at),
            version: u64::try_from(r.at.timestamp_micros()).unwrap_or(0),
        }
    }
}

/// One line of a cart, as [`Store::pack_lines`] reads it.
#[derive(Debug, Clone, clickhouse::Row, serde::Deserialize)]
pub struct PackLine {
    pub shop_id: String,
    pub pack_no: u64,
    pub order_no: u64,
    pub claim_status: u8,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Applied {
    version: u32,
}

#[derive(Debug, clickhouse::Row, serde::Serialize)]
struct MigrationRecord {
    version: u32,
    name: String,
    applied_at: u32,
}

impl Store {
    pub fn new(cfg: &ClickHouseConfig) -> Self {
        let compression = match cfg.compression {
            Compression::Lz4 => clickhouse::Compression::Lz4,
            Compression::None => clickhouse::Compression::None,
        };
        let mut server = clickhouse::Client::default()
            .with_url(&cfg.url)
            .with_user(&cfg.user)
            .with_validation(false)
            .with_compression(compression);
        if let Some(p) = cfg.password() {
            server = server.with_password(p.expose());
        }
        let client = server.clone().with_database(&cfg.database);
        Store { client, server, url: cfg.url.clone(), database: cfg.database.clone(), timeout: cfg.timeout }
    }

    fn err(&self, op: impl Into<String>) -> impl FnOnce(clickhouse::error::Error) -> StoreError + '_ {
        let op = op.into();
        move |source| StoreError::ClickHouse { url: self.url.clone(), op, source }
    }

    /// Creates the database and applies the migrations not yet recorded. Safe to run from
    /// several sinks at once: every statement is `IF NOT EXISTS`.
    pub async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        // Created only when missing: a least-privilege sink user has no CREATE DATABASE grant,
        // and ClickHouse checks grants before `IF NOT EXISTS`.
        let exists = self
            .server
            .query("SELECT count() FROM system.databases WHERE name = ?")
            .bind(&self.database)
            .fetch_one::<u64>()
            .timed_by(self.timeout)
            .await
            .map_err(self.err("look up database"))?;
        if exists == 0 {
            self.server
                .query(&format!("CREATE DATABASE IF NOT EXISTS {}", self.database))
                .execute()
                .timed_by(self.timeout)
                .await
                .map_err(self.err("create database"))?;
        }
        self.client
            .query(MIGRATIONS_TABLE)
            .execute()
            .timed_by(self.timeout)
            .await
            .map_err(self.err("create schema_migrations"))?;
        let applied: Vec<u32> = self
            .client
            .query("SELECT version FROM schema_migrations FINAL")
            .fetch_all::<Applied>()
            .timed_by(self.timeout)
            .await
            .map_err(self.err("read schema_migrations"))?
            .into_iter()
            .map(|a| a.version)
            .collect();
        let mut done = Vec::new();
        for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            self.add_columns(m).await?;
            for statement in m.statements() {
                self.client
                    .query(&statement)
                    .execute()
                    .timed_by(self.timeout)
                    .await
                    .map_err(self.err(format!("migration {}", m.version)))?;
            }
            let mut insert = self
                .client
                .insert::<MigrationRecord>("schema_migrations")
                .await
                .map_err(self.err("record migration"))?;
            let record = MigrationRecord {
                version: m.version,
                name: m.name.to_owned(),
                applied_at: u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(0),
            };
            insert.write(&record).await.map_err(self.err("record migration"))?;
            insert.end().await.map_err(self.err("record migration"))?;
            tracing::info!(version = m.version, name = m.name, "migration applied");
            done.push(m.version);
        }
        Ok(done)
    }

    /// A migration's new columns, each added unless `system.columns` has it already (ClickHouse
    /// 18.16 has no `ADD COLUMN IF NOT EXISTS`; a sink stopped half-way adds the rest next time).
    async fn add_columns(&self, m: &schemas::sql::Migration) -> Result<(), StoreError> {
        for (table, column, ty) in m.added_columns {
            let op = || format!("migration {}: {table}.{column}", m.version);
            let present = self
                .client
                .query("SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?")
                .bind(&self.database)
                .bind(*table)
                .bind(*column)
                .fetch_one::<u64>()
                .timed_by(self.timeout)
                .await
                .map_err(self.err(op()))?;
            if present == 0 {
                let sql = format!("ALTER TABLE {table} ADD COLUMN {column} {ty}");
                self.client.query(&sql).execute().timed_by(self.timeout).await.map_err(self.err(op()))?;
            }
        }
        Ok(())
    }

    /// The latest stored row of each of these order lines (those that exist), by key.
    pub async fn latest(&self, keys: &[LineKey]) -> Result<HashMap<LineKey, OrderRow>, StoreError> {
        let rows = self.rows_of("orders", "shop_id, order_no", keys).await.map_err(self.err("read latest orders"))?;
        Ok(rows.into_iter().map(|r| (LineKey::new(&r.shop_id, r.order_no), r)).collect())
    }

    /// Every stored version of these order lines, oldest first.
    pub async fn history(&self, keys: &[LineKey]) -> Result<HashMap<LineKey, Vec<OrderRow>>, StoreError> {
        let mut rows = self
            .rows_of("order_versions", "shop_id, order_no, version", keys)
            .await
            .map_err(self.err("read order history"))?;
        rows.sort_by_key(|r| r.version);
        let mut out: HashMap<LineKey, Vec<OrderRow>> = HashMap::new();
        for r in rows {
            out.entry(LineKey::new(&r.shop_id, r.order_no)).or_default().push(r);
        }
        Ok(out)
    }

    /// The rows of `table` for these lines, the newest one per `unique_by` (`orders`: per line;
    /// `order_versions`: per version) ([`IDS_PER_QUERY`] keys per query).
    async fn rows_of(
        &self,
        table: &str,
        unique_by: &str,
        keys: &[LineKey],
    ) -> Result<Vec<OrderRow>, clickhouse::error::Error> {
        let mut out = Vec::new();
        for chunk in keys.chunks(IDS_PER_QUERY) {
            out.extend(self.rows_of_chunk(table, unique_by, chunk).await?);
        }
        Ok(out)
    }

    /// Without `FINAL`: the newest row per `unique_by` (`LIMIT 1 BY`) is picked from the
    /// matching rows only. `FINAL` merges every row of the granules
    /// read before filtering: 1.08–1.31 s against 0.18–0.20 s for 595 lines at 10,000,000.
    async fn rows_of_chunk(
        &self,
        table: &str,
        unique_by: &str,
        keys: &[LineKey],
    ) -> Result<Vec<OrderRow>, clickhouse::error::Error> {
        let (condition, shops) = key_tuples(keys.iter().map(|k| (k.shop.as_str(), k.order_no)), "order_no");
        let mut q = self.client.query(&format!(
            "SELECT ?fields FROM {table} WHERE {condition} ORDER BY version DESC LIMIT 1 BY {unique_by}"
        ));
        for shop in shops {
            q = q.bind(shop);
        }
        q.fetch_all::<OrderRow>().timed_by(self.timeout).await
    }

    /// Writes one batch: contacts, history, latest state. Returns when ClickHouse has confirmed
    /// every insert; only then may the messages behind them be acknowledged.
    ///
    /// The three inserts run at once: none depends on another (a crash part-way redelivers the
    /// batch, which writes all three again, idempotently), and ClickHouse works on them in
    /// parallel instead of the sink waiting for three round trips in a row.
    pub async fn write<R>(&self, orders: &[R], contacts: &[ContactRow]) -> Result<(), StoreError>
    where
        R: std::borrow::Borrow<OrderRow> + Sync,
    {
        let (c, v, l) = tokio::join!(
            self.insert_all("order_contacts", contacts),
            self.insert_all("order_versions", orders),
            self.insert_all("orders", orders),
        );
        c.and(v).and(l)
    }

    async fn insert_all<T, R>(&self, table: &str, rows: &[R]) -> Result<(), StoreError>
    where
        T: clickhouse::Row + clickhouse::RowWrite + serde::Serialize,
        for<'a> T: clickhouse::Row<Value<'a> = T>,
        R: std::borrow::Borrow<T>,
    {
        if rows.is_empty() {
            return Ok(()); // an insert of nothing would still be a round trip (and an empty part)
        }
        let op = || format!("insert into {table}");
        let insert = self.client.insert::<T>(table).await.map_err(self.err(op()))?;
        let mut insert = insert.with_timeouts(Some(self.timeout), Some(self.timeout));
        for r in rows {
            insert.write(r.borrow()).await.map_err(self.err(op()))?;
        }
        insert.end().await.map_err(self.err(op()))
    }

    pub async fn write_alerts(&self, alerts: &[AlertRow]) -> Result<(), StoreError> {
        self.insert_all("alerts", alerts).await
    }

    /// Alerts, newest first.
    pub async fn list_alerts(
        &self,
        shop: Option<&str>,
        open_only: bool,
        limit: u64,
    ) -> Result<Vec<AlertRow>, StoreError> {
        let mut cond = vec!["1 = 1"];
        if shop.is_some() {
            cond.push("shop_id = ?");
        }
        if open_only {
            cond.push("state = 'open'");
        }
        let mut q = self.client.query(&format!(
            "SELECT ?fields FROM alerts FINAL WHERE {} ORDER BY updated_at DESC, alert_id LIMIT {limit}",
            cond.join(" AND ")
        ));
        if let Some(s) = shop {
            q = q.bind(s);
        }
        q.fetch_all::<AlertRow>().timed_by(self.timeout).await.map_err(self.err("read alerts"))
    }

    /// Every open alert's row, streamed to `f`.
    pub async fn each_open_row(&self, mut f: impl FnMut(AlertRow)) -> Result<(), StoreError> {
        let mut cursor = self
            .client
            .query("SELECT ?fields FROM alerts FINAL WHERE state = 'open'")
            .fetch::<AlertRow>()
            .map_err(self.err("read open alerts"))?;
        while let Some(row) = cursor.next().timed_by(self.timeout).await.map_err(self.err("read open alerts"))? {
            f(row);
        }
        Ok(())
    }

    /// The open alerts, streamed into the engine's compact form (memory never holds them whole).
    pub async fn load_open_alerts(&self) -> Result<crate::open::OpenAlerts, StoreError> {
        let mut open = crate::open::OpenAlerts::default();
        self.each_open_row(|row| match row.to_alert() {
            Some(alert) => open.insert(crate::keys::AlertKey::of(&alert), &alert),
            None => {
                tracing::warn!(alert_id = %row.alert_id, kind = %row.kind, "an open alert of a kind this build does not know; left alone")
            }
        })
        .await?;
        Ok(open)
    }

    /// These alerts as stored (latest transition of each), [`IDS_PER_QUERY`] ids per query.
    pub async fn alerts_by_id(&self, ids: &[String]) -> Result<Vec<AlertRow>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let placeholders = vec!["?"; chunk.len()].join(",");
            let sql = format!("SELECT ?fields FROM alerts FINAL WHERE alert_id IN ({placeholders})");
            let mut q = self.client.query(&sql);
            for id in chunk {
                q = q.bind(id.as_str());
            }
            out.extend(q.fetch_all::<AlertRow>().timed_by(self.timeout).await.map_err(self.err("read alerts"))?);
        }
        Ok(out)
    }

    /// Per line of these carts: its latest claim status (`order_carts`, keyed by cart;
    /// [`IDS_PER_QUERY`] carts per query).
    pub async fn pack_lines(&self, packs: &[CartKey]) -> Result<Vec<PackLine>, StoreError> {
        let mut out = Vec::new();
        for chunk in packs.chunks(IDS_PER_QUERY) {
            out.extend(self.pack_lines_chunk(chunk).await?);
        }
        Ok(out)
    }

    async fn pack_lines_chunk(&self, packs: &[CartKey]) -> Result<Vec<PackLine>, StoreError> {
        let (condition, shops) = key_tuples(packs.iter().map(|k| (k.shop.as_str(), k.pack_no)), "pack_no");
        let mut q = self.client.query(&format!(
            "SELECT shop_id, pack_no, order_no, argMax(claim_status, version) AS claim_status \
             FROM order_carts WHERE {condition} GROUP BY shop_id, pack_no, order_no"
        ));
        for shop in shops {
            q = q.bind(shop);
        }
        q.fetch_all::<PackLine>().timed_by(self.timeout).await.map_err(self.err("read cart lines"))
    }

    /// Every stored line ordered since `since` (seconds) and its cart, streamed: memory stays
    /// that of the set, which follows the recent order volume, not the history.
    pub async fn load_known(&self, since: u32) -> Result<crate::known::Known, StoreError> {
        let mut known = crate::known::Known::since(since);
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Line {
            shop_id: String,
            order_no: u64,
            pack_no: u64,
            ordered_at: u32,
        }
        let mut cursor = self
            .client
            // order_versions, not orders: a crash between the two inserts leaves a line in
            // order_versions only, and its cart must still count as known. PREWHERE reads the
            // other columns of the recent rows only.
            .query("SELECT shop_id, order_no, pack_no, ordered_at FROM order_versions PREWHERE ordered_at >= toDateTime(?)")
            .bind(since)
            .fetch::<Line>()
            .map_err(self.err("read stored lines"))?;
        while let Some(l) = cursor.next().timed_by(self.timeout).await.map_err(self.err("read stored lines"))? {
            known.add(&l.shop_id, l.order_no, l.pack_no, l.ordered_at);
        }
        Ok(known)
    }

    /// The keys of the order lines on which the passing of time alone may open an alert
    /// (`ship_date_missing`: 配送要請 without 発送予定日; `ship_date_overdue`: 配送準備, the date
    /// before `today_jst`, no tracking number; the rules then judge the business days). Time alone
    /// never ends an alert (every end is a new version, judged on arrival), so the other active
    /// lines have nothing to sweep. Streamed: the sweep reads their rows ([`Store::latest`]) a
    /// chunk at a time, so its memory is one chunk's whatever the number of open lines. Only a
    /// few columns go through `FINAL`: reading every column of every line (`SELECT ?fields …
    /// FINAL`) took 9.4–10 s at 10,000,000 lines, the keys alone 0.64 s.
    pub fn active_lines(
        &self,
        today_jst: chrono::NaiveDate,
    ) -> Result<clickhouse::query::RowCursor<ActiveLine>, StoreError> {
        self.client
            .query(
                "SELECT shop_id, order_no FROM orders FINAL WHERE claim_status = 0 AND \
                 ((qoo10_status = 2 AND isNull(estimated_ship_date)) OR \
                  (qoo10_status = 3 AND estimated_ship_date < toDate(?) AND tracking_no = ''))",
            )
            .bind(today_jst.to_string())
            .fetch::<ActiveLine>()
            .map_err(self.err("read active lines"))
    }

    /// The next key of [`Store::active_lines`], within the store's timeout.
    pub async fn next_active(
        &self,
        cursor: &mut clickhouse::query::RowCursor<ActiveLine>,
    ) -> Result<Option<LineKey>, StoreError> {
        let line = cursor.next().timed_by(self.timeout).await.map_err(self.err("read active lines"))?;
        Ok(line.map(|l| LineKey::new(&l.shop_id, l.order_no)))
    }

    /// Active lines of a shop in these statuses, ordered between these instants (both
    /// included), stored before `before_version` (candidates for `order_vanished`).
    pub async fn known_lines(
        &self,
        shop: &str,
        statuses: &[u8],
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
        before_version: u64,
    ) -> Result<Vec<OrderRow>, StoreError> {
        let list = statuses.iter().map(u8::to_string).collect::<Vec<_>>().join(",");
        self.client
            .query(&format!(
                "SELECT ?fields FROM orders FINAL WHERE shop_id = ? AND claim_status = 0 AND qoo10_status IN ({list}) \
                 AND ordered_at BETWEEN toDateTime(?) AND toDateTime(?) AND version < ?"
            ))
            .bind(shop)
            .bind(from.timestamp())
            .bind(to.timestamp())
            .bind(before_version)
            .fetch_all::<OrderRow>()
            .timed_by(self.timeout)
            .await
            .map_err(self.err("read known lines"))
    }

    pub async fn write_expectations(&self, rows: &[ExpectationRow]) -> Result<(), StoreError> {
        self.insert_all("oms_expectations", rows).await
    }

    pub async fn write_commands(&self, rows: &[CommandRow]) -> Result<(), StoreError> {
        self.insert_all("commands", rows).await
    }

    /// Expectations not yet met by Qoo10's data.
    pub async fn pending_expectations(&self) -> Result<Vec<ExpectationRow>, StoreError> {
        self.client
            .query("SELECT ?fields FROM oms_expectations FINAL WHERE state = 'pending'")
            .fetch_all::<ExpectationRow>()
            .timed_by(self.timeout)
            .await
            .map_err(self.err("read expectations"))
    }

    /// The latest rows of a cart's lines.
    pub async fn pack_rows(&self, shop: &str, pack_no: u64) -> Result<Vec<OrderRow>, StoreError> {
        self.client
            // By the cart's lines in order_carts: both reads go by their table's key.
            .query(
                "SELECT ?fields FROM orders FINAL WHERE shop_id = ? AND order_no IN \
                 (SELECT order_no FROM order_carts WHERE shop_id = ? AND pack_no = ?)",
            )
            .bind(shop)
            .bind(shop)
            .bind(pack_no)
            .fetch_all::<OrderRow>()
            .timed_by(self.timeout)
            .await
            .map_err(self.err("read cart"))
    }

    /// Personal data retention: deletes `order_contacts` rows of orders placed more than `days`
    /// days ago (a mutation; ClickHouse applies it in the background). Returns the rows concerned.
    pub async fn expire_contacts(&self, days: u32, dry_run: bool) -> Result<u64, StoreError> {
        let cond = format!("ordered_at < now() - toIntervalDay({days})");
        let n = self
            .client
            .query(&format!("SELECT count() FROM order_contacts WHERE {cond}"))
            .fetch_one::<u64>()
            .timed_by(self.timeout)
            .await
            .map_err(self.err("count expired contacts"))?;
        if !dry_run && n > 0 {
            self.client
                .query(&format!("ALTER TABLE order_contacts DELETE WHERE {cond}"))
                .execute()
                .timed_by(self.timeout)
                .await
                .map_err(self.err("delete expired contacts"))?;
        }
        Ok(n)
    }

    /// Order lines per shop and canonical status.
    pub async fn orders_by_status(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct R {
            shop_id: String,
            status: String,
            n: u64,
        }
        let rows = self
            .client
            .query("SELECT shop_id, status, count() AS n FROM orders FINAL GROUP BY shop_id, status ORDER BY shop_id, status")
            .fetch_all::<R>()
            .timed_by(self.timeout)
            .await
            .map_err(self.err("read orders by status"))?;
        Ok(rows.into_iter().map(|r| (r.shop_id, r.status, r.n)).collect())
    }

    /// Readiness: ClickHouse answers a query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .query("SELECT 1")
            .fetch_one::<u8>()
            .timed_by(self.timeout)
            .await
            .map(|_| ())
            .map_err(self.err("ping"))
    }
}

#[cfg(test)]
mod tests {
    use super::key_tuples;

    #[test]
    fn lookups_name_each_key_once() {
        let (sql, shops) = key_tuples([("b", 2), ("a", 1), ("b", 3), ("b", 2)].into_iter(), "order_no");
        assert_eq!(sql, "(shop_id, order_no) IN ((?,1),(?,2),(?,3))");
        assert_eq!(shops, vec!["a", "b", "b"]);
        assert_eq!(key_tuples(std::iter::empty(), "pack_no").0, "0", "no key, no row");
    }
}
