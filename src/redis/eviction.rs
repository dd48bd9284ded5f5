//! The module's keys under `maxmemory`. The journal is not in the keyspace (it
//! lives in the module's memory), so no policy can evict a pending change. The
//! dead-letter keys (and a journal log kept as a key for a moment: an older
//! version's, or one travelling between cluster nodes) carry no TTL, so
//! `noeviction` and the `volatile-*` policies never evict them; an `allkeys-*`
//! policy can, like any other key. Redis offers no way to exempt a key, so the
//! module degrades loudly: it warns when such a policy is in force (at load and
//! on `CONFIG SET`), and logs and counts (`journal_evictions`, the figure's name
//! kept from when the journal was keys) every eviction of one of its keys.

use crate::model::guard::guard;
use crate::redis::deadletter::{is_deadletter_key, DEADLETTER_KEY, ORDER_KEY};
use crate::redis::journal::is_journal_key;
use crate::redis::notify::now_ms;
use crate::redis::redis_io::{api, config_value, names_config, warn, HookError};
use redis_module::{raw, Context, RedisString};
use redis_module_macros::config_changed_event_handler;
use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicU64, Ordering};

/// Evictions of the module's keys since the server started.
static JOURNAL_EVICTIONS: AtomicU64 = AtomicU64::new(0);

/// How many of the module's keys (journal, dead letters) were evicted since start.
pub fn journal_evictions() -> u64 {
    JOURNAL_EVICTIONS.load(Ordering::Relaxed)
}

/// At load: subscribes to evictions, and warns if the policy in force can evict
/// the module's keys.
pub fn watch(ctx: &Context) -> Result<(), HookError> {
    let subscribe = api!(RedisModule_SubscribeToKeyspaceEvents).ok_or(HookError::NoEvictionEvents)?;
    // SAFETY: a live context at load, and a callback with the signature Redis expects.
    let status = unsafe { subscribe(ctx.ctx, raw::REDISMODULE_NOTIFY_EVICTED as c_int, Some(on_evicted)) };
    if status != raw::REDISMODULE_OK as c_int {
        return Err(HookError::EvictionSubscription);
    }
    check_policy(ctx);
    Ok(())
}

#[config_changed_event_handler]
fn on_config_changed(ctx: &Context, names: &[&str]) {
    if names_config(names, "maxmemory-policy") {
        guard(|| check_policy(ctx));
    }
}

fn check_policy(ctx: &Context) {
    let policy = config_value(ctx, "maxmemory-policy");
    if let Some(message) = policy.and_then(|p| policy_risk(&String::from_utf8_lossy(&p))) {
        warn(&message);
    }
}

/// When the last eviction warning was logged (ms), and evictions since then.
static LAST_WARNING_MS: AtomicU64 = AtomicU64::new(0);
static UNREPORTED: AtomicU64 = AtomicU64::new(0);

/// The warning for a `maxmemory-policy` that can evict the module's keys, if it can.
pub fn policy_risk(policy: &str) -> Option<String> {
    policy.to_ascii_lowercase().starts_with("allkeys-").then(|| {
        format!(
            "maxmemory-policy is {policy}: when maxmemory is reached, Redis may evict the pgsync dead-letter keys \
             ({DEADLETTER_KEY}, {ORDER_KEY}, or pgsync:deadletter:{{...}} in a cluster) like any other key, and \
             evicted dead letters are gone (pending changes are in the module's memory, which no policy evicts). \
             Use a volatile-* policy (give cache keys a TTL) or noeviction; every such eviction is logged and \
             counted in journal_evictions (SYNC.STATUS, INFO pgsync)"
        )
    })
}

/// Whether `key` is one of the module's own keys, which must not be evicted.
pub fn is_module_key(key: &[u8]) -> bool {
    is_journal_key(key) || is_deadletter_key(key)
}

extern "C" fn on_evicted(
    _ctx: *mut raw::RedisModuleCtx,
    _type: c_int,
    _event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    guard(|| {
        let key = RedisString::string_as_slice(key);
        if is_module_key(key) {
            JOURNAL_EVICTIONS.fetch_add(1, Ordering::Relaxed);
            // An eviction storm can evict many of them: one warning a second, with
            // the count of the others.
            let unreported = UNREPORTED.fetch_add(1, Ordering::Relaxed);
            let now = now_ms();
            let last = LAST_WARNING_MS.load(Ordering::Relaxed);
            if now.saturating_sub(last) < 1000 || LAST_WARNING_MS.swap(now, Ordering::Relaxed) != last {
                return;
            }
            UNREPORTED.store(0, Ordering::Relaxed);
            let others = match unreported {
                0 => String::new(),
                n => format!(" (and {n} more of its keys since the last warning)"),
            };
            warn(&format!(
                "maxmemory evicted the pgsync key {}{others}: what it recorded is gone; set maxmemory-policy \
                 to a volatile-* policy or noeviction",
                String::from_utf8_lossy(key)
            ));
        }
    });
    raw::REDISMODULE_OK as c_int
}

#[cfg(test)]
mod tests {
    use super::{is_module_key, policy_risk};

    #[test]
    fn only_allkeys_policies_put_the_dead_letters_at_risk() {
        for policy in ["allkeys-lru", "allkeys-lfu", "allkeys-random", "ALLKEYS-LRU"] {
            let message = policy_risk(policy).unwrap_or_default();
            assert!(message.contains(policy) && message.contains("volatile-*"), "{policy}: {message}");
        }
        for policy in ["noeviction", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"] {
            assert_eq!(policy_risk(policy), None, "{policy}");
        }
    }

    #[test]
    fn module_keys_are_the_journal_and_the_dead_letters() {
        for key in ["pgsync:{journal}", "pgsync:journal:{users}", "pgsync:{deadletter}", "pgsync:{deadletter}:order"] {
            assert!(is_module_key(key.as_bytes()), "{key}");
        }
        for key in ["users:1", "pgsync:{deadletter}x", "pgsync:other", "{users:1}uuid"] {
            assert!(!is_module_key(key.as_bytes()), "{key}");
        }
    }
}
