use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use axum::response::IntoResponse;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use chrono::Utc;
use clap::Parser;
use runtime::nats::{consumer_drained, consumer_idle, durable_consumer, fetch_batch, publish_all};
use runtime::telemetry::Metrics;
use schemas::alert::{Alert, AlertState};
use schemas::config::PipelineConfig;
use schemas::edit::OmsEdit;
use schemas::order::CanonicalOrder;
use schemas::poll::PollSummary;
use schemas::raw::RowKind;
use schemas::status::StatusMap;
use schemas::subjects::{self, Namespace};
use sink::alerts::{self, Context, Thresholds, Verdict};
use sink::edits;
use sink::rows::{AlertRow, ContactRow, OrderRow, merge, rechain, same_content};
use sink::store::{ExpectationRow, PackLine, Store};

/// Writes canonical orders (ORDERS) to ClickHouse in batches and raises the alerts they call
/// for; acknowledges a message only after ClickHouse confirmed every insert it caused and every
/// alert it raised was published.
#[derive(Debug, Parser)]
#[command(name = "sink", version, about)]
struct Args {
    /// Configuration file (default: $PIPELINE_CONFIG, else ./pipeline.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
    /// Exit 0 once nothing is pending and everything written is durable.
    #[arg(long)]
    until_idle: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Prints alerts as a table (newest first): state, kind, shop, order, since (JST), what to do.
    Alerts {
        #[arg(long)]
        shop: Option<String>,
        /// Only open alerts.
        #[arg(long)]
        open: bool,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Lists dead letters of a stage and, unless --dry-run, sends each back to the subject it
    /// came from (payload and original headers as they were) and removes it from the DLQ. Run it
    /// after fixing what made the stage refuse them; what is still refused comes back to the DLQ.
    ReplayDlq {
        /// `normalizer` or `sink`.
        #[arg(long)]
        stage: String,
        #[arg(long)]
        shop: Option<String>,
        #[arg(long)]
        dry_run: bool,
    },
    /// Prints the SQL the sink runs at start (the migrations), without connecting anywhere: to
    /// review it, or for an administrator to create the tables ahead.
    Schema,
    /// Deletes buyer and recipient personal data (order_contacts) of orders placed more than
    /// DAYS days ago. Run it daily (cron); it is an ALTER TABLE … DELETE mutation, which works on
    /// ClickHouse 18.16 (no TTL there) and current releases, and completes in the background.
    Retention {
        /// Keep personal data of orders placed within this many days.
        #[arg(long)]
        contacts_days: u32,
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    runtime::init_tracing();
    // reqwest (webhook) is built without a default TLS provider (see Cargo.toml); use ring.
    runtime::install_crypto_provider();
    let rt = runtime::batch_stage_runtime();
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sink: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Open alerts by (kind, shop, subject): the engine's state, loaded from ClickHouse at start.
use sink::open::OpenAlerts;

/// Pending OMS edits by (shop, edit key), with the version they were stored with.
type Expectations = HashMap<(String, String), (OmsEdit, u64)>;

struct Sink {
    js: jetstream::Context,
    ns: Namespace,
    store: Store,
    statuses: StatusMap,
    thresholds: Thresholds,
    open: OpenAlerts,
    rows_written: u64,
    dead_letters: u64,
    alerts_opened: u64,
    alerts_resolved: u64,
    /// Summaries of polls not yet complete, with their messages (acknowledged once evaluated).
    polls: HashMap<String, (Vec<jetstream::Message>, Vec<PollSummary>)>,
    expectations: Expectations,
    /// Expectations met by the batch being processed (stored with it).
    met_expectations: Vec<ExpectationRow>,
    webhook: Option<sink::webhook::Webhook>,
    metrics: std::sync::Arc<Metrics>,
    /// Lines and carts already stored: the lookups for others are skipped.
    known: sink::known::Known,
}

async fn run(args: Args) -> anyhow::Result<()> {
    runtime::install_shutdown_handler();
    if let Some(Command::Schema) = args.command {
        print!("{}", schemas::sql::schema_script());
        return Ok(());
    }
    let config = PipelineConfig::load(args.config.as_deref())?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    if let Some(Command::ReplayDlq { stage, shop, dry_run }) = &args.command {
        return replay_dlq(&config, stage, shop.as_deref(), *dry_run).await;
    }
    if let Some(Command::Alerts { shop, open, limit }) = &args.command {
        let store = Store::new(&config.clickhouse);
        store.migrate().await.context("ClickHouse migrations")?;
        let rows = store.list_alerts(shop.as_deref(), *open, *limit).await?;
        print!("{}", alerts_table(&rows));
        return Ok(());
    }
    if let Some(Command::Retention { contacts_days, dry_run }) = args.command {
        let store = Store::new(&config.clickhouse);
        store.migrate().await.context("ClickHouse migrations")?;
        let n = store.expire_contacts(contacts_days, dry_run).await?;
        if dry_run {
            println!("order_contacts: {n} rows of orders placed more than {contacts_days} days ago would be deleted");
        } else {
            println!(
                "order_contacts: deleting {n} rows of orders placed more than {contacts_days} days ago (mutation submitted)"
            );
        }
        return Ok(());
    }
    let ns = Namespace::from_config(&config.nats);
    let store = Store::new(&config.clickhouse);
    let (client, js) = runtime::nats::connect_jetstream(&config.nats, "sink").await?;
    let metrics = Metrics::new();
    // Not ready until the start-up reads below are done, whatever ClickHouse says meanwhile.
    let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ready: runtime::telemetry::ReadyCheck = {
        let (client, store, started) = (client.clone(), store.clone(), started.clone());
        std::sync::Arc::new(move || {
            let (client, store, started) = (client.clone(), store.clone(), started.clone());
            Box::pin(async move {
                started.load(std::sync::atomic::Ordering::SeqCst)
                    && client.connection_state() == async_nats::connection::State::Connected
                    && store.ping().await.is_ok()
            })
        })
    };
    let page = {
        let (store, js, ns) = (store.clone(), js.clone(), ns.clone());
        let configured: Vec<String> = config.shops.iter().map(|s| s.id.clone()).collect();
        axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let (store, js, ns, configured) = (store.clone(), js.clone(), ns.clone(), configured.clone());
                async move {
                    match status_page(&store, &js, &ns, &configured).await {
                        Ok(html) => axum::response::Html(html).into_response(),
                        Err(e) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("status unavailable: {e:#}"))
                            .into_response(),
                    }
                }
            }),
        )
    };
    runtime::telemetry::serve_with(&config.sink.http_listen, metrics.clone(), ready, page)
        .await
        .with_context(|| format!("sink.http_listen {:?}", config.sink.http_listen))?;
    // A sink started while ClickHouse is down waits for it (not ready meanwhile) instead of
    // exiting; what waiting cannot cure (a wrong password) still fails at once.
    let Some(applied) = at_start("migrations", || store.migrate()).await? else { return Ok(()) };
    let mut consumer = durable_consumer(
        &js,
        &ns.stream(subjects::STREAM_ORDERS),
        subjects::CONSUMER_SINK,
        ns.stream_subjects(subjects::STREAM_ORDERS),
        Duration::from_secs(60),
    )
    .await?;
    // Alerts raised elsewhere (the fetcher's credentials_invalid and credentials_expiring) are
    // recorded in `alerts` too: one consumer per kind (nats-server 2.9 takes one filter subject).
    let mut external = Vec::new();
    for (kind, durable) in EXTERNAL_ALERTS {
        let filter = ns.alerts(kind, "*");
        external.push(
            durable_consumer(&js, &ns.stream(subjects::STREAM_ALERTS), durable, filter, Duration::from_secs(60))
                .await?,
        );
    }
    // Poll summaries: which orders a complete poll saw (order_vanished). A poll's summaries are
    // held unacknowledged until its last one arrives, so ack_wait must cover a whole poll.
    let mut polls = durable_consumer(
        &js,
        &ns.stream(subjects::STREAM_POLLS),
        "sink-polls",
        ns.stream_subjects(subjects::STREAM_POLLS),
        Duration::from_secs(600),
    )
    .await?;
    let Some(open) = at_start("read open alerts", || store.load_open_alerts()).await? else { return Ok(()) };
    let Some(pending) = at_start("read expectations", || store.pending_expectations()).await? else {
        return Ok(());
    };
    let expectations: Expectations = pending
        .into_iter()
        .filter_map(|r| {
            serde_json::from_str::<OmsEdit>(&r.edit)
                .ok()
                .map(|e| ((r.shop_id.clone(), r.edit_key.clone()), (e, r.version)))
        })
        .collect();
    // OMS edits that Qoo10 must mirror.
    let mut edits_consumer = durable_consumer(
        &js,
        &ns.stream(subjects::STREAM_OMS_EDITS),
        "sink-edits",
        ns.stream_subjects(subjects::STREAM_OMS_EDITS),
        Duration::from_secs(60),
    )
    .await?;
    let Some(known) = at_start("read stored lines", || store.load_known()).await? else { return Ok(()) };
    started.store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::info!(database = %config.clickhouse.database, migrations_applied = ?applied, open_alerts = open.len(), until_idle = args.until_idle, "sink started");

    let a = &config.alerts;
    let thresholds = Thresholds {
        ship_date_missing_after_business_days: a.ship_date_missing_after_business_days,
        overdue_grace_business_days: a.overdue_grace_business_days,
        calendar: schemas::calendar::BusinessDays { closed: a.holidays.clone() },
    };
    let mut sink = Sink {
        js,
        ns,
        store,
        statuses: config.normalizer.status_map(),
        thresholds,
        open,
        rows_written: 0,
        dead_letters: 0,
        alerts_opened: 0,
        alerts_resolved: 0,
        polls: HashMap::new(),
        expectations,
        met_expectations: Vec::new(),
        webhook: config.alerts.webhook().cloned().map(|url| sink::webhook::Webhook::start(url, 10_000)),
        metrics,
        known,
    };
    let shutdown = runtime::stopped();
    tokio::pin!(shutdown);
    let mut last_sweep = Instant::now() - a.sweep_interval;
    let mut last_side = Instant::now() - SIDE_INTERVAL;
    loop {
        if runtime::shutting_down() {
            break;
        }
        if last_sweep.elapsed() >= a.sweep_interval {
            if let Err(e) = sink.sweep().await {
                if runtime::shutting_down() {
                    break;
                }
                return Err(e);
            }
            last_sweep = Instant::now();
        }
        // One fetch waits up to flush_interval: a batch is written at least that often.
        let batch = tokio::select! {
            b = fetch_batch(&consumer, config.sink.batch_size, config.sink.flush_interval) => b,
            _ = &mut shutdown => break,
        };
        let full = batch.len() >= config.sink.batch_size;
        if !batch.is_empty()
            && let Err(e) = sink.process(batch).await
        {
            if runtime::shutting_down() {
                tracing::warn!(error = %format!("{e:#}"), "stopped during a ClickHouse failure; JetStream will redeliver the batch");
                break;
            }
            return Err(e);
        }
        // The low-volume consumers (the fetcher's alerts, poll summaries, OMS edits) and the lag
        // gauge: after every batch once caught up, at most every SIDE_INTERVAL while working
        // through a backlog. Each empty fetch costs a round trip that nats-server 2.9 holds for
        // its expiry (about 50 ms): polling all three after every full batch had taken 155 ms
        // of a 345 ms cycle.
        if full && last_side.elapsed() < SIDE_INTERVAL {
            continue;
        }
        last_side = Instant::now();
        if let Ok(info) = consumer.info().await {
            sink.metrics.set(
                "consumer_pending",
                "Messages not yet delivered to the consumer (lag).",
                &[("consumer", "sink")],
                info.num_pending as f64,
            );
        }
        let mut recorded = 0;
        for consumer in &external {
            recorded += sink.record_external(consumer).await?;
        }
        let summaries = sink.record_polls(&polls).await?;
        let edited = sink.record_edits(&edits_consumer).await?;
        if args.until_idle
            && recorded == 0
            && summaries == 0
            && edited == 0
            && consumer_idle(&mut edits_consumer).await?
            && consumer_idle(&mut consumer).await?
            && all_idle(&mut external).await?
            && consumer_drained(&mut polls).await?
        {
            // Polls still incomplete will never complete in this run (their fetch failed or is
            // still going): hand them back to JetStream for the next run, which may see their end
            // or a newer poll that abandons them.
            for (_, (msgs, _)) in sink.polls.drain() {
                for m in msgs {
                    let _ = m.ack_with(AckKind::Nak(None)).await;
                }
            }
            sink.sweep().await?;
            break;
        }
    }
    if let Some(w) = sink.webhook.take() {
        w.drain(Duration::from_secs(10)).await;
    }
    tracing::info!(
        rows_written = sink.rows_written,
        dead_letters = sink.dead_letters,
        alerts_opened = sink.alerts_opened,
        alerts_resolved = sink.alerts_resolved,
        "sink stopped"
    );
    Ok(())
}

