//! Settings → Auth → API keys: create, list and revoke the gateway's keys from the window, as
//! `pyoco-server-admin` does (the same records, the same pepper: the app's settings), against
//! the NATS the app runs.

use std::time::Duration;

use pyoco_store::{CreateKeyError, SharedStore, StoreError};
use serde::Serialize;

use crate::{CommandError, DesktopApp};

/// One key as the window lists it (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKeyView {
    pub key_id: String,
    pub tenant_id: String,
    pub created_at: f64,
    pub revoked_at: Option<f64>,
}

/// The keys, newest first, and what the window says about them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKeys {
    pub keys: Vec<ApiKeyView>,
    /// The saved `PYOCO_HTTP_AUTH_MODE` (`none` or `api_key`).
    pub auth_mode: String,
    /// Whether `PYOCO_AUTH_PEPPER` is set.
    pub pepper_set: bool,
}

/// A key just made: the plain key is shown once and never again.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreatedKey {
    pub key_id: String,
    pub tenant_id: String,
    pub api_key: String,
    pub created_at: f64,
}

/// A revoked key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RevokedKey {
    pub key_id: String,
    pub revoked_at: f64,
}

/// How long a command waits for the app's NATS connection.
const NATS_WAIT: Duration = Duration::from_secs(5);

fn nats_error(err: StoreError) -> CommandError {
    CommandError::new(format!(
        "cannot reach the app's NATS ({err}); wait until NATS is running (top of the window) and \
         try again"
    ))
}

impl DesktopApp {
    /// The store of the running stack, once NATS answers.
    async fn key_store(&self) -> Result<pyoco_store::Store, CommandError> {
        let shared: SharedStore = {
            let inner = self.inner.lock().await;
            let appliance = inner.appliance.as_ref().ok_or_else(|| {
                CommandError::new("the stack is not running: start it first (Restart all)")
            })?;
            appliance.store().clone()
        };
        shared.wait_ready(NATS_WAIT).await.map_err(nats_error)
    }

    /// Every key, newest first, with the saved auth mode.
    pub async fn list_api_keys(&self) -> Result<ApiKeys, CommandError> {
        let settings = self.load_settings()?;
        let store = self.key_store().await?;
        let keys = store
            .list_api_keys()
            .await
            .map_err(nats_error)?
            .into_iter()
            .map(|r| ApiKeyView {
                key_id: r.key_id,
                tenant_id: r.tenant_id,
                created_at: r.created_at,
                revoked_at: r.revoked_at,
            })
            .collect();
        Ok(ApiKeys {
            keys,
            auth_mode: settings.http_auth_mode.as_str().to_string(),
            pepper_set: settings
                .auth_pepper
                .as_deref()
                .is_some_and(|p| !p.is_empty()),
        })
    }

    /// Make a key for `tenant`, hashed with the saved pepper.
    pub async fn create_api_key(&self, tenant: &str) -> Result<CreatedKey, CommandError> {
        let tenant = tenant.trim();
        // Checked before NATS is asked, with the message the store would give.
        if !pyoco_wire::is_valid_tenant_id(tenant) {
            let err = pyoco_wire::InvalidTenantId(tenant.to_string());
            return Err(CommandError::new(err.to_string()));
        }
        let settings = self.load_settings()?;
        let pepper = settings.auth_pepper.unwrap_or_default();
        let store = self.key_store().await?;
        let made = store
            .create_api_key(tenant, &pepper)
            .await
            .map_err(|err| match err {
                CreateKeyError::InvalidTenant(e) => CommandError::new(e.to_string()),
                CreateKeyError::Store(e) => nats_error(e),
            })?;
        tracing::info!(key_id = %made.record.key_id, tenant, "API key created");
        Ok(CreatedKey {
            key_id: made.record.key_id,
            tenant_id: made.record.tenant_id,
            api_key: made.api_key,
            created_at: made.record.created_at,
        })
    }

    /// Revoke key `key_id`: every gateway refuses it within a second.
    pub async fn revoke_api_key(&self, key_id: &str) -> Result<RevokedKey, CommandError> {
        let store = self.key_store().await?;
        match store.revoke_api_key(key_id).await {
            Ok(Some(revoked_at)) => {
                tracing::info!(key_id, "API key revoked");
                Ok(RevokedKey {
                    key_id: key_id.to_string(),
                    revoked_at,
                })
            }
            Ok(None) => Err(CommandError::new(format!(
                "no API key {key_id:?}: refresh the list"
            ))),
            Err(err) => Err(nats_error(err)),
        }
    }
}
