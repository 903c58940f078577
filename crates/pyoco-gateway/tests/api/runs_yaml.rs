//! `POST /runs/yaml`.

use pyoco_testkit::{status_json, AppOptions, TestApp};
use serde_json::{json, Value};

use crate::helpers::{is_uuid4, keys, nested_merge_defaults, wide_merge_defaults, FLOW_YAML};

/// A valid flow.yaml of exactly `len` bytes (padded with a comment).
fn flow_yaml_of_len(len: usize) -> Vec<u8> {
    let mut text = String::from(FLOW_YAML);
    text.push('#');
    while text.len() < len {
        text.push('x');
    }
    assert_eq!(text.len(), len);
    text.into_bytes()
}

fn sha256_hex(bytes: &[u8]) -> String {
    // Computed by pyoco-wire's digest, which has its own tests against Python.
    pyoco_wire::parse_workflow_yaml(bytes)
        .unwrap()
        .digest
        .sha256
}

#[tokio::test]
async fn yaml_submit_stores_digest_and_queues_the_text_with_defaults_as_params() {
    let app = TestApp::gateway_only().await;
    let response = app
        .post_yaml_form(
            Some(FLOW_YAML.as_bytes()),
            Some("  hello \n"),
            Some(" cpu "),
        )
        .await;
    let (status, body) = status_json(response).await;
    assert_eq!(status, 200, "{body}");
    let run_id = body["run_id"].as_str().unwrap().to_string();
    assert!(is_uuid4(&run_id));
    assert_eq!(body, json!({"run_id": run_id, "status": "PENDING"}));

    let sha = sha256_hex(FLOW_YAML.as_bytes());
    let snapshot = app.stored_snapshot(&run_id).await;
    assert_eq!(
        keys(&snapshot),
        [
            "run_id",
            "flow_name",
            "tag",
            "tags",
            "tenant_id",
            "api_key_id",
            "workflow_yaml_sha256",
            "workflow_yaml_bytes",
            "status",
            "params",
            "tasks",
            "task_records",
            "start_time",
            "end_time",
            "heartbeat_at",
            "updated_at",
            "error"
        ]
    );
    assert_eq!(snapshot["flow_name"], json!("hello"));
    assert_eq!(snapshot["tag"], json!("cpu"));
    assert_eq!(snapshot["tags"], json!(["cpu"]));
    assert_eq!(snapshot["workflow_yaml_sha256"], json!(sha));
    assert_eq!(snapshot["workflow_yaml_bytes"], json!(FLOW_YAML.len()));
    // YAML 1.1 like PyYAML: `yes` is true.
    assert_eq!(snapshot["params"], json!({"x": 1, "debug": true}));
    assert!(
        !String::from_utf8_lossy(&app.stored_snapshot_with_bytes(&run_id).await.1)
            .contains("graph")
    );

    let (job, _) = app.next_job("cpu").await;
    assert_eq!(
        keys(&job),
        [
            "run_id",
            "flow_name",
            "tag",
            "tags",
            "tenant_id",
            "api_key_id",
            "params",
            "workflow_yaml",
            "workflow_yaml_sha256",
            "workflow_yaml_bytes",
            "submitted_at"
        ]
    );
    assert_eq!(job["workflow_yaml"], json!(FLOW_YAML));
    assert_eq!(job["workflow_yaml_sha256"], json!(sha));
    assert_eq!(job["workflow_yaml_bytes"], json!(FLOW_YAML.len()));
    assert_eq!(job["params"], json!({"x": 1, "debug": true}));
    assert_eq!(job["flow_name"], json!("hello"));
}

#[tokio::test]
async fn blank_or_absent_tag_means_the_default_tag() {
    let app = TestApp::gateway_only().await;
    for tag in [None, Some(""), Some("   ")] {
        let (status, body) = status_json(
            app.post_yaml_form(Some(FLOW_YAML.as_bytes()), Some("f"), tag)
                .await,
        )
        .await;
        assert_eq!(status, 200, "{tag:?}: {body}");
        let snapshot = app.stored_snapshot(body["run_id"].as_str().unwrap()).await;
        assert_eq!(snapshot["tag"], json!("default"));
        app.next_job("default").await;
    }
}

