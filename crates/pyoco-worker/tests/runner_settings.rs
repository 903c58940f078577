//! The runner's settings (`PYOCO_FLOW_RESOLVER`, `PYOCO_RUNNER_MAX_TASK_OUTPUT_BYTES`,
//! `PYOCO_RUNNER_TEE_TASK_OUTPUT`) set in a `.env` reach the runners through
//! `WorkerConfig::from_settings`, like every other setting: the runner reports them in its
//! `ready` event (PROTOCOL.md §3.1) and runs follow them.

mod common;

use std::{path::Path, time::Duration};

use common::Harness;
use pyoco_config::{LoadOptions, Settings};
use pyoco_store::StoreConfig;
use pyoco_wire::RunStatus;
use pyoco_worker::{RunnerPool, RunnerSpec, WorkerConfig};

const T: Duration = Duration::from_secs(30);

/// A file resolver: `shouty` is one task printing 100 bytes.
const RESOLVER_PY: &str = r#"
from pyoco import task
from pyoco.core.models import Flow

@task
def shout():
    print("y" * 100, end="")
    return "shouted"

def resolve(name):
    if name == "shouty":
        flow = Flow(name="shouty")
        flow >> shout
        return flow
    raise KeyError(name)
"#;

/// Settings of a worker started in `dir` whose `.env` sets the runner's settings (the resolver
/// by a path relative to `dir`); the process environment snapshot has only the test's basics.
fn settings_from_dotenv(dir: &Path, data_dir: &Path) -> Settings {
    std::fs::create_dir_all(dir.join("flows")).unwrap();
    std::fs::write(dir.join("flows").join("resolver.py"), RESOLVER_PY).unwrap();
    std::fs::write(
        dir.join(".env"),
        "PYOCO_FLOW_RESOLVER=flows/resolver.py:resolve\n\
         PYOCO_RUNNER_MAX_TASK_OUTPUT_BYTES=10\n\
         PYOCO_RUNNER_TEE_TASK_OUTPUT=true\n\
         PYOCO_WORKER_ID=test-worker\n",
    )
    .unwrap();
    let env = [
        ("PYOCO_DATA_DIR", data_dir.display().to_string()),
        (
            "PYOCO_PYTHON",
            pyoco_testkit::python().display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Settings::load(&LoadOptions {
        env,
        cwd: dir.to_path_buf(),
        home: None,
    })
    .expect("settings with the .env")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_settings_from_a_dotenv_are_what_the_runner_reports_ready_with() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_from_dotenv(dir.path(), &dir.path().join("data"));
    let config = WorkerConfig::from_settings(&settings).unwrap();
    let script = pyoco_worker::install_runner_script(&dir.path().join("runner")).unwrap();
    let pool = RunnerPool::start(
        RunnerSpec {
            python: config.python.clone(),
            script,
            cwd: dir.path().to_path_buf(),
            env: config.runner_env.clone(),
            ready_timeout: Duration::from_secs(60),
        },
        1,
    )
    .await
    .expect("the runner starts");
    let mut lease = pool.take_idle().pop().expect("one idle runner");
    let resolver = format!(
        "{}:resolve",
        dir.path().join("flows").join("resolver.py").display()
    );
    assert_eq!(
        lease.runner().info().flow_resolver.as_deref(),
        Some(resolver.as_str()),
        "the .env's resolver, its relative path made absolute"
    );
    lease.give_back();
    pool.shutdown().await;
}

/// A resolver-path run (no flow.yaml) is resolved by the `.env`'s resolver, and its task's
/// output is cut at the `.env`'s 10 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_and_an_output_limit_from_a_dotenv_apply_to_runs() {
    let mut h = Harness::new(StoreConfig::default()).await;
    let cwd = h.dir.path().join("cwd");
    let settings = settings_from_dotenv(&cwd, &h.dir.path().join("data"));
    h.start_worker(|cfg| *cfg = WorkerConfig::from_settings(&settings).unwrap())
        .await;

    let run_id = h.submit_named("shouty").await;
    let s = h.wait_terminal(&run_id, T).await;
    assert_eq!(s.status, RunStatus::Completed, "{s:?}");
    let stdout = s.task_records["shout"].extra["stdout"].as_str().unwrap();
    assert_eq!(stdout, "yyyyyyyyyy\u{2026}[truncated 90 bytes]");
    h.stop_worker().await.unwrap();
}
