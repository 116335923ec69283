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
            } else if let Ok(t) = meta.modified()
                && newest.as_ref().is_none_or(|(n, _)| t > *n)
            {
                newest = Some((t, p));
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
            if let Ok(r) = http().get(sandbox.url("/_sandbox/health")).send().await
                && r.status().is_success()
            {
                return Ok(sandbox);
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
    runtime::install_crypto_provider();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client")
}

/// One test's deployment: its NATS namespace, its ClickHouse database, its config file.
#[derive(Debug)]
pub struct Deployment {
    pub servers: Servers,
    pub prefix: String,
    pub database: String,
    pub config_path: PathBuf,
    /// On the shared NATS server (not a private one a test started): its streams are deleted
    /// on drop, as its database is.
    shared_nats: bool,
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
        Ok(Deployment { servers, prefix, database, config_path, shared_nats: true, _dir: dir })
    }

    /// A deployment on other NATS servers than the shared ones (a private server or cluster).
    pub async fn on_nats(nats_url: &str, extra: &str) -> anyhow::Result<Self> {
        let mut dep = Deployment::new(extra).await?;
        let text = std::fs::read_to_string(&dep.config_path)?;
        let shared = format!("url = \"{}\"", dep.servers.nats_url);
        std::fs::write(&dep.config_path, text.replacen(&shared, &format!("url = \"{nats_url}\""), 1))?;
        dep.servers.nats_url = nats_url.to_owned();
        dep.shared_nats = false;
        Ok(dep)
    }

    /// Adds lines to the `[nats]` section of the config (auth, TLS, replicas).
    pub fn add_nats_settings(&self, lines: &str) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(&self.config_path)?;
        anyhow::ensure!(text.contains("\nsubject_prefix ="), "no [nats] subject_prefix line to add to");
        let text = text.replacen("\nsubject_prefix =", &format!("\n{lines}\nsubject_prefix ="), 1);
        std::fs::write(&self.config_path, text)?;
        Ok(())
    }

    /// One of our binaries with this deployment's config. The config file names the servers; the
    /// environment must not override it.
    fn command(&self, name: &str, args: &[&str]) -> Command {
        self.command_at(name, args, 0)
    }

    /// [`Deployment::command`] with the process's clock `days` ahead of the real one
    /// (`faketime`, from Debian's package; monotonic time is left alone, so timers and timeouts
    /// run as usual).
    fn command_at(&self, name: &str, args: &[&str], days: i64) -> Command {
        let mut command = if days == 0 {
            Command::new(bin(name))
        } else {
            let mut c = Command::new("faketime");
            c.arg("-f").arg(format!("{days:+}d")).arg(bin(name)).env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            c
        };
        command
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env_remove("NATS_URL")
            .env_remove("CLICKHOUSE_URL")
            .env_remove("CLICKHOUSE_DATABASE")
            .env_remove("PIPELINE_CONFIG");
        command
    }

    /// Points the services at ClickHouse through `url` (a proxy in front of the shared server).
    pub fn clickhouse_via(&self, url: &str) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(&self.config_path)?;
        std::fs::write(&self.config_path, text.replace(&self.servers.clickhouse_url, url))?;
        Ok(())
    }

    /// Moves the deployment (services and this harness's queries) to another ClickHouse server,
    /// such as a private [`ClickHouseNode`].
    pub fn on_clickhouse(&mut self, url: &str) -> anyhow::Result<()> {
        self.clickhouse_via(url)?;
        self.servers.clickhouse_url = url.to_owned();
        Ok(())
    }

    /// Starts a long-running service of this deployment (stderr kept in a log file).
    pub fn spawn(&self, name: &str, args: &[&str]) -> anyhow::Result<Service> {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("qoo10-e2e-{name}-{port}.log"));
        let child = self
            .command(name, args)
            .env("HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        Ok(Service { name: name.to_owned(), child: Some(child), port, log })
    }

    /// Waits until every consumer of this deployment has nothing pending and nothing
    /// unacknowledged, twice in a row 300 ms apart (at most `limit`).
    pub async fn wait_drained(&self, limit: Duration) -> anyhow::Result<()> {
        let js = self.nats().await?;
        let ns = schemas::subjects::Namespace::new(&self.prefix);
        let deadline = Instant::now() + limit;
        let mut quiet = 0;
        let mut last = String::new();
        while quiet < 2 {
            anyhow::ensure!(Instant::now() < deadline, "not drained within {limit:?}: {last}");
            tokio::time::sleep(Duration::from_millis(300)).await;
            last.clear();
            let mut busy = false;
            use schemas::subjects::Stream;
            for base in [Stream::Raw, Stream::Orders, Stream::Alerts, Stream::Polls, Stream::OmsEdits] {
                let Ok(stream) = js.get_stream(ns.stream(base)).await else {
                    busy = true;
                    last.push_str(&format!("{}: unreachable; ", base.base()));
                    continue;
                };
                let names: Vec<String> = {
                    use futures::TryStreamExt;
                    match stream.consumer_names().try_collect().await {
                        Ok(n) => n,
                        Err(e) => {
                            busy = true;
                            last.push_str(&format!("{}: {e}; ", base.base()));
                            continue;
                        }
                    }
                };
                for name in names {
                    let info = stream.get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name).await;
                    match info {
                        Ok(mut c) => match c.info().await {
                            Ok(i) if i.num_pending == 0 && i.num_ack_pending == 0 => {}
                            Ok(i) => {
                                busy = true;
                                last.push_str(&format!(
                                    "{name}: {} pending, {} unacked; ",
                                    i.num_pending, i.num_ack_pending
                                ));
                            }
                            Err(e) => {
                                busy = true;
                                last.push_str(&format!("{name}: {e}; "));
                            }
                        },
                        Err(e) => {
                            busy = true;
                            last.push_str(&format!("{name}: {e}; "));
                        }
                    }
                }
            }
            quiet = if busy { 0 } else { quiet + 1 };
        }
        Ok(())
    }

    /// Runs one of our binaries with this deployment's config and waits for it (at most `limit`).
    pub fn run(&self, name: &str, args: &[&str], limit: Duration) -> anyhow::Result<Output> {
        self.run_env(name, args, &[], limit)
    }

    /// [`Deployment::run`] with more environment variables (`RUST_LOG`, ...).
    pub fn run_env(&self, name: &str, args: &[&str], env: &[(&str, &str)], limit: Duration) -> anyhow::Result<Output> {
        let mut command = self.command(name, args);
        command.envs(env.iter().copied());
        run_limited(command, name, limit)
    }

    /// Runs one of our binaries `days` ahead of today (its clock moved by `faketime`) and
    /// requires exit code 0.
    pub fn run_ok_at(&self, name: &str, args: &[&str], days: i64) -> anyhow::Result<Output> {
        let out = run_limited(self.command_at(name, args, days), name, Duration::from_secs(120))?;
        if !out.status.success() {
            bail!(
                "{name} {args:?} (day {days}) exited with {}; stderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    /// Fetcher once, then normalizer and sink until idle, `days` ahead of today.
    pub fn run_pipeline_once_at(&self, days: i64) -> anyhow::Result<()> {
        self.run_ok_at("fetcher", &["--once"], days)?;
        self.run_ok_at("normalizer", &["--until-idle"], days)?;
        self.run_ok_at("sink", &["--until-idle"], days)?;
        Ok(())
    }
}

/// Runs `command` to its end (at most `limit`), its output captured.
fn run_limited(mut command: Command, name: &str, limit: Duration) -> anyhow::Result<Output> {
    let mut child = command
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

impl Deployment {
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

    /// A `SELECT count() …` (0 while the table does not exist yet).
    pub async fn count(&self, sql: &str) -> u64 {
        let rows = self.query(sql).await.unwrap_or_default();
        rows.first().and_then(|r| r.first()).and_then(|c| c.parse().ok()).unwrap_or(0)
    }

    pub async fn nats(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        let urls: Vec<async_nats::ServerAddr> =
            self.servers.nats_url.split(',').map(str::parse).collect::<Result<_, _>>()?;
        let client = async_nats::connect(urls.as_slice()).await?;
        Ok(async_nats::jetstream::new(client))
    }

    /// Every message currently stored on a stream of this deployment (`base` = contract name).
    pub async fn stream_messages(
        &self,
        base: &str,
    ) -> anyhow::Result<Vec<async_nats::jetstream::message::StreamMessage>> {
        let js = self.nats().await?;
        let name = schemas::subjects::Namespace::new(&self.prefix).stream_named(base);
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
        // Leave the database and streams for inspection when a test failed (or
        // E2E_KEEP_DATABASES is set); delete them otherwise. (Streams left behind had piled up
        // to about 1,400 on a developer's server after a few runs of the suite.)
        if !std::thread::panicking() && std::env::var_os("E2E_KEEP_DATABASES").is_none() {
            let url = format!("{}/", self.servers.clickhouse_url);
            let sql = format!("DROP DATABASE IF EXISTS {}", self.database);
            let nats_url = self.shared_nats.then(|| self.servers.nats_url.clone());
            let streams = schemas::subjects::Namespace::new(&self.prefix).stream_named("");
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                rt.block_on(async {
                    if let Some(nats_url) = nats_url {
                        let delete = delete_streams(&nats_url, &streams);
                        let _ = tokio::time::timeout(Duration::from_secs(5), delete).await;
                    }
                    http().post(url).body(sql).send().await.ok()
                })
            })
            .join();
        }
    }
}

/// Deletes the streams whose names start with `prefix` (one deployment's streams).
async fn delete_streams(nats_url: &str, prefix: &str) -> anyhow::Result<()> {
    use futures::TryStreamExt;
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await?);
    let names: Vec<String> = js.stream_names().try_collect().await?;
    for name in names.iter().filter(|n| n.starts_with(prefix)) {
        js.delete_stream(name).await?;
    }
    Ok(())
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

/// A long-running service of a [`Deployment`], killed on drop.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    child: Option<std::process::Child>,
    /// Where it serves /metrics, /healthz, /readyz.
    pub port: u16,
    /// Its stderr (kept after the test for post-mortems).
    pub log: PathBuf,
}

