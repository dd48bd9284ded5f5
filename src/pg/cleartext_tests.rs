//! Refusing to send the password in cleartext (`require_auth`, `channel_binding`),
//! tested against a fake Postgres server: a TCP listener on loopback that answers
//! the startup message with `AuthenticationCleartextPassword` and records whether
//! a password message arrives. A fake peer, for this one protocol case only,
//! because the test Postgres trusts every connection and so never asks for a
//! password at all; and what matters is what a hostile server gets.

use super::connect::settings;
use super::error::with_causes;
use native_tls::{Identity, TlsAcceptor};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::Duration;

const PASSWORD: &str = "never-in-clear-7731";
/// The code of `SSLRequest` in its length-prefixed message.
const SSL_REQUEST: [u8; 4] = 80877103i32.to_be_bytes();

/// The client's reply to the request for the password: message type and body;
/// `None` when it closed the connection instead.
type Reply = Option<(u8, Vec<u8>)>;

/// Reads one length-prefixed body (startup messages have no type byte).
fn read_body(stream: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0; 4];
    stream.read_exact(&mut len)?;
    let mut body = vec![0; usize::try_from(i32::from_be_bytes(len)).unwrap_or(4).saturating_sub(4)];
    stream.read_exact(&mut body)?;
    Ok(body)
}

/// Asks for the cleartext password and returns the client's reply.
fn ask_for_cleartext(stream: &mut (impl Read + Write)) -> Reply {
    read_body(stream).expect("startup message");
    stream.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).expect("AuthenticationCleartextPassword");
    let mut kind = [0];
    stream.read_exact(&mut kind).ok()?;
    let body = read_body(stream).ok()?;
    let error = b"SFATAL\0C28P01\0Mfake server\0\0";
    let mut reply = vec![b'E'];
    reply.extend(i32::try_from(error.len() + 4).expect("short").to_be_bytes());
    reply.extend(error);
    let _ = stream.write_all(&reply);
    Some((kind[0], body))
}

/// A fake server for one connection, speaking TLS when `tls` is given; its
/// thread returns what the client answered to the request for the password.
fn fake_server(tls: Option<TlsAcceptor>) -> (u16, JoinHandle<Reply>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("address").port();
    let thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        // Only so that a broken client cannot hang the test forever.
        stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let mut first = [0; 8];
        stream.read_exact(&mut first).expect("SSLRequest");
        assert_eq!(first[4..], SSL_REQUEST, "the client starts with SSLRequest");
        match tls {
            Some(acceptor) => {
                stream.write_all(b"S").expect("accept TLS");
                ask_for_cleartext(&mut acceptor.accept(stream).expect("TLS handshake"))
            }
            None => {
                stream.write_all(b"N").expect("refuse TLS");
                ask_for_cleartext(&mut stream)
            }
        }
    });
    (port, thread)
}

/// A TLS acceptor with a throwaway self-signed certificate.
fn acceptor() -> TlsAcceptor {
    let dir = std::env::temp_dir().join(format!("pgsync_fake_pg_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-subj", "/CN=localhost", "-days", "2", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    let (key, cert) = (std::fs::read(key).expect("key"), std::fs::read(cert).expect("cert"));
    let _ = std::fs::remove_dir_all(&dir);
    TlsAcceptor::new(Identity::from_pkcs8(&cert, &key).expect("identity")).expect("acceptor")
}

/// Connects to a fake server with `params`; returns the error and what the
/// server got in reply to its request.
fn connect(tls: Option<TlsAcceptor>, params: &str) -> (String, Reply) {
    let (port, server) = fake_server(tls);
    let url = format!("host=127.0.0.1 port={port} user=app dbname=app connect_timeout=60 {params}");
    let s = settings(&url, Some(PASSWORD)).expect("settings");
    let error = s.config.connect(s.tls).err().expect("the fake server lets nobody in");
    (with_causes(&error), server.join().expect("fake server"))
}

fn is_the_password(reply: &Reply) -> bool {
    reply.as_ref().is_some_and(|(kind, body)| *kind == b'p' && body.starts_with(PASSWORD.as_bytes()))
}

#[test]
fn require_auth_refuses_a_cleartext_request_before_sending_the_password() {
    let acceptor = acceptor();
    let (error, reply) = connect(Some(acceptor.clone()), "sslmode=require");
    assert!(is_the_password(&reply), "without require_auth the fake server gets the password: {error}");

    for policy in ["scram-sha-256", "!password", "md5,scram-sha-256"] {
        let (error, reply) = connect(Some(acceptor.clone()), &format!("sslmode=require require_auth={policy}"));
        assert_eq!(reply, None, "require_auth={policy}: the server got a reply ({error})");
        assert!(error.contains("cleartext") && error.contains(&format!("require_auth={policy}")), "{error}");
    }
}

#[test]
fn channel_binding_require_refuses_a_cleartext_request_before_sending_the_password() {
    let (error, reply) = connect(None, "sslmode=prefer");
    assert!(is_the_password(&reply), "without channel_binding the fake server gets the password: {error}");

    let (error, reply) = connect(None, "sslmode=prefer channel_binding=require");
    assert_eq!(reply, None, "the server got a reply ({error})");
    assert!(error.contains("channel binding"), "{error}");
}
