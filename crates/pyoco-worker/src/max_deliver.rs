//! Jobs JetStream gave up on: the `MAX_DELIVERIES` advisory (§14-9).
//!
//! When a delivery of a job is NAKed or not ACKed within the ack wait and the message has
//! already been delivered `max_deliver` times, JetStream does not deliver it again — and, the
//! work stream having WorkQueue retention, the message then sits in the stream forever, its run
//! stuck in PENDING or RUNNING. 0.5.1 lets that happen silently. JetStream announces it on
//! `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>` (JSON with `stream_seq` and
//! `deliveries`), so every worker listens there for the consumers of its tags and, for each
//! advisory:
//!
//! 1. reads the message from the stream by sequence (gone already: someone handled it, done);
//! 2. hands it to [`give_up`](crate::job::give_up): the run — unless already finished — becomes
//!    FAILED with `max_deliver_exceeded: delivered N times` (CANCELLED if a cancel was
//!    requested), its metadata kept, and a `max_deliver_exceeded` DLQ record is published;
//! 3. deletes the message from the stream — only once something was recorded (the snapshot or
//!    the DLQ record): a message that cannot be reported (NATS trouble) is kept, never lost.
//!
//! The subscription uses a queue group, so among our workers one receives each advisory; the
//! steps are idempotent anyway (compare-and-set on the snapshot, a finished run is not reported
//! twice, deleting a deleted message is fine). Advisories are plain NATS messages: one sent
//! while no worker of ours is connected is lost, and that message stays in the stream as in
//! 0.5.1. The path for a failure the worker itself sees on the last allowed delivery is in
//! `job/finish.rs` (`nak`): same report, then TERM.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    stream::{DeleteMessageErrorKind, RawMessageErrorKind},
    ErrorCode,
};
use futures::StreamExt;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::{
    context::{Shared, TagConsumer},
    job::{give_up, Exhausted},
};

/// Queue group of the advisory subscriptions (one of our workers handles each advisory).
const QUEUE_GROUP: &str = "pyoco_max_deliver";

/// The parts of `io.nats.jetstream.advisory.v1.max_deliver` we use.
#[derive(Debug, Deserialize)]
struct Advisory {
    #[serde(default)]
    stream: String,
    #[serde(default)]
    consumer: String,
    stream_seq: u64,
    #[serde(default)]
    deliveries: u64,
}

/// The advisory subject for `consumer` of `stream`.
pub(crate) fn advisory_subject(stream: &str, consumer: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}")
}

/// Subscribe to the advisories of every consumer in `consumers` that has a `max_deliver` and
/// handle them in a background task (until it is aborted). Fails only when subscribing fails.
pub(crate) async fn spawn_watch(
    sh: Arc<Shared>,
    consumers: Arc<Vec<TagConsumer>>,
) -> Result<JoinHandle<()>, async_nats::SubscribeError> {
    let cfg = sh.store.config().clone();
    let mut subs = Vec::new();
    for tc in consumers.iter().filter(|tc| tc.max_deliver > 0) {
        let subject = advisory_subject(&cfg.work_stream, &cfg.consumer_name(&tc.tag));
        let sub = sh
            .store
            .client()
            .queue_subscribe(subject, QUEUE_GROUP.into())
            .await?;
        subs.push(sub);
    }
    // The SUB must reach the server before anything can go wrong with a job.
    if let Err(err) = sh.store.client().flush().await {
        tracing::debug!("flush after the advisory subscriptions failed: {err}");
    }
    Ok(tokio::spawn(async move {
        if subs.is_empty() {
            return;
        }
        let mut all = futures::stream::select_all(subs);
        while let Some(msg) = all.next().await {
            let advisory = match serde_json::from_slice::<Advisory>(&msg.payload) {
                Ok(a) => a,
                Err(err) => {
                    tracing::warn!(subject = %msg.subject, "unreadable max-deliveries advisory: {err}");
                    continue;
                }
            };
            let Some(tc) = consumers
                .iter()
                .find(|tc| cfg.consumer_name(&tc.tag) == advisory.consumer)
            else {
                continue;
            };
            let span = tracing::error_span!(
                "max_deliver_exceeded",
                consumer = %advisory.consumer,
                stream_seq = advisory.stream_seq
            );
            handle(&sh, tc, &advisory).instrument(span).await;
        }
    }))
}

async fn handle(sh: &Shared, tc: &TagConsumer, a: &Advisory) {
    let stream_name = if a.stream.is_empty() {
        sh.store.config().work_stream.clone()
    } else {
        a.stream.clone()
    };
    let stream = match sh.store.jetstream().get_stream(&stream_name).await {
        Ok(s) => s,
        Err(err) => {
            tracing::warn!("cannot open the work stream to report an exhausted job: {err}");
            return;
        }
    };
    let msg = match stream.get_raw_message(a.stream_seq).await {
        Ok(m) => m,
        Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => {
            tracing::debug!("exhausted job already removed from the stream");
            return;
        }
        Err(err) => {
            tracing::warn!("reading the exhausted job from the stream failed: {err}");
            return;
        }
    };
    let max_deliver = u64::try_from(tc.max_deliver).unwrap_or(0);
    let delivered = if a.deliveries > 0 {
        a.deliveries
    } else {
        max_deliver
    };
    tracing::error!(
        delivered,
        max_deliver,
        "JetStream will not deliver this job again (max_deliver reached); failing its run"
    );
    let subject = msg.subject.to_string();
    let reported = give_up(
        sh,
        &Exhausted {
            subject: &subject,
            tag: &tc.tag,
            payload: &msg.payload,
            delivered,
            max_deliver,
        },
    )
    .await;
    if !reported {
        // Keep the message rather than lose it unreported.
        tracing::warn!("the exhausted job could not be reported; it stays in the work stream");
        return;
    }
    // A few tries: the message must not stay behind once its run was reported.
    for pause in [
        Duration::ZERO,
        Duration::from_millis(500),
        Duration::from_secs(2),
    ] {
        tokio::time::sleep(pause).await;
        match stream.delete_message(a.stream_seq).await {
            Ok(_) => return,
            Err(err) if deleted_already(&err.kind()) => return,
            Err(err) => {
                tracing::warn!("deleting the exhausted job from the work stream failed: {err}")
            }
        }
    }
}

/// "no message found": already deleted (by another worker), or removed by WorkQueue retention.
fn deleted_already(kind: &DeleteMessageErrorKind) -> bool {
    match kind {
        DeleteMessageErrorKind::JetStream(e) => {
            e.error_code() == ErrorCode::NO_MESSAGE_FOUND || e.error_code() == ErrorCode(10057)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advisory_parses() {
        let a: Advisory = serde_json::from_slice(br#"{"type":"io.nats.jetstream.advisory.v1.max_deliver","id":"x","timestamp":"2026-11-27T06:38:56.916162933Z","stream":"PYOCO_WORK","consumer":"pyoco_workers_default","stream_seq":7,"deliveries":2}"#).unwrap();
        assert_eq!(a.stream_seq, 7);
        assert_eq!(a.deliveries, 2);
        assert_eq!(a.consumer, "pyoco_workers_default");
        assert_eq!(
            advisory_subject("PYOCO_WORK", "pyoco_workers_default"),
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.PYOCO_WORK.pyoco_workers_default"
        );
    }
}
