//! The web dashboard: `GET /` (the page) and `GET /static/{path}` (its scripts, styles and the
//! vendored dagre and uPlot), all embedded in the binary from `crates/pyoco-gateway/dashboard/`
//! — one file to deploy, no build step, no network at build time.
//!
//! Both are public routes (0.5.1's `/` and `/static/*` are too): the page must load to ask
//! for an API key. Everything it shows comes from the protected API.
//!
//! - The page carries a strict Content-Security-Policy: scripts, styles and connections only
//!   from the gateway itself, no inline script or style, no plugins, no framing by other
//!   sites (the desktop window may frame it). The scripts render every API value as text.
//! - Assets are answered with an `ETag` (a hash of the content) and `Cache-Control: no-cache`,
//!   so a browser revalidates (`304`) and never runs an old script after an upgrade; gzip when
//!   the browser accepts it, compressed once, off the async executor, on first use.
//! - The page names the language the operator chose (`PYOCO_DASHBOARD_LANG`, `ja`/`en`;
//!   `auto` leaves it to the browser) and the API key header; the script decides the rest
//!   (`js/i18n.js`).

use std::{io::Write as _, sync::Arc};

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/static/{*path}", get(asset))
}

/// The page's Content-Security-Policy.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'self' tauri://localhost http://tauri.localhost \
     https://tauri.localhost";

const PAGE: &str = include_str!("../../dashboard/index.html");

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../../dashboard/", $path)),
        }
    };
}

/// Every file under `/static/`.
const ASSETS: &[Asset] = &[
    asset!("app.css", CSS),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/api.js", JS),
    asset!("js/app.js", JS),
    asset!("js/dialog.js", JS),
    asset!("js/dlq.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/format.js", JS),
    asset!("js/i18n.js", JS),
    asset!("js/logs.js", JS),
    asset!("js/metrics.js", JS),
    asset!("js/metrics_store.js", JS),
    asset!("js/metrics_text.js", JS),
    asset!("js/run.js", JS),
    asset!("js/runs.js", JS),
    asset!("js/schedules.js", JS),
    asset!("js/submit.js", JS),
    asset!("js/wheels.js", JS),
    asset!("js/workers.js", JS),
    asset!("vendor/dagre.min.js", JS),
    asset!("vendor/uPlot.iife.min.js", JS),
    asset!("vendor/uPlot.min.css", CSS),
    asset!("vendor/LICENSE-dagre", TEXT),
    asset!("vendor/LICENSE-uplot", TEXT),
];

/// An asset's ETag and gzip body, computed once.
struct Prepared {
    etag: HeaderValue,
    gzip: Option<Vec<u8>>,
}

static PREPARED: OnceCell<Arc<Vec<Prepared>>> = OnceCell::const_new();

async fn prepared() -> Arc<Vec<Prepared>> {
    PREPARED
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| Arc::new(ASSETS.iter().map(prepare).collect()))
                .await
                .unwrap_or_else(|_| Arc::new(ASSETS.iter().map(etag_only).collect()))
        })
        .await
        .clone()
}

fn prepare(a: &Asset) -> Prepared {
    let mut out = etag_only(a);
    // Worth it for text only, and when it saves something.
    if a.content_type != "image/png" && a.bytes.len() > 512 {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        if enc.write_all(a.bytes).is_ok() {
            if let Ok(z) = enc.finish() {
                if z.len() < a.bytes.len() {
                    out.gzip = Some(z);
                }
            }
        }
    }
    out
}

fn etag_only(a: &Asset) -> Prepared {
    let digest = Sha256::digest(a.bytes);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    Prepared {
        etag: HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header"),
        gzip: None,
    }
}

/// Whether `Accept-Encoding` accepts gzip (a `gzip` or `*` coding whose `q` is not 0).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("").to_ascii_lowercase();
            let zero_q = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name == "gzip" || name == "x-gzip" || name == "*") && !zero_q
        })
}

fn if_none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag.as_bytes()
        })
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.path == path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"detail":"Not Found"}"#,
        )
            .into_response();
    };
    let a = &ASSETS[index];
    let all = prepared().await;
    let p = &all[index];
    let mut builder = Response::builder()
        .header(header::ETAG, p.etag.clone())
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::VARY, "Accept-Encoding")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if if_none_match(&headers, &p.etag) {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("a valid response");
    }
    builder = builder.header(header::CONTENT_TYPE, a.content_type);
    let body = match (&p.gzip, accepts_gzip(&headers)) {
        (Some(z), true) => {
            builder = builder.header(header::CONTENT_ENCODING, "gzip");
            Body::from(z.clone())
        }
        _ => Body::from(a.bytes),
    };
    builder.body(body).expect("a valid response")
}

