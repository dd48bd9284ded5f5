//! redis-pgsync: a Redis module that keeps Redis hashes and PostgreSQL rows in step.
//! This file only registers the module: name, configs, commands, event handlers.

mod model;
mod pg;
mod pipeline;
mod postgres_url;
mod redis;
mod server;
mod sources;
mod supervisor;
// The check that every import points down a floor: a test, so `cargo test --lib` runs it.
#[cfg(test)]
mod floors;

#[cfg(not(test))]
use model::counting_alloc;
use model::guard::{self, guard};
use redis::cdc_position::POSITION_TYPE;
use redis::journal::persist::JOURNAL_TYPE;
use redis::{config, redis_io};
use redis_module::configuration::{ConfigurationContext, ConfigurationFlags};
use redis_module::server_events::ServerRole;
use server::{commands, events, status};
// AclCategory: the `redis_module!` macro names it unqualified when it adds `acl_categories`.
use redis_module::{redis_module, AclCategory, Context, InfoContext, RedisResult, RedisString, Status};
use redis_module_macros::{cron_event_handler, info_command_handler, role_changed_event_handler};
use std::sync::atomic::AtomicI64;

// Redis's allocator exists only inside redis-server; unit tests use the system
// one, counted per thread (memory tests measure what they build).
#[cfg(not(test))]
type Allocator = counting_alloc::Counting<redis_module::alloc::RedisAlloc>;
#[cfg(not(test))]
const ALLOCATOR: Allocator = counting_alloc::Counting::global(redis_module::alloc::RedisAlloc);
#[cfg(test)]
type Allocator = model::counting_alloc::per_thread::PerThread;
#[cfg(test)]
const ALLOCATOR: Allocator = model::counting_alloc::per_thread::PerThread;

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    commands::docs::register(ctx);
    match guard::catch(|| supervisor::start(ctx, args)).map_err(supervisor::LoadError::Bug).and_then(|started| started)
    {
        Ok(()) => {
            subscribe_to_shutdown(ctx);
            redis::journal::persist::watch(ctx);
            Status::Ok
        }
        Err(e) => {
            redis_io::warn(&format!("pgsync not loaded: {e}"));
            Status::Err
        }
    }
}

/// Whether the server has post-notification jobs (Redis/Valkey 7.2+), which
/// journal a change atomically with the write that caused it.
fn server_is_supported() -> bool {
    redis_io::api!(RedisModule_AddPostNotificationJob).is_some()
}

