//! Postgres connection strings as libpq writes them, a URL
//! (`postgres://user:pass@host/db?k=v`) or key=value pairs (`host=db password='a b'`):
//! taking out the password and the parameters rust-postgres does not know (the
//! TLS and authentication ones), and hiding the password wherever the string is
//! shown.

mod url;

use std::fmt;
use std::ops::Range;
pub use url::UrlError;

/// Why a connection string cannot be taken apart; never quotes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnInfoError {
    /// A key=value string stops parsing at this byte.
    At(usize),
    /// A URL that cannot be read.
    Url(UrlError),
}

impl fmt::Display for ConnInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnInfoError::At(at) => write!(f, "the connection string does not parse at byte {at}"),
            ConnInfoError::Url(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ConnInfoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnInfoError::Url(e) => Some(e),
            ConnInfoError::At(_) => None,
        }
    }
}

/// One `key=value` parameter: its decoded key and value, where the whole parameter
/// lies in the string (to remove it) and where its value lies (to hide it).
struct Param {
    key: String,
    value: String,
    whole: Range<usize>,
    value_at: Range<usize>,
}

/// The parameters of a URL query string (`a=1&b=2`, without the `?`), with spans
/// in `query`.
fn url_params(query: &str) -> Vec<Param> {
    let mut params = Vec::new();
    let mut start = 0;
    for piece in query.split('&') {
        let whole = start..start + piece.len();
        start = whole.end + 1;
        let (key, value_at) = match piece.find('=') {
            Some(eq) => (&piece[..eq], whole.start + eq + 1..whole.end),
            None => (piece, whole.end..whole.end),
        };
        params.push(Param {
            key: percent_decode(key),
            value: percent_decode(&query[value_at.clone()]),
            whole,
            value_at,
        });
    }
    params
}

/// `%XX` sequences decoded to bytes; a `%` not followed by two hex digits stays
/// as it is (as rust-postgres reads it).
pub(crate) fn percent_decode_bytes(s: &str) -> Vec<u8> {
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
    out
}

fn percent_decode(s: &str) -> String {
    String::from_utf8_lossy(&percent_decode_bytes(s)).into_owned()
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

/// A connection string taken apart for rust-postgres.
#[derive(Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// The string without its password and without the parameters taken out:
    /// what rust-postgres parses, so that none of its errors can show the password.
    pub rest: String,
    /// The password (decoded), when the string has one; a `password` parameter
    /// beats the URL's user info, and a later one an earlier one.
    pub password: Option<Vec<u8>>,
    /// The parameters named to be taken out, `(key, value)` in order.
    pub taken: Vec<(String, String)>,
}

/// Takes the password and the parameters named in `names` out of a connection
/// string. Errors say what does not parse, never quoting the string.
pub fn split(s: &str, names: &[&str]) -> Result<ConnInfo, ConnInfoError> {
    if url::after_scheme(s).is_some() {
        return split_url(s, names);
    }
    let params = key_value_params(s).map_err(ConnInfoError::At)?;
    let mut info = ConnInfo { rest: String::new(), password: None, taken: Vec::new() };
    let mut kept = Vec::new();
    for p in params {
        match p.key.as_str() {
            "password" => info.password = Some(p.value.into_bytes()),
            key if names.contains(&key) => info.taken.push((p.key, p.value)),
            _ => kept.push(&s[p.whole]),
        }
    }
    info.rest = kept.join(" ");
    Ok(info)
}

/// [`split`] for a URL. The URL given to rust-postgres has at most the one `@`
/// that ends the user name: it reads the user info up to the first `@`, so any
/// other is percent-encoded.
fn split_url(s: &str, names: &[&str]) -> Result<ConnInfo, ConnInfoError> {
    let parsed = url::parse(s).map_err(ConnInfoError::Url)?;
    let mut info = ConnInfo {
        rest: parsed.scheme.to_string(),
        password: parsed.password.map(percent_decode_bytes),
        taken: Vec::new(),
    };
    if let Some(user) = parsed.user {
        info.rest.push_str(&user.replace('@', "%40"));
        info.rest.push('@');
    }
    let (place, query) = parsed.rest.split_once('?').unwrap_or((parsed.rest, ""));
    info.rest.push_str(&place.replace('@', "%40"));
    let mut kept = Vec::new();
    for p in url_params(query) {
        match p.key.as_str() {
            // As bytes: `%XX` need not make UTF-8.
            "password" => info.password = Some(percent_decode_bytes(&query[p.value_at])),
            key if names.contains(&key) => info.taken.push((p.key, p.value)),
            _ => kept.push(p.whole),
        }
    }
    let kept: Vec<String> =
        kept.into_iter().map(|at| query[at].replace('@', "%40")).filter(|p| !p.is_empty()).collect();
    if !kept.is_empty() {
        info.rest.push('?');
        info.rest.push_str(&kept.join("&"));
    }
    Ok(info)
}

/// Hides whatever could be the password in a Postgres URL or key=value string,
/// whether or not it parses: in a URL, everything between the user name and the
/// last `@` (all of the user info when the user name cannot be told) and every
/// `password` parameter; in key=value form, every `password` value, spaced or
/// quoted. A key=value string that does not parse is hidden whole.
pub fn redact(s: &str) -> String {
    let mut hide: Vec<Range<usize>> = match url::after_scheme(s) {
        Some(start) => url::secret_spans(s, start),
        None => match key_value_params(s) {
            // Any case: `PASSWORD=` fails the load, but the string is shown before.
            Ok(params) => params.into_iter().filter(|p| is_password(&p.key)).map(|p| p.value_at).collect(),
            Err(_) => return "(connection string hidden: it does not parse)".into(),
        },
    };
    hide.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(s.len());
    let mut done = 0;
    for range in hide {
        if range.start < done {
            // Overlaps the span just hidden: hide the rest of it too.
            done = done.max(range.end);
            continue;
        }
        out.push_str(&s[done..range.start]);
        out.push_str("***");
        done = range.end;
    }
    out.push_str(&s[done..]);
    out
}

/// Whether a parameter name could be taken for the password (any case: hiding
/// too much costs nothing).
fn is_password(key: &str) -> bool {
    key.trim().eq_ignore_ascii_case("password")
}

#[cfg(test)]
mod tests;
