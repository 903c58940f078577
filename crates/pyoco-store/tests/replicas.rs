//! `PYOCO_JETSTREAM_REPLICAS` on a real 3-node JetStream cluster: every stream, KV bucket and
//! object store we create has that many copies, the durable consumers follow their stream, an
//! existing resource keeps its count (with a warning), and a single server refuses R3 with an
//! error that names the setting.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::TryStreamExt;
use pyoco_store::{Store, StoreConfig, DEFAULT_CONNECT_TIMEOUT};
use pyoco_testkit::{TestCluster, TestNats};

/// Every stream of ours: the three streams, the KV buckets, the wheel object store.
const STREAMS: [&str; 11] = [
    "PYOCO_WORK",
    "PYOCO_DLQ",
    "PYOCO_TASK_LOGS",
    "KV_pyoco_runs",
    "KV_pyoco_workers",
    "KV_pyoco_auth",
    "KV_pyoco_wheel_history",
    "KV_pyoco_dlq_replays",
    "KV_pyoco_workflows",
    "KV_pyoco_yaml_schedules",
    "OBJ_pyoco_wheels",
];

fn replicated(replicas: usize) -> StoreConfig {
    StoreConfig {
        replicas,
        ..StoreConfig::default()
    }
}

/// Connect as the gateway and worker do: a cluster that has just started may still answer
/// "no suitable peers for placement, peer offline" until every route is up, and the services
/// retry that; so does this, for up to 30 s.
async fn connect(urls: &str, cfg: StoreConfig) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match Store::connect(urls, "replicas-test", cfg.clone(), DEFAULT_CONNECT_TIMEOUT).await {
            Ok(store) => return store,
            Err(e)
                if e.to_string().contains("peer offline")
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => panic!("store connects to {urls}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resource_gets_the_configured_replicas_and_consumers_follow() {
    let cluster = TestCluster::start(3).await;
    let store = connect(&cluster.urls(), replicated(3)).await;
    let js = store.jetstream();

    let mut names: Vec<String> = js.stream_names().try_collect().await.unwrap();
    names.sort();
    let mut want: Vec<String> = STREAMS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want, "the streams we create");
    for name in &names {
        let mut stream = js.get_stream(name).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.num_replicas, 3, "{name}: {:?}", info.config);
        let cluster_info = info.cluster.clone().expect("cluster info");
        assert!(cluster_info.leader.is_some(), "{name} has no leader");
        assert_eq!(
            cluster_info.replicas.len(),
            2,
            "{name}: a leader and two followers: {cluster_info:?}"
        );
    }

    // The workers' durable consumer is replicated like its stream (it holds the acks).
    let mut consumer = store.work_consumer("default").await.unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(
        info.cluster.as_ref().map(|c| c.replicas.len()),
        Some(2),
        "{:?}",
        info.cluster
    );
    cluster.stop().await;
}

/// A `tracing` writer into a shared buffer, to read the warnings a connection logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn an_existing_resource_keeps_its_replicas_with_a_warning() {
    let cluster = TestCluster::start(3).await;
    // A Python 0.5.1 process (or ours with the default) created everything with one copy.
    let _first = connect(&cluster.urls(), replicated(1)).await;

    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let second = {
        let _guard = tracing::subscriber::set_default(subscriber);
        connect(&cluster.urls(), replicated(3)).await
    };
    let js = second.jetstream();
    for name in ["PYOCO_WORK", "KV_pyoco_runs", "OBJ_pyoco_wheels"] {
        let mut stream = js.get_stream(name).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.num_replicas, 1, "{name} was changed");
    }
    let log = captured.text();
    for name in ["PYOCO_WORK", "KV_pyoco_runs", "OBJ_pyoco_wheels"] {
        assert!(
            log.lines()
                .any(|l| l.contains(name)
                    && l.contains("replicas 1 (PYOCO_JETSTREAM_REPLICAS says 3")),
            "no replica warning for {name} in:\n{log}"
        );
    }
    cluster.stop().await;
}

#[tokio::test]
async fn a_single_server_refuses_replicas_and_names_the_setting() {
    let nats = TestNats::start().await;
    let err = match tokio::time::timeout(
        Duration::from_secs(20),
        Store::connect(
            &nats.url(),
            "replicas-test",
            replicated(3),
            DEFAULT_CONNECT_TIMEOUT,
        ),
    )
    .await
    .expect("fails at once, without retrying")
    {
        Ok(_) => panic!("R3 streams on a single server"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("not part of a JetStream cluster")
            && err.contains("set PYOCO_JETSTREAM_REPLICAS=1"),
        "{err}"
    );
    // Nothing half-made: no stream was created.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let names: Vec<String> = js.stream_names().try_collect().await.unwrap();
    assert!(names.is_empty(), "{names:?}");
}
