//! Headless Chromium through chromedriver, for the dashboard measurement (`--dashboard`).
//!
//! chromedriver is one more [`ChildProc`] (own process group, killed with the bench; the
//! Chromium processes it starts are its descendants and go with it). Every [`Browser::session`]
//! is a new Chromium with a fresh profile: empty cache, empty `localStorage`, so each page load
//! is a first visit. The page load strategy is `none`: `goto` returns as soon as the navigation
//! has started, and the bench watches the page itself instead of waiting for its `load` event.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

use crate::procs::{self, ChildProc, Spawn};

/// The Chromium command-line flags of every session (as the browser tests use).
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
    "--lang=en-US",
];

/// Where chromedriver and Chromium are (Debian's `chromium-driver` and `chromium`), or why the
/// dashboard cannot be measured.
pub fn find() -> Result<(PathBuf, PathBuf)> {
    let hint = "install them with bash scripts/setup.sh --with-browser";
    let driver = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("chromedriver"))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("no chromedriver on PATH ({hint})"))?;
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| anyhow!("no /usr/bin/chromium ({hint})"))?;
    Ok((driver, chromium))
}

pub struct Browser {
    driver: ChildProc,
    port: u16,
    chromium: PathBuf,
}

impl Browser {
    /// Start chromedriver (log `chromedriver.log` in `dir`); sessions are made on demand.
    pub fn start(driver: &Path, chromium: &Path, dir: &Path) -> Result<Browser> {
        let port = procs::free_port()?;
        let driver = ChildProc::spawn(Spawn {
            name: "chromedriver".into(),
            program: driver.to_path_buf(),
            args: vec![format!("--port={port}")],
            env: vec![],
            cwd: dir,
            log: dir.join("chromedriver.log"),
        })?;
        Ok(Browser {
            driver,
            port,
            chromium: chromium.to_path_buf(),
        })
    }

    /// A new Chromium (fresh profile) on this chromedriver; retried for 30 s while
    /// chromedriver starts.
    pub async fn session(&mut self) -> Result<Client> {
        let caps = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "none",
            "goog:chromeOptions": { "binary": self.chromium, "args": CHROMIUM_ARGS },
        });
        let caps = caps.as_object().cloned().unwrap_or_default();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.driver.exited() {
                bail!(
                    "chromedriver exited ({st}); last log lines:\n{}",
                    self.driver.log_tail(15)
                );
            }
            match ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{}", self.port))
                .await
            {
                Ok(client) => return Ok(client),
                Err(e) if Instant::now() >= deadline => {
                    bail!(
                        "no Chromium session from chromedriver within 30 s: {e}; chromedriver log:\n{}",
                        self.driver.log_tail(15)
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    pub async fn stop(self) {
        self.driver.stop(Duration::from_secs(5)).await;
    }
}

/// Run `script` in the page every ~5 ms until it returns something truthy (not null, false,
/// 0 or ""); when that was seen, and the value. Errors while the page is being replaced
/// (navigation in progress) count as "not yet".
pub async fn poll_until(
    client: &Client,
    script: &str,
    args: &[Value],
    timeout: Duration,
    what: &str,
) -> Result<(Instant, Value)> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.execute(script, args.to_vec()).await {
            Ok(v) if truthy(&v) => return Ok((Instant::now(), v)),
            Ok(v) => format!("the page answered {v}"),
            Err(e) => format!("error: {e}"),
        };
        if Instant::now() >= deadline {
            bail!("{what}: not seen within {timeout:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `script`'s value, with the context of what it was for.
pub async fn eval(client: &Client, script: &str, args: &[Value], what: &str) -> Result<Value> {
    client
        .execute(script, args.to_vec())
        .await
        .with_context(|| what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness_is_javascripts() {
        assert!(!truthy(&Value::Null));
        assert!(!truthy(&json!(false)));
        assert!(!truthy(&json!(0)));
        assert!(!truthy(&json!("")));
        assert!(truthy(&json!(3)));
        assert!(truthy(&json!(0.5)));
        assert!(truthy(&json!("x")));
        assert!(truthy(&json!({})));
    }
}
