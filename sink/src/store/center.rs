//! The alert center's reads and its one write (acknowledgements). Each read is bounded: by key
//! (`alert_id`, a shop's orders), by a page (`LIMIT`), or by the 30 days a chart covers, and
//! none runs on the batch path (the center has its own thread).

use chrono::NaiveDate;
use schemas::alert::{AlertKind, Severity};

use super::{IDS_PER_QUERY, Store, StoreError, Timed};
use crate::rows::AlertRow;

/// One acknowledgement (`alert_acks`).
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct AckRow {
    pub alert_id: String,
    pub shop_id: String,
    pub kind: String,
    pub acknowledged_at: u32,
}

/// Order lines of a shop ordered on a JST day, by canonical status.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
pub struct OrdersDay {
    pub shop_id: String,
    pub status: String,
    pub day: String,
    pub n: u64,
}

/// Alerts of a shop and kind opened on JST day `opened`, resolved on `resolved` ("" = open).
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
pub struct AlertDay {
    pub shop_id: String,
    pub kind: String,
    pub opened: String,
    pub resolved: String,
    pub n: u64,
}

/// What `alerts_page` reads besides the state.
#[derive(Debug, Clone, Default)]
pub struct AlertQuery<'a> {
    pub shop: Option<&'a str>,
    pub kind: Option<AlertKind>,
    pub severity: Option<Severity>,
    pub acknowledged: Option<bool>,
}

impl Store {
    /// Every open alert, streamed to `f` (memory never holds them whole).
    pub async fn each_open_alert(&self, mut f: impl FnMut(schemas::alert::Alert)) -> Result<(), StoreError> {
        self.each_open_row(|row| row.to_alert().into_iter().for_each(&mut f)).await
    }

    /// The acknowledgements of the open alerts.
    pub async fn open_acks(&self) -> Result<Vec<AckRow>, StoreError> {
        self.client
            .query(
                "SELECT ?fields FROM alert_acks FINAL \
                 WHERE alert_id IN (SELECT alert_id FROM alerts FINAL WHERE state = 'open')",
            )
            .fetch_all::<AckRow>()
            .timed_by(self.timeout)
            .await
            .map_err(self.err("read acknowledgements"))
    }

    /// The acknowledgements of `ids` (read by key).
    pub async fn acks_of(&self, ids: &[String]) -> Result<Vec<AckRow>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let sql = format!(
                "SELECT ?fields FROM alert_acks FINAL WHERE alert_id IN ({})",
                vec!["?"; chunk.len()].join(",")
            );
            let q = chunk.iter().fold(self.client.query(&sql), |q, id| q.bind(id.as_str()));
            out.extend(
                q.fetch_all::<AckRow>().timed_by(self.timeout).await.map_err(self.err("read acknowledgements"))?,
            );
        }
        Ok(out)
    }

    pub async fn write_ack(&self, ack: &AckRow) -> Result<(), StoreError> {
        self.insert_all("alert_acks", std::slice::from_ref(ack)).await
    }

    /// Order lines ordered since `from` (a JST date), per shop, status and JST day.
    pub async fn orders_per_day(&self, from: NaiveDate) -> Result<Vec<OrdersDay>, StoreError> {
        self.client
            .query(
                "SELECT shop_id, status, toString(toDate(toTimeZone(ordered_at, 'Asia/Tokyo'))) AS day, count() AS n \
                 FROM orders FINAL WHERE ordered_at >= toDateTime(?, 'Asia/Tokyo') GROUP BY shop_id, status, day",
            )
            .bind(format!("{from} 00:00:00"))
            .fetch_all::<OrdersDay>()
            .timed_by(self.timeout)
            .await
            .map_err(self.err("read orders per day"))
    }

    /// Alerts open now or resolved since `from` (a JST date), per shop, kind, opening day and
    /// resolving day: what the alert charts draw.
    pub async fn alert_days(&self, from: NaiveDate) -> Result<Vec<AlertDay>, StoreError> {
        self.client
            .query(
                "SELECT shop_id, kind, toString(toDate(toTimeZone(opened_at, 'Asia/Tokyo'))) AS opened, \
                 if(state = 'resolved', toString(toDate(toTimeZone(updated_at, 'Asia/Tokyo'))), '') AS resolved, count() AS n \
                 FROM alerts FINAL WHERE state = 'open' OR updated_at >= toDateTime(?, 'Asia/Tokyo') \
                 GROUP BY shop_id, kind, opened, resolved",
            )
            .bind(format!("{from} 00:00:00"))
            .fetch_all::<AlertDay>()
            .timed_by(self.timeout)
            .await
            .map_err(self.err("read alerts per day"))
    }

    /// Resolved alerts, newest first: how many match, and `limit` from `offset`.
    pub async fn resolved_alerts(
        &self,
        q: &AlertQuery<'_>,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<AlertRow>), StoreError> {
        let mut cond = vec!["state = 'resolved'".to_string()];
        let mut binds: Vec<String> = Vec::new();
        if let Some(s) = q.shop {
            cond.push("shop_id = ?".into());
            binds.push(s.into());
        }
        if let Some(k) = q.kind {
            cond.push("kind = ?".into());
            binds.push(k.as_str().into());
        }
        if let Some(s) = q.severity {
            cond.push("severity = ?".into());
            binds.push(s.as_str().into());
        }
        if let Some(a) = q.acknowledged {
            cond.push(format!("alert_id {}IN (SELECT alert_id FROM alert_acks)", if a { "" } else { "NOT " }));
        }
        let cond = cond.join(" AND ");
        let bound = |sql: &str| binds.iter().fold(self.client.query(sql), |q, b| q.bind(b.as_str()));
        let total = bound(&format!("SELECT count() FROM alerts FINAL WHERE {cond}"))
            .fetch_one::<u64>()
            .timed_by(self.timeout)
            .await
            .map_err(self.err("count resolved alerts"))?;
        let rows = bound(&format!(
            "SELECT ?fields FROM alerts FINAL WHERE {cond} ORDER BY updated_at DESC, alert_id LIMIT {offset}, {limit}"
        ))
        .fetch_all::<AlertRow>()
        .timed_by(self.timeout)
        .await
        .map_err(self.err("read resolved alerts"))?;
        Ok((total, rows))
    }

    /// The latest write-back command of each of a shop's `orders`.
    pub async fn latest_commands(&self, shop: &str, orders: &[u64]) -> Result<Vec<super::CommandRow>, StoreError> {
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        let list = orders.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        self.client
            .query(&format!(
                "SELECT ?fields FROM commands FINAL WHERE shop_id = ? AND order_no IN ({list}) \
                 ORDER BY updated_at DESC, version DESC LIMIT 1 BY order_no"
            ))
            .bind(shop)
            .fetch_all::<super::CommandRow>()
            .timed_by(self.timeout)
            .await
            .map_err(self.err("read commands"))
    }
}
