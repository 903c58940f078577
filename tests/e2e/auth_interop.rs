//! API keys across implementations (contract §2.6, §9): a key made by Python 0.5.1's
//! `pyoco-server-admin` works on our gateway and one made by ours on Python's gateway, with the
//! same pepper; a revocation by either admin is seen by both gateways.

use std::{ffi::OsStr, time::Duration};

use pyoco_testkit::{
    eventually, python_admin, status_json, workspace_binary, AppOptions, PythonGateway, TestApp,
};
use serde_json::Value;

const PEPPER: &str = "interop-pepper";

/// Our `pyoco-server-admin` with the pepper: its JSON output and exit code.
fn our_admin(nats_url: &str, args: &[&str]) -> (Value, i32) {
    let bin = workspace_binary("pyoco-server-admin")
        .expect("pyoco-server-admin is built (cargo build -p pyoco-cli)");
    let out = std::process::Command::new(bin)
        .arg("--nats-url")
        .arg(nats_url)
        .args(args)
        .env("PYOCO_LOAD_DOTENV", "0")
        .env("PYOCO_AUTH_PEPPER", PEPPER)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "our admin {args:?}: no JSON ({e}): {stdout:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (value, out.status.code().unwrap_or(-1))
}

/// The status of `GET /runs/<a run nobody has>` with `key`: 404 `run not found` once the key
/// is accepted (0.5.1's `GET /runs` answers 503 on an empty bucket, §14-4), 401/403 when not.
async fn status_with_key(base_url: &str, key: &str) -> u16 {
    let response = reqwest::Client::new()
        .get(format!(
            "{base_url}/runs/00000000-0000-4000-8000-000000000000"
        ))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(response).await;
    match status {
        404 => assert_eq!(body["detail"], "run not found"),
        403 => assert_eq!(body["detail"], "invalid api key"),
        _ => panic!("{base_url}: {status} {body}"),
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_revocations_work_across_implementations() {
    let app = TestApp::start_with(AppOptions::gateway_only(), |settings| {
        settings.http_auth_mode = pyoco_config::AuthMode::ApiKey;
        settings.auth_pepper = Some(PEPPER.into());
    })
    .await;
    let nats_url = app.nats_url();
    let python = PythonGateway::start_with_env(
        &nats_url,
        app.dir(),
        &[
            ("PYOCO_HTTP_AUTH_MODE", OsStr::new("api_key")),
            ("PYOCO_AUTH_PEPPER", OsStr::new(PEPPER)),
        ],
    )
    .await;
    let ours = app.base_url().to_string();
    let theirs = python.base_url().to_string();
    let py_env = [("PYOCO_AUTH_PEPPER", PEPPER)];

    let (py_key, code) = python_admin(&nats_url, &["api-key", "create", "--tenant", "py"], &py_env);
    assert_eq!(code, 0);
    let (our_key, code) = our_admin(&nats_url, &["api-key", "create", "--tenant", "rs"]);
    assert_eq!(code, 0);
    let py_plain = py_key["api_key"].as_str().unwrap();
    let our_plain = our_key["api_key"].as_str().unwrap();

    for base in [&ours, &theirs] {
        assert_eq!(
            status_with_key(base, py_plain).await,
            404,
            "{base}: Python's key"
        );
        assert_eq!(
            status_with_key(base, our_plain).await,
            404,
            "{base}: our key"
        );
    }
    // Both admins list both keys.
    let (py_list, _) = python_admin(&nats_url, &["api-key", "list"], &py_env);
    let (our_list, _) = our_admin(&nats_url, &["api-key", "list"]);
    assert_eq!(py_list, our_list);
    assert_eq!(
        our_list.as_array().unwrap().len(),
        2 + 1,
        "and the test kit's key"
    );

    // Python revokes ours; we revoke Python's: both gateways refuse both within a second.
    let (answer, code) = python_admin(
        &nats_url,
        &[
            "api-key",
            "revoke",
            "--key-id",
            our_key["key_id"].as_str().unwrap(),
        ],
        &py_env,
    );
    assert_eq!(code, 0, "{answer}");
    let (answer, code) = our_admin(
        &nats_url,
        &[
            "api-key",
            "revoke",
            "--key-id",
            py_key["key_id"].as_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{answer}");
    for base in [&ours, &theirs] {
        for key in [py_plain, our_plain] {
            eventually(
                Duration::from_secs(1),
                "the revoked key refused",
                || async { (status_with_key(base, key).await == 403).then_some(()) },
            )
            .await;
        }
    }
}
