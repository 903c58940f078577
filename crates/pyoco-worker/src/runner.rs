//! One long-lived Python runner process (`python -u pyoco_runner.py`) and its JSON-lines
//! protocol (`python/PROTOCOL.md`).
//!
//! Why a separate process: pyoco is a Python library, and 0.5.1 ran it inside the worker. Keeping
//! it in a warm child process gives us the real pyoco without embedding Python, lets us kill a run
//! that ignores a cancel (the only way to stop a task that blocks), and survives a task that
//! crashes the interpreter.
//!
//! A [`Runner`] owns the process through three small tasks: a stdout reader that turns protocol
//! lines into [`RunnerEvent`]s, a stderr reader that turns log lines into `tracing` events
//! (target `pyoco_runner`), and a stdin writer fed by [`Runner::send`]. A fourth task reaps the
//! process and publishes its exit status, so [`Runner::kill`] and [`Runner::exit_status`] never
//! need `&mut` access to the child.
//!
//! # Orphans
//!
//! A runner must not outlive the worker. Each runner runs in its own process group (so a
//! terminal's Ctrl-C reaches only the worker, which then decides, and [`Runner::kill`] takes the
//! task's own subprocesses with it), is killed when its handle is dropped (`kill_on_drop`), and on
//! Linux is spawned with `PR_SET_PDEATHSIG = SIGKILL` (all set up by `pyoco-process`). That flag
//! fires when the *thread* that forked the child exits (`pyoco-process` explains it), so runners
//! are only ever spawned from async tasks, i.e. from tokio worker threads (or the `block_on`
//! thread), which live as long as the runtime — never from `spawn_blocking` or inside
//! `block_in_place`. The runner itself also exits when its stdin closes or its parent
//! disappears.

use std::{
    collections::VecDeque,
    io,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use indexmap::IndexMap;
use pyoco_wire::{JobMessage, RunStatus, TaskRecord, TaskState};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::Command,
    sync::{mpsc, watch, Notify},
};

/// The runner script, embedded in the binary and written to disk at startup
/// ([`install_runner_script`]).
pub const RUNNER_SOURCE: &str = include_str!("../python/pyoco_runner.py");

/// File name of the installed runner script.
pub const RUNNER_FILE_NAME: &str = "pyoco_runner.py";

/// Protocol version this crate speaks (`ready.protocol`).
pub const PROTOCOL_VERSION: u64 = 1;

/// Last stderr lines kept for error messages (a runner that dies before `ready`).
const STDERR_TAIL_LINES: usize = 20;

/// Write [`RUNNER_SOURCE`] to `dir/pyoco_runner.py` (creating `dir`) unless the file already has
/// exactly that content, and return its path. The write goes through a temporary file and a
/// rename, so a second worker sharing the directory never sees a half-written script.
pub fn install_runner_script(dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(RUNNER_FILE_NAME);
    if std::fs::read(&path).is_ok_and(|have| have == RUNNER_SOURCE.as_bytes()) {
        return Ok(path);
    }
    let tmp = dir.join(format!(
        ".{RUNNER_FILE_NAME}.{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&tmp, RUNNER_SOURCE)?;
    std::fs::rename(&tmp, &path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(path)
}

/// How to start a runner.
#[derive(Debug, Clone)]
pub struct RunnerSpec {
    /// Interpreter that can import `pyoco`.
    pub python: PathBuf,
    /// The installed `pyoco_runner.py`.
    pub script: PathBuf,
    /// Working directory (a scratch dir: pyoco creates `./artifacts` there on every run).
    pub cwd: PathBuf,
    /// Extra environment on top of the worker's (`PYOCO_DISCOVERY_MODULES`,
    /// `PYOCO_FLOW_RESOLVER`, `PYTHONPATH`, …).
    pub env: Vec<(String, String)>,
    /// How long the runner may take to import pyoco and say `ready`.
    pub ready_timeout: Duration,
}

/// Why a runner could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot start the pyoco runner with {python}: {source} (set PYOCO_PYTHON to an interpreter that has pyoco installed)")]
    Spawn {
        python: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the pyoco runner ({python}) cannot import pyoco: {error} (install pyoco into that interpreter, or set PYOCO_PYTHON)")]
    Fatal { python: PathBuf, error: String },
    #[error("the pyoco runner ({python}) exited before it was ready ({exit}){}", stderr_suffix(.stderr))]
    ExitedBeforeReady {
        python: PathBuf,
        exit: String,
        stderr: Vec<String>,
    },
    #[error("the pyoco runner ({python}) did not say ready within {timeout:?}{}", stderr_suffix(.stderr))]
    ReadyTimeout {
        python: PathBuf,
        timeout: Duration,
        stderr: Vec<String>,
    },
    #[error(
        "the pyoco runner ({python}) speaks protocol {got}, this worker speaks {PROTOCOL_VERSION}"
    )]
    Protocol { python: PathBuf, got: u64 },
}

fn stderr_suffix(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; its last output:\n  {}", lines.join("\n  "))
    }
}

