//! Why the connection settings cannot be used: the connection string, its TLS
//! and authentication parameters, the password file. Each text says what is
//! wrong and never quotes the string (it may hold the password).

use super::auth::AuthError;
use super::conninfo::ConnInfoError;
use std::fmt;

/// Why [`super::connect::settings`] (or the password file) fails.
#[derive(Debug)]
pub enum SettingsError {
    /// The string is not a Postgres URL or connection string.
    Invalid(Invalid),
    /// `sslrootcert=system` with an `sslmode` other than `verify-full`.
    SystemRootsNeedVerifyFull {
        /// The `sslmode` given.
        mode: String,
    },
    /// `verify-ca` or `verify-full` without `sslrootcert`.
    VerifyNeedsRoots,
    /// `require_auth` on a connection that may be plain.
    RequireAuthNeedsTls,
    /// The `sslrootcert` file cannot be read.
    RootsUnreadable {
        /// Its path.
        path: String,
        /// The read's error.
        source: std::io::Error,
    },
    /// The `sslrootcert` file is not PEM.
    RootsNotPem {
        /// Its path.
        path: String,
        /// The parser's error.
        source: native_tls::Error,
    },
    /// The `sslrootcert` file holds no certificate.
    NoRoots {
        /// Its path.
        path: String,
    },
    /// `pgsync.postgres-password-file` cannot be read.
    PasswordFile {
        /// Its path.
        file: String,
        /// The read's error.
        source: std::io::Error,
    },
    /// The TLS connector cannot be built.
    Tls(native_tls::Error),
}

/// What in the string does not parse.
#[derive(Debug)]
pub enum Invalid {
    /// Its syntax.
    ConnInfo(ConnInfoError),
    /// An `sslmode` rust-postgres cannot honour (as written).
    SslMode(String),
    /// A `require_auth` that does not parse.
    RequireAuth(AuthError),
    /// What rust-postgres refuses in the rest (the password taken out).
    Config(postgres::Error),
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingsError::Invalid(why) => {
                write!(f, "pgsync.postgres-url is not a valid Postgres URL or connection string: {why}")
            }
            SettingsError::SystemRootsNeedVerifyFull { mode } => {
                write!(f, "sslrootcert=system needs sslmode=verify-full (not {mode}), as in libpq")
            }
            SettingsError::VerifyNeedsRoots => f.write_str(
                "sslmode=verify-ca and verify-full need sslrootcert=<CA file> (or sslrootcert=system for the \
                 system's trusted roots)",
            ),
            SettingsError::RequireAuthNeedsTls => f.write_str(
                "require_auth needs sslmode=require, verify-ca or verify-full: the module checks the server's \
                 authentication requests inside TLS only (the Postgres client crate gives it no hold on a plain \
                 connection)",
            ),
            SettingsError::RootsUnreadable { path, source } => {
                write!(f, "cannot read sslrootcert \"{path}\": {source}")
            }
            SettingsError::RootsNotPem { path, source } => write!(f, "sslrootcert \"{path}\" is not PEM: {source}"),
            SettingsError::NoRoots { path } => write!(f, "sslrootcert \"{path}\" holds no certificate"),
            SettingsError::PasswordFile { file, source } => {
                write!(f, "cannot read pgsync.postgres-password-file \"{file}\": {source}")
            }
            SettingsError::Tls(e) => write!(f, "cannot set up TLS for Postgres: {e}"),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::ConnInfo(e) => e.fmt(f),
            Invalid::SslMode(mode) => {
                write!(f, "sslmode \"{mode}\" is not supported; use disable, prefer, require, verify-ca or verify-full")
            }
            Invalid::RequireAuth(e) => e.fmt(f),
            Invalid::Config(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SettingsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SettingsError::Invalid(e) => Some(e),
            SettingsError::RootsUnreadable { source, .. } | SettingsError::PasswordFile { source, .. } => Some(source),
            SettingsError::RootsNotPem { source, .. } | SettingsError::Tls(source) => Some(source),
            _ => None,
        }
    }
}

impl std::error::Error for Invalid {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Invalid::ConnInfo(e) => Some(e),
            Invalid::RequireAuth(e) => Some(e),
            Invalid::Config(e) => Some(e),
            Invalid::SslMode(_) => None,
        }
    }
}

impl From<Invalid> for SettingsError {
    fn from(why: Invalid) -> SettingsError {
        SettingsError::Invalid(why)
    }
}