impl Service {
    /// `kill -9`: no chance to finish anything.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// SIGTERM, then the exit code (within 15 s).
    pub fn terminate(&mut self) -> anyhow::Result<Option<i32>> {
        let Some(mut child) = self.child.take() else { bail!("{} is not running", self.name) };
        match terminate(&mut child, Duration::from_secs(15))? {
            Some(s) => Ok(s.code()),
            None => bail!("{} did not stop within 15 s of SIGTERM; log {}", self.name, self.log.display()),
        }
    }

    /// Still running? (An exit is an error carrying its log.)
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            bail!("{} exited with {status}; log:\n{log}", self.name);
        }
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `nats-server` executable for private servers: `NATS_SERVER`, else on PATH or in /usr/sbin
/// (where Debian puts it; `./scripts/services.sh install` installs it).
pub fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER") {
        return PathBuf::from(p);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "these tests start their own nats-server: install it (./scripts/services.sh install) or set NATS_SERVER"
            )
        })
}

/// A private `nats-server` with JetStream on file storage: one node, or one node of a cluster.
/// It can be killed (`kill -9`) and restarted on the same storage, which the shared server of
/// the other tests cannot.
#[derive(Debug)]
pub struct NatsNode {
    pub port: u16,
    args: Vec<String>,
    child: Option<std::process::Child>,
    log: PathBuf,
    _dir: std::sync::Arc<TempDir>,
}

