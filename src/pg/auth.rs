//! libpq's `require_auth`: which ways of authenticating the server may ask for.
//! The module follows the server's messages during the startup and refuses a
//! request the setting does not allow before the client crate sees it, so the
//! password (or its MD5 hash) is never sent in reply.

use std::fmt;
use std::str::FromStr;

/// Why a `require_auth` setting is refused, or a connection closed by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The setting mixes methods with and without `!` (as written).
    Mixed(String),
    /// The setting names a method that does not exist.
    Unknown(String),
    /// The server's startup messages do not follow the protocol.
    Malformed,
    /// The server asked for a method the setting does not allow.
    Refused {
        /// What the server asked for (a phrase, see `Method::request`).
        request: &'static str,
        /// The setting, as written.
        setting: String,
    },
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Mixed(s) => {
                write!(f, "require_auth \"{s}\" mixes methods with and without \"!\", which libpq refuses")
            }
            AuthError::Unknown(name) => write!(
                f,
                "require_auth method \"{name}\" is not known; use password, md5, gss, sspi, scram-sha-256 or \
                 none, or the same with \"!\" to forbid them"
            ),
            AuthError::Malformed => f.write_str("the server sent a malformed message during authentication"),
            AuthError::Refused { request, setting } => write!(
                f,
                "the server {request}, which require_auth={setting} does not allow; the module closed the \
                 connection without answering (the password was not sent)"
            ),
        }
    }
}

impl std::error::Error for AuthError {}

/// An authentication method, named as in `require_auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// Cleartext password (`AuthenticationCleartextPassword`).
    Password,
    /// MD5 hash of the password.
    Md5,
    /// GSSAPI (Kerberos).
    Gss,
    /// SSPI (Windows).
    Sspi,
    /// SASL, whose only mechanisms are SCRAM-SHA-256 (and its `-PLUS` form).
    ScramSha256,
    /// No authentication exchange at all (trust).
    None,
}

const METHODS: [(&str, Method); 6] = [
    ("password", Method::Password),
    ("md5", Method::Md5),
    ("gss", Method::Gss),
    ("sspi", Method::Sspi),
    ("scram-sha-256", Method::ScramSha256),
    ("none", Method::None),
];

impl Method {
    /// What the server asked for, in an error message.
    fn request(self) -> &'static str {
        match self {
            Method::Password => "asked for the password in cleartext",
            Method::Md5 => "asked for an MD5 hash of the password",
            Method::Gss => "asked for GSSAPI authentication",
            Method::Sspi => "asked for SSPI authentication",
            Method::ScramSha256 => "asked for SCRAM-SHA-256 authentication",
            Method::None => "let the connection in without any authentication",
        }
    }
}

/// A `require_auth` setting: the methods listed are the only ones allowed, or,
/// written with `!`, the only ones forbidden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequireAuth {
    listed: Vec<Method>,
    forbids: bool,
    /// As written, for error messages.
    text: String,
}

impl FromStr for RequireAuth {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<RequireAuth, AuthError> {
        let mut listed = Vec::new();
        let mut forbids = None;
        for word in s.split(',') {
            let (negated, name) = match word.strip_prefix('!') {
                Some(name) => (true, name),
                None => (false, word),
            };
            if forbids.is_some_and(|f| f != negated) {
                return Err(AuthError::Mixed(s.to_string()));
            }
            forbids = Some(negated);
            let Some(&(_, method)) = METHODS.iter().find(|(known, _)| *known == name) else {
                return Err(AuthError::Unknown(name.to_string()));
            };
            listed.push(method);
        }
        Ok(RequireAuth { listed, forbids: forbids.unwrap_or(false), text: s.to_string() })
    }
}

impl RequireAuth {
    fn allows(&self, method: Method) -> bool {
        self.listed.contains(&method) != self.forbids
    }

    fn refuse(&self, method: Method) -> Result<(), AuthError> {
        if self.allows(method) {
            return Ok(());
        }
        Err(AuthError::Refused { request: method.request(), setting: self.text.clone() })
    }
}

/// Follows the server's messages from the start of a connection until
/// authentication succeeds or fails, checking every request against a
/// [`RequireAuth`]. Messages may arrive in pieces of any size.
pub struct AuthWatch {
    policy: RequireAuth,
    /// The start of the message being read: its type, length and (for an
    /// authentication message) request code.
    header: Vec<u8>,
    /// Bytes of the current message still to pass over.
    skip: usize,
    /// Whether the server asked for any authentication.
    asked: bool,
    done: bool,
}

/// Type byte of an authentication message (`R`) and of an error (`E`).
const AUTH: u8 = b'R';
const ERROR: u8 = b'E';

