//! Start, use, stop and drop a supervised nats-server.

#![cfg(unix)]

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use common::{eventually, is_alive, pid_exists, signal, test_config, within};
use nix::sys::signal::Signal;
use pyoco_natsd::{LogLevel, NatsState, NatsSupervisor, NatsdError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn starts_with_jetstream_answering_on_a_free_port() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.monitor_port = Some(0);
    let nats = NatsSupervisor::start(config).await.expect("start");

    assert_ne!(nats.port(), 0);
    assert_eq!(
        nats.client_url(),
        format!("nats://127.0.0.1:{}", nats.port())
    );
    let pid = nats.pid().expect("running");
    assert!(is_alive(pid));
    assert!(matches!(nats.current_state(), NatsState::Running { pid: p, .. } if p == pid));
    assert_eq!(nats.store_dir(), dir.path().join("store"));

    let client = async_nats::connect(nats.client_url()).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create stream");
    let ack = js
        .publish("orders.1", "one".into())
        .await
        .unwrap()
        .await
        .expect("publish acknowledged");
    assert_eq!(ack.stream, "ORDERS");
    assert!(
        dir.path().join("store/jetstream").is_dir(),
        "the file store lives in the store dir"
    );

    // The monitoring endpoint answers too.
    let monitor = nats.monitor_port().expect("monitoring on");
    let mut http = tokio::net::TcpStream::connect(("127.0.0.1", monitor))
        .await
        .unwrap();
    http.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    http.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");

    // Its output was captured, with levels.
    let logs = nats.recent_logs();
    assert!(
        logs.iter()
            .any(|l| l.level == LogLevel::Info && l.text.contains("Server is ready")),
        "{logs:?}"
    );
    nats.stop().await;
}

#[tokio::test]
async fn stop_leaves_no_process_and_reports_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsSupervisor::start(test_config(dir.path()))
        .await
        .unwrap();
    let pid = nats.pid().unwrap();
    let port = nats.port();
    let state = nats.state();

    nats.stop().await;

    assert!(
        !pid_exists(pid),
        "nats-server {pid} still exists after stop"
    );
    assert!(matches!(*state.borrow(), NatsState::Stopped));
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "port {port} was released"
    );
}

#[tokio::test]
async fn shutdown_through_a_shared_handle_stops_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let nats = std::sync::Arc::new(
        NatsSupervisor::start(test_config(dir.path()))
            .await
            .unwrap(),
    );
    let pid = nats.pid().unwrap();
    let other = nats.clone();
    let (a, b) = tokio::join!(nats.shutdown(), other.shutdown());
    let ((), ()) = (a, b);
    assert!(!pid_exists(pid));
    assert!(matches!(nats.current_state(), NatsState::Stopped));
    assert_eq!(nats.pid(), None);
    nats.shutdown().await; // again: returns at once
}

#[tokio::test]
async fn dropping_the_handle_kills_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsSupervisor::start(test_config(dir.path()))
        .await
        .unwrap();
    let pid = nats.pid().unwrap();
    drop(nats);
    // Drop waits until the child is reaped; allow a little slack anyway.
    assert!(
        eventually(Duration::from_secs(2), || !pid_exists(pid)),
        "nats-server {pid} survived the drop of its handle"
    );
}

#[tokio::test]
async fn stop_kills_a_server_that_does_not_react_to_sigterm_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.stop_grace = Duration::from_millis(300);
    let nats = NatsSupervisor::start(config).await.unwrap();
    let pid = nats.pid().unwrap();
    // A stopped process cannot handle SIGTERM; SIGKILL still works.
    signal(pid, Signal::SIGSTOP);

    let began = Instant::now();
    within(Duration::from_secs(5), "stop", nats.stop()).await;
    let took = began.elapsed();

    assert!(
        took >= Duration::from_millis(300),
        "SIGKILL came before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "stop took {took:?}");
    assert!(!pid_exists(pid));
}

