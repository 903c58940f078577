//! The wheel registry over HTTP (contract §3.2 `/wheels*`, §7): list (`GET /wheels`), upload
//! (`POST /wheels`), download (`GET /wheels/{wheel_name}`) and delete
//! (`DELETE /wheels/{wheel_name}`); the history is `wheel_history.rs`.
//!
//! An upload is staged on disk (`wheel_form.rs`, never whole in memory), checked in 0.5.1's
//! order — form, name, PEP 427 file name, tags, size — then, new here, read as a wheel
//! (`wheel_archive.rs`: its METADATA must name the package and version of its file name), then
//! held against the version rule, stored from the temp file, and recorded in the history.
//!
//! Two decisions 0.5.1 left open (§14-18):
//!
//! * **Platform builds.** A wheel of the package's latest version is accepted when its
//!   compatibility tags share none with the builds of that version already stored (e.g.
//!   `…-cp311-cp311-manylinux_2_17_x86_64.whl` next to `…-cp311-cp311-win_amd64.whl`): workers
//!   install the newest wheel their interpreter supports, so each picks its build. A wheel that
//!   overlaps an existing build of the same version (the same file, a `py2.py3` twin of a `py3`
//!   wheel, another build number) is still `409 wheel version already exists; bump version`.
//! * **Retention.** After an upload, the package's versions beyond the newest
//!   `PYOCO_WHEEL_KEEP_VERSIONS` (default 5; 0 keeps all) are deleted, each with a `delete`
//!   history record (actor and source of the upload) and a log line. Versions are counted per
//!   *line*: wheels of the package with the same wheel tags and the same compatibility tags. A
//!   worker installs the newest wheel among the lines it matches, and every line keeps its
//!   newest, so no worker loses the wheel it would install.
//!
//! Downloads are streamed from the object store to the client chunk by chunk.

use axum::{
    body::Body,
    extract::{
        multipart::MultipartRejection, rejection::PathRejection, DefaultBodyLimit, Multipart, Path,
        State,
    },
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use futures::TryStreamExt;
use pyoco_store::{ObjectInfo, PutError, Store};
use pyoco_wire::{
    is_valid_wheel_name, python::py_strip, Pep440Version, WheelFilename, WheelHistoryAction,
};
use serde::Serialize;
use utoipa::{
    openapi::{self as oas, RefOr},
    ToResponse, ToSchema,
};

use super::components::{
    error_response, BadRequest, NatsUnavailable, PayloadTooLarge, Unprocessable,
};
use super::wheel_archive;
use super::wheel_form::{body_limit, StagedWheel, WheelForm, WheelUpload};
use super::wheel_history::{self, RequestSource};
use crate::{auth::Caller, error::ApiError, json::PyJson, AppState};

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let upload = post(upload_wheel).layer(match body_limit(state.wheel_max_bytes()) {
        Some(limit) => DefaultBodyLimit::max(limit),
        None => DefaultBodyLimit::disable(),
    });
    Router::new()
        .route("/wheels", get(list_wheels).merge(upload))
        // A static segment wins over `{wheel_name}` in axum's router, whatever the order.
        .route(
            "/wheels/history",
            get(wheel_history::wheel_history).delete(no_wheel_named_history),
        )
        .route(
            "/wheels/{wheel_name}",
            get(download_wheel).delete(delete_wheel),
        )
}

/// 404 `wheel not found`.
fn wheel_not_found() -> ApiError {
    ApiError::detail(StatusCode::NOT_FOUND, "wheel not found")
}

/// A stored wheel as `GET /wheels` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WheelItem {
    /// The wheel file name.
    #[schema(example = "demo_pkg-0.1.0-py3-none-any.whl")]
    name: String,
    size_bytes: u64,
    /// `SHA-256=<urlsafe base64, padded>`.
    #[schema(example = "SHA-256=LXEWQrcmsEQBYnyp-6wy9chTD7GQPMTbAiWHF5IaSIE=")]
    digest: String,
    /// The digest without its `SHA-256=` prefix.
    #[schema(required = true)]
    sha256_b64: Option<String>,
    /// When it was stored (ISO 8601).
    #[schema(example = "2024-05-01T12:34:56.123456+00:00")]
    mtime: String,
    /// The object's NUID (a new one on every upload).
    nuid: String,
    /// Wheel tags: only workers with one of them install it; none: every worker.
    tags: Vec<String>,
}