/// The runner's `ready` event.
#[derive(Debug, Clone, Deserialize)]
pub struct ReadyInfo {
    #[serde(default)]
    pub protocol: u64,
    #[serde(default)]
    pub runner: String,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub python: String,
    #[serde(default)]
    pub pyoco: String,
    #[serde(default)]
    pub cwd: String,
    #[serde(default)]
    pub flow_resolver: Option<String>,
}

/// `run_started`: the flow was built and the engine starts.
#[derive(Debug, Clone, Deserialize)]
pub struct RunStarted {
    pub run_id: String,
    #[serde(default)]
    pub flow_name: Option<String>,
    pub status: RunStatus,
    #[serde(default)]
    pub graph_mode: Option<String>,
    #[serde(default)]
    pub tasks: IndexMap<String, TaskState>,
    #[serde(default)]
    pub task_records: IndexMap<String, TaskRecord>,
    #[serde(default)]
    pub start_time: Option<f64>,
    /// The flow's dependencies, `[upstream, downstream]` (null for a very large flow).
    #[serde(default)]
    pub edges: Option<Vec<[String; 2]>>,
}

/// `task_finished`: pyoco finalised a task's record.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskFinished {
    pub run_id: String,
    pub task: String,
    pub state: TaskState,
    #[serde(default)]
    pub at: Option<f64>,
    #[serde(default)]
    pub duration_ms: Option<f64>,
    #[serde(default)]
    pub error: Option<String>,
    /// The task's whole record (inputs, output, traceback, captured output), as `run_finished`
    /// will report it; absent for a task cancelled before it started.
    #[serde(default)]
    pub record: Option<TaskRecord>,
}

/// `snapshot`: the whole task state of a run in progress (sent after an accepted cancel).
#[derive(Debug, Clone, Deserialize)]
pub struct RunProgress {
    pub run_id: String,
    pub status: RunStatus,
    #[serde(default)]
    pub tasks: IndexMap<String, TaskState>,
    #[serde(default)]
    pub task_records: IndexMap<String, TaskRecord>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub start_time: Option<f64>,
    #[serde(default)]
    pub end_time: Option<f64>,
}

/// `run_finished`: the last event of a run (PROTOCOL.md §3.2).
#[derive(Debug, Clone, Deserialize)]
pub struct RunFinished {
    pub run_id: String,
    #[serde(default)]
    pub flow_name: Option<String>,
    pub status: RunStatus,
    #[serde(default)]
    pub error: Option<String>,
    /// PROTOCOL.md §3.5: `execution_error`, `flow_not_found`, `invalid_workflow`, …
    #[serde(default)]
    pub error_kind: Option<String>,
    #[serde(default)]
    pub tasks: IndexMap<String, TaskState>,
    #[serde(default)]
    pub task_records: IndexMap<String, TaskRecord>,
    #[serde(default)]
    pub start_time: Option<f64>,
    #[serde(default)]
    pub end_time: Option<f64>,
    #[serde(default)]
    pub cancel_requested: bool,
    #[serde(default)]
    pub graph_mode: Option<String>,
    #[serde(default)]
    pub traceback: Option<String>,
    #[serde(default)]
    pub unattributed: Map<String, Value>,
    /// Live log counts (PROTOCOL.md §5.1); absent when the live log is off.
    #[serde(default)]
    pub log: Option<LogCounts>,
}

