//! Reading the `POST /runs/yaml` multipart form without ever holding more than the allowed
//! flow.yaml in memory.
//!
//! Parts: `workflow` (the file), `flow_name` (text), `tag` (optional text), `params`
//! (optional text, ours: a JSON object merged over `flow.defaults`); other parts are skipped. The `workflow` part is read chunk by chunk and given up as soon as it passes
//! `PYOCO_WORKFLOW_YAML_MAX_BYTES` (its remaining bytes are read and dropped, so the answer
//! can still be a clean 413 after the whole form was read). The route also caps the whole
//! body ([`body_limit`]), so a client cannot stream forever.
//!
//! Like Starlette, the last part of a given name wins, and an empty text part counts as
//! absent (FastAPI treats `flow_name=""` as a missing field).

use axum::extract::multipart::{Field, MultipartError};
use axum::extract::Multipart;
use axum::http::StatusCode;
use utoipa::ToSchema;

use crate::error::{log_refusal, ApiError};

// The `POST /runs/yaml` form as `/openapi.json` describes it; `YamlForm::read` reads it.
/// A flow.yaml to run. Other parts are ignored; of a part sent twice, the last counts.
#[derive(ToSchema)]
#[schema(as = RunYamlForm)]
#[allow(dead_code)] // documentation only
pub(crate) struct YamlUpload {
    /// The flow.yaml file (contract §8), at most PYOCO_WORKFLOW_YAML_MAX_BYTES.
    #[schema(value_type = String, format = Binary, example = json!(EXAMPLE_FLOW_YAML))]
    workflow: (),
    /// The run's flow name (stripped; must not be blank; UTF-8, at most 1024 bytes).
    #[schema(min_length = 1, example = "main")]
    flow_name: String,
    /// The routing tag (stripped; empty: PYOCO_DEFAULT_TAG); the routing-tag rule applies.
    #[schema(nullable = false, max_length = 64, pattern = "^[A-Za-z0-9_-]*$")]
    tag: Option<String>,
    /// Ours (0.5.1 ignores it): a JSON object whose keys replace those of `flow.defaults` in
    /// the run's params (else 422 `invalid params`).
    #[schema(nullable = false, example = r#"{"name": "dashboard"}"#)]
    params: Option<String>,
}

/// A minimal valid flow.yaml (the form's documented example).
const EXAMPLE_FLOW_YAML: &str = "version: 1
flow:
  graph: |
    hello
tasks:
  hello:
    callable: my_tasks:hello
";

/// Room for the form's other parts and the multipart framing, on top of the flow.yaml limit.
pub(crate) const FORM_OVERHEAD_BYTES: usize = 64 * 1024;

/// The whole-body cap of `POST /runs/yaml` for a flow.yaml limit of `max_yaml` bytes.
pub(crate) fn body_limit(max_yaml: u64) -> usize {
    usize::try_from(max_yaml)
        .unwrap_or(usize::MAX)
        .saturating_add(FORM_OVERHEAD_BYTES)
}

/// The uploaded flow.yaml.
#[derive(Debug)]
pub(crate) enum Upload {
    /// Within the limit: all its bytes.
    Fits(Vec<u8>),
    /// Over the limit: only how many bytes were seen.
    TooLarge { bytes: u64 },
}

/// The timing parts of `POST /schedules/yaml`, as read (text; empty as absent).
#[derive(Debug, Default)]
pub(crate) struct ScheduleParts {
    pub run_at: Option<String>,
    pub interval_seconds: Option<String>,
    pub start_at: Option<String>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub catch_up: Option<String>,
}

/// The parts of the form we know, as read.
#[derive(Debug, Default)]
pub(crate) struct YamlForm {
    pub workflow: Option<Upload>,
    pub flow_name: Option<String>,
    pub tag: Option<String>,
    pub params: Option<String>,
    /// The parts of `POST /schedules/yaml` (ignored by the run routes).
    pub schedule: ScheduleParts,
    /// The name of a text part that was not UTF-8.
    pub not_utf8: Option<&'static str>,
}