impl WheelItem {
    fn from_info(info: &ObjectInfo) -> WheelItem {
        WheelItem {
            name: info.name.clone(),
            size_bytes: info.size,
            digest: info.digest.clone(),
            sha256_b64: info.sha256_b64().map(str::to_string),
            mtime: info.mtime.clone(),
            nuid: info.nuid.clone(),
            tags: info.wheel_tags(),
        }
    }
}

/// The answer to an upload: the stored wheel, with the hex SHA-256 of the upload.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StoredWheel {
    #[schema(example = "demo_pkg-0.1.0-py3-none-any.whl")]
    name: String,
    size_bytes: u64,
    digest: String,
    #[schema(required = true)]
    sha256_b64: Option<String>,
    mtime: String,
    nuid: String,
    /// The tags as uploaded (parsed).
    tags: Vec<String>,
    /// Lower-case hex SHA-256 of the upload.
    sha256_hex: String,
}

/// The answer to a delete.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeletedWheel {
    name: String,
    /// Always `true`.
    deleted: bool,
}

/// `GET /wheels`.
#[utoipa::path(
    get,
    path = "/wheels",
    operation_id = "list_wheels",
    tag = "wheels",
    summary = "List the stored wheels",
    description = "Every stored wheel whose name is a wheel file name, sorted by name. An empty \
registry is `[]`.",
    responses(
        (status = 200, description = "The wheels", body = Vec<WheelItem>, links(
            ("download_wheel" = (operation_id = "download_wheel",
                parameters(("wheel_name" = "$response.body#/0/name")),
                description = "Download the first wheel")),
            ("delete_wheel" = (operation_id = "delete_wheel",
                parameters(("wheel_name" = "$response.body#/0/name")),
                description = "Delete the first wheel")),
        )),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn list_wheels(State(state): State<AppState>) -> Result<PyJson<Vec<WheelItem>>, ApiError> {
    let store = state.store()?;
    let wheels = store.wheels().list().await?;
    Ok(PyJson(wheels.iter().map(WheelItem::from_info).collect()))
}

/// `POST /wheels`.
#[utoipa::path(
    post,
    path = "/wheels",
    operation_id = "upload_wheel",
    tag = "wheels",
    summary = "Upload a wheel",
    description = "Checks, in 0.5.1's order: the form (422 list), the file name (422 `invalid \
wheel name`, then `invalid wheel filename` for PEP 427), the tags (422 `invalid wheel tags`), the \
size (413 `wheel too large`: PYOCO_WHEEL_MAX_BYTES, answered as soon as the upload passes it); \
then the archive (422 `invalid wheel`, the failed check in `reason`: a zip with one \
`*.dist-info/METADATA` whose Name and Version are the file name's); then the version rule over \
the stored wheels of the same package (PEP 503 name, PEP 440 order): the same version → 409 \
`wheel version already exists; bump version` — unless the wheel is another platform build of it \
(compatibility tags disjoint from the stored builds of that version) — and an older version → 409 \
`wheel version must be greater than existing latest version`. Stores the wheel, records the \
upload in the history, then deletes the package's versions beyond PYOCO_WHEEL_KEEP_VERSIONS \
(counted per wheel tags and platform).",
    request_body(content = WheelUpload, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Stored", body = StoredWheel, links(
            ("download_wheel" = (operation_id = "download_wheel",
                parameters(("wheel_name" = "$response.body#/name")),
                description = "Download the wheel")),
            ("delete_wheel" = (operation_id = "delete_wheel",
                parameters(("wheel_name" = "$response.body#/name")),
                description = "Delete the wheel")),
        )),
        (status = 409, response = WheelConflict),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 500, response = WheelStagingFailed),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn upload_wheel(
    State(state): State<AppState>,
    caller: Caller,
    source: RequestSource,
    multipart: Result<Option<Multipart>, MultipartRejection>,
) -> Result<PyJson<StoredWheel>, ApiError> {
    let multipart = multipart.unwrap_or_else(|rejection| {
        tracing::debug!("unreadable multipart request, read as an empty form: {rejection}");
        None
    });
    let WheelForm {
        wheel,
        replace,
        tags,
    } = WheelForm::read(multipart, state.wheel_max_bytes()).await?;
    let StagedWheel {
        name,
        filename,
        content_type,
        file,
        size,
    } = wheel;

    // New: the bytes must be the wheel the name says.
    let file = check_archive(file, &name, &filename).await?;

    // 7. The version rule, over the stored wheels.
    let store = state.store()?;
    let listing = store.wheels().list().await?;
    check_version_rule(&name, &filename, &listing)?;
    // 8. `replace=false` (unreachable in 0.5.1 too: a stored wheel of this name fails step 7).
    if !replace && store.wheels().info(&name).await?.is_some() {
        return Err(ApiError::detail(
            StatusCode::CONFLICT,
            "wheel already exists",
        ));
    }

    // 9. Store it from the temp file.
    let info = store
        .wheels()
        .upload(
            &name,
            content_type.as_deref(),
            &tags,
            tokio::fs::File::from_std(file),
        )
        .await
        .map_err(|err| put_error(&name, err))?;
    let sha256_hex = info.sha256_hex().unwrap_or_default();
    tracing::info!(
        wheel_name = %name,
        package = %filename.name,
        version = %filename.version,
        size_bytes = size,
        tags = ?tags,
        "wheel uploaded"
    );

    // 10. History.
    let mut record = wheel_history::new_record(WheelHistoryAction::Upload, &name, &caller, &source);
    record.tags = tags.clone();
    record.size_bytes = Some(size);
    record.sha256_hex = Some(sha256_hex.clone()).filter(|s| !s.is_empty());
    record.replace = Some(replace);
    wheel_history::append(store, &record).await;

    // New: retention.
    let keep = state.wheel_keep_versions();
    for old in wheels_to_prune(&listing, &name, &filename, &tags, keep) {
        prune(store, &caller, &source, &old, &filename.name, keep).await;
    }

    let item = WheelItem::from_info(&info);
    Ok(PyJson(StoredWheel {
        name: item.name,
        size_bytes: item.size_bytes,
        digest: item.digest,
        sha256_b64: item.sha256_b64,
        mtime: item.mtime,
        nuid: item.nuid,
        tags,
        sha256_hex,
    }))
}

