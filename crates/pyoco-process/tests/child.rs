//! What a child set up by `ChildSetup` looks like from outside: its own process group, killed
//! when the thread that spawned it ends, only the descriptors it was given.

#![cfg(target_os = "linux")]

use std::os::fd::AsRawFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::{getpgid, Pid};
use pyoco_process::{tie_to_parent, ChildSetup};

/// The child's exit status within `timeout`, else kill it and fail.
fn exit_within(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pid {} still running after {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_child_leads_its_own_process_group() {
    let mut cmd = Command::new("sleep");
    cmd.arg("30");
    let mut child = tie_to_parent(&mut cmd).spawn().unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    let pgid = getpgid(Some(pid)).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(pgid, pid);
    assert_ne!(pgid, getpgid(None).unwrap());
}

#[test]
fn the_child_is_killed_when_the_thread_that_spawned_it_ends() {
    use std::os::unix::process::ExitStatusExt;
    // The spawning thread ends at once; the child (re-parented to another thread of this
    // process, so we can still reap it) gets SIGKILL from the kernel.
    let mut child = std::thread::spawn(|| {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        tie_to_parent(&mut cmd).spawn().unwrap()
    })
    .join()
    .unwrap();
    let status = exit_within(&mut child, Duration::from_secs(10));
    assert_eq!(status.signal(), Some(nix::libc::SIGKILL), "{status}");
}

#[test]
fn only_inherited_descriptors_stay_open_in_the_child() {
    let file = std::fs::File::open("/dev/null").unwrap();
    let fd = file.as_raw_fd();
    let probe = |setup: ChildSetup| {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("readlink /proc/$$/fd/{fd}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        setup.apply(&mut cmd);
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
    };
    assert_eq!(
        probe(ChildSetup::new().inherit_fd(fd)),
        (true, "/dev/null".to_owned())
    );
    assert!(
        !probe(ChildSetup::new()).0,
        "not inherited without inherit_fd"
    );
    drop(file);
}