#[tokio::test]
async fn invalid_tag_is_422() {
    let app = TestApp::gateway_only().await;
    for tag in ["a.b", "x>", "a b"] {
        let (status, body) = status_json(
            app.post_yaml_form(Some(FLOW_YAML.as_bytes()), Some("f"), Some(tag))
                .await,
        )
        .await;
        assert_eq!(status, 422, "{tag}");
        assert_eq!(body["detail"], json!("invalid tag"));
        assert!(body["reason"].is_string());
    }
    assert!(app.store().runs().keys().await.unwrap().is_empty());
}

#[tokio::test]
async fn each_flow_yaml_rule_gives_422_with_its_reason() {
    let app = TestApp::gateway_only().await;
    let cases: [(&[u8], &str); 10] = [
        (b"\xff\xfe", "invalid_utf8"),
        (b"flow: [", "invalid_yaml"),
        (b"- a\n- b\n", "invalid_yaml_root"),
        (b"", "invalid_yaml_root"),
        (b"flows: {}\n", "unsupported_key_flows"),
        (
            b"flow: {graph: a}\npipes: []\n",
            "unknown_top_level_keys: ['pipes']",
        ),
        (b"version: 1\n", "missing_flow"),
        (b"flow:\n  defaults: {}\n", "missing_flow_graph"),
        (
            b"flow: {graph: t1}\ntasks:\n  t1:\n    use: x\n",
            "unknown_task_keys: t1: ['use']",
        ),
        (
            b"flow: {graph: t1}\ntasks:\n  t1:\n    callable: nocolon\n",
            "invalid_task_callable: t1",
        ),
    ];
    for (yaml, reason) in cases {
        let (status, body) =
            status_json(app.post_yaml_form(Some(yaml), Some("f"), None).await).await;
        assert_eq!(status, 422, "{reason}: {body}");
        if reason == "invalid_yaml" {
            // 0.5.1's reason, then the parser's message (ours).
            assert_eq!(body["detail"], "invalid workflow yaml");
            let got = body["reason"].as_str().unwrap();
            assert!(got.starts_with("invalid_yaml: ") && got.len() > 16, "{got}");
        } else {
            assert_eq!(
                body,
                json!({"detail": "invalid workflow yaml", "reason": reason})
            );
        }
    }
    assert!(app.store().runs().keys().await.unwrap().is_empty());
    assert_eq!(app.queued_jobs().await, 0);
}

/// The hostile documents of issue 13: answered 422 (or accepted at their real size) without
/// holding up the gateway: `/health` answers while they are parsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_flow_yaml_is_answered_without_freezing_the_gateway() {
    let app = TestApp::gateway_only().await;
    // 4,000 keys merged 300 times (1.2 million copies): too large.
    let merges = format!(
        "flow:\n  graph: a\n  defaults:\n{}",
        wide_merge_defaults(4000, 300)
    );
    // A 100,000-character key: PyYAML refuses it, so do we (0.5.1 accepted it and the run
    // failed later).
    let long_key = format!(
        "flow:\n  graph: a\n  defaults:\n    {}: 1\n",
        "k".repeat(100_000)
    );
    // `m1: {<<: [*m0 × 10]}` eight levels deep: a kilobyte that took the gateway past 5 GB.
    let nested = format!(
        "flow:\n  graph: a\n  defaults:\n{}",
        nested_merge_defaults(8)
    );
    let submits = [
        (
            nested,
            "too_large: merge keys (<<) copy more than 1000000 key/value pairs",
        ),
        (
            merges.clone(),
            "too_large: merge keys (<<) copy more than 1000000 key/value pairs",
        ),
        (
            merges,
            "too_large: merge keys (<<) copy more than 1000000 key/value pairs",
        ),
        (long_key, "invalid_yaml: "),
        (
            "flow: {graph: a}\nversion: 2\n".to_string(),
            "unsupported_version: 2 (only version 1 exists)",
        ),
    ];
    let health = async {
        let mut slowest = std::time::Duration::ZERO;
        for _ in 0..20 {
            let t0 = std::time::Instant::now();
            assert_eq!(app.get("/health").await.status(), 200);
            slowest = slowest.max(t0.elapsed());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        slowest
    };
    let posts = futures::future::join_all(
        submits
            .iter()
            .map(|(yaml, _)| app.post_yaml_form(Some(yaml.as_bytes()), Some("f"), None)),
    );
    let (responses, slowest_health) = tokio::join!(posts, health);
    for (response, (_, want)) in responses.into_iter().zip(&submits) {
        let (status, body) = status_json(response).await;
        assert_eq!(status, 422, "{body}");
        assert!(body["reason"].as_str().unwrap().starts_with(want), "{body}");
    }
    // Not a timing target: a frozen executor would hold /health for seconds.
    assert!(
        slowest_health < std::time::Duration::from_secs(1),
        "{slowest_health:?}"
    );
    assert_eq!(app.queued_jobs().await, 0);
}

