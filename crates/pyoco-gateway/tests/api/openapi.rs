//! `GET /openapi.json` describes exactly the routes the gateway serves, and the served API
//! matches it: Schemathesis (from the test-tools venv) fuzzes a live gateway from the document.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Mutex,
    time::Duration,
};

use pyoco_testkit::{status_json, TestApp};
use pyoco_wire::python;
use serde_json::Value;

/// Every route the router serves, as `(method, OpenAPI path)`. A new route goes here and gets
/// a `#[utoipa::path]` annotation listed in `routes/openapi.rs`.
const SERVED_ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/workers"),
    ("PATCH", "/workers/{worker_id}"),
    ("POST", "/runs"),
    ("GET", "/runs"),
    ("POST", "/runs/yaml"),
    ("POST", "/flows/check"),
    ("GET", "/runs/{run_id}"),
    ("GET", "/runs/{run_id}/tasks"),
    ("GET", "/runs/{run_id}/watch"),
    ("POST", "/runs/{run_id}/cancel"),
    ("GET", "/wheels"),
    ("POST", "/wheels"),
    ("GET", "/wheels/history"),
    ("GET", "/wheels/{wheel_name}"),
    ("DELETE", "/wheels/{wheel_name}"),
    ("GET", "/dlq"),
    ("GET", "/dlq/{id}"),
    ("DELETE", "/dlq/{id}"),
    ("POST", "/dlq/{id}/replay"),
    ("GET", "/runs/{run_id}/logs"),
    ("GET", "/runs/{run_id}/logs/watch"),
    ("POST", "/schedules/yaml"),
    ("GET", "/schedules"),
    ("GET", "/schedules/{schedule_id}/runs"),
    ("PATCH", "/schedules/{schedule_id}"),
    ("DELETE", "/schedules/{schedule_id}"),
    // Also served, undocumented: `DELETE /wheels/history`, always 404 `wheel not found` (what
    // 0.5.1 answers, its router taking `history` for a wheel name).
];

/// The `(method, path)` of every operation in the document.
fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .filter(|k| {
                    matches!(
                        k.as_str(),
                        "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
                    )
                })
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_served() {
    let app = TestApp::gateway_only().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let (status, doc) = status_json(response).await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );

    let served: BTreeSet<(String, String)> = SERVED_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let documented = documented_operations(&doc);
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not in SERVED_ROUTES"
    );
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "served but not documented"
    );

    // And the list is what the router serves: each route is routed (not the 404/405 fallback;
    // a missing run, worker or wheel answers before anything else happens).
    for (method, path) in SERVED_ROUTES {
        let concrete = path
            .replace("{run_id}", "no-such-run")
            .replace("{worker_id}", "no-such-worker")
            .replace("{schedule_id}", "no-such-schedule")
            .replace("{wheel_name}", "no_such_wheel-1.0-py3-none-any.whl");
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = app
            .http()
            .request(method.clone(), app.url(&concrete))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert!(
            status != 405 && !(status == 404 && body.contains("\"Not Found\"")),
            "{method} {concrete} is not routed: {status} {body}"
        );
    }
}

/// The Schemathesis venv: `PYOCO_TEST_TOOLS_VENV`, else the data dir's `venv-testtools`,
/// created by `scripts/setup.sh --with-testtools` on first use.
fn tools_venv() -> PathBuf {
    static SETUP: Mutex<()> = Mutex::new(());
    if let Some(venv) = std::env::var_os("PYOCO_TEST_TOOLS_VENV") {
        return PathBuf::from(venv);
    }
    let data_dir =
        pyoco_config::AppDirs::new(std::env::var_os("PYOCO_DATA_DIR").as_deref().map(Path::new))
            .expect("a home directory for the app data dir")
            .data_dir()
            .to_path_buf();
    let venv = data_dir.join("venv-testtools");
    let _guard = SETUP.lock().unwrap_or_else(|e| e.into_inner());
    if !venv.join("bin").join("st").exists() {
        let setup = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../scripts/setup.sh")
            .canonicalize()
            .expect("scripts/setup.sh");
        let status = std::process::Command::new("bash")
            .arg(&setup)
            .arg("--with-testtools")
            .status()
            .expect("running scripts/setup.sh");
        assert!(
            status.success(),
            "{} --with-testtools failed: {status}",
            setup.display()
        );
    }
    venv
}

/// The checks that must pass: no 5xx, and status codes, content types, headers and bodies as
/// documented.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance";

/// Schemathesis settings the command line has no flag for. A watch of a real run (Schemathesis
/// follows `POST /runs` to it) streams for `timeout_sec`: it is read up to its first event,
/// which is checked against the event schema, and ends within 1 s when no event comes. No
/// cache: each run starts from the seed and nothing else.
const CONFIG: &str = r#"
[cache]
enabled = false

[[operations]]
include-operation-id = "watch_run"
max-stream-events = 1
parameters = { "query.timeout_sec" = 1 }

[[operations]]
include-operation-id = "watch_run_logs"
max-stream-events = 1
parameters = { "query.timeout_sec" = 1 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_mismatch() {
    let st = tools_venv().join("bin").join("st");
    assert!(st.exists(), "{} is missing", st.display());
    let app = TestApp::gateway_only().await;
    // A registered worker, so `PATCH /workers/{worker_id}` is reached through `GET /workers`.
    let worker = pyoco_wire::WorkerRecord::starting(
        "st-worker",
        "0123456789abcdef0123456789abcdef",
        vec!["default".into()],
        python::time(),
        pyoco_wire::WheelSyncStatus::initial(false),
    );
    app.store()
        .workers()
        .create("st-worker", worker.to_json())
        .await
        .expect("register a worker");
    // A stored wheel, so `GET`/`DELETE /wheels/{wheel_name}` are reached through `GET /wheels`.
    app.store()
        .wheels()
        .upload(
            "st_pkg-1.0-py3-none-any.whl",
            None,
            &[],
            &b"not checked when stored directly"[..],
        )
        .await
        .expect("store a wheel");

    let work = tempfile::tempdir().expect("temp dir");
    let config = work.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut command = tokio::process::Command::new(&st);
    command
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args(["--checks", CHECKS])
        .args(["--max-examples", "20", "--seed", "1"])
        .args(["--generation-database", "none", "--request-timeout", "10"])
        .arg("--no-color")
        // Its `.hypothesis` and report files go to the temporary directory.
        .current_dir(work.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(600), command.output())
        .await
        .expect("schemathesis finishes within 10 minutes")
        .expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // It tested every operation but `GET /openapi.json`, which it skips as the document itself.
    let tested = format!("Tested: {}", SERVED_ROUTES.len() - 1);
    assert!(
        stdout.contains(&tested),
        "expected {tested:?} in:\n{stdout}"
    );
}
