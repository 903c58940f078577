//! A nats-server that dies is restarted on the same port and store dir, within limits.

#![cfg(unix)]

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use common::{nats_bin, signal, test_config, within, write_script};
use nix::sys::signal::Signal;
use pyoco_natsd::{NatsState, NatsSupervisor, NatsdError, RestartPolicy};

#[tokio::test]
async fn a_killed_server_is_restarted_on_the_same_port_without_losing_messages() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsSupervisor::start(test_config(dir.path()))
        .await
        .unwrap();
    let old_pid = nats.pid().unwrap();
    let port = nats.port();

    let js = jetstream::new(async_nats::connect(nats.client_url()).await.unwrap());
    js.create_stream(stream::Config {
        name: "KEEP".into(),
        subjects: vec!["keep.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("keep.1", "precious".into())
        .await
        .unwrap()
        .await
        .expect("publish acknowledged");

    let mut state = nats.state();
    signal(old_pid, Signal::SIGKILL);

    let restarting = within(
        Duration::from_secs(5),
        "state Restarting",
        state.wait_for(|s| matches!(s, NatsState::Restarting { .. })),
    )
    .await
    .unwrap()
    .clone();
    match restarting {
        NatsState::Restarting {
            attempt, last_exit, ..
        } => {
            assert_eq!(attempt, 1);
            assert!(
                last_exit.contains("SIGKILL") || last_exit.contains("signal: 9"),
                "{last_exit}"
            );
        }
        _ => unreachable!(),
    }
    let new_pid = match within(
        Duration::from_secs(10),
        "state Running again",
        state.wait_for(|s| matches!(s, NatsState::Running { .. })),
    )
    .await
    .unwrap()
    .clone()
    {
        NatsState::Running { pid, .. } => pid,
        _ => unreachable!(),
    };
    assert_ne!(new_pid, old_pid);
    assert_eq!(nats.pid(), Some(new_pid));
    assert_eq!(nats.port(), port);

    let js = jetstream::new(async_nats::connect(nats.client_url()).await.unwrap());
    let mut kept = js.get_stream("KEEP").await.expect("stream survived");
    assert_eq!(kept.info().await.unwrap().state.messages, 1);
    let message = kept.get_raw_message(1).await.unwrap();
    assert_eq!(message.payload.as_ref(), b"precious");
    nats.stop().await;
}

#[tokio::test]
async fn restarts_give_up_after_the_attempts_and_report_failed_with_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    // Runs the real server the first time, then fails like a broken install would.
    let marker = dir.path().join("started-once");
    let fake = dir.path().join("flaky-nats-server");
    write_script(
        &fake,
        &format!(
            "#!/bin/sh\n\
             if [ -e '{marker}' ]; then\n\
               echo '[0] [FTL] flaky-nats-server refuses to start again' >&2\n\
               exit 7\n\
             fi\n\
             touch '{marker}'\n\
             exec '{real}' \"$@\"\n",
            marker = marker.display(),
            real = nats_bin().display(),
        ),
    );
    let mut config = test_config(dir.path());
    config.binary = fake;
    config.restart = RestartPolicy::new(2, Duration::from_millis(20), Duration::from_millis(50));
    let nats = NatsSupervisor::start(config)
        .await
        .expect("first start works");
    let pid = nats.pid().unwrap();

    // Record every state the supervisor goes through.
    let mut state = nats.state();
    let seen = tokio::spawn(async move {
        let mut seen = Vec::new();
        while state.changed().await.is_ok() {
            let now = state.borrow_and_update().clone();
            let last = now.is_final();
            seen.push(now);
            if last {
                break;
            }
        }
        seen
    });
    signal(pid, Signal::SIGKILL);
    let seen = within(Duration::from_secs(5), "state Failed", seen)
        .await
        .unwrap();

    let attempts: Vec<u32> = seen
        .iter()
        .filter_map(|s| match s {
            NatsState::Restarting { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [1, 2], "{seen:?}");
    let Some(NatsState::Failed { error }) = seen.last() else {
        panic!("did not end Failed: {seen:?}");
    };
    match &**error {
        NatsdError::RestartsExhausted {
            attempts,
            last_exit,
            last_logs,
        } => {
            assert_eq!(*attempts, 2);
            assert!(last_exit.contains("exit status: 7"), "{last_exit}");
            assert!(
                last_logs
                    .iter()
                    .any(|l| l.contains("refuses to start again")),
                "{last_logs:?}"
            );
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(error.to_string().contains("refuses to start again"));
    assert_eq!(nats.pid(), None);
    // Stopping a failed supervisor returns at once and keeps the failure visible.
    within(
        Duration::from_secs(1),
        "stop after failure",
        nats.shutdown(),
    )
    .await;
    assert!(matches!(nats.current_state(), NatsState::Failed { .. }));
}

#[tokio::test]
async fn a_never_restart_policy_fails_on_the_first_exit() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.restart = RestartPolicy::never();
    let nats = NatsSupervisor::start(config).await.unwrap();
    let mut state = nats.state();
    signal(nats.pid().unwrap(), Signal::SIGKILL);
    let end = within(
        Duration::from_secs(5),
        "a final state",
        state.wait_for(NatsState::is_final),
    )
    .await
    .unwrap()
    .clone();
    assert!(
        matches!(&end, NatsState::Failed { error } if matches!(**error, NatsdError::RestartsExhausted { attempts: 0, .. })),
        "{end:?}"
    );
}
