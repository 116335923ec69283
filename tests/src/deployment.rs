//! A whole deployment under test: a config file, the sandbox, and our services as processes.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::*;

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
        let extra = with_center_token(extra);
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

    /// On a private NATS server, with the contract's own subjects and stream names (no prefix):
    /// as deploy/nats.conf's permissions name them.
    pub async fn on_nats_unprefixed(nats_url: &str, extra: &str) -> anyhow::Result<Self> {
        let mut dep = Deployment::on_nats(nats_url, extra).await?;
        let text = std::fs::read_to_string(&dep.config_path)?;
        let line = format!("subject_prefix = \"{}\"", dep.prefix);
        std::fs::write(&dep.config_path, text.replacen(&line, "subject_prefix = \"\"", 1))?;
        dep.prefix = String::new();
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
        self.command_shifted(name, args, None)
    }

    /// [`Deployment::command`] with the process's clock shifted by `offset` (`faketime`'s
    /// `+2d`, `-3h`, `+4m`; from Debian's package; monotonic time is left alone, so timers and
    /// timeouts run as usual).
    fn command_shifted(&self, name: &str, args: &[&str], offset: Option<&str>) -> Command {
        let mut command = match offset {
            None => Command::new(bin(name)),
            Some(offset) => {
                let mut c = Command::new("faketime");
                c.arg("-f").arg(offset).arg(bin(name)).env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
                c
            }
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
                // A stream whose stage has not made its consumer yet is not drained: nothing read it.
                let expected = match base {
                    Stream::Raw => Some("normalizer"),
                    Stream::Orders => Some("sink"),
                    Stream::Polls => Some("sink-polls"),
                    Stream::OmsEdits => Some("sink-edits"),
                    _ => None,
                };
                let held = stream.cached_info().state.messages;
                if let Some(c) = expected.filter(|c| held > 0 && !names.iter().any(|n| n == c)) {
                    busy = true;
                    last.push_str(&format!("{}: {held} messages and no consumer {c} yet; ", base.base()));
                }
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
        let offset = (days != 0).then(|| format!("{days:+}d"));
        self.run_ok_shifted(name, args, offset.as_deref())
    }

    /// Runs one of our binaries with its clock shifted by `offset` (`-3h`, `+4m`; see
    /// [`Deployment::command_shifted`]) and requires exit code 0.
    pub fn run_ok_shifted(&self, name: &str, args: &[&str], offset: Option<&str>) -> anyhow::Result<Output> {
        let out = run_limited(self.command_shifted(name, args, offset), name, Duration::from_secs(120))?;
        if !out.status.success() {
            bail!(
                "{name} {args:?} (clock {offset:?}) exited with {}; stderr:\n{}",
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

    /// A `SELECT count() …` (0 while the table or database does not exist yet). Any other
    /// error fails the test: a query that cannot run must not read as "nothing there".
    pub async fn count(&self, sql: &str) -> u64 {
        let rows = match self.query(sql).await {
            Ok(rows) => rows,
            Err(e) if e.to_string().contains("doesn't exist") => return 0,
            Err(e) => panic!("{e:#}"),
        };
        rows.first().and_then(|r| r.first()).and_then(|c| c.parse().ok()).unwrap_or(0)
    }

    /// Collects what a plain NATS subscriber of `alerts.>` receives from now on (no JetStream,
    /// no de-duplication): what an alert subscriber really sees.
    pub async fn alert_tap(&self) -> anyhow::Result<crate::AlertTap> {
        crate::AlertTap::start(&self.servers.nats_url, &schemas::subjects::Namespace::new(&self.prefix)).await
    }

    /// A plain subscriber of this deployment's `stream`'s subjects (e.g. `Stream::Raw`).
    pub async fn tap(&self, stream: schemas::subjects::Stream) -> anyhow::Result<crate::Tap> {
        let ns = schemas::subjects::Namespace::new(&self.prefix);
        crate::Tap::on(&self.servers.nats_url, &ns.stream_subjects(stream)).await
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
            use async_nats::jetstream::stream::RawMessageErrorKind;
            match stream.get_raw_message(seq).await {
                Ok(m) => out.push(m),
                // A message deleted from the middle of the stream (an erasure) leaves a gap.
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {}
                Err(e) => anyhow::bail!("read {name} #{seq}: {e}"),
            }
        }
        Ok(out)
    }
}

/// The token tests use for the alert center where they set none: the sink requires one when a
/// shop has write-back (the center's fix reaches Qoo10).
pub const CENTER_TOKEN: &str = "e2e-center-token-7c1d";

/// `extra` with `[sink] http_token` set, unless it sets one itself.
fn with_center_token(extra: &str) -> String {
    if extra.contains("http_token") {
        return extra.to_owned();
    }
    let line = format!("http_token = \"{CENTER_TOKEN}\"\n");
    if let Some(at) = extra.find("[sink]\n").filter(|at| *at == 0 || extra[..*at].ends_with('\n')) {
        let after = at + "[sink]\n".len();
        return format!("{}{line}{}", &extra[..after], &extra[after..]);
    }
    format!("{extra}\n[sink]\n{line}")
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
