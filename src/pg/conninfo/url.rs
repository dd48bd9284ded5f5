//! Postgres URLs (`postgres://user:password@host:port/db?k=v`), read so that a
//! password written without percent-encoding is still found: an unencoded `/`,
//! `?` or `@` in it must neither end the user info early (a strict URL parser
//! would, and then see no password) nor move the host.

use std::ops::Range;

/// The schemes a Postgres URL starts with (as libpq and rust-postgres).
const SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// The byte offset just after the scheme when `s` is a URL.
pub fn after_scheme(s: &str) -> Option<usize> {
    SCHEMES.iter().find(|scheme| s.starts_with(*scheme)).map(|scheme| scheme.len())
}

/// A URL split at the end of its user info; every part as written (still
/// percent-encoded).
#[derive(Debug, PartialEq, Eq)]
pub struct Url<'a> {
    /// `postgres://` or `postgresql://`.
    pub scheme: &'a str,
    /// The user name, when the URL has user info.
    pub user: Option<&'a str>,
    /// The password, when the user info has a `:`.
    pub password: Option<&'a str>,
    /// Hosts, database and parameters: what follows the user info.
    pub rest: &'a str,
}

/// Why a Postgres URL cannot be read; never quotes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlError {
    /// Another scheme than `postgres://` or `postgresql://`.
    Scheme,
    /// No way of reading it leaves a valid host list after the user info.
    NoHosts,
    /// More than one way of reading it does.
    Ambiguous,
}

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UrlError::Scheme => "it does not start with postgres:// or postgresql://",
            UrlError::NoHosts => {
                "no valid host list (host[:port], comma-separated) follows its user info; an `@`, `/`, `?` or `:` \
                 in the password must be percent-encoded: %40, %2F, %3F, %3A"
            }
            UrlError::Ambiguous => {
                "it can be read in more than one way (where the user info ends, so which part is the password and \
                 which the host): percent-encode the `@`, `/`, `?` and `:` of the password (%40, %2F, %3F, %3A) \
                 and any `@` of the database name or parameters"
            }
        })
    }
}

impl std::error::Error for UrlError {}

/// Reads a URL. The user info may end at any `@` (or there may be none), and a
/// password may hold any character; so every way of reading it is tried, and the
/// URL is taken only when exactly one of them leaves a valid host list after the
/// user info. Errors never quote the URL.
pub fn parse(s: &str) -> Result<Url<'_>, UrlError> {
    let start = after_scheme(s).ok_or(UrlError::Scheme)?;
    let body = &s[start..];
    let ends = std::iter::once(None).chain(body.match_indices('@').map(|(at, _)| Some(at)));
    let mut readings = ends.filter(|end| hosts_are_valid(end.map_or(body, |at| &body[at + 1..])));
    let end = match (readings.next(), readings.next()) {
        (Some(end), None) => end,
        (None, _) => return Err(UrlError::NoHosts),
        (Some(_), Some(_)) => return Err(UrlError::Ambiguous),
    };
    let Some(at) = end else { return Ok(Url { scheme: &s[..start], user: None, password: None, rest: body }) };
    let userinfo = &body[..at];
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    Ok(Url { scheme: &s[..start], user: Some(user), password, rest: &body[at + 1..] })
}

/// Whether the text after the user info starts with a host list as
/// rust-postgres reads it: empty, or `host[:port]` entries separated by commas,
/// a host being a name, an address, a bracketed IPv6 address or a
/// percent-encoded socket directory, a port being digits.
fn hosts_are_valid(rest: &str) -> bool {
    let hosts = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    hosts.is_empty() || hosts.split(',').all(host_is_valid)
}

fn host_is_valid(entry: &str) -> bool {
    let (name_ok, port) = match entry.strip_prefix('[') {
        Some(bracketed) => {
            let Some((address, after)) = bracketed.split_once(']') else { return false };
            let port = match (after, after.strip_prefix(':')) {
                ("", _) => None,
                (_, Some(port)) => Some(port),
                (_, None) => return false,
            };
            (!address.is_empty() && address.chars().all(|c| c.is_ascii_hexdigit() || ":.%".contains(c)), port)
        }
        None => {
            let (host, port) = match entry.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (entry, None),
            };
            (!host.is_empty() && host.chars().all(|c| c.is_alphanumeric() || "._-%".contains(c)), port)
        }
    };
    name_ok && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The parts of `s` (a URL whose text after the scheme starts at `start`) that
