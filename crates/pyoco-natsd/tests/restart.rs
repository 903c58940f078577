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

/// A wrapper in front of the real nats-server that counts its invocations in `counter`, and on
/// the invocations listed in `kill_on` (1-based; `None`: all) SIGKILLs itself before `exec`.
fn self_killing_server(dir: &std::path::Path, kill_on: Option<u32>) -> std::path::PathBuf {
    let counter = dir.join("invocations");
    let script = dir.join("self-killing-nats-server");
    let condition = match kill_on {
        Some(n) => format!("[ \"$n\" -eq {n} ]"),
        None => "true".to_owned(),
    };
    write_script(
        &script,
        &format!(
            "#!/bin/sh\n\
             n=$(( $(cat '{counter}' 2>/dev/null || echo 0) + 1 ))\n\
             echo \"$n\" > '{counter}'\n\
             if {condition}; then\n\
               echo \"[0] [INF] invocation $n: killing myself\" >&2\n\
               kill -9 $$\n\
             fi\n\
             exec '{real}' \"$@\"\n",
            counter = counter.display(),
            real = nats_bin().display(),
        ),
    );
    script
}

fn invocations(dir: &std::path::Path) -> u32 {
    std::fs::read_to_string(dir.join("invocations"))
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_server_killed_by_a_signal_during_startup_is_restarted_and_start_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.binary = self_killing_server(dir.path(), Some(1));
    // The default restart policy: 250 ms before the first attempt.

    let nats = within(
        Duration::from_secs(20),
        "start",
        NatsSupervisor::start(config),
    )
    .await
    .expect("a server killed while starting is restarted, not a start-up error");
    assert_eq!(
        invocations(dir.path()),
        2,
        "killed once, started again once"
    );
    assert!(
        matches!(nats.current_state(), NatsState::Running { .. }),
        "{:?}",
        nats.current_state()
    );
    assert!(nats.pid().is_some());

    // JetStream answers on the restarted server.
    let js = jetstream::new(async_nats::connect(nats.client_url()).await.unwrap());
    js.create_stream(stream::Config {
        name: "AFTER_RESTART".into(),
        subjects: vec!["after.>".into()],
        ..Default::default()
    })
    .await
    .expect("JetStream answers");
    nats.stop().await;
}

#[tokio::test]
async fn a_server_killed_during_every_startup_gives_up_after_the_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.binary = self_killing_server(dir.path(), None);
    config.restart = RestartPolicy::new(2, Duration::from_millis(20), Duration::from_millis(50));

    let err = within(
        Duration::from_secs(20),
        "start",
        NatsSupervisor::start(config),
    )
    .await
    .unwrap_err();
    match &err {
        NatsdError::RestartsExhausted {
            attempts,
            last_exit,
            last_logs,
        } => {
            assert_eq!(*attempts, 2);
            assert!(
                last_exit.contains("killed during startup") && last_exit.contains("SIGKILL"),
                "{last_exit}"
            );
            assert!(
                last_logs.iter().any(|l| l.contains("killing myself")),
                "{last_logs:?}"
            );
        }
        other => panic!("unexpected error: {other:?}"),
    }
    assert_eq!(
        invocations(dir.path()),
        3,
        "the first start and two restarts"
    );
}

#[tokio::test]
async fn a_server_that_exits_with_a_bad_option_during_startup_is_not_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad-option.conf");
    std::fs::write(&conf, "no_such_option: 1\n").unwrap();
    let mut config = test_config(dir.path());
    // Counts invocations; never kills itself.
    config.binary = self_killing_server(dir.path(), Some(0));
    config.extra_args = vec!["-c".into(), conf.into()];
    // The default restart policy: it must not be used for an exit of the server's own.

    let err = within(
        Duration::from_secs(20),
        "start",
        NatsSupervisor::start(config),
    )
    .await
    .unwrap_err();
    let NatsdError::ExitedDuringStartup { status, last_logs } = &err else {
        panic!("unexpected error: {err:?}");
    };
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(
        last_logs
            .iter()
            .any(|l| l.contains("unknown field \"no_such_option\"")),
        "{last_logs:?}"
    );
    let text = err.to_string();
    assert!(text.contains("exited during startup"), "{text}");
    assert!(text.contains("no_such_option"), "{text}");
    assert_eq!(invocations(dir.path()), 1, "no restart");
}