impl YamlForm {
    /// Read every part. A request that is not multipart, or whose form is broken, reads as an
    /// empty form, so the answer is FastAPI's 422 for the missing parts (what Starlette does
    /// with an unparsable form); only a body over the route's cap is an error (413).
    pub(crate) async fn read(
        multipart: Option<Multipart>,
        max_yaml: u64,
    ) -> Result<YamlForm, ApiError> {
        let Some(multipart) = multipart else {
            return Ok(YamlForm::default());
        };
        match Self::read_parts(multipart, max_yaml).await {
            Ok(form) => Ok(form),
            Err(err) if err.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                log_refusal!(
                    "0016",
                    "submit yaml failed: workflow too large",
                    max_bytes = max_yaml
                );
                Err(ApiError::with_reason(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "workflow too large",
                    "the request body is larger than the flow.yaml limit plus the form overhead",
                )
                .logged())
            }
            Err(err) => {
                tracing::debug!("unreadable multipart body, read as an empty form: {err}");
                Ok(YamlForm::default())
            }
        }
    }

    async fn read_parts(
        mut multipart: Multipart,
        max_yaml: u64,
    ) -> Result<YamlForm, MultipartError> {
        let mut form = YamlForm::default();
        while let Some(field) = multipart.next_field().await? {
            match field.name() {
                Some("workflow") => form.workflow = Some(read_upload(field, max_yaml).await?),
                Some("flow_name") => form.flow_name = read_text(field, &mut form.not_utf8).await?,
                Some("tag") => form.tag = read_text(field, &mut form.not_utf8).await?,
                Some("params") => form.params = read_text(field, &mut form.not_utf8).await?,
                Some("run_at") => {
                    form.schedule.run_at = read_text(field, &mut form.not_utf8).await?
                }
                Some("interval_seconds") => {
                    form.schedule.interval_seconds = read_text(field, &mut form.not_utf8).await?
                }
                Some("start_at") => {
                    form.schedule.start_at = read_text(field, &mut form.not_utf8).await?
                }
                Some("cron") => form.schedule.cron = read_text(field, &mut form.not_utf8).await?,
                Some("timezone") => {
                    form.schedule.timezone = read_text(field, &mut form.not_utf8).await?
                }
                Some("catch_up") => {
                    form.schedule.catch_up = read_text(field, &mut form.not_utf8).await?
                }
                _ => {} // skipped by the next `next_field`
            }
        }
        Ok(form)
    }

    /// 422 `invalid form field` when a text part was not UTF-8.
    pub(crate) fn check_text(&self) -> Result<(), ApiError> {
        match &self.not_utf8 {
            None => Ok(()),
            Some(name) => Err(ApiError::with_reason(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid form field",
                format!("the {name} part is not UTF-8 text"),
            )),
        }
    }
}

/// A text part's value: UTF-8 only (a part starting `FF FE` is not read as UTF-16, whatever
/// its charset says), empty as absent. A part that is not UTF-8 is noted in `not_utf8`.
async fn read_text(
    field: Field<'_>,
    not_utf8: &mut Option<&'static str>,
) -> Result<Option<String>, MultipartError> {
    let name = match field.name() {
        Some("tag") => "tag",
        Some("params") => "params",
        Some("run_at") => "run_at",
        Some("interval_seconds") => "interval_seconds",
        Some("start_at") => "start_at",
        Some("cron") => "cron",
        Some("timezone") => "timezone",
        Some("catch_up") => "catch_up",
        _ => "flow_name",
    };
    let bytes = field.bytes().await?;
    match String::from_utf8(bytes.to_vec()) {
        Ok(text) => Ok(Some(text).filter(|s| !s.is_empty())),
        Err(_) => {
            *not_utf8 = Some(name);
            Ok(None)
        }
    }
}

/// The `workflow` part's bytes, kept only while they are within `max_yaml`.
async fn read_upload(mut field: Field<'_>, max_yaml: u64) -> Result<Upload, MultipartError> {
    let mut buf = Vec::new();
    let mut seen: u64 = 0;
    while let Some(chunk) = field.chunk().await? {
        seen += chunk.len() as u64;
        if seen <= max_yaml {
            buf.extend_from_slice(&chunk);
        } else if !buf.is_empty() {
            buf = Vec::new();
        }
    }
    Ok(if seen <= max_yaml {
        Upload::Fits(buf)
    } else {
        Upload::TooLarge { bytes: seen }
    })
}
