//! Every way of failing to find or start nats-server says what went wrong and what to do.

#![cfg(unix)]

mod common;

use std::ffi::OsString;
use std::time::Duration;

use common::{nats_bin, test_config, write_script};
use pyoco_natsd::{
    find_nats_server_in, nats_server_version, NatsSupervisor, NatsdError, RestartPolicy,
};

#[test]
fn a_missing_explicit_binary_is_named() {
    let err =
        find_nats_server_in(Some("/nonexistent/nats-server".as_ref()), None, None).unwrap_err();
    assert!(
        matches!(err, NatsdError::ExplicitBinaryNotFound { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("/nonexistent/nats-server"), "{text}");
    assert!(text.contains("PYOCO_NATS_SERVER_BIN"), "{text}");
}

#[test]
fn no_binary_anywhere_says_how_to_install_one() {
    let dir = tempfile::tempdir().unwrap();
    let empty_path = OsString::from(dir.path().join("empty-bin"));
    let err = find_nats_server_in(None, Some(dir.path()), Some(&empty_path)).unwrap_err();
    assert!(matches!(err, NatsdError::BinaryNotFound { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("sudo bash scripts/setup.sh"), "{text}");
    assert!(
        text.contains("PYOCO_NATS_SERVER_BIN=/path/to/nats-server"),
        "{text}"
    );
    assert!(
        text.contains(&dir.path().join("bin/nats-server").display().to_string()),
        "names where it looked: {text}"
    );
}

#[test]
fn a_non_executable_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nats-server");
    std::fs::write(&file, "not a program").unwrap();
    let err = find_nats_server_in(Some(&file), None, None).unwrap_err();
    assert!(
        matches!(err, NatsdError::BinaryNotExecutable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("chmod +x"));
}

#[test]
fn the_data_dir_binary_wins_over_path() {
    let data = tempfile::tempdir().unwrap();
    let on_path = tempfile::tempdir().unwrap();
    std::fs::create_dir(data.path().join("bin")).unwrap();
    write_script(&data.path().join("bin/nats-server"), "#!/bin/sh\n");
    write_script(&on_path.path().join("nats-server"), "#!/bin/sh\n");
    let path_var = OsString::from(on_path.path());

    let found = find_nats_server_in(None, Some(data.path()), Some(&path_var)).unwrap();
    assert_eq!(found, data.path().join("bin/nats-server"));
    // Without one in the data dir, PATH is used.
    let found = find_nats_server_in(None, Some(on_path.path()), Some(&path_var)).unwrap();
    assert_eq!(found, on_path.path().join("nats-server"));
    // An explicit path wins over both.
    let explicit = nats_bin();
    let found = find_nats_server_in(Some(&explicit), Some(data.path()), Some(&path_var)).unwrap();
    assert_eq!(found, explicit);
}

#[test]
fn the_version_is_read_from_the_binary() {
    let version = nats_server_version(&nats_bin()).unwrap();
    assert!(version.major >= 2, "{version:?}");
    assert!(version.text.starts_with('v'), "{version:?}");

    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("not-nats");
    write_script(&fake, "#!/bin/sh\necho hello\n");
    let err = nats_server_version(&fake).unwrap_err();
    assert!(matches!(err, NatsdError::Version { .. }), "{err:?}");
}

#[tokio::test]
async fn a_port_in_use_is_reported_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut config = test_config(dir.path());
    config.port = Some(port);

    let err = NatsSupervisor::start(config).await.unwrap_err();
    assert!(
        matches!(&err, NatsdError::PortInUse { port: p, .. } if *p == port),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("port {port} on 127.0.0.1 is already in use")),
        "{text}"
    );
    assert!(
        text.contains(&format!("--nats-url nats://127.0.0.1:{port}")),
        "{text}"
    );
    assert!(
        text.contains("PYOCO_NATS_CLIENT_PORT, 0 = any free port"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unwritable_store_dir_is_named() {
    // We may run as root, which can write anywhere: a path under a regular file cannot exist.
    let file = tempfile::NamedTempFile::new().unwrap();
    let store = file.path().join("store");
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.store_dir = store.clone();

    let err = NatsSupervisor::start(config).await.unwrap_err();
    assert!(
        matches!(&err, NatsdError::StoreDirNotWritable { path, .. } if *path == store),
        "{err:?}"
    );
    assert!(err.to_string().contains(&store.display().to_string()));
}

#[tokio::test]
async fn a_server_that_exits_during_startup_shows_its_last_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let bad_conf = dir.path().join("bad.conf");
    std::fs::write(&bad_conf, "listen: {{{ broken\n").unwrap();
    let mut config = test_config(dir.path());
    config.extra_args = vec!["-c".into(), bad_conf.into()];

    let err = NatsSupervisor::start(config).await.unwrap_err();
    let NatsdError::ExitedDuringStartup { status, last_logs } = &err else {
        panic!("unexpected error: {err:?}");
    };
    assert!(!status.success());
    assert!(
        last_logs.iter().any(|l| l.contains("Parse error")),
        "{last_logs:?}"
    );
    let text = err.to_string();
    assert!(text.contains("exited during startup"), "{text}");
    assert!(text.contains("Parse error"), "{text}");
}

#[tokio::test]
async fn a_server_that_never_becomes_ready_times_out_with_its_logs() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("silent-nats-server");
    write_script(
        &fake,
        "#!/bin/sh\necho '[1] [INF] pretending to start'\nexec sleep 30\n",
    );
    let mut config = test_config(dir.path());
    config.binary = fake;
    config.startup_timeout = Duration::from_millis(500);
    config.restart = RestartPolicy::never();

    let err = NatsSupervisor::start(config).await.unwrap_err();
    let NatsdError::StartupTimeout { after, last_logs } = &err else {
        panic!("unexpected error: {err:?}");
    };
    assert_eq!(*after, Duration::from_millis(500));
    assert_eq!(last_logs, &["[1] [INF] pretending to start"]);
    assert!(err.to_string().contains("pretending to start"));
}

#[tokio::test]
async fn a_binary_that_cannot_be_executed_fails_to_spawn() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.binary = dir.path().join("does-not-exist");
    let err = NatsSupervisor::start(config).await.unwrap_err();
    assert!(matches!(err, NatsdError::Spawn { .. }), "{err:?}");
    assert!(err.to_string().contains("does-not-exist"));
}