/// `run_finished.log`: what the runner sent and dropped of the run's live log.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LogCounts {
    #[serde(default)]
    pub lines: u64,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub dropped_lines: u64,
    #[serde(default)]
    pub dropped_bytes: u64,
}

/// `log`: a batch of live log lines (PROTOCOL.md §5.1), each `[ts, stream, task, line]`.
#[derive(Debug, Clone, Deserialize)]
pub struct LogBatch {
    pub run_id: String,
    pub lines: Vec<(f64, String, Option<String>, String)>,
    #[serde(default)]
    pub dropped_lines: u64,
    #[serde(default)]
    pub dropped_bytes: u64,
}

/// One line of the runner's stdout.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunnerEvent {
    Ready(ReadyInfo),
    Fatal {
        error: String,
    },
    Pong {
        #[serde(default)]
        busy: bool,
        #[serde(default)]
        run_id: Option<String>,
    },
    CancelAck {
        #[serde(default)]
        run_id: Value,
        #[serde(default)]
        result: String,
    },
    Error {
        #[serde(default)]
        error: String,
    },
    Bye,
    RunStarted(RunStarted),
    TaskStarted {
        run_id: String,
        task: String,
        #[serde(default)]
        at: Option<f64>,
    },
    TaskFinished(Box<TaskFinished>),
    Snapshot(RunProgress),
    RunFinished(Box<RunFinished>),
    Log(LogBatch),
    /// A line that is not a valid event (`event_type` = its `type`, when readable).
    #[serde(skip)]
    Malformed {
        event_type: Option<String>,
        error: String,
    },
    /// A `type` this version does not know.
    #[serde(other)]
    Unknown,
}

impl RunnerEvent {
    fn parse(line: &[u8]) -> RunnerEvent {
        match serde_json::from_slice::<RunnerEvent>(line) {
            Ok(ev) => ev,
            Err(err) => RunnerEvent::Malformed {
                event_type: serde_json::from_slice::<Value>(line)
                    .ok()
                    .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string)),
                error: err.to_string(),
            },
        }
    }

    /// The run this event belongs to, for run events.
    pub fn run_id(&self) -> Option<&str> {
        match self {
            RunnerEvent::RunStarted(e) => Some(&e.run_id),
            RunnerEvent::TaskStarted { run_id, .. } => Some(run_id),
            RunnerEvent::TaskFinished(e) => Some(&e.run_id),
            RunnerEvent::Snapshot(e) => Some(&e.run_id),
            RunnerEvent::RunFinished(e) => Some(&e.run_id),
            RunnerEvent::Log(e) => Some(&e.run_id),
            _ => None,
        }
    }
}

/// The `run` request for `job`: the job message as is, plus `"type": "run"` (the runner ignores
/// fields it does not know).
pub fn run_request(job: &JobMessage) -> Vec<u8> {
    let mut value = serde_json::to_value(job).unwrap_or_else(|_| Value::Object(Map::new()));
    if let Value::Object(map) = &mut value {
        map.insert("type".into(), Value::from("run"));
        // Not used by the runner; keeps the line short.
        map.remove("submitted_at");
    }
    line(&value)
}

/// The `cancel` request for `run_id`.
pub fn cancel_request(run_id: &str) -> Vec<u8> {
    line(&serde_json::json!({"type": "cancel", "run_id": run_id}))
}

