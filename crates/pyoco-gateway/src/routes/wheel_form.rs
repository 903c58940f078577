//! Reading the `POST /wheels` multipart form without ever holding the wheel in memory.
//!
//! Parts: `wheel` (the file), `replace` (form bool, default true) and `tags` (CSV); other parts
//! are skipped. The wheel is streamed into an anonymous temp file (in `TMPDIR`, removed when
//! dropped, also if the process dies) so its zip central directory can be read afterwards, and
//! given up — answered `413 wheel too large` at once — as soon as it passes
//! `PYOCO_WHEEL_MAX_BYTES`. The route also caps the whole body at that limit plus
//! [`FORM_OVERHEAD_BYTES`] ([`body_limit`]), so other parts cannot stream forever either.
//!
//! Like Starlette, the last part of a given name wins, an empty text part counts as absent, and a
//! `wheel` part without a file name is text, not a file (FastAPI: 422 "Expected UploadFile").
//!
//! 0.5.1 checks the name, the tags and then the size, once the whole form is read. Here the name
//! rules (§7 steps 3–4) and the parts already read are checked when the `wheel` part starts, so a
//! wrongly named wheel is refused before its bytes are read; [`WheelForm::read`] answers such a
//! refusal as soon as it is known, without reading the rest of the body. The text parts a client
//! sends after the file are then not looked at (both clients, ours and 0.5.1's, send them first).

use std::io::{Seek, SeekFrom};

use axum::extract::multipart::{Field, MultipartError};
use axum::extract::Multipart;
use axum::http::StatusCode;
use pyoco_wire::python::py_strip;
use pyoco_wire::{is_valid_wheel_name, parse_wheel_tags_csv, WheelFilename};
use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, BufWriter};
use utoipa::ToSchema;

use crate::{
    error::{log_refusal, ApiError, FieldError},
    pydantic,
};

// The `POST /wheels` form as `/openapi.json` describes it; `WheelForm::read` reads it.
/// A wheel to store. Other parts are ignored; of a part sent twice, the last counts.
#[derive(ToSchema)]
#[schema(as = WheelUploadForm)]
#[allow(dead_code)] // documentation only
pub(crate) struct WheelUpload {
    /// The wheel file, under its PEP 427 file name (`<name>-<version>[-<build>]-<python>-<abi>-<platform>.whl`),
    /// at most PYOCO_WHEEL_MAX_BYTES. Its `*.dist-info/METADATA` must name the same package
    /// and version. The part's content type is stored with it.
    #[schema(value_type = String, format = Binary)]
    wheel: (),
    /// Accepted for 0.5.1 compatibility (`true`, `false`, `1`, `0`, `yes`, `no`, `on`, `off`,
    /// `t`, `f`, `y`, `n`, any case); with the version rule a wheel of the same name can never
    /// be replaced anyway.
    #[schema(default = true)]
    replace: Option<bool>,
    /// Comma-separated wheel tags (each `^[A-Za-z0-9_-]+$`): only workers with one of these
    /// tags install the wheel; none: every worker.
    #[schema(nullable = false, example = "cpu,linux")]
    tags: Option<String>,
}

/// Room for the form's other parts and the multipart framing, on top of the wheel limit.
pub(crate) const FORM_OVERHEAD_BYTES: usize = 64 * 1024;

/// Write buffer between the request and the temp file (fewer blocking writes).
const STAGING_BUFFER_BYTES: usize = 1024 * 1024;

/// The whole-body cap of `POST /wheels` for a wheel limit of `max_wheel` bytes (0: none).
pub(crate) fn body_limit(max_wheel: u64) -> Option<usize> {
    (max_wheel > 0).then(|| {
        usize::try_from(max_wheel)
            .unwrap_or(usize::MAX)
            .saturating_add(FORM_OVERHEAD_BYTES)
    })
}

/// The wheel, staged on disk.
#[derive(Debug)]
pub(crate) struct StagedWheel {
    /// The trimmed file name (§7 step 3 passed).
    pub name: String,
    /// Its PEP 427 reading (§7 step 4 passed).
    pub filename: WheelFilename,
    /// The part's content type, if it had one.
    pub content_type: Option<String>,
    /// The bytes, positioned at the start.
    pub file: std::fs::File,
    pub size: u64,
}

/// The `wheel` part as read.
#[derive(Debug)]
enum WheelPart {
    /// A file part, staged.
    File(StagedWheel),
    /// A text part (no file name): FastAPI's "Expected UploadFile"; the text, cut at
    /// [`FORM_OVERHEAD_BYTES`], is the error's `input`.
    Text(String),
}

