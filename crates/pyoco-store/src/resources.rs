//! Create every JetStream resource of contract §1, compatibly with pyoco-server 0.5.1.
//!
//! A resource is created only when it is missing; an existing one is never changed, whatever its
//! configuration ("first creator wins"). When what exists differs from what we would have
//! created, we say which field differs in a warning, because that is how a mixed Python/Rust
//! fleet ends up with a surprising ack wait or TTL.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{self, AckPolicy, DeliverPolicy, ReplayPolicy},
    context::{CreateStreamErrorKind, GetStreamErrorKind},
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
    ErrorCode,
};

use crate::{config::StoreConfig, error::nats, StoreError};

/// The stream configs we create, exactly as nats-py's `add_stream`/`create_key_value` would.
pub(crate) fn work_stream_config(cfg: &StoreConfig) -> stream::Config {
    stream::Config {
        name: cfg.work_stream.clone(),
        subjects: vec![format!("{}.>", cfg.work_subject_prefix)],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        num_replicas: cfg.replicas,
        ..Default::default()
    }
}

pub(crate) fn dlq_stream_config(cfg: &StoreConfig) -> stream::Config {
    stream::Config {
        name: cfg.dlq_stream.clone(),
        subjects: vec![format!("{}.>", cfg.dlq_subject_prefix)],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        num_replicas: cfg.replicas,
        max_age: cfg.dlq_max_age,
        max_messages: cfg.dlq_max_msgs,
        max_bytes: cfg.dlq_max_bytes,
        ..Default::default()
    }
}

/// The live task log stream (ours): limits retention, max age, a total size with discard old
/// (the oldest runs' lines go first), file storage.
pub(crate) fn task_logs_stream_config(cfg: &StoreConfig) -> stream::Config {
    stream::Config {
        name: cfg.task_logs_stream.clone(),
        subjects: vec![format!("{}.>", cfg.task_logs_subject_prefix)],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        num_replicas: cfg.replicas,
        max_age: cfg.task_log_max_age,
        max_bytes: cfg.task_log_stream_max_bytes,
        discard: DiscardPolicy::Old,
        ..Default::default()
    }
}