fn line(value: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(value).unwrap_or_default();
    out.push(b'\n');
    out
}

/// How a process ended, for messages: `exit code 3`, `signal 9`.
pub fn describe_exit(status: &ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("signal {sig}");
        }
    }
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => status.to_string(),
    }
}

/// A running runner process.
#[derive(Debug)]
pub struct Runner {
    pid: u32,
    python: PathBuf,
    info: ReadyInfo,
    events: mpsc::Receiver<RunnerEvent>,
    requests: mpsc::UnboundedSender<Vec<u8>>,
    exit: watch::Receiver<Option<String>>,
    kill: Arc<Notify>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl Runner {
    /// Start a runner and wait until it is ready (pyoco imported).
    ///
    /// Call only from an async task (a tokio worker thread), never from `spawn_blocking`: see the
    /// module docs on `PR_SET_PDEATHSIG`.
    pub async fn spawn(spec: &RunnerSpec) -> Result<Runner, RunnerError> {
        let mut cmd = Command::new(&spec.python);
        cmd.arg("-u")
            .arg(&spec.script)
            .current_dir(&spec.cwd)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Own process group (Ctrl-C in the terminal reaches only the worker; `kill()` takes the
        // group) and, on Linux, killed with the spawning thread (module docs, "Orphans").
        pyoco_process::tie_to_parent(cmd.as_std_mut());
        let mut child = cmd.spawn().map_err(|source| RunnerError::Spawn {
            python: spec.python.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");

        // Bounded: a task writing faster than its lines can be published waits in its
        // runner's stdout pipe instead of growing the worker (PROTOCOL.md §5.1).
        let (event_tx, mut events) = mpsc::channel(EVENT_QUEUE);
        let (request_tx, request_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let (exit_tx, exit) = watch::channel(None);
        let kill = Arc::new(Notify::new());
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));

        tokio::spawn(read_events(stdout, event_tx, pid));
        tokio::spawn(read_stderr(stderr, stderr_tail.clone(), pid));
        tokio::spawn(write_requests(stdin, request_rx, pid));
        tokio::spawn(reap(child, kill.clone(), exit_tx, pid));

        let python = spec.python.clone();
        let tail = |t: &Arc<Mutex<VecDeque<String>>>| -> Vec<String> {
            t.lock()
                .map(|q| q.iter().cloned().collect())
                .unwrap_or_default()
        };
        let ready = tokio::time::timeout(spec.ready_timeout, async {
            loop {
                match events.recv().await {
                    Some(RunnerEvent::Ready(info)) => return Ok(info),
                    Some(RunnerEvent::Fatal { error }) => {
                        return Err(RunnerError::Fatal {
                            python: python.clone(),
                            error,
                        })
                    }
                    Some(other) => {
                        tracing::debug!(pid, ?other, "runner event before ready ignored")
                    }
                    None => {
                        let mut exit_rx = exit.clone();
                        let status = exit_rx
                            .wait_for(Option::is_some)
                            .await
                            .map(|s| s.clone().unwrap_or_default())
                            .unwrap_or_else(|_| "unknown exit".into());
                        // Let the stderr reader catch up with the last lines.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        return Err(RunnerError::ExitedBeforeReady {
                            python: python.clone(),
                            exit: status,
                            stderr: tail(&stderr_tail),
                        });
                    }
                }
            }
        })
        .await;
        let kill_now = |kill: &Arc<Notify>| kill.notify_one();
        let info = match ready {
            Ok(Ok(info)) => info,
            Ok(Err(err)) => {
                kill_now(&kill);
                return Err(err);
            }
            Err(_) => {
                kill_now(&kill);
                return Err(RunnerError::ReadyTimeout {
                    python,
                    timeout: spec.ready_timeout,
                    stderr: tail(&stderr_tail),
                });
            }
        };
        if info.protocol != PROTOCOL_VERSION {
            kill_now(&kill);
            return Err(RunnerError::Protocol {
                python,
                got: info.protocol,
            });
        }
        tracing::debug!(
            pid,
            python = %info.python,
            pyoco = %info.pyoco,
            runner = %info.runner,
            "pyoco runner ready"
        );
        Ok(Runner {
            pid,
            python,
            info,
            events,
            requests: request_tx,
            exit,
            kill,
            stderr_tail,
        })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What the runner said when it was ready (Python and pyoco versions, …).
    pub fn info(&self) -> &ReadyInfo {
        &self.info
    }

    /// The interpreter this runner runs on.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Queue one request line (see [`run_request`], [`cancel_request`]). Returns false when the
    /// runner no longer reads requests.
    pub fn send(&self, line: Vec<u8>) -> bool {
        self.requests.send(line).is_ok()
    }

    /// The next event; `None` once the runner closed its stdout (it exited or is exiting).
    pub async fn next_event(&mut self) -> Option<RunnerEvent> {
        self.events.recv().await
    }

    /// Drop events left over from an earlier run (e.g. a late `cancel_ack`).
    pub fn drain_events(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            tracing::debug!(pid = self.pid, ?ev, "stale runner event dropped");
        }
    }

    /// How the process ended, once it has (`exit code N`, `signal 9`).
    pub fn exit_status(&self) -> Option<String> {
        self.exit.borrow().clone()
    }

    /// Wait until the process has ended and say how.
    pub async fn wait_exit(&mut self) -> String {
        let mut rx = self.exit.clone();
        let status = rx
            .wait_for(Option::is_some)
            .await
            .map(|s| s.clone().unwrap_or_default());
        status.unwrap_or_else(|_| "unknown exit".into())
    }

    /// True while the process runs and its protocol streams are open.
    pub fn is_alive(&self) -> bool {
        self.exit.borrow().is_none() && !self.requests.is_closed()
    }

    /// SIGKILL the runner's process group (the runner and whatever its tasks started).
    pub fn kill(&self) {
        self.kill.notify_one();
    }

    /// The last lines the runner wrote to stderr.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail
            .lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Ask the runner to exit (`shutdown`), and kill it if it has not within `grace`.
    pub async fn shutdown(mut self, grace: Duration) {
        self.send(line(&serde_json::json!({"type": "shutdown"})));
        if tokio::time::timeout(grace, self.wait_exit()).await.is_err() {
            tracing::warn!(
                pid = self.pid,
                "pyoco runner did not exit within {grace:?} after shutdown; killing it"
            );
            self.kill();
            let _ = tokio::time::timeout(Duration::from_secs(2), self.wait_exit()).await;
        }
    }
}

/// Longest event line the worker reads from a runner. The runner keeps its lines far below
/// (it replaces task values larger than the run snapshot limit, PROTOCOL.md §3.3); a longer
/// line is skipped without being held in memory and reported as [`RunnerEvent::Malformed`]
/// with the `type` its first bytes name (a `run_finished` then fails the run, not hangs it).
pub(crate) const MAX_EVENT_LINE_BYTES: usize = 64 * 1024 * 1024;

/// The line buffer keeps at most this much capacity between lines, so one big line does not
/// stay allocated for the runner's lifetime.
const KEPT_LINE_CAPACITY: usize = 256 * 1024;

/// Runner events read ahead of the worker (each at most one line of the runner's stdout).
const EVENT_QUEUE: usize = 64;

async fn read_events(stdout: tokio::process::ChildStdout, tx: mpsc::Sender<RunnerEvent>, pid: u32) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut lines = LineReader::new(MAX_EVENT_LINE_BYTES);
    loop {
        let ev = match lines.next(&mut reader).await {
            Ok(Line::Eof) => break,
            Ok(Line::Complete(line)) => {
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                let ev = RunnerEvent::parse(line);
                if let RunnerEvent::Malformed { error, .. } = &ev {
                    tracing::error!(
                        pid,
                        "unreadable line from the pyoco runner: {error}: {}",
                        String::from_utf8_lossy(&line[..line.len().min(300)])
                    );
                }
                ev
            }
            Ok(Line::TooLong { head, len }) => {
                let error = format!(
                    "the runner sent an event line of {len} bytes or more, over the worker's limit of {MAX_EVENT_LINE_BYTES}"
                );
                tracing::error!(pid, "{error}: {}", String::from_utf8_lossy(&head));
                RunnerEvent::Malformed {
                    event_type: event_type_of_head(&head),
                    error,
                }
            }
            Err(err) => {
                tracing::error!(pid, "reading the pyoco runner's stdout failed: {err}");
                break;
            }
        };
        if tx.send(ev).await.is_err() {
            break;
        }
    }
}