/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits. The supervisor forks from
/// its own thread, so a caller whose thread (and runtime) ends must not take the server with it.
#[tokio::test]
async fn the_server_survives_the_thread_and_runtime_that_started_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let nats = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(NatsSupervisor::start(config)).unwrap()
    })
    .join()
    .unwrap();
    let pid = nats.pid().unwrap();

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        is_alive(pid),
        "nats-server died with the thread that started it"
    );
    assert!(matches!(nats.current_state(), NatsState::Running { pid: p, .. } if p == pid));
    let client = async_nats::connect(nats.client_url()).await.unwrap();
    jetstream::new(client)
        .create_stream(stream::Config {
            name: "STILL_HERE".into(),
            ..Default::default()
        })
        .await
        .expect("JetStream still answers");
    nats.stop().await;
}

#[tokio::test]
async fn the_chosen_port_is_used_when_given() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut config = test_config(dir.path());
    config.port = Some(port);
    let nats = NatsSupervisor::start(config).await.unwrap();
    assert_eq!(nats.port(), port);
    assert_eq!(nats.client_url(), format!("nats://127.0.0.1:{port}"));
    nats.stop().await;
}

#[tokio::test]
async fn one_store_dir_serves_one_server_at_a_time_and_persists_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let first = NatsSupervisor::start(test_config(dir.path()))
        .await
        .unwrap();
    let first_pid = first.pid().unwrap();
    let js = jetstream::new(async_nats::connect(first.client_url()).await.unwrap());
    js.create_stream(stream::Config {
        name: "DURABLE".into(),
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("DURABLE", "kept".into())
        .await
        .unwrap()
        .await
        .unwrap();

    // The running server holds the store dir's lock itself (so it would keep holding it if it
    // ever outlived us), and a second supervisor is refused.
    #[cfg(target_os = "linux")]
    {
        let lock = dir.path().join("store").join(pyoco_natsd::STORE_LOCK_FILE);
        let held = std::fs::read_dir(format!("/proc/{first_pid}/fd"))
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.unwrap().path()).ok())
            .any(|target| target == lock);
        assert!(
            held,
            "nats-server {first_pid} does not hold {}",
            lock.display()
        );
    }
    let err = NatsSupervisor::start(test_config(dir.path()))
        .await
        .unwrap_err();
    assert!(matches!(err, NatsdError::StoreDirInUse { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("nats-server pid {first_pid}")),
        "{text}"
    );
    assert!(text.contains("store"), "{text}");

    // Once stopped, the store dir is free at once, with its data.
    first.stop().await;
    let second = NatsSupervisor::start(test_config(dir.path()))
        .await
        .expect("the store dir is free right after stop");
    let js = jetstream::new(async_nats::connect(second.client_url()).await.unwrap());
    let mut stream = js.get_stream("DURABLE").await.expect("stream kept");
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    second.stop().await;
}

/// Some installs put a wrapper script in front of the binary; one that forgets `exec` leaves
/// nats-server as a grandchild. Stop signals the whole process group, so it stops too.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn stop_also_stops_a_server_behind_a_wrapper_script() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    // The orphaned grandchild is re-parented to us, so we can reap it (init may not).
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("wrapped-nats-server");
    common::write_script(
        &wrapper,
        &format!("#!/bin/sh\n'{}' \"$@\"\n", common::nats_bin().display()),
    );
    let mut config = test_config(dir.path());
    config.binary = wrapper;
    let nats = NatsSupervisor::start(config).await.unwrap();
    let wrapper_pid = nats.pid().unwrap();
    let children =
        std::fs::read_to_string(format!("/proc/{wrapper_pid}/task/{wrapper_pid}/children"))
            .unwrap();
    let server_pid: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    assert!(is_alive(server_pid));

    nats.stop().await;

    assert!(!pid_exists(wrapper_pid));
    assert!(
        eventually(Duration::from_secs(2), || !is_alive(server_pid)),
        "nats-server {server_pid} behind the wrapper survived stop"
    );
    eventually(Duration::from_secs(2), || {
        let pid = nix::unistd::Pid::from_raw(server_pid as i32);
        waitpid(pid, Some(WaitPidFlag::WNOHANG)) != Ok(WaitStatus::StillAlive)
    });
}