/// Read the staged wheel's central directory and METADATA on the blocking pool; hand the file
/// back, rewound, when it is the wheel its name says.
async fn check_archive(
    mut file: std::fs::File,
    name: &str,
    filename: &WheelFilename,
) -> Result<std::fs::File, ApiError> {
    use std::io::{Seek, SeekFrom};

    let (name, filename) = (name.to_string(), filename.clone());
    let checked = tokio::task::spawn_blocking(move || {
        let result = wheel_archive::check(&mut file, &name, &filename).and_then(|()| {
            file.seek(SeekFrom::Start(0))
                .map(drop)
                .map_err(|err| wheel_archive::InvalidWheel(format!("{name}: {err}")))
        });
        (file, result)
    })
    .await;
    match checked {
        Ok((file, Ok(()))) => Ok(file),
        Ok((_, Err(invalid))) => Err(ApiError::with_reason(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid wheel",
            invalid.to_string(),
        )),
        Err(join) => Err(ApiError::with_reason(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            format!("checking the wheel failed: {join}"),
        )),
    }
}

/// §7 step 7 with the platform-build decision (module docs): for every stored wheel of the
/// same package, an equal version whose compatibility tags meet the new wheel's → 409 `already
/// exists`; after the scan, a version below the newest stored one → 409 `must be greater`.
fn check_version_rule(
    name: &str,
    filename: &WheelFilename,
    listing: &[ObjectInfo],
) -> Result<(), ApiError> {
    let mut newest: Option<Pep440Version> = None;
    for existing in same_package(listing, filename) {
        let (info, other) = existing;
        if newest.as_ref().is_none_or(|n| other.version > *n) {
            newest = Some(other.version.clone());
        }
        if other.version == filename.version
            && (info.name == name || !other.tags.is_disjoint(&filename.tags))
        {
            return Err(ApiError::detail(
                StatusCode::CONFLICT,
                "wheel version already exists; bump version",
            ));
        }
    }
    match newest {
        Some(newest) if filename.version < newest => Err(ApiError::detail(
            StatusCode::CONFLICT,
            "wheel version must be greater than existing latest version",
        )),
        _ => Ok(()),
    }
}

