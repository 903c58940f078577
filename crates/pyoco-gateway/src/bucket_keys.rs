//! The keys of a KV bucket without creating a JetStream consumer.
//!
//! async-nats' `Store::keys` (like nats-py's) opens an ordered consumer per call and never
//! deletes it: it lingers until the server's inactivity threshold drops it. An endpoint that
//! lists a bucket on every request (`GET /workers`, `/metrics`) then piles consumers up under
//! load, and past the server's per-stream limit every listing fails with `maximum consumers
//! limit reached` — a 503 for a plain read (found by Schemathesis' fuzzer). One stream-info
//! request with a subject filter names every key instead, and creates nothing.

use futures::TryStreamExt;
use pyoco_store::{Bucket, StoreError};

/// Every key of `bucket` that has a message: live values, and keys whose last message is a
/// delete or purge marker (a read then finds nothing, as for a key deleted since it was listed).
/// In no particular order.
pub(crate) async fn bucket_keys(bucket: &Bucket) -> Result<Vec<String>, StoreError> {
    let kv = bucket.raw();
    let prefix = kv.prefix.as_str();
    let unavailable = |err: async_nats::jetstream::stream::InfoError| {
        let kind = format!("{:?}", err.kind());
        let kind = if kind == "Other" {
            "NatsError".into()
        } else {
            kind
        };
        StoreError::unavailable(
            kind,
            format!("listing the keys of {}: {err}", bucket.name()),
        )
    };
    let subjects = kv
        .stream
        .info_with_subjects(format!("{prefix}>"))
        .await
        .map_err(unavailable)?;
    subjects
        .map_err(unavailable)
        .try_filter_map(|(subject, _count)| async move {
            Ok(subject.strip_prefix(prefix).map(str::to_string))
        })
        .try_collect()
        .await
}
