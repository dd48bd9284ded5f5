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
        Error { kind, message: message.into() }
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

/// Classifies by SQLSTATE. Connection trouble, shutdown, resources, locks and
/// serialization failures (08, 53, 55, 57, 58, 40) may heal by waiting; undefined
/// tables, columns or rights (42, 3D, 3F) are the schema's, and heal when it is
/// fixed; anything else (bad values, constraints, trigger exceptions, ...) is the
/// row's own fault.
pub fn kind_of_sqlstate(code: &str) -> ErrorKind {
    match code.get(..2) {
        Some("08" | "53" | "55" | "57" | "58" | "40") => ErrorKind::Unavailable,
        Some("42" | "3D" | "3F") => ErrorKind::Schema,
        _ => ErrorKind::Rejected,
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
        assert_eq!(kind_of_sqlstate("40001"), ErrorKind::Unavailable);
        assert_eq!(kind_of_sqlstate("21000"), ErrorKind::Rejected, "ON CONFLICT hit twice");
        assert_eq!(kind_of_sqlstate("P0001"), ErrorKind::Rejected, "a trigger raised");
        assert_eq!(kind_of_sqlstate("54000"), ErrorKind::Rejected, "index row too big");
        assert!(Error::new(ErrorKind::Schema, "x").is_retryable());
        assert!(!Error::new(ErrorKind::Rejected, "x").is_retryable());
    }
}
