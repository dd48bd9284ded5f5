//! The journal, the module's own state: not keys; an AOF rewrite then `kill -9` loses
//! no acknowledged change, `DEBUG RELOAD` and a full resync carry it, journal keys
//! of earlier versions are moved into memory, and an RDB snapshot carries the
//! journal too. (A large journal recovered while the server answers:
//! `hardening.rs`.)

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
fn the_journal_is_the_modules_own_state_not_keys() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    let server = aof_server(&db);
    let mut c = server.conn();
    pg.down();
    write_items(&mut c, 1..=20, |id| id as i64);
    let keys: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(keys, 20, "one key per row, none for its pending change");
    assert!(journal_keys(&mut c).is_empty());
    assert_eq!(journal_size(&mut c).0, 20);

    // The replication command is the module's: a client cannot forge or drop a log.
    let forged: redis::RedisResult<String> = redis::cmd("SYNC.JOURNAL").arg("DEL").arg("items:1").query(&mut c);
    let error = forged.expect_err("a client's SYNC.JOURNAL must be refused").to_string();
    assert!(error.contains("clients cannot send it"), "{error}");
    assert_eq!(journal_size(&mut c).0, 20);

    // AOF rewrites carry the journal only in an RDB preamble: switching it off warns.
    let _: () = redis::cmd("CONFIG").arg("SET").arg("aof-use-rdb-preamble").arg("no").query(&mut c).unwrap();
    eventually("the preamble warning", || server.log().contains("aof-use-rdb-preamble is no"));
    let _: () = redis::cmd("CONFIG").arg("SET").arg("aof-use-rdb-preamble").arg("yes").query(&mut c).unwrap();

    // FLUSHALL drops the journal with the data.
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    assert_eq!(journal_size(&mut c), (0, 0));
}

#[test]
fn debug_reload_and_a_full_resync_carry_the_journal_to_a_promoted_replica() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    let mut primary = Server::with_mapping(
        &db,
        ITEMS_MAPPING,
        &[("retry-max-delay-ms", "200")],
        &["--appendonly", "yes", "--enable-debug-command", "yes"],
    );
    let mut p = primary.conn();
    hset(&mut p, "items:1", &[("name", "landed"), ("score", "10")]);
    sync_wait(&mut p);
    pg.down();
    write_items(&mut p, 2..=100, |id| id as i64);
    let _: i64 = redis::cmd("HINCRBY").arg("items:1").arg("score").arg(5).query(&mut p).unwrap();
    let _: i64 = redis::cmd("DEL").arg("items:50").query(&mut p).unwrap();
    let before = journal_size(&mut p);
    assert_eq!(before.0, 100);
    let _: String = redis::cmd("DEBUG").arg("RELOAD").query(&mut p).unwrap();
    assert_eq!(journal_size(&mut p), before, "DEBUG RELOAD saved and loaded the journal");

    // A replica attached now gets everything by a full resync (an RDB), then
    // the writes after it by the replication stream.
    let replica = Server::with_mapping(
        &db,
        ITEMS_MAPPING,
        &[("retry-max-delay-ms", "200")],
        &["--replicaof", "127.0.0.1", &primary.port.to_string()],
    );
    let mut r = replica.conn();
    eventually("replica in sync", || {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut r).unwrap();
        info.contains("master_link_status:up")
    });
    let _: i64 = redis::cmd("HINCRBY").arg("items:1").arg("score").arg(100).query(&mut p).unwrap();
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(10_000).query(&mut p).unwrap();
    assert_eq!(acked, 1);
    assert_eq!(journal_size(&mut r).0, 100, "the replica holds the primary's journal");
    assert!(journal_keys(&mut r).is_empty());

    primary.kill9();
    let _: () = redis::cmd("REPLICAOF").arg("NO").arg("ONE").query(&mut r).unwrap();
    pg.up();
    eventually("the promoted replica synced", || {
        let left: i64 = redis::cmd("SYNC.WAIT").arg(1000).query(&mut r).unwrap();
        left == 0 && status(&mut r, "items")["recovery"].starts_with("done")
    });
    let rows = pg_items(&db);
    assert_eq!(rows.len(), 99, "rows 1..=100 but 50");
    assert!(!rows.contains_key(&50), "the delete landed");
    assert_eq!(rows[&1][1].as_deref(), Some("115"), "each increment counted once");
    assert_eq!(rows[&99], [Some("n99".into()), Some("99".into()), None]);
    assert_eq!(journal_size(&mut r), (0, 0));
}

/// One journal record as the previous versions wrote it: `P3` (or `P2`, without
/// acks), an upsert setting `name`.
fn old_record(magic: &[u8], name: &str) -> Vec<u8> {
    let put = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    let mut record = [magic, b"u", &1u32.to_le_bytes(), b"s"].concat();
    put(&mut record, b"name");
    put(&mut record, name.as_bytes());
    if magic == b"P3" {
        record.extend_from_slice(&0u32.to_le_bytes());
    }
    record
}

#[test]
fn journal_keys_of_earlier_versions_are_moved_into_memory_and_land() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    let mut server = aof_server(&db);
    let mut c = server.conn();
    pg.down();
    // What an AOF of the previous versions holds: a log key per row (two
    // records), and the oldest version's single hash.
    let record = old_record(b"P3", "from a log key");
    let log =
        [&(record.len() as u32).to_le_bytes()[..], &record, &(record.len() as u32).to_le_bytes(), &record].concat();
    let _: () = redis::cmd("SET").arg("pgsync:journal:{items:7}").arg(log).query(&mut c).unwrap();
    let _: () = redis::cmd("HSET")
        .arg("pgsync:{journal}")
        .arg("items:8")
        .arg(old_record(b"P2", "from the hash"))
        .query(&mut c)
        .unwrap();

    server.restart();
    let mut c = server.conn();
    eventually("recovered", || status(&mut c, "items")["recovery"].starts_with("done"));
    assert!(journal_keys(&mut c).is_empty(), "the log key was moved out of the keyspace");
    let gone: i64 = redis::cmd("EXISTS").arg("pgsync:{journal}").query(&mut c).unwrap();
    assert_eq!(gone, 0, "the old hash is gone");
    assert_eq!(journal_size(&mut c).0, 2);
    pg.up();
    sync_wait(&mut c);
    let rows = pg_items(&db);
    assert_eq!(rows[&7][0].as_deref(), Some("from a log key"));
    assert_eq!(rows[&8][0].as_deref(), Some("from the hash"));
    assert_eq!(journal_size(&mut c), (0, 0));
}