/// The stored wheels of `filename`'s package (normalised name), with their parsed file names.
fn same_package<'a>(
    listing: &'a [ObjectInfo],
    filename: &'a WheelFilename,
) -> impl Iterator<Item = (&'a ObjectInfo, WheelFilename)> + 'a {
    listing.iter().filter_map(move |info| {
        WheelFilename::parse(&info.name)
            .ok()
            .filter(|other| other.name == filename.name)
            .map(|other| (info, other))
    })
}

/// The wheels to delete after `name` (`filename`, with wheel `tags`) was stored, so that its
/// line — the package's wheels with the same wheel tags (as workers read them: sorted, without
/// duplicates) and the same compatibility tags — keeps its newest `keep` versions. `listing` is
/// the registry from before the upload. `keep == 0`: nothing.
fn wheels_to_prune(
    listing: &[ObjectInfo],
    name: &str,
    filename: &WheelFilename,
    tags: &[String],
    keep: u64,
) -> Vec<String> {
    let Ok(keep) = usize::try_from(keep) else {
        return Vec::new();
    };
    if keep == 0 {
        return Vec::new();
    }
    let mut line_tags = tags.to_vec();
    line_tags.sort();
    line_tags.dedup();
    let mut line: Vec<(Pep440Version, String)> = same_package(listing, filename)
        .filter(|(info, other)| {
            info.name != name
                && other.tags == filename.tags
                && info.wheel_tags_lenient() == line_tags
        })
        .map(|(info, other)| (other.version, info.name.clone()))
        .collect();
    line.push((filename.version.clone(), name.to_string()));

    let mut versions: Vec<&Pep440Version> = line.iter().map(|(v, _)| v).collect();
    versions.sort_by(|a, b| b.cmp(a));
    versions.dedup_by(|a, b| a == b);
    let Some(oldest_kept) = versions.get(keep - 1).copied().cloned() else {
        return Vec::new(); // no more than `keep` versions
    };
    let mut prune: Vec<String> = line
        .into_iter()
        .filter(|(v, _)| *v < oldest_kept)
        .map(|(_, n)| n)
        .collect();
    prune.sort();
    prune
}

/// Delete an old version (retention), recording it like a `DELETE` by the uploader. Failures
/// are logged; the upload stands.
async fn prune(
    store: &Store,
    caller: &Caller,
    source: &RequestSource,
    name: &str,
    package: &str,
    keep: u64,
) {
    match store.wheels().delete(name).await {
        Ok(Some(info)) => {
            tracing::info!(
                wheel_name = %name,
                %package,
                keep_versions = keep,
                "deleted an old wheel version (PYOCO_WHEEL_KEEP_VERSIONS)"
            );
            wheel_history::append(store, &delete_record(name, &info, caller, source)).await;
        }
        Ok(None) => {} // deleted meanwhile
        Err(err) => tracing::warn!(
            wheel_name = %name,
            %package,
            "could not delete an old wheel version (PYOCO_WHEEL_KEEP_VERSIONS): {err}"
        ),
    }
}

/// The `delete` history record of a wheel whose meta before the delete was `info`.
fn delete_record(
    name: &str,
    info: &ObjectInfo,
    caller: &Caller,
    source: &RequestSource,
) -> pyoco_wire::WheelHistoryRecord {
    let mut record = wheel_history::new_record(WheelHistoryAction::Delete, name, caller, source);
    record.tags = info.wheel_tags();
    record.size_bytes = Some(info.size);
    record.sha256_hex = info.sha256_hex();
    record
}

fn put_error(name: &str, err: PutError) -> ApiError {
    match err {
        PutError::Store(err) => err.into(),
        PutError::TooLarge { limit, .. } => ApiError::with_reason(
            StatusCode::PAYLOAD_TOO_LARGE,
            "wheel too large",
            format!("{name} is larger than PYOCO_WHEEL_MAX_BYTES ({limit} bytes)"),
        ),
        PutError::Source { source, .. } => ApiError::with_reason(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            format!("reading the staged upload of {name} failed: {source}"),
        ),
    }
}

/// The wheel name of a path: trimmed, and a wheel file name, else `None` (→ 404).
fn path_wheel_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(raw) = path?;
    let name = py_strip(&raw);
    if is_valid_wheel_name(name) {
        Ok(name.to_string())
    } else {
        Err(wheel_not_found())
    }
}

