//! A store that connects in the background, for long-running processes.
//!
//! The gateway must start (and answer `/health`) while NATS is still down, answer
//! `503 nats unavailable: NotConnected` until it is up, and recover by itself afterwards
//! (§14-21). [`SharedStore::connect_in_background`] gives that: one client that keeps trying,
//! resources ensured as soon as it connects, and a cheap [`SharedStore::get`] for handlers.

use std::time::Duration;

use async_nats::connection::State;
use tokio::sync::watch;

use crate::{Store, StoreConfig, StoreError};

/// A [`Store`] that becomes available once NATS answers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SharedStore {
    rx: watch::Receiver<Option<Store>>,
}

impl SharedStore {
    /// Start connecting to `url` in the background and return at once.
    pub fn connect_in_background(url: &str, client_name: &str, cfg: StoreConfig) -> SharedStore {
        let (tx, rx) = watch::channel(None);
        let url = url.to_string();
        let client_name = client_name.to_string();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            let client = loop {
                let options = async_nats::ConnectOptions::new()
                    .name(&client_name)
                    .max_reconnects(None)
                    .connection_timeout(Duration::from_secs(2))
                    .retry_on_initial_connect();
                match options.connect(&url).await {
                    Ok(client) => break client,
                    Err(err) => {
                        // Only a bad URL fails here; keep saying so.
                        tracing::error!(%url, "cannot connect to NATS: {err}");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            };
            loop {
                if tx.is_closed() {
                    return;
                }
                if client.connection_state() == State::Connected {
                    match Store::from_client(client.clone(), cfg.clone()).await {
                        Ok(store) => {
                            tracing::info!(%url, "connected to NATS; JetStream resources ready");
                            let _ = tx.send(Some(store));
                            return;
                        }
                        Err(err) => {
                            tracing::warn!(%url, "preparing JetStream resources failed, retrying: {err}")
                        }
                    }
                } else {
                    tracing::debug!(%url, "waiting for NATS");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
        SharedStore { rx }
    }

    /// A store that never connects (a placeholder until the real one is known): `get` says
    /// "not connected" and `wait_ready` fails at once.
    pub fn disconnected() -> SharedStore {
        let (_tx, rx) = watch::channel(None);
        SharedStore { rx }
    }

    /// A store that is ready now (tests, and callers that connected themselves).
    pub fn ready(store: Store) -> SharedStore {
        let (_tx, rx) = watch::channel(Some(store));
        SharedStore { rx }
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
