//! Who is calling: API-key authentication (contract §9) and the [`Caller`] it yields.
//!
//! One middleware, [`require_api_key`], sits in front of every protected route
//! ([`crate::routes::protected`]); no handler checks a key. With `PYOCO_HTTP_AUTH_MODE=none`
//! it lets every request through as an anonymous [`Caller`]. With `api_key` it reads the key
//! from the `PYOCO_HTTP_API_KEY_HEADER` header and answers, as 0.5.1 does:
//!
//! - 401 `api key required`: no header, or an empty one (logged with `ERR-PYOCO-0014`);
//! - 403 `invalid api key`: a malformed key, no record under `api_keys.<key_id>`, a corrupt
//!   record, a record for another key id, a revoked key or a wrong secret (`ERR-PYOCO-0015`,
//!   with the key id when one could be read; never the secret);
//! - 503 `nats unavailable: …`: the record could not be read.
//!
//! A good key puts its `tenant_id` and `api_key_id` into the request's [`Caller`], which the
//! handlers stamp on new runs and use to hide other tenants' runs ([`Caller::can_see`]).
//!
//! Cost (0.5.1 hashes 200000 PBKDF2 rounds on its event loop for every request, §14-20): the
//! hash runs on a blocking thread, at most [`MAX_CONCURRENT_HASHES`] at a time, and a verified
//! key is remembered by the SHA-256 of the presented key (never the key itself), so steady
//! traffic costs one SHA-256 and one map lookup. The memory is only trusted while a watch on
//! the auth bucket is running: every change to `api_keys.<key_id>` (a revocation by our admin
//! CLI or Python's) evicts that key at once, and a verification that raced with a change is
//! not remembered. While the watch is down (NATS gone), every request verifies from the store.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, Once,
    },
    time::Duration,
};

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{request::Parts, HeaderName, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use pyoco_config::{AuthMode, Settings};
use pyoco_store::{next_entry, SharedStore};
use pyoco_wire::{parse_api_key, ApiKeyFormatError, ApiKeyRecord};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Semaphore};

use crate::{error::ApiError, AppState};

/// How many PBKDF2 verifications run at once (each takes a CPU for tens of milliseconds):
/// a flood of wrong keys for a known key id queues here instead of taking every core.
pub const MAX_CONCURRENT_HASHES: usize = 2;
/// How many verified keys are remembered; when full, the memory starts over.
const CACHE_CAPACITY: usize = 4096;
/// Pause before re-opening the auth-bucket watch after it ended.
const REWATCH_DELAY: Duration = Duration::from_millis(500);

/// The authenticated identity of a request; anonymous when auth is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The API key's tenant (`None` when auth is off).
    pub tenant_id: Option<String>,
    /// The API key's id (`None` when auth is off).
    pub api_key_id: Option<String>,
}

impl Caller {
    /// Whether this caller may see a run with this snapshot: always when anonymous, otherwise
    /// only its own tenant's runs (others answer 404 `run not found`, §3.1).
    pub fn can_see(&self, snapshot: &Map<String, Value>) -> bool {
        match &self.tenant_id {
            None => true,
            Some(tenant) => snapshot.get("tenant_id").and_then(Value::as_str) == Some(tenant),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_default())
    }
}

/// The gateway's API-key checker: settings, the verified-key memory and its watch. Cheap to
/// clone.
#[derive(Clone, Debug)]
pub(crate) struct Authenticator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    enabled: bool,
    header: HeaderName,
    pepper: String,
    source: SharedStore,
    hashing: Semaphore,
    cache: Mutex<HashMap<[u8; 32], Caller>>,
    /// Bumped on every change the watch sees (and when it starts or stops): a verification
    /// that began under another generation is not remembered.
    generation: AtomicU64,
    /// The watch on the auth bucket is running: remembered keys can be trusted.
    watching: AtomicBool,
    /// PBKDF2 verifications run so far (`pyoco_api_key_verifications_total`).
    verifications: AtomicU64,
    started: Once,
    /// Dropped with the last clone: the watch task ends.
    stop: watch::Sender<()>,
}

