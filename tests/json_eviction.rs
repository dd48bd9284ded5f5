//! JSON write-behind and write-through under `maxmemory-policy allkeys-lru`
//! while Postgres is down: evicting a RedisJSON document (a row key, or a
//! write-through staging key) never loses its pending changes (the journal is
//! not in the keyspace), and an increment on a key evicted with an increment
//! still pending adds to it. Real servers, a private Postgres cluster.

mod common;

use common::json::*;
use common::*;
use std::collections::BTreeMap;

/// Early rows, in Postgres and cached before the outage.
const EARLY: i32 = 200;

#[test]
fn json_changes_waiting_for_postgres_survive_eviction_and_land() {
    changes_survive_eviction_and_land(Mode::WriteBehind);
}

#[test]
fn json_changes_staged_for_write_through_survive_eviction_and_land() {
    changes_survive_eviction_and_land(Mode::WriteThrough);
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    WriteBehind,
    WriteThrough,
}

fn changes_survive_eviction_and_land(mode: Mode) {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), ACCTS_SQL);
    let mapping = match mode {
        Mode::WriteBehind => ACCTS_MAPPING.to_string(),
        Mode::WriteThrough => ACCTS_MAPPING.replace("write-behind", "write-through"),
    };
    let server = Server::with_mapping_and_rejson(
        &db,
        &mapping,
        &[("retry-max-delay-ms", "200")],
        &["--maxmemory-policy", "allkeys-lru"],
    );
    // Where writers write: the row key, or its staging key.
    let key = |id: i32| match mode {
        Mode::WriteBehind => format!("acct:{id}"),
        Mode::WriteThrough => format!("__{{acct:{id}}}"),
    };
    let mut c = server.conn();
    let mut expected: BTreeMap<i32, Acct> = BTreeMap::new();
    for id in 1..=EARLY {
        json(&mut c, "SET", &key(id), &["$", &format!(r#"{{"name": "early", "score": {id}}}"#)]).unwrap();
        expected.insert(id, (Some("early".into()), None, Some(id.into())));
    }
    sync_wait(&mut c);
    assert_eq!(pg_accts(&db), expected);

    pg.down();
    let used = info_number(&mut c, "memory", "used_memory");
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(used + 2_000_000).query(&mut c).unwrap();
    // Every early document gets a path set and an increment Postgres must add.
    for id in 1..=EARLY {
        let key = key(id);
        let row = expected.get_mut(&id).unwrap();
        if json(&mut c, "NUMINCRBY", &key, &["$.score", "5"]).is_ok() {
            row.2 = row.2.map(|s| s + 5);
        }
        if json(&mut c, "SET", &key, &["$.email", &format!("\"e{id}\"")]).is_ok() {
            row.1 = Some(format!("e{id}"));
        }
    }
    // New documents, many more bytes than maxmemory allows: the early ones, least
    // recently used, are evicted with their changes still pending.
    let pad = "x".repeat(1000);
    // Written during the outage and gone: the documents holding pending changes.
    let early_evicted = |c: &mut redis::Connection| (1..=EARLY).filter(|&id| !exists(c, &key(id))).count();
    let mut id = EARLY;
    while id < 20_000 && !(id % 100 == 0 && early_evicted(&mut c) >= 50) {
        id += 1;
        let document = format!(r#"{{"name": "{pad}", "score": {id}}}"#);
        // A write refused (OOM) changed nothing on either side.
        if json(&mut c, "SET", &key(id), &["$", &document]).is_ok() {
            expected.insert(id, (Some(pad.clone()), None, Some(id.into())));
        }
    }
    assert!(info_number(&mut c, "stats", "evicted_keys") > 0, "the test must evict");
    let evicted: Vec<i32> = (1..=EARLY).filter(|&id| !exists(&mut c, &key(id))).collect();
    assert!(evicted.len() >= 50, "only {} early documents evicted", evicted.len());
    // How many new documents it took depends on the allocator and the build;
    // what matters is that some were acknowledged (and must land).
    let acknowledged_new = expected.len() - EARLY as usize;
    assert!(acknowledged_new >= 100, "only {acknowledged_new} new documents acknowledged");

    // The evictions have happened. An increment on an evicted key, whose earlier
    // increment is still waiting, creates a cold document and adds again.
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query(&mut c).unwrap();
    for &id in evicted.iter().take(20) {
        json(&mut c, "NUMINCRBY", &key(id), &["$.score", "7"]).unwrap();
        let row = expected.get_mut(&id).unwrap();
        row.2 = row.2.map(|s| s + 7);
    }
    assert!(info_number(&mut c, "pgsync", "pgsync_unsynced_rows") > 0, "nothing reached the stopped Postgres");

    pg.up();
    sync_wait(&mut c);
    let rows = pg_accts(&db);
    assert_eq!(rows.len(), expected.len(), "no row lost, none invented");
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(id, want)| rows.get(id) != Some(want))
        .map(|(id, want)| (id, want, rows.get(id)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} rows differ from the acknowledged writes (id, wanted, found), e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
    assert_eq!(info_number(&mut c, "pgsync", "pgsync_unsynced_rows"), 0);
    // Redis converges to Postgres's sum on a document it holds again (in
    // write-through, the row key the committed members land on).
    let &first = evicted.first().unwrap();
    eventually("the cold document takes Postgres's sum", || {
        doc(&mut c, &format!("acct:{first}")).is_some_and(|d| Some(d["score"].as_i64()) == Some(expected[&first].2))
    });
}
