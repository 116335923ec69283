//! `sink erase`: a buyer's or an order's personal data removed everywhere the pipeline keeps it,
//! at once, on request (個人情報保護法: a request to stop using or delete personal data).
//!
//! Where it lives (docs/security.md, "Personal data"): ClickHouse `order_contacts`, and the
//! messages of `QOO10_RAW` (Qoo10's rows as received), `ORDERS` (canonical orders) and `DLQ`
//! (copies of what a stage refused) on the shop's subjects. The rows are deleted (a mutation,
//! waited for) and the messages deleted with erase (nats-server overwrites them). Which
//! messages: those of the orders concerned (by order number), and for a request by e-mail or
//! telephone also any message of the shop holding that text (an order whose contacts were already
//! gone from ClickHouse). Each run is recorded in `erasures` (who, when, which order, how much;
//! never the data); a second run finds nothing and removes nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use schemas::subjects::{Namespace, Stage, Stream};

use crate::store::{ErasureRow, Store};

/// What a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub shop: String,
    pub order: Option<u64>,
    pub buyer_email: Option<String>,
    pub buyer_tel: Option<String>,
    /// Who asked (recorded).
    pub by: String,
}

impl Request {
    /// What is recorded of the request: its kind, never its value.
    fn kind(&self) -> &'static str {
        match (self.order, &self.buyer_email, &self.buyer_tel) {
            (Some(_), _, _) => "order",
            (None, Some(_), _) => "buyer_email",
            _ => "buyer_tel",
        }
    }

    /// The texts a message must not hold: the e-mail address, the telephone number as given.
    fn needles(&self) -> Vec<String> {
        [&self.buyer_email, &self.buyer_tel].into_iter().flatten().filter(|t| !t.trim().is_empty()).cloned().collect()
    }
}

/// What one erasure removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub orders: BTreeSet<u64>,
    pub contact_rows: u64,
    /// (stream, messages deleted).
    pub messages: Vec<(String, u64)>,
}

/// Does a message's payload concern the request: one of `orders` (by its order number, as a raw
/// row, a canonical order or a dead letter of either carries it), or one of `needles` in it?
pub fn concerns(payload: &[u8], orders: &BTreeSet<u64>, needles: &[String]) -> bool {
    if needles.iter().any(|n| contains(payload, n.as_bytes())) {
        return true;
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else { return false };
    let number = |x: &serde_json::Value| x.as_u64().or_else(|| x.as_str().and_then(|t| t.trim().parse().ok()));
    let row = &v["row"];
    let found = [&v["order_no"], &row["orderNo"], &row["OrderNo"], &row["order_no"]].into_iter().find_map(number);
    found.is_some_and(|n| orders.contains(&n))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// Runs the erasure: ClickHouse, then the streams; records it; returns what was removed.
pub async fn erase(store: &Store, js: &jetstream::Context, ns: &Namespace, r: &Request) -> anyhow::Result<Removed> {
    let mut removed = Removed { orders: r.order.into_iter().collect(), ..Removed::default() };
    if r.buyer_email.is_some() || r.buyer_tel.is_some() {
        let found = store.orders_of_buyer(&r.shop, r.buyer_email.as_deref(), r.buyer_tel.as_deref()).await?;
        removed.orders.extend(found);
    }
    let keys: Vec<(String, u64)> = removed.orders.iter().map(|n| (r.shop.clone(), *n)).collect();
    removed.contact_rows = store.delete_contacts(&keys, Duration::from_secs(120)).await?;
    let needles = r.needles();
    let subjects = [
        (Stream::Raw, vec![ns.raw(&r.shop)]),
        (Stream::Orders, vec![ns.orders(&r.shop)]),
        (Stream::Dlq, [Stage::Fetcher, Stage::Normalizer, Stage::Sink].iter().map(|s| ns.dlq(*s, &r.shop)).collect()),
    ];
    for (stream, filters) in subjects {
        let mut n = 0;
        for filter in filters {
            n += erase_messages(js, &ns.stream(stream), &filter, &removed.orders, &needles).await?;
        }
        removed.messages.push((stream.base().to_owned(), n));
    }
    let messages = removed.messages.iter().map(|(_, n)| n).sum();
    let now = u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let row = |order_no: u64| ErasureRow {
        shop_id: r.shop.clone(),
        order_no,
        requested_by: r.by.clone(),
        request: r.kind().to_owned(),
        erased_at: now,
        contact_rows: removed.contact_rows,
        messages,
    };
    let rows: Vec<ErasureRow> =
        if removed.orders.is_empty() { vec![row(0)] } else { removed.orders.iter().map(|n| row(*n)).collect() };
    store.record_erasures(&rows).await?;
    Ok(removed)
}

/// Deletes (with erase) every message of `stream` on `filter` that [`concerns`] the request;
/// returns how many. Reads the subject's messages once, with an ordered consumer.
async fn erase_messages(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
    orders: &BTreeSet<u64>,
    needles: &[String],
) -> anyhow::Result<u64> {
    let stream = js.get_stream(stream).await?;
    let config = jetstream::consumer::pull::OrderedConfig { filter_subject: filter.to_owned(), ..Default::default() };
    let consumer = stream.create_consumer(config).await?;
    let pending = consumer.cached_info().num_pending;
    if pending == 0 {
        return Ok(0);
    }
    let mut messages = consumer.messages().await?;
    let (mut read, mut deleted) = (0u64, 0u64);
    while read < pending {
        let Ok(Some(next)) = tokio::time::timeout(Duration::from_secs(10), messages.next()).await else { break };
        let msg = next?;
        read += 1;
        if concerns(&msg.payload, orders, needles) {
            let seq = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
            if stream.delete_message(seq).await? {
                deleted += 1;
            }
        }
        let left = msg.info().map(|i| i.pending).unwrap_or(0);
        if left == 0 {
            break;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_concerns_its_order_or_the_buyers_address() {
        let orders: BTreeSet<u64> = [1_010_000_001].into_iter().collect();
        let raw = r#"{"shop":"s","row":{"orderNo":"1010000001","buyer":"見本 花子"}}"#.as_bytes();
        let canonical = br#"{"order_no":1010000001,"personal":{"buyer_email":"x@example.jp"}}"#;
        let v3 = br#"{"row":{"OrderNo":1010000001}}"#;
        let other = br#"{"order_no":1010000002,"personal":{"buyer_email":"Hanako@Example.jp"}}"#;
        for p in [raw, &canonical[..], &v3[..]] {
            assert!(concerns(p, &orders, &[]), "{}", String::from_utf8_lossy(p));
        }
        assert!(!concerns(other, &orders, &[]));
        assert!(concerns(other, &BTreeSet::new(), &["hanako@example.jp".into()]), "the address, any case");
        assert!(!concerns(b"\xff\xfe not json", &orders, &[]));
        assert!(concerns(b"tel 090-1234-5678 in garbage", &orders, &["090-1234-5678".into()]));
    }

    #[test]
    fn the_record_names_the_kind_of_request_never_its_value() {
        let r = Request {
            shop: "s".into(),
            order: None,
            buyer_email: Some("a@b".into()),
            buyer_tel: None,
            by: "ops".into(),
        };
        assert_eq!(r.kind(), "buyer_email");
        assert_eq!(Request { order: Some(1), ..r.clone() }.kind(), "order");
        assert_eq!(Request { buyer_email: None, buyer_tel: Some("0".into()), ..r }.kind(), "buyer_tel");
    }
}
