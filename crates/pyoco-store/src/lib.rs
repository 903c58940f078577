//! JetStream for pyoco: the resources of the pyoco-server 0.5.x wire contract, created
//! compatibly, and small typed handles over them.
//!
//! What this crate is for: connecting to NATS, creating the work stream, the DLQ stream, the KV
//! buckets and the per-tag durable consumers exactly as the Python implementation does (so
//! Python and Rust gateways and workers can share one server), and the operations the gateway
//! and the worker need on them — including compare-and-set writes, which 0.5.1 lacks.
//!
//! It also holds the wheel registry ([`WheelRegistry`]), a JetStream object store written and
//! read exactly as nats-py does, because async-nats' own object store writes header values as
//! lists, which Python readers misread (see [`wheels`]).
//!
//! What it is not: it does not know the JSON inside the records (that is `pyoco-wire`), nor
//! HTTP or worker policy.

mod api_keys;
mod bucket;
mod config;
mod connect;
mod dlq;
mod error;
mod resources;
mod shared;
mod task_logs;
pub mod wheels;

use std::time::Duration;

use async_nats::{
    connection::State,
    header::{NATS_EXPECTED_STREAM, NATS_MESSAGE_ID},
    jetstream::{self, consumer},
    HeaderMap,
};
use bytes::Bytes;

pub use api_keys::CreateKeyError;
pub use bucket::{next_entry, Bucket, Versioned};
pub use config::StoreConfig;
pub use connect::NatsConnect;
pub use dlq::{DlqEntry, DlqState};
pub use error::StoreError;
pub use resources::consumer_config;
pub use shared::SharedStore;
pub use task_logs::{LogItem, LogPage, LogPublisher, LOG_LIMIT_MARKER, MAX_SCANNED_PER_PAGE};
pub use wheels::{ObjectInfo, ObjectReader, ObjectStore, PutError, WheelRegistry};

use error::nats;

/// A pull consumer of the work queue.
pub type WorkConsumer = consumer::Consumer<consumer::pull::Config>;

/// A connected client with every resource ensured. Cheap to clone (one `Arc`).
#[derive(Clone, Debug)]
pub struct Store {
    inner: std::sync::Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    cfg: StoreConfig,
    runs: Bucket,
    workers: Bucket,
    auth: Bucket,
    wheel_history: Bucket,
    dlq_replays: Bucket,
    workflows: Bucket,
    schedules: Bucket,
    wheels: WheelRegistry,
}

