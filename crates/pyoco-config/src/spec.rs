//! What a setting *is*: its name, group, kind (type + validation rule), default, help and scope.
//!
//! The entries themselves live in `table.rs` (read them with `specs()` and `spec(name)` there);
//! this module only describes their shape, so every layer above (values, errors, the table, the
//! loader, the docs) can name these types without depending on the table.

/// One `PYOCO_*` setting, as declared once in the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spec {
    /// The variable name, e.g. `PYOCO_NATS_URL`.
    pub name: &'static str,
    /// Where it is shown (settings window section, docs heading).
    pub group: Group,
    /// Its type and validation rule.
    pub kind: Kind,
    /// The default as written in a `.env`, or `None` when unset means "not set" (see `help`).
    pub default: Option<&'static str>,
    /// What the local appliance (`pyoco-server up --with-nats`, the desktop app) uses instead
    /// of `default` when the setting is not set; `None` when it uses `default` too. Applied by
    /// `Settings::with_appliance_defaults`.
    pub appliance_default: Option<&'static str>,
    /// One line of help, for `--help`, tooltips and the docs.
    pub help: &'static str,
    /// Who reads it and whether the settings window exports it.
    pub scope: Scope,
    /// What a change restarts in the running appliance.
    pub restarts: Restarts,
    /// A secret: never shown, logged or echoed in error messages.
    pub secret: bool,
}

impl Spec {
    /// The expected form of a value, as shown in error messages and the docs.
    pub fn expected(&self) -> String {
        self.kind.expected()
    }

    /// True when the value only matters when its stream, consumer or bucket is created: an
    /// existing one keeps its configuration (as in pyoco-server 0.5.1). The help says so with
    /// "(applied when the … is created".
    pub fn applies_at_creation(&self) -> bool {
        self.help.contains("(applied when the ")
    }

    /// True when the setting belongs in a production `.env` written by "export".
    pub fn exported(&self) -> bool {
        self.scope == Scope::Server
    }
}

/// Who reads a setting, and so whether "export" writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Matters in production (gateway, worker, admin CLI); exported.
    Server,
    /// Only for the local appliance (the managed nats-server, app paths); not exported.
    Local,
    /// Read from the process environment only, never from a `.env` (the loader's own switches).
    ProcessEnv,
}

impl Scope {
    /// Short label used in the docs.
    pub fn label(self) -> &'static str {
        match self {
            Scope::Server => "server",
            Scope::Local => "local",
            Scope::ProcessEnv => "process env",
        }
    }
}

/// What a change of a setting restarts in the running appliance (the desktop app applies a
/// saved change this way; the appliance maps it to its components).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Restarts {
    /// Nothing: the value is read once when the program starts (logging, the loader's own
    /// switches), so a change applies at its next start.
    Nothing,
    /// The HTTP gateway.
    Gateway,
    /// The local worker.
    Worker,
    /// The gateway and the worker, with the NATS connection they share (the NATS URL, names of
    /// streams and buckets, what both of them read).
    GatewayAndWorker,
    /// Everything, the managed nats-server included (its ports and store, the data dir).
    Everything,
}

impl Restarts {
    /// Short label used in the docs.
    pub fn label(self) -> &'static str {
        match self {
            Restarts::Nothing => "next start",
            Restarts::Gateway => "gateway",
            Restarts::Worker => "worker",
            Restarts::GatewayAndWorker => "gateway, worker",
            Restarts::Everything => "everything",
        }
    }
}

/// The section a setting is listed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Nats,
    SubjectsAndBuckets,
    Heartbeat,
    Consumers,
    Worker,
    Dlq,
    Snapshot,
    Wheels,
    WorkflowYaml,
    Dashboard,
    Logging,
    Auth,
    HttpGateway,
    Appliance,
    DotenvLoader,
}

impl Group {
    /// All groups in display order.
    pub const ALL: [Group; 15] = [
        Group::Nats,
        Group::SubjectsAndBuckets,
        Group::Heartbeat,
        Group::Consumers,
        Group::Worker,
        Group::Dlq,
        Group::Snapshot,
        Group::Wheels,
        Group::WorkflowYaml,
        Group::Dashboard,
        Group::Logging,
        Group::Auth,
        Group::HttpGateway,
        Group::Appliance,
        Group::DotenvLoader,
    ];

    /// The heading shown for the group.
    pub fn title(self) -> &'static str {
        match self {
            Group::Nats => "NATS",
            Group::SubjectsAndBuckets => "Subjects & buckets",
            Group::Heartbeat => "Heartbeat",
            Group::Consumers => "Consumers",
            Group::Worker => "Worker",
            Group::Dlq => "DLQ",
            Group::Snapshot => "Snapshot",
            Group::Wheels => "Wheels",
            Group::WorkflowYaml => "Workflow YAML",
            Group::Dashboard => "Dashboard",
            Group::Logging => "Logging",
            Group::Auth => "Auth",
            Group::HttpGateway => "HTTP gateway",
            Group::Appliance => "Appliance (local-only)",
            Group::DotenvLoader => "Dotenv loader",
        }
    }
}

