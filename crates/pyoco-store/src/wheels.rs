//! The wheel registry: a JetStream object store read and written byte-for-byte the way nats-py
//! 2.12 (pyoco-server 0.5.1's client) does (contract §1.4).
//!
//! Why not async-nats' own object store: it models object headers as `name → [values]`, so the
//! meta it writes carries `"headers": {"sha256": ["…"]}`. A Python reader does `str(value)` on
//! that, gets `"['…']"`, and every tag of the wheel fails validation — the Python worker then
//! installs the wheel everywhere and the Python gateway shows `tags: []`. So put, get, list and
//! delete are implemented here on plain JetStream publish, direct get and purge, mirroring
//! `nats/js/object_store.py`:
//!
//! * chunks of 128 KiB on `$O.<bucket>.C.<nuid>` (a new NUID on every put), SHA-256 computed
//!   while streaming, so a large wheel is never held in memory whole;
//! * then the meta JSON on `$O.<bucket>.M.<urlsafe-b64-padded(name)>` with `Nats-Rollup: sub`,
//!   written as Python's `json.dumps(info.as_dict())` writes it (same keys, order and
//!   separators, headers as a JSON object of strings);
//! * then the previous version's chunks are purged.
//!
//! Reading accepts meta from any writer: headers as strings (nats-py, us) or as arrays of
//! strings (Go, async-nats; the values are joined with `,`, so a one-value list reads as its
//! value and a tags header split over several values still reads as one CSV). The reverse does
//! not hold: async-nats 0.51 cannot parse string-valued headers, so it cannot read objects
//! written by nats-py or by us — Rust code must read the registry through this module.
//!
//! Differences from nats-py, on purpose: an empty store lists as `[]` instead of raising
//! `NotFoundError` (§14-11); a failure to purge the *previous* version's chunks after a
//! successful put is logged, not returned (the new object is stored and readable); object
//! links (`options.link`) are not followed (pyoco never writes them).

use std::{collections::BTreeMap, io, pin::Pin, time::Duration};

