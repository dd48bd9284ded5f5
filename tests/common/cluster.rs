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

/// Clusters running at once in this test binary, and the most allowed: each
/// holds about 24 Postgres connections (docs/cluster.md) and 6 servers, and
/// four at once exhausted the shared Postgres's 100 connections in CI.
static RUNNING: (std::sync::Mutex<usize>, std::sync::Condvar) = (std::sync::Mutex::new(0), std::sync::Condvar::new());
const MOST_AT_ONCE: usize = 2;

/// A place among the [`MOST_AT_ONCE`] clusters allowed to run, held while the
/// cluster lives.
struct Turn;

impl Turn {
    fn take() -> Turn {
        let mut running = RUNNING.0.lock().unwrap_or_else(|p| p.into_inner());
        while *running >= MOST_AT_ONCE {
            running = RUNNING.1.wait(running).unwrap_or_else(|p| p.into_inner());
        }
        *running += 1;
        Turn
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        *RUNNING.0.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        RUNNING.1.notify_one();
    }
}

/// A running cluster; see the module docs.
pub struct Cluster {
    /// The nodes, in the order they were created (roles change on failover).
    pub nodes: Vec<Server>,
    /// Dropped after the nodes (fields drop in order), freeing the place.
    _turn: Turn,
}

impl Cluster {
    /// Starts 3 primaries and 3 replicas with the module on `db` and `mapping`,
    /// `extra` module settings and `args` server settings for every node, and
    /// waits until every node sees the whole cluster healthy.
    pub fn start(db: &TestDb, mapping: &str, extra: &[(&str, &str)], args: &[&str]) -> Cluster {
        Self::start_after(&[], db, mapping, extra, args)
    }

    /// As [`Cluster::start`], with the modules `before` (RedisJSON) loaded ahead
    /// of ours on every node.
    pub fn start_after(
        before: &[PathBuf],
        db: &TestDb,
        mapping: &str,
        extra: &[(&str, &str)],
        args: &[&str],
    ) -> Cluster {
        let turn = Turn::take();
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
                    "5000",
                    "--cluster-require-full-coverage",
                    "no",
                    "--cluster-replica-validity-factor",
                    "0",
                ];
                all.extend_from_slice(args);
                Server::start_after(before, &module_args, &all, &[])
            })
            .collect();
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addresses.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "1", "--cluster-yes"]);
        run_cli(&create);
        let cluster = Cluster { nodes, _turn: turn };
        cluster.wait_healthy();
        cluster
    }

    /// Waits until every live node reports `cluster_state:ok` and knows 6 nodes,
    /// every replica's link to its primary is up, and every node maps every slot
    /// to the same primary.
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
        // A client maps the slots from one node: until every node agrees, it can
        // be sent MOVED for a write on a slot it thought it knew.
        let live = self.live_ports();
        eventually("every node sees the same slot owners", || {
            let mut views = live.iter().map(|port| {
                let mut owners = slot_owners(*port);
                owners.sort();
                owners
            });
            let first = views.next().unwrap_or_default();
            first.iter().map(|o| u32::from(o.1) - u32::from(o.0) + 1).sum::<u32>() == 16384
                && views.all(|view| view == first)
        });
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
        cluster_connection(&self.live_ports()).expect("cluster connection")
    }

    /// The ports of every node, dead or alive.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
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

/// A cluster-aware connection seeded with the nodes on `ports` (dead ones are
/// passed over).
pub fn cluster_connection(ports: &[u16]) -> redis::RedisResult<ClusterConnection> {
    let seeds: Vec<String> = ports.iter().map(|p| format!("redis://127.0.0.1:{p}/")).collect();
    ClusterClient::builder(seeds).retries(20).build().and_then(|c| c.get_connection())
}

/// The node id of the server on `port`.
pub fn node_id(port: u16) -> String {
    redis::cmd("CLUSTER").arg("MYID").query(&mut connect(port)).expect("CLUSTER MYID")
}

/// The hash slot of `key`.
pub fn key_slot(port: u16, key: &str) -> u16 {
    redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut connect(port)).expect("CLUSTER KEYSLOT")
}

/// Slot ranges and the port of their primary, as the node on `port` sees them.
pub fn slot_owners(port: u16) -> Vec<(u16, u16, u16)> {
    let ranges: Vec<redis::Value> =
        redis::cmd("CLUSTER").arg("SLOTS").query(&mut connect(port)).expect("CLUSTER SLOTS");
    ranges
        .iter()
        .filter_map(|range| {
            let redis::Value::Array(items) = range else { return None };
            let first: u16 = redis::from_redis_value(&items[0]).ok()?;
            let last: u16 = redis::from_redis_value(&items[1]).ok()?;
            let redis::Value::Array(primary) = &items[2] else { return None };
            let port: u16 = redis::from_redis_value(&primary[1]).ok()?;
            Some((first, last, port))
        })
        .collect()
}

/// The port of the primary serving `slot`.
pub fn owner_of(port: u16, slot: u16) -> u16 {
    slot_owners(port).iter().find(|(a, b, _)| (*a..=*b).contains(&slot)).map(|o| o.2).expect("slot served")
}

/// Moves `slot` to the primary on `to` as `redis-cli --cluster reshard` does:
/// IMPORTING and MIGRATING, `MIGRATE` of `keys` (or, when empty, of the keys
/// the source lists, 10 at a time, until none is left), then NODE everywhere.
pub fn move_slot(cluster: &Cluster, slot: u16, to: u16, keys: &[&str]) {
    let from = owner_of(to, slot);
    let (from_id, to_id) = (node_id(from), node_id(to));
    let setslot = |port: u16, state: &str, id: &str| {
        let _: () =
            redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg(state).arg(id).query(&mut connect(port)).unwrap();
    };
    setslot(to, "IMPORTING", &from_id);
    setslot(from, "MIGRATING", &to_id);
    let migrate = |keys: &[String]| {
        let mut cmd = redis::cmd("MIGRATE");
        cmd.arg("127.0.0.1").arg(to).arg("").arg(0).arg(5000).arg("KEYS").arg(keys);
        let reply: String = cmd.query(&mut connect(from)).expect("MIGRATE");
        reply
    };
    if !keys.is_empty() {
        migrate(&keys.iter().map(|k| k.to_string()).collect::<Vec<_>>());
    }
    loop {
        let left: Vec<String> =
            redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(10).query(&mut connect(from)).unwrap();
        if left.is_empty() || !keys.is_empty() {
            assert!(left.is_empty(), "keys left behind in slot {slot}: {left:?}");
            break;
        }
        migrate(&left);
    }
    for port in cluster.primaries() {
        setslot(port, "NODE", &to_id);
    }
}

/// Keys the node on `port` holds in slots it does not own: its `DBSIZE` minus
/// `CLUSTER COUNTKEYSINSLOT` of each slot it owns.
pub fn keys_outside_owned_slots(port: u16) -> i64 {
    let mut c = connect(port);
    let mut pipe = redis::pipe();
    for (first, last, _) in slot_owners(port).into_iter().filter(|o| o.2 == port) {
        for slot in first..=last {
            pipe.cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot);
        }
    }
    let counts: Vec<i64> = pipe.query(&mut c).expect("COUNTKEYSINSLOT");
    let size: i64 = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
    size - counts.iter().sum::<i64>()
}
