//! The servers every test talks to: from the environment, else containers; one namespace per test.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::OnceCell;

#[derive(Debug, Clone)]
pub struct Servers {
    pub nats_url: String,
    pub clickhouse_url: String,
}

static SERVERS: OnceCell<Servers> = OnceCell::const_new();

/// The servers every test talks to (started once per test binary when containers are used).
pub async fn servers() -> &'static Servers {
    SERVERS
        .get_or_init(|| async {
            match (std::env::var("NATS_URL"), std::env::var("CLICKHOUSE_URL")) {
                (Ok(nats_url), Ok(clickhouse_url)) => Servers { nats_url, clickhouse_url },
                _ if Path::new("/var/run/docker.sock").exists() => containers().await.unwrap_or_else(|e| {
                    panic!("NATS_URL/CLICKHOUSE_URL are unset and starting containers failed: {e:#}. Run ./scripts/test.sh, which starts local servers.")
                }),
                _ => panic!(
                    "end-to-end tests need NATS JetStream and ClickHouse: set NATS_URL and CLICKHOUSE_URL \
                     (./scripts/services.sh start gives nats://127.0.0.1:4222 and http://127.0.0.1:8123), \
                     or run ./scripts/test.sh, or provide a Docker engine for testcontainers"
                ),
            }
        })
        .await
}

async fn containers() -> anyhow::Result<Servers> {
    use testcontainers::ImageExt;
    use testcontainers::runners::AsyncRunner;
    use testcontainers_modules::{
        clickhouse::ClickHouse,
        nats::{Nats, NatsServerCmd},
    };
    let nats =
        Nats::default().with_cmd(&NatsServerCmd::default().with_jetstream()).start().await.context("NATS container")?;
    let ch = ClickHouse::default().start().await.context("ClickHouse container")?;
    let servers = Servers {
        nats_url: format!("nats://127.0.0.1:{}", nats.get_host_port_ipv4(4222).await?),
        clickhouse_url: format!("http://127.0.0.1:{}", ch.get_host_port_ipv4(8123).await?),
    };
    // Containers live as long as the test process.
    std::mem::forget(nats);
    std::mem::forget(ch);
    Ok(servers)
}

/// A unique, lowercase token for namespaces and database names.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros()
        % 1_000_000_000;
    format!("{prefix}_{}_{n}_{t}", std::process::id())
}

/// Waits until JetStream answers through `url` and every node has joined.
pub async fn wait_for_jetstream(url: &str, limit: Duration) -> anyhow::Result<()> {
    let urls: Vec<async_nats::ServerAddr> = url.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let deadline = Instant::now() + limit;
    let mut last;
    loop {
        // A stream with one replica per server can be placed only once every node has joined.
        let probe = async_nats::jetstream::stream::Config {
            name: "READINESS_PROBE".into(),
            subjects: vec!["readiness.probe".into()],
            num_replicas: urls.len(),
            ..Default::default()
        };
        match async_nats::connect(urls.as_slice()).await {
            Ok(client) => {
                let js = async_nats::jetstream::new(client);
                match js.get_or_create_stream(probe).await {
                    Ok(_) => {
                        let _ = js.delete_stream("READINESS_PROBE").await;
                        return Ok(());
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        anyhow::ensure!(Instant::now() < deadline, "JetStream at {url} not ready within {limit:?}: {last}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