use async_nats::{
    header::NATS_ROLLUP,
    jetstream::{
        self,
        consumer::{self, AckPolicy, DeliverPolicy},
        context::PublishAckFuture,
        stream::{DirectGetErrorKind, LastRawMessageErrorKind},
    },
    HeaderMap,
};
use base64::{
    alphabet,
    engine::{general_purpose, DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine,
};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use pyoco_wire::{
    is_valid_wheel_name, parse_wheel_tags_csv, python, sha256_from_header, wheel_tags_lenient,
    WHEEL_SHA256_HEADER, WHEEL_TAGS_HEADER,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncRead;

use crate::{error::nats, StoreError};

/// Size of every chunk but the last (nats-py's `OBJ_DEFAULT_CHUNK_SIZE`).
pub const CHUNK_SIZE: usize = 128 * 1024;
/// Prefix of the `digest` field.
pub const DIGEST_PREFIX: &str = "SHA-256=";
/// Header holding the upload's content type.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
/// Content type stored when the upload names none (0.5.1's default).
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Chunk publishes awaiting their ack at once during a put (bounds memory and keeps the pipe
/// full; nats-py waits for each ack in turn).
const ACK_WINDOW: usize = 16;
/// Chunks requested per pull while reading an object: at most about 1.5× this many chunks are
/// buffered by the client.
const READ_BATCH: usize = 8;
/// Meta messages requested per pull while listing.
const LIST_BATCH: usize = 256;
/// A read consumer left behind (reader dropped mid-way) is removed by the server after this.
const CONSUMER_INACTIVE_THRESHOLD: Duration = Duration::from_secs(30);

const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

// ---------------------------------------------------------------------------------------------
// Object meta

/// `options` of an object's meta.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectOptions {
    /// A link to another object or bucket (written by other clients; kept, not followed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chunk_size: Option<u64>,
}

/// An object's meta record, as stored on `$O.<bucket>.M.<b64(name)>`.
///
/// Field order is nats-py's `ObjectInfo` order, which is the order [`ObjectInfo::to_json`]
/// writes. Every field but `name` defaults when missing, so meta from other writers reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub name: String,
    #[serde(default)]
    pub bucket: String,
    #[serde(default)]
    pub nuid: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub size: u64,
    /// ISO-8601 as nats-py writes it (`2024-05-01T12:34:56.123456+00:00`); empty once deleted.
    #[serde(default, deserialize_with = "null_as_default")]
    pub mtime: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub chunks: u64,
    /// `SHA-256=<urlsafe base64, padded>`; empty once deleted.
    #[serde(default, deserialize_with = "null_as_default")]
    pub digest: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Plain string values. Read from strings or from arrays of strings (joined with `,`).
    #[serde(
        default,
        deserialize_with = "headers_from_any_writer",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<ObjectOptions>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Headers as nats-py writes them (`{"k": "v"}`) or as Go/async-nats write them
/// (`{"k": ["v1", "v2"]}` ⇒ `"v1,v2"`; older async-nats: the same inside `{"inner": …}`).
/// Nulls are dropped; numbers and booleans are read as
/// their JSON text; anything but an object is no headers.
fn headers_from_any_writer<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: Deserializer<'de>,
{
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    let Some(Value::Object(mut map)) = Option::<Value>::deserialize(d)? else {
        return Ok(BTreeMap::new());
    };
    // Older async-nats wrote `{"inner": {"k": ["v"]}}`; no header value is ever an object.
    if map.len() == 1 {
        if let Some(Value::Object(inner)) = map.get("inner") {
            map = inner.clone();
        }
    }
    Ok(map
        .into_iter()
        .filter_map(|(name, value)| {
            let value = match &value {
                Value::Array(items) => {
                    let items: Vec<String> = items.iter().filter_map(scalar).collect();
                    (!items.is_empty()).then(|| items.join(","))
                }
                other => scalar(other),
            }?;
            Some((name, value))
        })
        .collect())
}

impl ObjectInfo {
    /// Parse a meta message written by any client.
    pub fn from_json(bytes: &[u8]) -> Result<ObjectInfo, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The meta exactly as nats-py writes it: `json.dumps(info.as_dict())` — default
    /// separators (`", "`, `": "`), ASCII-escaped, `None` fields left out.
    pub fn to_json(&self) -> Vec<u8> {
        python::dumps(self).into_bytes()
    }

    /// A header the way 0.5.1 looks one up: the exact name, then its `str.title()` form
    /// (`x-pyoco-wheel-tags` → `X-Pyoco-Wheel-Tags`, `sha256` → `Sha256`).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .or_else(|| self.headers.get(&python_title(name)))
            .map(String::as_str)
    }

    /// The raw `x-pyoco-wheel-tags` header.
    pub fn wheel_tags_header(&self) -> Option<&str> {
        self.header(WHEEL_TAGS_HEADER)
    }

    /// Tags as the 0.5.1 gateway shows them: strict CSV parse in header order; any invalid
    /// item ⇒ `[]`.
    pub fn wheel_tags(&self) -> Vec<String> {
        self.wheel_tags_header()
            .and_then(|raw| parse_wheel_tags_csv(raw).ok())
            .unwrap_or_default()
    }

    /// Tags as the 0.5.1 worker reads them: invalid items dropped, sorted, de-duplicated.
    /// Empty means "for every worker".
    pub fn wheel_tags_lenient(&self) -> Vec<String> {
        self.wheel_tags_header()
            .map(wheel_tags_lenient)
            .unwrap_or_default()
    }

    /// The `sha256` header when it is 64 hex characters (lower-cased), else `None`.
    pub fn sha256_hex(&self) -> Option<String> {
        self.header(WHEEL_SHA256_HEADER)
            .and_then(sha256_from_header)
    }

    /// The `content-type` header.
    pub fn content_type(&self) -> Option<&str> {
        self.header(CONTENT_TYPE_HEADER)
    }

    /// The digest without its `SHA-256=` prefix (the gateway's `sha256_b64`), if it has one.
    pub fn sha256_b64(&self) -> Option<&str> {
        self.digest.strip_prefix(DIGEST_PREFIX)
    }

    /// The 32 bytes of the digest; `None` when empty or not a SHA-256 digest we can decode.
    pub fn digest_bytes(&self) -> Option<[u8; 32]> {
        let b64 = self
            .digest
            .strip_prefix(DIGEST_PREFIX)
            .or_else(|| self.digest.strip_prefix("sha-256="))?;
        let raw = URL_SAFE_LENIENT.decode(b64).ok()?;
        raw.try_into().ok()
    }
}

/// Python's `str.title()` for ASCII: a letter after a non-letter is upper-cased, every other
/// letter lower-cased.
fn python_title(s: &str) -> String {
    let mut prev_letter = false;
    s.chars()
        .map(|c| {
            let out = if prev_letter {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            };
            prev_letter = c.is_ascii_alphabetic();
            out
        })
        .collect()
}

/// `datetime.now(timezone.utc).isoformat()`: microseconds, `+00:00`, and — like Python — no
/// fraction at all when the microseconds are zero.
pub fn python_utc_isoformat(now: chrono::DateTime<chrono::Utc>) -> String {
    let micros = now.timestamp_subsec_micros().min(999_999);
    let secs = now.format("%Y-%m-%dT%H:%M:%S");
    if micros == 0 {
        format!("{secs}+00:00")
    } else {
        format!("{secs}.{micros:06}+00:00")
    }
}

/// `SHA-256=<urlsafe base64, padded>` of a finished hash.
fn digest_string(sha: &[u8]) -> String {
    format!("{DIGEST_PREFIX}{}", general_purpose::URL_SAFE.encode(sha))
}

// ---------------------------------------------------------------------------------------------
// Errors of a put

/// Why a put failed. Nothing of the new object is left behind in any case.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// JetStream refused or did not answer (including "bucket full", which is `discard new`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data is longer than the limit the store was opened with (gateway: 413).
    #[error("object {name} is larger than {limit} bytes")]
    TooLarge { name: String, limit: u64 },
    /// Reading the data failed (e.g. the uploading client went away).
    #[error("reading the data of object {name} failed: {source}")]
    Source {
        name: String,
        #[source]
        source: io::Error,
    },
}

