//! `pyoco-server-admin`: create, list and revoke the gateway's API keys (contract §10.4).
//!
//! ```text
//! pyoco-server-admin [--nats-url URL] api-key create --tenant T
//! pyoco-server-admin [--nats-url URL] api-key list
//! pyoco-server-admin [--nats-url URL] api-key revoke --key-id ID
//! ```
//!
//! Output is 0.5.1's, one `json.dumps` line on stdout: `create` prints `key_id`, `tenant_id`,
//! `api_key` (the plain key, shown only here) and `created_at`; `list` the keys without
//! secrets, newest first; `revoke` `key_id` and `revoked_at`. Keys are stored exactly as 0.5.1
//! stores them (`api_keys.<key_id>` in `PYOCO_AUTH_KV_BUCKET`, hashed with `PYOCO_AUTH_PEPPER`),
//! so a key made by either admin works on either gateway, and a revocation by either is seen
//! by both. Settings come from the environment and `.env` like the other programs'.
//!
//! Differences from 0.5.1, all where it crashed or was unclear: an invalid tenant prints what
//! a tenant may be and exits 2 (0.5.1: a traceback, exit 1); `list` on an empty bucket prints
//! `[]` (0.5.1: a traceback); revoking an already revoked key keeps and prints its first
//! revocation time (0.5.1 overwrote it); a NATS that cannot be reached is one line saying what
//! to do, exit 1. Exit codes: 0 done, 1 configuration or NATS failure, 2 bad arguments or an
//! unknown key id (`{"error": "not_found", "key_id": ID}`, as 0.5.1).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pyoco_store::{
    CreateKeyError, NatsConnect, Store, StoreConfig, StoreError, DEFAULT_CONNECT_TIMEOUT,
};
use pyoco_wire::{is_valid_tenant_id, python};
use serde_json::{json, Value};

const PROGRAM: &str = "pyoco-server-admin";

#[derive(Parser, Debug)]
#[command(
    name = "pyoco-server-admin",
    version,
    about = "pyoco-server admin: manage the HTTP gateway's API keys (stored in NATS JetStream KV)",
    long_about = "pyoco-server admin: manage the HTTP gateway's API keys, stored hashed in the \
        KV bucket PYOCO_AUTH_KV_BUCKET (default pyoco_auth) with the pepper PYOCO_AUTH_PEPPER, \
        which must be the same for this program and every gateway.\n\n\
        Turning auth on: create a key, set PYOCO_HTTP_AUTH_MODE=api_key for the gateway, and \
        pass the key in the X-API-Key header (pyoco-client --api-key KEY)."
)]
struct Cli {
    /// NATS server URL [env: PYOCO_NATS_URL].
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage HTTP API keys.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
}

#[derive(Subcommand, Debug)]
enum ApiKeyCommand {
    /// Create a key for a tenant and print it (the only time the plain key is shown).
    Create {
        /// The tenant whose runs the key may submit and see: 1-64 of A-Z a-z 0-9 _ -.
        #[arg(long, value_name = "TENANT")]
        tenant: String,
    },
    /// List the keys (no secrets), newest first.
    List,
    /// Revoke a key: the gateways reject it from now on (within a second).
    Revoke {
        /// The key's id (the part between `pyoco_` and the `.` of the key).
        #[arg(long, value_name = "ID")]
        key_id: String,
    },
}

/// What ended a command early: the message for stderr and the exit code.
struct Failure {
    message: String,
    hint: &'static str,
    code: u8,
}

impl Failure {
    fn nats(err: StoreError) -> Failure {
        Failure {
            message: format!("NATS failed: {err}"),
            hint: "is nats-server running? Set PYOCO_NATS_URL or pass --nats-url URL \
                   (the desktop app and `pyoco-server up` start one on nats://127.0.0.1:4222)",
            code: 1,
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides: Vec<(&str, String)> = cli
        .nats_url
        .iter()
        .map(|url| ("PYOCO_NATS_URL", url.clone()))
        .collect();
    let settings = crate::load_settings(PROGRAM, &overrides);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("[{PROGRAM}][ERR-PYOCO-0018] cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let pepper = settings.auth_pepper.clone().unwrap_or_default();
    let connect = || async {
        Store::connect_with(
            &NatsConnect::from(&settings),
            "pyoco-admin-cli",
            StoreConfig::from(&settings),
            DEFAULT_CONNECT_TIMEOUT,
        )
        .await
        .map_err(Failure::nats)
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::ApiKey(ApiKeyCommand::Create { tenant }) => {
                check_tenant(&tenant)?;
                create(connect().await?, &tenant, &pepper).await
            }
            Command::ApiKey(ApiKeyCommand::List) => list(connect().await?).await,
            Command::ApiKey(ApiKeyCommand::Revoke { key_id }) => {
                revoke(connect().await?, &key_id).await
            }
        }
    });
    match result {
        Ok((answer, code)) => {
            println!("{}", python::dumps(&answer));
            ExitCode::from(code)
        }
        Err(Failure {
            message,
            hint,
            code,
        }) => {
            eprintln!("[{PROGRAM}][ERR-PYOCO-0018] {message}");
            eprintln!("  hint: {hint}");
            ExitCode::from(code)
        }
    }
}

type Answer = Result<(Value, u8), Failure>;

const TENANT_RULE: &str = "a tenant is 1 to 64 of A-Z, a-z, 0-9, '_' and '-' (e.g. --tenant demo)";

/// A tenant outside the creation rule, before anything connects: exit 2 with the rule.
fn check_tenant(tenant: &str) -> Result<(), Failure> {
    if is_valid_tenant_id(tenant) {
        return Ok(());
    }
    Err(Failure {
        message: format!("invalid tenant {tenant:?}"),
        hint: TENANT_RULE,
        code: 2,
    })
}

async fn create(store: Store, tenant: &str, pepper: &str) -> Answer {
    let made = store
        .create_api_key(tenant, pepper)
        .await
        .map_err(|err| match err {
            CreateKeyError::InvalidTenant(err) => Failure {
                message: err.to_string(),
                hint: TENANT_RULE,
                code: 2,
            },
            CreateKeyError::Store(err) => Failure::nats(err),
        })?;
    let record = &made.record;
    Ok((
        json!({
            "key_id": record.key_id,
            "tenant_id": record.tenant_id,
            "api_key": made.api_key,
            "created_at": record.created_at,
        }),
        0,
    ))
}

async fn list(store: Store) -> Answer {
    let listed: Vec<Value> = store
        .list_api_keys()
        .await
        .map_err(Failure::nats)?
        .into_iter()
        .map(|r| {
            json!({
                "key_id": r.key_id,
                "tenant_id": r.tenant_id,
                "created_at": r.created_at,
                "revoked_at": r.revoked_at,
            })
        })
        .collect();
    Ok((Value::Array(listed), 0))
}

async fn revoke(store: Store, key_id: &str) -> Answer {
    match store.revoke_api_key(key_id).await {
        Ok(Some(revoked_at)) => Ok((json!({"key_id": key_id, "revoked_at": revoked_at}), 0)),
        Ok(None) => Ok((json!({"error": "not_found", "key_id": key_id}), 2)),
        Err(StoreError::Corrupt { message, .. }) => Err(Failure {
            message: format!("the record of key {key_id} is unreadable: {message}"),
            hint: "revoke it by deleting the record: nats kv del <auth bucket> api_keys.<id>",
            code: 1,
        }),
        Err(err) => Err(Failure::nats(err)),
    }
}