/// One version of a line: what was stored before it (if anything), and what it became.
type Change = (Option<Arc<OrderRow>>, Arc<OrderRow>);

/// A canonical order as the sink keeps it while the batch is written: its rows, and the two
/// things of the order the rows do not carry.
struct Parsed {
    row: OrderRow,
    contact: Option<ContactRow>,
    kind: RowKind,
    cart_claims: Vec<u64>,
}

impl Parsed {
    fn of(mut o: CanonicalOrder) -> Result<Parsed, sink::rows::RowError> {
        let (kind, cart_claims) = (o.source.kind, std::mem::take(&mut o.cart_claims));
        let (row, contact) = sink::rows::rows(o)?;
        Ok(Parsed { row, contact, kind, cart_claims })
    }
}

impl Sink {
    async fn process(&mut self, batch: Vec<jetstream::Message>) -> anyhow::Result<()> {
        // Each message is turned into its rows at once and the parsed order let go: the batch is
        // held as rows (one copy each, shared by `orders`, `latest` and `changes`), not as JSON
        // plus orders plus rows.
        let mut good: Vec<(jetstream::Message, Parsed)> = Vec::with_capacity(batch.len());
        let mut dead: Vec<(jetstream::Message, String, String)> = Vec::new();
        for msg in batch {
            if msg.info().is_ok_and(|i| i.delivered > 1) {
                self.metrics.inc(
                    "consumer_redeliveries_total",
                    "Messages delivered more than once.",
                    &[("consumer", "sink")],
                );
            }
            let shop = Namespace::shop_of(&msg.subject).to_owned();
            match sink::input::order(&msg.payload, &shop).and_then(|o| Parsed::of(o).map_err(|e| e.to_string())) {
                Ok(p) => good.push((msg, p)),
                Err(reason) => dead.push((msg, shop, reason)),
            }
        }
        // Only a line that may be stored already, or that comes twice in this batch, can turn
        // out to conflict (and be dead-lettered with its original bytes); every other message
        // needs nothing more than its acknowledgement.
        let maybe_stored: Vec<bool> =
            good.iter().map(|(_, p)| self.known.may_have_line(&p.row.shop_id, p.row.order_no)).collect();
        let mut seen: HashMap<(&str, u64), usize> = HashMap::with_capacity(good.len());
        for (_, p) in &good {
            *seen.entry((p.row.shop_id.as_str(), p.row.order_no)).or_default() += 1;
        }
        let may_conflict: Vec<bool> = good
            .iter()
            .zip(&maybe_stored)
            .map(|((_, p), stored)| *stored || seen[&(p.row.shop_id.as_str(), p.row.order_no)] > 1)
            .collect();
        drop(seen);
        // Rows, merged in stream order with what is stored (or earlier in this batch).
        let keys: Vec<(String, u64)> = good
            .iter()
            .zip(&maybe_stored)
            .filter(|(_, stored)| **stored)
            .map(|((_, p), _)| (p.row.shop_id.clone(), p.row.order_no))
            .collect();
        let mut good: Vec<(jetstream::Message, Parsed)> =
            good.into_iter().zip(may_conflict).map(|((m, p), keep)| (if keep { m } else { ack_only(m) }, p)).collect();

        let held: Vec<&jetstream::Message> = good.iter().map(|(m, _)| m).collect();
        let mut latest: HashMap<(String, u64), Arc<OrderRow>> = if keys.is_empty() {
            HashMap::new()
        } else {
            let stored = retry_forever("read latest orders", &held, || self.store.latest(&keys)).await?;
            stored.into_iter().map(|(k, r)| (k, Arc::new(r))).collect()
        };
        let mut orders: Vec<Arc<OrderRow>> = Vec::with_capacity(good.len());
        let mut changes: Vec<Change> = Vec::with_capacity(good.len());
        let mut contacts: Vec<ContactRow> = Vec::new();
        let mut written: Vec<jetstream::Message> = Vec::with_capacity(good.len());
        // Versions of one line in version order, whatever order JetStream delivered them in.
        good.sort_by_key(|(_, p)| p.row.version);
        // Which other lines of a cart the same poll returned with a claim (claim rows only).
        let cart_claims: HashMap<(String, u64), Vec<u64>> = good
            .iter_mut()
            .filter(|(_, p)| !p.cart_claims.is_empty())
            .map(|(_, p)| ((p.row.shop_id.clone(), p.row.order_no), std::mem::take(&mut p.cart_claims)))
            .collect();
        let mut late: Vec<OrderRow> = Vec::new();
        for (msg, Parsed { row, contact, kind, .. }) in good {
            let key = (row.shop_id.clone(), row.order_no);
            let prev = latest.get(&key).cloned();
            if prev.as_ref().is_some_and(|s| s.version > row.version) {
                // Older than what is stored (redelivered after newer ones): folded into the
                // line's history below.
                late.push(row);
                contacts.extend(contact);
                written.push(ack_only(msg));
                continue;
            }
            if let Some(stored) = prev.as_ref().filter(|s| s.version == row.version)
                && !same_content(stored, &row)
            {
                let reason = format!(
                    "conflicting content: order {} version {} is already stored with different content; the first stands",
                    row.order_no, row.version
                );
                dead.push((msg, row.shop_id, reason));
                continue;
            }
            let merged = Arc::new(merge(prev.as_deref(), row, kind, &self.statuses));
            // A late redelivery of older data changes nothing and raises nothing.
            if prev.as_ref().is_none_or(|s| s.version < merged.version) {
                latest.insert(key, Arc::clone(&merged));
                changes.push((prev, Arc::clone(&merged)));
            }
            orders.push(merged);
            contacts.extend(contact);
            written.push(ack_only(msg));
        }

        let held: Vec<&jetstream::Message> = written.iter().collect();
        if !late.is_empty() {
            self.fold_in_late(late, &held, &mut orders, &mut changes, &mut latest).await?;
        }
        let transitions = self.evaluate(&changes, &latest, &cart_claims, &held).await?;
        // What the rows cause is made durable before the rows: a crash in between redelivers the
        // batch, whose rows are then still new and evaluated again (the alerts already open stay
        // open once). Rows first would make the redelivery look old, and its alerts be lost.
        self.commit_alerts(transitions, &held).await?;
        let met = std::mem::take(&mut self.met_expectations);
        retry_forever("insert expectations", &held, || self.store.write_expectations(&met)).await?;
        if !orders.is_empty() || !contacts.is_empty() {
            let started = std::time::Instant::now();
            retry_forever("insert", &held, || self.store.write(&orders, &contacts)).await?;
            for o in &orders {
                self.known.add(&o.shop_id, o.order_no, o.pack_no);
            }
            let m = &self.metrics;
            m.observe(
                "clickhouse_insert_seconds",
                "Time to write one batch (all tables), retries included.",
                &[],
                started.elapsed().as_secs_f64(),
            );
            m.inc("clickhouse_batches_total", "Batches written.", &[]);
            for table in ["orders", "order_versions"] {
                m.add(
                    "clickhouse_insert_rows_total",
                    "Rows inserted, by table.",
                    &[("table", table)],
                    orders.len() as f64,
                );
            }
            m.add(
                "clickhouse_insert_rows_total",
                "Rows inserted, by table.",
                &[("table", "order_contacts")],
                contacts.len() as f64,
            );
            let now = Utc::now().timestamp_micros();
            m.observe_all(
                "end_to_end_latency_seconds",
                "From the QAPI response (fetched_at) to ClickHouse confirming the row.",
                &[],
                orders.iter().map(|o| (now - i64::try_from(o.version).unwrap_or(now)).max(0) as f64 / 1e6),
            );
        }
        for msg in &written {
            runtime::nats::ack(msg).await;
        }
        self.rows_written += orders.len() as u64;

        self.dead_letters(dead.iter().map(|(msg, shop, reason)| (msg, shop.as_str(), reason.as_str()))).await;
        Ok(())
    }

