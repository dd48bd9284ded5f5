//! Write-behind: writers write `items:<id>` directly and Postgres follows.

mod common;

use common::items::*;
use common::*;
use redis::Commands;

fn row(db: &TestDb, id: i32) -> Option<[Option<String>; 3]> {
    pg_items(db).remove(&id)
}

#[test]
fn hash_writes_deletes_and_renames_reach_postgres() {
    let db = test_db(ITEMS_SQL);
    let server = Server::with_mapping(&db, ITEMS_MAPPING, &[], &[]);
    let mut c = server.conn();
    hset(&mut c, "items:1", &[("name", "one"), ("score", "1"), ("tag", "t"), ("extra", "kept")]);
    hset(&mut c, "items:2", &[("name", "two"), ("score", "2")]);
    let _: i64 = c.hincr("items:2", "score", 40).unwrap();
    sync_wait(&mut c);
    assert_eq!(row(&db, 1), Some([Some("one".into()), Some("1".into()), Some("t".into())]));
    assert_eq!(row(&db, 2), Some([Some("two".into()), Some("42".into()), None]));

    let _: i64 = c.hdel("items:1", "tag").unwrap();
    sync_wait(&mut c);
    assert_eq!(row(&db, 1), Some([Some("one".into()), Some("1".into()), None]), "HDEL sets NULL");

    let _: () = c.rename("items:2", "items:3").unwrap();
    sync_wait(&mut c);
    assert_eq!(row(&db, 2), None, "RENAME deletes the old row");
    assert_eq!(row(&db, 3), Some([Some("two".into()), Some("42".into()), None]));

    let _: i64 = c.del("items:1").unwrap();
    let _: i64 = c.unlink("items:3").unwrap();
    let mut other_db = server.conn();
    let _: () = redis::cmd("SELECT").arg(1).query(&mut other_db).unwrap();
    hset(&mut other_db, "items:9", &[("name", "elsewhere")]);
    sync_wait(&mut c);
    assert!(pg_items(&db).is_empty(), "DEL and UNLINK delete rows; database 1 is not synced");
    assert_eq!(journal_size(&mut c), (0, 0), "journal drained");
    assert!(journal_keys(&mut c).is_empty(), "no journal in the keyspace");
}

#[test]
fn expiry_and_eviction_never_delete_rows() {
    let db = test_db(ITEMS_SQL);
    let server = Server::with_mapping(&db, ITEMS_MAPPING, &[], &["--maxmemory-policy", "volatile-lru"]);
    let mut c = server.conn();
    for id in 1..=50 {
        hset(&mut c, &format!("items:{id}"), &[("name", "x"), ("score", &id.to_string())]);
    }
    sync_wait(&mut c);
    let _: bool = c.pexpire("items:1", 50).unwrap();
    for id in 2..=50 {
        let _: bool = c.expire(format!("items:{id}"), 100_000).unwrap();
    }
    eventually("items:1 expired", || !exists(&mut c, "items:1"));
    let used: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    let used: u64 = used.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(used + 200_000).query(&mut c).unwrap();
    let filler = "f".repeat(10_000);
    for i in 0..100 {
        let _: redis::RedisResult<()> = c.set(format!("filler:{i}"), &filler);
        if (2..=50).filter(|id| !exists(&mut c, &format!("items:{id}"))).count() > 5 {
            break;
        }
    }
    let evicted = (2..=50).filter(|id| !exists(&mut c, &format!("items:{id}"))).count();
    assert!(evicted > 5, "some items were evicted ({evicted})");
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query(&mut c).unwrap();
    sync_wait(&mut c);
    assert_eq!(pg_items(&db).len(), 50, "expired and evicted keys keep their rows");
}

