//! Nothing acknowledged is lost: Postgres stopped or its backends killed, Redis
//! killed with -9 or shut down, a replica promoted. Everything is real: private
//! Postgres clusters are stopped, servers are SIGKILLed.

mod common;

use common::items::*;
use common::*;

const AOF: &[&str] = &["--appendonly", "yes", "--appendfsync", "always"];

fn write_items(port: u16, clients: usize, per_client: usize, offset: usize) {
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = connect(port);
                for i in 0..per_client {
                    let id = offset + t * per_client + i + 1;
                    hset(&mut c, &format!("items:{id}"), &[("name", &format!("n{id}")), ("score", &id.to_string())]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn ten_thousand_writes_made_while_postgres_is_down_all_land() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    let server = Server::with_mapping(&db, ITEMS_MAPPING, &[("retry-max-delay-ms", "300")], &[]);
    pg.down();
    write_items(server.port, 5, 2000, 0);
    let mut c = server.conn();
    eventually("Postgres reported down", || status(&mut c, "items")["postgres"] == "down");
    let st = status(&mut c, "items");
    let waiting: i64 = st["pending"].parse::<i64>().unwrap() + st["in_flight"].parse::<i64>().unwrap();
    assert_eq!(waiting, 10_000, "{st:?}");
    assert!(st["lag_ms"].parse::<i64>().unwrap() > 0);
    pg.up();
    sync_wait(&mut c);
    assert_eq!(pg_items(&db).len(), 10_000);
    assert_converged(&db, &mut c, 10_000);
}

#[test]
fn changes_pending_at_a_kill_9_land_after_restart_on_the_same_aof() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    let mut server = Server::with_mapping(&db, ITEMS_MAPPING, &[("retry-max-delay-ms", "300")], AOF);
    let mut c = server.conn();
    hset(&mut c, "items:1", &[("name", "before"), ("score", "1")]);
    sync_wait(&mut c);
    pg.down();
    write_items(server.port, 4, 250, 1);
    hset(&mut c, "items:1", &[("name", "after")]);
    let _: i64 = redis::cmd("DEL").arg("items:2").query(&mut c).unwrap();
    server.kill9();
    server.restart();
    let mut c = server.conn();
    eventually("journal queued again", || {
        let st = status(&mut c, "items");
        st["pending"].parse::<i64>().unwrap() + st["in_flight"].parse::<i64>().unwrap() == 1001
    });
    pg.up();
    sync_wait(&mut c);
    assert_converged(&db, &mut c, 1001);
    assert_eq!(pg_items(&db)[&1][0].as_deref(), Some("after"));
    assert!(!pg_items(&db).contains_key(&2));
}

#[test]
fn shutdown_with_pending_changes_loses_nothing() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    let mut server = Server::with_mapping(&db, ITEMS_MAPPING, &[("retry-max-delay-ms", "300")], AOF);
    pg.down();
    write_items(server.port, 2, 100, 0);
    let mut c = server.conn();
    let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query(&mut c);
    server.restart();
    pg.up();
    let mut c = server.conn();
    eventually("journal recovered", || status(&mut c, "items")["synced"] != "0" || pg_items(&db).len() == 200);
    sync_wait(&mut c);
    assert_eq!(pg_items(&db).len(), 200);
    assert!(server.log().contains("queued 200 unsynced change(s) from the journal"), "{}", server.log());
}

/// A primary and its replica, both with the items mapping, the link up.
fn primary_and_replica(db: &TestDb) -> (Server, Server) {
    let primary = Server::with_mapping(db, ITEMS_MAPPING, &[("retry-max-delay-ms", "300")], &[]);
    let replicaof = primary.port.to_string();
    let replica = Server::with_mapping(
        db,
        ITEMS_MAPPING,
        &[("retry-max-delay-ms", "300")],
        &["--replicaof", "127.0.0.1", &replicaof],
    );
    let mut r = replica.conn();
    eventually("replica in sync", || {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut r).unwrap();
        info.contains("master_link_status:up")
    });
    (primary, replica)
}