impl Authenticator {
    pub(crate) fn new(settings: &Settings, source: SharedStore) -> Authenticator {
        let header = HeaderName::from_bytes(settings.http_api_key_header.trim().as_bytes())
            .unwrap_or_else(|_| HeaderName::from_static("x-api-key"));
        Authenticator {
            inner: Arc::new(Inner {
                enabled: settings.http_auth_mode == AuthMode::ApiKey,
                header,
                pepper: settings.auth_pepper.clone().unwrap_or_default(),
                source,
                hashing: Semaphore::new(MAX_CONCURRENT_HASHES),
                cache: Mutex::new(HashMap::new()),
                generation: AtomicU64::new(0),
                watching: AtomicBool::new(false),
                verifications: AtomicU64::new(0),
                started: Once::new(),
                stop: watch::Sender::new(()),
            }),
        }
    }

    /// Whether requests must carry a key (`PYOCO_HTTP_AUTH_MODE=api_key`).
    pub(crate) fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// PBKDF2 verifications run since start (`None` with auth off), for `/metrics`.
    pub(crate) fn verifications(&self) -> Option<u64> {
        self.enabled()
            .then(|| self.inner.verifications.load(Ordering::Relaxed))
    }

    /// The header carrying the key, when auth is on (for the home page).
    pub(crate) fn header_name(&self) -> Option<&str> {
        self.enabled().then(|| self.inner.header.as_str())
    }

    /// Whether a pepper is configured (`PYOCO_AUTH_PEPPER`).
    pub(crate) fn has_pepper(&self) -> bool {
        !self.inner.pepper.is_empty()
    }

    /// Start the auth-bucket watch (once, and only with auth on) when inside a runtime.
    fn ensure_started(&self) {
        if !self.inner.enabled || self.inner.started.is_completed() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.inner.started.call_once(|| {
            runtime.spawn(watch_auth_bucket(
                Arc::downgrade(&self.inner),
                self.inner.source.clone(),
                self.inner.stop.subscribe(),
            ));
        });
    }

    /// The caller a request's key header stands for, or the 401/403/503 to answer.
    async fn authenticate(&self, presented: Option<&[u8]>) -> Result<Caller, ApiError> {
        self.ensure_started();
        let presented = match presented {
            None | Some(b"") => {
                tracing::info!(
                    err_id = "ERR-PYOCO-0014",
                    msg_id = "MSG-PYOCO-0014",
                    "auth failed: missing api key"
                );
                return Err(ApiError::detail(
                    StatusCode::UNAUTHORIZED,
                    "api key required",
                ));
            }
            Some(bytes) => std::str::from_utf8(bytes)
                .map_err(|_| invalid_key("invalid api key format", None))?,
        };
        let (key_id, secret) = parse_api_key(presented).map_err(|err| match err {
            // Not reachable (empty handled above), but the same answer as 0.5.1 either way.
            ApiKeyFormatError::Missing => {
                ApiError::detail(StatusCode::UNAUTHORIZED, "api key required")
            }
            ApiKeyFormatError::InvalidFormat => invalid_key("invalid api key format", None),
        })?;

        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let inner = &self.inner;
        if inner.watching.load(Ordering::Acquire) {
            if let Some(caller) = inner.cache.lock().expect("auth cache").get(&digest) {
                return Ok(caller.clone());
            }
        }

        let generation = inner.generation.load(Ordering::Acquire);
        let store = inner.source.get()?;
        let entry = store
            .auth()
            .get(&ApiKeyRecord::kv_key(key_id))
            .await?
            .ok_or_else(|| invalid_key("unknown api key", Some(key_id)))?;
        let record = ApiKeyRecord::from_json(&entry.value)
            .map_err(|_| invalid_key("corrupt api key record", Some(key_id)))?;
        if record.key_id != key_id {
            return Err(invalid_key("api key id mismatch", Some(key_id)));
        }
        if record.is_revoked() {
            return Err(invalid_key("revoked api key", Some(key_id)));
        }

        let caller = Caller {
            tenant_id: Some(record.tenant_id.clone()),
            api_key_id: Some(record.key_id.clone()),
        };
        let verified = {
            let _permit = inner.hashing.acquire().await.expect("never closed");
            inner.verifications.fetch_add(1, Ordering::Relaxed);
            let secret = secret.to_string();
            let pepper = inner.pepper.clone();
            tokio::task::spawn_blocking(move || record.verifies(&secret, &pepper))
                .await
                .unwrap_or(false)
        };
        if !verified {
            return Err(invalid_key("api key mismatch", Some(key_id)));
        }
        if inner.watching.load(Ordering::Acquire) {
            let mut cache = inner.cache.lock().expect("auth cache");
            // Only when no change was seen since the record was read: else a revocation that
            // arrived meanwhile could be overwritten by this older answer.
            if inner.generation.load(Ordering::Acquire) == generation {
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(digest, caller.clone());
            }
        }
        Ok(caller)
    }
}

