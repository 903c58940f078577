//! The web dashboard in a real browser (headless Chromium through chromedriver) against a real
//! gateway, worker, nats-server and pyoco: the runs list and its live updates, a run's graph,
//! timeline and records, cancel from the page, hostile names shown as text, Japanese, and the
//! API key prompt.
//!
//! Screenshots of each step go to `artifacts/dashboard/` at the workspace root (CI keeps them).
//! Needs `scripts/setup.sh --with-browser` (Debian's chromium and chromium-driver).

use std::{path::PathBuf, time::Duration};

use fantoccini::{elements::Element, Client, Locator};
use pyoco_testkit::{eventually, workspace_root, AppOptions, TestApp, TASKS_MODULE};
use serde_json::{json, Value};

use crate::{browser::browser, RUN_TIMEOUT, TERMINAL};

const T: Duration = Duration::from_secs(30);

fn flow(graph: &str, tasks: &[(&str, &str, &str)]) -> String {
    let mut y = format!(
        "version: 1\nflow:\n  graph: |\n    {}\ntasks:\n",
        graph.replace('\n', "\n    ")
    );
    for (name, callable, inputs) in tasks {
        y.push_str(&format!(
            "  {name}:\n    callable: {TASKS_MODULE}:{callable}\n"
        ));
        if !inputs.is_empty() {
            y.push_str(&format!("    inputs: {inputs}\n"));
        }
    }
    y
}

/// hello >> shout, then a 2 s nap: long enough to be seen running.
fn hello_flow(nap: f64) -> String {
    flow(
        "hello >> shout\nshout >> nap",
        &[
            ("hello", "hello", "{name: dashboard}"),
            ("shout", "shout", ""),
            ("nap", "nap", &format!("{{seconds: {nap}}}")),
        ],
    )
}

