//! Property test of the password's handling: random printable passwords (every
//! character that means something in a URL or a key=value string among them),
//! written raw and percent-encoded, in a URL's user info, its `?password=` and the
//! key=value form. Whatever is written, the redacted text (what `CONFIG GET`,
//! `INFO`, `SYNC.STATUS` and the log show) and any load error never contain the
//! password; a string that is accepted carries exactly the password it denotes,
//! and rust-postgres never sees it (so its errors cannot show it).

use super::connect::read;
use super::conninfo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Passwords made of random printable ASCII, after a few written by hand with
/// every troublesome character.
fn passwords() -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(26);
    let mut all: Vec<String> =
        ["s3cret/x", "a/b@c:d?e#f%g'h\"i\\j k", "p@ss word/with?all#%41", "1234/x", "%zz@%2F"].map(String::from).into();
    all.extend((0..400).map(|_| {
        let len = rng.gen_range(8..24);
        (0..len).map(|_| char::from(rng.gen_range(0x20u8..0x7f))).collect()
    }));
    all
}

/// Every byte but the unreserved ones as `%XX`.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A backslash before every space, quote and backslash (libpq's escapes).
fn escape(s: &str) -> String {
    s.chars().flat_map(|c| if " '\\".contains(c) { vec!['\\', c] } else { vec![c] }).collect()
}

/// The connection strings carrying `pw`: each with the password it denotes and
/// whether it must be accepted. Raw in a URL, `%XX` means the byte (as in any
/// URL), and an `&` cannot be written raw in a parameter.
fn forms(pw: &str) -> Vec<(String, Vec<u8>, bool)> {
    let decoded = conninfo::percent_decode_bytes(pw);
    let mut forms = vec![
        (format!("postgres://app:{pw}@127.0.0.1:5432/app?sslmode=disable"), decoded.clone(), false),
        (format!("postgresql://app:{}@db.example:5432/app?application_name=t", encode(pw)), pw.into(), true),
        (format!("postgres://127.0.0.1/app?user=app&password={}&sslmode=disable", encode(pw)), pw.into(), true),
        (
            format!("host=db user=app password='{}' dbname=app", pw.replace('\\', "\\\\").replace('\'', "\\'")),
            pw.into(),
            true,
        ),
        (format!("host=db password = {} user=app", escape(pw)), pw.into(), true),
    ];
    if !pw.contains('&') {
        forms.push((format!("postgres://db/app?password={pw}&user=app"), decoded, false));
    }
    forms
}

#[test]
fn no_form_of_a_password_shows_it_and_accepted_ones_keep_it() {
    let (mut accepted_raw, mut refused) = (0, 0);
    for pw in passwords() {
        let decoded = String::from_utf8_lossy(&conninfo::percent_decode_bytes(&pw)).into_owned();
        let secret = |text: &str| text.contains(&pw) || text.contains(&decoded);
        for (s, denoted, must_accept) in forms(&pw) {
            let shown = conninfo::redact(&s);
            assert!(!secret(&shown), "{s:?} is shown as {shown:?}");
            match read(&s, None) {
                Ok(ok) => {
                    assert_eq!(ok.config.get_password(), Some(&denoted[..]), "{s:?}");
                    let rest = conninfo::split(&s, &["sslmode"]).expect("accepted").rest;
                    assert!(!secret(&rest), "rust-postgres would see the password in {rest:?}");
                    accepted_raw += usize::from(!must_accept);
                }
                Err(e) => {
                    let e = e.to_string();
                    assert!(!must_accept, "{s:?} refused: {e}");
                    assert!(!secret(&e), "the error shows the password: {e}");
                    refused += 1;
                }
            }
            let bad = if s.contains("://") { format!("{s}&sslmode=bogus") } else { format!("{s} sslmode=bogus") };
            let e = read(&bad, None).err().expect("sslmode=bogus is refused").to_string();
            assert!(!secret(&e), "the error shows the password: {e}");
        }
    }
    // Both outcomes happen, so both branches were checked.
    assert!(accepted_raw > 100 && refused > 10, "accepted raw {accepted_raw}, refused {refused}");
}
