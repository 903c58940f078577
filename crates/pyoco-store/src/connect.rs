//! How every pyoco process connects to NATS: one or several server URLs (a cluster's seeds; the
//! rest is discovered from the servers' INFO), TLS (`tls://`, a CA, a client certificate, TLS
//! first), and one way to authenticate (credentials file, nkey seed, token, or user and
//! password; a `user:pass@` in a URL is used for that server).
//!
//! A failed connection says what to look at: a refused or unreachable server names
//! `PYOCO_NATS_URL`, a TLS failure the TLS settings, an authorization violation the
//! credentials settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions, ServerAddr};

use crate::StoreError;

/// Where and how to connect (from the `PYOCO_NATS_*` settings, or just a URL).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NatsConnect {
    /// One URL, or several separated by commas (`PYOCO_NATS_URL`).
    pub url: String,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_first: bool,
    pub creds_file: Option<PathBuf>,
    pub nkey_seed_file: Option<PathBuf>,
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for NatsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConnect")
            .field("url", &self.redacted_url())
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_first", &self.tls_first)
            .field("creds_file", &self.creds_file)
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

impl From<&pyoco_config::Settings> for NatsConnect {
    fn from(s: &pyoco_config::Settings) -> Self {
        NatsConnect {
            url: s.nats_url.clone(),
            tls_ca_file: s.nats_tls_ca_file.clone(),
            tls_cert_file: s.nats_tls_cert_file.clone(),
            tls_key_file: s.nats_tls_key_file.clone(),
            tls_first: s.nats_tls_first,
            creds_file: s.nats_creds_file.clone(),
            nkey_seed_file: s.nats_nkey_seed_file.clone(),
            token: s.nats_token.clone(),
            user: s.nats_user.clone(),
            password: s.nats_password.clone(),
        }
    }
}

impl NatsConnect {
    /// A plain connection to `url` (no TLS settings, no credentials beyond the URL's own).
    pub fn url(url: impl Into<String>) -> NatsConnect {
        NatsConnect {
            url: url.into(),
            ..NatsConnect::default()
        }
    }

    /// The same settings for another URL (the appliance's managed server, say).
    pub fn with_url(&self, url: impl Into<String>) -> NatsConnect {
        NatsConnect {
            url: url.into(),
            ..self.clone()
        }
    }

    /// The URLs of the list, trimmed, empty items dropped.
    pub fn urls(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// The URL list with any `user:password@` replaced by `***@` (for logs and errors).
    pub fn redacted_url(&self) -> String {
        self.urls()
            .into_iter()
            .map(redact)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `user:password@` of the URLs (async-nats sends one user and password to every
    /// server, discovered ones included, so the URLs that carry them must agree; a cluster's
    /// servers share their accounts). Percent-escapes are decoded.
    fn url_credentials(&self) -> Result<Option<(String, String)>, StoreError> {
        let mut found: Option<(String, String)> = None;
        for url in self.servers()? {
            let Some(user) = url.username() else { continue };
            let user = percent_decode(user);
            let password = percent_decode(url.password().unwrap_or_default());
            match &found {
                Some(f) if *f != (user.clone(), password.clone()) => {
                    return Err(StoreError::unavailable(
                        "SettingsError",
                        "PYOCO_NATS_URL: the URLs carry different user:password@; the client \
                         sends one to every server of the cluster: give the same one, or use \
                         PYOCO_NATS_USER and PYOCO_NATS_PASSWORD",
                    ))
                }
                _ => found = Some((user, password)),
            }
        }
        Ok(found)
    }

    fn tls_configured(&self) -> bool {
        self.tls_ca_file.is_some() || self.tls_cert_file.is_some() || self.tls_first
    }

    fn servers(&self) -> Result<Vec<ServerAddr>, StoreError> {
        let urls = self.urls();
        if urls.is_empty() {
            return Err(StoreError::unavailable(
                "ServerParse",
                "PYOCO_NATS_URL is empty: give one NATS URL or several separated by commas",
            ));
        }
        urls.into_iter()
            .map(|u| {
                u.parse::<ServerAddr>().map_err(|e| {
                    StoreError::unavailable(
                        "ServerParse",
                        format!("PYOCO_NATS_URL: {:?} is not a NATS URL: {e}", redact(u)),
                    )
                })
            })
            .collect()
    }

    /// The client options: name, TLS and credentials (files are read here; a bad one is an
    /// error that names its setting).
    pub async fn options(&self, client_name: &str) -> Result<ConnectOptions, StoreError> {
        let mut options = ConnectOptions::new().name(client_name);
        if let Some(path) = &self.creds_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| file_error("PYOCO_NATS_CREDS_FILE", path, e))?;
        }
        if let Some(path) = &self.nkey_seed_file {
            let seed = read_seed(path)?;
            options = options.nkey(seed);
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.clone());
        } else if let Some((user, password)) = self.url_credentials()? {
            options = options.user_and_password(user, password);
        }
        if let Some(ca) = &self.tls_ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls_configured() {
            options = options.require_tls(true);
        }
        if self.tls_first {
            options = options.tls_first();
        }
        Ok(options)
    }

    /// One connection attempt to the servers of the list (each tried once). The client then
    /// reconnects by itself, forever, across the servers it knows (the list and those the
    /// cluster announces). A failure says what to look at.
    pub async fn connect_once(
        &self,
        client_name: &str,
        timeout: Duration,
    ) -> Result<async_nats::Client, StoreError> {
        let servers = self.servers()?;
        let options = self
            .options(client_name)
            .await?
            .max_reconnects(None)
            .connection_timeout(timeout);
        options.connect(servers).await.map_err(|e| self.explain(&e))
    }

