//! The README's first flow, the way a new user follows it: `tasks.py` and `flow.yaml` in a
//! folder of their own outside the checkout, the README's `scripts/run.sh` command started from
//! that folder, then the README's two `curl` commands from the same folder. Everything is read
//! from README.md itself, so the README cannot drift from what works.
//!
//! Two things differ from a person at a terminal, both through documented knobs of `run.sh`:
//! `PYOCO_RUN_BIN` hands it the `pyoco-server` this test run built (instead of a second, release
//! build), and the appliance's data dir is a temporary one (its `venv` linked to the real one,
//! so setup finds Python and pyoco in place). Ports are given as extra arguments, which `run.sh`
//! passes to `pyoco-server up`, so parallel tests never meet on 8000.

use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};
use pyoco_testkit::{free_port, workspace_binary, workspace_root};

/// The part of README.md under `### Your first flow`, up to the next heading (a `#` line
/// inside a code block is a comment, not a heading).
fn first_flow_section(readme: &str) -> &str {
    let start = readme
        .find("### Your first flow")
        .expect("README.md has a '### Your first flow' section");
    let rest = &readme[start..];
    let mut in_code = false;
    for (offset, line) in line_offsets(rest) {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && offset > 0 && line.starts_with('#') {
            return &rest[..offset];
        }
    }
    rest
}

fn line_offsets(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut offset = 0;
    text.split_inclusive('\n').map(move |line| {
        let here = offset;
        offset += line.len();
        (here, line.trim_end_matches('\n'))
    })
}