/// One line read by [`LineReader`].
#[derive(Debug)]
enum Line<'a> {
    Complete(&'a [u8]),
    /// Over the limit: its first bytes, and how many bytes were skipped in all.
    TooLong {
        head: Vec<u8>,
        len: usize,
    },
    Eof,
}

/// Newline-terminated lines of at most `max` bytes; a longer one is skipped as it arrives
/// (never buffered whole).
struct LineReader {
    buf: Vec<u8>,
    max: usize,
}

impl LineReader {
    fn new(max: usize) -> LineReader {
        LineReader {
            buf: Vec::with_capacity(4096),
            max,
        }
    }

    async fn next<R: tokio::io::AsyncBufRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> io::Result<Line<'_>> {
        if self.buf.capacity() > KEPT_LINE_CAPACITY {
            self.buf = Vec::with_capacity(4096);
        }
        self.buf.clear();
        let mut skipped: Option<(Vec<u8>, usize)> = None;
        loop {
            let chunk = reader.fill_buf().await?;
            if chunk.is_empty() {
                // EOF: a last line without a newline still counts.
                return Ok(match skipped {
                    Some((head, len)) => Line::TooLong { head, len },
                    None if self.buf.is_empty() => Line::Eof,
                    None => Line::Complete(&self.buf),
                });
            }
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            match skipped.as_mut() {
                Some((_, len)) => *len += take,
                None if self.buf.len() + take > self.max => {
                    let head = self.buf[..self.buf.len().min(300)].to_vec();
                    skipped = Some((head, self.buf.len() + take));
                    self.buf = Vec::with_capacity(4096);
                }
                None => self.buf.extend_from_slice(&chunk[..take]),
            }
            reader.consume(take);
            if done {
                return Ok(match skipped {
                    Some((head, len)) => Line::TooLong { head, len },
                    None => Line::Complete(&self.buf),
                });
            }
        }
    }
}

