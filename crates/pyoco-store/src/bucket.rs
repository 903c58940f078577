//! A KV bucket with the operations pyoco needs, errors mapped to [`StoreError`].

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::{error::nats, StoreError};

/// A value and the revision (stream sequence) it was read at; the revision is what a
/// compare-and-set write must name.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: u64,
}

/// One KV bucket.
#[derive(Clone, Debug)]
pub struct Bucket {
    kv: kv::Store,
}

impl Bucket {
    pub(crate) fn new(kv: kv::Store) -> Self {
        Self { kv }
    }

    pub fn name(&self) -> &str {
        &self.kv.name
    }

    /// The live value of `key`; `None` when it never existed or was deleted/purged.
    pub async fn get(&self, key: &str) -> Result<Option<Versioned<Bytes>>, StoreError> {
        let entry = self.kv.entry(key).await.map_err(nats)?;
        Ok(entry.and_then(|e| match e.operation {
            Operation::Put => Some(Versioned {
                value: e.value,
                revision: e.revision,
            }),
            Operation::Delete | Operation::Purge => None,
        }))
    }

    /// Write `key` only if it has no live value. `Conflict` when it exists.
    pub async fn create(&self, key: &str, value: impl Into<Bytes>) -> Result<u64, StoreError> {
        self.kv
            .create(key, value.into())
            .await
            .map_err(|err| match err.kind() {
                CreateErrorKind::AlreadyExists => StoreError::Conflict(key.to_string()),
                _ => nats(err),
            })
    }

    /// [`Bucket::create`] of a fresh key (a new run id), retried through a leader election
    /// ([`crate::through_election`]). A retry that finds the key holding exactly `value` means
    /// an earlier attempt landed although its answer was lost: that is success.
    pub async fn create_new(&self, key: &str, value: Bytes) -> Result<u64, StoreError> {
        let mut retried = false;
        crate::through_election(|| {
            let attempt = retried;
            retried = true;
            let value = value.clone();
            async move {
                match self.create(key, value.clone()).await {
                    Err(StoreError::Conflict(_)) if attempt => match self.get(key).await? {
                        Some(entry) if entry.value == value => Ok(entry.revision),
                        _ => Err(StoreError::Conflict(key.to_string())),
                    },
                    other => other,
                }
            }
        })
        .await
    }

    /// Write `key` only if its current revision is `revision`. `Conflict` when another writer
    /// got there first.
    pub async fn update(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        revision: u64,
    ) -> Result<u64, StoreError> {
        self.kv
            .update(key, value.into(), revision)
            .await
            .map_err(|err| match err.kind() {
                UpdateErrorKind::WrongLastRevision => StoreError::Conflict(key.to_string()),
                _ => nats(err),
            })
    }

    /// Unconditional write (what pyoco-server 0.5.1 does everywhere).
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<u64, StoreError> {
        self.kv.put(key, value.into()).await.map_err(nats)
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.kv.delete(key).await.map_err(nats)
    }

    /// Every key that has a message — live values, and keys whose last message is a delete or
    /// purge marker (a read then finds nothing, as for a key deleted since it was listed) — in
    /// no particular order, with ONE stream-info request and no consumer. Use this on request
    /// paths: [`Bucket::keys`] opens an ordered consumer per call that lingers until the
    /// server's inactivity threshold, and listing on every request piles them up until the
    /// stream refuses more (a 503 for a plain read).
    pub async fn key_candidates(&self) -> Result<Vec<String>, StoreError> {
        use futures::TryStreamExt;
        let prefix = self.kv.prefix.as_str();
        let name = self.name().to_string();
        let unavailable = |err: async_nats::jetstream::stream::InfoError| {
            let kind = format!("{:?}", err.kind());
            let kind = if kind == "Other" {
                "NatsError".into()
            } else {
                kind
            };
            StoreError::unavailable(kind, format!("listing the keys of {name}: {err}"))
        };
        let subjects = self
            .kv
            .stream
            .info_with_subjects(format!("{prefix}>"))
            .await
            .map_err(&unavailable)?;
        subjects
            .map_err(&unavailable)
            .try_filter_map(|(subject, _count)| async move {
                Ok(subject.strip_prefix(prefix).map(str::to_string))
            })
            .try_collect()
            .await
    }

    /// Every live key. An empty bucket is an empty list, not an error (0.5.1 quirk §14-4).
    /// Opens a consumer per call (see [`Bucket::key_candidates`] for request paths).
    pub async fn keys(&self) -> Result<Vec<String>, StoreError> {
        let keys = self.kv.keys().await.map_err(nats)?;
        keys.map_err(nats).try_collect().await
    }

    /// Watch every key: first the latest value of each key, then every change.
    pub async fn watch_all_with_history(&self) -> Result<kv::Watch, StoreError> {
        self.kv.watch_with_history(">").await.map_err(nats)
    }

    /// Watch every key from now on.
    pub async fn watch_all(&self) -> Result<kv::Watch, StoreError> {
        self.kv.watch_all().await.map_err(nats)
    }

    /// Watch one key from now on.
    pub async fn watch(&self, key: &str) -> Result<kv::Watch, StoreError> {
        self.kv.watch(key).await.map_err(nats)
    }

    /// The underlying async-nats store, for what this wrapper does not cover.
    pub fn raw(&self) -> &kv::Store {
        &self.kv
    }
}

/// Drain a watch until it has caught up, for tests and tools.
pub async fn next_entry(watch: &mut kv::Watch) -> Option<Result<kv::Entry, StoreError>> {
    watch.next().await.map(|r| r.map_err(nats))
}