async fn page(State(state): State<AppState>) -> Response {
    let html = render_page(state.dashboard_lang(), state.auth().header_name());
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response()
}

/// The page with what the script needs to know: the operator's language (`ja`, `en` or empty)
/// and, when auth is on, the API key header.
fn render_page(lang: &str, api_key_header: Option<&str>) -> String {
    PAGE.replace("__SERVER_LANG__", &attr(lang))
        .replace("__API_KEY_HEADER__", &attr(api_key_header.unwrap_or("")))
        .replace(
            "__AUTH__",
            if api_key_header.is_some() {
                "api_key"
            } else {
                "none"
            },
        )
        .replace("__VERSION__", env!("CARGO_PKG_VERSION"))
}

/// Text for a double-quoted HTML attribute.
fn attr(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_and_scripts_name_is_embedded() {
        // The page's own references, and every module import of the scripts.
        let mut named: Vec<String> = PAGE
            .split("\"/static/")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().to_string())
            .collect();
        for a in ASSETS.iter().filter(|a| a.path.starts_with("js/")) {
            let text = std::str::from_utf8(a.bytes).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let module = line.rsplit("\"./").next().unwrap().trim_end_matches("\";");
                named.push(format!("js/{module}"));
            }
        }
        assert!(named.len() > 10, "{named:?}");
        for name in named {
            assert!(
                ASSETS.iter().any(|a| a.path == name),
                "{name} is not embedded"
            );
        }
    }

    /// Every `t("key")` of the scripts exists in English and in Japanese (keys built at run
    /// time, like `status.${s}`, come from the state tables at the top of i18n.js).
    #[test]
    fn every_string_the_scripts_ask_for_exists_in_both_languages() {
        let i18n = std::str::from_utf8(
            ASSETS
                .iter()
                .find(|a| a.path == "js/i18n.js")
                .unwrap()
                .bytes,
        )
        .unwrap();
        let en_at = i18n.find("\n  en: {").unwrap();
        let ja_at = i18n.find("\n  ja: {").unwrap();
        let (en, ja) = (&i18n[en_at..ja_at], &i18n[ja_at..]);
        let has = |section: &str, key: &str| section.contains(&format!("\"{key}\":"));
        let mut asked = 0;
        for a in ASSETS.iter().filter(|a| a.path.starts_with("js/")) {
            let text = std::str::from_utf8(a.bytes).unwrap();
            for piece in text.split("t(\"").skip(1) {
                let key = piece.split('"').next().unwrap();
                if !key.contains('.') || key.contains(' ') {
                    continue;
                }
                asked += 1;
                assert!(has(en, key), "{}: {key} has no English string", a.path);
                assert!(has(ja, key), "{}: {key} has no Japanese string", a.path);
            }
        }
        assert!(asked > 100, "{asked}");
    }

    #[test]
    fn the_page_names_language_and_key_header_and_leaves_no_placeholder() {
        let html = render_page("ja", Some("x-pyoco-token"));
        assert!(html.contains(r#"data-server-lang="ja""#));
        assert!(html.contains(r#"data-api-key-header="x-pyoco-token""#));
        assert!(html.contains(r#"data-auth="api_key""#));
        assert!(!html.contains("__"), "no placeholder left");
        let html = render_page("", None);
        assert!(html.contains(r#"data-server-lang="""#));
        assert!(html.contains(r#"data-auth="none""#));
        assert_eq!(attr(r#"a"<b>&"#), "a&quot;&lt;b&gt;&amp;");
    }

    #[test]
    fn gzip_is_chosen_by_accept_encoding_q_values() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(accepts_gzip(&h("gzip, deflate, br")));
        assert!(accepts_gzip(&h("br;q=1.0, gzip;q=0.8")));
        assert!(accepts_gzip(&h("*")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("br, identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn etags_match_with_or_without_weak_prefix() {
        let p = etag_only(&ASSETS[0]);
        let mut m = HeaderMap::new();
        let weak = format!("W/{}", p.etag.to_str().unwrap());
        m.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&weak).unwrap());
        assert!(if_none_match(&m, &p.etag));
        m.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert!(!if_none_match(&m, &p.etag));
    }
}
