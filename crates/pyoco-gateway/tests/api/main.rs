//! HTTP API tests: a real nats-server, the real gateway on a real socket, a real HTTP client.

mod helpers;

mod health;
mod nats_outage;
mod runs_get;
mod runs_submit;
mod runs_yaml;