// ---------------------------------------------------------------------------------------------
// The object store

/// One JetStream object-store bucket (stream `OBJ_<bucket>`). Cheap to clone.
#[derive(Clone, Debug)]
pub struct ObjectStore {
    bucket: String,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    allow_direct: bool,
    max_object_bytes: Option<u64>,
    idle_timeout: Duration,
}

impl ObjectStore {
    /// A handle over the (existing) stream of `bucket`. `idle_timeout` bounds every wait for
    /// the server while streaming chunks in or out.
    pub(crate) fn new(
        js: jetstream::Context,
        stream: jetstream::stream::Stream,
        bucket: &str,
        idle_timeout: Duration,
    ) -> ObjectStore {
        let allow_direct = stream.cached_info().config.allow_direct;
        ObjectStore {
            bucket: bucket.to_string(),
            js,
            stream,
            allow_direct,
            max_object_bytes: None,
            idle_timeout,
        }
    }

    /// Refuse puts longer than `limit` bytes ([`PutError::TooLarge`]); `None` for no limit.
    #[must_use]
    pub fn with_max_object_bytes(mut self, limit: Option<u64>) -> ObjectStore {
        self.max_object_bytes = limit;
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `OBJ_<bucket>`.
    pub fn stream_name(&self) -> String {
        stream_name(&self.bucket)
    }

    /// `$O.<bucket>.M.<urlsafe-base64-padded(name)>`.
    pub fn meta_subject(&self, name: &str) -> String {
        format!(
            "$O.{}.M.{}",
            self.bucket,
            general_purpose::URL_SAFE.encode(name.as_bytes())
        )
    }

    /// `$O.<bucket>.C.<nuid>`.
    pub fn chunk_subject(&self, nuid: &str) -> String {
        format!("$O.{}.C.{nuid}", self.bucket)
    }

    /// The live object's meta; `None` when it never existed or was deleted.
    pub async fn info(&self, name: &str) -> Result<Option<ObjectInfo>, StoreError> {
        Ok(self.info_with_deleted(name).await?.filter(|i| !i.deleted))
    }

    /// The object's meta, including a deleted object's (`deleted: true`).
    pub async fn info_with_deleted(&self, name: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let Some(payload) = self.last_message(&self.meta_subject(name)).await? else {
            return Ok(None);
        };
        ObjectInfo::from_json(&payload)
            .map(Some)
            .map_err(|err| StoreError::Corrupt {
                key: format!("{}/{name}", self.bucket),
                message: format!("object meta is not valid JSON: {err}"),
            })
    }

    /// Every live object, in stream order. An empty store is an empty list (0.5.1 raises
    /// `NotFoundError`, §14-11). A meta that does not parse is skipped with a warning.
    pub async fn list(&self) -> Result<Vec<ObjectInfo>, StoreError> {
        let consumer = self
            .read_consumer(
                format!("$O.{}.M.>", self.bucket),
                DeliverPolicy::LastPerSubject,
            )
            .await?;
        let consumer_name = consumer.cached_info().name.clone();
        let result = self.list_with(&consumer).await;
        self.delete_consumer(&consumer_name).await;
        result
    }

    async fn list_with(
        &self,
        consumer: &consumer::PullConsumer,
    ) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut out = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(LIST_BATCH)
            .messages()
            .await
            .map_err(nats)?;
        loop {
            let msg = match tokio::time::timeout(self.idle_timeout, messages.next()).await {
                Ok(Some(Ok(msg))) => msg,
                Ok(Some(Err(err))) => return Err(nats(err)),
                Ok(None) => break,
                Err(_) => {
                    return Err(StoreError::unavailable(
                        "TimedOut",
                        format!(
                            "listing object store {} stalled for {:?}",
                            self.bucket, self.idle_timeout
                        ),
                    ))
                }
            };
            let pending = msg.info().map(|i| i.pending).unwrap_or(0);
            match ObjectInfo::from_json(&msg.payload) {
                Ok(info) if !info.deleted => out.push(info),
                Ok(_) => {}
                Err(err) => tracing::warn!(
                    bucket = %self.bucket,
                    subject = %msg.subject,
                    "skipping an object meta that is not valid JSON: {err}"
                ),
            }
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// The object's data as a stream of chunks, its digest checked at the end; `None` when
    /// the object is missing or deleted.
    pub async fn get(&self, name: &str) -> Result<Option<ObjectReader>, StoreError> {
        let Some(info) = self.info(name).await? else {
            return Ok(None);
        };
        if info.nuid.is_empty() {
            return Err(self.corrupt(name, "object meta has no nuid"));
        }
        if info.options.as_ref().is_some_and(|o| o.link.is_some()) {
            return Err(self.corrupt(name, "object links are not supported"));
        }
        if info.size == 0 {
            return Ok(Some(ObjectReader {
                info,
                chunks: futures::stream::empty().boxed(),
            }));
        }
        let consumer = self
            .read_consumer(self.chunk_subject(&info.nuid), DeliverPolicy::All)
            .await?;
        if consumer.cached_info().num_pending == 0 {
            self.delete_consumer(&consumer.cached_info().name).await;
            return Err(self.corrupt(name, "the object's chunks are missing"));
        }
        let messages = consumer
            .stream()
            .max_messages_per_batch(READ_BATCH)
            .messages()
            .await
            .map_err(nats)?;
        let state = ReadState {
            store: self.clone(),
            consumer: consumer.cached_info().name.clone(),
            messages: Some(messages),
            hasher: Sha256::new(),
            size: 0,
            info: info.clone(),
        };
        Ok(Some(ObjectReader {
            info,
            chunks: futures::stream::unfold(state, ReadState::next).boxed(),
        }))
    }

    /// Store the data read from `reader` as `name` with `headers` (replacing any previous
    /// version, whose chunks are then purged).
    pub async fn put<R>(
        &self,
        name: &str,
        headers: BTreeMap<String, String>,
        reader: R,
    ) -> Result<ObjectInfo, PutError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let source = tokio_util::io::ReaderStream::with_capacity(reader, CHUNK_SIZE);
        self.put_chunks(name, headers, None, source).await
    }

    /// [`ObjectStore::put`] from a stream of byte pieces of any size (e.g. a multipart field).
    pub async fn put_stream<S, E>(
        &self,
        name: &str,
        headers: BTreeMap<String, String>,
        stream: S,
    ) -> Result<ObjectInfo, PutError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let source = stream.map(|r| r.map_err(io::Error::other));
        self.put_chunks(name, headers, None, source).await
    }