/// The `type` a protocol line's first bytes name (`{"type":"run_finished",…`: the runner
/// writes `type` first).
fn event_type_of_head(head: &[u8]) -> Option<String> {
    let rest = head.strip_prefix(b"{\"type\":\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok().map(str::to_string)
}

async fn read_stderr(
    stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
    pid: u32,
) {
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                log_stderr_line(pid, &line);
                if let Ok(mut t) = tail.lock() {
                    if t.len() == STDERR_TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
            Ok(None) => break,
            Err(err) => {
                // Not UTF-8: keep reading is not possible with `lines`; say so once.
                tracing::warn!(pid, "reading the pyoco runner's stderr failed: {err}");
                break;
            }
        }
    }
}

/// `pyoco_runner LEVEL: message` lines are the runner's own diagnostics; anything else is
/// output of tasks or imported modules passed through.
fn log_stderr_line(pid: u32, line: &str) {
    let diag = line.strip_prefix("pyoco_runner ").and_then(|rest| {
        let (level, msg) = rest.split_once(": ")?;
        Some((level, msg))
    });
    match diag {
        Some(("ERROR", msg)) => tracing::error!(target: "pyoco_runner", pid, "{msg}"),
        Some(("WARNING", msg)) => tracing::warn!(target: "pyoco_runner", pid, "{msg}"),
        Some((_, msg)) => tracing::info!(target: "pyoco_runner", pid, "{msg}"),
        None => tracing::info!(target: "pyoco_runner::output", pid, "{line}"),
    }
}

