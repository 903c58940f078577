//! Child processes the bench starts (gateways, workers) and how it makes sure none outlives it.
//!
//! Every child is started in its own process group, with `PR_SET_PDEATHSIG = SIGKILL` (the
//! kernel kills it if the bench dies, even by SIGKILL; both set up by `pyoco-process`) and
//! `kill_on_drop`. Its pgid is kept in a global registry that the panic hook and the signal
//! handler kill. Stopping or dropping a [`ChildProc`] signals the whole group and, in addition,
//! every descendant found in `/proc` (a worker may put its Python runner in another group).
//! nats-server is owned by `pyoco-natsd`, which gives the same guarantees on its own thread.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

static REGISTRY: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn register(pgid: i32) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.push(pgid);
    }
}

fn unregister(pgid: i32) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.retain(|&p| p != pgid);
    }
}

/// SIGKILL every registered process group and its descendants (panic hook / signal path).
pub fn kill_all_registered() {
    let pgids: Vec<i32> = match REGISTRY.lock() {
        Ok(r) => r.clone(),
        Err(e) => e.into_inner().clone(),
    };
    for pgid in pgids {
        let desc = descendants(pgid as u32);
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
        for d in desc {
            unsafe {
                libc::kill(d as i32, libc::SIGKILL);
            }
        }
    }
}

/// Environment variables the children must not inherit from the bench's own environment: any
/// `PYOCO_*` setting (it would change what is measured), except those that only say where
/// things are installed.
fn scrubbed_env() -> Vec<OsString> {
    const KEEP: &[&str] = &["PYOCO_PYTHON", "PYOCO_DATA_DIR", "PYOCO_NATS_SERVER_BIN"];
    std::env::vars_os()
        .filter_map(|(k, _)| {
            let s = k.to_string_lossy();
            (s.starts_with("PYOCO_") && !KEEP.contains(&s.as_ref())).then_some(k)
        })
        .collect()
}

pub struct Spawn<'a> {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: &'a Path,
    pub log: PathBuf,
}

pub struct ChildProc {
    pub name: String,
    pub pid: u32,
    pub log: PathBuf,
    pub started: Instant,
    child: Option<tokio::process::Child>,
}

impl ChildProc {
    pub fn spawn(s: Spawn<'_>) -> Result<ChildProc> {
        let log = File::create(&s.log).with_context(|| format!("creating {}", s.log.display()))?;
        let log2 = log.try_clone()?;
        let mut cmd = tokio::process::Command::new(&s.program);
        cmd.args(&s.args)
            .current_dir(s.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true);
        // Own process group, killed with the spawning thread: called from async code, i.e. from
        // the runtime's threads, which live as long as the bench (`pyoco-process` says why
        // the thread matters).
        pyoco_process::tie_to_parent(cmd.as_std_mut());
        for k in scrubbed_env() {
            cmd.env_remove(k);
        }
        for (k, v) in &s.env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({})", s.name, s.program.display()))?;
        let pid = child.id().context("child has no pid")?;
        register(pid as i32);
        Ok(ChildProc {
            name: s.name,
            pid,
            log: s.log,
            started,
            child: Some(child),
        })
    }

    /// `Some(status)` when the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last `n` lines of the child's log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }

    /// SIGTERM the group, wait up to `grace`, then SIGKILL the group and every descendant.
    pub async fn stop(mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = self.pid as i32;
        let mut desc: HashSet<u32> = descendants(self.pid).into_iter().collect();
        unsafe {
            libc::killpg(pgid, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        let mut exited = false;
        while Instant::now() < deadline {
            desc.extend(descendants(self.pid));
            if let Ok(Some(_)) = child.try_wait() {
                exited = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !exited {
            eprintln!(
                "pyoco-bench: {} did not stop within {grace:?} of SIGTERM: killed",
                self.name
            );
        }
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
        for d in &desc {
            if pid_alive(*d) {
                unsafe {
                    libc::kill(*d as i32, libc::SIGKILL);
                }
            }
        }
        if !exited {
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
        unregister(pgid);
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if self.child.is_some() {
            let pgid = self.pid as i32;
            let desc = descendants(self.pid);
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
            for d in desc {
                unsafe {
                    libc::kill(d as i32, libc::SIGKILL);
                }
            }
            unregister(pgid);
            // kill_on_drop reaps the leader.
        }
    }
}

pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    if lines.is_empty() {
        return format!("(it wrote nothing: {})", path.display());
    }
    lines[start..].join("\n")
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `(pid, ppid)` of every process in `/proc`.
fn process_table() -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..." — comm may contain spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let _state = f.next();
        if let Some(ppid) = f.next().and_then(|s| s.parse::<u32>().ok()) {
            out.push((pid, ppid));
        }
    }
    out
}

/// Every descendant of `root` (children, grandchildren, …), not `root` itself.
pub fn descendants(root: u32) -> Vec<u32> {
    let table = process_table();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        for &(pid, ppid) in &table {
            if ppid == p && !found.contains(&pid) {
                found.push(pid);
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}

/// VmRSS of one process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub fn rss_mib(pid: u32) -> Option<f64> {
    rss_kib(pid).map(|k| k as f64 / 1024.0)
}

/// Sum of VmRSS of all descendants (MiB) and how many there are.
pub fn descendants_rss_mib(pid: u32) -> (f64, usize) {
    let d = descendants(pid);
    let sum: u64 = d.iter().filter_map(|&p| rss_kib(p)).sum();
    (sum as f64 / 1024.0, d.len())
}

/// A free TCP port on 127.0.0.1 (bound then released).
/// The arguments of a gateway (`pyoco-server up`, Rust or Python) on 127.0.0.1:`port` against
/// `nats_url`.
pub fn gateway_up_args(port: u16, nats_url: &str) -> Vec<String> {
    vec![
        "up".into(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--nats-url".into(),
        nats_url.to_string(),
    ]
}

pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

/// CPU time (user + system) one process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm)": state is field 3, utime field 14, stime field 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (tck > 0).then(|| (utime + stime) as f64 / tck as f64)
}

/// Wait (at most `limit`) until `pid` uses less than 5 % of a core over 300 ms: a gateway
/// still busy with requests a closed page left behind must not slow the next measurement.
pub async fn wait_quiet(pid: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let Some(a) = cpu_seconds(pid) else { return };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Some(b) = cpu_seconds(pid) else { return };
        if (b - a) / 0.3 < 0.05 {
            return;
        }
    }
}
