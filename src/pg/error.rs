//! The one error type of the change pipeline, its kinds, and the one policy that
//! decides what a failure leads to: reconnect, retry, or dead letter (see
//! `docs/errors.md`).

use std::fmt;
use std::sync::Mutex;

/// Why an operation failed.
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

    /// What this failure leads to: the one retry policy.
    pub fn action(&self) -> Action {
        match self.kind {
            ErrorKind::Unavailable => Action::Reconnect,
            ErrorKind::Schema => Action::Retry,
            ErrorKind::Rejected => Action::DeadLetter,
        }
    }

    /// Whether waiting and trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.action() != Action::DeadLetter
    }
}

/// What a failure leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Postgres cannot be reached or cannot serve now: it is marked down, the
    /// connection is given up, and the work waits out a backoff and is tried
    /// again on a new connection.
    Reconnect,
    /// The table does not fit the mapping: its schema is read again, and the work
    /// waits out a backoff and is tried again (it heals once the schema is fixed).
    Retry,
    /// The data is refused: trying again cannot help. The row that caused it is
    /// isolated from its batch and dead-lettered; the other rows go on.
    DeadLetter,
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
            None => Error::new(ErrorKind::Unavailable, format!("connection error: {}", with_causes(&e))),
        }
    }
}

/// A rejection message (as built from a database error above) without the row
/// values it may quote, for the log. The detail after the SQLSTATE (where Postgres
/// puts `Failing row contains (...)` and `Key (email)=(...)`) is dropped; the
/// message is kept for the classes whose messages name only objects, masked for
/// data exceptions (class 22 quotes the bad value), and dropped for the rest (a
/// trigger's RAISE can say anything). Messages of our own carry no values.
pub fn without_values(message: &str) -> String {
    let Some(at) = message.find(" (SQLSTATE ") else { return message.to_string() };
    let code = message.get(at + 11..at + 16).unwrap_or("");
    let (severity, text) = message[..at].split_once(": ").unwrap_or(("ERROR", &message[..at]));
    let text = match code.get(..2) {
        Some(
            "08" | "0A" | "21" | "23" | "25" | "3D" | "3F" | "40" | "42" | "44" | "53" | "54" | "55" | "57" | "58",
        ) => text.to_string(),
        Some("22") => mask_values(text),
        _ => "message hidden".to_string(),
    };
    format!(
        "{severity}: {text} (SQLSTATE {code}; row values not logged: see SYNC.FAILED, or set pgsync.log-values yes)"
    )
}

/// A data-exception message with its quoted parts and whatever follows a `: `
/// (where Postgres puts the offending value) replaced by `…`.
fn mask_values(message: &str) -> String {
    let head = message.split_once(": ").map_or(message, |(head, _)| head);
    let mut out = String::with_capacity(head.len());
    for (i, part) in head.split('"').enumerate() {
        out.push_str(if i % 2 == 1 { "\"…\"" } else { part });
    }
    if head.len() < message.len() {
        out.push_str(": …");
    }
    out
}

/// An error with its causes (`db error: FATAL: ...`, `error performing TLS
/// handshake: ... certificate verify failed`): rust-postgres shows only the first.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

static LAST_CONNECT_ERROR: Mutex<String> = Mutex::new(String::new());

/// Keeps the pool's last failed connection attempt with its causes, which
/// r2d2's own error reduces to the first line (`db error`).
#[derive(Debug)]
pub struct KeepConnectError;

impl r2d2::HandleError<postgres::Error> for KeepConnectError {
    fn handle_error(&self, e: postgres::Error) {
        *LAST_CONNECT_ERROR.lock().unwrap_or_else(|p| p.into_inner()) = with_causes(&e);
    }
}

impl From<r2d2::Error> for Error {
    fn from(e: r2d2::Error) -> Error {
        let last = LAST_CONNECT_ERROR.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let why = if last.is_empty() { e.to_string() } else { last };
        Error::new(ErrorKind::Unavailable, format!("cannot connect to Postgres: {why}"))
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
    }

    #[test]
    fn each_kind_has_its_action() {
        assert_eq!(Error::new(ErrorKind::Unavailable, "x").action(), Action::Reconnect);
        assert_eq!(Error::new(ErrorKind::Schema, "x").action(), Action::Retry);
        assert_eq!(Error::new(ErrorKind::Rejected, "x").action(), Action::DeadLetter);
        assert!(Error::new(ErrorKind::Unavailable, "x").is_retryable());
        assert!(Error::new(ErrorKind::Schema, "x").is_retryable());
        assert!(!Error::new(ErrorKind::Rejected, "x").is_retryable());
    }

    #[test]
    fn logged_rejections_carry_no_values() {
        let unique = "ERROR: duplicate key value violates unique constraint \"users_email_key\" (SQLSTATE 23505): \
                      Key (email)=(s3cret@x) already exists.";
        let logged = without_values(unique);
        assert!(logged
            .starts_with("ERROR: duplicate key value violates unique constraint \"users_email_key\" (SQLSTATE 23505;"));
        assert!(!logged.contains("s3cret"), "{logged}");
        let bad = without_values("ERROR: invalid input syntax for type integer: \"s3cret\" (SQLSTATE 22P02)");
        assert!(bad.starts_with("ERROR: invalid input syntax for type integer: … (SQLSTATE 22P02;"), "{bad}");
        let range = without_values("ERROR: value \"99999999999\" is out of range for type integer (SQLSTATE 22003)");
        assert!(range.starts_with("ERROR: value \"…\" is out of range for type integer"), "{range}");
        let raised = without_values("ERROR: bad pwhash s3cret (SQLSTATE P0001)");
        assert!(raised.starts_with("ERROR: message hidden (SQLSTATE P0001;"), "{raised}");
        assert_eq!(without_values("key is not a hash"), "key is not a hash");
    }
}
