//! The journal on disk: an AOF rewrite then `kill -9` loses no acknowledged change,
//! an RDB snapshot carries the journal too, and a large journal is recovered
//! after a restart while the server answers.

mod common;

use common::items::*;
use common::*;

/// A write-behind server on `db` with `appendfsync always`, retrying fast.
fn aof_server(db: &TestDb) -> Server {
    Server::with_mapping(
        db,
        ITEMS_MAPPING,
        &[("retry-max-delay-ms", "200")],
        &["--appendonly", "yes", "--appendfsync", "always"],
    )
}

/// `HSET items:<id> name n<id> score <score>` for every id, pipelined.
fn write_items(c: &mut redis::Connection, ids: std::ops::RangeInclusive<i32>, score: impl Fn(i32) -> i64) {
    let ids: Vec<i32> = ids.collect();
    for chunk in ids.chunks(1000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("HSET").arg(format!("items:{id}")).arg("name").arg(format!("n{id}")).arg("score").arg(score(*id));
        }
        let _: () = pipe.query(c).expect("pipelined HSET");
    }
}

fn unsynced(c: &mut redis::Connection) -> u64 {
    info_number(c, "pgsync", "pgsync_unsynced_rows")
}

#[test]
fn bgrewriteaof_then_kill9_loses_no_change() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    let mut server = aof_server(&db);
    let mut c = server.conn();
    hset(&mut c, "items:1", &[("name", "landed"), ("score", "1")]);
    sync_wait(&mut c);

    pg.down();
    write_items(&mut c, 1..=300, |id| id as i64);
    let _: i64 = redis::cmd("HINCRBY").arg("items:2").arg("score").arg(40).query(&mut c).unwrap();
    let _: String = redis::cmd("BGREWRITEAOF").query(&mut c).unwrap();
    eventually("the AOF rewrite finished", || {
        info_number(&mut c, "persistence", "aof_rewrite_in_progress") == 0
            && info_number(&mut c, "persistence", "aof_rewrite_scheduled") == 0
    });
    // Changes after the rewrite live in the new incremental AOF only.
    write_items(&mut c, 301..=600, |id| 2 * id as i64);
    let _: i64 = redis::cmd("HINCRBY").arg("items:2").arg("score").arg(100).query(&mut c).unwrap();
    let _: i64 = redis::cmd("DEL").arg("items:3").query(&mut c).unwrap();
    // A row written again while its batch is in flight counts twice.
    assert!(unsynced(&mut c) >= 600, "nothing reached the stopped Postgres");

    server.restart();
    let mut c = server.conn();
    pg.up();
    sync_wait(&mut c);
    let rows = pg_items(&db);
    assert_eq!(rows.len(), 599, "every row but the deleted one");
    assert!(!rows.contains_key(&3), "the delete landed");
    for id in (1..=600).filter(|id| *id != 2 && *id != 3) {
        let score = if id <= 300 { id as i64 } else { 2 * id as i64 };
        assert_eq!(rows[&id], [Some(format!("n{id}")), Some(score.to_string()), None], "row {id}");
    }
    assert_eq!(rows[&2][1].as_deref(), Some("142"), "both increments landed once");
}

#[test]
fn an_rdb_snapshot_carries_the_journal() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    let mut server =
        Server::with_mapping(&db, ITEMS_MAPPING, &[("retry-max-delay-ms", "200")], &["--appendonly", "no"]);
    let mut c = server.conn();
    pg.down();
    write_items(&mut c, 1..=200, |id| id as i64);
    let _: i64 = redis::cmd("HINCRBY").arg("items:7").arg("score").arg(5).query(&mut c).unwrap();
    let _: i64 = redis::cmd("HDEL").arg("items:8").arg("name").query(&mut c).unwrap();
    let _: () = redis::cmd("SAVE").query(&mut c).unwrap();

    // No AOF: what comes back is the snapshot, journal included.
    server.restart();
    let mut c = server.conn();
    pg.up();
    sync_wait(&mut c);
    let rows = pg_items(&db);
    assert_eq!(rows.len(), 200);
    assert_eq!(rows[&7][1].as_deref(), Some("12"), "the increment landed once");
    assert_eq!(rows[&8][0], None, "the removal landed");
    assert_eq!(rows[&100], [Some("n100".into()), Some("100".into()), None]);
}

#[test]
fn a_large_journal_is_recovered_while_the_server_answers() {
    const ROWS: i32 = 200_000;
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    let mut server = aof_server(&db);
    let mut c = server.conn();
    pg.down();
    write_items(&mut c, 1..=ROWS, |id| id as i64);
    assert_eq!(unsynced(&mut c), ROWS as u64);

    server.restart();
    let mut c = server.conn();
    let mut ping = server.conn();
    // A PING answered between two readings that both say "recovering" was
    // answered during the recovery.
    let mut answered_during = 0;
    let deadline = std::time::Instant::now() + 5 * PATIENCE;
    loop {
        assert!(std::time::Instant::now() < deadline, "the recovery never finished");
        let before = status(&mut c, "items")["recovery"].clone();
        let pong: String = redis::cmd("PING").query(&mut ping).expect("PING during the recovery");
        assert_eq!(pong, "PONG");
        let after = status(&mut c, "items")["recovery"].clone();
        if before.starts_with("recovering") && after.starts_with("recovering") {
            answered_during += 1;
        }
        if after.starts_with("done") {
            break;
        }
    }
    assert!(answered_during > 0, "no PING was answered while the journal was being recovered");
    assert_eq!(unsynced(&mut c), ROWS as u64, "every journaled row is queued again");
    pg.up();
    sync_wait(&mut c);
    let mut client = db.client();
    let n: i64 = client.query_one("SELECT count(*) FROM items WHERE score = id", &[]).unwrap().get(0);
    assert_eq!(n, ROWS as i64);
}