impl NatsNode {
    /// One server; `extra` are more nats-server arguments (auth, TLS).
    pub async fn single(extra: &[&str]) -> anyhow::Result<Self> {
        let dir = std::sync::Arc::new(TempDir::new(&unique("nats"))?);
        let port = free_port();
        let mut args = vec!["-a".into(), "127.0.0.1".into(), "-p".into(), port.to_string(), "-js".into()];
        args.extend(["-sd".into(), dir.0.join("js").display().to_string()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut node = NatsNode { port, args, child: None, log: dir.0.join("nats.log"), _dir: dir };
        node.start()?;
        Ok(node)
    }

    /// A cluster of `n` nodes on loopback with JetStream; returns when a meta leader is elected.
    pub async fn cluster(n: usize) -> anyhow::Result<Vec<Self>> {
        let dir = std::sync::Arc::new(TempDir::new(&unique("natscluster"))?);
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports.iter().map(|(_, c)| format!("nats://127.0.0.1:{c}")).collect();
        let mut nodes = Vec::new();
        for (i, (port, cluster_port)) in ports.iter().enumerate() {
            let args: Vec<String> = [
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-js",
                "-sd",
                &dir.0.join(format!("n{i}")).display().to_string(),
                "-n",
                &format!("n{i}"),
                "--cluster_name",
                "qoo10test",
                "--cluster",
                &format!("nats://127.0.0.1:{cluster_port}"),
                "--routes",
                &routes.join(","),
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            let mut node =
                NatsNode { port: *port, args, child: None, log: dir.0.join(format!("n{i}.log")), _dir: dir.clone() };
            node.start()?;
            nodes.push(node);
        }
        let url = nodes.iter().map(|n| n.url()).collect::<Vec<_>>().join(",");
        wait_for_jetstream(&url, Duration::from_secs(30)).await?;
        Ok(nodes)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (or restarts) the server on its storage; returns once it accepts connections.
    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(nats_server_bin())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start nats-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "nats-server did not listen; its log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private `clickhouse-server` (the Debian package's binary) with its own data directory and
/// ports: it can be stopped and started again on the same data, which the shared server of the
/// other tests cannot; and it can run with a `users.xml` of the test's own (access control).
#[derive(Debug)]
pub struct ClickHouseNode {
    pub http_port: u16,
    pub tcp_port: u16,
    config: PathBuf,
    child: Option<std::process::Child>,
    log: PathBuf,
    _dir: TempDir,
}

impl ClickHouseNode {
    /// Starts a server; `users_xml` replaces the system's users file when given; `extra_config`
    /// is more server configuration (XML elements), in which `{tcp_port}` is the server's own
    /// native port.
    pub async fn start(users_xml: Option<&str>, extra_config: &str) -> anyhow::Result<Self> {
        let dir = TempDir::new(&unique("clickhouse"))?;
        let d = dir.0.display().to_string();
        let (http_port, tcp_port) = (free_port(), free_port());
        let extra_config = extra_config.replace("{tcp_port}", &tcp_port.to_string());
        let users = match users_xml {
            Some(xml) => {
                let path = dir.0.join("users.xml");
                std::fs::write(&path, xml)?;
                path.display().to_string()
            }
            None => "/etc/clickhouse-server/users.xml".to_owned(),
        };
        let config = dir.0.join("config.xml");
        // The layout ./scripts/services.sh uses, on free ports.
        std::fs::write(
            &config,
            format!(
                "<?xml version=\"1.0\"?>\n<yandex>\n<logger><level>warning</level><log>{d}/server.log</log>\
                 <errorlog>{d}/server.err.log</errorlog></logger>\n<listen_host>127.0.0.1</listen_host>\
                 <http_port>{http_port}</http_port><tcp_port>{tcp_port}</tcp_port>\n<path>{d}/data/</path>\
                 <tmp_path>{d}/tmp/</tmp_path><user_files_path>{d}/user_files/</user_files_path>\
                 <format_schema_path>{d}/format_schemas/</format_schema_path>\n<users_config>{users}</users_config>\
                 <default_profile>default</default_profile><default_database>default</default_database>\
                 <timezone>UTC</timezone><mark_cache_size>268435456</mark_cache_size>\n{extra_config}\n</yandex>\n"
            ),
        )?;
        let mut node =
            ClickHouseNode { http_port, tcp_port, config, child: None, log: dir.0.join("stdout.log"), _dir: dir };
        node.start_again().await?;
        Ok(node)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Runs `sql` as `user` (no database selected); the answer's text, or the server's error.
    /// `user` and `password` go into the URL as they are (test values: no characters to escape).
    pub async fn query_as(&self, user: &str, password: &str, sql: &str) -> anyhow::Result<String> {
        let r =
            http().post(format!("{}/?user={user}&password={password}", self.url())).body(sql.to_owned()).send().await?;
        let status = r.status();
        let text = r.text().await?;
        anyhow::ensure!(status.is_success(), "{text}");
        Ok(text)
    }

    /// Starts the server (again) on its data; returns once `/ping` answers.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new("clickhouse-server")
            .arg(format!("--config-file={}", self.config.display()))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start clickhouse-server (./scripts/services.sh install installs it)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ping = http().get(format!("{}/ping", self.url())).send().await;
            if ping.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(std::process::Child::try_wait) {
                self.child = None;
                bail!("clickhouse-server exited ({status}); its log:\n{}", self.server_log());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "clickhouse-server did not answer; its log:\n{}",
                self.server_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn server_log(&self) -> String {
        let dir = self.config.parent().expect("config in a directory");
        ["stdout.log", "server.err.log"]
            .iter()
            .map(|f| std::fs::read_to_string(dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops the server as an operator would (SIGTERM) and waits until it has exited.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            anyhow::ensure!(
                terminate(&mut c, Duration::from_secs(30))?.is_some(),
                "clickhouse-server did not stop within 30 s of SIGTERM (killed)"
            );
        }
        Ok(())
    }
}

impl Drop for ClickHouseNode {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// SIGTERM, then waits up to `limit` for the exit; past it, `kill -9` and `None`.
fn terminate(child: &mut std::process::Child, limit: Duration) -> anyhow::Result<Option<std::process::ExitStatus>> {
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status()?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `kill -9` of a process still held, and its reaping.
fn kill(child: &mut Option<std::process::Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
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

/// A TLS-terminating proxy in front of a plain server: HTTPS to the shared ClickHouse without
/// reconfiguring it. `cert` and `key` are PEM files (the server certificate and its key).
#[derive(Debug)]
pub struct TlsProxy {
    pub addr: String,
}

impl TlsProxy {
    pub async fn start(upstream: &str, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        runtime::install_crypto_provider();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(cert)?.collect::<Result<_, _>>().context("server certificate")?;
        let key = PrivateKeyDer::from_pem_file(key).context("server key")?;
        let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let upstream = upstream.to_owned();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(client).await else { return };
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                });
            }
        });
        Ok(TlsProxy { addr })
    }
}
