//! `pyoco-server-admin` against a real nats-server: 0.5.1's output and exit codes, its quirks
//! fixed, and keys that work with the gateway.

use std::{path::Path, process::Output};

use pyoco_testkit::{status_json, AppOptions, TestApp, TestNats};
use pyoco_wire::ApiKeyRecord;
use serde_json::Value;

const PEPPER: &str = "admin-test-pepper";

/// Run `pyoco-server-admin args` against `nats_url` with the test pepper, from `cwd`.
async fn admin(cwd: &Path, nats_url: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_pyoco-server-admin"))
        .args(["--nats-url", nats_url])
        .args(args)
        .current_dir(cwd)
        .env("PYOCO_LOAD_DOTENV", "0")
        .env("PYOCO_AUTH_PEPPER", PEPPER)
        .env_remove("PYOCO_NATS_URL")
        .output()
        .await
        .unwrap()
}

fn stdout_json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "{text:?}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn create_list_and_revoke_print_what_0_5_1_prints() {
    let nats = TestNats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = nats.url();

    // An empty bucket lists as [] (0.5.1: a NoKeysError traceback).
    let out = admin(dir.path(), &url, &["api-key", "list"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[]\n");

    let out = admin(dir.path(), &url, &["api-key", "create", "--tenant", "acme"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let created = stdout_json(&out);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.starts_with(r#"{"key_id": ""#),
        "json.dumps spacing: {text}"
    );
    let key_id = created["key_id"].as_str().unwrap().to_string();
    let api_key = created["api_key"].as_str().unwrap();
    assert_eq!(
        created.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["key_id", "tenant_id", "api_key", "created_at"]
    );
    assert_eq!(created["tenant_id"], "acme");
    assert!(api_key.starts_with(&format!("pyoco_{key_id}.")));
    assert_eq!(key_id.len(), 24);

    // Stored as 0.5.1 stores it, verifiable with the pepper only.
    let store = pyoco_store::Store::connect(
        &url,
        "test",
        pyoco_store::StoreConfig::default(),
        pyoco_store::DEFAULT_CONNECT_TIMEOUT,
    )
    .await
    .unwrap();
    let entry = store
        .auth()
        .get(&format!("api_keys.{key_id}"))
        .await
        .unwrap()
        .expect("the record is stored");
    let record = ApiKeyRecord::from_json(&entry.value).unwrap();
    assert_eq!(record.iterations, 200_000);
    assert_eq!(record.kdf, "pbkdf2_hmac_sha256");
    let secret = api_key.split_once('.').unwrap().1;
    assert!(record.verifies(secret, PEPPER));
    assert!(!record.verifies(secret, ""));
    assert!(
        !String::from_utf8_lossy(&entry.value).contains(secret),
        "the plain secret is never stored"
    );

    let second =
        stdout_json(&admin(dir.path(), &url, &["api-key", "create", "--tenant", "beta"]).await);
    let listed = stdout_json(&admin(dir.path(), &url, &["api-key", "list"]).await);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["key_id"], second["key_id"], "newest first");
    assert_eq!(
        listed[1].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["key_id", "tenant_id", "created_at", "revoked_at"]
    );
    assert_eq!(listed[1]["revoked_at"], Value::Null);

    let out = admin(
        dir.path(),
        &url,
        &["api-key", "revoke", "--key-id", &key_id],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let revoked = stdout_json(&out);
    let revoked_at = revoked["revoked_at"].as_f64().unwrap();
    assert_eq!(revoked["key_id"], key_id.as_str());
    // Revoking again keeps the first time.
    let again = stdout_json(
        &admin(
            dir.path(),
            &url,
            &["api-key", "revoke", "--key-id", &key_id],
        )
        .await,
    );
    assert_eq!(again["revoked_at"].as_f64().unwrap(), revoked_at);
    let listed = stdout_json(&admin(dir.path(), &url, &["api-key", "list"]).await);
    assert_eq!(listed[1]["revoked_at"].as_f64().unwrap(), revoked_at);

    // Unknown key: 0.5.1's answer and exit code 2.
    for unknown in ["0123456789abcdef01234567", "not a key*"] {
        let out = admin(
            dir.path(),
            &url,
            &["api-key", "revoke", "--key-id", unknown],
        )
        .await;
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{{\"error\": \"not_found\", \"key_id\": \"{unknown}\"}}\n")
        );
    }
}

#[tokio::test]
async fn mistakes_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    // An invalid tenant: exit 2 with the rule, before any connection (port 1: nothing there).
    let out = admin(
        dir.path(),
        "nats://127.0.0.1:1",
        &["api-key", "create", "--tenant", "no spaces"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("invalid tenant \"no spaces\"")
            && stderr(&out).contains("1 to 64 of A-Z"),
        "{}",
        stderr(&out)
    );
    // No NATS: exit 1, one line saying what to do.
    let out = admin(dir.path(), "nats://127.0.0.1:1", &["api-key", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--nats-url") && !stderr(&out).contains("panicked"),
        "{}",
        stderr(&out)
    );
    // A missing argument: clap's usage, exit 2.
    let out = admin(dir.path(), "nats://127.0.0.1:1", &["api-key", "revoke"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--key-id"), "{}", stderr(&out));
}

#[tokio::test]
async fn a_created_key_works_on_the_gateway_until_revoked() {
    let app = TestApp::start_with(AppOptions::gateway_only(), |settings| {
        settings.http_auth_mode = pyoco_config::AuthMode::ApiKey;
        settings.auth_pepper = Some(PEPPER.into());
    })
    .await;
    let url = app.nats_url();
    let created =
        stdout_json(&admin(app.dir(), &url, &["api-key", "create", "--tenant", "acme"]).await);
    let key = created["api_key"].as_str().unwrap();
    let http = reqwest::Client::new();
    let get_runs = || async {
        let response = http
            .get(app.url("/runs"))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap();
        status_json(response).await.0
    };
    assert_eq!(get_runs().await, 200);
    let key_id = created["key_id"].as_str().unwrap();
    let out = admin(app.dir(), &url, &["api-key", "revoke", "--key-id", key_id]).await;
    assert!(out.status.success());
    pyoco_testkit::eventually(
        std::time::Duration::from_secs(1),
        "the revoked key to be refused",
        || async { (get_runs().await == 403).then_some(()) },
    )
    .await;
}

/// `pyoco-client` against a gateway with auth on: `--api-key` or `PYOCO_API_KEY` gets in, no
/// key is a 401 that says what to pass.
#[tokio::test]
async fn the_client_passes_its_key_and_says_what_to_do_without_one() {
    let app = TestApp::start_with(AppOptions::gateway_only(), |settings| {
        settings.http_auth_mode = pyoco_config::AuthMode::ApiKey;
        settings.auth_pepper = Some(PEPPER.into());
    })
    .await;
    let created = stdout_json(
        &admin(
            app.dir(),
            &app.nats_url(),
            &["api-key", "create", "--tenant", "acme"],
        )
        .await,
    );
    let key = created["api_key"].as_str().unwrap();
    let client = |key_flag: Option<&str>, key_env: Option<&str>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pyoco-client"));
        cmd.args(["--server", app.base_url()]);
        if let Some(key) = key_flag {
            cmd.args(["--api-key", key]);
        }
        cmd.arg("list")
            .env_remove("PYOCO_API_KEY")
            .env_remove("PYOCO_SERVER_URL");
        if let Some(key) = key_env {
            cmd.env("PYOCO_API_KEY", key);
        }
        async move { cmd.output().await.unwrap() }
    };
    for (flag, env) in [(Some(key), None), (None, Some(key))] {
        let out = client(flag, env).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "[]\n");
    }
    let out = client(None, None).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("HTTP 401") && err.contains("--api-key") && err.contains("PYOCO_API_KEY"),
        "{err}"
    );
}