    /// [`ObjectStore::put`] from bytes in memory.
    pub async fn put_bytes(
        &self,
        name: &str,
        headers: BTreeMap<String, String>,
        data: impl Into<Bytes>,
    ) -> Result<ObjectInfo, PutError> {
        let source = futures::stream::iter([Ok::<_, io::Error>(data.into())]);
        self.put_chunks(name, headers, None, source).await
    }

    /// The put itself. With `sha256_header`, the hex SHA-256 of the data (known only once it
    /// has all streamed through) is stored in that header.
    async fn put_chunks<S>(
        &self,
        name: &str,
        mut headers: BTreeMap<String, String>,
        sha256_header: Option<&str>,
        source: S,
    ) -> Result<ObjectInfo, PutError>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin + Send,
    {
        check_connected(&self.js)?;
        let nuid = nuid::next().to_string();
        let chunk_subject = self.chunk_subject(&nuid);
        // Chunks of the version being replaced are purged at the end.
        let previous = self.info(name).await?;
        let mut info = ObjectInfo {
            name: name.to_string(),
            bucket: self.bucket.clone(),
            nuid,
            mtime: python_utc_isoformat(chrono::Utc::now()),
            options: Some(ObjectOptions {
                link: None,
                max_chunk_size: Some(CHUNK_SIZE as u64),
            }),
            ..ObjectInfo::default()
        };

        let sent = match self.publish_chunks(name, &chunk_subject, source).await {
            Ok(sent) => sent,
            Err(err) => {
                self.purge_subject(&chunk_subject).await;
                return Err(err);
            }
        };
        let sha = sent.hasher.finalize();
        info.size = sent.size;
        info.chunks = sent.chunks;
        info.digest = digest_string(&sha);
        if let Some(header) = sha256_header {
            headers.insert(header.to_string(), hex_lower(&sha));
        }
        info.headers = headers;

        if let Err(err) = self.publish_meta(name, &info).await {
            self.purge_subject(&chunk_subject).await;
            return Err(err.into());
        }
        if let Some(previous) = previous.filter(|p| !p.nuid.is_empty() && p.nuid != info.nuid) {
            self.purge_subject(&self.chunk_subject(&previous.nuid))
                .await;
        }
        Ok(info)
    }

