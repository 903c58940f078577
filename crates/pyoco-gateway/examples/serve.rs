//! Run the gateway alone, configured like the real one (environment + `.env`), for manual
//! probing, benchmarks and memory measurements:
//!
//! ```text
//! PYOCO_NATS_URL=nats://127.0.0.1:4222 PYOCO_HTTP_PORT=8000 \
//!     cargo run --release -p pyoco-gateway --example serve
//! ```
//!
//! `PYOCO_GATEWAY_WORKER_THREADS` sets the tokio worker threads (default: one per core).

use pyoco_config::{LoadOptions, Settings};
use pyoco_gateway::AppState;
use pyoco_store::{SharedStore, StoreConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,async_nats=warn".into()),
        )
        .init();
    let settings = Settings::load(&LoadOptions::from_process()?)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("PYOCO_GATEWAY_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        runtime.worker_threads(n);
    }
    runtime.enable_all().build()?.block_on(async move {
        let store = SharedStore::connect_in_background(
            &settings.nats_url,
            "pyoco-http-api",
            StoreConfig::from(&settings),
        );
        let state = AppState::new(&settings, store);
        let listener =
            tokio::net::TcpListener::bind((settings.http_host.as_str(), settings.http_port))
                .await?;
        pyoco_gateway::serve(listener, state, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        Ok(())
    })
}
