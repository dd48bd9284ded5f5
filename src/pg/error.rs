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
    /// What the database server said, for an error it reported (`None` for the
    /// connection's errors and the module's own).
    pub database: Option<Box<DatabaseError>>,
}

/// The parts of an error the database server reported, kept apart so nothing
/// has to read them back out of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseError {
    /// `ERROR`, `FATAL`, ...
    pub severity: String,
    /// The primary message (it may quote a value: class 22).
    pub text: String,
    /// The SQLSTATE (`23505`).
    pub sqlstate: String,
}

impl Error {
    /// A failure of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), database: None }
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

impl std::error::Error for Error {}

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
                let reported = DatabaseError {
                    severity: db.severity().to_string(),
                    text: db.message().to_string(),
                    sqlstate: db.code().code().to_string(),
                };
                Error::reported(reported, db.detail())
            }
            None => Error::new(ErrorKind::Unavailable, format!("connection error: {}", with_causes(&e))),
        }
    }
}

impl Error {
    /// An error the database server reported, with its detail (which may quote
    /// row values) after the SQLSTATE in the message.
    pub fn reported(db: DatabaseError, detail: Option<&str>) -> Error {
        let mut message = format!("{}: {} (SQLSTATE {})", db.severity, db.text, db.sqlstate);
        if let Some(detail) = detail {
            message.push_str(": ");
            message.push_str(detail);
        }
        Error { kind: kind_of_sqlstate(&db.sqlstate), message, database: Some(Box::new(db)) }
    }

    /// The message without the row values it may quote, for the log. The
    /// database's detail (where Postgres puts `Failing row contains (...)` and
    /// `Key (email)=(...)`) is dropped; its message is kept for the classes whose
    /// messages name only objects, masked for data exceptions (class 22 quotes
    /// the bad value), and dropped for the rest (a trigger's RAISE can say
    /// anything). Messages of our own carry no values.
    pub fn without_values(&self) -> String {
        let Some(db) = &self.database else { return self.message.clone() };
        without_values(db)
    }
}

fn without_values(db: &DatabaseError) -> String {
    let (severity, code) = (&db.severity, &db.sqlstate);
    let text = db.text.as_str();
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

    fn reported(text: &str, sqlstate: &str, detail: Option<&str>) -> Error {
        let db = DatabaseError { severity: "ERROR".into(), text: text.into(), sqlstate: sqlstate.into() };
        Error::reported(db, detail)
    }

    #[test]
    fn logged_rejections_carry_no_values() {
        let unique = reported(
            "duplicate key value violates unique constraint \"users_email_key\"",
            "23505",
            Some("Key (email)=(s3cret@x) already exists."),
        );
        assert!(unique.message.contains("s3cret"), "the message keeps the detail: {}", unique.message);
        assert_eq!(unique.database.as_ref().map(|db| db.sqlstate.as_str()), Some("23505"));
        let logged = unique.without_values();
        assert!(logged
            .starts_with("ERROR: duplicate key value violates unique constraint \"users_email_key\" (SQLSTATE 23505;"));
        assert!(!logged.contains("s3cret"), "{logged}");
        let bad = reported("invalid input syntax for type integer: \"s3cret\"", "22P02", None).without_values();
        assert!(bad.starts_with("ERROR: invalid input syntax for type integer: … (SQLSTATE 22P02;"), "{bad}");
        let range = reported("value \"99999999999\" is out of range for type integer", "22003", None).without_values();
        assert!(range.starts_with("ERROR: value \"…\" is out of range for type integer"), "{range}");
        let raised = reported("bad pwhash s3cret", "P0001", None).without_values();
        assert!(raised.starts_with("ERROR: message hidden (SQLSTATE P0001;"), "{raised}");
        let own = Error::new(ErrorKind::Rejected, "key is not a hash");
        assert_eq!((own.without_values(), own.database), ("key is not a hash".to_string(), None));
    }
}
