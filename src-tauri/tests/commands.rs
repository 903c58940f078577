//! The desktop app's commands through Tauri's IPC, on `tauri::test`'s mock runtime (no display):
//! the same JSON the window sends and receives (docs/desktop-api.md), against a real stack.

use std::{path::Path, sync::Arc, time::Duration};

use pyoco_desktop::{DesktopApp, LogBuffer};
use pyoco_testkit::{desktop_options, free_port};
use serde_json::{json, Value};
use tauri::{
    ipc::{CallbackFn, InvokeBody},
    test::{get_ipc_response, mock_builder, mock_context, noop_assets, INVOKE_KEY},
    webview::InvokeRequest,
    WebviewWindow, WebviewWindowBuilder,
};

fn window(
    app: Arc<DesktopApp>,
) -> (
    tauri::App<tauri::test::MockRuntime>,
    WebviewWindow<tauri::test::MockRuntime>,
) {
    let tauri_app = pyoco_desktop_app::with_commands(mock_builder(), app)
        .build(mock_context(noop_assets()))
        .expect("the mock app builds");
    let webview = WebviewWindowBuilder::new(&tauri_app, "main", Default::default())
        .build()
        .expect("a mock window");
    (tauri_app, webview)
}

/// Invoke `cmd` with `args` as the window does; `Ok` is the returned JSON, `Err` the rejection.
fn invoke(
    webview: &WebviewWindow<tauri::test::MockRuntime>,
    cmd: &str,
    args: Value,
) -> Result<Value, Value> {
    get_ipc_response(
        webview,
        InvokeRequest {
            cmd: cmd.into(),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            // `http://tauri.localhost` counts as remote on Linux and is refused.
            url: "tauri://localhost".parse().unwrap(),
            body: InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        },
    )
    .map(|b| b.deserialize::<Value>().expect("JSON"))
}

fn start(dir: &Path, env_text: &str) -> Arc<DesktopApp> {
    pyoco_testkit::init_tracing();
    DesktopApp::new(
        desktop_options(dir, free_port(), env_text),
        LogBuffer::new(50),
    )
}

