//! Harness for end-to-end tests: real NATS JetStream and ClickHouse, our real binaries as
//! processes, and the Qoo10 sandbox.
//!
//! Servers come from `NATS_URL` / `CLICKHOUSE_URL` when set (what `./scripts/test.sh` does),
//! else from containers when a Docker engine answers, else the test fails saying how to start
//! them. It never skips silently: a skipped end-to-end test would make CI test nothing.
//! Every test gets its own NATS namespace and ClickHouse database, so tests run in parallel
//! and repeatedly against the same servers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
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

/// Where cargo put our binaries (next to this test executable's `deps/` directory).
///
/// `cargo test` does not (re)build other packages' binaries, and a nested `cargo build` from
/// here would resolve features differently and rebuild half the workspace. So the binaries are
/// built beforehand (`./scripts/test.sh` does `cargo build --workspace --bins`), and this refuses
/// a binary older than any source file rather than test stale code.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
    let path = dir.join(name);
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).unwrap_or_else(|_| {
        panic!("{} is missing: run `cargo build --workspace --bins` (./scripts/test.sh does it)", path.display())
    });
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let krate = if name == "qoo10-sandbox" { "sandbox" } else { name };
    if let Some(newer) = newest_source(root, krate).filter(|(t, _)| *t > built) {
        panic!("{} is older than {}: run `cargo build --workspace --bins` first", path.display(), newer.1.display());
    }
    path
}

/// The newest source file of `krate` and of the crates every binary depends on.
fn newest_source(root: &Path, krate: &str) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for dir in ["schemas", "runtime", krate] {
        let mut stack = vec![root.join(dir).join("src")];
        while let Some(p) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                if let Ok(entries) = std::fs::read_dir(&p) {
                    stack.extend(entries.flatten().map(|e| e.path()));
                }
            } else if let Ok(t) = meta.modified() {
                if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                    newest = Some((t, p));
                }
            }
        }
    }
    newest
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A running `qoo10-sandbox`, killed on drop.
#[derive(Debug)]
pub struct Sandbox {
    child: std::process::Child,
    pub addr: String,
}

