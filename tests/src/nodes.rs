//! Processes a test starts and stops itself: one service, a NATS node, a ClickHouse node.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::*;

/// A long-running service of a [`Deployment`], killed on drop.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub(crate) child: Option<std::process::Child>,
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

    /// SIGSTOP: the process stands still (as in a long GC pause or a frozen VM), holding what it
    /// held; [`Service::resume`] lets it go on from there.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// SIGCONT after [`Service::pause`].
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let Some(child) = self.child.as_ref() else { bail!("{} is not running", self.name) };
        let status = Command::new("kill").arg(sig).arg(child.id().to_string()).status()?;
        anyhow::ensure!(status.success(), "kill {sig} {}: {status}", self.name);
        Ok(())
    }

    /// SIGTERM, then the exit code (within 15 s).
    pub fn terminate(&mut self) -> anyhow::Result<Option<i32>> {
        let Some(mut child) = self.child.take() else { bail!("{} is not running", self.name) };
        match terminate(&mut child, Duration::from_secs(15))? {
            Some(s) => Ok(s.code()),
            None => bail!("{} did not stop within 15 s of SIGTERM; log {}", self.name, self.log.display()),
        }
    }

    /// `/readyz`: its status code and its one-line body.
    pub async fn readyz(&self) -> anyhow::Result<(u16, String)> {
        let r = http().get(format!("http://127.0.0.1:{}/readyz", self.port)).send().await?;
        Ok((r.status().as_u16(), r.text().await?.trim().to_owned()))
    }

    /// The sum of every sample of `metric` on its `/metrics` (0 when it has none yet).
    pub async fn metric(&self, metric: &str) -> anyhow::Result<f64> {
        let text = http().get(format!("http://127.0.0.1:{}/metrics", self.port)).send().await?.text().await?;
        Ok(text
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(metric))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Waits (at most `limit`) until `/readyz` answers `code`; returns its body.
    pub async fn wait_readyz(&self, code: u16, limit: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let last = self.readyz().await.unwrap_or((0, "no answer".into()));
            if last.0 == code {
                return Ok(last.1);
            }
            anyhow::ensure!(Instant::now() < deadline, "{}: /readyz {last:?}, not {code}, within {limit:?}", self.name);
            tokio::time::sleep(Duration::from_millis(200)).await;
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

/// The one of `services` whose `/readyz` answers 200, once exactly one does and the others
/// answer 503 `standby`.
pub async fn the_active(services: &[&Service], limit: Duration) -> anyhow::Result<usize> {
    let deadline = Instant::now() + limit;
    loop {
        let mut states = Vec::new();
        for s in services {
            states.push(s.readyz().await.unwrap_or((0, String::new())));
        }
        let ready: Vec<usize> = (0..states.len()).filter(|i| states[*i].0 == 200).collect();
        let standby = states.iter().filter(|(c, b)| *c == 503 && b.contains("standby")).count();
        if ready.len() == 1 && standby == services.len() - 1 {
            return Ok(ready[0]);
        }
        anyhow::ensure!(Instant::now() < deadline, "not one active and the rest standby: {states:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
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
    /// More environment for the server (variables its configuration file refers to).
    env: Vec<(String, String)>,
    child: Option<std::process::Child>,
    log: PathBuf,
    _dir: std::sync::Arc<TempDir>,
}

impl NatsNode {
    /// One server; `extra` are more nats-server arguments (auth, TLS).
    pub async fn single(extra: &[&str]) -> anyhow::Result<Self> {
        Self::single_env(extra, &[]).await
    }

    /// [`NatsNode::single`] with environment variables for the server.
    pub async fn single_env(extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = std::sync::Arc::new(TempDir::new(&unique("nats"))?);
        let port = free_port();
        let mut args = vec!["-a".into(), "127.0.0.1".into(), "-p".into(), port.to_string(), "-js".into()];
        args.extend(["-sd".into(), dir.0.join("js").display().to_string()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut node = NatsNode { port, args, env, child: None, log: dir.0.join("nats.log"), _dir: dir };
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
            let mut node = NatsNode {
                port: *port,
                args,
                env: Vec::new(),
                child: None,
                log: dir.0.join(format!("n{i}.log")),
                _dir: dir.clone(),
            };
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
            .envs(self.env.iter().map(|(k, v)| (k, v)))
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