/// `GET /wheels/{wheel_name}`: the bytes, streamed.
#[utoipa::path(
    get,
    path = "/wheels/{wheel_name}",
    operation_id = "download_wheel",
    tag = "wheels",
    summary = "Download a wheel",
    description = "The wheel's bytes, streamed from the object store as they are read (the \
digest is checked at the end: on a mismatch the transfer is cut off).",
    params(("wheel_name" = String, Path, description = "The wheel file name")),
    responses(
        (status = 200, description = "The wheel", content_type = "application/octet-stream",
         body = inline(String), headers(
            ("Content-Disposition" = String, description = "`attachment; filename=\"<wheel_name>\"`"),
            ("Content-Length" = u64, description = "The wheel's size"),
        )),
        (status = 400, response = BadRequest),
        (status = 404, response = WheelNotFound),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn download_wheel(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = path_wheel_name(path)?;
    let store = state.store()?;
    let reader = store
        .wheels()
        .download(&name)
        .await?
        .ok_or_else(wheel_not_found)?;
    let size = reader.info().size;
    let logged_name = name.clone();
    let body = Body::from_stream(reader.inspect_err(move |err| {
        tracing::error!(wheel_name = %logged_name, "wheel download broke off: {err}");
    }));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// `DELETE /wheels/{wheel_name}`.
#[utoipa::path(
    delete,
    path = "/wheels/{wheel_name}",
    operation_id = "delete_wheel",
    tag = "wheels",
    summary = "Delete a wheel",
    description = "Deletes this one file (other versions and builds stay) and records the delete \
in the history. A deleted version may be uploaded again.",
    params(("wheel_name" = String, Path, description = "The wheel file name")),
    responses(
        (status = 200, description = "Deleted", body = DeletedWheel),
        (status = 400, response = BadRequest),
        (status = 404, response = WheelNotFound),
        (status = 503, response = NatsUnavailable),
    ),
)]
async fn delete_wheel(
    State(state): State<AppState>,
    caller: Caller,
    source: RequestSource,
    path: Result<Path<String>, PathRejection>,
) -> Result<PyJson<DeletedWheel>, ApiError> {
    let name = path_wheel_name(path)?;
    let store = state.store()?;
    let info = store
        .wheels()
        .delete(&name)
        .await?
        .ok_or_else(wheel_not_found)?;
    tracing::info!(wheel_name = %name, "wheel deleted");
    wheel_history::append(store, &delete_record(&name, &info, &caller, &source)).await;
    Ok(PyJson(DeletedWheel {
        name,
        deleted: true,
    }))
}

/// `DELETE /wheels/history`: in 0.5.1 this reaches the delete route with the name `history`,
/// which is no wheel name.
async fn no_wheel_named_history() -> ApiError {
    wheel_not_found()
}

/// 404 `wheel not found`.
pub(crate) struct WheelNotFound;

impl<'r> ToResponse<'r> for WheelNotFound {
    fn response() -> (&'r str, RefOr<oas::Response>) {
        error_response(
            "WheelNotFound",
            "`wheel not found`: no stored wheel has this name (or it is not a wheel file name)",
        )
    }
}

/// 409 from the version rule.
pub(crate) struct WheelConflict;

impl<'r> ToResponse<'r> for WheelConflict {
    fn response() -> (&'r str, RefOr<oas::Response>) {
        error_response(
            "WheelConflict",
            "The version rule refused the wheel: `wheel version already exists; bump version` \
             (this version, or a build of it for the same platform, is stored) or `wheel \
             version must be greater than existing latest version`",
        )
    }
}

/// 500 when the upload cannot be staged on the gateway's disk.
pub(crate) struct WheelStagingFailed;

