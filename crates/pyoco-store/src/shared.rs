//! A store that connects in the background, for long-running processes.
//!
//! The gateway must start (and answer `/health`) while NATS is still down, answer
//! `503 nats unavailable: NotConnected` until it is up, and recover by itself afterwards
//! (§14-21). [`SharedStore::connect_in_background`] gives that: one client that keeps trying,
//! resources ensured as soon as it connects, and a cheap [`SharedStore::get`] for handlers.

use std::time::Duration;

use async_nats::connection::State;
use tokio::sync::watch;

use crate::{NatsConnect, Store, StoreConfig, StoreError};

/// A [`Store`] that becomes available once NATS answers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SharedStore {
    rx: watch::Receiver<Option<Store>>,
    /// Why it is not connected yet (the last attempt's error), until the first connection.
    problem: watch::Receiver<Option<String>>,
}

/// How often a connection that keeps failing the same way is reported again at error level.
const REPEAT_ERROR_EVERY: Duration = Duration::from_secs(60);

impl SharedStore {
    /// Start connecting to `url` in the background and return at once.
    pub fn connect_in_background(url: &str, client_name: &str, cfg: StoreConfig) -> SharedStore {
        SharedStore::connect_in_background_with(NatsConnect::url(url), client_name, cfg)
    }

    /// Start connecting as `target` says (several URLs, TLS, credentials) in the background
    /// and return at once. Each failed attempt is kept as [`SharedStore::problem`] and logged
    /// at error level (once per distinct error, then every minute while it lasts), with the
    /// settings to look at.
    pub fn connect_in_background_with(
        target: NatsConnect,
        client_name: &str,
        cfg: StoreConfig,
    ) -> SharedStore {
        let (tx, rx) = watch::channel(None);
        let (problem_tx, problem) = watch::channel(Some(format!(
            "connecting to NATS at {}",
            target.redacted_url()
        )));
        let client_name = client_name.to_string();
        tokio::spawn(async move {
            let url = target.redacted_url();
            let mut delay = Duration::from_millis(100);
            let mut reported: Option<(String, tokio::time::Instant)> = None;
            let client = loop {
                if tx.is_closed() {
                    return;
                }
                match target
                    .connect_once(&client_name, Duration::from_secs(2))
                    .await
                {
                    Ok(client) => break client,
                    Err(err) => {
                        let text = err.to_string();
                        let now = tokio::time::Instant::now();
                        let repeat = match &reported {
                            Some((last, at)) => *last == text && now - *at < REPEAT_ERROR_EVERY,
                            None => false,
                        };
                        if repeat {
                            tracing::debug!(%url, "still cannot connect to NATS: {text}");
                        } else {
                            tracing::error!(%url, "cannot connect to NATS: {text}");
                            reported = Some((text.clone(), now));
                        }
                        let _ = problem_tx.send(Some(text));
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
            };
            if reported.is_some() {
                tracing::info!(%url, "connected to NATS");
            }
            let mut delay = Duration::from_millis(100);
            loop {
                if tx.is_closed() {
                    return;
                }
                if client.connection_state() == State::Connected {
                    match Store::from_client(client.clone(), cfg.clone()).await {
                        Ok(store) => {
                            tracing::info!(%url, "connected to NATS; JetStream resources ready");
                            let _ = problem_tx.send(None);
                            let _ = tx.send(Some(store));
                            return;
                        }
                        Err(err) => {
                            let text = format!("preparing JetStream resources failed: {err}");
                            let now = tokio::time::Instant::now();
                            let repeat = match &reported {
                                Some((last, at)) => *last == text && now - *at < REPEAT_ERROR_EVERY,
                                None => false,
                            };
                            if repeat {
                                tracing::debug!(%url, "{text}; retrying");
                            } else if err.unavailable_kind() == Some("SettingsError") {
                                // A setting that cannot work with this server (replicas on a
                                // single node): an operator has to act.
                                tracing::error!(%url, "{text}; retrying");
                            } else {
                                tracing::warn!(%url, "{text}; retrying");
                            }
                            if !repeat {
                                reported = Some((text.clone(), now));
                            }
                            let _ = problem_tx.send(Some(text));
                        }
                    }
                } else {
                    tracing::debug!(%url, "waiting for NATS");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
        SharedStore { rx, problem }
    }

    /// Why the store was never ready (the last connection attempt's error, which names the
    /// settings to check), or `None` once it connected — a later outage is not reported
    /// here ([`SharedStore::get`] says `Disconnected` then).
    pub fn problem(&self) -> Option<String> {
        if self.rx.borrow().is_some() {
            return None;
        }
        Some(
            self.problem
                .borrow()
                .clone()
                .unwrap_or_else(|| "not connected to NATS".to_string()),
        )
    }

    /// A store that never connects (a placeholder until the real one is known): `get` says
    /// "not connected" and `wait_ready` fails at once.
    pub fn disconnected() -> SharedStore {
        let (_tx, rx) = watch::channel(None);
        let (_ptx, problem) = watch::channel(Some("not connected to NATS".to_string()));
        SharedStore { rx, problem }
    }

    /// A store that is ready now (tests, and callers that connected themselves).
    pub fn ready(store: Store) -> SharedStore {
        let (_tx, rx) = watch::channel(Some(store));
        let (_ptx, problem) = watch::channel(None);
        SharedStore { rx, problem }
    }

    /// The store, if connected; `Unavailable("NotConnected")` before the first connection and
    /// `Unavailable("Disconnected")` while the connection is down.
    pub fn get(&self) -> Result<Store, StoreError> {
        let store =
            self.rx.borrow().clone().ok_or_else(|| {
                StoreError::unavailable("NotConnected", "not connected to NATS yet")
            })?;
        store.check_connected()?;
        Ok(store)
    }

    /// Wait until the store is ready (first connection made and resources ensured).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Store, StoreError> {
        let mut rx = self.rx.clone();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|s| s.is_some())).await;
        match waited {
            Ok(Ok(store)) => Ok(store.clone().expect("checked is_some")),
            Ok(Err(_)) => Err(StoreError::unavailable(
                "NotConnected",
                "connection task ended",
            )),
            Err(_) => Err(StoreError::unavailable(
                "NotConnected",
                format!("not connected to NATS within {timeout:?}"),
            )),
        }
    }
}
