//! Who is calling: the place where authentication (contract §9) plugs in.
//!
//! Authentication is not implemented yet; every request is anonymous. The shape is ready for
//! it: an auth layer in front of [`crate::routes::protected`] will check the API key, insert a
//! [`Caller`] into the request extensions (or answer 401/403/503 itself), and the handlers,
//! which already take a [`Caller`], stamp `tenant_id`/`api_key_id` on new runs and hide other
//! tenants' runs with [`Caller::can_see`] — without changing a handler.

use std::convert::Infallible;

use axum::{extract::FromRequestParts, http::request::Parts};
use serde_json::{Map, Value};

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
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_default())
    }
}
