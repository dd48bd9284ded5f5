use super::*;

#[test]
fn passwords_are_hidden_in_every_form() {
    assert_eq!(redact("postgres://bob:s3cret@db:5432/app"), "postgres://bob:***@db:5432/app");
    assert_eq!(redact("postgres://bob@db/app"), "postgres://bob@db/app");
    assert_eq!(redact("postgresql://db/app?user=bob&password=s3cret"), "postgresql://db/app?user=bob&password=***");
    assert_eq!(redact("postgres://bob:a@db/app?password=b&x=1"), "postgres://bob:***@db/app?password=***&x=1");
    assert_eq!(redact("host=db password=s3cret user=bob"), "host=db password=*** user=bob");
    assert_eq!(redact("host=db password = s3cret user=bob"), "host=db password = *** user=bob");
    assert_eq!(redact("host=db password='s3 cr\\'et' user=bob"), "host=db password=*** user=bob");
    assert_eq!(redact("host=db PASSWORD=s3cret"), "host=db PASSWORD=***");
    assert_eq!(redact("postgres://db/x?Password =s3cret"), "postgres://db/x?Password =***");
    assert_eq!(redact("host=db password='unterminated"), "(connection string hidden: it does not parse)");
    assert_eq!(redact("host=db password"), "(connection string hidden: it does not parse)");
}

#[test]
fn unencoded_passwords_are_hidden_whether_or_not_the_url_parses() {
    // The `/` ends the authority for a strict URL parser, which then sees no password.
    assert_eq!(redact("postgres://app:s3cret/x@127.0.0.1:5432/app"), "postgres://app:***@127.0.0.1:5432/app");
    assert_eq!(redact("postgres://app:a?b#c@db/app"), "postgres://app:***@db/app");
    assert_eq!(redact("postgres://app:p@ss@db/app"), "postgres://app:***@db/app");
    // The user name cannot be told from a path or query: all of the user info goes.
    assert_eq!(redact("postgres://db/x?user=me@corp"), "postgres://***@corp");
    assert_eq!(redact("postgres://db/x?password=p@w"), "postgres://***");
    // Overlapping spans are hidden once.
    assert_eq!(redact("postgres://u:x?password=y@db/app"), "postgres://u:***");
}

#[test]
fn the_password_is_taken_out_for_the_client() {
    let info = split("postgres://app:s3cret%2Fx@db:5432/app?sslmode=require&x=1", &["sslmode"]).unwrap();
    assert_eq!(info.rest, "postgres://app@db:5432/app?x=1");
    assert_eq!(info.password.as_deref(), Some(&b"s3cret/x"[..]));
    assert_eq!(info.taken, [("sslmode".into(), "require".into())]);
    // Raw `@`s: only the one ending the user name stays, for rust-postgres reads to the first.
    let info = split("postgres://me@corp:p@ss@db/app?password=later&application_name=a@b c", &[]).unwrap();
    assert_eq!(info.rest, "postgres://me%40corp@db/app?application_name=a%40b c");
    assert_eq!(info.password.as_deref(), Some(&b"later"[..]), "a password parameter beats the user info");
    let info = split("host=db password='a b\\'c' user=u password=second", &[]).unwrap();
    assert_eq!((info.rest.as_str(), info.password.as_deref()), ("host=db user=u", Some(&b"second"[..])));
    assert_eq!(split("postgres://db/app", &[]).unwrap().password, None);
    let e = split("postgres://app:1234/x@db/app", &[]).unwrap_err().to_string();
    assert!(!e.contains("1234/x"), "{e}");
}

#[test]
fn tls_parameters_are_taken_out() {
    let names = ["sslmode", "sslrootcert"];
    let info = split("postgres://h/db?sslmode=verify-full&sslrootcert=%2Fca.pem&x=1", &names).unwrap();
    assert_eq!(info.rest, "postgres://h/db?x=1");
    assert_eq!(info.taken, [("sslmode".into(), "verify-full".into()), ("sslrootcert".into(), "/ca.pem".into())]);
    assert_eq!(split("postgres://h/db?sslmode=require", &names).unwrap().rest, "postgres://h/db");
    let info = split("postgres://u:p@h/db", &names).unwrap();
    assert_eq!((info.rest.as_str(), info.taken.len()), ("postgres://u@h/db", 0));
    let info = split("host=h sslrootcert = '/my ca.pem' dbname=d", &names).unwrap();
    assert_eq!(info.rest, "host=h dbname=d");
    assert_eq!(info.taken, [("sslrootcert".into(), "/my ca.pem".into())]);
    assert!(split("host=h 'oops", &names).is_err());
}
