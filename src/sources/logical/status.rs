//! The logical stream's figures for `SYNC.STATUS` and `INFO`: the source chosen
//! and why (`cdc`), the slot, the position Redis holds (`cdc_lsn`), the slot's
//! confirmed position (`cdc_confirmed_lsn`) and the WAL Postgres
//! keeps for the slot (`cdc_lag_bytes`, -1 when unknown), refreshed by the
//! listener while it streams.

use crate::pg::replication::catalog::format_lsn;
use crate::redis::cdc_position as state;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

static LAG_BYTES: AtomicI64 = AtomicI64::new(-1);
static SLOT: Mutex<String> = Mutex::new(String::new());
static CONFIRMED: Mutex<String> = Mutex::new(String::new());

/// Records the slot streamed from.
pub fn set_slot(slot: &str) {
    *SLOT.lock().unwrap_or_else(|p| p.into_inner()) = slot.to_string();
}

/// Records the slot's confirmed position and the WAL Postgres keeps for it.
pub fn set_slot_state(confirmed: Option<u64>, lag_bytes: Option<i64>) {
    *CONFIRMED.lock().unwrap_or_else(|p| p.into_inner()) = confirmed.map(format_lsn).unwrap_or_default();
    LAG_BYTES.store(lag_bytes.unwrap_or(-1), Ordering::Relaxed);
}

/// The module-wide figures, as `SYNC.STATUS` names them: text, or a count.
pub fn figures() -> Vec<(&'static str, Result<String, i64>)> {
    let lsn = state::get().map(|p| format_lsn(p.lsn)).unwrap_or_default();
    vec![
        ("cdc", Ok(super::mode::shown())),
        ("cdc_slot", Ok(SLOT.lock().unwrap_or_else(|p| p.into_inner()).clone())),
        ("cdc_lsn", Ok(lsn)),
        ("cdc_confirmed_lsn", Ok(CONFIRMED.lock().unwrap_or_else(|p| p.into_inner()).clone())),
        ("cdc_lag_bytes", Err(LAG_BYTES.load(Ordering::Relaxed))),
    ]
}