async fn write_requests(
    mut stdin: tokio::process::ChildStdin,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    pid: u32,
) {
    while let Some(line) = rx.recv().await {
        let written = async {
            stdin.write_all(&line).await?;
            stdin.flush().await
        }
        .await;
        if let Err(err) = written {
            tracing::debug!(pid, "pyoco runner stopped reading requests: {err}");
            break;
        }
    }
    // Dropping stdin closes it: the runner finishes queued runs and exits.
}

async fn reap(
    mut child: tokio::process::Child,
    kill: Arc<Notify>,
    exit_tx: watch::Sender<Option<String>>,
    pid: u32,
) {
    let status = tokio::select! {
        status = child.wait() => status,
        _ = kill.notified() => {
            // The runner's guard (PROTOCOL.md §1.3) kills every process the tasks started —
            // also those in other sessions, which the group kill misses — when it gets
            // SIGTERM; SIGKILL for the group if it has not exited within a second.
            terminate(pid);
            match tokio::time::timeout(GUARD_EXIT_WAIT, child.wait()).await {
                Ok(status) => {
                    kill_group(&mut child, pid); // whatever is left in the group
                    status
                }
                Err(_) => {
                    kill_group(&mut child, pid);
                    child.wait().await
                }
            }
        }
    };
    let text = match status {
        Ok(status) => describe_exit(&status),
        Err(err) => format!("unknown exit ({err})"),
    };
    tracing::debug!(pid, exit = %text, "pyoco runner exited");
    let _ = exit_tx.send(Some(text));
}

/// How long a killed runner's guard gets to clean up after SIGTERM before the group is
/// SIGKILLed.
const GUARD_EXIT_WAIT: Duration = Duration::from_secs(1);