/// How long to wait for the first connection in [`Store::connect`].
/// Room kept below the server's max_payload for the headers JetStream adds to a write.
const HEADER_ROOM: usize = 512;

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// Connect to `url` (retrying for up to `connect_timeout`), create every missing resource
    /// and open the buckets. Once connected the client reconnects forever (0.5.1 gives up after
    /// about two minutes, §14-21).
    pub async fn connect(
        url: &str,
        client_name: &str,
        cfg: StoreConfig,
        connect_timeout: Duration,
    ) -> Result<Store, StoreError> {
        Store::connect_with(&NatsConnect::url(url), client_name, cfg, connect_timeout).await
    }

    /// [`Store::connect`] as `target` says (several URLs, TLS, credentials).
    pub async fn connect_with(
        target: &NatsConnect,
        client_name: &str,
        cfg: StoreConfig,
        connect_timeout: Duration,
    ) -> Result<Store, StoreError> {
        let client = connect_client_with(target, client_name, connect_timeout).await?;
        Store::from_client(client, cfg).await
    }

    /// Create every missing resource over an existing client and open the buckets.
    pub async fn from_client(
        client: async_nats::Client,
        cfg: StoreConfig,
    ) -> Result<Store, StoreError> {
        let mut js = jetstream::new(client.clone());
        js.set_timeout(cfg.request_timeout);
        for want in [
            resources::work_stream_config(&cfg),
            resources::dlq_stream_config(&cfg),
            resources::task_logs_stream_config(&cfg),
        ] {
            resources::ensure_stream(&js, want).await?;
        }
        let runs = open_bucket(&js, &cfg, &cfg.runs_bucket, Duration::ZERO).await?;
        let workers = open_bucket(&js, &cfg, &cfg.workers_bucket, cfg.workers_ttl).await?;
        let auth = open_bucket(&js, &cfg, &cfg.auth_bucket, Duration::ZERO).await?;
        let wheel_history =
            open_bucket(&js, &cfg, &cfg.wheel_history_bucket, cfg.wheel_history_ttl).await?;
        let dlq_replays = open_bucket(&js, &cfg, &cfg.dlq_replays_bucket, cfg.dlq_max_age).await?;
        let workflows = open_bucket(&js, &cfg, &cfg.workflows_bucket, cfg.workflow_keep).await?;
        let schedules = open_bucket_with_history(
            &js,
            &cfg,
            &cfg.schedules_bucket,
            SCHEDULES_HISTORY,
            Duration::ZERO,
        )
        .await?;
        let wheels = open_wheel_registry(&js, &cfg).await?;
        Ok(Store {
            inner: std::sync::Arc::new(Inner {
                client,
                js,
                cfg,
                runs,
                workers,
                auth,
                wheel_history,
                dlq_replays,
                workflows,
                schedules,
                wheels,
            }),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    /// The largest KV value or stream message this server takes: its max_payload less room
    /// for the headers JetStream adds (`Nats-Expected-*`), which count towards it.
    pub fn max_record_bytes(&self) -> usize {
        self.client().max_payload().saturating_sub(HEADER_ROOM)
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// Fail fast with `Unavailable("Disconnected")` instead of waiting for a request timeout
    /// while the connection is down.
    pub fn check_connected(&self) -> Result<(), StoreError> {
        match self.inner.client.connection_state() {
            State::Connected => Ok(()),
            state => Err(StoreError::unavailable(
                "Disconnected",
                format!("connection to NATS is {state:?}"),
            )),
        }
    }

    /// Schedules (pyoco-server 0.7), key `<schedule_id>`.
    pub fn schedules(&self) -> &Bucket {
        &self.inner.schedules
    }

    /// Run snapshots, key `<run_id>`.
    pub fn runs(&self) -> &Bucket {
        &self.inner.runs
    }

    /// Worker registry, key `<worker_id>`.
    pub fn workers(&self) -> &Bucket {
        &self.inner.workers
    }

    /// API keys, key `api_keys.<key_id>`.
    pub fn auth(&self) -> &Bucket {
        &self.inner.auth
    }

    /// Wheel upload/delete history.
    pub fn wheel_history(&self) -> &Bucket {
        &self.inner.wheel_history
    }

    /// Replays of dead letters, key = the entry's id (ours).
    pub fn dlq_replays(&self) -> &Bucket {
        &self.inner.dlq_replays
    }

    /// Submitted flow.yaml texts, key = their SHA-256 hex (ours).
    pub fn workflows(&self) -> &Bucket {
        &self.inner.workflows
    }

    /// Whether submitted flow.yaml texts are kept (`PYOCO_WORKFLOW_KEEP_SEC` > 0).
    pub fn keeps_workflows(&self) -> bool {
        !self.inner.cfg.workflow_keep.is_zero()
    }

    /// The wheel registry (object store `PYOCO_WHEEL_OBJECT_STORE_BUCKET`).
    pub fn wheels(&self) -> &WheelRegistry {
        &self.inner.wheels
    }

    /// Publish a job on `pyoco.work.<tag>` and wait for the stream's ack.
    pub async fn publish_job(&self, tag: &str, payload: Bytes) -> Result<(), StoreError> {
        self.publish_to_stream(
            self.inner.cfg.work_subject(tag),
            &self.inner.cfg.work_stream,
            payload,
        )
        .await
    }

    /// Publish a DLQ record on `pyoco.dlq.<tag>` and wait for the stream's ack.
    pub async fn publish_dlq(&self, tag: &str, payload: Bytes) -> Result<(), StoreError> {
        self.publish_to_stream(
            self.inner.cfg.dlq_subject(tag),
            &self.inner.cfg.dlq_stream,
            payload,
        )
        .await
    }

    /// Publish the job of the new run `run_id` on `<prefix>.<tag>`, with `Nats-Msg-Id: <run_id>`
    /// so the stream stores it once however often it is sent (within its duplicate window),
    /// retrying through a leader election ([`through_election`]).
    pub async fn publish_new_job(
        &self,
        tag: &str,
        run_id: &str,
        payload: Bytes,
    ) -> Result<(), StoreError> {
        let subject = self.inner.cfg.work_subject(tag);
        let stream = self.inner.cfg.work_stream.as_str();
        through_election(|| async {
            self.check_connected()?;
            let mut headers = HeaderMap::new();
            headers.insert(NATS_EXPECTED_STREAM, stream);
            headers.insert(NATS_MESSAGE_ID, run_id);
            let ack = self
                .inner
                .js
                .publish_with_headers(subject.clone(), headers, payload.clone())
                .await
                .map_err(nats)?;
            ack.await.map_err(nats)?;
            Ok(())
        })
        .await
    }

    async fn publish_to_stream(
        &self,
        subject: String,
        stream: &str,
        payload: Bytes,
    ) -> Result<(), StoreError> {
        self.check_connected()?;
        let mut headers = HeaderMap::new();
        headers.insert(NATS_EXPECTED_STREAM, stream);
        let ack = self
            .inner
            .js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(nats)?;
        ack.await.map_err(nats)?;
        Ok(())
    }

    /// The durable pull consumer shared by every worker serving `tag`, created when missing.
    pub async fn work_consumer(&self, tag: &str) -> Result<WorkConsumer, StoreError> {
        let stream = self
            .inner
            .js
            .get_stream(&self.inner.cfg.work_stream)
            .await
            .map_err(nats)?;
        resources::ensure_consumer(&stream, consumer_config(&self.inner.cfg, tag)).await
    }

    /// Jobs in the work stream per tag (waiting, or delivered and not yet acknowledged: the
    /// stream keeps a job until its worker acknowledges it), sorted by tag. One stream-info
    /// request with a subject filter; no consumer is created.
    pub async fn work_queue_depths(&self) -> Result<Vec<(String, u64)>, StoreError> {
        use futures::TryStreamExt;
        let stream = self
            .inner
            .js
            .get_stream(&self.inner.cfg.work_stream)
            .await
            .map_err(nats)?;
        let prefix = format!("{}.", self.inner.cfg.work_subject_prefix);
        let subjects = stream
            .info_with_subjects(format!("{prefix}>"))
            .await
            .map_err(nats)?;
        let mut depths: Vec<(String, u64)> = subjects
            .map_err(nats)
            .try_filter_map(|(subject, count)| {
                let tag = subject.strip_prefix(prefix.as_str()).map(str::to_string);
                async move { Ok(tag.map(|t| (t, count as u64))) }
            })
            .try_collect()
            .await?;
        depths.sort();
        Ok(depths)
    }

    /// Number of messages in the DLQ stream.
    pub async fn dlq_message_count(&self) -> Result<u64, StoreError> {
        Ok(self.dlq_state().await?.messages)
    }
}

/// How long [`through_election`] keeps trying while a stream elects a leader (JetStream's
/// election timeout is 4–9 s after a node dies without warning).
pub const ELECTION_RETRY_FOR: Duration = Duration::from_secs(12);

/// How long [`through_election`] waits for a lost connection to come back.
const RECONNECT_GRACE: Duration = Duration::from_secs(4);

/// Run `op` until it succeeds, retrying while the error is one a leader election or a move to
/// another server of the cluster causes: no responders or no answer in time (for up to
/// [`ELECTION_RETRY_FOR`]), not connected (for up to 4 s: a server that is gone gets a 503
/// soon, as in 0.5.1). Other errors (a conflict, a bad request) return at once. `op` must be
/// safe to repeat (a message id, a compare-and-set).
pub async fn through_election<T, F, Fut>(mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let err = match op().await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        let give_up_at = match err.unavailable_kind() {
            Some("Disconnected" | "BrokenPipe" | "NotConnected") => started + RECONNECT_GRACE,
            Some(_) => started + ELECTION_RETRY_FOR,
            None => return Err(err),
        };
        if tokio::time::Instant::now() + delay >= give_up_at {
            return Err(err);
        }
        tracing::debug!("retrying through a NATS leader election: {err}");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// Connect to `url` with the options every pyoco process uses: a client name, unlimited
/// reconnects, and a bounded wait for the first connection.
pub async fn connect_client(
    url: &str,
    client_name: &str,
    connect_timeout: Duration,
) -> Result<async_nats::Client, StoreError> {
    connect_client_with(&NatsConnect::url(url), client_name, connect_timeout).await
}

/// Connect as `target` says (URLs, TLS, credentials), retrying for up to `connect_timeout`;
/// the error of the last attempt says which setting to look at. Once connected, the client
/// reconnects forever (0.5.1 gives up after about two minutes, §14-21).
pub async fn connect_client_with(
    target: &NatsConnect,
    client_name: &str,
    connect_timeout: Duration,
) -> Result<async_nats::Client, StoreError> {
    let deadline = tokio::time::Instant::now() + connect_timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let attempt = left.clamp(Duration::from_millis(200), Duration::from_secs(5));
        match target.connect_once(client_name, attempt).await {
            Ok(client) => return Ok(client),
            // A bad setting does not get better by waiting.
            Err(err) if err.unavailable_kind() == Some("SettingsError") => return Err(err),
            Err(err) if err.unavailable_kind() == Some("ServerParse") => return Err(err),
            Err(err) => {
                if tokio::time::Instant::now() + delay >= deadline {
                    return Err(err);
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn open_bucket(
    js: &jetstream::Context,
    cfg: &StoreConfig,
    bucket: &str,
    ttl: Duration,
) -> Result<Bucket, StoreError> {
    open_bucket_with_history(js, cfg, bucket, 1, ttl).await
}

/// History of the schedules bucket, as pyoco-server 0.7 creates it.
const SCHEDULES_HISTORY: i64 = 5;

async fn open_bucket_with_history(
    js: &jetstream::Context,
    cfg: &StoreConfig,
    bucket: &str,
    history: i64,
    ttl: Duration,
) -> Result<Bucket, StoreError> {
    let want = resources::kv_stream_config(bucket, history, ttl, cfg.replicas);
    resources::ensure_stream(js, want).await?;
    let kv = js.get_key_value(bucket).await.map_err(nats)?;
    Ok(Bucket::new(kv))
}

async fn open_wheel_registry(
    js: &jetstream::Context,
    cfg: &StoreConfig,
) -> Result<WheelRegistry, StoreError> {
    let want =
        resources::object_stream_config(&cfg.wheel_bucket, cfg.wheel_max_bytes, cfg.replicas);
    let stream = resources::ensure_stream(js, want).await?;
    let objects = ObjectStore::new(js.clone(), stream, &cfg.wheel_bucket, cfg.request_timeout);
    Ok(WheelRegistry::new(objects, cfg.wheel_max_bytes))
}