/// A setting's type and validation rule. Values are trimmed before validation (except
/// [`Kind::Secret`]); an empty value means "not set" and the default applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Any text.
    Text,
    /// Any text, kept verbatim (not trimmed); never shown.
    Secret,
    /// Comma-separated NATS server URLs (`nats://`, `tls://`, `ws://`, `wss://`) or `host[:port]`.
    NatsUrl,
    /// A NATS subject prefix: dot-separated tokens without whitespace, `*` or `>`.
    SubjectPrefix,
    /// A JetStream stream or bucket name: `^[A-Za-z0-9_-]+$`.
    Name,
    /// One tag: `^[A-Za-z0-9_-]+$`.
    Tag,
    /// Comma-separated tags (empty items ignored, duplicates dropped).
    Tags,
    /// A JetStream KV key: `^[-/_=.A-Za-z0-9]+$`, not starting or ending with `.`.
    KvKey,
    /// An HTTP header name (RFC 7230 token).
    HeaderName,
    /// Comma-separated host names or IP addresses, `*.domain` for its subdomains, `*` for any
    /// (lower-cased, duplicates dropped).
    Hosts,
    /// Comma-separated web origins `scheme://host[:port]` (lower-cased, duplicates dropped).
    Origins,
    /// Comma-separated Python module names or dotted prefixes (`my_tasks`, `corp.etl`).
    Modules,
    /// An IP address or a host name.
    Host,
    /// A TCP port from `min` to 65535 (0 = any free port).
    Port { min: u16 },
    /// Seconds > 0; values below `floor` are raised to `floor` (as 0.5.1's worker does).
    Interval { floor: f64 },
    /// Seconds ≥ 0 (what 0 means is in the help).
    Seconds,
    /// An integer ≥ `min`.
    Integer { min: u64 },
    /// A JetStream replica count, 1..=5 (JetStream keeps at most five copies).
    Replicas,
    /// `1/true/yes/on` or `0/false/no/off`, case-insensitive.
    Bool,
    /// `none` or `api_key`.
    AuthMode,
    /// trace, debug, info, warning/warn, error, critical (also Python's fatal, notset).
    LogLevel,
    /// `json` or `text`.
    LogFormat,
    /// `auto` (also `server`, `system`, `default`), or a locale starting with `ja` or `en`.
    DashboardLang,
    /// A path kept exactly as written (relative paths stay relative).
    Path,
    /// A directory: `~` expanded, relative paths resolved against the working directory.
    Dir,
    /// Directories separated by `:` (as in `PATH`), each `~`-expanded and resolved against the
    /// working directory; empty items are ignored.
    Dirs,
    /// A program: a path (`~` expanded, relative to the working directory when it contains a
    /// separator) or a bare command name looked up in `PATH`.
    Program,
    /// The dotenv file: `~` expanded, relative to the working directory; empty disables.
    EnvFile,
    /// An existing, readable file (a certificate, a key, credentials): `~` expanded, relative
    /// to the working directory. Checked when the settings load, so a wrong path stops the
    /// program with the setting's name instead of failing at the first connection.
    File,
    /// A flow resolver, `module:function` or `path/file.py:function`, split at the last `:`
    /// (the runner's rule); the target is a file when it ends in `.py` or contains `/` or `\`.
    /// A file path is `~`-expanded and resolved against the working directory (the runners
    /// work in their own scratch directory); the function may be dotted (`Class.method`).
    FlowResolver,
}

impl Kind {
    /// The expected form of a value of this kind (for error messages and docs).
    pub fn expected(&self) -> String {
        match *self {
            Kind::Text => "text".into(),
            Kind::Secret => "text (secret, kept verbatim)".into(),
            Kind::NatsUrl => {
                "comma-separated NATS URLs (nats://, tls://, ws://, wss://) or host:port".into()
            }
            Kind::SubjectPrefix => {
                "a subject prefix: dot-separated tokens without spaces, `*` or `>`".into()
            }
            Kind::Name => "a name of letters, digits, `_` and `-`".into(),
            Kind::Tag => "a tag of letters, digits, `_` and `-`".into(),
            Kind::Tags => "comma-separated tags of letters, digits, `_` and `-`".into(),
            Kind::KvKey => {
                "letters, digits and `-/_=.` (a KV key), not starting or ending with `.`".into()
            }
            Kind::HeaderName => "an HTTP header name (an RFC 7230 token such as X-API-Key)".into(),
            Kind::Host => "an IP address or host name".into(),
            Kind::Hosts => {
                "comma-separated host names or IP addresses (`*.example.com`: its subdomains, \
                 `*`: any)"
                    .into()
            }
            Kind::Origins => {
                "comma-separated origins like `https://app.example.com` or `http://localhost:3000`"
                    .into()
            }
            Kind::Modules => "comma-separated Python module names (`my_tasks`, `corp.etl`)".into(),
            Kind::Port { min } => format!("a port number {min}..65535"),
            Kind::Interval { floor } if floor > 0.0 => {
                format!("a number of seconds > 0 (values below {floor} count as {floor})")
            }
            Kind::Interval { .. } => "a number of seconds > 0".into(),
            Kind::Seconds => "a number of seconds ≥ 0".into(),
            Kind::Integer { min } => format!("an integer ≥ {min}"),
            Kind::Replicas => "1, 3 or 5 (any of 1..5; JetStream keeps at most five copies)".into(),
            Kind::Bool => "1/true/yes/on or 0/false/no/off".into(),
            Kind::AuthMode => "none or api_key".into(),
            Kind::LogLevel => "trace, debug, info, warning, error or critical".into(),
            Kind::LogFormat => "json or text".into(),
            Kind::DashboardLang => {
                "auto, ja or en (a locale such as ja_JP.UTF-8 also works)".into()
            }
            Kind::Path => "a path (relative paths stay relative to the working directory)".into(),
            Kind::Dir => {
                "a directory path (`~` expanded; relative to the working directory)".into()
            }
            Kind::Dirs => "directory paths separated by `:` (`~` expanded)".into(),
            Kind::Program => "a program path, or a command name looked up in PATH".into(),
            Kind::EnvFile => "a file path (`~` expanded; relative to the working directory)".into(),
            Kind::File => {
                "the path of an existing, readable file (`~` expanded; relative to the working \
                 directory)"
                    .into()
            }
            Kind::FlowResolver => {
                "module:function or path/file.py:function (a dotted function name is fine)".into()
            }
        }
    }
}