impl Sandbox {
    pub async fn start(args: &[&str]) -> anyhow::Result<Self> {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(bin("qoo10-sandbox"))
            .args(["--listen", &addr])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start qoo10-sandbox")?;
        let sandbox = Sandbox { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(r) = http().get(sandbox.url("/_sandbox/health")).send().await {
                if r.status().is_success() {
                    return Ok(sandbox);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("qoo10-sandbox did not answer on {}", sandbox.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn base_url(&self) -> String {
        self.url("/GMKT.INC.Front.QAPIService/ebayjapan.qapi")
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<()> {
        let r = http().post(self.url(path)).json(body).send().await?;
        anyhow::ensure!(r.status().is_success(), "POST {path}: {}", r.status());
        Ok(())
    }

    pub async fn put_json(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<()> {
        let r = http().put(self.url(path)).json(body).send().await?;
        anyhow::ensure!(r.status().is_success(), "PUT {path}: {}", r.status());
        Ok(())
    }

    pub async fn delete_json(&self, path: &str) -> anyhow::Result<()> {
        let r = http().delete(self.url(path)).send().await?;
        anyhow::ensure!(r.status().is_success(), "DELETE {path}: {}", r.status());
        Ok(())
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        Ok(http().get(self.url(path)).send().await?.error_for_status()?.json().await?)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client")
}

/// One test's deployment: its NATS namespace, its ClickHouse database, its config file.
#[derive(Debug)]
pub struct Deployment {
    pub servers: Servers,
    pub prefix: String,
    pub database: String,
    pub config_path: PathBuf,
    _dir: TempDir,
}

impl Deployment {
    /// `extra` is appended to the generated pipeline.toml (shops, [qoo10] settings, ...).
    pub async fn new(extra: &str) -> anyhow::Result<Self> {
        let servers = servers().await.clone();
        let prefix = unique("t");
        let database = unique("test");
        let dir = TempDir::new(&prefix)?;
        let config_path = dir.0.join("pipeline.toml");
        let text = format!(
            "[nats]\nurl = \"{}\"\nsubject_prefix = \"{prefix}\"\n\n[clickhouse]\nurl = \"{}\"\ndatabase = \"{database}\"\n\n{extra}\n",
            servers.nats_url, servers.clickhouse_url
        );
        std::fs::write(&config_path, text)?;
        Ok(Deployment { servers, prefix, database, config_path, _dir: dir })
    }

    /// Runs one of our binaries with this deployment's config and waits for it (at most `limit`).
    pub fn run(&self, name: &str, args: &[&str], limit: Duration) -> anyhow::Result<Output> {
        let mut child = Command::new(bin(name))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            // The config file names the servers; the environment must not override it.
            .env_remove("NATS_URL")
            .env_remove("CLICKHOUSE_URL")
            .env_remove("CLICKHOUSE_DATABASE")
            .env_remove("PIPELINE_CONFIG")
            // Tests run many services at once: each serves /metrics on a free port.
            .env("HTTP_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {name}"))?;
        // Drain both pipes while the child runs: a chatty child would block on a full pipe.
        let drain = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        };
        let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
        let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = err.join().unwrap_or_default();
                bail!("{name} did not finish within {limit:?}; stderr:\n{}", String::from_utf8_lossy(&stderr));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() })
    }

    /// Runs and requires exit code 0.
    pub fn run_ok(&self, name: &str, args: &[&str]) -> anyhow::Result<Output> {
        let out = self.run(name, args, Duration::from_secs(120))?;
        if !out.status.success() {
            bail!("{name} {args:?} exited with {}; stderr:\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        Ok(out)
    }

    /// Fetcher once, then normalizer and sink until idle.
    pub fn run_pipeline_once(&self) -> anyhow::Result<()> {
        self.run_ok("fetcher", &["--once"])?;
        self.run_ok("normalizer", &["--until-idle"])?;
        self.run_ok("sink", &["--until-idle"])?;
        Ok(())
    }

    /// A query against this deployment's database, as tab-separated rows.
    pub async fn query(&self, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
        let r = http()
            .post(format!("{}/?database={}", self.servers.clickhouse_url, self.database))
            .body(format!("{sql} FORMAT TabSeparated"))
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        anyhow::ensure!(status.is_success(), "ClickHouse: {sql}: {text}");
        Ok(text.lines().map(|l| l.split('\t').map(str::to_owned).collect()).collect())
    }

    pub async fn nats(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        let client = async_nats::connect(&self.servers.nats_url).await?;
        Ok(async_nats::jetstream::new(client))
    }

    /// Every message currently stored on a stream of this deployment (`base` = contract name).
    pub async fn stream_messages(
        &self,
        base: &str,
    ) -> anyhow::Result<Vec<async_nats::jetstream::message::StreamMessage>> {
        let js = self.nats().await?;
        let name = schemas::subjects::Namespace::new(&self.prefix).stream(base);
        let mut stream = match js.get_stream(&name).await {
            Ok(s) => s,
            // Not created yet: no service of this deployment has started.
            Err(e) if e.to_string().contains("stream not found") => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        let info = stream.info().await?.state.clone();
        let mut out = Vec::new();
        if info.messages == 0 {
            return Ok(out);
        }
        for seq in info.first_sequence..=info.last_sequence {
            if let Ok(m) = stream.get_raw_message(seq).await {
                out.push(m);
            }
        }
        Ok(out)
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // Leave the database for inspection when a test failed; drop it otherwise.
        if !std::thread::panicking() {
            let url = format!("{}/", self.servers.clickhouse_url);
            let sql = format!("DROP DATABASE IF EXISTS {}", self.database);
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                rt.block_on(async { http().post(url).body(sql).send().await.ok() })
            })
            .join();
        }
    }
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("qoo10-e2e-{prefix}"));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Validates each payload against a JSON Schema file of `schemas/`; returns every violation.
pub fn schema_violations(schema_file: &str, payloads: &[&[u8]]) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas").join(schema_file);
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("schema file")).expect("schema is JSON");
    let validator = jsonschema::options().should_validate_formats(true).build(&schema).expect("schema compiles");
    let mut out = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        match serde_json::from_slice::<serde_json::Value>(p) {
            Ok(v) => {
                out.extend(validator.iter_errors(&v).map(|e| format!("message {i}: {} at {}", e, e.instance_path())))
            }
            Err(e) => out.push(format!("message {i}: not JSON: {e}")),
        }
    }
    out
}

/// A TCP proxy in front of a server that a test can cut (refuse and drop every connection) and
/// restore: an outage of one dependency without stopping the shared server.
#[derive(Debug)]
pub struct Proxy {
    pub addr: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let generation = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let upstream = upstream.to_owned();
        let (flag, gen_) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let upstream = upstream.clone();
                let (flag, gen_) = (flag.clone(), gen_.clone());
                let born = gen_.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                    tokio::pin!(copy);
                    loop {
                        tokio::select! {
                            _ = &mut copy => return,
                            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                                if !flag.load(Ordering::SeqCst) || gen_.load(Ordering::SeqCst) != born {
                                    return; // cut: both sides see the connection drop
                                }
                            }
                        }
                    }
                });
            }
        });
        Ok(Proxy { addr, up, generation })
    }

    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
