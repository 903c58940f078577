//! When the process that supervises nats-server dies abruptly, nats-server dies too.
//!
//! The test re-runs this test binary as a helper process — the ignored test
//! `helper_holding_a_supervisor`, run with `--ignored --exact` and an environment variable naming
//! its directory — that starts a supervisor and prints the server's pid; it SIGKILLs the helper
//! and checks that the server follows it. The helper is ignored so that it never counts as a
//! passing test of its own.

// PR_SET_PDEATHSIG is Linux-only; see the crate docs for other systems.
#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, is_alive, signal, test_config};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use pyoco_natsd::NatsSupervisor;

/// Set to a directory: the test binary then acts as the helper that holds a supervisor.
const HELPER_ENV: &str = "PYOCO_NATSD_TEST_ORPHAN_HELPER_DIR";
const PID_PREFIX: &str = "NATS_SERVER_PID=";

#[test]
#[ignore = "a helper process, run by nats_server_dies_when_its_supervising_process_is_killed"]
fn helper_holding_a_supervisor() {
    let dir = std::env::var_os(HELPER_ENV).unwrap_or_else(|| {
        panic!(
            "helper_holding_a_supervisor is not a test: \
             nats_server_dies_when_its_supervising_process_is_killed runs it with {HELPER_ENV} set"
        )
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let nats = NatsSupervisor::start(test_config(dir.as_ref()))
            .await
            .expect("helper: start");
        println!("{PID_PREFIX}{}", nats.pid().unwrap());
        // Hold it until killed.
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(nats);
    });
}

#[test]
fn nats_server_dies_when_its_supervising_process_is_killed() {
    // Orphans are re-parented to us instead of init, so we can reap the server and see how it
    // died (and leave no zombie behind where init does not reap).
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "helper_holding_a_supervisor",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let nats_pid: u32 = BufReader::new(helper.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix(PID_PREFIX).map(|p| p.parse().unwrap()))
        .expect("the helper printed the nats-server pid");
    assert!(is_alive(nats_pid));

    signal(helper.id(), Signal::SIGKILL);
    helper.wait().unwrap();

    assert!(
        eventually(Duration::from_secs(5), || !is_alive(nats_pid)),
        "nats-server {nats_pid} outlived its supervising process (orphan)"
    );
    // A zombie leader can show before all of Go's threads are gone; waitpid reports after.
    let mut status = WaitStatus::StillAlive;
    eventually(Duration::from_secs(5), || {
        status = waitpid(Pid::from_raw(nats_pid as i32), Some(WaitPidFlag::WNOHANG)).unwrap();
        status != WaitStatus::StillAlive
    });
    assert!(
        matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
        "killed by the kernel's parent-death signal, not {status:?}"
    );
}
