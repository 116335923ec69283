//! Buyers' personal data in ClickHouse (`order_contacts`): retention (the daily expiry of the
//! lines `crate::retention` says have expired) and erasure on request (`sink erase`), each
//! recorded without the data itself.
//!
//! Deletes are `ALTER TABLE … DELETE` mutations (ClickHouse 18.16 has no lightweight delete and
//! no TTL); a delete is done when `system.mutations` says so, which [`Store::delete_contacts`]
//! waits for: an erasure reports what is gone, not what was asked.

use std::time::Duration;

use super::{Store, StoreError, Timed, key_tuples};
use crate::retention::{LineVersion, Policy};

/// Keys per `ALTER … DELETE` (its `IN` list stays far under `max_query_size`).
const KEYS_PER_DELETE: usize = 500;

/// A version of a line that still holds personal data, with the line's order date.
#[derive(Debug, Clone, clickhouse::Row, serde::Deserialize)]
struct CandidateRow {
    shop_id: String,
    order_no: u64,
    ordered_at: u32,
    version: u64,
    fetched_at: u32,
    qoo10_status: u8,
    claim_status: u8,
}

/// One row of `erasures`.
#[derive(Debug, Clone, clickhouse::Row, serde::Serialize)]
pub struct ErasureRow {
    pub shop_id: String,
    pub order_no: u64,
    pub requested_by: String,
    /// What the request named: `order`, `buyer_email` or `buyer_tel` (never the value).
    pub request: String,
    pub erased_at: u32,
    pub contact_rows: u64,
    pub messages: u64,
}

impl Store {
    /// The lines whose personal data has expired by `now` (seconds): the versions of every line
    /// still in `order_contacts` and ordered long enough ago to have expired, read as a stream
    /// (memory: one line's versions and the keys found).
    pub async fn expired_lines(&self, policy: &Policy, now: u32) -> Result<Vec<(String, u64)>, StoreError> {
        let before = policy.ordered_before(now);
        let sql = "SELECT shop_id, order_no, ordered_at, version, fetched_at, qoo10_status, claim_status \
                   FROM order_versions WHERE ordered_at < toDateTime(?) AND (shop_id, order_no) IN \
                   (SELECT shop_id, order_no FROM order_contacts WHERE ordered_at < toDateTime(?)) \
                   ORDER BY shop_id, order_no, version";
        let mut cursor = self
            .client
            .query(sql)
            .bind(before)
            .bind(before)
            .fetch::<CandidateRow>()
            .map_err(self.err("read lines to expire"))?;
        let mut expired = Vec::new();
        let mut line: Option<(String, u64, u32)> = None;
        let mut versions: Vec<LineVersion> = Vec::new();
        let mut close = |line: &Option<(String, u64, u32)>, versions: &mut Vec<LineVersion>| {
            if let Some((shop, no, ordered)) = line
                && policy.expired(shop, *ordered, versions, now)
            {
                expired.push((shop.clone(), *no));
            }
            versions.clear();
        };
        while let Some(r) = cursor.next().timed_by(self.timeout).await.map_err(self.err("read lines to expire"))? {
            if line.as_ref().is_none_or(|(s, n, _)| *s != r.shop_id || *n != r.order_no) {
                close(&line, &mut versions);
                line = Some((r.shop_id.clone(), r.order_no, r.ordered_at));
            }
            let v = LineVersion {
                version: r.version,
                fetched_at: r.fetched_at,
                qoo10_status: r.qoo10_status,
                claim_status: r.claim_status,
            };
            versions.push(v);
        }
        close(&line, &mut versions);
        Ok(expired)
    }

    /// Deletes the `order_contacts` rows of `lines` and waits (at most `wait`) until ClickHouse
    /// has applied the deletes; returns how many rows there were.
    pub async fn delete_contacts(&self, lines: &[(String, u64)], wait: Duration) -> Result<u64, StoreError> {
        let mut rows = 0;
        for chunk in lines.chunks(KEYS_PER_DELETE) {
            let (cond, shops) = key_tuples(chunk.iter().map(|(s, n)| (s.as_str(), *n)), "order_no");
            let mut count = self.client.query(&format!("SELECT count() FROM order_contacts WHERE {cond}"));
            for s in &shops {
                count = count.bind(*s);
            }
            rows += count.fetch_one::<u64>().timed_by(self.timeout).await.map_err(self.err("count contacts"))?;
            let mut delete = self.client.query(&format!("ALTER TABLE order_contacts DELETE WHERE {cond}"));
            for s in &shops {
                delete = delete.bind(*s);
            }
            delete.execute().timed_by(self.timeout).await.map_err(self.err("delete contacts"))?;
        }
        if !lines.is_empty() {
            self.mutations_done("order_contacts", wait).await?;
        }
        Ok(rows)
    }

    /// Waits until `table` has no mutation left to apply (at most `wait`).
    async fn mutations_done(&self, table: &str, wait: Duration) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = self
                .client
                .query("SELECT count() FROM system.mutations WHERE database = ? AND table = ? AND is_done = 0")
                .bind(self.database.as_str())
                .bind(table)
                .fetch_one::<u64>()
                .timed_by(self.timeout)
                .await
                .map_err(self.err("read system.mutations"))?;
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The orders of `shop` whose buyer has this e-mail address, or whose buyer or receiver has
    /// this telephone or mobile number (digits compared: `090-1234-5678` = `09012345678`).
    pub async fn orders_of_buyer(
        &self,
        shop: &str,
        email: Option<&str>,
        tel: Option<&str>,
    ) -> Result<Vec<u64>, StoreError> {
        let digits = tel.map(|t| t.chars().filter(char::is_ascii_digit).collect::<String>()).unwrap_or_default();
        let sql = "SELECT DISTINCT order_no FROM order_contacts WHERE shop_id = ? AND ( \
                   (? != '' AND lower(buyer_email) = lower(?)) OR (? != '' AND ( \
                   replaceRegexpAll(buyer_tel, '[^0-9]', '') = ? OR replaceRegexpAll(buyer_mobile, '[^0-9]', '') = ? OR \
                   replaceRegexpAll(receiver_tel, '[^0-9]', '') = ? OR replaceRegexpAll(receiver_mobile, '[^0-9]', '') = ?))) \
                   ORDER BY order_no";
        let email = email.unwrap_or("");
        let q = self.client.query(sql).bind(shop).bind(email).bind(email).bind(digits.as_str());
        let q = (0..4).fold(q, |q, _| q.bind(digits.as_str()));
        q.fetch_all::<u64>().timed_by(self.timeout).await.map_err(self.err("find the buyer's orders"))
    }

    /// Records erasures (no personal data: who, when, which order, how much).
    pub async fn record_erasures(&self, rows: &[ErasureRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self.client.insert::<ErasureRow>("erasures").await.map_err(self.err("insert erasures"))?;
        for r in rows {
            insert.write(r).await.map_err(self.err("insert erasures"))?;
        }
        insert.end().timed_by(self.timeout).await.map_err(self.err("insert erasures"))
    }
}
