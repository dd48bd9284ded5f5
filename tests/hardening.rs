//! Production hardening: a batch that commits after a demotion, a large journal
//! recovered while the server keeps answering, the memory of a drained backlog.

mod common;

use common::items::*;
use common::*;

const AOF: &[&str] = &["--appendonly", "yes", "--appendfsync", "always"];

/// `items` in write-through mode: apply writes `items:<id>` after the commit.
const ITEMS_THROUGH: &str = r#"{"mappings": [{"name": "items", "table": "items", "key_prefix": "items:",
    "primary_key": "id", "mode": "write-through", "fields": {"name": "name", "score": "score", "tag": "tag"}}]}"#;

fn figure(c: &mut redis::Connection, name: &str) -> String {
    status(c, "items")[name].clone()
}

fn info_field(c: &mut redis::Connection, section: &str, field: &str) -> String {
    let info: String = redis::cmd("INFO").arg(section).query(c).unwrap();
    let prefix = format!("{field}:");
    info.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_default().trim().to_string()
}

fn used_memory(c: &mut redis::Connection) -> i64 {
    info_field(c, "memory", "used_memory").parse().unwrap()
}

/// HSETs `<prefix><id>` for ids in `ids`, pipelined.
fn write_rows(c: &mut redis::Connection, prefix: &str, ids: std::ops::Range<usize>) {
    let ids: Vec<usize> = ids.collect();
    for chunk in ids.chunks(1000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("HSET")
                .arg(format!("{prefix}{id}"))
                .arg("name")
                .arg(format!("n{id}"))
                .arg("score")
                .arg(id)
                .ignore();
        }
        pipe.query::<()>(c).unwrap();
    }
}

#[test]
fn a_batch_that_commits_after_a_demotion_writes_nothing_into_redis() {
    let db = test_db(ITEMS_SQL);
    let old = Server::with_mapping(&db, ITEMS_THROUGH, &[], &[]);
    let new = Server::with_mapping(&db, ITEMS_THROUGH, &[], &[]);
    let mut c = old.conn();
    eventually("schema checked", || figure(&mut c, "schema") == "ok");
    // The batch stays in flight behind a lock until the server is a replica.
    let mut locker = db.client();
    let mut lock = locker.transaction().unwrap();
    lock.batch_execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE").unwrap();
    hset(&mut c, "__{items:1}", &[("name", "written before the demotion")]);
    eventually("batch in flight", || figure(&mut c, "in_flight") == "1");
    let _: () = redis::cmd("REPLICAOF").arg("127.0.0.1").arg(new.port).query(&mut c).unwrap();
    eventually("replica in sync", || info_field(&mut c, "replication", "master_link_status") == "up");
    lock.commit().unwrap();
    eventually("batch settled", || figure(&mut c, "in_flight") == "0");
    assert_eq!(pg_items(&db)[&1][0].as_deref(), Some("written before the demotion"), "Postgres has the commit");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert!(keys.is_empty(), "the replica holds what its primary holds, nothing more: {keys:?}");
    let mut n = new.conn();
    let _: i64 = redis::cmd("WAIT").arg(1).arg(10_000).query(&mut n).unwrap();
    let _: () = redis::cmd("SET").arg("probe").arg("1").query(&mut n).unwrap();
    eventually("replication still flows", || exists(&mut c, "probe"));
}

#[test]
fn a_large_journal_is_recovered_while_the_server_answers_and_every_row_lands() {
    const ROWS: usize = 40_000;
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    let mut server = Server::with_mapping(&db, ITEMS_MAPPING, &[("retry-max-delay-ms", "300")], AOF);
    let mut c = server.conn();
    eventually("schema checked", || figure(&mut c, "schema") == "ok");
    pg.down();
    write_rows(&mut c, "items:", 1..ROWS + 1);
    server.kill9();
    server.restart();
    let mut c = server.conn();
    // A PING answered between two looks that both say "recovering" was served
    // while the recovery ran.
    let mut answered_while_recovering = false;
    loop {
        let before = figure(&mut c, "recovery");
        let pong: String = redis::cmd("PING").query(&mut c).unwrap();
        assert_eq!(pong, "PONG");
        let after = figure(&mut c, "recovery");
        answered_while_recovering |= before.starts_with("recovering") && after.starts_with("recovering");
        if after.starts_with("done") {
            assert_eq!(after, format!("done: {ROWS} changes queued"));
            break;
        }
    }
    assert!(answered_while_recovering, "the recovery ran over several cron ticks");
    let st = status(&mut c, "items");
    let waiting: usize = st["pending"].parse::<usize>().unwrap() + st["in_flight"].parse::<usize>().unwrap();
    assert_eq!(waiting, ROWS, "{st:?}");
    pg.up();
    sync_wait(&mut c);
    assert_eq!(pg_items(&db).len(), ROWS);
    assert_converged(&db, &mut c, ROWS as i32);
}

#[test]
fn a_drained_backlog_gives_its_memory_back() {
    const ROWS: usize = 200_000;
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    let server = Server::with_mapping(&db, ITEMS_MAPPING, &[("retry-max-delay-ms", "300")], &[]);
    let mut c = server.conn();
    eventually("schema checked", || figure(&mut c, "schema") == "ok");
    let empty = used_memory(&mut c);
    pg.down();
    write_rows(&mut c, "items:", 1..ROWS + 1);
    let backlog = used_memory(&mut c) - empty;
    pg.up();
    sync_wait(&mut c);
    // Without the data, what stays is what the module kept: a small part of what
    // the backlog cost (keeping the queue's capacity is a seventh of it).
    let _: () = redis::cmd("FLUSHALL").arg("SYNC").query(&mut c).unwrap();
    let allowed = empty + backlog / 10;
    let mut left = 0;
    eventually("memory given back", || {
        left = used_memory(&mut c) - empty;
        println!("backlog {backlog}, left after draining {left}");
        left < allowed - empty
    });
}
