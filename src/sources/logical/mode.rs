//! Which change source the listener uses (`pgsync.cdc`), and why: logical
//! replication when the setting and Postgres allow it, else the triggers. The
//! choice and its reason are logged when they change and shown by `SYNC.STATUS`
//! as `cdc`.

use crate::redis::config::Cdc;
use crate::redis::redis_io::notice;
use std::sync::Mutex;

/// The source chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Logical replication.
    Logical,
    /// Triggers and NOTIFY.
    Triggers,
}

/// `pgsync.cdc` is `logical`, and Postgres cannot serve logical replication:
/// why it cannot (the catalog's reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalRefused(pub String);

impl std::fmt::Display for LogicalRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pgsync.cdc is logical but {}", self.0)
    }
}

impl std::error::Error for LogicalRefused {}

/// Chooses from the setting and what keeps logical replication from serving
/// (`obstacle`), with the line `SYNC.STATUS` shows; `Err` when the setting
/// demands logical replication and Postgres does not allow it.
pub fn choose(setting: Cdc, obstacle: Option<String>) -> Result<(Source, String), LogicalRefused> {
    match (setting, obstacle) {
        (Cdc::notify, _) => Ok((Source::Triggers, "notify (pgsync.cdc is notify)".into())),
        (Cdc::auto | Cdc::logical, None) => Ok((Source::Logical, "logical".into())),
        (Cdc::auto, Some(why)) => Ok((Source::Triggers, format!("notify: {why}"))),
        (Cdc::logical, Some(why)) => Err(LogicalRefused(why)),
    }
}

static SHOWN: Mutex<String> = Mutex::new(String::new());

/// Records the line `SYNC.STATUS` shows; logs it when it changed.
pub fn show(line: &str) {
    let mut shown = SHOWN.lock().unwrap_or_else(|p| p.into_inner());
    if *shown != line {
        notice(&format!("Postgres -> Redis changes: {line}"));
        *shown = line.to_string();
    }
}

/// The line `SYNC.STATUS` shows (empty before the listener decided).
pub fn shown() -> String {
    SHOWN.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_prefers_logical_and_falls_back_with_the_reason() {
        assert_eq!(choose(Cdc::auto, None), Ok((Source::Logical, "logical".into())));
        let (source, line) = choose(Cdc::auto, Some("wal_level is replica, not logical".into())).unwrap();
        assert_eq!(source, Source::Triggers);
        assert_eq!(line, "notify: wal_level is replica, not logical");
    }

    #[test]
    fn an_explicit_setting_is_obeyed() {
        assert_eq!(choose(Cdc::notify, None).unwrap().0, Source::Triggers);
        assert_eq!(choose(Cdc::logical, None).unwrap().0, Source::Logical);
        let refused = choose(Cdc::logical, Some("x".into())).unwrap_err();
        assert_eq!(refused, LogicalRefused("x".into()));
        assert_eq!(refused.to_string(), "pgsync.cdc is logical but x");
    }
}