fn terminate(pid: u32) {
    #[cfg(unix)]
    {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Ok(raw) = i32::try_from(pid) {
            if raw > 0 {
                let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = pid;
}

fn kill_group(child: &mut tokio::process::Child, pid: u32) {
    #[cfg(unix)]
    {
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        if let Ok(raw) = i32::try_from(pid) {
            if raw > 0 {
                let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
    }
    let _ = child.start_kill();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_and_unknown_types_are_tolerated() {
        let ev =
            RunnerEvent::parse(br#"{"type":"task_started","run_id":"r","task":"t1","at":1.5}"#);
        assert!(matches!(ev, RunnerEvent::TaskStarted { ref task, .. } if task == "t1"));
        assert_eq!(ev.run_id(), Some("r"));
        let ev = RunnerEvent::parse(br#"{"type":"brand_new","x":1}"#);
        assert!(matches!(ev, RunnerEvent::Unknown));
        let ev = RunnerEvent::parse(br#"{"type":"run_finished","run_id":"r"}"#);
        assert!(
            matches!(ev, RunnerEvent::Malformed { event_type: Some(ref t), .. } if t == "run_finished")
        );
    }

    #[tokio::test]
    async fn an_over_long_line_is_skipped_as_it_arrives_and_names_its_type() {
        let big = format!(
            "{{\"type\":\"run_finished\",\"x\":\"{}\"}}\n",
            "y".repeat(5000)
        );
        let input = format!("{{\"a\":1}}\n{big}{{\"b\":2}}\nlast");
        // A small read buffer: the long line arrives in many chunks.
        let mut reader = BufReader::with_capacity(64, input.as_bytes());
        let mut lines = LineReader::new(1000);
        assert!(
            matches!(lines.next(&mut reader).await.unwrap(), Line::Complete(l) if l == b"{\"a\":1}\n")
        );
        match lines.next(&mut reader).await.unwrap() {
            Line::TooLong { head, len } => {
                assert_eq!(len, big.len());
                assert!(head.len() <= 300);
                assert_eq!(event_type_of_head(&head).as_deref(), Some("run_finished"));
            }
            other => panic!("{other:?}"),
        }
        assert!(lines.buf.capacity() <= 4096);
        assert!(
            matches!(lines.next(&mut reader).await.unwrap(), Line::Complete(l) if l == b"{\"b\":2}\n")
        );
        assert!(
            matches!(lines.next(&mut reader).await.unwrap(), Line::Complete(l) if l == b"last")
        );
        assert!(matches!(lines.next(&mut reader).await.unwrap(), Line::Eof));
        assert_eq!(event_type_of_head(b"{\"a\":1}"), None);
    }

    #[tokio::test]
    async fn a_big_line_under_the_limit_does_not_stay_allocated() {
        let input = format!("{}\nsmall\n", "z".repeat(1 << 20));
        let mut reader = BufReader::new(input.as_bytes());
        let mut lines = LineReader::new(MAX_EVENT_LINE_BYTES);
        assert!(
            matches!(lines.next(&mut reader).await.unwrap(), Line::Complete(l) if l.len() == (1 << 20) + 1)
        );
        assert!(
            matches!(lines.next(&mut reader).await.unwrap(), Line::Complete(l) if l == b"small\n")
        );
        assert!(lines.buf.capacity() <= KEPT_LINE_CAPACITY);
    }

    #[test]
    fn run_finished_carries_records_and_error_kind() {
        let ev = RunnerEvent::parse(
            br#"{"type":"run_finished","run_id":"r","flow_name":"main","status":"FAILED","error":"kaboom","error_kind":"execution_error","tasks":{"t1":"FAILED","t2":"PENDING"},"task_records":{"t1":{"state":"FAILED","started_at":1.0,"ended_at":2.0,"duration_ms":1000.0,"error":"kaboom","traceback":"tb","inputs":{},"output":null,"artifacts":{},"stdout":"","stderr":""}},"start_time":1.0,"end_time":2.0,"cancel_requested":false,"graph_mode":"expression","traceback":"tb","unattributed":{"stdout":"","stderr":""}}"#,
        );
        let RunnerEvent::RunFinished(f) = ev else {
            panic!("not run_finished: {ev:?}")
        };
        assert_eq!(f.status, RunStatus::Failed);
        assert_eq!(f.error_kind.as_deref(), Some("execution_error"));
        assert_eq!(f.tasks["t2"], TaskState::Pending);
        assert_eq!(f.task_records["t1"].extra["stdout"], "");
    }

    #[test]
    fn run_request_is_the_job_plus_type() {
        let job = JobMessage::decode(
            br#"{"run_id":"r1","flow_name":"main","tag":"cpu","params":{"x":1},"workflow_yaml":"flow: {graph: a}","submitted_at":2}"#,
            "default",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&run_request(&job)).unwrap();
        assert_eq!(v["type"], "run");
        assert_eq!(v["run_id"], "r1");
        assert_eq!(v["params"]["x"], 1);
        assert_eq!(v["workflow_yaml"], "flow: {graph: a}");
        assert!(run_request(&job).ends_with(b"\n"));
    }

    #[cfg(unix)]
    #[test]
    fn exits_are_described_by_signal_or_code() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(describe_exit(&ExitStatus::from_raw(9)), "signal 9");
        assert_eq!(describe_exit(&ExitStatus::from_raw(3 << 8)), "exit code 3");
    }

    #[test]
    fn installing_the_script_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let p1 = install_runner_script(&dir.path().join("runner")).unwrap();
        let p2 = install_runner_script(&dir.path().join("runner")).unwrap();
        assert_eq!(p1, p2);
        assert_eq!(std::fs::read_to_string(p1).unwrap(), RUNNER_SOURCE);
    }
}
