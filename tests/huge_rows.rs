//! Huge rows: batches are bounded in bytes (`pgsync.batch-max-bytes`), so rows
//! of 10 MB land in batches Postgres accepts while Redis keeps answering, and a
//! row over `pgsync.max-row-bytes` is dead-lettered instead of retried forever.

mod common;

use common::items::*;
use common::*;

const TEN_MB: usize = 10_000_000;

/// Notes the transaction of every write to `items`, so the test can see which
/// rows were written in one batch (one statement, one transaction).
const BATCH_LOG_SQL: &str = "CREATE TABLE batch_log (id integer, tx bigint);
    CREATE FUNCTION note_tx() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN INSERT INTO batch_log VALUES (NEW.id, txid_current()); RETURN NULL; END $$;
    CREATE TRIGGER note_tx AFTER INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION note_tx();";

fn backlog(c: &mut redis::Connection) -> i64 {
    let st = status(c, "items");
    st["pending"].parse::<i64>().unwrap() + st["in_flight"].parse::<i64>().unwrap()
}

#[test]
fn thirty_rows_of_ten_megabytes_land_in_bounded_batches_while_redis_answers() {
    let db = test_db(&format!("{ITEMS_SQL}; {BATCH_LOG_SQL}"));
    let server = Server::with_mapping(&db, ITEMS_MAPPING, &[("batch-size", "500")], &[]);
    let mut c = server.conn();
    // One transaction: all 30 rows are queued at once, as after an outage.
    let mut pipe = redis::pipe();
    pipe.atomic();
    for id in 1..=30 {
        let tag = char::from(b'a' + (id % 26) as u8).to_string().repeat(TEN_MB);
        pipe.cmd("HSET").arg(format!("items:{id}")).arg("tag").arg(tag).ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    let mut answered_while_busy = 0;
    loop {
        let busy = backlog(&mut c) > 0;
        let pong: String = redis::cmd("PING").query(&mut c).unwrap();
        assert_eq!(pong, "PONG");
        if !busy {
            break;
        }
        answered_while_busy += 1;
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(answered_while_busy > 0, "the rows were still on their way while Redis answered");
    sync_wait(&mut c);
    let mut pg = db.client();
    let landed: i64 =
        pg.query_one("SELECT count(*) FROM items WHERE length(tag) = $1", &[&(TEN_MB as i32)]).unwrap().get(0);
    assert_eq!(landed, 30);
    // The default bound (16 MiB) fits one such row per batch.
    let biggest: i64 =
        pg.query_one("SELECT max(n) FROM (SELECT count(*) AS n FROM batch_log GROUP BY tx) b", &[]).unwrap().get(0);
    assert_eq!(biggest, 1, "a batch held more than 16 MiB");
    let st = status(&mut c, "items");
    assert_eq!((st["failed"].as_str(), st["retries"].as_str()), ("0", "0"), "{st:?}");
}

#[test]
fn a_row_over_max_row_bytes_is_dead_lettered_not_retried() {
    let db = test_db(ITEMS_SQL);
    let server = Server::with_mapping(&db, ITEMS_MAPPING, &[("max-row-bytes", "1048576")], &[]);
    let mut c = server.conn();
    let big = "x".repeat(2 << 20);
    hset(&mut c, "items:1", &[("name", "big"), ("tag", &big)]);
    hset(&mut c, "items:2", &[("name", "small")]);
    sync_wait(&mut c);
    let rows = pg_items(&db);
    assert_eq!(rows.keys().collect::<Vec<_>>(), [&2], "the small row landed, the big one did not");
    let failed: Vec<Vec<String>> = redis::cmd("SYNC.FAILED").query(&mut c).unwrap();
    assert_eq!(failed.len(), 1);
    let error = &failed[0][9];
    assert!(error.contains("over pgsync.max-row-bytes (1048576)"), "{error}");
    let st = status(&mut c, "items");
    assert_eq!((st["failed"].as_str(), st["retries"].as_str()), ("1", "0"), "{st:?}");

    // Raised, the limit lets the retried row through.
    let _: () = redis::cmd("CONFIG").arg("SET").arg("pgsync.max-row-bytes").arg(4 << 20).query(&mut c).unwrap();
    let retried: i64 = redis::cmd("SYNC.RETRY").arg("items:1").query(&mut c).unwrap();
    assert_eq!(retried, 1);
    sync_wait(&mut c);
    assert_eq!(pg_items(&db)[&1][2].as_deref().map(str::len), Some(2 << 20));
}
