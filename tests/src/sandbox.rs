//! The Qoo10 sandbox as a process, and its control API.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::*;

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
