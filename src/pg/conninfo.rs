//! Postgres connection strings as libpq writes them, a URL
//! (`postgres://user:pass@host/db?k=v`) or key=value pairs (`host=db password='a b'`):
//! taking out the parameters rust-postgres does not know (the TLS verification
//! ones), and hiding the password wherever the string is shown.

use std::ops::Range;

/// One `key=value` parameter: its decoded key and value, where the whole parameter
/// lies in the string (to remove it) and where its value lies (to hide it).
struct Param {
    key: String,
    value: String,
    whole: Range<usize>,
    value_at: Range<usize>,
}

/// Whether `s` is written as a URL rather than key=value pairs.
fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// The parameters of a URL's query string (`?a=1&b=2`), with spans in `s`.
fn url_params(s: &str) -> Vec<Param> {
    let Some(q) = s.find('?') else { return Vec::new() };
    let mut params = Vec::new();
    let mut start = q + 1;
    for piece in s[q + 1..].split('&') {
        let whole = start..start + piece.len();
        start = whole.end + 1;
        let (key, value_at) = match piece.find('=') {
            Some(eq) => (&piece[..eq], whole.start + eq + 1..whole.end),
            None => (piece, whole.end..whole.end),
        };
        params.push(Param { key: percent_decode(key), value: percent_decode(&s[value_at.clone()]), whole, value_at });
    }
    params
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pairs of a key=value string, parsed as libpq does: spaces around `=` are
/// allowed, a value may be single-quoted, and a backslash escapes the next
/// character. Fails at the first byte offset that does not parse.
fn key_value_params(s: &str) -> Result<Vec<Param>, usize> {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let at = |i: usize| chars.get(i).map_or(s.len(), |c| c.0);
    let skip_spaces = |mut i: usize| {
        while chars.get(i).is_some_and(|c| c.1.is_whitespace()) {
            i += 1;
        }
        i
    };
    let mut params = Vec::new();
    let mut i = skip_spaces(0);
    while i < chars.len() {
        let start = i;
        while chars.get(i).is_some_and(|c| c.1 != '=' && !c.1.is_whitespace()) {
            i += 1;
        }
        let key = s[at(start)..at(i)].to_string();
        i = skip_spaces(i);
        if key.is_empty() || chars.get(i).map(|c| c.1) != Some('=') {
            return Err(at(start));
        }
        i = skip_spaces(i + 1);
        let value_start = i;
        let quoted = chars.get(i).map(|c| c.1) == Some('\'');
        if quoted {
            i += 1;
        }
        let mut value = String::new();
        loop {
            match chars.get(i).map(|c| c.1) {
                None if quoted => return Err(at(value_start)),
                None => break,
                Some('\'') if quoted => {
                    i += 1;
                    break;
                }
                Some(c) if c.is_whitespace() && !quoted => break,
                Some('\\') => {
                    if let Some(&(_, next)) = chars.get(i + 1) {
                        value.push(next);
                    }
                    i += 2;
                }
                Some(c) => {
                    value.push(c);
                    i += 1;
                }
            }
        }
        let end = at(i.min(chars.len()));
        params.push(Param { key, value, whole: at(start)..end, value_at: at(value_start)..end });
        i = skip_spaces(i);
    }
    Ok(params)
}

/// Removes the parameters named in `names` from a connection string; returns the
/// rest and the removed `(key, value)` pairs, in order.
pub fn take_params(s: &str, names: &[&str]) -> Result<(String, Vec<(String, String)>), String> {
    let params = if is_url(s) {
        url_params(s)
    } else {
        key_value_params(s).map_err(|at| format!("the connection string does not parse at byte {at}"))?
    };
    let (taken, kept): (Vec<Param>, Vec<Param>) = params.into_iter().partition(|p| names.contains(&p.key.as_str()));
    let taken = taken.into_iter().map(|p| (p.key, p.value)).collect();
    let kept: Vec<&str> = kept.iter().map(|p| &s[p.whole.clone()]).filter(|p| !p.is_empty()).collect();
    let rest = match (is_url(s), s.find('?')) {
        (false, _) => kept.join(" "),
        (true, None) => s.to_string(),
        (true, Some(q)) if kept.is_empty() => s[..q].to_string(),
        (true, Some(q)) => format!("{}?{}", &s[..q], kept.join("&")),
    };
    Ok((rest, taken))
}

/// Hides the password of a Postgres URL (in its user info or a `password`
/// parameter) or key=value string (`password=...`, spaced or quoted). A string
/// that does not parse is hidden whole rather than risk showing a password.
pub fn redact(s: &str) -> String {
    let mut hide: Vec<Range<usize>> = Vec::new();
    let params = if is_url(s) {
        let rest_at = s.find("://").map_or(0, |i| i + 3);
        let rest = &s[rest_at..];
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@') {
            if let Some(colon) = authority[..at].find(':') {
                hide.push(rest_at + colon + 1..rest_at + at);
            }
        }
        url_params(s)
    } else {
        match key_value_params(s) {
            Ok(params) => params,
            Err(_) => return "(connection string hidden: it does not parse)".into(),
        }
    };
    hide.extend(params.into_iter().filter(|p| p.key == "password").map(|p| p.value_at));
    hide.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(s.len());
    let mut done = 0;
    for range in hide {
        out.push_str(&s[done..range.start]);
        out.push_str("***");
        done = range.end;
    }
    out.push_str(&s[done..]);
    out
}

#[cfg(test)]
mod tests {
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
        assert_eq!(redact("host=db password='unterminated"), "(connection string hidden: it does not parse)");
        assert_eq!(redact("host=db password"), "(connection string hidden: it does not parse)");
    }

    #[test]
    fn tls_parameters_are_taken_out() {
        let names = ["sslmode", "sslrootcert"];
        let (rest, taken) =
            take_params("postgres://h/db?sslmode=verify-full&sslrootcert=%2Fca.pem&x=1", &names).unwrap();
        assert_eq!(rest, "postgres://h/db?x=1");
        assert_eq!(taken, [("sslmode".into(), "verify-full".into()), ("sslrootcert".into(), "/ca.pem".into())]);
        let (rest, _) = take_params("postgres://h/db?sslmode=require", &names).unwrap();
        assert_eq!(rest, "postgres://h/db");
        assert_eq!(take_params("postgres://u:p@h/db", &names).unwrap(), ("postgres://u:p@h/db".into(), vec![]));
        let (rest, taken) = take_params("host=h sslrootcert = '/my ca.pem' dbname=d", &names).unwrap();
        assert_eq!(rest, "host=h dbname=d");
        assert_eq!(taken, [("sslrootcert".into(), "/my ca.pem".into())]);
        assert!(take_params("host=h 'oops", &names).is_err());
    }
}
