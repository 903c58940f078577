//! Reading and deleting dead letters (stream `PYOCO_DLQ`, §2.7) by stream sequence: the id
//! `GET /dlq` names an entry by. Entries are written by our workers and by 0.5.1's alike.

use async_nats::jetstream::stream::RawMessageErrorKind;
use bytes::Bytes;

use crate::{error::nats, Store, StoreError};

/// One dead letter as stored.
#[derive(Debug, Clone)]
pub struct DlqEntry {
    /// Its stream sequence (the entry's id).
    pub seq: u64,
    /// `<dlq prefix>.<tag>`.
    pub subject: String,
    /// When the stream stored it (epoch seconds).
    pub stored_at: f64,
    /// The record (JSON, §2.7).
    pub payload: Bytes,
}

/// The DLQ stream's state, from one stream-info request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DlqState {
    /// First and last sequence (`0, 0` when it never held a message).
    pub first: u64,
    pub last: u64,
    /// Entries in it now.
    pub messages: u64,
}

impl Store {
    /// The DLQ stream's sequences and message count (one request).
    pub async fn dlq_state(&self) -> Result<DlqState, StoreError> {
        self.check_connected()?;
        let stream = self
            .inner
            .js
            .get_stream(&self.inner.cfg.dlq_stream)
            .await
            .map_err(nats)?;
        let state = &stream.cached_info().state;
        Ok(DlqState {
            first: state.first_sequence,
            last: state.last_sequence,
            messages: state.messages,
        })
    }

    /// The DLQ stream, without asking for its info (no request).
    async fn dlq_stream(&self) -> Result<async_nats::jetstream::stream::Stream<()>, StoreError> {
        self.check_connected()?;
        self.inner
            .js
            .get_stream_no_info(&self.inner.cfg.dlq_stream)
            .await
            .map_err(nats)
    }

    /// The entry at `seq`, `None` when there is none (deleted, expired, never written).
    pub async fn dlq_entry(&self, seq: u64) -> Result<Option<DlqEntry>, StoreError> {
        if seq == 0 {
            return Ok(None);
        }
        match self.dlq_stream().await?.get_raw_message(seq).await {
            Ok(msg) => Ok(Some(DlqEntry {
                seq: msg.sequence,
                subject: msg.subject.to_string(),
                stored_at: msg.time.unix_timestamp_nanos() as f64 / 1e9,
                payload: msg.payload,
            })),
            Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(nats(err)),
        }
    }

    /// Delete the entry at `seq`; false when there was none.
    pub async fn dlq_delete(&self, seq: u64) -> Result<bool, StoreError> {
        if seq == 0 {
            return Ok(false);
        }
        match self.dlq_stream().await?.delete_message(seq).await {
            Ok(deleted) => Ok(deleted),
            // "no message found" comes back as a JetStream error (10057).
            Err(err) if err.to_string().contains("no message found") => Ok(false),
            Err(err) => Err(nats(err)),
        }
    }
}
