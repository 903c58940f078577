//! The deployment files under `deploy/` and `docs/deploy.md`, checked with the real tools:
//!
//! - the systemd units pass `systemd-analyze verify` without a single warning (the commands
//!   point at this build's binaries), keep their hardening (`systemd-analyze security
//!   --offline`), and their `ExecStart` flags are accepted by the real `pyoco-server` /
//!   `pyoco-worker`; the sysusers file creates the `pyoco` user in a scratch root;
//! - `deploy/nats/gen-dev-certs.sh` makes certificates with which each node config loads in
//!   `nats-server -t`, and the three nodes, started on free ports, form a TLS cluster where a
//!   client certificate maps to its user: a replicated (R3) KV bucket works for the worker's
//!   certificate, the system account's user has no JetStream, and no certificate, no entry;
//! - the units' commands, started as systemd would (their `Environment=` with an exported
//!   `.env` on top, their working directory; paths moved into a temp dir) against a test NATS,
//!   run the README flow on the worker named after the host (and, for the tag `etl`, on the
//!   template's instance `etl`), and all stop on SIGTERM with success within `TimeoutStopSec`;
//! - the Dockerfile's stages, copied paths and binaries exist (no image is built here);
//! - every `PYOCO_*` name in `deploy/` and `docs/deploy.md` is a setting of the table.
//!
//! Without `systemd-analyze` (not a systemd distribution) the unit checks are skipped with a
//! message; everything else always runs.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use pyoco_testkit::{free_port, nats_server_bin, workspace_binary, workspace_root};

/// The units, as shipped, with the name each is verified under (a template needs an instance).
const UNITS: &[(&str, &str)] = &[
    ("pyoco-gateway.service", "pyoco-gateway.service"),
    ("pyoco-worker.service", "pyoco-worker.service"),
    ("pyoco-worker@.service", "pyoco-worker@etl.service"),
];

/// Highest `systemd-analyze security` exposure (× 10) each unit may have: what the shipped
/// hardening reaches (gateway 1.5, workers 1.9 with systemd 252), plus a little room.
const MAX_EXPOSURE: &[(&str, &str)] = &[
    ("pyoco-gateway.service", "20"),
    ("pyoco-worker.service", "25"),
    ("pyoco-worker@etl.service", "25"),
];

fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `program` when it runs (`--version`), else `None`.
fn tool(program: &str) -> Option<PathBuf> {
    let ok = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| PathBuf::from(program))
}

/// The values of `key=` in a unit's text (comments skipped).
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// Seconds of a systemd time span like `60s` or `2min` (the forms the units use).
fn seconds(span: &str) -> f64 {
    if let Some(min) = span.strip_suffix("min") {
        min.parse::<f64>().unwrap() * 60.0
    } else {
        span.trim_end_matches('s').parse().unwrap()
    }
}

