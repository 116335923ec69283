//! The run's surroundings: servers, child processes, what `/proc` says they used.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use chrono::Utc;
use schemas::config::NatsConfig;

/// Where the run happens: the servers, the release binaries, a work directory for configs and
/// logs, and the run's stamp (in every stream and database name, so clean-up finds them).
pub struct Env {
    pub nats_url: String,
    pub ch_url: String,
    pub bin: PathBuf,
    pub work: PathBuf,
    pub stamp: String,
}

impl Env {
    /// `NATS_URL` and `CLICKHOUSE_URL` (local defaults), the binaries next to this one.
    pub fn from_environment() -> anyhow::Result<Env> {
        let exe = std::env::current_exe()?;
        let env = Env {
            nats_url: std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
            ch_url: std::env::var("CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into()),
            bin: exe.parent().context("binary directory")?.to_path_buf(),
            work: std::env::temp_dir().join("qoo10-bench"),
            stamp: Utc::now().format("%Y%m%d%H%M%S").to_string(),
        };
        std::fs::create_dir_all(&env.work)?;
        Ok(env)
    }

    /// A name of this run: `bench_<what>_<stamp>`, a subject prefix and a database.
    pub fn name(&self, what: &str) -> String {
        format!("bench_{what}_{}", self.stamp)
    }

    pub fn config(&self, prefix: &str, extra: &str) -> anyhow::Result<PathBuf> {
        let path = self.work.join(format!("{prefix}.toml"));
        std::fs::write(
            &path,
            format!(
                "[nats]\nurl = \"{}\"\nsubject_prefix = \"{prefix}\"\nduplicate_window = \"2m\"\n\n[clickhouse]\nurl = \"{}\"\ndatabase = \"{prefix}\"\n\n{extra}\n",
                self.nats_url, self.ch_url
            ),
        )?;
        Ok(path)
    }

    pub fn spawn(&self, name: &str, config: &Path, http: &str, args: &[&str]) -> anyhow::Result<Child> {
        // One log per service and run phase (the config file is the phase's).
        let phase = config.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
        let log = std::fs::File::create(self.work.join(format!("{name}-{phase}.log")))?;
        Command::new(self.bin.join(name))
            .arg("--config")
            .arg(config)
            .args(args)
            .env("HTTP_LISTEN", http)
            .env("RUST_LOG", "warn")
            .env_remove("NATS_URL")
            .env_remove("CLICKHOUSE_URL")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {name}"))
    }
}

pub async fn connect(env: &Env, prefix: &str) -> anyhow::Result<(jetstream::Context, NatsConfig)> {
    let mut cfg = NatsConfig::default();
    (cfg.url, cfg.subject_prefix) = (env.nats_url.clone(), prefix.to_owned());
    let (_, js) = runtime::nats::connect_jetstream(&cfg, "pipeline-bench").await?;
    Ok((js, cfg))
}

pub fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds (user, system) a process has used so far.
pub fn cpu_times(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may hold spaces: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) / 100.0, field(12) / 100.0)
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_s(pid: u32) -> f64 {
    let (user, system) = cpu_times(pid);
    hundredths(user + system)
}

/// CPU seconds (user, system) of every process whose name is `comm` (the local NATS and
/// ClickHouse servers).
pub fn cpu_of_all(comm: &str) -> (f64, f64) {
    let Ok(dir) = std::fs::read_dir("/proc") else { return (0.0, 0.0) };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm))
        .map(cpu_times)
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Seconds to one decimal.
pub fn tenths(s: f64) -> f64 {
    (s * 10.0).round() / 10.0
}

/// To two decimals (seconds, ratios).
pub fn hundredths(s: f64) -> f64 {
    (s * 100.0).round() / 100.0
}

/// (user, system) CPU seconds used between two readings.
pub fn used(before: (f64, f64), after: (f64, f64)) -> (f64, f64) {
    (after.0 - before.0, after.1 - before.1)
}

pub fn stop(mut child: Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub async fn ch_count(ch_url: &str, sql: &str) -> u64 {
    let Ok(r) = reqwest::Client::new().post(format!("{ch_url}/")).body(sql.to_owned()).send().await else { return 0 };
    r.text().await.ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

pub async fn wait_for_rows(env: &Env, db: &str, n: usize, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if ch_count(&env.ch_url, &format!("SELECT count() FROM {db}.order_versions")).await >= n as u64 {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < limit, "{n} rows not in {db}.order_versions within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most two minutes) until ClickHouse runs no merge.
pub async fn wait_for_quiet(env: &Env) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120)
        && ch_count(&env.ch_url, "SELECT count() FROM system.merges").await > 0
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("waited {:.1} s for ClickHouse's merges to finish", started.elapsed().as_secs_f64());
}

/// Deletes this run's streams (their names carry the run's stamp) and ClickHouse databases.
/// Failures are reported, not fatal: the figures are already taken.
pub async fn clean_up(env: &Env) {
    use futures::TryStreamExt;
    let stamp = env.stamp.as_str();
    match connect(env, "").await {
        Ok((js, _)) => {
            let names: Vec<String> = js.stream_names().try_collect().await.unwrap_or_default();
            for name in names.iter().filter(|n| n.starts_with("BENCH_") && n.contains(stamp)) {
                if let Err(e) = js.delete_stream(name).await {
                    eprintln!("clean-up: stream {name}: {e}");
                }
            }
        }
        Err(e) => eprintln!("clean-up: {e:#}"),
    }
    let http = reqwest::Client::new();
    let list = http.post(format!("{}/", env.ch_url)).body("SHOW DATABASES").send().await;
    let dbs = match list {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => return eprintln!("clean-up: {e}"),
    };
    for db in dbs.lines().filter(|d| d.starts_with("bench_") && d.ends_with(stamp)) {
        if let Err(e) = http.post(format!("{}/", env.ch_url)).body(format!("DROP DATABASE {db}")).send().await {
            eprintln!("clean-up: database {db}: {e}");
        }
    }
}

/// The server's version, its `sync_interval` (from its monitoring port: `NATS_MONITOR_URL`,
/// http://127.0.0.1:8222 by default; "unknown" when that does not answer) and the publish mode
/// the stages choose on it.
pub async fn nats_settings(env: &Env) -> crate::report::NatsSettings {
    let (version, publish_mode) = match async_nats::connect(&env.nats_url).await {
        Ok(c) => {
            let mode = runtime::batch::PublishMode::for_server(&c);
            (c.server_info().version, format!("{mode:?}"))
        }
        Err(e) => (format!("unreachable: {e}"), "unknown".into()),
    };
    let monitor = std::env::var("NATS_MONITOR_URL").unwrap_or_else(|_| "http://127.0.0.1:8222".into());
    let jsz = async {
        let v: serde_json::Value = reqwest::get(format!("{monitor}/jsz?config=true")).await.ok()?.json().await.ok()?;
        let config = v.get("config")?;
        Some(if config.get("sync_always").and_then(serde_json::Value::as_bool) == Some(true) {
            "always".to_owned()
        } else {
            let ns = config.get("sync_interval").and_then(serde_json::Value::as_u64).unwrap_or(0);
            format!("default ({} s)", ns / 1_000_000_000)
        })
    };
    let sync_interval = jsz.await.unwrap_or_else(|| "unknown".into());
    crate::report::NatsSettings { version, sync_interval, publish_mode }
}