impl<'r> ToResponse<'r> for WheelStagingFailed {
    fn response() -> (&'r str, RefOr<oas::Response>) {
        error_response(
            "WheelStagingFailed",
            "The gateway could not stage the upload in its temp directory (`reason` says why: \
             usually no free space in TMPDIR)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, tags: Option<&str>) -> ObjectInfo {
        let mut info = ObjectInfo {
            name: name.to_string(),
            ..ObjectInfo::default()
        };
        if let Some(tags) = tags {
            info.headers
                .insert(pyoco_wire::WHEEL_TAGS_HEADER.to_string(), tags.to_string());
        }
        info
    }

    fn rule(name: &str, stored: &[&str]) -> Result<(), String> {
        let listing: Vec<ObjectInfo> = stored.iter().map(|n| info(n, None)).collect();
        let filename = WheelFilename::parse(name).unwrap();
        check_version_rule(name, &filename, &listing).map_err(|err| match err {
            ApiError::Detail { detail, .. } => detail.into_owned(),
            other => panic!("{other:?}"),
        })
    }

    const EXISTS: &str = "wheel version already exists; bump version";
    const GREATER: &str = "wheel version must be greater than existing latest version";

    #[test]
    fn versions_must_grow_per_pep440_on_the_normalised_name() {
        assert_eq!(rule("a-1.0-py3-none-any.whl", &[]), Ok(()));
        assert_eq!(
            rule("a-1.0-py3-none-any.whl", &["a-1.0-py3-none-any.whl"]),
            Err(EXISTS.into())
        );
        assert_eq!(
            rule("A_B-1.0.0-py3-none-any.whl", &["a.b-1.0-py3-none-any.whl"]),
            Err(EXISTS.into())
        );
        assert_eq!(
            rule("a-0.9-py3-none-any.whl", &["a-1.0-py3-none-any.whl"]),
            Err(GREATER.into())
        );
        assert_eq!(
            rule("a-1.0rc1-py3-none-any.whl", &["a-1.0-py3-none-any.whl"]),
            Err(GREATER.into())
        );
        assert_eq!(
            rule("a-1.0-py3-none-any.whl", &["a-1.0rc1-py3-none-any.whl"]),
            Ok(())
        );
        assert_eq!(
            rule("a-1.0.post1-py3-none-any.whl", &["a-1.0-py3-none-any.whl"]),
            Ok(())
        );
        assert_eq!(
            rule("a-2!1.0-py3-none-any.whl", &["a-9.0-py3-none-any.whl"]),
            Ok(())
        );
        // Other packages do not count.
        assert_eq!(
            rule("a-1.0-py3-none-any.whl", &["ab-2.0-py3-none-any.whl"]),
            Ok(())
        );
    }

    #[test]
    fn another_platform_build_of_the_latest_version_is_accepted() {
        let linux = "a-1.0-cp311-cp311-manylinux_2_17_x86_64.whl";
        let windows = "a-1.0-cp311-cp311-win_amd64.whl";
        assert_eq!(rule(windows, &[linux]), Ok(()));
        // Overlapping compatibility tags: the same build again.
        assert_eq!(
            rule("a-1.0-py2.py3-none-any.whl", &["a-1.0-py3-none-any.whl"]),
            Err(EXISTS.into())
        );
        assert_eq!(
            rule("a-1.0-1-py3-none-any.whl", &["a-1.0-py3-none-any.whl"]),
            Err(EXISTS.into())
        );
        // Only the latest version can get more builds.
        assert_eq!(
            rule(
                windows,
                &[linux, "a-2.0-cp311-cp311-manylinux_2_17_x86_64.whl"]
            ),
            Err(GREATER.into())
        );
    }

    fn pruned(
        name: &str,
        tags: &[&str],
        stored: &[(&str, Option<&str>)],
        keep: u64,
    ) -> Vec<String> {
        let listing: Vec<ObjectInfo> = stored.iter().map(|(n, t)| info(n, *t)).collect();
        let filename = WheelFilename::parse(name).unwrap();
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        wheels_to_prune(&listing, name, &filename, &tags, keep)
    }

    #[test]
    fn retention_keeps_the_newest_versions_of_the_uploaded_line() {
        let stored = [
            ("a-1.0-py3-none-any.whl", None),
            ("a-2.0-py3-none-any.whl", None),
            ("a-3.0-py3-none-any.whl", None),
        ];
        assert_eq!(
            pruned("a-4.0-py3-none-any.whl", &[], &stored, 2),
            ["a-1.0-py3-none-any.whl", "a-2.0-py3-none-any.whl"]
        );
        assert_eq!(
            pruned("a-4.0-py3-none-any.whl", &[], &stored, 4),
            Vec::<String>::new()
        );
        assert_eq!(
            pruned("a-4.0-py3-none-any.whl", &[], &stored, 0),
            Vec::<String>::new()
        );
        // Other lines are left alone: other wheel tags, other platforms, other packages.
        let stored = [
            ("a-1.0-py3-none-any.whl", Some("gpu")),
            ("a-2.0-py3-none-any.whl", Some("cpu, gpu,cpu")),
            ("a-3.0-cp311-cp311-win_amd64.whl", Some("gpu,cpu")),
            ("b-1.0-py3-none-any.whl", Some("cpu,gpu")),
        ];
        assert_eq!(
            pruned("a-4.0-py3-none-any.whl", &["gpu", "cpu"], &stored, 1),
            ["a-2.0-py3-none-any.whl"]
        );
        // Keeping one version deletes every older one.
        let stored = [
            ("a-1.0-cp311-cp311-win_amd64.whl", None),
            ("a-2.0-cp311-cp311-win_amd64.whl", None),
        ];
        assert_eq!(
            pruned("a-3.0-cp311-cp311-win_amd64.whl", &[], &stored, 1),
            [
                "a-1.0-cp311-cp311-win_amd64.whl",
                "a-2.0-cp311-cp311-win_amd64.whl"
            ]
        );
    }
}