#[test]
fn systemd_units_verify_and_keep_their_hardening() {
    let Some(analyze) = tool("systemd-analyze") else {
        eprintln!(
            "SKIPPED systemd_units_verify_and_keep_their_hardening: systemd-analyze is not \
             installed (apt-get install systemd)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The units name /usr/local/bin/…: point them at this build's binaries (verify checks that
    // each ExecStart is an executable file).
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let mut real = Vec::new();
    for name in ["pyoco-server", "pyoco-worker"] {
        match workspace_binary(name) {
            Some(found) => {
                std::os::unix::fs::symlink(&found, bin.join(name)).unwrap();
                real.push(name);
            }
            None => {
                eprintln!(
                    "NOTE: {name} is not built (cargo build -p pyoco-cli): verifying the units \
                     against a stand-in, and not checking their flags"
                );
                fs::write(bin.join(name), "#!/bin/sh\nexit 0\n").unwrap();
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
    }
    let units = dir.path().join("units");
    fs::create_dir(&units).unwrap();
    for (file, verified_as) in UNITS {
        let shipped = read(&deploy_dir().join("systemd").join(file));
        let local = shipped.replace("/usr/local/bin/", &format!("{}/", bin.display()));
        fs::write(units.join(verified_as), local).unwrap();
    }

    // verify: no output at all (unknown keys and bad values are only warnings, exit 0).
    let verify = run(Command::new(&analyze)
        .arg("verify")
        .args(UNITS.iter().map(|(_, v)| units.join(v)))
        .current_dir(&units));
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && out.trim().is_empty(),
        "systemd-analyze verify complains:\n{}",
        text(&verify)
    );

    for (unit, threshold) in MAX_EXPOSURE {
        let security = run(Command::new(&analyze)
            .args(["security", "--offline=true", "--no-pager"])
            .arg(format!("--threshold={threshold}"))
            .arg(units.join(unit)));
        assert!(
            security.status.success(),
            "{unit}: exposure above {threshold}/10 (hardening lost?):\n{}",
            text(&security)
        );
    }

    for (file, verified_as) in UNITS {
        let unit = read(&units.join(verified_as));
        let one = |key: &str| -> &str {
            let values = unit_values(&unit, key);
            assert_eq!(
                values.len(),
                1,
                "{file}: one {key}= expected, got {values:?}"
            );
            values[0]
        };
        assert!(
            unit_values(&unit, "EnvironmentFile").contains(&"/etc/pyoco-server/pyoco.env"),
            "{file} reads the exported .env"
        );
        assert_eq!(one("User"), "pyoco", "{file}");
        assert_eq!(one("Restart"), "on-failure", "{file}");
        assert!(seconds(one("RestartSec")) >= 1.0, "{file}: RestartSec");
        assert_eq!(one("NoNewPrivileges"), "yes", "{file}");
        assert_eq!(one("ProtectSystem"), "strict", "{file}");
        assert!(
            unit_values(&unit, "Environment").contains(&"PYOCO_LOAD_DOTENV=0"),
            "{file}: only the EnvironmentFile counts, no ./.env"
        );
        let exec = one("ExecStart");
        let mut args: Vec<String> = exec
            .split_whitespace()
            .map(|a| a.replace("%H", "host-1").replace("%i", "etl"))
            .collect();
        let program = PathBuf::from(args.remove(0));
        if file.starts_with("pyoco-worker") {
            // systemd must wait longer than the worker lets runs finish, and signal only the
            // worker: its runners are stopped by it, after the runs are handed back.
            let stop_timeout: f64 = args
                .iter()
                .position(|a| a == "--stop-timeout")
                .map(|i| args[i + 1].parse().unwrap())
                .unwrap_or(30.0);
            assert!(
                seconds(one("TimeoutStopSec")) >= stop_timeout + 15.0,
                "{file}: TimeoutStopSec must leave the worker its --stop-timeout ({stop_timeout} s) \
                 and time to hand back runs"
            );
            assert_eq!(one("KillMode"), "mixed", "{file}");
        }
        let name = program.file_name().unwrap().to_str().unwrap();
        if real.contains(&name) {
            // The real binary parses the unit's flags (a typo exits 2 before --help).
            let parsed = run(Command::new(&program).args(&args).arg("--help"));
            assert!(
                parsed.status.success(),
                "{file}: {name} rejects the ExecStart flags {args:?}:\n{}",
                text(&parsed)
            );
        }
    }

    // The user the units run as: systemd-sysusers creates it in a scratch root.
    if let Some(sysusers) = tool("systemd-sysusers") {
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        let created = run(Command::new(sysusers)
            .arg(format!("--root={}", root.display()))
            .arg(deploy_dir().join("systemd/pyoco-server.sysusers.conf")));
        assert!(created.status.success(), "{}", text(&created));
        let passwd = read(&root.join("etc/passwd"));
        assert!(
            passwd
                .lines()
                .any(|l| l.starts_with("pyoco:") && l.contains(":/var/lib/pyoco-server:")),
            "{passwd}"
        );
    }
}

/// `gen-dev-certs.sh` into `dir/certs`, and the node configs rewritten to use them and a
/// store under `dir`: (node number, config text).
fn nats_configs(dir: &Path) -> Vec<(usize, String)> {
    let certs = dir.join("certs");
    let made = run(Command::new("bash")
        .arg(deploy_dir().join("nats/gen-dev-certs.sh"))
        .arg(&certs));
    assert!(made.status.success(), "gen-dev-certs.sh: {}", text(&made));
    for name in [
        "ca",
        "nats-1",
        "nats-2",
        "nats-3",
        "pyoco-gateway",
        "pyoco-worker",
    ] {
        assert!(certs.join(format!("{name}.pem")).is_file(), "{name}.pem");
    }
    fs::copy(
        deploy_dir().join("nats/accounts.conf"),
        dir.join("accounts.conf"),
    )
    .unwrap();
    (1..=3)
        .map(|n| {
            let shipped = read(&deploy_dir().join(format!("nats/nats-{n}.conf")));
            assert!(shipped.contains("/etc/nats/certs/"), "nats-{n}.conf");
            let local = shipped
                .replace("/etc/nats/certs/", &format!("{}/", certs.display()))
                .replace(
                    "/var/lib/nats/jetstream",
                    &dir.join(format!("store-{n}")).display().to_string(),
                );
            (n, local)
        })
        .collect()
}

#[test]
fn nats_cluster_configs_load() {
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_server_bin();
    // As shipped, the certificates are not there: -t really reads the files.
    let shipped = run(Command::new(&nats)
        .arg("--config")
        .arg(deploy_dir().join("nats/nats-1.conf"))
        .arg("-t"));
    assert!(
        !shipped.status.success() && text(&shipped).contains("/etc/nats/certs/nats-1.pem"),
        "{}",
        text(&shipped)
    );
    for (n, config) in nats_configs(dir.path()) {
        let path = dir.path().join(format!("nats-{n}.conf"));
        fs::write(&path, config).unwrap();
        let checked = run(Command::new(&nats).arg("--config").arg(&path).arg("-t"));
        assert!(
            checked.status.success() && text(&checked).contains("is valid"),
            "nats-{n}.conf: {}",
            text(&checked)
        );
    }
}

/// A nats-server process, killed when dropped.
struct Node {
    child: Child,
    log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn logs(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("--- {}\n{}", n.log.display(), read(&n.log)))
        .collect()
}

fn client_options(certs: &Path, user: Option<&str>) -> async_nats::ConnectOptions {
    let mut options = async_nats::ConnectOptions::new()
        .add_root_certificates(certs.join("ca.pem"))
        .require_tls(true)
        .connection_timeout(Duration::from_secs(5));
    if let Some(user) = user {
        options = options.add_client_certificate(
            certs.join(format!("{user}.pem")),
            certs.join(format!("{user}-key.pem")),
        );
    }
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_example_cluster_runs_with_tls_and_certificate_users() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let configs = nats_configs(dir.path());
    // Three nodes on one host: every port of the example replaced by a free one.
    let ports: Vec<[u16; 3]> = (0..3)
        .map(|_| [free_port(), free_port(), free_port()])
        .collect();
    let mut nodes = Vec::new();
    for (n, config) in configs {
        let [client, route, monitor] = ports[n - 1];
        let mut local = config
            .replace("0.0.0.0:4222", &format!("127.0.0.1:{client}"))
            .replace("0.0.0.0:6222", &format!("127.0.0.1:{route}"))
            .replace("127.0.0.1:8222", &format!("127.0.0.1:{monitor}"));
        for (m, [_, peer_route, _]) in ports.iter().enumerate() {
            local = local.replace(
                &format!("nats-{}.pyoco.internal:6222", m + 1),
                &format!("127.0.0.1:{peer_route}"),
            );
        }
        assert!(
            !local.contains("0.0.0.0:") && !local.contains(".pyoco.internal:"),
            "{local}"
        );
        let path = dir.path().join(format!("nats-{n}.conf"));
        fs::write(&path, local).unwrap();
        let log = dir.path().join(format!("nats-{n}.log"));
        let child = Command::new(nats_server_bin())
            .arg("--config")
            .arg(&path)
            .stdout(fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        nodes.push(Node { child, log });
    }
    let url = |n: usize| format!("tls://127.0.0.1:{}", ports[n][0]);

    // The worker's certificate: a replicated bucket, once the cluster has its meta leader.
    let deadline = Instant::now() + Duration::from_secs(60);
    let worker = loop {
        match client_options(&certs, Some("pyoco-worker"))
            .connect(url(0))
            .await
        {
            Ok(client) => break client,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!(
                "cannot connect with the worker's certificate: {e}\n{}",
                logs(&nodes)
            ),
        }
    };
    let js = async_nats::jetstream::new(worker);
    let kv = loop {
        let config = async_nats::jetstream::kv::Config {
            bucket: "deploy_check".into(),
            num_replicas: 3,
            ..Default::default()
        };
        match js.create_key_value(config).await {
            Ok(kv) => break kv,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("no R3 bucket yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("no R3 bucket on the cluster: {e}\n{}", logs(&nodes)),
        }
    };
    kv.put("k", "v".into()).await.unwrap();
    assert_eq!(kv.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    let mut stream = js.get_stream("KV_deploy_check").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    let cluster = info.cluster.clone().expect("cluster info");
    assert_eq!(cluster.name.as_deref(), Some("pyoco"));
    let mut members: BTreeSet<String> = cluster.replicas.iter().map(|p| p.name.clone()).collect();
    members.extend(cluster.leader.clone());
    assert_eq!(
        members,
        BTreeSet::from(["nats-1", "nats-2", "nats-3"].map(String::from)),
        "{cluster:?}"
    );

    // Another node sees the same data (a gateway may reach any node of PYOCO_NATS_URL).
    let gateway = client_options(&certs, Some("pyoco-gateway"))
        .connect(url(2))
        .await
        .unwrap_or_else(|e| panic!("gateway certificate on node 3: {e}\n{}", logs(&nodes)));
    let kv3 = async_nats::jetstream::new(gateway)
        .get_key_value("deploy_check")
        .await
        .unwrap();
    assert_eq!(kv3.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));

    // The system account's user: connected, but not to pyoco's JetStream.
    let admin = client_options(&certs, Some("nats-admin"))
        .connect(url(1))
        .await
        .unwrap_or_else(|e| panic!("admin certificate: {e}\n{}", logs(&nodes)));
    let denied = async_nats::jetstream::new(admin)
        .get_key_value("deploy_check")
        .await;
    assert!(
        denied.is_err(),
        "the SYS account must not see pyoco's buckets"
    );

    // No client certificate: refused.
    let refused = client_options(&certs, None)
        .max_reconnects(0)
        .connect(url(0))
        .await;
    assert!(refused.is_err(), "a client without a certificate got in");
}

#[test]
fn dockerfile_builds_what_exists() {
    let root = workspace_root();
    let dockerfile = read(&root.join("deploy/container/Dockerfile"));
    let ignore = read(&root.join(".dockerignore"));
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .filter_map(|l| l.split(" AS ").nth(1))
        .collect();
    assert_eq!(stages, ["build", "base", "gateway", "worker"]);

    // What is copied from the context exists and is not ignored.
    let mut copied = 0;
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        if parts.iter().any(|p| p.starts_with("--from=")) {
            continue;
        }
        for src in &parts[..parts.len() - 1] {
            copied += 1;
            assert!(root.join(src).exists(), "COPY {src}: not in the repository");
            let top = src.split('/').next().unwrap();
            assert!(
                !ignore
                    .lines()
                    .any(|i| i.trim_end_matches('/') == top && top != "."),
                "COPY {src}: excluded by .dockerignore"
            );
        }
    }
    assert!(copied >= 2, "COPY lines not found");

    // The binaries it copies are the pyoco-cli package's.
    let manifest = read(&root.join("crates/pyoco-cli/Cargo.toml"));
    for bin in [
        "pyoco-server",
        "pyoco-worker",
        "pyoco-server-admin",
        "pyoco-client",
    ] {
        assert!(
            manifest.contains(&format!("name = \"{bin}\"")),
            "{bin} is not a binary of pyoco-cli"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{bin}")),
            "{bin}"
        );
    }
    // The build context leaves out what is big or local.
    for dir in ["target/", "artifacts/", ".git/"] {
        assert!(ignore.lines().any(|l| l == dir), ".dockerignore: {dir}");
    }
    assert!(dockerfile.contains("scripts/requirements-runner.txt"));
    assert!(dockerfile.contains("/health"), "HEALTHCHECK on /health");
    assert_eq!(
        dockerfile.matches("\nUSER pyoco\n").count(),
        2,
        "both images run as the unprivileged user"
    );
}

/// Every `PYOCO_*` word in `text`, with its line number (a trailing `_` is kept: a prefix).
fn pyoco_names(text: &str) -> Vec<(usize, String)> {
    let mut names = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("PYOCO_") {
            let before = rest[..at].chars().next_back();
            let tail = &rest[at..];
            let len = tail
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                names.push((index + 1, tail[..len].to_string()));
            }
            rest = &tail[len..];
        }
    }
    names
}

#[test]
fn every_setting_named_in_deploy_files_exists() {
    let root = workspace_root();
    let mut files = vec![root.join("docs/deploy.md")];
    let mut pending = vec![deploy_dir()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.push(root.join(".dockerignore"));
    // The JetStream streams' names (not settings) are named in the replicas section.
    let streams = ["PYOCO_WORK", "PYOCO_DLQ", "PYOCO_TASK_LOGS"];
    let known = |name: &str| pyoco_config::spec(name).is_some() || streams.contains(&name);
    let all: Vec<&str> = pyoco_config::specs().iter().map(|s| s.name).collect();

    let mut seen = BTreeSet::new();
    let mut unknown = Vec::new();
    for file in &files {
        let shown = file.strip_prefix(&root).unwrap().display().to_string();
        for (line, name) in pyoco_names(&read(file)) {
            let ok = if name.ends_with('_') {
                all.iter().any(|n| n.starts_with(&name))
            } else {
                known(&name)
            };
            if ok {
                seen.insert(name);
            } else {
                unknown.push(format!("{shown}:{line}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "names that are no setting (crates/pyoco-config/src/table.rs):\n{}",
        unknown.join("\n")
    );
    // A scan that finds (almost) nothing is broken, not clean.
    assert!(seen.len() >= 20, "only {seen:?}");

    // The guide covers every file it deploys.
    let doc = read(&root.join("docs/deploy.md"));
    for file in &files[1..] {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(doc.contains(name), "docs/deploy.md does not mention {name}");
    }
}

#[test]
fn setting_names_are_found_in_text() {
    let found: Vec<String> = pyoco_names(
        "`PYOCO_NATS_URL=x` and PYOCO_NATS_TLS_* or XPYOCO_NO, $PYOCO_HTTP_PORT}PYOCO_A1",
    )
    .into_iter()
    .map(|(_, n)| n)
    .collect();
    assert_eq!(
        found,
        [
            "PYOCO_NATS_URL",
            "PYOCO_NATS_TLS_",
            "PYOCO_HTTP_PORT",
            "PYOCO_A1"
        ]
    );
}

/// What systemd would give the program of `unit` (a shipped file): its `ExecStart` (`%H` and
/// `%i` expanded) and `WorkingDirectory`, and an environment of its `Environment=` lines with
/// `exported` (the `.env`) on top, as `EnvironmentFile=` wins over `Environment=`. Paths under
/// `/var/lib/pyoco-server` and `/opt/pyoco-tasks` are moved into `root`.
fn as_systemd_starts(unit: &str, root: &Path, exported: &[(&str, String)]) -> Command {
    let text = read(&deploy_dir().join("systemd").join(unit));
    let local = |v: &str| {
        v.replace("%H", "host-1")
            .replace("%i", "etl")
            .replace(
                "/var/lib/pyoco-server",
                &root.join("state").display().to_string(),
            )
            .replace(
                "/opt/pyoco-tasks",
                &root.join("tasks").display().to_string(),
            )
    };
    let exec = local(unit_values(&text, "ExecStart")[0]);
    let mut args = exec.split_whitespace();
    let program = PathBuf::from(args.next().unwrap());
    let binary = workspace_binary(program.file_name().unwrap().to_str().unwrap())
        .expect("the binary (checked by the caller)");
    let workdir = PathBuf::from(local(unit_values(&text, "WorkingDirectory")[0]));
    // systemd creates the StateDirectory= before the start.
    fs::create_dir_all(&workdir).unwrap();
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .current_dir(workdir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for assignment in unit_values(&text, "Environment") {
        let (name, value) = assignment.split_once('=').unwrap();
        cmd.env(name, local(value));
    }
    for (name, value) in exported {
        cmd.env(name, value);
    }
    cmd
}

/// A process of the test, killed when dropped.
struct Started {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Started {
    fn spawn(mut cmd: Command, name: &'static str, dir: &Path) -> Started {
        let log = dir.join(format!("{name}.log"));
        let out = fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Started { child, name, log }
    }

    fn output(&self) -> String {
        format!("--- {} log\n{}", self.name, read(&self.log))
    }

    /// SIGTERM, as `systemctl stop`; the exit status within `within`.
    async fn stop(&mut self, within: Duration) -> std::process::ExitStatus {
        use nix::{
            sys::signal::{kill, Signal},
            unistd::Pid,
        };
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within {within:?} of SIGTERM\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_commands_run_a_flow_as_systemd_starts_them() {
    if workspace_binary("pyoco-server").is_none() || workspace_binary("pyoco-worker").is_none() {
        eprintln!(
            "SKIPPED unit_commands_run_a_flow_as_systemd_starts_them: pyoco-server / \
             pyoco-worker are not built (cargo build -p pyoco-cli)"
        );
        return;
    }
    let nats = pyoco_testkit::TestNats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    pyoco_testkit::write_task_module(
        &root.join("tasks"),
        pyoco_testkit::TASKS_MODULE,
        pyoco_testkit::TASKS_PY,
    );
    let port = free_port();
    // The part of an exported .env this test needs: its NATS, a free port, the test's Python
    // (production: the venv in the data dir), the task module allowed.
    let exported = [
        ("PYOCO_NATS_URL", nats.url()),
        ("PYOCO_HTTP_PORT", port.to_string()),
        (
            "PYOCO_PYTHON",
            pyoco_testkit::python().display().to_string(),
        ),
        (
            "PYOCO_TASK_MODULES",
            pyoco_testkit::TASKS_MODULE.to_string(),
        ),
    ];
    let mut gateway = Started::spawn(
        as_systemd_starts("pyoco-gateway.service", root, &exported),
        "gateway",
        root,
    );
    let mut worker = Started::spawn(
        as_systemd_starts("pyoco-worker.service", root, &exported),
        "worker",
        root,
    );
    // The template's instance `etl`, its worker-etl.env giving it the tag `etl`.
    let mut etl_env = exported.to_vec();
    etl_env.push(("PYOCO_WORKER_TAGS", "etl".to_string()));
    let mut etl = Started::spawn(
        as_systemd_starts("pyoco-worker@.service", root, &etl_env),
        "worker@etl",
        root,
    );

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    // Up (/health, the containers' health check), then connected to NATS (/runs).
    for path in ["/health", "/runs"] {
        loop {
            let answer = http.get(format!("{base}{path}")).send().await;
            if answer.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "no {path}\n{}", gateway.output());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let run_id =
        pyoco_testkit::submit_yaml(&http, &base, crate::README_FLOW, "deploy", "default").await;
    let run =
        pyoco_testkit::wait_status(&http, &base, &run_id, crate::TERMINAL, crate::RUN_TIMEOUT)
            .await;
    assert_eq!(
        run["status"],
        "COMPLETED",
        "{run}\n{}\n{}",
        gateway.output(),
        worker.output()
    );
    // The worker id is the host name (%H); the runner files are in the state directory.
    assert_eq!(run["worker_id"], "host-1", "{run}");
    assert!(root.join("state/runner").is_dir(), "{}", worker.output());
    // Wheel sync is on (the unit's default), so the registry record says so.
    let workers: serde_json::Value = http
        .get(format!("{base}/workers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let record = workers
        .as_array()
        .and_then(|all| all.iter().find(|w| w["worker_id"] == "host-1"))
        .unwrap_or_else(|| panic!("host-1 not in {workers}"));
    assert_eq!(
        record["wheel_sync"]["enabled"], true,
        "wheel sync should be on: {record}"
    );

    // A run for `etl` goes to the instance, named <host>-<instance>, with its own data dir.
    let run_id =
        pyoco_testkit::submit_yaml(&http, &base, crate::README_FLOW, "deploy", "etl").await;
    let run =
        pyoco_testkit::wait_status(&http, &base, &run_id, crate::TERMINAL, crate::RUN_TIMEOUT)
            .await;
    assert_eq!(run["status"], "COMPLETED", "{run}\n{}", etl.output());
    assert_eq!(run["worker_id"], "host-1-etl", "{run}");
    assert!(
        root.join("state/worker-etl/runner").is_dir(),
        "{}",
        etl.output()
    );

    // systemctl stop: all end on SIGTERM with success, well within TimeoutStopSec.
    for w in [&mut worker, &mut etl] {
        let status = w.stop(Duration::from_secs(60)).await;
        assert!(status.success(), "{}: {status}\n{}", w.name, w.output());
    }
    let status = gateway.stop(Duration::from_secs(30)).await;
    assert!(status.success(), "gateway: {status}\n{}", gateway.output());
}

/// The `ENV` assignments of each final stage and the stage it inherits from, by stage.
fn dockerfile_env(dockerfile: &str) -> Vec<(String, Vec<(String, String)>)> {
    let joined = dockerfile.replace("\\\n", " ");
    let mut stages: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in joined.lines() {
        if let Some(from) = line.strip_prefix("FROM ") {
            let mut words = from.split_whitespace();
            let parent = words.next().unwrap_or_default().to_string();
            let name = from.split(" AS ").nth(1).unwrap_or_default().to_string();
            let inherited = stages
                .iter()
                .find(|(n, _)| *n == parent)
                .map(|(_, env)| env.clone())
                .unwrap_or_default();
            stages.push((name, inherited));
        } else if let Some(assignments) = line.strip_prefix("ENV ") {
            let (_, env) = stages.last_mut().expect("ENV before FROM");
            for a in assignments.split_whitespace() {
                let (k, v) = a.split_once('=').expect("ENV NAME=value");
                env.push((k.to_string(), v.to_string()));
            }
        }
    }
    stages
}

#[test]
fn container_env_is_valid_settings() {
    let dockerfile = read(&workspace_root().join("deploy/container/Dockerfile"));
    let stages = dockerfile_env(&dockerfile);
    for stage in ["gateway", "worker"] {
        let (_, env) = stages
            .iter()
            .find(|(n, _)| n == stage)
            .unwrap_or_else(|| panic!("no stage {stage}"));
        let mut map: std::collections::HashMap<String, String> = env.iter().cloned().collect();
        assert_eq!(
            map.get("PYOCO_ENV_FILE").map(String::as_str),
            Some("/etc/pyoco-server/pyoco.env"),
            "{stage}: reads the mounted .env"
        );
        // The mounted file is not here; the image's own values must be valid settings.
        map.insert("PYOCO_LOAD_DOTENV".into(), "0".into());
        let loaded = pyoco_config::Settings::load(&pyoco_config::LoadOptions {
            env: map,
            cwd: "/var/lib/pyoco-server".into(),
            home: Some("/var/lib/pyoco-server".into()),
        });
        let settings = loaded.unwrap_or_else(|e| panic!("{stage} image ENV: {e}"));
        if stage == "gateway" {
            assert_eq!(
                settings.http_host, "0.0.0.0",
                "{stage}: reachable from outside"
            );
        }
    }
}

/// The exported `.env` writes each value bare, `'single-quoted'`, or `"double-quoted"` with
/// the escapes `\\`, `\"` and `\$` only, which systemd's `EnvironmentFile=` reads to the same
/// value (systemd.exec(5)); a newline, written `\n`, is the one exception docs/deploy.md
/// names. This pins the exporter's quoting to that claim.
#[test]
fn exported_values_are_quoted_the_way_systemd_reads_them() {
    let values = [
        "nats://a:4222,nats://b:4222",
        "p3pp3r with $pace and #hash",
        "it's",
        "back\\slash",
        "ends with \\",
        "say \"hi\" for $5",
        "tab\there",
        "",
    ];
    for value in values {
        let quoted = pyoco_config::quote_value(value);
        let bare = |c: char| c.is_ascii_alphanumeric() || "_./:@,+-".contains(c);
        let ok = if !quoted.is_empty() && quoted.chars().all(bare) {
            quoted == value
        } else if let Some(inner) = quoted.strip_prefix('\'').and_then(|q| q.strip_suffix('\'')) {
            !inner.contains('\'') && inner == value
        } else if let Some(inner) = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
            // systemd's reading of a double-quoted value.
            let mut read = String::new();
            let mut chars = inner.chars();
            let mut fine = true;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(e @ ('\\' | '"' | '$' | '`')) => read.push(e),
                        _ => fine = false,
                    },
                    '"' => fine = false,
                    c => read.push(c),
                }
            }
            fine && read == value
        } else {
            quoted.is_empty() && value.is_empty()
        };
        assert!(
            ok,
            "{value:?} is exported as {quoted} (not read back the same by systemd)"
        );
    }
    // The exception docs/deploy.md names.
    assert_eq!(pyoco_config::quote_value("two\nlines"), "\"two\\nlines\"");
}