    /// A connection error as a [`StoreError`] whose message names the settings to check.
    pub fn explain(&self, err: &async_nats::ConnectError) -> StoreError {
        let urls = self.redacted_url();
        let detail = error_chain(err);
        let (kind, text) = match err.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => (
                "AuthorizationViolation",
                format!(
                    "NATS at {urls} refused the credentials ({detail}): check {}",
                    self.credential_settings()
                ),
            ),
            _ if err.kind() == ConnectErrorKind::Tls || looks_like_tls(&detail) => (
                "TlsError",
                format!(
                    "the TLS handshake with NATS at {urls} failed ({detail}): check \
                     PYOCO_NATS_TLS_CA_FILE (the CA that signed the server's certificate{}), \
                     PYOCO_NATS_TLS_CERT_FILE and PYOCO_NATS_TLS_KEY_FILE (when the server \
                     verifies clients) and PYOCO_NATS_TLS_FIRST (when the server wants the \
                     TLS handshake first)",
                    if self.tls_ca_file.is_none() {
                        "; not set: the system's roots are used"
                    } else {
                        ""
                    }
                ),
            ),
            ConnectErrorKind::TimedOut => (
                "ConnectTimeout",
                format!(
                    "NATS at {urls} did not answer in time ({detail}): check PYOCO_NATS_URL, \
                     and PYOCO_NATS_TLS_FIRST (a server with `handshake_first` waits for the \
                     client's TLS handshake{})",
                    if self.tls_first {
                        "; it is on: a server without `handshake_first` never answers it"
                    } else {
                        ""
                    }
                ),
            ),
            ConnectErrorKind::ServerParse => (
                "ServerParse",
                format!("PYOCO_NATS_URL {urls:?} is not a list of NATS URLs ({detail})"),
            ),
            _ => (
                "ConnectError",
                format!(
                    "cannot reach NATS at {urls} ({detail}): is it running and reachable? \
                     check PYOCO_NATS_URL{}",
                    if detail.contains("tls") || detail.contains("TLS") {
                        " and the PYOCO_NATS_TLS_* settings"
                    } else {
                        ""
                    }
                ),
            ),
        };
        StoreError::unavailable(kind, text)
    }

    fn credential_settings(&self) -> String {
        let set: Vec<&str> = [
            (self.creds_file.is_some(), "PYOCO_NATS_CREDS_FILE"),
            (self.nkey_seed_file.is_some(), "PYOCO_NATS_NKEY_SEED_FILE"),
            (self.token.is_some(), "PYOCO_NATS_TOKEN"),
            (
                self.user.is_some(),
                "PYOCO_NATS_USER and PYOCO_NATS_PASSWORD",
            ),
            (
                self.url.contains('@'),
                "the user:password@ of PYOCO_NATS_URL",
            ),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if set.is_empty() {
            "the server asks for credentials and none are set: set one of \
             PYOCO_NATS_CREDS_FILE, PYOCO_NATS_NKEY_SEED_FILE, PYOCO_NATS_TOKEN, or \
             PYOCO_NATS_USER and PYOCO_NATS_PASSWORD"
                .into()
        } else {
            set.join(", ")
        }
    }
}

/// Whether an I/O error is a TLS one (rustls reports certificate problems as I/O errors).
fn looks_like_tls(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    ["certificate", "tls", "handshake", "alert"]
        .iter()
        .any(|w| d.contains(w))
}

/// The error and its sources, `: `-joined, without repeats.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// `%XX` escapes of a URL's user or password, decoded.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_string(),
        },
    }
}

fn file_error(setting: &str, path: &Path, err: std::io::Error) -> StoreError {
    StoreError::unavailable(
        "SettingsError",
        format!("{setting}={}: {err}", path.display()),
    )
}

/// The first line of a seed file that looks like a user seed (`SU…`); `nsc` files may carry
/// comments and blank lines around it.
fn read_seed(path: &Path) -> Result<String, StoreError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| file_error("PYOCO_NATS_NKEY_SEED_FILE", path, e))?;
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("SU"))
        .ok_or_else(|| {
            file_error(
                "PYOCO_NATS_NKEY_SEED_FILE",
                path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "no user nkey seed (a line starting with SU) in the file",
                ),
            )
        })?;
    Ok(seed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_trimmed_and_redacted() {
        let c = NatsConnect::url(" nats://a:4222, tls://u:p@b:4223 ,,c:4224");
        assert_eq!(c.urls(), ["nats://a:4222", "tls://u:p@b:4223", "c:4224"]);
        assert_eq!(c.redacted_url(), "nats://a:4222,tls://***@b:4223,c:4224");
        assert_eq!(c.servers().unwrap().len(), 3);
        let text = format!("{:?}", c.with_url("x").clone());
        assert!(!text.contains("u:p"), "{text}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = NatsConnect {
            token: Some("t0ken".into()),
            password: Some("pw".into()),
            ..NatsConnect::url("nats://u:hunter2@h:1")
        };
        let text = format!("{c:?}");
        assert!(!text.contains("t0ken") && !text.contains("pw\"") && !text.contains("hunter2"));
    }

    #[test]
    fn a_seed_file_gives_its_seed_and_a_wrong_one_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("user.nk");
        std::fs::write(&good, "# comment\n\nSUAAXYZ\n").unwrap();
        assert_eq!(read_seed(&good).unwrap(), "SUAAXYZ");
        let bad = dir.path().join("bad.nk");
        std::fs::write(&bad, "hello\n").unwrap();
        let err = read_seed(&bad).unwrap_err().to_string();
        assert!(
            err.contains("PYOCO_NATS_NKEY_SEED_FILE") && err.contains("no user nkey seed"),
            "{err}"
        );
    }
}