/// A KV bucket's stream as nats-py's `create_key_value` makes it (contract §1.3):
/// rollup allowed, delete denied, discard new, history as max msgs per subject, TTL as max age,
/// duplicate window `min(120 s, ttl)`, **no** direct get; `replicas` copies (nats-py: 1).
pub(crate) fn kv_stream_config(
    bucket: &str,
    history: i64,
    ttl: Duration,
    replicas: usize,
) -> stream::Config {
    let two_minutes = Duration::from_secs(120);
    let duplicate_window = if ttl.is_zero() {
        two_minutes
    } else {
        ttl.min(two_minutes)
    };
    stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: history,
        max_age: ttl,
        duplicate_window,
        allow_rollup: true,
        deny_delete: true,
        discard: DiscardPolicy::New,
        storage: StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// The wheel object store's stream as nats-py's `create_object_store(bucket=…, max_bytes=…)`
/// makes it (contract §1.4): chunk and meta subjects, `max_bytes` (0 ⇒ unlimited), discard
/// new, rollup and direct get allowed, no max age, file storage, `replicas` copies (nats-py: 1).
pub(crate) fn object_stream_config(
    bucket: &str,
    max_bytes: i64,
    replicas: usize,
) -> stream::Config {
    stream::Config {
        name: crate::wheels::stream_name(bucket),
        subjects: vec![format!("$O.{bucket}.C.>"), format!("$O.{bucket}.M.>")],
        max_bytes: if max_bytes == 0 { -1 } else { max_bytes },
        discard: DiscardPolicy::New,
        allow_rollup: true,
        allow_direct: true,
        storage: StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// The pull consumer shared by every worker serving `tag` (contract §1.2).
pub fn consumer_config(cfg: &StoreConfig, tag: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(cfg.consumer_name(tag)),
        filter_subject: cfg.work_subject(tag),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        replay_policy: ReplayPolicy::Instant,
        ack_wait: cfg.consumer_ack_wait,
        max_deliver: cfg.consumer_max_deliver,
        max_ack_pending: cfg.consumer_max_ack_pending,
        ..Default::default()
    }
}

/// Get the stream, or create it from `want` when it does not exist.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    want: stream::Config,
) -> Result<stream::Stream, StoreError> {
    match js.get_stream(&want.name).await {
        Ok(stream) => {
            warn_stream_differences(&want, &stream.cached_info().config);
            Ok(stream)
        }
        Err(err) if is_stream_not_found(err.kind()) => match js.create_stream(want.clone()).await {
            Ok(stream) => {
                tracing::info!(stream = %want.name, "created JetStream stream");
                Ok(stream)
            }
            // Someone else created it between our get and create: use theirs.
            Err(err)
                if matches!(err.kind(), CreateStreamErrorKind::JetStream(ref e)
                    if e.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
            {
                js.get_stream(&want.name).await.map_err(nats)
            }
            Err(err) => match err.kind() {
                CreateStreamErrorKind::JetStream(ref e)
                    if e.error_code() == ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED =>
                {
                    Err(StoreError::unavailable(
                        "SettingsError",
                        format!(
                            "stream {} cannot be created with {} replicas: the NATS server is not \
                             part of a JetStream cluster; set PYOCO_JETSTREAM_REPLICAS=1 ({e})",
                            want.name, want.num_replicas
                        ),
                    ))
                }
                CreateStreamErrorKind::JetStream(ref e)
                    if want.num_replicas > 1
                        && e.error_code() == ErrorCode::INSUFFICIENT_RESOURCES =>
                {
                    // Fewer servers than replicas now (a node is down, or the cluster is
                    // smaller than the setting): retried, as a node may come back.
                    Err(StoreError::unavailable(
                        "InsufficientResources",
                        format!(
                            "stream {} needs {} servers with JetStream (PYOCO_JETSTREAM_REPLICAS) \
                             and the cluster has fewer available: {e}",
                            want.name, want.num_replicas
                        ),
                    ))
                }
                _ => Err(nats(err)),
            },
        },
        Err(err) => Err(nats(err)),
    }
}

fn is_stream_not_found(kind: GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(ref e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// Get the durable pull consumer for `tag`, creating it when missing.
pub(crate) async fn ensure_consumer(
    stream: &stream::Stream,
    want: consumer::pull::Config,
) -> Result<consumer::Consumer<consumer::pull::Config>, StoreError> {
    let name = want.durable_name.clone().unwrap_or_default();
    let consumer = stream
        .get_or_create_consumer(&name, want.clone())
        .await
        .map_err(nats)?;
    warn_consumer_differences(&name, &want, &consumer.cached_info().config);
    Ok(consumer)
}

/// The server stores "no limit" as -1 while a config we build says 0.
fn limit(v: i64) -> i64 {
    if v == 0 {
        -1
    } else {
        v
    }
}

fn warn_stream_differences(want: &stream::Config, have: &stream::Config) {
    let mut diffs = Vec::new();
    if want.subjects != have.subjects {
        diffs.push(format!(
            "subjects {:?} (we would use {:?})",
            have.subjects, want.subjects
        ));
    }
    if want.retention != have.retention {
        diffs.push(format!(
            "retention {:?} (we would use {:?})",
            have.retention, want.retention
        ));
    }
    if want.max_age != have.max_age {
        diffs.push(format!(
            "max_age {:?} (we would use {:?})",
            have.max_age, want.max_age
        ));
    }
    if limit(want.max_messages) != limit(have.max_messages) {
        diffs.push(format!(
            "max_msgs {} (we would use {})",
            have.max_messages, want.max_messages
        ));
    }
    if limit(want.max_bytes) != limit(have.max_bytes) {
        diffs.push(format!(
            "max_bytes {} (we would use {})",
            have.max_bytes, want.max_bytes
        ));
    }
    if limit(want.max_messages_per_subject) != limit(have.max_messages_per_subject) {
        diffs.push(format!(
            "max_msgs_per_subject {} (we would use {})",
            have.max_messages_per_subject, want.max_messages_per_subject
        ));
    }
    if want.discard != have.discard {
        diffs.push(format!(
            "discard {:?} (we would use {:?})",
            have.discard, want.discard
        ));
    }
    // The server reports 0 for "one" on some versions.
    if want.num_replicas.max(1) != have.num_replicas.max(1) {
        diffs.push(format!(
            "replicas {} (PYOCO_JETSTREAM_REPLICAS says {}; change it with `nats stream edit {} \
             --replicas {}`)",
            have.num_replicas.max(1),
            want.num_replicas.max(1),
            want.name,
            want.num_replicas.max(1)
        ));
    }
    if !diffs.is_empty() {
        tracing::warn!(
            stream = %want.name,
            "existing stream differs from the configured one; keeping it as it is: {}",
            diffs.join("; ")
        );
    }
}

fn warn_consumer_differences(name: &str, want: &consumer::pull::Config, have: &consumer::Config) {
    let mut diffs = Vec::new();
    if want.filter_subject != have.filter_subject {
        diffs.push(format!(
            "filter_subject {:?} (we would use {:?})",
            have.filter_subject, want.filter_subject
        ));
    }
    if want.ack_wait != have.ack_wait {
        diffs.push(format!(
            "ack_wait {:?} (we would use {:?})",
            have.ack_wait, want.ack_wait
        ));
    }
    if want.max_deliver != have.max_deliver {
        diffs.push(format!(
            "max_deliver {} (we would use {})",
            have.max_deliver, want.max_deliver
        ));
    }
    if want.max_ack_pending != have.max_ack_pending {
        diffs.push(format!(
            "max_ack_pending {} (we would use {})",
            have.max_ack_pending, want.max_ack_pending
        ));
    }
    if !diffs.is_empty() {
        tracing::warn!(
            consumer = %name,
            "existing consumer differs from the configured one; keeping it as it is: {}",
            diffs.join("; ")
        );
    }
}
