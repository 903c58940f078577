//! The desktop app's core ([`pyoco_desktop::DesktopApp`]) on a throwaway home: its `.env` in a
//! temp config dir, its data dir (NATS store, synced wheels) in the same temp dir, the managed
//! nats-server on a free port and the gateway on another, the test venv's Python.

use std::{collections::HashMap, path::Path, sync::Arc};

use pyoco_config::LoadOptions;
use pyoco_desktop::{DesktopApp, DesktopOptions};

use crate::{free_port, nats_server_bin, python};

/// Options for a desktop app living in `dir` (`dir/config/.env`, `dir/data`). The `.env` is
/// `env_text` followed by `PYOCO_HTTP_PORT=<http_port>` and `PYOCO_NATS_CLIENT_PORT=0` (a free
/// port: 4222 may be taken on the machine), so the window can change them.
pub fn desktop_options(dir: &Path, http_port: u16, env_text: &str) -> DesktopOptions {
    let config = dir.join("config");
    std::fs::create_dir_all(&config).expect("config dir");
    let env_file = config.join(".env");
    std::fs::write(
        &env_file,
        format!("{env_text}PYOCO_HTTP_PORT={http_port}\nPYOCO_NATS_CLIENT_PORT=0\n"),
    )
    .expect("write .env");
    let env = HashMap::from([
        ("PYOCO_ENV_FILE".to_string(), env_file.display().to_string()),
        (
            "PYOCO_DATA_DIR".to_string(),
            dir.join("data").display().to_string(),
        ),
        (
            "PYOCO_NATS_SERVER_BIN".to_string(),
            nats_server_bin().display().to_string(),
        ),
        ("PYOCO_PYTHON".to_string(), python().display().to_string()),
    ]);
    DesktopOptions::new(LoadOptions {
        env,
        cwd: dir.to_path_buf(),
        home: Some(dir.to_path_buf()),
    })
    .expect("desktop options")
}

/// A started desktop app core (see [`desktop_options`]); its gateway port is free.
pub async fn start_desktop(dir: &Path, env_text: &str) -> (Arc<DesktopApp>, u16) {
    crate::init_tracing();
    let port = free_port();
    let app = DesktopApp::new(
        desktop_options(dir, port, env_text),
        pyoco_appliance::LogBuffer::new(100),
    );
    app.start().await.expect("the desktop stack starts");
    (app, port)
}
