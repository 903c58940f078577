//! `metrics` (`GET /metrics`): the Prometheus text, printed as the gateway sent it.

use reqwest::Method;

use super::{error::CliError, gateway::Gateway, output::Out};

/// `pyoco-client metrics`.
pub(crate) async fn metrics(gw: &Gateway, out: &mut Out) -> Result<(), CliError> {
    let request = gw.request(Method::GET, gw.url(&["metrics"], &Vec::new()));
    let text = gw.send_text(request).await?;
    out.text(&text)
}
