//! A Redis Cluster of the server under test: 3 primaries and 3 replicas on free
//! ports, every node loading the module with the same arguments and mapping
//! file, created with `valkey-cli --cluster create` (which builds a Redis 8
//! cluster as well). Killed on drop with its nodes.

use super::*;
use redis::cluster::{ClusterClient, ClusterConnection};

/// The cluster CLI: `PGSYNC_CLUSTER_CLI`, else `valkey-cli`, else `redis-cli`.
pub fn cli() -> String {
    if let Ok(cli) = std::env::var("PGSYNC_CLUSTER_CLI") {
        return cli;
    }
    let found = |name: &str| Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success());
    if found("valkey-cli") { "valkey-cli" } else { "redis-cli" }.to_string()
}

/// Runs the cluster CLI with `args`; panics with its output if it fails.
pub fn run_cli(args: &[&str]) -> String {
    let out = Command::new(cli()).args(args).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", cli()));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{} {args:?} failed:\n{text}", cli());
    text
}

/// A running cluster; see the module docs.
pub struct Cluster {
    /// The nodes, in the order they were created (roles change on failover).
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// Starts 3 primaries and 3 replicas with the module on `db` and `mapping`,
    /// `extra` module settings and `args` server settings for every node, and
    /// waits until every node sees the whole cluster healthy.
    pub fn start(db: &TestDb, mapping: &str, extra: &[(&str, &str)], args: &[&str]) -> Cluster {
        let file = std::env::temp_dir().join(format!("{}.json", unique("pgsync_mapping")));
        std::fs::write(&file, mapping).expect("write mapping file");
        let file = file.display().to_string();
        let mut module_args = vec![("postgres-url", db.url.as_str()), ("mappings", file.as_str())];
        module_args.extend_from_slice(extra);
        let nodes: Vec<Server> = (0..6)
            .map(|_| {
                let bus = free_port().to_string();
                let mut all = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    &bus,
                    // Short enough for a failover test, long enough for a busy machine.
                    "--cluster-node-timeout",
                    "3000",
                    "--cluster-require-full-coverage",
                    "no",
                    "--cluster-replica-validity-factor",
                    "0",
                ];
                all.extend_from_slice(args);
                Server::start(&module_args, &all)
            })
            .collect();
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addresses.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "1", "--cluster-yes"]);
        run_cli(&create);
        let cluster = Cluster { nodes };
        cluster.wait_healthy();
        cluster
    }

    /// Waits until every live node reports `cluster_state:ok` and knows 6 nodes,
    /// and every replica's link to its primary is up.
    pub fn wait_healthy(&self) {
        for node in &self.nodes {
            let Ok(mut c) = try_connect(node.port) else { continue };
            eventually("cluster_state:ok on every node", || {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap_or_default();
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:6")
            });
            eventually("replicas linked to their primary", || {
                let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap_or_default();
                info.contains("role:master") || info.contains("master_link_status:up")
            });
        }
    }

    /// The ports of the nodes that are primaries now (dead nodes left out).
    pub fn primaries(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| {
                try_connect(n.port).ok().is_some_and(|mut c| {
                    let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap_or_default();
                    info.contains("role:master")
                })
            })
            .map(|n| n.port)
            .collect()
    }

    /// The node on `port`.
    pub fn node(&mut self, port: u16) -> &mut Server {
        self.nodes.iter_mut().find(|n| n.port == port).expect("a node on that port")
    }

    /// A cluster-aware connection (follows MOVED and ASK).
    pub fn client(&self) -> ClusterConnection {
        let seeds: Vec<String> = self.live_ports().iter().map(|p| format!("redis://127.0.0.1:{p}/")).collect();
        ClusterClient::builder(seeds)
            .retries(20)
            .build()
            .and_then(|c| c.get_connection())
            .expect("cluster connection")
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes.iter().filter(|n| try_connect(n.port).is_ok()).map(|n| n.port).collect()
    }

    /// Runs `SYNC.WAIT` on every primary until each has nothing pending.
    pub fn sync_wait(&self) {
        for port in self.primaries() {
            sync_wait(&mut connect(port));
        }
    }

    /// `valkey-cli --cluster check` on a live node; panics unless it is clean.
    pub fn check(&self) {
        let seed = format!("127.0.0.1:{}", self.live_ports()[0]);
        let out = run_cli(&["--cluster", "check", &seed]);
        assert!(
            out.contains("[OK] All 16384 slots covered") && !out.contains("[WARNING]") && !out.contains("[ERR]"),
            "--cluster check is not clean:\n{out}"
        );
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes.iter().map(|n| format!("--- node {}\n{}", n.port, n.log())).collect()
    }
}
