//! `pyoco-server up --with-nats` as a user runs it: a real binary, a real nats-server.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

fn pyoco_server(data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pyoco-server"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", data_dir)
        .env("PYOCO_DATA_DIR", data_dir)
        .env("PYOCO_LOAD_DOTENV", "0")
        .env("PYOCO_LOG_FORMAT", "text")
        .env("PYOCO_NATS_SERVER_BIN", pyoco_testkit::nats_server_bin())
        .current_dir(data_dir);
    cmd
}

/// A free loopback port for the gateway (tests run in parallel; 8000 may be taken).
fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port().to_string()
}

/// Read stderr lines (the banner is there; stdout has the log lines) until one contains
/// `needle`; returns that line.
fn wait_for_line(child: &mut Child, needle: &str) -> String {
    let stderr = child.stderr.as_mut().expect("piped stderr");
    let mut reader = BufReader::new(stderr);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("pyoco-server exited before printing {needle:?}");
        }
        if line.contains(needle) {
            return line.trim().to_string();
        }
    }
    panic!("no line with {needle:?} within 20 s");
}

/// Read stderr lines until each of `needles` was seen (in any order); the first line with
/// each, and everything read.
fn wait_for_lines(child: &mut Child, needles: &[&str]) -> (Vec<String>, String) {
    let stderr = child.stderr.as_mut().expect("piped stderr");
    let mut reader = BufReader::new(stderr);
    let mut read = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut found: Vec<Option<String>> = vec![None; needles.len()];
    let mut line = String::new();
    while found.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "not all of {needles:?} within 20 s: {found:?}"
        );
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("pyoco-server exited before printing all of {needles:?}: {found:?}");
        }
        read.push_str(&line);
        for (needle, slot) in needles.iter().zip(found.iter_mut()) {
            if slot.is_none() && line.contains(needle) {
                *slot = Some(line.trim().to_string());
            }
        }
    }
    (found.into_iter().flatten().collect(), read)
}

fn nats_pids_using(store: &std::path::Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("nats-server") && cmdline.contains(&*store.to_string_lossy()) {
            pids.push(pid);
        }
    }
    pids
}

async fn jetstream_answers(url: &str) -> bool {
    let Ok(client) = async_nats::connect(url).await else {
        return false;
    };
    async_nats::jetstream::new(client)
        .create_stream(async_nats::jetstream::stream::Config {
            name: "PROBE".into(),
            subjects: vec!["probe.>".into()],
            ..Default::default()
        })
        .await
        .is_ok()
}

