//! THE table: every `PYOCO_*` setting, once. Adding a setting is one entry here; the typed
//! `Settings` field, the validation, `--help` text, the settings window and
//! `docs/configuration.md` all follow from it (then run
//! `PYOCO_UPDATE_DOCS=1 cargo test -p pyoco-config` to regenerate the docs).
//!
//! Entry: `field: RustType = VARIABLE_NAME { group, kind, default, [appliance_default,] scope,
//! restarts, help }` — a setting's whole policy:
//!
//! - `default`: the value when the setting is not set (`None`: unset);
//! - `appliance_default` (only where it differs): what the local appliance (`pyoco-server up
//!   --with-nats`, the desktop app) uses instead when the setting is not set, applied by
//!   [`Settings::with_appliance_defaults`];
//! - `scope`: who reads it, and so whether "export" writes it ([`Scope`]);
//! - `restarts`: what a change restarts in the running appliance ([`Restarts`]).
//!
//! The Rust type must match the kind: text kinds ⇒ `String`, `Interval`/`Seconds` ⇒ `f64`,
//! `Integer` ⇒ `u64`, `Port` ⇒ `u16`, `Bool` ⇒ `bool`, `Tags` ⇒ `Vec<String>`, path kinds ⇒
//! `PathBuf`, the enum kinds ⇒ their enum; wrap it in `Option` when `default` is `None`.
//! (A mismatch is caught by the `defaults_load` test, one in an appliance default by
//! `appliance_defaults_load`.)

use std::path::PathBuf;

use crate::source::Effective;
use crate::spec::{Group, Kind, Restarts, Scope, Spec};
use crate::value::{AuthMode, Base, DashboardLang, FromValue, LogFormat, LogLevel, Value};

/// Every setting, in table order (grouped, groups in [`Group::ALL`] order).
pub fn specs() -> &'static [Spec] {
    SPECS
}

/// The setting called `name` (exact, case-sensitive), if there is one.
pub fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// `Some(literal)` for a field given in a row, `None` for one left out.
macro_rules! optional {
    () => {
        None
    };
    ($value:literal) => {
        Some($value)
    };
}

macro_rules! settings_table {
    ($(
        $field:ident: $ty:ty = $name:ident {
            group: $group:ident,
            kind: $kind:expr,
            default: $default:expr,
            $(appliance_default: $appliance:literal,)?
            scope: $scope:ident,
            restarts: $restarts:ident,
            help: $help:literal $(,)?
        }
    ),* $(,)?) => {
        pub(crate) static SPECS: &[Spec] = &[$(
            Spec {
                name: stringify!($name),
                group: Group::$group,
                kind: $kind,
                default: $default,
                appliance_default: optional!($($appliance)?),
                help: $help,
                scope: Scope::$scope,
                restarts: Restarts::$restarts,
                secret: matches!($kind, Kind::Secret),
            },
        )*];

        /// Every setting, typed and validated. Built by [`Settings::load`] or
        /// [`Settings::resolve`]; each value also keeps its text and [`Source`](crate::Source)
        /// (see [`Settings::raw`], [`Settings::source`]).
        #[derive(Clone)]
        #[non_exhaustive]
        pub struct Settings {
            $(
                #[doc = concat!("`", stringify!($name), "`: ", $help)]
                pub $field: $ty,
            )*
            /// Text and source of each setting, in table order.
            pub(crate) effective: Vec<Effective>,
            /// Where relative paths and `~` of those texts point.
            pub(crate) base: Base,
        }

        impl Settings {
            /// Moves validated values (in table order) into the typed fields. `Err` names a
            /// setting whose value is missing or of the wrong type: a table bug, not user input.
            pub(crate) fn from_values(
                values: Vec<Option<Value>>,
                effective: Vec<Effective>,
                base: Base,
            ) -> Result<Settings, &'static str> {
                let mut values = values.into_iter();
                $(
                    let Some($field) = <$ty as FromValue>::from_value(values.next().flatten())
                    else {
                        return Err(stringify!($name));
                    };
                )*
                Ok(Settings { $($field,)* effective, base })
            }

            /// Replace one typed value (`name` is the variable). `Err` names a setting whose
            /// value is of the wrong type, or an unknown name: a table bug, not user input.
            pub(crate) fn set_value(
                &mut self,
                name: &str,
                value: Option<Value>,
            ) -> Result<(), &'static str> {
                match name {
                    $(
                        stringify!($name) => {
                            self.$field = <$ty as FromValue>::from_value(value)
                                .ok_or(stringify!($name))?;
                        }
                    )*
                    _ => return Err("an unknown setting"),
                }
                Ok(())
            }
        }

        impl std::fmt::Debug for Settings {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut d = f.debug_struct("Settings");
                $(
                    if matches!($kind, Kind::Secret) {
                        let set = SPECS
                            .iter()
                            .zip(&self.effective)
                            .any(|(s, e)| s.name == stringify!($name) && e.raw.is_some());
                        let shown: Option<&str> = set.then_some("<secret>");
                        d.field(stringify!($field), &shown);
                    } else {
                        d.field(stringify!($field), &self.$field);
                    }
                )*
                d.finish_non_exhaustive()
            }
        }
    };
}

