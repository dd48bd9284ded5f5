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
        let _: () = c.hset_multiple(&key, &[("username", &name), ("email", &mail), ("pwhash", &"x".to_string())]).unwrap();
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