/// The form, read and checked in 0.5.1's order (§7 steps 1, 3–6).
#[derive(Debug)]
pub(crate) struct WheelForm {
    pub wheel: StagedWheel,
    pub replace: bool,
    /// Parsed tags (§7 step 5).
    pub tags: Vec<String>,
}

/// The parts as read, before the checks.
#[derive(Debug, Default)]
struct RawForm {
    wheel: Option<WheelPart>,
    replace: Option<String>,
    tags: Option<String>,
}

impl WheelForm {
    /// Read and check the form. A request that is not multipart, or whose form is broken,
    /// reads as an empty form (FastAPI's 422 for the missing `wheel`), like `POST /runs/yaml`.
    pub(crate) async fn read(
        multipart: Option<Multipart>,
        max_wheel: u64,
    ) -> Result<WheelForm, ApiError> {
        let mut raw = RawForm::default();
        if let Some(multipart) = multipart {
            match raw.read_parts(multipart, max_wheel).await {
                Ok(()) => {}
                Err(PartsError::Refused(err)) => return Err(err),
                Err(PartsError::Multipart(err))
                    if err.status() == StatusCode::PAYLOAD_TOO_LARGE =>
                {
                    return Err(too_large(format!(
                        "the request body is larger than PYOCO_WHEEL_MAX_BYTES ({max_wheel}) \
                         plus {FORM_OVERHEAD_BYTES} bytes for the other form parts"
                    )))
                }
                Err(PartsError::Multipart(err)) => {
                    tracing::debug!("unreadable multipart body, read as an empty form: {err}");
                    raw = RawForm::default();
                }
            }
        }
        raw.check()
    }
}

enum PartsError {
    /// The request is refused (a check failed, or the wheel is too large).
    Refused(ApiError),
    /// The body is not a readable multipart form.
    Multipart(MultipartError),
}

impl From<MultipartError> for PartsError {
    fn from(err: MultipartError) -> Self {
        PartsError::Multipart(err)
    }
}

impl From<ApiError> for PartsError {
    fn from(err: ApiError) -> Self {
        PartsError::Refused(err)
    }
}

impl RawForm {
    async fn read_parts(
        &mut self,
        mut multipart: Multipart,
        max_wheel: u64,
    ) -> Result<(), PartsError> {
        while let Some(field) = multipart.next_field().await? {
            match field.name() {
                Some("wheel") => {
                    let file_name = field.file_name().filter(|n| !n.is_empty());
                    self.wheel = Some(match file_name {
                        Some(file_name) => {
                            // What 0.5.1 would refuse before reading the bytes, refused now.
                            let (name, filename) = self.check_before_file(file_name)?;
                            WheelPart::File(stage(field, name, filename, max_wheel).await?)
                        }
                        None => WheelPart::Text(read_text(field).await?),
                    });
                }
                Some("replace") => self.replace = non_empty(read_text(field).await?),
                Some("tags") => self.tags = non_empty(read_text(field).await?),
                _ => {} // skipped by the next `next_field`
            }
        }
        Ok(())
    }

    /// §7 steps 1 (`replace`, if read), 3, 4 and 5 (`tags`, if read) for the file name of the
    /// `wheel` part about to be read.
    fn check_before_file(&self, file_name: &str) -> Result<(String, WheelFilename), ApiError> {
        if let Some(err) = self.replace_error() {
            return Err(ApiError::Validation(vec![err]));
        }
        let checked = check_name(file_name)?;
        check_tags(self.tags.as_deref())?;
        Ok(checked)
    }

    /// All checks, in 0.5.1's order, once the whole form is read.
    fn check(self) -> Result<WheelForm, ApiError> {
        // 1. FastAPI's form validation: every bad field in one list, in signature order.
        let mut errors = Vec::new();
        match &self.wheel {
            None => errors.push(FieldError {
                kind: "missing",
                loc: vec!["body".into(), "wheel".into()],
                msg: "Field required".into(),
                input: Value::Null,
                ctx: None,
            }),
            Some(WheelPart::Text(text)) => errors.push(FieldError {
                kind: "value_error",
                loc: vec!["body".into(), "wheel".into()],
                msg: "Value error, Expected UploadFile, received: <class 'str'>".into(),
                input: Value::String(text.clone()),
                ctx: Some(json!({"error": {}})),
            }),
            Some(WheelPart::File(_)) => {}
        }
        errors.extend(self.replace_error());
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        let Some(WheelPart::File(wheel)) = self.wheel else {
            unreachable!("checked above");
        };
        // 2. is auth (not here yet); 3.–4. were checked when the part started.
        // 5. Tags (a `tags` part after the file is only read now).
        let tags = check_tags(self.tags.as_deref())?;
        // 6. Size: checked while staging.
        Ok(WheelForm {
            wheel,
            replace: self
                .replace
                .as_deref()
                .and_then(pydantic::boolean)
                .unwrap_or(true),
            tags,
        })
    }