#[test]
fn a_bad_row_is_dead_lettered_while_the_rest_of_its_batch_commits() {
    let db = test_db(ITEMS_SQL);
    let server = Server::with_mapping(&db, ITEMS_MAPPING, &[("batch-size", "1000"), ("batch-delay-ms", "500")], &[]);
    let mut c = server.conn();
    let mut pipe = redis::pipe();
    pipe.atomic();
    for id in 1..=1000 {
        let score = if id == 500 { "5000000000000".to_string() } else { id.to_string() };
        pipe.cmd("HSET").arg(format!("items:{id}")).arg("name").arg("n").arg("score").arg(score).ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    sync_wait(&mut c);
    assert_eq!(pg_items(&db).len(), 999, "the 999 good rows committed");

    let failed: Vec<Vec<redis::Value>> = redis::cmd("SYNC.FAILED").arg("items").query(&mut c).unwrap();
    assert_eq!(failed.len(), 1);
    let entry: Vec<String> = failed[0]
        .iter()
        .map(|v| match v {
            redis::Value::Int(n) => n.to_string(),
            v => redis::from_redis_value(v).unwrap(),
        })
        .collect();
    assert_eq!(entry[5], "500", "{entry:?}");
    assert!(entry[9].contains("score_not_huge"), "the Postgres error is kept: {entry:?}");
    let st = status(&mut c, "items");
    assert_eq!(st["failed"], "1");

    db.client().batch_execute("ALTER TABLE items DROP CONSTRAINT score_not_huge").unwrap();
    let retried: i64 = redis::cmd("SYNC.RETRY").arg("ALL").query(&mut c).unwrap();
    assert_eq!(retried, 1);
    sync_wait(&mut c);
    assert_eq!(row(&db, 500).unwrap()[1].as_deref(), Some("5000000000000"));
    let left: Vec<redis::Value> = redis::cmd("SYNC.FAILED").query(&mut c).unwrap();
    assert!(left.is_empty());

    // Two more rejections, then DISCARD empties the list.
    db.client().batch_execute("ALTER TABLE items ADD CONSTRAINT no_bad CHECK (name <> 'bad')").unwrap();
    hset(&mut c, "items:1", &[("name", "bad")]);
    hset(&mut c, "items:2", &[("name", "bad")]);
    sync_wait(&mut c);
    let listed: Vec<redis::Value> = redis::cmd("SYNC.FAILED").arg("COUNT").arg(1).query(&mut c).unwrap();
    assert_eq!(listed.len(), 1, "COUNT limits the list");
    let err = redis::cmd("SYNC.RETRY").arg("no-such").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("no failed entry"), "{err}");
    let dropped: i64 = redis::cmd("SYNC.DISCARD").arg("ALL").query(&mut c).unwrap();
    assert_eq!(dropped, 2);
    let left: Vec<redis::Value> = redis::cmd("SYNC.FAILED").query(&mut c).unwrap();
    assert!(left.is_empty());
    assert_eq!(hgetall(&mut c, "items:1")["name"], "bad", "Redis keeps the rejected value");
}

#[test]
fn random_concurrent_writes_converge() {
    let db = test_db(ITEMS_SQL);
    let server = Server::with_mapping(&db, ITEMS_MAPPING, &[("workers", "4")], &[]);
    let port = server.port;
    let total = std::env::var("PGSYNC_STRESS_WRITES").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let clients = 8;
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            std::thread::spawn(move || {
                use rand::Rng;
                let mut c = connect(port);
                let mut rng = rand::thread_rng();
                let per_client = total / clients;
                let mut done = 0;
                while done < per_client {
                    let mut pipe = redis::pipe();
                    for _ in 0..100 {
                        let key = format!("items:{}", rng.gen_range(1..=1000));
                        match rng.gen_range(0..10) {
                            0..=4 => pipe
                                .cmd("HSET")
                                .arg(&key)
                                .arg("name")
                                .arg(format!("c{t}"))
                                .arg("tag")
                                .arg(rng.gen_range(0..9))
                                .ignore(),
                            5..=7 => pipe.cmd("HINCRBY").arg(&key).arg("score").arg(rng.gen_range(-5..10)).ignore(),
                            8 => pipe.cmd("HDEL").arg(&key).arg("tag").ignore(),
                            _ => pipe.cmd("DEL").arg(&key).ignore(),
                        };
                    }
                    let _: () = pipe.query(&mut c).unwrap();
                    done += 100;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = server.conn();
    sync_wait(&mut c);
    assert_converged(&db, &mut c, 1000);
    assert_eq!(status(&mut c, "items")["failed"], "0");
}
