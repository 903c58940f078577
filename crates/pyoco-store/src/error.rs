//! One error type for every store operation.
//!
//! The gateway turns [`StoreError::Unavailable`] into `503 nats unavailable: <kind>` (contract
//! §3), `NotFound` into a 404 of the resource at hand and `Conflict` into a retry.

use std::fmt;

/// What went wrong talking to JetStream.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// NATS is not reachable, timed out, or answered with an error we cannot act on.
    /// `kind` is a short class name (`TimedOut`, `Disconnected`, `NotReady`, …) that ends up in
    /// the HTTP `detail` as `nats unavailable: <kind>`.
    #[error("nats unavailable: {kind}: {message}")]
    Unavailable { kind: String, message: String },
    /// The key or resource does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A compare-and-set write lost against a concurrent writer.
    #[error("conflict: {0} was changed concurrently")]
    Conflict(String),
    /// A stored value is not the JSON we expected (a corrupt or foreign record).
    #[error("corrupt record {key}: {message}")]
    Corrupt { key: String, message: String },
}

impl StoreError {
    pub fn unavailable(kind: impl fmt::Display, err: impl fmt::Display) -> Self {
        StoreError::Unavailable {
            kind: kind.to_string(),
            message: err.to_string(),
        }
    }

    /// The short class name used in `nats unavailable: <kind>` details.
    pub fn unavailable_kind(&self) -> Option<&str> {
        match self {
            StoreError::Unavailable { kind, .. } => Some(kind),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound(_))
    }
}

/// Maps any async-nats error whose kind is `Debug` to `Unavailable` with the kind's name.
pub(crate) fn nats<K: fmt::Debug + fmt::Display + Clone + PartialEq>(
    err: async_nats::error::Error<K>,
) -> StoreError {
    let kind = format!("{:?}", err.kind());
    // `Other` says nothing to a reader of a 503; name the error type instead.
    let kind = if kind == "Other" {
        "NatsError".to_string()
    } else {
        kind
    };
    StoreError::unavailable(kind, err)
}
