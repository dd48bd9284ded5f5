//! `maxmemory` and the eviction policies: evicting row keys never loses or deletes
//! a row, no policy can evict the journal (it is not in the keyspace), and under
//! `allkeys-*` the module degrades loudly for its dead-letter keys (a warning for
//! the policy, a log line and a count per evicted key).

mod common;

use common::items::*;
use common::*;

fn set_config(c: &mut redis::Connection, name: &str, value: impl redis::ToRedisArgs) {
    let _: () = redis::cmd("CONFIG").arg("SET").arg(name).arg(value).query(c).expect("CONFIG SET");
}

fn pgsync_info(c: &mut redis::Connection, figure: &str) -> u64 {
    info_number(c, "pgsync", &format!("pgsync_{figure}"))
}

const RISK: &str = "maxmemory-policy is";
const EVICTED_JOURNAL: &str = "maxmemory evicted the pgsync key pgsync:";

#[test]
fn allkeys_eviction_never_loses_or_deletes_a_row() {
    let db = test_db(ITEMS_SQL);
    let server = Server::with_mapping(&db, ITEMS_MAPPING, &[], &["--maxmemory-policy", "allkeys-lru"]);
    assert!(server.log().contains(&format!("{RISK} allkeys-lru")), "warned at load:\n{}", server.log());
    let mut c = server.conn();
    for id in 1..=200 {
        hset(&mut c, &format!("items:{id}"), &[("name", "early"), ("score", &id.to_string())]);
    }
    sync_wait(&mut c);
    assert!(pgsync_info(&mut c, "module_bytes") > 0);

    let used = info_number(&mut c, "memory", "used_memory");
    set_config(&mut c, "maxmemory", used + 300_000);
    let name = "n".repeat(1000);
    let mut written = Vec::new();
    for id in 201..=5000 {
        let reply: redis::RedisResult<i64> =
            redis::cmd("HSET").arg(format!("items:{id}")).arg("name").arg(&name).arg("score").arg(id).query(&mut c);
        // A write refused (OOM) changed nothing on either side.
        if reply.is_ok() {
            written.push(id);
        }
        if id % 100 == 0 && info_number(&mut c, "stats", "evicted_keys") > 100 {
            break;
        }
    }
    assert!(info_number(&mut c, "stats", "evicted_keys") > 100, "the test must evict");
    set_config(&mut c, "maxmemory", 0);
    sync_wait(&mut c);
    let rows = pg_items(&db);
    assert_eq!(rows.len(), 200 + written.len(), "no row deleted, none lost");
    for id in 1..=200 {
        assert_eq!(rows[&id][0].as_deref(), Some("early"), "row {id}");
    }
    for id in written {
        assert_eq!(rows[&id][0].as_deref(), Some(name.as_str()), "row {id}");
    }
    assert_eq!(pgsync_info(&mut c, "unsynced_rows"), 0);
}

#[test]
fn volatile_policy_keeps_the_journal_under_pressure() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    let mut server = Server::with_mapping(
        &db,
        ITEMS_MAPPING,
        &[("retry-max-delay-ms", "200")],
        &["--maxmemory-policy", "volatile-lru", "--appendonly", "yes", "--appendfsync", "always"],
    );
    let mut c = server.conn();
    pg.down();
    for id in 1..=300 {
        hset(&mut c, &format!("items:{id}"), &[("name", "pending"), ("score", &id.to_string())]);
    }
    let used = info_number(&mut c, "memory", "used_memory");
    set_config(&mut c, "maxmemory", used + 500_000);
    let filler = "f".repeat(10_000);
    for i in 0..2000 {
        let _: redis::RedisResult<()> =
            redis::cmd("SET").arg(format!("filler:{i}")).arg(&filler).arg("EX").arg(3600).query(&mut c);
        if info_number(&mut c, "stats", "evicted_keys") > 20 {
            break;
        }
    }
    assert!(info_number(&mut c, "stats", "evicted_keys") > 20, "the test must evict");
    assert_eq!(pgsync_info(&mut c, "journal_evictions"), 0);
    assert!(!server.log().contains(RISK) && !server.log().contains(EVICTED_JOURNAL), "{}", server.log());

    // Only the journal brings the changes back after a crash: the queue was in memory.
    server.restart();
    let mut c = server.conn();
    pg.up();
    sync_wait(&mut c);
    let rows = pg_items(&db);
    assert_eq!(rows.len(), 300);
    assert!(rows.values().all(|r| r[0].as_deref() == Some("pending")));
}

#[test]
fn allkeys_eviction_then_a_crash_loses_no_pending_change() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ITEMS_SQL);
    let mut server = Server::with_mapping(
        &db,
        ITEMS_MAPPING,
        &[("retry-max-delay-ms", "200")],
        &["--appendonly", "yes", "--appendfsync", "always"],
    );
    let mut c = server.conn();
    assert!(!server.log().contains(RISK), "noeviction is safe");
    set_config(&mut c, "maxmemory-policy", "allkeys-random");
    eventually("the policy warning", || server.log().contains(&format!("{RISK} allkeys-random")));
    // A dead letter (the CHECK refuses the score): a key of the module's to evict.
    hset(&mut c, "items:99", &[("score", "2000000000000")]);
    eventually("the dead letter", || status(&mut c, "items")["failed"] == "1");

    pg.down();
    for id in 1..=50 {
        hset(&mut c, &format!("items:{id}"), &[("name", "queued"), ("score", &id.to_string())]);
    }
    assert!(journal_keys(&mut c).is_empty(), "the journal is not in the keyspace");
    assert_eq!(journal_size(&mut c).0, 50);
    // No room at all: every key is evicted, whatever the draw; the journal is not a key.
    set_config(&mut c, "maxmemory", 1);
    eventually("every key evicted", || {
        let _: redis::RedisResult<String> = redis::cmd("PING").query(&mut c);
        let keys: redis::RedisResult<i64> = redis::cmd("DBSIZE").query(&mut c);
        keys == Ok(0)
    });
    set_config(&mut c, "maxmemory", 0);
    assert!(pgsync_info(&mut c, "journal_evictions") > 0, "the dead-letter keys were evicted");
    assert!(server.log().contains(EVICTED_JOURNAL), "{}", server.log());
    assert_eq!(status(&mut c, "items")["journal_evictions"], pgsync_info(&mut c, "journal_evictions").to_string());
    assert_eq!(journal_size(&mut c).0, 50, "no pending change evicted");

    // A crash now: only the journal (in the AOF) knows the changes.
    server.restart();
    let mut c = server.conn();
    pg.up();
    sync_wait(&mut c);
    let rows = pg_items(&db);
    assert_eq!(rows.len(), 50);
    assert!(rows.values().all(|r| r[0].as_deref() == Some("queued")));
}
