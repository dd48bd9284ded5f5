//! Document mappings, as the cache-pusher seed keeps them: one JSON document per
//! customer, built by a plpgsql function from the `customer` row and its
//! `address` rows, rebuilt when either table changes, deleted with the customer,
//! and warmed by a reload in batches. Real servers.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SQL: &str = r#"
CREATE TABLE customer (id_customer integer PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE address (id_address serial PRIMARY KEY,
    id_customer integer NOT NULL REFERENCES customer ON DELETE CASCADE, city text NOT NULL, street text);
CREATE INDEX ON address (id_customer);
CREATE SEQUENCE document_calls;
-- One JSON document per customer, its addresses embedded; counts its calls.
CREATE FUNCTION customer_documents(ids integer[]) RETURNS TABLE (id integer, document json)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('document_calls');
    IF EXISTS (SELECT 1 FROM customer WHERE id_customer = ANY(ids) AND name = 'boom') THEN
        RAISE EXCEPTION 'cannot build a document for boom';
    END IF;
    RETURN QUERY
    SELECT c.id_customer, json_build_object('id', c.id_customer, 'name', c.name, 'email', c.email,
        'addresses', coalesce((SELECT json_agg(json_build_object('city', a.city, 'street', a.street)
                                               ORDER BY a.id_address)
                               FROM address a WHERE a.id_customer = c.id_customer), '[]'::json))
    FROM customer c WHERE c.id_customer = ANY(ids);
END
$$;
"#;

fn mapping(store: &str) -> String {
    format!(
        r#"{{"mappings": [{{"name": "customers", "mode": "document", "key_prefix": "customer:",
  "query": "SELECT id, document FROM customer_documents($1::int[])",
  "ids_query": "SELECT id_customer FROM customer",
  "watch": [{{"table": "customer", "column": "id_customer"}}, {{"table": "address", "column": "id_customer"}}],
  "store": "{store}", "notify": "sync:customer"}}]}}"#
    )
}

fn listening(c: &mut redis::Connection) {
    eventually("listening", || status(c, "customers")["listener"] == "listening");
}

/// The document of `customer:<id>` (JSON store), or `None` when the key is absent.
fn document(c: &mut redis::Connection, id: i32) -> Option<serde_json::Value> {
    let text: Option<String> = redis::cmd("GET").arg(format!("customer:{id}")).query(c).unwrap();
    text.map(|t| serde_json::from_str(&t).unwrap())
}

