//! A port can be taken between the moment we choose or check it and the moment nats-server binds
//! it. A fake nats-server that reports "address already in use" stands in for that race.

#![cfg(unix)]

mod common;

use std::path::Path;

use common::{nats_bin, test_config, write_script};
use pyoco_natsd::{NatsSupervisor, NatsdError};

/// A script that records the `-p` port it was given, then fails like nats-server does when that
/// port is taken — every time, or only the first time (then it runs the real server).
fn port_stealing_server(dir: &Path, always: bool) -> std::path::PathBuf {
    let script = dir.join("port-stealing-nats-server");
    let marker = dir.join("failed-once");
    let ports = dir.join("ports");
    let fail_when = if always {
        "true".to_owned()
    } else {
        format!("[ ! -e '{}' ]", marker.display())
    };
    write_script(
        &script,
        &format!(
            "#!/bin/sh\n\
             port=''; prev=''\n\
             for a in \"$@\"; do [ \"$prev\" = -p ] && port=\"$a\"; prev=\"$a\"; done\n\
             echo \"$port\" >> '{ports}'\n\
             if {fail_when}; then\n\
               touch '{marker}'\n\
               echo \"[0] [FTL] Error listening on port: 127.0.0.1:$port, \\\"listen tcp 127.0.0.1:$port: bind: address already in use\\\"\" >&2\n\
               exit 1\n\
             fi\n\
             exec '{real}' \"$@\"\n",
            ports = ports.display(),
            marker = marker.display(),
            real = nats_bin().display(),
        ),
    );
    script
}

fn recorded_ports(dir: &Path) -> Vec<u16> {
    std::fs::read_to_string(dir.join("ports"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn a_free_port_taken_meanwhile_is_replaced_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.binary = port_stealing_server(dir.path(), false);

    let nats = NatsSupervisor::start(config)
        .await
        .expect("second port works");

    let ports = recorded_ports(dir.path());
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert_ne!(ports[0], ports[1]);
    assert_eq!(nats.port(), ports[1]);
    nats.stop().await;
}

#[tokio::test]
async fn a_requested_port_taken_after_the_check_is_reported_as_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = test_config(dir.path());
    config.binary = port_stealing_server(dir.path(), true);
    config.port = Some(port);

    let err = NatsSupervisor::start(config).await.unwrap_err();
    assert!(
        matches!(&err, NatsdError::PortInUse { port: p, .. } if *p == port),
        "{err:?}"
    );
    assert_eq!(
        recorded_ports(dir.path()),
        [port],
        "no retry on another port"
    );
}

#[tokio::test]
async fn free_ports_that_keep_being_taken_end_in_an_error_with_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.binary = port_stealing_server(dir.path(), true);

    let err = NatsSupervisor::start(config).await.unwrap_err();
    assert!(
        matches!(&err, NatsdError::ExitedDuringStartup { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("address already in use"), "{err}");
    assert_eq!(recorded_ports(dir.path()).len(), 3, "three tries");
}
