//! Templated notification channels, as the pub/sub fan-out seed uses them: each
//! purchase order is announced on `purchase_orders` and on
//! `purchase_orders:<event>`, with the order id alone as the message. Real servers.

mod common;

use common::*;
use std::time::Duration;

const ORDERS_SQL: &str = "CREATE TABLE purchase_order_details (id integer PRIMARY KEY, event text, who text, \
     qty integer, cost numeric)";

const ORDERS: &str = r#"{"mappings": [{"name": "orders", "table": "purchase_order_details",
  "key_prefix": "purchase_order_details:", "primary_key": "id", "mode": "write-behind", "listen": true,
  "notify": ["purchase_orders", "purchase_orders:{event}"], "notify_payload": "id"}]}"#;

/// Reads `n` messages as `channel=payload`, then checks that nothing else comes.
fn collect(ps: &mut redis::PubSub, n: usize) -> Vec<String> {
    ps.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let msg = ps.get_message().unwrap_or_else(|e| panic!("message {} of {n}: {e} (got {out:?})", out.len() + 1));
        out.push(format!("{}={}", msg.get_channel_name(), msg.get_payload::<String>().unwrap()));
    }
    ps.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    assert!(ps.get_message().is_err(), "no extra message after {out:?}");
    out.sort();
    out
}

fn order(c: &mut redis::Connection, id: i32, event: &str, who: &str) {
    let key = format!("purchase_order_details:{id}");
    hset(c, &key, &[("event", event), ("who", who), ("qty", "2"), ("cost", "25.5")]);
}

#[test]
fn subscribers_by_pattern_and_by_event_each_get_exactly_their_orders_with_the_id_as_payload() {
    let db = test_db(ORDERS_SQL);
    let server = Server::with_mapping(&db, ORDERS, &[], &[]);
    let mut c = server.conn();
    eventually("listening", || status(&mut c, "orders")["listener"] == "listening");
    let mut every_conn = server.conn();
    let mut every = every_conn.as_pubsub();
    every.subscribe("purchase_orders").unwrap();
    let mut pattern_conn = server.conn();
    let mut pattern = pattern_conn.as_pubsub();
    pattern.psubscribe("purchase_orders:*").unwrap();
    let mut opening_conn = server.conn();
    let mut opening = opening_conn.as_pubsub();
    opening.subscribe("purchase_orders:Opening Ceremony").unwrap();

    order(&mut c, 1, "Opening Ceremony", "jane");
    order(&mut c, 2, "Men's 100m Final", "joe");
    sync_wait(&mut c);
    // An order written in Postgres reaches its subscribers through the listener.
    db.client()
        .batch_execute("INSERT INTO purchase_order_details VALUES (3, 'Opening Ceremony', 'ann', 1, 99)")
        .unwrap();
    eventually("order 3 applied", || exists(&mut c, "purchase_order_details:3"));
    // A write of one field: the event comes from the cached row.
    hset(&mut c, "purchase_order_details:1", &[("qty", "4")]);
    sync_wait(&mut c);

    assert_eq!(
        collect(&mut every, 4),
        ["purchase_orders=1", "purchase_orders=1", "purchase_orders=2", "purchase_orders=3"]
    );
    assert_eq!(
        collect(&mut pattern, 4),
        [
            "purchase_orders:Men's 100m Final=2",
            "purchase_orders:Opening Ceremony=1",
            "purchase_orders:Opening Ceremony=1",
            "purchase_orders:Opening Ceremony=3"
        ]
    );
    assert_eq!(
        collect(&mut opening, 3),
        [
            "purchase_orders:Opening Ceremony=1",
            "purchase_orders:Opening Ceremony=1",
            "purchase_orders:Opening Ceremony=3"
        ]
    );
    assert_eq!(status(&mut c, "orders")["notify_skipped"], "0");

    // A deleted order has no event field left: only the plain channel hears of it.
    let _: i64 = redis::cmd("DEL").arg("purchase_order_details:2").query(&mut c).unwrap();
    sync_wait(&mut c);
    assert_eq!(collect(&mut every, 1), ["purchase_orders=2"]);
    assert_eq!(status(&mut c, "orders")["notify_skipped"], "1", "the templated channel was skipped and counted");
    pattern.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    assert!(pattern.get_message().is_err(), "no event channel for a row without its event");
}