    /// Publish the chunks with up to [`ACK_WINDOW`] acks outstanding. On error every
    /// outstanding publish is settled first, so a purge afterwards really removes them all.
    async fn publish_chunks<S>(
        &self,
        name: &str,
        subject: &str,
        source: S,
    ) -> Result<Sent, PutError>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin + Send,
    {
        let mut acks = AckWindow::default();
        let sent = self
            .publish_chunks_into(name, subject, source, &mut acks)
            .await;
        let settled = acks.settle().await;
        let sent = sent?;
        settled?;
        Ok(sent)
    }

    async fn publish_chunks_into<S>(
        &self,
        name: &str,
        subject: &str,
        mut source: S,
        acks: &mut AckWindow,
    ) -> Result<Sent, PutError>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin + Send,
    {
        let mut sent = Sent {
            hasher: Sha256::new(),
            size: 0,
            chunks: 0,
        };
        let mut pending = BytesMut::new();
        while let Some(piece) = source.next().await {
            let mut piece = piece.map_err(|source| PutError::Source {
                name: name.to_string(),
                source,
            })?;
            sent.size += piece.len() as u64;
            if let Some(limit) = self.max_object_bytes.filter(|l| sent.size > *l) {
                return Err(PutError::TooLarge {
                    name: name.to_string(),
                    limit,
                });
            }
            sent.hasher.update(&piece);
            while !piece.is_empty() {
                let chunk = if pending.is_empty() && piece.len() >= CHUNK_SIZE {
                    piece.split_to(CHUNK_SIZE)
                } else {
                    if pending.capacity() < CHUNK_SIZE {
                        pending.reserve(CHUNK_SIZE - pending.len());
                    }
                    let take = (CHUNK_SIZE - pending.len()).min(piece.len());
                    pending.extend_from_slice(&piece.split_to(take));
                    if pending.len() < CHUNK_SIZE {
                        continue;
                    }
                    pending.split().freeze()
                };
                acks.push(self.publish_chunk(subject, chunk).await?).await?;
                sent.chunks += 1;
            }
        }
        if !pending.is_empty() {
            acks.push(self.publish_chunk(subject, pending.freeze()).await?)
                .await?;
            sent.chunks += 1;
        }
        Ok(sent)
    }

    async fn publish_chunk(
        &self,
        subject: &str,
        chunk: Bytes,
    ) -> Result<PublishAckFuture, StoreError> {
        self.js
            .publish(subject.to_string(), chunk)
            .await
            .map_err(nats)
    }

    async fn publish_meta(&self, name: &str, info: &ObjectInfo) -> Result<(), StoreError> {
        let mut headers = HeaderMap::new();
        headers.insert(NATS_ROLLUP, "sub");
        let ack = self
            .js
            .publish_with_headers(self.meta_subject(name), headers, info.to_json().into())
            .await
            .map_err(nats)?;
        ack.await.map_err(nats)?;
        Ok(())
    }

    /// Delete the object: its meta is rewritten with `deleted: true`, size and chunks 0,
    /// digest and mtime empty (nuid, headers and options kept, as nats-py does), and its
    /// chunks are purged. Returns the meta it had before; `None` when missing or already
    /// deleted.
    pub async fn delete(&self, name: &str) -> Result<Option<ObjectInfo>, StoreError> {
        check_connected(&self.js)?;
        let Some(before) = self.info(name).await? else {
            return Ok(None);
        };
        if before.nuid.is_empty() {
            return Err(self.corrupt(name, "object meta has no nuid"));
        }
        let deleted = ObjectInfo {
            deleted: true,
            size: 0,
            chunks: 0,
            digest: String::new(),
            mtime: String::new(),
            ..before.clone()
        };
        let published = self.publish_meta(name, &deleted).await;
        // nats-py purges in a `finally`: even when the meta could not be written.
        self.purge_subject(&self.chunk_subject(&before.nuid)).await;
        published?;
        Ok(Some(before))
    }

    /// The last message on `subject`, by direct get when the stream allows it (nats-py and
    /// Go create object stores with `allow_direct`), else through the stream leader.
    async fn last_message(&self, subject: &str) -> Result<Option<Bytes>, StoreError> {
        check_connected(&self.js)?;
        if self.allow_direct {
            match self.stream.direct_get_last_for_subject(subject).await {
                Ok(msg) => Ok(Some(msg.payload)),
                Err(err) if err.kind() == DirectGetErrorKind::NotFound => Ok(None),
                Err(err) => Err(nats(err)),
            }
        } else {
            match self.stream.get_last_raw_message_by_subject(subject).await {
                Ok(msg) => Ok(Some(msg.payload)),
                Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(err) => Err(nats(err)),
            }
        }
    }