settings_table! {
    // ── NATS ────────────────────────────────────────────────────────────────────────────────
    nats_url: String = PYOCO_NATS_URL {
        group: Nats, kind: Kind::NatsUrl, default: Some("nats://127.0.0.1:4222"), scope: Server,
        restarts: GatewayAndWorker,
        help: "NATS server URL; several servers of a cluster as a comma-separated list (each may carry its own `user:pass@`; the rest of the cluster is discovered). `tls://` requires TLS.",
    },
    nats_tls_ca_file: Option<PathBuf> = PYOCO_NATS_TLS_CA_FILE {
        group: Nats, kind: Kind::File, default: None, scope: Server,
        restarts: GatewayAndWorker,
        help: "PEM file of the CA(s) that signed the NATS servers' certificates (else the system's roots). Setting it turns TLS on.",
    },
    nats_tls_cert_file: Option<PathBuf> = PYOCO_NATS_TLS_CERT_FILE {
        group: Nats, kind: Kind::File, default: None, scope: Server,
        restarts: GatewayAndWorker,
        help: "PEM client certificate for servers that verify clients (`verify: true`); needs PYOCO_NATS_TLS_KEY_FILE. Turns TLS on.",
    },
    nats_tls_key_file: Option<PathBuf> = PYOCO_NATS_TLS_KEY_FILE {
        group: Nats, kind: Kind::File, default: None, scope: Server,
        restarts: GatewayAndWorker,
        help: "PEM private key of PYOCO_NATS_TLS_CERT_FILE.",
    },
    nats_tls_first: bool = PYOCO_NATS_TLS_FIRST {
        group: Nats, kind: Kind::Bool, default: Some("false"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Start with the TLS handshake before the server's INFO, for servers configured with `handshake_first` (they never answer a client that waits for INFO).",
    },
    nats_creds_file: Option<PathBuf> = PYOCO_NATS_CREDS_FILE {
        group: Nats, kind: Kind::File, default: None, scope: Server,
        restarts: GatewayAndWorker,
        help: "NATS credentials file (`.creds`: user JWT and nkey seed, as `nsc` writes it). Only one of the credentials settings may be set.",
    },
    nats_nkey_seed_file: Option<PathBuf> = PYOCO_NATS_NKEY_SEED_FILE {
        group: Nats, kind: Kind::File, default: None, scope: Server,
        restarts: GatewayAndWorker,
        help: "File holding a user nkey seed (`SU…`), for servers whose users are nkeys.",
    },
    nats_token: Option<String> = PYOCO_NATS_TOKEN {
        group: Nats, kind: Kind::Secret, default: None, scope: Server,
        restarts: GatewayAndWorker,
        help: "Token for servers with token authentication.",
    },
    nats_user: Option<String> = PYOCO_NATS_USER {
        group: Nats, kind: Kind::Text, default: None, scope: Server,
        restarts: GatewayAndWorker,
        help: "User name for servers with user/password authentication; with PYOCO_NATS_PASSWORD. A `user:pass@` in a URL wins for that server.",
    },
    nats_password: Option<String> = PYOCO_NATS_PASSWORD {
        group: Nats, kind: Kind::Secret, default: None, scope: Server,
        restarts: GatewayAndWorker,
        help: "Password of PYOCO_NATS_USER.",
    },
    jetstream_replicas: u64 = PYOCO_JETSTREAM_REPLICAS {
        group: Nats, kind: Kind::Replicas, default: Some("1"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Copies JetStream keeps of every stream, KV bucket and object store we create (3 on a 3-node cluster survives the loss of one node; at most the number of servers). Applied when a resource is created: an existing one keeps its count, with a warning.",
    },

    // ── Subjects & buckets ──────────────────────────────────────────────────────────────────
    work_subject_prefix: String = PYOCO_WORK_SUBJECT_PREFIX {
        group: SubjectsAndBuckets, kind: Kind::SubjectPrefix, default: Some("pyoco.work"),
        scope: Server,
        restarts: GatewayAndWorker,
        help: "Job subject prefix: jobs for tag T go to `<prefix>.T` (work stream subjects `<prefix>.>`).",
    },
    default_tag: String = PYOCO_DEFAULT_TAG {
        group: SubjectsAndBuckets, kind: Kind::Tag, default: Some("default"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Tag used when a run is submitted without one.",
    },
    runs_kv_bucket: String = PYOCO_RUNS_KV_BUCKET {
        group: SubjectsAndBuckets, kind: Kind::Name, default: Some("pyoco_runs"), scope: Server,
        restarts: GatewayAndWorker,
        help: "KV bucket holding run snapshots.",
    },
    workers_kv_bucket: String = PYOCO_WORKERS_KV_BUCKET {
        group: SubjectsAndBuckets, kind: Kind::Name, default: Some("pyoco_workers"), scope: Server,
        restarts: GatewayAndWorker,
        help: "KV bucket holding the worker registry.",
    },
    yaml_schedules_kv_bucket: String = PYOCO_YAML_SCHEDULES_KV_BUCKET {
        group: SubjectsAndBuckets, kind: Kind::Name, default: Some("pyoco_yaml_schedules"), scope: Server,
        restarts: Gateway,
        help: "KV bucket holding the schedules (`POST /schedules/yaml`; history 5, shared with pyoco-server 0.7 gateways).",
    },

    // ── Heartbeat ───────────────────────────────────────────────────────────────────────────
    run_heartbeat_interval_sec: f64 = PYOCO_RUN_HEARTBEAT_INTERVAL_SEC {
        group: Heartbeat, kind: Kind::Interval { floor: 0.1 }, default: Some("1.0"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Seconds between a running job's heartbeat writes and cancel checks.",
    },
    worker_heartbeat_interval_sec: f64 = PYOCO_WORKER_HEARTBEAT_INTERVAL_SEC {
        group: Heartbeat, kind: Kind::Interval { floor: 0.1 }, default: Some("5.0"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Seconds between a worker's registry updates.",
    },
    workers_kv_ttl_sec: f64 = PYOCO_WORKERS_KV_TTL_SEC {
        group: Heartbeat, kind: Kind::Seconds, default: Some("86400.0"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Max age of worker registry entries (applied when the bucket is created; 0 = no expiry); keep it above the disconnect timeout.",
    },
    worker_disconnect_timeout_sec: f64 = PYOCO_WORKER_DISCONNECT_TIMEOUT_SEC {
        group: Heartbeat, kind: Kind::Interval { floor: 0.0 }, default: Some("20.0"), scope: Server,
        restarts: GatewayAndWorker,
        help: "A worker not seen for this many seconds is shown as DISCONNECTED.",
    },
    cancel_grace_period_sec: f64 = PYOCO_CANCEL_GRACE_PERIOD_SEC {
        group: Heartbeat, kind: Kind::Seconds, default: Some("30.0"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Seconds a cancelled run may keep running before the worker stops it (0 disables).",
    },

    // ── Consumers ───────────────────────────────────────────────────────────────────────────
    consumer_ack_wait_sec: f64 = PYOCO_CONSUMER_ACK_WAIT_SEC {
        group: Consumers, kind: Kind::Interval { floor: 0.0 }, default: Some("30.0"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Consumer AckWait in seconds (applied when the consumer is created).",
    },
    consumer_max_deliver: u64 = PYOCO_CONSUMER_MAX_DELIVER {
        group: Consumers, kind: Kind::Integer { min: 1 }, default: Some("20"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Consumer MaxDeliver: how many times a job is delivered at most (applied when the consumer is created).",
    },
    consumer_max_ack_pending: u64 = PYOCO_CONSUMER_MAX_ACK_PENDING {
        group: Consumers, kind: Kind::Integer { min: 1 }, default: Some("200"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Consumer MaxAckPending: jobs in flight per consumer (applied when the consumer is created).",
    },
    ack_progress_interval_sec: f64 = PYOCO_ACK_PROGRESS_INTERVAL_SEC {
        group: Consumers, kind: Kind::Seconds, default: Some("10.0"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Seconds between in-progress ACKs of a running job (0 disables).",
    },

    // ── Worker ──────────────────────────────────────────────────────────────────────────────
    worker_id: String = PYOCO_WORKER_ID {
        group: Worker, kind: Kind::KvKey, default: Some("worker"), scope: Server,
        restarts: Worker,
        help: "This worker's id in the registry.",
    },
    worker_tags: Vec<String> = PYOCO_WORKER_TAGS {
        group: Worker, kind: Kind::Tags, default: None, scope: Server,
        restarts: Worker,
        help: "Comma-separated tags this worker takes jobs for; empty = PYOCO_DEFAULT_TAG.",
    },
    python: Option<PathBuf> = PYOCO_PYTHON {
        group: Worker, kind: Kind::Program, default: None, scope: Server,
        restarts: Worker,
        help: "Python interpreter for the worker's pyoco runner; empty = `<data dir>/venv/bin/python` if it exists, else `python3`.",
    },
    tasks_path: Vec<PathBuf> = PYOCO_TASKS_PATH {
        group: Worker, kind: Kind::Dirs, default: None, scope: Local,
        restarts: Worker,
        help: "Folders (separated by `:`) put on the local worker's PYTHONPATH, so task modules in them import without packaging: your project folder. Local only: production workers get task code from wheels or their own PYTHONPATH.",
    },
    discovery_modules: Option<String> = PYOCO_DISCOVERY_MODULES {
        group: Worker, kind: Kind::Text, default: None, scope: Server,
        restarts: Worker,
        help: "Extra task modules for pyoco's task loader (comma-separated), passed to the runner.",
    },
    task_modules: Vec<String> = PYOCO_TASK_MODULES {
        group: Worker, kind: Kind::Modules, default: None, scope: Server,
        restarts: GatewayAndWorker,
        help: "Python modules (or dotted prefixes) a flow's tasks may call; a flow naming another module is refused by the gateway (422) and failed by the worker. Empty: any importable module, as 0.5.1 (including `os:system`).",
    },
    flow_resolver: Option<String> = PYOCO_FLOW_RESOLVER {
        group: Worker, kind: Kind::FlowResolver, default: None, scope: Server,
        restarts: Worker,
        help: "Flow resolver for jobs without a flow.yaml, called as `function(flow_name)`: `module:function` or `path/file.py:function` (a relative path is taken from the working directory); empty = such jobs fail with `flow_not_found`. The `--flow-resolver` (pyoco-worker) and `--worker-flow-resolver` (pyoco-server) flags win; pyoco-server 0.5.1 has only the flag.",
    },
    runner_max_task_output_bytes: u64 = PYOCO_RUNNER_MAX_TASK_OUTPUT_BYTES {
        group: Worker, kind: Kind::Integer { min: 0 }, default: Some("65536"), scope: Server,
        restarts: Worker,
        help: "Bytes of stdout and of stderr kept per task in its run record (UTF-8); the rest is replaced by a `…[truncated N bytes]` marker (0 keeps only the marker).",
    },
    runner_tee_task_output: bool = PYOCO_RUNNER_TEE_TASK_OUTPUT {
        group: Worker, kind: Kind::Bool, default: Some("false"), scope: Server,
        restarts: Worker,
        help: "Also copy what tasks print to the worker's log (the task records keep it either way).",
    },
    runner_guard: bool = PYOCO_RUNNER_GUARD {
        group: Worker, kind: Kind::Bool, default: Some("true"), scope: Server,
        restarts: Worker,
        help: "Linux: each runner adopts every process its tasks start (even ones that call `setsid` or double-fork) and kills them when a run ends, is cancelled, or the runner or worker dies (kill -9 included). Off: only the runner's process group is stopped, as on macOS and Windows.",
    },
    worker_prefetch: bool = PYOCO_WORKER_PREFETCH {
        group: Worker, kind: Kind::Bool, default: Some("true"), scope: Server,
        restarts: Worker,
        help: "While every runner is busy with short runs (under 100 ms on average), fetch the next job ahead and read its run, so it starts the moment a runner is free. A job fetched ahead that waits 500 ms (a run turned out long) goes back to the queue for another worker (one more delivery). Off: a job is fetched only for an idle runner.",
    },

    // ── DLQ ─────────────────────────────────────────────────────────────────────────────────
    dlq_stream: String = PYOCO_DLQ_STREAM {
        group: Dlq, kind: Kind::Name, default: Some("PYOCO_DLQ"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Dead-letter stream name.",
    },
    dlq_subject_prefix: String = PYOCO_DLQ_SUBJECT_PREFIX {
        group: Dlq, kind: Kind::SubjectPrefix, default: Some("pyoco.dlq"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Dead-letter subject prefix.",
    },
    dlq_publish_execution_error: bool = PYOCO_DLQ_PUBLISH_EXECUTION_ERROR {
        group: Dlq, kind: Kind::Bool, default: Some("true"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Also publish failed runs (`execution_error`) to the DLQ.",
    },
    dlq_replays_kv_bucket: String = PYOCO_DLQ_REPLAYS_KV_BUCKET {
        group: Dlq, kind: Kind::Name, default: Some("pyoco_dlq_replays"), scope: Server,
        restarts: Gateway,
        help: "KV bucket recording the replays of dead letters (`POST /dlq/{id}/replay`, ours); entries live as long as the DLQ's.",
    },
    workflows_kv_bucket: String = PYOCO_WORKFLOWS_KV_BUCKET {
        group: Dlq, kind: Kind::Name, default: Some("pyoco_workflows"), scope: Server,
        restarts: Gateway,
        help: "KV bucket where the gateway keeps each submitted flow.yaml by its SHA-256 (ours), so a dead letter of a flow.yaml run can be replayed.",
    },
    workflow_keep_sec: f64 = PYOCO_WORKFLOW_KEEP_SEC {
        group: Dlq, kind: Kind::Seconds, default: Some("2592000"), scope: Server,
        restarts: Gateway,
        help: "Seconds a submitted flow.yaml is kept for replays, from its last submit (applied when the bucket is created; 0: not kept, and replays of flow.yaml runs are refused).",
    },
    dlq_max_age_sec: f64 = PYOCO_DLQ_MAX_AGE_SEC {
        group: Dlq, kind: Kind::Seconds, default: Some("604800"), scope: Server,
        restarts: GatewayAndWorker,
        help: "DLQ max age in seconds (applied when the stream is created; 0 = unlimited).",
    },
    dlq_max_msgs: u64 = PYOCO_DLQ_MAX_MSGS {
        group: Dlq, kind: Kind::Integer { min: 1 }, default: Some("100000"), scope: Server,
        restarts: GatewayAndWorker,
        help: "DLQ max messages (applied when the stream is created).",
    },
    dlq_max_bytes: u64 = PYOCO_DLQ_MAX_BYTES {
        group: Dlq, kind: Kind::Integer { min: 1 }, default: Some("536870912"), scope: Server,
        restarts: GatewayAndWorker,
        help: "DLQ max bytes (applied when the stream is created).",
    },

    // ── Snapshot ────────────────────────────────────────────────────────────────────────────
    max_run_snapshot_bytes: u64 = PYOCO_MAX_RUN_SNAPSHOT_BYTES {
        group: Snapshot, kind: Kind::Integer { min: 0 }, default: Some("262144"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Run snapshots larger than this drop their task records (0 disables compaction).",
    },

    // Live task logs (ours)
    task_logs_stream: String = PYOCO_TASK_LOGS_STREAM {
        group: Snapshot, kind: Kind::Name, default: Some("PYOCO_TASK_LOGS"), scope: Server,
        restarts: GatewayAndWorker,
        help: "JetStream stream holding the live task logs (one message per line written by a task).",
    },
    task_logs_subject_prefix: String = PYOCO_TASK_LOGS_SUBJECT_PREFIX {
        group: Snapshot, kind: Kind::SubjectPrefix, default: Some("pyoco.logs"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Subject prefix of the live task logs: lines go to `<prefix>.<run_id>.<stdout|stderr>`.",
    },
    task_log_max_age_sec: f64 = PYOCO_TASK_LOG_MAX_AGE_SEC {
        group: Snapshot, kind: Kind::Seconds, default: Some("604800"), scope: Server,
        restarts: GatewayAndWorker,
        help: "How long task log lines are kept, in seconds (applied when the stream is created; 0 = unlimited).",
    },
    task_log_stream_max_bytes: u64 = PYOCO_TASK_LOG_STREAM_MAX_BYTES {
        group: Snapshot, kind: Kind::Integer { min: 1 }, default: Some("1073741824"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Total size of the task log stream; beyond it the oldest lines are discarded (applied when the stream is created).",
    },
    task_log_max_bytes_per_run: u64 = PYOCO_TASK_LOG_MAX_BYTES_PER_RUN {
        group: Snapshot, kind: Kind::Integer { min: 0 }, default: Some("8388608"), scope: Server,
        restarts: Worker,
        help: "Stored bytes of live log per run; beyond it lines are dropped and a marker line says so (0 turns the live log off). Independent of the snapshot size limit.",
    },

    // ── Wheels ──────────────────────────────────────────────────────────────────────────────
    wheel_object_store_bucket: String = PYOCO_WHEEL_OBJECT_STORE_BUCKET {
        group: Wheels, kind: Kind::Name, default: Some("pyoco_wheels"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Object store bucket holding uploaded wheels.",
    },
    wheel_max_bytes: u64 = PYOCO_WHEEL_MAX_BYTES {
        group: Wheels, kind: Kind::Integer { min: 0 }, default: Some("536870912"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Largest accepted wheel upload, and the bucket size cap (0 disables the limit).",
    },
    wheel_keep_versions: u64 = PYOCO_WHEEL_KEEP_VERSIONS {
        group: Wheels, kind: Kind::Integer { min: 0 }, default: Some("5"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Versions of a package the gateway keeps: after an upload, older versions beyond the newest N (counted per package, wheel tags and platform) are deleted (0 = keep all).",
    },
    wheel_sync_enabled: bool = PYOCO_WHEEL_SYNC_ENABLED {
        group: Wheels, kind: Kind::Bool, default: Some("false"), appliance_default: "true",
        scope: Server, restarts: Worker,
        help: "Workers download and install matching wheels from the registry (off as in 0.5.1; on for the appliance's local worker, so a wheel uploaded from the CLI reaches it without a restart).",
    },
    wheel_sync_dir: PathBuf = PYOCO_WHEEL_SYNC_DIR {
        group: Wheels, kind: Kind::Path, default: Some(".pyoco/wheels"), appliance_default: "wheels",
        scope: Server, restarts: Worker,
        help: "Where workers keep synced wheels; a relative path is taken from the working directory (the appliance: from its data dir).",
    },
    wheel_sync_interval_sec: f64 = PYOCO_WHEEL_SYNC_INTERVAL_SEC {
        group: Wheels, kind: Kind::Interval { floor: 0.1 }, default: Some("10.0"), scope: Server,
        restarts: Worker,
        help: "Seconds between wheel registry checks.",
    },
    wheel_install_timeout_sec: f64 = PYOCO_WHEEL_INSTALL_TIMEOUT_SEC {
        group: Wheels, kind: Kind::Interval { floor: 1.0 }, default: Some("180.0"), scope: Server,
        restarts: Worker,
        help: "Seconds a `pip install` of a synced wheel may take.",
    },
    wheel_history_kv_bucket: String = PYOCO_WHEEL_HISTORY_KV_BUCKET {
        group: Wheels, kind: Kind::Name, default: Some("pyoco_wheel_history"), scope: Server,
        restarts: GatewayAndWorker,
        help: "KV bucket holding the wheel upload/delete history.",
    },
    wheel_history_ttl_sec: f64 = PYOCO_WHEEL_HISTORY_TTL_SEC {
        group: Wheels, kind: Kind::Seconds, default: Some("7776000"), scope: Server,
        restarts: GatewayAndWorker,
        help: "Max age of history entries in seconds (applied when the bucket is created; 0 = unlimited).",
    },

    // ── Workflow YAML ───────────────────────────────────────────────────────────────────────
    workflow_yaml_max_bytes: u64 = PYOCO_WORKFLOW_YAML_MAX_BYTES {
        group: WorkflowYaml, kind: Kind::Integer { min: 1 }, default: Some("262144"), scope: Server,
        restarts: Gateway,
        help: "Largest `flow.yaml` accepted by `POST /runs/yaml`, in bytes.",
    },

    // ── Dashboard ───────────────────────────────────────────────────────────────────────────
    dashboard_lang: DashboardLang = PYOCO_DASHBOARD_LANG {
        group: Dashboard, kind: Kind::DashboardLang, default: Some("auto"), scope: Server,
        restarts: Gateway,
        help: "Dashboard language when the page has no `?lang` and no choice remembered: `ja` or `en`; `auto` follows the browser's languages (0.5.1: the server's locale).",
    },

    // ── Logging ─────────────────────────────────────────────────────────────────────────────
    log_level: LogLevel = PYOCO_LOG_LEVEL {
        group: Logging, kind: Kind::LogLevel, default: Some("INFO"), scope: Server,
        restarts: Nothing,
        help: "Minimum log level.",
    },
    log_format: LogFormat = PYOCO_LOG_FORMAT {
        group: Logging, kind: Kind::LogFormat, default: Some("json"), scope: Server,
        restarts: Nothing,
        help: "Log lines (the gateway's and worker's stdout) as JSON or as text, in pyoco-server 0.5.1's shape.",
    },
    log_utc: bool = PYOCO_LOG_UTC {
        group: Logging, kind: Kind::Bool, default: Some("true"), scope: Server,
        restarts: Nothing,
        help: "Log timestamps in UTC (else local time with offset).",
    },
    log_include_traceback: bool = PYOCO_LOG_INCLUDE_TRACEBACK {
        group: Logging, kind: Kind::Bool, default: Some("true"), scope: Server,
        restarts: Nothing,
        help: "Add `exc_traceback` (the error chain, or a failed task's Python traceback) and `exc_origin` to error log lines.",
    },

    // ── Auth ────────────────────────────────────────────────────────────────────────────────
    http_auth_mode: AuthMode = PYOCO_HTTP_AUTH_MODE {
        group: Auth, kind: Kind::AuthMode, default: Some("none"), scope: Server,
        restarts: Gateway,
        help: "`api_key`: every request but `/health`, `/` and `/openapi.json` needs an API key (create one with `pyoco-server-admin api-key create --tenant T`); `none`: the gateway is open to anyone who can reach it.",
    },
    http_api_key_header: String = PYOCO_HTTP_API_KEY_HEADER {
        group: Auth, kind: Kind::HeaderName, default: Some("X-API-Key"), scope: Server,
        restarts: Gateway,
        help: "Request header carrying the API key.",
    },
    auth_kv_bucket: String = PYOCO_AUTH_KV_BUCKET {
        group: Auth, kind: Kind::Name, default: Some("pyoco_auth"), scope: Server,
        restarts: Gateway,
        help: "KV bucket holding API keys.",
    },
    http_allowed_hosts: Vec<String> = PYOCO_HTTP_ALLOWED_HOSTS {
        group: Auth, kind: Kind::Hosts, default: None, scope: Server,
        restarts: Gateway,
        help: "Host names the gateway answers to besides IP addresses and localhost (a request with another `Host` gets 403, which stops DNS rebinding). Empty: a gateway on a loopback address answers only to those; one on another address answers to any name.",
    },
    http_allowed_origins: Vec<String> = PYOCO_HTTP_ALLOWED_ORIGINS {
        group: Auth, kind: Kind::Origins, default: None, scope: Server,
        restarts: Gateway,
        help: "Web origins allowed to call the API from a browser (CORS) and to send POST/PATCH/DELETE; the gateway's own origin and the desktop window always are. Another origin's state-changing request gets 403.",
    },
    auth_pepper: Option<String> = PYOCO_AUTH_PEPPER {
        group: Auth, kind: Kind::Secret, default: None, scope: Server,
        restarts: Gateway,
        help: "Secret mixed into API key hashes; must be the same for the admin CLI and every gateway.",
    },

    // ── HTTP gateway ────────────────────────────────────────────────────────────────────────
    schedule_poll_interval_sec: f64 = PYOCO_SCHEDULE_POLL_INTERVAL_SEC {
        group: HttpGateway, kind: Kind::Interval { floor: 0.2 }, default: Some("1.0"), scope: Server,
        restarts: Gateway,
        help: "Seconds between the schedule dispatcher's full scans of the schedules bucket (the fallback: it also follows the bucket and wakes at each schedule's due time); a claim's lease is `max(3, 3 × this)` seconds.",
    },
    http_host: String = PYOCO_HTTP_HOST {
        group: HttpGateway, kind: Kind::Host, default: Some("127.0.0.1"), scope: Server,
        restarts: Gateway,
        help: "Address the HTTP gateway listens on.",
    },
    http_port: u16 = PYOCO_HTTP_PORT {
        group: HttpGateway, kind: Kind::Port { min: 1 }, default: Some("8000"), scope: Server,
        restarts: Gateway,
        help: "Port the HTTP gateway listens on.",
    },
    http_max_connections: u64 = PYOCO_HTTP_MAX_CONNECTIONS {
        group: HttpGateway, kind: Kind::Integer { min: 1 }, default: Some("16384"), scope: Server,
        restarts: Gateway,
        help: "Connections the gateway serves at once (SSE watches included); a connection beyond it gets `503 too many connections` and is closed. Lowered at start, with a warning, to what the open-file limit allows.",
    },
    http_header_read_timeout_sec: f64 = PYOCO_HTTP_HEADER_READ_TIMEOUT_SEC {
        group: HttpGateway, kind: Kind::Seconds, default: Some("10.0"), scope: Server,
        restarts: Gateway,
        help: "Seconds a request's headers may take to arrive, from their first byte; a slower client is disconnected (0 disables).",
    },
    http_keep_alive_timeout_sec: f64 = PYOCO_HTTP_KEEP_ALIVE_TIMEOUT_SEC {
        group: HttpGateway, kind: Kind::Seconds, default: Some("30.0"), scope: Server,
        restarts: Gateway,
        help: "Seconds a connection with no request in flight may stay open without sending a byte, before its first request and between requests (0 disables). Requests in flight, SSE watches included, are never cut by it.",
    },

    // ── Appliance (local-only) ──────────────────────────────────────────────────────────────
    data_dir: Option<PathBuf> = PYOCO_DATA_DIR {
        group: Appliance, kind: Kind::Dir, default: None, scope: Local,
        restarts: Everything,
        help: "App data directory (NATS store, Python venv, logs, wheels); empty = the OS data directory.",
    },
    nats_server_bin: Option<PathBuf> = PYOCO_NATS_SERVER_BIN {
        group: Appliance, kind: Kind::Program, default: None, scope: Local,
        restarts: Everything,
        help: "nats-server binary to run; empty = `<data dir>/bin/nats-server`, then `PATH`.",
    },
    nats_listen_host: String = PYOCO_NATS_LISTEN_HOST {
        group: Appliance, kind: Kind::Host, default: Some("127.0.0.1"), scope: Local,
        restarts: Everything,
        help: "Address the managed nats-server listens on.",
    },
    nats_client_port: u16 = PYOCO_NATS_CLIENT_PORT {
        group: Appliance, kind: Kind::Port { min: 0 }, default: Some("4222"), scope: Local,
        restarts: Everything,
        help: "Client port of the managed nats-server (0 = any free port).",
    },
    nats_http_port: Option<u16> = PYOCO_NATS_HTTP_PORT {
        group: Appliance, kind: Kind::Port { min: 0 }, default: None, scope: Local,
        restarts: Everything,
        help: "Monitoring port of the managed nats-server; empty = disabled, 0 = any free port.",
    },
    nats_store_dir: Option<PathBuf> = PYOCO_NATS_STORE_DIR {
        group: Appliance, kind: Kind::Dir, default: None, scope: Local,
        restarts: Everything,
        help: "JetStream store of the managed nats-server; empty = `<data dir>/nats`.",
    },

    // ── Dotenv loader ───────────────────────────────────────────────────────────────────────
    load_dotenv: bool = PYOCO_LOAD_DOTENV {
        group: DotenvLoader, kind: Kind::Bool, default: Some("1"), scope: ProcessEnv,
        restarts: Nothing,
        help: "Read a `.env` file (`0/false/no/off` disable). Process environment only.",
    },
    env_file: Option<PathBuf> = PYOCO_ENV_FILE {
        group: DotenvLoader, kind: Kind::EnvFile, default: Some(".env"), scope: ProcessEnv,
        restarts: Nothing,
        help: "The `.env` file to read (`~` expanded, relative to the working directory; set but empty = none). Process environment only.",
    },
}