/// The fenced code blocks of `text` as (language, body).
fn code_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for (_, line) in line_offsets(text) {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(lang)) => current = Some((lang.trim().to_string(), String::new())),
            (Some(_), Some(_)) => blocks.push(current.take().unwrap()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The block whose first line is `first_line` (`# tasks.py`).
fn block_starting_with(blocks: &[(String, String)], first_line: &str) -> String {
    blocks
        .iter()
        .find(|(_, body)| body.lines().next() == Some(first_line))
        .unwrap_or_else(|| panic!("README's first flow has no code block starting '{first_line}'"))
        .1
        .clone()
}

/// The lines of the bash blocks, without comments.
fn commands(blocks: &[(String, String)]) -> Vec<String> {
    blocks
        .iter()
        .filter(|(lang, _)| lang == "bash")
        .flat_map(|(_, body)| body.lines().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|line| {
            let code = line.split(" #").next().unwrap_or("").trim().to_string();
            (!code.is_empty() && !code.starts_with('#')).then_some(code)
        })
        .collect()
}

/// Run one README shell command in `dir`; its stdout.
fn shell(command: &str, dir: &Path) -> String {
    let out = Command::new("sh")
        .args(["-c", command])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running `{command}`: {e}"));
    assert!(
        out.status.success(),
        "`{command}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The process group of `run.sh` (which becomes `pyoco-server`), killed if the test fails.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = killpg(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
            let _ = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_first_flow_runs_from_the_users_own_folder() {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = first_flow_section(&readme);
    let blocks = code_blocks(section);
    let tasks_py = block_starting_with(&blocks, "# tasks.py");
    let flow_yaml = block_starting_with(&blocks, "# flow.yaml");
    let commands = commands(&blocks);
    let find = |what: &str| {
        commands
            .iter()
            .find(|c| c.contains(what))
            .unwrap_or_else(|| panic!("README's first flow has no command with '{what}'"))
            .clone()
    };
    let start = find("scripts/run.sh");
    let submit = find("/runs/yaml");
    let tasks = find("/tasks");
    assert!(
        section.contains(r#""output":"HELLO PYOCO!""#),
        "the README promises the output HELLO PYOCO!"
    );

    let binary = workspace_binary("pyoco-server")
        .expect("the pyoco-server binary is built with the tests (cargo build -p pyoco-cli)");
    let tmp = tempfile::Builder::new()
        .prefix("pyoco-readme-")
        .tempdir()
        .unwrap();
    // The user's own folder, outside the checkout.
    let project = tmp.path().join("my-flows");
    std::fs::create_dir_all(&project).unwrap();
    assert!(!project.starts_with(&root));
    std::fs::write(project.join("tasks.py"), &tasks_py).unwrap();
    std::fs::write(project.join("flow.yaml"), &flow_yaml).unwrap();
    // A data dir of its own (NATS store, wheels), with the set-up Python venv linked in.
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let venv = pyoco_testkit::python()
        .parent()
        .and_then(Path::parent)
        .expect("the runner venv of <venv>/bin/python")
        .to_path_buf();
    std::os::unix::fs::symlink(&venv, data.join("venv")).unwrap();

    // The README's command with this checkout's path. `sudo` is there for the apt step, which
    // has nothing left to install once the test suite's setup ran: the command runs as whoever
    // runs the tests (root in CI, where `sudo` is not always installed).
    assert!(start.starts_with("sudo bash "), "{start}");
    let (_, after) = start.split_once("scripts/run.sh").unwrap();
    let command = format!("bash {}{after}", root.join("scripts/run.sh").display());
    let http_port = free_port();
    let command = format!(
        "{command} --port {http_port} --nats-client-port {}",
        free_port()
    );
    let log = tmp.path().join("run.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new("sh")
        .args(["-c", &format!("exec {command}")])
        .current_dir(&project)
        .env("PYOCO_RUN_BIN", &binary)
        .env("PYOCO_DATA_DIR", &data)
        .env("PYOCO_NATS_SERVER_BIN", pyoco_testkit::nats_server_bin())
        .env_remove("PYOCO_TASKS_PATH")
        .env_remove("PYTHONPATH")
        .env_remove("PYOCO_ENV_FILE")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .unwrap();
    let mut run = Running(child);
    let output = || std::fs::read_to_string(&log).unwrap_or_default();

    // Up when it prints the API address (the real one).
    let deadline = Instant::now() + Duration::from_secs(90);
    let api = loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            panic!("run.sh exited ({status}):\n{}", output());
        }
        if let Some(url) = output()
            .lines()
            .find_map(|l| l.strip_prefix("pyoco-server: API and dashboard at "))
        {
            break url.trim_end_matches('/').to_string();
        }
        assert!(
            Instant::now() < deadline,
            "run.sh did not come up within 90 s:\n{}",
            output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(api, format!("http://127.0.0.1:{http_port}"));
    let banner = output();
    let project_shown = project.canonicalize().unwrap();
    assert!(
        banner.contains(&format!(
            "imports task modules from {}",
            project_shown.display()
        )) || banner.contains(&format!("imports task modules from {}", project.display())),
        "run.sh says which folder the worker imports from:\n{banner}"
    );

    // The README's curl commands, from the user's folder, against the real address.
    let here = |c: &str| c.replace("http://127.0.0.1:8000", &api);
    let submitted = shell(&here(&submit), &project);
    let submitted: serde_json::Value = serde_json::from_str(submitted.trim())
        .unwrap_or_else(|e| panic!("{submit} printed {submitted:?}: {e}"));
    assert_eq!(submitted["status"], "PENDING", "{submitted}");
    let run_id = submitted["run_id"].as_str().unwrap().to_string();
    let tasks = here(&tasks).replace("<run_id>", &run_id);
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let answer = shell(&tasks, &project);
        let value: serde_json::Value = serde_json::from_str(&answer).unwrap();
        if ["COMPLETED", "FAILED", "CANCELLED"].contains(&value["status"].as_str().unwrap_or("")) {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish within 60 s: {answer}\n{}",
            output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        answer.contains(r#""status":"COMPLETED""#)
            && answer.contains(r#""tasks":{"hello":"SUCCEEDED","shout":"SUCCEEDED"}"#)
            && answer.contains(r#""output":"HELLO PYOCO!""#),
        "the README's answer, got: {answer}\n{}",
        output()
    );

    // Ctrl-C stops it cleanly.
    killpg(Pid::from_raw(run.0.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "Ctrl-C did not stop it within 30 s:\n{}",
            output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}:\n{}", output());
    assert!(output().contains("pyoco-server: stopped"), "{}", output());
}