    /// pydantic's `bool_parsing` error for a `replace` that is not a boolean word.
    fn replace_error(&self) -> Option<FieldError> {
        let raw = self.replace.as_deref()?;
        pydantic::boolean(raw).is_none().then(|| FieldError {
            kind: "bool_parsing",
            loc: vec!["body".into(), "replace".into()],
            msg: "Input should be a valid boolean, unable to interpret input".into(),
            input: Value::String(raw.to_string()),
            ctx: None,
        })
    }
}

/// §7 steps 3 and 4: the trimmed name matches `^[A-Za-z0-9._+-]+\.whl$`, then parses as a
/// PEP 427 wheel file name.
fn check_name(file_name: &str) -> Result<(String, WheelFilename), ApiError> {
    let name = py_strip(file_name);
    if !is_valid_wheel_name(name) {
        log_refusal!("0002", "upload wheel failed: invalid wheel name", wheel_name = %file_name);
        return Err(ApiError::with_reason(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid wheel name",
            format!("file name {file_name:?}: only letters, digits and `._+-`, ending in .whl"),
        )
        .logged());
    }
    let filename = WheelFilename::parse(name).map_err(|err| {
        log_refusal!("0002", "upload wheel failed: invalid wheel filename", wheel_name = %name);
        ApiError::with_reason(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid wheel filename",
            err.to_string(),
        )
        .logged()
    })?;
    Ok((name.to_string(), filename))
}

/// §7 step 5.
fn check_tags(raw: Option<&str>) -> Result<Vec<String>, ApiError> {
    raw.map_or(Ok(Vec::new()), parse_wheel_tags_csv)
        .map_err(|err| {
            log_refusal!(
                "0002",
                "upload wheel failed: invalid wheel tags",
                tags = raw.unwrap_or_default()
            );
            ApiError::with_reason(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid wheel tags",
                err.to_string(),
            )
            .logged()
        })
}

fn too_large(reason: String) -> ApiError {
    log_refusal!("0002", "upload wheel failed: wheel too large", reason = %reason);
    ApiError::with_reason(StatusCode::PAYLOAD_TOO_LARGE, "wheel too large", reason).logged()
}

fn non_empty(text: String) -> Option<String> {
    Some(text).filter(|s| !s.is_empty())
}

/// A text part, at most [`FORM_OVERHEAD_BYTES`] of it (the rest is read and dropped; invalid
/// UTF-8 replaced).
async fn read_text(mut field: Field<'_>) -> Result<String, MultipartError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await? {
        let room = FORM_OVERHEAD_BYTES.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Stream the `wheel` part into a temp file; 413 as soon as it passes `max_wheel` (> 0).
async fn stage(
    mut field: Field<'_>,
    name: String,
    filename: WheelFilename,
    max_wheel: u64,
) -> Result<StagedWheel, PartsError> {
    let content_type = field.content_type().map(str::to_string);
    let file = tempfile::tempfile().map_err(staging_failed)?;
    let mut writer = BufWriter::with_capacity(
        STAGING_BUFFER_BYTES,
        tokio::fs::File::from_std(file.try_clone().map_err(staging_failed)?),
    );
    let mut size: u64 = 0;
    while let Some(chunk) = field.chunk().await? {
        size += chunk.len() as u64;
        if max_wheel > 0 && size > max_wheel {
            return Err(PartsError::Refused(too_large(format!(
                "{name} is larger than PYOCO_WHEEL_MAX_BYTES ({max_wheel} bytes)"
            ))));
        }
        writer.write_all(&chunk).await.map_err(staging_failed)?;
    }
    writer.flush().await.map_err(staging_failed)?;
    let mut file = file;
    file.seek(SeekFrom::Start(0)).map_err(staging_failed)?;
    Ok(StagedWheel {
        name,
        filename,
        content_type,
        file,
        size,
    })
}

/// The temp file could not be written (disk full, `TMPDIR` missing): a server-side problem.
fn staging_failed(err: std::io::Error) -> ApiError {
    let dir = std::env::temp_dir();
    ApiError::with_reason(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal Server Error",
        format!(
            "staging the upload in {} failed: {err} (the gateway needs free space there for the \
             largest wheel; set TMPDIR to move it)",
            dir.display()
        ),
    )
}