/// 403 `invalid api key`, logged with `ERR-PYOCO-0015`, why, and the key id when known.
fn invalid_key(why: &str, key_id: Option<&str>) -> ApiError {
    tracing::info!(
        err_id = "ERR-PYOCO-0015",
        msg_id = "MSG-PYOCO-0015",
        api_key_id = key_id,
        "auth failed: {why}"
    );
    ApiError::detail(StatusCode::FORBIDDEN, "invalid api key")
}

impl Inner {
    /// Forget remembered keys: all of them, or those of one key id.
    fn evict(&self, key_id: Option<&str>) {
        let mut cache = self.cache.lock().expect("auth cache");
        self.generation.fetch_add(1, Ordering::AcqRel);
        match key_id {
            None => cache.clear(),
            Some(id) => cache.retain(|_, caller| caller.api_key_id.as_deref() != Some(id)),
        }
    }
}

/// Keep a watch on the auth bucket while the authenticator lives: each change evicts its key;
/// while no watch runs, nothing is remembered.
async fn watch_auth_bucket(
    inner: std::sync::Weak<Inner>,
    source: SharedStore,
    mut stop: watch::Receiver<()>,
) {
    loop {
        let store = tokio::select! {
            _ = stop.changed() => return,
            store = source.wait_ready(Duration::from_secs(3600)) => store,
        };
        let watch = match store {
            Ok(store) => store.auth().watch_all().await,
            Err(err) => Err(err),
        };
        match watch {
            Ok(mut watch) => {
                let Some(auth) = inner.upgrade() else { return };
                auth.evict(None);
                auth.watching.store(true, Ordering::Release);
                drop(auth);
                tracing::debug!("auth: watching the API key bucket");
                loop {
                    let entry = tokio::select! {
                        _ = stop.changed() => return,
                        entry = next_entry(&mut watch) => entry,
                    };
                    let Some(auth) = inner.upgrade() else { return };
                    match entry {
                        Some(Ok(entry)) => {
                            let key_id = entry.key.strip_prefix("api_keys.");
                            tracing::debug!(key = %entry.key, "auth: key changed, evicted");
                            auth.evict(Some(key_id.unwrap_or(&entry.key)));
                        }
                        Some(Err(err)) => {
                            tracing::warn!("auth: the API key bucket watch failed: {err}");
                            break;
                        }
                        None => break,
                    }
                }
            }
            Err(err) => tracing::debug!("auth: cannot watch the API key bucket yet: {err}"),
        }
        let Some(auth) = inner.upgrade() else { return };
        auth.watching.store(false, Ordering::Release);
        auth.evict(None);
        drop(auth);
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(REWATCH_DELAY) => {}
        }
    }
}

/// The auth middleware of every protected route: with auth on, the request goes on only with
/// a valid key, carrying its [`Caller`]; with auth off, as an anonymous caller.
pub(crate) async fn require_api_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let auth = state.auth();
    if !auth.enabled() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(&auth.inner.header)
        .map(|value| value.as_bytes());
    match auth.authenticate(presented).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(err) => err.into_response(),
    }
}