    /// Sends `msg` to `dlq.sink.<shop>` with `reason` (see [`Sink::dead_letters`]).
    async fn dead_letter(&mut self, msg: &jetstream::Message, shop: &str, reason: &str) {
        self.dead_letters([(msg, shop, reason)]).await;
    }

    /// Sends each message to `dlq.sink.<shop>` with its reason, their publish acknowledgements
    /// pipelined (a batch of bad input costs about one round trip, not one per message); a
    /// message is acknowledged only once JetStream has its dead letter, otherwise handed back
    /// (NAK) so it is neither lost nor processed as valid.
    async fn dead_letters<'a>(&mut self, dead: impl IntoIterator<Item = (&'a jetstream::Message, &'a str, &'a str)>) {
        let dead: Vec<_> = dead.into_iter().collect();
        let outgoing = dead.iter().map(|&(msg, shop, reason)| {
            tracing::warn!(shop = %shop, reason = %reason, "dead letter");
            runtime::nats::dead_letter(&self.ns, subjects::STAGE_SINK, shop, msg, reason)
        });
        let stored = publish_all(&self.js, outgoing).await;
        for ((msg, _, reason), stored) in dead.into_iter().zip(stored) {
            if stored.is_err() {
                let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                continue;
            }
            self.dead_letters += 1;
            self.metrics.inc(
                "dead_letters_total",
                "Messages sent to the DLQ, by stage and reason.",
                &[("stage", "sink"), ("reason", runtime::nats::dead_letter_reason_kind(reason))],
            );
            runtime::nats::ack(msg).await;
        }
    }

    /// Versions that arrived after newer ones of the same line: each line's history is rebuilt in
    /// version order (see [`rechain`]) and what changed is written again, with the same versions.
    /// The result is what in-order delivery would have stored.
    async fn fold_in_late(
        &mut self,
        late: Vec<OrderRow>,
        held: &[&jetstream::Message],
        orders: &mut Vec<Arc<OrderRow>>,
        changes: &mut Vec<Change>,
        latest: &mut HashMap<(String, u64), Arc<OrderRow>>,
    ) -> anyhow::Result<()> {
        let keys: Vec<(String, u64)> = late.iter().map(|r| (r.shop_id.clone(), r.order_no)).collect();
        let mut history = retry_forever("read order history", held, || self.store.history(&keys)).await?;
        let mut by_line: HashMap<(String, u64), Vec<OrderRow>> = HashMap::new();
        for row in late {
            by_line.entry((row.shop_id.clone(), row.order_no)).or_default().push(row);
        }
        for (key, rows) in by_line {
            let same_line = |o: &OrderRow| o.shop_id == key.0 && o.order_no == key.1;
            let stored = history.remove(&key).unwrap_or_default();
            let mut versions: std::collections::BTreeMap<u64, OrderRow> =
                stored.iter().map(|r| (r.version, r.clone())).collect();
            for o in orders.iter().filter(|o| same_line(o)) {
                versions.insert(o.version, OrderRow::clone(o));
            }
            // A version already in the history may still be missing from what was built on it
            // (a crash between the two tables' inserts): the chain is rebuilt either way, and
            // only what differs from the stored history is written.
            for r in rows {
                versions.entry(r.version).or_insert(r);
            }
            let chain = rechain(versions.into_values().collect(), &self.statuses);
            if chain.iter().all(|r| stored.contains(r)) {
                continue; // a redelivery: the history already is what in-order delivery gives
            }
            self.metrics.inc("late_versions_total", "Versions that arrived after newer ones, folded in.", &[]);
            orders.retain(|o| !same_line(o));
            orders.extend(chain.iter().filter(|r| !stored.contains(r)).cloned().map(Arc::new));
            // The alerts are those of in-order delivery: every step of the rebuilt chain from the
            // first version the stored history lacks is evaluated, so a late first version still
            // opens what a first version opens (and the next step resolves it), instead of only
            // the chain's end being compared with what was stored.
            changes.retain(|(_, c)| !same_line(c));
            let first_new = chain.iter().position(|r| !stored.contains(r)).unwrap_or(chain.len());
            let mut before = first_new.checked_sub(1).map(|i| Arc::new(chain[i].clone()));
            for r in &chain[first_new..] {
                let r = Arc::new(r.clone());
                changes.push((before.take(), Arc::clone(&r)));
                before = Some(r);
            }
            // The last step's row is the chain's end: the line's latest state.
            latest.insert(key, before.expect("the chain holds the late version"));
        }
        Ok(())
    }

    /// The alert transitions these changes cause (not yet published or stored).
    async fn evaluate(
        &mut self,
        changes: &[Change],
        latest: &HashMap<(String, u64), Arc<OrderRow>>,
        cart_claims: &HashMap<(String, u64), Vec<u64>>,
        held: &[&jetstream::Message],
    ) -> anyhow::Result<Vec<Alert>> {
        // Cart context, read only for new lines and lines being cancelled (rare at steady state).
        let packs: Vec<(String, u64)> = changes
            .iter()
            .filter(|(prev, row)| prev.is_none() || row.claim_status != 0)
            .filter(|(_, row)| self.known.may_have_pack(&row.shop_id, row.pack_no))
            .map(|(_, row)| (row.shop_id.clone(), row.pack_no))
            .collect();
        let lines: Vec<PackLine> = if packs.is_empty() {
            Vec::new()
        } else {
            retry_forever("read cart lines", held, || self.store.pack_lines(&packs)).await?
        };
        let mut in_batch: HashMap<(&str, u64), Vec<&OrderRow>> = HashMap::new();
        for row in latest.values() {
            in_batch.entry((row.shop_id.as_str(), row.pack_no)).or_default().push(&**row);
        }
        let now = Utc::now();
        let today_jst = schemas::time::today_jst(now);
        let mut transitions = Vec::new();
        for (prev, row) in changes {
            // A sibling with a claim in the same poll is not "the rest of the cart", whether or
            // not its claim has been processed yet.
            let claimed = cart_claims.get(&(row.shop_id.clone(), row.order_no));
            let claimed_too = |order_no: u64| claimed.is_some_and(|c| c.contains(&order_no));
            let others = lines
                .iter()
                .filter(|l| l.shop_id == row.shop_id && l.pack_no == row.pack_no && l.order_no != row.order_no);
            let mut active_sibling = false;
            for l in others {
                let claim = latest.get(&(l.shop_id.clone(), l.order_no)).map_or(l.claim_status, |r| r.claim_status);
                active_sibling |= claim == 0 && !claimed_too(l.order_no);
            }
            // Siblings first seen in this very batch are not stored yet: without them, the
            // verdict would depend on where JetStream happened to cut the batches.
            active_sibling |= in_batch.get(&(row.shop_id.as_str(), row.pack_no)).is_some_and(|rows| {
                rows.iter().any(|l| {
                    l.order_no != row.order_no
                        && l.claim_status == 0
                        && !claimed_too(l.order_no)
                        && !lines.iter().any(|s| s.shop_id == l.shop_id && s.order_no == l.order_no)
                })
            });
            let ctx = Context { now, today_jst, pack_has_active_sibling: active_sibling };
            let mut verdicts = alerts::evaluate(prev.as_deref(), row, &ctx, &self.thresholds);
            let (resolved, met) = self.satisfy_edits(row, &mut verdicts, now);
            transitions.extend(resolved);
            self.met_expectations.extend(met);
            transitions.extend(self.transitions(verdicts, row, now));
            // A shipped line settles its cart: a removed sibling can no longer be mirrored.
            if row.qoo10_status >= 4 {
                let removed: Vec<(String, String, String)> = self
                    .open
                    .of("item_removed", &row.shop_id)
                    .into_iter()
                    .filter(|(_, pack_no)| *pack_no == row.pack_no)
                    .map(|(k, _)| k)
                    .collect();
                for key in removed {
                    if let Some(open) = self.open.remove(&key) {
                        transitions.push(alerts::resolve(&open, row.version, now));
                    }
                }
            }
            // A new version means Qoo10 returned the line again (or a claim for it).
            if let Some(open) =
                self.open.remove(&("order_vanished".to_owned(), row.shop_id.clone(), row.order_no.to_string()))
            {
                transitions.push(alerts::resolve(&open, row.version, now));
            }
        }
        Ok(transitions)
    }

    /// OMS edits this version satisfies: resolved, and the change alerts they predicted dropped.
    fn satisfy_edits(
        &mut self,
        row: &OrderRow,
        verdicts: &mut Vec<(&'static str, Verdict)>,
        now: chrono::DateTime<Utc>,
    ) -> (Vec<Alert>, Vec<ExpectationRow>) {
        let met: Vec<(String, String)> = self
            .expectations
            .iter()
            .filter(|((shop, _), (edit, _))| *shop == row.shop_id && edits::satisfied_by(edit, row) == Some(true))
            .map(|(k, _)| k.clone())
            .collect();
        let (mut alerts_out, mut rows) = (Vec::new(), Vec::new());
        for key in met {
            let Some((edit, _)) = self.expectations.remove(&key) else { continue };
            let predicted = edits::predicted_kind(&edit);
            verdicts.retain(|(kind, v)| !(*kind == predicted && matches!(v, Verdict::Open(_))));
            if let Some(open) =
                self.open.remove(&("qoo10_correction_required".to_owned(), key.0.clone(), format!("edit:{}", key.1)))
            {
                alerts_out.push(alerts::resolve(&open, row.version, now));
            }
            rows.push(expectation_row(&edit, "matched", row.version));
        }
        (alerts_out, rows)
    }

    /// Takes OMS edits: each becomes an expectation and, while Qoo10 does not show it,
    /// `qoo10_correction_required`. Invalid edits go to `dlq.sink.<shop>`.
    async fn record_edits(&mut self, consumer: &PullConsumer) -> anyhow::Result<usize> {
        let batch = fetch_batch(consumer, 100, Duration::from_millis(50)).await;
        let now = Utc::now();
        for msg in &batch {
            let shop = Namespace::shop_of(&msg.subject).to_owned();
            let edit = sink::input::edit(&msg.payload, &shop).and_then(|e| {
                // The same edit id again: a redelivery, or conflicting content (the first stands).
                match self.expectations.values().find(|(known, _)| known.edit_id == e.edit_id) {
                    Some((known, _)) if *known != e => Err(format!(
                        "conflicting content: edit {} was already received with different content; the first stands",
                        e.edit_id
                    )),
                    _ => Ok(e),
                }
            });
            let edit = match edit {
                Ok(e) => e,
                Err(reason) => {
                    self.dead_letter(msg, &shop, &reason).await;
                    continue;
                }
            };
            let held = [msg];
            let rows: Vec<OrderRow> = match edits::target(&edit) {
                (Some(order_no), _) => {
                    let keys = [(shop.clone(), order_no)];
                    retry_forever("read order", &held, || self.store.latest(&keys)).await?.into_values().collect()
                }
                (_, Some(pack_no)) => {
                    retry_forever("read cart", &held, || self.store.pack_rows(&shop, pack_no)).await?
                }
                _ => Vec::new(),
            };
            let version = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
            let met = rows.iter().any(|r| edits::satisfied_by(&edit, r) == Some(true));
            let key = (shop.clone(), edit.key());
            let open_key = ("qoo10_correction_required".to_owned(), shop.clone(), format!("edit:{}", edit.key()));
            let mut transitions = Vec::new();
            // A newer edit of the same thing replaces the expectation: close the old alert.
            if let Some(open) = self.open.remove(&open_key) {
                transitions.push(alerts::resolve(&open, open.version + 1, now));
            }
            if met {
                self.expectations.remove(&key);
                // The OMS now agrees with what Qoo10 already shows: the change alert Qoo10's side
                // raised (e.g. quantity_changed) is settled on both sides.
                let line = rows.iter().find(|r| edits::satisfied_by(&edit, r) == Some(true)).map(|r| r.order_no);
                if let Some(no) = line {
                    let change_key = (edits::predicted_kind(&edit).to_owned(), shop.clone(), no.to_string());
                    if let Some(open) = self.open.remove(&change_key) {
                        transitions.push(alerts::resolve(&open, open.version + 1, now));
                    }
                }
            } else {
                let current = rows.iter().find(|r| edits::satisfied_by(&edit, r).is_some());
                let draft = edits::correction(&edit, current);
                let alert = Alert {
                    alert_id: format!("qoo10_correction_required:{shop}:{}:{}", edit.key(), edit.edit_id),
                    order_no: edits::target(&edit).0.unwrap_or(0),
                    pack_no: current.map(|r| r.pack_no).or(edits::target(&edit).1).unwrap_or(0),
                    version: u64::try_from(edit.made_at.timestamp_micros()).unwrap_or(version),
                    ..alerts::open(&draft, &OrderRow::empty(&shop), now)
                };
                self.open.insert(open_key, &alert);
                transitions.push(alert);
                self.expectations.insert(key, (edit.clone(), version));
            }
            self.commit_alerts(transitions, &held).await?;
            let row = expectation_row(&edit, if met { "matched" } else { "pending" }, version);
            retry_forever("insert expectation", &held, || self.store.write_expectations(std::slice::from_ref(&row)))
                .await?;
            runtime::nats::ack(msg).await;
        }
        Ok(batch.len())
    }

    /// Verdicts → transitions against the open alerts (which are updated here).
    fn transitions(
        &mut self,
        verdicts: Vec<(&'static str, Verdict)>,
        row: &OrderRow,
        now: chrono::DateTime<Utc>,
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        for (kind, verdict) in verdicts {
            let key = (kind.to_owned(), row.shop_id.clone(), row.order_no.to_string());
            match verdict {
                Verdict::Open(draft) if !self.open.contains_key(&key) => {
                    let alert = alerts::open(&draft, row, now);
                    self.open.insert(key, &alert);
                    out.push(alert);
                }
                Verdict::Resolve => {
                    if let Some(open) = self.open.remove(&key) {
                        out.push(alerts::resolve(&open, row.version, now));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Resolutions of alerts held without their texts (`sink::open`) get them back: from the
    /// opening transition when it is in the same list, else from `alerts FINAL` (one query).
    async fn fill_texts(&mut self, transitions: &mut [Alert], held: &[&jetstream::Message]) -> anyhow::Result<()> {
        if !transitions.iter().any(sink::open::needs_texts) {
            return Ok(());
        }
        let mut texts: HashMap<String, Alert> = transitions
            .iter()
            .filter(|a| a.state == AlertState::Open && !sink::open::needs_texts(a))
            .map(|a| (a.alert_id.clone(), a.clone()))
            .collect();
        let missing: Vec<String> = transitions
            .iter()
            .filter(|a| sink::open::needs_texts(a) && !texts.contains_key(&a.alert_id))
            .map(|a| a.alert_id.clone())
            .collect();
        if !missing.is_empty() {
            let stored = retry_forever("read alert texts", held, || self.store.alerts_by_id(&missing)).await?;
            texts.extend(stored.into_iter().map(|r| (r.alert_id.clone(), r.to_alert())));
        }
        for a in transitions.iter_mut().filter(|a| sink::open::needs_texts(a)) {
            match texts.get(&a.alert_id) {
                Some(t) => {
                    a.severity = t.severity.clone();
                    a.message = t.message.clone();
                    a.message_ja = t.message_ja.clone();
                    a.details = t.details.clone();
                    a.opened_at = t.opened_at;
                }
                None => {
                    tracing::warn!(alert_id = %a.alert_id, "open alert not found in ClickHouse; resolved without its texts")
                }
            }
        }
        Ok(())
    }

    /// Publishes transitions (ALERTS), then stores them (`alerts`). Publishing first means a
    /// crash in between re-evaluates and re-publishes the same ids, which JetStream de-duplicates.
    async fn commit_alerts(&mut self, mut transitions: Vec<Alert>, held: &[&jetstream::Message]) -> anyhow::Result<()> {
        if transitions.is_empty() {
            return Ok(());
        }
        self.fill_texts(&mut transitions, held).await?;
        // Every transition published, the acknowledgements pipelined (not one round trip per
        // alert). Retried whole while NATS is away: the message ids make a repeat a no-op.
        retry_forever("publish alerts", held, || async {
            let outgoing = transitions.iter().map(|alert| runtime::nats::alert_message(&self.ns, alert));
            for acked in publish_all(&self.js, outgoing).await {
                acked?;
            }
            Ok::<(), async_nats::Error>(())
        })
        .await?;
        // Counted per kind and state here and added to the metric once each: a first import
        // raises thousands of alerts per batch, and each metric update takes the registry's lock
        // and allocates its key.
        let mut counted: Vec<(&str, &str, u64)> = Vec::new();
        for alert in &transitions {
            let state = match alert.state {
                AlertState::Open => {
                    self.alerts_opened += 1;
                    "open"
                }
                AlertState::Resolved => {
                    self.alerts_resolved += 1;
                    "resolved"
                }
            };
            match counted.iter_mut().find(|(k, s, _)| *k == alert.kind && *s == state) {
                Some((_, _, n)) => *n += 1,
                None => counted.push((&alert.kind, state, 1)),
            }
            tracing::info!(kind = %alert.kind, shop = %alert.shop_id, order_no = alert.order_no, state = ?alert.state, alert_id = %alert.alert_id, "alert");
            if let Some(w) = &self.webhook {
                w.notify(alert);
            }
        }
        for (kind, state, n) in counted {
            self.metrics.add(
                "alerts_total",
                "Alert transitions, by kind and state.",
                &[("kind", kind), ("state", state)],
                n as f64,
            );
        }
        let rows: Vec<AlertRow> = transitions.into_iter().map(AlertRow::from_alert).collect();
        retry_forever("insert alerts", held, || self.store.write_alerts(&rows)).await?;
        Ok(())
    }

    /// Re-checks time-dependent rules (grace periods, overdue ship dates) on active orders.
    async fn sweep(&mut self) -> anyhow::Result<()> {
        let rows = retry_forever("read active orders", &[], || self.store.active_orders()).await?;
        let now = Utc::now();
        let ctx = Context { now, today_jst: schemas::time::today_jst(now), pack_has_active_sibling: false };
        let mut transitions = Vec::new();
        for row in &rows {
            // The same version on both sides: only conditions that depend on time can change.
            let verdicts = alerts::evaluate(Some(row), row, &ctx, &self.thresholds);
            transitions.extend(self.transitions(verdicts, row, now));
        }
        self.commit_alerts(transitions, &[]).await
    }

    /// Collects poll summaries; evaluates each poll when its last summary arrives. Returns how
    /// many summaries arrived.
    async fn record_polls(&mut self, consumer: &PullConsumer) -> anyhow::Result<usize> {
        let batch = fetch_batch(consumer, 500, Duration::from_millis(50)).await;
        let count = batch.len();
        for msg in batch {
            let summary = match serde_json::from_slice::<PollSummary>(&msg.payload) {
                Ok(s) => s,
                Err(e) => {
                    let shop = Namespace::shop_of(&msg.subject).to_owned();
                    let reason = format!("not a poll summary: {e}");
                    self.dead_letter(&msg, &shop, &reason).await;
                    continue;
                }
            };
            // A newer poll of the shop abandons an older one that never completed (its fetch failed).
            let stale: Vec<String> = self
                .polls
                .iter()
                .filter(|(id, (_, s))| {
                    **id != summary.poll_id
                        && s[0].shop == summary.shop
                        && poll_started(id) < poll_started(&summary.poll_id)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in stale {
                if let Some((msgs, _)) = self.polls.remove(&id) {
                    tracing::info!(poll_id = %id, "incomplete poll abandoned");
                    for m in msgs {
                        let _ = m.ack().await;
                    }
                }
            }
            let last = summary.last_in_poll;
            let id = summary.poll_id.clone();
            let entry = self.polls.entry(id.clone()).or_default();
            entry.0.push(msg);
            entry.1.push(summary);
            if last {
                let (msgs, summaries) = self.polls.remove(&id).expect("just inserted");
                let held: Vec<&jetstream::Message> = msgs.iter().collect();
                let transitions = self.evaluate_poll(&summaries, &held).await?;
                self.commit_alerts(transitions, &held).await?;
                for m in &msgs {
                    runtime::nats::ack(m).await;
                }
            }
        }
        Ok(count)
    }

    /// `order_vanished` for one complete poll: opens for known lines it did not see, resolves for
    /// lines it saw again (or found a claim for).
    async fn evaluate_poll(
        &mut self,
        summaries: &[PollSummary],
        held: &[&jetstream::Message],
    ) -> anyhow::Result<Vec<Alert>> {
        let shop = summaries[0].shop.clone();
        let mut seen = std::collections::HashSet::new();
        let mut claimed = std::collections::HashSet::new();
        // Only a call by order date returns every line of its statuses and window: a call by
        // ship date says nothing of the orders that did not ship.
        let mut coverage = Vec::new();
        for s in summaries {
            match s.kind {
                RowKind::Order => {
                    seen.extend(s.order_nos.iter().copied());
                    if s.query.condition == schemas::raw::condition::ORDER_DATE
                        && let Some((from, to)) = s.query.span()
                    {
                        coverage.push((s.query.shipping_statuses(), from, to));
                    }
                }
                RowKind::Claim => claimed.extend(s.order_nos.iter().copied()),
            }
        }
        // A poll that skipped a refused method (claims, say) cannot explain a line's absence.
        if summaries.iter().any(|s| !s.refused_methods.is_empty()) {
            coverage.clear();
        }
        let now = Utc::now();
        let started = summaries.iter().map(|s| s.fetched_at).min().unwrap_or(now);
        let started_version = u64::try_from(started.timestamp_micros()).unwrap_or(0);
        let mut out = Vec::new();
        let mut known: Vec<OrderRow> = Vec::new();
        for (statuses, from, to) in &coverage {
            let lines = retry_forever("read known lines", held, || {
                self.store.known_lines(&shop, statuses, *from, *to, started_version)
            })
            .await?;
            known.extend(lines);
        }
        known.sort_by_key(|r| r.order_no);
        known.dedup_by_key(|r| r.order_no);
        for (row, draft) in alerts::vanished(&known, &seen, &claimed) {
            let key = ("order_vanished".to_owned(), shop.clone(), row.order_no.to_string());
            if !self.open.contains_key(&key) {
                let alert = alerts::open(&draft, row, now);
                self.open.insert(key, &alert);
                out.push(alert);
            }
        }
        let back: Vec<(String, String, String)> = self
            .open
            .of("order_vanished", &shop)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|(_, _, no)| {
                let no: u64 = no.parse().unwrap_or(0);
                seen.contains(&no) || claimed.contains(&no)
            })
            .collect();
        for key in back {
            if let Some(open) = self.open.remove(&key) {
                out.push(alerts::resolve(&open, started_version, now));
            }
        }
        Ok(out)
    }

    /// Stores alerts other services published; returns how many.
    async fn record_external(&mut self, consumer: &PullConsumer) -> anyhow::Result<usize> {
        let batch = fetch_batch(consumer, 100, Duration::from_millis(50)).await;
        let mut rows = Vec::with_capacity(batch.len());
        let mut good = Vec::with_capacity(batch.len());
        for msg in &batch {
            match serde_json::from_slice::<Alert>(&msg.payload) {
                Ok(a) => {
                    rows.push(AlertRow::from_alert(a));
                    good.push(msg);
                }
                Err(e) => {
                    let shop = Namespace::shop_of(&msg.subject).to_owned();
                    self.dead_letter(msg, &shop, &format!("not an alert: {e}")).await;
                }
            }
        }
        retry_forever("insert alerts", &good, || self.store.write_alerts(&rows)).await?;
        for msg in good {
            runtime::nats::ack(msg).await;
        }
        Ok(batch.len())
    }
}

async fn replay_dlq(config: &PipelineConfig, stage: &str, shop: Option<&str>, dry_run: bool) -> anyhow::Result<()> {
    if stage != subjects::STAGE_NORMALIZER && stage != subjects::STAGE_SINK {
        anyhow::bail!("--stage must be `normalizer` or `sink`");
    }
    let ns = Namespace::from_config(&config.nats);
    let (_client, js) = runtime::nats::connect_jetstream(&config.nats, "sink-replay-dlq").await?;
    let mut stream = js.get_stream(ns.stream(subjects::STREAM_DLQ)).await?;
    let state = stream.info().await?.state.clone();
    let prefix = ns.dlq(stage, "");
    let (mut listed, mut replayed) = (0u64, 0u64);
    if state.messages > 0 {
        for seq in state.first_sequence..=state.last_sequence {
            let Ok(m) = stream.get_raw_message(seq).await else { continue }; // deleted
            let subject = m.subject.to_string();
            if !subject.starts_with(&prefix) || shop.is_some_and(|s| Namespace::shop_of(&subject) != s) {
                continue;
            }
            let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
            listed += 1;
            println!("#{seq} {subject} from {}: {}", header(schemas::dlq::SUBJECT), header(schemas::dlq::ERROR));
            if dry_run {
                continue;
            }
            let target = header(schemas::dlq::SUBJECT);
            if target.is_empty() {
                println!("  skipped: no {} header", schemas::dlq::SUBJECT);
                continue;
            }
            let mut headers = async_nats::HeaderMap::new();
            for (name, values) in m.headers.iter() {
                let name: &str = name.as_ref();
                if name.starts_with("Dlq-") || name == "Nats-Msg-Id" {
                    continue;
                }
                for v in values {
                    headers.append(name, v.as_str());
                }
            }
            headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("replay:{stage}:{seq}").as_str());
            js.publish_with_headers(target, headers, m.payload.clone()).await?.await?;
            stream.delete_message(seq).await?;
            replayed += 1;
        }
    }
    if dry_run {
        println!("{listed} dead letters of stage {stage} (dry run: nothing replayed)");
    } else {
        println!("{replayed} of {listed} dead letters of stage {stage} replayed");
    }
    Ok(())
}

/// Gathers what the status page shows (ClickHouse for orders and alerts, NATS for the fetcher's
/// last poll and error).
async fn status_page(
    store: &Store,
    js: &jetstream::Context,
    ns: &Namespace,
    configured: &[String],
) -> anyhow::Result<String> {
    use sink::status::ShopStatus;
    let by_status = store.orders_by_status().await?;
    let alerts = store.list_alerts(None, true, 1000).await?;
    let mut ids: Vec<String> = configured.to_vec();
    for id in by_status.iter().map(|(s, _, _)| s).chain(alerts.iter().map(|a| &a.shop_id)) {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    let state = js.get_stream(ns.stream(subjects::STREAM_FETCH_STATE)).await.ok();
    let mut shops = Vec::with_capacity(ids.len());
    for id in ids {
        let mut fetch = schemas::poll::FetchStatus::default();
        if let Some(stream) = &state
            && let Ok(m) = stream.get_last_raw_message_by_subject(&ns.fetch_state(&id)).await
        {
            fetch = serde_json::from_slice(&m.payload).unwrap_or_default();
        }
        shops.push(ShopStatus {
            orders: by_status.iter().filter(|(s, _, _)| *s == id).map(|(_, st, n)| (st.clone(), *n)).collect(),
            open_alerts: alerts.iter().filter(|a| a.shop_id == id).cloned().collect(),
            fetch,
            shop_id: id,
        });
    }
    Ok(sink::status::render(&shops, Utc::now()))
}

/// A plain-text table of alerts, one line each, Japanese message last (it is the action).
fn alerts_table(rows: &[AlertRow]) -> String {
    let mut out = format!(
        "{:<8} {:<26} {:<16} {:>12} {:<16} {}\n",
        "STATE", "KIND", "SHOP", "ORDER", "SINCE (JST)", "WHAT TO DO"
    );
    for r in rows {
        let since = chrono::DateTime::from_timestamp(i64::from(r.opened_at), 0)
            .map(|t| t.with_timezone(&schemas::time::jst()).format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default();
        let order = if r.order_no == 0 { "-".to_owned() } else { r.order_no.to_string() };
        out.push_str(&format!(
            "{:<8} {:<26} {:<16} {:>12} {:<16} {}\n",
            r.state, r.kind, r.shop_id, order, since, r.message_ja
        ));
    }
    if rows.is_empty() {
        out.push_str("(no alerts)\n");
    }
    out
}

/// The message with its payload and headers let go: all that is left to do with a message whose
/// rows are built is to acknowledge it (or keep it in progress). A batch of 5,000 would otherwise
/// hold about 12 MB of JSON until ClickHouse confirms.
fn ack_only(mut msg: jetstream::Message) -> jetstream::Message {
    msg.message.payload = Bytes::new();
    msg.message.headers = None;
    msg
}

/// Alert kinds other services raise, with the sink's durable consumer for each.
const EXTERNAL_ALERTS: &[(&str, &str)] =
    &[("credentials_invalid", "sink-alerts"), ("credentials_expiring", "sink-alerts-expiring")];

async fn all_idle(consumers: &mut [PullConsumer]) -> anyhow::Result<bool> {
    for c in consumers {
        if !consumer_idle(c).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// How long a backlog on ORDERS may hold back the sink's other consumers (see the run loop).
const SIDE_INTERVAL: Duration = Duration::from_secs(1);

fn expectation_row(edit: &OmsEdit, state: &str, version: u64) -> ExpectationRow {
    ExpectationRow {
        shop_id: edit.shop_id.clone(),
        edit_key: edit.key(),
        edit_id: edit.edit_id.clone(),
        edit: serde_json::to_string(edit).expect("edit serializes"),
        state: state.to_owned(),
        made_at: u32::try_from(edit.made_at.timestamp()).unwrap_or(0),
        version,
    }
}

/// When a poll started (the micros in `<shop>:<micros>`).
fn poll_started(poll_id: &str) -> u64 {
    poll_id.rsplit(':').next().and_then(|t| t.parse().ok()).unwrap_or(0)
}

/// 200 ms doubling to 30 s, with jitter, without end.
fn clickhouse_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .with_max_times(usize::MAX)
}

/// A start-up read: retried while ClickHouse is unreachable, failed at once on an error waiting
/// cannot cure. `None` when the service was asked to stop meanwhile (a clean exit).
async fn at_start<T, F, Fut>(op: &str, f: F) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sink::store::StoreError>>,
{
    let result = f
        .retry(clickhouse_backoff())
        .sleep(runtime::sleep_unless_stopping)
        .when(|e| e.is_transient() && !runtime::shutting_down())
        .notify(|e, delay| {
            tracing::warn!(op, error = %e, retry_in_ms = delay.as_millis() as u64, "ClickHouse unreachable at start; waiting (not ready)");
        })
        .await;
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_transient() && runtime::shutting_down() => {
            tracing::info!(op, "stopped before start-up finished");
            Ok(None)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("ClickHouse {op}"))),
    }
}

/// Retries a ClickHouse operation until it succeeds, with exponential backoff (capped at 30 s).
/// Meanwhile the batch's messages are kept unacknowledged and told "in progress", so JetStream
/// neither redelivers them nor sends more: memory stays bounded by one batch during an outage.
/// Once the service is asked to stop, it retries no more and hands the batch back (NAK), so it is
/// redelivered at once to the next sink.
async fn retry_forever<T, E, F, Fut>(op: &str, held: &[&jetstream::Message], f: F) -> anyhow::Result<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let result = f
        .retry(clickhouse_backoff())
        .sleep(runtime::sleep_unless_stopping)
        .when(|_| !runtime::shutting_down())
        .notify(|e, delay| {
            tracing::warn!(op, error = %e, retry_in_ms = delay.as_millis() as u64, held = held.len(), "failed; retrying");
            for m in held {
                let m = (*m).clone();
                tokio::spawn(async move {
                    let _ = m.ack_with(AckKind::Progress).await;
                });
            }
        })
        .await;
    match result {
        Ok(v) => Ok(v),
        Err(e) => {
            // Stopping: hand the batch back now rather than after ack_wait.
            for m in held {
                let _ = m.ack_with(AckKind::Nak(None)).await;
            }
            Err(anyhow::anyhow!("{op}: {e} (stopping: the batch is handed back to JetStream)"))
        }
    }
}
