use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use chrono::{NaiveDateTime, Timelike, Utc};
use clap::Parser;
use sandbox::server::{World, router};
use sandbox::{generate, model::Order};

/// A QAPI look-alike holding a seeded, deterministic set of shops and orders.
#[derive(Debug, Parser)]
#[command(name = "qoo10-sandbox", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18080")]
    listen: SocketAddr,
    /// Seed of the generated world: the same seed and `--now` give the same orders.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of shops (`sandbox-1` … `sandbox-N`).
    #[arg(long, default_value_t = 2)]
    shops: u32,
    /// Order lines per shop.
    #[arg(long, default_value_t = 60)]
    orders: usize,
    /// Orders are placed over this many days before now.
    #[arg(long, default_value_t = 10)]
    days: i64,
    /// The sandbox's "now" in JST (`2026-11-29 12:00:00`): orders are generated up to it and the
    /// sandbox's clock starts there. Default: the current hour for the orders, and the real clock.
    #[arg(long)]
    now: Option<String>,
    /// Stop the sandbox's clock at --now: it moves only by POST /_sandbox/advance. Tests that
    /// compare runs made minutes apart need this (with a running clock an order shipped at 06:53
    /// was delivered in one run and not yet in another).
    #[arg(long)]
    frozen_clock: bool,
    /// Requests one shop may make in any one-second window; more are answered HTTP 429 and
    /// counted as violations (GET /_sandbox/stats). 0 = unlimited.
    #[arg(long, default_value_t = 0.0)]
    rate_limit_per_shop: f64,
    /// Requests all shops together may make in any one-second window. 0 = unlimited.
    #[arg(long, default_value_t = 0.0)]
    rate_limit_global: f64,
    /// Print `[[shops]]` entries for pipeline.toml that reach this sandbox, then exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let now = match &args.now {
        Some(t) => {
            NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").context("--now: expected YYYY-MM-DD HH:MM:SS")?
        }
        None => {
            let t = Utc::now().with_timezone(&schemas::time::jst()).naive_local();
            t.with_minute(0).and_then(|t| t.with_second(0)).and_then(|t| t.with_nanosecond(0)).unwrap_or(t)
        }
    };
    let shops: Vec<_> = (1..=args.shops).map(generate::shop).collect();
    if args.print_config {
        print_config(&args, &shops);
        return Ok(());
    }
    runtime::init_tracing();
    let mut world = World {
        seed: args.seed,
        limit_per_shop: args.rate_limit_per_shop,
        limit_global: args.rate_limit_global,
        ..Default::default()
    };
    // An explicit --now is where the clock starts (before, only the orders were generated up to
    // it and the clock stayed the real one: orders of another date then jumped through their
    // lifecycle at the first request). Without it the clock is the real one, as it always was.
    if args.now.is_some() || args.frozen_clock {
        world.start_clock_at(schemas::time::jst_naive_to_utc(now), args.frozen_clock);
    }
    for (i, shop) in shops.iter().enumerate() {
        let orders: Vec<Order> = generate::orders(args.seed, i as u32 + 1, &shop.id, args.orders, args.days, now);
        for o in orders {
            world.orders.insert((o.shop.clone(), o.order_no), o);
        }
    }
    world.shops = shops;
    tracing::info!(listen = %args.listen, shops = args.shops, orders = world.orders.len(), seed = args.seed, now = %now, "qoo10-sandbox ready");
    let app = router(Arc::new(Mutex::new(world)));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("--listen {}", args.listen))?;
        axum::serve(listener, app).with_graceful_shutdown(runtime::shutdown_signal()).await?;
        Ok(())
    })
}

fn print_config(args: &Args, shops: &[sandbox::model::Shop]) {
    println!(
        "# Shops of qoo10-sandbox --seed {} --shops {} (sandbox credentials, not secrets).",
        args.seed, args.shops
    );
    println!("[qoo10]\nbase_url = \"http://{}/GMKT.INC.Front.QAPIService/ebayjapan.qapi\"", args.listen);
    println!("requests_per_second = 20\nglobal_requests_per_second = 100\n");
    for s in shops {
        println!(
            "[[shops]]\nid = \"{}\"\nuser_id = \"{}\"\napi_key = \"{}\"\npassword = \"{}\"",
            s.id, s.user_id, s.api_key, s.password
        );
        println!("statuses = [1, 2, 3, 4, 5]\nlookback_days = 7\ninterval = \"1m\"\nclaims = true\n");
    }
}
