//! The desktop app's behaviour without a window: a real stack (managed nats-server, gateway,
//! local worker with real pyoco) started from the app's `.env`, settings saved through the
//! `.env` document with only the affected components restarted, export for production.

use std::{collections::HashMap, time::Duration};

use pyoco_config::{LoadOptions, Settings};
use pyoco_testkit::{free_port, start_desktop, submit_yaml, wait_status};

const FLOW: &str = "version: 1\nflow:\n  graph: |\n    double\n  defaults:\n    x: 21\ntasks:\n  double:\n    callable: desktop_tasks:double\n";
const TASKS: &str =
    "from pyoco import task\n\n@task\ndef double(ctx, x: int = 0):\n    return x * 2\n";

const ENV_TEXT: &str = "# my settings — keep this comment\nPYOCO_CONSUMER_MAX_DELIVER=7 # inline\nSOMETHING_ELSE=kept\n\n";

fn changes(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn health(port: u16) -> Option<u16> {
    reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_runs_a_flow_and_a_saved_port_restarts_only_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    // The task module lives in a project folder the settings put on the runners' path.
    let tasks_dir = dir.path().join("project");
    std::fs::create_dir_all(&tasks_dir).unwrap();
    std::fs::write(tasks_dir.join("desktop_tasks.py"), TASKS).unwrap();
    let env_text = format!("{ENV_TEXT}PYOCO_TASKS_PATH={}\n", tasks_dir.display());
    let (app, port) = start_desktop(dir.path(), &env_text).await;
    app.wait_until_running(Duration::from_secs(60))
        .await
        .expect("all three components run");

    let status = app.status();
    assert!(status.all_running, "{status:?}");
    assert_eq!(
        status.api_url.as_deref(),
        Some(format!("http://127.0.0.1:{port}").as_str())
    );
    assert_eq!(
        status.dashboard_url.as_deref(),
        Some(format!("http://127.0.0.1:{port}/").as_str())
    );
    let nats_url = status.nats_url.clone().unwrap();
    assert!(
        nats_url.starts_with("nats://127.0.0.1:") && !nats_url.ends_with(":4222"),
        "{nats_url}"
    );
    let states: Vec<_> = status.components.iter().map(|c| (c.id, c.state)).collect();
    assert_eq!(
        states,
        vec![
            ("nats", "running"),
            ("gateway", "running"),
            ("worker", "running")
        ]
    );
    let worker_since = status.components[2].since;

    // A flow submitted over HTTP runs on the app's local worker.
    let http = reqwest::Client::new();
    let base = status.api_url.clone().unwrap();
    let run_id = submit_yaml(&http, &base, FLOW, "double", "default").await;
    let run = wait_status(
        &http,
        &base,
        &run_id,
        &["COMPLETED", "FAILED"],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(run["tasks"]["double"], "SUCCEEDED", "{run}");
    let first_run = run_id.clone();

    // Save a new HTTP port: the .env keeps its comments and unknown keys, only the gateway
    // restarts, the old port stops answering and the new one answers.
    let new_port = free_port();
    let saved = app
        .save_settings(&changes(&[("PYOCO_HTTP_PORT", &new_port.to_string())]))
        .await
        .expect("saved");
    assert_eq!(saved.changed, vec!["PYOCO_HTTP_PORT"]);
    assert_eq!(saved.restarted, vec!["gateway"]);
    let text = std::fs::read_to_string(app.env_file()).unwrap();
    assert_eq!(
        text,
        format!("{env_text}PYOCO_HTTP_PORT={new_port}\nPYOCO_NATS_CLIENT_PORT=0\n")
    );
    app.wait_until_running(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(health(new_port).await, Some(200));
    assert_eq!(health(port).await, None, "the old port is closed");
    let status = app.status();
    assert_eq!(status.api_url, Some(format!("http://127.0.0.1:{new_port}")));
    assert_eq!(
        status.components[2].since, worker_since,
        "the worker was not restarted"
    );

    // A worker setting restarts only the worker.
    let saved = app
        .save_settings(&changes(&[("PYOCO_WORKER_TAGS", "default,cpu")]))
        .await
        .unwrap();
    assert_eq!(saved.restarted, vec!["worker"]);
    // Logging applies at the next start: nothing restarts, a note says so.
    let saved = app
        .save_settings(&changes(&[("PYOCO_LOG_FORMAT", "text")]))
        .await
        .unwrap();
    assert!(saved.restarted.is_empty());
    assert_eq!(
        saved.notes,
        vec!["PYOCO_LOG_FORMAT applies at the next start of the app"]
    );

    // Restarting NATS brings everything back, and flows run again.
    app.restart("nats").await.unwrap();
    app.wait_until_running(Duration::from_secs(60))
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{new_port}");
    let run_id = submit_yaml(&http, &base, FLOW, "double", "cpu").await;
    let run = wait_status(
        &http,
        &base,
        &run_id,
        &["COMPLETED", "FAILED"],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    // The first run is still there: the store survived the restart.
    let first = http
        .get(format!("{base}/runs/{first_run}"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 200);

    app.shutdown().await;
    assert_eq!(health(new_port).await, None, "stopped");
    let status = app.status();
    assert!(
        status.components.iter().all(|c| c.state == "stopped"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_are_refused_with_every_field_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _port) = start_desktop(dir.path(), ENV_TEXT).await;
    let before = std::fs::read(app.env_file()).unwrap();
    let err = app
        .save_settings(&changes(&[
            ("PYOCO_HTTP_PORT", "abc"),
            ("PYOCO_CONSUMER_MAX_DELIVER", "0"),
            ("PYOCO_WORKER_TAGS", "ok"),
            ("PYOCO_NOT_A_SETTING", "1"),
        ]))
        .await
        .unwrap_err();
    assert_eq!(err.message, "nothing was saved: 3 settings are invalid");
    assert!(
        err.fields["PYOCO_HTTP_PORT"].ends_with("expected a port number 1..65535"),
        "{err:?}"
    );
    assert!(
        err.fields["PYOCO_CONSUMER_MAX_DELIVER"].ends_with("expected an integer ≥ 1"),
        "{err:?}"
    );
    assert!(err.fields.contains_key("PYOCO_NOT_A_SETTING"));
    assert_eq!(
        std::fs::read(app.env_file()).unwrap(),
        before,
        "byte for byte"
    );
    // As the user types: the same rule and words.
    assert_eq!(
        app.validate_setting("PYOCO_HTTP_PORT", "abc").unwrap(),
        Some(err.fields["PYOCO_HTTP_PORT"].clone())
    );
    assert_eq!(
        app.validate_setting("PYOCO_HTTP_PORT", "8080").unwrap(),
        None
    );
    // Unknown component names are refused with what to use.
    let e = app.restart("nat").await.unwrap_err();
    assert!(
        e.message.contains("use nats, gateway, worker or all"),
        "{e:?}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_a_startup_error_that_saving_a_new_port_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let options = pyoco_testkit::desktop_options(dir.path(), taken_port, "");
    let app = pyoco_desktop::DesktopApp::new(options, pyoco_appliance::LogBuffer::new(10));
    let err = app.start().await.unwrap_err();
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{taken_port}")),
        "{err}"
    );
    let status = app.status();
    assert_eq!(status.startup_error.as_deref(), Some(err.as_str()));
    assert!(!status.all_running);

    let port = free_port();
    let saved = app
        .save_settings(&changes(&[("PYOCO_HTTP_PORT", &port.to_string())]))
        .await
        .expect("saving starts the stack");
    assert_eq!(saved.restarted, vec!["nats", "gateway", "worker"]);
    app.wait_until_running(Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(app.status().startup_error, None);
    assert_eq!(health(port).await, Some(200));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_loads_with_the_same_values_in_our_loader() {
    let dir = tempfile::tempdir().unwrap();
    let options = pyoco_testkit::desktop_options(
        dir.path(),
        free_port(),
        "PYOCO_NATS_URL=nats://nats.prod.example:4222\nPYOCO_CONSUMER_MAX_DELIVER=7\nPYOCO_WHEEL_SYNC_INTERVAL_SEC=2.5\nPYOCO_DASHBOARD_LANG=ja\nPYOCO_AUTH_PEPPER=\" spaced pepper \"\n",
    );
    let app = pyoco_desktop::DesktopApp::new(options, pyoco_appliance::LogBuffer::new(10));
    let exported = app.export_settings("~/prod.env").unwrap();
    let path = dir.path().join("prod.env");
    assert_eq!(exported.path, path.display().to_string());
    assert_eq!(exported.count, 7, "5 set + HTTP port + registry TTL");
    // Auth off and any module callable: said in the answer and at the top of the file.
    assert_eq!(exported.warnings.len(), 2, "{:?}", exported.warnings);
    assert!(exported.warnings[0].starts_with("PYOCO_HTTP_AUTH_MODE is none"));
    assert!(exported.warnings[1].starts_with("PYOCO_TASK_MODULES is empty"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("\n# WARNING: PYOCO_HTTP_AUTH_MODE is none")
            && text.contains("\n# WARNING: PYOCO_TASK_MODULES is empty"),
        "{text}"
    );
    assert!(
        !text.contains("PYOCO_NATS_CLIENT_PORT"),
        "local-only settings stay out:\n{text}"
    );
    assert!(
        text.contains("\n# PYOCO_CONSUMER_ACK_WAIT_SEC=30.0\n"),
        "{text}"
    );

    let load = |env_file: &std::path::Path| {
        Settings::load(&LoadOptions {
            env: HashMap::from([("PYOCO_ENV_FILE".into(), env_file.display().to_string())]),
            cwd: dir.path().to_path_buf(),
            home: None,
        })
        .unwrap()
    };
    let original = load(app.env_file());
    let exported = load(&path);
    for spec in pyoco_config::specs().iter().filter(|s| s.exported()) {
        assert_eq!(
            original.raw(spec.name).map(str::trim),
            exported.raw(spec.name).map(str::trim),
            "{}",
            spec.name
        );
    }
    assert_eq!(exported.auth_pepper.as_deref(), Some(" spaced pepper "));
    assert_eq!(exported.consumer_max_deliver, 7);

    let err = app
        .export_settings("/nonexistent-dir/prod.env")
        .unwrap_err();
    assert!(err.message.contains("does not exist"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_default_ports_are_replaced_by_free_ones_with_a_notice() {
    let _nats = pyoco_testkit::hold_port(4222);
    let _http = pyoco_testkit::hold_port(8000);
    let dir = tempfile::tempdir().unwrap();
    let options = pyoco_testkit::desktop_options(dir.path(), 1, "");
    // No port settings at all: the defaults 4222 and 8000 apply, and both are taken.
    std::fs::write(&options.env_file, "# defaults only\n").unwrap();
    let app = pyoco_desktop::DesktopApp::new(options, pyoco_appliance::LogBuffer::new(10));
    app.start().await.expect("starts on free ports");
    app.wait_until_running(Duration::from_secs(60))
        .await
        .unwrap();
    let status = app.status();
    let nats = status.nats_url.clone().unwrap();
    let api = status.api_url.clone().unwrap();
    assert!(!nats.ends_with(":4222"), "{nats}");
    assert!(!api.ends_with(":8000"), "{api}");
    assert_eq!(status.notices.len(), 2, "{:?}", status.notices);
    assert!(
        status.notices[0].starts_with("NATS port 4222 is taken"),
        "{:?}",
        status.notices
    );
    assert!(
        status.notices[1].starts_with("HTTP port 8000 is taken"),
        "{:?}",
        status.notices
    );
    let port: u16 = api.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(health(port).await, Some(200));
    // A gateway restart keeps the port it was given.
    app.restart("gateway").await.unwrap();
    app.wait_until_running(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(app.status().api_url.as_deref(), Some(api.as_str()));
    assert_eq!(health(port).await, Some(200));
    app.shutdown().await;

    // A port the user chose is not replaced: it is an error to fix.
    let dir = tempfile::tempdir().unwrap();
    let options = pyoco_testkit::desktop_options(dir.path(), 8000, "");
    let app = pyoco_desktop::DesktopApp::new(options, pyoco_appliance::LogBuffer::new(10));
    let err = app.start().await.unwrap_err();
    assert!(err.contains("cannot listen on 127.0.0.1:8000"), "{err}");
    assert!(app.status().notices.is_empty());
}

/// Settings → Auth → API keys: a key made in the app works on the app's gateway (auth on, the
/// saved pepper) until revoked there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_made_in_the_app_work_on_its_gateway_until_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let (app, port) = start_desktop(
        dir.path(),
        "PYOCO_HTTP_AUTH_MODE=api_key\nPYOCO_AUTH_PEPPER=desktop-pepper\n",
    )
    .await;
    app.wait_until_running(Duration::from_secs(60))
        .await
        .unwrap();

    let listed = app.list_api_keys().await.unwrap();
    assert_eq!(listed.keys, vec![]);
    assert_eq!(listed.auth_mode, "api_key");
    assert!(listed.pepper_set);

    let err = app.create_api_key("no spaces").await.unwrap_err();
    assert!(err.message.contains("invalid tenant"), "{err:?}");

    let made = app.create_api_key(" demo ").await.unwrap();
    assert_eq!(made.tenant_id, "demo");
    assert!(made.api_key.starts_with(&format!("pyoco_{}.", made.key_id)));
    let listed = app.list_api_keys().await.unwrap();
    assert_eq!(listed.keys.len(), 1);
    assert_eq!(listed.keys[0].key_id, made.key_id);
    assert_eq!(listed.keys[0].revoked_at, None);

    let http = reqwest::Client::new();
    let runs = |key: Option<&str>| {
        let mut request = http.get(format!("http://127.0.0.1:{port}/runs"));
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(runs(None).await, 401);
    assert_eq!(runs(Some(&made.api_key)).await, 200);

    let revoked = app.revoke_api_key(&made.key_id).await.unwrap();
    assert_eq!(revoked.key_id, made.key_id);
    pyoco_testkit::eventually(
        Duration::from_secs(1),
        "the revoked key refused",
        || async { (runs(Some(&made.api_key)).await == 403).then_some(()) },
    )
    .await;
    let listed = app.list_api_keys().await.unwrap();
    assert_eq!(listed.keys[0].revoked_at, Some(revoked.revoked_at));
    let err = app
        .revoke_api_key("0123456789abcdef01234567")
        .await
        .unwrap_err();
    assert!(err.message.contains("no API key"), "{err:?}");
    app.shutdown().await;
}
