//! Connecting to nats-servers configured like production ones — a cluster's URL list, TLS with
//! client certificates, the TLS handshake first, tokens, users, nkeys — and the errors that say
//! which setting to look at when it fails.

use std::time::Duration;

use pyoco_store::{NatsConnect, Store, StoreConfig};
use pyoco_testkit::secure_nats::{tls_block, write_file, ConfiguredNats, TestCerts};

const T: Duration = Duration::from_secs(10);

async fn connect(target: &NatsConnect) -> Result<Store, String> {
    Store::connect_with(target, "pyoco-secure-test", StoreConfig::default(), T)
        .await
        .map_err(|e| e.to_string())
}

/// Connected, and JetStream works through the connection (the resources were created).
async fn assert_works(target: &NatsConnect) {
    let store = connect(target)
        .await
        .unwrap_or_else(|e| panic!("{target:?}: {e}"));
    store.dlq_state().await.expect("a JetStream request");
}

async fn refused(target: &NatsConnect, timeout: Duration) -> String {
    match Store::connect_with(target, "pyoco-secure-test", StoreConfig::default(), timeout).await {
        Ok(_) => panic!("{target:?} connected"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_comma_separated_list_connects_past_a_dead_server() {
    let nats = ConfiguredNats::start("");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    // 0.5.1's documented form; before, "failed to parse server or server list".
    let target = NatsConnect::url(format!(
        "nats://127.0.0.1:{dead_port}, {}",
        nats.url("nats")
    ));
    assert_works(&target).await;
    // Nothing reachable: the error names the URLs and the setting.
    let text = refused(
        &NatsConnect::url(format!("nats://127.0.0.1:{dead_port}")),
        Duration::from_millis(600),
    )
    .await;
    assert!(
        text.contains("cannot reach NATS at nats://127.0.0.1:")
            && text.contains("check PYOCO_NATS_URL"),
        "{text}"
    );
}

#[tokio::test]
async fn tokens_users_and_nkeys_authenticate_and_a_refusal_names_the_settings() {
    let nats = ConfiguredNats::start("authorization { token: \"s3cret-token\" }");
    let url = nats.url("nats");
    assert_works(&NatsConnect {
        token: Some("s3cret-token".into()),
        ..NatsConnect::url(&url)
    })
    .await;
    let text = refused(
        &NatsConnect {
            token: Some("wrong".into()),
            ..NatsConnect::url(&url)
        },
        Duration::from_secs(1),
    )
    .await;
    assert!(
        text.contains("refused the credentials") && text.contains("check PYOCO_NATS_TOKEN"),
        "{text}"
    );
    assert!(!text.contains("wrong"), "no secret in errors: {text}");
    let text = refused(&NatsConnect::url(&url), Duration::from_secs(1)).await;
    assert!(text.contains("none are set"), "{text}");

    let user = nkeys::KeyPair::new_user();
    let nats = ConfiguredNats::start(&format!(
        "authorization {{ users: [ {{ user: \"app\", password: \"pw-1\" }}, {{ nkey: {} }} ] }}",
        user.public_key()
    ));
    let url = nats.url("nats");
    assert_works(&NatsConnect {
        user: Some("app".into()),
        password: Some("pw-1".into()),
        ..NatsConnect::url(&url)
    })
    .await;
    // A user:password in the URL (as 0.5.1's nats-py takes it).
    assert_works(&NatsConnect::url(format!(
        "nats://app:pw-1@127.0.0.1:{}",
        nats.port()
    )))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let seed = write_file(
        dir.path(),
        "user.nk",
        &format!("# user nkey\n{}\n", user.seed().unwrap()),
    );
    assert_works(&NatsConnect {
        nkey_seed_file: Some(seed),
        ..NatsConnect::url(&url)
    })
    .await;
    let other = write_file(
        dir.path(),
        "other.nk",
        &nkeys::KeyPair::new_user().seed().unwrap(),
    );
    let text = refused(
        &NatsConnect {
            nkey_seed_file: Some(other),
            ..NatsConnect::url(&url)
        },
        Duration::from_secs(1),
    )
    .await;
    assert!(text.contains("check PYOCO_NATS_NKEY_SEED_FILE"), "{text}");
    // A credentials file that is not one: the setting, at once.
    let creds = write_file(dir.path(), "bad.creds", "not a creds file\n");
    let started = std::time::Instant::now();
    let text = refused(
        &NatsConnect {
            creds_file: Some(creds),
            ..NatsConnect::url(&url)
        },
        T,
    )
    .await;
    assert!(text.contains("PYOCO_NATS_CREDS_FILE="), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no retries for a bad file"
    );
}

#[tokio::test]
async fn tls_with_client_certificates_connects_and_each_missing_piece_is_named() {
    let certs = TestCerts::generate();
    let nats = ConfiguredNats::start(&tls_block(&certs, "verify: true"));
    let full = NatsConnect {
        tls_ca_file: Some(certs.ca()),
        tls_cert_file: Some(certs.client_cert()),
        tls_key_file: Some(certs.client_key()),
        ..NatsConnect::url(nats.url("tls"))
    };
    assert_works(&full).await;
    // nats:// with the TLS settings upgrades too (the server requires TLS).
    assert_works(&full.with_url(nats.url("nats"))).await;

    // Without the CA: the system's roots do not know our CA.
    let text = refused(
        &NatsConnect {
            tls_ca_file: None,
            ..full.clone()
        },
        Duration::from_secs(1),
    )
    .await;
    assert!(
        text.contains("TLS handshake")
            && text.contains("PYOCO_NATS_TLS_CA_FILE")
            && text.contains("system's roots"),
        "{text}"
    );
    // Without the client certificate: the server refuses the handshake.
    let text = refused(
        &NatsConnect {
            tls_cert_file: None,
            tls_key_file: None,
            ..full.clone()
        },
        Duration::from_secs(1),
    )
    .await;
    assert!(text.contains("PYOCO_NATS_TLS_CERT_FILE"), "{text}");
}

#[tokio::test]
async fn tls_first_servers_need_tls_first_and_the_timeout_says_so() {
    let certs = TestCerts::generate();
    let nats = ConfiguredNats::start(&tls_block(&certs, "handshake_first: true"));
    let target = NatsConnect {
        tls_ca_file: Some(certs.ca()),
        tls_first: true,
        ..NatsConnect::url(nats.url("tls"))
    };
    assert_works(&target).await;
    let text = refused(
        &NatsConnect {
            tls_first: false,
            ..target.clone()
        },
        Duration::from_millis(2500),
    )
    .await;
    assert!(text.contains("PYOCO_NATS_TLS_FIRST"), "{text}");
}
