//! Redis Cluster (3 primaries, 3 replicas, every node with the module): each
//! primary syncs its own slots; resharding and failover lose nothing; the
//! module's own keys stay in owned slots.

mod common;

use common::cluster::*;
use common::items::*;
use common::*;
use redis::Commands;

/// The seed scenario's users (write-through) and the items table (write-behind).
const MAPPINGS: &str = r#"{"mappings": [
  {"name": "users", "table": "users", "key_prefix": "users:", "primary_key": "id", "mode": "write-through",
   "fields": {"username": "username", "email": "email", "pwhash": "password_hash", "score": "score"}},
  {"name": "items", "table": "items", "key_prefix": "items:", "primary_key": "id", "mode": "write-behind",
   "fields": {"name": "name", "score": "score", "tag": "tag"}, "notify": "sync:items"}]}"#;

fn schema() -> String {
    format!("{USERS_SQL};\n{ITEMS_SQL}")
}

#[test]
fn write_through_and_write_behind_round_trip_through_a_cluster_client() {
    let db = test_db(&schema());
    let cluster = Cluster::start(&db, MAPPINGS, &[], &[]);
    let mut c = cluster.client();
    for id in 1..=30 {
        let key = format!("__{{users:{id}}}");
        let name = format!("user{id}");
        let mail = format!("u{id}@example.com");
        let _: () =
            c.hset_multiple(&key, &[("username", &name), ("email", &mail), ("pwhash", &"x".to_string())]).unwrap();
        let _: () = c.hset_multiple(format!("items:{id}"), &[("name", "n"), ("score", &id.to_string())]).unwrap();
        let _: i64 = c.hincr(format!("items:{id}"), "score", 100).unwrap();
    }
    cluster.sync_wait();
    let users: i64 = db.client().query_one("SELECT count(*) FROM users", &[]).unwrap().get(0);
    assert_eq!(users, 30);
    for id in 1..=30 {
        let cached: Option<String> = c.hget(format!("users:{id}"), "username").unwrap();
        assert_eq!(cached, Some(format!("user{id}")), "the committed row is cached on its node");
        let score: Option<String> = c.hget(format!("items:{id}"), "score").unwrap();
        assert_eq!(score, Some((id + 100).to_string()));
    }
    let pg = pg_items(&db);
    assert_eq!(pg.len(), 30);
    assert!((1..=30).all(|id| pg[&id][1] == Some((id + 100).to_string())), "every increment once");

    let _: i64 = c.del("items:7").unwrap();
    cluster.sync_wait();
    assert!(!pg_items(&db).contains_key(&7), "DEL through the cluster deletes the row");

    // Each primary reports its own slots; the replicas stay passive.
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    for node in &cluster.nodes {
        let st = status(&mut node.conn(), "items");
        if primaries.contains(&node.port) {
            assert!(st["cluster"].starts_with("slots "), "primary {}: {st:?}", node.port);
            assert_eq!(st["role"], "primary");
        } else {
            assert_eq!(st["role"], "replica");
        }
    }
    cluster.check();
}

/// `SYNC.STATUS items` figure `name` on the node on `port`.
fn items_figure(port: u16, name: &str) -> String {
    status(&mut connect(port), "items")[name].clone()
}

#[test]
fn migrate_moves_a_pending_change_with_its_row_and_deletes_nothing() {
    let db = test_db(&schema());
    let cluster = Cluster::start(&db, MAPPINGS, &[], &[]);
    let mut c = cluster.client();
    for id in 1..=2 {
        let _: () = c.hset_multiple(format!("items:{id}"), &[("name", "n"), ("score", "1")]).unwrap();
    }
    cluster.sync_wait();
    // The table away: the next change waits, queued and journaled on its node.
    db.client().batch_execute("ALTER TABLE items RENAME TO items_away").unwrap();
    let _: i64 = c.hincr("items:1", "score", 5).unwrap();
    let _: i64 = c.hincr("items:1", "score", 5).unwrap();
    let any = cluster.primaries()[0];
    let slot = key_slot(any, "items:1");
    let from = owner_of(any, slot);
    let to = cluster.primaries().into_iter().find(|p| *p != from).unwrap();
    eventually("the change waits for the table, not in a batch", || {
        items_figure(from, "pending") == "1" && items_figure(from, "in_flight") == "0"
    });
    // MIGRATE names only the hash: its journal log must leave with it.
    move_slot(&cluster, slot, to, &["items:1"]);
    assert_eq!(items_figure(from, "pending"), "0", "the old node forgot the change");
    assert_eq!(items_figure(to, "pending"), "1", "the new node carries on with it");
    // A synced row arriving is no new write.
    let slot2 = key_slot(any, "items:2");
    let to2 = cluster.primaries().into_iter().find(|p| *p != owner_of(any, slot2)).unwrap();
    let synced_before = items_figure(to2, "synced");
    move_slot(&cluster, slot2, to2, &[]);
    assert_eq!(items_figure(to2, "synced"), synced_before);
    assert_eq!(items_figure(to2, "pending"), if to2 == to { "1" } else { "0" }, "nothing captured on arrival");

    db.client().batch_execute("ALTER TABLE items_away RENAME TO items").unwrap();
    cluster.sync_wait();
    eventually("the moved change lands", || pg_items(&db).get(&1).is_some_and(|r| r[1].as_deref() == Some("11")));
    assert_eq!(pg_items(&db)[&2][1].as_deref(), Some("1"), "MIGRATE's delete on the old node deleted no row");
    let _: i64 = c.hincr("items:1", "score", 1).unwrap();
    cluster.sync_wait();
    assert_eq!(pg_items(&db)[&1][1].as_deref(), Some("12"), "every increment once");
    let cached: String = c.hget("items:1", "score").unwrap();
    assert_eq!(cached, "12");
    for port in cluster.primaries() {
        assert_eq!(keys_outside_owned_slots(port), 0, "node {port} holds keys of slots it does not own");
    }
    cluster.check();
}

