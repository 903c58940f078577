//! A JetStream cluster on loopback: three (or more) supervised nats-servers joined by routes.
//!
//! Each node is a [`NatsSupervisor`] with its own free client port, cluster port and temporary
//! store, named `n1`, `n2`, …; all of them route to each other in the cluster `pyoco`. Like
//! every supervised server, a node killed with `kill -9` ([`TestCluster::kill9`]) is started
//! again on the same ports and store (what systemd's `Restart=` does for a real node).

use std::time::{Duration, Instant};

use async_nats::jetstream;
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use pyoco_natsd::{NatsServerConfig, NatsState, NatsSupervisor, RestartPolicy};

use crate::{init_tracing, nats_server_bin};

/// One node of a [`TestCluster`].
pub struct ClusterNode {
    /// `n1`, `n2`, … (the nats-server's `server_name`, what stream info calls the leader).
    pub name: String,
    supervisor: NatsSupervisor,
}

impl ClusterNode {
    /// `nats://127.0.0.1:<client port>`.
    pub fn url(&self) -> String {
        self.supervisor.client_url().to_string()
    }

    pub fn supervisor(&self) -> &NatsSupervisor {
        &self.supervisor
    }
}

/// A JetStream cluster of supervised nats-servers on loopback; stopped when dropped.
pub struct TestCluster {
    nodes: Vec<ClusterNode>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl TestCluster {
    /// Start `size` nodes at once (a JetStream cluster answers only once a majority is up) and
    /// wait until the cluster has a meta leader.
    pub async fn start(size: usize) -> TestCluster {
        init_tracing();
        let dir = tempfile::Builder::new()
            .prefix("pyoco-test-cluster-")
            .tempdir()
            .expect("temp dir");
        let cluster_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let starts = (0..size).map(|i| {
            let name = format!("n{}", i + 1);
            let mut config =
                NatsServerConfig::new(nats_server_bin(), dir.path().join(&name).join("js"));
            config.server_name = name.clone();
            config.port = None;
            config.startup_timeout = Duration::from_secs(30);
            config.stop_grace = Duration::from_secs(3);
            let mut restart = RestartPolicy::default();
            restart.max_attempts = 100;
            restart.max_backoff = Duration::from_secs(1);
            restart.reset_after = Duration::from_secs(5);
            config.restart = restart;
            let routes: Vec<String> = cluster_ports
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
                .collect();
            config.extra_args = vec![
                "--cluster_name".into(),
                "pyoco".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", cluster_ports[i]).into(),
                "--routes".into(),
                routes.join(",").into(),
            ];
            async move {
                let supervisor = NatsSupervisor::start(config)
                    .await
                    .unwrap_or_else(|e| panic!("starting cluster node {name} failed: {e}"));
                ClusterNode { name, supervisor }
            }
        });
        let nodes = futures::future::join_all(starts).await;
        let cluster = TestCluster { nodes, _dir: dir };
        cluster.wait_for_meta_leader(Duration::from_secs(30)).await;
        cluster
    }

    pub fn nodes(&self) -> &[ClusterNode] {
        &self.nodes
    }

    /// Every node's URL, comma-separated (what `PYOCO_NATS_URL` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(ClusterNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node named `name` (`n1`, …).
    pub fn node(&self, name: &str) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// `kill -9` the node's nats-server; its supervisor starts it again. Returns the pid killed.
    pub fn kill9(&self, name: &str) -> u32 {
        let pid = self
            .node(name)
            .supervisor
            .pid()
            .unwrap_or_else(|| panic!("node {name} is not running"));
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill -9");
        pid
    }

    /// Wait until the node runs again (a new process whose JetStream answers).
    pub async fn wait_running(&self, name: &str, old_pid: u32, within: Duration) -> Duration {
        let started = Instant::now();
        let mut state = self.node(name).supervisor.state();
        let result = tokio::time::timeout(
            within,
            state.wait_for(|s| matches!(s, NatsState::Running { pid, .. } if *pid != old_pid)),
        )
        .await;
        assert!(
            matches!(result, Ok(Ok(_))),
            "node {name} did not come back within {within:?}: {:?}",
            self.node(name).supervisor.current_state()
        );
        started.elapsed()
    }

    /// A JetStream context on a client connected to every node.
    pub async fn jetstream(&self) -> jetstream::Context {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(
                self.nodes
                    .iter()
                    .map(|n| n.url().parse::<async_nats::ServerAddr>().unwrap())
                    .collect::<Vec<_>>(),
            )
            .await
            .expect("connect to the cluster");
        jetstream::new(client)
    }

    /// Name of the node leading `stream`, once it has one.
    pub async fn stream_leader(
        js: &jetstream::Context,
        stream: &str,
        within: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(mut s) = js.get_stream(stream).await {
                if let Ok(info) = s.info().await {
                    if let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone()) {
                        return Some(leader);
                    }
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for_meta_leader(&self, within: Duration) {
        let js = self.jetstream().await;
        let deadline = Instant::now() + within;
        loop {
            // Account info answers only once the meta group has a leader.
            match js.query_account().await {
                Ok(_) => return,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "the cluster has no JetStream meta leader: {e}\n{}",
                        self.logs()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// The nodes' recent log lines (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            for line in node.supervisor.recent_logs().iter().rev().take(30).rev() {
                out.push_str(&format!("[{}] {}\n", node.name, line.text));
            }
        }
        out
    }

    /// Stop every node.
    pub async fn stop(self) {
        futures::future::join_all(self.nodes.into_iter().map(|n| n.supervisor.stop())).await;
    }
}