fn shots_dir() -> PathBuf {
    let dir = workspace_root().join("artifacts/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Save a screenshot as `artifacts/dashboard/<name>.png`.
async fn shot(client: &Client, name: &str) {
    // A screenshot right after a change can show the previous frame.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = client.screenshot().await.expect("screenshot");
    let path = shots_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

async fn find(client: &Client, css: &str) -> Element {
    eventually(T, &format!("{css} on the page"), || async {
        client.find(Locator::Css(css)).await.ok()
    })
    .await
}

/// `document.querySelector(css)?.getAttribute(attr)`.
async fn attr(client: &Client, css: &str, name: &str) -> Option<String> {
    let v = client
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
            vec![json!(css), json!(name)],
        )
        .await
        .ok()?;
    v.as_str().map(str::to_string)
}

async fn js(client: &Client, script: &str) -> Value {
    client.execute(script, vec![]).await.expect("script")
}

/// Wait until `css`'s attribute `name` is `want`.
async fn wait_attr(client: &Client, css: &str, name: &str, want: &str) {
    eventually(T, &format!("{css} [{name}={want}]"), || async {
        (attr(client, css, name).await.as_deref() == Some(want)).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_appear_and_change_live_and_a_run_shows_its_graph_timeline_and_records() {
    let app = TestApp::start(AppOptions::default()).await;
    let before = app
        .submit_yaml(&hello_flow(0.1), "stored-before", "default")
        .await;
    app.wait_status(&before, TERMINAL, RUN_TIMEOUT).await;

    let (_driver, client) = browser().await;
    client
        .goto(&format!("{}/#/runs", app.base_url()))
        .await
        .unwrap();
    // The stored run is listed.
    let row = format!(r#"tr[data-run-id="{before}"]"#);
    wait_attr(&client, &row, "data-status", "COMPLETED").await;
    assert_eq!(
        find(&client, &format!("{row} td.flow a"))
            .await
            .text()
            .await
            .unwrap(),
        "stored-before"
    );
    // The status counts come from /metrics.
    wait_attr(
        &client,
        r#"#status-counts [data-status="COMPLETED"]"#,
        "data-status",
        "COMPLETED",
    )
    .await;
    shot(&client, "01-runs-list").await;

    // Submitted after the page loaded: it appears and turns COMPLETED without a reload.
    js(&client, "window.__same_page = true; return null;").await;
    let live = app
        .submit_yaml(&hello_flow(2.0), "live-run", "default")
        .await;
    let row = format!(r#"tr[data-run-id="{live}"]"#);
    let first_seen = eventually(T, "the new run listed", || async {
        attr(&client, &row, "data-status").await
    })
    .await;
    assert_ne!(first_seen, "COMPLETED", "seen before it ended");
    wait_attr(&client, &row, "data-status", "RUNNING").await;
    shot(&client, "02-run-running-in-list").await;
    eventually(RUN_TIMEOUT, "the run COMPLETED in the list", || async {
        (attr(&client, &row, "data-status").await.as_deref() == Some("COMPLETED")).then_some(())
    })
    .await;
    assert_eq!(
        js(&client, "return window.__same_page === true;").await,
        json!(true),
        "no reload"
    );
    shot(&client, "03-run-completed-in-list").await;

    // Its detail: graph with both dependencies, every task succeeded, records and stdout.
    find(&client, &format!("{row} td.flow a"))
        .await
        .click()
        .await
        .unwrap();
    wait_attr(&client, "#run-status", "data-state", "completed").await;
    let nodes = js(
        &client,
        "return [...document.querySelectorAll('#run-graph g.node')].map(n => [n.dataset.task, n.dataset.state]);",
    )
    .await;
    assert_eq!(
        nodes,
        json!([
            ["hello", "succeeded"],
            ["shout", "succeeded"],
            ["nap", "succeeded"]
        ])
    );
    assert_eq!(
        js(
            &client,
            "return document.querySelectorAll('#run-graph path.edge').length;"
        )
        .await,
        json!(2)
    );
    assert_eq!(
        js(
            &client,
            "return document.querySelectorAll('#run-timeline g.bar').length;"
        )
        .await,
        json!(3)
    );
    find(&client, r#"#run-graph g.node[data-task="hello"]"#)
        .await
        .click()
        .await
        .unwrap();
    let stdout = find(&client, r#"#task-detail [data-field="stdout"]"#).await;
    assert_eq!(
        stdout.text().await.unwrap().trim_end(),
        "saying hello to dashboard"
    );
    let output = find(&client, r#"#task-detail [data-field="output"]"#).await;
    assert_eq!(output.text().await.unwrap(), "hello dashboard");
    assert_eq!(
        find(&client, "#run-live")
            .await
            .attr("data-state")
            .await
            .unwrap()
            .as_deref(),
        Some("done")
    );
    shot(&client, "04-run-detail").await;
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_is_cancelled_from_the_page() {
    let app = TestApp::start(AppOptions::default()).await;
    let run = app
        .submit_yaml(
            &flow("nap", &[("nap", "nap", "{seconds: 60}")]),
            "long",
            "default",
        )
        .await;
    app.wait_status(&run, &["RUNNING"], RUN_TIMEOUT).await;

    let (_driver, client) = browser().await;
    client
        .goto(&format!("{}/#/runs/{run}", app.base_url()))
        .await
        .unwrap();
    wait_attr(&client, "#run-status", "data-state", "running").await;
    wait_attr(
        &client,
        r#"#run-graph g.node[data-task="nap"]"#,
        "data-state",
        "running",
    )
    .await;
    shot(&client, "05-run-running").await;
    find(&client, "#run-cancel").await.click().await.unwrap();
    // A confirmation first: nothing is cancelled until it is answered.
    find(&client, "#confirm-dialog[open]").await;
    shot(&client, "06-cancel-confirm").await;
    assert_eq!(
        app.wait_status(&run, &["RUNNING"], T).await["status"],
        "RUNNING"
    );
    find(&client, "#confirm-yes").await.click().await.unwrap();
    // The task is interrupted: CANCELLED within seconds, not after the 60 s nap.
    wait_attr(&client, "#run-status", "data-state", "cancelled").await;
    assert_eq!(
        app.wait_status(&run, TERMINAL, T).await["status"],
        "CANCELLED"
    );
    assert_eq!(
        attr(&client, "#run-cancel", "hidden").await.as_deref(),
        Some("")
    );
    shot(&client, "07-run-cancelled").await;
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_output_are_shown_as_text() {
    let app = TestApp::start(AppOptions::default()).await;
    let name = r#"<img src=x onerror="window.__xss=1">"#;
    let run = app
        .submit_yaml(
            &flow(
                "hello",
                &[(
                    "hello",
                    "hello",
                    r#"{name: "<script>window.__xss=2</script>"}"#,
                )],
            ),
            name,
            "default",
        )
        .await;
    app.wait_status(&run, TERMINAL, RUN_TIMEOUT).await;

    let (_driver, client) = browser().await;
    client
        .goto(&format!("{}/#/runs", app.base_url()))
        .await
        .unwrap();
    let cell = find(&client, &format!(r#"tr[data-run-id="{run}"] td.flow a"#)).await;
    assert_eq!(cell.text().await.unwrap(), name);
    client
        .goto(&format!("{}/#/runs/{run}", app.base_url()))
        .await
        .unwrap();
    wait_attr(&client, "#run-status", "data-state", "completed").await;
    let stdout = find(&client, r#"#task-detail [data-field="stdout"]"#).await;
    assert_eq!(
        stdout.text().await.unwrap().trim_end(),
        "saying hello to <script>window.__xss=2</script>"
    );
    assert_eq!(
        find(&client, "#run-title").await.text().await.unwrap(),
        name
    );
    // Nothing became markup, nothing ran.
    assert_eq!(
        js(
            &client,
            "return document.querySelectorAll('#app img, #app script').length;"
        )
        .await,
        json!(0)
    );
    assert_eq!(
        js(&client, "return window.__xss === undefined;").await,
        json!(true)
    );
    shot(&client, "08-hostile-names-as-text").await;
    client.close().await.unwrap();

    // And the page says so to the browser: a strict CSP, no sniffing.
    let page = app.get("/").await;
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn japanese_with_lang_ja_and_remembered() {
    let app = TestApp::start(AppOptions::default()).await;
    let run = app
        .submit_yaml(&hello_flow(0.1), "日本語フロー", "default")
        .await;
    app.wait_status(&run, TERMINAL, RUN_TIMEOUT).await;

    let (_driver, client) = browser().await;
    client
        .goto(&format!("{}/?lang=ja#/runs", app.base_url()))
        .await
        .unwrap();
    let row = format!(r#"tr[data-run-id="{run}"]"#);
    wait_attr(&client, &row, "data-status", "COMPLETED").await;
    assert_eq!(
        js(&client, "return document.documentElement.lang;").await,
        json!("ja")
    );
    assert_eq!(
        find(&client, "#nav-runs").await.text().await.unwrap(),
        "実行"
    );
    assert_eq!(
        find(&client, &format!("{row} .badge"))
            .await
            .text()
            .await
            .unwrap(),
        "完了"
    );
    shot(&client, "09-japanese").await;
    // Remembered without the parameter; the switch goes back to English.
    client
        .goto(&format!("{}/#/workers", app.base_url()))
        .await
        .unwrap();
    assert_eq!(
        find(&client, "#nav-workers").await.text().await.unwrap(),
        "ワーカー"
    );
    client
        .execute(
            "const s = document.getElementById('lang'); s.value = 'en'; s.dispatchEvent(new Event('change')); return null;",
            vec![],
        )
        .await
        .unwrap();
    eventually(T, "English again", || async {
        (find(&client, "#nav-workers").await.text().await.ok()? == "Workers").then_some(())
    })
    .await;
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_api_keys_on_the_page_asks_for_the_key_and_sends_it_everywhere() {
    let app = TestApp::start_with(AppOptions::default(), |settings| {
        settings.http_auth_mode = pyoco_config::AuthMode::ApiKey;
        settings.http_api_key_header = "X-Pyoco-Token".into();
    })
    .await;
    let key = app.api_key().expect("auth is on").to_string();
    let run = app
        .submit_yaml(&hello_flow(0.1), "behind-a-key", "default")
        .await;
    app.wait_status(&run, TERMINAL, RUN_TIMEOUT).await;

    let (_driver, client) = browser().await;
    client
        .goto(&format!("{}/#/runs", app.base_url()))
        .await
        .unwrap();
    // 401 → the prompt, with the gateway's header name.
    find(&client, "#auth-dialog[open]").await;
    assert_eq!(
        js(
            &client,
            "return document.getElementById('auth-header').value;"
        )
        .await,
        json!("x-pyoco-token")
    );
    shot(&client, "10-api-key-prompt").await;
    find(&client, "#auth-key")
        .await
        .send_keys(&key)
        .await
        .unwrap();
    find(&client, "#auth-save").await.click().await.unwrap();
    let row = format!(r#"tr[data-run-id="{run}"]"#);
    wait_attr(&client, &row, "data-status", "COMPLETED").await;
    // The SSE stream of a run carries it too.
    find(&client, &format!("{row} td.flow a"))
        .await
        .click()
        .await
        .unwrap();
    wait_attr(&client, "#run-status", "data-state", "completed").await;
    assert_eq!(
        js(
            &client,
            "return localStorage.getItem('pyoco.auth_key') !== null;"
        )
        .await,
        json!(true)
    );
    shot(&client, "11-api-key-accepted").await;
    client.close().await.unwrap();
}

/// Give the hidden file input `css` a file (chromedriver types paths only into visible ones).
async fn choose_file(client: &Client, css: &str, path: &std::path::Path) {
    client
        .execute(
            "document.querySelector(arguments[0]).hidden = false; return null;",
            vec![json!(css)],
        )
        .await
        .unwrap();
    find(client, css)
        .await
        .send_keys(&path.to_string_lossy())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wheel_is_uploaded_through_the_page_and_a_refusal_shows_its_reason() {
    let app = TestApp::start(AppOptions::gateway_only()).await;
    let dir = tempfile::tempdir().unwrap();
    let name = pyoco_testkit::task_wheel_name("dash_pkg", "1.0.0");
    let good = dir.path().join(&name);
    std::fs::write(
        &good,
        pyoco_testkit::task_wheel("dash_pkg", "1.0.0", "def hi():\n    return 1\n"),
    )
    .unwrap();
    let bad = dir.path().join("dash_bad-1.0.0-py3-none-any.whl");
    std::fs::write(&bad, b"not a zip archive").unwrap();

    let (_driver, client) = browser().await;
    client
        .goto(&format!("{}/#/wheels", app.base_url()))
        .await
        .unwrap();
    find(&client, "#wheels-empty").await;
    find(&client, "#wheel-tags")
        .await
        .send_keys("cpu")
        .await
        .unwrap();
    choose_file(&client, "#wheel-file", &good).await;
    wait_attr(&client, "#upload-status", "data-kind", "ok").await;
    wait_attr(
        &client,
        &format!(r#"tr[data-wheel="{name}"]"#),
        "data-wheel",
        &name,
    )
    .await;
    assert_eq!(
        js(
            &client,
            &format!(
                r#"return document.querySelector('tr[data-wheel="{name}"] .chip').textContent;"#
            )
        )
        .await,
        json!("cpu")
    );
    wait_attr(
        &client,
        r#"#history-body tr[data-action="upload"]"#,
        "data-action",
        "upload",
    )
    .await;
    shot(&client, "12-wheel-uploaded").await;
    let (_, listed) = app.get_json("/wheels").await;
    assert_eq!(listed[0]["name"], json!(name));
    assert_eq!(listed[0]["tags"], json!(["cpu"]));

    // A file the gateway refuses: its status and reason on the page, nothing stored.
    choose_file(&client, "#wheel-file", &bad).await;
    wait_attr(&client, "#upload-status", "data-kind", "error").await;
    let said = find(&client, "#upload-status").await.text().await.unwrap();
    assert!(
        said.contains("422") && said.contains("invalid wheel"),
        "{said}"
    );
    shot(&client, "13-wheel-refused").await;
    assert_eq!(app.get_json("/wheels").await.1.as_array().unwrap().len(), 1);

    // Delete, after a confirmation: gone from the registry, a delete in the history.
    find(
        &client,
        &format!(r#"tr[data-wheel="{name}"] [data-action="delete"]"#),
    )
    .await
    .click()
    .await
    .unwrap();
    find(&client, "#confirm-dialog[open]").await;
    find(&client, "#confirm-yes").await.click().await.unwrap();
    find(&client, "#wheels-empty:not([hidden])").await;
    wait_attr(
        &client,
        r#"#history-body tr[data-action="delete"]"#,
        "data-action",
        "delete",
    )
    .await;
    assert_eq!(app.get_json("/wheels").await, (200, json!([])));
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_is_submitted_from_the_page_with_edited_params_and_its_run_opens() {
    let app = TestApp::start(AppOptions::default()).await;
    let (_driver, client) = browser().await;
    client
        .goto(&format!("{}/#/submit", app.base_url()))
        .await
        .unwrap();
    let yaml = format!(
        "version: 1\nflow:\n  graph: |\n    hello >> shout\n  defaults:\n    name: defaults\ntasks:\n  hello:\n    callable: {TASKS_MODULE}:hello\n  shout:\n    callable: {TASKS_MODULE}:shout\n"
    );
    // A bad document first: the gateway's reason, and no way to run it.
    find(&client, "#submit-yaml")
        .await
        .send_keys("version: 2\nflow: {graph: a}\n")
        .await
        .unwrap();
    wait_attr(&client, "#submit-check", "data-kind", "error").await;
    assert!(find(&client, "#submit-check")
        .await
        .text()
        .await
        .unwrap()
        .contains("unsupported_version"));
    assert_eq!(
        attr(&client, "#submit-run", "disabled").await.as_deref(),
        Some("")
    );
    client
        .execute(
            "const y = document.getElementById('submit-yaml'); y.value = arguments[0]; y.dispatchEvent(new Event('input')); return null;",
            vec![json!(yaml)],
        )
        .await
        .unwrap();
    wait_attr(&client, "#submit-check", "data-kind", "ok").await;
    // The defaults prefill the params; the edit replaces them.
    let params = js(
        &client,
        "return JSON.parse(document.getElementById('submit-params').value);",
    )
    .await;
    assert_eq!(params, json!({"name": "defaults"}));
    client
        .execute(
            "const p = document.getElementById('submit-params'); p.value = '{\"name\": \"from the page\"}'; p.dispatchEvent(new Event('input')); return null;",
            vec![],
        )
        .await
        .unwrap();
    let name = find(&client, "#submit-flow-name").await;
    name.clear().await.unwrap();
    name.send_keys("page-submit").await.unwrap();
    shot(&client, "14-submit-form").await;
    find(&client, "#submit-run").await.click().await.unwrap();
    // The new run opens and completes with the edited parameter.
    wait_attr(&client, "#run-status", "data-state", "completed").await;
    assert_eq!(
        find(&client, "#run-title").await.text().await.unwrap(),
        "page-submit"
    );
    find(&client, r#"#run-graph g.node[data-task="shout"]"#)
        .await
        .click()
        .await
        .unwrap();
    let output = find(&client, r#"#task-detail [data-field="output"]"#).await;
    assert_eq!(output.text().await.unwrap(), "HELLO FROM THE PAGE!");
    shot(&client, "15-submitted-run").await;
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_listed_with_their_state_and_can_be_hidden() {
    let app = TestApp::start(AppOptions::default()).await;
    app.wait_worker_registered("e2e-worker").await;
    let (_driver, client) = browser().await;
    client
        .goto(&format!("{}/#/workers", app.base_url()))
        .await
        .unwrap();
    let row = r#"tr[data-worker-id="e2e-worker"]"#;
    wait_attr(&client, row, "data-state", "IDLE").await;
    assert_eq!(
        find(&client, &format!("{row} .chip"))
            .await
            .text()
            .await
            .unwrap(),
        "default"
    );
    shot(&client, "17-workers").await;
    find(&client, &format!(r#"{row} [data-action="toggle-hidden"]"#))
        .await
        .click()
        .await
        .unwrap();
    // Hidden: off the default list, in the API too; shown again with "show hidden".
    find(&client, "#workers-empty:not([hidden])").await;
    let (_, workers) = app.get_json("/workers?scope=all&include_hidden=true").await;
    assert_eq!(workers[0]["hidden"], json!(true), "{workers}");
    find(&client, "#workers-show-hidden")
        .await
        .click()
        .await
        .unwrap();
    wait_attr(&client, row, "class", "hidden-row").await;
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_charted_and_counted() {
    let app = TestApp::start(AppOptions::gateway_only()).await;
    for _ in 0..3 {
        app.submit_yaml(&hello_flow(0.1), "queued", "default").await;
    }
    let (_driver, client) = browser().await;
    client
        .goto(&format!("{}/#/metrics", app.base_url()))
        .await
        .unwrap();
    eventually(T, "the KPIs", || async {
        (find(&client, "#kpi-pending .kpi-value")
            .await
            .text()
            .await
            .ok()?
            == "3")
            .then_some(())
    })
    .await;
    assert_eq!(
        find(&client, "#kpi-queued .kpi-value")
            .await
            .text()
            .await
            .unwrap(),
        "3"
    );
    // Three uPlot charts drawn on canvases.
    eventually(T, "three charts", || async {
        let n = js(
            &client,
            "return document.querySelectorAll('#view-metrics .uplot canvas').length;",
        )
        .await;
        (n == json!(3)).then_some(())
    })
    .await;
    shot(&client, "16-metrics").await;
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_replayed_from_the_page() {
    let app = TestApp::start(AppOptions::default()).await;
    let failed = app
        .submit_yaml(&flow("boom", &[("boom", "boom", "")]), "doomed", "default")
        .await;
    assert_eq!(
        app.wait_status(&failed, TERMINAL, RUN_TIMEOUT).await["status"],
        "FAILED"
    );
    let (_driver, client) = browser().await;
    client
        .goto(&format!("{}/#/dlq", app.base_url()))
        .await
        .unwrap();
    let row = r#"#dlq-body tr[data-reason="execution_error"]"#;
    let error = find(&client, &format!("{row} td.error-text")).await;
    assert_eq!(error.text().await.unwrap(), "disk on fire");
    shot(&client, "18-dead-letters").await;
    find(&client, &format!(r#"{row} [data-action="replay"]"#))
        .await
        .click()
        .await
        .unwrap();
    // The replay opens: the same flow, failing the same way (the task still raises).
    wait_attr(&client, "#run-status", "data-state", "failed").await;
    assert_eq!(
        find(&client, "#run-title").await.text().await.unwrap(),
        "doomed"
    );
    let (_, page) = app.get_json("/dlq").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
    assert!(page["items"][1]["replayed_run_id"].is_string(), "{page}");
    client.close().await.unwrap();
}

/// Prints `n` numbered lines, one every 100 ms, then one line on stderr.
const CHATTY_PY: &str = r#"import sys, time

def chatty(n=20):
    for i in range(n):
        print(f"chatty line {i}", flush=True)
        time.sleep(0.1)
    print("chatty done", file=sys.stderr, flush=True)
    return n
"#;

/// The number of log lines on the page and the run's state, read at one instant.
async fn log_lines_and_state(client: &Client) -> (u64, String) {
    let v = js(
        client,
        "return [document.querySelectorAll('#run-log .log-line').length, (document.getElementById('run-status') || {dataset: {}}).dataset.state || ''];",
    )
    .await;
    (
        v[0].as_u64().unwrap_or(0),
        v[1].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_s_log_lines_appear_live_on_the_run_page() {
    let app = TestApp::start(AppOptions::default()).await;
    pyoco_testkit::write_task_module(&app.tasks_dir(), "dash_chatty", CHATTY_PY);
    let yaml = "version: 1\nflow:\n  graph: |\n    chatty\ntasks:\n  chatty:\n    callable: dash_chatty:chatty\n    inputs: {n: 50}\n";
    let run_id = app.submit_yaml(yaml, "chatty", "default").await;
    let (_driver, client) = browser().await;
    client
        .goto(&format!("{}/#/runs/{run_id}", app.base_url()))
        .await
        .unwrap();
    // Lines show up while the task still runs (50 lines take 5 s).
    let seen = eventually(T, "log lines while running", || async {
        let (n, state) = log_lines_and_state(&client).await;
        (n >= 3 && state == "running").then_some(n)
    })
    .await;
    assert!(seen < 51, "seen before the end: {seen}");
    js(
        &client,
        "document.getElementById('run-logs').scrollIntoView(); return null;",
    )
    .await;
    shot(&client, "19-run-log-live").await;
    // All of them once the run ended, stderr marked as such, in order.
    wait_attr(&client, "#log-live", "data-state", "done").await;
    let (n, state) = log_lines_and_state(&client).await;
    assert_eq!((n, state.as_str()), (51, "completed"));
    let texts = js(
        &client,
        "return [...document.querySelectorAll('#run-log .log-line')].map(l => [l.dataset.stream, l.querySelector('.log-task').textContent, l.querySelector('.log-text').textContent]);",
    )
    .await;
    assert_eq!(texts[0], json!(["stdout", "chatty", "chatty line 0"]));
    assert_eq!(texts[49], json!(["stdout", "chatty", "chatty line 49"]));
    assert_eq!(texts[50], json!(["stderr", "chatty", "chatty done"]));
    // The stream filter.
    js(
        &client,
        "const s = document.getElementById('log-stream'); s.value = 'stderr'; s.dispatchEvent(new Event('change')); return null;",
    )
    .await;
    assert_eq!(log_lines_and_state(&client).await.0, 1);
    js(
        &client,
        "document.getElementById('run-logs').scrollIntoView(); return null;",
    )
    .await;
    shot(&client, "20-run-log-done").await;
    client.close().await.unwrap();
}

/// `document.querySelector(css).click()` (atomic: the schedules list redraws as it changes).
async fn click(client: &Client, css: &str) {
    eventually(T, &format!("click {css}"), || async {
        let v = client
            .execute(
                "const e = document.querySelector(arguments[0]); if (!e) return false; e.click(); return true;",
                vec![json!(css)],
            )
            .await
            .ok()?;
        (v == json!(true)).then_some(())
    })
    .await;
}

/// `document.querySelector(css)?.textContent`.
async fn text_of(client: &Client, css: &str) -> Option<String> {
    let v = client
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            vec![json!(css)],
        )
        .await
        .ok()?;
    v.as_str().map(str::to_string)
}

async fn schedules(app: &TestApp) -> Vec<Value> {
    let (status, body) = app.get_json("/schedules").await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .cloned()
        .or_else(|| body["items"].as_array().cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_is_made_on_the_submit_page_then_paused_resumed_and_deleted() {
    let app = TestApp::start(AppOptions::default()).await;
    let (_driver, client) = browser().await;
    client
        .goto(&format!("{}/#/submit?when=interval", app.base_url()))
        .await
        .unwrap();
    let yaml = format!(
        "version: 1\nflow:\n  graph: |\n    hello\ntasks:\n  hello:\n    callable: {TASKS_MODULE}:hello\n    inputs: {{name: scheduled}}\n"
    );
    client
        .execute(
            "const y = document.getElementById('submit-yaml'); y.value = arguments[0]; y.dispatchEvent(new Event('input')); \
             const i = document.getElementById('when-interval'); i.value = '1'; return null;",
            vec![json!(yaml)],
        )
        .await
        .unwrap();
    wait_attr(&client, "#submit-check", "data-kind", "ok").await;
    let name = find(&client, "#submit-flow-name").await;
    name.clear().await.unwrap();
    name.send_keys("every-second").await.unwrap();
    assert_eq!(
        find(&client, "#submit-run").await.text().await.unwrap(),
        "Create schedule"
    );
    shot(&client, "21-schedule-form").await;
    find(&client, "#submit-run").await.click().await.unwrap();

    // The schedules view opens with it, active, counting dispatches.
    let row = r#"#schedules-body tr[data-status="ACTIVE"]"#;
    find(&client, row).await;
    let id = attr(&client, row, "data-schedule-id").await.unwrap();
    let row = format!(r#"#schedules-body tr[data-schedule-id="{id}"]"#);
    eventually(T, "two dispatches shown", || async {
        let n = text_of(&client, &format!(r#"{row} [data-field="count"]"#)).await?;
        (n.parse::<u64>().unwrap_or(0) >= 2).then_some(())
    })
    .await;
    assert!(find(&client, &format!("{row} td.when"))
        .await
        .text()
        .await
        .unwrap()
        .starts_with("every 1.00 s"));
    shot(&client, "22-schedules").await;

    // Pause: no more runs.
    click(&client, &format!(r#"{row} [data-action="pause"]"#)).await;
    wait_attr(&client, &row, "data-status", "PAUSED").await;
    let paused_count = schedules(&app).await[0]["dispatch_count"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        schedules(&app).await[0]["dispatch_count"].as_u64().unwrap(),
        paused_count,
        "no dispatch while paused"
    );
    // Resume: runs again.
    click(&client, &format!(r#"{row} [data-action="resume"]"#)).await;
    wait_attr(&client, &row, "data-status", "ACTIVE").await;
    eventually(T, "a dispatch after resuming", || async {
        (schedules(&app).await[0]["dispatch_count"].as_u64().unwrap() > paused_count).then_some(())
    })
    .await;

    // Its runs: the runs list filtered by the schedule.
    click(&client, &format!(r#"{row} [data-action="runs"]"#)).await;
    find(&client, "#filter-schedule").await;
    let (_, runs) = app.get_json(&format!("/runs?schedule_id={id}")).await;
    let first = runs["items"]
        .as_array()
        .or_else(|| runs.as_array())
        .and_then(|a| a.first())
        .and_then(|r| r["run_id"].as_str())
        .unwrap()
        .to_string();
    find(&client, &format!(r#"tr[data-run-id="{first}"]"#)).await;

    // Delete (confirmed): gone, and no more runs.
    client
        .goto(&format!("{}/#/schedules", app.base_url()))
        .await
        .unwrap();
    click(&client, &format!(r#"{row} [data-action="delete"]"#)).await;
    find(&client, "#confirm-dialog[open]").await;
    click(&client, "#confirm-yes").await;
    find(&client, "#schedules-empty:not([hidden])").await;
    assert!(schedules(&app).await.is_empty());
    client.close().await.unwrap();
}
