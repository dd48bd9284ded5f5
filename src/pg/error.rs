//! The one error type of the Postgres side and the one place that decides whether
//! a failure may heal by itself (retry) or is the row's own fault (dead letter).

use std::fmt;

/// Why a Postgres operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connection lost, server shutting down, pool exhausted: retry later.
    Unavailable,
    /// The data was rejected (constraint, bad value for the column type).
    Rejected,
    /// The schema does not match the mapping (missing table or column).
    Schema,
}

/// A Postgres failure with a message safe to show (no password in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// Human-readable description, including the SQLSTATE when there is one.
    pub message: String,
}

impl Error {
    /// A failure of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// Whether waiting and trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind != ErrorKind::Rejected
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Classifies by SQLSTATE: class 22 (data exception) and 23 (integrity constraint)
/// are the row's fault; 42 (undefined table/column, privileges) is the schema's;
/// everything else (connection, shutdown, resources, serialization) may heal.
pub fn kind_of_sqlstate(code: &str) -> ErrorKind {
    match code.get(..2) {
        Some("22") | Some("23") => ErrorKind::Rejected,
        Some("42") => ErrorKind::Schema,
        _ => ErrorKind::Unavailable,
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Error {
        match e.as_db_error() {
            Some(db) => {
                let mut message = format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
                if let Some(detail) = db.detail() {
                    message.push_str(": ");
                    message.push_str(detail);
                }
                Error::new(kind_of_sqlstate(db.code().code()), message)
            }
            None => Error::new(ErrorKind::Unavailable, format!("connection error: {e}")),
        }
    }
}

impl From<r2d2::Error> for Error {
    fn from(e: r2d2::Error) -> Error {
        Error::new(ErrorKind::Unavailable, format!("cannot connect to Postgres: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_are_rejections_and_the_rest_retries() {
        assert_eq!(kind_of_sqlstate("23505"), ErrorKind::Rejected);
        assert_eq!(kind_of_sqlstate("22P02"), ErrorKind::Rejected);
        assert_eq!(kind_of_sqlstate("22007"), ErrorKind::Rejected);
        assert_eq!(kind_of_sqlstate("42P01"), ErrorKind::Schema);
        assert_eq!(kind_of_sqlstate("57P01"), ErrorKind::Unavailable);
        assert_eq!(kind_of_sqlstate("08006"), ErrorKind::Unavailable);
        assert!(Error::new(ErrorKind::Schema, "x").is_retryable());
        assert!(!Error::new(ErrorKind::Rejected, "x").is_retryable());
    }
}