/// could be a password, whether or not the URL parses: everything between the
/// user name and the last `@` (all of the user info when the user name cannot be
/// told), and the value of every `password` parameter after any `?` or `&`.
pub fn secret_spans(s: &str, start: usize) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    if let Some(at) = s[start..].rfind('@').map(|at| start + at) {
        let userinfo = &s[start..at];
        let user_end = userinfo.find(':').unwrap_or(userinfo.len());
        let user_is_plain = !userinfo[..user_end].contains(['/', '?']);
        match (user_is_plain, user_end < userinfo.len()) {
            (true, true) => spans.push(start + user_end + 1..at),
            (true, false) => {}
            (false, _) => spans.push(start..at),
        }
    }
    for (mark, _) in s[start..].match_indices(['?', '&']) {
        let piece_start = start + mark + 1;
        let piece_end = s[piece_start..].find('&').map_or(s.len(), |end| piece_start + end);
        if let Some(eq) = s[piece_start..piece_end].find('=') {
            if super::is_password(&super::percent_decode(&s[piece_start..piece_start + eq])) {
                spans.push(piece_start + eq + 1..piece_end);
            }
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(user: Option<&'static str>, password: Option<&'static str>, rest: &'static str) -> Url<'static> {
        Url { scheme: "postgres://", user, password, rest }
    }

    #[test]
    fn the_user_info_ends_where_only_one_reading_is_left() {
        assert_eq!(
            parse("postgres://app:s3cret/x@127.0.0.1:5432/app"),
            Ok(url(Some("app"), Some("s3cret/x"), "127.0.0.1:5432/app"))
        );
        assert_eq!(parse("postgres://app:p@ss@db/app"), Ok(url(Some("app"), Some("p@ss"), "db/app")));
        assert_eq!(parse("postgres://a@srv:pw@db"), Ok(url(Some("a@srv"), Some("pw"), "db")));
        assert_eq!(parse("postgres://app@db/x"), Ok(url(Some("app"), None, "db/x")));
        assert_eq!(parse("postgres://db:5432/x?user=u"), Ok(url(None, None, "db:5432/x?user=u")));
        assert_eq!(parse("postgres:///x?host=%2Ftmp"), Ok(url(None, None, "/x?host=%2Ftmp")));
        assert_eq!(parse("postgres://u:pw@[::1]:5432,h2/x"), Ok(url(Some("u"), Some("pw"), "[::1]:5432,h2/x")));
        // A database or parameter holding an `@` when no user info precedes it.
        assert_eq!(
            parse("postgres://db/x?application_name=a b@c d"),
            Ok(url(None, None, "db/x?application_name=a b@c d"))
        );
    }

    #[test]
    fn urls_that_read_two_ways_or_none_are_refused() {
        for bad in [
            // `1234/x` could be a port and a database: percent-encode the `/`.
            "postgres://app:1234/x@db/app",
            "postgres://app:a@b/c@db/app",
            "postgres://u:pw@db/x?application_name=me@corp",
            "postgres://db/x?user=me@corp",
            "postgres://u:pw@db:port/x",
            "postgres://u:pw@a b/x",
            "postgresql://u:pw@[zz]/x",
            "postgresql://u:pw@[::1]x/x",
            "mysql://u:pw@db/x",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(!e.contains(bad) && !e.contains("pw"), "{bad}: {e}");
        }
    }

    #[test]
    fn secret_spans_cover_every_possible_password() {
        fn hidden(s: &str) -> Vec<&str> {
            secret_spans(s, after_scheme(s).unwrap()).into_iter().map(|r| &s[r]).collect()
        }
        assert_eq!(hidden("postgres://app:s3cret/x@db/app"), ["s3cret/x"]);
        assert_eq!(hidden("postgres://app:a@b/c@db/app"), ["a@b/c"]);
        assert_eq!(hidden("postgres://app@db/app"), Vec::<&str>::new());
        assert_eq!(hidden("postgres://db/x?user=me@corp"), ["db/x?user=me"]);
        assert_eq!(hidden("postgres://db/x?a=1&pass%77ord=p?w&b=2"), ["p?w"]);
        assert_eq!(hidden("postgres://u:x?password=y@db"), ["x?password=y", "y@db"]);
    }
}