    /// An ephemeral, ack-less, in-memory pull consumer for reading `subject` once.
    async fn read_consumer(
        &self,
        subject: String,
        deliver_policy: DeliverPolicy,
    ) -> Result<consumer::PullConsumer, StoreError> {
        check_connected(&self.js)?;
        self.stream
            .create_consumer(consumer::pull::Config {
                filter_subject: subject,
                deliver_policy,
                ack_policy: AckPolicy::None,
                inactive_threshold: CONSUMER_INACTIVE_THRESHOLD,
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(nats)
    }

    /// Best effort: the server removes it after the inactive threshold anyway.
    async fn delete_consumer(&self, consumer: &str) {
        if let Err(err) = self.stream.delete_consumer(consumer).await {
            tracing::debug!(bucket = %self.bucket, %consumer, "deleting a read consumer failed: {err}");
        }
    }

    /// Purge every message on `subject`; failures are logged (the object itself is fine,
    /// only space is not reclaimed).
    async fn purge_subject(&self, subject: &str) {
        if let Err(err) = self.stream.purge().filter(subject).await {
            tracing::warn!(
                bucket = %self.bucket,
                %subject,
                "purging object chunks failed; their space is not reclaimed: {err}"
            );
        }
    }

    fn corrupt(&self, name: &str, message: &str) -> StoreError {
        StoreError::Corrupt {
            key: format!("{}/{name}", self.bucket),
            message: message.to_string(),
        }
    }
}

fn check_connected(js: &jetstream::Context) -> Result<(), StoreError> {
    match js.client().connection_state() {
        async_nats::connection::State::Connected => Ok(()),
        state => Err(StoreError::unavailable(
            "Disconnected",
            format!("connection to NATS is {state:?}"),
        )),
    }
}

pub(crate) fn stream_name(bucket: &str) -> String {
    format!("OBJ_{bucket}")
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Sent {
    hasher: Sha256,
    size: u64,
    chunks: u64,
}

/// Up to [`ACK_WINDOW`] chunk publishes in flight; the oldest ack is awaited when full.
#[derive(Default)]
struct AckWindow {
    in_flight: std::collections::VecDeque<PublishAckFuture>,
}

impl AckWindow {
    async fn push(&mut self, ack: PublishAckFuture) -> Result<(), StoreError> {
        self.in_flight.push_back(ack);
        if self.in_flight.len() >= ACK_WINDOW {
            if let Some(oldest) = self.in_flight.pop_front() {
                oldest.await.map_err(nats)?;
            }
        }
        Ok(())
    }

    /// Wait for every outstanding ack; the first error, once all are settled.
    async fn settle(&mut self) -> Result<(), StoreError> {
        let mut first_error = None;
        while let Some(ack) = self.in_flight.pop_front() {
            if let Err(err) = ack.await {
                first_error.get_or_insert(nats(err));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

// ---------------------------------------------------------------------------------------------
// Reading an object

/// An object being read: its meta and a stream of its chunks. The last item is an error
/// instead of the last chunk when the data does not match the digest or the size.
pub struct ObjectReader {
    info: ObjectInfo,
    chunks: futures::stream::BoxStream<'static, Result<Bytes, StoreError>>,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl ObjectReader {
    pub fn info(&self) -> &ObjectInfo {
        &self.info
    }

    /// Read the whole object into memory (small objects, tests).
    pub async fn read_to_end(mut self) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(usize::try_from(self.info.size).unwrap_or(0));
        while let Some(chunk) = self.chunks.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }
}

impl Stream for ObjectReader {
    type Item = Result<Bytes, StoreError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.chunks.poll_next_unpin(cx)
    }
}

struct ReadState {
    store: ObjectStore,
    consumer: String,
    messages: Option<consumer::pull::Stream>,
    hasher: Sha256,
    size: u64,
    info: ObjectInfo,
}

impl ReadState {
    async fn next(mut self) -> Option<(Result<Bytes, StoreError>, ReadState)> {
        let messages = self.messages.as_mut()?;
        let item = match tokio::time::timeout(self.store.idle_timeout, messages.next()).await {
            Ok(Some(Ok(msg))) => {
                let pending = msg.info().map(|i| i.pending).unwrap_or(0);
                let payload = msg.message.payload;
                self.hasher.update(&payload);
                self.size += payload.len() as u64;
                if self.size > self.info.size {
                    Err(self.corrupt("the object's chunks are longer than its size"))
                } else if pending == 0 {
                    self.finish(payload)
                } else {
                    Ok(payload)
                }
            }
            Ok(Some(Err(err))) => Err(nats(err)),
            Ok(None) => Err(self.corrupt("the object's chunks ended early")),
            Err(_) => Err(StoreError::unavailable(
                "TimedOut",
                format!(
                    "reading object {}/{} stalled for {:?} (replaced or deleted meanwhile?)",
                    self.store.bucket, self.info.name, self.store.idle_timeout
                ),
            )),
        };
        let last = item.is_err() || self.messages.is_none();
        if last {
            self.messages = None;
            self.store.delete_consumer(&self.consumer).await;
        }
        Some((item, self))
    }

    /// The last chunk: check size and digest before handing it out.
    fn finish(&mut self, payload: Bytes) -> Result<Bytes, StoreError> {
        self.messages = None;
        if self.size != self.info.size {
            return Err(self.corrupt("the object's chunks are shorter than its size"));
        }
        let sha = std::mem::take(&mut self.hasher).finalize();
        if self.info.digest.is_empty() {
            return Ok(payload);
        }
        match self.info.digest_bytes() {
            Some(expected) if expected[..] == sha[..] => Ok(payload),
            Some(_) => Err(self.corrupt("digest mismatch: the data does not match its SHA-256")),
            None => Err(self.corrupt("the object's digest is not a SHA-256 digest")),
        }
    }

    fn corrupt(&self, message: &str) -> StoreError {
        self.store.corrupt(&self.info.name, message)
    }
}

// ---------------------------------------------------------------------------------------------
// The wheel registry

/// The wheel registry (bucket `PYOCO_WHEEL_OBJECT_STORE_BUCKET`): the object store plus the
/// pyoco conventions on top — wheel filenames, the `sha256`, `content-type` and
/// `x-pyoco-wheel-tags` headers, and the per-file size cap `PYOCO_WHEEL_MAX_BYTES`.
///
/// It does not apply the upload rules of §7 (version checks, tag validation): that is the
/// gateway's job, with [`WheelRegistry::list`] as its input.
#[derive(Clone, Debug)]
pub struct WheelRegistry {
    objects: ObjectStore,
}

impl WheelRegistry {
    /// `max_bytes` > 0 caps every upload (0.5.1 applies `PYOCO_WHEEL_MAX_BYTES` per file).
    pub fn new(objects: ObjectStore, max_bytes: i64) -> WheelRegistry {
        let limit = u64::try_from(max_bytes).ok().filter(|l| *l > 0);
        WheelRegistry {
            objects: objects.with_max_object_bytes(limit),
        }
    }

    /// The underlying object store.
    pub fn objects(&self) -> &ObjectStore {
        &self.objects
    }

    /// Every live wheel whose name matches `^[A-Za-z0-9._+-]+\.whl$`, sorted by name (what
    /// `GET /wheels` and the worker's sync read). Empty registry ⇒ `[]`.
    pub async fn list(&self) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut wheels: Vec<ObjectInfo> = self
            .objects
            .list()
            .await?
            .into_iter()
            .filter(|info| is_valid_wheel_name(&info.name))
            .collect();
        wheels.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(wheels)
    }

    /// The live wheel's meta.
    pub async fn info(&self, name: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.objects.info(name).await
    }

    /// Store a wheel with 0.5.1's headers: `content-type` (default
    /// `application/octet-stream`), `sha256` (lower-case hex, computed while streaming) and,
    /// when `tags` is not empty, `x-pyoco-wheel-tags` (tags joined with `,`). `tags` must
    /// already be validated.
    pub async fn upload<R>(
        &self,
        name: &str,
        content_type: Option<&str>,
        tags: &[String],
        reader: R,
    ) -> Result<ObjectInfo, PutError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let source = tokio_util::io::ReaderStream::with_capacity(reader, CHUNK_SIZE);
        self.objects
            .put_chunks(
                name,
                wheel_headers(content_type, tags),
                Some(WHEEL_SHA256_HEADER),
                source,
            )
            .await
    }

    /// [`WheelRegistry::upload`] from a stream of byte pieces (e.g. a multipart field).
    pub async fn upload_stream<S, E>(
        &self,
        name: &str,
        content_type: Option<&str>,
        tags: &[String],
        stream: S,
    ) -> Result<ObjectInfo, PutError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let source = stream.map(|r| r.map_err(io::Error::other));
        self.objects
            .put_chunks(
                name,
                wheel_headers(content_type, tags),
                Some(WHEEL_SHA256_HEADER),
                source,
            )
            .await
    }

    /// The wheel's bytes as a stream (digest checked at the end); `None` when missing.
    pub async fn download(&self, name: &str) -> Result<Option<ObjectReader>, StoreError> {
        self.objects.get(name).await
    }

    /// Delete the wheel; returns its meta from before (for the history record's tags, size
    /// and sha256), `None` when it did not exist.
    pub async fn delete(&self, name: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.objects.delete(name).await
    }
}

/// The headers 0.5.1 stores with a wheel (all but `sha256`, which is added once known).
fn wheel_headers(content_type: Option<&str>, tags: &[String]) -> BTreeMap<String, String> {
    let mut headers = BTreeMap::new();
    let content_type = content_type
        .filter(|c| !c.is_empty())
        .unwrap_or(DEFAULT_CONTENT_TYPE);
    headers.insert(CONTENT_TYPE_HEADER.to_string(), content_type.to_string());
    if !tags.is_empty() {
        headers.insert(WHEEL_TAGS_HEADER.to_string(), tags.join(","));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_is_written_like_json_dumps_of_nats_py() {
        let info = ObjectInfo {
            name: "demo_pkg-0.1.0-py3-none-any.whl".into(),
            bucket: "pyoco_wheels".into(),
            nuid: "N".into(),
            size: 3,
            mtime: "2024-05-01T12:34:56.123456+00:00".into(),
            chunks: 1,
            digest: digest_string(&Sha256::digest(b"abc")),
            deleted: false,
            description: None,
            headers: wheel_headers(None, &["cpu".into(), "linux".into()]),
            options: Some(ObjectOptions {
                link: None,
                max_chunk_size: Some(131072),
            }),
        };
        assert_eq!(
            String::from_utf8(info.to_json()).unwrap(),
            r#"{"name": "demo_pkg-0.1.0-py3-none-any.whl", "bucket": "pyoco_wheels", "nuid": "N", "size": 3, "mtime": "2024-05-01T12:34:56.123456+00:00", "chunks": 1, "digest": "SHA-256=ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0=", "deleted": false, "headers": {"content-type": "application/octet-stream", "x-pyoco-wheel-tags": "cpu,linux"}, "options": {"max_chunk_size": 131072}}"#
        );
        assert_eq!(ObjectInfo::from_json(&info.to_json()).unwrap(), info);
    }

    #[test]
    fn headers_are_read_from_strings_and_from_go_style_lists() {
        let go = br#"{"name":"a.whl","headers":{"X-Pyoco-Wheel-Tags":["cpu","linux"],"sha256":["AB"],"n":[1],"z":null},"options":{"max_chunk_size":131072},"bucket":"b","nuid":"N","size":1,"mtime":"2024-05-01T12:34:56.123456789Z","chunks":1,"digest":"SHA-256=x"}"#;
        let info = ObjectInfo::from_json(go).unwrap();
        assert_eq!(info.wheel_tags_header(), Some("cpu,linux"));
        assert_eq!(
            info.wheel_tags(),
            vec!["cpu".to_string(), "linux".to_string()]
        );
        assert_eq!(info.header("sha256"), Some("AB"));
        assert_eq!(info.header("n"), Some("1"));
        assert_eq!(info.header("z"), None);
        assert!(!info.deleted);

        let legacy = br#"{"name":"a.whl","headers":{"inner":{"x-pyoco-wheel-tags":["gpu"]}}}"#;
        let info = ObjectInfo::from_json(legacy).unwrap();
        assert_eq!(info.wheel_tags(), vec!["gpu".to_string()]);

        let py = br#"{"name": "a.whl", "bucket": "b", "nuid": "N", "size": null, "deleted": null, "headers": null}"#;
        let info = ObjectInfo::from_json(py).unwrap();
        assert!(info.headers.is_empty() && info.size == 0 && !info.deleted);
    }

    #[test]
    fn header_lookup_tries_the_python_title_form() {
        assert_eq!(python_title("x-pyoco-wheel-tags"), "X-Pyoco-Wheel-Tags");
        assert_eq!(python_title("sha256"), "Sha256");
        let mut info = ObjectInfo::default();
        info.headers.insert("Sha256".into(), "AB".repeat(32));
        assert_eq!(info.sha256_hex(), Some("ab".repeat(32)));
        info.headers
            .insert("X-Pyoco-Wheel-Tags".into(), "gpu,bad tag".into());
        assert_eq!(info.wheel_tags(), Vec::<String>::new(), "gateway: strict");
        assert_eq!(
            info.wheel_tags_lenient(),
            vec!["gpu".to_string()],
            "worker: lenient"
        );
    }

    #[test]
    fn mtime_is_python_isoformat() {
        use chrono::TimeZone;
        let t = chrono::Utc
            .with_ymd_and_hms(2024, 5, 1, 12, 34, 56)
            .unwrap();
        assert_eq!(python_utc_isoformat(t), "2024-05-01T12:34:56+00:00");
        let t = t + chrono::Duration::microseconds(42);
        assert_eq!(python_utc_isoformat(t), "2024-05-01T12:34:56.000042+00:00");
    }

    #[test]
    fn digest_decodes_padded_or_not() {
        let sha = Sha256::digest(b"abc");
        let mut info = ObjectInfo {
            digest: digest_string(&sha),
            ..ObjectInfo::default()
        };
        assert_eq!(info.digest_bytes().unwrap()[..], sha[..]);
        assert_eq!(
            info.sha256_b64(),
            Some("ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0=")
        );
        info.digest = info.digest.trim_end_matches('=').to_string();
        assert_eq!(info.digest_bytes().unwrap()[..], sha[..]);
        info.digest = "SHA-256=!!".into();
        assert!(info.digest_bytes().is_none());
    }
}