fn cities(doc: &Option<serde_json::Value>) -> Vec<String> {
    doc.as_ref()
        .map(|d| d["addresses"].as_array().unwrap().iter().map(|a| a["city"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn changes_to_customers_and_addresses_rebuild_or_remove_the_customers_document() {
    let db = test_db(SQL);
    first_customer(&db);
    let server = Server::with_mapping(&db, &mapping("json"), &[], &[]);
    let mut c = server.conn();
    listening(&mut c);
    assert!(status(&mut c, "customers")["cdc"].starts_with("notify"));
    follows_customers_and_addresses(&db, &server);
}

#[test]
fn documents_follow_the_logical_stream_once_the_watched_columns_are_in_the_replica_identity() {
    let pg = PrivatePg::start_with(PgSetup::logical());
    let db = TestDb::on(&pg.admin_url(), SQL);
    first_customer(&db);
    // address.id_customer is not in address's identity (its primary key): a
    // delete would not say whose document to rebuild, so the triggers serve.
    {
        let server = Server::with_mapping(&db, &mapping("json"), &[], &[]);
        let mut c = server.conn();
        listening(&mut c);
        let cdc = status(&mut c, "customers")["cdc"].clone();
        assert!(cdc.starts_with("notify") && cdc.contains("REPLICA IDENTITY FULL"), "{cdc}");
    }
    db.client().batch_execute("ALTER TABLE address REPLICA IDENTITY FULL").unwrap();
    let server = Server::with_mapping(&db, &mapping("json"), &[], &[]);
    let mut c = server.conn();
    listening(&mut c);
    assert_eq!(status(&mut c, "customers")["cdc"], "logical");
    let triggers: i64 =
        db.client().query_one("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgsync%'", &[]).unwrap().get(0);
    assert_eq!(triggers, 0, "the trigger run's watch triggers are gone");
    follows_customers_and_addresses(&db, &server);
}

fn first_customer(db: &TestDb) {
    db.client()
        .batch_execute("INSERT INTO customer VALUES (1, 'Ann', 'ann@x'); INSERT INTO address (id_customer, city) VALUES (1, 'Oslo')")
        .unwrap();
}

/// Every kind of change to both watched tables rebuilds or removes the right
/// documents, with the events, a failing root and a TRUNCATE.
fn follows_customers_and_addresses(db: &TestDb, server: &Server) {
    let mut c = server.conn();
    assert_eq!(cities(&document(&mut c, 1)), ["Oslo"], "the catch-up at start warmed the cache");
    let mut events_conn = server.conn();
    let mut events = events_conn.as_pubsub();
    events.subscribe("sync:customer:2").unwrap();

    let pg = |sql: &str| db.client().batch_execute(sql).unwrap();
    pg("INSERT INTO customer VALUES (2, 'Bob', NULL)");
    eventually("new customer", || document(&mut c, 2).is_some_and(|d| d["name"] == "Bob"));
    pg("INSERT INTO address (id_customer, city) VALUES (2, 'Bergen'), (2, 'Tromsø')");
    eventually("addresses embedded", || cities(&document(&mut c, 2)) == ["Bergen", "Tromsø"]);
    pg("UPDATE address SET city = 'Bodø' WHERE city = 'Tromsø'");
    eventually("address updated", || cities(&document(&mut c, 2)) == ["Bergen", "Bodø"]);
    pg("UPDATE customer SET email = 'bob@x' WHERE id_customer = 2");
    eventually("customer updated", || document(&mut c, 2).is_some_and(|d| d["email"] == "bob@x"));
    // An address moving to another customer rebuilds both documents.
    pg("UPDATE address SET id_customer = 1 WHERE city = 'Bergen'");
    eventually("moved", || {
        cities(&document(&mut c, 1)) == ["Oslo", "Bergen"] && cities(&document(&mut c, 2)) == ["Bodø"]
    });
    pg("DELETE FROM address WHERE city = 'Bodø'");
    eventually("address deleted", || document(&mut c, 2).is_some_and(|d| cities(&Some(d)).is_empty()));
    // A document Redis does not hold (evicted, say) is built again by the next change.
    let _: i64 = redis::cmd("DEL").arg("customer:2").query(&mut c).unwrap();
    pg("INSERT INTO address (id_customer, city) VALUES (2, 'Alta')");
    eventually("rebuilt from nothing", || cities(&document(&mut c, 2)) == ["Alta"]);
    pg("DELETE FROM customer WHERE id_customer = 2");
    eventually("customer deleted", || !exists(&mut c, "customer:2"));
    assert_eq!(cities(&document(&mut c, 1)), ["Oslo", "Bergen"], "the other document is untouched");

    events.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut ops = Vec::new();
    while ops.last().map(String::as_str) != Some("delete") {
        let msg: serde_json::Value =
            serde_json::from_str(&events.get_message().unwrap().get_payload::<String>().unwrap()).unwrap();
        assert_eq!((msg["key"].as_str(), msg["source"].as_str()), (Some("customer:2"), Some("postgres")));
        ops.push(msg["op"].as_str().unwrap().to_string());
    }
    assert!(ops.len() >= 6 && ops[..ops.len() - 1].iter().all(|op| op == "upsert"), "{ops:?}");

    // A root the query cannot build is reported on its mapping; the others
    // announced with it are rebuilt, and the listener goes on.
    pg("BEGIN; INSERT INTO customer VALUES (3, 'boom', NULL); \
        UPDATE customer SET email = 'ann@y' WHERE id_customer = 1; COMMIT");
    eventually("the failure shows", || {
        status(&mut c, "customers")["last_error"].contains("cannot build a document for boom")
    });
    eventually("the other root rebuilt", || document(&mut c, 1).is_some_and(|d| d["email"] == "ann@y"));
    assert!(!exists(&mut c, "customer:3"));
    pg("UPDATE customer SET email = 'ann@z' WHERE id_customer = 1");
    eventually("still listening", || document(&mut c, 1).is_some_and(|d| d["email"] == "ann@z"));
    pg("DELETE FROM customer WHERE id_customer = 3");

    // A TRUNCATE of a watched table rebuilds every document.
    pg("TRUNCATE address");
    eventually("truncate applied", || cities(&document(&mut c, 1)).is_empty());
    assert_eq!(document(&mut c, 1).unwrap()["name"], "Ann");
}

#[test]
fn a_reload_with_flush_rebuilds_every_document_in_batches_while_redis_keeps_answering() {
    let db = test_db(SQL);
    db.client()
        .batch_execute(
            "INSERT INTO customer SELECT i, 'c' || i, NULL FROM generate_series(1, 10000) i; \
             INSERT INTO address (id_customer, city) SELECT i, 'city ' || i FROM generate_series(1, 10000) i",
        )
        .unwrap();
    let server = Server::with_mapping(&db, &mapping("hash"), &[], &[]);
    let mut c = server.conn();
    listening(&mut c);
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    let calls = || -> i64 { db.client().query_one("SELECT last_value FROM document_calls", &[]).unwrap().get(0) };
    let before = calls();

    let port = server.port;
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut p = connect(port);
            let (mut answered, mut worst) = (0u64, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let pong: String = redis::cmd("PING").query(&mut p).expect("PING answered during the reload");
                assert_eq!(pong, "PONG");
                worst = worst.max(t.elapsed());
                answered += 1;
            }
            (answered, worst)
        })
    };
    let loaded: i64 = redis::cmd("SYNC.RELOAD").arg("customers").arg("FLUSH").query(&mut c).unwrap();
    stop.store(true, Ordering::Relaxed);
    let (answered, worst) = pinger.join().unwrap();
    assert_eq!(loaded, 10_000);
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(dbsize, 10_000);
    let statements = calls() - before;
    assert!(statements <= 10, "10,000 documents in batches of 1000: {statements} calls of the function");
    assert!(answered > 1, "PING was answered during the reload ({answered} round trips)");
    println!("reload of 10,000 documents: {statements} function calls, {answered} PINGs answered, worst {worst:?}");
    let one = hgetall(&mut c, "customer:77");
    assert_eq!(one["name"], "c77");
    assert!(!one.contains_key("email"), "a null leaves the field out");
    assert_eq!(one["addresses"], r#"[{"city":"city 77","street":null}]"#);

    // FLUSH removes documents whose customer is gone; a change of one field
    // rebuilds the whole hash.
    db.client().batch_execute("DELETE FROM customer WHERE id_customer > 9990").unwrap();
    eventually("deletes applied", || !exists(&mut c, "customer:9991"));
    let _: i64 = redis::cmd("HSET").arg("customer:77").arg("stale").arg("x").query(&mut c).unwrap();
    db.client().batch_execute("UPDATE customer SET name = 'renamed' WHERE id_customer = 77").unwrap();
    eventually("rebuilt", || hgetall(&mut c, "customer:77").get("name").map(String::as_str) == Some("renamed"));
    assert!(!hgetall(&mut c, "customer:77").contains_key("stale"), "the document replaces the hash");
}

#[test]
fn document_mappings_are_checked_at_load() {
    let db = test_db(SQL);
    // A query that does not run shows in SYNC.STATUS.
    let broken = mapping("json").replace("customer_documents($1::int[])", "no_such_function($1::int[])");
    let server = Server::with_mapping(&db, &broken, &[], &[]);
    let mut c = server.conn();
    eventually("the schema error shows", || status(&mut c, "customers")["schema"].contains("\"query\" does not run"));
}

#[test]
fn the_listener_catches_up_on_documents_changed_while_its_connection_was_gone() {
    let db = test_db(SQL);
    db.client()
        .batch_execute(
            "INSERT INTO customer VALUES (1, 'Ann', NULL), (2, 'Bob', NULL); \
             INSERT INTO address (id_customer, city) VALUES (1, 'Oslo')",
        )
        .unwrap();
    let server = Server::with_mapping(&db, &mapping("json"), &[("retry-max-delay-ms", "2000")], &[]);
    let mut c = server.conn();
    listening(&mut c);
    assert!(exists(&mut c, "customer:2"));
    // The listener is killed inside the transaction that makes the changes, and
    // gone before it commits: their notifications reach nobody.
    let mut pg = db.client();
    let mut tx = pg.transaction().unwrap();
    tx.batch_execute(
        "INSERT INTO address (id_customer, city) VALUES (1, 'Bergen'); DELETE FROM customer WHERE id_customer = 2; \
         INSERT INTO customer VALUES (3, 'Cid', NULL)",
    )
    .unwrap();
    kill_listener_in(&mut tx);
    tx.commit().unwrap();
    eventually("caught up", || {
        cities(&document(&mut c, 1)) == ["Oslo", "Bergen"]
            && !exists(&mut c, "customer:2")
            && exists(&mut c, "customer:3")
    });
    listening(&mut c);
}