#[tokio::test]
async fn up_with_nats_runs_jetstream_until_ctrl_c_and_leaves_nothing() {
    let data = tempfile::tempdir().unwrap();
    let mut child = pyoco_server(data.path())
        .args([
            "up",
            "--with-nats",
            "--nats-client-port",
            "0",
            "--port",
            &free_port(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = wait_for_line(&mut child, "ready at nats://");
    let url = line.rsplit(' ').next().unwrap().to_string();
    assert!(jetstream_answers(&url).await, "JetStream answers at {url}");
    let store = data.path().join("nats");
    assert_eq!(
        nats_pids_using(&store).len(),
        1,
        "one nats-server on the data dir's store"
    );

    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "Ctrl-C is a clean stop: {status}");
    assert!(
        nats_pids_using(&store).is_empty(),
        "nats-server stopped with us"
    );
}

#[tokio::test]
async fn kill_9_of_pyoco_server_leaves_no_nats_server() {
    let data = tempfile::tempdir().unwrap();
    let mut child = pyoco_server(data.path())
        .args([
            "--with-nats",
            "--nats-client-port",
            "0",
            "--port",
            &free_port(),
        ]) // legacy flat form
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut child, "ready at nats://");
    let store = data.path().join("nats");
    assert_eq!(nats_pids_using(&store).len(), 1);
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !nats_pids_using(&store).is_empty() {
        assert!(
            Instant::now() < deadline,
            "nats-server outlived a kill -9 of its parent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_bad_setting_is_reported_with_its_variable_and_exit_code_1() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join(".env"), "PYOCO_CONSUMER_MAX_DELIVER=abc\n").unwrap();
    let out = pyoco_server(data.path())
        .env("PYOCO_LOAD_DOTENV", "1")
        .env("PYOCO_HTTP_AUTH_MODE", "basic")
        .args(["up", "--with-nats"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PYOCO_CONSUMER_MAX_DELIVER"), "{err}");
    assert!(err.contains(".env"), "names the file: {err}");
    assert!(
        err.contains("PYOCO_HTTP_AUTH_MODE"),
        "all problems together: {err}"
    );
}

/// 0.5.1 turns auth off for any mode but `api_key`, typos included; we refuse to start.
#[test]
fn a_typo_in_the_auth_mode_refuses_to_start() {
    let data = tempfile::tempdir().unwrap();
    let out = pyoco_server(data.path())
        .env("PYOCO_HTTP_AUTH_MODE", "api-key")
        .args(["up", "--with-nats"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"PYOCO_HTTP_AUTH_MODE="api-key""#) && err.contains("none or api_key"),
        "{err}"
    );
}

#[test]
fn a_busy_nats_port_says_what_to_do() {
    let data = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = pyoco_server(data.path())
        .args(["up", "--with-nats", "--nats-client-port", &port.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("port {port}")) && err.contains("already in use"),
        "{err}"
    );
    assert!(
        err.contains("--nats-url"),
        "suggests using the running server: {err}"
    );
}

#[tokio::test]
async fn taken_default_ports_are_replaced_for_up_with_nats() {
    let _nats = pyoco_testkit::hold_port(4222);
    let _http = pyoco_testkit::hold_port(8000);
    let data = tempfile::tempdir().unwrap();
    // No port settings: the defaults 4222 and 8000 apply, and both are taken.
    let mut child = pyoco_server(data.path())
        .args(["up", "--with-nats", "--no-worker"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, err) = wait_for_lines(&mut child, &["API and dashboard at ", "ready at nats://"]);
    let last_word = |line: &str| line.rsplit(' ').next().unwrap().to_string();
    let api = last_word(&lines[0]).trim_end_matches('/').to_string();
    let nats = last_word(&lines[1]);
    assert!(!nats.ends_with(":4222"), "{nats}");
    assert!(!api.ends_with(":8000"), "{api}");
    assert!(
        jetstream_answers(&nats).await,
        "JetStream answers at {nats}"
    );
    let health = reqwest::get(format!("{api}/health")).await.unwrap();
    assert_eq!(health.status(), 200);

    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "Ctrl-C is a clean stop: {status}");
    assert!(
        err.contains("pyoco-server: NATS port 4222 is taken (another NATS?): the managed nats-server uses a free port instead; set PYOCO_NATS_CLIENT_PORT to choose one"),
        "{err}"
    );
    let port = api.rsplit(':').next().unwrap();
    assert!(
        err.contains(&format!("pyoco-server: HTTP port 8000 is taken: the API listens on port {port} instead; set PYOCO_HTTP_PORT to choose one")),
        "{err}"
    );
}

/// Ports the user chose are never replaced, not even by `--with-nats`.
#[test]
fn a_chosen_http_port_that_is_taken_is_an_error() {
    let data = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let out = pyoco_server(data.path())
        .args([
            "up",
            "--with-nats",
            "--no-worker",
            "--nats-client-port",
            "0",
        ])
        .args(["--port", &port])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("instead"), "{err}");
}

#[test]
fn a_missing_nats_server_binary_says_what_to_do() {
    let data = tempfile::tempdir().unwrap();
    // An explicit path that does not exist: named, with the fix.
    let out = pyoco_server(data.path())
        .env(
            "PYOCO_NATS_SERVER_BIN",
            data.path().join("no-such-nats-server"),
        )
        .args(["up", "--with-nats"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-nats-server") && err.contains("PYOCO_NATS_SERVER_BIN"),
        "{err}"
    );

    // None anywhere (empty data dir, nothing on PATH): how to install one.
    let out = pyoco_server(data.path())
        .env_remove("PYOCO_NATS_SERVER_BIN")
        .env("PATH", data.path())
        .args(["up", "--with-nats"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scripts/setup.sh"), "{err}");
}

/// Write an executable script through `sh`, so that this process never holds a write descriptor
/// to it (another test forking meanwhile would inherit it and make exec fail with ETXTBSY).
fn write_script(path: &std::path::Path, body: &str) {
    use std::io::Write;
    let mut sh = Command::new("sh")
        .arg("-c")
        .arg("cat > \"$1\" && chmod 755 \"$1\"")
        .arg("sh")
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    sh.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    assert!(sh.wait().unwrap().success(), "writing {}", path.display());
}

/// The managed nats-server killed by a signal while it starts (the OOM killer, a stray `kill`)
/// is restarted, and `up` comes up as usual.
#[tokio::test]
async fn up_with_nats_survives_its_nats_server_being_killed_while_starting() {
    let data = tempfile::tempdir().unwrap();
    let counter = data.path().join("nats-server-invocations");
    let wrapper = data.path().join("self-killing-nats-server");
    // The first invocation SIGKILLs itself; later ones are the real nats-server.
    write_script(
        &wrapper,
        &format!(
            "#!/bin/sh\n\
             n=$(( $(cat '{counter}' 2>/dev/null || echo 0) + 1 ))\n\
             echo \"$n\" > '{counter}'\n\
             if [ \"$n\" -eq 1 ]; then kill -9 $$; fi\n\
             exec '{real}' \"$@\"\n",
            counter = counter.display(),
            real = pyoco_testkit::nats_server_bin().display(),
        ),
    );
    let stdout_path = data.path().join("stdout.log");
    let mut child = pyoco_server(data.path())
        .env("PYOCO_NATS_SERVER_BIN", &wrapper)
        .args([
            "up",
            "--with-nats",
            "--no-worker",
            "--nats-client-port",
            "0",
            "--port",
            &free_port(),
        ])
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log lines (the banner is read from stderr).
    let stderr = || std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let lines = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for_lines(&mut child, &["API and dashboard at ", "ready at nats://"]).0
    }))
    .unwrap_or_else(|_| panic!("pyoco-server did not come up; its stderr:\n{}", stderr()));
    let invocations = std::fs::read_to_string(&counter).unwrap();
    assert_eq!(invocations.trim(), "2", "killed once, restarted once");

    let last_word = |line: &str| line.rsplit(' ').next().unwrap().to_string();
    let api = last_word(&lines[0]).trim_end_matches('/').to_string();
    let health = reqwest::get(format!("{api}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        jetstream_answers(&last_word(&lines[1])).await,
        "JetStream answers"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "pyoco-server is still running; its stderr:\n{}",
        stderr()
    );

    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "Ctrl-C is a clean stop: {status}\n{}",
        stderr()
    );
}