#[test]
fn a_replica_never_writes_and_carries_on_when_promoted() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    let (mut primary, replica) = primary_and_replica(&db);
    let mut p = primary.conn();
    let mut r = replica.conn();
    write_items(primary.port, 2, 50, 0);
    sync_wait(&mut p);
    let _: i64 = redis::cmd("WAIT").arg(1).arg(10_000).query(&mut p).unwrap();
    let st = status(&mut r, "items");
    assert_eq!(st["role"], "replica");
    assert_eq!((st["synced"].as_str(), st["pending"].as_str()), ("0", "0"), "the replica wrote nothing: {st:?}");
    assert_eq!(status(&mut p, "items")["synced"], "100");

    pg.down();
    write_items(primary.port, 2, 100, 100);
    hset(&mut p, "items:1", &[("name", "changed")]);
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(10_000).query(&mut p).unwrap();
    assert_eq!(acked, 1);
    primary.kill9();
    let _: () = redis::cmd("REPLICAOF").arg("NO").arg("ONE").query(&mut r).unwrap();
    eventually("promoted replica queued the journal", || {
        let st = status(&mut r, "items");
        st["role"] == "primary"
            && st["pending"].parse::<i64>().unwrap() + st["in_flight"].parse::<i64>().unwrap() == 201
    });
    pg.up();
    sync_wait(&mut r);
    assert_eq!(pg_items(&db).len(), 300);
    assert_converged(&db, &mut r, 300);
}

#[test]
fn sync_wait_right_after_promotion_counts_the_journal() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    let (mut primary, replica) = primary_and_replica(&db);
    let mut p = primary.conn();
    let mut r = replica.conn();
    pg.down();
    write_items(primary.port, 4, 1000, 0);
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(10_000).query(&mut p).unwrap();
    assert_eq!(acked, 1);
    primary.kill9();
    // One round trip: the journal is not recovered by a cron in between.
    let (_, left): ((), i64) =
        redis::pipe().cmd("REPLICAOF").arg("NO").arg("ONE").cmd("SYNC.WAIT").arg(200).query(&mut r).unwrap();
    assert_eq!(left, 4000, "SYNC.WAIT right after the promotion must count the journal's rows");
    pg.up();
    sync_wait(&mut r);
    assert_eq!(pg_items(&db).len(), 4000);
    assert_converged(&db, &mut r, 4000);
}

#[test]
fn killing_the_module_backends_mid_run_loses_nothing() {
    let db = test_db(ITEMS_SQL);
    let server = Server::with_mapping(&db, ITEMS_MAPPING, &[("retry-max-delay-ms", "200"), ("batch-size", "50")], &[]);
    let port = server.port;
    let writer = std::thread::spawn(move || write_items(port, 4, 5000, 0));
    let mut admin = db.client();
    let mut killed = 0i64;
    while !writer.is_finished() {
        let n: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = 'redis-pgsync' AND datname = current_database()",
                &[],
            )
            .unwrap()
            .get(0);
        killed += n;
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    writer.join().unwrap();
    assert!(killed > 0, "some module connections were terminated");
    let mut c = server.conn();
    sync_wait(&mut c);
    assert_converged(&db, &mut c, 20_000);
    assert_eq!(pg_items(&db).len(), 20_000);
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn hdel_while_postgres_is_down_nulls_the_column_without_a_field_map() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    let mapping = r#"{"mappings": [{"name": "items", "table": "items", "key_prefix": "items:",
        "primary_key": "id", "mode": "write-behind"}]}"#;
    let mut server = Server::with_mapping(&db, mapping, &[("retry-max-delay-ms", "300")], AOF);
    let mut c = server.conn();
    hset(&mut c, "items:1", &[("name", "n"), ("tag", "t")]);
    sync_wait(&mut c);
    pg.down();
    let _: i64 = redis::cmd("HDEL").arg("items:1").arg("tag").query(&mut c).unwrap();
    // Restart too, so the change is recovered from the journal before any schema check.
    server.restart();
    let mut c = server.conn();
    pg.up();
    sync_wait(&mut c);
    assert_eq!(pg_items(&db)[&1], [Some("n".into()), None, None]);
}

#[test]
fn field_expiry_is_a_cache_event_not_a_delete() {
    let db = test_db(ITEMS_SQL);
    let server = Server::with_mapping(&db, ITEMS_MAPPING, &[], &[]);
    let mut c = server.conn();
    let supported: Vec<redis::Value> = redis::cmd("COMMAND").arg("INFO").arg("HPEXPIRE").query(&mut c).unwrap();
    if matches!(supported.first(), None | Some(redis::Value::Nil)) {
        println!("this server has no hash-field expiry (HPEXPIRE); nothing to check");
        return;
    }
    hset(&mut c, "items:1", &[("name", "n"), ("tag", "t")]);
    sync_wait(&mut c);
    let _: Vec<i64> = redis::cmd("HPEXPIRE")
        .arg("items:1")
        .arg(50)
        .arg("FIELDS")
        .arg(2)
        .arg("name")
        .arg("tag")
        .query(&mut c)
        .unwrap();
    eventually("fields expired", || !exists(&mut c, "items:1"));
    sync_wait(&mut c);
    assert_eq!(pg_items(&db)[&1], [Some("n".into()), None, Some("t".into())], "the row is untouched");
}
