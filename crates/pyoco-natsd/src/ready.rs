//! "Ready" means JetStream answers, not merely that the TCP port accepts connections: nats-server
//! listens for clients before JetStream has recovered its streams from the store dir, and a
//! large store can take a while.

use std::time::Duration;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const PROBE_INTERVAL: Duration = Duration::from_millis(25);

/// Probe `url` until `$JS.API.INFO` answers from a server that `is_ours` accepts (given the
/// server ID from its INFO). Never returns otherwise: the caller bounds it with the startup
/// timeout and races it against the process exiting.
///
/// `is_ours` guards against a race of free ports: if another process grabbed the port we chose
/// before our nats-server bound it, our server is about to exit with "address already in use",
/// and the probe must not mistake the other server for ours.
pub(crate) async fn wait_until_jetstream_answers(url: &str, is_ours: impl Fn(&str) -> bool) {
    let mut last_error = String::new();
    loop {
        match probe(url).await {
            Ok(server_id) if is_ours(&server_id) => return,
            Ok(server_id) => {
                let e = format!("another server ({server_id}) answers on {url}");
                if e != last_error {
                    tracing::debug!("{e}");
                    last_error = e;
                }
            }
            Err(e) => {
                if e != last_error {
                    tracing::trace!(url, "nats-server not ready yet: {e}");
                    last_error = e;
                }
            }
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// One attempt: connect, send a raw `$JS.API.INFO` request, accept an account-info answer
/// without an error. Returns the ID of the server that answered.
///
/// Raw on purpose: async-nats' typed `query_account` cannot parse the answer of older servers
/// (nats-server 2.9.x), and readiness must not depend on the client's idea of the schema.
async fn probe(url: &str) -> Result<String, String> {
    let client = async_nats::ConnectOptions::new()
        .name("pyoco-natsd readiness probe")
        .connection_timeout(PROBE_TIMEOUT)
        .connect(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let server_id = client.server_info().server_id;
    let reply = tokio::time::timeout(PROBE_TIMEOUT, client.request("$JS.API.INFO", "".into()))
        .await
        .map_err(|_| "$JS.API.INFO: no answer".to_owned())?
        .map_err(|e| format!("$JS.API.INFO: {e}"))?;
    jetstream_answer_is_ok(&reply.payload)?;
    Ok(server_id)
}

/// Whether a `$JS.API.INFO` reply is an account info rather than an error (JetStream disabled,
/// or not yet available).
fn jetstream_answer_is_ok(payload: &[u8]) -> Result<(), String> {
    let answer: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| format!("$JS.API.INFO: unreadable answer: {e}"))?;
    if let Some(error) = answer.get("error") {
        return Err(format!("$JS.API.INFO: {error}"));
    }
    match answer.get("type").and_then(|t| t.as_str()) {
        Some(t) if t.ends_with("account_info_response") => Ok(()),
        other => Err(format!("$JS.API.INFO: unexpected answer type {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_info_is_ready_and_errors_are_not() {
        let ok = br#"{"type":"io.nats.jetstream.api.v1.account_info_response","memory":0}"#;
        assert!(jetstream_answer_is_ok(ok).is_ok());
        let disabled = br#"{"type":"io.nats.jetstream.api.v1.account_info_response","error":{"code":503,"err_code":10039,"description":"jetstream not enabled for account"}}"#;
        assert!(jetstream_answer_is_ok(disabled)
            .unwrap_err()
            .contains("not enabled"));
        assert!(jetstream_answer_is_ok(b"nope").is_err());
    }
}