impl AuthWatch {
    /// Starts watching a new connection.
    pub fn new(policy: RequireAuth) -> AuthWatch {
        AuthWatch { policy, header: Vec::with_capacity(9), skip: 0, asked: false, done: false }
    }

    /// Whether authentication is over (succeeded, or the server sent an error),
    /// after which nothing needs watching.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Looks at the next bytes from the server, before the client crate reads
    /// them; an error when they hold a request the policy forbids.
    pub fn inspect(&mut self, mut bytes: &[u8]) -> Result<(), AuthError> {
        while !bytes.is_empty() && !self.done {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            let wanted = if self.header[0] == AUTH { 9 } else { 5 };
            if self.header.len() < wanted {
                continue;
            }
            let length = i32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]);
            let body = usize::try_from(length).ok().and_then(|l| l.checked_sub(wanted - 1));
            let Some(rest) = body else {
                return Err(AuthError::Malformed);
            };
            self.skip = rest;
            if self.header[0] == AUTH {
                let code = i32::from_be_bytes([self.header[5], self.header[6], self.header[7], self.header[8]]);
                self.check(code)?;
            } else if self.header[0] == ERROR {
                self.done = true;
            }
            self.header.clear();
        }
        Ok(())
    }

    /// Checks one authentication message by its code (as the protocol numbers
    /// them); continuations of an exchange already allowed, and methods the
    /// client crate does not speak, pass.
    fn check(&mut self, code: i32) -> Result<(), AuthError> {
        let method = match code {
            0 => {
                self.done = true;
                if self.asked {
                    return Ok(());
                }
                Method::None
            }
            3 => Method::Password,
            5 => Method::Md5,
            7 => Method::Gss,
            9 => Method::Sspi,
            10 => Method::ScramSha256,
            _ => return Ok(()),
        };
        self.asked = true;
        self.policy.refuse(method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An authentication message with `code`.
    fn auth(code: i32) -> Vec<u8> {
        let mut m = vec![AUTH];
        m.extend(8i32.to_be_bytes());
        m.extend(code.to_be_bytes());
        m
    }

    /// Feeds `bytes` to a watch in pieces of `step` bytes.
    fn watch(policy: &str, bytes: &[u8], step: usize) -> Result<(), AuthError> {
        let mut w = AuthWatch::new(policy.parse().unwrap());
        bytes.chunks(step).try_for_each(|piece| w.inspect(piece))
    }

    #[test]
    fn settings_parse_as_libpq_writes_them() {
        assert!("scram-sha-256".parse::<RequireAuth>().is_ok());
        assert!("!password,!md5".parse::<RequireAuth>().is_ok());
        assert_eq!("password,!md5".parse::<RequireAuth>(), Err(AuthError::Mixed("password,!md5".into())));
        assert_eq!("scram".parse::<RequireAuth>(), Err(AuthError::Unknown("scram".into())));
        assert!(AuthError::Unknown("scram".into()).to_string().contains("\"scram\" is not known"));
    }

    #[test]
    fn forbidden_requests_are_refused_in_any_piece_size() {
        let mut sasl = vec![AUTH];
        sasl.extend(23i32.to_be_bytes());
        sasl.extend(10i32.to_be_bytes());
        sasl.extend(b"SCRAM-SHA-256\0\0");
        let mut notice_then_cleartext = vec![b'N'];
        notice_then_cleartext.extend(7i32.to_be_bytes());
        notice_then_cleartext.extend(b"abc");
        notice_then_cleartext.extend(auth(3));
        for step in [1, 2, 5, 100] {
            let e = watch("scram-sha-256", &auth(3), step).unwrap_err().to_string();
            assert!(e.contains("cleartext") && e.contains("require_auth=scram-sha-256"), "{e}");
            assert!(watch("!password", &notice_then_cleartext, step).unwrap_err().to_string().contains("cleartext"));
            assert!(watch("!password", &auth(5), step).is_ok());
            assert!(watch("scram-sha-256", &auth(5), step).unwrap_err().to_string().contains("MD5"));
            assert!(watch("scram-sha-256", &[sasl.clone(), auth(11), auth(12), auth(0)].concat(), step).is_ok());
            // Trust: allowed only when `none` is.
            assert!(watch("scram-sha-256", &auth(0), step).unwrap_err().to_string().contains("without any"));
            assert!(watch("scram-sha-256,none", &auth(0), step).is_ok());
            // After authentication, anything passes.
            assert!(watch("!password", &[auth(0), auth(3)].concat(), step).is_ok());
        }
        let mut short = vec![AUTH];
        short.extend(2i32.to_be_bytes());
        short.extend(0i32.to_be_bytes());
        assert!(watch("!password", &short, 1).unwrap_err().to_string().contains("malformed"));
    }
}
