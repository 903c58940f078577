//! Property tests ("fuzz targets", see `docs/testing.md`) of the upload readers: the multipart
//! forms of `POST /runs/yaml` ([`YamlForm`]) and `POST /wheels` ([`WheelForm`]), read from raw
//! request bytes through axum's extractor and the routes' body limits exactly as the handlers
//! read them, and the wheel archive check ([`wheel_archive::check`]). No NATS server is needed:
//! the forms are read before any store is touched.
//!
//! Whatever the bytes, headers and limits, the answer is a form (200 here) or a client error
//! (413, 422) with a JSON `detail`, never a 5xx or a panic; what a form holds respects the
//! limits. The seeds (hostile forms of issue 13) run first, with the answer each must get.
//! `PYOCO_FUZZ_CASES` sets the generated cases per property (default 256).

use std::io::{Cursor, Read, Write};

use axum::{
    body::Body,
    extract::{multipart::MultipartRejection, DefaultBodyLimit, Multipart},
    http::{header::CONTENT_TYPE, Request, StatusCode},
    routing::post,
    Router,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use pyoco_wire::{is_valid_wheel_name, WheelFilename};
use tower::ServiceExt;

use super::wheel_archive;
use super::wheel_form::{self, WheelForm};
use super::yaml_form::{self, Upload, YamlForm};
use crate::error::ApiError;

/// The flow.yaml limit of the test route: small, so the 413 paths are reached by small bodies.
const MAX_YAML: u64 = 2048;
/// The wheel limit of the test route.
const MAX_WHEEL: u64 = 4096;
const BOUNDARY: &str = "fuzzboundary";

fn config() -> Config {
    let cases = std::env::var("PYOCO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// `POST /yaml` and `POST /wheel`: the two forms behind the routes' body limits, read as
/// `runs::submit_yaml` and `wheels::upload_wheel` start, with what a form holds checked.
fn app() -> Router {
    Router::new()
        .route(
            "/yaml",
            post(read_yaml).layer(DefaultBodyLimit::max(yaml_form::body_limit(MAX_YAML))),
        )
        .route(
            "/wheel",
            post(read_wheel).layer(DefaultBodyLimit::max(
                wheel_form::body_limit(MAX_WHEEL).expect("a wheel limit"),
            )),
        )
}

async fn read_yaml(
    multipart: Result<Option<Multipart>, MultipartRejection>,
) -> Result<StatusCode, ApiError> {
    let form = YamlForm::read(multipart.unwrap_or(None), MAX_YAML).await?;
    form.check_text()?;
    match &form.workflow {
        Some(Upload::Fits(raw)) => assert!(raw.len() as u64 <= MAX_YAML),
        Some(Upload::TooLarge { bytes }) => assert!(*bytes > MAX_YAML),
        None => {}
    }
    assert!(form.flow_name.as_ref().is_none_or(|n| !n.is_empty()));
    assert!(form.tag.as_ref().is_none_or(|t| !t.is_empty()));
    Ok(StatusCode::OK)
}

async fn read_wheel(
    multipart: Result<Option<Multipart>, MultipartRejection>,
) -> Result<StatusCode, ApiError> {
    let form = WheelForm::read(multipart.unwrap_or(None), MAX_WHEEL).await?;
    let wheel = form.wheel;
    assert!(wheel.size <= MAX_WHEEL);
    assert!(is_valid_wheel_name(&wheel.name));
    assert_eq!(
        WheelFilename::parse(&wheel.name).as_ref(),
        Ok(&wheel.filename)
    );
    let mut staged = Vec::new();
    let mut file = wheel.file;
    file.read_to_end(&mut staged).expect("staged wheel");
    assert_eq!(staged.len() as u64, wheel.size);
    // What the route does next with the staged bytes.
    let _ = wheel_archive::check(Cursor::new(staged), &wheel.name, &wheel.filename);
    Ok(StatusCode::OK)
}

/// One request to the test app.
#[derive(Debug, Clone)]
struct Post {
    path: &'static str,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// Send `post`; the answer must be 200 or a client error with a JSON `detail`.
async fn answer(app: &Router, post: Post) -> Result<StatusCode, TestCaseError> {
    let mut request = Request::builder().method("POST").uri(post.path);
    if let Some(content_type) = &post.content_type {
        request = request.header(CONTENT_TYPE, content_type.as_bytes());
    }
    let request = request
        .body(Body::from(post.body))
        .map_err(|e| TestCaseError::reject(format!("not a request: {e}")))?;
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    prop_assert!(
        status == StatusCode::OK || status.is_client_error(),
        "answered {status}"
    );
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("response body");
    if status != StatusCode::OK {
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| TestCaseError::fail(format!("{status} without JSON: {e}")))?;
        prop_assert!(json.get("detail").is_some(), "{status}: {json}");
    }
    Ok(status)
}

/// One part of a form.
#[derive(Debug, Clone)]
struct Part {
    name: Option<Vec<u8>>,
    filename: Option<Vec<u8>>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

fn part(name: &str, filename: Option<&str>, body: impl Into<Vec<u8>>) -> Part {
    Part {
        name: Some(name.as_bytes().to_vec()),
        filename: filename.map(|f| f.as_bytes().to_vec()),
        content_type: None,
        body: body.into(),
    }
}

/// `multipart/form-data` bytes of `parts`.
fn form(boundary: &str, parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        out.extend_from_slice(b"Content-Disposition: form-data");
        if let Some(name) = &part.name {
            out.extend_from_slice(b"; name=\"");
            out.extend_from_slice(name);
            out.push(b'"');
        }
        if let Some(filename) = &part.filename {
            out.extend_from_slice(b"; filename=\"");
            out.extend_from_slice(filename);
            out.push(b'"');
        }
        out.extend_from_slice(b"\r\n");
        if let Some(content_type) = part.content_type {
            out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&part.body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

fn multipart(path: &'static str, parts: &[Part]) -> Post {
    Post {
        path,
        content_type: Some(format!("multipart/form-data; boundary={BOUNDARY}")),
        body: form(BOUNDARY, parts),
    }
}

/// A zip archive of `files`.
fn zip_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    for (name, bytes) in files {
        zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .expect("zip entry");
        zip.write_all(bytes).expect("zip write");
    }
    zip.finish().expect("zip");
    out.into_inner()
}

const WHEEL_NAME: &str = "demo-1.0-py3-none-any.whl";

/// A wheel `demo 1.0` with `metadata` as its METADATA.
fn wheel_zip(metadata: &str) -> Vec<u8> {
    let info = "demo-1.0.dist-info";
    zip_of(&[
        ("demo/__init__.py".into(), Vec::new()),
        (format!("{info}/METADATA"), metadata.as_bytes().to_vec()),
        (format!("{info}/WHEEL"), b"Wheel-Version: 1.0\n".to_vec()),
        (format!("{info}/RECORD"), Vec::new()),
    ])
}

/// The hostile forms of issue 13 and the answers they must get.
fn seeds() -> Vec<(&'static str, Post, StatusCode)> {
    let yaml = b"flow:\n  graph: a\n".to_vec();
    let ff_fe = [&[0xFF, 0xFE][..], "main".as_bytes()].concat();
    let many = |n: usize| -> Vec<Part> {
        (0..n)
            .map(|i| part(&format!("f{i}"), None, "x"))
            .chain([part("workflow", Some("flow.yaml"), yaml.clone())])
            .collect()
    };
    let full = multipart(
        "/yaml",
        &[
            part("workflow", Some("flow.yaml"), yaml.clone()),
            part("flow_name", None, "main"),
        ],
    );
    let mut truncated = full.clone();
    truncated.body.truncate(full.body.len() / 2);
    let tag_bomb = {
        let c = |p: &str| {
            (0..40)
                .map(|i| format!("{p}{i}"))
                .collect::<Vec<_>>()
                .join(".")
        };
        format!("a-1-{}-{}-{}.whl", c("p"), c("n"), c("x"))
    };
    let wheel =
        |name: &str, bytes: Vec<u8>| multipart("/wheel", &[part("wheel", Some(name), bytes)]);
    let ok = StatusCode::OK;
    let too_large = StatusCode::PAYLOAD_TOO_LARGE;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    vec![
        ("a whole form", full.clone(), ok),
        (
            "a flow_name starting FF FE",
            multipart("/yaml", &[part("flow_name", None, ff_fe.clone())]),
            unprocessable,
        ),
        (
            "a tag starting FF FE",
            multipart("/yaml", &[part("tag", None, ff_fe.clone())]),
            unprocessable,
        ),
        (
            "a workflow starting FF FE (read as bytes; the flow.yaml rules refuse it later)",
            multipart("/yaml", &[part("workflow", Some("f.yaml"), ff_fe.clone())]),
            ok,
        ),
        (
            "a 1 MB flow_name",
            multipart("/yaml", &[part("flow_name", None, vec![b'n'; 1 << 20])]),
            too_large,
        ),
        (
            "a workflow one byte over the limit",
            multipart(
                "/yaml",
                &[part(
                    "workflow",
                    Some("f.yaml"),
                    vec![b'a'; MAX_YAML as usize + 1],
                )],
            ),
            ok,
        ),
        ("1,000 fields", multipart("/yaml", &many(1000)), ok),
        (
            "10,000 fields (past the body limit)",
            multipart("/yaml", &many(10_000)),
            too_large,
        ),
        (
            "no boundary",
            Post {
                content_type: Some("multipart/form-data".into()),
                ..full.clone()
            },
            ok,
        ),
        (
            "an empty boundary",
            Post {
                content_type: Some("multipart/form-data; boundary=".into()),
                ..full.clone()
            },
            ok,
        ),
        (
            "another boundary than the body's",
            Post {
                content_type: Some("multipart/form-data; boundary=other".into()),
                ..full.clone()
            },
            ok,
        ),
        (
            "no content type",
            Post {
                content_type: None,
                ..full.clone()
            },
            ok,
        ),
        ("a truncated body", truncated, ok),
        (
            "a wheel file name expanding to 64,000 tags",
            wheel(&tag_bomb, wheel_zip("Name: a\nVersion: 1\n")),
            unprocessable,
        ),
        (
            "a wheel over the limit",
            wheel(WHEEL_NAME, vec![0; MAX_WHEEL as usize + 1]),
            too_large,
        ),
        (
            "a wheel",
            wheel(WHEEL_NAME, wheel_zip("Name: demo\nVersion: 1.0\n")),
            ok,
        ),
        (
            "a wheel part without a file name",
            multipart("/wheel", &[part("wheel", None, "text")]),
            unprocessable,
        ),
        (
            "a wheel named FF FE",
            multipart(
                "/wheel",
                &[Part {
                    filename: Some(ff_fe.clone()),
                    ..part("wheel", None, "x")
                }],
            ),
            unprocessable,
        ),
        (
            "replace=maybe",
            multipart(
                "/wheel",
                &[
                    part("replace", None, "maybe"),
                    part("wheel", Some(WHEEL_NAME), "x"),
                ],
            ),
            unprocessable,
        ),
        (
            "tags with a space",
            multipart(
                "/wheel",
                &[
                    part("tags", None, "a b"),
                    part("wheel", Some(WHEEL_NAME), "x"),
                ],
            ),
            unprocessable,
        ),
        (
            "a wheel named ../../etc/passwd.whl",
            wheel("../../etc/passwd.whl", b"x".to_vec()),
            unprocessable,
        ),
        (
            "an empty wheel form",
            multipart("/wheel", &[]),
            unprocessable,
        ),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn seeds_get_their_answers() {
    let rt = runtime();
    let app = app();
    for (name, post, want) in seeds() {
        let got = rt
            .block_on(answer(&app, post))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}");
    }
}

const NAMES: &[&str] = &[
    "workflow",
    "flow_name",
    "tag",
    "wheel",
    "replace",
    "tags",
    "other",
    "",
    "WORKFLOW",
    "flow_name\u{0}",
    "wheel\"",
    "ünïcode",
];

const FILENAMES: &[&str] = &[
    WHEEL_NAME,
    "flow.yaml",
    "",
    " demo-1.0-py3-none-any.whl ",
    "demo-1.0-1-py2.py3-none-any.whl",
    "demo-1.0-py3-none-any.zip",
    "a-b-c-d-e-f.whl",
    "demo-notaversion-py3-none-any.whl",
    "../demo-1.0-py3-none-any.whl",
    "demo-1.0-py3-none-any.whl\u{0}",
    "démo-1.0-py3-none-any.whl",
];

const CONTENT_TYPES: &[&str] = &[
    "application/octet-stream",
    "text/plain; charset=utf-16",
    "text/plain; charset=\u{ff}",
    "",
];

/// A part: known or odd names and file names, bytes that are often too many.
fn arbitrary_part() -> impl Strategy<Value = Part> {
    let bytes = |choices: &'static [&'static str]| {
        prop_oneof![
            4 => prop::sample::select(choices).prop_map(|s| s.as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..12),
        ]
    };
    let body = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64),
        1 => (prop::collection::vec(any::<u8>(), 1..8), 0usize..1200).prop_map(|(chunk, n)| chunk.repeat(n)),
        1 => Just(wheel_zip("Name: demo\nVersion: 1.0\n")),
        1 => Just(b"flow:\n  graph: a\n".to_vec()),
    ];
    (
        prop::option::weighted(0.95, bytes(NAMES)),
        prop::option::weighted(0.4, bytes(FILENAMES)),
        prop::option::of(prop::sample::select(CONTENT_TYPES)),
        body,
    )
        .prop_map(|(name, filename, content_type, body)| Part {
            name,
            filename,
            content_type,
            body,
        })
}

/// How the request goes wrong around its parts.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    ContentType(String),
    NoContentType,
    Raw(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    let content_type = prop_oneof![
        prop::sample::select(vec![
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=\"fuzzboundary\"",
            "multipart/form-data; boundary=fuzz",
            "multipart/form-data; boundary=fuzzboundary; charset=utf-16",
            "multipart/mixed; boundary=fuzzboundary",
            "MULTIPART/FORM-DATA; BOUNDARY=fuzzboundary",
            "text/plain",
            "application/x-www-form-urlencoded",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,40}",
    ];
    prop_oneof![
        4 => Just(Damage::None),
        1 => any::<usize>().prop_map(Damage::Truncate),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Damage::Flip(at, b)),
        1 => (
            any::<usize>(),
            prop::sample::select(vec![
                &b"\r\n"[..],
                b"--fuzzboundary\r\n",
                b"--fuzzboundary--",
                b"\r\n\r\n",
                b"Content-Disposition: form-data; name=\"workflow\"\r\n",
                b"\xff\xfe",
            ])
            .prop_map(<[u8]>::to_vec),
        )
            .prop_map(|(at, bytes)| Damage::Insert(at, bytes)),
        1 => content_type.prop_map(Damage::ContentType),
        1 => Just(Damage::NoContentType),
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(Damage::Raw),
    ]
}

fn request() -> impl Strategy<Value = Post> {
    (
        prop::sample::select(vec!["/yaml", "/wheel"]),
        prop::collection::vec(arbitrary_part(), 0..6),
        damage(),
    )
        .prop_map(|(path, parts, damage)| {
            let mut post = multipart(path, &parts);
            let at = |p: usize, len: usize| p % (len + 1);
            match damage {
                Damage::None => {}
                Damage::Truncate(p) => post.body.truncate(at(p, post.body.len())),
                Damage::Flip(p, b) if !post.body.is_empty() => {
                    let i = p % post.body.len();
                    post.body[i] = b;
                }
                Damage::Flip(..) => {}
                Damage::Insert(p, bytes) => {
                    let i = at(p, post.body.len());
                    post.body.splice(i..i, bytes);
                }
                Damage::ContentType(ct) => post.content_type = Some(ct),
                Damage::NoContentType => post.content_type = None,
                Damage::Raw(raw) => post.body = raw,
            }
            post
        })
}

#[test]
fn any_form_is_read_or_refused_with_a_client_error() {
    let rt = runtime();
    let app = app();
    TestRunner::new(config())
        .run(&request(), |post| {
            rt.block_on(answer(&app, post)).map(|_| ())
        })
        .unwrap();
}

/// Damaged wheels: bytes of a valid wheel with a few changed, cut or inserted.
#[test]
fn any_archive_is_checked_without_panicking() {
    let name = WHEEL_NAME;
    let filename = WheelFilename::parse(name).unwrap();
    let metadata = prop_oneof![
        Just("Name: demo\nVersion: 1.0\n".to_string()),
        "[ -~\n]{0,80}",
    ];
    let archive = (
        metadata,
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        prop::option::of(any::<usize>()),
    )
        .prop_map(|(metadata, flips, cut)| {
            let mut zip = wheel_zip(&metadata);
            for (at, b) in flips {
                let i = at % zip.len();
                zip[i] = b;
            }
            if let Some(cut) = cut {
                zip.truncate(cut % (zip.len() + 1));
            }
            zip
        });
    let strategy = prop_oneof![archive, prop::collection::vec(any::<u8>(), 0..512)];
    TestRunner::new(config())
        .run(&strategy, |zip| {
            if let Err(err) = wheel_archive::check(Cursor::new(zip), name, &filename) {
                prop_assert!(!err.0.is_empty());
            }
            Ok(())
        })
        .unwrap();
}
