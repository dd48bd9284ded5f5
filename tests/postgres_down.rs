//! Postgres stopped for real (a private cluster): Redis keeps serving, changes wait,
//! and everything lands once Postgres is back.

mod common;

use common::*;

#[test]
fn writes_queue_while_postgres_is_down_and_land_when_it_returns() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), USERS_SQL);
    let server = Server::users(&db, &[("retry-max-delay-ms", "200")]);
    let mut c = server.conn();
    hset(&mut c, "__{users:1}", &[("username", "first"), ("email", "1@x"), ("pwhash", "p")]);
    sync_wait(&mut c);

    pg.down();
    for id in 2..=301 {
        let name = format!("user{id}");
        let email = format!("{name}@x");
        hset(
            &mut c,
            &format!("__{{users:{id}}}"),
            &[("username", &name), ("email", &email), ("pwhash", "p"), ("score", "1")],
        );
        let pong: String = redis::cmd("PING").query(&mut c).unwrap();
        assert_eq!(pong, "PONG");
    }
    hset(&mut c, "__{users:1}", &[("score", "42")]);
    eventually("Postgres reported down", || status(&mut c, "users")["postgres"] == "down");
    let st = status(&mut c, "users");
    let waiting: i64 = st["pending"].parse::<i64>().unwrap() + st["in_flight"].parse::<i64>().unwrap();
    assert_eq!(waiting, 301, "{st:?}");
    let left: i64 = redis::cmd("SYNC.WAIT").arg(200).query(&mut c).unwrap();
    assert_eq!(left, 301);

    pg.up();
    sync_wait(&mut c);
    let mut client = db.client();
    let n: i64 = client.query_one("SELECT count(*) FROM users", &[]).unwrap().get(0);
    assert_eq!(n, 301);
    let score: i32 = client.query_one("SELECT score FROM users WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(score, 42);
    let st = status(&mut c, "users");
    assert_eq!(st["postgres"], "up");
    assert_eq!(st["failed"], "0", "a lost connection is not a rejection: {st:?}");
    assert!(st["retries"].parse::<i64>().unwrap() > 0);
    assert_eq!(hgetall(&mut c, "users:301")["username"], "user301");
}
