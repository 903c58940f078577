//! HTTP API tests: a real nats-server, the real gateway on a real socket, a real HTTP client
//! (the test kit's `TestApp`).

mod helpers;

mod auth;
mod browser;
mod connections;
mod dlq;
mod health;
mod metrics;
mod nats_outage;
mod openapi;
mod runs_cancel;
mod runs_get;
mod runs_list;
mod runs_submit;
mod runs_watch;
mod runs_yaml;
mod schedules;
mod task_modules;
mod wheels;
mod workers;