#[tokio::test]
async fn exactly_the_limit_is_accepted_one_more_byte_is_413() {
    let app = TestApp::gateway_only().await;
    assert_eq!(app.settings().workflow_yaml_max_bytes, 262_144);
    let at_limit = flow_yaml_of_len(262_144);
    let (status, body) =
        status_json(app.post_yaml_form(Some(&at_limit), Some("f"), None).await).await;
    assert_eq!(status, 200, "{body}");
    let (job, raw) = app.next_job("default").await;
    assert_eq!(job["workflow_yaml_bytes"], json!(262_144));
    assert!(raw.len() > 262_144);

    let over = flow_yaml_of_len(262_145);
    let (status, body) = status_json(app.post_yaml_form(Some(&over), Some("f"), None).await).await;
    assert_eq!(status, 413);
    assert_eq!(body["detail"], json!("workflow too large"));
    assert_eq!(app.store().runs().keys().await.unwrap().len(), 1);
}

#[tokio::test]
async fn large_uploads_are_413_without_being_buffered() {
    let app = TestApp::gateway_only().await;
    // Within the form allowance: read and dropped chunk by chunk.
    let kib300 = flow_yaml_of_len(300 * 1024);
    let (status, body) =
        status_json(app.post_yaml_form(Some(&kib300), Some("f"), None).await).await;
    assert_eq!(
        (status, body["detail"].clone()),
        (413, json!("workflow too large"))
    );
    // Far beyond: the body cap stops reading; the client still gets the answer.
    let mib8 = flow_yaml_of_len(8 * 1024 * 1024);
    let (status, body) = status_json(app.post_yaml_form(Some(&mib8), Some("f"), None).await).await;
    assert_eq!(
        (status, body["detail"].clone()),
        (413, json!("workflow too large"))
    );
    assert!(app.store().runs().keys().await.unwrap().is_empty());
    // The gateway is still fine.
    let (status, _) = status_json(
        app.post_yaml_form(Some(FLOW_YAML.as_bytes()), Some("f"), None)
            .await,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_zero_limit_refuses_every_non_empty_file() {
    let app = TestApp::start_with(AppOptions::gateway_only(), |s| {
        s.workflow_yaml_max_bytes = 0
    })
    .await;
    let (status, _) = status_json(app.post_yaml_form(Some(b"a"), Some("f"), None).await).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn blank_flow_name_is_422_missing_flow_name() {
    let app = TestApp::gateway_only().await;
    let (status, body) = status_json(
        app.post_yaml_form(Some(FLOW_YAML.as_bytes()), Some("  \t"), None)
            .await,
    )
    .await;
    assert_eq!(
        (status, body),
        (422, json!({"detail": "missing flow_name"}))
    );
}

#[tokio::test]
async fn missing_parts_get_pydantic_shaped_422() {
    let app = TestApp::gateway_only().await;
    let missing = |name: &str| json!({"type": "missing", "loc": ["body", name], "msg": "Field required", "input": null});

    let (status, body) = status_json(app.post_yaml_form(None, Some("f"), None).await).await;
    assert_eq!(
        (status, body),
        (422, json!({"detail": [missing("workflow")]}))
    );

    let (status, body) = status_json(
        app.post_yaml_form(Some(FLOW_YAML.as_bytes()), None, None)
            .await,
    )
    .await;
    assert_eq!(
        (status, body),
        (422, json!({"detail": [missing("flow_name")]}))
    );

    // An empty text part counts as absent, like FastAPI.
    let (status, body) = status_json(
        app.post_yaml_form(Some(FLOW_YAML.as_bytes()), Some(""), None)
            .await,
    )
    .await;
    assert_eq!(
        (status, body),
        (422, json!({"detail": [missing("flow_name")]}))
    );

    // Not a form at all.
    let (status, body) = status_json(
        app.post_json("/runs/yaml", &json!({"flow_name": "f"}))
            .await,
    )
    .await;
    assert_eq!(
        (status, body),
        (
            422,
            json!({"detail": [missing("workflow"), missing("flow_name")]})
        )
    );

    // A broken form reads as an empty one (Starlette does the same).
    let response = app
        .http()
        .post(app.url("/runs/yaml"))
        .header("content-type", "multipart/form-data; boundary=xx")
        .body("--xx\r\ngarbage")
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(response).await;
    assert_eq!(
        (status, body),
        (
            422,
            json!({"detail": [missing("workflow"), missing("flow_name")]})
        )
    );
}

#[tokio::test]
async fn checks_run_in_the_0_5_1_order() {
    let app = TestApp::gateway_only().await;
    let too_large = flow_yaml_of_len(262_145);
    // tag before size
    let (status, body) = status_json(
        app.post_yaml_form(Some(&too_large), Some("f"), Some("a.b"))
            .await,
    )
    .await;
    assert_eq!((status, &body["detail"]), (422, &json!("invalid tag")));
    // size before yaml rules
    let mut bad_and_large = b"- not a mapping\n".to_vec();
    bad_and_large.resize(262_145, b' ');
    let (status, _) = status_json(
        app.post_yaml_form(Some(&bad_and_large), Some("f"), None)
            .await,
    )
    .await;
    assert_eq!(status, 413);
    // yaml rules before flow_name
    let (status, body) =
        status_json(app.post_yaml_form(Some(b"- a\n"), Some("  "), None).await).await;
    assert_eq!(
        (status, &body["detail"]),
        (422, &json!("invalid workflow yaml"))
    );
    assert_eq!(body["reason"], Value::from("invalid_yaml_root"));
}

/// Text parts are UTF-8 only (bytes `FF FE …` were read as UTF-16) and `flow_name` has a
/// length limit on both submit paths (a 1 MB name was accepted and the run's snapshot could
/// then not be written).
#[tokio::test]
async fn text_parts_are_utf8_and_flow_names_have_a_limit() {
    let app = TestApp::gateway_only().await;
    let flow = b"flow: {graph: a}\n";
    // FF FE then UTF-16LE "main".
    let utf16 = vec![0xff, 0xfe, b'm', 0, b'a', 0, b'i', 0, b'n', 0];
    let part = reqwest::multipart::Part::bytes(flow.to_vec())
        .file_name("flow.yaml")
        .mime_str("application/x-yaml")
        .unwrap();
    let form = reqwest::multipart::Form::new()
        .part("workflow", part)
        .part("flow_name", reqwest::multipart::Part::bytes(utf16));
    let response = app
        .http()
        .post(app.url("/runs/yaml"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(response).await;
    assert_eq!(
        (status, body),
        (
            422,
            json!({"detail": "invalid form field", "reason": "the flow_name part is not UTF-8 text"})
        )
    );

    let long = "f".repeat(1025);
    let (status, body) = status_json(app.post_yaml_form(Some(flow), Some(&long), None).await).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"], "invalid flow_name");
    assert_eq!(
        body["reason"],
        "flow_name is 1025 bytes; the limit is 1024 bytes"
    );
    let huge = "f".repeat(1 << 20);
    let (status, body) =
        status_json(app.post_json("/runs", &json!({"flow_name": huge})).await).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"], "invalid flow_name");
    // At the limit: accepted.
    let (status, _) = status_json(
        app.post_yaml_form(Some(flow), Some(&"f".repeat(1024)), None)
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(app.queued_jobs().await, 1);
}

/// `POST /runs/yaml` with a `params` part (ours).
async fn post_with_params(app: &TestApp, params: &str) -> (u16, Value) {
    let workflow = reqwest::multipart::Part::bytes(FLOW_YAML.as_bytes().to_vec())
        .file_name("flow.yaml")
        .mime_str("application/x-yaml")
        .unwrap();
    let form = reqwest::multipart::Form::new()
        .part("workflow", workflow)
        .text("flow_name", "main")
        .text("params", params.to_string());
    let response = app
        .http()
        .post(app.url("/runs/yaml"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    status_json(response).await
}

#[tokio::test]
async fn a_params_part_replaces_the_defaults_keys_it_names() {
    let app = TestApp::gateway_only().await;
    let (status, body) = post_with_params(&app, r#"{"x": 5, "extra": [1, "two"]}"#).await;
    assert_eq!(status, 200, "{body}");
    let run_id = body["run_id"].as_str().unwrap();
    let snapshot = app.stored_snapshot(run_id).await;
    assert_eq!(
        Value::Object(snapshot["params"].as_object().unwrap().clone()),
        json!({"x": 5, "debug": true, "extra": [1, "two"]})
    );
    let (job, _) = app.next_job("default").await;
    assert_eq!(job["params"], snapshot["params"]);

    for (params, reason) in [
        ("[1, 2]", "the params part must be a JSON object"),
        ("{\"x\": ", "the params part is not JSON: "),
    ] {
        let (status, body) = post_with_params(&app, params).await;
        assert_eq!(status, 422, "{params}: {body}");
        assert_eq!(body["detail"], "invalid params", "{params}");
        assert!(
            body["reason"].as_str().unwrap().starts_with(reason),
            "{body}"
        );
    }
}

/// `POST /flows/check` with a `workflow` part.
async fn check(app: &TestApp, workflow: &[u8]) -> (u16, Value) {
    let part = reqwest::multipart::Part::bytes(workflow.to_vec()).file_name("flow.yaml");
    let form = reqwest::multipart::Form::new().part("workflow", part);
    let response = app
        .http()
        .post(app.url("/flows/check"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    status_json(response).await
}

#[tokio::test]
async fn flows_check_reads_a_flow_yaml_like_a_submit_and_stores_nothing() {
    let app = TestApp::gateway_only().await;
    let (status, body) = check(&app, FLOW_YAML.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "version": 1,
            "graph": "t1 >> t2\n",
            "defaults": {"x": 1, "debug": true},
            "tasks": {"t1": {"callable": "my_tasks:t1"}, "t2": {"callable": "my_tasks:t2"}},
            "workflow_yaml_sha256": sha256_hex(FLOW_YAML.as_bytes()),
            "workflow_yaml_bytes": FLOW_YAML.len(),
        })
    );
    // The same answers as a submit for a bad document, and nothing was stored or queued.
    let (status, body) = check(&app, b"flow: {graph: a}\nversion: 2\n").await;
    assert_eq!(
        (status, &body["detail"]),
        (422, &json!("invalid workflow yaml"))
    );
    assert_eq!(
        body["reason"],
        "unsupported_version: 2 (only version 1 exists)"
    );
    let (status, body) = check(&app, &flow_yaml_of_len(262_145)).await;
    assert_eq!(
        (status, &body["detail"]),
        (413, &json!("workflow too large"))
    );
    let response = app
        .http()
        .post(app.url("/flows/check"))
        .multipart(reqwest::multipart::Form::new().text("flow_name", "x"))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(response).await;
    assert_eq!(
        (status, &body["detail"][0]["loc"]),
        (422, &json!(["body", "workflow"]))
    );
    assert_eq!(app.get_json("/runs").await, (200, json!([])));
    assert_eq!(app.queued_jobs().await, 0);
}
