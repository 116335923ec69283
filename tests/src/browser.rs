//! Debian's headless chromium, driven over the DevTools protocol (a WebSocket, JSON commands):
//! load a page, read it with JavaScript, click, take screenshots. Only what the alert center's
//! tests need.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `$CHROMIUM` or `chromium`, checked to run.
pub fn chromium() -> String {
    let name = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = std::process::Command::new(&name)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "{name} not found: install Debian's chromium (./scripts/test.sh does) or set CHROMIUM");
    name
}

/// One headless chromium with one page.
pub struct Browser {
    child: tokio::process::Child,
    ws: Ws,
    next_id: u64,
    _profile: crate::TempDir,
}

impl Browser {
    pub async fn start() -> anyhow::Result<Browser> {
        let profile = crate::TempDir::new(&crate::unique("chromium"))?;
        let mut child = tokio::process::Command::new(chromium())
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .args(["--remote-debugging-port=0", "--window-size=1280,900"])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("about:blank")
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start chromium")?;
        let mut lines = BufReader::new(child.stderr.take().context("chromium stderr")?).lines();
        let browser_ws = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return Ok(url.trim().to_owned());
                }
            }
            anyhow::bail!("chromium exited before listening")
        })
        .await
        .context("chromium did not start its DevTools listener")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = browser_ws.trim_start_matches("ws://127.0.0.1:").split('/').next().unwrap_or_default().to_owned();
        let targets: serde_json::Value =
            crate::http().get(format!("http://127.0.0.1:{port}/json/list")).send().await?.json().await?;
        let page = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .context("no page target")?
            .to_owned();
        let (ws, _) = tokio_tungstenite::connect_async(page).await?;
        Ok(Browser { child, ws, next_id: 0, _profile: profile })
    }

    /// Sends a DevTools command and returns its result (events in between are skipped).
    pub async fn call(&mut self, method: &str, params: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = serde_json::json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::text(msg.to_string())).await?;
        loop {
            let next =
                tokio::time::timeout(Duration::from_secs(30), self.ws.next()).await.context(method.to_owned())?;
            let Some(frame) = next else { anyhow::bail!("DevTools connection closed") };
            let Message::Text(text) = frame? else { continue };
            let v: serde_json::Value = serde_json::from_str(&text)?;
            if v["id"] == id {
                anyhow::ensure!(v.get("error").is_none(), "{method}: {}", v["error"]);
                return Ok(v["result"].clone());
            }
        }
    }

    /// The value of a JavaScript expression on the page.
    pub async fn eval(&mut self, expression: &str) -> anyhow::Result<serde_json::Value> {
        let params = serde_json::json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let r = self.call("Runtime.evaluate", params).await?;
        anyhow::ensure!(r.get("exceptionDetails").is_none(), "{expression}: {}", r["exceptionDetails"]);
        Ok(r["result"]["value"].clone())
    }

    /// Waits until `expression` is truthy on the page (a navigation in between is waited out).
    pub async fn wait_for(&mut self, expression: &str, limit: Duration) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            match self.eval(expression).await {
                Ok(v) if !(v.is_null() || v == false || v == "" || v == 0) => return Ok(v),
                _ if Instant::now() > deadline => anyhow::bail!("never true: {expression}"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Loads `url` and waits until the page is complete.
    pub async fn goto(&mut self, url: &str) -> anyhow::Result<()> {
        self.call("Page.navigate", serde_json::json!({"url": url})).await?;
        let check = format!("document.readyState === 'complete' && location.href === {}", serde_json::json!(url));
        self.wait_for(&check, Duration::from_secs(30)).await.map(|_| ())
    }

    /// Emulates a screen `width` CSS pixels wide (`mobile`: a phone's).
    pub async fn viewport(&mut self, width: u32, height: u32, mobile: bool) -> anyhow::Result<()> {
        let params = serde_json::json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile});
        self.call("Emulation.setDeviceMetricsOverride", params).await.map(|_| ())
    }

    /// Saves a PNG of the whole page.
    pub async fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        let r = self
            .call("Page.captureScreenshot", serde_json::json!({"format": "png", "captureBeyondViewport": true}))
            .await?;
        let png =
            base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().context("no screenshot data")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| path.display().to_string())
    }
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("pid", &self.child.id()).finish_non_exhaustive()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
