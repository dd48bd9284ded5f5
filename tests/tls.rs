//! TLS to Postgres: `sslmode` and `sslrootcert` against private clusters with
//! certificates made for the test, checked in `pg_stat_ssl`; `require_auth`,
//! which the module checks inside TLS.

mod common;

use common::tls::Ca;
use common::*;

/// Starts a server with the users mapping whose Postgres URL is `url`.
fn server_with_url(url: &str) -> Server {
    let file = std::env::temp_dir().join(format!("{}.json", unique("pgsync_mapping")));
    std::fs::write(&file, USERS_MAPPING).expect("write mapping file");
    Server::start(&[("postgres-url", url), ("mappings", &file.display().to_string())], &[])
}

fn url(host: &str, pg: &PrivatePg, db: &TestDb, query: &str) -> String {
    format!("postgres://postgres@{host}:{}/{}?{query}", pg.port, db.name)
}

/// A write lands in Postgres through the module.
fn assert_syncs(server: &Server, db: &TestDb, id: i32) {
    let mut c = server.conn();
    let (name, email) = (format!("tls{id}"), format!("tls{id}@example.com"));
    hset(&mut c, &format!("__{{users:{id}}}"), &[("username", &name), ("email", &email), ("pwhash", "x")]);
    sync_wait(&mut c);
    let rows = db.client().query("SELECT 1 FROM users WHERE id = $1", &[&id]).expect("select");
    assert_eq!(rows.len(), 1, "row {id} reached Postgres");
}

/// Whether every session of the module on `db` is encrypted (and there is one).
fn module_sessions_use_tls(db: &TestDb) -> bool {
    let rows = db
        .client()
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = $1 AND a.application_name = 'redis-pgsync'",
            &[&db.name],
        )
        .expect("pg_stat_ssl");
    !rows.is_empty() && rows.iter().all(|r| r.get::<_, bool>(0))
}

/// Waits until `SYNC.STATUS` shows Postgres down, and returns its error.
fn down_error(server: &Server) -> String {
    let mut c = server.conn();
    eventually("postgres down in SYNC.STATUS", || status(&mut c, "users")["postgres"] == "down");
    status(&mut c, "users")["postgres_error"].clone()
}

/// Redis keeps serving (and queuing) while Postgres cannot be reached.
fn assert_redis_serves(server: &Server) {
    let mut c = server.conn();
    hset(&mut c, "__{users:99}", &[("username", "waits")]);
    let status = status(&mut c, "users");
    assert_eq!(status["pending"], "1", "the change waits: {status:?}");
}

#[test]
fn tls_is_used_and_certificates_are_checked_as_libpq_does() {
    let ca = Ca::new("pgsync test CA");
    let wrong_ca = Ca::new("some other CA");
    let (cert, key) = ca.server_cert("localhost");
    let pg = PrivatePg::start_with(PgSetup { tls: Some((cert, key)), ..PgSetup::default() });
    let db = TestDb::on(&pg.admin_url(), USERS_SQL);
    let ca_file = ca.cert.display().to_string();

    // require: encrypted, certificate not checked (it names localhost, not 127.0.0.1).
    let server = server_with_url(&url("127.0.0.1", &pg, &db, "sslmode=require"));
    assert_syncs(&server, &db, 1);
    assert!(module_sessions_use_tls(&db), "the module's sessions are encrypted");
    drop(server);

    // verify-full with the right CA and host name.
    let full = format!("sslmode=verify-full&sslrootcert={ca_file}");
    let server = server_with_url(&url("localhost", &pg, &db, &full));
    assert_syncs(&server, &db, 2);
    assert!(module_sessions_use_tls(&db));
    drop(server);

    // verify-ca checks the chain only: 127.0.0.1 is not in the certificate, fine.
    // (With a require_auth the trusting cluster meets: the module's check of the
    // authentication requests lets the session through. Refusals are tested
    // against a fake server: src/pg/cleartext_tests.rs.)
    let verify_ca = format!("sslmode=verify-ca&sslrootcert={ca_file}&require_auth=!password,!md5");
    let server = server_with_url(&url("127.0.0.1", &pg, &db, &verify_ca));
    assert_syncs(&server, &db, 3);
    drop(server);

    // verify-full with a host the certificate does not name: refused.
    let server = server_with_url(&url("127.0.0.1", &pg, &db, &full));
    let error = down_error(&server);
    assert!(error.contains("certificate verify failed"), "a clear error: {error}");
    assert_redis_serves(&server);
    drop(server);

    // verify-full (and require, which then acts as verify-ca) with a CA that did
    // not sign the server's certificate: refused, Redis keeps serving.
    for mode in ["verify-full", "require"] {
        let wrong = format!("sslmode={mode}&sslrootcert={}", wrong_ca.cert.display());
        let server = server_with_url(&url("localhost", &pg, &db, &wrong));
        let error = down_error(&server);
        assert!(error.contains("certificate verify failed"), "{mode}: a clear error: {error}");
        assert_redis_serves(&server);
        let log = server.log();
        assert!(!log.contains("panic"), "no panic:\n{log}");
    }
}

#[test]
fn require_against_a_server_without_tls_fails_clearly() {
    let pg = PrivatePg::start();
    let db = TestDb::on(&pg.admin_url(), USERS_SQL);
    let server = server_with_url(&url("127.0.0.1", &pg, &db, "sslmode=require"));
    let error = down_error(&server);
    assert!(error.contains("does not support TLS"), "a clear error: {error}");
    assert_redis_serves(&server);
    drop(server);

    // prefer (the default) falls back to a plain connection.
    let server = server_with_url(&url("127.0.0.1", &pg, &db, "application_name=x"));
    assert_syncs(&server, &db, 1);
}