/// Flags of the first registered command, doubling as the server-version gate.
/// The `redis-module` crate registers commands before calling `init`, and on a
/// pre-7.2 server its registration unwraps missing 7.2 APIs and aborts the server.
/// This expression is the first of our code it evaluates: on an old server it logs
/// why and hands back flags Redis refuses, so the load fails cleanly instead.
fn first_command_flags(flags: &'static str) -> &'static str {
    if server_is_supported() {
        return flags;
    }
    let version = redis_io::api!(RedisModule_GetServerVersion)
        // SAFETY: GetServerVersion exists since Redis 6.0 and takes no context.
        .map(|get| unsafe { get() })
        .map(|v| format!(" (this server is {}.{}.{})", v >> 16, (v >> 8) & 0xff, v & 0xff))
        .unwrap_or_default();
    redis_io::warn(&format!("redis-pgsync needs Redis 7.2+ or Valkey 7.2+{version}; module not loaded"));
    "pgsync-needs-redis-7.2"
}

/// The crate has no wrapper for the shutdown event; subscribe through the raw API.
fn subscribe_to_shutdown(ctx: &Context) {
    // The header's `RedisModuleEvent_Shutdown` is a static inline value, not a
    // symbol, so build the same value here.
    let event = redis_module::raw::RedisModuleEvent { id: redis_module::raw::REDISMODULE_EVENT_SHUTDOWN, dataver: 1 };
    redis_module::raw::subscribe_to_server_event(ctx.ctx, event, Some(on_shutdown));
}

fn deinit(_ctx: &Context) -> Status {
    // Worker threads may be waiting for the Redis lock that MODULE UNLOAD holds;
    // stopping them here could deadlock, and unloading under them would crash.
    redis_io::warn("pgsync cannot be unloaded; restart redis-server to remove it");
    Status::Err
}

/// The server exits: what is still pending is in the journal and lands after the restart.
extern "C" fn on_shutdown(
    _ctx: *mut redis_module::raw::RedisModuleCtx,
    _event: redis_module::raw::RedisModuleEvent,
    _subevent: u64,
    _data: *mut std::ffi::c_void,
) {
    guard(supervisor::stop);
}

#[cron_event_handler]
fn on_cron(ctx: &Context, _hz: u64) {
    guard(|| supervisor::on_cron(ctx));
}

#[role_changed_event_handler]
fn on_role_changed(_ctx: &Context, role: ServerRole) {
    guard(|| supervisor::on_role_changed(matches!(role, ServerRole::Replica)));
}

#[info_command_handler]
fn on_info(ctx: &InfoContext, for_crash_report: bool) -> RedisResult<()> {
    guard(|| status::info(ctx, for_crash_report));
    Ok(())
}

fn on_workers_changed(_ctx: &ConfigurationContext, _name: &str, _value: &'static AtomicI64) {
    guard(supervisor::ensure_workers);
}

fn on_tunable_changed(_ctx: &ConfigurationContext, _name: &str, _value: &'static AtomicI64) {}

redis_module! {
    name: "pgsync",
    version: 1,
    allocator: (Allocator, ALLOCATOR),
    data_types: [JOURNAL_TYPE, POSITION_TYPE],
    // Each command's ACL categories (README "Security"), then the module's own
    // category `pgsync`, which servers before Redis 7.4 / Valkey 8 cannot add:
    // there the command keeps only the first ones.
    acl_categories: [
        "pgsync",
    ],
    init: init,
    deinit: deinit,
    commands: [
        ["sync.hset", |ctx, args| commands::guarded(ctx, args, commands::sync_hset), first_command_flags("write deny-oom"), 1, 1, 1, "write hash slow blocking", "pgsync"],
        ["sync.jsonset", |ctx, args| commands::guarded(ctx, args, commands::json_write::sync_jsonset), "write deny-oom", 1, 1, 1, "write slow blocking", "pgsync"],
        ["sync.wait", |ctx, args| commands::guarded(ctx, args, commands::sync_wait), "readonly", 0, 0, 0, "read slow blocking", "pgsync"],
        ["sync.status", |ctx, args| commands::guarded(ctx, args, commands::sync_status), "readonly", 0, 0, 0, "read slow", "pgsync"],
        ["sync.reload", |ctx, args| commands::guarded(ctx, args, commands::sync_reload), "write", 0, 0, 0, "write slow blocking dangerous", "pgsync"],
        ["sync.failed", |ctx, args| commands::guarded(ctx, args, commands::deadletter::sync_failed), "readonly", 0, 0, 0, "read slow", "pgsync"],
        ["sync.retry", |ctx, args| commands::guarded(ctx, args, commands::deadletter::sync_retry), "write", 0, 0, 0, "write slow dangerous", "pgsync"],
        ["sync.discard", |ctx, args| commands::guarded(ctx, args, commands::deadletter::sync_discard), "write", 0, 0, 0, "write slow dangerous", "pgsync"],
        ["sync.write", |ctx, args| commands::guarded(ctx, args, commands::write::sync_write), "write deny-oom", 2, 2, 1, "write hash fast"],
        ["sync.remove", |ctx, args| commands::guarded(ctx, args, commands::write::sync_remove), "write", 2, 2, 1, "write hash fast"],
        ["sync.migrate", |ctx, args| commands::guarded(ctx, args, commands::sync_migrate), "write", 0, 0, 0, "write keyspace slow dangerous"],
        ["sync.jsonwrite", |ctx, args| commands::guarded(ctx, args, commands::json_write::sync_jsonwrite), "write", 2, 2, 1, "write fast"],
        ["sync.keysinslot", |ctx, args| commands::guarded(ctx, args, commands::sync_keysinslot), "readonly", 0, 0, 0, "slow"],
        ["sync.delete", |ctx, args| commands::guarded(ctx, args, commands::write::sync_delete), "write", 2, -1, 1, "write keyspace"],
        ["sync.journal", |ctx, args| commands::guarded(ctx, args, commands::journal::sync_journal), "write no-monitor", 0, 0, 0, "write slow", "pgsync"],
        ["sync.cdc", |ctx, args| commands::guarded(ctx, args, commands::cdc::sync_cdc), "write no-monitor", 0, 0, 0, "write slow", "pgsync"],
        ["sync.read", |ctx, args| commands::guarded(ctx, args, server::read_through::command::sync_read), "readonly getkeys-api", 2, 2, 1, "read hash"],
    ],
    event_handlers: [
        [@HASH: events::on_hash_event],
        [@GENERIC: events::on_generic_event],
    ],
    configurations: [
        i64: [
            ["workers", &config::WORKERS, config::DEFAULT_WORKERS, 1, config::MAX_WORKERS, ConfigurationFlags::DEFAULT, Some(Box::new(on_workers_changed))],
            ["batch-size", &config::BATCH_SIZE, config::DEFAULT_BATCH_SIZE, 1, 100_000, ConfigurationFlags::DEFAULT, Some(Box::new(on_tunable_changed))],
            ["batch-delay-ms", &config::BATCH_DELAY_MS, config::DEFAULT_BATCH_DELAY_MS, 0, 10_000, ConfigurationFlags::DEFAULT, Some(Box::new(on_tunable_changed))],
            ["retry-max-delay-ms", &config::RETRY_MAX_DELAY_MS, config::DEFAULT_RETRY_MAX_DELAY_MS, 10, 3_600_000, ConfigurationFlags::DEFAULT, Some(Box::new(on_tunable_changed))],
            ["deadletter-max", &config::DEADLETTER_MAX, config::DEFAULT_DEADLETTER_MAX, 1, 10_000_000, ConfigurationFlags::DEFAULT, Some(Box::new(on_tunable_changed))],
            ["batch-max-bytes", &config::BATCH_MAX_BYTES, config::DEFAULT_BATCH_MAX_BYTES, 1024, config::MAX_BYTES, ConfigurationFlags::DEFAULT, Some(Box::new(on_tunable_changed))],
            ["max-row-bytes", &config::MAX_ROW_BYTES, config::DEFAULT_MAX_ROW_BYTES, 1024, config::MAX_BYTES, ConfigurationFlags::DEFAULT, Some(Box::new(on_tunable_changed))],
            ["hset-timeout-ms", &config::HSET_TIMEOUT_MS, config::DEFAULT_HSET_TIMEOUT_MS, 0, 86_400_000, ConfigurationFlags::DEFAULT, Some(Box::new(on_tunable_changed))],
            ["read-through-timeout-ms", &config::READ_THROUGH_TIMEOUT_MS, config::DEFAULT_READ_THROUGH_TIMEOUT_MS, 1, 600_000, ConfigurationFlags::DEFAULT, Some(Box::new(on_tunable_changed))],
            ["cdc-max-lag-bytes", &config::CDC_MAX_LAG_BYTES, config::DEFAULT_CDC_MAX_LAG_BYTES, 1024, i64::MAX, ConfigurationFlags::DEFAULT, Some(Box::new(on_tunable_changed))],
            ["read-through-negative-ttl-ms", &config::READ_THROUGH_NEGATIVE_TTL_MS, config::DEFAULT_READ_THROUGH_NEGATIVE_TTL_MS, 0, 3_600_000, ConfigurationFlags::DEFAULT, Some(Box::new(on_tunable_changed))],
        ],
        string: [
            ["postgres-url", &config::POSTGRES_URL, "", ConfigurationFlags::IMMUTABLE | ConfigurationFlags::SENSITIVE, None],
            ["postgres-password-file", &config::PASSWORD_FILE, "", ConfigurationFlags::IMMUTABLE, None],
            ["mappings", &config::MAPPINGS_PATH, "", ConfigurationFlags::IMMUTABLE, None],
            ["cdc-slot", &config::CDC_SLOT, config::DEFAULT_CDC_SLOT, ConfigurationFlags::IMMUTABLE, None],
        ],
        bool: [
            ["reload-on-start", &config::RELOAD_ON_START, false, ConfigurationFlags::DEFAULT, None],
            ["log-values", &config::LOG_VALUES, false, ConfigurationFlags::DEFAULT, None],
        ],
        enum: [
            ["read-through-on-error", &config::READ_THROUGH_ON_ERROR, config::OnReadError::error, ConfigurationFlags::DEFAULT, None],
            ["cdc", &config::CDC, config::Cdc::auto, ConfigurationFlags::DEFAULT, None],
        ],
        module_args_as_configuration: true,
    ]
}
