//! Small helpers: our binaries (built fresh), free ports, an HTTP client, temporary directories,
//! JSON Schema checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
                // `tests.rs` modules are `#[cfg(test)]`: editing one rebuilds no binary.
                && p.file_name().is_none_or(|f| f != "tests.rs")
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

pub fn http() -> reqwest::Client {
    runtime::install_crypto_provider();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client")
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

/// A plain (core) subscriber: every message published on its subjects as it arrived, also those
/// JetStream then dropped as duplicates (a count through the stream cannot see a re-send inside
/// its duplicate window; this one can).
#[derive(Debug, Clone)]
pub struct Tap {
    seen: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

/// The tap of a deployment's `alerts.>`.
pub type AlertTap = Tap;

impl Tap {
    pub async fn start(nats_url: &str, ns: &schemas::subjects::Namespace) -> anyhow::Result<Tap> {
        Tap::on(nats_url, &ns.stream_subjects(schemas::subjects::Stream::Alerts)).await
    }

    /// Subscribes to `subject` (wildcards allowed); a message that is not JSON is kept as `null`.
    pub async fn on(nats_url: &str, subject: &str) -> anyhow::Result<Tap> {
        use futures::StreamExt;
        let urls: Vec<async_nats::ServerAddr> = nats_url.split(',').map(str::parse).collect::<Result<_, _>>()?;
        let client = async_nats::connect(urls.as_slice()).await?;
        let mut sub = client.subscribe(subject.to_owned()).await?;
        client.flush().await?;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = seen.clone();
        tokio::spawn(async move {
            let _client = client;
            while let Some(m) = sub.next().await {
                let v = serde_json::from_slice(&m.payload).unwrap_or(serde_json::Value::Null);
                into.lock().expect("tap").push(v);
            }
        });
        Ok(Tap { seen })
    }

    /// How many messages arrived so far.
    pub fn count(&self) -> usize {
        self.seen.lock().expect("tap").len()
    }

    /// Messages received so far.
    pub fn all(&self) -> Vec<serde_json::Value> {
        self.seen.lock().expect("tap").clone()
    }

    /// (alert_id, state) received more than once.
    pub fn repeated(&self) -> Vec<(String, usize)> {
        let mut n: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
        for a in self.all() {
            *n.entry(format!("{} {}", a["alert_id"], a["state"])).or_default() += 1;
        }
        n.into_iter().filter(|(_, c)| *c > 1).collect()
    }
}

/// Webhook bodies received, with when each arrived.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>;

/// A webhook receiver on a free port: `answer(n)` is the status line (and headers) of the `n`th
/// request (from 1); it keeps every body. Returns its URL.
pub async fn webhook_receiver(
    answer: impl Fn(usize) -> &'static str + Send + 'static,
) -> anyhow::Result<(String, Received)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let seen: Received = Default::default();
    let into = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            while let Ok(k) = sock.read(&mut chunk).await {
                if k == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).to_string();
                let Some(end) = text.find("\r\n\r\n") else { continue };
                let len: usize = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                    into.lock().expect("received").push((std::time::Instant::now(), body));
                    break;
                }
            }
            n += 1;
            let reply = format!("HTTP/1.1 {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", answer(n));
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    Ok((url, seen))
}
