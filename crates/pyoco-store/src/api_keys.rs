//! The API keys in the auth bucket (`api_keys.<key_id>`, contract §2.6): create, list and
//! revoke them exactly as pyoco-server 0.5.1's admin CLI does, so either implementation's
//! gateways accept them. Used by `pyoco-server-admin` and the desktop app.

use std::num::NonZeroU32;

use pyoco_wire::{
    is_valid_kv_key, new_api_key, python, ApiKeyRecord, InvalidTenantId, NewApiKey,
    DEFAULT_PBKDF2_ITERATIONS,
};
use thiserror::Error;

use crate::{Store, StoreError};

/// Why a key could not be made.
#[derive(Debug, Error)]
pub enum CreateKeyError {
    #[error(transparent)]
    InvalidTenant(#[from] InvalidTenantId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Make a key for `tenant_id` hashed with `pepper` (200000 PBKDF2 rounds, on a blocking
    /// thread) and store its record; the plain key is in the answer and nowhere else.
    pub async fn create_api_key(
        &self,
        tenant_id: &str,
        pepper: &str,
    ) -> Result<NewApiKey, CreateKeyError> {
        let rounds = NonZeroU32::new(DEFAULT_PBKDF2_ITERATIONS).expect("not zero");
        let (tenant_id, pepper) = (tenant_id.to_string(), pepper.to_string());
        let made = tokio::task::spawn_blocking(move || {
            new_api_key(&tenant_id, &pepper, rounds, python::time())
        })
        .await
        .map_err(|e| StoreError::unavailable("Internal", e.to_string()))??;
        self.auth()
            .create(
                &ApiKeyRecord::kv_key(&made.record.key_id),
                made.record.to_json(),
            )
            .await?;
        Ok(made)
    }

    /// Every readable key record, newest first (unreadable records are left out, as 0.5.1
    /// does); an empty bucket is an empty list.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let bucket = self.auth();
        let mut records = Vec::new();
        for key in bucket.keys().await? {
            if !key.starts_with("api_keys.") {
                continue;
            }
            if let Some(entry) = bucket.get(&key).await? {
                if let Ok(record) = ApiKeyRecord::from_json(&entry.value) {
                    records.push(record);
                }
            }
        }
        records.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
        Ok(records)
    }

    /// Revoke key `key_id` by compare-and-set and return its revocation time; `None` when no
    /// such key exists. A key already revoked keeps its first revocation time (0.5.1
    /// overwrote it). An unreadable record is [`StoreError::Corrupt`].
    pub async fn revoke_api_key(&self, key_id: &str) -> Result<Option<f64>, StoreError> {
        if !is_valid_kv_key(key_id) {
            return Ok(None);
        }
        let bucket = self.auth();
        let kv_key = ApiKeyRecord::kv_key(key_id);
        loop {
            let Some(entry) = bucket.get(&kv_key).await? else {
                return Ok(None);
            };
            let mut record =
                ApiKeyRecord::from_json(&entry.value).map_err(|err| StoreError::Corrupt {
                    key: kv_key.clone(),
                    message: err.to_string(),
                })?;
            if let Some(revoked_at) = record.revoked_at {
                return Ok(Some(revoked_at));
            }
            let revoked_at = python::time();
            record.revoked_at = Some(revoked_at);
            match bucket
                .update(&kv_key, record.to_json(), entry.revision)
                .await
            {
                Ok(_) => return Ok(Some(revoked_at)),
                Err(StoreError::Conflict(_)) => continue,
                Err(err) => return Err(err),
            }
        }
    }
}