/// Writes under resharding: `PGSYNC_CLUSTER_WRITES` (default 100,000) over
/// `PGSYNC_CLUSTER_KEYS` (default 10,000) keys.
fn load_size() -> (usize, usize) {
    let var = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    (var("PGSYNC_CLUSTER_WRITES", 100_000), var("PGSYNC_CLUSTER_KEYS", 10_000))
}

/// Runs `write` until it succeeds: during a reshard or a failover the cluster
/// answers TRYAGAIN, CLUSTERDOWN or nothing for a moment.
fn persist<T>(what: &str, mut write: impl FnMut() -> redis::RedisResult<T>) -> T {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match write() {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("{what} kept failing: {e}"),
        }
    }
}

#[test]
fn resharding_a_third_of_the_slots_under_load_loses_and_deletes_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
    use std::sync::Arc;
    let (writes, keys) = load_size();
    let db = test_db(&schema());
    let cluster = Cluster::start(&db, MAPPINGS, &[], &[]);
    let mut c = cluster.client();
    let mut pipe = redis::cluster::cluster_pipe();
    for id in 1..=keys {
        pipe.hset_multiple(format!("items:{id}"), &[("name", "n"), ("score", "0")]).ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    let increments: Arc<Vec<AtomicI64>> = Arc::new((0..=keys).map(|_| AtomicI64::new(0)).collect());
    let done = Arc::new(AtomicUsize::new(keys));
    let resharded = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (increments, done, resharded) = (increments.clone(), done.clone(), resharded.clone());
            let mut c = cluster.client();
            std::thread::spawn(move || {
                let mut n = w;
                while done.load(Ordering::Relaxed) < writes || !resharded.load(Ordering::Relaxed) {
                    n = (n * 7919 + 13) % keys;
                    let key = format!("items:{}", n + 1);
                    let _: i64 = persist("HINCRBY", || c.hincr(&key, "score", 1));
                    increments[n + 1].fetch_add(1, Ordering::Relaxed);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let primaries = cluster.primaries();
    let seed = format!("127.0.0.1:{}", primaries[0]);
    let from = format!("{},{}", node_id(primaries[0]), node_id(primaries[1]));
    let to = node_id(primaries[2]);
    let third = (16384 / 3).to_string();
    let out = run_cli(&[
        "--cluster",
        "reshard",
        &seed,
        "--cluster-from",
        &from,
        "--cluster-to",
        &to,
        "--cluster-slots",
        &third,
        "--cluster-yes",
    ]);
    resharded.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    assert!(!out.contains("ERR"), "reshard failed:\n{out}");
    cluster.sync_wait();
    let pg = pg_items(&db);
    assert_eq!(pg.len(), keys, "a row was deleted");
    let mut c = cluster.client();
    for id in 1..=keys {
        let expected = increments[id].load(Ordering::Relaxed).to_string();
        let cached: String = c.hget(format!("items:{id}"), "score").unwrap();
        assert_eq!(cached, expected, "Redis score of items:{id}");
        assert_eq!(pg[&(id as i32)][1].as_deref(), Some(expected.as_str()), "Postgres score of items:{id}");
    }
    for port in cluster.primaries() {
        assert_eq!(keys_outside_owned_slots(port), 0, "node {port} holds keys of slots it does not own");
        let journal: Vec<String> = redis::cmd("KEYS").arg("pgsync:journal:*").query(&mut connect(port)).unwrap();
        assert!(journal.is_empty(), "journal left on {port}: {journal:?}");
    }
    cluster.check();
}