#[test]
fn status_restart_settings_save_and_export_through_ipc() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path(), "# mine\nKEEP_ME=1\n");
    let (_tauri_app, webview) = window(app.clone());

    // Before the stack starts, the window sees it starting.
    let status = invoke(&webview, "app_status", json!({})).unwrap();
    assert_eq!(status["components"][0]["id"], "nats");
    assert_eq!(status["components"][0]["state"], "starting");
    assert_eq!(status["all_running"], false);

    tauri::async_runtime::block_on(async {
        app.start().await.unwrap();
        app.wait_until_running(Duration::from_secs(60))
            .await
            .unwrap();
    });
    let status = invoke(&webview, "app_status", json!({})).unwrap();
    assert_eq!(status["all_running"], true, "{status}");
    let states: Vec<&str> = status["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["running", "running", "running"]);
    let api = status["api_url"].as_str().unwrap().to_owned();
    assert_eq!(status["dashboard_url"], format!("{api}/"));
    assert!(status["nats_url"]
        .as_str()
        .unwrap()
        .starts_with("nats://127.0.0.1:"));
    assert_eq!(status["startup_error"], Value::Null);
    assert_eq!(status["env_file"], app.env_file().display().to_string());

    let logs = invoke(&webview, "recent_logs", json!({ "after": null })).unwrap();
    assert!(logs["next"].as_u64().is_some(), "{logs}");
    assert!(logs["lines"].is_array());

    // Restart one component.
    let status = invoke(
        &webview,
        "restart_component",
        json!({ "component": "worker" }),
    )
    .unwrap();
    assert_eq!(status["components"][2]["id"], "worker");
    let err = invoke(
        &webview,
        "restart_component",
        json!({ "component": "bogus" }),
    )
    .unwrap_err();
    assert_eq!(
        err["message"],
        "unknown component \"bogus\": use nats, gateway, worker or all"
    );

    // The form.
    let form = invoke(&webview, "settings_form", json!({})).unwrap();
    let titles: Vec<&str> = form["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "NATS",
            "Subjects & buckets",
            "Heartbeat",
            "Consumers",
            "Worker",
            "DLQ",
            "Snapshot",
            "Wheels",
            "Workflow YAML",
            "Dashboard",
            "Logging",
            "Auth",
            "HTTP gateway",
            "Appliance (local-only)"
        ]
    );
    let field = |form: &Value, name: &str| -> Value {
        form["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["fields"].as_array().unwrap().clone())
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} in the form"))
    };
    let pepper = field(&form, "PYOCO_AUTH_PEPPER");
    assert_eq!(pepper["input"], "secret");
    assert_eq!(pepper["value"], "");

    // Validation as the user types.
    let v = invoke(
        &webview,
        "validate_setting",
        json!({ "name": "PYOCO_HTTP_PORT", "value": "abc" }),
    )
    .unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .ends_with("expected a port number 1..65535"),
        "{v}"
    );
    let v = invoke(
        &webview,
        "validate_setting",
        json!({ "name": "PYOCO_HTTP_PORT", "value": "9000" }),
    )
    .unwrap();
    assert_eq!(v, json!({ "error": null }));

    // Save: invalid → rejected with fields, nothing written.
    let before = std::fs::read(app.env_file()).unwrap();
    let err = invoke(
        &webview,
        "save_settings",
        json!({ "changes": { "PYOCO_CONSUMER_MAX_DELIVER": "zero", "PYOCO_WORKER_TAGS": "a,b" } }),
    )
    .unwrap_err();
    assert_eq!(err["message"], "nothing was saved: 1 setting is invalid");
    assert!(err["fields"]["PYOCO_CONSUMER_MAX_DELIVER"]
        .as_str()
        .unwrap()
        .contains("expected an integer ≥ 1"));
    assert_eq!(std::fs::read(app.env_file()).unwrap(), before);

    // Save: valid → written (comments and unknown keys kept), only the worker restarted.
    let saved = invoke(
        &webview,
        "save_settings",
        json!({ "changes": { "PYOCO_WORKER_TAGS": "a,b", "PYOCO_AUTH_PEPPER": "s3cret" } }),
    )
    .unwrap();
    assert_eq!(saved["restarted"], json!(["gateway", "worker"]), "{saved}");
    let text = std::fs::read_to_string(app.env_file()).unwrap();
    assert!(text.starts_with("# mine\nKEEP_ME=1\n"), "{text}");
    assert!(text.contains("\nPYOCO_WORKER_TAGS=a,b\n"), "{text}");
    assert!(text.contains("\nPYOCO_AUTH_PEPPER=s3cret\n"), "{text}");
    let form = invoke(&webview, "settings_form", json!({})).unwrap();
    assert_eq!(field(&form, "PYOCO_WORKER_TAGS")["value"], "a,b");
    let pepper = field(&form, "PYOCO_AUTH_PEPPER");
    assert_eq!(
        (pepper["value"].as_str(), pepper["is_set"].as_bool()),
        (Some(""), Some(true))
    );
    assert!(
        !form.to_string().contains("s3cret"),
        "the secret never reaches the window"
    );

    // Export.
    let out = dir.path().join("prod.env");
    let exported = invoke(
        &webview,
        "export_settings",
        json!({ "path": out.display().to_string() }),
    )
    .unwrap();
    assert_eq!(exported["path"], out.display().to_string());
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.starts_with("# pyoco-server production settings\n"),
        "{text}"
    );
    assert!(text.contains("\nPYOCO_WORKER_TAGS=a,b\n"));
    assert!(
        !text.contains("PYOCO_NATS_CLIENT_PORT="),
        "local-only settings stay out"
    );
    let err = invoke(
        &webview,
        "export_settings",
        json!({ "path": "/no/such/dir/x.env" }),
    )
    .unwrap_err();
    assert!(
        err["message"].as_str().unwrap().contains("does not exist"),
        "{err}"
    );

    assert_eq!(
        exported["warnings"].as_array().unwrap().len(),
        2,
        "{exported}"
    );

    // API keys: create (the plain key once), list (no secret), revoke.
    let made = invoke(&webview, "create_api_key", json!({ "tenant": "demo" })).unwrap();
    let key_id = made["key_id"].as_str().unwrap().to_string();
    assert!(made["api_key"].as_str().unwrap().starts_with("pyoco_"));
    let listed = invoke(&webview, "list_api_keys", json!({})).unwrap();
    assert_eq!(listed["keys"][0]["key_id"], key_id.as_str());
    assert_eq!(listed["keys"][0]["revoked_at"], Value::Null);
    assert_eq!(listed["auth_mode"], "none");
    assert!(!listed
        .to_string()
        .contains(made["api_key"].as_str().unwrap()));
    let revoked = invoke(&webview, "revoke_api_key", json!({ "keyId": key_id })).unwrap();
    assert!(revoked["revoked_at"].as_f64().is_some(), "{revoked}");
    let err = invoke(&webview, "create_api_key", json!({ "tenant": "a b" })).unwrap_err();
    assert!(
        err["message"].as_str().unwrap().contains("invalid tenant"),
        "{err}"
    );

    tauri::async_runtime::block_on(app.shutdown());
    let status = invoke(&webview, "app_status", json!({})).unwrap();
    assert_eq!(status["components"][1]["state"], "stopped", "{status}");
    let err = invoke(&webview, "list_api_keys", json!({})).unwrap_err();
    assert!(
        err["message"].as_str().unwrap().contains("not running"),
        "{err}"
    );
}
